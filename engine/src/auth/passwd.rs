//! Password files in the format Mosquitto's `mosquitto_passwd` writes, read as they are:
//!
//! ```text
//! # comment
//! user:$7$101$<base64 salt, 12 bytes>$<base64 hash, 64 bytes>   PBKDF2-HMAC-SHA512 (Mosquitto 2 default)
//! user:$6$<base64 salt, 12 bytes>$<base64 hash, 64 bytes>       SHA-512(password || salt)
//! ```
//!
//! The user name is everything before the first `:` (spaces included), the hash everything
//! after it; trailing blanks and a CR are ignored. Blank lines and lines starting with `#` are
//! skipped. Anything else (a plain-text password, a bad base64, a wrong length, a duplicate
//! user) is an error naming the file and the line: Mosquitto skips such lines with a warning,
//! ringmq refuses to start with a file it does not fully understand.
//!
//! Hashes are compared in constant time (`subtle`). An unknown user costs the same PBKDF2 work
//! as a known one, so that timing does not tell which user names exist.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// PBKDF2 iterations of the `$7$` lines `ringmq passwd` writes (Mosquitto 2's default).
pub const DEFAULT_ITERATIONS: u32 = 101;

/// The most PBKDF2 iterations a `$7$` line may ask for. Every CONNECT with a password costs
/// this many HMAC-SHA512 rounds on the core that reads it, so a huge count would stall the core.
pub const MAX_ITERATIONS: u32 = 100_000;

/// Salt bytes (Mosquitto: 12).
pub const SALT_LEN: usize = 12;

/// Hash bytes (SHA-512: 64).
pub const HASH_LEN: usize = 64;

/// One stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$6$`: SHA-512(password || salt).
    Sha512 {
        /// The salt.
        salt: [u8; SALT_LEN],
        /// The hash.
        hash: [u8; HASH_LEN],
    },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        /// Iterations.
        iterations: u32,
        /// The salt.
        salt: [u8; SALT_LEN],
        /// The derived key.
        hash: [u8; HASH_LEN],
    },
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print hashes into logs.
        match self {
            PasswordHash::Sha512 { .. } => f.write_str("PasswordHash::Sha512(..)"),
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => {
                write!(f, "PasswordHash::Pbkdf2Sha512({iterations} iterations, ..)")
            }
        }
    }
}

fn decode_fixed<const N: usize>(b64: &str, what: &str) -> Result<[u8; N], String> {
    let bytes = B64
        .decode(b64)
        .map_err(|e| format!("{what} is not valid base64 ({e})"))?;
    <[u8; N]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{what} must be {N} bytes, got {}", bytes.len()))
}

