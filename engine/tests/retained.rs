//! Retained messages over real sockets: set, replace, clear with an empty payload, delivery on
//! subscribe with the RETAIN flag, Retain Handling 0/1/2 and Retain As Published (5.0), with
//! publishers and subscribers on different cores (the store is replicated on every core).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{id_on_core, sub_options, Broker, Client, VERSIONS};
use ringmq_codec::{Packet, ProtocolVersion, QoS, ReasonCode, RetainHandling};

const QUIET: Duration = Duration::from_millis(400);

#[test]
fn set_replace_and_clear_across_cores() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let root = format!("ret-{v:?}");
        let mut publ = Client::connect(broker.addr, &id_on_core(&format!("rp-{v:?}"), 1, 2), v);
        publ.publish_acked(&format!("{root}/a"), b"first", QoS::AtLeastOnce, true, 1);
        publ.publish_acked(&format!("{root}/a"), b"second", QoS::AtLeastOnce, true, 2);
        publ.publish_acked(&format!("{root}/b/c"), b"bc", QoS::AtMostOnce, true, 3);
        publ.publish_acked(
            &format!("{root}/d"),
            b"not retained",
            QoS::AtLeastOnce,
            false,
            4,
        );
        broker.settle();
        // A subscriber on the other core gets each retained topic once, the latest value, with
        // RETAIN set.
        for core in [0, 1] {
            let id = id_on_core(&format!("rs-{v:?}"), core, 2);
            let mut sub = Client::connect(broker.addr, &id, v);
            sub.subscribe_ok(&format!("{root}/#"), QoS::AtLeastOnce);
            let mut got = BTreeMap::new();
            for _ in 0..2 {
                let p = sub.expect_publish_acked();
                assert!(p.retain, "{v:?}: RETAIN set on a retained message");
                got.insert(p.topic.to_string(), (p.payload.to_vec(), p.qos));
            }
            sub.expect_nothing(QUIET);
            assert_eq!(
                got,
                BTreeMap::from([
                    (format!("{root}/a"), (b"second".to_vec(), QoS::AtLeastOnce)),
                    (format!("{root}/b/c"), (b"bc".to_vec(), QoS::AtMostOnce)),
                ]),
                "{v:?} core {core}"
            );
            sub.disconnect();
        }
        // Clearing: an empty retained payload removes the topic on every core.
        publ.publish_acked(&format!("{root}/a"), b"", QoS::AtLeastOnce, true, 5);
        broker.settle();
        for core in [0, 1] {
            let id = id_on_core(&format!("rc-{v:?}"), core, 2);
            let mut sub = Client::connect(broker.addr, &id, v);
            sub.subscribe_ok(&format!("{root}/+"), QoS::AtLeastOnce);
            sub.expect_nothing(QUIET);
            sub.disconnect();
        }
    }
}

#[test]
fn live_messages_to_existing_subscribers_have_retain_cleared() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let mut sub = Client::connect(broker.addr, &id_on_core(&format!("lv-{v:?}"), 0, 2), v);
        sub.subscribe_ok("live/r", QoS::AtLeastOnce);
        let mut publ = Client::connect(broker.addr, &id_on_core(&format!("lv-p-{v:?}"), 1, 2), v);
        broker.settle();
        publ.publish_acked("live/r", b"v", QoS::AtLeastOnce, true, 1);
        let p = sub.expect_publish_acked();
        assert_eq!(&p.payload[..], b"v");
        assert!(
            !p.retain,
            "{v:?}: [MQTT-3.3.1-9] RETAIN 0 for an established subscription"
        );
        // The retained copy is delivered, flagged, to a later subscription.
        sub.subscribe_ok("live/+", QoS::AtMostOnce);
        let p = sub.expect_publish();
        assert!(p.retain && &p.payload[..] == b"v" && p.qos == QoS::AtMostOnce);
        publ.publish_acked("live/r", b"", QoS::AtMostOnce, true, 2);
        // The clear reaches the other core over the mesh; the next round subscribes there.
        broker.settle();
    }
}

#[test]
fn v5_retain_handling_0_1_2() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let mut publ = Client::connect(broker.addr, &id_on_core("rh-pub", 1, 2), v);
    publ.publish_acked("rh/t", b"kept", QoS::AtLeastOnce, true, 1);
    broker.settle();
    let mut sub = Client::connect(broker.addr, &id_on_core("rh-sub", 0, 2), v);
    let subscribe = |sub: &mut Client, filter: &str, rh: RetainHandling| {
        let a = sub.subscribe_many(
            3,
            &[(filter, sub_options(QoS::AtLeastOnce, false, false, rh))],
            None,
        );
        assert_eq!(a.return_codes, vec![ReasonCode::GrantedQoS1]);
    };
    // 0: sent at every subscribe, new or not.
    for _ in 0..2 {
        subscribe(&mut sub, "rh/#", RetainHandling::SendAtSubscribe);
        let p = sub.expect_publish_acked();
        assert!(p.retain && &p.payload[..] == b"kept");
    }
    // 1: only when the subscription is new.
    subscribe(&mut sub, "rh/+", RetainHandling::SendIfNew);
    assert!(sub.expect_publish_acked().retain);
    subscribe(&mut sub, "rh/+", RetainHandling::SendIfNew);
    sub.expect_nothing(QUIET);
    // 2: never.
    subscribe(&mut sub, "rh/t", RetainHandling::DoNotSend);
    sub.expect_nothing(QUIET);
    // The subscriptions work for live messages all the same (merged into one delivery).
    broker.settle();
    publ.publish_acked("rh/t", b"live", QoS::AtLeastOnce, false, 2);
    assert_eq!(&sub.expect_publish_acked().payload[..], b"live");
    sub.expect_nothing(QUIET);
}

