//! Topic filter matching end to end (MQTT 4.7), with the subscriber and the publisher on
//! different cores so that both the local subscription trie and the cross-core interest trie
//! are exercised: multi-level and single-level wildcards, empty levels, a leading `/`, `$`
//! topics kept apart from wildcards at the first level, and unsubscribe.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{id_on_core, Broker, Client, VERSIONS};
use ringmq_codec::{topic, Packet, QoS, Utf8Bytes};

/// (filter, topics that match it, topics that do not).
const CASES: &[(&str, &[&str], &[&str])] = &[
    (
        "sport/tennis/player1/#",
        &[
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ],
        &["sport/tennis/player2", "sport/tennis"],
    ),
    (
        "sport/#",
        &["sport", "sport/x", "sport/"],
        &["sports", "x/sport"],
    ),
    ("#", &["a", "/", "a/b/c", "/lead"], &["$SYS/x", "$other"]),
    (
        "sport/tennis/+",
        &["sport/tennis/player1", "sport/tennis/"],
        &["sport/tennis/player1/ranking", "sport/tennis"],
    ),
    ("+", &["a", ""], &["/finance", "a/b", "$SYS"]),
    ("+/+", &["/finance", "a/b", "/"], &["finance", "a/b/c"]),
    ("/+", &["/finance", "/"], &["finance", "a/b"]),
    ("a//b", &["a//b"], &["a/b", "a/x/b"]),
    ("a/+/b", &["a//b", "a/x/b"], &["a/b", "a/x/y/b"]),
    ("+/monitor/Clients", &[], &["$SYS/monitor/Clients"]),
    ("$SYS/#", &["$SYS/x", "$SYS"], &["SYS/x"]),
    (
        "$SYS/monitor/+",
        &["$SYS/monitor/Clients"],
        &["$SYS/other/Clients"],
    ),
    ("Case/Sensitive", &["Case/Sensitive"], &["case/sensitive"]),
    ("ünï/cödé/+", &["ünï/cödé/x"], &["uni/code/x"]),
];

/// Publishes `topic` through the broker without going through a client's `$` refusal: `$`
/// topics cannot be published by clients, so those cases only check the non-matching side.
fn publishable(topic: &str) -> bool {
    !topic.starts_with('$') && !topic.is_empty()
}

#[test]
fn wildcard_matching_across_cores() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let mut subs: Vec<Client> = CASES
            .iter()
            .enumerate()
            .map(|(i, (filter, ..))| {
                let id = id_on_core(&format!("tm-{v:?}-{i}"), (i % 2) as u16, 2);
                let mut c = Client::connect(broker.addr, &id, v);
                c.subscribe_ok(filter, QoS::AtMostOnce);
                c
            })
            .collect();
        let mut publ = Client::connect(broker.addr, &format!("tm-pub-{v:?}"), v);
        broker.settle();
        let all: BTreeSet<&str> = CASES
            .iter()
            .flat_map(|(_, yes, no)| yes.iter().chain(no.iter()).copied())
            .filter(|t| publishable(t))
            .collect();
        for t in &all {
            publ.publish(t, t.as_bytes(), QoS::AtMostOnce, false);
        }
        for ((filter, yes, no), sub) in CASES.iter().zip(&mut subs) {
            let mut got = BTreeSet::new();
            while let Some(Packet::Publish(p)) = sub.recv_within(Duration::from_millis(150)) {
                // `broker.settle()` probes reach `#`.
                if !p.topic.starts_with("ringmq-probe/") {
                    got.insert(p.topic.to_string());
                }
            }
            for t in yes.iter().filter(|t| publishable(t)) {
                assert!(
                    got.contains(*t),
                    "{v:?}: {filter:?} must match {t:?}: {got:?}"
                );
            }
            for t in *no {
                assert!(!got.contains(*t), "{v:?}: {filter:?} must not match {t:?}");
            }
            // Everything else published is matched exactly as the codec's matcher says.
            let want: BTreeSet<String> = all
                .iter()
                .filter(|t| topic::matches(t, filter))
                .map(|t| t.to_string())
                .collect();
            assert_eq!(got, want, "{v:?}: filter {filter:?}");
        }
    }
}

#[test]
fn unsubscribe_stops_delivery_across_cores() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let mut sub = Client::connect(broker.addr, &id_on_core(&format!("us-{v:?}"), 0, 2), v);
        sub.subscribe_ok("us/+", QoS::AtMostOnce);
        sub.subscribe_ok("us/#", QoS::AtMostOnce);
        let mut publ = Client::connect(broker.addr, &id_on_core(&format!("us-p-{v:?}"), 1, 2), v);
        broker.settle();
        let unsubscribe = |c: &mut Client, f: &'static str| {
            c.send(&Packet::Unsubscribe(ringmq_codec::Unsubscribe {
                packet_id: 3,
                properties: None,
                filters: vec![Utf8Bytes::from_static(f)],
            }));
            assert!(matches!(c.expect(), Packet::UnsubAck(_)));
        };
        unsubscribe(&mut sub, "us/+");
        broker.settle();
        publ.publish("us/a", b"1", QoS::AtMostOnce, false);
        assert_eq!(&sub.expect_publish().payload[..], b"1", "us/# still there");
        sub.expect_nothing(Duration::from_millis(200));
        unsubscribe(&mut sub, "us/#");
        broker.settle();
        publ.publish("us/a", b"2", QoS::AtMostOnce, false);
        sub.expect_nothing(Duration::from_millis(300));
        // And back again.
        sub.subscribe_ok("us/a", QoS::AtMostOnce);
        broker.settle();
        publ.publish("us/a", b"3", QoS::AtMostOnce, false);
        assert_eq!(&sub.expect_publish().payload[..], b"3");
    }
}
