//! Negative tests of the fixed header and of the framing: packet types, flag nibbles, the
//! remaining length, the configured maximum packet size, and bodies longer or shorter than their
//! fields.

mod common;

use bytes::BytesMut;
use common::*;
use ringmq_codec::{decode, DecodeError, DecodeOptions, PacketType, ReasonCode};

const MALFORMED: ReasonCode = ReasonCode::MalformedPacket;

/// MQTT 3.1.1 §2.2.1 table 2.1 / MQTT 5.0 §2.1.2 table 2-1: type 0 is "Reserved"/"Forbidden".
/// The first byte alone is enough to refuse it.
#[test]
fn reserved_packet_type_0() {
    for version in ALL {
        for bytes in [&[0x00][..], &[0x00, 0x00], &[0x02, 0x00]] {
            assert_rejects(version, bytes, DecodeError::InvalidPacketType(0), MALFORMED);
        }
    }
}

/// MQTT 3.1.1 §2.2.1 table 2.1: type 15 is "Reserved" in 3.1.1 (AUTH exists only in 5.0).
#[test]
fn auth_outside_mqtt_5() {
    for version in V3 {
        assert_rejects(
            version,
            &[0xF0, 0x00],
            DecodeError::InvalidPacketType(15),
            MALFORMED,
        );
    }
}

/// MQTT 3.1.1 §2.2.2 table 2.2 [MQTT-2.2.2-1] [MQTT-2.2.2-2] / MQTT 5.0 §2.1.3 table 2-2
/// [MQTT-2.1.3-1]: every packet but PUBLISH has a fixed flag nibble, 0010 for PUBREL
/// [MQTT-3.6.1-1], SUBSCRIBE [MQTT-3.8.1-1] and UNSUBSCRIBE [MQTT-3.10.1-1], 0000 for the
/// others (e.g. DISCONNECT [MQTT-3.14.1-1], AUTH [MQTT-3.15.1-1]); "If invalid flags are received
/// it is a Malformed Packet". Every wrong nibble of every type is refused.
#[test]
fn wrong_fixed_header_flags_for_every_type() {
    use PacketType::*;
    let types = [
        (Connect, 0b0000),
        (ConnAck, 0b0000),
        (PubAck, 0b0000),
        (PubRec, 0b0000),
        (PubRel, 0b0010),
        (PubComp, 0b0000),
        (Subscribe, 0b0010),
        (SubAck, 0b0000),
        (Unsubscribe, 0b0010),
        (UnsubAck, 0b0000),
        (PingReq, 0b0000),
        (PingResp, 0b0000),
        (Disconnect, 0b0000),
        (Auth, 0b0000),
    ];
    for (packet, required) in types {
        let versions: &[_] = if packet == Auth { &[V5] } else { &ALL };
        for &version in versions {
            for flags in (0..16u8).filter(|&f| f != required) {
                let first = ((packet as u8) << 4) | flags;
                assert_rejects(
                    version,
                    &[first, 0x00],
                    DecodeError::InvalidHeaderFlags { packet, flags },
                    MALFORMED,
                );
            }
        }
    }
}

/// MQTT 3.1.1 §3.3.1.2 [MQTT-3.3.1-4] / MQTT 5.0 §3.3.1.2: "A PUBLISH Packet MUST NOT have both
/// QoS bits set to 1 ... it is a Malformed Packet".
#[test]
fn publish_qos_3() {
    for version in ALL {
        for first in [0x36, 0x37, 0x3E, 0x3F] {
            assert_rejects(
                version,
                &[first, 0x05, 0x00, 0x01, b't', 0x00, 0x01],
                DecodeError::InvalidQoS,
                MALFORMED,
            );
        }
    }
}

/// MQTT 3.1.1 §3.3.1.1 / MQTT 5.0 §3.3.1.1: "The DUP flag MUST be set to 0 for all QoS 0
/// messages" [MQTT-3.3.1-2].
#[test]
fn dup_on_qos_0() {
    for version in ALL {
        for first in [0x38, 0x39] {
            assert_rejects(
                version,
                &[first, 0x03, 0x00, 0x01, b't'],
                DecodeError::DupOnQoS0,
                MALFORMED,
            );
        }
    }
}

/// MQTT 3.1.1 §2.2.3 / MQTT 5.0 §1.5.5: at most four bytes of remaining length. The fifth byte
/// need not arrive: four bytes with the continuation bit already decide it.
#[test]
fn remaining_length_of_five_bytes() {
    for version in ALL {
        for bytes in [
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F][..],
            &[0x30, 0x80, 0x80, 0x80, 0x80, 0x01],
            &[0xC0, 0x80, 0x80, 0x80, 0x80],
        ] {
            assert_rejects(
                version,
                bytes,
                DecodeError::MalformedRemainingLength,
                MALFORMED,
            );
        }
    }
}

/// MQTT 5.0 §1.5.5 [MQTT-1.5.5-1]: "The encoded value MUST use the minimum number of bytes
/// necessary to represent the value" (0 as 80 00, 127 as FF 80 00, 0 as 80 80 80 00).
#[test]
fn non_minimal_remaining_length() {
    for version in ALL {
        for bytes in [
            &[0xC0, 0x80, 0x00][..],
            &[0xE0, 0x80, 0x00],
            &[0x30, 0xFF, 0x80, 0x00],
            &[0x30, 0x80, 0x80, 0x80, 0x00],
        ] {
            assert_rejects(
                version,
                bytes,
                DecodeError::MalformedRemainingLength,
                MALFORMED,
            );
        }
    }
}

