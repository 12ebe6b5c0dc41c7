//! Byte-exact PINGREQ, PINGRESP, DISCONNECT and AUTH vectors, including the MQTT 5 short forms
//! (DISCONNECT and AUTH with remaining length 0).

mod common;

use common::*;
use ringmq_codec::{Auth, Disconnect, Packet, Properties, ReasonCode};

/// MQTT 3.1.1 §3.12 / MQTT 5.0 §3.12: PINGREQ is 0xC0 0x00 ("no Variable Header", "no
/// Payload"); §3.13: PINGRESP is 0xD0 0x00. Identical in every version.
#[test]
fn pingreq_and_pingresp() {
    assert_vector_in(&ALL, &[0xC0, 0x00], &Packet::PingReq);
    assert_vector_in(&ALL, &[0xD0, 0x00], &Packet::PingResp);
}

/// MQTT 3.1.1 §3.14: DISCONNECT is 0xE0 0x00, no variable header or payload.
#[test]
fn v3_disconnect() {
    assert_vector_in(&V3, &[0xE0, 0x00], &Packet::Disconnect(Disconnect::NORMAL));
}

/// MQTT 5.0 §3.14.2.1: "The Reason Code and Property Length can be omitted if the Reason Code
/// is 0x00 (Normal disconnection) and there are no Properties. In this case the DISCONNECT has a
/// Remaining Length of 0."
#[test]
fn v5_disconnect_remaining_length_0() {
    assert_vector(V5, &[0xE0, 0x00], &Packet::Disconnect(Disconnect::NORMAL));
}

/// MQTT 5.0 §3.14.2.2.1: "If the Remaining Length is less than 2, a value of 0 is used" for the
/// property length: a reason code alone. 0x04 "Disconnect with Will Message" (§3.14.2.1).
#[test]
fn v5_disconnect_reason_code_only() {
    assert_vector(
        V5,
        &[0xE0, 0x01, 0x04],
        &Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWillMessage)),
    );
}

/// MQTT 5.0 §3.14.2.1: every Disconnect Reason Code, in the one-byte form.
#[test]
fn v5_disconnect_every_reason_code() {
    let codes = [
        0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
        0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
    ];
    for code in codes {
        let reason = ReasonCode::from_u8(code).unwrap();
        assert_vector(
            V5,
            &[0xE0, 0x01, code],
            &Packet::Disconnect(Disconnect::new(reason)),
        );
    }
}

/// MQTT 5.0 §3.14.2.2.2: a client's DISCONNECT changing the Session Expiry Interval to 3600 s.
#[test]
fn v5_disconnect_with_session_expiry() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0xE0, 0x07,                   // DISCONNECT, remaining length 7
        0x00,                         // normal disconnection
        0x05,                         // property length 5
        0x11, 0x00, 0x00, 0x0E, 0x10, // session expiry interval 3600
    ];
    let expected = Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::NORMAL_DISCONNECTION,
        properties: props(Properties {
            session_expiry_interval: Some(3600),
            ..Properties::default()
        }),
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 5.0 §3.14.2.2.3-§3.14.2.2.5: a server's DISCONNECT 0x9C "Use another server" with a
/// Reason String, a User Property and a Server Reference (§4.11).
#[test]
fn v5_disconnect_with_server_reference() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0xE0, 0x18,                                     // DISCONNECT, remaining length 24
        0x9C,                                           // use another server
        0x16,                                           // property length 22
        0x1C, 0x00, 0x05, b'h', b'o', b's', b't', b'2', // server reference "host2"
        0x1F, 0x00, 0x04, b'm', b'o', b'v', b'e',       // reason string "move"
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',       // user property k=v
    ];
    let expected = Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::UseAnotherServer,
        properties: props(Properties {
            server_reference: Some(s("host2")),
            reason_string: Some(s("move")),
            user_properties: vec![(s("k"), s("v"))],
            ..Properties::default()
        }),
    });
    assert_vector(V5, bytes, &expected);
}

/// A normal DISCONNECT with its reason code and an empty property block written out decodes
/// like the short form, which is what the encoder writes back.
#[test]
fn v5_disconnect_non_canonical_forms() {
    let normal = Packet::Disconnect(Disconnect::NORMAL);
    assert_decodes(V5, &[0xE0, 0x01, 0x00], &normal);
    assert_decodes(V5, &[0xE0, 0x02, 0x00, 0x00], &normal);
    assert_encodes(V5, &normal, &[0xE0, 0x00]);
}

/// MQTT 3.x DISCONNECT has no body: the encoder leaves MQTT 5 data out.
#[test]
fn v3_disconnect_encoding_leaves_v5_data_out() {
    let packet = Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::ServerShuttingDown,
        properties: props(Properties {
            reason_string: Some(s("bye")),
            ..Properties::default()
        }),
    });
    assert_encodes(V3_1_1, &packet, &[0xE0, 0x00]);
}

/// MQTT 5.0 §3.15.2.1: "The Reason Code and Property Length can be omitted if the Reason Code
/// is 0x00 (Success) and there are no Properties. In this case the AUTH has a Remaining Length
/// of 0."
#[test]
fn v5_auth_remaining_length_0() {
    let expected = Packet::Auth(Auth {
        reason_code: ReasonCode::Success,
        properties: None,
    });
    assert_vector(V5, &[0xF0, 0x00], &expected);
}

/// MQTT 5.0 §3.15.2.1: 0x19 "Re-authenticate" with no property length (§3.15.2.2.1: "If the
/// Remaining Length is less than 2, a value of 0 is used").
#[test]
fn v5_auth_reason_code_only() {
    let expected = Packet::Auth(Auth {
        reason_code: ReasonCode::ReAuthenticate,
        properties: None,
    });
    assert_vector(V5, &[0xF0, 0x01, 0x19], &expected);
}

/// MQTT 5.0 §3.15.2.2.2 (Authentication Method) and §3.15.2.2.3 (Authentication Data), with
/// 0x18 "Continue authentication" (§4.12 [MQTT-4.12.0-2]).
#[test]
fn v5_auth_with_method_and_data() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0xF0, 0x11,                                     // AUTH, remaining length 17
        0x18,                                           // continue authentication
        0x0F,                                           // property length 15
        0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', // authentication method "SCRAM"
        0x16, 0x00, 0x04, 0x01, 0x02, 0x03, 0x04,       // authentication data 01 02 03 04
    ];
    let expected = Packet::Auth(Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: props(Properties {
            authentication_method: Some(s("SCRAM")),
            authentication_data: Some(b(&[1, 2, 3, 4])),
            ..Properties::default()
        }),
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 5.0 §3.15.2.2.4 (Reason String) and §3.15.2.2.5 (User Property) on a re-authentication.
#[test]
fn v5_auth_with_reason_string_and_user_property() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0xF0, 0x16,                                     // AUTH, remaining length 22
        0x19,                                           // re-authenticate
        0x14,                                           // property length 20
        0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', // authentication method "SCRAM"
        0x1F, 0x00, 0x02, b'r', b'e',                   // reason string "re"
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',       // user property k=v
    ];
    let expected = Packet::Auth(Auth {
        reason_code: ReasonCode::ReAuthenticate,
        properties: props(Properties {
            authentication_method: Some(s("SCRAM")),
            reason_string: Some(s("re")),
            user_properties: vec![(s("k"), s("v"))],
            ..Properties::default()
        }),
    });
    assert_vector(V5, bytes, &expected);
}