impl PasswordHash {
    /// Parses the part after `user:`.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let parts: Vec<&str> = text.split('$').collect();
        match parts.as_slice() {
            ["", "6", salt, hash] => Ok(PasswordHash::Sha512 {
                salt: decode_fixed(salt, "salt")?,
                hash: decode_fixed(hash, "hash")?,
            }),
            ["", "7", iterations, salt, hash] => {
                let iterations: u32 = iterations
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_ITERATIONS).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "iteration count must be a number from 1 to {MAX_ITERATIONS}, \
                             got {iterations:?}"
                        )
                    })?;
                Ok(PasswordHash::Pbkdf2Sha512 {
                    iterations,
                    salt: decode_fixed(salt, "salt")?,
                    hash: decode_fixed(hash, "hash")?,
                })
            }
            ["", kind, ..] if *kind == "6" || *kind == "7" => Err(format!(
                "malformed ${kind}$ hash (expected {})",
                if *kind == "6" {
                    "$6$salt$hash"
                } else {
                    "$7$iterations$salt$hash"
                }
            )),
            ["", kind, ..] => Err(format!(
                "unsupported hash type ${kind}$ (supported: $6$ and $7$, as written by \
                 mosquitto_passwd)"
            )),
            _ => Err(
                "not a password hash (plain-text passwords are not accepted; hash the \
                 file with `ringmq passwd` or `mosquitto_passwd -U`)"
                    .to_owned(),
            ),
        }
    }

    /// A new `$7$` hash of `password` with a random salt.
    pub fn new_pbkdf2(password: &[u8], iterations: u32) -> Result<PasswordHash, String> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::getrandom(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
        Ok(Self::pbkdf2_with_salt(password, iterations, salt))
    }

    fn pbkdf2_with_salt(password: &[u8], iterations: u32, salt: [u8; SALT_LEN]) -> PasswordHash {
        PasswordHash::Pbkdf2Sha512 {
            iterations,
            salt,
            hash: pbkdf2_sha512(password, &salt, iterations),
        }
    }

    /// Whether `password` matches, compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        let computed = match self {
            PasswordHash::Sha512 { salt, .. } => sha512_salted(password, salt),
            PasswordHash::Pbkdf2Sha512 {
                iterations, salt, ..
            } => pbkdf2_sha512(password, salt, *iterations),
        };
        let stored = match self {
            PasswordHash::Sha512 { hash, .. } | PasswordHash::Pbkdf2Sha512 { hash, .. } => hash,
        };
        computed.ct_eq(stored).into()
    }
}

impl fmt::Display for PasswordHash {
    /// The text after `user:`, byte for byte what `mosquitto_passwd` writes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", B64.encode(salt), B64.encode(hash))
            }
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                B64.encode(salt),
                B64.encode(hash)
            ),
        }
    }
}

fn sha512_salted(password: &[u8], salt: &[u8]) -> [u8; HASH_LEN] {
    let mut h = Sha512::new();
    h.update(password);
    h.update(salt);
    h.finalize().into()
}

fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    out
}

/// A password-file error, with the file and the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The file as given in the configuration.
    pub file: String,
    /// 1-based line number (0 when the error is about the whole file).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for LineError {}

/// Checks a user name for the file: not empty, no `:`, no line breaks, at most 65,535 bytes.
pub fn check_username(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("the user name is empty".into());
    }
    if user.contains(':') {
        return Err("a user name may not contain ':'".into());
    }
    if user.contains(['\n', '\r', '\0']) {
        return Err("a user name may not contain line breaks or NUL".into());
    }
    if user.len() > 65_535 {
        return Err("the user name is longer than 65535 bytes".into());
    }
    if user.starts_with('#') {
        return Err("a user name may not start with '#' (it would read as a comment)".into());
    }
    Ok(())
}

/// A parsed password file: user name to hash.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<Box<str>, PasswordHash>,
    /// Spent on unknown users, so that they cost the same as known ones.
    dummy: Option<PasswordHash>,
}

