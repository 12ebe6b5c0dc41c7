//! Byte-exact SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK vectors for MQTT 3.1/3.1.1 and 5.0.

mod common;

use common::*;
use ringmq_codec::{
    Packet, Properties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeFilter,
    SubscriptionOptions, UnsubAck, Unsubscribe,
};

fn filter(f: &'static str, options: SubscriptionOptions) -> SubscribeFilter {
    SubscribeFilter {
        filter: s(f),
        options,
    }
}

/// MQTT 3.1.1 §3.8.1 (fixed header 0x82 [MQTT-3.8.1-1]), §3.8.2.1 (variable header example:
/// packet identifier 10) and §3.8.3.1 (payload example: "a/b" at QoS 1, "c/d" at QoS 2).
#[test]
fn v3_subscribe_spec_example() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x82, 0x0E,                   // SUBSCRIBE, remaining length 14
        0x00, 0x0A,                   // packet identifier 10
        0x00, 0x03, b'a', b'/', b'b', // topic filter "a/b"
        0x01,                         // requested QoS 1
        0x00, 0x03, b'c', b'/', b'd', // topic filter "c/d"
        0x02,                         // requested QoS 2
    ];
    let expected = Packet::Subscribe(Subscribe {
        packet_id: 10,
        properties: None,
        filters: vec![
            filter("a/b", SubscriptionOptions::qos(QoS::AtLeastOnce)),
            filter("c/d", SubscriptionOptions::qos(QoS::ExactlyOnce)),
        ],
    });
    assert_vector_in(&V3, bytes, &expected);
}

/// MQTT 3.1.1 §3.9.3.1, the payload non-normative example: "Success - Maximum QoS 0", "Success -
/// Maximum QoS 2", "Failure" (0x80).
#[test]
fn v3_suback_spec_example() {
    let bytes: &[u8] = &[0x90, 0x05, 0x00, 0x0A, 0x00, 0x02, 0x80];
    let expected = Packet::SubAck(SubAck {
        packet_id: 10,
        properties: None,
        return_codes: vec![
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ],
    });
    assert_vector_in(&V3, bytes, &expected);
    let qos1: &[u8] = &[0x90, 0x03, 0x00, 0x0A, 0x01];
    let expected = Packet::SubAck(SubAck {
        packet_id: 10,
        properties: None,
        return_codes: vec![ReasonCode::GrantedQoS1],
    });
    assert_vector_in(&V3, qos1, &expected);
}

/// MQTT 3.1.1 §3.9.3 [MQTT-3.9.3-2]: only 0x00, 0x01, 0x02 and 0x80 exist in 3.1.1, so every
/// MQTT 5 failure code is written as 0x80 (encode-only).
#[test]
fn v3_suback_encodes_every_failure_as_0x80() {
    let packet = Packet::SubAck(SubAck {
        packet_id: 1,
        properties: None,
        return_codes: vec![
            ReasonCode::NotAuthorized,
            ReasonCode::TopicFilterInvalid,
            ReasonCode::GrantedQoS1,
        ],
    });
    assert_encodes(V3_1_1, &packet, &[0x90, 0x05, 0x00, 0x01, 0x80, 0x80, 0x01]);
}

/// MQTT 3.1.1 §3.10.1 (0xA2 [MQTT-3.10.1-1]) and the §3.10.3.1 payload non-normative example:
/// "a/b", "c/d".
#[test]
fn v3_unsubscribe_spec_example() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0xA2, 0x0C,                   // UNSUBSCRIBE, remaining length 12
        0x00, 0x0A,                   // packet identifier 10
        0x00, 0x03, b'a', b'/', b'b', // topic filter "a/b"
        0x00, 0x03, b'c', b'/', b'd', // topic filter "c/d"
    ];
    let expected = Packet::Unsubscribe(Unsubscribe {
        packet_id: 10,
        properties: None,
        filters: vec![s("a/b"), s("c/d")],
    });
    assert_vector_in(&V3, bytes, &expected);
}

