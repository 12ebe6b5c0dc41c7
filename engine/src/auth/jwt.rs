//! JSON Web Tokens in the MQTT password field (the EMQX habit): a client sends a signed token
//! instead of a password and the broker checks its signature, its time claims and, optionally,
//! that one claim names the client.
//!
//! Verified with `ring` directly (already in the build through rustls), so no JWT crate and no
//! second crypto library. Only JWS compact serialization is understood: `header.payload.signature`,
//! each part base64url without padding. What is accepted:
//! - HS256/HS384/HS512 with the configured secret, RS256/RS384/RS512 (PKCS#1 v1.5, keys of 2048
//!   to 8192 bits) with the configured public key. Each family has its own key, so a token can
//!   never make the broker use the RSA public key as an HMAC secret (algorithm confusion).
//! - Only the algorithms in [`JwtSettings::algorithms`]; `none` is never accepted, nor a header
//!   with `crit` (no extension is understood).
//! - `exp` and `nbf`, when present, must be numbers and hold at the current time, give or take
//!   [`JwtSettings::leeway_secs`]; `exp` can be required.
//!
//! Pure: the time is an argument; key files are read by [`JwtKeys::load`] only.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::{hmac, signature};
use serde_json::{Map, Value};

use super::LineError;

/// A signature algorithm of JWS (RFC 7518) that ringmq verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// HMAC with SHA-256.
    Hs256,
    /// HMAC with SHA-384.
    Hs384,
    /// HMAC with SHA-512.
    Hs512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
}

/// Every algorithm, in the order of their names in [`ALGORITHM_NAMES`].
pub const ALGORITHMS: [Alg; 6] = [
    Alg::Hs256,
    Alg::Hs384,
    Alg::Hs512,
    Alg::Rs256,
    Alg::Rs384,
    Alg::Rs512,
];

/// The names of [`ALGORITHMS`], as in a token's header and in the configuration.
pub const ALGORITHM_NAMES: [&str; 6] = ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512"];

impl Alg {
    /// The algorithm named `name` (exact, as in the `alg` header).
    pub fn from_name(name: &str) -> Option<Alg> {
        let i = ALGORITHM_NAMES.iter().position(|n| *n == name)?;
        Some(ALGORITHMS[i])
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        let i = ALGORITHMS.iter().position(|a| *a == self).unwrap_or(0);
        ALGORITHM_NAMES[i]
    }

    /// An HMAC algorithm (else RSA).
    pub fn is_hmac(self) -> bool {
        matches!(self, Alg::Hs256 | Alg::Hs384 | Alg::Hs512)
    }
}

/// Which identity of the client a claim must equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimTarget {
    /// The CONNECT's user name.
    Username,
    /// The CONNECT's client identifier.
    ClientId,
}

/// The JWT method's settings (from `[auth.jwt]`, already validated). Its `Debug` hides the
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The HMAC secret given in the configuration.
    pub hmac_secret: Option<String>,
    /// A file holding the HMAC secret (one trailing line break is not part of it).
    pub hmac_secret_file: Option<PathBuf>,
    /// A PEM file with the RSA public key (`BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`).
    pub rsa_public_key_file: Option<PathBuf>,
    /// The algorithms accepted; each has its key configured.
    pub algorithms: Vec<Alg>,
    /// The claim that must equal the client's identity (`None`: no such check).
    pub match_claim: Option<String>,
    /// Which identity `match_claim` must equal.
    pub match_to: ClaimTarget,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Tokens without `exp` are refused.
    pub require_exp: bool,
    /// Longest token accepted, in bytes.
    pub max_token_bytes: usize,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("hmac_secret", &self.hmac_secret.as_ref().map(|_| "…"))
            .field("hmac_secret_file", &self.hmac_secret_file)
            .field("rsa_public_key_file", &self.rsa_public_key_file)
            .field("algorithms", &self.algorithms)
            .field("match_claim", &self.match_claim)
            .field("match_to", &self.match_to)
            .field("leeway_secs", &self.leeway_secs)
            .field("require_exp", &self.require_exp)
            .field("max_token_bytes", &self.max_token_bytes)
            .finish()
    }
}

