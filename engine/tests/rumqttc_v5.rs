//! Interoperability with an independent client library: rumqttc speaking MQTT 5 to the real
//! broker. Connect, subscribe, publish QoS 0/1/2 with properties, receive, retained (with Retain
//! Handling), will, session expiry, takeover (DISCONNECT 0x8E seen by the library), topic
//! aliases and assigned client identifiers; publishers and subscribers on different cores.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{id_on_core, Broker};
use rumqttc::v5::mqttbytes::v5::{
    ConnectProperties, DisconnectReasonCode, Filter, LastWill, Packet, Publish, PublishProperties,
    RetainForwardRule,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};

const WAIT: Duration = Duration::from_secs(5);

fn options(broker: &Broker, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", broker.addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Polls until `f` picks an incoming packet; panics on a connection error or timeout.
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

/// Connects; returns the client, its event loop and the CONNACK.
async fn connect(o: MqttOptions) -> (AsyncClient, EventLoop, rumqttc::v5::mqttbytes::v5::ConnAck) {
    let (client, mut el) = AsyncClient::new(o, 256);
    let ack = until(&mut el, |p| match p {
        Packet::ConnAck(a) => Some(a.clone()),
        _ => None,
    })
    .await;
    (client, el, ack)
}

async fn subscribe(client: &AsyncClient, el: &mut EventLoop, filter: Filter) {
    let qos = filter.qos;
    client.subscribe_many([filter]).await.unwrap();
    let codes = until(el, |p| match p {
        Packet::SubAck(a) => Some(a.return_codes.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        codes,
        vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(
            qos
        )]
    );
}

async fn next_publish(el: &mut EventLoop) -> Publish {
    until(el, |p| match p {
        Packet::Publish(p) => Some(p.clone()),
        _ => None,
    })
    .await
}

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

/// Publishes and polls until the exchange for its QoS is complete.
async fn publish(
    client: &AsyncClient,
    el: &mut EventLoop,
    topic: &str,
    qos: QoS,
    retain: bool,
    payload: &[u8],
    props: Option<PublishProperties>,
) {
    match props {
        Some(p) => client
            .publish_with_properties(topic, qos, retain, payload.to_vec(), p)
            .await
            .unwrap(),
        None => client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .unwrap(),
    }
    match qos {
        QoS::AtMostOnce => tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) = el.poll().await {
                    return;
                }
            }
        })
        .await
        .unwrap(),
        QoS::AtLeastOnce => until(el, |p| matches!(p, Packet::PubAck(_)).then_some(())).await,
        QoS::ExactlyOnce => until(el, |p| matches!(p, Packet::PubComp(_)).then_some(())).await,
    }
}

#[tokio::test]
async fn v5_qos_0_1_2_with_properties_across_cores() {
    let broker = Broker::cores(2);
    let (sub, mut sub_el, ack) = connect(options(&broker, &id_on_core("r5q-sub", 0, 2))).await;
    let props = ack.properties.expect("CONNACK properties");
    assert_eq!(props.receive_max, Some(32));
    assert_eq!(props.topic_alias_max, Some(64));
    subscribe(&sub, &mut sub_el, Filter::new("r5q/+", QoS::ExactlyOnce)).await;
    let (publ, mut pub_el, _) = connect(options(&broker, &id_on_core("r5q-pub", 1, 2))).await;
    broker.settle();
    for (n, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let props = PublishProperties {
            content_type: Some("text/plain".into()),
            response_topic: Some("r5q/reply".into()),
            correlation_data: Some(Bytes::from(vec![n as u8, 0xFF])),
            user_properties: vec![("k".into(), format!("v{n}"))],
            ..Default::default()
        };
        let topic = format!("r5q/{n}");
        publish(
            &publ,
            &mut pub_el,
            &topic,
            qos,
            false,
            b"body",
            Some(props.clone()),
        )
        .await;
        let p = next_publish(&mut sub_el).await;
        assert_eq!((&p.topic[..], p.qos), (topic.as_bytes(), qos));
        let got = p.properties.expect("properties passed through");
        assert_eq!(got.content_type, props.content_type);
        assert_eq!(got.response_topic, props.response_topic);
        assert_eq!(got.correlation_data, props.correlation_data);
        assert_eq!(got.user_properties, props.user_properties);
    }
}

