//! Overload protection in the core: the running count of queued messages against a scan
//! through every way a queue changes (queueing, delivery, acknowledgements, takeover, clean
//! start, session expiry, queue limits, recovery from the log), and admission under the
//! queued-messages mark.

use super::*;
use crate::overload::{Cause, OverloadLimits};

/// Settings with a queued-messages mark (0: off).
fn with_mark(queued_messages: u64) -> CoreSettings {
    let mut s = settings(1);
    s.overload = OverloadLimits {
        memory_bytes: 0,
        queued_messages,
        resume_percent: 90,
    };
    s
}

fn persistent(id: &str, version: ProtocolVersion) -> Connect {
    let mut c = connect_packet(id, version, false);
    if version.is_v5() {
        c.properties = Some(Box::new(Properties {
            session_expiry_interval: Some(10),
            ..Default::default()
        }));
    }
    c
}

/// The running count equals a scan of every session's queue.
#[track_caller]
fn check(core: &Core) -> u64 {
    let counted = core.overload.queued();
    assert_eq!(counted, core.queued_by_scan(), "running count vs scan");
    assert_eq!(core.stats_report().messages_queued, counted);
    counted
}

/// A persistent subscriber to `t` (QoS 1) that is now offline.
fn offline_subscriber(core: &mut Core, id: &str) -> Connect {
    let c = persistent(id, ProtocolVersion::V5);
    let s = connect(core, c.clone());
    let qos1 = SubscriptionOptions::qos(QoS::AtLeastOnce);
    subscribe(core, &s, "t", qos1, None);
    core.disconnected(s.sid, s.generation, Ending::Normal, Instant::now());
    c
}

/// Connects with `c` (not asserting what comes first); returns the client and everything the
/// core sent it (CONNACK, then what the window took from the queue).
fn open(core: &mut Core, c: &Connect) -> (Client, Vec<Packet>) {
    let link = Rc::new(ConnLink::default());
    let a = core.connect(c, link.clone(), Instant::now()).unwrap();
    let client = Client {
        sid: a.session,
        generation: a.generation,
        link,
        version: c.protocol,
    };
    let packets = drain(core, &client);
    (client, packets)
}

fn publish_n(core: &mut Core, p: &Client, n: usize) {
    for _ in 0..n {
        publish(core, p, "t", b"m", QoS::AtLeastOnce, false);
        drain(core, p);
    }
}

/// Acknowledges every PUBLISH in `packets`; returns how many there were.
fn ack_all(core: &mut Core, c: &Client, packets: &[Packet]) -> usize {
    let mut n = 0;
    for p in packets {
        if let Packet::Publish(p) = p {
            n += 1;
            let ack = Packet::PubAck(ringmq_codec::Ack::new(p.packet_id));
            core.on_packet(c.sid, ack, Instant::now()).unwrap();
        }
    }
    n
}

#[test]
fn the_count_follows_queueing_delivery_and_acknowledgement() {
    let mut core = Core::new(0, with_mark(0));
    let sub = offline_subscriber(&mut core, "sub");
    let publ = connect(&mut core, connect_packet("pub", ProtocolVersion::V5, true));
    assert_eq!(check(&core), 0);
    publish_n(&mut core, &publ, 40);
    assert_eq!(check(&core), 40);
    // Back: the in-flight window (16) takes the first messages, the rest stay queued.
    let (back, mut packets) = open(&mut core, &sub);
    assert_eq!(check(&core), 24);
    let mut got = 0;
    loop {
        let n = ack_all(&mut core, &back, &packets);
        got += n;
        check(&core);
        if n == 0 {
            break;
        }
        packets = drain(&mut core, &back);
    }
    assert_eq!((got, check(&core)), (40, 0));
}

#[test]
fn the_count_stops_at_the_queue_limit() {
    let mut core = Core::new(0, with_mark(0));
    offline_subscriber(&mut core, "sub");
    let publ = connect(&mut core, connect_packet("pub", ProtocolVersion::V5, true));
    publish_n(&mut core, &publ, 130); // max_queued_messages is 100 here
    assert_eq!(check(&core), 100);
}

#[test]
fn takeover_keeps_the_queue_and_clean_start_drops_it() {
    let mut core = Core::new(0, with_mark(0));
    let sub = offline_subscriber(&mut core, "sub");
    let publ = connect(&mut core, connect_packet("pub", ProtocolVersion::V5, true));
    publish_n(&mut core, &publ, 30);
    // Resumed without reading: 16 in flight, 14 queued; a takeover keeps them all.
    let (first, _) = open(&mut core, &sub);
    assert_eq!(check(&core), 14);
    let (second, _) = open(&mut core, &sub);
    assert_eq!(first.link.close.get(), Some(ReasonCode::SessionTakenOver));
    assert_eq!(check(&core), 14);
    // The old connection's late cleanup changes nothing.
    core.disconnected(
        first.sid,
        first.generation,
        Ending::WithWill,
        Instant::now(),
    );
    assert_eq!(check(&core), 14);
    core.disconnected(
        second.sid,
        second.generation,
        Ending::Normal,
        Instant::now(),
    );
    publish_n(&mut core, &publ, 5);
    assert_eq!(check(&core), 19);
    // Clean Start discards the session and its queue.
    let mut clean = sub.clone();
    clean.clean_start = true;
    connect(&mut core, clean);
    assert_eq!(check(&core), 0);
}