/// The keys, read from the configuration and its files (at start-up and on SIGHUP).
#[derive(Clone)]
pub struct JwtKeys {
    settings: JwtSettings,
    hmac_secret: Option<Vec<u8>>,
    /// The RSA public key as DER `RSAPublicKey` (PKCS#1), what `ring` verifies with.
    rsa_public_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("JwtKeys")
            .field("algorithms", &self.settings.algorithms)
            .field("hmac_secret", &self.hmac_secret.as_ref().map(|_| "…"))
            .field(
                "rsa_public_key_bytes",
                &self.rsa_public_key.as_ref().map(Vec::len),
            )
            .finish()
    }
}

/// Why a token was refused (or, for [`JwtError::NotAToken`], not looked at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// The password is not shaped like a JWT: the method has no opinion.
    NotAToken,
    /// Longer than `max_token_bytes`.
    TooLong,
    /// A part is not base64url, or the header or payload is not a JSON object.
    Malformed(&'static str),
    /// `alg` is `none`.
    AlgNone,
    /// `alg` is not one of the configured algorithms.
    AlgNotAllowed(String),
    /// The header has `crit`: extensions ringmq does not understand.
    CriticalExtension,
    /// The signature does not verify with the configured key.
    BadSignature,
    /// `exp` has passed (with the leeway).
    Expired,
    /// `nbf` has not come yet (with the leeway).
    NotYetValid,
    /// No `exp`, and one is required.
    MissingExp,
    /// `exp` or `nbf` is not a number.
    BadTimeClaim(&'static str),
    /// The configured claim is missing, not a string, or not the client's identity.
    ClaimMismatch,
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtError::NotAToken => write!(f, "not a JWT"),
            JwtError::TooLong => write!(f, "longer than auth.jwt.max_token_bytes"),
            JwtError::Malformed(what) => write!(f, "malformed token: {what}"),
            JwtError::AlgNone => write!(f, "alg \"none\" is never accepted"),
            JwtError::AlgNotAllowed(alg) => write!(f, "alg {alg:?} is not in auth.jwt.algorithms"),
            JwtError::CriticalExtension => write!(f, "header has \"crit\""),
            JwtError::BadSignature => write!(f, "bad signature"),
            JwtError::Expired => write!(f, "expired"),
            JwtError::NotYetValid => write!(f, "not valid yet (nbf)"),
            JwtError::MissingExp => write!(f, "no exp claim (auth.jwt.require_exp)"),
            JwtError::BadTimeClaim(claim) => write!(f, "{claim} is not a number"),
            JwtError::ClaimMismatch => write!(f, "auth.jwt.match_claim does not match"),
        }
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Whether `token` has the shape of a JWS compact token: three parts of base64url characters
/// separated by two dots, the first not empty.
pub fn looks_like_token(token: &[u8]) -> bool {
    let dots = token.iter().filter(|&&b| b == b'.').count();
    dots == 2
        && token.first().is_some_and(|&b| b != b'.')
        && token
            .iter()
            .all(|&b| b == b'.' || b == b'-' || b == b'_' || b.is_ascii_alphanumeric())
}

fn decode_json_object(part: &[u8], what: &'static str) -> Result<Map<String, Value>, JwtError> {
    let bytes = B64.decode(part).map_err(|_| JwtError::Malformed(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed(what)),
    }
}

impl JwtKeys {
    /// Reads the secret file and the public key file the settings name.
    pub fn load(settings: &JwtSettings, max_file_bytes: u64) -> Result<JwtKeys, LineError> {
        let hmac_secret = match (&settings.hmac_secret, &settings.hmac_secret_file) {
            (Some(secret), _) => Some(secret.as_bytes().to_vec()),
            (None, Some(path)) => Some(read_secret(path, max_file_bytes)?),
            (None, None) => None,
        };
        let rsa_public_key = settings
            .rsa_public_key_file
            .as_deref()
            .map(|path| {
                let text = super::read_bounded(path, max_file_bytes)?;
                rsa_public_key_from_pem(&text).map_err(|message| LineError {
                    file: path.display().to_string(),
                    line: 0,
                    message,
                })
            })
            .transpose()?;
        Ok(JwtKeys::new(settings.clone(), hmac_secret, rsa_public_key))
    }

    /// Keys already in memory (`rsa_public_key`: DER `RSAPublicKey`).
    pub fn new(
        settings: JwtSettings,
        hmac_secret: Option<Vec<u8>>,
        rsa_public_key: Option<Vec<u8>>,
    ) -> JwtKeys {
        JwtKeys {
            settings,
            hmac_secret,
            rsa_public_key,
        }
    }

    /// Checks `token` for a client with `username` and `client_id` at `now_unix_secs`.
    pub fn verify(
        &self,
        token: &[u8],
        username: Option<&str>,
        client_id: &str,
        now_unix_secs: u64,
    ) -> Result<(), JwtError> {
        if !looks_like_token(token) {
            return Err(JwtError::NotAToken);
        }
        if token.len() > self.settings.max_token_bytes {
            return Err(JwtError::TooLong);
        }
        let mut parts = token.split(|&b| b == b'.');
        let (Some(header), Some(payload), Some(sig)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::NotAToken);
        };
        let header = decode_json_object(header, "header")?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => alg,
            _ => return Err(JwtError::Malformed("no alg in the header")),
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(JwtError::AlgNone);
        }
        let alg = Alg::from_name(alg)
            .filter(|a| self.settings.algorithms.contains(a))
            .ok_or_else(|| JwtError::AlgNotAllowed(alg.chars().take(32).collect()))?;
        if header.contains_key("crit") {
            return Err(JwtError::CriticalExtension);
        }
        let sig = B64
            .decode(sig)
            .map_err(|_| JwtError::Malformed("signature"))?;
        let signed = &token[..token.len() - sig_part_len(token)];
        self.check_signature(alg, signed, &sig)?;
        let claims = decode_json_object(payload, "payload")?;
        self.check_times(&claims, now_unix_secs)?;
        self.check_claim(&claims, username, client_id)
    }

    fn check_signature(&self, alg: Alg, signed: &[u8], sig: &[u8]) -> Result<(), JwtError> {
        let ok = if alg.is_hmac() {
            let Some(secret) = &self.hmac_secret else {
                return Err(JwtError::AlgNotAllowed(alg.name().into()));
            };
            let algorithm = match alg {
                Alg::Hs256 => hmac::HMAC_SHA256,
                Alg::Hs384 => hmac::HMAC_SHA384,
                _ => hmac::HMAC_SHA512,
            };
            hmac::verify(&hmac::Key::new(algorithm, secret), signed, sig).is_ok()
        } else {
            let Some(key) = &self.rsa_public_key else {
                return Err(JwtError::AlgNotAllowed(alg.name().into()));
            };
            let algorithm: &signature::RsaParameters = match alg {
                Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                _ => &signature::RSA_PKCS1_2048_8192_SHA512,
            };
            signature::UnparsedPublicKey::new(algorithm, key)
                .verify(signed, sig)
                .is_ok()
        };
        if ok {
            Ok(())
        } else {
            Err(JwtError::BadSignature)
        }
    }

    fn check_times(&self, claims: &Map<String, Value>, now: u64) -> Result<(), JwtError> {
        let number = |name: &'static str| match claims.get(name) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or(JwtError::BadTimeClaim(name)),
        };
        let now = now as f64;
        let leeway = self.settings.leeway_secs as f64;
        match number("exp")? {
            // RFC 7519 4.1.4: the current time must be before exp.
            Some(exp) if now >= exp + leeway => return Err(JwtError::Expired),
            None if self.settings.require_exp => return Err(JwtError::MissingExp),
            _ => {}
        }
        match number("nbf")? {
            Some(nbf) if now + leeway < nbf => Err(JwtError::NotYetValid),
            _ => Ok(()),
        }
    }

    fn check_claim(
        &self,
        claims: &Map<String, Value>,
        username: Option<&str>,
        client_id: &str,
    ) -> Result<(), JwtError> {
        let Some(name) = &self.settings.match_claim else {
            return Ok(());
        };
        let expected = match self.settings.match_to {
            ClaimTarget::Username => username,
            ClaimTarget::ClientId => Some(client_id),
        };
        match (claims.get(name.as_str()), expected) {
            (Some(Value::String(v)), Some(e)) if v == e => Ok(()),
            _ => Err(JwtError::ClaimMismatch),
        }
    }
}

