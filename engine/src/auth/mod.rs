//! Authentication and authorization, per core: the password file (`passwd.rs`), JSON Web
//! Tokens (`jwt.rs`), the HTTP hook (`http.rs`), the ACL file (`acl.rs`), the failed-login
//! limiter (`limiter.rs`) and the SCRAM-SHA-256 credentials of MQTT 5 enhanced authentication
//! (`scram.rs`, checked before all of these when a CONNECT names that method). Pure: no sockets (but [`http::ask`], which the connection awaits),
//! time is an argument, files are read only by [`AuthFiles::load`] (start-up, and each core on
//! SIGHUP).
//!
//! The order of the methods, for a CONNECT with a user name (one without is let in or refused
//! by `allow_anonymous` alone, as always):
//! 1. the password file: a user it lists must give that password (allow or deny); a user it
//!    does not list is left to the next method;
//! 2. JWT: a password shaped like a token is verified (allow or deny); any other password is
//!    left to the next method;
//! 3. the HTTP hook: allow, deny, or ignore (left to the next method).
//!
//! A method that is not configured is skipped. When every configured method leaves the client
//! to the next one, it is refused (bad user name or password). With no method configured,
//! user names are not checked. The hook's failures (timeout, connection error, 5xx) refuse the
//! client as "server unavailable" without counting against its address in the failed-login
//! limiter: the client is not at fault.
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
pub mod scram;

use std::cell::Cell;
use std::io::Read as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ringmq_codec::{Connect, ReasonCode};

use http::{Credentials, HookAnswer, HookError, HookSettings, LogLimiter, VerdictCache};
use jwt::{JwtError, JwtKeys, JwtSettings};

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
    /// The SCRAM-SHA-256 credentials file, if any (enhanced authentication).
    pub scram_file: Option<PathBuf>,
    /// JWT in the password field, if configured.
    pub jwt: Option<JwtSettings>,
    /// The HTTP authentication hook, if configured.
    pub http: Option<HookSettings>,
}

impl AuthSettings {
    /// The configuration key naming `file`, for error messages.
    pub fn key_of_file(&self, file: &str) -> &'static str {
        let is = |p: Option<&PathBuf>| p.is_some_and(|p| p.display().to_string() == file);
        let jwt = self.jwt.as_ref();
        if is(self.password_file.as_ref()) {
            "auth.password_file"
        } else if is(self.scram_file.as_ref()) {
            "auth.scram_file"
        } else if is(jwt.and_then(|j| j.hmac_secret_file.as_ref())) {
            "auth.jwt.hmac_secret_file"
        } else if is(jwt.and_then(|j| j.rsa_public_key_file.as_ref())) {
            "auth.jwt.rsa_public_key_file"
        } else {
            "auth.acl_file"
        }
    }
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
            scram_file: None,
            jwt: None,
            http: None,
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
    /// The SCRAM-SHA-256 credentials file, when configured.
    pub scram: Option<Arc<scram::ScramFile>>,
    /// The JWT keys, when configured.
    pub jwt: Option<Arc<JwtKeys>>,
}

impl AuthFiles {
    /// Reads the files (those configured): passwords, ACL, SCRAM, JWT keys; the first error wins.
    pub fn load(settings: &AuthSettings) -> Result<AuthFiles, LineError> {
        let passwords = settings
            .password_file
            .as_deref()
            .map(|p| PasswordFile::load(p, settings.max_file_bytes).map(Arc::new))
            .transpose()?;
        let scram = settings
            .scram_file
            .as_deref()
            .map(|p| scram::ScramFile::load(p, settings.max_file_bytes).map(Arc::new))
            .transpose()?;
        let acl = settings
            .acl_file
            .as_deref()
            .map(|p| Acl::load(p, settings.max_file_bytes).map(Arc::new))
            .transpose()?;
        let jwt = settings
            .jwt
            .as_ref()
            .map(|j| JwtKeys::load(j, settings.max_file_bytes).map(Arc::new))
            .transpose()?;
        Ok(AuthFiles {
            passwords,
            acl,
            scram,
            jwt,
        })
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
    /// The HTTP hook gave no answer, or too many questions are in flight (0x88 Server
    /// unavailable; 3.1.1 return code 3).
    Unavailable,
}

impl Refusal {
    /// The CONNACK reason for a client of this protocol version.
    pub fn reason(self, v5: bool) -> ReasonCode {
        match self {
            Refusal::BadCredentials => ReasonCode::BadUserNameOrPassword,
            Refusal::AnonymousNotAllowed if v5 => ReasonCode::NotAuthorized,
            Refusal::AnonymousNotAllowed => ReasonCode::BadUserNameOrPassword,
            Refusal::RateLimited { .. } => ReasonCode::Banned,
            Refusal::Unavailable => ReasonCode::ServerUnavailable,
        }
    }
}

/// What one method says about a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opinion {
    Allow,
    Deny,
    /// No opinion: the next method decides.
    Ignore,
}

