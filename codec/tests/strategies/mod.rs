//! proptest generators of packets that are valid for one protocol version: the values a
//! conforming peer may send, so that decoding their encoding must give them back unchanged.
//!
//! * MQTT 3.x: no properties, `Success` reason codes (CONNACK and SUBACK codes from the 3.x
//!   sets), QoS-only subscription options, UNSUBACK without reason codes, no AUTH.
//! * MQTT 5: reason codes from [`ReasonCode::valid_for`], properties only from
//!   [`PropertyContext::allowed`] with values in range, and `None` for an empty property block
//!   (what the decoder yields for a property length of 0).
//! * Everywhere: non-zero packet identifiers (0 for QoS 0 PUBLISH), topic names without
//!   wildcards, valid filters (plain, `$share/{group}/` and `$queue/`), strings without U+0000.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::Union;
use ringmq_codec::properties::{id, PropertyContext};
use ringmq_codec::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, PacketType, Properties, ProtocolVersion,
    Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeFilter,
    SubscriptionOptions, UnsubAck, Unsubscribe, Utf8Bytes, Will, VARINT_MAX,
};

/// Every protocol version.
pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// Every packet type, with the versions it exists in.
pub fn packet_types(version: ProtocolVersion) -> Vec<PacketType> {
    (1..=15)
        .filter_map(PacketType::from_nibble)
        .filter(|t| *t != PacketType::Auth || version.is_v5())
        .collect()
}

fn utf8(s: String) -> Utf8Bytes {
    Utf8Bytes::try_from(s).expect("generated strings hold no U+0000")
}

/// An MQTT string of at most `max` chars: mostly short ASCII, sometimes any char but U+0000.
pub fn string(max: usize) -> BoxedStrategy<Utf8Bytes> {
    prop_oneof![
        3 => proptest::string::string_regex(&format!("[a-zA-Z0-9/_ $-]{{0,{max}}}")).unwrap(),
        1 => proptest::string::string_regex(&format!("[^\\x00]{{0,{max}}}")).unwrap(),
    ]
    .prop_map(utf8)
    .boxed()
}

/// Binary data of at most `max` bytes.
pub fn binary(max: usize) -> BoxedStrategy<Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from).boxed()
}

/// A QoS.
pub fn qos() -> BoxedStrategy<QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
    .boxed()
}

/// A non-zero packet identifier, often at the edges.
pub fn packet_id() -> BoxedStrategy<u16> {
    prop_oneof![Just(1u16), Just(u16::MAX), 1..=u16::MAX].boxed()
}

/// One level of a topic name: empty levels, `$` levels and non-ASCII ones included.
fn level() -> BoxedStrategy<String> {
    prop_oneof![
        1 => Just(String::new()),
        4 => "[a-z0-9]{1,6}",
        1 => "\\$[A-Z]{1,4}",
        1 => "[^\\x00/+#]{1,4}",
    ]
    .boxed()
}

/// A topic name: non-empty, no wildcard.
pub fn topic_name() -> BoxedStrategy<Utf8Bytes> {
    vec(level(), 1..5)
        .prop_map(|l| l.join("/"))
        .prop_filter("a topic name is not empty", |s| !s.is_empty())
        .prop_map(utf8)
        .boxed()
}

/// A plain topic filter: `+` levels anywhere, `#` only as the last level.
pub fn plain_filter() -> BoxedStrategy<String> {
    let level = prop_oneof![3 => level(), 1 => Just("+".to_string())];
    (vec(level, 0..5), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash || levels.is_empty() {
                levels.push("#".into());
            }
            levels.join("/")
        })
        .prop_filter("a filter is not empty", |s| !s.is_empty())
        .boxed()
}

/// A filter as SUBSCRIBE and UNSUBSCRIBE carry it, and whether it is a shared subscription.
pub fn subscription_filter() -> BoxedStrategy<(Utf8Bytes, bool)> {
    prop_oneof![
        4 => plain_filter().prop_map(|f| (f, false)),
        1 => ("[a-zA-Z0-9_$-]{1,6}", plain_filter())
            .prop_map(|(group, f)| (format!("$share/{group}/{f}"), true)),
        1 => plain_filter().prop_map(|f| (format!("$queue/{f}"), true)),
    ]
    .prop_map(|(f, shared)| (utf8(f), shared))
    .boxed()
}

