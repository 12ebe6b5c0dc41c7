//! Sessions over real sockets: takeover by a second connection with the same client id (on
//! either core), session resume and Session Present, Session Expiry Interval (5.0) including
//! its change in DISCONNECT and its cap, assigned client identifiers (5.0) and the refusal of an
//! empty client id with Clean Session 0 (3.1.1).

mod common;

use std::time::Duration;

use common::{id_on_core, session_expiry, Broker, Client, VERSIONS};
use ringmq_codec::{Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode};

#[test]
fn second_connection_takes_over_on_both_cores() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        for core in [0, 1] {
            let id = id_on_core(&format!("take-{v:?}"), core, 2);
            let mut old = Client::connect(broker.addr, &id, v);
            old.subscribe_ok("take/t", QoS::AtLeastOnce);
            // Several new connections in turn: each closes the one before. The kernel spreads
            // them over both cores; each is moved to the id's home core.
            for round in 0..3 {
                let mut new = Client::connect(broker.addr, &id, v);
                let before = old.expect_close(ReasonCode::SessionTakenOver);
                assert!(before.is_empty(), "{v:?} round {round}: {before:?}");
                new.send(&Packet::PingReq);
                assert_eq!(new.recv(), Some(Packet::PingResp));
                old = new;
            }
            old.disconnect();
        }
    }
}

#[test]
fn takeover_with_clean_start_0_keeps_the_session() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        let id = id_on_core(&format!("tk-keep-{v:?}"), 1, 2);
        let (mut old, _) = Client::connect_persistent(broker.addr, &id, v, 60);
        old.subscribe_ok("tk/keep", QoS::AtLeastOnce);
        let (mut new, present) = Client::connect_persistent(broker.addr, &id, v, 60);
        assert!(present, "{v:?}: the taken-over session is resumed");
        old.expect_close(ReasonCode::SessionTakenOver);
        let mut publ = Client::connect(broker.addr, &id_on_core(&format!("tk-p-{v:?}"), 0, 2), v);
        broker.settle();
        publ.publish_acked("tk/keep", b"still", QoS::AtLeastOnce, false, 1);
        assert_eq!(&new.expect_publish_acked().payload[..], b"still");
        // Clean start: the session and its subscription are gone.
        let mut clean = Client::connect(broker.addr, &id, v);
        new.expect_close(ReasonCode::SessionTakenOver);
        publ.publish_acked("tk/keep", b"gone", QoS::AtLeastOnce, false, 2);
        clean.expect_nothing(Duration::from_millis(400));
    }
}

#[test]
fn persistent_session_keeps_subscriptions_and_reports_session_present() {
    let broker = Broker::cores(2);
    for v in VERSIONS {
        for core in [0, 1] {
            let id = id_on_core(&format!("per-{v:?}"), core, 2);
            let (mut c, present) = Client::connect_persistent(broker.addr, &id, v, 60);
            assert!(!present);
            c.subscribe_ok("per/t", QoS::AtLeastOnce);
            c.disconnect();
            let (mut c, present) = Client::connect_persistent(broker.addr, &id, v, 60);
            assert!(present, "{v:?} core {core}");
            // Its own PUBLISH may come before the PUBACK: the PUBACK waits until the copy
            // stored for the persistent session is durable, the delivery does not.
            c.publish("per/t", b"self", QoS::AtLeastOnce, false);
            let (mut acked, mut got) = (false, false);
            while !(acked && got) {
                match c.expect() {
                    Packet::PubAck(a) if a.packet_id == 1 && !acked => acked = true,
                    Packet::Publish(p) if &p.payload[..] == b"self" && !got => {
                        c.ack(&p);
                        got = true;
                    }
                    other => panic!("{v:?}: unexpected {other:?}"),
                }
            }
            c.disconnect();
            // Clean start discards it: Session Present 0 and no subscription.
            let (mut c, ack) = Client::connect_ok(broker.addr, &id, v, |_| {});
            assert!(!ack.session_present);
            c.publish_acked("per/t", b"none", QoS::AtLeastOnce, false, 2);
            c.expect_nothing(Duration::from_millis(300));
            c.disconnect();
        }
    }
}

