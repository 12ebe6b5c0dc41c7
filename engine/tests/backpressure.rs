//! Back-pressure on publishers over real sockets: a connected subscriber slower than its
//! publishers pauses them (on its own core and across cores) instead of losing QoS 1 messages
//! at its queue limit; with back-pressure off the same run loses; an offline session pauses
//! nobody; a subscriber that stops reading holds its publishers for the configured wait only.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::{id_on_core, publish_packet, Broker, Client};
use ringmq_codec::{Packet, ProtocolVersion, QoS};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

/// Small queues, so a slow subscriber reaches them at once, and a small cross-core window (what
/// may cross before the pause arrives).
const SMALL_QUEUES: &str = "[runtime]\ncross_core_window_messages = 4\n\
                            [limits]\nmax_queued_messages = 40\nmax_inflight_messages = 4\n\
                            publisher_backpressure_max_publishers = 8\n";

/// Waits until `$SYS` topic `topic` shows a value accepted by `ok`; returns it.
fn sys_value(broker: &Broker, topic: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let mut c = Client::connect(broker.addr, &format!("sys-{}", topic.len()), V311);
    c.subscribe_ok(topic, QoS::AtMostOnce);
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(Packet::Publish(p)) = c.recv_within(Duration::from_millis(300)) {
            let n: u64 = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
            if ok(n) {
                return n;
            }
            last = Some(n);
        }
    }
    panic!("{topic}: no acceptable value within 6 s (last {last:?})");
}

/// `publishers` clients (alternating between the two cores) each send `per` QoS 1 messages
/// without waiting, into one subscriber on core 1 that reads and acknowledges slowly.
/// Returns how many messages per publisher the subscriber got, after checking that none came
/// twice or out of order.
fn fan_in_to_a_slow_subscriber(broker: &Broker, publishers: u8, per: u16) -> HashMap<u8, u16> {
    let mut sub = Client::connect(broker.addr, &id_on_core("bp-sub", 1, 2), V311);
    sub.subscribe_ok("bp/#", QoS::AtLeastOnce);
    broker.settle();
    let senders: Vec<_> = (0..publishers)
        .map(|k| {
            let addr = broker.addr;
            thread::spawn(move || {
                let id = id_on_core(&format!("bp-pub-{k}"), u16::from(k % 2), 2);
                let mut p = Client::connect(addr, &id, V311);
                for i in 1..=per {
                    let payload = [k, (i >> 8) as u8, i as u8];
                    p.send(&Packet::Publish(publish_packet(
                        &format!("bp/{k}"),
                        &payload,
                        QoS::AtLeastOnce,
                        false,
                        i,
                    )));
                }
                // Every message is acknowledged (by now or after the pause).
                let mut acked = 0;
                while acked < per {
                    match p.recv_within(Duration::from_secs(20)) {
                        Some(Packet::PubAck(_)) => acked += 1,
                        other => panic!("publisher {k}: expected PUBACK {acked}, got {other:?}"),
                    }
                }
                p
            })
        })
        .collect();
    let mut next: HashMap<u8, u16> = HashMap::new();
    let mut count: HashMap<u8, u16> = HashMap::new();
    let mut n = 0u32;
    // Slow: a pause every few messages, far slower than the publishers.
    while let Some(Packet::Publish(m)) = sub.recv_within(Duration::from_millis(1500)) {
        let k = m.payload[0];
        let i = u16::from_be_bytes([m.payload[1], m.payload[2]]);
        let expected = next.entry(k).or_insert(0);
        assert!(
            i > *expected,
            "publisher {k}: {i} after {expected} (duplicate or reordered)"
        );
        *expected = i;
        *count.entry(k).or_insert(0) += 1;
        sub.ack(&m);
        n += 1;
        if n % 8 == 0 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    for s in senders {
        drop(s.join().expect("publisher thread"));
    }
    count
}

#[test]
fn a_slow_subscriber_pauses_its_publishers_and_loses_nothing() {
    let broker = Broker::with_config(2, &format!("{SMALL_QUEUES}[sys]\ninterval_secs = 1\n"));
    let got = fan_in_to_a_slow_subscriber(&broker, 6, 300);
    for k in 0..6u8 {
        assert_eq!(
            got.get(&k).copied(),
            Some(300),
            "publisher {k}: every message arrives (got {got:?})"
        );
    }
    assert_eq!(
        sys_value(&broker, "$SYS/broker/messages/dropped", |_| true),
        0
    );
    assert!(sys_value(&broker, "$SYS/broker/backpressure/episodes", |n| n > 0) > 0);
}

#[test]
fn without_back_pressure_the_same_run_drops_at_the_queue_limit() {
    // The control: proves the run above is one where a full queue would lose messages.
    let broker = Broker::with_config(
        2,
        &format!("{SMALL_QUEUES}publisher_backpressure_percent = 0\n[sys]\ninterval_secs = 1\n"),
    );
    let got = fan_in_to_a_slow_subscriber(&broker, 6, 300);
    let received: u32 = got.values().map(|&n| u32::from(n)).sum();
    assert!(received < 1800, "some lost (received {received})");
    let lost = u64::from(1800 - received);
    sys_value(&broker, "$SYS/broker/messages/dropped", |n| n >= lost);
    assert_eq!(
        sys_value(&broker, "$SYS/broker/backpressure/episodes", |_| true),
        0
    );
}

#[test]
fn an_offline_session_pauses_nobody() {
    let broker = Broker::with_config(
        2,
        &format!("{SMALL_QUEUES}publisher_backpressure_max_wait_ms = 20000\n"),
    );
    let id = id_on_core("bp-off", 1, 2);
    let (mut sub, _) = Client::connect_persistent(broker.addr, &id, V311, 600);
    sub.subscribe_ok("off/t", QoS::AtLeastOnce);
    sub.disconnect();
    broker.settle();
    let mut p = Client::connect(broker.addr, &id_on_core("bp-off-pub", 0, 2), V311);
    let start = Instant::now();
    for i in 1..=200u16 {
        p.publish_acked("off/t", &i.to_be_bytes(), QoS::AtLeastOnce, false, i);
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "publishing into a full offline queue took {:?}: the publisher was paused",
        start.elapsed()
    );
}

#[test]
fn a_subscriber_that_stops_reading_holds_its_publishers_for_the_wait_limit_only() {
    let broker = Broker::with_config(
        2,
        &format!(
            "{SMALL_QUEUES}publisher_backpressure_max_wait_ms = 300\n[sys]\ninterval_secs = 1\n"
        ),
    );
    // Subscribes, then never reads nor acknowledges again.
    let mut stuck = Client::connect(broker.addr, &id_on_core("bp-stuck", 1, 2), V311);
    stuck.subscribe_ok("stuck/t", QoS::AtLeastOnce);
    broker.settle();
    let mut p = Client::connect(broker.addr, &id_on_core("bp-stuck-pub", 0, 2), V311);
    let start = Instant::now();
    for i in 1..=200u16 {
        p.send(&Packet::Publish(publish_packet(
            "stuck/t",
            &i.to_be_bytes(),
            QoS::AtLeastOnce,
            false,
            i,
        )));
    }
    for acked in 0..200 {
        match p.recv_within(Duration::from_secs(10)) {
            Some(Packet::PubAck(_)) => {}
            other => panic!("expected PUBACK {acked}, got {other:?}"),
        }
    }
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "the publisher was paused"
    );
    assert!(sys_value(&broker, "$SYS/broker/backpressure/timeouts", |n| n > 0) > 0);
    drop(stuck);
}
