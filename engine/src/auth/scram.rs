//! SCRAM-SHA-256 (RFC 5802, RFC 7677) for MQTT 5 enhanced authentication (spec 4.12): the
//! credentials file and the server side of the exchange, as a pure state machine (no sockets,
//! no clock; the server nonce is random unless a test gives it).
//!
//! The exchange, carried in the Authentication Data of CONNECT, AUTH and CONNACK:
//!
//! ```text
//! client-first  n,,n=user,r=<client nonce>                      (CONNECT)
//! server-first  r=<client nonce><server nonce>,s=<salt>,i=<n>    (AUTH 0x18)
//! client-final  c=biws,r=<both nonces>,p=<proof>                 (AUTH 0x18)
//! server-final  v=<server signature>                             (CONNACK 0x00, or AUTH 0x00)
//! ```
//!
//! No channel binding (gs2 flag `n`, or `y`: the client could bind but believes the server
//! cannot, which is true), no authorization identity, no mandatory extensions. User names and
//! passwords are used as their UTF-8 bytes: no SASLprep normalisation (identical for ASCII).
//!
//! The file holds one line per user in PostgreSQL's format, so the server never stores a
//! password, only what verifies a proof:
//!
//! ```text
//! user:SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>
//! ```
//!
//! Unknown users are not told apart from wrong passwords: the exchange goes on with a made-up
//! credential whose salt and keys come from the user name and a secret of the file (a hash of
//! every ServerKey in it: the same on every core and across restarts, unknown to clients), and
//! fails at the proof like a wrong password. The made-up credential is computed for every
//! exchange, known user or not, so both cost the same work.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use pbkdf2::hmac::{Hmac, Mac};
use ringmq_codec::ReasonCode;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::passwd::{check_username, edit, write_atomically, FileChange, LineError};

/// The Authentication Method of this exchange.
pub const METHOD: &str = "SCRAM-SHA-256";

/// The prefix of a credential in the file (PostgreSQL's).
pub const PREFIX: &str = "SCRAM-SHA-256$";

/// Iterations of the credentials `ringmq passwd --scram` writes (RFC 7677's minimum).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// The fewest iterations a line may have: RFC 7677 asks for at least 4096.
pub const MIN_ITERATIONS: u32 = 4096;

/// The most iterations a line may have: the client computes them at every login, so a huge
/// count stalls clients (the server never computes them).
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// Salt bytes of the credentials `ringmq passwd --scram` writes (PostgreSQL: 16).
pub const SALT_LEN: usize = 16;

/// The longest salt a line may have, in bytes.
pub const MAX_SALT_LEN: usize = 256;

/// Random bytes of a server nonce (24 characters of base64).
pub const SERVER_NONCE_BYTES: usize = 18;

/// The longest client nonce accepted, in characters.
pub const MAX_CLIENT_NONCE_LEN: usize = 1024;

/// Bytes of StoredKey, ServerKey, proofs and signatures (SHA-256).
pub const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_LEN] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    Sha256::digest(data).into()
}

/// What verifies one user's proofs: never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// The salt.
    pub salt: Box<[u8]>,
    /// H(ClientKey).
    pub stored_key: [u8; KEY_LEN],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; KEY_LEN],
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print keys into logs.
        write!(f, "Credential({} iterations, ..)", self.iterations)
    }
}

impl Credential {
    /// The credential of `password` with this salt and iteration count (RFC 5802 section 3).
    pub fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> Credential {
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        Credential {
            iterations,
            salt: salt.into(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, &[b"Server Key"]),
        }
    }

    /// The credential of `password` with a fresh random salt of [`SALT_LEN`] bytes.
    pub fn new(password: &[u8], iterations: u32) -> Result<Credential, String> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::getrandom(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
        Ok(Credential::from_password(password, &salt, iterations))
    }

    /// Parses the part after `user:`.
    pub fn parse(text: &str) -> Result<Credential, String> {
        let Some(rest) = text.strip_prefix(PREFIX) else {
            return Err(format!(
                "not a SCRAM-SHA-256 credential (expected \
                 {PREFIX}<iterations>:<salt>$<StoredKey>:<ServerKey>)"
            ));
        };
        let malformed = || {
            format!("malformed credential (expected {PREFIX}<iterations>:<salt>$<StoredKey>:<ServerKey>)")
        };
        let (params, keys) = rest.split_once('$').ok_or_else(malformed)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(malformed)?;
        let (stored, server) = keys.split_once(':').ok_or_else(malformed)?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|n| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(n))
            .ok_or_else(|| {
                format!(
                    "iteration count must be a number from {MIN_ITERATIONS} to \
                     {MAX_ITERATIONS}, got {iterations:?}"
                )
            })?;
        let salt = B64
            .decode(salt)
            .map_err(|e| format!("salt is not valid base64 ({e})"))?;
        if salt.is_empty() || salt.len() > MAX_SALT_LEN {
            return Err(format!(
                "salt must be 1 to {MAX_SALT_LEN} bytes, got {}",
                salt.len()
            ));
        }
        Ok(Credential {
            iterations,
            salt: salt.into(),
            stored_key: decode_key(stored, "StoredKey")?,
            server_key: decode_key(server, "ServerKey")?,
        })
    }
}

