//! Byte-exact CONNACK vectors for MQTT 3.1, 3.1.1 and 5.0.

mod common;

use common::*;
use ringmq_codec::{ConnAck, Packet, Properties, QoS, ReasonCode};

fn connack(session_present: bool, reason_code: ReasonCode) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        reason_code,
        properties: None,
    })
}

/// MQTT 3.1.1 §3.2.1: fixed header 0x20, remaining length 2; §3.2.2.3 return code
/// 0x00 "Connection Accepted". MQTT 3.1 has the same two bytes (byte 1 reserved there).
#[test]
fn v3_accepted() {
    assert_vector_in(
        &V3,
        &[0x20, 0x02, 0x00, 0x00],
        &connack(false, ReasonCode::Success),
    );
}

/// MQTT 3.1.1 §3.2.2.2: Session Present is bit 0 of the acknowledge flags.
#[test]
fn v3_1_1_session_present() {
    assert_vector(
        V3_1_1,
        &[0x20, 0x02, 0x01, 0x00],
        &connack(true, ReasonCode::Success),
    );
}

/// MQTT 3.1.1 §3.2.2.3, table 3.1: return codes 1 to 5, which the model holds as the MQTT 5
/// reason codes of the same meaning.
#[test]
fn v3_refused_return_codes_of_table_3_1() {
    let table = [
        (0x01, ReasonCode::UnsupportedProtocolVersion), // unacceptable protocol version
        (0x02, ReasonCode::ClientIdentifierNotValid),   // identifier rejected
        (0x03, ReasonCode::ServerUnavailable),          // server unavailable
        (0x04, ReasonCode::BadUserNameOrPassword),      // bad user name or password
        (0x05, ReasonCode::NotAuthorized),              // not authorized
    ];
    for (code, reason) in table {
        assert_vector_in(&V3, &[0x20, 0x02, 0x00, code], &connack(false, reason));
    }
}

/// MQTT 5.0 reason codes have no 3.x return code of their own: the encoder writes the nearest
/// one of table 3.1 (an encode-only check: the return code decodes to its own reason).
#[test]
fn v3_encoding_of_v5_only_reason_codes() {
    let nearest = [
        (ReasonCode::Banned, 0x05),
        (ReasonCode::BadAuthenticationMethod, 0x04),
        (ReasonCode::ServerBusy, 0x03),
        (ReasonCode::UnspecifiedError, 0x03),
    ];
    for (reason, code) in nearest {
        assert_encodes(V3_1_1, &connack(false, reason), &[0x20, 0x02, 0x00, code]);
    }
}

/// MQTT 5.0 §3.2.2.1 (acknowledge flags), §3.2.2.2 (0x00 Success), §3.2.2.3.1 (property length
/// 0): remaining length 3.
#[test]
fn v5_success_without_properties() {
    assert_vector(
        V5,
        &[0x20, 0x03, 0x00, 0x00, 0x00],
        &connack(false, ReasonCode::Success),
    );
    assert_vector(
        V5,
        &[0x20, 0x03, 0x01, 0x00, 0x00],
        &connack(true, ReasonCode::Success),
    );
}

/// MQTT 5.0 §3.2.2.2 (Connect Reason Code): every Connect Reason Code round-trips.
#[test]
fn v5_every_connect_reason_code() {
    let codes = [
        0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
        0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
    ];
    for code in codes {
        let reason = ReasonCode::from_u8(code).unwrap();
        assert_vector(V5, &[0x20, 0x03, 0x00, code, 0x00], &connack(false, reason));
    }
}

/// MQTT 5.0 §3.2.2.3: every CONNACK property (0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F,
/// 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A), once each in identifier order.
#[test]
fn v5_all_connack_properties() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x20, 0x4E,                                     // CONNACK, remaining length 78
        0x00,                                           // acknowledge flags
        0x00,                                           // reason code Success
        0x4B,                                           // property length 75
        0x11, 0x00, 0x00, 0x00, 0x78,                   // session expiry interval 120
        0x12, 0x00, 0x06, b'a', b'u', b't', b'o', b'-', // assigned client identifier
              b'1',                                     //   "auto-1"
        0x13, 0x00, 0x1E,                               // server keep alive 30
        0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', // authentication method "SCRAM"
        0x16, 0x00, 0x01, 0x01,                         // authentication data 01
        0x1A, 0x00, 0x02, b'r', b'i',                   // response information "ri"
        0x1C, 0x00, 0x05, b'o', b't', b'h', b'e', b'r', // server reference "other"
        0x1F, 0x00, 0x02, b'o', b'k',                   // reason string "ok"
        0x21, 0x00, 0x64,                               // receive maximum 100
        0x22, 0x00, 0x10,                               // topic alias maximum 16
        0x24, 0x01,                                     // maximum QoS 1
        0x25, 0x00,                                     // retain available 0
        0x26, 0x00, 0x01, b'x', 0x00, 0x01, b'y',       // user property x=y
        0x27, 0x00, 0x01, 0x00, 0x00,                   // maximum packet size 65536
        0x28, 0x01,                                     // wildcard subscription available 1
        0x29, 0x00,                                     // subscription identifiers available 0
        0x2A, 0x01,                                     // shared subscription available 1
    ];
    let expected = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: ReasonCode::Success,
        properties: props(Properties {
            session_expiry_interval: Some(120),
            assigned_client_identifier: Some(s("auto-1")),
            server_keep_alive: Some(30),
            authentication_method: Some(s("SCRAM")),
            authentication_data: Some(b(&[1])),
            response_information: Some(s("ri")),
            server_reference: Some(s("other")),
            reason_string: Some(s("ok")),
            receive_maximum: Some(100),
            topic_alias_maximum: Some(16),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            user_properties: vec![(s("x"), s("y"))],
            maximum_packet_size: Some(65536),
            wildcard_subscription_available: Some(true),
            subscription_identifier_available: Some(false),
            shared_subscription_available: Some(true),
            ..Properties::default()
        }),
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 5.0 §3.2.2.2 0x9C "Use another server" with §3.2.2.3.16 Server Reference and
/// §3.2.2.3.9 Reason String; §4.11 (server redirection).
#[test]
fn v5_refused_with_server_reference() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x20, 0x11,                                     // CONNACK, remaining length 17
        0x00,                                           // no session present [MQTT-3.2.2-6]
        0x9C,                                           // use another server
        0x0E,                                           // property length 14
        0x1C, 0x00, 0x05, b'h', b'o', b's', b't', b'2', // server reference "host2"
        0x1F, 0x00, 0x03, b'b', b'y', b'e',             // reason string "bye"
    ];
    let expected = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: ReasonCode::UseAnotherServer,
        properties: props(Properties {
            server_reference: Some(s("host2")),
            reason_string: Some(s("bye")),
            ..Properties::default()
        }),
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 3.x has no CONNACK properties: the encoder leaves MQTT 5 data out.
#[test]
fn v3_encoding_leaves_properties_out() {
    let packet = Packet::ConnAck(ConnAck {
        session_present: true,
        reason_code: ReasonCode::Success,
        properties: props(Properties {
            reason_string: Some(s("dropped")),
            ..Properties::default()
        }),
    });
    assert_encodes(V3_1_1, &packet, &[0x20, 0x02, 0x01, 0x00]);
}
