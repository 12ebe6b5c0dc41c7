//! MQTT 5 features over real sockets: topic aliases from the client, the client's Maximum Packet
//! Size, subscription identifiers, No Local, application properties passed through, message
//! expiry and the Payload Format Indicator; and overlapping subscriptions delivered once with the
//! highest QoS (3.1.1 and 5.0).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{id_on_core, publish_packet, sub_options, Broker, Client, VERSIONS};
use ringmq_codec::{
    Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, Utf8Bytes,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const QUIET: Duration = Duration::from_millis(400);

fn with_props(mut p: Publish, props: Properties) -> Publish {
    p.properties = Some(Box::new(props));
    p
}

fn alias(n: u16) -> Properties {
    Properties {
        topic_alias: Some(n),
        ..Default::default()
    }
}

#[test]
fn topic_aliases_from_the_client() {
    let broker = Broker::cores(2);
    let mut sub = Client::connect(broker.addr, &id_on_core("ta-sub", 0, 2), V5);
    sub.subscribe_ok("ta/#", QoS::AtLeastOnce);
    let pub_id = id_on_core("ta-pub", 1, 2);
    let (mut publ, ack) = Client::connect_ok(broker.addr, &pub_id, V5, |_| {});
    assert_eq!(ack.properties.unwrap().topic_alias_maximum, Some(64));
    broker.settle();
    let steps: [(&str, u16, &str); 4] = [
        ("ta/x", 1, "ta/x"), // sets alias 1
        ("", 1, "ta/x"),     // uses it
        ("ta/y", 1, "ta/y"), // remaps it
        ("", 1, "ta/y"),
    ];
    for (n, (topic, a, expect)) in steps.into_iter().enumerate() {
        let id = n as u16 + 1;
        let p = with_props(
            publish_packet("x", &[n as u8], QoS::AtLeastOnce, false, id),
            alias(a),
        );
        let p = Publish {
            topic: Utf8Bytes::try_from(topic).unwrap(),
            ..p
        };
        publ.send(&Packet::Publish(p));
        assert!(
            matches!(publ.expect(), Packet::PubAck(a) if a.packet_id == id && a.reason_code == ReasonCode::Success)
        );
        let got = sub.expect_publish_acked();
        assert_eq!((&*got.topic, &got.payload[..]), (expect, &[n as u8][..]));
        assert!(
            got.properties.is_none_or(|p| p.topic_alias.is_none()),
            "the alias is not forwarded"
        );
    }
    // The highest alias announced works too.
    publ.send(&Packet::Publish(with_props(
        publish_packet("ta/max", b"m", QoS::AtMostOnce, false, 0),
        alias(64),
    )));
    assert_eq!(&*sub.expect_publish().topic, "ta/max");
    // Aliases belong to the connection: after a reconnect alias 1 is unknown, a Protocol Error.
    drop(publ);
    let (mut publ, _) = Client::connect_ok(broker.addr, &pub_id, V5, |_| {});
    let mut p = with_props(
        publish_packet("x", b"?", QoS::AtMostOnce, false, 0),
        alias(1),
    );
    p.topic = Utf8Bytes::default();
    publ.send(&Packet::Publish(p));
    publ.expect_close(ReasonCode::ProtocolError);
    sub.expect_nothing(QUIET);
}

#[test]
fn broker_never_sends_more_than_the_clients_maximum_packet_size() {
    let broker = Broker::cores(2);
    let (mut small, _) = Client::connect_ok(broker.addr, &id_on_core("mps", 0, 2), V5, |c| {
        c.properties = Some(Box::new(Properties {
            maximum_packet_size: Some(128),
            ..Default::default()
        }));
    });
    small.subscribe_ok("mps/#", QoS::AtLeastOnce);
    let mut big = Client::connect(broker.addr, &id_on_core("mps-big", 1, 2), V5);
    big.subscribe_ok("mps/#", QoS::AtLeastOnce);
    let mut publ = Client::connect(broker.addr, &id_on_core("mps-pub", 1, 2), V5);
    broker.settle();
    publ.publish_acked("mps/a", &[b'x'; 400], QoS::AtLeastOnce, false, 1);
    publ.publish_acked("mps/a", &[b'y'; 100], QoS::AtMostOnce, false, 2);
    publ.publish_acked("mps/a", b"small", QoS::AtLeastOnce, false, 3);
    assert_eq!(big.expect_publish_acked().payload.len(), 400);
    assert_eq!(big.expect_publish_acked().payload.len(), 100);
    assert_eq!(&big.expect_publish_acked().payload[..], b"small");
    // The small client skips the oversized message (as if delivered) and gets the next ones.
    let p = small.expect_publish_acked();
    assert_eq!(p.payload.len(), 100);
    let p = small.expect_publish_acked();
    assert_eq!(&p.payload[..], b"small");
    // A retained message over the limit is not sent at subscribe either.
    publ.publish_acked("mps/r", &[b'r'; 300], QoS::AtLeastOnce, true, 4);
    assert_eq!(big.expect_publish_acked().payload.len(), 300);
    small.expect_nothing(QUIET);
    broker.settle();
    small.subscribe_ok("mps/r", QoS::AtLeastOnce);
    small.expect_nothing(QUIET);
    small.send(&Packet::PingReq);
    assert_eq!(small.recv(), Some(Packet::PingResp), "still connected");
    publ.publish_acked("mps/r", b"", QoS::AtLeastOnce, true, 5);
}

fn sub_id(id: u32) -> Option<Box<Properties>> {
    Some(Box::new(Properties {
        subscription_identifiers: vec![id],
        ..Default::default()
    }))
}

#[test]
fn subscription_identifiers() {
    let broker = Broker::cores(2);
    let mut sub = Client::connect(broker.addr, &id_on_core("sid", 1, 2), V5);
    let o = |q| sub_options(q, false, false, RetainHandling::SendAtSubscribe);
    sub.subscribe_many(1, &[("sid/+", o(QoS::AtLeastOnce))], sub_id(7));
    sub.subscribe_many(2, &[("sid/#", o(QoS::AtMostOnce))], sub_id(268_435_455));
    sub.subscribe_many(3, &[("nosid/t", o(QoS::AtMostOnce))], None);
    let mut publ = Client::connect(broker.addr, &id_on_core("sid-pub", 0, 2), V5);
    broker.settle();
    publ.publish_acked("sid/a", b"1", QoS::AtLeastOnce, false, 1);
    let p = sub.expect_publish_acked();
    let mut ids = p.properties.unwrap().subscription_identifiers;
    ids.sort();
    assert_eq!(
        ids,
        vec![7, 268_435_455],
        "one delivery carrying both identifiers"
    );
    publ.publish_acked("sid/a/b", b"2", QoS::AtLeastOnce, false, 2);
    let p = sub.expect_publish();
    assert_eq!(
        p.properties.unwrap().subscription_identifiers,
        vec![268_435_455]
    );
    // A subscription without an identifier adds none.
    sub.send(&Packet::Unsubscribe(ringmq_codec::Unsubscribe {
        packet_id: 4,
        properties: None,
        filters: vec![Utf8Bytes::from_static("sid/#")],
    }));
    assert!(matches!(sub.expect(), Packet::UnsubAck(_)));
    publ.publish_acked("nosid/t", b"3", QoS::AtLeastOnce, false, 3);
    let p = sub.expect_publish_acked();
    assert_eq!(
        p.properties.map(|p| p.subscription_identifiers),
        None,
        "{:?}",
        &p.payload
    );
    // Re-subscribing replaces the identifier; it also comes with retained messages.
    publ.publish_acked("sid/r", b"ret", QoS::AtLeastOnce, true, 4);
    let _live = sub.expect_publish_acked();
    sub.subscribe_many(5, &[("sid/+", o(QoS::AtLeastOnce))], sub_id(8));
    let p = sub.expect_publish_acked();
    assert!(p.retain);
    assert_eq!(p.properties.unwrap().subscription_identifiers, vec![8]);
    publ.publish_acked("sid/r", b"", QoS::AtLeastOnce, true, 5);
}

#[test]
fn no_local() {
    let broker = Broker::cores(2);
    let mut me = Client::connect(broker.addr, &id_on_core("nl-me", 0, 2), V5);
    let a = me.subscribe_many(
        1,
        &[(
            "nl/t",
            sub_options(
                QoS::AtLeastOnce,
                true,
                false,
                RetainHandling::SendAtSubscribe,
            ),
        )],
        None,
    );
    assert_eq!(a.return_codes, vec![ReasonCode::GrantedQoS1]);
    let mut other = Client::connect(broker.addr, &id_on_core("nl-other", 1, 2), V5);
    other.subscribe_ok("nl/t", QoS::AtLeastOnce);
    broker.settle();
    me.publish_acked("nl/t", b"mine", QoS::AtLeastOnce, false, 1);
    assert_eq!(&other.expect_publish_acked().payload[..], b"mine");
    me.expect_nothing(QUIET);
    other.publish_acked("nl/t", b"theirs", QoS::AtLeastOnce, false, 2);
    assert_eq!(&me.expect_publish_acked().payload[..], b"theirs");
    assert_eq!(&other.expect_publish_acked().payload[..], b"theirs");
}

#[test]
fn overlapping_subscriptions_are_delivered_once_with_the_highest_qos() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let mut sub = Client::connect(broker.addr, &id_on_core(&format!("ov-{v:?}"), 1, 2), v);
        sub.subscribe_ok("ov/#", QoS::AtMostOnce);
        sub.subscribe_ok("ov/+", QoS::ExactlyOnce);
        sub.subscribe_ok("ov/a", QoS::AtLeastOnce);
        sub.subscribe_ok("+/a", QoS::AtMostOnce);
        let mut publ = Client::connect(broker.addr, &id_on_core(&format!("ov-p-{v:?}"), 0, 2), v);
        broker.settle();
        publ.publish_acked("ov/a", b"x", QoS::ExactlyOnce, false, 1);
        let p = sub.expect_publish_acked();
        assert_eq!(p.qos, QoS::ExactlyOnce, "{v:?}");
        sub.expect_nothing(QUIET);
        publ.publish_acked("ov/a/b", b"y", QoS::ExactlyOnce, false, 2);
        assert_eq!(
            sub.expect_publish().qos,
            QoS::AtMostOnce,
            "only ov/# matches"
        );
        sub.expect_nothing(QUIET);
    }
}

