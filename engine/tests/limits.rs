//! Configured limits over real sockets, each with its behaviour when hit: maximum packet size,
//! CONNECT timeout, maximum connections, subscriptions per client, topic levels and length,
//! client id length, maximum QoS, retain availability, shared subscriptions disabled, the
//! per-session queue, and anonymous clients refused.

mod common;

use std::time::{Duration, Instant};

use common::{id_on_core, publish_packet, will, Broker, Client, VERSIONS};
use ringmq_codec::{Packet, ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};

const V5: ProtocolVersion = ProtocolVersion::V5;

#[test]
fn max_packet_size_is_announced_and_enforced_from_the_header() {
    let broker = Broker::with_config(2, "[limits]\nmax_packet_size_bytes = 1024\n");
    let (c, ack) = Client::connect_ok(broker.addr, "mps-ann", V5, |_| {});
    assert_eq!(ack.properties.unwrap().maximum_packet_size, Some(1024));
    c.disconnect();
    for v in VERSIONS {
        let mut sub = Client::connect(broker.addr, &format!("mps-sub-{v:?}"), v);
        sub.subscribe_ok("mps/#", QoS::AtMostOnce);
        let mut c = Client::connect(broker.addr, &format!("mps-{v:?}"), v);
        broker.settle();
        // Up to the limit: accepted (1 + 2 for the fixed header, 2 + 5 for the topic, the
        // property length in 5.0, the payload).
        let fits = if v.is_v5() { 1024 - 11 } else { 1024 - 10 };
        let exact = publish_packet("mps/a", &vec![b'a'; fits], QoS::AtMostOnce, false, 0);
        assert_eq!(Packet::Publish(exact).encoded_len(v), 1024);
        c.publish_acked("mps/a", &vec![b'a'; fits], QoS::AtMostOnce, false, 1);
        assert_eq!(sub.expect_publish().payload.len(), fits);
        // One byte more: refused. Only the fixed header and a few bytes are sent; the broker
        // decides from the declared length without waiting for the body.
        let mut bytes = vec![0x30];
        let mut len = 1025 - 3;
        while len > 0 {
            let mut b = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                b |= 0x80;
            }
            bytes.push(b);
        }
        bytes.extend_from_slice(&[0, 5, b'm', b'p', b's', b'/', b'b']);
        c.send_raw(&bytes);
        c.expect_close(ReasonCode::PacketTooLarge);
        sub.expect_nothing(Duration::from_millis(300));
    }
}

#[test]
fn connect_timeout_closes_silent_and_slow_sockets() {
    let broker = Broker::with_config(2, "[limits]\nconnect_timeout_ms = 500\n");
    let start = Instant::now();
    let mut silent = Client::open(broker.addr, V5);
    let mut slow = Client::open(broker.addr, V5);
    slow.send_raw(&[0x10, 0x20, 0x00, 0x04, b'M']); // a CONNECT that never completes
    for c in [&mut silent, &mut slow] {
        let (closed, packets) = c.closed_within(Duration::from_secs(3));
        assert!(closed && packets.is_empty(), "{packets:?}");
    }
    assert!(start.elapsed() >= Duration::from_millis(450));
    // A prompt client is unaffected, and is not timed out after its CONNECT.
    let mut c = Client::connect(broker.addr, "prompt", V5);
    std::thread::sleep(Duration::from_millis(800));
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(), Some(Packet::PingResp));
}

#[test]
fn max_connections_refuses_with_server_busy() {
    let broker = Broker::with_config(1, "[limits]\nmax_connections = 2\n");
    let a = Client::connect(broker.addr, "mc-a", V5);
    let b = Client::connect(broker.addr, "mc-b", ProtocolVersion::V3_1_1);
    for v in VERSIONS {
        let (mut c, ack) = Client::connect_edit(broker.addr, &format!("mc-c-{v:?}"), v, |_| {});
        let expected = if v.is_v5() {
            ReasonCode::ServerBusy
        } else {
            ReasonCode::ServerUnavailable // return code 3
        };
        assert_eq!(ack.reason_code, expected, "{v:?}");
        assert!(c.closed_within(common::TIMEOUT).0);
    }
    a.disconnect();
    std::thread::sleep(Duration::from_millis(100));
    let c = Client::connect(broker.addr, "mc-d", V5);
    c.disconnect();
    b.disconnect();
}