/// The length of the signature part with its dot.
fn sig_part_len(token: &[u8]) -> usize {
    token
        .iter()
        .rev()
        .position(|&b| b == b'.')
        .map_or(0, |p| p + 1)
}

fn read_secret(path: &Path, max_file_bytes: u64) -> Result<Vec<u8>, LineError> {
    let text = super::read_bounded(path, max_file_bytes)?;
    let secret = text
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&text);
    if secret.is_empty() {
        return Err(LineError {
            file: path.display().to_string(),
            line: 0,
            message: "the HMAC secret is empty".into(),
        });
    }
    Ok(secret.as_bytes().to_vec())
}

/// Smallest and largest RSA modulus `ring` verifies with (`RSA_PKCS1_2048_8192_*`).
const RSA_BITS_MIN: usize = 2048;
const RSA_BITS_MAX: usize = 8192;

/// DER of the rsaEncryption object identifier, 1.2.840.113549.1.1.1.
const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The DER `RSAPublicKey` in a PEM file holding `BEGIN PUBLIC KEY` (SubjectPublicKeyInfo) or
/// `BEGIN RSA PUBLIC KEY` (PKCS#1). Checks the modulus size `ring` accepts.
pub fn rsa_public_key_from_pem(text: &str) -> Result<Vec<u8>, String> {
    let expected = "expected a PEM RSA public key (-----BEGIN PUBLIC KEY----- or \
                    -----BEGIN RSA PUBLIC KEY-----)";
    let (label, der) = pem_block(text).ok_or_else(|| expected.to_owned())?;
    let pkcs1 = match label {
        "PUBLIC KEY" => spki_rsa_key(&der).ok_or_else(|| {
            "not an RSA public key (only RSA keys are supported for RS256/RS384/RS512)".to_owned()
        })?,
        "RSA PUBLIC KEY" => der,
        other => return Err(format!("found a PEM \"{other}\" block; {expected}")),
    };
    let bits = rsa_modulus_bits(&pkcs1).ok_or("malformed RSA public key")?;
    if !(RSA_BITS_MIN..=RSA_BITS_MAX).contains(&bits) {
        return Err(format!(
            "an RSA key of {bits} bits; {RSA_BITS_MIN} to {RSA_BITS_MAX} bits are supported"
        ));
    }
    Ok(pkcs1)
}