/// A reason code that `packet` may carry in MQTT 5.
pub fn reason(packet: PacketType) -> BoxedStrategy<ReasonCode> {
    let valid: Vec<ReasonCode> = ReasonCode::ALL
        .iter()
        .copied()
        .filter(|c| c.valid_for(packet))
        .collect();
    proptest::sample::select(valid).boxed()
}

/// A property block holding property `pid` alone, with a valid value.
fn one_property(pid: u8) -> BoxedStrategy<Properties> {
    macro_rules! set {
        ($field:ident, $value:expr) => {
            $value
                .prop_map(|v| Properties {
                    $field: Some(v),
                    ..Properties::default()
                })
                .boxed()
        };
    }
    let non_zero_u16 = || 1..=u16::MAX;
    match pid {
        id::PAYLOAD_FORMAT_INDICATOR => set!(payload_format_indicator, any::<bool>()),
        id::MESSAGE_EXPIRY_INTERVAL => set!(message_expiry_interval, any::<u32>()),
        id::CONTENT_TYPE => set!(content_type, string(12)),
        id::RESPONSE_TOPIC => set!(response_topic, topic_name()),
        id::CORRELATION_DATA => set!(correlation_data, binary(12)),
        id::SUBSCRIPTION_IDENTIFIER => prop_oneof![Just(1), Just(VARINT_MAX), 1..=VARINT_MAX]
            .prop_map(|v| Properties {
                subscription_identifiers: vec![v],
                ..Properties::default()
            })
            .boxed(),
        id::SESSION_EXPIRY_INTERVAL => set!(session_expiry_interval, any::<u32>()),
        id::ASSIGNED_CLIENT_IDENTIFIER => set!(assigned_client_identifier, string(12)),
        id::SERVER_KEEP_ALIVE => set!(server_keep_alive, any::<u16>()),
        id::AUTHENTICATION_METHOD => set!(authentication_method, string(12)),
        id::AUTHENTICATION_DATA => set!(authentication_data, binary(12)),
        id::REQUEST_PROBLEM_INFORMATION => set!(request_problem_information, any::<bool>()),
        id::WILL_DELAY_INTERVAL => set!(will_delay_interval, any::<u32>()),
        id::REQUEST_RESPONSE_INFORMATION => set!(request_response_information, any::<bool>()),
        id::RESPONSE_INFORMATION => set!(response_information, string(12)),
        id::SERVER_REFERENCE => set!(server_reference, string(12)),
        id::REASON_STRING => set!(reason_string, string(12)),
        id::RECEIVE_MAXIMUM => set!(receive_maximum, non_zero_u16()),
        id::TOPIC_ALIAS_MAXIMUM => set!(topic_alias_maximum, any::<u16>()),
        id::TOPIC_ALIAS => set!(topic_alias, non_zero_u16()),
        id::MAXIMUM_QOS => set!(
            maximum_qos,
            prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce)]
        ),
        id::RETAIN_AVAILABLE => set!(retain_available, any::<bool>()),
        id::USER_PROPERTY => (string(8), string(8))
            .prop_map(|kv| Properties {
                user_properties: vec![kv],
                ..Properties::default()
            })
            .boxed(),
        id::MAXIMUM_PACKET_SIZE => set!(maximum_packet_size, 1..=u32::MAX),
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
            set!(wildcard_subscription_available, any::<bool>())
        }
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
            set!(subscription_identifier_available, any::<bool>())
        }
        id::SHARED_SUBSCRIPTION_AVAILABLE => set!(shared_subscription_available, any::<bool>()),
        _ => unreachable!("property {pid:#04x} is not defined"),
    }
}

/// `a` with the properties set in `b` added (a later single value replaces an earlier one).
fn merge(mut a: Properties, b: Properties) -> Properties {
    macro_rules! take {
        ($($field:ident),*) => {$(
            if b.$field.is_some() {
                a.$field = b.$field;
            }
        )*};
    }
    take!(
        payload_format_indicator,
        message_expiry_interval,
        content_type,
        response_topic,
        correlation_data,
        session_expiry_interval,
        assigned_client_identifier,
        server_keep_alive,
        authentication_method,
        authentication_data,
        request_problem_information,
        will_delay_interval,
        request_response_information,
        response_information,
        server_reference,
        reason_string,
        receive_maximum,
        topic_alias_maximum,
        topic_alias,
        maximum_qos,
        retain_available,
        maximum_packet_size,
        wildcard_subscription_available,
        subscription_identifier_available,
        shared_subscription_available
    );
    a.subscription_identifiers
        .extend(b.subscription_identifiers);
    a.user_properties.extend(b.user_properties);
    a
}