impl PasswordFile {
    /// Parses the text of a file; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<PasswordFile, LineError> {
        let mut users: HashMap<Box<str>, PasswordHash> = HashMap::new();
        let mut first_line: HashMap<Box<str>, usize> = HashMap::new();
        for (i, raw) in text.split('\n').enumerate() {
            let line_no = i + 1;
            let err = |message: String| LineError {
                file: file.to_owned(),
                line: line_no,
                message,
            };
            let line = raw.trim_end_matches(['\r', ' ', '\t']);
            if line.trim_start().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(err("expected user:hash".into()));
            };
            check_username(user).map_err(&err)?;
            let hash =
                PasswordHash::parse(hash.trim()).map_err(|m| err(format!("user {user:?}: {m}")))?;
            if let Some(first) = first_line.get(user) {
                return Err(err(format!(
                    "user {user:?} is listed twice (first on line {first})"
                )));
            }
            first_line.insert(user.into(), line_no);
            users.insert(user.into(), hash);
        }
        let dummy = users
            .values()
            .find(|h| matches!(h, PasswordHash::Pbkdf2Sha512 { .. }))
            .or_else(|| users.values().next())
            .map(|h| match h {
                PasswordHash::Pbkdf2Sha512 { iterations, .. } => {
                    PasswordHash::pbkdf2_with_salt(b"", *iterations, [0; SALT_LEN])
                }
                PasswordHash::Sha512 { .. } => PasswordHash::Sha512 {
                    salt: [0; SALT_LEN],
                    hash: [0; HASH_LEN],
                },
            });
        Ok(PasswordFile { users, dummy })
    }

    /// Reads and parses a file of at most `max_bytes`.
    pub fn load(path: &Path, max_bytes: u64) -> Result<PasswordFile, LineError> {
        let text = super::read_bounded(path, max_bytes)?;
        PasswordFile::parse(&text, &path.display().to_string())
    }

    /// Users in the file.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user` exists and `password` is theirs. Unknown users cost the same work.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        self.check(user, password) == Some(true)
    }

    /// `Some(true)`: `user` exists and `password` is theirs; `Some(false)`: `user` exists with
    /// another password; `None`: no such user. Unknown users cost the same work.
    pub fn check(&self, user: &str, password: &[u8]) -> Option<bool> {
        match self.users.get(user) {
            Some(hash) => Some(hash.verify(password)),
            None => {
                if let Some(d) = &self.dummy {
                    let _ = d.verify(password);
                }
                None
            }
        }
    }
}

/// Adds, replaces or deletes one user in the text of a password file, keeping every other
/// line (comments included) as it is. `hash: None` deletes. Returns the new text and whether
/// the user existed.
pub fn edit(text: &str, user: &str, hash: Option<&impl fmt::Display>) -> (String, bool) {
    let mut out = String::with_capacity(text.len() + 160);
    let mut found = false;
    for line in text.lines() {
        let is_user =
            !line.starts_with('#') && line.split_once(':').is_some_and(|(u, _)| u == user);
        if is_user {
            if !found {
                if let Some(h) = hash {
                    out.push_str(&format!("{user}:{h}\n"));
                }
            }
            found = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !found {
        if let Some(h) = hash {
            out.push_str(&format!("{user}:{h}\n"));
        }
    }
    (out, found)
}

/// Replaces the file at `path` with `text`: a temporary file in the same directory, mode 0600,
/// synced, renamed over the old one.
pub(crate) fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let shown = path.display();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "passwd".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot write {shown}: {e}"));
    }
    Ok(())
}

/// What `ringmq passwd` does to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    /// Add the user or replace their password.
    Set {
        /// The password.
        password: String,
        /// Start a new file (replacing any existing one).
        create: bool,
    },
    /// Delete the user.
    Delete,
}

