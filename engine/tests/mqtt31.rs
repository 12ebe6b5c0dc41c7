//! MQTT 3.1 (protocol name MQIsdp, level 3) over real sockets: connect, subscribe, QoS 0/1/2 to
//! and from 3.1.1 and 5.0 clients on the other core, retained, will, and the CONNACK without a
//! Session Present flag.

mod common;

use common::{id_on_core, will, Broker, Client};
use ringmq_codec::{ProtocolVersion, QoS};

const V31: ProtocolVersion = ProtocolVersion::V3_1;

#[test]
fn mqtt31_interoperates_with_311_and_5() {
    let broker = Broker::cores(2);
    let (mut old, ack) = Client::connect_persistent(broker.addr, &id_on_core("v31", 0, 2), V31, 0);
    assert!(!ack, "3.1 CONNACK has no Session Present flag");
    old.subscribe_ok("v31/in", QoS::ExactlyOnce);
    for v in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut peer = Client::connect(broker.addr, &id_on_core(&format!("v31-{v:?}"), 1, 2), v);
        peer.subscribe_ok("v31/back", QoS::ExactlyOnce);
        broker.settle();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            peer.publish_acked("v31/in", b"to 3.1", qos, false, 4);
            let p = old.expect_publish_acked();
            assert_eq!(
                (&*p.topic, &p.payload[..], p.qos),
                ("v31/in", &b"to 3.1"[..], qos)
            );
            old.publish_acked("v31/back", b"from 3.1", qos, false, 5);
            let p = peer.expect_publish_acked();
            assert_eq!((&p.payload[..], p.qos), (&b"from 3.1"[..], qos));
        }
    }
    // Resumed 3.1 session: still no Session Present on the wire (the reserved byte stays 0).
    drop(old);
    let (_old, present) = Client::connect_persistent(broker.addr, &id_on_core("v31", 0, 2), V31, 0);
    assert!(!present);
}

#[test]
fn mqtt31_retained_and_will() {
    let broker = Broker::cores(2);
    let mut w = Client::connect(broker.addr, &id_on_core("v31-w", 1, 2), V31);
    w.subscribe_ok("v31w/will", QoS::AtLeastOnce);
    let (c, _) = Client::connect_ok(broker.addr, &id_on_core("v31-c", 0, 2), V31, |c| {
        c.will = Some(will("v31w/will", b"gone", QoS::AtLeastOnce, false));
    });
    let mut c = c;
    c.publish_acked("v31w/r", b"kept", QoS::AtLeastOnce, true, 1);
    broker.settle();
    w.subscribe_ok("v31w/r", QoS::AtLeastOnce);
    let p = w.expect_publish_acked();
    assert!(p.retain && &p.payload[..] == b"kept");
    drop(c);
    assert_eq!(&w.expect_publish_acked().payload[..], b"gone");
}