/// MQTT 3.1.1 §3.11: UNSUBACK is the packet identifier alone, remaining length 2.
#[test]
fn v3_unsuback() {
    let expected = Packet::UnsubAck(UnsubAck {
        packet_id: 10,
        properties: None,
        reason_codes: Vec::new(),
    });
    assert_vector_in(&V3, &[0xB0, 0x02, 0x00, 0x0A], &expected);
}

/// MQTT 5.0 §3.8.2.1.2 (Subscription Identifier 128, a two-byte variable byte integer),
/// §3.8.2.1.3 (User Property) and §3.8.3.1 (every subscription option bit: QoS,
/// No Local, Retain As Published, Retain Handling 0/1/2), with a shared subscription (§4.8.2,
/// No Local 0 there [MQTT-3.8.3-4]).
#[test]
fn v5_subscribe_all_options_and_properties() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x82, 0x2A,                               // SUBSCRIBE, remaining length 42
        0x00, 0x01,                               // packet identifier 1
        0x0A,                                     // property length 10
        0x0B, 0x80, 0x01,                         // subscription identifier 128
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k=v
        0x00, 0x03, b'a', b'/', b'+',             // "a/+"
        0x2E,                                     // 00 10 1 1 10: RH 2, RAP, NL, QoS 2
        0x00, 0x03, b'b', b'/', b'#',             // "b/#"
        0x11,                                     // 00 01 0 0 01: RH 1, QoS 1
        0x00, 0x0A, b'$', b's', b'h', b'a', b'r', // "$share/g/c"
              b'e', b'/', b'g', b'/', b'c',
        0x08,                                     // 00 00 1 0 00: RAP, QoS 0
        0x00, 0x01, b'd',                         // "d"
        0x00,                                     // all options 0
    ];
    let expected = Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: props(Properties {
            subscription_identifiers: vec![128],
            user_properties: vec![(s("k"), s("v"))],
            ..Properties::default()
        }),
        filters: vec![
            filter(
                "a/+",
                SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            ),
            filter(
                "b/#",
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::SendIfNew,
                },
            ),
            filter(
                "$share/g/c",
                SubscriptionOptions {
                    retain_as_published: true,
                    ..SubscriptionOptions::qos(QoS::AtMostOnce)
                },
            ),
            filter("d", SubscriptionOptions::default()),
        ],
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 5.0 §3.8.2: the smallest SUBSCRIBE: property length 0 and one filter.
#[test]
fn v5_subscribe_minimal() {
    let bytes: &[u8] = &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'x', 0x00];
    let expected = Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: None,
        filters: vec![filter("x", SubscriptionOptions::default())],
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 3.x knows only the QoS bits of the options byte: the encoder leaves the others out.
#[test]
fn v3_subscribe_encoding_leaves_v5_options_out() {
    let packet = Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: props(Properties {
            subscription_identifiers: vec![3],
            ..Properties::default()
        }),
        filters: vec![filter(
            "x",
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        )],
    });
    assert_encodes(
        V3_1_1,
        &packet,
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'x', 0x01],
    );
}