fn decode_key(b64: &str, what: &str) -> Result<[u8; KEY_LEN], String> {
    let bytes = B64
        .decode(b64)
        .map_err(|e| format!("{what} is not valid base64 ({e})"))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{what} must be {KEY_LEN} bytes, got {}", bytes.len()))
}

impl fmt::Display for Credential {
    /// The text after `user:`, in PostgreSQL's format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

/// A parsed SCRAM credentials file: user name to credential.
#[derive(Debug, Clone)]
pub struct ScramFile {
    users: HashMap<Box<str>, Credential>,
    /// The secret of the made-up credentials of unknown users.
    mock_secret: [u8; KEY_LEN],
    /// Their iteration count: the first line's (or the default).
    mock_iterations: u32,
}

impl Default for ScramFile {
    fn default() -> Self {
        ScramFile::parse("", "").expect("an empty file parses")
    }
}

impl ScramFile {
    /// Parses the text of a file; `file` names it in errors. Blank lines and lines starting
    /// with `#` are skipped; a CR and trailing blanks are ignored.
    pub fn parse(text: &str, file: &str) -> Result<ScramFile, LineError> {
        let mut users: HashMap<Box<str>, Credential> = HashMap::new();
        let mut first_line: HashMap<Box<str>, usize> = HashMap::new();
        let mut secret = Sha256::new();
        secret.update(b"ringmq SCRAM mock credentials\0");
        let mut mock_iterations = None;
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
            let Some((user, credential)) = line.split_once(':') else {
                return Err(err(format!("expected user:{PREFIX}...")));
            };
            check_username(user).map_err(&err)?;
            let credential = Credential::parse(credential.trim())
                .map_err(|m| err(format!("user {user:?}: {m}")))?;
            if let Some(first) = first_line.get(user) {
                return Err(err(format!(
                    "user {user:?} is listed twice (first on line {first})"
                )));
            }
            secret.update(credential.server_key);
            secret.update(credential.stored_key);
            mock_iterations.get_or_insert(credential.iterations);
            first_line.insert(user.into(), line_no);
            users.insert(user.into(), credential);
        }
        Ok(ScramFile {
            users,
            mock_secret: secret.finalize().into(),
            mock_iterations: mock_iterations.unwrap_or(DEFAULT_ITERATIONS),
        })
    }

    /// Reads and parses a file of at most `max_bytes`.
    pub fn load(path: &Path, max_bytes: u64) -> Result<ScramFile, LineError> {
        let text = super::read_bounded(path, max_bytes)?;
        ScramFile::parse(&text, &path.display().to_string())
    }

    /// Users in the file.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The made-up credential of a user who is not in the file.
    fn mock(&self, user: &str) -> Credential {
        let key = &self.mock_secret;
        let salt = hmac(key, &[b"salt\0", user.as_bytes()]);
        Credential {
            iterations: self.mock_iterations,
            salt: salt[..SALT_LEN].into(),
            stored_key: hmac(key, &[b"stored\0", user.as_bytes()]),
            server_key: hmac(key, &[b"server\0", user.as_bytes()]),
        }
    }

    /// Starts an exchange from the client-first-message, with a random server nonce. Returns
    /// the exchange and the server-first-message to send.
    pub fn start(&self, client_first: &[u8]) -> Result<(Exchange, Vec<u8>), Failure> {
        let mut random = [0u8; SERVER_NONCE_BYTES];
        getrandom::getrandom(&mut random).map_err(|_| Failure::NoRandom)?;
        self.start_with_nonce(client_first, &B64.encode(random))
    }

