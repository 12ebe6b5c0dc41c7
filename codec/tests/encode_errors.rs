//! Encode errors: values the model can hold but the wire format cannot carry. On an error
//! nothing is written.

mod common;

use bytes::Bytes;
use common::*;
use ringmq_codec::{
    Ack, Auth, ConnAck, Connect, EncodeError, Packet, PacketType, Properties, ProtocolVersion,
    Publish, QoS, ReasonCode, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck,
    Unsubscribe, Utf8Bytes, Will, VARINT_MAX,
};

/// Encoding fails with `expected` and leaves the buffer untouched.
#[track_caller]
fn assert_encode_error(version: ProtocolVersion, packet: &Packet, expected: EncodeError) {
    let mut out = Vec::new();
    assert_eq!(
        packet.encode(version, &mut out),
        Err(expected),
        "{packet:?}"
    );
    assert!(
        out.is_empty(),
        "{} bytes written before the error",
        out.len()
    );
}

fn connect(password: Option<Bytes>, username: Option<Utf8Bytes>) -> Connect {
    Connect {
        protocol: V3_1_1,
        clean_start: true,
        keep_alive: 0,
        properties: None,
        client_id: s("c"),
        will: None,
        username,
        password,
    }
}

/// MQTT 3.1.1 §2.3.1 [MQTT-2.3.1-1] / MQTT 5.0 §2.2.1 [MQTT-2.2.1-3]: packet identifiers are
/// non-zero where present.
#[test]
fn zero_packet_id() {
    let filter = SubscribeFilter {
        filter: s("t"),
        options: SubscriptionOptions::default(),
    };
    let packets = [
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: s("t"),
            ..Publish::default()
        }),
        Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            topic: s("t"),
            ..Publish::default()
        }),
        Packet::PubAck(Ack::new(0)),
        Packet::PubRec(Ack::new(0)),
        Packet::PubRel(Ack::new(0)),
        Packet::PubComp(Ack::new(0)),
        Packet::Subscribe(Subscribe {
            packet_id: 0,
            properties: None,
            filters: vec![filter],
        }),
        Packet::SubAck(SubAck {
            packet_id: 0,
            properties: None,
            return_codes: vec![ReasonCode::GrantedQoS1],
        }),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 0,
            properties: None,
            filters: vec![s("t")],
        }),
        Packet::UnsubAck(UnsubAck {
            packet_id: 0,
            properties: None,
            reason_codes: vec![ReasonCode::Success],
        }),
    ];
    for packet in &packets {
        for version in ALL {
            assert_encode_error(version, packet, EncodeError::ZeroPacketId);
        }
    }
    // QoS 0 has no packet identifier [MQTT-2.2.1-2]: 0 is the expected value there.
    let qos0 = Packet::Publish(Publish {
        topic: s("t"),
        ..Publish::default()
    });
    assert_encodes(V5, &qos0, &[0x30, 0x04, 0x00, 0x01, b't', 0x00]);
}

/// MQTT 3.1.1 §2.2.1 table 2.1: type 15 is reserved; AUTH exists only in 5.0 (§3.15).
#[test]
fn auth_before_mqtt_5() {
    let auth = Packet::Auth(Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: None,
    });
    for version in V3 {
        assert_encode_error(version, &auth, EncodeError::NotInVersion(PacketType::Auth));
    }
    assert_encodes(V5, &auth, &[0xF0, 0x01, 0x18]);
}

/// MQTT 5.0 §1.5.6 (3.1.1 §3.1.3.3, §3.1.3.5): binary data has a two-byte length, so at
/// most 65,535 bytes. The will payload, the password, correlation data and authentication data
/// are binary data.
#[test]
fn binary_field_too_long() {
    let max = Bytes::from(vec![0x5A; 65_535]);
    let over = Bytes::from(vec![0x5A; 65_536]);
    let too_long = EncodeError::BinaryTooLong(65_536);

    let password = |p: &Bytes| Packet::Connect(Box::new(connect(Some(p.clone()), Some(s("u")))));
    assert_encode_error(V3_1_1, &password(&over), too_long);
    assert_eq!(
        encode(V3_1_1, &password(&max)).len(),
        // fixed header 1 + 3, variable header 10, client id 3, user name 3, password 2 + 65535
        1 + 3 + 10 + 3 + 3 + 2 + 65_535
    );

    let will = |p: &Bytes| {
        let mut c = connect(None, None);
        c.will = Some(Will {
            topic: s("w"),
            payload: p.clone(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
        });
        Packet::Connect(Box::new(c))
    };
    assert_encode_error(V3_1_1, &will(&over), too_long);
    assert!(Packet::encode(&will(&max), V3_1_1, &mut Vec::new()).is_ok());

    let correlation = Packet::Publish(Publish {
        topic: s("t"),
        properties: props(Properties {
            correlation_data: Some(over.clone()),
            ..Properties::default()
        }),
        ..Publish::default()
    });
    assert_encode_error(V5, &correlation, too_long);

    let auth = Packet::Auth(Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: props(Properties {
            authentication_method: Some(s("m")),
            authentication_data: Some(over),
            ..Properties::default()
        }),
    });
    assert_encode_error(V5, &auth, too_long);
}

