//! Protocol violations written as raw bytes on a real socket. In 5.0 each closes the connection
//! after a DISCONNECT with the expected reason code; in 3.1.1 the connection is just closed.
//! After each, the broker still serves new clients.

mod common;

use std::io::Read;

use common::{Broker, Client, VERSIONS};
use ringmq_codec::{Packet, ProtocolVersion, QoS, ReasonCode};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Remaining length as a variable byte integer.
fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

/// A packet from its first byte and body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    out.extend(varint(body.len()));
    out.extend_from_slice(body);
    out
}

/// A PUBLISH body: topic, packet id (QoS > 0), properties (5.0, already with their length).
fn publish_body(
    topic: &[u8],
    packet_id: Option<u16>,
    props: Option<&[u8]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = (topic.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(topic);
    if let Some(id) = packet_id {
        b.extend_from_slice(&id.to_be_bytes());
    }
    if let Some(p) = props {
        b.extend(varint(p.len()));
        b.extend_from_slice(p);
    }
    b.extend_from_slice(payload);
    b
}

/// Connects, sends `bytes`, and checks the close (with `reason` in 5.0); then checks that the
/// broker still accepts clients.
fn violates(broker: &Broker, v: ProtocolVersion, what: &str, bytes: &[u8], reason: ReasonCode) {
    let mut c = Client::connect(broker.addr, &format!("viol-{v:?}"), v);
    c.send_raw(bytes);
    let (closed, packets) = c.closed_within(common::TIMEOUT);
    assert!(closed, "{v:?} {what}: not closed ({packets:?})");
    if v.is_v5() {
        assert!(
            matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == reason),
            "{what}: expected DISCONNECT {reason:?}, got {packets:?}"
        );
    } else {
        assert!(packets.is_empty(), "{v:?} {what}: {packets:?}");
    }
    let mut ok = Client::connect(broker.addr, "still-up", v);
    ok.send(&Packet::PingReq);
    assert_eq!(
        ok.recv(),
        Some(Packet::PingResp),
        "{what}: broker still serves"
    );
}

fn props(v: ProtocolVersion) -> Option<&'static [u8]> {
    v.is_v5().then_some(&[][..])
}

#[test]
fn violations_in_both_versions() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let p = props(v);
        let mut second = bytes::BytesMut::new();
        Packet::Connect(Box::new(common::connect_packet("again", v)))
            .encode(v, &mut second)
            .unwrap();
        let cases: Vec<(&str, Vec<u8>, ReasonCode)> = vec![
            ("second CONNECT", second.to_vec(), ReasonCode::ProtocolError),
            // SUBSCRIBE must have flags 0b0010.
            (
                "SUBSCRIBE flags 0",
                packet(0x80, &[0, 1, 0, 1, b't', 0]),
                ReasonCode::MalformedPacket,
            ),
            (
                "PINGREQ flags 1",
                vec![0xC1, 0],
                ReasonCode::MalformedPacket,
            ),
            (
                "PUBREL flags 0",
                vec![0x60, 2, 0, 1],
                ReasonCode::MalformedPacket,
            ),
            (
                "PUBLISH QoS 3",
                packet(0x36, &publish_body(b"t", Some(1), p, b"")),
                ReasonCode::MalformedPacket,
            ),
            (
                "DUP on QoS 0",
                packet(0x38, &publish_body(b"t", None, p, b"")),
                ReasonCode::MalformedPacket,
            ),
            (
                "wildcard + in PUBLISH topic",
                packet(0x30, &publish_body(b"a/+/b", None, p, b"x")),
                ReasonCode::TopicNameInvalid,
            ),
            (
                "wildcard # in PUBLISH topic",
                packet(0x32, &publish_body(b"a/#", Some(1), p, b"x")),
                ReasonCode::TopicNameInvalid,
            ),
            (
                "PUBLISH packet id 0",
                packet(0x32, &publish_body(b"t", Some(0), p, b"x")),
                ReasonCode::MalformedPacket,
            ),
            (
                "SUBSCRIBE packet id 0",
                packet(
                    0x82,
                    &[
                        &[0u8, 0][..],
                        if v.is_v5() { &[0] } else { &[] },
                        &[0, 1, b't', 0],
                    ]
                    .concat(),
                ),
                ReasonCode::MalformedPacket,
            ),
            (
                "remaining length of five bytes",
                vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
                ReasonCode::MalformedPacket,
            ),
            (
                "PINGREQ with a body",
                packet(0xC0, &[0]),
                ReasonCode::MalformedPacket,
            ),
            (
                "invalid UTF-8 in topic",
                packet(0x30, &publish_body(&[b'a', 0xC0, 0x80], None, p, b"")),
                ReasonCode::MalformedPacket,
            ),
            (
                "U+0000 in topic",
                packet(0x30, &publish_body(b"a\0b", None, p, b"")),
                ReasonCode::MalformedPacket,
            ),
            (
                "empty topic without alias",
                packet(0x30, &publish_body(b"", None, p, b"")),
                ReasonCode::ProtocolError,
            ),
            (
                "SUBSCRIBE without filters",
                packet(
                    0x82,
                    &[&[0u8, 1][..], if v.is_v5() { &[0] } else { &[] }].concat(),
                ),
                ReasonCode::ProtocolError,
            ),
            (
                "CONNACK from a client",
                if v.is_v5() {
                    vec![0x20, 3, 0, 0, 0]
                } else {
                    vec![0x20, 2, 0, 0]
                },
                ReasonCode::ProtocolError,
            ),
            (
                "reserved packet type 0",
                vec![0x00, 0],
                ReasonCode::MalformedPacket,
            ),
        ];
        for (what, bytes, reason) in cases {
            violates(&broker, v, what, &bytes, reason);
        }
    }
}