#[test]
fn application_properties_are_passed_through() {
    let broker = Broker::cores(2);
    let mut sub = Client::connect(broker.addr, &id_on_core("app-sub", 0, 2), V5);
    sub.subscribe_ok("app/req", QoS::AtLeastOnce);
    let mut publ = Client::connect(broker.addr, &id_on_core("app-pub", 1, 2), V5);
    broker.settle();
    let s = Utf8Bytes::from_static;
    let props = Properties {
        payload_format_indicator: Some(true),
        content_type: Some(s("application/json")),
        response_topic: Some(s("app/resp/42")),
        correlation_data: Some(Bytes::from_static(&[0, 1, 2, 255])),
        user_properties: vec![(s("a"), s("1")), (s("b"), s("2")), (s("a"), s("3"))],
        ..Default::default()
    };
    publ.send(&Packet::Publish(with_props(
        publish_packet("app/req", b"{\"q\":1}", QoS::AtLeastOnce, false, 1),
        props.clone(),
    )));
    assert!(matches!(publ.expect(), Packet::PubAck(_)));
    let p = sub.expect_publish_acked();
    assert_eq!(p.properties.as_deref(), Some(&props), "unchanged, in order");
    // The same message to a 3.1.1 subscriber has no properties at all.
    let mut old = Client::connect(broker.addr, "app-311", ProtocolVersion::V3_1_1);
    old.subscribe_ok("app/req", QoS::AtLeastOnce);
    broker.settle();
    publ.send(&Packet::Publish(with_props(
        publish_packet("app/req", b"r", QoS::AtLeastOnce, false, 2),
        props,
    )));
    assert_eq!(&old.expect_publish_acked().payload[..], b"r");
}

