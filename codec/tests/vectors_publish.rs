//! Byte-exact PUBLISH vectors for MQTT 3.1/3.1.1 and 5.0, the remaining length boundaries, and
//! the zero-copy guarantee of the decoder.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use ringmq_codec::{decode, Packet, Properties, Publish, QoS};

/// MQTT 3.1.1 §3.3.1 (fixed header 0x30: QoS 0, DUP 0, RETAIN 0), §3.3.2.1 (topic name),
/// §3.3.2.2 (no packet identifier at QoS 0), §3.3.3 (payload: the rest of the packet).
#[test]
fn v3_qos0() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x30, 0x07,                   // PUBLISH QoS 0, remaining length 7
        0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
        b'h', b'i',                   // payload "hi"
    ];
    let expected = Packet::Publish(Publish {
        topic: s("a/b"),
        payload: b(b"hi"),
        ..Publish::default()
    });
    assert_vector_in(&V3, bytes, &expected);
}

/// MQTT 3.1.1 §3.3.2.3, the non-normative example: topic "a/b", packet identifier 10, at QoS 1
/// (fixed header 0x32).
#[test]
fn v3_qos1_spec_example() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x32, 0x09,                   // PUBLISH QoS 1, remaining length 9
        0x00, 0x03, b'a', b'/', b'b', // topic name "a/b"
        0x00, 0x0A,                   // packet identifier 10
        b'h', b'i',                   // payload "hi"
    ];
    let expected = Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        topic: s("a/b"),
        packet_id: 10,
        payload: b(b"hi"),
        ..Publish::default()
    });
    assert_vector_in(&V3, bytes, &expected);
}

/// MQTT 3.1.1 §3.3.1.1-§3.3.1.3: DUP 1, QoS 2, RETAIN 1 (0x3D); the largest packet identifier;
/// an empty payload (§3.3.3: "a zero length payload is valid").
#[test]
fn v3_dup_qos2_retain_empty_payload() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x3D, 0x05,             // PUBLISH 1101: DUP, QoS 2, RETAIN; remaining length 5
        0x00, 0x01, b't',       // topic name "t"
        0xFF, 0xFF,             // packet identifier 65535
    ];
    let expected = Packet::Publish(Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: s("t"),
        packet_id: u16::MAX,
        payload: Bytes::new(),
        properties: None,
    });
    assert_vector_in(&V3, bytes, &expected);
}

/// MQTT 3.1.1 §3.3.1.3: a retained QoS 0 message with a zero-byte payload (it clears the
/// retained message [MQTT-3.3.1-10]).
#[test]
fn v3_retained_delete() {
    let bytes: &[u8] = &[0x31, 0x03, 0x00, 0x01, b't'];
    let expected = Packet::Publish(Publish {
        retain: true,
        topic: s("t"),
        ..Publish::default()
    });
    assert_vector_in(&V3, bytes, &expected);
}

/// MQTT 3.1.1 §2.2.3 table 2.4 / MQTT 5.0 §1.5.5 table 1-1: the remaining length at the edges of
/// one, two and three bytes (127 = 7F, 128 = 80 01, 16383 = FF 7F, 16384 = 80 80 01).
#[test]
fn remaining_length_boundaries() {
    let cases: [(usize, &[u8]); 4] = [
        (127, &[0x7F]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xFF, 0x7F]),
        (16_384, &[0x80, 0x80, 0x01]),
    ];
    for (remaining, encoded) in cases {
        let payload = vec![0xA5; remaining - 5];
        let mut bytes = vec![0x30];
        bytes.extend_from_slice(encoded);
        bytes.extend_from_slice(&[0x00, 0x03, b'a', b'/', b'b']);
        bytes.extend_from_slice(&payload);
        let expected = Packet::Publish(Publish {
            topic: s("a/b"),
            payload: Bytes::from(payload),
            ..Publish::default()
        });
        assert_vector_in(&V3, &bytes, &expected);
    }
}

/// MQTT 5.0 §3.3.2.3.1: a QoS 0 PUBLISH with a property length of 0 before the payload.
#[test]
fn v5_qos0_without_properties() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x30, 0x05,       // PUBLISH QoS 0, remaining length 5
        0x00, 0x01, b't', // topic name "t"
        0x00,             // property length 0
        b'x',             // payload "x"
    ];
    let expected = Packet::Publish(Publish {
        topic: s("t"),
        payload: b(b"x"),
        ..Publish::default()
    });
    assert_vector(V5, bytes, &expected);
}

