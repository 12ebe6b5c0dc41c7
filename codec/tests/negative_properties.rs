//! Negative tests of MQTT 5 properties (§2.2.2): unknown identifiers, identifiers a packet must
//! not carry (every identifier in every place, against the table of §2.2.2.2), duplicates,
//! values out of range, property lengths beyond the packet, malformed variable byte integers,
//! and Payload Format Indicator 1 on a payload that is not UTF-8.

mod common;

use common::*;
use ringmq_codec::{DecodeError, Packet, PacketType, ReasonCode};

/// Where a property block sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

use Place::*;

const PLACES: [Place; 14] = [
    Connect,
    Will,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
];

/// MQTT 5.0 §2.2.2.2, the table of properties: each identifier with the places it may appear.
const TABLE: [(u8, &[Place]); 27] = [
    (0x01, &[Publish, Will]),
    (0x02, &[Publish, Will]),
    (0x03, &[Publish, Will]),
    (0x08, &[Publish, Will]),
    (0x09, &[Publish, Will]),
    (0x0B, &[Publish, Subscribe]),
    (0x11, &[Connect, ConnAck, Disconnect]),
    (0x12, &[ConnAck]),
    (0x13, &[ConnAck]),
    (0x15, &[Connect, ConnAck, Auth]),
    (0x16, &[Connect, ConnAck, Auth]),
    (0x17, &[Connect]),
    (0x18, &[Will]),
    (0x19, &[Connect]),
    (0x1A, &[ConnAck]),
    (0x1C, &[ConnAck, Disconnect]),
    (
        0x1F,
        &[
            ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth,
        ],
    ),
    (0x21, &[Connect, ConnAck]),
    (0x22, &[Connect, ConnAck]),
    (0x23, &[Publish]),
    (0x24, &[ConnAck]),
    (0x25, &[ConnAck]),
    (0x26, &PLACES),
    (0x27, &[Connect, ConnAck]),
    (0x28, &[ConnAck]),
    (0x29, &[ConnAck]),
    (0x2A, &[ConnAck]),
];

fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            return out;
        }
    }
}

impl Place {
    /// A valid MQTT 5 packet with `block` as its (or the will's) properties.
    fn packet(self, block: &[u8]) -> Vec<u8> {
        let props = cat(&[&varint(block.len()), block]);
        let head = |flags| [0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, flags, 0x00, 0x00];
        let ack = |first| packet(first, &cat(&[&[0x00, 0x01, 0x00], &props]));
        match self {
            Connect => packet(0x10, &cat(&[&head(0x02), &props, &field(b"c")])),
            Will => packet(
                0x10,
                &cat(&[
                    &head(0x06),
                    &[0x00],
                    &field(b"c"),
                    &props,
                    &field(b"t"),
                    &field(b"p"),
                ]),
            ),
            ConnAck => packet(0x20, &cat(&[&[0x00, 0x00], &props])),
            Publish => packet(0x30, &cat(&[&field(b"t"), &props, b"x"])),
            PubAck => ack(0x40),
            PubRec => ack(0x50),
            PubRel => ack(0x62),
            PubComp => ack(0x70),
            Subscribe => packet(0x82, &cat(&[&[0x00, 0x01], &props, &field(b"t"), &[0]])),
            SubAck => packet(0x90, &cat(&[&[0x00, 0x01], &props, &[0x00]])),
            Unsubscribe => packet(0xA2, &cat(&[&[0x00, 0x01], &props, &field(b"t")])),
            UnsubAck => packet(0xB0, &cat(&[&[0x00, 0x01], &props, &[0x00]])),
            Disconnect => packet(0xE0, &cat(&[&[0x00], &props])),
            Auth => packet(0xF0, &cat(&[&[0x00], &props])),
        }
    }

    /// The packet type errors name (will properties belong to CONNECT).
    fn packet_type(self) -> PacketType {
        match self {
            Connect | Will => PacketType::Connect,
            ConnAck => PacketType::ConnAck,
            Publish => PacketType::Publish,
            PubAck => PacketType::PubAck,
            PubRec => PacketType::PubRec,
            PubRel => PacketType::PubRel,
            PubComp => PacketType::PubComp,
            Subscribe => PacketType::Subscribe,
            SubAck => PacketType::SubAck,
            Unsubscribe => PacketType::Unsubscribe,
            UnsubAck => PacketType::UnsubAck,
            Disconnect => PacketType::Disconnect,
            Auth => PacketType::Auth,
        }
    }
}

