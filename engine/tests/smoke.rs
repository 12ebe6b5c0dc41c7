//! End-to-end over real sockets against the real binary: the basic paths in 3.1.1 and 5.0, with
//! two cores so that sessions land on different cores.

mod common;

use std::time::Duration;

use common::{connect_packet, Broker, Client};
use ringmq_codec::{Packet, ProtocolVersion, QoS, ReasonCode};

#[test]
fn publish_subscribe_across_cores_in_both_versions() {
    let broker = Broker::start(&["--cores", "2"]);
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut subs: Vec<Client> = (0..6)
            .map(|i| Client::connect(broker.addr, &format!("sub-{version:?}-{i}"), version))
            .collect();
        for s in &mut subs {
            assert!(matches!(
                s.subscribe("smoke/+", QoS::AtLeastOnce),
                Packet::SubAck(_)
            ));
        }
        let mut publ = Client::connect(broker.addr, &format!("pub-{version:?}"), version);
        for n in 0..20u8 {
            publ.send(&Packet::Publish(common::publish_packet(
                "smoke/x",
                &[n],
                QoS::AtLeastOnce,
                false,
                u16::from(n) + 1,
            )));
        }
        for n in 0..20u16 {
            assert!(matches!(publ.recv(), Some(Packet::PubAck(a)) if a.packet_id == n + 1));
        }
        for s in &mut subs {
            for n in 0..20u8 {
                match s.recv() {
                    Some(Packet::Publish(p)) => {
                        assert_eq!(
                            (&*p.topic, &p.payload[..], p.qos),
                            ("smoke/x", &[n][..], QoS::AtLeastOnce)
                        );
                        s.send(&Packet::PubAck(ringmq_codec::Ack::new(p.packet_id)));
                    }
                    other => panic!("{version:?}: expected message {n}, got {other:?}"),
                }
            }
        }
    }
}

#[test]
fn ping_and_normal_disconnect() {
    let broker = Broker::start(&[]);
    let mut c = Client::connect(broker.addr, "pinger", ProtocolVersion::V5);
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(), Some(Packet::PingResp));
    c.send(&Packet::Disconnect(ringmq_codec::Disconnect::NORMAL));
    let (closed, packets) = c.closed_within(Duration::from_secs(5));
    assert!(closed && packets.is_empty(), "{packets:?}");
}

#[test]
fn first_packet_must_be_connect_and_garbage_closes() {
    let broker = Broker::start(&[]);
    let mut c = Client::open(broker.addr, ProtocolVersion::V3_1_1);
    c.send(&Packet::PingReq);
    assert!(c.closed_within(Duration::from_secs(5)).0);
    let (mut c, ack) = Client::connect_with(broker.addr, connect_packet("v5", ProtocolVersion::V5));
    assert!(matches!(ack, Packet::ConnAck(a) if a.reason_code == ReasonCode::Success));
    c.send_raw(&[0x00, 0x00]); // reserved packet type 0
    let (closed, packets) = c.closed_within(Duration::from_secs(5));
    assert!(closed);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason_code == ReasonCode::MalformedPacket),
        "{packets:?}"
    );
}
