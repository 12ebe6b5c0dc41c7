//! TLS material for the listeners: PEM files read and checked at start-up (the errors name the
//! key and the file), one rustls `ServerConfig` built per core from them (each core keeps its
//! own session-resumption cache: nothing shared, no lock), and the subject common name of a
//! client certificate for `use_identity_as_username`.
//!
//! rustls with the `ring` provider; TLS 1.2 and 1.3 with rustls' safe defaults.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::TlsConfig;

/// The largest PEM file read (certificate chain, key or CA bundle).
pub const MAX_PEM_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// What a TLS listener needs, loaded from its PEM files.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The server's chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The server's private key.
    pub key: PrivateKeyDer<'static>,
    /// CA certificates client certificates must chain to (`None`: no client certificates).
    pub client_cas: Option<Vec<CertificateDer<'static>>>,
    /// The client certificate's CN becomes the username.
    pub use_identity_as_username: bool,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
            client_cas: self.client_cas.clone(),
            use_identity_as_username: self.use_identity_as_username,
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("{key}: cannot open {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(format!(
            "{key}: {} is larger than {MAX_PEM_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_pem(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key}: {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key}: {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

impl TlsMaterial {
    /// Reads and checks the files of `[listeners.tls]`; `prefix` is the listener's key
    /// (`listeners[1]`) for the messages. Builds a `ServerConfig` once to check that the key
    /// matches the certificate and that the CA file holds usable certificates.
    pub fn load(prefix: &str, config: &TlsConfig) -> Result<TlsMaterial, String> {
        let cert_key = format!("{prefix}.tls.cert_file");
        let key_key = format!("{prefix}.tls.key_file");
        let ca_key = format!("{prefix}.tls.ca_file");
        let certs = read_certs(&cert_key, &config.cert_file)?;
        let key_bytes = read_pem(&key_key, &config.key_file)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
            format!(
                "{key_key}: {} holds no usable private key (expected PEM \"BEGIN PRIVATE KEY\", \
                 \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\"): {e}",
                config.key_file.display()
            )
        })?;
        let client_cas = match &config.ca_file {
            Some(path) => Some(read_certs(&ca_key, path)?),
            None => None,
        };
        let material = TlsMaterial {
            certs,
            key,
            client_cas,
            use_identity_as_username: config.use_identity_as_username,
        };
        material.server_config().map_err(|e| match e {
            BuildError::Roots(e) => format!(
                "{ca_key}: {}: {e}",
                config.ca_file.as_deref().unwrap_or(Path::new("")).display()
            ),
            BuildError::Cert(e) => format!(
                "{prefix}.tls: the key in {} does not fit the certificate in {}: {e}",
                config.key_file.display(),
                config.cert_file.display()
            ),
        })?;
        Ok(material)
    }

    /// A rustls server configuration (call once per core).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, BuildError> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(BuildError::Cert)?;
        let builder = match &self.client_cas {
            Some(cas) => {
                let mut roots = RootCertStore::empty();
                for ca in cas {
                    roots
                        .add(ca.clone())
                        .map_err(|e| BuildError::Roots(e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| BuildError::Roots(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(BuildError::Cert)?;
        Ok(Arc::new(config))
    }
}

/// Why a `ServerConfig` could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// The CA certificates.
    Roots(String),
    /// The certificate or key.
    Cert(rustls::Error),
}

/// The subject common name (OID 2.5.4.3) of a DER certificate, when it has one as a UTF-8,
/// printable or IA5 string. With several, the last (most specific) wins, as in OpenSSL's
/// usual lookups. Never panics on any input.
pub fn common_name(cert: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let (tag, cert, _) = der(cert)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, mut tbs, _) = der(cert)?; // TBSCertificate
    if tag != 0x30 {
        return None;
    }
    // version [0] (optional), serial, signature, issuer, validity, subject
    let mut index = 0;
    let mut subject = None;
    while !tbs.is_empty() {
        let (tag, value, rest) = der(tbs)?;
        tbs = rest;
        if tag == 0xA0 {
            continue;
        }
        if index == 4 {
            if tag != 0x30 {
                return None;
            }
            subject = Some(value);
            break;
        }
        index += 1;
    }
    let mut rdns = subject?;
    let mut found = None;
    while !rdns.is_empty() {
        let (tag, mut set, rest) = der(rdns)?;
        rdns = rest;
        if tag != 0x31 {
            return None;
        }
        while !set.is_empty() {
            let (tag, atv, rest) = der(set)?;
            set = rest;
            if tag != 0x30 {
                return None;
            }
            let (tag, oid, value) = der(atv)?;
            if tag != 0x06 || oid != CN {
                continue;
            }
            let (tag, text, _) = der(value)?;
            found = match tag {
                // UTF8String, PrintableString, IA5String
                0x0C | 0x13 | 0x16 => std::str::from_utf8(text).ok().map(str::to_owned),
                _ => None,
            };
        }
    }
    found.filter(|s| !s.is_empty())
}

/// One DER element: (tag, contents, rest). Definite lengths only, as DER requires.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    Some((tag, value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(dn: rcgen::DistinguishedName) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = dn;
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn common_name_of_certificates() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "ringmq tests");
        dn.push(rcgen::DnType::CommonName, "sensor-7");
        assert_eq!(common_name(&cert_with(dn)).as_deref(), Some("sensor-7"));
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "no cn");
        assert_eq!(common_name(&cert_with(dn)), None);
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(
            rcgen::DnType::CommonName,
            rcgen::DnValue::PrintableString("printable".try_into().unwrap()),
        );
        assert_eq!(common_name(&cert_with(dn)).as_deref(), Some("printable"));
    }

    #[test]
    fn common_name_never_panics_on_garbage() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "x");
        let good = cert_with(dn);
        for cut in 0..good.len() {
            let _ = common_name(&good[..cut]);
        }
        let mut state = 0x1234_5678u32;
        for _ in 0..2000 {
            let mut bytes = good.clone();
            for _ in 0..4 {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let i = (state as usize >> 8) % bytes.len();
                bytes[i] = (state >> 16) as u8;
            }
            let _ = common_name(&bytes);
        }
        assert_eq!(common_name(&[]), None);
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