#[test]
fn v5_retain_as_published() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let mut keep = Client::connect(broker.addr, &id_on_core("rap1", 0, 2), v);
    let a = keep.subscribe_many(
        1,
        &[(
            "rap/t",
            sub_options(
                QoS::AtLeastOnce,
                false,
                true,
                RetainHandling::SendAtSubscribe,
            ),
        )],
        None,
    );
    assert_eq!(a.return_codes, vec![ReasonCode::GrantedQoS1]);
    let mut clear = Client::connect(broker.addr, &id_on_core("rap0", 1, 2), v);
    clear.subscribe_ok("rap/t", QoS::AtLeastOnce);
    let mut publ = Client::connect(broker.addr, &id_on_core("rap-pub", 1, 2), v);
    broker.settle();
    publ.publish_acked("rap/t", b"r", QoS::AtLeastOnce, true, 1);
    publ.publish_acked("rap/t", b"n", QoS::AtLeastOnce, false, 2);
    let (r, n) = (keep.expect_publish_acked(), keep.expect_publish_acked());
    assert_eq!(
        (&r.payload[..], r.retain),
        (&b"r"[..], true),
        "kept as published"
    );
    assert_eq!((&n.payload[..], n.retain), (&b"n"[..], false));
    let (r, n) = (clear.expect_publish_acked(), clear.expect_publish_acked());
    assert_eq!(
        (r.retain, n.retain),
        (false, false),
        "RAP 0 clears the flag"
    );
    publ.publish_acked("rap/t", b"", QoS::AtLeastOnce, true, 3);
}

#[test]
fn retained_delivered_at_the_lower_qos_and_cleared_by_empty_qos0() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let t = format!("rq-{v:?}/x");
        let mut publ = Client::connect(broker.addr, &id_on_core(&format!("rq-p-{v:?}"), 0, 2), v);
        publ.publish_acked(&t, b"q2", QoS::ExactlyOnce, true, 1);
        broker.settle();
        let mut sub = Client::connect(broker.addr, &id_on_core(&format!("rq-s-{v:?}"), 1, 2), v);
        sub.subscribe_ok(&t, QoS::AtLeastOnce);
        let p = sub.expect_publish_acked();
        assert_eq!((p.qos, p.retain), (QoS::AtLeastOnce, true));
        sub.subscribe_ok(&t, QoS::ExactlyOnce);
        let p = sub.expect_publish_acked();
        assert_eq!((p.qos, p.retain), (QoS::ExactlyOnce, true));
        broker.settle();
        // Clear with a QoS 0 empty message; the subscriber sees it live (not flagged).
        publ.send(&Packet::Publish(common::publish_packet(
            &t,
            b"",
            QoS::AtMostOnce,
            true,
            0,
        )));
        let p = sub.expect_publish();
        assert!(p.payload.is_empty() && !p.retain);
        broker.settle();
        sub.subscribe_ok(&t, QoS::ExactlyOnce);
        sub.expect_nothing(QUIET);
    }
}

#[test]
fn v5_retained_message_expiry() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let mut publ = Client::connect(broker.addr, &id_on_core("rx-pub", 0, 2), v);
    for (topic, secs) in [("rx/short", 1), ("rx/long", 100)] {
        let mut p = common::publish_packet(topic, b"v", QoS::AtLeastOnce, true, 1);
        p.properties = Some(Box::new(ringmq_codec::Properties {
            message_expiry_interval: Some(secs),
            ..Default::default()
        }));
        publ.send(&Packet::Publish(p));
        assert!(matches!(publ.expect(), Packet::PubAck(_)));
    }
    broker.settle();
    std::thread::sleep(Duration::from_millis(1300));
    let mut sub = Client::connect(broker.addr, &id_on_core("rx-sub", 1, 2), v);
    sub.subscribe_ok("rx/+", QoS::AtLeastOnce);
    let p = sub.expect_publish_acked();
    assert_eq!(
        &*p.topic, "rx/long",
        "the expired retained message is not sent"
    );
    let left = p.properties.unwrap().message_expiry_interval.unwrap();
    assert!((98..100).contains(&left), "{left}");
    sub.expect_nothing(QUIET);
}
