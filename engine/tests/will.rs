//! Will messages over real sockets: published when the socket is dropped, on keep-alive timeout
//! and on a protocol violation; not on a normal DISCONNECT; on DISCONNECT 0x04 (5.0); Will Delay
//! Interval, cancelled by a reconnect within the delay and cut short by the session expiry (5.0).
//! The will's client and the subscriber sit on different cores.

mod common;

use std::time::{Duration, Instant};

use common::{id_on_core, session_expiry, will, Broker, Client, VERSIONS};
use ringmq_codec::{Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Utf8Bytes};

const QUIET: Duration = Duration::from_millis(500);

/// A subscriber on core 0 to `topic`.
fn watcher(broker: &Broker, name: &str, topic: &str, v: ProtocolVersion) -> Client {
    let mut w = Client::connect(broker.addr, &id_on_core(name, 0, 2), v);
    w.subscribe_ok(topic, QoS::ExactlyOnce);
    w
}

/// A client on core 1 with a will on `topic`, changed by `edit`.
fn with_will(
    broker: &Broker,
    name: &str,
    topic: &str,
    v: ProtocolVersion,
    edit: impl FnOnce(&mut ringmq_codec::Connect),
) -> Client {
    let id = id_on_core(name, 1, 2);
    let (c, _) = Client::connect_ok(broker.addr, &id, v, |c| {
        c.will = Some(will(topic, b"gone", QoS::AtLeastOnce, false));
        edit(c);
    });
    c
}

#[test]
fn will_published_when_the_socket_is_dropped() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let topic = format!("will/drop/{v:?}");
        let mut w = watcher(&broker, &format!("wd-w-{v:?}"), &topic, v);
        let c = with_will(&broker, &format!("wd-c-{v:?}"), &topic, v, |_| {});
        broker.settle();
        drop(c);
        let p = w.expect_publish_acked();
        assert_eq!(
            (&*p.topic, &p.payload[..], p.qos, p.retain),
            (&*topic, &b"gone"[..], QoS::AtLeastOnce, false)
        );
        w.expect_nothing(QUIET);
    }
}

#[test]
fn no_will_after_a_normal_disconnect() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let topic = format!("will/normal/{v:?}");
        let mut w = watcher(&broker, &format!("wn-w-{v:?}"), &topic, v);
        let c = with_will(&broker, &format!("wn-c-{v:?}"), &topic, v, |_| {});
        broker.settle();
        c.disconnect();
        w.expect_nothing(Duration::from_secs(1));
    }
}

#[test]
fn v5_disconnect_with_will_message_publishes_the_will() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let mut w = watcher(&broker, "w04-w", "will/04", v);
    let mut c = with_will(&broker, "w04-c", "will/04", v, |_| {});
    broker.settle();
    c.send(&Packet::Disconnect(Disconnect::new(
        ReasonCode::DisconnectWithWillMessage,
    )));
    let (closed, packets) = c.closed_within(common::TIMEOUT);
    assert!(closed && packets.is_empty(), "{packets:?}");
    let p = w.expect_publish_acked();
    assert_eq!(&p.payload[..], b"gone");
}

#[test]
fn will_published_on_keep_alive_timeout() {
    let broker = Broker::cores(2);
    common::in_parallel_for_versions(|v| {
        let topic = format!("will/ka/{v:?}");
        let mut w = watcher(&broker, &format!("wk-w-{v:?}"), &topic, v);
        let mut c = with_will(&broker, &format!("wk-c-{v:?}"), &topic, v, |c| {
            c.keep_alive = 1;
        });
        let start = Instant::now();
        // Silent: no PINGREQ. The broker gives up after 1.5 s.
        c.expect_close(ReasonCode::KeepAliveTimeout);
        assert!(
            start.elapsed() >= Duration::from_millis(1200),
            "{v:?}: too early"
        );
        let p = w.expect_publish_acked();
        assert_eq!(&p.payload[..], b"gone");
    });
}

#[test]
fn will_published_on_protocol_violation() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let topic = format!("will/violation/{v:?}");
        let mut w = watcher(&broker, &format!("wv-w-{v:?}"), &topic, v);
        let mut c = with_will(&broker, &format!("wv-c-{v:?}"), &topic, v, |_| {});
        broker.settle();
        c.send(&Packet::Connect(Box::new(common::connect_packet(
            "again", v,
        ))));
        c.expect_close(ReasonCode::ProtocolError);
        assert_eq!(&w.expect_publish_acked().payload[..], b"gone");
    }
}