/// Property `id` with a value valid for its data type and range (§2.2.2.2, §3.x).
fn property(id: u8) -> Vec<u8> {
    let value: Vec<u8> = match id {
        0x01 | 0x17 | 0x19 | 0x25 | 0x28 | 0x29 | 0x2A => vec![0x01], // Byte 0 or 1
        0x24 => vec![0x01],                                           // Maximum QoS 1
        0x02 | 0x11 | 0x18 | 0x27 => vec![0x00, 0x00, 0x01, 0x00],    // Four Byte Integer
        0x13 | 0x21 | 0x22 | 0x23 => vec![0x00, 0x05],                // Two Byte Integer
        0x0B => vec![0x05],                                           // Variable Byte Integer
        0x09 | 0x16 => field(&[0xAB]),                                // Binary Data
        0x26 => cat(&[&field(b"k"), &field(b"v")]),                   // UTF-8 String Pair
        _ => field(b"r"),                                             // UTF-8 String
    };
    cat(&[&[id], &value])
}

/// MQTT 5.0 §2.2.2.2: "A Control Packet which contains an Identifier which is not valid for its
/// packet type ... is a Malformed Packet". Every identifier in every place: accepted exactly
/// where the table allows it.
#[test]
fn every_identifier_in_every_place() {
    for (id, allowed) in TABLE {
        for place in PLACES {
            let bytes = place.packet(&property(id));
            let result = decode_all(V5, &bytes);
            if allowed.contains(&place) {
                assert!(
                    matches!(result, Ok(Some(_))),
                    "{id:#04x} in {place:?}: {result:?}"
                );
            } else {
                assert_rejects(
                    V5,
                    &bytes,
                    DecodeError::PropertyNotAllowed {
                        id,
                        packet: place.packet_type(),
                    },
                    ReasonCode::MalformedPacket,
                );
            }
        }
    }
}

/// MQTT 5.0 §2.2.2.2: identifiers the table does not define (one- and two-byte ones).
#[test]
fn unknown_identifiers() {
    let unknown = [
        0x00, 0x04, 0x05, 0x06, 0x07, 0x0A, 0x0C, 0x10, 0x14, 0x1B, 0x1D, 0x1E, 0x20, 0x2B, 0x7F,
    ];
    for place in PLACES {
        for id in unknown {
            assert_rejects(
                V5,
                &place.packet(&[id, 0x00, 0x00]),
                DecodeError::UnknownProperty(id),
                ReasonCode::MalformedPacket,
            );
        }
        // 128 as a two-byte variable byte integer.
        assert_rejects(
            V5,
            &place.packet(&[0x80, 0x01, 0x00]),
            DecodeError::UnknownProperty(128),
            ReasonCode::MalformedPacket,
        );
    }
}

/// MQTT 5.0 §3.x: "It is a Protocol Error to include the <property> more than once" for every
/// property but User Property (§3.1.2.11.8 and the others: "allowed to appear multiple times")
/// and Subscription Identifier in PUBLISH (§3.3.2.3.8: one per matching subscription,
/// [MQTT-3.3.4-4]). Every allowed identifier twice in every place.
#[test]
fn duplicates() {
    for (id, allowed) in TABLE {
        for &place in allowed {
            let twice = cat(&[&property(id), &property(id)]);
            let bytes = place.packet(&twice);
            if id == 0x26 || (id == 0x0B && place == Publish) {
                assert!(
                    matches!(decode_all(V5, &bytes), Ok(Some(_))),
                    "{id:#04x} twice in {place:?} is allowed"
                );
            } else {
                assert_rejects(
                    V5,
                    &bytes,
                    DecodeError::DuplicateProperty(id),
                    ReasonCode::ProtocolError,
                );
            }
        }
    }
    // Two message expiry intervals in a PUBLISH, even apart and with different values.
    let block = [
        0x02, 0x00, 0x00, 0x00, 0x01, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', 0x02, 0x00, 0x00,
        0x00, 0x02,
    ];
    assert_rejects(
        V5,
        &Publish.packet(&block),
        DecodeError::DuplicateProperty(0x02),
        ReasonCode::ProtocolError,
    );
}