#[test]
fn max_connections_holds_over_all_cores() {
    let broker = Broker::with_config(2, "[limits]\nmax_connections = 2\n");
    let mut open = Vec::new();
    let mut refused = 0;
    for core in [0, 1, 0, 1, 0, 1] {
        let id = id_on_core(&format!("mcc-{}", open.len() + refused), core, 2);
        let (c, ack) = Client::connect_edit(broker.addr, &id, V5, |_| {});
        match ack.reason_code {
            ReasonCode::Success => open.push(c),
            ReasonCode::ServerBusy => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(open.len() <= 2, "{} connections open", open.len());
    assert!(refused >= 4);
}

#[test]
fn max_subscriptions_per_client_gives_quota_exceeded() {
    let broker = Broker::with_config(2, "[limits]\nmax_subscriptions_per_client = 2\n");
    for v in VERSIONS {
        let mut c = Client::connect(broker.addr, &format!("msub-{v:?}"), v);
        let o = SubscriptionOptions::qos(QoS::AtLeastOnce);
        let a = c.subscribe_many(1, &[("s/1", o), ("s/2", o), ("s/3", o)], None);
        let refused = if v.is_v5() {
            ReasonCode::QuotaExceeded
        } else {
            ReasonCode::UnspecifiedError // 0x80
        };
        let granted = ReasonCode::GrantedQoS1;
        assert_eq!(a.return_codes, vec![granted, granted, refused], "{v:?}");
        // Replacing an existing subscription is not a new one.
        let a = c.subscribe_many(2, &[("s/2", o)], None);
        assert_eq!(a.return_codes, vec![granted]);
        // The refused filter really is not subscribed.
        c.publish_acked("s/3", b"x", QoS::AtMostOnce, false, 1);
        c.expect_nothing(Duration::from_millis(300));
        c.send(&Packet::Unsubscribe(ringmq_codec::Unsubscribe {
            packet_id: 3,
            properties: None,
            filters: vec![ringmq_codec::Utf8Bytes::from_static("s/1")],
        }));
        assert!(matches!(c.expect(), Packet::UnsubAck(_)));
        c.subscribe_ok("s/3", QoS::AtLeastOnce);
    }
}

#[test]
fn topic_levels_and_length() {
    let broker = Broker::with_config(
        2,
        "[limits]\nmax_topic_levels = 3\nmax_topic_length_bytes = 20\n",
    );
    for v in VERSIONS {
        let mut c = Client::connect(broker.addr, &format!("lvl-{v:?}"), v);
        let o = SubscriptionOptions::qos(QoS::AtMostOnce);
        let a = c.subscribe_many(
            1,
            &[
                ("a/b/c", o),
                ("a/b/c/d", o),
                ("x/+/#", o),
                ("$share/g/a/b/c", o),
                ("abcdefghijklmnopqrstu", o),
            ],
            None,
        );
        let bad = if v.is_v5() {
            ReasonCode::TopicFilterInvalid
        } else {
            ReasonCode::UnspecifiedError
        };
        let ok = ReasonCode::Success;
        assert_eq!(a.return_codes, vec![ok, bad, ok, ok, bad], "{v:?}");
        c.publish_acked("a/b/c", b"ok", QoS::AtMostOnce, false, 1);
        assert_eq!(&c.expect_publish().payload[..], b"ok");
        c.send(&Packet::Publish(publish_packet(
            "a/b/c/d",
            b"no",
            QoS::AtMostOnce,
            false,
            0,
        )));
        c.expect_close(ReasonCode::TopicNameInvalid);
        let mut c = Client::connect(broker.addr, &format!("len-{v:?}"), v);
        c.publish("abcdefghijklmnopqrstu", b"no", QoS::AtLeastOnce, false);
        c.expect_close(ReasonCode::TopicNameInvalid);
    }
}

#[test]
fn client_id_length() {
    let broker = Broker::with_config(2, "[limits]\nmax_client_id_length_bytes = 23\n");
    for v in VERSIONS {
        let ok = Client::connect(broker.addr, &"a".repeat(23), v);
        let (mut c, ack) = Client::connect_edit(broker.addr, &"b".repeat(24), v, |_| {});
        assert_eq!(
            ack.reason_code,
            ReasonCode::ClientIdentifierNotValid,
            "{v:?}"
        );
        assert!(c.closed_within(common::TIMEOUT).0);
        ok.disconnect();
    }
}

#[test]
fn max_qos_1() {
    let broker = Broker::with_config(2, "[limits]\nmax_qos = 1\n");
    let (mut c, ack) = Client::connect_ok(broker.addr, "mq", V5, |_| {});
    assert_eq!(ack.properties.unwrap().maximum_qos, Some(QoS::AtLeastOnce));
    for v in VERSIONS {
        let mut sub = Client::connect(broker.addr, &format!("mq-sub-{v:?}"), v);
        let a = sub.subscribe_many(
            1,
            &[("mq/t", SubscriptionOptions::qos(QoS::ExactlyOnce))],
            None,
        );
        assert_eq!(
            a.return_codes,
            vec![ReasonCode::GrantedQoS1],
            "{v:?}: downgraded"
        );
        let mut p = Client::connect(broker.addr, &format!("mq-pub-{v:?}"), v);
        broker.settle();
        p.publish_acked("mq/t", b"1", QoS::AtLeastOnce, false, 1);
        assert_eq!(sub.expect_publish_acked().qos, QoS::AtLeastOnce);
        p.publish("mq/t", b"2", QoS::ExactlyOnce, false);
        p.expect_close(ReasonCode::QoSNotSupported);
        sub.expect_nothing(Duration::from_millis(300));
        // A will with QoS 2 is refused in CONNACK.
        let (mut w, ack) = Client::connect_edit(broker.addr, &format!("mq-w-{v:?}"), v, |c| {
            c.will = Some(will("mq/w", b"w", QoS::ExactlyOnce, false));
        });
        let expected = if v.is_v5() {
            ReasonCode::QoSNotSupported
        } else {
            ReasonCode::ServerUnavailable
        };
        assert_eq!(ack.reason_code, expected, "{v:?}");
        assert!(w.closed_within(common::TIMEOUT).0);
    }
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(), Some(Packet::PingResp));
}

#[test]
fn retain_not_available() {
    let broker = Broker::with_config(2, "[limits]\nretain_available = false\n");
    let (c, ack) = Client::connect_ok(broker.addr, "rna", V5, |_| {});
    assert_eq!(ack.properties.unwrap().retain_available, Some(false));
    c.disconnect();
    for v in VERSIONS {
        let mut sub = Client::connect(broker.addr, &format!("rna-sub-{v:?}"), v);
        sub.subscribe_ok("rna/t", QoS::AtLeastOnce);
        let mut p = Client::connect(broker.addr, &format!("rna-pub-{v:?}"), v);
        p.publish("rna/t", b"r", QoS::AtLeastOnce, true);
        p.expect_close(ReasonCode::RetainNotSupported);
        sub.expect_nothing(Duration::from_millis(300));
        let (mut w, ack) = Client::connect_edit(broker.addr, &format!("rna-w-{v:?}"), v, |c| {
            c.will = Some(will("rna/w", b"w", QoS::AtMostOnce, true));
        });
        let expected = if v.is_v5() {
            ReasonCode::RetainNotSupported
        } else {
            ReasonCode::ServerUnavailable
        };
        assert_eq!(ack.reason_code, expected, "{v:?}");
        assert!(w.closed_within(common::TIMEOUT).0);
    }
}

#[test]
fn shared_subscriptions_disabled() {
    let broker = Broker::with_config(2, "[shared_subscriptions]\nenabled = false\n");
    let (c, ack) = Client::connect_ok(broker.addr, "shd", V5, |_| {});
    assert_eq!(
        ack.properties.unwrap().shared_subscription_available,
        Some(false)
    );
    c.disconnect();
    for v in VERSIONS {
        let mut c = Client::connect(broker.addr, &format!("shd-{v:?}"), v);
        let o = SubscriptionOptions::qos(QoS::AtMostOnce);
        let a = c.subscribe_many(1, &[("$share/g/t", o), ("$queue/t", o), ("t", o)], None);
        let bad = if v.is_v5() {
            ReasonCode::SharedSubscriptionsNotSupported
        } else {
            ReasonCode::UnspecifiedError
        };
        assert_eq!(a.return_codes, vec![bad, bad, ReasonCode::Success], "{v:?}");
    }
}

#[test]
fn queued_messages_limit_drops_and_the_broker_stays_up() {
    let broker = Broker::with_config(
        2,
        "[limits]\nmax_queued_messages = 5\nmax_inflight_messages = 2\n[sys]\ninterval_secs = 1\n",
    );
    for v in VERSIONS {
        let id = id_on_core(&format!("ql-{v:?}"), 0, 2);
        let (mut sub, _) = Client::connect_persistent(broker.addr, &id, v, 60);
        sub.subscribe_ok("ql/t", QoS::AtLeastOnce);
        sub.disconnect();
        let mut p = Client::connect(broker.addr, &id_on_core(&format!("ql-p-{v:?}"), 1, 2), v);
        broker.settle();
        for i in 0..20u16 {
            p.publish_acked("ql/t", &[i as u8], QoS::AtLeastOnce, false, i + 1);
        }
        let (mut sub, present) = Client::connect_persistent(broker.addr, &id, v, 60);
        assert!(present);
        let mut got = Vec::new();
        while let Some(Packet::Publish(m)) = sub.recv_within(Duration::from_millis(400)) {
            sub.ack(&m);
            got.push(m.payload[0]);
        }
        assert_eq!(
            got,
            vec![0, 1, 2, 3, 4],
            "{v:?}: the first five kept, the rest dropped"
        );
        // Still serving: new messages flow.
        p.publish_acked("ql/t", b"after", QoS::AtLeastOnce, false, 30);
        assert_eq!(&sub.expect_publish_acked().payload[..], b"after");
    }
    // The drops are counted in $SYS.
    let mut s = Client::connect(broker.addr, "ql-sys", V5);
    s.subscribe_ok("$SYS/broker/messages/dropped", QoS::AtMostOnce);
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let p = s.expect_publish();
        let n: u64 = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
        if n >= 30 {
            break;
        }
        assert!(Instant::now() < deadline, "dropped count stays at {n}");
    }
}

