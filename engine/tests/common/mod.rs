//! Shared by the integration tests: a real `ringmq` process on a loopback port, and a small
//! blocking MQTT client over a real socket (built on the codec, for raw protocol tests).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringmq_codec::{
    decode, Connect, DecodeOptions, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscribeFilter, SubscriptionOptions, Utf8Bytes,
};

/// A broker process; killed when dropped. Each broker gets its own data directory (removed on
/// drop), which survives [`Broker::kill9`] and [`Broker::restart`].
pub struct Broker {
    child: Child,
    /// Where it listens (the first listener).
    pub addr: SocketAddr,
    /// Every listener, in the configuration's order.
    pub addrs: Vec<SocketAddr>,
    /// The admin HTTP listener (`--admin-listen 127.0.0.1:0` unless the test gives its own).
    pub admin: Option<SocketAddr>,
    /// Its listeners come from the configuration file (no `--listen`); this many.
    listeners: Option<usize>,
    /// Its executors (`--cores`; 0 when not given).
    pub cores: usize,
    args: Vec<String>,
    config: Option<std::path::PathBuf>,
    /// The data directory.
    pub data_dir: std::path::PathBuf,
}

impl Broker {
    /// Starts `ringmq` on 127.0.0.1 with an OS-chosen port and these extra arguments.
    pub fn start(args: &[&str]) -> Broker {
        Self::start_with_config(args, None)
    }

    /// Starts `ringmq` with a configuration file holding `toml`.
    pub fn start_with_config(args: &[&str], toml: Option<&str>) -> Broker {
        Self::start_inner(args, toml, None)
    }

    /// Starts `ringmq` with a configuration file holding `toml`, whose `listeners` listeners
    /// are used as they are (no `--listen`): bind them to port 0. Their addresses are in
    /// `addrs`, in order.
    pub fn start_with_listeners(args: &[&str], toml: &str, listeners: usize) -> Broker {
        Self::start_inner(args, Some(toml), Some(listeners))
    }

    fn start_inner(args: &[&str], toml: Option<&str>, listeners: Option<usize>) -> Broker {
        let dir = std::env::temp_dir().join(format!(
            "ringmq-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = toml.map(|toml| {
            let path = dir.join("ringmq.toml");
            std::fs::write(&path, toml).unwrap();
            path
        });
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let data_dir = dir.join("data");
        let (child, addrs, admin) = spawn(&args, config.as_deref(), &data_dir, listeners);
        let cores = args
            .iter()
            .position(|a| a == "--cores")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Broker {
            child,
            addr: addrs[0],
            addrs,
            admin,
            listeners,
            cores,
            args,
            config,
            data_dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the broker with SIGKILL (no chance to flush or clean up) and waits for it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the broker with SIGKILL if it runs, then starts it again on the same data
    /// directory and arguments (on a new port: read `addr` again).
    pub fn restart(&mut self) {
        self.kill9();
        let (child, addrs, admin) = spawn(
            &self.args,
            self.config.as_deref(),
            &self.data_dir,
            self.listeners,
        );
        self.child = child;
        self.addr = addrs[0];
        self.addrs = addrs;
        self.admin = admin;
    }

    /// Sends a signal and waits for the exit status (bounded).
    pub fn signal_and_wait(&mut self, signal: i32) -> Option<std::process::ExitStatus> {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

fn spawn(
    args: &[String],
    config: Option<&std::path::Path>,
    data_dir: &std::path::Path,
    listeners: Option<usize>,
) -> (Child, Vec<SocketAddr>, Option<SocketAddr>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringmq"));
    if listeners.is_none() {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    // Parallel tests must not share the default admin port.
    let admin_given = args.iter().any(|a| a.starts_with("--admin-listen"));
    if !admin_given {
        cmd.args(["--admin-listen", "127.0.0.1:0"]);
    }
    cmd.args(args);
    if !args.iter().any(|a| a.starts_with("--data-dir")) {
        cmd.arg("--data-dir").arg(data_dir);
    }
    if let Some(path) = config {
        cmd.arg("--config").arg(path);
    }
    let mut child = cmd
        .env(
            "RUST_LOG",
            std::env::var("RINGMQ_TEST_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ringmq");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (admin_tx, admin_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("ringmq admin listening on ") {
                let _ = admin_tx.send(rest.trim().parse::<SocketAddr>().unwrap());
            }
            // "ringmq listening on ADDR" for TCP, "ringmq listening on ADDR (tls)" and so on.
            if let Some(rest) = line.strip_prefix("ringmq listening on ") {
                let addr = rest.split_whitespace().next().unwrap_or("");
                let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
            }
        }
    });
    let addrs = (0..listeners.unwrap_or(1))
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(20))
                .expect("broker did not report its address")
        })
        .collect();
    let admin = if admin_given {
        admin_rx.recv_timeout(Duration::from_secs(5)).ok()
    } else {
        Some(
            admin_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("broker did not report its admin address"),
        )
    };
    (child, addrs, admin)
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.data_dir.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

/// A byte stream a test client can speak MQTT over (TLS, WebSocket).
pub trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// A blocking MQTT client on a real socket, speaking through the codec.
pub struct Client {
    /// The socket (under `io` when that is set; its read timeout applies to `io` too).
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    buf: BytesMut,
    /// A TLS or WebSocket stream over `stream`; `None`: MQTT straight on `stream`.
    io: Option<Box<dyn Io>>,
}

pub const TIMEOUT: Duration = Duration::from_secs(5);

impl Client {
    /// Opens a TCP connection (no CONNECT yet).
    pub fn open(addr: SocketAddr, version: ProtocolVersion) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            version,
            buf: BytesMut::new(),
            io: None,
        }
    }

