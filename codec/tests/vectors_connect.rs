//! Byte-exact CONNECT vectors for MQTT 3.1 (`MQIsdp`, level 3), 3.1.1 and 5.0, worked out by
//! hand from the specifications. Each is checked in both directions (see `common::assert_vector`).

mod common;

use common::*;
use ringmq_codec::{Connect, Packet, Properties, QoS, Will};

fn connect(c: Connect) -> Packet {
    Packet::Connect(Box::new(c))
}

/// MQTT 3.1 (IBM/Eurotech 2010 specification, CONNECT "Variable header"): protocol name
/// `MQIsdp`, protocol version 3, Clean Session, keep alive 60 s, client id "c1".
#[test]
fn v3_1_minimal() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x10, 0x10,                                     // CONNECT, remaining length 16
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name "MQIsdp"
        0x03,                                           // protocol version 3
        0x02,                                           // flags: Clean Session
        0x00, 0x3C,                                     // keep alive 60
        0x00, 0x02, b'c', b'1',                         // client identifier "c1"
    ];
    let expected = connect(Connect {
        protocol: V3_1,
        clean_start: true,
        keep_alive: 60,
        properties: None,
        client_id: s("c1"),
        will: None,
        username: None,
        password: None,
    });
    // CONNECT carries its own version: the connection's version in the options is irrelevant.
    assert_vector_in(&ALL, bytes, &expected);
}

/// MQTT 3.1 CONNECT with every flag: will (QoS 1, retained), user name and password, in the
/// payload order client id, will topic, will message, user name, password (3.1 "Payload").
#[test]
fn v3_1_will_username_password() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x10, 0x1E,                                     // CONNECT, remaining length 30
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name "MQIsdp"
        0x03,                                           // protocol version 3
        0xEE,                                           // user, password, will retain,
                                                        // will QoS 01, will, clean session
        0x00, 0x0A,                                     // keep alive 10
        0x00, 0x02, b'i', b'd',                         // client identifier "id"
        0x00, 0x01, b'w',                               // will topic "w"
        0x00, 0x03, b'b', b'y', b'e',                   // will message "bye"
        0x00, 0x01, b'u',                               // user name "u"
        0x00, 0x01, b'p',                               // password "p"
    ];
    let expected = connect(Connect {
        protocol: V3_1,
        clean_start: true,
        keep_alive: 10,
        properties: None,
        client_id: s("id"),
        will: Some(Will {
            topic: s("w"),
            payload: b(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: None,
        }),
        username: Some(s("u")),
        password: Some(b(b"p")),
    });
    assert_vector(V3_1, bytes, &expected);
}

/// MQTT 3.1.1 §3.1.2.1 (protocol name "MQTT"), §3.1.2.2 (level 4 [MQTT-3.1.2-2]), §3.1.2.4
/// (Clean Session), §3.1.2.10 (keep alive), §3.1.3.1 (client identifier).
#[test]
fn v3_1_1_minimal() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x10, 0x0E,                         // CONNECT, remaining length 14
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
        0x04,                               // protocol level 4
        0x02,                               // flags: Clean Session
        0x00, 0x3C,                         // keep alive 60
        0x00, 0x02, b'c', b'1',             // client identifier "c1"
    ];
    let expected = connect(Connect {
        protocol: V3_1_1,
        clean_start: true,
        keep_alive: 60,
        properties: None,
        client_id: s("c1"),
        will: None,
        username: None,
        password: None,
    });
    assert_vector_in(&ALL, bytes, &expected);
}

/// MQTT 3.1.1 §3.1.2.11 (figure 3.6), the variable header non-normative example: flags 0xCE
/// (user name, password, will QoS 1, will flag, clean session), keep alive 10; payload in the
/// order of [MQTT-3.1.3-1]. The will message is binary data and need not be UTF-8 (§3.1.3.3).
#[test]
fn v3_1_1_spec_example_flags_ce() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x10, 0x29,                                     // CONNECT, remaining length 41
        0x00, 0x04, b'M', b'Q', b'T', b'T',             // protocol name
        0x04,                                           // protocol level 4
        0xCE,                                           // 1100 1110
        0x00, 0x0A,                                     // keep alive 10
        0x00, 0x06, b'c', b'l', b'i', b'e', b'n', b't', // client identifier
        0x00, 0x06, b'w', b'i', b'l', b'l', b'/', b't', // will topic
        0x00, 0x02, 0x00, 0xFF,                         // will message (binary)
        0x00, 0x04, b'u', b's', b'e', b'r',             // user name
        0x00, 0x03, 0x01, 0x02, 0x03,                   // password (binary)
    ];
    let expected = connect(Connect {
        protocol: V3_1_1,
        clean_start: true,
        keep_alive: 10,
        properties: None,
        client_id: s("client"),
        will: Some(Will {
            topic: s("will/t"),
            payload: b(&[0x00, 0xFF]),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
        }),
        username: Some(s("user")),
        password: Some(b(&[1, 2, 3])),
    });
    assert_vector(V3_1_1, bytes, &expected);
}