/// The first step of authentication: decided, or the HTTP hook must be asked.
#[derive(Debug)]
pub enum Step {
    /// Decided without asking anyone.
    Done(Result<(), Refusal>),
    /// Send the question with [`http::ask`], then give the answer to [`Auth::finish`].
    Ask(HookQuestion),
}

/// A question for the HTTP hook, in flight (it counts against `max_pending_requests` until
/// dropped).
#[derive(Debug)]
pub struct HookQuestion {
    /// Where and how to ask.
    pub hook: Rc<HookSettings>,
    /// The whole HTTP request.
    pub request: Vec<u8>,
    key: [u8; 32],
    _pending: PendingGuard,
}

#[derive(Debug)]
struct PendingGuard(Rc<Cell<usize>>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// The hook's state on one core.
#[derive(Debug)]
struct Hook {
    settings: Rc<HookSettings>,
    cache: VerdictCache,
    pending: Rc<Cell<usize>>,
    failures: LogLimiter,
}

/// The auth state of one core.
#[derive(Debug)]
pub struct Auth {
    settings: AuthSettings,
    files: AuthFiles,
    /// Incremented at every successful reload: clients' cached rules compare it.
    generation: u64,
    limiter: Limiter,
    hook: Option<Hook>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth::new(AuthSettings::default(), AuthFiles::default())
    }
}