#[test]
fn anonymous_clients_refused_when_not_allowed() {
    let broker = Broker::with_config(2, "allow_anonymous = false\n");
    for v in VERSIONS {
        let (mut c, ack) = Client::connect_edit(broker.addr, &format!("anon-{v:?}"), v, |_| {});
        let expected = if v.is_v5() {
            ReasonCode::NotAuthorized
        } else {
            ReasonCode::BadUserNameOrPassword
        };
        assert_eq!(ack.reason_code, expected, "{v:?}");
        assert!(c.closed_within(common::TIMEOUT).0);
        let (c, _) = Client::connect_ok(broker.addr, &format!("named-{v:?}"), v, |c| {
            c.username = Some(ringmq_codec::Utf8Bytes::from_static("user"));
        });
        c.disconnect();
    }
}

#[test]
fn retained_messages_max_stops_new_topics_not_replacements() {
    let broker = Broker::with_config(2, "[limits]\nretained_messages_max = 2\n");
    let mut p = Client::connect(broker.addr, &id_on_core("rmax-p", 0, 2), V5);
    for t in ["rmax/a", "rmax/b", "rmax/c"] {
        p.publish_acked(t, t.as_bytes(), QoS::AtLeastOnce, true, 1);
    }
    p.publish_acked("rmax/a", b"replaced", QoS::AtLeastOnce, true, 2);
    broker.settle();
    for core in [0, 1] {
        let mut s = Client::connect(
            broker.addr,
            &id_on_core(&format!("rmax-s{core}"), core, 2),
            V5,
        );
        s.subscribe_ok("rmax/+", QoS::AtLeastOnce);
        let mut got: Vec<(String, Vec<u8>)> = (0..2)
            .map(|_| {
                let m = s.expect_publish_acked();
                (m.topic.to_string(), m.payload.to_vec())
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("rmax/a".to_string(), b"replaced".to_vec()),
                ("rmax/b".to_string(), b"rmax/b".to_vec())
            ],
            "core {core}"
        );
        s.expect_nothing(Duration::from_millis(300));
    }
    // Clearing one makes room for a new topic.
    p.publish_acked("rmax/b", b"", QoS::AtLeastOnce, true, 3);
    p.publish_acked("rmax/c", b"now", QoS::AtLeastOnce, true, 4);
    broker.settle();
    let mut s = Client::connect(broker.addr, "rmax-late", V5);
    s.subscribe_ok("rmax/c", QoS::AtLeastOnce);
    assert_eq!(&s.expect_publish_acked().payload[..], b"now");
}

