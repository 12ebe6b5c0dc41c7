//! Negative tests of the fields: UTF-8 strings, topic names, topic filters and shared
//! subscriptions, packet identifiers, subscription options, empty SUBSCRIBE and UNSUBSCRIBE.

mod common;

use common::*;
use ringmq_codec::{DecodeError, Packet, ProtocolVersion, ReasonCode};

const MALFORMED: ReasonCode = ReasonCode::MalformedPacket;

/// Ill-formed UTF-8: a bad continuation byte, an overlong encoding of '/', a byte that never
/// occurs, a cut sequence, and U+D800 encoded as ED A0 80 (a surrogate).
const ILL_FORMED: [&[u8]; 5] = [
    &[b'a', 0xC3, 0x28],
    &[0xC0, 0xAF],
    &[b'a', 0xFF],
    &[0xE2, 0x82],
    &[0xED, 0xA0, 0x80],
];

/// A QoS 0 PUBLISH of `topic` (with an empty property block in 5.0).
fn publish(version: ProtocolVersion, topic: &[u8]) -> Vec<u8> {
    let props: &[u8] = if version.is_v5() { &[0x00] } else { &[] };
    packet(0x30, &cat(&[&field(topic), props, b"payload"]))
}

/// A CONNECT with this client identifier.
fn connect(version: ProtocolVersion, client_id: &[u8]) -> Vec<u8> {
    let (level, props): (u8, &[u8]) = if version.is_v5() {
        (5, &[0x00])
    } else {
        (4, &[])
    };
    let head = [0x00, 0x04, b'M', b'Q', b'T', b'T', level, 0x02, 0x00, 0x00];
    packet(0x10, &cat(&[&head, props, &field(client_id)]))
}

/// A SUBSCRIBE of one filter with these options.
fn subscribe(version: ProtocolVersion, filter: &[u8], options: u8) -> Vec<u8> {
    let props: &[u8] = if version.is_v5() { &[0x00] } else { &[] };
    packet(
        0x82,
        &cat(&[&[0x00, 0x01], props, &field(filter), &[options]]),
    )
}

/// An UNSUBSCRIBE of one filter.
fn unsubscribe(version: ProtocolVersion, filter: &[u8]) -> Vec<u8> {
    let props: &[u8] = if version.is_v5() { &[0x00] } else { &[] };
    packet(0xA2, &cat(&[&[0x00, 0x01], props, &field(filter)]))
}

/// A 5.0 PUBLISH with one user property.
fn user_property(key: &[u8], value: &[u8]) -> Vec<u8> {
    let prop = cat(&[&[0x26], &field(key), &field(value)]);
    packet(
        0x30,
        &cat(&[&field(b"t"), &[prop.len() as u8], &prop, b"x"]),
    )
}

/// MQTT 5.0 §1.5.4 [MQTT-1.5.4-1] (3.1.1 §1.5.3 [MQTT-1.5.3-1]): strings are well-formed UTF-8
/// without surrogates; "If a Client or Server receives an MQTT Control Packet containing
/// ill-formed UTF-8 it is a Malformed Packet". Checked in a topic, a client identifier, a
/// user property, and a topic filter.
#[test]
fn ill_formed_utf8() {
    for text in ILL_FORMED {
        for version in [V3_1_1, V5] {
            for bytes in [
                publish(version, text),
                connect(version, text),
                subscribe(version, text, 0x00),
                unsubscribe(version, text),
            ] {
                assert_rejects(version, &bytes, DecodeError::InvalidUtf8, MALFORMED);
            }
        }
        for bytes in [user_property(text, b"v"), user_property(b"k", text)] {
            assert_rejects(V5, &bytes, DecodeError::InvalidUtf8, MALFORMED);
        }
    }
}