impl Auth {
    /// The state of a core, from files already loaded.
    pub fn new(settings: AuthSettings, files: AuthFiles) -> Auth {
        let hook = settings.http.as_ref().map(|h| Hook {
            settings: Rc::new(h.clone()),
            cache: VerdictCache::new(h.cache_ttl, h.cache_max_entries),
            pending: Rc::new(Cell::new(0)),
            failures: LogLimiter::default(),
        });
        Auth {
            limiter: Limiter::new(settings.limiter),
            settings,
            files,
            generation: 0,
            hook,
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

    /// Checks a CONNECT from `ip`: the limiter, then the methods in order (see the module
    /// documentation). `now_unix_secs` is the wall clock, for tokens. Refusals for bad
    /// credentials are counted in the limiter; the caller counts every refusal in its
    /// statistics.
    pub fn start(&mut self, c: &Connect, ip: IpAddr, now: Instant, now_unix_secs: u64) -> Step {
        if let Verdict::Refuse { first } = self.limiter.check(ip, now) {
            return Step::Done(Err(Refusal::RateLimited { first }));
        }
        let Some(user) = c.username.as_deref() else {
            if self.settings.allow_anonymous {
                return Step::Done(Ok(()));
            }
            self.limiter.failed(ip, now);
            return Step::Done(Err(Refusal::AnonymousNotAllowed));
        };
        let methods = self.files.passwords.is_some() || self.files.jwt.is_some();
        if !methods && self.hook.is_none() {
            // No method: user names are not checked (they still select ACL blocks).
            return Step::Done(Ok(()));
        }
        match self.local_opinion(c, user, now_unix_secs) {
            Opinion::Allow => return Step::Done(Ok(())),
            Opinion::Deny => return Step::Done(self.bad_credentials(ip, now)),
            Opinion::Ignore => {}
        }
        self.ask_hook(c, user, ip, now)
    }

    /// The password file's and then the JWT method's opinion.
    fn local_opinion(&self, c: &Connect, user: &str, now_unix_secs: u64) -> Opinion {
        let password = c.password.as_deref();
        if let Some(file) = &self.files.passwords {
            match file.check(user, password.unwrap_or_default()) {
                // A user in the file must give a password, even an empty one.
                Some(true) if password.is_some() => return Opinion::Allow,
                Some(_) => return Opinion::Deny,
                None => {}
            }
        }
        if let (Some(keys), Some(token)) = (&self.files.jwt, password) {
            match keys.verify(token, Some(user), &c.client_id, now_unix_secs) {
                Ok(()) => return Opinion::Allow,
                Err(JwtError::NotAToken) => {}
                Err(e) => {
                    tracing::debug!(client_id = %c.client_id, username = user, error = %e, "JWT refused");
                    return Opinion::Deny;
                }
            }
        }
        Opinion::Ignore
    }

    /// The hook's cached answer, or the question to ask it.
    fn ask_hook(&mut self, c: &Connect, user: &str, ip: IpAddr, now: Instant) -> Step {
        let Some(hook) = &mut self.hook else {
            return Step::Done(self.bad_credentials(ip, now));
        };
        let password = match c.password.as_deref().map(std::str::from_utf8) {
            None => None,
            Some(Ok(p)) => Some(p),
            // Not sent: the hook has no opinion on a password that is not text.
            Some(Err(_)) => return Step::Done(self.bad_credentials(ip, now)),
        };
        let credentials = Credentials {
            client_id: &c.client_id,
            username: Some(user),
            password,
            peer: ip,
            protocol: c.protocol.level(),
        };
        let key = hook.cache.key(&credentials);
        if let Some(answer) = hook.cache.get(&key, now) {
            return Step::Done(self.conclude(answer, ip, now));
        }
        if hook.pending.get() >= hook.settings.max_pending_requests {
            if let Some(suppressed) = hook.failures.allow(now) {
                tracing::warn!(
                    suppressed,
                    "CONNECT refused as unavailable: auth.http.max_pending_requests questions \
                     to the authentication hook are in flight on this core"
                );
            }
            return Step::Done(Err(Refusal::Unavailable));
        }
        hook.pending.set(hook.pending.get() + 1);
        Step::Ask(HookQuestion {
            hook: hook.settings.clone(),
            request: http::request(&hook.settings.url, &credentials),
            key,
            _pending: PendingGuard(hook.pending.clone()),
        })
    }

    /// Ends a [`Step::Ask`] with what the hook answered.
    pub fn finish(
        &mut self,
        question: HookQuestion,
        answer: Result<HookAnswer, HookError>,
        ip: IpAddr,
        now: Instant,
    ) -> Result<(), Refusal> {
        let HookQuestion { key, .. } = question;
        match answer {
            Ok(answer) => {
                if let Some(hook) = &mut self.hook {
                    hook.cache.put(key, answer, now);
                }
                self.conclude(answer, ip, now)
            }
            Err(error) => {
                if let Some(suppressed) = self.hook.as_mut().and_then(|h| h.failures.allow(now)) {
                    tracing::warn!(
                        %ip, %error, suppressed,
                        "authentication hook failed; CONNECT refused as unavailable \
                         (at most one such log per core every 10 s; `suppressed` were not logged)"
                    );
                }
                Err(Refusal::Unavailable)
            }
        }
    }

    /// The hook is the last method: its "ignore" ends the chain with a refusal.
    fn conclude(&mut self, answer: HookAnswer, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        match answer {
            HookAnswer::Allow => Ok(()),
            HookAnswer::Deny | HookAnswer::Ignore => self.bad_credentials(ip, now),
        }
    }

    fn bad_credentials(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        self.limiter.failed(ip, now);
        Err(Refusal::BadCredentials)
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

    /// The SCRAM-SHA-256 credentials, when `auth.scram_file` is set.
    pub fn scram(&self) -> Option<&scram::ScramFile> {
        self.files.scram.as_deref()
    }

    /// Asks the failed-login limiter about `ip` (before an enhanced authentication exchange).
    pub fn check_limit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        match self.limiter.check(ip, now) {
            Verdict::Refuse { first } => Err(Refusal::RateLimited { first }),
            Verdict::Allow => Ok(()),
        }
    }

    /// Counts a failed login from `ip` (a failed enhanced authentication exchange).
    pub fn login_failed(&mut self, ip: IpAddr, now: Instant) {
        self.limiter.failed(ip, now);
    }

    /// The per-client state for a connection of `username` with `client_id`.
    pub fn client(&self, username: Option<&str>, client_id: &str) -> ClientAuth {
        ClientAuth {
            username: username.map(Into::into),
            client_id: client_id.into(),
            rules: None,
            reauth: None,
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
    /// Set when the connection was verified by SCRAM-SHA-256: it may re-authenticate.
    reauth: Option<Box<scram::Reauth>>,
}

impl ClientAuth {
    /// Marks the connection as verified by SCRAM-SHA-256 at CONNECT (as its user name): it
    /// may re-authenticate (spec 4.12.1).
    pub fn enable_reauthentication(&mut self) {
        self.reauth = self
            .username
            .as_deref()
            .map(|u| Box::new(scram::Reauth::new(u)));
    }

    /// The re-authentication state; `None` for a connection without enhanced authentication.
    pub fn reauthentication(&mut self) -> Option<&mut scram::Reauth> {
        self.reauth.as_deref_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_codec::{ProtocolVersion, Utf8Bytes};
    use std::time::Duration;

    impl Auth {
        /// [`Auth::start`] for tests without a hook.
        fn authenticate(&mut self, c: &Connect, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
            match self.start(c, ip, now, jwt::tests::NOW) {
                Step::Done(verdict) => verdict,
                Step::Ask(q) => panic!("asks the hook: {q:?}"),
            }
        }
    }

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
                ..AuthFiles::default()
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

    fn hook_settings(cache_ttl_secs: u64, max_pending_requests: usize) -> HookSettings {
        HookSettings {
            url: http::parse_url("http://127.0.0.1:9/auth").unwrap(),
            timeout: Duration::from_secs(2),
            max_response_bytes: 4096,
            cache_ttl: Duration::from_secs(cache_ttl_secs),
            cache_max_entries: 100,
            max_pending_requests,
        }
    }

    /// Password file (alice, carol, ...), JWT (HMAC and RSA, `sub` = user name) and a hook.
    fn chain(hook: Option<HookSettings>) -> Auth {
        let passwords =
            PasswordFile::parse(include_str!("testdata/mosquitto.passwd"), "p").unwrap();
        Auth::new(
            AuthSettings {
                allow_anonymous: false,
                limiter: LimiterSettings {
                    limit: 100,
                    window: Duration::from_secs(60),
                    max_tracked_addresses: 16,
                },
                http: hook,
                ..AuthSettings::default()
            },
            AuthFiles {
                passwords: Some(Arc::new(passwords)),
                jwt: Some(Arc::new(jwt::tests::keys(jwt::tests::settings()))),
                ..AuthFiles::default()
            },
        )
    }

    fn jwt_for(user: &str) -> Vec<u8> {
        jwt::tests::token(jwt::Alg::Hs256, &format!(r#"{{"sub":"{user}"}}"#)).into_bytes()
    }

    #[test]
    fn methods_run_in_order_and_the_end_of_the_chain_refuses() {
        let ip: IpAddr = [127, 0, 0, 1].into();
        let now = Instant::now();
        let mut a = chain(None);
        let mut check = |user: &str, password: &[u8]| {
            a.authenticate(&connect(Some(user), Some(password)), ip, now)
        };
        // The password file decides for its users, even when the password is a valid token.
        assert_eq!(check("alice", b"alice-secret"), Ok(()));
        assert_eq!(
            check("alice", &jwt_for("alice")),
            Err(Refusal::BadCredentials)
        );
        // Users not in the file go on to JWT.
        assert_eq!(check("gina", &jwt_for("gina")), Ok(()));
        assert_eq!(
            check("gina", &jwt_for("erin")),
            Err(Refusal::BadCredentials)
        );
        // Not a token and no hook: the end of the chain.
        assert_eq!(check("gina", b"gina-secret"), Err(Refusal::BadCredentials));
        // Anonymous clients as before.
        assert_eq!(
            a.authenticate(&connect(None, Some(&jwt_for("x"))), ip, now),
            Err(Refusal::AnonymousNotAllowed)
        );
        assert_eq!(a.limiter.failures(ip), 4, "refusals count in the limiter");
    }

    fn ask(a: &mut Auth, user: &str, password: &[u8], now: Instant) -> HookQuestion {
        let ip: IpAddr = [127, 0, 0, 1].into();
        match a.start(
            &connect(Some(user), Some(password)),
            ip,
            now,
            jwt::tests::NOW,
        ) {
            Step::Ask(q) => q,
            Step::Done(v) => panic!("decided without the hook: {v:?}"),
        }
    }

    #[test]
    fn the_hook_is_asked_last_and_its_answers_are_cached() {
        let ip: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        let mut a = chain(Some(hook_settings(10, 8)));
        // Earlier methods decide without the hook.
        assert_eq!(
            a.authenticate(&connect(Some("alice"), Some(b"alice-secret")), ip, t0),
            Ok(())
        );
        assert_eq!(
            a.authenticate(&connect(Some("gina"), Some(&jwt_for("gina"))), ip, t0),
            Ok(())
        );
        // A password that is not a token goes to the hook, with every field.
        let q = ask(&mut a, "gina", b"pw", t0);
        let request = String::from_utf8(q.request.clone()).unwrap();
        assert!(request.starts_with("POST /auth HTTP/1.1\r\n"), "{request}");
        let body: serde_json::Value =
            serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"clientid": "c", "password": "pw", "peerhost": "127.0.0.1",
                               "protocol": 5, "username": "gina"})
        );
        assert_eq!(a.finish(q, Ok(HookAnswer::Allow), ip, t0), Ok(()));
        // Cached: decided at once until the TTL; another password asks again.
        let later = t0 + Duration::from_secs(9);
        assert_eq!(
            a.authenticate(&connect(Some("gina"), Some(b"pw")), ip, later),
            Ok(())
        );
        let q = ask(&mut a, "gina", b"other", later);
        assert_eq!(
            a.finish(q, Ok(HookAnswer::Deny), ip, later),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(
            a.authenticate(&connect(Some("gina"), Some(b"other")), ip, later),
            Err(Refusal::BadCredentials),
            "denials are cached too"
        );
        let q = ask(&mut a, "gina", b"pw", t0 + Duration::from_secs(10));
        // "ignore" from the last method refuses.
        assert_eq!(
            a.finish(q, Ok(HookAnswer::Ignore), ip, t0 + Duration::from_secs(10)),
            Err(Refusal::BadCredentials)
        );
        assert_eq!(a.limiter.failures(ip), 3);
        // Failures refuse as unavailable, are not cached and do not count in the limiter.
        let q = ask(&mut a, "frank", b"pw", t0);
        assert_eq!(
            a.finish(q, Err(HookError::Timeout), ip, t0),
            Err(Refusal::Unavailable)
        );
        let q = ask(&mut a, "frank", b"pw", t0);
        assert_eq!(
            a.finish(q, Err(HookError::ServerError(503)), ip, t0),
            Err(Refusal::Unavailable)
        );
        assert_eq!(a.limiter.failures(ip), 3);
        assert_eq!(
            Refusal::Unavailable.reason(true),
            ReasonCode::ServerUnavailable
        );
        assert_eq!(Refusal::Unavailable.reason(false).to_v3_connack(), 3);
        // Non-UTF-8 passwords are not sent: refused.
        assert_eq!(
            a.authenticate(&connect(Some("frank"), Some(b"\xff")), ip, t0),
            Err(Refusal::BadCredentials)
        );
    }

    #[test]
    fn questions_in_flight_are_bounded() {
        let ip: IpAddr = [127, 0, 0, 1].into();
        let t0 = Instant::now();
        let mut a = chain(Some(hook_settings(0, 2)));
        let q1 = ask(&mut a, "u1", b"p", t0);
        let q2 = ask(&mut a, "u2", b"p", t0);
        assert_eq!(
            a.authenticate(&connect(Some("u3"), Some(b"p")), ip, t0),
            Err(Refusal::Unavailable)
        );
        // An answered question and an abandoned one (its connection went away) both free
        // their place.
        assert_eq!(a.finish(q1, Ok(HookAnswer::Allow), ip, t0), Ok(()));
        drop(q2);
        let _q3 = ask(&mut a, "u3", b"p", t0);
        let _q4 = ask(&mut a, "u4", b"p", t0);
        drop(_q3);
        // No cache with a zero TTL: u1 is asked about again.
        let _q5 = ask(&mut a, "u1", b"p", t0);
    }

    fn config_error(toml: &str) -> String {
        match crate::config::Config::from_toml_str(toml) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {toml}"),
        }
    }

    #[test]
    fn configuration_of_the_methods() {
        use crate::config::Config;
        let c = Config::from_toml_str(
            "[auth.jwt]\nhmac_secret = \"s\"\nrsa_public_key_file = \"k.pem\"\n\
             algorithms = [\"HS512\", \"RS256\"]\nmatch_claim = \"cid\"\n\
             match_to = \"client_id\"\n\
             [auth.http]\nurl = \"http://127.0.0.1:8080/a\"\ntimeout_ms = 500\n",
        )
        .unwrap();
        let s = c.auth.settings(true);
        let j = s.jwt.as_ref().unwrap();
        assert_eq!(j.algorithms, [jwt::Alg::Hs512, jwt::Alg::Rs256]);
        assert_eq!(j.match_to, jwt::ClaimTarget::ClientId);
        assert_eq!(s.key_of_file("k.pem"), "auth.jwt.rsa_public_key_file");
        let h = s.http.as_ref().unwrap();
        assert_eq!(h.timeout, Duration::from_millis(500));
        assert_eq!(
            h.url.addr,
            "127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap()
        );
        // The effective configuration round-trips.
        assert_eq!(Config::from_toml_str(&c.to_toml_string()).unwrap(), c);
        // Default algorithms: those of the keys.
        let c = Config::from_toml_str("[auth.jwt]\nhmac_secret_file = \"s\"\n").unwrap();
        let algorithms = c.auth.settings(true).jwt.unwrap().algorithms;
        assert_eq!(
            algorithms,
            [jwt::Alg::Hs256, jwt::Alg::Hs384, jwt::Alg::Hs512]
        );
        for (toml, needle) in [
            ("[auth.jwt]\n", "auth.jwt: needs a key"),
            (
                "[auth.jwt]\nhmac_secret = \"\"\n",
                "auth.jwt.hmac_secret: must not be empty",
            ),
            (
                "[auth.jwt]\nhmac_secret = \"s\"\nhmac_secret_file = \"f\"\n",
                "not both",
            ),
            (
                "[auth.jwt]\nhmac_secret = \"s\"\nalgorithms = [\"none\"]\n",
                "never accepted",
            ),
            (
                "[auth.jwt]\nhmac_secret = \"s\"\nalgorithms = [\"ES256\"]\n",
                "unknown algorithm \"ES256\"",
            ),
            (
                "[auth.jwt]\nhmac_secret = \"s\"\nalgorithms = [\"RS256\"]\n",
                "RS256 needs rsa_public_key_file",
            ),
            (
                "[auth.jwt]\nrsa_public_key_file = \"k\"\nalgorithms = [\"HS256\"]\n",
                "HS256 needs hmac_secret",
            ),
            (
                "[auth.jwt]\nrsa_public_key_file = \"\"\n",
                "rsa_public_key_file: must not be empty",
            ),
            (
                "[auth.jwt]\nhmac_secret = \"s\"\nmatch_claim = \"\"\n",
                "match_claim",
            ),
            (
                "[auth.jwt]\nhmac_secret = \"s\"\nmatch_to = \"sub\"\n",
                "match_to",
            ),
            (
                "[auth.jwt]\nhmac_secret = \"s\"\nmax_token_bytes = 10\n",
                "max_token_bytes",
            ),
            ("[auth.jwt]\nhmac_secret = \"s\"\nleeway = 1\n", "leeway"),
            ("[auth.http]\n", "auth.http.url: must be set"),
            (
                "[auth.http]\nurl = \"https://10.0.0.1/\"\n",
                "https is not supported",
            ),
            (
                "[auth.http]\nurl = \"http://auth.internal/\"\n",
                "names are not resolved",
            ),
            (
                "[auth.http]\nurl = \"http://127.0.0.1/\"\ntimeout_ms = 0\n",
                "auth.http.timeout_ms",
            ),
            (
                "[auth.http]\nurl = \"http://127.0.0.1/\"\ncache_max_entries = 0\n",
                "cache_max_entries",
            ),
            (
                "[auth.http]\nurl = \"http://127.0.0.1/\"\nmax_pending_requests = 0\n",
                "max_pending_requests",
            ),
            (
                "[auth.http]\nurl = \"http://127.0.0.1/\"\nmax_response_bytes = 1\n",
                "max_response_bytes",
            ),
        ] {
            let e = config_error(toml);
            assert!(e.contains(needle), "{toml}: {e}");
        }
    }
}