/// The PUBLISH of the zero-copy test: MQTT 5.0 §3.3.2.3, every
/// PUBLISH property in identifier order: payload format indicator (3.3.2.3.2), message expiry
/// (3.3.2.3.3), content type (3.3.2.3.9), response topic (3.3.2.3.5), correlation data
/// (3.3.2.3.6), three subscription identifiers (3.3.2.3.8: one per matching subscription,
/// [MQTT-3.3.4-4]; 1, 16384 and the largest, 268435455, as 1-, 3- and 4-byte variable byte
/// integers), topic alias (3.3.2.3.4) and two user properties with the same name (3.3.2.3.7:
/// repeatable, order kept [MQTT-3.3.2-18]).
#[rustfmt::skip]
const V5_PUBLISH_ALL_PROPERTIES: &[u8] = &[
    0x32, 0x48,                                          // PUBLISH QoS 1, remaining length 72
    0x00, 0x03, b's', b'/', b'1',                        // topic name "s/1"
    0x00, 0x01,                                          // packet identifier 1
    0x39,                                                // property length 57
    0x01, 0x01,                                          // payload format indicator 1 (UTF-8)
    0x02, 0x00, 0x00, 0x00, 0x3C,                        // message expiry interval 60
    0x03, 0x00, 0x04, b'j', b's', b'o', b'n',            // content type "json"
    0x08, 0x00, 0x03, b'r', b'/', b'1',                  // response topic "r/1"
    0x09, 0x00, 0x02, 0xCA, 0xFE,                        // correlation data CA FE
    0x0B, 0x01,                                          // subscription identifier 1
    0x0B, 0x80, 0x80, 0x01,                              // subscription identifier 16384
    0x0B, 0xFF, 0xFF, 0xFF, 0x7F,                        // subscription identifier 268435455
    0x23, 0x00, 0x05,                                    // topic alias 5
    0x26, 0x00, 0x02, b'k', b'1', 0x00, 0x02, b'v', b'1', // user property k1=v1
    0x26, 0x00, 0x02, b'k', b'1', 0x00, 0x02, b'v', b'2', // user property k1=v2
    b'{', b'"', b'a', b'"', b':', b'1', b'}',            // payload {"a":1}
];

fn v5_publish_all_properties() -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: s("s/1"),
        packet_id: 1,
        properties: props(Properties {
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(60),
            content_type: Some(s("json")),
            response_topic: Some(s("r/1")),
            correlation_data: Some(b(&[0xCA, 0xFE])),
            subscription_identifiers: vec![1, 16_384, 268_435_455],
            topic_alias: Some(5),
            user_properties: vec![(s("k1"), s("v1")), (s("k1"), s("v2"))],
            ..Properties::default()
        }),
        payload: b(br#"{"a":1}"#),
    })
}

#[test]
fn v5_qos1_all_properties() {
    assert_vector(V5, V5_PUBLISH_ALL_PROPERTIES, &v5_publish_all_properties());
}

/// MQTT 5.0 §3.3.2.3.4: a zero-length topic name stands for the topic of a Topic Alias
/// already set; the codec accepts it when the alias is present (3.3.2.1: "It is a Protocol
/// Error if the Topic Name is zero length and there is no Topic Alias").
#[test]
fn v5_empty_topic_with_topic_alias() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x30, 0x07,       // PUBLISH QoS 0, remaining length 7
        0x00, 0x00,       // topic name "" (zero length)
        0x03,             // property length 3
        0x23, 0x00, 0x01, // topic alias 1
        b'z',             // payload "z"
    ];
    let expected = Packet::Publish(Publish {
        topic: s(""),
        properties: props(Properties {
            topic_alias: Some(1),
            ..Properties::default()
        }),
        payload: b(b"z"),
        ..Publish::default()
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 5.0 §3.3.1.1-§3.3.1.3 with a QoS 2 redelivery that keeps its RETAIN flag (0x3D).
#[test]
fn v5_dup_qos2_retain() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x3D, 0x07,       // PUBLISH DUP, QoS 2, RETAIN; remaining length 7
        0x00, 0x01, b't', // topic name "t"
        0x12, 0x34,       // packet identifier 0x1234
        0x00,             // property length 0
        0x00,             // payload: one zero byte
    ];
    let expected = Packet::Publish(Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: s("t"),
        packet_id: 0x1234,
        properties: None,
        payload: b(&[0]),
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 3.x has no PUBLISH properties: encoding the MQTT 5 packet above for 3.1.1 leaves them
/// out, and DUP is never written for QoS 0 [MQTT-3.3.1-2].
#[test]
fn v3_encoding_leaves_v5_data_out() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x32, 0x0E,                   // PUBLISH QoS 1, remaining length 14
        0x00, 0x03, b's', b'/', b'1', // topic name
        0x00, 0x01,                   // packet identifier 1
        b'{', b'"', b'a', b'"', b':', b'1', b'}',
    ];
    assert_encodes(V3_1_1, &v5_publish_all_properties(), bytes);
    let qos0_dup = Packet::Publish(Publish {
        dup: true,
        topic: s("t"),
        ..Publish::default()
    });
    assert_encodes(V3_1_1, &qos0_dup, &[0x30, 0x03, 0x00, 0x01, b't']);
}