#[test]
fn v5_session_expiry_interval() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let id = id_on_core("exp", 1, 2);
    let (mut c, _) = Client::connect_persistent(broker.addr, &id, v, 1);
    c.subscribe_ok("exp/t", QoS::AtLeastOnce);
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let (c, present) = Client::connect_persistent(broker.addr, &id, v, 1);
    assert!(present, "within the expiry");
    c.disconnect();
    std::thread::sleep(Duration::from_millis(2000));
    let (c, present) = Client::connect_persistent(broker.addr, &id, v, 1);
    assert!(!present, "expired after 1 s");
    c.disconnect();
    // Expiry 0 (absent): the session ends with the connection even with Clean Start 0.
    let (c, _) = Client::connect_ok(broker.addr, &id, v, |c| c.clean_start = false);
    c.disconnect();
    let (c, ack) = Client::connect_ok(broker.addr, &id, v, |c| c.clean_start = false);
    assert!(!ack.session_present);
    c.disconnect();
}

#[test]
fn v5_session_expiry_changed_in_disconnect() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let id = id_on_core("expd", 0, 2);
    // 60 in CONNECT, 0 in DISCONNECT: the session ends now.
    let (mut c, _) = Client::connect_persistent(broker.addr, &id, v, 60);
    c.send(&Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::Success,
        properties: session_expiry(0),
    }));
    assert!(c.closed_within(common::TIMEOUT).0);
    let (mut c, present) = Client::connect_persistent(broker.addr, &id, v, 0);
    assert!(!present);
    // 0 in CONNECT, non-zero in DISCONNECT: a Protocol Error [MQTT-3.14.2-2].
    c.send(&Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::Success,
        properties: session_expiry(30),
    }));
    c.expect_close(ReasonCode::ProtocolError);
}

#[test]
fn v5_session_expiry_is_capped_by_the_configuration() {
    let broker = Broker::with_config(2, "[limits]\nsession_expiry_max_secs = 5\n");
    let v = ProtocolVersion::V5;
    let (c, ack) = Client::connect_ok(broker.addr, "cap", v, |c| {
        c.properties = session_expiry(1000);
    });
    assert_eq!(ack.properties.unwrap().session_expiry_interval, Some(5));
    c.disconnect();
    let (c, ack) = Client::connect_ok(broker.addr, "cap2", v, |c| {
        c.properties = session_expiry(3);
    });
    assert_eq!(ack.properties.unwrap().session_expiry_interval, None);
    c.disconnect();
}

#[test]
fn v5_assigned_client_identifier() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V5;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let (mut c, ack) = Client::connect_ok(broker.addr, "", v, |c| {
            c.properties = session_expiry(60);
        });
        let id = ack
            .properties
            .and_then(|p| p.assigned_client_identifier)
            .expect("Assigned Client Identifier");
        assert!(!id.is_empty());
        c.subscribe_ok("assigned/t", QoS::AtLeastOnce);
        drop(c);
        ids.push(id.to_string());
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    // The assigned id names a real session: resuming it finds it.
    for id in &ids {
        let (c, present) = Client::connect_persistent(broker.addr, id, v, 60);
        assert!(present, "{id}");
        c.disconnect();
    }
}

#[test]
fn v311_empty_client_id() {
    let broker = Broker::cores(2);
    let v = ProtocolVersion::V3_1_1;
    // Clean session 1: accepted.
    let (c, ack) = Client::connect_ok(broker.addr, "", v, |_| {});
    assert!(!ack.session_present && ack.properties.is_none());
    c.disconnect();
    // Clean session 0: identifier rejected (return code 2), then closed [MQTT-3.1.3-8].
    let (mut c, ack) = Client::connect_edit(broker.addr, "", v, |c| c.clean_start = false);
    assert_eq!(ack.reason_code, ReasonCode::ClientIdentifierNotValid);
    assert!(!ack.session_present);
    let (closed, packets) = c.closed_within(common::TIMEOUT);
    assert!(closed && packets.is_empty(), "{packets:?}");
}

#[test]
fn v5_connack_announces_limits() {
    let broker = Broker::cores(2);
    let (c, ack) = Client::connect_ok(broker.addr, "props", ProtocolVersion::V5, |_| {});
    let p: Box<Properties> = ack.properties.expect("properties");
    assert_eq!(p.receive_maximum, Some(32));
    assert_eq!(p.maximum_packet_size, Some(1_048_576));
    assert_eq!(p.topic_alias_maximum, Some(64));
    assert_eq!(p.maximum_qos, None, "QoS 2 supported");
    assert_eq!(p.retain_available, None, "retain supported");
    c.disconnect();
}
