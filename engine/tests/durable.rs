//! Durable sessions against the real binary: persistent sessions, their subscriptions, queued
//! QoS 1/2 messages, in-flight QoS 2 state and retained messages survive `kill -9` and a
//! restart; acknowledged messages are never lost; QoS 2 stays exactly once.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{id_on_core, Broker, Client, VERSIONS};
use ringmq_codec::{Ack, Packet, ProtocolVersion, Publish, QoS};

const CORES: usize = 2;

fn persistent(b: &Broker, id: &str, v: ProtocolVersion) -> (Client, bool) {
    Client::connect_persistent(b.addr, id, v, 3600)
}

/// Publishes `n` messages `{tag}-{i}` on `topic` with QoS `qos`, completing every
/// acknowledgement exchange; returns their payloads in order.
fn publish_all(c: &mut Client, topic: &str, tag: &str, n: usize, qos: QoS) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let payload = format!("{tag}-{i}").into_bytes();
            c.publish_acked(topic, &payload, qos, false, (i % 60_000 + 1) as u16);
            payload
        })
        .collect()
}

/// Receives and acknowledges publications until `n` distinct payloads arrived (QoS 1 may
/// repeat), answering QoS 2 exchanges as they interleave; returns every PUBLISH in arrival
/// order.
fn receive(c: &mut Client, n: usize) -> Vec<Publish> {
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    while seen.len() < n {
        match c.recv() {
            Some(Packet::Publish(p)) => {
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => c.send(&Packet::PubAck(Ack::new(p.packet_id))),
                    QoS::ExactlyOnce => c.send(&Packet::PubRec(Ack::new(p.packet_id))),
                }
                seen.insert(p.payload.clone());
                all.push(p);
            }
            Some(Packet::PubRel(a)) => c.send(&Packet::PubComp(Ack::new(a.packet_id))),
            other => panic!(
                "expected PUBLISH ({} of {n} so far), got {other:?}",
                seen.len()
            ),
        }
    }
    // Finish the QoS 2 exchanges still open.
    while let Some(p) = c.recv_within(Duration::from_millis(300)) {
        match p {
            Packet::PubRel(a) => c.send(&Packet::PubComp(Ack::new(a.packet_id))),
            other => panic!("unexpected after the last message: {other:?}"),
        }
    }
    all
}

fn payloads_on(all: &[Publish], topic: &str) -> Vec<Vec<u8>> {
    all.iter()
        .filter(|p| &*p.topic == topic)
        .map(|p| p.payload.to_vec())
        .collect()
}

#[test]
fn offline_messages_survive_kill_9_in_order_and_qos2_exactly_once() {
    for v in VERSIONS {
        let mut b = Broker::cores(CORES);
        // One subscriber on each core; the publisher on core 0, so one path is local and one
        // crosses cores.
        let subs: Vec<String> = (0..CORES as u16)
            .map(|c| id_on_core(&format!("dur-sub-{v:?}"), c, CORES))
            .collect();
        for id in &subs {
            let (mut c, _) = persistent(&b, id, v);
            c.subscribe_ok("dur/#", QoS::ExactlyOnce);
            c.disconnect();
        }
        b.settle();
        let mut publ = Client::connect(b.addr, &id_on_core("dur-pub", 0, CORES), v);
        let q1 = publish_all(&mut publ, "dur/q1", "one", 100, QoS::AtLeastOnce);
        let q2 = publish_all(&mut publ, "dur/q2", "two", 100, QoS::ExactlyOnce);
        // Every message was acknowledged: now crash.
        b.restart();
        for id in &subs {
            let (mut c, present) = persistent(&b, id, v);
            assert!(present, "{id}: the session must survive the crash");
            let all = receive(&mut c, 200);
            let got_q1 = payloads_on(&all, "dur/q1");
            let mut dedup = got_q1.clone();
            dedup.dedup();
            assert_eq!(dedup, q1, "{id}: QoS 1 in order, none lost");
            assert_eq!(
                payloads_on(&all, "dur/q2"),
                q2,
                "{id}: QoS 2 exactly once, in order"
            );
            c.disconnect();
        }
        std::thread::sleep(Duration::from_millis(300));
        // Acknowledged deliveries are not delivered again after another crash.
        b.restart();
        for id in &subs {
            let (mut c, present) = persistent(&b, id, v);
            assert!(present);
            c.expect_nothing(Duration::from_millis(500));
        }
    }
}

