//! Helpers shared by the protocol test files: brokers with a configuration, client ids homed on
//! a given core, a mesh barrier, and client shortcuts for the common exchanges.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringmq_codec::{
    Ack, Connect, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, Utf8Bytes, Will,
};

use super::{connect_packet, publish_packet, session_expiry, Broker, Client, TIMEOUT};

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

/// Runs `f` for each of [`VERSIONS`] at once, on scoped threads (for tests that mostly wait on
/// timers); a panic in either fails the test.
pub fn in_parallel_for_versions(f: impl Fn(ProtocolVersion) + Sync) {
    std::thread::scope(|s| {
        for v in VERSIONS {
            let f = &f;
            s.spawn(move || f(v));
        }
    });
}
