//! TLS for every scenario (`--tls`): a rustls client (the `ring` provider, TLS 1.2 and 1.3, the
//! same as the broker) under the same readiness loops as plain TCP.
//!
//! [`Stream`] is a socket with or without TLS that reads and writes like the socket itself:
//! `read` returns what plaintext there is, `Ok(0)` at the end, `WouldBlock` when the socket has
//! nothing more; `write` takes plaintext and writes the records it makes as far as the socket
//! allows. The TLS records the socket would not take stay in rustls: [`Stream::wants_write`]
//! says so and [`Stream::flush`] (on the next writable event) sends them. The handshake runs
//! inside the first reads and writes, so a connection's handshake time is part of its time to
//! CONNACK. On a blocking socket the same calls block, as on the plain socket.
//!
//! Each connection is a full handshake: session resumption is off, as for as many distinct
//! devices, so the connect rate counts the key exchange and the server's signature every time.
//! A connection costs a boxed `ClientConnection` (its buffers grow only while records wait).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// How the server is checked (`--cafile`, `--insecure`, `--server-name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA certificates the server's chain must lead to.
    pub cafile: Option<PathBuf>,
    /// Accept any server certificate (its handshake signature is still checked).
    pub insecure: bool,
    /// The name checked against the certificate (a DNS name or an IP address).
    pub server_name: String,
}

/// A client configuration and the server name, shared by every connection of a process.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_cas(path: &Path) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--cafile {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--cafile {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--cafile {}: no PEM \"BEGIN CERTIFICATE\" block",
            path.display()
        ));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("--cafile {}: {e}", path.display()))?;
    }
    Ok(roots)
}

impl TlsClient {
    /// Reads the CA file and builds the configuration.
    pub fn new(o: &TlsOptions) -> Result<Self, String> {
        let server_name = ServerName::try_from(o.server_name.clone())
            .map_err(|e| format!("--server-name {:?}: {e}", o.server_name))?;
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?;
        let mut config = if o.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let path = o
                .cafile
                .as_deref()
                .ok_or("--tls needs --cafile or --insecure")?;
            builder
                .with_root_certificates(read_cas(path)?)
                .with_no_client_auth()
        };
        config.resumption = Resumption::disabled();
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }

    /// Starts a client connection over `socket` (nothing is sent until the first write or
    /// flush).
    pub fn wrap<S>(&self, socket: S) -> Result<Stream<S>, String> {
        let conn = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(|e| format!("TLS: {e}"))?;
        Ok(Stream::Tls(Box::new(TlsStream { conn, socket })))
    }
}

/// `socket` as it is, or through a TLS client (`tls`).
pub fn stream<S>(socket: S, tls: Option<&TlsClient>) -> Result<Stream<S>, String> {
    match tls {
        Some(t) => t.wrap(socket),
        None => Ok(Stream::Plain(socket)),
    }
}

/// `--insecure`: any certificate is accepted; the handshake signatures are still verified, so
/// the server does the same work as with a checked certificate.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client connection and its socket.
pub struct TlsStream<S> {
    conn: ClientConnection,
    socket: S,
}

/// A socket, plain or through TLS. See the module documentation.
pub enum Stream<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

impl<S> Stream<S> {
    /// The socket underneath (for socket options, registration, errors).
    pub fn socket(&self) -> &S {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.socket,
        }
    }

    pub fn socket_mut(&mut self) -> &mut S {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut t.socket,
        }
    }

    /// The same connection over another handle of its socket (blocking to `mio`).
    pub fn map_socket<T>(self, f: impl FnOnce(S) -> T) -> Stream<T> {
        match self {
            Stream::Plain(s) => Stream::Plain(f(s)),
            Stream::Tls(t) => {
                let TlsStream { conn, socket } = *t;
                Stream::Tls(Box::new(TlsStream {
                    conn,
                    socket: f(socket),
                }))
            }
        }
    }

    /// TLS records (or the handshake) wait for the socket: [`Stream::flush`] when writable.
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.conn.wants_write(),
        }
    }
}