/// MQTT 3.1.1 §3.1.2.6/§3.1.2.7 (will QoS 2, will retain), §3.1.2.8 (user name without
/// password), §3.1.3.3 (an empty will message), keep alive at its maximum of 65,535 s, Clean
/// Session 0.
#[test]
fn v3_1_1_will_qos2_retain_username_only() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x10, 0x15,                         // CONNECT, remaining length 21
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x04,                               // protocol level 4
        0xB4,                               // 1011 0100: user, will retain, will QoS 2, will
        0xFF, 0xFF,                         // keep alive 65535
        0x00, 0x01, b'x',                   // client identifier "x"
        0x00, 0x01, b't',                   // will topic "t"
        0x00, 0x00,                         // will message: zero bytes
        0x00, 0x01, b'u',                   // user name "u"
    ];
    let expected = connect(Connect {
        protocol: V3_1_1,
        clean_start: false,
        keep_alive: u16::MAX,
        properties: None,
        client_id: s("x"),
        will: Some(Will {
            topic: s("t"),
            payload: b(b""),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: None,
        }),
        username: Some(s("u")),
        password: None,
    });
    assert_vector(V3_1_1, bytes, &expected);
}

/// MQTT 3.1.1 §3.1.3.1: a zero-byte client identifier with Clean Session 1 [MQTT-3.1.3-7]
/// ([MQTT-3.1.3-6]: the server may accept it); keep alive 0 turns keep alive off (§3.1.2.10).
#[test]
fn v3_1_1_empty_client_id() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x10, 0x0C,                         // CONNECT, remaining length 12
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x04, 0x02,                         // level 4, Clean Session
        0x00, 0x00,                         // keep alive 0
        0x00, 0x00,                         // client identifier ""
    ];
    let expected = connect(Connect {
        protocol: V3_1_1,
        clean_start: true,
        keep_alive: 0,
        properties: None,
        client_id: s(""),
        will: None,
        username: None,
        password: None,
    });
    assert_vector(V3_1_1, bytes, &expected);
}

/// MQTT 5.0 §3.1.2.2 (protocol version 5), §3.1.2.11.1 (a property length of 0 when there are
/// no properties, [MQTT-2.2.2-1]).
#[test]
fn v5_minimal() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x10, 0x0F,                         // CONNECT, remaining length 15
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x05,                               // protocol version 5
        0x02,                               // Clean Start
        0x00, 0x3C,                         // keep alive 60
        0x00,                               // property length 0
        0x00, 0x02, b'c', b'1',             // client identifier "c1"
    ];
    let expected = connect(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        properties: None,
        client_id: s("c1"),
        will: None,
        username: None,
        password: None,
    });
    assert_vector_in(&ALL, bytes, &expected);
}

