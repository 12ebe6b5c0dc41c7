//! Keep alive over real sockets: a silent client is disconnected after one and a half times its
//! keep alive, a pinging one is not, and `limits.max_keep_alive_secs` is announced to MQTT 5
//! clients as Server Keep Alive and enforced.

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Client};
use ringmq_codec::{Packet, ProtocolVersion, ReasonCode};

#[test]
fn silent_client_is_disconnected_after_one_and_a_half_keep_alives() {
    let broker = Broker::cores(2);
    common::in_parallel_for_versions(|v| {
        let (mut c, ack) = Client::connect_ok(broker.addr, &format!("ka-{v:?}"), v, |c| {
            c.keep_alive = 1;
        });
        assert!(ack
            .properties
            .as_ref()
            .is_none_or(|p| p.server_keep_alive.is_none()));
        let start = Instant::now();
        c.expect_close(ReasonCode::KeepAliveTimeout);
        let after = start.elapsed();
        assert!(
            after >= Duration::from_millis(1400) && after < Duration::from_millis(3500),
            "{v:?}: closed after {after:?}"
        );
    });
}

#[test]
fn pinging_client_stays_connected() {
    let broker = Broker::cores(2);
    common::in_parallel_for_versions(|v| {
        let (mut c, _) = Client::connect_ok(broker.addr, &format!("ping-{v:?}"), v, |c| {
            c.keep_alive = 1;
        });
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1600) {
            std::thread::sleep(Duration::from_millis(400));
            c.send(&Packet::PingReq);
            assert_eq!(c.recv(), Some(Packet::PingResp), "{v:?}");
        }
        // Any packet counts, not only PINGREQ.
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(800));
            c.subscribe_ok("ka/any", ringmq_codec::QoS::AtMostOnce);
        }
        c.disconnect();
    });
}

#[test]
fn keep_alive_zero_is_never_timed_out_by_default() {
    let broker = Broker::cores(1);
    common::in_parallel_for_versions(|v| {
        let (mut c, ack) = Client::connect_ok(broker.addr, &format!("ka0-{v:?}"), v, |c| {
            c.keep_alive = 0;
        });
        assert!(ack
            .properties
            .as_ref()
            .is_none_or(|p| p.server_keep_alive.is_none()));
        c.expect_nothing(Duration::from_millis(1800));
        c.send(&Packet::PingReq);
        assert_eq!(c.recv(), Some(Packet::PingResp));
    });
}

#[test]
fn v5_server_keep_alive_caps_the_client_and_is_enforced() {
    let broker = Broker::with_config(2, "[limits]\nmax_keep_alive_secs = 1\n");
    let v = ProtocolVersion::V5;
    // Asking more than the maximum: told the maximum, and held to it.
    for asked in [60, 0] {
        let (mut c, ack) = Client::connect_ok(broker.addr, &format!("ska-{asked}"), v, |c| {
            c.keep_alive = asked;
        });
        let props = ack.properties.expect("CONNACK properties");
        assert_eq!(
            props.server_keep_alive,
            Some(1),
            "asked {asked}: Server Keep Alive"
        );
        let start = Instant::now();
        c.expect_close(ReasonCode::KeepAliveTimeout);
        assert!(
            start.elapsed() < Duration::from_millis(3500),
            "{:?}",
            start.elapsed()
        );
    }
    // Asking exactly the maximum: no Server Keep Alive.
    let (c, ack) = Client::connect_ok(broker.addr, "ska-ok", v, |c| c.keep_alive = 1);
    assert!(ack.properties.unwrap().server_keep_alive.is_none());
    drop(c);
}