/// The label and decoded bytes of the first PEM block.
fn pem_block(text: &str) -> Option<(&str, Vec<u8>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = &rest[..label_end];
    let body = &rest[label_end + 5..];
    let end = body.find(&format!("-----END {label}-----"))?;
    let b64: String = body[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    Some((label, der))
}

/// One DER element: (tag, contents, what follows). Definite lengths of up to 3 bytes.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;

/// The `RSAPublicKey` inside a SubjectPublicKeyInfo whose algorithm is rsaEncryption.
fn spki_rsa_key(spki: &[u8]) -> Option<Vec<u8>> {
    let (SEQUENCE, body, _) = der(spki)? else {
        return None;
    };
    let (SEQUENCE, algorithm, rest) = der(body)? else {
        return None;
    };
    let (OID, oid, _) = der(algorithm)? else {
        return None;
    };
    if oid != RSA_ENCRYPTION_OID {
        return None;
    }
    let (BIT_STRING, bits, _) = der(rest)? else {
        return None;
    };
    let (&unused, key) = bits.split_first()?;
    (unused == 0).then(|| key.to_vec())
}

/// The size in bits of the modulus of a DER `RSAPublicKey`, if it is well formed (an odd
/// public exponent of at least 3).
fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<usize> {
    let (SEQUENCE, body, _) = der(pkcs1)? else {
        return None;
    };
    let (INTEGER, n, rest) = der(body)? else {
        return None;
    };
    let (INTEGER, e, _) = der(rest)? else {
        return None;
    };
    let n = strip_zeros(n);
    let e = strip_zeros(e);
    let e_ok =
        !e.is_empty() && e.len() <= 8 && e[e.len() - 1] & 1 == 1 && (e.len() > 1 || e[0] >= 3);
    let &top = n.first()?;
    e_ok.then(|| n.len() * 8 - top.leading_zeros() as usize)
}

fn strip_zeros(mut b: &[u8]) -> &[u8] {
    while let Some((&0, rest)) = b.split_first() {
        b = rest;
    }
    b
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const PUBLIC_PEM: &str = include_str!("../../tests/fixtures/jwt-rsa-public.pem");
    const PUBLIC_PKCS1_PEM: &str = include_str!("../../tests/fixtures/jwt-rsa-public-pkcs1.pem");
    const PRIVATE_PEM: &str = include_str!("../../tests/fixtures/jwt-rsa-private.pem");
    const OTHER_PRIVATE_PEM: &str = include_str!("../../tests/fixtures/jwt-rsa-other-private.pem");
    const EC_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/jwt-ec-public.pem");

    pub(crate) const SECRET: &[u8] = b"a test secret of thirty-two bytes";
    pub(crate) const NOW: u64 = 1_800_000_000;

    fn b64(data: &[u8]) -> String {
        B64.encode(data)
    }

    /// A token over `header` and `claims`, signed with `alg` (HMAC with `secret`, RSA with
    /// the PEM private key `rsa`).
    pub(crate) fn sign(header: &str, claims: &str, alg: Alg, secret: &[u8], rsa: &str) -> String {
        let signed = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let sig = if alg.is_hmac() {
            let a = match alg {
                Alg::Hs256 => hmac::HMAC_SHA256,
                Alg::Hs384 => hmac::HMAC_SHA384,
                _ => hmac::HMAC_SHA512,
            };
            hmac::sign(&hmac::Key::new(a, secret), signed.as_bytes())
                .as_ref()
                .to_vec()
        } else {
            let (_, der) = pem_block(rsa).unwrap();
            let key = signature::RsaKeyPair::from_pkcs8(&der).unwrap();
            let padding: &'static dyn signature::RsaEncoding = match alg {
                Alg::Rs256 => &signature::RSA_PKCS1_SHA256,
                Alg::Rs384 => &signature::RSA_PKCS1_SHA384,
                _ => &signature::RSA_PKCS1_SHA512,
            };
            let mut sig = vec![0; key.public().modulus_len()];
            key.sign(
                padding,
                &ring::rand::SystemRandom::new(),
                signed.as_bytes(),
                &mut sig,
            )
            .unwrap();
            sig
        };
        format!("{signed}.{}", b64(&sig))
    }

    pub(crate) fn token(alg: Alg, claims: &str) -> String {
        let header = format!(r#"{{"alg":"{}","typ":"JWT"}}"#, alg.name());
        sign(&header, claims, alg, SECRET, PRIVATE_PEM)
    }

    pub(crate) fn settings() -> JwtSettings {
        JwtSettings {
            hmac_secret: None,
            hmac_secret_file: None,
            rsa_public_key_file: None,
            algorithms: ALGORITHMS.to_vec(),
            match_claim: Some("sub".into()),
            match_to: ClaimTarget::Username,
            leeway_secs: 5,
            require_exp: false,
            max_token_bytes: 4096,
        }
    }

    pub(crate) fn keys(settings: JwtSettings) -> JwtKeys {
        let rsa = rsa_public_key_from_pem(PUBLIC_PEM).unwrap();
        JwtKeys::new(settings, Some(SECRET.to_vec()), Some(rsa))
    }

    fn check(k: &JwtKeys, token: &str) -> Result<(), JwtError> {
        k.verify(token.as_bytes(), Some("alice"), "dev-1", NOW)
    }

    #[test]
    fn right_tokens_are_accepted_in_every_algorithm() {
        let k = keys(settings());
        let claims = format!(r#"{{"sub":"alice","exp":{},"nbf":{}}}"#, NOW + 60, NOW - 60);
        for alg in ALGORITHMS {
            assert_eq!(check(&k, &token(alg, &claims)), Ok(()), "{alg:?}");
        }
        // The PKCS#1 form of the same key verifies the same tokens.
        let pkcs1 = rsa_public_key_from_pem(PUBLIC_PKCS1_PEM).unwrap();
        let k2 = JwtKeys::new(settings(), None, Some(pkcs1));
        assert_eq!(check(&k2, &token(Alg::Rs256, &claims)), Ok(()));
        assert_eq!(
            check(&k2, &token(Alg::Hs256, &claims)),
            Err(JwtError::AlgNotAllowed("HS256".into())),
            "no secret, no HMAC"
        );
    }

    #[test]
    fn wrong_signatures_are_refused() {
        let k = keys(settings());
        let claims = r#"{"sub":"alice"}"#;
        let header = r#"{"alg":"HS256"}"#;
        let t = sign(header, claims, Alg::Hs256, b"another secret", "");
        assert_eq!(check(&k, &t), Err(JwtError::BadSignature));
        let header = r#"{"alg":"RS256"}"#;
        let t = sign(header, claims, Alg::Rs256, b"", OTHER_PRIVATE_PEM);
        assert_eq!(check(&k, &t), Err(JwtError::BadSignature));
        // A payload changed after signing.
        let good = token(Alg::Hs256, claims);
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], b64(br#"{"sub":"bob"}"#), parts[2]);
        assert_eq!(check(&k, &forged), Err(JwtError::BadSignature));
        // No signature at all.
        let unsigned = format!("{}.{}.", parts[0], parts[1]);
        assert_eq!(check(&k, &unsigned), Err(JwtError::BadSignature));
    }

    #[test]
    fn time_claims_are_checked_with_the_leeway() {
        let k = keys(settings());
        let t = |claims: String| check(&k, &token(Alg::Hs256, &claims));
        assert_eq!(
            t(format!(r#"{{"sub":"alice","exp":{}}}"#, NOW - 10)),
            Err(JwtError::Expired)
        );
        assert_eq!(
            t(format!(r#"{{"sub":"alice","exp":{}}}"#, NOW - 5)),
            Err(JwtError::Expired)
        );
        assert_eq!(
            t(format!(r#"{{"sub":"alice","exp":{}}}"#, NOW - 4)),
            Ok(()),
            "in the leeway"
        );
        assert_eq!(
            t(format!(r#"{{"sub":"alice","exp":{}.5}}"#, NOW)),
            Ok(()),
            "fractions"
        );
        assert_eq!(
            t(format!(r#"{{"sub":"alice","nbf":{}}}"#, NOW + 60)),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            t(format!(r#"{{"sub":"alice","nbf":{}}}"#, NOW + 5)),
            Ok(()),
            "in the leeway"
        );
        assert_eq!(
            t(r#"{"sub":"alice","exp":"tomorrow"}"#.into()),
            Err(JwtError::BadTimeClaim("exp"))
        );
        assert_eq!(
            t(r#"{"sub":"alice","nbf":null}"#.into()),
            Err(JwtError::BadTimeClaim("nbf"))
        );
        assert_eq!(t(r#"{"sub":"alice"}"#.into()), Ok(()), "exp not required");
        let k = keys(JwtSettings {
            require_exp: true,
            ..settings()
        });
        assert_eq!(
            check(&k, &token(Alg::Hs256, r#"{"sub":"alice"}"#)),
            Err(JwtError::MissingExp)
        );
    }

    #[test]
    fn alg_none_and_unconfigured_algorithms_are_refused() {
        let claims = r#"{"sub":"alice"}"#;
        let k = keys(JwtSettings {
            algorithms: vec![Alg::Rs256],
            ..settings()
        });
        for alg in ["none", "None", "NONE"] {
            let t = format!(
                "{}.{}.",
                b64(format!(r#"{{"alg":"{alg}"}}"#).as_bytes()),
                b64(claims.as_bytes())
            );
            assert_eq!(check(&k, &t), Err(JwtError::AlgNone), "{alg}");
        }
        assert_eq!(
            check(&k, &token(Alg::Hs256, claims)),
            Err(JwtError::AlgNotAllowed("HS256".into()))
        );
        assert_eq!(
            check(&k, &token(Alg::Rs384, claims)),
            Err(JwtError::AlgNotAllowed("RS384".into()))
        );
        for alg in ["ES256", "PS256", "hs256", ""] {
            let t = sign(
                &format!(r#"{{"alg":"{alg}"}}"#),
                claims,
                Alg::Hs256,
                SECRET,
                "",
            );
            assert_eq!(check(&k, &t), Err(JwtError::AlgNotAllowed(alg.into())));
        }
        // Algorithm confusion: an HS256 token whose secret is the RSA public key, against a
        // broker that accepts HS256 with another secret and RS256 with that key.
        let k = keys(settings());
        let t = sign(
            r#"{"alg":"HS256"}"#,
            claims,
            Alg::Hs256,
            PUBLIC_PEM.as_bytes(),
            "",
        );
        assert_eq!(check(&k, &t), Err(JwtError::BadSignature));
        let (_, spki) = pem_block(PUBLIC_PEM).unwrap();
        let t = sign(r#"{"alg":"HS256"}"#, claims, Alg::Hs256, &spki, "");
        assert_eq!(check(&k, &t), Err(JwtError::BadSignature));
        // Extensions that must be understood are not.
        let t = sign(
            r#"{"alg":"HS256","crit":["b64"],"b64":false}"#,
            claims,
            Alg::Hs256,
            SECRET,
            "",
        );
        assert_eq!(check(&k, &t), Err(JwtError::CriticalExtension));
    }

    #[test]
    fn claims_must_name_the_client() {
        let k = keys(settings());
        let t = |claims: &str| check(&k, &token(Alg::Hs256, claims));
        assert_eq!(t(r#"{"sub":"alice"}"#), Ok(()));
        assert_eq!(t(r#"{"sub":"bob"}"#), Err(JwtError::ClaimMismatch));
        assert_eq!(t(r#"{"sub":"Alice"}"#), Err(JwtError::ClaimMismatch));
        assert_eq!(t(r#"{}"#), Err(JwtError::ClaimMismatch));
        assert_eq!(t(r#"{"sub":["alice"]}"#), Err(JwtError::ClaimMismatch));
        let alice = token(Alg::Hs256, r#"{"sub":"alice"}"#);
        assert_eq!(
            k.verify(alice.as_bytes(), None, "alice", NOW),
            Err(JwtError::ClaimMismatch),
            "no user name"
        );
        let k = keys(JwtSettings {
            match_claim: Some("cid".into()),
            match_to: ClaimTarget::ClientId,
            ..settings()
        });
        assert_eq!(check(&k, &token(Alg::Hs256, r#"{"cid":"dev-1"}"#)), Ok(()));
        assert_eq!(
            check(&k, &token(Alg::Hs256, r#"{"cid":"alice"}"#)),
            Err(JwtError::ClaimMismatch)
        );
        let k = keys(JwtSettings {
            match_claim: None,
            ..settings()
        });
        assert_eq!(check(&k, &token(Alg::Hs256, r#"{"sub":"bob"}"#)), Ok(()));
    }

    #[test]
    fn malformed_and_oversized_tokens() {
        let k = keys(JwtSettings {
            max_token_bytes: 200,
            ..settings()
        });
        for not_a_token in [
            "alice-secret",
            "",
            "a.b",
            "a.b.c.d",
            ".b.c",
            "a b.c.d",
            "ä.b.c",
        ] {
            assert_eq!(
                check(&k, not_a_token),
                Err(JwtError::NotAToken),
                "{not_a_token}"
            );
        }
        let long = token(
            Alg::Hs256,
            &format!(r#"{{"sub":"alice","x":"{}"}}"#, "x".repeat(200)),
        );
        assert_eq!(check(&k, &long), Err(JwtError::TooLong));
        assert_eq!(check(&k, "a.b.c"), Err(JwtError::Malformed("header")));
        let header = b64(br#"{"alg":"HS256"}"#);
        assert_eq!(
            check(&k, &format!("{}.b.c", b64(b"[1]"))),
            Err(JwtError::Malformed("header"))
        );
        assert_eq!(
            check(&k, &format!("{}.e30.c", b64(br#"{"typ":"JWT"}"#))),
            Err(JwtError::Malformed("no alg in the header"))
        );
        assert_eq!(
            check(&k, &format!("{header}.e30.a")),
            Err(JwtError::Malformed("signature")),
            "one base64 character is no byte"
        );
        // A payload that is not JSON, correctly signed.
        let t = sign(r#"{"alg":"HS256"}"#, "not json", Alg::Hs256, SECRET, "");
        assert_eq!(check(&k, &t), Err(JwtError::Malformed("payload")));
    }

    #[test]
    fn public_keys_are_read_and_checked() {
        let spki = rsa_public_key_from_pem(PUBLIC_PEM).unwrap();
        let pkcs1 = rsa_public_key_from_pem(PUBLIC_PKCS1_PEM).unwrap();
        assert_eq!(spki, pkcs1);
        assert_eq!(rsa_modulus_bits(&spki), Some(2048));
        let e = rsa_public_key_from_pem(EC_PUBLIC_PEM).unwrap_err();
        assert!(e.contains("not an RSA public key"), "{e}");
        let e = rsa_public_key_from_pem(PRIVATE_PEM).unwrap_err();
        assert!(e.contains("PRIVATE KEY"), "{e}");
        let e = rsa_public_key_from_pem("hello").unwrap_err();
        assert!(e.contains("expected a PEM RSA public key"), "{e}");
        let e = rsa_public_key_from_pem("-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----")
            .unwrap_err();
        assert!(e.contains("expected a PEM"), "{e}");
        // A 1024-bit modulus, exponent 65537: too small for ring.
        let mut n = vec![0x00, 0xc0];
        n.extend([0x11; 127]);
        let mut key = vec![
            SEQUENCE,
            0x81,
            (3 + n.len() + 5) as u8,
            INTEGER,
            0x81,
            n.len() as u8,
        ];
        key.extend(&n);
        key.extend([INTEGER, 3, 1, 0, 1]);
        assert_eq!(rsa_modulus_bits(&key), Some(1024));
        let pem = format!(
            "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&key)
        );
        let e = rsa_public_key_from_pem(&pem).unwrap_err();
        assert!(e.contains("1024 bits"), "{e}");
        // Truncated DER never panics.
        for cut in 0..spki.len() {
            let _ = rsa_modulus_bits(&spki[..cut]);
            let _ = spki_rsa_key(&spki[..cut]);
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let s = JwtSettings {
            hmac_secret: Some("top-secret-value".into()),
            ..settings()
        };
        let k = keys(s.clone());
        for text in [format!("{s:?}"), format!("{k:?}")] {
            assert!(
                !text.contains("top-secret") && !text.contains("thirty-two"),
                "{text}"
            );
        }
    }

    #[test]
    fn secret_files_lose_one_line_break() {
        let dir = std::env::temp_dir().join(format!("ringmq-jwt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        for (text, secret) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3 cret\n\n", "s3 cret\n"),
        ] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(read_secret(&path, 100).unwrap(), secret.as_bytes());
        }
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret(&path, 100)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let settings = JwtSettings {
            rsa_public_key_file: Some(dir.join("missing.pem")),
            ..settings()
        };
        let e = JwtKeys::load(&settings, 1 << 20).unwrap_err().to_string();
        assert!(
            e.contains("missing.pem") && e.contains("cannot open"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
