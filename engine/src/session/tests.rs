use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_codec::{
    decode, DecodeOptions, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, Utf8Bytes,
};

use super::*;
use crate::message::{Message, Origin};

fn limits() -> SessionLimits {
    SessionLimits {
        max_inflight_messages: 2,
        max_queued_messages: 3,
        max_queued_bytes: 1 << 20,
        write_buffer_high_water_bytes: 1 << 20,
        max_topic_alias: 4,
    }
}

fn session(version: ProtocolVersion) -> Session {
    Session::new(1, Utf8Bytes::from_static("c"), version, limits())
}

fn msg(n: u8, qos: QoS) -> SharedMessage {
    Arc::new(Message {
        topic: Utf8Bytes::from_static("t"),
        payload: Bytes::from(vec![n]),
        qos,
        retain: false,
        properties: None,
        expires_at: None,
        origin: Origin {
            core: 0,
            session: 9,
        },
    })
}

fn delivery(n: u8, qos: QoS) -> Delivery {
    Delivery {
        msg: msg(n, qos),
        qos,
        retain: false,
        sub_ids: Vec::new(),
        stored: 0,
    }
}

/// Decodes everything the session has written.
fn sent(s: &mut Session) -> Vec<Packet> {
    let mut out = s.out.split();
    let options = DecodeOptions::new(s.version);
    let mut packets = Vec::new();
    while let Some(p) = decode(&mut out, &options).expect("session writes valid packets") {
        packets.push(p);
    }
    assert!(out.is_empty());
    packets
}

fn publishes(packets: &[Packet]) -> Vec<(u16, u8, bool)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.packet_id, p.payload[0], p.dup)),
            _ => None,
        })
        .collect()
}

#[test]
fn qos1_window_queue_and_pump() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V3_1_1);
    s.attach(ProtocolVersion::V3_1_1, u16::MAX, u32::MAX, now);
    for n in 0..4 {
        s.deliver(delivery(n, QoS::AtLeastOnce), now);
    }
    assert_eq!(publishes(&sent(&mut s)), vec![(1, 0, false), (2, 1, false)]);
    assert_eq!((s.inflight_len(), s.queued_len()), (2, 2));
    s.on_puback(1, now);
    assert_eq!(publishes(&sent(&mut s)), vec![(3, 2, false)]);
    s.on_puback(99, now); // unknown: ignored
    s.on_puback(2, now);
    s.on_puback(3, now);
    assert_eq!(publishes(&sent(&mut s)), vec![(4, 3, false)]);
    s.on_puback(4, now);
    assert_eq!((s.inflight_len(), s.queued_len()), (0, 0));
}

#[test]
fn client_receive_maximum_narrows_the_window() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5);
    s.attach(ProtocolVersion::V5, 1, u32::MAX, now);
    s.deliver(delivery(0, QoS::AtLeastOnce), now);
    s.deliver(delivery(1, QoS::AtLeastOnce), now);
    assert_eq!(publishes(&sent(&mut s)).len(), 1);
    assert_eq!(s.queued_len(), 1);
}

#[test]
fn qos2_outgoing_exchange() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5);
    s.attach(ProtocolVersion::V5, u16::MAX, u32::MAX, now);
    s.deliver(delivery(7, QoS::ExactlyOnce), now);
    assert_eq!(publishes(&sent(&mut s)), vec![(1, 7, false)]);
    s.on_pubrec(&Ack::new(1), now);
    assert_eq!(sent(&mut s), vec![Packet::PubRel(Ack::new(1))]);
    // A duplicate PUBREC after PUBREL does not restart the exchange.
    s.on_pubrec(&Ack::new(1), now);
    let again = sent(&mut s);
    assert!(
        matches!(&again[..], [Packet::PubRel(a)] if a.reason_code == ReasonCode::PacketIdentifierNotFound)
    );
    s.on_pubcomp(1, now);
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn resume_resends_inflight_with_dup_and_pubrel_in_order() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V3_1_1);
    s.attach(ProtocolVersion::V3_1_1, u16::MAX, u32::MAX, now);
    s.deliver(delivery(1, QoS::ExactlyOnce), now);
    s.deliver(delivery(2, QoS::AtLeastOnce), now);
    s.deliver(delivery(3, QoS::AtLeastOnce), now);
    s.on_pubrec(&Ack::new(1), now);
    sent(&mut s);
    s.detach();
    s.deliver(delivery(4, QoS::AtMostOnce), now); // offline QoS 0: dropped
    assert_eq!(s.drops.qos0, 1);
    s.attach(ProtocolVersion::V3_1_1, u16::MAX, u32::MAX, now);
    let packets = sent(&mut s);
    assert_eq!(packets[0], Packet::PubRel(Ack::new(1)));
    assert_eq!(publishes(&packets[1..]), vec![(2, 2, true)]);
    s.on_puback(2, now);
    assert_eq!(publishes(&sent(&mut s)), vec![(3, 3, false)]);
}