impl<S: Read + Write> TlsStream<S> {
    /// Writes pending records until none is left or the socket would block.
    fn flush_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Like `flush_records`, but a full socket is not an error (the rest goes on the next
    /// writable event).
    fn flush_some(&mut self) -> io::Result<()> {
        match self.flush_records() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // Plaintext first: rustls refuses more records while its plaintext buffer is full.
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: an end like any other here.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // Ok(0) (end of stream) is recorded by rustls; the reader reports it next turn.
            self.conn.read_tls(&mut self.socket)?;
            if let Err(e) = self.conn.process_new_packets() {
                // Send the alert, if the socket takes it.
                let _ = self.flush_some();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages, or a key update.
            self.flush_some()?;
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Older records first; a full socket refuses the new plaintext.
        self.flush_records()?;
        let n = self.conn.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            // rustls' plaintext buffer is full (only before the handshake ends).
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.flush_some()?;
        Ok(n)
    }
}

impl<S: Read + Write> Read for Stream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl<S: Read + Write> Write for Stream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    /// Sends the TLS records still waiting; `WouldBlock` if the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(t) => t.flush_records(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use mio::{Events, Interest, Poll, Token};
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use ringmq_codec::{decode, ConnAck, DecodeOptions, Packet, ProtocolVersion, ReasonCode};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection, StreamOwned};

    use crate::worker::{connect_packet, connect_session};

    const V: ProtocolVersion = ProtocolVersion::V3_1_1;
    const TIMEOUT: Duration = Duration::from_secs(10);

    /// A throw-away CA and a server certificate for 127.0.0.1, in a fresh directory.
    struct Pki {
        dir: PathBuf,
        ca: PathBuf,
        server: Arc<ServerConfig>,
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn make_pki(name: &str) -> Pki {
        let ca = ca();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir =
            std::env::temp_dir().join(format!("ringmq-bench-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_path = dir.join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        Pki {
            dir,
            ca: ca_path,
            server: Arc::new(server),
        }
    }

    fn client(cafile: Option<&Path>, insecure: bool) -> TlsClient {
        TlsClient::new(&TlsOptions {
            cafile: cafile.map(Path::to_path_buf),
            insecure,
            server_name: "127.0.0.1".into(),
        })
        .unwrap()
    }

    /// A tiny MQTT-over-TLS server: for each of `n` connections, CONNECT → CONNACK, then
    /// `echo_bytes` of the client's plaintext sent back, then close_notify.
    fn server(
        config: Arc<ServerConfig>,
        n: usize,
        echo_bytes: usize,
    ) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            for _ in 0..n {
                let (sock, _) = listener.accept().unwrap();
                sock.set_read_timeout(Some(TIMEOUT)).unwrap();
                let conn = ServerConnection::new(config.clone()).unwrap();
                let mut tls = StreamOwned::new(conn, sock);
                let mut buf = BytesMut::new();
                let mut chunk = [0u8; 4096];
                let options = DecodeOptions::new(V);
                let connect = loop {
                    if let Some(p) = decode(&mut buf, &options).unwrap() {
                        break p;
                    }
                    match tls.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                };
                assert!(matches!(connect, Packet::Connect(_)));
                let mut out = BytesMut::new();
                Packet::ConnAck(ConnAck {
                    session_present: false,
                    reason_code: ReasonCode::Success,
                    properties: None,
                })
                .encode(V, &mut out)
                .unwrap();
                tls.write_all(&out).unwrap();
                let mut echoed = buf.len().min(echo_bytes);
                tls.write_all(&buf[..echoed]).unwrap();
                while echoed < echo_bytes {
                    match tls.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => {
                            let k = k.min(echo_bytes - echoed);
                            tls.write_all(&chunk[..k]).unwrap();
                            echoed += k;
                        }
                    }
                }
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        (addr, handle)
    }