#[test]
fn queued_bytes_limit_drops_and_the_broker_stays_up() {
    let broker = Broker::with_config(
        2,
        "[limits]\nmax_packet_size_bytes = 1024\nmax_queued_bytes = 2048\n",
    );
    let id = id_on_core("qb", 1, 2);
    let (mut sub, _) = Client::connect_persistent(broker.addr, &id, V5, 60);
    sub.subscribe_ok("qb/t", QoS::AtLeastOnce);
    sub.disconnect();
    let mut p = Client::connect(broker.addr, &id_on_core("qb-p", 0, 2), V5);
    broker.settle();
    // Each costs its topic and payload plus a fixed overhead (64): three fit in 2048 bytes.
    for i in 0..6u8 {
        p.publish_acked("qb/t", &[i; 500], QoS::AtLeastOnce, false, u16::from(i) + 1);
    }
    let (mut sub, present) = Client::connect_persistent(broker.addr, &id, V5, 60);
    assert!(present);
    let mut got = Vec::new();
    while let Some(Packet::Publish(m)) = sub.recv_within(Duration::from_millis(300)) {
        sub.ack(&m);
        got.push(m.payload[0]);
    }
    assert_eq!(got, vec![0, 1, 2]);
    p.publish_acked("qb/t", b"after", QoS::AtLeastOnce, false, 9);
    assert_eq!(&sub.expect_publish_acked().payload[..], b"after");
}