#[test]
fn resume_resends_no_more_than_the_new_receive_maximum() {
    let now = Instant::now();
    let mut s = Session::new(
        1,
        Utf8Bytes::from_static("c"),
        ProtocolVersion::V5,
        SessionLimits {
            max_inflight_messages: 10,
            ..limits()
        },
    );
    s.attach(ProtocolVersion::V5, u16::MAX, u32::MAX, now);
    for n in 0..4 {
        s.deliver(delivery(n, QoS::AtLeastOnce), now);
    }
    s.deliver(delivery(4, QoS::ExactlyOnce), now);
    s.on_pubrec(&Ack::new(5), now);
    assert_eq!(publishes(&sent(&mut s)).len(), 5);
    s.detach();
    // Back with Receive Maximum 2: two resent, the others as acknowledgements make room.
    s.attach(ProtocolVersion::V5, 2, u32::MAX, now);
    assert_eq!(publishes(&sent(&mut s)), vec![(1, 0, true), (2, 1, true)]);
    s.deliver(delivery(9, QoS::AtLeastOnce), now); // queued behind the resends
    assert!(sent(&mut s).is_empty());
    s.on_puback(2, now);
    assert_eq!(publishes(&sent(&mut s)), vec![(3, 2, true)]);
    s.on_puback(1, now);
    s.on_puback(3, now);
    let packets = sent(&mut s);
    assert_eq!(publishes(&packets), vec![(4, 3, true)]);
    assert_eq!(packets[1], Packet::PubRel(Ack::new(5)));
    s.on_puback(4, now);
    assert_eq!(publishes(&sent(&mut s)), vec![(6, 9, false)]);
    assert_eq!(s.inflight_len(), 2);
}

#[test]
fn full_queue_drops_and_counts() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V3_1_1);
    for n in 0..5 {
        s.deliver(delivery(n, QoS::AtLeastOnce), now);
    }
    assert_eq!(s.queued_len(), 3);
    assert_eq!(s.drops.queue_full, 2);
}

#[test]
fn incoming_qos2_is_routed_once_and_bounded() {
    let mut s = session(ProtocolVersion::V5);
    assert_eq!(s.on_incoming_qos2(10), Ok(true));
    assert_eq!(s.on_incoming_qos2(10), Ok(false));
    assert_eq!(s.on_incoming_qos2(11), Ok(true));
    assert_eq!(
        s.on_incoming_qos2(12),
        Err(ProtocolViolation::Disconnect(
            ReasonCode::ReceiveMaximumExceeded
        ))
    );
    s.on_pubrel(10);
    assert_eq!(sent(&mut s), vec![Packet::PubComp(Ack::new(10))]);
    assert_eq!(
        s.on_incoming_qos2(10),
        Ok(true),
        "a new message may reuse the identifier"
    );
    s.on_pubrel(77);
    assert!(
        matches!(&sent(&mut s)[..], [Packet::PubComp(a)] if a.reason_code == ReasonCode::PacketIdentifierNotFound)
    );
}

#[test]
fn incoming_qos2_is_not_bounded_by_receive_maximum_in_v311() {
    // MQTT 3.1.1 has no Receive Maximum: the client is told of none and may use every id.
    let mut s = session(ProtocolVersion::V3_1_1);
    for id in 1..=100 {
        assert_eq!(s.on_incoming_qos2(id), Ok(true));
    }
    assert_eq!(s.on_incoming_qos2(50), Ok(false));
}

#[test]
fn topic_aliases_map_and_resolve() {
    let mut s = session(ProtocolVersion::V5);
    let with_alias = |topic: &'static str, alias| Publish {
        topic: Utf8Bytes::from_static(topic),
        properties: Some(Box::new(Properties {
            topic_alias: Some(alias),
            ..Default::default()
        })),
        ..Default::default()
    };
    let mut p = with_alias("a/b", 1);
    s.resolve_topic_alias(&mut p).unwrap();
    let mut p = with_alias("", 1);
    s.resolve_topic_alias(&mut p).unwrap();
    assert_eq!(p.topic, "a/b");
    let mut p = with_alias("", 2);
    assert_eq!(
        s.resolve_topic_alias(&mut p),
        Err(ProtocolViolation::Disconnect(ReasonCode::ProtocolError))
    );
    let mut p = with_alias("x", 5);
    assert_eq!(
        s.resolve_topic_alias(&mut p),
        Err(ProtocolViolation::Disconnect(ReasonCode::TopicAliasInvalid))
    );
    s.detach();
    let mut p = with_alias("", 1);
    assert!(
        s.resolve_topic_alias(&mut p).is_err(),
        "aliases do not survive the connection"
    );
}

