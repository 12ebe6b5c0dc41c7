//! QoS 0/1/2 in both directions over real sockets, in 3.1.1 and 5.0: the full QoS 2 exchange,
//! exactly-once for duplicate PUBLISHes, the in-flight window, redelivery with DUP when a session
//! resumes, and queueing while the subscriber is offline. Publisher and subscriber sit on
//! different cores of a two-core broker.

mod common;

use std::time::Duration;

use common::{id_on_core, publish_packet, Broker, Client, VERSIONS};
use ringmq_codec::{Ack, Packet, Properties, ProtocolVersion, QoS};

const QUIET: Duration = Duration::from_millis(300);

#[test]
fn qos_0_1_2_delivered_both_directions_across_cores() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let sub_id = id_on_core(&format!("qsub-{v:?}"), 0, 2);
        let pub_id = id_on_core(&format!("qpub-{v:?}"), 1, 2);
        let mut sub = Client::connect(broker.addr, &sub_id, v);
        sub.subscribe_ok("qos/#", QoS::ExactlyOnce);
        let mut publ = Client::connect(broker.addr, &pub_id, v);
        broker.settle();
        for (n, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            let topic = format!("qos/{n}");
            publ.publish_acked(
                &topic,
                format!("m{n}").as_bytes(),
                qos,
                false,
                10 + n as u16,
            );
            let p = sub.expect_publish();
            assert_eq!(
                (&*p.topic, &p.payload[..]),
                (&*topic, format!("m{n}").as_bytes())
            );
            assert_eq!(p.qos, qos, "{v:?}: delivered at the published QoS");
            assert!(!p.dup && !p.retain);
            assert_eq!(p.packet_id == 0, qos == QoS::AtMostOnce);
            sub.ack(&p); // for QoS 2: PUBREC, PUBREL from the broker, PUBCOMP
        }
        sub.expect_nothing(QUIET);
    }
}

#[test]
fn delivery_qos_is_the_lower_of_message_and_subscription() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let mut s1 = Client::connect(broker.addr, &id_on_core(&format!("low-{v:?}"), 0, 2), v);
        s1.subscribe_ok("down/grade", QoS::AtLeastOnce);
        let mut s0 = Client::connect(broker.addr, &id_on_core(&format!("zero-{v:?}"), 1, 2), v);
        s0.subscribe_ok("down/grade", QoS::AtMostOnce);
        let mut publ = Client::connect(broker.addr, &format!("dg-pub-{v:?}"), v);
        broker.settle();
        publ.publish_acked("down/grade", b"x", QoS::ExactlyOnce, false, 3);
        let p = s1.expect_publish_acked();
        assert_eq!(p.qos, QoS::AtLeastOnce);
        let p = s0.expect_publish();
        assert_eq!((p.qos, p.packet_id), (QoS::AtMostOnce, 0));
        publ.publish_acked("down/grade", b"y", QoS::AtMostOnce, false, 1);
        assert_eq!(s1.expect_publish().qos, QoS::AtMostOnce);
    }
}

#[test]
fn qos2_duplicate_publish_before_pubrel_is_delivered_once() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let mut sub = Client::connect(broker.addr, &id_on_core(&format!("eo-s-{v:?}"), 1, 2), v);
        sub.subscribe_ok("eo/t", QoS::ExactlyOnce);
        let mut publ = Client::connect(broker.addr, &id_on_core(&format!("eo-p-{v:?}"), 0, 2), v);
        broker.settle();
        let mut p = publish_packet("eo/t", b"once", QoS::ExactlyOnce, false, 9);
        publ.send(&Packet::Publish(p.clone()));
        assert!(matches!(publ.expect(), Packet::PubRec(a) if a.packet_id == 9));
        p.dup = true;
        for _ in 0..2 {
            publ.send(&Packet::Publish(p.clone()));
            assert!(matches!(publ.expect(), Packet::PubRec(a) if a.packet_id == 9));
        }
        publ.send(&Packet::PubRel(Ack::new(9)));
        assert!(matches!(publ.expect(), Packet::PubComp(a) if a.packet_id == 9));
        let got = sub.expect_publish_acked();
        assert_eq!(&got.payload[..], b"once");
        sub.expect_nothing(QUIET);
        // After PUBCOMP the identifier is free: the same id carries a new message.
        publ.publish_acked("eo/t", b"again", QoS::ExactlyOnce, false, 9);
        assert_eq!(&sub.expect_publish_acked().payload[..], b"again");
        sub.expect_nothing(QUIET);
    }
}

