//! Interoperability with an independent client library: rumqttc speaking MQTT 3.1.1 to the real
//! broker. Connect, subscribe, publish QoS 0/1/2, receive, retained, will, persistent sessions,
//! and many QoS 2 messages in flight at once; publishers and subscribers on different cores.

mod common;

use std::time::Duration;

use common::{id_on_core, Broker};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS};

const WAIT: Duration = Duration::from_secs(5);

fn options(broker: &Broker, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", broker.addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Polls the event loop until `f` picks a packet; panics on a connection error or timeout.
async fn until<T>(el: &mut EventLoop, mut f: impl FnMut(&Packet) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(p)) => {
                    if let Some(t) = f(&p) {
                        return t;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => panic!("connection error: {e:?}"),
            }
        }
    })
    .await
    .expect("timed out waiting for the broker")
}

/// Connects (CONNACK received) and returns the client, its event loop and Session Present.
async fn connect(o: MqttOptions) -> (AsyncClient, EventLoop, bool) {
    let (client, mut el) = AsyncClient::new(o, 256);
    let present = until(&mut el, |p| match p {
        Packet::ConnAck(a) => Some(a.session_present),
        _ => None,
    })
    .await;
    (client, el, present)
}

async fn subscribe(client: &AsyncClient, el: &mut EventLoop, filter: &str, qos: QoS) {
    client.subscribe(filter, qos).await.unwrap();
    let codes = until(el, |p| match p {
        Packet::SubAck(a) => Some(a.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(codes.len(), 1);
    assert!(
        !matches!(codes[0], rumqttc::SubscribeReasonCode::Failure),
        "{codes:?}"
    );
}

async fn next_publish(el: &mut EventLoop) -> Publish {
    until(el, |p| match p {
        Packet::Publish(p) => Some(p.clone()),
        _ => None,
    })
    .await
}

/// Publishes and polls until the exchange for its QoS is complete.
async fn publish(
    client: &AsyncClient,
    el: &mut EventLoop,
    topic: &str,
    qos: QoS,
    retain: bool,
    payload: &[u8],
) {
    client
        .publish(topic, qos, retain, payload.to_vec())
        .await
        .unwrap();
    match qos {
        QoS::AtMostOnce => {
            // Drive the loop until the packet has been written.
            tokio::time::timeout(WAIT, async {
                loop {
                    if let Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) = el.poll().await {
                        return;
                    }
                }
            })
            .await
            .unwrap();
        }
        QoS::AtLeastOnce => until(el, |p| matches!(p, Packet::PubAck(_)).then_some(())).await,
        QoS::ExactlyOnce => until(el, |p| matches!(p, Packet::PubComp(_)).then_some(())).await,
    }
}

/// Polls for `d`, failing on any PUBLISH.
async fn no_publish(el: &mut EventLoop, d: Duration) {
    let r = tokio::time::timeout(d, async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = el.poll().await {
                return p;
            }
        }
    })
    .await;
    if let Ok(p) = r {
        panic!("unexpected {p:?}");
    }
}

#[tokio::test]
async fn qos_0_1_2_between_rumqttc_clients_across_cores() {
    let broker = Broker::cores(2);
    let (sub, mut sub_el, present) = connect(options(&broker, &id_on_core("rq-sub", 0, 2))).await;
    assert!(!present);
    subscribe(&sub, &mut sub_el, "rq/+", QoS::ExactlyOnce).await;
    let (publ, mut pub_el, _) = connect(options(&broker, &id_on_core("rq-pub", 1, 2))).await;
    broker.settle();
    for (n, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let topic = format!("rq/{n}");
        publish(
            &publ,
            &mut pub_el,
            &topic,
            qos,
            false,
            format!("m{n}").as_bytes(),
        )
        .await;
        let p = next_publish(&mut sub_el).await;
        assert_eq!(
            (p.topic.as_str(), &p.payload[..], p.qos),
            (topic.as_str(), format!("m{n}").as_bytes(), qos)
        );
        assert!(!p.retain && !p.dup);
    }
    // Subscription QoS caps the delivery.
    subscribe(&sub, &mut sub_el, "rq/+", QoS::AtMostOnce).await;
    publish(
        &publ,
        &mut pub_el,
        "rq/x",
        QoS::ExactlyOnce,
        false,
        b"capped",
    )
    .await;
    assert_eq!(next_publish(&mut sub_el).await.qos, QoS::AtMostOnce);
    sub.disconnect().await.unwrap();
}