#[test]
fn packets_over_the_client_maximum_are_not_sent() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5);
    s.attach(ProtocolVersion::V5, u16::MAX, 8, now);
    s.deliver(delivery(1, QoS::AtLeastOnce), now); // 2 + 3 + 2 + 1 + 1 = 9 bytes > 8
    assert!(sent(&mut s).is_empty());
    assert_eq!((s.drops.too_large, s.inflight_len()), (1, 0));
}

#[test]
fn expired_messages_are_dropped_and_expiry_counts_down() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5);
    s.attach(ProtocolVersion::V5, u16::MAX, u32::MAX, now);
    let mut m = Message::from_publish(
        Publish {
            topic: Utf8Bytes::from_static("t"),
            qos: QoS::AtLeastOnce,
            properties: Some(Box::new(Properties {
                message_expiry_interval: Some(10),
                ..Default::default()
            })),
            payload: Bytes::from_static(b"x"),
            ..Default::default()
        },
        Origin {
            core: 0,
            session: 2,
        },
        now,
        0,
    );
    m.qos = QoS::AtLeastOnce;
    let m = Arc::new(m);
    let d = || Delivery {
        msg: m.clone(),
        qos: QoS::AtLeastOnce,
        retain: false,
        sub_ids: vec![3],
        stored: 0,
    };
    s.deliver(d(), now + Duration::from_secs(4));
    match &sent(&mut s)[..] {
        [Packet::Publish(p)] => {
            let props = p.properties.as_ref().unwrap();
            assert_eq!(props.message_expiry_interval, Some(6));
            assert_eq!(props.subscription_identifiers, vec![3]);
        }
        other => panic!("{other:?}"),
    }
    s.deliver(d(), now + Duration::from_secs(11));
    assert!(sent(&mut s).is_empty());
    assert_eq!(s.drops.expired, 1);
}

#[test]
fn outgoing_topic_aliases_within_the_client_maximum() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5);
    s.set_peer_topic_alias_maximum(2);
    s.attach(ProtocolVersion::V5, u16::MAX, u32::MAX, now);
    let on = |topic: &'static str| Delivery {
        msg: Arc::new(Message {
            topic: Utf8Bytes::from_static(topic),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
            expires_at: None,
            origin: Origin {
                core: 0,
                session: 9,
            },
        }),
        qos: QoS::AtMostOnce,
        retain: false,
        sub_ids: Vec::new(),
        stored: 0,
    };
    for topic in ["a", "a", "b", "c", "b"] {
        s.deliver(on(topic), now);
    }
    let got: Vec<(String, Option<u16>)> = sent(&mut s)
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => (
                p.topic.to_string(),
                p.properties.and_then(|p| p.topic_alias),
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    let want = [
        ("a", Some(1)),
        ("", Some(1)),
        ("b", Some(2)),
        ("c", None),
        ("", Some(2)),
    ];
    assert_eq!(got, want.map(|(t, a)| (t.to_string(), a)).to_vec());
    // Aliases last one connection.
    s.detach();
    s.attach(ProtocolVersion::V5, u16::MAX, u32::MAX, now);
    s.deliver(on("a"), now);
    assert!(matches!(&sent(&mut s)[..], [Packet::Publish(p)] if p.topic == "a"));
}

#[test]
fn bytes_not_written_before_a_detach_are_not_sent_to_the_next_connection() {
    let now = Instant::now();
    let mut s = session(ProtocolVersion::V5);
    s.attach(ProtocolVersion::V5, u16::MAX, u32::MAX, now);
    s.deliver(delivery(1, QoS::AtLeastOnce), now);
    s.deliver(delivery(2, QoS::AtMostOnce), now);
    // The connection ends before its writer took these bytes.
    s.detach();
    s.write(&Packet::PingResp); // stands for the next connection's CONNACK
    s.attach(ProtocolVersion::V5, u16::MAX, u32::MAX, now);
    let packets = sent(&mut s);
    assert_eq!(packets[0], Packet::PingResp);
    assert_eq!(publishes(&packets[1..]), vec![(1, 1, true)]);
}