    #[test]
    fn blocking_connect_checks_the_certificate_against_the_ca() {
        let pki = make_pki("blocking");
        let (addr, server) = server(pki.server.clone(), 2, 0);
        let good = client(Some(&pki.ca), false);
        let (_, _, ack) = connect_session(addr, V, 60, TIMEOUT, "tls-ok", None, Some(&good))
            .expect("CONNACK over TLS");
        assert!(!ack.reason_code.is_error());
        // A CA that did not sign the server's certificate: the handshake fails.
        let other = make_pki("other");
        let wrong = client(Some(&other.ca), false);
        let Err(err) = connect_session(addr, V, 60, TIMEOUT, "tls-bad", None, Some(&wrong)) else {
            panic!("an unknown issuer must fail");
        };
        assert!(
            err.contains("UnknownIssuer") || err.contains("certificate"),
            "{err}"
        );
        server.join().unwrap();
    }

    /// The handshake, CONNECT/CONNACK and 1 MiB each way over a non-blocking socket in a
    /// `mio` loop, as the generator drives it: writes that would block, records left in
    /// rustls and sent on the next writable event, reads until `WouldBlock`, close_notify.
    #[test]
    fn nonblocking_stream_under_mio() {
        const ECHO: usize = 1 << 20;
        let pki = make_pki("mio");
        let (addr, server) = server(pki.server.clone(), 1, ECHO);
        // --insecure: the certificate is not checked, the handshake still completes.
        let tls = client(None, true);
        let mut s = tls
            .wrap(mio::net::TcpStream::connect(addr).unwrap())
            .unwrap();
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(
                s.socket_mut(),
                Token(0),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        let mut out = BytesMut::new();
        connect_packet(V, "tls-mio", 60, None)
            .unwrap()
            .encode(V, &mut out)
            .unwrap();
        let connect_len = out.len();
        out.extend_from_slice(&vec![7u8; ECHO]);
        let (mut written, mut got) = (0usize, Vec::new());
        let mut scratch = vec![0u8; 16 * 1024];
        let mut events = Events::with_capacity(16);
        let deadline = Instant::now() + TIMEOUT;
        let mut eof = false;
        while !eof {
            assert!(
                Instant::now() < deadline,
                "timed out: wrote {written}, read {}",
                got.len()
            );
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .unwrap();
            if s.socket().peer_addr().is_err() {
                continue;
            }
            while written < out.len() {
                match s.write(&out[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            match s.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("flush: {e}"),
            }
            loop {
                match s.read(&mut scratch) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => got.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
        server.join().unwrap();
        let mut buf = BytesMut::from(&got[..]);
        let ack = decode(&mut buf, &DecodeOptions::new(V)).unwrap();
        assert!(matches!(ack, Some(Packet::ConnAck(_))), "{ack:?}");
        assert_eq!(
            buf.len(),
            ECHO,
            "everything written after CONNECT came back"
        );
        assert!(buf.iter().all(|&b| b == 7));
        assert_eq!(written, connect_len + ECHO);
        assert!(!s.wants_write());
    }

    #[test]
    fn options_are_checked() {
        let pki = make_pki("options");
        let no_ca = TlsClient::new(&TlsOptions {
            cafile: None,
            insecure: false,
            server_name: "localhost".into(),
        });
        assert!(no_ca.unwrap_err().contains("--cafile"));
        let missing = TlsClient::new(&TlsOptions {
            cafile: Some(pki.dir.join("nothing.pem")),
            insecure: false,
            server_name: "localhost".into(),
        });
        assert!(missing.unwrap_err().contains("nothing.pem"));
        let empty = pki.dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let none = TlsClient::new(&TlsOptions {
            cafile: Some(empty),
            insecure: false,
            server_name: "localhost".into(),
        });
        assert!(none.unwrap_err().contains("no PEM"));
        let bad_name = TlsClient::new(&TlsOptions {
            cafile: Some(pki.ca.clone()),
            insecure: false,
            server_name: "not a name".into(),
        });
        assert!(bad_name.unwrap_err().contains("--server-name"));
    }
}