/// Repeatable properties keep every value, in order.
#[test]
fn two_user_properties_and_two_subscription_identifiers_in_publish() {
    let block = [
        0x0B, 0x01, 0x0B, 0x02, 0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'1', 0x26, 0x00, 0x01, b'a',
        0x00, 0x01, b'2',
    ];
    let Ok(Some(Packet::Publish(p))) = decode_all(V5, &Publish.packet(&block)) else {
        panic!("repeatable properties must be accepted");
    };
    let p = p.properties.unwrap();
    assert_eq!(p.subscription_identifiers, vec![1, 2]);
    assert_eq!(p.user_properties, vec![(s("a"), s("1")), (s("a"), s("2"))]);
}

/// Values outside their range.
#[test]
fn invalid_values() {
    let pe = ReasonCode::ProtocolError;
    let response_topic = |t: &[u8]| cat(&[&[0x08], &field(t)]);
    let cases: Vec<(Place, Vec<u8>, u8, ReasonCode)> = vec![
        // §3.1.2.11.3 / §3.2.2.3.3: "It is a Protocol Error ... for it to have the value 0".
        (Connect, vec![0x21, 0x00, 0x00], 0x21, pe),
        (ConnAck, vec![0x21, 0x00, 0x00], 0x21, pe),
        // §3.1.2.11.4 / §3.2.2.3.6: Maximum Packet Size "set to zero" is a Protocol Error.
        (Connect, vec![0x27, 0x00, 0x00, 0x00, 0x00], 0x27, pe),
        (ConnAck, vec![0x27, 0x00, 0x00, 0x00, 0x00], 0x27, pe),
        // §3.3.2.3.2 / §3.1.3.2.3: the Payload Format Indicator is 0 or 1.
        (Publish, vec![0x01, 0x02], 0x01, pe),
        (Will, vec![0x01, 0xFF], 0x01, pe),
        // §3.3.2.3.4 [MQTT-3.3.2-8]; §3.3.4: "A Topic Alias value of 0 ... is a Protocol Error,
        // the receiver uses DISCONNECT with Reason Code of 0x94 (Topic Alias invalid)".
        (
            Publish,
            vec![0x23, 0x00, 0x00],
            0x23,
            ReasonCode::TopicAliasInvalid,
        ),
        // §3.3.2.3.8 / §3.8.2.1.2: "It is a Protocol Error if the Subscription Identifier has a
        // value of 0".
        (Publish, vec![0x0B, 0x00], 0x0B, pe),
        (Subscribe, vec![0x0B, 0x00], 0x0B, pe),
        // §3.2.2.3.4: Maximum QoS "other than 0 or 1" is a Protocol Error.
        (ConnAck, vec![0x24, 0x02], 0x24, pe),
        (ConnAck, vec![0x24, 0x03], 0x24, pe),
        // §3.1.2.11.7, §3.1.2.11.6, §3.2.2.3.5, §3.2.2.3.11-13: "a value other than 0 or 1".
        (Connect, vec![0x17, 0x02], 0x17, pe),
        (Connect, vec![0x19, 0x02], 0x19, pe),
        (ConnAck, vec![0x25, 0x02], 0x25, pe),
        (ConnAck, vec![0x28, 0x02], 0x28, pe),
        (ConnAck, vec![0x29, 0x02], 0x29, pe),
        (ConnAck, vec![0x2A, 0xFF], 0x2A, pe),
        // §3.3.2.3.5 [MQTT-3.3.2-14]: the Response Topic is a topic name, without wildcards.
        (Publish, response_topic(b"a/+"), 0x08, pe),
        (Will, response_topic(b"#"), 0x08, pe),
        (Publish, response_topic(b""), 0x08, pe),
    ];
    for (place, block, id, reason) in cases {
        assert_rejects(
            V5,
            &place.packet(&block),
            DecodeError::InvalidPropertyValue(id),
            reason,
        );
    }
}

