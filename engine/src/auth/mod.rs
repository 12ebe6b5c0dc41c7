//! Authentication and authorization, per core: the password file (`passwd.rs`), JSON Web
//! Tokens (`jwt.rs`), the HTTP hook (`http.rs`), the ACL file (`acl.rs`) and the failed-login
//! limiter (`limiter.rs`). Pure: no sockets, time is an
//! argument, files are read only by [`AuthFiles::load`] (start-up, and each core on SIGHUP).
//!
//! Where it sits: the connection checks the credentials of a CONNECT on the core that accepted
//! the socket, before the connection moves to its home core ([`Auth::authenticate`]). The
//! broker core then asks [`Auth`] for every SUBSCRIBE filter, every PUBLISH, the will topic at
//! CONNECT, and every delivery (the read check on the concrete topic), through the client's
//! [`ClientAuth`], which caches its substituted rules until the next reload.

pub mod acl;
pub mod http;
pub mod jwt;
pub mod limiter;
pub mod passwd;

use std::io::Read as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ringmq_codec::{Connect, ReasonCode};

pub use acl::{Acl, ClientRules};
pub use limiter::{Limiter, LimiterSettings, Verdict};
pub use passwd::{LineError, PasswordFile};

/// Reads a whole file of at most `max_bytes` as UTF-8; errors name the file.
pub fn read_bounded(path: &Path, max_bytes: u64) -> Result<String, LineError> {
    let err = |message: String| LineError {
        file: path.display().to_string(),
        line: 0,
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > max_bytes {
        return Err(err(format!(
            "larger than auth.max_file_bytes ({max_bytes} bytes)"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        let line = 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        LineError {
            file: path.display().to_string(),
            line,
            message: "not valid UTF-8".into(),
        }
    })
}

/// What the auth part needs from the configuration.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Clients without a user name are let in.
    pub allow_anonymous: bool,
    /// The password file, if any.
    pub password_file: Option<PathBuf>,
    /// The ACL file, if any.
    pub acl_file: Option<PathBuf>,
    /// Largest password or ACL file read.
    pub max_file_bytes: u64,
    /// The failed-login limiter.
    pub limiter: LimiterSettings,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            allow_anonymous: true,
            password_file: None,
            acl_file: None,
            max_file_bytes: 16 * 1024 * 1024,
            limiter: LimiterSettings {
                limit: 0,
                window: std::time::Duration::from_secs(60),
                max_tracked_addresses: 1,
            },
        }
    }
}

/// The parsed files (immutable; shared by reference count).
#[derive(Debug, Clone, Default)]
pub struct AuthFiles {
    /// The password file, when configured.
    pub passwords: Option<Arc<PasswordFile>>,
    /// The ACL file, when configured.
    pub acl: Option<Arc<Acl>>,
}

impl AuthFiles {
    /// Reads both files (those configured); the first error wins.
    pub fn load(settings: &AuthSettings) -> Result<AuthFiles, LineError> {
        let passwords = settings
            .password_file
            .as_deref()
            .map(|p| PasswordFile::load(p, settings.max_file_bytes).map(Arc::new))
            .transpose()?;
        let acl = settings
            .acl_file
            .as_deref()
            .map(|p| Acl::load(p, settings.max_file_bytes).map(Arc::new))
            .transpose()?;
        Ok(AuthFiles { passwords, acl })
    }
}

/// Why a CONNECT was refused by authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong or missing credentials (0x86; 3.1.1 return code 4).
    BadCredentials,
    /// No user name and anonymous clients are not allowed (0x87; 3.1.1 return code 4 as
    /// before, the code ringmq always answered).
    AnonymousNotAllowed,
    /// Too many failed logins from the address (0x8A Banned; 3.1.1 return code 5).
    RateLimited {
        /// The first refusal of this window (log it).
        first: bool,
    },
}

impl Refusal {
    /// The CONNACK reason for a client of this protocol version.
    pub fn reason(self, v5: bool) -> ReasonCode {
        match self {
            Refusal::BadCredentials => ReasonCode::BadUserNameOrPassword,
            Refusal::AnonymousNotAllowed if v5 => ReasonCode::NotAuthorized,
            Refusal::AnonymousNotAllowed => ReasonCode::BadUserNameOrPassword,
            Refusal::RateLimited { .. } => ReasonCode::Banned,
        }
    }
}

/// The auth state of one core.
#[derive(Debug)]
pub struct Auth {
    settings: AuthSettings,
    files: AuthFiles,
    /// Incremented at every successful reload: clients' cached rules compare it.
    generation: u64,
    limiter: Limiter,
}