/// MQTT 5.0 §3.3.2.3.8 / §3.8.2.1.2: a Subscription Identifier is 1 to 268,435,455 ("It is a
/// Protocol Error if the Subscription Identifier has a value of 0").
#[test]
fn subscription_identifier_out_of_range() {
    for id in [0, VARINT_MAX + 1, u32::MAX] {
        let p = props(Properties {
            subscription_identifiers: vec![1, id],
            ..Properties::default()
        });
        let publish = Packet::Publish(Publish {
            topic: s("t"),
            properties: p.clone(),
            ..Publish::default()
        });
        let subscribe = Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: p,
            filters: vec![SubscribeFilter {
                filter: s("t"),
                options: SubscriptionOptions::default(),
            }],
        });
        for packet in [publish, subscribe] {
            assert_encode_error(
                V5,
                &packet,
                EncodeError::ValueOutOfRange("subscription identifier"),
            );
        }
    }
}

/// Other property values the receiver would refuse: Maximum QoS 2 (§3.2.2.3.4), Receive
/// Maximum 0 (§3.2.2.3.3), Topic Alias 0 ([MQTT-3.3.2-8]), Maximum Packet Size 0 (§3.2.2.3.6);
/// and the 3.1.1 password without user name ([MQTT-3.1.2-22]).
#[test]
fn other_values_out_of_range() {
    let connack = |p: Properties| {
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: ReasonCode::Success,
            properties: props(p),
        })
    };
    let cases = [
        connack(Properties {
            maximum_qos: Some(QoS::ExactlyOnce),
            ..Properties::default()
        }),
        connack(Properties {
            receive_maximum: Some(0),
            ..Properties::default()
        }),
        connack(Properties {
            maximum_packet_size: Some(0),
            ..Properties::default()
        }),
        Packet::Publish(Publish {
            topic: s("t"),
            properties: props(Properties {
                topic_alias: Some(0),
                ..Properties::default()
            }),
            ..Publish::default()
        }),
    ];
    for packet in &cases {
        let mut out = Vec::new();
        assert!(
            matches!(
                packet.encode(V5, &mut out),
                Err(EncodeError::ValueOutOfRange(_))
            ),
            "{packet:?}"
        );
        assert!(out.is_empty());
    }
    let password_only = Packet::Connect(Box::new(connect(Some(b(b"pw")), None)));
    assert!(matches!(
        password_only.encode(V3_1_1, &mut Vec::new()),
        Err(EncodeError::ValueOutOfRange(_))
    ));
    let mut v5 = connect(Some(b(b"pw")), None);
    v5.protocol = V5;
    assert!(Packet::Connect(Box::new(v5))
        .encode(V5, &mut Vec::new())
        .is_ok());
}

/// MQTT 5.0 §1.5.5 / §2.1.4: the remaining length is at most 268,435,455. 4,096 user properties
/// of 65,540 bytes each (shared, not copied) make a body just over it. In 3.1.1 the properties
/// are left out and the same packet is small.
#[test]
fn packet_too_large() {
    let value = Utf8Bytes::try_from("x".repeat(65_535)).unwrap();
    let packet = Packet::Publish(Publish {
        topic: s("t"),
        properties: props(Properties {
            user_properties: vec![(s(""), value); 4_096],
            ..Properties::default()
        }),
        ..Publish::default()
    });
    let body = 3 + 4 + 4_096 * 65_540;
    assert!(body > VARINT_MAX as usize);
    assert_eq!(packet.encoded_len(V5), 1 + 4 + body);
    assert_encode_error(V5, &packet, EncodeError::PacketTooLarge(body));
    assert_encodes(V3_1_1, &packet, &[0x30, 0x03, 0x00, 0x01, b't']);
}