/// MQTT 5.0 §2.2.2.1: the property length counts the bytes of the properties; a length beyond
/// the end of the packet, or a property running past the end of its block, is malformed.
#[test]
fn property_length_beyond_the_packet() {
    let cases: [&[u8]; 4] = [
        // PUBLISH "t" with a property length of 10 and 3 bytes left.
        &[0x30, 0x07, 0x00, 0x01, b't', 0x0A, 0x02, 0x00, 0x00],
        // PUBACK with a property length of 9 and 1 byte left.
        &[0x40, 0x05, 0x00, 0x01, 0x00, 0x09, 0x1F],
        // PUBLISH: a property block of 2 holding a message expiry interval (4 bytes), followed
        // by a payload: the property must not borrow the payload's bytes.
        &[
            0x30, 0x0A, 0x00, 0x01, b't', 0x02, 0x02, 0x00, 0x00, 0x00, 0x01, b'x',
        ],
        // DISCONNECT: a reason string of 5 bytes in a block of 4.
        &[0xE0, 0x06, 0x00, 0x04, 0x1F, 0x00, 0x05, b'a'],
    ];
    for bytes in cases {
        assert_rejects(
            V5,
            bytes,
            DecodeError::Truncated,
            ReasonCode::MalformedPacket,
        );
    }
}

/// MQTT 5.0 §1.5.5 [MQTT-1.5.5-1]: property lengths, identifiers and subscription identifiers
/// are variable byte integers: at most four bytes, minimally encoded.
#[test]
fn malformed_variable_byte_integers_in_properties() {
    let cases: [&[u8]; 5] = [
        // PUBLISH: a property length of five bytes.
        &[
            0x30, 0x0A, 0x00, 0x01, b't', 0x80, 0x80, 0x80, 0x80, 0x01, 0x00, 0x00,
        ],
        // PUBLISH: a property length of 0 written as 80 00.
        &[0x30, 0x06, 0x00, 0x01, b't', 0x80, 0x00, b'x'],
        // PUBLISH: identifier 1 written as 81 00.
        &[0x30, 0x08, 0x00, 0x01, b't', 0x03, 0x81, 0x00, 0x01, b'x'],
        // PUBLISH: a subscription identifier of five bytes.
        &[
            0x30, 0x0A, 0x00, 0x01, b't', 0x06, 0x0B, 0x80, 0x80, 0x80, 0x80, 0x01,
        ],
        // SUBSCRIBE: a subscription identifier of 1 written as 81 80 00.
        &[
            0x82, 0x0B, 0x00, 0x01, 0x04, 0x0B, 0x81, 0x80, 0x00, 0x00, 0x01, b't', 0x00,
        ],
    ];
    for bytes in cases {
        assert_rejects(
            V5,
            bytes,
            DecodeError::MalformedVarInt,
            ReasonCode::MalformedPacket,
        );
    }
}

/// MQTT 5.0 §3.3.2.3.2: with Payload Format Indicator 1 the payload is UTF-8; "A receiver MAY
/// validate ... and if it is not send a PUBACK, PUBREC, or DISCONNECT with Reason Code of 0x99
/// (Payload format invalid)". Indicator 0 or absent: any bytes.
#[test]
fn publish_payload_not_utf8_with_format_indicator_1() {
    let publish = |indicator: Option<u8>, payload: &[u8]| {
        let block = indicator.map_or(vec![], |i| vec![0x01, i]);
        packet(
            0x30,
            &cat(&[&field(b"t"), &varint(block.len()), &block, payload]),
        )
    };
    for payload in [&[0xFF][..], &[0xED, 0xA0, 0x80], &[b'a', 0xC3]] {
        assert_rejects(
            V5,
            &publish(Some(1), payload),
            DecodeError::PayloadFormatInvalid,
            ReasonCode::PayloadFormatInvalid,
        );
        assert!(decode_all(V5, &publish(Some(0), payload)).is_ok());
        assert!(decode_all(V5, &publish(None, payload)).is_ok());
    }
    assert!(decode_all(V5, &publish(Some(1), "é☃".as_bytes())).is_ok());
    assert!(decode_all(V5, &publish(Some(1), b"")).is_ok());
}