#[test]
fn subscriptions_survive_a_restart_and_clean_sessions_do_not() {
    let v = ProtocolVersion::V5;
    let mut b = Broker::cores(CORES);
    let keep = id_on_core("dur-keep", 1, CORES);
    let clean = id_on_core("dur-clean", 1, CORES);
    {
        let (mut c, _) = persistent(&b, &keep, v);
        c.subscribe_ok("keep/+", QoS::AtLeastOnce);
        let mut d = Client::connect(b.addr, &clean, v);
        d.subscribe_ok("keep/+", QoS::AtLeastOnce);
        c.disconnect();
    }
    // Nothing acknowledges a SUBSCRIBE's durability (a message queued for it later is written
    // after it in the same log, so it never outlives it): give the flusher a moment.
    std::thread::sleep(Duration::from_millis(300));
    b.restart();
    let (mut c, present) = persistent(&b, &keep, v);
    assert!(present);
    let (_, clean_present) = persistent(&b, &clean, v);
    assert!(!clean_present, "a clean session must not come back");
    b.settle();
    let mut publ = Client::connect(b.addr, &id_on_core("dur-pub2", 0, CORES), v);
    publ.publish_acked("keep/x", b"after", QoS::AtLeastOnce, false, 5);
    let p = c.expect_publish_acked();
    assert_eq!(&p.payload[..], b"after");
    assert_eq!(p.qos, QoS::AtLeastOnce);
}

