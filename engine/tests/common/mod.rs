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

/// A broker process; killed when dropped.
pub struct Broker {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its executors (`--cores`; 0 when not given).
    pub cores: usize,
}

impl Broker {
    /// Starts `ringmq` on 127.0.0.1 with an OS-chosen port and these extra arguments.
    pub fn start(args: &[&str]) -> Broker {
        Self::start_with_config(args, None)
    }

    /// Starts `ringmq` with a configuration file holding `toml`.
    pub fn start_with_config(args: &[&str], toml: Option<&str>) -> Broker {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringmq"));
        cmd.args(["--listen", "127.0.0.1:0"]).args(args);
        let dir;
        if let Some(toml) = toml {
            dir = std::env::temp_dir().join(format!(
                "ringmq-test-{}-{}",
                std::process::id(),
                rand_suffix()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("ringmq.toml");
            std::fs::write(&path, toml).unwrap();
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
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("ringmq listening on ") {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("broker did not report its address");
        let cores = args
            .iter()
            .position(|a| *a == "--cores")
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Broker { child, addr, cores }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish()
}

/// A blocking MQTT client on a real socket, speaking through the codec.
pub struct Client {
    pub stream: TcpStream,
    pub version: ProtocolVersion,
    buf: BytesMut,
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
        self.stream.write_all(&out).unwrap();
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
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
            match self.stream.read(&mut chunk) {
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
            match self.stream.read(&mut chunk) {
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

// ---------------------------------------------------------------------------------------------
// Helpers shared by the protocol test files.

use ringmq_codec::{Ack, Disconnect, ReasonCode, RetainHandling, SubAck, Will};

impl Broker {
    /// Starts `ringmq` with `--cores N` and a configuration file holding `toml`.
    pub fn with_config(cores: usize, toml: &str) -> Broker {
        let cores = cores.to_string();
        Broker::start_with_config(&["--cores", &cores], Some(toml))
    }

    /// Starts `ringmq` with `--cores N` and the default configuration.
    pub fn cores(cores: usize) -> Broker {
        let cores = cores.to_string();
        Broker::start(&["--cores", &cores])
    }
}

/// A client identifier starting with `prefix` whose session lives on `core` of `cores`.
pub fn id_on_core(prefix: &str, core: u16, cores: usize) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| ringmq::mesh::home_core(id.as_bytes(), cores) == core)
        .unwrap()
}

impl Broker {
    /// Waits until every message that any core had queued for another core when this was
    /// called has been handled there, and the messages those caused in turn. Subscriptions
    /// (interest), shared-group memberships and retained messages travel the mesh after the
    /// SUBACK or PUBACK is sent, so a test that subscribes on one core and publishes on another
    /// calls this in between.
    ///
    /// How: for each ordered core pair (from, to), a probe client homed on `to` subscribes to a
    /// fresh topic and a probe client homed on `from` publishes to it until the message
    /// arrives. The interest travelled to -> from behind everything queued before it, and the
    /// probe from -> to likewise (one FIFO queue per core pair); doing every pair once also
    /// flushes chains of two hops (a share membership and the interest its owner broadcasts).
    pub fn settle(&self) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static ROUND: AtomicU64 = AtomicU64::new(0);
        let cores = self.cores;
        if cores < 2 {
            return;
        }
        let n = ROUND.fetch_add(1, Ordering::Relaxed);
        let mut probes: Vec<Client> = (0..cores)
            .map(|c| {
                let id = id_on_core(&format!("ringmq-probe-{n}-{c}"), c as u16, cores);
                Client::connect(self.addr, &id, ProtocolVersion::V5)
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        for to in 0..cores {
            for from in (0..cores).filter(|&f| f != to) {
                let topic = format!("ringmq-probe/{n}/{from}/{to}");
                probes[to].subscribe_ok(&topic, QoS::AtMostOnce);
                loop {
                    probes[from].publish(&topic, b"", QoS::AtMostOnce, false);
                    match probes[to].recv_within(Duration::from_millis(10)) {
                        Some(Packet::Publish(p)) if *p.topic == *topic => break,
                        None => {}
                        Some(other) => panic!("probe client got {other:?}"),
                    }
                    assert!(Instant::now() < deadline, "the mesh did not settle");
                }
            }
        }
    }
}

/// Both protocol versions that carry a Session Present flag and are tested throughout.
pub const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V3_1_1, ProtocolVersion::V5];

/// Subscription options with every field given.
pub fn sub_options(
    qos: QoS,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: RetainHandling,
) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        no_local,
        retain_as_published,
        retain_handling,
    }
}

/// A will message without properties.
pub fn will(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Will {
    Will {
        topic: Utf8Bytes::try_from(topic).unwrap(),
        payload: bytes::Bytes::copy_from_slice(payload),
        qos,
        retain,
        properties: None,
    }
}

impl Client {
    /// Connects with a CONNECT built from [`connect_packet`] and changed by `edit`; returns the
    /// client and the CONNACK, whatever its reason code.
    pub fn connect_edit(
        addr: SocketAddr,
        id: &str,
        version: ProtocolVersion,
        edit: impl FnOnce(&mut Connect),
    ) -> (Client, ringmq_codec::ConnAck) {
        let mut c = connect_packet(id, version);
        edit(&mut c);
        match Client::connect_with(addr, c) {
            (c, Packet::ConnAck(a)) => (c, a),
            (_, other) => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Like [`Client::connect_edit`], asserting success.
    pub fn connect_ok(
        addr: SocketAddr,
        id: &str,
        version: ProtocolVersion,
        edit: impl FnOnce(&mut Connect),
    ) -> (Client, ringmq_codec::ConnAck) {
        let (c, a) = Client::connect_edit(addr, id, version, edit);
        assert_eq!(
            a.reason_code,
            ReasonCode::Success,
            "CONNECT of {id} refused"
        );
        (c, a)
    }

    /// Connects with Clean Start 0 (and a session expiry of `expiry_secs` in 5.0); returns the
    /// client and Session Present.
    pub fn connect_persistent(
        addr: SocketAddr,
        id: &str,
        version: ProtocolVersion,
        expiry_secs: u32,
    ) -> (Client, bool) {
        let (c, a) = Client::connect_ok(addr, id, version, |c| {
            c.clean_start = false;
            if version.is_v5() {
                c.properties = session_expiry(expiry_secs);
            }
        });
        (c, a.session_present)
    }

    /// The next packet, which must arrive within [`TIMEOUT`].
    pub fn expect(&mut self) -> Packet {
        self.recv()
            .expect("no packet from the broker within the timeout")
    }

    /// The next packet, which must be a PUBLISH.
    pub fn expect_publish(&mut self) -> Publish {
        match self.recv() {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives within `timeout` (and that the connection stays open).
    pub fn expect_nothing(&mut self, timeout: Duration) {
        if let Some(p) = self.recv_within(timeout) {
            panic!("expected nothing, got {p:?}");
        }
    }

    /// Acknowledges a received PUBLISH: PUBACK for QoS 1, the whole PUBREC/PUBREL/PUBCOMP
    /// exchange for QoS 2.
    pub fn ack(&mut self, p: &Publish) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(Ack::new(p.packet_id))),
            QoS::ExactlyOnce => {
                self.send(&Packet::PubRec(Ack::new(p.packet_id)));
                match self.expect() {
                    Packet::PubRel(a) if a.packet_id == p.packet_id => {}
                    other => panic!("expected PUBREL {}, got {other:?}", p.packet_id),
                }
                self.send(&Packet::PubComp(Ack::new(p.packet_id)));
            }
        }
    }

    /// Receives a PUBLISH and acknowledges it.
    pub fn expect_publish_acked(&mut self) -> Publish {
        let p = self.expect_publish();
        self.ack(&p);
        p
    }

    /// Publishes with packet id `id` and completes the QoS 1/2 exchange from the sender side.
    pub fn publish_acked(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool, id: u16) {
        self.send(&Packet::Publish(publish_packet(
            topic, payload, qos, retain, id,
        )));
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.expect() {
                Packet::PubAck(a) if a.packet_id == id => {}
                other => panic!("expected PUBACK {id}, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                match self.expect() {
                    Packet::PubRec(a) if a.packet_id == id => {}
                    other => panic!("expected PUBREC {id}, got {other:?}"),
                }
                self.send(&Packet::PubRel(Ack::new(id)));
                match self.expect() {
                    Packet::PubComp(a) if a.packet_id == id => {}
                    other => panic!("expected PUBCOMP {id}, got {other:?}"),
                }
            }
        }
    }

    /// Subscribes to several filters with options and properties; returns the SUBACK.
    pub fn subscribe_many(
        &mut self,
        packet_id: u16,
        filters: &[(&str, SubscriptionOptions)],
        properties: Option<Box<Properties>>,
    ) -> SubAck {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            properties,
            filters: filters
                .iter()
                .map(|(f, o)| SubscribeFilter {
                    filter: Utf8Bytes::try_from(*f).unwrap(),
                    options: *o,
                })
                .collect(),
        }));
        match self.expect() {
            Packet::SubAck(a) if a.packet_id == packet_id => a,
            other => panic!("expected SUBACK {packet_id}, got {other:?}"),
        }
    }

    /// Subscribes to one filter and asserts the granted QoS.
    pub fn subscribe_ok(&mut self, filter: &str, qos: QoS) {
        let a = self.subscribe_many(7, &[(filter, SubscriptionOptions::qos(qos))], None);
        let granted = match qos {
            QoS::AtMostOnce => ReasonCode::Success,
            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        };
        assert_eq!(a.return_codes, vec![granted], "SUBACK for {filter}");
    }

    /// Sends DISCONNECT (normal) and waits for the close.
    pub fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Disconnect::NORMAL));
        assert!(self.closed_within(TIMEOUT).0, "not closed after DISCONNECT");
    }

    /// Asserts that the broker closes the connection within [`TIMEOUT`]; for MQTT 5 that the
    /// last packet before the close is a DISCONNECT with `reason`, for 3.x that it sent no
    /// DISCONNECT. Other packets before it are returned.
    pub fn expect_close(&mut self, reason: ReasonCode) -> Vec<Packet> {
        let (closed, mut packets) = self.closed_within(TIMEOUT);
        assert!(closed, "connection not closed; got {packets:?}");
        if self.version.is_v5() {
            match packets.pop() {
                Some(Packet::Disconnect(d)) => {
                    assert_eq!(d.reason_code, reason, "DISCONNECT reason")
                }
                other => panic!("expected DISCONNECT {reason:?} before the close, got {other:?}"),
            }
        } else {
            assert!(
                !packets.iter().any(|p| matches!(p, Packet::Disconnect(_))),
                "{packets:?}"
            );
        }
        packets
    }
}
