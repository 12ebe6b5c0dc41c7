//! Limits against abuse, against the real binary: a client over its messages or bytes per
//! second is slowed down (its reads pause) and loses nothing; a listener over its connection
//! rate closes new connections at once, and accepts again once the second has passed.

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Client};
use ringmq_codec::{Packet, ProtocolVersion, QoS};

fn receive_n(c: &mut Client, n: usize) -> usize {
    let mut got = 0;
    while got < n {
        match c.recv_within(Duration::from_secs(10)) {
            Some(Packet::Publish(_)) => got += 1,
            Some(_) => {}
            None => break,
        }
    }
    got
}

#[test]
fn a_client_over_its_message_rate_is_slowed_down_and_loses_nothing() {
    let b = Broker::with_config(1, "[limits]\nmax_client_messages_per_second = 50\n");
    let v = ProtocolVersion::V5;
    let mut sub = Client::connect(b.addr, "rl-sub", v);
    sub.subscribe_ok("rl/t", QoS::AtLeastOnce);
    let mut publ = Client::connect(b.addr, "rl-pub", v);
    let started = Instant::now();
    for i in 0..200u16 {
        publ.send(&Packet::Publish(common::publish_packet(
            "rl/t",
            &i.to_be_bytes(),
            QoS::AtMostOnce,
            false,
            0,
        )));
    }
    assert_eq!(receive_n(&mut sub, 200), 200, "every message arrives");
    // 50 at once (the burst), then 150 at 50 per second: at least 3 s; a slow machine only
    // makes it longer.
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2), "not throttled: {took:?}");
    // The other client was not slowed down.
    publ.publish_acked("rl/t", b"x", QoS::AtLeastOnce, false, 9);
}

#[test]
fn a_client_over_its_byte_rate_is_slowed_down_and_loses_nothing() {
    let b = Broker::with_config(1, "[limits]\nmax_client_bytes_per_second = 4000\n");
    let v = ProtocolVersion::V3_1_1;
    let mut sub = Client::connect(b.addr, "rb-sub", v);
    sub.subscribe_ok("rb/t", QoS::AtMostOnce);
    let mut publ = Client::connect(b.addr, "rb-pub", v);
    let payload = vec![7u8; 1000];
    let started = Instant::now();
    for _ in 0..16 {
        publ.publish("rb/t", &payload, QoS::AtMostOnce, false);
    }
    assert_eq!(receive_n(&mut sub, 16), 16);
    // About 16 kB at 4 kB/s after a 4 kB burst: about 3 s.
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2), "not throttled: {took:?}");
}

#[test]
fn a_listener_over_its_connection_rate_closes_new_connections_then_recovers() {
    let b = Broker::with_config(1, "[limits]\nmax_connection_rate_per_second = 5\n");
    let v = ProtocolVersion::V3_1_1;
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..20 {
        let mut c = Client::open(b.addr, v);
        let mut out = bytes::BytesMut::new();
        Packet::Connect(Box::new(common::connect_packet(&format!("cr-{i}"), v)))
            .encode(v, &mut out)
            .unwrap();
        // A refused connection may already be closed: the write may fail.
        let _ = std::io::Write::write_all(&mut c.stream, &out);
        match c.recv_within(Duration::from_secs(2)) {
            Some(Packet::ConnAck(_)) => accepted += 1,
            _ => refused += 1,
        }
    }
    assert!((1..=10).contains(&accepted), "accepted {accepted}");
    assert!(refused >= 10, "refused {refused}");
    std::thread::sleep(Duration::from_millis(1500));
    let _ok = Client::connect(b.addr, "cr-later", v);
}