/// A property block for `ctx`: only allowed identifiers, only repeatable ones repeated, `None`
/// for an empty block; always `None` before MQTT 5.
pub fn properties(
    version: ProtocolVersion,
    ctx: PropertyContext,
) -> BoxedStrategy<Option<Box<Properties>>> {
    if !version.is_v5() {
        return Just(None).boxed();
    }
    let allowed: Vec<BoxedStrategy<Properties>> = (0u8..64)
        .filter(|pid| ctx.allowed() & (1u64 << pid) != 0)
        .map(one_property)
        .collect();
    let repeatable_ids = ctx.repeatable() & (1u64 << id::SUBSCRIPTION_IDENTIFIER) != 0;
    vec(Union::new(allowed), 0..6)
        .prop_map(move |items| {
            let mut p = items.into_iter().fold(Properties::default(), merge);
            if !repeatable_ids {
                p.subscription_identifiers.truncate(1);
            }
            (!p.is_empty()).then(|| Box::new(p))
        })
        .boxed()
}

/// Payload Format Indicator 1 promises a UTF-8 payload: make the payload keep that promise.
fn keep_payload_format(props: &Option<Box<Properties>>, payload: Bytes) -> Bytes {
    match props.as_ref().and_then(|p| p.payload_format_indicator) {
        Some(true) => Bytes::from(String::from_utf8_lossy(&payload).into_owned()),
        _ => payload,
    }
}

fn will(version: ProtocolVersion) -> BoxedStrategy<Will> {
    (
        topic_name(),
        binary(24),
        qos(),
        any::<bool>(),
        properties(version, PropertyContext::Will),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload: keep_payload_format(&properties, payload),
            qos,
            retain,
            properties,
        })
        .boxed()
}

fn connect(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        (any::<bool>(), any::<u16>()),
        properties(v, PropertyContext::Connect),
        string(23),
        proptest::option::of(will(v)),
        proptest::option::of(string(12)),
        proptest::option::of(binary(12)),
    )
        .prop_map(
            move |((clean_start, keep_alive), properties, client_id, will, username, password)| {
                // Before MQTT 5 a password needs a user name [MQTT-3.1.2-22].
                let password = password.filter(|_| v.is_v5() || username.is_some());
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                }))
            },
        )
        .boxed()
}

fn connack(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let code = if v.is_v5() {
        reason(PacketType::ConnAck)
    } else {
        (0u8..=5)
            .prop_map(|c| ReasonCode::from_v3_connack(c).unwrap())
            .boxed()
    };
    (any::<bool>(), code, properties(v, PropertyContext::ConnAck))
        .prop_map(move |(session_present, reason_code, properties)| {
            // Session Present is 0 with a refusal [MQTT-3.2.2-4], [MQTT-3.2.2-6]; in 3.1 the
            // byte is reserved.
            let session_present =
                session_present && reason_code == ReasonCode::Success && v != VERSIONS[0];
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code,
                properties,
            })
        })
        .boxed()
}

fn publish(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        (qos(), any::<bool>(), any::<bool>(), packet_id()),
        (topic_name(), any::<bool>()),
        properties(v, PropertyContext::Publish),
        binary(64),
    )
        .prop_map(
            |((qos, dup, retain, id), (topic, aliased), properties, payload)| {
                let at_most_once = qos == QoS::AtMostOnce;
                // An empty topic name stands for the Topic Alias (MQTT 5 3.3.2.3.4).
                let alias = properties.as_ref().is_some_and(|p| p.topic_alias.is_some());
                Packet::Publish(Publish {
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic: if alias && aliased {
                        Utf8Bytes::default()
                    } else {
                        topic
                    },
                    packet_id: if at_most_once { 0 } else { id },
                    payload: keep_payload_format(&properties, payload),
                    properties,
                })
            },
        )
        .boxed()
}

