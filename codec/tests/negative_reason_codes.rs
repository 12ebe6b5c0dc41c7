//! Reason codes: every byte value in every packet kind that carries one, accepted exactly when
//! the specification lists it for that packet (the tables are copied here from the spec, not
//! from the codec).

mod common;

use common::*;
use ringmq_codec::{DecodeError, Packet, PacketType, ProtocolVersion, ReasonCode};

/// One packet kind: its version, a builder putting `code` in a packet, and the valid codes.
struct Kind {
    version: ProtocolVersion,
    packet: PacketType,
    bytes: fn(u8) -> Vec<u8>,
    valid: &'static [u8],
}

/// MQTT 5.0 §3.2.2.2 (Connect Reason Codes, [MQTT-3.2.2-8]).
const CONNACK: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
/// MQTT 5.0 §3.4.2.1 [MQTT-3.4.2-1] and §3.5.2.1 [MQTT-3.5.2-1] (PUBACK and PUBREC).
const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
/// MQTT 5.0 §3.6.2.1 [MQTT-3.6.2-1] and §3.7.2.1 [MQTT-3.7.2-1] (PUBREL and PUBCOMP).
const PUBREL: &[u8] = &[0x00, 0x92];
/// MQTT 5.0 §3.9.3 [MQTT-3.9.3-2] (Subscribe Reason Codes).
const SUBACK: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
/// MQTT 5.0 §3.11.3 [MQTT-3.11.3-2] (Unsubscribe Reason Codes).
const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
/// MQTT 5.0 §3.14.2.1 (Disconnect Reason Codes).
const DISCONNECT: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
/// MQTT 5.0 §3.15.2.1 [MQTT-3.15.2-1] (Authenticate Reason Codes).
const AUTH: &[u8] = &[0x00, 0x18, 0x19];
/// MQTT 3.1.1 §3.2.2.3 table 3.1 (return codes 0-5; 6-255 reserved).
const V3_CONNACK: &[u8] = &[0x00, 0x01, 0x02, 0x03, 0x04, 0x05];
/// MQTT 3.1.1 §3.9.3 [MQTT-3.9.3-2] (0x00, 0x01, 0x02, 0x80; the others reserved).
const V3_SUBACK: &[u8] = &[0x00, 0x01, 0x02, 0x80];

fn kinds() -> [Kind; 11] {
    [
        Kind {
            version: V5,
            packet: PacketType::ConnAck,
            bytes: |c| vec![0x20, 0x03, 0x00, c, 0x00],
            valid: CONNACK,
        },
        Kind {
            version: V5,
            packet: PacketType::PubAck,
            bytes: |c| vec![0x40, 0x03, 0x00, 0x01, c],
            valid: PUBACK,
        },
        Kind {
            version: V5,
            packet: PacketType::PubRec,
            bytes: |c| vec![0x50, 0x04, 0x00, 0x01, c, 0x00],
            valid: PUBACK,
        },
        Kind {
            version: V5,
            packet: PacketType::PubRel,
            bytes: |c| vec![0x62, 0x03, 0x00, 0x01, c],
            valid: PUBREL,
        },
        Kind {
            version: V5,
            packet: PacketType::PubComp,
            bytes: |c| vec![0x70, 0x04, 0x00, 0x01, c, 0x00],
            valid: PUBREL,
        },
        Kind {
            version: V5,
            packet: PacketType::SubAck,
            // The bad code comes after a good one: every code is checked, not just the first.
            bytes: |c| vec![0x90, 0x05, 0x00, 0x01, 0x00, 0x01, c],
            valid: SUBACK,
        },
        Kind {
            version: V5,
            packet: PacketType::UnsubAck,
            bytes: |c| vec![0xB0, 0x05, 0x00, 0x01, 0x00, 0x00, c],
            valid: UNSUBACK,
        },
        Kind {
            version: V5,
            packet: PacketType::Disconnect,
            bytes: |c| vec![0xE0, 0x01, c],
            valid: DISCONNECT,
        },
        Kind {
            version: V5,
            packet: PacketType::Auth,
            bytes: |c| vec![0xF0, 0x02, c, 0x00],
            valid: AUTH,
        },
        Kind {
            version: V3_1_1,
            packet: PacketType::ConnAck,
            bytes: |c| vec![0x20, 0x02, 0x00, c],
            valid: V3_CONNACK,
        },
        Kind {
            version: V3_1_1,
            packet: PacketType::SubAck,
            bytes: |c| vec![0x90, 0x04, 0x00, 0x01, 0x01, c],
            valid: V3_SUBACK,
        },
    ]
}

/// Every byte in every kind: the listed ones decode, every other one is refused with
/// `InvalidReasonCode`, which a broker answers with 0x82 Protocol Error.
#[test]
fn every_byte_in_every_packet_kind() {
    for kind in kinds() {
        for code in 0..=255u8 {
            let bytes = (kind.bytes)(code);
            if kind.valid.contains(&code) {
                let result = decode_all(kind.version, &bytes);
                assert!(
                    matches!(result, Ok(Some(_))),
                    "{:?} {:?} must accept {code:#04x}: {result:?}",
                    kind.version,
                    kind.packet
                );
            } else {
                assert_rejects(
                    kind.version,
                    &bytes,
                    DecodeError::InvalidReasonCode {
                        packet: kind.packet,
                        code,
                    },
                    ReasonCode::ProtocolError,
                );
            }
        }
    }
}

/// The last reason code of a decoded packet.
fn last_reason_code(packet: &Packet) -> ReasonCode {
    match packet {
        Packet::ConnAck(p) => p.reason_code,
        Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
            p.reason_code
        }
        Packet::SubAck(p) => *p.return_codes.last().unwrap(),
        Packet::UnsubAck(p) => *p.reason_codes.last().unwrap(),
        Packet::Disconnect(p) => p.reason_code,
        Packet::Auth(p) => p.reason_code,
        other => panic!("{other:?} has no reason code"),
    }
}

/// The decoded reason code is the byte received (MQTT 5.0 §2.4; in 3.1.1 SUBACK too, 0x80 being
/// "Failure"), and it survives encoding.
#[test]
fn decoded_reason_code_is_the_byte() {
    for kind in kinds() {
        if kind.version == V3_1_1 && kind.packet == PacketType::ConnAck {
            continue; // mapped to MQTT 5 codes: see vectors_connack.rs
        }
        for &code in kind.valid {
            let bytes = (kind.bytes)(code);
            let packet = decode_all(kind.version, &bytes).unwrap().unwrap();
            assert_eq!(last_reason_code(&packet).as_u8(), code, "{:?}", kind.packet);
            let again = encode(kind.version, &packet);
            assert_eq!(decode_all(kind.version, &again), Ok(Some(packet)));
        }
    }
}