#[test]
fn qos2_exactly_once_across_publisher_reconnect() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let mut sub = Client::connect(broker.addr, &id_on_core(&format!("eor-s-{v:?}"), 0, 2), v);
        sub.subscribe_ok("eor/t", QoS::ExactlyOnce);
        let pub_id = id_on_core(&format!("eor-p-{v:?}"), 1, 2);
        let (mut publ, _) = Client::connect_persistent(broker.addr, &pub_id, v, 60);
        broker.settle();
        let mut p = publish_packet("eor/t", b"one", QoS::ExactlyOnce, false, 77);
        publ.send(&Packet::Publish(p.clone()));
        assert!(matches!(publ.expect(), Packet::PubRec(a) if a.packet_id == 77));
        drop(publ); // lost before PUBREL
        let (mut publ, present) = Client::connect_persistent(broker.addr, &pub_id, v, 60);
        assert!(present, "{v:?}: session resumed");
        p.dup = true;
        publ.send(&Packet::Publish(p));
        assert!(matches!(publ.expect(), Packet::PubRec(a) if a.packet_id == 77));
        publ.send(&Packet::PubRel(Ack::new(77)));
        assert!(matches!(publ.expect(), Packet::PubComp(a) if a.packet_id == 77));
        assert_eq!(&sub.expect_publish_acked().payload[..], b"one");
        sub.expect_nothing(QUIET);
    }
}

/// Publishes `n` QoS `qos` messages "0".."n-1" on `topic` from `publ`.
fn publish_n(publ: &mut Client, topic: &str, n: u8, qos: QoS) {
    for i in 0..n {
        publ.publish_acked(topic, &[i], qos, false, u16::from(i) + 1);
    }
}

/// Receives messages, never more than `window` unacknowledged, checking order.
fn drain_with_window(sub: &mut Client, n: u8, window: usize) {
    let mut unacked = Vec::new();
    let mut next = 0u8;
    while next < n {
        while unacked.len() < window && next < n {
            let p = sub.expect_publish();
            assert_eq!(p.payload[..], [next], "in order");
            unacked.push(p);
            next += 1;
        }
        // The window is full: nothing more may arrive until an acknowledgement.
        if next < n {
            sub.expect_nothing(Duration::from_millis(150));
        }
        let p = unacked.remove(0);
        sub.ack(&p);
    }
    for p in unacked {
        sub.ack(&p);
    }
    sub.expect_nothing(Duration::from_millis(150));
}

#[test]
fn v5_receive_maximum_of_the_client_bounds_the_inflight_window() {
    let broker = Broker::cores(2);
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let id = id_on_core(&format!("rm-{qos:?}"), 1, 2);
        let (mut sub, _) = Client::connect_ok(broker.addr, &id, ProtocolVersion::V5, |c| {
            c.properties = Some(Box::new(Properties {
                receive_maximum: Some(3),
                ..Default::default()
            }));
        });
        sub.subscribe_ok("win/t", qos);
        let mut publ =
            Client::connect(broker.addr, &format!("rm-pub-{qos:?}"), ProtocolVersion::V5);
        broker.settle();
        publish_n(&mut publ, "win/t", 10, qos);
        drain_with_window(&mut sub, 10, 3);
    }
}

#[test]
fn v311_inflight_window_is_max_inflight_messages() {
    let broker = Broker::with_config(2, "[limits]\nmax_inflight_messages = 2\n");
    let v = ProtocolVersion::V3_1_1;
    let mut sub = Client::connect(broker.addr, &id_on_core("win311", 0, 2), v);
    sub.subscribe_ok("win/t", QoS::AtLeastOnce);
    let mut publ = Client::connect(broker.addr, &id_on_core("win311-pub", 1, 2), v);
    broker.settle();
    publish_n(&mut publ, "win/t", 7, QoS::AtLeastOnce);
    drain_with_window(&mut sub, 7, 2);
}