#[test]
fn message_expiry_interval() {
    let broker = Broker::cores(2);
    let id = id_on_core("mx", 1, 2);
    let (mut sub, _) = Client::connect_persistent(broker.addr, &id, V5, 60);
    sub.subscribe_ok("mx/t", QoS::AtLeastOnce);
    sub.disconnect();
    let mut publ = Client::connect(broker.addr, &id_on_core("mx-pub", 0, 2), V5);
    broker.settle();
    let expiry = |secs| Properties {
        message_expiry_interval: Some(secs),
        ..Default::default()
    };
    for (n, secs) in [(1u16, 1u32), (2, 100)] {
        publ.send(&Packet::Publish(with_props(
            publish_packet("mx/t", &[n as u8], QoS::AtLeastOnce, false, n),
            expiry(secs),
        )));
        assert!(matches!(publ.expect(), Packet::PubAck(_)));
    }
    std::thread::sleep(Duration::from_millis(1600));
    let (mut sub, present) = Client::connect_persistent(broker.addr, &id, V5, 60);
    assert!(present);
    let p = sub.expect_publish_acked();
    assert_eq!(
        p.payload[..],
        [2],
        "the message with 1 s expiry was dropped"
    );
    let left = p.properties.unwrap().message_expiry_interval.unwrap();
    assert!((97..100).contains(&left), "expiry counts down: {left}");
    sub.expect_nothing(QUIET);
}