/// MQTT 5.0 §3.9.2.1.2 (Reason String) and §3.9.3 (Subscribe Reason Codes): every SUBACK
/// reason code, in order.
#[test]
fn v5_suback_every_reason_code() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x90, 0x13,             // SUBACK, remaining length 19
        0x00, 0x01,             // packet identifier 1
        0x04,                   // property length 4
        0x1F, 0x00, 0x01, b'r', // reason string "r"
        0x00, 0x01, 0x02,       // granted QoS 0, 1, 2
        0x80, 0x83, 0x87, 0x8F, // unspecified, implementation specific, not authorized,
        0x91, 0x97, 0x9E, 0xA1, // filter invalid, id in use, quota exceeded, shared not
        0xA2,                   // supported, subscription ids not supported, wildcards not
    ]; // supported
    let expected = Packet::SubAck(SubAck {
        packet_id: 1,
        properties: props(Properties {
            reason_string: Some(s("r")),
            ..Properties::default()
        }),
        return_codes: vec![
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
            ReasonCode::ImplementationSpecificError,
            ReasonCode::NotAuthorized,
            ReasonCode::TopicFilterInvalid,
            ReasonCode::PacketIdentifierInUse,
            ReasonCode::QuotaExceeded,
            ReasonCode::SharedSubscriptionsNotSupported,
            ReasonCode::SubscriptionIdentifiersNotSupported,
            ReasonCode::WildcardSubscriptionsNotSupported,
        ],
    });
    assert_vector(V5, bytes, &expected);
    let minimal = Packet::SubAck(SubAck {
        packet_id: 1,
        properties: None,
        return_codes: vec![ReasonCode::GrantedQoS1],
    });
    assert_vector(V5, &[0x90, 0x04, 0x00, 0x01, 0x00, 0x01], &minimal);
}

/// MQTT 5.0 §3.10.2.1.2 (User Property) and §3.10.3 (a plain and a shared filter).
#[test]
fn v5_unsubscribe_with_user_property() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0xA2, 0x1B,                               // UNSUBSCRIBE, remaining length 27
        0x00, 0x02,                               // packet identifier 2
        0x07,                                     // property length 7
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property k=v
        0x00, 0x03, b'a', b'/', b'b',             // "a/b"
        0x00, 0x0A, b'$', b's', b'h', b'a', b'r', // "$share/g/c"
              b'e', b'/', b'g', b'/', b'c',
    ];
    let expected = Packet::Unsubscribe(Unsubscribe {
        packet_id: 2,
        properties: props(Properties {
            user_properties: vec![(s("k"), s("v"))],
            ..Properties::default()
        }),
        filters: vec![s("a/b"), s("$share/g/c")],
    });
    assert_vector(V5, bytes, &expected);
}

/// MQTT 5.0 §3.11.3 (Unsubscribe Reason Codes): every UNSUBACK reason code; §3.11.2.1.2
/// Reason String.
#[test]
fn v5_unsuback() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0xB0, 0x0A,                               // UNSUBACK, remaining length 10
        0x00, 0x02,                               // packet identifier 2
        0x00,                                     // property length 0
        0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91, // one code per filter
    ];
    let expected = Packet::UnsubAck(UnsubAck {
        packet_id: 2,
        properties: None,
        reason_codes: vec![
            ReasonCode::Success,
            ReasonCode::NoSubscriptionExisted,
            ReasonCode::UnspecifiedError,
            ReasonCode::ImplementationSpecificError,
            ReasonCode::NotAuthorized,
            ReasonCode::TopicFilterInvalid,
            ReasonCode::PacketIdentifierInUse,
        ],
    });
    assert_vector(V5, bytes, &expected);

    #[rustfmt::skip]
    let with_reason: &[u8] = &[
        0xB0, 0x09,                   // UNSUBACK, remaining length 9
        0x00, 0x03,                   // packet identifier 3
        0x05,                         // property length 5
        0x1F, 0x00, 0x02, b'n', b'o', // reason string "no"
        0x11,                         // no subscription existed
    ];
    let expected = Packet::UnsubAck(UnsubAck {
        packet_id: 3,
        properties: props(Properties {
            reason_string: Some(s("no")),
            ..Properties::default()
        }),
        reason_codes: vec![ReasonCode::NoSubscriptionExisted],
    });
    assert_vector(V5, with_reason, &expected);
}

/// MQTT 3.x UNSUBACK has no payload: the MQTT 5 reason codes are left out on encoding.
#[test]
fn v3_unsuback_encoding_leaves_v5_data_out() {
    let packet = Packet::UnsubAck(UnsubAck {
        packet_id: 4,
        properties: None,
        reason_codes: vec![ReasonCode::NoSubscriptionExisted],
    });
    assert_encodes(V3_1_1, &packet, &[0xB0, 0x02, 0x00, 0x04]);
}