#[test]
fn unacknowledged_messages_are_redelivered_with_dup_on_resume() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let id = id_on_core(&format!("dup-{v:?}"), 0, 2);
        let (mut sub, present) = Client::connect_persistent(broker.addr, &id, v, 300);
        assert!(!present);
        sub.subscribe_ok("dup/#", QoS::ExactlyOnce);
        let mut publ = Client::connect(broker.addr, &id_on_core(&format!("dup-p-{v:?}"), 1, 2), v);
        broker.settle();
        publ.publish_acked("dup/1", b"a", QoS::AtLeastOnce, false, 1);
        publ.publish_acked("dup/2", b"b", QoS::ExactlyOnce, false, 2);
        publ.publish_acked("dup/1", b"c", QoS::AtLeastOnce, false, 3);
        let first: Vec<_> = (0..3).map(|_| sub.expect_publish()).collect();
        assert!(first.iter().all(|p| !p.dup));
        drop(sub); // no acknowledgement at all
        let (mut sub, present) = Client::connect_persistent(broker.addr, &id, v, 300);
        assert!(present, "{v:?}: Session Present");
        let again: Vec<_> = (0..3).map(|_| sub.expect_publish()).collect();
        for (p, want) in again.iter().zip(&first) {
            assert!(p.dup, "{v:?}: DUP set on redelivery");
            assert_eq!(
                (p.packet_id, p.qos, &p.payload, &p.topic),
                (want.packet_id, want.qos, &want.payload, &want.topic)
            );
        }
        for p in &again {
            sub.ack(p);
        }
        sub.expect_nothing(QUIET);
        // Acknowledged: a further resume redelivers nothing.
        drop(sub);
        let (mut sub, present) = Client::connect_persistent(broker.addr, &id, v, 300);
        assert!(present);
        sub.expect_nothing(QUIET);
    }
}

#[test]
fn pubrel_is_resent_on_resume_and_the_message_not_redelivered() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let id = id_on_core(&format!("rel-{v:?}"), 1, 2);
        let (mut sub, _) = Client::connect_persistent(broker.addr, &id, v, 300);
        sub.subscribe_ok("rel/t", QoS::ExactlyOnce);
        let mut publ = Client::connect(broker.addr, &id_on_core(&format!("rel-p-{v:?}"), 0, 2), v);
        broker.settle();
        publ.publish_acked("rel/t", b"q2", QoS::ExactlyOnce, false, 5);
        let p = sub.expect_publish();
        sub.send(&Packet::PubRec(Ack::new(p.packet_id)));
        assert!(matches!(sub.expect(), Packet::PubRel(a) if a.packet_id == p.packet_id));
        drop(sub); // before PUBCOMP
        let (mut sub, present) = Client::connect_persistent(broker.addr, &id, v, 300);
        assert!(present);
        assert!(
            matches!(sub.expect(), Packet::PubRel(a) if a.packet_id == p.packet_id),
            "{v:?}: PUBREL resent"
        );
        sub.send(&Packet::PubComp(Ack::new(p.packet_id)));
        sub.expect_nothing(QUIET);
    }
}