#[test]
fn retained_messages_survive_kill_9_and_a_clear_stays_cleared() {
    let mut b = Broker::cores(CORES);
    let v = ProtocolVersion::V3_1_1;
    for core in 0..CORES as u16 {
        let mut p = Client::connect(b.addr, &id_on_core("dur-ret", core, CORES), v);
        p.publish_acked(&format!("ret/{core}"), b"kept", QoS::AtLeastOnce, true, 1);
        p.publish_acked(&format!("ret/gone{core}"), b"x", QoS::AtLeastOnce, true, 2);
        p.publish_acked(&format!("ret/gone{core}"), b"", QoS::AtLeastOnce, true, 3);
    }
    // The same topic set on one core, then replaced from the other: the newer one wins.
    let mut p0 = Client::connect(b.addr, &id_on_core("dur-ret-a", 0, CORES), v);
    p0.publish_acked("ret/both", b"old", QoS::AtLeastOnce, true, 1);
    b.settle();
    let mut p1 = Client::connect(b.addr, &id_on_core("dur-ret-b", 1, CORES), v);
    p1.publish_acked("ret/both", b"new", QoS::AtLeastOnce, true, 1);
    b.settle();
    b.restart();
    let mut s = Client::connect(b.addr, "dur-ret-reader", v);
    s.subscribe_ok("ret/#", QoS::AtMostOnce);
    let mut got = HashMap::new();
    while let Some(Packet::Publish(p)) = s.recv_within(Duration::from_millis(500)) {
        assert!(p.retain);
        got.insert(p.topic.to_string(), p.payload.to_vec());
    }
    let want: HashMap<String, Vec<u8>> = [
        ("ret/0", &b"kept"[..]),
        ("ret/1", b"kept"),
        ("ret/both", b"new"),
    ]
    .into_iter()
    .map(|(t, p)| (t.to_string(), p.to_vec()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn an_unacknowledged_qos2_delivery_keeps_its_packet_id_across_a_crash() {
    let v = ProtocolVersion::V5;
    let mut b = Broker::cores(CORES);
    let sub = id_on_core("dur-q2", 1, CORES);
    let (mut c, _) = persistent(&b, &sub, v);
    c.subscribe_ok("q2/t", QoS::ExactlyOnce);
    b.settle();
    let mut publ = Client::connect(b.addr, &id_on_core("dur-q2-pub", 0, CORES), v);
    publ.publish_acked("q2/t", b"once", QoS::ExactlyOnce, false, 9);
    let first = c.expect_publish();
    assert_eq!(first.qos, QoS::ExactlyOnce);
    // The client received it but answers nothing; give the SENT record time to be written,
    // then crash.
    std::thread::sleep(Duration::from_millis(300));
    b.restart();
    let (mut c, present) = persistent(&b, &sub, v);
    assert!(present);
    let again = c.expect_publish();
    assert!(again.dup, "a resent QoS 2 PUBLISH carries DUP");
    assert_eq!(again.packet_id, first.packet_id, "same packet identifier");
    assert_eq!(&again.payload[..], b"once");
    c.send(&Packet::PubRec(Ack::new(again.packet_id)));
    match c.expect() {
        Packet::PubRel(a) => assert_eq!(a.packet_id, again.packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(300));
    // Crash between PUBREL and PUBCOMP: the broker resends PUBREL, not the message.
    b.restart();
    let (mut c, _) = persistent(&b, &sub, v);
    match c.expect() {
        Packet::PubRel(a) => assert_eq!(a.packet_id, again.packet_id),
        other => panic!("expected PUBREL after the restart, got {other:?}"),
    }
    c.send(&Packet::PubComp(Ack::new(again.packet_id)));
    c.expect_nothing(Duration::from_millis(300));
}

#[test]
fn an_incoming_qos2_id_survives_a_crash_so_the_resend_is_not_routed_twice() {
    let v = ProtocolVersion::V3_1_1;
    let mut b = Broker::cores(CORES);
    let sub = id_on_core("dur-in-sub", 1, CORES);
    let publ = id_on_core("dur-in-pub", 0, CORES);
    let (mut s, _) = persistent(&b, &sub, v);
    s.subscribe_ok("in/t", QoS::ExactlyOnce);
    s.disconnect();
    b.settle();
    let (mut p, _) = persistent(&b, &publ, v);
    p.send(&Packet::Publish(common::publish_packet(
        "in/t",
        b"m",
        QoS::ExactlyOnce,
        false,
        7,
    )));
    match p.expect() {
        Packet::PubRec(a) => assert_eq!(a.packet_id, 7),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    b.restart();
    // The publisher did not see its PUBCOMP: it resends the PUBLISH with DUP [MQTT-4.3.3].
    let (mut p, present) = persistent(&b, &publ, v);
    assert!(present);
    let mut dup = common::publish_packet("in/t", b"m", QoS::ExactlyOnce, false, 7);
    dup.dup = true;
    p.send(&Packet::Publish(dup));
    match p.expect() {
        Packet::PubRec(a) => assert_eq!(a.packet_id, 7),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    p.send(&Packet::PubRel(Ack::new(7)));
    match p.expect() {
        Packet::PubComp(a) => assert_eq!(a.packet_id, 7),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    let (mut s, _) = persistent(&b, &sub, v);
    let got = s.expect_publish_acked();
    assert_eq!(&got.payload[..], b"m");
    s.expect_nothing(Duration::from_millis(500));
}

#[test]
fn storage_off_keeps_nothing_across_a_restart() {
    let mut b = Broker::with_config(CORES, "[storage]\nenabled = false\n");
    let id = id_on_core("dur-off", 0, CORES);
    let (c, _) = persistent(&b, &id, ProtocolVersion::V5);
    c.disconnect();
    b.restart();
    let (_, present) = persistent(&b, &id, ProtocolVersion::V5);
    assert!(!present);
}

#[test]
fn a_second_broker_on_the_same_data_directory_is_refused() {
    let b = Broker::cores(1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--listen", "127.0.0.1:0", "--cores", "1", "--data-dir"])
        .arg(&b.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another ringmq process"), "{err}");
}

#[test]
fn a_different_core_count_is_refused_with_a_clear_message() {
    let mut b = Broker::cores(2);
    b.kill9();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--listen", "127.0.0.1:0", "--cores", "1", "--data-dir"])
        .arg(&b.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cores 2"), "{err}");
}

#[test]
fn a_directory_from_an_older_client_id_mapping_is_refused_with_a_clear_message() {
    let mut b = Broker::cores(2);
    b.kill9();
    // What the CORES file held before it named the mapping of client ids to cores.
    std::fs::write(b.data_dir.join("CORES"), "2\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--listen", "127.0.0.1:0", "--cores", "2", "--data-dir"])
        .arg(&b.data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("home-core hash 1"), "{err}");
    assert!(err.contains("move the directory away"), "{err}");
}

/// A publisher that stops at the first error (the broker was killed) instead of panicking;
/// returns the payloads whose acknowledgement exchange completed.
fn publish_until_killed(
    mut c: Client,
    topic: &str,
    qos: QoS,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<Vec<u8>> {
    use std::io::Write;
    let mut acked = Vec::new();
    for i in 0u32.. {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let payload = format!("{topic}-{i:06}").into_bytes();
        let id = (i % 60_000 + 1) as u16;
        let mut out = bytes::BytesMut::new();
        Packet::Publish(common::publish_packet(topic, &payload, qos, false, id))
            .encode(c.version, &mut out)
            .unwrap();
        if c.stream.write_all(&out).is_err() {
            break;
        }
        let ok = match (qos, c.recv()) {
            (QoS::AtLeastOnce, Some(Packet::PubAck(a))) => a.packet_id == id,
            (QoS::ExactlyOnce, Some(Packet::PubRec(a))) if a.packet_id == id => {
                let mut out = bytes::BytesMut::new();
                Packet::PubRel(Ack::new(id))
                    .encode(c.version, &mut out)
                    .unwrap();
                c.stream.write_all(&out).is_ok()
                    && matches!(c.recv(), Some(Packet::PubComp(a)) if a.packet_id == id)
            }
            _ => false,
        };
        if !ok {
            break;
        }
        acked.push(payload);
    }
    acked
}

/// A small PRNG for kill times, seeded from the clock (the seed is printed).
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_message() {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    // Small segments so that compaction runs while messages flow; an online persistent
    // subscriber acknowledges everything, making dead records to compact.
    let mut b = Broker::with_config(
        CORES,
        // The offline sessions keep everything of every round: their queue bound
        // (limits.max_queued_messages, 1,000 by default) must not be what drops messages here.
        "[limits]\nmax_queued_messages = 1000000\nmax_queued_bytes = 1073741824\n\
         [storage]\nsegment_size_bytes = 65536\nmax_disk_bytes = 67108864\n",
    );
    let v = ProtocolVersion::V5;
    let offline: Vec<String> = (0..CORES as u16)
        .map(|c| id_on_core("kill-off", c, CORES))
        .collect();
    for id in &offline {
        let (mut c, _) = persistent(&b, id, v);
        c.subscribe_ok("kill/#", QoS::ExactlyOnce);
        c.disconnect();
    }
    b.settle();
    let mut acked: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for round in 0..4 {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let online_id = id_on_core("kill-on", 1, CORES);
        // A new persistent session each round (clean start, expiry > 0).
        let (mut online, _) = Client::connect_ok(b.addr, &online_id, v, |c| {
            c.properties = common::session_expiry(3600);
        });
        online.subscribe_ok("kill/#", QoS::AtLeastOnce);
        b.settle();
        let delay = 100 + next(&mut seed) % 400;
        let addr = b.addr;
        let results = std::thread::scope(|s| {
            let mut handles = Vec::new();
            for (core, qos) in [(0u16, QoS::AtLeastOnce), (1, QoS::ExactlyOnce)] {
                let stop = &stop;
                handles.push(s.spawn(move || {
                    let id = id_on_core(&format!("kill-pub-{round}"), core, CORES);
                    let c = Client::connect(addr, &id, v);
                    let topic = format!("kill/{round}/{core}");
                    (topic.clone(), publish_until_killed(c, &topic, qos, stop))
                }));
            }
            // The online subscriber acknowledges as it goes, until the broker dies.
            let reader = s.spawn(move || {
                while let Some(p) = online.recv_within(Duration::from_secs(2)) {
                    if let Packet::Publish(p) = p {
                        let _ = std::io::Write::write_all(&mut online.stream, &{
                            let mut out = bytes::BytesMut::new();
                            Packet::PubAck(Ack::new(p.packet_id))
                                .encode(v, &mut out)
                                .unwrap();
                            out
                        });
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(delay));
            b.kill9();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let r: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            reader.join().unwrap();
            r
        });
        for (topic, payloads) in results {
            acked.entry(topic).or_default().extend(payloads);
        }
        b.restart();
        b.settle();
    }
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(total > 0, "nothing was acknowledged before the kills");
    for id in &offline {
        let (mut c, present) = persistent(&b, id, v);
        assert!(present, "{id}");
        // Everything acknowledged, perhaps with some messages whose acknowledgement the
        // publisher did not see; drain until quiet.
        let mut got: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        while let Some(p) = c.recv_within(Duration::from_secs(1)) {
            match p {
                Packet::Publish(p) => {
                    let ack = Ack::new(p.packet_id);
                    c.send(&match p.qos {
                        QoS::ExactlyOnce => Packet::PubRec(ack),
                        _ => Packet::PubAck(ack),
                    });
                    got.entry(p.topic.to_string())
                        .or_default()
                        .push(p.payload.to_vec());
                }
                Packet::PubRel(a) => c.send(&Packet::PubComp(Ack::new(a.packet_id))),
                other => panic!("unexpected {other:?}"),
            }
        }
        for (topic, want) in &acked {
            let have = got.get(topic).cloned().unwrap_or_default();
            let mut sorted = have.clone();
            sorted.sort();
            assert!(have == sorted, "{id} {topic}: out of order (seed {seed})");
            if topic.ends_with("/1") {
                let mut dedup = sorted.clone();
                dedup.dedup();
                assert_eq!(
                    dedup.len(),
                    have.len(),
                    "{id} {topic}: QoS 2 twice (seed {seed})"
                );
            }
            for w in want {
                assert!(
                    have.binary_search(w).is_ok() || sorted.binary_search(w).is_ok(),
                    "{id} {topic}: acknowledged message {} lost (seed {seed}; {} acknowledged, {} received)",
                    String::from_utf8_lossy(w),
                    want.len(),
                    have.len()
                );
            }
        }
    }
}

#[test]
fn a_full_quota_refuses_persistent_messages_with_0x97_and_recovers() {
    let b = Broker::with_config(
        1,
        "[storage]\nsegment_size_bytes = 65536\nmax_disk_bytes = 262144\n",
    );
    let v = ProtocolVersion::V5;
    let (mut sub, _) = persistent(&b, "quota-sub", v);
    sub.subscribe_ok("quota/t", QoS::AtLeastOnce);
    sub.disconnect();
    let mut publ = Client::connect(b.addr, "quota-pub", v);
    let payload = |i: u16| {
        let mut p = format!("{i:05}").into_bytes();
        p.resize(2048, b'q');
        p
    };
    let mut refused_at = None;
    for i in 1..=400u16 {
        publ.publish("quota/t", &payload(i), QoS::AtLeastOnce, false);
        match publ.expect() {
            Packet::PubAck(a) if a.reason_code == ringmq_codec::ReasonCode::Success => {}
            Packet::PubAck(a) if a.reason_code == ringmq_codec::ReasonCode::QuotaExceeded => {
                refused_at = Some(i);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let n = refused_at.expect("the quota was never reached") as usize;
    assert!(n > 50, "refused too early: {n}");
    // The session drains what was stored (and the refused one, delivered from memory).
    let (mut sub, _) = persistent(&b, "quota-sub", v);
    let got = receive(&mut sub, n);
    assert!(got.len() >= n - 1);
    sub.disconnect();
    // Compaction frees the space: stored again after a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    for i in 1000.. {
        publ.publish("quota/t", &payload(i), QoS::AtLeastOnce, false);
        match publ.expect() {
            Packet::PubAck(a) if a.reason_code == ringmq_codec::ReasonCode::Success => break,
            Packet::PubAck(_) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "space never came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_message_a_full_session_queue_cannot_take_is_answered_0x97_in_mqtt_5() {
    let b = Broker::with_config(1, "[limits]\nmax_queued_messages = 5\n");
    let v = ProtocolVersion::V5;
    let (mut sub, _) = persistent(&b, "full-sub", v);
    sub.subscribe_ok("full/t", QoS::AtLeastOnce);
    sub.disconnect();
    let mut publ = Client::connect(b.addr, "full-pub", v);
    let mut codes = Vec::new();
    for i in 1..=8u16 {
        publ.send(&Packet::Publish(common::publish_packet(
            "full/t",
            format!("{i}").as_bytes(),
            QoS::AtLeastOnce,
            false,
            i,
        )));
        match publ.expect() {
            Packet::PubAck(a) if a.packet_id == i => codes.push(a.reason_code),
            other => panic!("expected PUBACK {i}, got {other:?}"),
        }
    }
    use ringmq_codec::ReasonCode::{QuotaExceeded, Success};
    assert_eq!(
        codes,
        vec![
            Success,
            Success,
            Success,
            Success,
            Success,
            QuotaExceeded,
            QuotaExceeded,
            QuotaExceeded
        ]
    );
    let (mut sub, present) = persistent(&b, "full-sub", v);
    assert!(present);
    assert_eq!(receive(&mut sub, 5).len(), 5);
}