/// MQTT 5.0 §1.5.4 [MQTT-1.5.4-2] (3.1.1 [MQTT-1.5.3-2]) and §4.7.3 [MQTT-4.7.3-2]: no U+0000
/// in a string, topic name or topic filter.
#[test]
fn null_character() {
    for text in [&b"\0"[..], b"a\0", b"a/\0/b"] {
        for version in [V3_1_1, V5] {
            for bytes in [
                publish(version, text),
                connect(version, text),
                subscribe(version, text, 0x00),
                unsubscribe(version, text),
            ] {
                assert_rejects(version, &bytes, DecodeError::NullCharacter, MALFORMED);
            }
        }
        for bytes in [user_property(text, b"v"), user_property(b"k", text)] {
            assert_rejects(V5, &bytes, DecodeError::NullCharacter, MALFORMED);
        }
    }
}

/// MQTT 5.0 §1.5.4 [MQTT-1.5.4-3]: U+FEFF is a character like any other, "MUST NOT be skipped
/// over or stripped off by a packet receiver".
#[test]
fn byte_order_mark_is_kept() {
    let topic = "\u{FEFF}t".as_bytes();
    let Ok(Some(Packet::Publish(p))) = decode_all(V5, &publish(V5, topic)) else {
        panic!("U+FEFF is valid in a topic");
    };
    assert_eq!(p.topic.as_bytes().as_ref(), topic);
}

/// MQTT 3.1.1 §3.3.2.1 [MQTT-3.3.2-2] / MQTT 5.0 §3.3.2.1 [MQTT-3.3.2-2], §4.7.0 [MQTT-4.7.0-1]:
/// "The Topic Name in the PUBLISH packet MUST NOT contain wildcard characters".
#[test]
fn wildcard_in_topic_name() {
    for topic in [&b"+"[..], b"#", b"a/+", b"a/#", b"a+b", b"a#"] {
        for version in ALL {
            assert_rejects(
                version,
                &publish(version, topic),
                DecodeError::WildcardInTopicName,
                ReasonCode::TopicNameInvalid,
            );
        }
    }
}

/// MQTT 3.1.1 §4.7.3 [MQTT-4.7.3-1]: topic names are at least one character long. MQTT 5.0
/// §3.3.2.1: "It is a Protocol Error if the Topic Name is zero length and there is no Topic
/// Alias" (other properties do not help); with a Topic Alias it is accepted.
#[test]
fn empty_topic_name() {
    for version in ALL {
        assert_rejects(
            version,
            &publish(version, b""),
            DecodeError::EmptyTopicName,
            ReasonCode::ProtocolError,
        );
    }
    // 5.0: message expiry interval but no topic alias.
    let no_alias = packet(
        0x30,
        &[0x00, 0x00, 0x05, 0x02, 0x00, 0x00, 0x00, 0x01, b'x'],
    );
    assert_rejects(
        V5,
        &no_alias,
        DecodeError::EmptyTopicName,
        ReasonCode::ProtocolError,
    );
    let alias = packet(0x30, &[0x00, 0x00, 0x03, 0x23, 0x00, 0x07, b'x']);
    let Ok(Some(Packet::Publish(p))) = decode_all(V5, &alias) else {
        panic!("an empty topic with a topic alias is valid in 5.0");
    };
    assert_eq!(
        (p.topic.as_str(), p.properties.unwrap().topic_alias),
        ("", Some(7))
    );
}

/// MQTT 5.0 §4.7.1.2 [MQTT-4.7.1-1] ('#' alone and last), §4.7.1.3 [MQTT-4.7.1-2] ('+' fills
/// its level), §4.7.3 [MQTT-4.7.3-1] (at least one character); 3.1.1 [MQTT-4.7.1-2],
/// [MQTT-4.7.1-3], [MQTT-4.7.3-1]. In SUBSCRIBE and UNSUBSCRIBE.
#[test]
fn invalid_topic_filters() {
    let bad = [
        &b"a/#/b"[..],
        b"a+",
        b"#a",
        b"a/b#",
        b"+a/b",
        b"a/++",
        b"##",
        b"",
        b"$share/g/a#",
    ];
    for filter in bad {
        for version in [V3_1_1, V5] {
            for bytes in [
                subscribe(version, filter, 0x01),
                unsubscribe(version, filter),
            ] {
                assert_rejects(
                    version,
                    &bytes,
                    DecodeError::InvalidTopicFilter,
                    ReasonCode::TopicFilterInvalid,
                );
            }
        }
    }
}