/// MQTT 5.0 §3.1.2.12, the variable header non-normative example: flags 0xCE, keep alive 10,
/// properties of length 5 holding Session Expiry Interval (0x11) = 10; then a payload with an
/// empty will property block (§3.1.3.2.1).
#[test]
fn v5_spec_example_flags_ce() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x10, 0x20,                         // CONNECT, remaining length 32
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x05,                               // protocol version 5
        0xCE,                               // user, password, will QoS 1, will, clean start
        0x00, 0x0A,                         // keep alive 10
        0x05,                               // property length 5
        0x11, 0x00, 0x00, 0x00, 0x0A,       // session expiry interval 10
        0x00, 0x01, b'c',                   // client identifier "c"
        0x00,                               // will property length 0
        0x00, 0x01, b't',                   // will topic "t"
        0x00, 0x01, b'p',                   // will payload "p"
        0x00, 0x01, b'u',                   // user name "u"
        0x00, 0x01, b'p',                   // password "p"
    ];
    let expected = connect(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 10,
        properties: props(Properties {
            session_expiry_interval: Some(10),
            ..Properties::default()
        }),
        client_id: s("c"),
        will: Some(Will {
            topic: s("t"),
            payload: b(b"p"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
        }),
        username: Some(s("u")),
        password: Some(b(b"p")),
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 5.0 §3.1.2.11 (CONNECT properties 0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26,
/// 0x27) and §3.1.3.2 (will properties 0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26), each once and
/// in identifier order. The remaining length of 129 takes two bytes (§1.5.5, table 1-1).
#[test]
fn v5_all_connect_and_will_properties() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x10, 0x81, 0x01,                               // CONNECT, remaining length 129
        0x00, 0x04, b'M', b'Q', b'T', b'T',             // protocol name
        0x05, 0xCE, 0x00, 0x0A,                         // version 5, flags, keep alive 10
        0x28,                                           // property length 40
        0x11, 0x00, 0x00, 0x00, 0x0A,                   // session expiry interval 10
        0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', // authentication method "SCRAM"
        0x16, 0x00, 0x02, 0xDE, 0xAD,                   // authentication data DE AD
        0x17, 0x00,                                     // request problem information 0
        0x19, 0x01,                                     // request response information 1
        0x21, 0x00, 0x14,                               // receive maximum 20
        0x22, 0x00, 0x0A,                               // topic alias maximum 10
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',       // user property k=v
        0x27, 0x00, 0x00, 0x04, 0x00,                   // maximum packet size 1024
        0x00, 0x06, b'c', b'l', b'i', b'e', b'n', b't', // client identifier "client"
        0x2C,                                           // will property length 44
        0x01, 0x01,                                     // payload format indicator 1
        0x02, 0x00, 0x00, 0x0E, 0x10,                   // message expiry interval 3600
        0x03, 0x00, 0x0A, b't', b'e', b'x', b't', b'/', // content type "text/plain"
              b'p', b'l', b'a', b'i', b'n',
        0x08, 0x00, 0x04, b'r', b'e', b's', b'p',       // response topic "resp"
        0x09, 0x00, 0x02, 0x01, 0x02,                   // correlation data 01 02
        0x18, 0x00, 0x00, 0x00, 0x05,                   // will delay interval 5
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b',       // user property a=b
        0x00, 0x06, b'w', b'i', b'l', b'l', b'/', b't', // will topic "will/t"
        0x00, 0x04, b'g', b'o', b'n', b'e',             // will payload "gone" (UTF-8)
        0x00, 0x04, b'u', b's', b'e', b'r',             // user name "user"
        0x00, 0x03, 0x01, 0x02, 0x03,                   // password 01 02 03
    ];
    let expected = connect(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 10,
        properties: props(Properties {
            session_expiry_interval: Some(10),
            authentication_method: Some(s("SCRAM")),
            authentication_data: Some(b(&[0xDE, 0xAD])),
            request_problem_information: Some(false),
            request_response_information: Some(true),
            receive_maximum: Some(20),
            topic_alias_maximum: Some(10),
            user_properties: vec![(s("k"), s("v"))],
            maximum_packet_size: Some(1024),
            ..Properties::default()
        }),
        client_id: s("client"),
        will: Some(Will {
            topic: s("will/t"),
            payload: b(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: props(Properties {
                payload_format_indicator: Some(true),
                message_expiry_interval: Some(3600),
                content_type: Some(s("text/plain")),
                response_topic: Some(s("resp")),
                correlation_data: Some(b(&[1, 2])),
                will_delay_interval: Some(5),
                user_properties: vec![(s("a"), s("b"))],
                ..Properties::default()
            }),
        }),
        username: Some(s("user")),
        password: Some(b(&[1, 2, 3])),
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 5.0 §3.1.2.9: "This version of the protocol allows the sending of a Password with no
/// User Name, where MQTT v3.1.1 did not" (flags 0x42: password, clean start). Also §3.1.2.11.8:
/// the User Property may appear more than once, and order is kept.
#[test]
fn v5_password_without_username_and_repeated_user_property() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x10, 0x20,                               // CONNECT, remaining length 32
        0x00, 0x04, b'M', b'Q', b'T', b'T',       // protocol name
        0x05, 0x42, 0x00, 0x3C,                   // version 5, password + clean start, 60
        0x0E,                                     // property length 14
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'2', // user property k=2
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'1', // user property k=1
        0x00, 0x01, b'c',                         // client identifier "c"
        0x00, 0x02, b'p', b'w',                   // password "pw"
    ];
    let expected = connect(Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        properties: props(Properties {
            user_properties: vec![(s("k"), s("2")), (s("k"), s("1"))],
            ..Properties::default()
        }),
        client_id: s("c"),
        will: None,
        username: None,
        password: Some(b(b"pw")),
    });
    assert_vector(V5, bytes, &expected);
}