#[test]
fn cross_core_queue_capacity_of_one_loses_and_reorders_nothing() {
    // One message between cores at a time: the publisher's core must pause its readers while
    // the queue to the subscriber's core is full, and lose nothing.
    let broker = Broker::with_config(
        2,
        "[runtime]\ncross_core_queue_capacity = 1\n[limits]\nmax_queued_messages = 10000\n",
    );
    let mut sub = Client::connect(broker.addr, &id_on_core("xc-sub", 1, 2), V5);
    sub.subscribe_ok("xc/t", QoS::AtLeastOnce);
    broker.settle();
    let mut publ = Client::connect(broker.addr, &id_on_core("xc-pub", 0, 2), V5);
    const N: u16 = 3000;
    for i in 1..=N {
        publ.send(&Packet::Publish(publish_packet(
            "xc/t",
            &i.to_be_bytes(),
            QoS::AtLeastOnce,
            false,
            i,
        )));
    }
    let mut next = 1u16;
    while next <= N {
        let p = sub.expect_publish();
        assert_eq!(
            u16::from_be_bytes([p.payload[0], p.payload[1]]),
            next,
            "in order, none lost"
        );
        sub.ack(&p);
        next += 1;
    }
    let mut acked = 0;
    while acked < N {
        match publ.recv() {
            Some(Packet::PubAck(_)) => acked += 1,
            other => panic!("expected PUBACK {acked}, got {other:?}"),
        }
    }
}
