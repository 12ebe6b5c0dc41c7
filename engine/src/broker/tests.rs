use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_codec::{
    decode, Connect, DecodeOptions, Disconnect, Packet, Properties, ProtocolVersion, Publish, QoS,
    ReasonCode, RetainHandling, Subscribe, SubscribeFilter, SubscriptionOptions, Utf8Bytes, Will,
};

use super::*;
use crate::session::SessionLimits;

fn settings(cores: usize) -> CoreSettings {
    CoreSettings {
        cores,
        session: SessionLimits {
            max_inflight_messages: 16,
            max_queued_messages: 100,
            max_queued_bytes: 1 << 20,
            write_buffer_high_water_bytes: 1 << 20,
            max_topic_alias: 8,
        },
        max_packet_size_bytes: 1 << 20,
        max_keep_alive_secs: 600,
        session_expiry_max_secs: u32::MAX,
        message_expiry_max_secs: 0,
        max_topic_levels: 8,
        max_topic_length_bytes: 256,
        max_subscriptions_per_client: 4,
        retained_messages_max: 100,
        retained_scan_budget_messages: 1000,
        max_client_id_length_bytes: 64,
        allow_anonymous: true,
        share_strategy: ShareStrategy::RoundRobin,
        shared_subscriptions_enabled: true,
        maximum_qos: QoS::ExactlyOnce,
        retain_available: true,
        max_connections_per_core: 100,
        backpressure: None,
        cross_core_queue_capacity: 64,
        cross_core_window_messages: 64,
        overload: Default::default(),
    }
}

fn connect_packet(id: &str, version: ProtocolVersion, clean: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive: 30,
        properties: None,
        client_id: Utf8Bytes::try_from(id).unwrap(),
        will: None,
        username: None,
        password: None,
    }
}

struct Client {
    sid: SessionId,
    generation: u64,
    link: Rc<ConnLink>,
    version: ProtocolVersion,
}

fn connect(core: &mut Core, c: Connect) -> Client {
    let link = Rc::new(ConnLink::default());
    let version = c.protocol;
    let a = core
        .connect(&c, link.clone(), Instant::now())
        .expect("accepted");
    let client = Client {
        sid: a.session,
        generation: a.generation,
        link,
        version,
    };
    let packets = drain(core, &client);
    assert!(
        matches!(packets.first(), Some(Packet::ConnAck(_))),
        "{packets:?}"
    );
    client
}

fn drain(core: &mut Core, c: &Client) -> Vec<Packet> {
    let mut out = core.take_output(c.sid, &c.link).unwrap_or_default();
    let options = DecodeOptions::new(c.version);
    let mut packets = Vec::new();
    while let Some(p) = decode(&mut out, &options).unwrap() {
        packets.push(p);
    }
    core.on_written(c.sid, &c.link, Instant::now());
    packets
}

fn subscribe(
    core: &mut Core,
    c: &Client,
    filter: &str,
    options: SubscriptionOptions,
    id: Option<u32>,
) -> Vec<Packet> {
    let properties = id.map(|id| {
        Box::new(Properties {
            subscription_identifiers: vec![id],
            ..Default::default()
        })
    });
    let sub = Subscribe {
        packet_id: 1,
        properties,
        filters: vec![SubscribeFilter {
            filter: Utf8Bytes::try_from(filter).unwrap(),
            options,
        }],
    };
    core.on_packet(c.sid, Packet::Subscribe(sub), Instant::now())
        .unwrap();
    drain(core, c)
}

fn publish(
    core: &mut Core,
    c: &Client,
    topic: &str,
    payload: &'static [u8],
    qos: QoS,
    retain: bool,
) {
    let p = Publish {
        qos,
        retain,
        topic: Utf8Bytes::try_from(topic).unwrap(),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 1 },
        payload: Bytes::from_static(payload),
        ..Default::default()
    };
    core.on_packet(c.sid, Packet::Publish(p), Instant::now())
        .unwrap();
}

fn received(packets: &[Packet]) -> Vec<(String, Vec<u8>, QoS, bool)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.to_string(), p.payload.to_vec(), p.qos, p.retain)),
            _ => None,
        })
        .collect()
}

#[test]
fn publish_reaches_a_subscriber_with_the_lower_qos() {
    let mut core = Core::new(0, settings(1));
    let sub = connect(
        &mut core,
        connect_packet("sub", ProtocolVersion::V3_1_1, true),
    );
    let publ = connect(
        &mut core,
        connect_packet("pub", ProtocolVersion::V3_1_1, true),
    );
    let suback = subscribe(
        &mut core,
        &sub,
        "a/+",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        None,
    );
    assert!(
        matches!(&suback[..], [Packet::SubAck(s)] if s.return_codes == vec![ReasonCode::GrantedQoS1])
    );
    publish(&mut core, &publ, "a/b", b"x", QoS::ExactlyOnce, false);
    assert_eq!(
        received(&drain(&mut core, &sub)),
        vec![("a/b".into(), b"x".to_vec(), QoS::AtLeastOnce, false)]
    );
    assert!(matches!(&drain(&mut core, &publ)[..], [Packet::PubRec(_)]));
}