#[test]
fn session_expiry_and_a_3_1_1_clean_session_end_drop_the_queue() {
    let mut core = Core::new(0, with_mark(0));
    let t0 = Instant::now();
    offline_subscriber(&mut core, "v5");
    // 3.1.1, Clean Session 0: never expires; ended by Clean Session 1.
    let old = connect(&mut core, persistent("v3", ProtocolVersion::V3_1_1));
    let qos1 = SubscriptionOptions::qos(QoS::AtLeastOnce);
    subscribe(&mut core, &old, "t", qos1, None);
    core.disconnected(old.sid, old.generation, Ending::Normal, t0);
    let publ = connect(&mut core, connect_packet("pub", ProtocolVersion::V5, true));
    publish_n(&mut core, &publ, 7);
    assert_eq!(check(&core), 14);
    core.fire_timers(t0 + Duration::from_secs(11));
    assert_eq!(core.session_count(), 2, "v5 expired; v3 and pub stay");
    assert_eq!(check(&core), 7);
    connect(
        &mut core,
        connect_packet("v3", ProtocolVersion::V3_1_1, true),
    );
    assert_eq!(check(&core), 0);
}

#[test]
fn random_operations_keep_the_count_equal_to_a_scan() {
    // A seeded walk over connects (resume, clean start, takeover), disconnects, publications,
    // acknowledgements and expiry; the count is compared with a scan after every step.
    let mut core = Core::new(0, with_mark(0));
    let ids = ["a", "b", "c", "d"];
    let mut live: Vec<Option<Client>> = (0..ids.len()).map(|_| None).collect();
    let publ = connect(&mut core, connect_packet("pub", ProtocolVersion::V5, true));
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut now = Instant::now();
    let qos1 = SubscriptionOptions::qos(QoS::AtLeastOnce);
    let (mut highest, mut last, mut fell) = (0, 0, 0);
    for step in 0..3000 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let i = (rng >> 8) as usize % ids.len();
        match rng % 7 {
            0 | 1 => publish_n(&mut core, &publ, 1 + (rng >> 20) as usize % 20),
            2 => {
                if let Some(old) = &live[i] {
                    drain(&mut core, old); // what the old connection had not read yet
                }
                let version = if rng & 0x100 == 0 {
                    ProtocolVersion::V5
                } else {
                    ProtocolVersion::V3_1_1
                };
                let mut c = persistent(ids[i], version);
                c.clean_start = rng & 0x200 != 0;
                let (client, _) = open(&mut core, &c);
                subscribe(&mut core, &client, "t", qos1, None);
                live[i] = Some(client);
            }
            3 => {
                if let Some(c) = live[i].take() {
                    core.disconnected(c.sid, c.generation, Ending::WithWill, now);
                }
            }
            4 | 5 => {
                if let Some(c) = &live[i] {
                    let packets = drain(&mut core, c);
                    ack_all(&mut core, c, &packets);
                }
            }
            _ => {
                now += Duration::from_secs(4);
                core.fire_timers(now);
            }
        }
        let counted = core.overload.queued();
        assert_eq!(counted, core.queued_by_scan(), "step {step}");
        if counted < last {
            fell += 1;
        }
        (highest, last) = (highest.max(counted), counted);
    }
    // The walk did fill queues, and drained or dropped them often.
    assert!(
        highest >= 50 && fell >= 100,
        "highest {highest}, fell {fell} times"
    );
}

