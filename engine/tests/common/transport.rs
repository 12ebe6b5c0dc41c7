//! TLS and WebSocket for the tests: a throw-away PKI made with rcgen (a CA, a server
//! certificate for 127.0.0.1, client certificates with a chosen CN, written as PEM files),
//! blocking rustls clients, and tungstenite WebSocket clients, each wrapped in a [`Client`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use ringmq_codec::ProtocolVersion;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocket;

use super::{Client, Io, TIMEOUT};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority of the tests.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM and DER.
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The key, DER.
    pub key_der: PrivateKeyDer<'static>,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A certificate signed by this CA, for `names` (DNS names or IP addresses) with subject
    /// CN `cn` (none when `None`).
    pub fn issue(&self, names: &[&str], cn: Option<&str>) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "ringmq tests");
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        params.distinguished_name = dn;
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        }
    }
}

/// The PEM files of a TLS listener, in a directory of their own (removed on drop).
pub struct TlsFiles {
    /// The directory.
    pub dir: PathBuf,
    /// The CA of the server certificate (and of the accepted client certificates).
    pub ca: TestCa,
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Server key.
    pub key: PathBuf,
    /// CA certificate (for `ca_file` and for clients).
    pub ca_file: PathBuf,
}

impl TlsFiles {
    /// A CA and a server certificate for 127.0.0.1 and localhost, written to a new directory.
    pub fn new() -> TlsFiles {
        let dir = std::env::temp_dir().join(format!(
            "ringmq-tls-{}-{}",
            std::process::id(),
            super::rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = TestCa::new("ringmq test CA");
        let server = ca.issue(&["127.0.0.1", "localhost"], Some("ringmq test server"));
        let cert = dir.join("server.crt");
        let key = dir.join("server.key");
        let ca_file = dir.join("ca.crt");
        std::fs::write(&cert, &server.cert_pem).unwrap();
        std::fs::write(&key, &server.key_pem).unwrap();
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        TlsFiles {
            dir,
            ca,
            cert,
            key,
            ca_file,
        }
    }

    /// The `[listeners.tls]` table's keys as an inline table, with `ca_file` and
    /// `use_identity_as_username` when asked.
    pub fn inline(&self, client_certs: bool, identity: bool) -> String {
        let mut t = format!(
            "{{ cert_file = {:?}, key_file = {:?}",
            self.cert.display().to_string(),
            self.key.display().to_string()
        );
        if client_certs {
            t.push_str(&format!(
                ", ca_file = {:?}",
                self.ca_file.display().to_string()
            ));
        }
        if identity {
            t.push_str(", use_identity_as_username = true");
        }
        t.push_str(" }");
        t
    }

    /// Writes a file into the directory.
    pub fn write(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client configuration trusting `ca`, presenting `identity` when given.
pub fn client_config(ca: &CertificateDer<'static>, identity: Option<&Issued>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(vec![id.cert_der.clone()], id.key_der.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A TLS stream to `addr` (127.0.0.1), handshake done. Errors: the handshake failed.
pub fn tls_stream(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> io::Result<(TcpStream, StreamOwned<ClientConnection, TcpStream>)> {
    let socket = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.set_nodelay(true)?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let clone = socket.try_clone()?;
    let mut stream = StreamOwned::new(conn, socket);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok((clone, stream))
}

impl Client {
    /// Opens a TLS connection (no CONNECT yet).
    pub fn open_tls(
        addr: SocketAddr,
        version: ProtocolVersion,
        config: Arc<ClientConfig>,
    ) -> io::Result<Client> {
        let (socket, stream) = tls_stream(addr, config)?;
        Ok(Client::over(socket, Box::new(stream), version))
    }

    /// Opens a WebSocket connection (no CONNECT yet) to `path` offering `protocol`, over TLS
    /// when `tls` is given.
    pub fn open_ws(
        addr: SocketAddr,
        version: ProtocolVersion,
        path: &str,
        protocol: &str,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<Client, tungstenite::Error> {
        let (socket, ws) = ws_connect(addr, path, protocol, tls)?;
        Ok(Client::over(socket, Box::new(WsIo::new(ws)), version))
    }
}

/// A WebSocket client over TCP or TLS.
pub type Ws = WebSocket<Box<dyn Io>>;

/// Opens a WebSocket to `ws://addr{path}` (`wss://` with `tls`) offering `protocol` (none
/// when empty); returns a clone of the socket (for timeouts) and the socket.
pub fn ws_connect(
    addr: SocketAddr,
    path: &str,
    protocol: &str,
    tls: Option<Arc<ClientConfig>>,
) -> Result<(TcpStream, Ws), tungstenite::Error> {
    let (socket, io): (TcpStream, Box<dyn Io>) = match tls {
        Some(config) => {
            let (socket, stream) = tls_stream(addr, config)?;
            (socket, Box::new(stream))
        }
        None => {
            let socket = TcpStream::connect_timeout(&addr, TIMEOUT)?;
            socket.set_read_timeout(Some(TIMEOUT))?;
            socket.set_nodelay(true)?;
            (socket.try_clone()?, Box::new(socket))
        }
    };
    // The scheme only shapes the request (Host, path): the stream is already open.
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if !protocol.is_empty() {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    }
    match tungstenite::client(request, io) {
        Ok((ws, _response)) => Ok((socket, ws)),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            Err(tungstenite::Error::Io(io::ErrorKind::TimedOut.into()))
        }
    }
}

/// MQTT bytes over a WebSocket: each write is one binary frame; reads return the payloads
/// of binary frames (pings are answered by tungstenite).
pub struct WsIo {
    /// The WebSocket.
    pub ws: Ws,
    pending: Vec<u8>,
}

impl WsIo {
    /// Wraps an open WebSocket.
    pub fn new(ws: Ws) -> WsIo {
        WsIo {
            ws,
            pending: Vec::new(),
        }
    }
}

fn ws_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::ErrorKind::UnexpectedEof.into()
        }
        other => io::Error::other(other),
    }
}

impl Read for WsIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use tungstenite::Message;
        while self.pending.is_empty() {
            match self.ws.read() {
                Ok(Message::Binary(b)) => self.pending.extend_from_slice(&b),
                Ok(Message::Close(_)) => return Ok(0),
                Ok(Message::Text(t)) => {
                    return Err(io::Error::other(format!("text frame from the broker: {t}")))
                }
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(0)
                }
                Err(e) => return Err(ws_error(e)),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

impl Write for WsIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.ws
            .send(tungstenite::Message::Binary(buf.to_vec().into()))
            .map_err(ws_error)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.ws.flush().map_err(ws_error)
    }
}

/// A path for a file that does not exist.
pub fn missing_file(dir: &Path) -> PathBuf {
    dir.join("no-such-file.pem")
}