/// MQTT 5.0 §4.8.2 [MQTT-4.8.2-1] (a ShareName of at least one character), [MQTT-4.8.2-2] (no
/// '/', '+' or '#' in it, followed by '/' and a Topic Filter).
#[test]
fn invalid_shared_subscription_filters() {
    let bad = [
        &b"$share/g"[..],
        b"$share//x",
        b"$share/g+/x",
        b"$share/#/x",
        b"$share/g/",
        b"$share/",
        b"$queue/",
    ];
    for filter in bad {
        for bytes in [subscribe(V5, filter, 0x01), unsubscribe(V5, filter)] {
            assert_rejects(
                V5,
                &bytes,
                DecodeError::InvalidSharedSubscription,
                ReasonCode::TopicFilterInvalid,
            );
        }
    }
}

/// MQTT 5.0 §3.8.3.1 [MQTT-3.8.3-4]: "It is a Protocol Error to set the No Local bit to 1 on a
/// Shared Subscription".
#[test]
fn no_local_on_shared_subscription() {
    for filter in [&b"$share/g/x"[..], b"$share/g/#", b"$queue/x"] {
        assert_rejects(
            V5,
            &subscribe(V5, filter, 0x04 | 0x01),
            DecodeError::NoLocalOnSharedSubscription,
            ReasonCode::ProtocolError,
        );
    }
    // Without No Local it is fine; and No Local on a plain filter is fine.
    assert!(decode_all(V5, &subscribe(V5, b"$share/g/x", 0x01)).is_ok());
    assert!(decode_all(V5, &subscribe(V5, b"x", 0x04)).is_ok());
}

/// MQTT 3.1.1 §2.3.1 [MQTT-2.3.1-1] / MQTT 5.0 §2.2.1 [MQTT-2.2.1-3]: SUBSCRIBE, UNSUBSCRIBE and
/// PUBLISH at QoS 1 or 2 carry a non-zero packet identifier; the acks carry the same one
/// ([MQTT-2.2.1-5], [MQTT-2.2.1-6]), hence non-zero too.
#[test]
fn packet_identifier_0() {
    let v3: [&[u8]; 10] = [
        &[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00], // PUBLISH QoS 1
        &[0x34, 0x05, 0x00, 0x01, b't', 0x00, 0x00], // PUBLISH QoS 2
        &[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b't', 0x00], // SUBSCRIBE
        &[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b't'], // UNSUBSCRIBE
        &[0x40, 0x02, 0x00, 0x00],                   // PUBACK
        &[0x50, 0x02, 0x00, 0x00],                   // PUBREC
        &[0x62, 0x02, 0x00, 0x00],                   // PUBREL
        &[0x70, 0x02, 0x00, 0x00],                   // PUBCOMP
        &[0x90, 0x03, 0x00, 0x00, 0x00],             // SUBACK
        &[0xB0, 0x02, 0x00, 0x00],                   // UNSUBACK
    ];
    for bytes in v3 {
        assert_rejects(V3_1_1, bytes, DecodeError::ZeroPacketId, MALFORMED);
    }
    let v5: [&[u8]; 5] = [
        &[0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x00, 0x00], // PUBLISH QoS 1
        &[0x82, 0x07, 0x00, 0x00, 0x00, 0x00, 0x01, b't', 0x00], // SUBSCRIBE
        &[0xA2, 0x06, 0x00, 0x00, 0x00, 0x00, 0x01, b't'], // UNSUBSCRIBE
        &[0x40, 0x03, 0x00, 0x00, 0x10],                   // PUBACK
        &[0x90, 0x04, 0x00, 0x00, 0x00, 0x00],             // SUBACK
    ];
    for bytes in v5 {
        assert_rejects(V5, bytes, DecodeError::ZeroPacketId, MALFORMED);
    }
}