#[test]
fn v5_property_violations() {
    let broker = Broker::cores(2);
    let cases: Vec<(&str, Vec<u8>, ReasonCode)> = vec![
        (
            "unknown property 0x7F",
            packet(0x30, &publish_body(b"t", None, Some(&[0x7F, 0]), b"")),
            ReasonCode::MalformedPacket,
        ),
        (
            "subscription identifier in PUBLISH",
            packet(0x30, &publish_body(b"t", None, Some(&[0x0B, 5]), b"")),
            ReasonCode::ProtocolError,
        ),
        (
            "topic alias 0",
            packet(0x30, &publish_body(b"t", None, Some(&[0x23, 0, 0]), b"")),
            ReasonCode::TopicAliasInvalid,
        ),
        (
            "topic alias above the maximum (64)",
            packet(0x30, &publish_body(b"t", None, Some(&[0x23, 0, 65]), b"")),
            ReasonCode::TopicAliasInvalid,
        ),
        (
            "duplicate property",
            packet(
                0x30,
                &publish_body(b"t", None, Some(&[0x01, 0, 0x01, 0]), b""),
            ),
            ReasonCode::ProtocolError,
        ),
        (
            "property not allowed in PUBLISH (session expiry)",
            packet(
                0x30,
                &publish_body(b"t", None, Some(&[0x11, 0, 0, 0, 1]), b""),
            ),
            ReasonCode::MalformedPacket,
        ),
        (
            "No Local on a shared subscription",
            packet(
                0x82,
                &[&[0u8, 1, 0, 0, 10][..], b"$share/g/t", &[0b0000_0100]].concat(),
            ),
            ReasonCode::ProtocolError,
        ),
        (
            "AUTH without an authentication method",
            vec![0xF0, 0],
            ReasonCode::ProtocolError,
        ),
        (
            "PUBLISH payload format 1 with invalid UTF-8",
            packet(0x30, &publish_body(b"t", None, Some(&[0x01, 1]), &[0xFF])),
            ReasonCode::PayloadFormatInvalid,
        ),
    ];
    for (what, bytes, reason) in cases {
        violates(&broker, V5, what, &bytes, reason);
    }
}

#[test]
fn v311_property_bytes_are_not_properties() {
    // AUTH does not exist before 5.0.
    let broker = Broker::cores(1);
    violates(
        &broker,
        ProtocolVersion::V3_1_1,
        "AUTH in 3.1.1",
        &[0xF0, 0],
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn v5_receive_maximum_of_the_broker_exceeded() {
    let broker = Broker::with_config(1, "[limits]\nmax_inflight_messages = 4\n");
    let (mut c, ack) = Client::connect_ok(broker.addr, "rmx", V5, |_| {});
    assert_eq!(ack.properties.unwrap().receive_maximum, Some(4));
    for id in 1..=4u16 {
        c.send(&Packet::Publish(common::publish_packet(
            "rmx",
            b"",
            QoS::ExactlyOnce,
            false,
            id,
        )));
        assert!(matches!(c.expect(), Packet::PubRec(a) if a.packet_id == id));
    }
    c.send(&Packet::Publish(common::publish_packet(
        "rmx",
        b"",
        QoS::ExactlyOnce,
        false,
        5,
    )));
    c.expect_close(ReasonCode::ReceiveMaximumExceeded);
}

/// Reads a raw answer to a CONNECT until the broker closes.
fn raw_answer(broker: &Broker, connect: &[u8]) -> Vec<u8> {
    let mut c = Client::open(broker.addr, ProtocolVersion::V3_1_1);
    c.send_raw(connect);
    let mut out = Vec::new();
    c.stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let _ = c.stream.read_to_end(&mut out);
    out
}

fn connect_bytes(name: &[u8], level: u8, flags: u8) -> Vec<u8> {
    let mut body = (name.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0, 60]);
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(&[0, 2, b'i', b'd']);
    packet(0x10, &body)
}

#[test]
fn unsupported_protocol_level_is_refused_then_closed() {
    let broker = Broker::cores(2);
    // Above 5 (a newer client): MQTT 5 CONNACK 0x84.
    assert_eq!(
        raw_answer(&broker, &connect_bytes(b"MQTT", 6, 2)),
        vec![0x20, 3, 0, 0x84, 0],
        "level 6"
    );
    // Below 4 with the name MQTT: 3.1.1 CONNACK return code 1.
    for level in [2, 3] {
        assert_eq!(
            raw_answer(&broker, &connect_bytes(b"MQTT", level, 2)),
            vec![0x20, 2, 0, 1],
            "level {level}"
        );
    }
    // 3.1 (MQIsdp level 3) is supported.
    let ok = raw_answer(&broker, &connect_bytes(b"MQIsdp", 3, 2));
    assert_eq!(&ok[..4], &[0x20, 2, 0, 0]);
}

#[test]
fn malformed_connect_is_refused() {
    let broker = Broker::cores(2);
    // 5.0 with the reserved flag: CONNACK 0x81 (Malformed Packet), then close.
    assert_eq!(
        raw_answer(&broker, &connect_bytes(b"MQTT", 5, 3)),
        vec![0x20, 3, 0, 0x81, 0]
    );
    // 3.1.1 with the reserved flag: closed without CONNACK.
    assert_eq!(
        raw_answer(&broker, &connect_bytes(b"MQTT", 4, 3)),
        Vec::<u8>::new()
    );
    // Unknown protocol name: closed.
    assert_eq!(
        raw_answer(&broker, &connect_bytes(b"MQTX", 4, 2)),
        Vec::<u8>::new()
    );
    // Any packet before CONNECT: closed.
    assert_eq!(raw_answer(&broker, &[0xC0, 0]), Vec::<u8>::new());
}