#[test]
fn retained_will_is_stored() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let topic = format!("will/retained/{v:?}");
        let c = with_will(&broker, &format!("wr-c-{v:?}"), &topic, v, |c| {
            c.will.as_mut().unwrap().retain = true;
        });
        // An observer on the will's core sees it published live (RETAIN cleared)...
        let mut seen = Client::connect(broker.addr, &id_on_core(&format!("wr-o-{v:?}"), 1, 2), v);
        seen.subscribe_ok(&topic, QoS::AtLeastOnce);
        drop(c);
        let p = seen.expect_publish_acked();
        assert!(!p.retain && &p.payload[..] == b"gone", "{v:?}: {p:?}");
        // ...and it is stored: a later subscriber on the other core gets it flagged.
        broker.settle();
        let mut w = watcher(&broker, &format!("wr-w-{v:?}"), &topic, v);
        let p = w.expect_publish_acked();
        assert!(p.retain && &p.payload[..] == b"gone", "{v:?}: {p:?}");
    }
}

#[test]
fn v5_will_properties_are_passed_on() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let mut w = watcher(&broker, "wp-w", "will/props", v);
    let c = with_will(&broker, "wp-c", "will/props", v, |c| {
        c.will.as_mut().unwrap().properties = Some(Box::new(Properties {
            content_type: Some(Utf8Bytes::from_static("text/plain")),
            user_properties: vec![(Utf8Bytes::from_static("k"), Utf8Bytes::from_static("v"))],
            ..Default::default()
        }));
    });
    broker.settle();
    drop(c);
    let p = w.expect_publish_acked();
    let props = p.properties.expect("will properties forwarded");
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.user_properties.len(), 1);
    assert_eq!(&*props.user_properties[0].0, "k");
}

/// CONNECT edit: a will delay and a session expiry.
fn delayed(delay: u32, expiry: u32) -> impl FnOnce(&mut ringmq_codec::Connect) {
    move |c| {
        c.clean_start = false;
        c.properties = session_expiry(expiry);
        c.will.as_mut().unwrap().properties = Some(Box::new(Properties {
            will_delay_interval: Some(delay),
            ..Default::default()
        }));
    }
}

#[test]
fn v5_will_delay_interval() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let mut w = watcher(&broker, "wdl-w", "will/delay", v);
    let c = with_will(&broker, "wdl-c", "will/delay", v, delayed(2, 60));
    broker.settle();
    let start = Instant::now();
    drop(c);
    w.expect_nothing(Duration::from_millis(1300));
    let p = w.expect_publish_acked();
    assert_eq!(&p.payload[..], b"gone");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert!(
        p.properties.is_none_or(|p| p.will_delay_interval.is_none()),
        "will delay is not forwarded"
    );
}

#[test]
fn v5_will_delay_cancelled_by_reconnect_within_the_delay() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let mut w = watcher(&broker, "wcx-w", "will/cancel", v);
    let c = with_will(&broker, "wcx-c", "will/cancel", v, delayed(2, 60));
    broker.settle();
    drop(c);
    std::thread::sleep(Duration::from_millis(500));
    let (back, present) =
        Client::connect_persistent(broker.addr, &id_on_core("wcx-c", 1, 2), v, 60);
    assert!(present);
    w.expect_nothing(Duration::from_secs(3));
    back.disconnect();
    w.expect_nothing(QUIET);
}

#[test]
fn v5_will_delay_is_cut_short_by_session_expiry() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let mut w = watcher(&broker, "wex-w", "will/expiry", v);
    let c = with_will(&broker, "wex-c", "will/expiry", v, delayed(30, 1));
    broker.settle();
    let start = Instant::now();
    drop(c);
    let p = w.expect_publish_acked();
    assert_eq!(&p.payload[..], b"gone");
    assert!(
        start.elapsed() >= Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn will_published_on_takeover() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let topic = format!("will/takeover/{v:?}");
        let mut w = watcher(&broker, &format!("wt-w-{v:?}"), &topic, v);
        let name = format!("wt-c-{v:?}");
        let mut old = with_will(&broker, &name, &topic, v, |_| {});
        broker.settle();
        let new = Client::connect(broker.addr, &id_on_core(&name, 1, 2), v);
        old.expect_close(ReasonCode::SessionTakenOver);
        assert_eq!(&w.expect_publish_acked().payload[..], b"gone");
        new.disconnect();
        w.expect_nothing(QUIET);
    }
}