fn ack(t: PacketType, v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let code = if v.is_v5() {
        reason(t)
    } else {
        Just(ReasonCode::Success).boxed()
    };
    (packet_id(), code, properties(v, PropertyContext::Ack(t)))
        .prop_map(move |(packet_id, reason_code, properties)| {
            let ack = Ack {
                packet_id,
                reason_code,
                properties,
            };
            match t {
                PacketType::PubAck => Packet::PubAck(ack),
                PacketType::PubRec => Packet::PubRec(ack),
                PacketType::PubRel => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        })
        .boxed()
}

fn subscribe(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let retain_handling = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend),
    ];
    let entry = (
        subscription_filter(),
        qos(),
        any::<bool>(),
        any::<bool>(),
        retain_handling,
    )
        .prop_map(move |((filter, shared), qos, no_local, rap, rh)| {
            let options = if v.is_v5() {
                SubscriptionOptions {
                    qos,
                    // No Local is a Protocol Error on a shared subscription [MQTT-3.8.3-4].
                    no_local: no_local && !shared,
                    retain_as_published: rap,
                    retain_handling: rh,
                }
            } else {
                SubscriptionOptions::qos(qos)
            };
            SubscribeFilter { filter, options }
        });
    (
        packet_id(),
        properties(v, PropertyContext::Subscribe),
        vec(entry, 1..5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
        .boxed()
}

fn suback(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let code = if v.is_v5() {
        reason(PacketType::SubAck)
    } else {
        proptest::sample::select(vec![
            ReasonCode::Success,
            ReasonCode::GrantedQoS1,
            ReasonCode::GrantedQoS2,
            ReasonCode::UnspecifiedError,
        ])
        .boxed()
    };
    (
        packet_id(),
        properties(v, PropertyContext::SubAck),
        vec(code, 1..6),
    )
        .prop_map(|(packet_id, properties, return_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                return_codes,
            })
        })
        .boxed()
}

fn unsubscribe(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    (
        packet_id(),
        properties(v, PropertyContext::Unsubscribe),
        vec(subscription_filter().prop_map(|(f, _)| f), 1..5),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                properties,
                filters,
            })
        })
        .boxed()
}

fn unsuback(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let codes = if v.is_v5() {
        vec(reason(PacketType::UnsubAck), 1..6).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (packet_id(), properties(v, PropertyContext::UnsubAck), codes)
        .prop_map(|(packet_id, properties, reason_codes)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reason_codes,
            })
        })
        .boxed()
}

fn disconnect(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    if !v.is_v5() {
        return Just(Packet::Disconnect(Disconnect::NORMAL)).boxed();
    }
    (
        reason(PacketType::Disconnect),
        properties(v, PropertyContext::Disconnect),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code,
                properties,
            })
        })
        .boxed()
}

fn auth() -> BoxedStrategy<Packet> {
    (
        reason(PacketType::Auth),
        properties(ProtocolVersion::V5, PropertyContext::Auth),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        })
        .boxed()
}

/// A packet of type `t`, valid for version `v` (`t` must exist in `v`).
pub fn packet(t: PacketType, v: ProtocolVersion) -> BoxedStrategy<Packet> {
    match t {
        PacketType::Connect => connect(v),
        PacketType::ConnAck => connack(v),
        PacketType::Publish => publish(v),
        PacketType::PubAck | PacketType::PubRec | PacketType::PubRel | PacketType::PubComp => {
            ack(t, v)
        }
        PacketType::Subscribe => subscribe(v),
        PacketType::SubAck => suback(v),
        PacketType::Unsubscribe => unsubscribe(v),
        PacketType::UnsubAck => unsuback(v),
        PacketType::PingReq => Just(Packet::PingReq).boxed(),
        PacketType::PingResp => Just(Packet::PingResp).boxed(),
        PacketType::Disconnect => disconnect(v),
        PacketType::Auth => {
            assert!(v.is_v5(), "AUTH exists only in MQTT 5");
            auth()
        }
    }
}

/// Any packet valid for `v`.
pub fn any_packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    Union::new(packet_types(v).into_iter().map(move |t| packet(t, v))).boxed()
}