#[test]
fn new_clients_are_refused_over_the_mark_and_resumes_are_let_in() {
    let mut core = Core::new(0, with_mark(10));
    let sub = offline_subscriber(&mut core, "sub");
    let publ = connect(&mut core, connect_packet("pub", ProtocolVersion::V5, true));
    let fresh = connect_packet("fresh", ProtocolVersion::V5, true);
    publish_n(&mut core, &publ, 9);
    assert_eq!(core.admit_under_overload(&fresh), Ok(()));
    publish_n(&mut core, &publ, 1);
    assert_eq!(core.admit_under_overload(&fresh), Err(Cause::Queues));
    let mut v3 = persistent("fresh", ProtocolVersion::V3_1_1);
    assert_eq!(core.admit_under_overload(&v3), Err(Cause::Queues));
    v3.clean_start = true;
    assert_eq!(core.admit_under_overload(&v3), Err(Cause::Queues));
    assert_eq!(core.stats.connections_refused_overload, 3);
    assert_eq!(core.stats_report().overloaded, 1);
    let sys = core.sys_values(Duration::ZERO);
    let value = |topic: &str| sys.iter().find(|(t, _)| *t == topic).unwrap().1.clone();
    assert_eq!(value("$SYS/broker/clients/refused_overload"), "3");
    assert_eq!(value("$SYS/broker/messages/queued"), "10");
    assert_eq!(value("$SYS/broker/overloaded_cores"), "1");
    // A Clean Start of the owner would discard the queue but creates a new session: refused.
    let mut clean = sub.clone();
    clean.clean_start = true;
    assert_eq!(core.admit_under_overload(&clean), Err(Cause::Queues));
    // The owner resuming is let in and drains its queue.
    assert_eq!(core.admit_under_overload(&sub), Ok(()));
    let (back, mut packets) = open(&mut core, &sub);
    while ack_all(&mut core, &back, &packets) > 0 {
        packets = drain(&mut core, &back);
    }
    assert_eq!(check(&core), 0);
    assert_eq!(core.admit_under_overload(&fresh), Ok(()));
    assert_eq!(core.stats_report().overloaded, 0);
    assert_eq!(core.stats.connections_refused_overload, 4);
}

#[test]
fn a_client_homed_on_another_core_is_decided_there() {
    let mut s = with_mark(1);
    s.cores = 2;
    let mut core = Core::new(0, s);
    let here = (0..)
        .map(|i| format!("h{i}"))
        .find(|id| home_core(id.as_bytes(), 2) == 0)
        .unwrap();
    let there = (0..)
        .map(|i| format!("t{i}"))
        .find(|id| home_core(id.as_bytes(), 2) == 1)
        .unwrap();
    let sub = offline_subscriber(&mut core, &here);
    let publ_id = (0..)
        .map(|i| format!("p{i}"))
        .find(|id| home_core(id.as_bytes(), 2) == 0)
        .unwrap();
    let publ = connect(
        &mut core,
        connect_packet(&publ_id, ProtocolVersion::V5, true),
    );
    publish_n(&mut core, &publ, 1);
    assert_eq!(check(&core), 1);
    // This core's queues say nothing about core 1: its clients travel on.
    let other = connect_packet(&there, ProtocolVersion::V5, true);
    assert_eq!(core.admit_under_overload(&other), Ok(()));
    // An empty client id gets an id homed here: decided here.
    let anonymous = connect_packet("", ProtocolVersion::V5, true);
    assert_eq!(core.admit_under_overload(&anonymous), Err(Cause::Queues));
    assert_eq!(core.admit_under_overload(&sub), Ok(()));
}

mod recovery {
    //! The count after a restart: sessions restored from the log bring their queues.

    use super::*;
    use crate::persist::{self, Recovered};
    use futures_lite::future::block_on;
    use ringmq_storage::{recover_on, Flusher, LogConfig, MemFs};

    fn open_log(fs: &MemFs) -> (Core, Flusher<MemFs>) {
        let cfg = LogConfig {
            segment_size_bytes: 64 * 1024,
            max_disk_bytes: 1 << 22,
            ..LogConfig::new("/data/core-0")
        };
        let mut rec = Recovered::default();
        let (log, _) = recover_on(fs, &cfg, |lsn, k, b| rec.apply(0, lsn, k, b)).unwrap();
        rec.finish();
        let mut core = Core::new(0, with_mark(0));
        core.set_store(persist::store_from(log, &rec));
        core.restore(rec, &[], Instant::now());
        (core, Flusher::new(fs.clone(), &cfg))
    }

    fn flush(core: &mut Core, f: &mut Flusher<MemFs>) {
        loop {
            let store = core.store_mut().unwrap();
            let Some(batch) = store.log_mut().take_batch(Instant::now()) else {
                break;
            };
            let r = block_on(f.run_batch(batch));
            core.store_mut().unwrap().log_mut().complete(r);
            core.on_durable(Instant::now());
        }
    }

    #[test]
    fn restored_queues_are_counted() {
        let fs = MemFs::new();
        let (mut core, mut f) = open_log(&fs);
        let sub = offline_subscriber(&mut core, "sub");
        let publ = connect(&mut core, connect_packet("pub", ProtocolVersion::V5, true));
        publish_n(&mut core, &publ, 12);
        flush(&mut core, &mut f);
        assert_eq!(check(&core), 12);
        drop((core, f));
        let (mut core, _f) = open_log(&fs);
        assert_eq!(check(&core), 12);
        let (back, _) = open(&mut core, &sub);
        assert!(check(&core) < 12, "the window took some");
        core.disconnected(back.sid, back.generation, Ending::Normal, Instant::now());
        check(&core);
    }
}