/// Applies `change` for `user` to the password file at `path`, atomically (a temporary file in
/// the same directory, mode 0600, renamed over the old one). The existing file must parse.
/// Returns a line for the operator.
pub fn update_file(path: &Path, user: &str, change: &FileChange) -> Result<String, String> {
    check_username(user).map_err(|e| format!("invalid user name {user:?}: {e}"))?;
    let shown = path.display();
    let old = match change {
        FileChange::Set { create: true, .. } => String::new(),
        _ => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!("{shown} does not exist (use -c to create it)"));
            }
            Err(e) => return Err(format!("cannot read {shown}: {e}")),
        },
    };
    PasswordFile::parse(&old, &shown.to_string()).map_err(|e| e.to_string())?;
    let hash = match change {
        FileChange::Set { password, .. } => Some(PasswordHash::new_pbkdf2(
            password.as_bytes(),
            DEFAULT_ITERATIONS,
        )?),
        FileChange::Delete => None,
    };
    let (text, existed) = edit(&old, user, hash.as_ref());
    if hash.is_none() && !existed {
        return Err(format!("user {user:?} is not in {shown}"));
    }
    write_atomically(path, &text)?;
    Ok(match (change, existed) {
        (FileChange::Delete, _) => format!("deleted user {user:?} from {shown}"),
        (_, true) => format!("updated the password of {user:?} in {shown}"),
        (_, false) => format!("added user {user:?} to {shown}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by the real `mosquitto_passwd` (Mosquitto 2.0.11): alice and "bob smith" with
    /// `$7$` (default), carol and dave with `-H sha512` (`$6$`), erin with an empty password.
    const FIXTURE: &str = include_str!("testdata/mosquitto.passwd");

    fn fixture() -> PasswordFile {
        PasswordFile::parse(FIXTURE, "mosquitto.passwd").unwrap()
    }

    #[test]
    fn reads_what_mosquitto_passwd_writes() {
        let f = fixture();
        assert_eq!(f.len(), 5);
        assert!(f.verify("alice", b"alice-secret"));
        assert!(f.verify("bob smith", b"p@ss:w0rd with spaces"));
        assert!(f.verify("carol", b"carol-secret"));
        assert!(f.verify("dave", "é ünïcode".as_bytes()));
        assert!(f.verify("erin", b""));
    }

    #[test]
    fn wrong_passwords_and_unknown_users_are_refused() {
        let f = fixture();
        assert!(!f.verify("alice", b"alice-secreT"));
        assert!(!f.verify("alice", b""));
        assert!(!f.verify("carol", b"alice-secret"));
        assert!(!f.verify("erin", b"x"));
        assert!(!f.verify("mallory", b"alice-secret"));
        assert!(!f.verify("Alice", b"alice-secret"));
    }

    #[test]
    fn formats_byte_for_byte_like_mosquitto_passwd() {
        // Re-encoding every parsed line gives the fixture back.
        for line in FIXTURE.lines() {
            let (user, hash) = line.split_once(':').unwrap();
            let h = PasswordHash::parse(hash).unwrap();
            assert_eq!(format!("{user}:{h}"), line);
        }
        let h = PasswordHash::new_pbkdf2(b"pw", DEFAULT_ITERATIONS).unwrap();
        let text = h.to_string();
        let parts: Vec<&str> = text.split('$').collect();
        assert_eq!(parts[..3], ["", "7", "101"]);
        assert_eq!(parts[3].len(), 16); // 12 bytes in base64
        assert_eq!(parts[4].len(), 88); // 64 bytes in base64
        assert!(PasswordHash::parse(&text).unwrap().verify(b"pw"));
        // Fresh salts.
        assert_ne!(
            text,
            PasswordHash::new_pbkdf2(b"pw", DEFAULT_ITERATIONS)
                .unwrap()
                .to_string()
        );
    }

    #[test]
    fn comments_blank_lines_and_crlf_are_accepted() {
        let alice = FIXTURE.lines().next().unwrap();
        let text = format!("# users\n\n   \n{alice}\r\n# end\n");
        let f = PasswordFile::parse(&text, "p").unwrap();
        assert!(f.verify("alice", b"alice-secret"));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let good = FIXTURE.lines().next().unwrap();
        let salt = "sQwE+G07U3MloHqY";
        let hash = good.rsplit('$').next().unwrap();
        for (bad, needle) in [
            ("alice".to_owned(), "user:hash"),
            ("alice:secret".to_owned(), "plain-text"),
            (":$6$x$y".to_owned(), "empty"),
            (format!("u:$5${salt}${hash}"), "unsupported"),
            (format!("u:$6${salt}"), "malformed"),
            (format!("u:$7$101${salt}"), "malformed"),
            (format!("u:$7$abc${salt}${hash}"), "iteration"),
            (format!("u:$7$0${salt}${hash}"), "iteration"),
            (format!("u:$7$100001${salt}${hash}"), "iteration"),
            (format!("u:$7$-1${salt}${hash}"), "iteration"),
            (format!("u:$6$!!!${hash}"), "base64"),
            (format!("u:$6$c2FsdA==${hash}"), "12 bytes"),
            (format!("u:$6${salt}$c2FsdA=="), "64 bytes"),
            (good.to_owned(), "twice"),
        ] {
            let text = format!("# header\n{good}\n{bad}\n");
            let e = PasswordFile::parse(&text, "etc/passwd").unwrap_err();
            assert_eq!(e.line, 3, "{bad}: {e}");
            let shown = e.to_string();
            assert!(shown.starts_with("etc/passwd:3: "), "{shown}");
            assert!(shown.contains(needle), "{bad}: {shown}");
        }
    }

    #[test]
    fn hostile_input_never_panics() {
        for text in [
            "\u{0}",
            "::::",
            "$$$$",
            "a:$7$",
            "a:$7$$$",
            "a:$6$$",
            "\n\n\r\n",
            "a:$7$99999999999999999999$a$b",
            "a:$7$1$\u{FFFF}$x",
            "#\u{0}",
        ] {
            let _ = PasswordFile::parse(text, "f");
        }
    }

    #[test]
    fn uses_constant_time_comparison() {
        // `verify` goes through `subtle::ConstantTimeEq`; check that a hash differing only in
        // its last byte is refused (a short-circuiting compare would be just as correct, so
        // this is a guard against an accidental `==` on a prefix).
        let h = PasswordHash::parse(FIXTURE.lines().nth(2).unwrap().split_once(':').unwrap().1)
            .unwrap();
        let PasswordHash::Sha512 { salt, mut hash } = h else {
            panic!()
        };
        assert!(PasswordHash::Sha512 { salt, hash }.verify(b"carol-secret"));
        hash[HASH_LEN - 1] ^= 1;
        assert!(!PasswordHash::Sha512 { salt, hash }.verify(b"carol-secret"));
    }

    #[test]
    fn edit_adds_replaces_and_deletes() {
        let h = PasswordHash::new_pbkdf2(b"one", DEFAULT_ITERATIONS).unwrap();
        let (text, existed) = edit("# keep\n", "u1", Some(&h));
        assert!(!existed);
        assert_eq!(text, format!("# keep\nu1:{h}\n"));
        let h2 = PasswordHash::new_pbkdf2(b"two", DEFAULT_ITERATIONS).unwrap();
        let (text, existed) = edit(&text, "u1", Some(&h2));
        assert!(existed);
        let f = PasswordFile::parse(&text, "p").unwrap();
        assert!(f.verify("u1", b"two") && !f.verify("u1", b"one"));
        let (text, existed) = edit(&text, "u1", None::<&PasswordHash>);
        assert!(existed);
        assert_eq!(text, "# keep\n");
        check_username("a:b").unwrap_err();
        check_username("").unwrap_err();
        check_username("#x").unwrap_err();
        check_username("bob smith").unwrap();
    }

    #[test]
    fn update_file_is_atomic_and_checks_its_input() {
        let dir = std::env::temp_dir().join(format!("ringmq-passwd-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("passwd");
        let set = |p: &str, create| FileChange::Set {
            password: p.into(),
            create,
        };
        let e = update_file(&path, "u", &set("x", false)).unwrap_err();
        assert!(e.contains("-c"), "{e}");
        update_file(&path, "u", &set("one", true)).unwrap();
        update_file(&path, "v", &set("two", false)).unwrap();
        update_file(&path, "u", &set("three", false)).unwrap();
        let f = PasswordFile::load(&path, 1 << 20).unwrap();
        assert!(f.verify("u", b"three") && f.verify("v", b"two") && f.len() == 2);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        update_file(&path, "u", &FileChange::Delete).unwrap();
        assert!(update_file(&path, "u", &FileChange::Delete).is_err());
        assert!(update_file(&path, "a:b", &set("x", false)).is_err());
        // A broken file is not rewritten.
        std::fs::write(&path, "v:plain\n").unwrap();
        let e = update_file(&path, "w", &set("x", false)).unwrap_err();
        assert!(e.contains(":1:"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "v:plain\n");
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