/// A remaining length shorter than the fields it must hold: a field runs past the end of the
/// packet (MQTT 5.0 §2.1.4 "the number of bytes remaining within the current Control Packet";
/// §1.5.4 a string "prefixed with a Two Byte Integer length field").
#[test]
fn remaining_length_shorter_than_the_fields() {
    let cases: [(_, &[u8]); 8] = [
        (V3_1_1, &[0x40, 0x01, 0x00]), // PUBACK with half a packet id
        (V3_1_1, &[0x40, 0x00]),       // PUBACK with none
        (V5, &[0x30, 0x04, 0x00, 0x0A, b'a', b'b']), // topic of 10 in 4 bytes
        (V3_1_1, &[0x32, 0x04, 0x00, 0x01, b't', 0x00]), // QoS 1 without a whole id
        (V5, &[0x30, 0x03, 0x00, 0x01, b't']), // no property length
        // SUBSCRIBE whose last filter has no options byte.
        (
            V3_1_1,
            &[0x82, 0x07, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'b'],
        ),
        (V3_1_1, &[0x20, 0x01, 0x00]), // CONNACK without return code
        (
            V3_1_1,
            // CONNECT whose flags announce a user name that is not there.
            &[
                0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x82, 0x00, 0x00, 0x00, 0x01,
                b'c',
            ],
        ),
    ];
    for (version, bytes) in cases {
        assert_rejects(version, bytes, DecodeError::Truncated, MALFORMED);
    }
}

/// A remaining length longer than the fields: bytes are left after the last one. Fixed-shape
/// packets must end where their last field ends (MQTT 5.0 §3.12: PINGREQ "has no Variable
/// Header and no Payload"; §3.4.2: PUBACK variable header; MQTT 3.1.1 §3.2: CONNACK remaining
/// length 2, §3.14 DISCONNECT "has no payload").
#[test]
fn remaining_length_longer_than_the_fields() {
    let cases: [(_, &[u8], usize); 10] = [
        (V3_1_1, &[0xC0, 0x01, 0x00], 1), // PINGREQ with a body
        (V5, &[0xC0, 0x02, 0x00, 0x00], 2),
        (V5, &[0xD0, 0x01, 0xFF], 1),     // PINGRESP with a body
        (V3_1_1, &[0xE0, 0x01, 0x00], 1), // 3.1.1 DISCONNECT with a body
        (V3_1_1, &[0x40, 0x03, 0x00, 0x01, 0x00], 1), // 3.1.1 PUBACK with a reason code
        (V3_1_1, &[0x20, 0x03, 0x00, 0x00, 0x00], 1), // 3.1.1 CONNACK with properties
        (V3_1_1, &[0xB0, 0x04, 0x00, 0x01, 0x00, 0x11], 2), // 3.1.1 UNSUBACK with codes
        (V5, &[0x40, 0x05, 0x00, 0x01, 0x00, 0x00, 0xFF], 1), // after the properties
        (V5, &[0xE0, 0x03, 0x00, 0x00, 0xFF], 1),
        // CONNECT with two bytes after the client identifier.
        (
            V3_1_1,
            &[
                0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x01,
                b'c', 0x00, 0x00,
            ],
            2,
        ),
    ];
    for (version, bytes, extra) in cases {
        assert_rejects(version, bytes, DecodeError::TrailingBytes(extra), MALFORMED);
    }
}

/// A remaining length longer than what has arrived is no error: the decoder waits for the rest.
#[test]
fn remaining_length_longer_than_the_buffer_waits() {
    let mut buf = BytesMut::from(&[0x40, 0x02, 0x00][..]);
    assert_eq!(decode(&mut buf, &opts(V5)), Ok(None));
    assert_eq!(buf.len(), 3);
}

/// MQTT 5.0 §3.1.2.11.4 / §3.2.2.3.6 (Maximum Packet Size: "the total number of bytes in an MQTT
/// Control Packet") and §4.13 (0x95 "Packet too large"): a declared size above the limit is
/// refused as soon as the fixed header is complete, with 2 to 5 bytes buffered, before any of
/// the body arrives.
#[test]
fn packet_too_large_from_the_fixed_header_alone() {
    let options = DecodeOptions {
        version: V5,
        max_packet_size: 100,
    };
    let cases: [(&[u8], usize); 4] = [
        (&[0x30, 0x7F], 1 + 1 + 127),
        (&[0x30, 0xFF, 0x7F], 1 + 2 + 16_383),
        (&[0x30, 0xFF, 0xFF, 0x7F], 1 + 3 + 2_097_151),
        (&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], 1 + 4 + 268_435_455),
    ];
    for (header, size) in cases {
        let mut buf = BytesMut::from(header);
        let expected = DecodeError::PacketTooLarge { size, max: 100 };
        assert_eq!(decode(&mut buf, &options), Err(expected));
        assert_eq!(expected.reason_code(), ReasonCode::PacketTooLarge);
    }
    // The limit counts the fixed header: 2 + 98 = 100 is accepted (and waits for its body),
    // 2 + 99 = 101 is not.
    let mut buf = BytesMut::from(&[0x30, 98][..]);
    assert_eq!(decode(&mut buf, &options), Ok(None));
    let mut buf = BytesMut::from(&[0x30, 99][..]);
    assert_eq!(
        decode(&mut buf, &options),
        Err(DecodeError::PacketTooLarge {
            size: 101,
            max: 100
        })
    );
    // Also in 3.1.1, and for a CONNECT, whose version is not known yet.
    let options = DecodeOptions {
        version: V3_1_1,
        max_packet_size: 16,
    };
    let mut buf = BytesMut::from(&[0x10, 0x0F][..]);
    assert_eq!(
        decode(&mut buf, &options),
        Err(DecodeError::PacketTooLarge { size: 17, max: 16 })
    );
}