#[test]
fn payload_format_indicator_with_invalid_utf8_is_refused() {
    let broker = Broker::cores(2);
    let mut sub = Client::connect(broker.addr, "pfi-sub", V5);
    sub.subscribe_ok("pfi/t", QoS::AtMostOnce);
    let mut publ = Client::connect(broker.addr, "pfi-pub", V5);
    broker.settle();
    let utf8 = Properties {
        payload_format_indicator: Some(true),
        ..Default::default()
    };
    publ.send(&Packet::Publish(with_props(
        publish_packet("pfi/t", "ünïcode".as_bytes(), QoS::AtMostOnce, false, 0),
        utf8.clone(),
    )));
    assert_eq!(sub.expect_publish().payload, "ünïcode".as_bytes());
    publ.send(&Packet::Publish(with_props(
        publish_packet("pfi/t", &[0xFF, 0xFE, b'a'], QoS::AtLeastOnce, false, 1),
        utf8,
    )));
    publ.expect_close(ReasonCode::PayloadFormatInvalid);
    sub.expect_nothing(QUIET);
}

#[test]
fn unsuback_reason_codes() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let mut c = Client::connect(broker.addr, &format!("unsub-{v:?}"), v);
        c.subscribe_ok("un/a", QoS::AtLeastOnce);
        c.subscribe_ok("$share/g/un/b", QoS::AtLeastOnce);
        c.send(&Packet::Unsubscribe(ringmq_codec::Unsubscribe {
            packet_id: 12,
            properties: None,
            filters: ["un/a", "un/none", "$share/g/un/b"]
                .into_iter()
                .map(Utf8Bytes::from_static)
                .collect(),
        }));
        match c.expect() {
            Packet::UnsubAck(a) => {
                assert_eq!(a.packet_id, 12);
                if v.is_v5() {
                    assert_eq!(
                        a.reason_codes,
                        vec![
                            ReasonCode::Success,
                            ReasonCode::NoSubscriptionExisted,
                            ReasonCode::Success
                        ]
                    );
                }
            }
            other => panic!("{other:?}"),
        }
        // Really gone.
        c.publish_acked("un/a", b"x", QoS::AtMostOnce, false, 1);
        c.publish_acked("un/b", b"x", QoS::AtMostOnce, false, 1);
        c.expect_nothing(QUIET);
    }
}

#[test]
fn topic_aliases_to_the_client_within_its_maximum() {
    let broker = Broker::cores(2);
    let (mut sub, _) = Client::connect_ok(broker.addr, &id_on_core("alias-sub", 1, 2), V5, |c| {
        c.properties = Some(Box::new(Properties {
            topic_alias_maximum: Some(1),
            ..Default::default()
        }));
    });
    sub.subscribe_ok("alias/#", QoS::AtMostOnce);
    broker.settle();
    let mut publ = Client::connect(broker.addr, &id_on_core("alias-pub", 0, 2), V5);
    for topic in ["alias/a", "alias/a", "alias/b", "alias/a"] {
        publ.publish(topic, b"x", QoS::AtMostOnce, false);
    }
    let got: Vec<(String, Option<u16>)> = (0..4)
        .map(|_| {
            let p = sub.expect_publish();
            (
                p.topic.to_string(),
                p.properties.and_then(|p| p.topic_alias),
            )
        })
        .collect();
    let want = [
        ("alias/a", Some(1)),
        ("", Some(1)),
        ("alias/b", None), // beyond the client's Topic Alias Maximum of 1
        ("", Some(1)),
    ];
    assert_eq!(got, want.map(|(t, a)| (t.to_string(), a)).to_vec());
}
