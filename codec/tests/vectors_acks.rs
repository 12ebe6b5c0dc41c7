//! Byte-exact PUBACK, PUBREC, PUBREL and PUBCOMP vectors for MQTT 3.1/3.1.1 and 5.0, with the
//! short forms of MQTT 5 (§3.4.2.1: reason code and property length may be left out).

mod common;

use common::*;
use ringmq_codec::{Ack, Packet, PacketType, Properties, ReasonCode};

/// The packet of `kind` around `ack`.
fn ack(kind: PacketType, ack: Ack) -> Packet {
    match kind {
        PacketType::PubAck => Packet::PubAck(ack),
        PacketType::PubRec => Packet::PubRec(ack),
        PacketType::PubRel => Packet::PubRel(ack),
        PacketType::PubComp => Packet::PubComp(ack),
        other => panic!("{other:?} is not an ack"),
    }
}

/// The four acks with their first byte: PUBREL has the flags 0010 (MQTT 3.1.1 §3.6.1
/// [MQTT-3.6.1-1], MQTT 5.0 §3.6.1 [MQTT-3.6.1-1]); the others 0000.
const KINDS: [(PacketType, u8); 4] = [
    (PacketType::PubAck, 0x40),
    (PacketType::PubRec, 0x50),
    (PacketType::PubRel, 0x62),
    (PacketType::PubComp, 0x70),
];

/// MQTT 3.1.1 §3.4-§3.7: remaining length 2, then the packet identifier (§3.4.2 etc.).
#[test]
fn v3_packet_identifier_only() {
    for (kind, first) in KINDS {
        assert_vector_in(&V3, &[first, 0x02, 0x00, 0x0A], &ack(kind, Ack::new(10)));
        assert_vector_in(
            &V3,
            &[first, 0x02, 0xFF, 0xFF],
            &ack(kind, Ack::new(0xFFFF)),
        );
    }
}

/// MQTT 5.0 §3.4.2.1 (and §3.5.2.1, §3.6.2.1, §3.7.2.1): "The Reason Code and Property Length
/// can be omitted if the Reason Code is 0x00 (Success) and there are no Properties. In this case
/// the PUBACK has a Remaining Length of 2."
#[test]
fn v5_short_form_remaining_length_2() {
    for (kind, first) in KINDS {
        assert_vector(V5, &[first, 0x02, 0x00, 0x0A], &ack(kind, Ack::new(10)));
    }
}

/// MQTT 5.0 §3.4.2.2.1: "If the Remaining Length is less than 4 there is no Property Length and
/// the value of 0 is used": a reason code alone, remaining length 3.
#[test]
fn v5_reason_code_only_remaining_length_3() {
    // 0x10 "No matching subscribers", 0x91 "Packet Identifier in use", 0x92 "not found".
    let cases = [
        (PacketType::PubAck, 0x40, ReasonCode::NoMatchingSubscribers),
        (PacketType::PubRec, 0x50, ReasonCode::PacketIdentifierInUse),
        (
            PacketType::PubRel,
            0x62,
            ReasonCode::PacketIdentifierNotFound,
        ),
        (
            PacketType::PubComp,
            0x70,
            ReasonCode::PacketIdentifierNotFound,
        ),
    ];
    for (kind, first, reason) in cases {
        let expected = ack(
            kind,
            Ack {
                packet_id: 10,
                reason_code: reason,
                properties: None,
            },
        );
        assert_vector(V5, &[first, 0x03, 0x00, 0x0A, reason.as_u8()], &expected);
    }
}

/// MQTT 5.0 §3.4.2.1 (PUBACK Reason Codes) and §3.5.2.1 (PUBREC): every reason code,
/// in the three-byte form.
#[test]
fn v5_every_puback_and_pubrec_reason_code() {
    for code in [0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99] {
        let reason = ReasonCode::from_u8(code).unwrap();
        for (kind, first) in [(PacketType::PubAck, 0x40), (PacketType::PubRec, 0x50)] {
            let expected = ack(
                kind,
                Ack {
                    packet_id: 1,
                    reason_code: reason,
                    properties: None,
                },
            );
            assert_vector(V5, &[first, 0x03, 0x00, 0x01, code], &expected);
        }
    }
}

