//! Graceful shutdown of the real process: SIGTERM or SIGINT makes the broker send DISCONNECT
//! 0x8B (Server shutting down) to MQTT 5 clients on every core, close 3.1.1 clients, and exit
//! with status 0.

mod common;

use std::time::{Duration, Instant};

use common::{id_on_core, Broker, Client};
use ringmq_codec::{Packet, ProtocolVersion, QoS, ReasonCode};

fn shuts_down_on(signal: i32) {
    let mut broker = Broker::cores(2);
    let mut v5: Vec<Client> = (0..4)
        .map(|i| {
            let id = id_on_core(&format!("sd5-{signal}-{i}"), (i % 2) as u16, 2);
            let mut c = Client::connect(broker.addr, &id, ProtocolVersion::V5);
            c.subscribe_ok("sd/t", QoS::AtLeastOnce);
            c
        })
        .collect();
    let mut v3: Vec<Client> = (0..2)
        .map(|i| {
            let id = id_on_core(&format!("sd3-{signal}-{i}"), i as u16, 2);
            Client::connect(broker.addr, &id, ProtocolVersion::V3_1_1)
        })
        .collect();
    let start = Instant::now();
    let status = broker
        .signal_and_wait(signal)
        .expect("broker did not exit within 10 s");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    for c in &mut v5 {
        c.expect_close(ReasonCode::ServerShuttingDown);
    }
    for c in &mut v3 {
        let (closed, packets) = c.closed_within(common::TIMEOUT);
        assert!(closed && packets.is_empty(), "{packets:?}");
    }
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect_timeout(&broker.addr, Duration::from_secs(1)).is_err());
}

#[test]
fn sigterm_disconnects_clients_with_0x8b_and_exits_0() {
    shuts_down_on(libc::SIGTERM);
}

#[test]
fn sigint_disconnects_clients_with_0x8b_and_exits_0() {
    shuts_down_on(libc::SIGINT);
}

#[test]
fn idle_broker_exits_0_on_sigterm() {
    let mut broker = Broker::cores(2);
    let mut c = Client::connect(broker.addr, "idle", ProtocolVersion::V5);
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(), Some(Packet::PingResp));
    c.disconnect();
    let status = broker.signal_and_wait(libc::SIGTERM).expect("exited");
    assert_eq!(status.code(), Some(0));
}