    /// A client speaking over `io`, a stream over `socket` (a clone of its socket: read
    /// timeouts set on it apply to `io`).
    pub fn over(socket: TcpStream, io: Box<dyn Io>, version: ProtocolVersion) -> Client {
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client {
            stream: socket,
            version,
            buf: BytesMut::new(),
            io: Some(io),
        }
    }

    fn read_io(&mut self, chunk: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.io {
            Some(io) => io.read(chunk),
            None => self.stream.read(chunk),
        }
    }

    fn write_io(&mut self, data: &[u8]) -> std::io::Result<()> {
        match &mut self.io {
            Some(io) => {
                io.write_all(data)?;
                io.flush()
            }
            None => self.stream.write_all(data),
        }
    }

    /// Opens and sends CONNECT; returns the client and the broker's answer.
    pub fn connect_with(addr: SocketAddr, connect: Connect) -> (Client, Packet) {
        let mut c = Client::open(addr, connect.protocol);
        c.send(&Packet::Connect(Box::new(connect)));
        let ack = c.recv().expect("CONNACK");
        (c, ack)
    }

    /// Connects with a clean session and asserts success.
    pub fn connect(addr: SocketAddr, id: &str, version: ProtocolVersion) -> Client {
        let (c, ack) = Client::connect_with(addr, connect_packet(id, version));
        match ack {
            Packet::ConnAck(a) if a.reason_code == ringmq_codec::ReasonCode::Success => c,
            other => panic!("CONNECT refused: {other:?}"),
        }
    }

    /// Sends a packet.
    pub fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        p.encode(self.version, &mut out).unwrap();
        self.write_io(&out).unwrap();
    }

    /// Sends raw bytes (over WebSocket: one binary frame).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.write_io(bytes).unwrap();
    }

    /// The next packet, or `None` when the broker closed the connection (or on timeout).
    pub fn recv(&mut self) -> Option<Packet> {
        self.recv_within(TIMEOUT)
    }

    /// The next packet within `timeout`.
    pub fn recv_within(&mut self, timeout: Duration) -> Option<Packet> {
        let options = DecodeOptions::new(self.version);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) =
                decode(&mut self.buf, &options).expect("broker sent a malformed packet")
            {
                return Some(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 8192];
            match self.read_io(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(_) => return None,
            }
        }
    }

    /// Whether the broker closed the connection within `timeout` (after any packets it sent).
    pub fn closed_within(&mut self, timeout: Duration) -> (bool, Vec<Packet>) {
        let deadline = Instant::now() + timeout;
        let mut packets = Vec::new();
        self.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        while Instant::now() < deadline {
            let options = DecodeOptions::new(self.version);
            while let Ok(Some(p)) = decode(&mut self.buf, &options) {
                packets.push(p);
            }
            let mut chunk = [0u8; 4096];
            match self.read_io(&mut chunk) {
                Ok(0) => return (true, packets),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return (true, packets),
            }
        }
        (false, packets)
    }

    /// Subscribes and returns the SUBACK.
    pub fn subscribe(&mut self, filter: &str, qos: QoS) -> Packet {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: None,
            filters: vec![SubscribeFilter {
                filter: Utf8Bytes::try_from(filter).unwrap(),
                options: SubscriptionOptions::qos(qos),
            }],
        }));
        loop {
            match self.recv().expect("SUBACK") {
                p @ Packet::SubAck(_) => return p,
                _ => continue,
            }
        }
    }

    /// Publishes (QoS 0/1/2 with packet id 1) without waiting for acknowledgements.
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        self.send(&Packet::Publish(publish_packet(
            topic, payload, qos, retain, 1,
        )));
    }
}

/// A clean-start CONNECT.
pub fn connect_packet(id: &str, version: ProtocolVersion) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 60,
        properties: None,
        client_id: Utf8Bytes::try_from(id).unwrap(),
        will: None,
        username: None,
        password: None,
    }
}

/// A PUBLISH.
pub fn publish_packet(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    packet_id: u16,
) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: Utf8Bytes::try_from(topic).unwrap(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { packet_id },
        properties: None,
        payload: bytes::Bytes::copy_from_slice(payload),
    }
}

/// Properties with only a session expiry interval.
pub fn session_expiry(secs: u32) -> Option<Box<Properties>> {
    Some(Box::new(Properties {
        session_expiry_interval: Some(secs),
        ..Default::default()
    }))
}

mod helpers;
#[allow(unused_imports)] // not every test file uses every helper
pub use helpers::*;
mod transport;
#[allow(unused_imports)]
pub use transport::*;
