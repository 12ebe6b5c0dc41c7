//! `$SYS/broker/...` statistics over real sockets: published every `sys.interval_secs`, retained,
//! counting clients on both cores, and kept apart from `#` and `+` subscriptions; clients cannot
//! publish into `$` topics.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{id_on_core, Broker, Client, VERSIONS};
use ringmq_codec::{Packet, ProtocolVersion, QoS, ReasonCode};

const CONFIG: &str = "[sys]\ninterval_secs = 1\n";

const KEYS: [&str; 8] = [
    "$SYS/broker/version",
    "$SYS/broker/uptime",
    "$SYS/broker/clients/connected",
    "$SYS/broker/clients/total",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/messages/dropped",
    "$SYS/broker/subscriptions/count",
];

/// Collects `$SYS` values until `done` holds for them or the deadline passes.
fn collect_until(
    c: &mut Client,
    within: Duration,
    done: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let deadline = Instant::now() + within;
    let mut values = HashMap::new();
    while Instant::now() < deadline && !done(&values) {
        if let Some(Packet::Publish(p)) = c.recv_within(Duration::from_millis(200)) {
            let value = String::from_utf8(p.payload.to_vec()).unwrap();
            values.insert(p.topic.to_string(), value);
        }
    }
    values
}

fn number(values: &HashMap<String, String>, topic: &str) -> u64 {
    values
        .get(topic)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{topic} missing or not a number: {values:?}"))
}

#[test]
fn sys_topics_are_published_every_interval() {
    let broker = Broker::with_config(2, CONFIG);
    // Clients on both cores, so that the counts are summed over the cores.
    let _others: Vec<Client> = (0..4)
        .map(|i| {
            Client::connect(
                broker.addr,
                &id_on_core(&format!("sys-c{i}"), i % 2, 2),
                VERSIONS[0],
            )
        })
        .collect();
    common::in_parallel_for_versions(|v| {
        let mut c = Client::connect(broker.addr, &format!("sys-{v:?}"), v);
        c.subscribe_ok("$SYS/broker/#", QoS::AtMostOnce);
        let values = collect_until(&mut c, Duration::from_secs(4), |vals| {
            vals.get("$SYS/broker/clients/connected")
                .is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n >= 5))
                && KEYS.iter().all(|k| vals.contains_key(*k))
        });
        assert!(
            values["$SYS/broker/version"].starts_with("ringmq "),
            "{values:?}"
        );
        assert!(values["$SYS/broker/uptime"].ends_with(" seconds"));
        assert!(
            number(&values, "$SYS/broker/clients/connected") >= 5,
            "{v:?}: {values:?}"
        );
        number(&values, "$SYS/broker/subscriptions/count");
        number(&values, "$SYS/broker/messages/sent");
        // Published again each interval: the uptime moves on.
        let first = values["$SYS/broker/uptime"].clone();
        let later = collect_until(&mut c, Duration::from_secs(3), |vals| {
            vals.get("$SYS/broker/uptime").is_some_and(|u| *u != first)
        });
        assert!(
            later.contains_key("$SYS/broker/uptime"),
            "uptime not republished"
        );
    });
}

#[test]
fn sys_values_are_retained() {
    let broker = Broker::with_config(2, CONFIG);
    std::thread::sleep(Duration::from_millis(1500));
    let mut c = Client::connect(broker.addr, "sys-late", ProtocolVersion::V5);
    c.subscribe_ok("$SYS/broker/version", QoS::AtMostOnce);
    let p = c.recv_within(Duration::from_millis(300));
    match p {
        Some(Packet::Publish(p)) => assert!(p.retain, "sent at subscribe as retained"),
        other => panic!("no retained $SYS value at subscribe: {other:?}"),
    }
}

#[test]
fn wildcards_at_the_first_level_do_not_match_sys() {
    let broker = Broker::with_config(2, CONFIG);
    for v in VERSIONS {
        let mut all = Client::connect(broker.addr, &id_on_core(&format!("all-{v:?}"), 0, 2), v);
        all.subscribe_ok("#", QoS::AtMostOnce);
        let mut plus = Client::connect(broker.addr, &id_on_core(&format!("plus-{v:?}"), 1, 2), v);
        plus.subscribe_ok("+/broker/#", QoS::AtMostOnce);
        let mut sys = Client::connect(broker.addr, &format!("sysw-{v:?}"), v);
        sys.subscribe_ok("$SYS/#", QoS::AtMostOnce);
        // $SYS is flowing to the explicit subscriber...
        let seen = collect_until(&mut sys, Duration::from_secs(3), |vals| vals.len() >= 3);
        assert!(seen.len() >= 3, "{seen:?}");
        // ...and none of it reaches `#` or `+/...` [MQTT-4.7.2-1].
        for c in [&mut all, &mut plus] {
            if let Some(p) = c.recv_within(Duration::from_millis(1200)) {
                panic!("{v:?}: wildcard got {p:?}");
            }
        }
        // `#` still gets ordinary topics.
        sys.publish_acked("plain/t", b"x", QoS::AtMostOnce, false, 1);
        assert_eq!(&*all.expect_publish().topic, "plain/t");
    }
}

#[test]
fn clients_cannot_publish_into_sys() {
    let broker = Broker::with_config(2, CONFIG);
    for v in VERSIONS {
        let mut watcher = Client::connect(broker.addr, &format!("sysp-w-{v:?}"), v);
        watcher.subscribe_ok("$SYS/fake/#", QoS::AtLeastOnce);
        let mut c = Client::connect(broker.addr, &format!("sysp-{v:?}"), v);
        c.send(&Packet::Publish(common::publish_packet(
            "$SYS/fake/x",
            b"forged",
            QoS::AtLeastOnce,
            true,
            4,
        )));
        match c.expect() {
            Packet::PubAck(a) => {
                assert_eq!(a.packet_id, 4);
                if v.is_v5() {
                    assert_eq!(a.reason_code, ReasonCode::NotAuthorized);
                }
            }
            other => panic!("{other:?}"),
        }
        watcher.expect_nothing(Duration::from_millis(400));
        // Not stored as retained either.
        let mut late = Client::connect(broker.addr, &format!("sysp-l-{v:?}"), v);
        late.subscribe_ok("$SYS/fake/#", QoS::AtLeastOnce);
        late.expect_nothing(Duration::from_millis(300));
    }
}