fn within(inner: &[u8], outer: (usize, usize)) -> bool {
    let start = inner.as_ptr() as usize;
    start >= outer.0 && start + inner.len() <= outer.1
}

/// The decoder copies nothing: topic, payload and binary or string properties of the decoded
/// PUBLISH are slices of the buffer the bytes arrived in.
#[test]
fn zero_copy_publish_points_into_the_input_buffer() {
    // Put something before and after the packet: a PINGRESP and the first byte of another one.
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0xD0, 0x00]);
    buf.extend_from_slice(V5_PUBLISH_ALL_PROPERTIES);
    buf.extend_from_slice(&[0x30]);
    let base = buf.as_ptr() as usize;
    let range = (base, base + buf.len());

    assert_eq!(decode(&mut buf, &opts(V5)).unwrap(), Some(Packet::PingResp));
    let Some(Packet::Publish(p)) = decode(&mut buf, &opts(V5)).unwrap() else {
        panic!("expected PUBLISH");
    };
    assert_eq!(&buf[..], &[0x30]);
    assert_eq!(Packet::Publish(p.clone()), v5_publish_all_properties());

    // Exact offsets: PINGRESP (2), fixed header (2), topic length (2), then "s/1".
    let packet_start = base + 2;
    assert_eq!(p.topic.as_bytes().as_ptr() as usize, packet_start + 4);
    let end = packet_start + V5_PUBLISH_ALL_PROPERTIES.len();
    assert_eq!(p.payload.as_ptr() as usize, end - p.payload.len());

    let pr = p.properties.as_deref().unwrap();
    for slice in [
        p.topic.as_bytes().as_ref(),
        p.payload.as_ref(),
        pr.content_type.as_ref().unwrap().as_bytes(),
        pr.response_topic.as_ref().unwrap().as_bytes(),
        pr.correlation_data.as_ref().unwrap(),
        pr.user_properties[0].0.as_bytes(),
        pr.user_properties[1].1.as_bytes(),
    ] {
        assert!(within(slice, range), "{slice:?} was copied");
    }
}

/// The same for the will of a CONNECT and the filters of a SUBSCRIBE.
#[test]
fn zero_copy_will_and_filters() {
    #[rustfmt::skip]
    let connect: &[u8] = &[
        0x10, 0x16, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x06, 0x00, 0x00,
        0x00, 0x01, b'c',                   // client id
        0x00, 0x02, b'w', b'/',             // will topic "w/"
        0x00, 0x03, 0x01, 0x02, 0x03,       // will payload
    ];
    #[rustfmt::skip]
    let subscribe: &[u8] = &[0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'#', 0x01];
    let mut buf = BytesMut::new();
    buf.extend_from_slice(connect);
    buf.extend_from_slice(subscribe);
    let base = buf.as_ptr() as usize;
    let range = (base, base + buf.len());
    let Some(Packet::Connect(c)) = decode(&mut buf, &opts(V3_1_1)).unwrap() else {
        panic!("expected CONNECT");
    };
    let will = c.will.as_ref().unwrap();
    assert_eq!(will.payload.as_ptr() as usize, base + connect.len() - 3);
    assert!(within(will.topic.as_bytes(), range));
    assert!(within(c.client_id.as_bytes(), range));
    let Some(Packet::Subscribe(sub)) = decode(&mut buf, &opts(V3_1_1)).unwrap() else {
        panic!("expected SUBSCRIBE");
    };
    assert!(buf.is_empty());
    assert_eq!(sub.filters[0].filter, "a/#");
    assert_eq!(
        sub.filters[0].filter.as_bytes().as_ptr() as usize,
        base + connect.len() + 6
    );
}