#[tokio::test]
async fn rumqttc_retained_message() {
    let broker = Broker::cores(2);
    let (publ, mut pub_el, _) = connect(options(&broker, &id_on_core("rr-pub", 1, 2))).await;
    publish(&publ, &mut pub_el, "rr/t", QoS::AtLeastOnce, true, b"kept").await;
    broker.settle();
    let (sub, mut sub_el, _) = connect(options(&broker, &id_on_core("rr-sub", 0, 2))).await;
    subscribe(&sub, &mut sub_el, "rr/#", QoS::AtLeastOnce).await;
    let p = next_publish(&mut sub_el).await;
    assert!(p.retain && &p.payload[..] == b"kept");
    broker.settle();
    // Cleared with an empty retained message.
    publish(&publ, &mut pub_el, "rr/t", QoS::AtLeastOnce, true, b"").await;
    let live = next_publish(&mut sub_el).await;
    assert!(live.payload.is_empty() && !live.retain);
    broker.settle();
    let (late, mut late_el, _) = connect(options(&broker, &id_on_core("rr-late", 1, 2))).await;
    subscribe(&late, &mut late_el, "rr/#", QoS::AtLeastOnce).await;
    no_publish(&mut late_el, Duration::from_millis(400)).await;
}

#[tokio::test]
async fn rumqttc_will_on_dropped_connection_not_on_disconnect() {
    let broker = Broker::cores(2);
    let (w, mut w_el, _) = connect(options(&broker, &id_on_core("rw-watch", 0, 2))).await;
    subscribe(&w, &mut w_el, "rw/will", QoS::AtLeastOnce).await;
    // Graceful DISCONNECT: no will.
    let mut o = options(&broker, &id_on_core("rw-polite", 1, 2));
    o.set_last_will(LastWill::new("rw/will", "polite", QoS::AtLeastOnce, false));
    let (polite, mut polite_el, _) = connect(o).await;
    polite.disconnect().await.unwrap();
    let _ = tokio::time::timeout(WAIT, async { while polite_el.poll().await.is_ok() {} }).await;
    no_publish(&mut w_el, Duration::from_millis(500)).await;
    // Dropped socket: the will.
    let mut o = options(&broker, &id_on_core("rw-rude", 1, 2));
    o.set_last_will(LastWill::new("rw/will", "rude", QoS::AtLeastOnce, false));
    let (rude, rude_el, _) = connect(o).await;
    drop(rude_el);
    drop(rude);
    let p = next_publish(&mut w_el).await;
    assert_eq!((&p.payload[..], p.qos), (&b"rude"[..], QoS::AtLeastOnce));
}

#[tokio::test]
async fn rumqttc_persistent_session_gets_messages_queued_while_offline() {
    let broker = Broker::cores(2);
    let id = id_on_core("rp-sub", 1, 2);
    let mut o = options(&broker, &id);
    o.set_clean_session(false);
    let (sub, mut sub_el, _) = connect(o.clone()).await;
    subscribe(&sub, &mut sub_el, "rp/t", QoS::ExactlyOnce).await;
    sub.disconnect().await.unwrap();
    let _ = tokio::time::timeout(WAIT, async { while sub_el.poll().await.is_ok() {} }).await;
    drop(sub_el);
    let (publ, mut pub_el, _) = connect(options(&broker, &id_on_core("rp-pub", 0, 2))).await;
    broker.settle();
    publish(&publ, &mut pub_el, "rp/t", QoS::AtLeastOnce, false, b"1").await;
    publish(&publ, &mut pub_el, "rp/t", QoS::ExactlyOnce, false, b"2").await;
    let (_sub, mut sub_el, present) = connect(o).await;
    assert!(present);
    assert_eq!(&next_publish(&mut sub_el).await.payload[..], b"1");
    assert_eq!(&next_publish(&mut sub_el).await.payload[..], b"2");
}

#[tokio::test]
async fn rumqttc_many_qos2_messages_in_flight() {
    let broker = Broker::cores(2);
    let (sub, mut sub_el, _) = connect(options(&broker, &id_on_core("rm-sub", 0, 2))).await;
    subscribe(&sub, &mut sub_el, "rm/t", QoS::ExactlyOnce).await;
    let mut o = options(&broker, &id_on_core("rm-pub", 1, 2));
    o.set_inflight(100);
    let (publ, mut pub_el, _) = connect(o).await;
    broker.settle();
    for i in 0..100u8 {
        publ.publish("rm/t", QoS::ExactlyOnce, false, vec![i])
            .await
            .unwrap();
    }
    let mut done = 0;
    until(&mut pub_el, |p| {
        done += usize::from(matches!(p, Packet::PubComp(_)));
        (done == 100).then_some(())
    })
    .await;
    for i in 0..100u8 {
        assert_eq!(next_publish(&mut sub_el).await.payload[..], [i]);
    }
}