impl Default for Auth {
    fn default() -> Self {
        Auth::new(AuthSettings::default(), AuthFiles::default())
    }
}

impl Auth {
    /// The state of a core, from files already loaded.
    pub fn new(settings: AuthSettings, files: AuthFiles) -> Auth {
        Auth {
            limiter: Limiter::new(settings.limiter),
            settings,
            files,
            generation: 0,
        }
    }

    /// Whether an ACL file is in force.
    pub fn has_acl(&self) -> bool {
        self.files.acl.is_some()
    }

    /// Reads the files again. On failure the old rules stay and the error is returned.
    pub fn reload(&mut self) -> Result<(), LineError> {
        self.files = AuthFiles::load(&self.settings)?;
        self.generation += 1;
        Ok(())
    }

    /// Checks a CONNECT from `ip`: the limiter, then the credentials. Failures are counted in
    /// the limiter; the caller counts them in its statistics.
    pub fn authenticate(&mut self, c: &Connect, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if let Verdict::Refuse { first } = self.limiter.check(ip, now) {
            return Err(Refusal::RateLimited { first });
        }
        let verdict = match (&c.username, &self.files.passwords) {
            (None, _) if !self.settings.allow_anonymous => Err(Refusal::AnonymousNotAllowed),
            (None, _) => Ok(()),
            (Some(user), Some(file)) => {
                let password = c.password.as_deref().unwrap_or_default();
                if c.password.is_some() && file.verify(user, password) {
                    Ok(())
                } else {
                    Err(Refusal::BadCredentials)
                }
            }
            // No password file: user names are not checked (they still select ACL blocks).
            (Some(_), None) => Ok(()),
        };
        if verdict.is_err() {
            self.limiter.failed(ip, now);
        }
        verdict
    }

    /// Checks a connection whose user name comes from a client certificate verified by the
    /// TLS layer (`use_identity_as_username`): the certificate replaces the password, so only
    /// the limiter applies (an address that is refused stays refused).
    pub fn authenticate_certificate(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        match self.limiter.check(ip, now) {
            Verdict::Refuse { first } => Err(Refusal::RateLimited { first }),
            Verdict::Allow => Ok(()),
        }
    }

    /// The per-client state for a connection of `username` with `client_id`.
    pub fn client(&self, username: Option<&str>, client_id: &str) -> ClientAuth {
        ClientAuth {
            username: username.map(Into::into),
            client_id: client_id.into(),
            rules: None,
        }
    }

    fn rules<'a>(&self, c: &'a mut ClientAuth) -> Option<&'a ClientRules> {
        let acl = self.files.acl.as_ref()?;
        if c.rules.as_ref().is_none_or(|(g, _)| *g != self.generation) {
            let rules = acl.rules_for(c.username.as_deref(), &c.client_id);
            c.rules = Some((self.generation, Rc::new(rules)));
        }
        c.rules.as_ref().map(|(_, r)| &**r)
    }

    /// Whether the client may publish to `topic` (always, without an ACL file).
    pub fn may_write(&self, c: &mut ClientAuth, topic: &str) -> bool {
        self.rules(c).is_none_or(|r| r.can_write(topic))
    }

    /// Whether the client may receive a message on `topic` (always, without an ACL file).
    pub fn may_read(&self, c: &mut ClientAuth, topic: &str) -> bool {
        self.rules(c).is_none_or(|r| r.can_read(topic))
    }

    /// Whether the client may subscribe to the plain filter `filter` (for a shared
    /// subscription, the filter inside it).
    pub fn may_subscribe(&self, c: &mut ClientAuth, filter: &str) -> bool {
        self.rules(c).is_none_or(|r| r.can_subscribe(filter))
    }
}

