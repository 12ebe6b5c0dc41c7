//! Shared subscriptions over real sockets: `$share/{group}/{filter}` and `$queue/{filter}` give
//! each message to exactly one member of each group, with members and publishers on both cores
//! of a two-core broker, in 3.1.1 and 5.0.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{id_on_core, Broker, Client, VERSIONS};
use ringmq_codec::{Packet, ProtocolVersion, QoS, Utf8Bytes};

const QUIET: Duration = Duration::from_millis(300);

/// Connects `n` members named `name-i`, alternating cores, subscribed to `filter`.
fn members(broker: &Broker, name: &str, filter: &str, n: usize, v: ProtocolVersion) -> Vec<Client> {
    (0..n)
        .map(|i| {
            let id = id_on_core(&format!("{name}-{i}"), (i % 2) as u16, 2);
            let mut c = Client::connect(broker.addr, &id, v);
            c.subscribe_ok(filter, QoS::AtLeastOnce);
            c
        })
        .collect()
}

/// Receives from every member until `expected` messages arrived in all, then checks that no
/// more come; returns payload -> how many times it was received, and how many messages each
/// member got.
fn collect(members: &mut [Client], expected: usize) -> (HashMap<Vec<u8>, usize>, Vec<usize>) {
    let mut seen = HashMap::new();
    let mut per_member = vec![0; members.len()];
    let deadline = Instant::now() + common::TIMEOUT;
    let mut take = |i: usize, m: &mut Client, wait: Duration| -> bool {
        match m.recv_within(wait) {
            Some(Packet::Publish(p)) => {
                m.ack(&p);
                *seen.entry(p.payload.to_vec()).or_insert(0) += 1;
                per_member[i] += 1;
                true
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => false,
        }
    };
    let mut total = 0;
    while total < expected && Instant::now() < deadline {
        for (i, m) in members.iter_mut().enumerate() {
            while take(i, m, Duration::from_millis(10)) {
                total += 1;
            }
        }
    }
    for (i, m) in members.iter_mut().enumerate() {
        let wait = if i == 0 {
            QUIET
        } else {
            Duration::from_millis(50)
        };
        while take(i, m, wait) {}
    }
    (seen, per_member)
}

/// Publishes `n` QoS 1 messages from one publisher on each core.
fn publish_from_both_cores(broker: &Broker, name: &str, topic: &str, n: u16, v: ProtocolVersion) {
    for core in [0, 1] {
        let mut p = Client::connect(broker.addr, &id_on_core(name, core, 2), v);
        for i in 0..n {
            let payload = format!("{core}-{i}");
            p.publish_acked(topic, payload.as_bytes(), QoS::AtLeastOnce, false, i + 1);
        }
        p.disconnect();
    }
}

#[test]
fn share_group_gives_each_message_to_exactly_one_member() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let mut group = members(&broker, &format!("sg-{v:?}"), "$share/g/sh/+", 4, v);
        let mut plain = Client::connect(broker.addr, &format!("sg-plain-{v:?}"), v);
        plain.subscribe_ok("sh/+", QoS::AtLeastOnce);
        broker.settle();
        publish_from_both_cores(&broker, &format!("sg-pub-{v:?}"), "sh/x", 20, v);
        let (seen, per_member) = collect(&mut group, 40);
        assert_eq!(seen.len(), 40, "{v:?}: every message reached the group");
        assert!(
            seen.values().all(|&n| n == 1),
            "{v:?}: exactly once: {seen:?}"
        );
        assert!(
            per_member.iter().all(|&n| n > 0),
            "{v:?}: round robin spreads over members on both cores: {per_member:?}"
        );
        let (seen, _) = collect(std::slice::from_mut(&mut plain), 40);
        assert_eq!(seen.len(), 40, "a plain subscriber still gets everything");
        // The delivered message has the plain topic name, not the share prefix.
        plain.publish_acked("sh/y", b"t", QoS::AtLeastOnce, false, 1);
        let mut topics = Vec::new();
        for m in &mut group {
            if let Some(Packet::Publish(p)) = m.recv_within(QUIET) {
                m.ack(&p);
                topics.push(p.topic.to_string());
            }
        }
        assert_eq!(topics, vec!["sh/y".to_string()]);
        plain.expect_publish_acked();
    }
}

