//! Negative tests of CONNECT (protocol name and level, connect flags, will) and CONNACK.

mod common;

use common::*;
use ringmq_codec::{DecodeError, Packet, PacketType, ReasonCode};

const MALFORMED: ReasonCode = ReasonCode::MalformedPacket;

/// A CONNECT: protocol name, level, flags, keep alive 0, then `rest` (properties and payload).
fn connect(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    packet(
        0x10,
        &cat(&[&field(name), &[level, flags, 0x00, 0x00], rest]),
    )
}

/// A 3.1.1 CONNECT with client id "c" and the payload fields that follow it.
fn connect_v4(flags: u8, after_client_id: &[u8]) -> Vec<u8> {
    connect(b"MQTT", 4, flags, &cat(&[&field(b"c"), after_client_id]))
}

/// A 5.0 CONNECT without properties, client id "c" and the payload fields that follow it.
fn connect_v5(flags: u8, after_client_id: &[u8]) -> Vec<u8> {
    connect(
        b"MQTT",
        5,
        flags,
        &cat(&[&[0x00], &field(b"c"), after_client_id]),
    )
}

/// MQTT 3.1.1 §3.1.2.1 [MQTT-3.1.2-1] / MQTT 5.0 §3.1.2.1 [MQTT-3.1.2-1]: the protocol name
/// is "MQTT" ("MQIsdp" for 3.1). Anything else is not this protocol; 5.0 lets the server answer
/// 0x84 or just close, the codec reports a malformed packet.
#[test]
fn wrong_protocol_name() {
    for name in [&b"MQTX"[..], b"mqtt", b"MQIsdq", b"MQT", b"", b"MQTTT"] {
        for level in [3, 4, 5] {
            assert_rejects(
                V3_1_1,
                &connect(name, level, 0x02, &[0x00, 0x00, 0x00]),
                DecodeError::InvalidProtocolName,
                MALFORMED,
            );
        }
    }
}

/// MQTT 3.1.1 §3.1.2.2 [MQTT-3.1.2-2] (return code 0x01) / MQTT 5.0 §3.1.2.2 [MQTT-3.1.2-2]
/// (0x84 "Unsupported Protocol Version"): a level the server does not support. The name fixes
/// the level: "MQTT" is 4 or 5, "MQIsdp" is 3 only.
#[test]
fn unsupported_protocol_level() {
    let cases: [(&[u8], u8); 7] = [
        (b"MQTT", 6),
        (b"MQTT", 3),
        (b"MQTT", 0),
        (b"MQTT", 0xFF),
        (b"MQIsdp", 4),
        (b"MQIsdp", 5),
        (b"MQIsdp", 6),
    ];
    for (name, level) in cases {
        for version in ALL {
            assert_rejects(
                version,
                &connect(name, level, 0x02, &[0x00, 0x00, 0x00]),
                DecodeError::UnsupportedProtocolVersion(level),
                ReasonCode::UnsupportedProtocolVersion,
            );
        }
    }
}

/// MQTT 3.1.1 §3.1.2.3 [MQTT-3.1.2-3] / MQTT 5.0 §3.1.2.3 [MQTT-3.1.2-3]: the reserved flag
/// must be 0; "If the reserved flag is not 0 it is a Malformed Packet".
#[test]
fn reserved_connect_flag() {
    assert_rejects(
        V3_1_1,
        &connect_v4(0x03, &[]),
        DecodeError::ReservedConnectFlag,
        MALFORMED,
    );
    assert_rejects(
        V5,
        &connect_v5(0x01, &[]),
        DecodeError::ReservedConnectFlag,
        MALFORMED,
    );
    assert_rejects(
        V3_1,
        &connect(b"MQIsdp", 3, 0x03, &field(b"c")),
        DecodeError::ReservedConnectFlag,
        MALFORMED,
    );
}

/// MQTT 5.0 §3.1.2.6 [MQTT-3.1.2-11] and §3.1.2.7 [MQTT-3.1.2-13] (3.1.1 [MQTT-3.1.2-13],
/// [MQTT-3.1.2-15]): without the Will Flag, Will QoS and Will Retain must be 0.
#[test]
fn will_qos_or_retain_without_will_flag() {
    // 0x0A: will QoS 1; 0x12: will QoS 2; 0x22: will retain; 0x2A: QoS 1 and retain.
    for flags in [0x0A, 0x12, 0x22, 0x2A] {
        assert_rejects(
            V3_1_1,
            &connect_v4(flags, &[]),
            DecodeError::InvalidWillFlags,
            MALFORMED,
        );
        assert_rejects(
            V5,
            &connect_v5(flags, &[]),
            DecodeError::InvalidWillFlags,
            MALFORMED,
        );
    }
}

/// MQTT 5.0 §3.1.2.6 [MQTT-3.1.2-12] (3.1.1 [MQTT-3.1.2-14]): with the Will Flag, Will QoS is 0,
/// 1 or 2, "A value of 3 (0x03) is a Malformed Packet".
#[test]
fn will_qos_3() {
    let will = cat(&[&field(b"t"), &field(b"p")]);
    // 0x1E: will QoS 11, will flag, clean start.
    assert_rejects(
        V3_1_1,
        &connect_v4(0x1E, &will),
        DecodeError::InvalidQoS,
        MALFORMED,
    );
    assert_rejects(
        V5,
        &connect_v5(0x1E, &cat(&[&[0x00], &will])),
        DecodeError::InvalidQoS,
        MALFORMED,
    );
}