    /// [`ScramFile::start`] with a given server nonce (printable ASCII without `,`).
    pub fn start_with_nonce(
        &self,
        client_first: &[u8],
        server_nonce: &str,
    ) -> Result<(Exchange, Vec<u8>), Failure> {
        assert!(
            !server_nonce.is_empty() && server_nonce.bytes().all(is_nonce_char),
            "a server nonce is printable ASCII without ','"
        );
        let first = parse_client_first(client_first)?;
        let mock = self.mock(&first.user);
        let (credential, known) = match self.users.get(first.user.as_str()) {
            Some(c) => (c.clone(), true),
            None => (mock, false),
        };
        let nonce = format!("{}{server_nonce}", first.client_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        let auth_message_prefix = format!("{},{server_first},", first.bare);
        let exchange = Exchange {
            user: first.user.into(),
            known,
            credential,
            gs2_header: first.gs2_header,
            nonce,
            auth_message_prefix,
        };
        Ok((exchange, server_first.into_bytes()))
    }
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A message that does not follow RFC 5802 (what is wrong, for the log).
    Malformed(&'static str),
    /// Something this server does not do: channel binding, an authorization identity, a
    /// mandatory extension.
    Unsupported(&'static str),
    /// A wrong proof, or a user who is not in the file (never told apart).
    InvalidProof,
    /// The system's random source failed.
    NoRandom,
}

impl Failure {
    /// The reason code of the CONNACK (or DISCONNECT, on re-authentication) that refuses it:
    /// 0x86 for a wrong password or unknown user, 0x87 for a message the server cannot accept,
    /// 0x80 when the server is at fault.
    pub fn reason(self) -> ReasonCode {
        match self {
            Failure::InvalidProof => ReasonCode::BadUserNameOrPassword,
            Failure::Malformed(_) | Failure::Unsupported(_) => ReasonCode::NotAuthorized,
            Failure::NoRandom => ReasonCode::UnspecifiedError,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Malformed(what) => write!(f, "malformed SCRAM message: {what}"),
            Failure::Unsupported(what) => write!(f, "unsupported SCRAM feature: {what}"),
            Failure::InvalidProof => f.write_str("invalid proof (wrong password or unknown user)"),
            Failure::NoRandom => f.write_str("the random source failed"),
        }
    }
}

/// An exchange waiting for the client-final-message.
#[derive(Clone)]
pub struct Exchange {
    user: Box<str>,
    known: bool,
    credential: Credential,
    /// The gs2 header of the client-first-message, which `c=` must repeat.
    gs2_header: String,
    /// Client nonce and server nonce.
    nonce: String,
    /// client-first-message-bare "," server-first-message ",".
    auth_message_prefix: String,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A verified client: who it is and the server-final-message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The user name of the exchange.
    pub user: Box<str>,
    /// `v=<server signature>`.
    pub server_final: Vec<u8>,
}

impl Exchange {
    /// The user name the client gave (known or not).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Checks the client-final-message. An unknown user fails here, like a wrong password.
    pub fn finish(self, client_final: &[u8]) -> Result<Verified, Failure> {
        let text = std::str::from_utf8(client_final)
            .map_err(|_| Failure::Malformed("client-final-message is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(Failure::Malformed("client-final-message has no proof"))?;
        let proof = decode_proof(proof)?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(Failure::Malformed("expected c=<channel binding>"))?;
        let binding = B64
            .decode(binding)
            .map_err(|_| Failure::Malformed("channel binding is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(Failure::Malformed(
                "channel binding does not repeat the gs2 header",
            ));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(Failure::Malformed("expected r=<nonce>"))?;
        if nonce != self.nonce {
            return Err(Failure::Malformed("the nonce is not the server's"));
        }
        for extension in attrs {
            check_extension(extension)?;
        }
        let mut auth_message = self.auth_message_prefix.into_bytes();
        auth_message.extend_from_slice(without_proof.as_bytes());
        let c = &self.credential;
        let client_signature = hmac(&c.stored_key, &[auth_message.as_slice()]);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        let matches = sha256(&client_key).ct_eq(&c.stored_key);
        let server_signature = hmac(&c.server_key, &[auth_message.as_slice()]);
        if !bool::from(matches & subtle::Choice::from(u8::from(self.known))) {
            return Err(Failure::InvalidProof);
        }
        Ok(Verified {
            user: self.user,
            server_final: format!("v={}", B64.encode(server_signature)).into_bytes(),
        })
    }
}

/// What an AUTH packet of a re-authentication asks the broker to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// AUTH 0x18 (Continue authentication) with this server-first-message.
    Continue(Vec<u8>),
    /// AUTH 0x00 (Success) with this server-final-message: re-authenticated.
    Done(Vec<u8>),
}

/// Re-authentication (MQTT 5 spec 4.12.1) of a connection verified by SCRAM-SHA-256 at
/// CONNECT: the client sends AUTH 0x19 with a new client-first-message, then AUTH 0x18 with
/// its proof; other packets flow meanwhile. The user may not change.
#[derive(Debug, Clone)]
pub struct Reauth {
    user: Box<str>,
    pending: Option<Box<Exchange>>,
}

impl Reauth {
    /// The state of a connection verified as `user`.
    pub fn new(user: &str) -> Reauth {
        Reauth {
            user: user.into(),
            pending: None,
        }
    }

    /// Whether an exchange waits for its client-final-message.
    pub fn in_progress(&self) -> bool {
        self.pending.is_some()
    }

    /// One AUTH packet from the client: its reason code, Authentication Method and Data.
    /// `file` is the core's SCRAM file (`None`: no longer configured). An error is the reason
    /// of the DISCONNECT that ends the connection [MQTT-4.12.1-2]: 0x82 for an AUTH out of
    /// sequence or without a method, 0x8C for another method, 0x87 for a failed proof (0x86
    /// is not a DISCONNECT reason), a malformed message or another user.
    pub fn on_auth(
        &mut self,
        file: Option<&ScramFile>,
        reason: ReasonCode,
        method: Option<&str>,
        data: &[u8],
    ) -> Result<Step, ReasonCode> {
        match method {
            None => return Err(ReasonCode::ProtocolError),
            Some(m) if m != METHOD => return Err(ReasonCode::BadAuthenticationMethod),
            Some(_) => {}
        }
        match (reason, self.pending.take()) {
            (ReasonCode::ReAuthenticate, None) => {
                let file = file.ok_or(ReasonCode::NotAuthorized)?;
                let (exchange, server_first) =
                    file.start(data).map_err(|_| ReasonCode::NotAuthorized)?;
                if exchange.user() != &*self.user {
                    return Err(ReasonCode::NotAuthorized);
                }
                self.pending = Some(Box::new(exchange));
                Ok(Step::Continue(server_first))
            }
            (ReasonCode::ContinueAuthentication, Some(exchange)) => exchange
                .finish(data)
                .map(|v| Step::Done(v.server_final))
                .map_err(|_| ReasonCode::NotAuthorized),
            _ => Err(ReasonCode::ProtocolError),
        }
    }
}

fn decode_proof(b64: &str) -> Result<[u8; KEY_LEN], Failure> {
    let bytes = B64
        .decode(b64)
        .map_err(|_| Failure::Malformed("the proof is not base64"))?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| Failure::Malformed("the proof is not 32 bytes"))
}

/// printable = %x21-2B / %x2D-7E (RFC 5802 section 7).
fn is_nonce_char(b: u8) -> bool {
    (0x21..=0x7E).contains(&b) && b != b','
}

/// An optional extension `x=value`: a letter, `=`, anything but NUL (ignored).
fn check_extension(attr: &str) -> Result<(), Failure> {
    let bytes = attr.as_bytes();
    if bytes.len() >= 2
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b'='
        && !attr.contains('\0')
    {
        Ok(())
    } else {
        Err(Failure::Malformed("expected an attribute a=value"))
    }
}

/// The parts of a client-first-message.
struct ClientFirst<'a> {
    /// Up to and with the second comma.
    gs2_header: String,
    /// client-first-message-bare.
    bare: &'a str,
    user: String,
    client_nonce: &'a str,
}

fn parse_client_first(message: &[u8]) -> Result<ClientFirst<'_>, Failure> {
    let text = std::str::from_utf8(message)
        .map_err(|_| Failure::Malformed("client-first-message is not UTF-8"))?;
    let mut parts = text.splitn(3, ',');
    match parts.next() {
        Some("n" | "y") => {}
        Some(flag) if flag.starts_with("p=") => {
            return Err(Failure::Unsupported("channel binding"))
        }
        _ => return Err(Failure::Malformed("expected the gs2 header n,,")),
    }
    match parts.next() {
        Some("") => {}
        Some(a) if a.starts_with("a=") => {
            return Err(Failure::Unsupported("an authorization identity"))
        }
        _ => return Err(Failure::Malformed("expected the gs2 header n,,")),
    }
    let bare = parts
        .next()
        .ok_or(Failure::Malformed("expected the gs2 header n,,"))?;
    let gs2_header = text[..text.len() - bare.len()].to_owned();
    let mut attrs = bare.split(',');
    let first = attrs.next().unwrap_or_default();
    if first.starts_with("m=") {
        return Err(Failure::Unsupported("a mandatory extension"));
    }
    let user = first
        .strip_prefix("n=")
        .ok_or(Failure::Malformed("expected n=<user name>"))?;
    let user = decode_saslname(user)?;
    let client_nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(Failure::Malformed("expected r=<nonce>"))?;
    if client_nonce.is_empty()
        || client_nonce.len() > MAX_CLIENT_NONCE_LEN
        || !client_nonce.bytes().all(is_nonce_char)
    {
        return Err(Failure::Malformed(
            "the client nonce must be 1 to 1024 printable characters without ','",
        ));
    }
    for extension in attrs {
        check_extension(extension)?;
    }
    Ok(ClientFirst {
        gs2_header,
        bare,
        user,
        client_nonce,
    })
}

/// A saslname: `=2C` is `,`, `=3D` is `=`; any other `=` and NUL are errors.
fn decode_saslname(name: &str) -> Result<String, Failure> {
    let bad = Failure::Malformed("invalid user name encoding");
    if name.is_empty() || name.contains('\0') {
        return Err(bad);
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return Err(bad),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Applies `change` for `user` to the SCRAM file at `path`, atomically, as
/// [`super::passwd::update_file`] does for password files; new credentials get a random salt
/// and `iterations`. The existing file must parse. Returns a line for the operator.
pub fn update_file(
    path: &Path,
    user: &str,
    change: &FileChange,
    iterations: u32,
) -> Result<String, String> {
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
    ScramFile::parse(&old, &shown.to_string()).map_err(|e| e.to_string())?;
    let credential = match change {
        FileChange::Set { password, .. } => Some(Credential::new(password.as_bytes(), iterations)?),
        FileChange::Delete => None,
    };
    let (text, existed) = edit(&old, user, credential.as_ref());
    if credential.is_none() && !existed {
        return Err(format!("user {user:?} is not in {shown}"));
    }
    write_atomically(path, &text)?;
    Ok(match (change, existed) {
        (FileChange::Delete, _) => format!("deleted user {user:?} from {shown}"),
        (_, true) => format!("updated the SCRAM credential of {user:?} in {shown}"),
        (_, false) => format!("added user {user:?} to {shown}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil".
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                    p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    /// The RFC prints "v=6rriTRBi23WpRR/wskA+jGVQy/wgEtt7d7tUI7tDs+I=", an error in the
    /// example: the value every implementation computes (and the proof above implies) is this.
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_file() -> &'static ScramFile {
        static FILE: std::sync::OnceLock<ScramFile> = std::sync::OnceLock::new();
        FILE.get_or_init(|| {
            let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
            let c = Credential::from_password(b"pencil", &salt, 4096);
            ScramFile::parse(&format!("# test\nuser:{c}\n"), "scram").unwrap()
        })
    }

    /// The client side, as a test computes it.
    fn client_final(password: &[u8], client_first_bare: &str, server_first: &str) -> String {
        client_final_with(b"n,,", password, client_first_bare, server_first)
    }

    fn client_final_with(
        gs2_header: &[u8],
        password: &[u8],
        client_first_bare: &str,
        server_first: &str,
    ) -> String {
        let mut salt = None;
        let mut iterations = None;
        let mut nonce = None;
        for a in server_first.split(',') {
            match a.split_at(2) {
                ("r=", v) => nonce = Some(v),
                ("s=", v) => salt = Some(B64.decode(v).unwrap()),
                ("i=", v) => iterations = Some(v.parse().unwrap()),
                _ => {}
            }
        }
        let mut salted = [0u8; KEY_LEN];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, &salt.unwrap(), iterations.unwrap(), &mut salted);
        let client_key = hmac(&salted, &[b"Client Key"]);
        let without_proof = format!("c={},r={}", B64.encode(gs2_header), nonce.unwrap());
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = hmac(&sha256(&client_key), &[auth.as_bytes()]);
        let proof: Vec<u8> = client_key.iter().zip(sig).map(|(k, s)| k ^ s).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    #[test]
    fn rfc_7677_test_vector() {
        let file = rfc_file();
        let (exchange, server_first) = file
            .start_with_nonce(RFC_CLIENT_FIRST.as_bytes(), RFC_SERVER_NONCE)
            .unwrap();
        assert_eq!(String::from_utf8(server_first).unwrap(), RFC_SERVER_FIRST);
        assert_eq!(exchange.user(), "user");
        let verified = exchange.finish(RFC_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(&*verified.user, "user");
        assert_eq!(
            String::from_utf8(verified.server_final).unwrap(),
            RFC_SERVER_FINAL
        );
        // And the test client computes the RFC's proof.
        assert_eq!(
            client_final(b"pencil", &RFC_CLIENT_FIRST[3..], RFC_SERVER_FIRST),
            RFC_CLIENT_FINAL
        );
    }

    #[test]
    fn a_wrong_proof_is_refused() {
        let file = rfc_file();
        let (exchange, server_first) = file.start(b"n,,n=user,r=abcdefghijklmnop").unwrap();
        let server_first = String::from_utf8(server_first).unwrap();
        assert!(server_first.starts_with("r=abcdefghijklmnop"));
        let bad = client_final(b"pencil!", "n=user,r=abcdefghijklmnop", &server_first);
        assert_eq!(
            exchange.clone().finish(bad.as_bytes()),
            Err(Failure::InvalidProof)
        );
        let good = client_final(b"pencil", "n=user,r=abcdefghijklmnop", &server_first);
        assert!(exchange.finish(good.as_bytes()).is_ok());
        assert_eq!(
            Failure::InvalidProof.reason(),
            ReasonCode::BadUserNameOrPassword
        );
    }

    #[test]
    fn fresh_server_nonces() {
        let file = rfc_file();
        let (_, a) = file.start(b"n,,n=user,r=x").unwrap();
        let (_, b) = file.start(b"n,,n=user,r=x").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn unknown_users_look_like_known_ones() {
        let file = rfc_file();
        let first = |user: &str| {
            let (e, sf) = file
                .start_with_nonce(format!("n,,n={user},r=cn").as_bytes(), "sn")
                .unwrap();
            (e, String::from_utf8(sf).unwrap())
        };
        let (exchange, server_first) = first("mallory");
        // Same shape as a known user's: salt of 16 bytes, the file's iteration count.
        let (_, known) = first("user");
        assert_eq!(server_first.len(), known.len(), "{server_first} / {known}");
        assert!(server_first.ends_with(",i=4096"));
        // Stable for the same name, different for another.
        assert_eq!(first("mallory").1, server_first);
        assert_ne!(first("mallory2").1, server_first);
        // Any password fails like a wrong one; even the made-up keys themselves.
        let attempt = client_final(b"pencil", "n=mallory,r=cn", &server_first);
        assert_eq!(
            exchange.clone().finish(attempt.as_bytes()),
            Err(Failure::InvalidProof)
        );
        // Another file with other keys gives other salts for unknown users.
        let other = ScramFile::parse(
            &format!("user:{}\n", Credential::new(b"x", 4096).unwrap()),
            "f",
        )
        .unwrap();
        let (_, sf) = other.start_with_nonce(b"n,,n=mallory,r=cn", "sn").unwrap();
        assert_ne!(String::from_utf8(sf).unwrap(), server_first);
    }

    #[test]
    fn user_names_are_unescaped() {
        let c = Credential::from_password(b"pw", b"salt", 4096);
        let file = ScramFile::parse(&format!("a,b=c:{c}\n"), "f").unwrap();
        let (exchange, sf) = file.start_with_nonce(b"n,,n=a=2Cb=3Dc,r=cn", "sn").unwrap();
        assert_eq!(exchange.user(), "a,b=c");
        let sf = String::from_utf8(sf).unwrap();
        let cf = client_final(b"pw", "n=a=2Cb=3Dc,r=cn", &sf);
        assert_eq!(&*exchange.finish(cf.as_bytes()).unwrap().user, "a,b=c");
        assert_eq!(
            decode_saslname("a=2"),
            Err(Failure::Malformed("invalid user name encoding"))
        );
        assert!(decode_saslname("a=41").is_err());
        assert!(decode_saslname("=").is_err());
    }

    #[test]
    fn malformed_client_first_messages_are_refused() {
        let file = rfc_file();
        for (msg, expected) in [
            ("", "gs2"),
            ("n", "gs2"),
            ("n,", "gs2"),
            ("x,,n=user,r=a", "gs2"),
            ("n,x,n=user,r=a", "gs2"),
            ("n,,", "n="),
            ("n,,r=a,n=user", "n="),
            ("n,,n=,r=a", "user name"),
            ("n,,n=user", "r="),
            ("n,,n=user,r=", "nonce"),
            ("n,,n=user,r=a b", "nonce"),
            ("n,,n=user,x=a", "r="),
            ("n,,n=user,r=a,1", "attribute"),
            ("n,,n=us=er,r=a", "user name"),
            ("n,,n=u\0,r=a", "user name"),
        ] {
            match file.start(msg.as_bytes()) {
                Err(Failure::Malformed(what)) => {
                    assert!(what.contains(expected), "{msg:?}: {what}")
                }
                other => panic!("{msg:?}: {other:?}"),
            }
        }
        let long = format!("n,,n=user,r={}", "a".repeat(MAX_CLIENT_NONCE_LEN + 1));
        assert!(matches!(
            file.start(long.as_bytes()),
            Err(Failure::Malformed(_))
        ));
        assert!(file.start(&[0xff, b',', b',']).is_err());
        for msg in [
            "p=tls-unique,,n=user,r=a",
            "n,a=admin,n=user,r=a",
            "n,,m=ext,n=user,r=a",
        ] {
            assert!(
                matches!(file.start(msg.as_bytes()), Err(Failure::Unsupported(_))),
                "{msg}"
            );
        }
        assert_eq!(
            Failure::Unsupported("x").reason(),
            ReasonCode::NotAuthorized
        );
        // "y": the client could bind but believes the server cannot; accepted, and c= must
        // then repeat "y,,".
        let (e, sf) = file.start_with_nonce(b"y,,n=user,r=cn", "sn").unwrap();
        let sf = String::from_utf8(sf).unwrap();
        let cf = client_final(b"pencil", "n=user,r=cn", &sf);
        assert!(e.clone().finish(cf.as_bytes()).is_err(), "c=biws is n,,");
        let cf = client_final_with(b"y,,", b"pencil", "n=user,r=cn", &sf);
        assert!(cf.starts_with("c=eSws,"));
        assert!(e.finish(cf.as_bytes()).is_ok());
    }

    #[test]
    fn malformed_client_final_messages_are_refused() {
        let file = rfc_file();
        let (exchange, _) = file
            .start_with_nonce(RFC_CLIENT_FIRST.as_bytes(), RFC_SERVER_NONCE)
            .unwrap();
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        for msg in [
            String::new(),
            "c=biws".into(),
            format!("c=biws,r={nonce}"),
            format!("c=biws,r={nonce},p="),
            format!("c=biws,r={nonce},p=!!!"),
            format!("c=biws,r={nonce},p=c2hvcnQ="),
            format!("c=eSws,r={nonce},p={proof}"),
            format!("c=bad!,r={nonce},p={proof}"),
            format!("r={nonce},p={proof}"),
            format!("c=biws,p={proof}"),
            format!("c=biws,r={nonce}x,p={proof}"),
            format!("c=biws,r=rOprNGfwEbeRWgbNEkqO,p={proof}"),
            format!("c=biws,r={nonce},1,p={proof}"),
            format!("c=biws,r={nonce},p={proof},x=1"),
        ] {
            assert!(
                matches!(
                    exchange.clone().finish(msg.as_bytes()),
                    Err(Failure::Malformed(_))
                ),
                "{msg:?}"
            );
        }
        assert!(exchange.clone().finish(&[0xff]).is_err());
        // An optional extension before the proof is ignored, but it is part of the signed
        // message, so the RFC's proof no longer matches.
        assert_eq!(
            exchange.finish(format!("c=biws,r={nonce},x=1,p={proof}").as_bytes()),
            Err(Failure::InvalidProof)
        );
    }

    #[test]
    fn credentials_round_trip_in_postgresql_format() {
        // User "user", password "pencil", the salt of RFC 7677's example.
        let c = Credential::from_password(
            b"pencil",
            &B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap(),
            4096,
        );
        let text = c.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"));
        assert_eq!(Credential::parse(&text).unwrap(), c);
        let fresh = Credential::new(b"pw", DEFAULT_ITERATIONS).unwrap();
        assert_eq!(fresh.salt.len(), SALT_LEN);
        assert_ne!(fresh, Credential::new(b"pw", DEFAULT_ITERATIONS).unwrap());
        assert!(!format!("{c:?}").contains(&B64.encode(c.stored_key)));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let good = format!("alice:{}", Credential::from_password(b"a", b"salt", 4096));
        let keys = good.split_once('$').unwrap().1.split_once('$').unwrap().1;
        for (bad, needle) in [
            ("alice".to_owned(), "expected user:"),
            ("alice:secret".to_owned(), "not a SCRAM"),
            (":SCRAM-SHA-256$4096:c2FsdA==$x:y".to_owned(), "empty"),
            ("u:SCRAM-SHA-256$4096:c2FsdA==".to_owned(), "malformed"),
            ("u:SCRAM-SHA-256$4096$a:b".to_owned(), "malformed"),
            (format!("u:SCRAM-SHA-256$4095:c2FsdA==${keys}"), "iteration"),
            (format!("u:SCRAM-SHA-256$x:c2FsdA==${keys}"), "iteration"),
            (
                format!("u:SCRAM-SHA-256$99999999999:c2FsdA==${keys}"),
                "iteration",
            ),
            (format!("u:SCRAM-SHA-256$4096:!!${keys}"), "salt"),
            (format!("u:SCRAM-SHA-256$4096:${keys}"), "salt"),
            (
                "u:SCRAM-SHA-256$4096:c2FsdA==$c2FsdA==:c2FsdA==".to_owned(),
                "StoredKey",
            ),
            (good.clone(), "twice"),
        ] {
            let text = format!("# header\n{good}\n{bad}\n");
            let e = ScramFile::parse(&text, "etc/scram").unwrap_err();
            assert_eq!(e.line, 3, "{bad}: {e}");
            let shown = e.to_string();
            assert!(shown.starts_with("etc/scram:3: "), "{shown}");
            assert!(shown.contains(needle), "{bad}: {shown}");
        }
        let f = ScramFile::parse(&format!("\n  \n{good}\r\n# x\n"), "f").unwrap();
        assert_eq!(f.len(), 1);
        assert!(ScramFile::default().is_empty());
    }

    #[test]
    fn update_file_adds_replaces_and_deletes() {
        let dir = std::env::temp_dir().join(format!("ringmq-scram-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("scram");
        let set = |p: &str, create| FileChange::Set {
            password: p.into(),
            create,
        };
        assert!(update_file(&path, "u", &set("x", false), 4096).is_err());
        update_file(&path, "u", &set("one", true), 4096).unwrap();
        update_file(&path, "v", &set("two", false), 5000).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("u:SCRAM-SHA-256$4096:"), "{text}");
        assert!(text.contains("\nv:SCRAM-SHA-256$5000:"), "{text}");
        update_file(&path, "u", &set("three", false), 4096).unwrap();
        let f = ScramFile::load(&path, 1 << 20).unwrap();
        assert_eq!(f.len(), 2);
        let (e, sf) = f.start(b"n,,n=u,r=cn").unwrap();
        let cf = client_final(b"three", "n=u,r=cn", std::str::from_utf8(&sf).unwrap());
        assert!(e.finish(cf.as_bytes()).is_ok());
        update_file(&path, "u", &FileChange::Delete, 4096).unwrap();
        assert!(update_file(&path, "u", &FileChange::Delete, 4096).is_err());
        assert_eq!(ScramFile::load(&path, 1 << 20).unwrap().len(), 1);
        // A broken file is not rewritten.
        std::fs::write(&path, "v:plain\n").unwrap();
        let e = update_file(&path, "w", &set("x", false), 4096).unwrap_err();
        assert!(e.contains(":1:"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reauthentication() {
        let file = rfc_file();
        let mut r = Reauth::new("user");
        let auth = |r: &mut Reauth, reason, method, data: &[u8]| {
            r.on_auth(Some(file), reason, method, data)
        };
        let m = Some(METHOD);
        let Step::Continue(sf) =
            auth(&mut r, ReasonCode::ReAuthenticate, m, b"n,,n=user,r=cn").unwrap()
        else {
            panic!()
        };
        assert!(r.in_progress());
        let sf = String::from_utf8(sf).unwrap();
        let cf = client_final(b"pencil", "n=user,r=cn", &sf);
        match auth(&mut r, ReasonCode::ContinueAuthentication, m, cf.as_bytes()) {
            Ok(Step::Done(v)) => assert!(v.starts_with(b"v=")),
            other => panic!("{other:?}"),
        }
        assert!(!r.in_progress());
        // Out of sequence, without or with another method.
        let cont = ReasonCode::ContinueAuthentication;
        assert_eq!(auth(&mut r, cont, m, b""), Err(ReasonCode::ProtocolError));
        assert_eq!(
            auth(&mut r, ReasonCode::Success, m, b""),
            Err(ReasonCode::ProtocolError)
        );
        let re = ReasonCode::ReAuthenticate;
        assert_eq!(auth(&mut r, re, None, b""), Err(ReasonCode::ProtocolError));
        assert_eq!(
            auth(&mut r, re, Some("PLAIN"), b""),
            Err(ReasonCode::BadAuthenticationMethod)
        );
        // Another user, a malformed message, a wrong proof, no file any more.
        assert_eq!(
            auth(&mut r, re, m, b"n,,n=other,r=cn"),
            Err(ReasonCode::NotAuthorized)
        );
        assert_eq!(auth(&mut r, re, m, b"junk"), Err(ReasonCode::NotAuthorized));
        let Ok(Step::Continue(sf)) = auth(&mut r, re, m, b"n,,n=user,r=cn") else {
            panic!()
        };
        assert_eq!(
            auth(&mut r, re, m, b"n,,n=user,r=cn"),
            Err(ReasonCode::ProtocolError)
        );
        let Ok(Step::Continue(sf2)) = auth(&mut r, re, m, b"n,,n=user,r=cn") else {
            panic!()
        };
        assert_ne!(sf, sf2);
        let cf = client_final(b"wrong", "n=user,r=cn", std::str::from_utf8(&sf2).unwrap());
        assert_eq!(
            auth(&mut r, cont, m, cf.as_bytes()),
            Err(ReasonCode::NotAuthorized)
        );
        assert_eq!(
            r.on_auth(None, re, m, b"n,,n=user,r=cn"),
            Err(ReasonCode::NotAuthorized)
        );
    }

    proptest::proptest! {
        #[test]
        fn hostile_messages_never_panic(
            first in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            last in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            text in "[nyp=,a-zA-Z0-9+/]{0,80}",
        ) {
            let file = rfc_file();
            let _ = file.start(&first);
            let _ = file.start(text.as_bytes());
            if let Ok((e, _)) = file.start(b"n,,n=user,r=abc") {
                let _ = e.clone().finish(&last);
                let _ = e.finish(text.as_bytes());
            }
            let _ = Credential::parse(&text);
            let _ = ScramFile::parse(&String::from_utf8_lossy(&first), "f");
        }
    }
}