#[test]
fn overlapping_subscriptions_deliver_once_with_highest_qos_and_all_ids() {
    let mut core = Core::new(0, settings(1));
    let sub = connect(&mut core, connect_packet("sub", ProtocolVersion::V5, true));
    subscribe(
        &mut core,
        &sub,
        "a/#",
        SubscriptionOptions::qos(QoS::AtMostOnce),
        Some(1),
    );
    subscribe(
        &mut core,
        &sub,
        "a/+",
        SubscriptionOptions::qos(QoS::ExactlyOnce),
        Some(2),
    );
    publish(&mut core, &sub, "a/b", b"x", QoS::ExactlyOnce, false);
    let packets = drain(&mut core, &sub);
    let pubs: Vec<_> = packets
        .iter()
        .filter_map(|p| {
            if let Packet::Publish(p) = p {
                Some(p)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(pubs.len(), 1);
    assert_eq!(pubs[0].qos, QoS::ExactlyOnce);
    let mut ids = pubs[0]
        .properties
        .as_ref()
        .unwrap()
        .subscription_identifiers
        .clone();
    ids.sort();
    assert_eq!(ids, vec![1, 2]);
}

#[test]
fn no_local_skips_own_publications() {
    let mut core = Core::new(0, settings(1));
    let c = connect(&mut core, connect_packet("c", ProtocolVersion::V5, true));
    let opts = SubscriptionOptions {
        no_local: true,
        ..SubscriptionOptions::qos(QoS::AtMostOnce)
    };
    subscribe(&mut core, &c, "t", opts, None);
    publish(&mut core, &c, "t", b"x", QoS::AtMostOnce, false);
    assert!(received(&drain(&mut core, &c)).is_empty());
}

#[test]
fn retained_messages_set_replace_clear_and_retain_handling() {
    let mut core = Core::new(0, settings(1));
    let p = connect(&mut core, connect_packet("p", ProtocolVersion::V5, true));
    publish(&mut core, &p, "r/1", b"old", QoS::AtMostOnce, true);
    publish(&mut core, &p, "r/1", b"new", QoS::AtMostOnce, true);
    publish(&mut core, &p, "r/2", b"two", QoS::AtLeastOnce, true);
    let s = connect(&mut core, connect_packet("s", ProtocolVersion::V5, true));
    let got = received(&subscribe(
        &mut core,
        &s,
        "r/#",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        None,
    ));
    assert_eq!(got.len(), 2);
    assert!(got.contains(&("r/1".into(), b"new".to_vec(), QoS::AtMostOnce, true)));
    assert!(got.contains(&("r/2".into(), b"two".to_vec(), QoS::AtLeastOnce, true)));
    let if_new = SubscriptionOptions {
        retain_handling: RetainHandling::SendIfNew,
        ..SubscriptionOptions::qos(QoS::AtLeastOnce)
    };
    assert!(received(&subscribe(&mut core, &s, "r/#", if_new, None)).is_empty());
    let never = SubscriptionOptions {
        retain_handling: RetainHandling::DoNotSend,
        ..SubscriptionOptions::qos(QoS::AtLeastOnce)
    };
    assert!(received(&subscribe(&mut core, &s, "r/+", never, None)).is_empty());
    publish(&mut core, &p, "r/1", b"", QoS::AtMostOnce, true);
    assert_eq!(core.retained_count(), 1);
}

#[test]
fn will_on_abnormal_close_not_on_normal_disconnect() {
    let mut core = Core::new(0, settings(1));
    let s = connect(&mut core, connect_packet("s", ProtocolVersion::V5, true));
    subscribe(
        &mut core,
        &s,
        "will/#",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        None,
    );
    let with_will = |id: &str| Connect {
        will: Some(Will {
            topic: Utf8Bytes::from_static("will/x"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
        }),
        ..connect_packet(id, ProtocolVersion::V5, true)
    };
    let a = connect(&mut core, with_will("a"));
    core.on_packet(
        a.sid,
        Packet::Disconnect(Disconnect::NORMAL),
        Instant::now(),
    )
    .unwrap();
    core.disconnected(a.sid, a.generation, Ending::Normal, Instant::now());
    assert!(received(&drain(&mut core, &s)).is_empty());
    let b = connect(&mut core, with_will("b"));
    core.disconnected(b.sid, b.generation, Ending::WithWill, Instant::now());
    assert_eq!(
        received(&drain(&mut core, &s)),
        vec![("will/x".into(), b"gone".to_vec(), QoS::AtLeastOnce, false)]
    );
    // MQTT 5: DISCONNECT 0x04 asks for the will.
    let c = connect(&mut core, with_will("c"));
    let flow = core.on_packet(
        c.sid,
        Packet::Disconnect(Disconnect::new(ReasonCode::DisconnectWithWillMessage)),
        Instant::now(),
    );
    assert_eq!(flow, Ok(Flow::Close(Ending::WithWill)));
    core.disconnected(c.sid, c.generation, Ending::WithWill, Instant::now());
    assert_eq!(
        received(&drain(&mut core, &s)),
        vec![("will/x".into(), b"gone".to_vec(), QoS::AtLeastOnce, false)]
    );
}

#[test]
fn delayed_will_is_cancelled_by_reconnect_and_fires_otherwise() {
    let mut core = Core::new(0, settings(1));
    let s = connect(&mut core, connect_packet("s", ProtocolVersion::V5, true));
    subscribe(
        &mut core,
        &s,
        "w",
        SubscriptionOptions::qos(QoS::AtMostOnce),
        None,
    );
    let c = || Connect {
        properties: Some(Box::new(Properties {
            session_expiry_interval: Some(100),
            ..Default::default()
        })),
        will: Some(Will {
            topic: Utf8Bytes::from_static("w"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Some(Box::new(Properties {
                will_delay_interval: Some(5),
                ..Default::default()
            })),
        }),
        ..connect_packet("d", ProtocolVersion::V5, false)
    };
    let t0 = Instant::now();
    let d = connect(&mut core, c());
    core.disconnected(d.sid, d.generation, Ending::WithWill, t0);
    let _d2 = connect(&mut core, c()); // back before the delay [MQTT-3.1.3-9]
    core.fire_timers(t0 + Duration::from_secs(6));
    assert!(received(&drain(&mut core, &s)).is_empty());
    let d3 = connect(&mut core, c());
    core.disconnected(d3.sid, d3.generation, Ending::WithWill, t0);
    core.fire_timers(t0 + Duration::from_secs(4));
    assert!(received(&drain(&mut core, &s)).is_empty());
    core.fire_timers(t0 + Duration::from_secs(6));
    assert_eq!(received(&drain(&mut core, &s)).len(), 1);
}

#[test]
fn takeover_closes_the_old_connection_and_resumes_the_session() {
    let mut core = Core::new(0, settings(1));
    let persistent = || Connect {
        properties: Some(Box::new(Properties {
            session_expiry_interval: Some(60),
            ..Default::default()
        })),
        ..connect_packet("x", ProtocolVersion::V5, false)
    };
    let old = connect(&mut core, persistent());
    subscribe(
        &mut core,
        &old,
        "t",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        None,
    );
    let link = Rc::new(ConnLink::default());
    let c = persistent();
    let a = core.connect(&c, link.clone(), Instant::now()).unwrap();
    assert_eq!(old.link.close.get(), Some(ReasonCode::SessionTakenOver));
    let new = Client {
        sid: a.session,
        generation: a.generation,
        link,
        version: ProtocolVersion::V5,
    };
    assert!(matches!(&drain(&mut core, &new)[..], [Packet::ConnAck(c)] if c.session_present));
    // The old connection's late cleanup does not disturb the new one.
    core.disconnected(old.sid, old.generation, Ending::WithWill, Instant::now());
    publish(&mut core, &new, "t", b"1", QoS::AtLeastOnce, false);
    assert_eq!(received(&drain(&mut core, &new)).len(), 1);
}

#[test]
fn session_expiry_ends_the_session() {
    let mut core = Core::new(0, settings(1));
    let c = Connect {
        properties: Some(Box::new(Properties {
            session_expiry_interval: Some(10),
            ..Default::default()
        })),
        ..connect_packet("e", ProtocolVersion::V5, false)
    };
    let t0 = Instant::now();
    let a = connect(&mut core, c.clone());
    subscribe(
        &mut core,
        &a,
        "t",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        None,
    );
    core.disconnected(a.sid, a.generation, Ending::WithWill, t0);
    core.fire_timers(t0 + Duration::from_secs(9));
    assert_eq!((core.session_count(), core.subscription_count()), (1, 1));
    core.fire_timers(t0 + Duration::from_secs(11));
    assert_eq!((core.session_count(), core.subscription_count()), (0, 0));
}

#[test]
fn shared_group_round_robin_on_one_core() {
    let mut core = Core::new(0, settings(1));
    let members: Vec<_> = (0..3)
        .map(|i| {
            connect(
                &mut core,
                connect_packet(&format!("m{i}"), ProtocolVersion::V5, true),
            )
        })
        .collect();
    for m in &members {
        subscribe(
            &mut core,
            m,
            "$share/g/s/+",
            SubscriptionOptions::qos(QoS::AtMostOnce),
            None,
        );
    }
    let p = connect(&mut core, connect_packet("p", ProtocolVersion::V5, true));
    for _ in 0..6 {
        publish(&mut core, &p, "s/1", b"m", QoS::AtMostOnce, false);
    }
    let counts: Vec<usize> = members
        .iter()
        .map(|m| received(&drain(&mut core, m)).len())
        .collect();
    assert_eq!(counts, vec![2, 2, 2]);
}

#[test]
fn subscription_limit_is_enforced_per_client() {
    let mut core = Core::new(0, settings(1));
    let c = connect(&mut core, connect_packet("c", ProtocolVersion::V5, true));
    for i in 0..4 {
        subscribe(
            &mut core,
            &c,
            &format!("t/{i}"),
            SubscriptionOptions::qos(QoS::AtMostOnce),
            None,
        );
    }
    let r = subscribe(
        &mut core,
        &c,
        "t/9",
        SubscriptionOptions::qos(QoS::AtMostOnce),
        None,
    );
    assert!(
        matches!(&r[..], [Packet::SubAck(s)] if s.return_codes == vec![ReasonCode::QuotaExceeded])
    );
    let deep = subscribe(
        &mut core,
        &c,
        "a/b/c/d/e/f/g/h/i",
        SubscriptionOptions::qos(QoS::AtMostOnce),
        None,
    );
    assert!(
        matches!(&deep[..], [Packet::SubAck(s)] if s.return_codes == vec![ReasonCode::TopicFilterInvalid])
    );
}

/// Moves every pending mesh message between the cores until none is left.
fn settle(cores: &mut [Core]) {
    loop {
        let mut moved = false;
        for from in 0..cores.len() {
            for to in 0..cores.len() {
                while let Some(m) = cores[from].mesh_out[to].pop_front() {
                    moved = true;
                    assert!(cores[to].on_mesh(m, Instant::now()).is_none());
                }
            }
        }
        if !moved {
            return;
        }
    }
}

#[test]
fn cross_core_routing_in_order_and_shared_groups() {
    let mut cores = vec![Core::new(0, settings(2)), Core::new(1, settings(2))];
    let sub = connect(
        &mut cores[1],
        connect_packet("s", ProtocolVersion::V5, true),
    );
    subscribe(
        &mut cores[1],
        &sub,
        "x/#",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        None,
    );
    let m0 = connect(
        &mut cores[0],
        connect_packet("m0", ProtocolVersion::V5, true),
    );
    let m1 = connect(
        &mut cores[1],
        connect_packet("m1", ProtocolVersion::V5, true),
    );
    subscribe(
        &mut cores[0],
        &m0,
        "$share/g/x/y",
        SubscriptionOptions::qos(QoS::AtMostOnce),
        None,
    );
    subscribe(
        &mut cores[1],
        &m1,
        "$share/g/x/y",
        SubscriptionOptions::qos(QoS::AtMostOnce),
        None,
    );
    settle(&mut cores);
    let p = connect(
        &mut cores[0],
        connect_packet("p", ProtocolVersion::V5, true),
    );
    for payload in [b"1", b"2", b"3", b"4"] {
        publish(&mut cores[0], &p, "x/y", payload, QoS::AtLeastOnce, false);
    }
    settle(&mut cores);
    let got: Vec<Vec<u8>> = received(&drain(&mut cores[1], &sub))
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        got,
        vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]
    );
    let shared =
        received(&drain(&mut cores[0], &m0)).len() + received(&drain(&mut cores[1], &m1)).len();
    assert_eq!(shared, 4, "each message to exactly one group member");
    // Unsubscribe withdraws the interest.
    let unsub = ringmq_codec::Unsubscribe {
        packet_id: 2,
        properties: None,
        filters: vec![Utf8Bytes::from_static("x/#")],
    };
    cores[1]
        .on_packet(sub.sid, Packet::Unsubscribe(unsub), Instant::now())
        .unwrap();
    settle(&mut cores);
    drain(&mut cores[1], &sub);
    publish(&mut cores[0], &p, "x/z", b"5", QoS::AtLeastOnce, false);
    assert!(
        cores[0].mesh_out[1].is_empty(),
        "no interest left on core 1 for x/z"
    );
}

#[test]
fn retained_delivery_is_sliced_and_waits_for_the_session() {
    let mut s = settings(1);
    s.retained_scan_budget_messages = 7;
    s.retained_messages_max = 1000;
    s.session.max_queued_messages = 20;
    s.session.max_inflight_messages = 5;
    let mut core = Core::new(0, s);
    let p = connect(&mut core, connect_packet("p", ProtocolVersion::V5, true));
    for i in 0..50 {
        let topic = format!("r/{i:02}");
        let payload: &'static [u8] = Box::leak(format!("{i}").into_bytes().into_boxed_slice());
        publish(&mut core, &p, &topic, payload, QoS::AtLeastOnce, true);
    }
    let c = connect(&mut core, connect_packet("c", ProtocolVersion::V5, true));
    let first = received(&subscribe(
        &mut core,
        &c,
        "r/#",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        None,
    ));
    assert_eq!(
        first.len(),
        5,
        "the in-flight window bounds what is sent at once"
    );
    let mut topics: Vec<String> = first.into_iter().map(|r| r.0).collect();
    let mut rounds = 0;
    while topics.len() < 50 {
        rounds += 1;
        assert!(rounds < 100, "scan never finished");
        core.continue_retained_scans(Instant::now());
        // Acknowledge everything received so far.
        let packets = drain(&mut core, &c);
        for p in &packets {
            if let Packet::Publish(p) = p {
                topics.push(p.topic.to_string());
                core.on_packet(
                    c.sid,
                    Packet::PubAck(ringmq_codec::Ack::new(p.packet_id)),
                    Instant::now(),
                )
                .unwrap();
            }
        }
        if packets.is_empty() {
            // Nothing new: ack the first window.
            for id in 1..=5u16 {
                core.on_packet(
                    c.sid,
                    Packet::PubAck(ringmq_codec::Ack::new(id)),
                    Instant::now(),
                )
                .unwrap();
            }
        }
    }
    let mut sorted = topics.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 50, "every retained message exactly once");
    assert_eq!(
        core.continue_retained_scans(Instant::now()),
        ScanProgress::Done
    );
}

#[test]
fn sys_counters_travel_to_core_0_and_are_summed() {
    let mut cores = vec![Core::new(0, settings(2)), Core::new(1, settings(2))];
    let _a = connect(
        &mut cores[0],
        connect_packet("a", ProtocolVersion::V5, true),
    );
    let b = connect(
        &mut cores[1],
        connect_packet("b", ProtocolVersion::V5, true),
    );
    let _c = connect(
        &mut cores[1],
        connect_packet("c", ProtocolVersion::V5, true),
    );
    publish(&mut cores[1], &b, "t", b"x", QoS::AtMostOnce, false);
    let value = |core: &Core, topic: &str| {
        core.sys_values(Duration::from_secs(5))
            .into_iter()
            .find(|(t, _)| *t == topic)
            .map(|(_, v)| v)
            .unwrap()
    };
    assert_eq!(
        value(&cores[0], "$SYS/broker/clients/connected"),
        "1",
        "before any report"
    );
    cores[1].report_stats(0);
    settle(&mut cores);
    assert_eq!(value(&cores[0], "$SYS/broker/clients/connected"), "3");
    assert_eq!(value(&cores[0], "$SYS/broker/messages/received"), "1");
    assert_eq!(value(&cores[0], "$SYS/broker/uptime"), "5 seconds");
}

#[test]
fn admin_requests_travel_to_the_home_core_and_back() {
    use super::admin::{Query, Reply};
    let mut cores = vec![Core::new(0, settings(2)), Core::new(1, settings(2))];
    let b = connect(
        &mut cores[1],
        connect_packet("b", ProtocolVersion::V5, true),
    );
    subscribe(
        &mut cores[1],
        &b,
        "x/+",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        None,
    );
    // Asked from core 0: nothing until the mesh moves, then the answer.
    let (id, w) = cores[0].admin_ask(1, Query::Client("b".into()), Instant::now());
    assert!(w.reply.borrow().is_none());
    settle(&mut cores);
    cores[0].admin_forget(id);
    match w.reply.borrow_mut().take() {
        Some(Reply::Client(Some(info))) => {
            assert_eq!((info.core, info.connected, info.protocol), (1, true, "5.0"));
            let subs = info.subscriptions.unwrap();
            assert_eq!((subs[0].filter.as_str(), subs[0].qos), ("x/+", 1));
        }
        other => panic!("{other:?}"),
    }
    // A request that timed out: its late answer is dropped.
    let (id, w) = cores[0].admin_ask(1, Query::Clients { upto: 10 }, Instant::now());
    cores[0].admin_forget(id);
    settle(&mut cores);
    assert!(w.reply.borrow().is_none());
    // Its own core answers at once; an unknown client is no error.
    let (_, w) = cores[0].admin_ask(0, Query::Kick("nobody".into()), Instant::now());
    assert_eq!(
        w.reply.borrow_mut().take(),
        Some(Reply::Kicked {
            found: false,
            closed: false
        })
    );
    // Kick: the connection is told to close with 0x98, the session (clean) ends.
    let (_, w) = cores[0].admin_ask(1, Query::Kick("b".into()), Instant::now());
    settle(&mut cores);
    assert_eq!(
        w.reply.borrow_mut().take(),
        Some(Reply::Kicked {
            found: true,
            closed: true
        })
    );
    assert_eq!(b.link.close.get(), Some(ReasonCode::AdministrativeAction));
    assert_eq!(cores[1].connected_count(), 0);
    assert_eq!(cores[1].session_count(), 0);
}

mod durable {
    //! The core over a real log on an in-memory file system: what it writes is what it
    //! recovers, through compactions and crashes.

    use super::*;
    use crate::persist::{self, Recovered};
    use futures_lite::future::block_on;
    use ringmq_storage::{recover_on, CrashMode, Flusher, LogConfig, MemFs};

    fn cfg() -> LogConfig {
        LogConfig {
            segment_size_bytes: 8 * 1024,
            max_disk_bytes: 1 << 20,
            ..LogConfig::new("/data/core-0")
        }
    }

    fn open(fs: &MemFs) -> (Core, Flusher<MemFs>) {
        let cfg = cfg();
        let mut rec = Recovered::default();
        let (log, _) = recover_on(fs, &cfg, |lsn, k, b| rec.apply(0, lsn, k, b)).unwrap();
        rec.finish();
        let retained: Vec<_> = rec
            .retained
            .iter()
            .filter(|e| e.publish.is_some())
            .cloned()
            .collect();
        let mut core = Core::new(0, settings(1));
        core.set_store(persist::store_from(log, &rec));
        core.restore(rec, &retained, Instant::now());
        (core, Flusher::new(fs.clone(), &cfg))
    }

    fn flush(core: &mut Core, f: &mut Flusher<MemFs>) {
        loop {
            let batch = core
                .store_mut()
                .unwrap()
                .log_mut()
                .take_batch(Instant::now());
            let Some(batch) = batch else { break };
            let r = block_on(f.run_batch(batch));
            core.store_mut().unwrap().log_mut().complete(r);
            core.on_durable(Instant::now());
        }
    }

    fn persistent(id: &str) -> Connect {
        let mut c = connect_packet(id, ProtocolVersion::V5, false);
        c.properties = Some(Box::new(Properties {
            session_expiry_interval: Some(10_000),
            ..Default::default()
        }));
        c
    }

    fn publish_n(core: &mut Core, c: &Client, topic: &str, payload: Vec<u8>, qos: QoS, id: u16) {
        let p = Publish {
            qos,
            topic: Utf8Bytes::try_from(topic).unwrap(),
            packet_id: id,
            payload: Bytes::from(payload),
            ..Default::default()
        };
        core.on_packet(c.sid, Packet::Publish(p), Instant::now())
            .unwrap();
    }

    /// Connects (resuming) and receives everything the session had, acknowledging it.
    fn resume_and_receive(core: &mut Core, id: &str) -> (Client, Vec<Vec<u8>>) {
        let link = Rc::new(ConnLink::default());
        let a = core
            .connect(&persistent(id), link.clone(), Instant::now())
            .unwrap();
        let c = Client {
            sid: a.session,
            generation: a.generation,
            link,
            version: ProtocolVersion::V5,
        };
        let first = drain(core, &c);
        assert!(
            matches!(first.first(), Some(Packet::ConnAck(a)) if a.session_present),
            "{id}: session present"
        );
        let mut got = Vec::new();
        acknowledge(core, &c, first, &mut got);
        got.extend(receive_all(core, &c));
        (c, got)
    }

    fn acknowledge(core: &mut Core, c: &Client, packets: Vec<Packet>, got: &mut Vec<Vec<u8>>) {
        for p in packets {
            if let Packet::Publish(p) = p {
                got.push(p.payload.to_vec());
                let ack = ringmq_codec::Ack::new(p.packet_id);
                let packet = match p.qos {
                    QoS::AtLeastOnce => Packet::PubAck(ack),
                    QoS::ExactlyOnce => Packet::PubRec(ack),
                    QoS::AtMostOnce => continue,
                };
                core.on_packet(c.sid, packet, Instant::now()).unwrap();
            } else if let Packet::PubRel(a) = p {
                core.on_packet(c.sid, Packet::PubComp(a), Instant::now())
                    .unwrap();
            }
        }
    }

    /// Receives and acknowledges everything the core sends to `c` until it sends nothing.
    fn receive_all(core: &mut Core, c: &Client) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        loop {
            let packets = drain(core, c);
            if packets.is_empty() {
                return got;
            }
            acknowledge(core, c, packets, &mut got);
        }
    }

    #[test]
    fn what_compaction_keeps_is_what_recovery_finds() {
        let fs = MemFs::new();
        let (mut core, mut f) = open(&fs);
        let offline = connect(&mut core, persistent("offline"));
        subscribe(
            &mut core,
            &offline,
            "t/0",
            SubscriptionOptions::qos(QoS::AtLeastOnce),
            None,
        );
        core.disconnected(
            offline.sid,
            offline.generation,
            Ending::Normal,
            Instant::now(),
        );
        let online = connect(&mut core, persistent("online"));
        subscribe(
            &mut core,
            &online,
            "t/#",
            SubscriptionOptions::qos(QoS::ExactlyOnce),
            None,
        );
        let publ = connect(&mut core, connect_packet("pub", ProtocolVersion::V5, true));
        let mut retired = 0;
        let mut sent = Vec::new();
        for i in 0..600u32 {
            let payload = format!("m{i:04}-{}", "x".repeat(200)).into_bytes();
            let qos = if i % 2 == 0 {
                QoS::AtLeastOnce
            } else {
                QoS::ExactlyOnce
            };
            let pid = i as u16 + 1;
            publish_n(
                &mut core,
                &publ,
                &format!("t/{}", i % 7),
                payload.clone(),
                qos,
                pid,
            );
            if qos == QoS::ExactlyOnce {
                let rel = Packet::PubRel(ringmq_codec::Ack::new(pid));
                core.on_packet(publ.sid, rel, Instant::now()).unwrap();
            }
            if i % 7 == 0 {
                sent.push(payload);
            }
            flush(&mut core, &mut f);
            // The online session takes everything: its copies become dead records.
            let n = receive_all(&mut core, &online).len();
            assert_eq!(
                n,
                1,
                "message {i}: held {} sessions {}",
                core.held_acks(),
                core.session_count()
            );
            drain(&mut core, &publ);
            if i % 10 == 0 {
                loop {
                    let step = core.compact(Instant::now());
                    flush(&mut core, &mut f);
                    match step {
                        persist::CompactStep::Idle => break,
                        persist::CompactStep::Retired => retired += 1,
                        persist::CompactStep::More => {}
                    }
                }
            }
        }
        assert!(retired > 0, "compaction never retired a segment");
        let stats = core.store_mut().unwrap().log().stats();
        assert!(
            stats.disk_bytes < stats.appended_lsn / 4,
            "dead records were reclaimed: {stats:?}"
        );
        drop(core);
        fs.crash(CrashMode::KeepPageCache);
        let (mut core, _f) = open(&fs);
        let (offline, got) = resume_and_receive(&mut core, "offline");
        assert_eq!(got.len(), sent.len(), "every message");
        assert!(got == sent, "in order");
        let (online, again) = resume_and_receive(&mut core, "online");
        // The last acknowledgement was not flushed before the crash: at most that one again.
        assert!(again.len() <= 1, "nothing acknowledged and durable twice");
        // The subscriptions came back too.
        let publ = connect(&mut core, connect_packet("pub", ProtocolVersion::V5, true));
        publish_n(
            &mut core,
            &publ,
            "t/0",
            b"after".to_vec(),
            QoS::AtLeastOnce,
            2,
        );
        assert_eq!(receive_all(&mut core, &online), vec![b"after".to_vec()]);
        assert_eq!(receive_all(&mut core, &offline), vec![b"after".to_vec()]);
    }

    /// A core with an offline session holding every message on `t/0` and an online one that
    /// took (and acknowledged) everything: a log of mostly dead records. Returns the offline
    /// session's messages.
    fn mostly_dead_log(core: &mut Core, f: &mut Flusher<MemFs>, n: u32) -> Vec<Vec<u8>> {
        let offline = connect(core, persistent("offline"));
        subscribe(
            core,
            &offline,
            "t/0",
            SubscriptionOptions::qos(QoS::ExactlyOnce),
            None,
        );
        core.disconnected(
            offline.sid,
            offline.generation,
            Ending::Normal,
            Instant::now(),
        );
        let online = connect(core, persistent("online"));
        subscribe(
            core,
            &online,
            "t/#",
            SubscriptionOptions::qos(QoS::AtLeastOnce),
            None,
        );
        let publ = connect(core, connect_packet("pub", ProtocolVersion::V5, true));
        let mut kept = Vec::new();
        for i in 0..n {
            let payload = format!("m{i:04}-{}", "y".repeat(150)).into_bytes();
            let qos = if i % 3 == 0 {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            };
            let pid = i as u16 + 1;
            publish_n(
                core,
                &publ,
                &format!("t/{}", i % 5),
                payload.clone(),
                qos,
                pid,
            );
            if qos == QoS::ExactlyOnce {
                let rel = Packet::PubRel(ringmq_codec::Ack::new(pid));
                core.on_packet(publ.sid, rel, Instant::now()).unwrap();
            }
            if i % 5 == 0 {
                kept.push(payload);
            }
            flush(core, f);
            receive_all(core, &online);
            drain(core, &publ);
            flush(core, f);
        }
        kept
    }

    /// Runs compaction to the end (or until the file system stops), flushing as it goes.
    fn compact_all(core: &mut Core, f: &mut Flusher<MemFs>, fs: &MemFs) -> usize {
        let mut retired = 0;
        for _ in 0..10_000 {
            if fs.is_stopped() {
                break;
            }
            let step = core.compact(Instant::now());
            if !fs.is_stopped() {
                flush(core, f);
            }
            match step {
                persist::CompactStep::Idle => break,
                persist::CompactStep::Retired => retired += 1,
                persist::CompactStep::More => {}
            }
        }
        retired
    }

    #[test]
    fn a_crash_anywhere_in_a_compaction_loses_nothing_that_was_durable() {
        // How much a whole compaction writes, to spread the crash points over it.
        let fs = MemFs::new();
        let (mut core, mut f) = open(&fs);
        let kept = mostly_dead_log(&mut core, &mut f, 300);
        let before = fs.bytes_written();
        assert!(
            compact_all(&mut core, &mut f, &fs) > 0,
            "nothing to compact"
        );
        let span = fs.bytes_written() - before;
        assert!(span > 0);
        for mode in [CrashMode::KeepPageCache, CrashMode::DropUnsynced] {
            for k in 0..12u64 {
                let fs = MemFs::new();
                let (mut core, mut f) = open(&fs);
                assert_eq!(mostly_dead_log(&mut core, &mut f, 300), kept);
                fs.tear_after(Some(span * k / 11 + k));
                compact_all(&mut core, &mut f, &fs);
                drop(core);
                fs.crash(mode);
                let (mut core, _f) = open(&fs);
                let (_, got) = resume_and_receive(&mut core, "offline");
                assert_eq!(
                    got.len(),
                    kept.len(),
                    "{mode:?}, crash point {k}: every message"
                );
                assert!(got == kept, "{mode:?}, crash point {k}: in order");
            }
        }
    }

    #[test]
    fn a_puback_waits_for_the_disk_when_a_persistent_session_stores_the_message() {
        let fs = MemFs::new();
        let (mut core, mut f) = open(&fs);
        let sub = connect(&mut core, persistent("sub"));
        subscribe(
            &mut core,
            &sub,
            "a",
            SubscriptionOptions::qos(QoS::AtLeastOnce),
            None,
        );
        core.disconnected(sub.sid, sub.generation, Ending::Normal, Instant::now());
        flush(&mut core, &mut f);
        let publ = connect(&mut core, connect_packet("pub", ProtocolVersion::V5, true));
        publish_n(&mut core, &publ, "a", b"m".to_vec(), QoS::AtLeastOnce, 9);
        assert!(
            drain(&mut core, &publ).is_empty(),
            "no PUBACK before the flush"
        );
        assert_eq!(core.held_acks(), 1);
        flush(&mut core, &mut f);
        assert!(matches!(&drain(&mut core, &publ)[..], [Packet::PubAck(a)] if a.packet_id == 9));
        // A topic nobody persistent wants is acknowledged at once.
        publish_n(&mut core, &publ, "b", b"m".to_vec(), QoS::AtLeastOnce, 10);
        assert!(matches!(&drain(&mut core, &publ)[..], [Packet::PubAck(a)] if a.packet_id == 10));
    }
}

/// Like [`settle`], with the end-of-batch step the runtime takes after each batch from a core
/// (the cross-core window's reports).
fn settle_batches(cores: &mut [Core]) {
    loop {
        let mut moved = false;
        for from in 0..cores.len() {
            for to in 0..cores.len() {
                let batch: Vec<MeshMsg> = cores[from].mesh_out[to].drain(..).collect();
                if batch.is_empty() {
                    continue;
                }
                moved = true;
                for m in batch {
                    assert!(cores[to].on_mesh(m, Instant::now()).is_none());
                }
                cores[to].after_mesh_batch(from as CoreId);
            }
        }
        if !moved {
            return;
        }
    }
}

fn backpressure_settings() -> CoreSettings {
    let mut s = settings(2);
    s.session.max_queued_messages = 20;
    s.session.max_inflight_messages = 2;
    s.cross_core_window_messages = 4;
    s.backpressure = Backpressure::new(50, &s.session, Duration::from_secs(2), 8);
    s
}

#[test]
fn a_full_connected_session_pauses_its_publishers_across_cores_until_it_drains() {
    let mut cores = vec![
        Core::new(0, backpressure_settings()),
        Core::new(1, backpressure_settings()),
    ];
    let sub = connect(
        &mut cores[1],
        connect_packet("s", ProtocolVersion::V5, true),
    );
    subscribe(
        &mut cores[1],
        &sub,
        "b/#",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        None,
    );
    settle_batches(&mut cores);
    let remote = connect(
        &mut cores[0],
        connect_packet("r", ProtocolVersion::V5, true),
    );
    let local = connect(
        &mut cores[1],
        connect_packet("l", ProtocolVersion::V5, true),
    );
    // 2 in flight, then the queue: the mark is 10 queued messages.
    for _ in 0..12 {
        publish(&mut cores[0], &remote, "b/r", b"m", QoS::AtLeastOnce, false);
        settle_batches(&mut cores);
        assert!(!cores[0].cross_core_window_full(), "seen after each batch");
    }
    assert_eq!(
        remote.link.throttled.get(),
        1,
        "the remote publisher is paused"
    );
    // Room for what was on its way: 2 windows of 4 from the other core, 8 publishers.
    assert_eq!(cores[1].slots[&sub.sid].session.backpressure_allowance, 16);
    // Core 1 now pauses publishers: a publisher it has not named yet may have one message on
    // its way there, not a window.
    assert!(cores[0].congested[1]);
    let other = connect(
        &mut cores[0],
        connect_packet("r2", ProtocolVersion::V5, true),
    );
    assert!(!cores[0].must_wait_for_mesh(&other.link));
    publish(&mut cores[0], &other, "b/r2", b"m", QoS::AtLeastOnce, false);
    assert_eq!(other.link.unseen.get(), 1);
    assert!(cores[0].must_wait_for_mesh(&other.link));
    assert!(
        !cores[0].must_wait_for_mesh(&remote.link),
        "nothing of its own unseen"
    );
    settle_batches(&mut cores);
    assert_eq!(other.link.unseen.get(), 0);
    assert_eq!(other.link.throttled.get(), 1, "named and paused by then");
    publish(&mut cores[1], &local, "b/l", b"m", QoS::AtLeastOnce, false);
    assert_eq!(
        local.link.throttled.get(),
        1,
        "the local publisher is paused at once"
    );
    publish(&mut cores[1], &local, "b/l", b"m", QoS::AtLeastOnce, false);
    assert_eq!(
        local.link.throttled.get(),
        1,
        "once per session, however many messages"
    );
    // QoS 0 never pauses anyone.
    let q0 = connect(
        &mut cores[1],
        connect_packet("q0", ProtocolVersion::V5, true),
    );
    publish(&mut cores[1], &q0, "b/q", b"m", QoS::AtMostOnce, false);
    assert_eq!(q0.link.throttled.get(), 0);
    assert_eq!(cores[1].stats.backpressure_episodes, 1);
    // The subscriber acknowledges until its queue is at half the mark: both released.
    let mut acked = 0;
    while remote.link.throttled.get() > 0 || local.link.throttled.get() > 0 {
        assert!(cores[0].congested[1]);
        let packets = drain(&mut cores[1], &sub);
        for p in packets {
            if let Packet::Publish(p) = p {
                cores[1]
                    .on_packet(
                        sub.sid,
                        Packet::PubAck(ringmq_codec::Ack::new(p.packet_id)),
                        Instant::now(),
                    )
                    .unwrap();
                acked += 1;
            }
        }
        settle_batches(&mut cores);
        assert!(acked < 14, "released by the time the queue is at 5");
    }
    assert!(
        acked >= 14 - 5 - 2,
        "not released before the queue drained ({acked} acked)"
    );
    assert_eq!(cores[1].stats.messages_dropped, 0);
    assert_eq!(other.link.throttled.get(), 0);
    assert!(
        !cores[0].congested[1],
        "no session of core 1 pauses anyone now"
    );
    assert_eq!(cores[1].slots[&sub.sid].session.backpressure_allowance, 0);
    // The cross-core window: 4 QoS 1 publications core 1 has not handled close it; QoS 0
    // ones do not count.
    publish(&mut cores[0], &remote, "b/r", b"m", QoS::AtMostOnce, false);
    for i in 0..4 {
        assert!(!cores[0].cross_core_window_full(), "{i} unseen");
        publish(&mut cores[0], &remote, "b/r", b"m", QoS::AtLeastOnce, false);
    }
    assert!(cores[0].cross_core_window_full());
    settle_batches(&mut cores);
    assert!(!cores[0].cross_core_window_full());
}

#[test]
fn a_session_that_goes_offline_releases_its_publishers() {
    let mut cores = vec![
        Core::new(0, backpressure_settings()),
        Core::new(1, backpressure_settings()),
    ];
    let sub = connect(
        &mut cores[1],
        connect_packet("s", ProtocolVersion::V5, true),
    );
    subscribe(
        &mut cores[1],
        &sub,
        "b/#",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        None,
    );
    settle_batches(&mut cores);
    let remote = connect(
        &mut cores[0],
        connect_packet("r", ProtocolVersion::V5, true),
    );
    for _ in 0..12 {
        publish(&mut cores[0], &remote, "b/r", b"m", QoS::AtLeastOnce, false);
        settle_batches(&mut cores);
    }
    assert_eq!(remote.link.throttled.get(), 1);
    cores[1].disconnected(sub.sid, sub.generation, Ending::WithWill, Instant::now());
    settle_batches(&mut cores);
    assert_eq!(
        remote.link.throttled.get(),
        0,
        "released when the subscriber left"
    );
    // Its own messages never pause a session's own connection.
    let both = connect(
        &mut cores[1],
        connect_packet("both", ProtocolVersion::V5, true),
    );
    subscribe(
        &mut cores[1],
        &both,
        "self/t",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        None,
    );
    for _ in 0..15 {
        publish(
            &mut cores[1],
            &both,
            "self/t",
            b"m",
            QoS::AtLeastOnce,
            false,
        );
    }
    assert_eq!(both.link.throttled.get(), 0);
}
mod overload;

#[test]
fn the_back_pressure_mark_is_a_share_of_the_queue_limits() {
    let mut limits = settings(1).session;
    limits.max_queued_messages = 40;
    limits.max_queued_bytes = 1000;
    let bp = Backpressure::new(50, &limits, Duration::from_secs(1), 4).unwrap();
    assert_eq!((bp.high, bp.high_bytes), (20, 500));
    limits.max_queued_messages = 1;
    assert_eq!(
        Backpressure::new(10, &limits, Duration::ZERO, 1)
            .unwrap()
            .high,
        1
    );
    limits.max_queued_messages = usize::MAX;
    assert_eq!(
        Backpressure::new(100, &limits, Duration::ZERO, 1)
            .unwrap()
            .high,
        usize::MAX
    );
    assert!(Backpressure::new(0, &limits, Duration::ZERO, 1).is_none());
}