/// Who a session's connection is, for the ACL, with its rules cached.
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    username: Option<Box<str>>,
    client_id: Box<str>,
    rules: Option<(u64, Rc<ClientRules>)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_codec::{ProtocolVersion, Utf8Bytes};
    use std::time::Duration;

    fn connect(user: Option<&str>, password: Option<&[u8]>) -> Connect {
        Connect {
            protocol: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 0,
            properties: None,
            client_id: Utf8Bytes::try_from("c").unwrap(),
            will: None,
            username: user.map(|u| Utf8Bytes::try_from(u).unwrap()),
            password: password.map(bytes::Bytes::copy_from_slice),
        }
    }

    fn auth(allow_anonymous: bool, limit: u32) -> Auth {
        let passwords =
            PasswordFile::parse(include_str!("testdata/mosquitto.passwd"), "p").unwrap();
        Auth::new(
            AuthSettings {
                allow_anonymous,
                limiter: LimiterSettings {
                    limit,
                    window: Duration::from_secs(60),
                    max_tracked_addresses: 16,
                },
                ..AuthSettings::default()
            },
            AuthFiles {
                passwords: Some(Arc::new(passwords)),
                acl: None,
            },
        )
    }

    #[test]
    fn credentials_and_anonymous_clients() {
        let ip: IpAddr = [127, 0, 0, 1].into();
        let now = Instant::now();
        let mut a = auth(false, 0);
        assert_eq!(
            a.authenticate(&connect(Some("alice"), Some(b"alice-secret")), ip, now),
            Ok(())
        );
        assert_eq!(
            a.authenticate(&connect(Some("alice"), Some(b"nope")), ip, now),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            a.authenticate(&connect(Some("alice"), None), ip, now),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            a.authenticate(&connect(Some("erin"), None), ip, now),
            Err(Refusal::BadCredentials),
            "an empty password in the file still needs a password field"
        );
        assert_eq!(
            a.authenticate(&connect(None, None), ip, now),
            Err(Refusal::AnonymousNotAllowed)
        );
        assert_eq!(
            auth(true, 0).authenticate(&connect(None, None), ip, now),
            Ok(())
        );
        assert_eq!(Refusal::BadCredentials.reason(false).to_v3_connack(), 4);
        assert_eq!(
            Refusal::RateLimited { first: true }
                .reason(false)
                .to_v3_connack(),
            5
        );
        assert_eq!(
            Refusal::RateLimited { first: true }.reason(true),
            ReasonCode::Banned
        );
    }

    #[test]
    fn failed_logins_are_limited_even_with_the_right_password() {
        let ip: IpAddr = [10, 0, 0, 1].into();
        let now = Instant::now();
        let mut a = auth(true, 2);
        for _ in 0..2 {
            assert!(a
                .authenticate(&connect(Some("alice"), Some(b"x")), ip, now)
                .is_err());
        }
        assert_eq!(
            a.authenticate(&connect(Some("alice"), Some(b"alice-secret")), ip, now),
            Err(Refusal::RateLimited { first: true })
        );
        assert_eq!(
            a.authenticate(
                &connect(Some("alice"), Some(b"alice-secret")),
                ip,
                now + Duration::from_secs(60)
            ),
            Ok(())
        );
    }

    #[test]
    fn rules_are_cached_until_a_reload() {
        let dir = std::env::temp_dir().join(format!("ringmq-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("acl");
        std::fs::write(&path, "topic read a\n").unwrap();
        let settings = AuthSettings {
            acl_file: Some(path.clone()),
            ..AuthSettings::default()
        };
        let files = AuthFiles::load(&settings).unwrap();
        let mut a = Auth::new(settings, files);
        let mut c = a.client(None, "id");
        assert!(a.may_read(&mut c, "a") && !a.may_read(&mut c, "b"));
        std::fs::write(&path, "topic read b\n").unwrap();
        assert!(a.may_read(&mut c, "a"), "no reload yet");
        a.reload().unwrap();
        assert!(!a.may_read(&mut c, "a") && a.may_read(&mut c, "b"));
        // A failing reload keeps the rules.
        std::fs::write(&path, "topic read b\nbogus\n").unwrap();
        let e = a.reload().unwrap_err();
        assert_eq!(e.line, 2);
        assert!(a.may_read(&mut c, "b"));
        std::fs::remove_file(&path).unwrap();
        let e = a.reload().unwrap_err().to_string();
        assert!(e.contains("cannot open"), "{e}");
        assert!(a.may_read(&mut c, "b"));
        // Too large.
        std::fs::write(&path, "topic read b\n".repeat(10)).unwrap();
        let e = read_bounded(&path, 20).unwrap_err().to_string();
        assert!(e.contains("max_file_bytes"), "{e}");
        std::fs::write(&path, b"topic a\n\xff\n").unwrap();
        assert_eq!(read_bounded(&path, 100).unwrap_err().line, 2);
        std::fs::remove_dir_all(&dir).unwrap();
        // Without an ACL everything is allowed.
        let a = Auth::default();
        let mut c = a.client(None, "id");
        assert!(a.may_write(&mut c, "x") && a.may_subscribe(&mut c, "#"));
    }
}