#[tokio::test]
async fn v5_retained_and_retain_handling() {
    let broker = Broker::cores(2);
    let (publ, mut pub_el, _) = connect(options(&broker, &id_on_core("r5r-pub", 1, 2))).await;
    publish(
        &publ,
        &mut pub_el,
        "r5r/t",
        QoS::AtLeastOnce,
        true,
        b"kept",
        None,
    )
    .await;
    broker.settle();
    let (sub, mut sub_el, _) = connect(options(&broker, &id_on_core("r5r-sub", 0, 2))).await;
    let mut never = Filter::new("r5r/t", QoS::AtLeastOnce);
    never.retain_forward_rule = RetainForwardRule::Never;
    subscribe(&sub, &mut sub_el, never).await;
    no_publish(&mut sub_el, Duration::from_millis(400)).await;
    subscribe(&sub, &mut sub_el, Filter::new("r5r/#", QoS::AtLeastOnce)).await;
    let p = next_publish(&mut sub_el).await;
    assert!(p.retain && &p.payload[..] == b"kept");
    publish(
        &publ,
        &mut pub_el,
        "r5r/t",
        QoS::AtLeastOnce,
        true,
        b"",
        None,
    )
    .await;
}

#[tokio::test]
async fn v5_will_on_dropped_connection() {
    let broker = Broker::cores(2);
    let (w, mut w_el, _) = connect(options(&broker, &id_on_core("r5w-watch", 0, 2))).await;
    subscribe(&w, &mut w_el, Filter::new("r5w/will", QoS::AtLeastOnce)).await;
    let mut o = options(&broker, &id_on_core("r5w-c", 1, 2));
    o.set_last_will(LastWill::new(
        "r5w/will",
        "bye",
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let (c, el, _) = connect(o).await;
    broker.settle();
    drop(el);
    drop(c);
    let p = next_publish(&mut w_el).await;
    assert_eq!((&p.payload[..], p.qos), (&b"bye"[..], QoS::AtLeastOnce));
}

#[tokio::test]
async fn v5_session_expiry_keeps_messages_while_offline() {
    let broker = Broker::cores(2);
    let id = id_on_core("r5s-sub", 1, 2);
    let mut o = options(&broker, &id);
    o.set_clean_start(false);
    let mut props = ConnectProperties::new();
    props.session_expiry_interval = Some(60);
    o.set_connect_properties(props);
    let (sub, mut sub_el, ack) = connect(o.clone()).await;
    assert!(!ack.session_present);
    subscribe(&sub, &mut sub_el, Filter::new("r5s/t", QoS::AtLeastOnce)).await;
    drop(sub_el);
    drop(sub);
    let (publ, mut pub_el, _) = connect(options(&broker, &id_on_core("r5s-pub", 0, 2))).await;
    broker.settle();
    publish(
        &publ,
        &mut pub_el,
        "r5s/t",
        QoS::AtLeastOnce,
        false,
        b"queued",
        None,
    )
    .await;
    let (_sub, mut sub_el, ack) = connect(o).await;
    assert!(ack.session_present);
    assert_eq!(&next_publish(&mut sub_el).await.payload[..], b"queued");
}

#[tokio::test]
async fn v5_takeover_is_reported_to_the_library_as_0x8e() {
    let broker = Broker::cores(2);
    for core in [0, 1] {
        let id = id_on_core("r5t", core, 2);
        let (_old, mut old_el, _) = connect(options(&broker, &id)).await;
        let (_new, mut new_el, _) = connect(options(&broker, &id)).await;
        let err = tokio::time::timeout(WAIT, async {
            loop {
                if let Err(e) = old_el.poll().await {
                    return e;
                }
            }
        })
        .await
        .expect("old connection not closed");
        assert!(
            matches!(
                err,
                ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code: DisconnectReasonCode::SessionTakenOver,
                    ..
                })
            ),
            "{err:?}"
        );
        // The new connection works.
        subscribe(&_new, &mut new_el, Filter::new("r5t/x", QoS::AtMostOnce)).await;
    }
}

#[tokio::test]
async fn v5_topic_alias_and_assigned_client_identifier() {
    let broker = Broker::cores(2);
    let (sub, mut sub_el, ack) = connect(options(&broker, "")).await;
    let assigned = ack.properties.and_then(|p| p.assigned_client_identifier);
    assert!(assigned.is_some_and(|id| !id.is_empty()));
    subscribe(&sub, &mut sub_el, Filter::new("r5a/#", QoS::AtLeastOnce)).await;
    let (publ, mut pub_el, _) = connect(options(&broker, &id_on_core("r5a-pub", 1, 2))).await;
    broker.settle();
    let alias = |n| PublishProperties {
        topic_alias: Some(n),
        ..Default::default()
    };
    publish(
        &publ,
        &mut pub_el,
        "r5a/long/topic",
        QoS::AtLeastOnce,
        false,
        b"1",
        Some(alias(3)),
    )
    .await;
    publish(
        &publ,
        &mut pub_el,
        "",
        QoS::AtLeastOnce,
        false,
        b"2",
        Some(alias(3)),
    )
    .await;
    for want in [b"1", b"2"] {
        let p = next_publish(&mut sub_el).await;
        assert_eq!(
            (&p.topic[..], &p.payload[..]),
            (&b"r5a/long/topic"[..], &want[..])
        );
    }
}