#[test]
fn qos_1_and_2_are_queued_while_offline_and_clean_sessions_are_not() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let id = id_on_core(&format!("off-{v:?}"), 0, 2);
        let (sub, _) = Client::connect_persistent(broker.addr, &id, v, 300);
        let mut sub = sub;
        sub.subscribe_ok("off/#", QoS::ExactlyOnce);
        sub.disconnect();
        let mut publ = Client::connect(broker.addr, &id_on_core(&format!("off-p-{v:?}"), 1, 2), v);
        broker.settle();
        publ.publish_acked("off/a", b"0", QoS::AtMostOnce, false, 1);
        publ.publish_acked("off/a", b"1", QoS::AtLeastOnce, false, 2);
        publ.publish_acked("off/b", b"2", QoS::ExactlyOnce, false, 3);
        publ.publish_acked("off/a", b"3", QoS::AtLeastOnce, false, 4);
        let (mut sub, present) = Client::connect_persistent(broker.addr, &id, v, 300);
        assert!(present);
        let got: Vec<_> = (0..3).map(|_| sub.expect_publish()).collect();
        for (p, (payload, qos)) in got.iter().zip([
            (b"1", QoS::AtLeastOnce),
            (b"2", QoS::ExactlyOnce),
            (b"3", QoS::AtLeastOnce),
        ]) {
            assert_eq!((&p.payload[..], p.qos, p.dup), (&payload[..], qos, false));
        }
        for p in &got {
            sub.ack(p);
        }
        // QoS 0 is not stored for an offline client (documented drop policy).
        sub.expect_nothing(QUIET);
        sub.disconnect();

        // A clean session starts empty and keeps nothing.
        let mut clean = Client::connect(broker.addr, &id, v);
        clean.expect_nothing(Duration::from_millis(200));
        clean.disconnect();
        publ.publish_acked("off/a", b"lost", QoS::AtLeastOnce, false, 5);
        let (mut sub, present) = Client::connect_persistent(broker.addr, &id, v, 300);
        assert!(!present, "{v:?}: the clean session replaced the stored one");
        sub.expect_nothing(QUIET);
    }
}

#[test]
fn v5_resume_with_a_smaller_receive_maximum_resends_within_it() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let id = id_on_core("rm-resume", 1, 2);
    let connect = |receive_maximum: u16| {
        Client::connect_ok(broker.addr, &id, v, |c| {
            c.clean_start = false;
            c.properties = Some(Box::new(Properties {
                session_expiry_interval: Some(300),
                receive_maximum: Some(receive_maximum),
                ..Default::default()
            }));
        })
        .0
    };
    let mut sub = connect(10);
    sub.subscribe_ok("rmr/t", QoS::AtLeastOnce);
    let mut publ = Client::connect(broker.addr, &id_on_core("rm-resume-pub", 0, 2), v);
    broker.settle();
    publish_n(&mut publ, "rmr/t", 6, QoS::AtLeastOnce);
    for i in 0..6u8 {
        assert_eq!(sub.expect_publish().payload[..], [i]);
    }
    drop(sub); // six in flight, none acknowledged
               // Back with a Receive Maximum of 2: never more than 2 unacknowledged at once, in order.
    let mut sub = connect(2);
    let mut unacked = Vec::new();
    for i in 0..6u8 {
        if unacked.len() == 2 {
            sub.expect_nothing(Duration::from_millis(150));
            sub.ack(&unacked.remove(0));
        }
        let p = sub.expect_publish();
        assert_eq!(
            (p.payload[..].to_vec(), p.dup),
            (vec![i], true),
            "resent in order"
        );
        unacked.push(p);
    }
    for p in &unacked {
        sub.ack(p);
    }
    sub.expect_nothing(QUIET);
}

#[test]
fn large_messages_cross_cores_intact() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let mut sub = Client::connect(broker.addr, &id_on_core(&format!("big-{v:?}"), 0, 2), v);
        sub.subscribe_ok("big/t", QoS::AtLeastOnce);
        let mut publ = Client::connect(broker.addr, &id_on_core(&format!("big-p-{v:?}"), 1, 2), v);
        broker.settle();
        // Larger than the read buffer, the write high-water mark and a socket buffer.
        let payloads: Vec<Vec<u8>> = (0..3u8)
            .map(|k| (0..700_000u32).map(|i| (i % 251) as u8 ^ k).collect())
            .collect();
        for (k, p) in payloads.iter().enumerate() {
            publ.publish_acked("big/t", p, QoS::ExactlyOnce, false, k as u16 + 1);
        }
        for (k, p) in payloads.iter().enumerate() {
            let Some(Packet::Publish(got)) = sub.recv() else {
                panic!("{v:?}: message {k} missing");
            };
            assert!(got.payload[..] == p[..], "{v:?}: payload {k} intact");
            sub.ack(&got);
        }
    }
}