/// MQTT 3.1.1 §3.8.3.1 [MQTT-3-8.3-4]: a SUBSCRIBE whose requested QoS is not 0, 1 or 2 is
/// malformed. MQTT 5.0 §3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value
/// 3".
#[test]
fn subscription_options_qos_3() {
    assert_rejects(
        V3_1_1,
        &subscribe(V3_1_1, b"x", 0x03),
        DecodeError::InvalidQoS,
        MALFORMED,
    );
    for options in [0x03, 0x07, 0x2F] {
        assert_rejects(
            V5,
            &subscribe(V5, b"x", options),
            DecodeError::InvalidSubscriptionQoS,
            ReasonCode::ProtocolError,
        );
    }
}

/// MQTT 3.1.1 §3.8.3.1 [MQTT-3-8.3-4]: bits 7-2 of the requested QoS byte are reserved. MQTT
/// 5.0 §3.8.3.1 [MQTT-3.8.3-5]: bits 7-6 of the Subscription Options are reserved; "The Server
/// MUST treat a SUBSCRIBE packet as malformed if any of Reserved bits in the Payload are
/// non-zero".
#[test]
fn subscription_options_reserved_bits() {
    for options in [0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFC] {
        assert_rejects(
            V3_1_1,
            &subscribe(V3_1_1, b"x", options),
            DecodeError::ReservedSubscriptionOptions,
            MALFORMED,
        );
    }
    for options in [0x40, 0x80, 0xC0, 0x41] {
        assert_rejects(
            V5,
            &subscribe(V5, b"x", options),
            DecodeError::ReservedSubscriptionOptions,
            MALFORMED,
        );
    }
}

/// MQTT 5.0 §3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3".
#[test]
fn retain_handling_3() {
    for options in [0x30, 0x31, 0x3E] {
        assert_rejects(
            V5,
            &subscribe(V5, b"x", options),
            DecodeError::InvalidRetainHandling,
            ReasonCode::ProtocolError,
        );
    }
}

/// MQTT 3.1.1 §3.8.3 [MQTT-3.8.3-3] / MQTT 5.0 §3.8.3 [MQTT-3.8.3-2] ("A SUBSCRIBE packet with
/// no Payload is a Protocol Error") and §3.10.3 [MQTT-3.10.3-2] for UNSUBSCRIBE.
#[test]
fn subscribe_and_unsubscribe_without_filters() {
    for first in [0x82, 0xA2] {
        assert_rejects(
            V3_1_1,
            &[first, 0x02, 0x00, 0x01],
            DecodeError::NoTopicFilters,
            ReasonCode::ProtocolError,
        );
        assert_rejects(
            V5,
            &[first, 0x03, 0x00, 0x01, 0x00],
            DecodeError::NoTopicFilters,
            ReasonCode::ProtocolError,
        );
        // Properties but still no filter.
        assert_rejects(
            V5,
            &[
                first, 0x0A, 0x00, 0x01, 0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
            ],
            DecodeError::NoTopicFilters,
            ReasonCode::ProtocolError,
        );
    }
}

/// MQTT 5.0 §3.9.3 / §3.11.3 (one reason code per filter, and there is at least one filter);
/// MQTT 3.1.1 §3.9.3: a SUBACK without any return code is cut short.
#[test]
fn suback_and_unsuback_without_codes() {
    assert_rejects(
        V3_1_1,
        &[0x90, 0x02, 0x00, 0x01],
        DecodeError::Truncated,
        MALFORMED,
    );
    assert_rejects(
        V5,
        &[0x90, 0x03, 0x00, 0x01, 0x00],
        DecodeError::Truncated,
        MALFORMED,
    );
    assert_rejects(
        V5,
        &[0xB0, 0x03, 0x00, 0x01, 0x00],
        DecodeError::Truncated,
        MALFORMED,
    );
}