#[test]
fn queue_subscription_gives_each_message_to_exactly_one_member() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let mut group = members(&broker, &format!("q-{v:?}"), "$queue/jobs/#", 3, v);
        broker.settle();
        publish_from_both_cores(&broker, &format!("q-pub-{v:?}"), "jobs/a/b", 15, v);
        let (seen, per_member) = collect(&mut group, 30);
        assert_eq!(seen.len(), 30, "{v:?}");
        assert!(seen.values().all(|&n| n == 1), "{v:?}: {seen:?}");
        assert!(per_member.iter().all(|&n| n > 0), "{v:?}: {per_member:?}");
    }
}

#[test]
fn each_group_gets_each_message_once() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let mut g1 = members(&broker, "two-a", "$share/a/multi/t", 2, v);
    let mut g2 = members(&broker, "two-b", "$share/b/multi/t", 3, v);
    broker.settle();
    publish_from_both_cores(&broker, "two-pub", "multi/t", 6, v);
    for g in [&mut g1, &mut g2] {
        let (seen, _) = collect(g, 12);
        assert_eq!(seen.len(), 12);
        assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    }
}

#[test]
fn members_leaving_hand_their_share_to_the_others() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let mut group = members(&broker, &format!("lv-{v:?}"), "$share/g/leave/t", 3, v);
        // One unsubscribes, one disconnects: the last one gets everything.
        let mut last = group.pop().unwrap();
        group[0].send(&Packet::Unsubscribe(ringmq_codec::Unsubscribe {
            packet_id: 9,
            properties: None,
            filters: vec![Utf8Bytes::from_static("$share/g/leave/t")],
        }));
        assert!(matches!(group[0].expect(), Packet::UnsubAck(_)));
        group.pop().unwrap().disconnect();
        broker.settle();
        publish_from_both_cores(&broker, &format!("lv-pub-{v:?}"), "leave/t", 5, v);
        let (seen, _) = collect(std::slice::from_mut(&mut last), 10);
        assert_eq!(seen.len(), 10, "{v:?}");
        group[0].expect_nothing(QUIET);
        // Everyone gone: messages go nowhere, and a new member starts afresh.
        last.disconnect();
        broker.settle();
        publish_from_both_cores(&broker, &format!("lv-pub2-{v:?}"), "leave/t", 2, v);
        let mut again = members(&broker, &format!("lv2-{v:?}"), "$share/g/leave/t", 1, v);
        again[0].expect_nothing(QUIET);
    }
}

#[test]
fn member_qos_is_the_lower_of_message_and_subscription() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let mut m = Client::connect(broker.addr, &id_on_core("sq", 1, 2), v);
    m.subscribe_ok("$share/g/sq/t", QoS::AtMostOnce);
    let mut p = Client::connect(broker.addr, &id_on_core("sq-pub", 0, 2), v);
    broker.settle();
    p.publish_acked("sq/t", b"2", QoS::ExactlyOnce, false, 1);
    let got = m.expect_publish();
    assert_eq!((got.qos, &got.payload[..]), (QoS::AtMostOnce, &b"2"[..]));
}

#[test]
fn retained_messages_are_not_sent_to_shared_subscriptions() {
    // MQTT 5 3.3.1.3: retained messages go to a new *non-shared* subscription only.
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let t = format!("shret/{v:?}");
        let mut p = Client::connect(broker.addr, &id_on_core(&format!("shret-p-{v:?}"), 0, 2), v);
        p.publish_acked(&t, b"kept", QoS::AtLeastOnce, true, 1);
        broker.settle();
        let mut m = Client::connect(broker.addr, &id_on_core(&format!("shret-m-{v:?}"), 1, 2), v);
        m.subscribe_ok(&format!("$share/g/{t}"), QoS::AtLeastOnce);
        m.expect_nothing(QUIET);
        // A plain subscription of the same session does get it.
        m.subscribe_ok(&t, QoS::AtLeastOnce);
        let got = m.expect_publish_acked();
        assert!(got.retain && &got.payload[..] == b"kept");
        p.publish_acked(&t, b"", QoS::AtLeastOnce, true, 2);
    }
}