/// MQTT 5.0 §3.4.2.2.2: PUBACK 0x97 "Quota exceeded" with a Reason String.
#[test]
fn v5_puback_with_reason_string() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x40, 0x0C,                                     // PUBACK, remaining length 12
        0x00, 0x0A,                                     // packet identifier 10
        0x97,                                           // quota exceeded
        0x08,                                           // property length 8
        0x1F, 0x00, 0x05, b'q', b'u', b'o', b't', b'a', // reason string "quota"
    ];
    let expected = Packet::PubAck(Ack {
        packet_id: 10,
        reason_code: ReasonCode::QuotaExceeded,
        properties: props(Properties {
            reason_string: Some(s("quota")),
            ..Properties::default()
        }),
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 5.0 §3.5.2.2: PUBREC 0x80 with a Reason String and two User Properties.
#[test]
fn v5_pubrec_with_reason_string_and_user_properties() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x50, 0x18,                               // PUBREC, remaining length 24
        0x00, 0x0B,                               // packet identifier 11
        0x80,                                     // unspecified error
        0x14,                                     // property length 20
        0x1F, 0x00, 0x03, b'e', b'r', b'r',       // reason string "err"
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k=v
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'w', // user property k=w
    ];
    let expected = Packet::PubRec(Ack {
        packet_id: 11,
        reason_code: ReasonCode::UnspecifiedError,
        properties: props(Properties {
            reason_string: Some(s("err")),
            user_properties: vec![(s("k"), s("v")), (s("k"), s("w"))],
            ..Properties::default()
        }),
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 5.0 §3.6.2: PUBREL Success carrying properties, so the reason code byte must be there.
#[test]
fn v5_pubrel_success_with_properties() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x62, 0x0F,                               // PUBREL, remaining length 15
        0x00, 0x01,                               // packet identifier 1
        0x00,                                     // success
        0x0B,                                     // property length 11
        0x1F, 0x00, 0x01, b'r',                   // reason string "r"
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k=v
    ];
    let expected = Packet::PubRel(Ack {
        packet_id: 1,
        reason_code: ReasonCode::Success,
        properties: props(Properties {
            reason_string: Some(s("r")),
            user_properties: vec![(s("k"), s("v"))],
            ..Properties::default()
        }),
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 5.0 §3.7.2.1 (0x92 "Packet Identifier not found") and §3.7.2.2.2.
#[test]
fn v5_pubcomp_not_found_with_reason_string() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x70, 0x0B,                               // PUBCOMP, remaining length 11
        0x00, 0x01,                               // packet identifier 1
        0x92,                                     // packet identifier not found
        0x07,                                     // property length 7
        0x1F, 0x00, 0x04, b'g', b'o', b'n', b'e', // reason string "gone"
    ];
    let expected = Packet::PubComp(Ack {
        packet_id: 1,
        reason_code: ReasonCode::PacketIdentifierNotFound,
        properties: props(Properties {
            reason_string: Some(s("gone")),
            ..Properties::default()
        }),
    });
    assert_vector(V5, bytes, &expected);
}

/// Longer forms a peer may send for a plain success: the reason code 0x00 written out
/// (remaining length 3), and a property length of 0 written out (remaining length 4). Both
/// decode to the plain ack, which the encoder writes in the short form.
#[test]
fn v5_non_canonical_success_forms_decode() {
    for (kind, first) in KINDS {
        let expected = ack(kind, Ack::new(10));
        assert_decodes(V5, &[first, 0x03, 0x00, 0x0A, 0x00], &expected);
        assert_decodes(V5, &[first, 0x04, 0x00, 0x0A, 0x00, 0x00], &expected);
        assert_encodes(V5, &expected, &[first, 0x02, 0x00, 0x0A]);
    }
}

/// MQTT 3.x acks have no reason code or properties: the encoder leaves them out.
#[test]
fn v3_encoding_leaves_v5_data_out() {
    for (kind, first) in KINDS {
        let packet = ack(
            kind,
            Ack {
                packet_id: 7,
                reason_code: ReasonCode::PacketIdentifierNotFound,
                properties: props(Properties {
                    reason_string: Some(s("dropped")),
                    ..Properties::default()
                }),
            },
        );
        assert_encodes(V3_1_1, &packet, &[first, 0x02, 0x00, 0x07]);
    }
}