/// MQTT 3.1.1 §3.1.2.9 [MQTT-3.1.2-22]: "If the User Name Flag is set to 0, the Password Flag
/// MUST be set to 0" (also MQTT 3.1). MQTT 5.0 §3.1.2.9 lifts the rule.
#[test]
fn password_without_username() {
    let password = field(b"pw");
    assert_rejects(
        V3_1_1,
        &connect_v4(0x42, &password),
        DecodeError::PasswordWithoutUsername,
        MALFORMED,
    );
    assert_rejects(
        V3_1,
        &connect(b"MQIsdp", 3, 0x42, &cat(&[&field(b"c"), &password])),
        DecodeError::PasswordWithoutUsername,
        MALFORMED,
    );
    let accepted = decode_all(V5, &connect_v5(0x42, &password));
    let Ok(Some(Packet::Connect(c))) = accepted else {
        panic!("5.0 must accept a password without user name: {accepted:?}");
    };
    assert_eq!((c.username, c.password), (None, Some(b(b"pw"))));
}

/// MQTT 3.1.1 §3.1.3.2 / MQTT 5.0 §3.1.3.3: the Will Topic is a topic name: no wildcard
/// [MQTT-3.3.2-2] [MQTT-4.7.0-1], not empty [MQTT-4.7.3-1].
#[test]
fn will_topic_must_be_a_topic_name() {
    for topic in [&b"a/+"[..], b"#", b"a/#"] {
        let will = cat(&[&field(topic), &field(b"p")]);
        assert_rejects(
            V3_1_1,
            &connect_v4(0x06, &will),
            DecodeError::WildcardInTopicName,
            ReasonCode::TopicNameInvalid,
        );
        assert_rejects(
            V5,
            &connect_v5(0x06, &cat(&[&[0x00], &will])),
            DecodeError::WildcardInTopicName,
            ReasonCode::TopicNameInvalid,
        );
    }
    let empty = cat(&[&field(b""), &field(b"p")]);
    assert_rejects(
        V3_1_1,
        &connect_v4(0x06, &empty),
        DecodeError::EmptyTopicName,
        ReasonCode::ProtocolError,
    );
}

/// MQTT 5.0 §3.1.3.2.3: with Payload Format Indicator 1 the will payload is UTF-8; "The Server
/// MAY validate that the Will Message is of the format indicated, and if it is not send a
/// CONNACK with the Reason Code of 0x99 (Payload format invalid)". Indicator 0 allows any bytes.
#[test]
fn will_payload_not_utf8_with_format_indicator_1() {
    let will = |indicator: u8| {
        connect_v5(
            0x06,
            &cat(&[
                &[0x02, 0x01, indicator],
                &field(b"t"),
                &field(&[0xFF, 0xFE]),
            ]),
        )
    };
    assert_rejects(
        V5,
        &will(1),
        DecodeError::PayloadFormatInvalid,
        ReasonCode::PayloadFormatInvalid,
    );
    assert!(matches!(
        decode_all(V5, &will(0)),
        Ok(Some(Packet::Connect(_)))
    ));
}

/// MQTT 3.1.1 §3.2.2.1 / MQTT 5.0 §3.2.2.1 [MQTT-3.2.2-1]: bits 7-1 of the Connect Acknowledge
/// Flags are reserved and must be 0.
#[test]
fn connack_reserved_flags() {
    for flags in [0x02, 0x80, 0xFE, 0xFF] {
        assert_rejects(
            V3_1_1,
            &[0x20, 0x02, flags, 0x00],
            DecodeError::ReservedConnAckFlags,
            MALFORMED,
        );
        assert_rejects(
            V5,
            &[0x20, 0x03, flags, 0x00, 0x00],
            DecodeError::ReservedConnAckFlags,
            MALFORMED,
        );
    }
}

/// MQTT 3.1.1 §3.2.2.3 table 3.1: return codes 6-255 are reserved. MQTT 5.0 §3.2.2.2
/// [MQTT-3.2.2-8]: only Connect Reason Codes (`negative_reason_codes.rs` tries every byte).
#[test]
fn connack_invalid_return_codes() {
    for code in [0x06, 0x80, 0xFF] {
        assert_rejects(
            V3_1_1,
            &[0x20, 0x02, 0x00, code],
            DecodeError::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code,
            },
            ReasonCode::ProtocolError,
        );
    }
    // 0x01 (a SUBACK code), 0x04 and 0x8B (DISCONNECT codes), 0x8E, and undefined ones.
    for code in [0x01, 0x04, 0x8B, 0x8E, 0x03, 0xFF] {
        assert_rejects(
            V5,
            &[0x20, 0x03, 0x00, code, 0x00],
            DecodeError::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code,
            },
            ReasonCode::ProtocolError,
        );
    }
}
