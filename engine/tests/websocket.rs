//! WebSocket listeners against the real binary, with tungstenite's blocking client: MQTT in
//! binary frames (a packet split over frames, over a fragmented message, several packets in
//! one frame), pings, close frames, text frames refused, wrong subprotocol and path refused,
//! oversized and slow upgrade requests, WebSocket over TLS, and the move to the home core.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{
    client_config, connect_packet, id_on_core, publish_packet, ws_connect, Broker, Client,
    TlsFiles, Ws, TIMEOUT,
};
use ringmq_codec::{decode, DecodeOptions, Packet, ProtocolVersion, QoS, ReasonCode};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

const WS: &str = "[[listeners]]\nbind = \"127.0.0.1:0\"\n\n[[listeners]]\nbind = \"127.0.0.1:0\"\n[listeners.websocket]\n";

/// A broker with a plain TCP listener (first, for `settle`) and a WebSocket one at `/mqtt`.
fn broker(cores: usize, extra: &str) -> (Broker, SocketAddr) {
    let cores = cores.to_string();
    let b = Broker::start_with_listeners(&["--cores", &cores], &format!("{WS}{extra}"), 2);
    let ws = b.addrs[1];
    (b, ws)
}

fn encode(packets: &[Packet], version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in packets {
        p.encode(version, &mut out).unwrap();
    }
    out.to_vec()
}

/// Reads binary frames until a whole packet decodes (answering pings on the way).
fn next_packet(ws: &mut Ws, buf: &mut BytesMut, version: ProtocolVersion) -> Packet {
    let options = DecodeOptions::new(version);
    loop {
        if let Some(p) = decode(buf, &options).unwrap() {
            return p;
        }
        match ws.read().expect("WebSocket read") {
            Message::Binary(b) => buf.extend_from_slice(&b),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

fn ws_client(addr: SocketAddr, id: &str, version: ProtocolVersion) -> Client {
    let mut c = Client::open_ws(addr, version, "/mqtt", "mqtt", None).expect("upgrade");
    c.send(&Packet::Connect(Box::new(connect_packet(id, version))));
    match c.expect() {
        Packet::ConnAck(a) => assert_eq!(a.reason_code, ReasonCode::Success),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c
}

#[test]
fn publish_and_subscribe_over_websocket() {
    let (broker, ws) = broker(1, "");
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut sub = ws_client(ws, "ws-sub", version);
        sub.subscribe_ok("ws/#", QoS::ExactlyOnce);
        let mut tcp = Client::connect(broker.addr, "tcp-pub", version);
        let big = vec![7u8; 200_000];
        tcp.publish_acked("ws/big", &big, QoS::ExactlyOnce, false, 1);
        let p = sub.expect_publish_acked();
        assert_eq!((&*p.topic, p.payload.len()), ("ws/big", big.len()));
        assert!(p.payload == big);
        let mut publisher = ws_client(ws, "ws-pub", version);
        publisher.publish_acked("ws/small", b"hello", QoS::AtLeastOnce, false, 2);
        assert_eq!(&sub.expect_publish_acked().payload[..], b"hello");
        publisher.disconnect();
        sub.disconnect();
    }
}

#[test]
fn packets_split_over_frames_and_packed_into_one() {
    let (_broker, addr) = broker(1, "");
    let v = ProtocolVersion::V5;
    let (_socket, mut ws) = ws_connect(addr, "/mqtt", "mqtt", None).unwrap();
    let mut buf = BytesMut::new();
    // CONNECT in three frames, one byte first.
    let connect = encode(&[Packet::Connect(Box::new(connect_packet("frames", v)))], v);
    ws.send(Message::Binary(connect[..1].to_vec().into()))
        .unwrap();
    ws.send(Message::Binary(connect[1..5].to_vec().into()))
        .unwrap();
    ws.send(Message::Binary(connect[5..].to_vec().into()))
        .unwrap();
    assert!(
        matches!(next_packet(&mut ws, &mut buf, v), Packet::ConnAck(a) if a.reason_code == ReasonCode::Success)
    );
    // SUBSCRIBE and two PUBLISHes in one frame.
    let subscribe = Packet::Subscribe(ringmq_codec::Subscribe {
        packet_id: 1,
        properties: None,
        filters: vec![ringmq_codec::SubscribeFilter {
            filter: "f/#".try_into().unwrap(),
            options: ringmq_codec::SubscriptionOptions::qos(QoS::AtMostOnce),
        }],
    });
    let p1 = Packet::Publish(publish_packet("f/1", b"one", QoS::AtMostOnce, false, 0));
    let p2 = Packet::Publish(publish_packet("f/2", b"two", QoS::AtMostOnce, false, 0));
    ws.send(Message::Binary(encode(&[subscribe, p1, p2], v).into()))
        .unwrap();
    assert!(matches!(
        next_packet(&mut ws, &mut buf, v),
        Packet::SubAck(_)
    ));
    for expected in [&b"one"[..], b"two"] {
        match next_packet(&mut ws, &mut buf, v) {
            Packet::Publish(p) => assert_eq!(&p.payload[..], expected),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    // One PUBLISH as a fragmented message: binary + continuation frames, a ping between.
    let publish = encode(
        &[Packet::Publish(publish_packet(
            "f/3",
            &[3u8; 1000],
            QoS::AtMostOnce,
            false,
            0,
        ))],
        v,
    );
    ws.write(Message::Frame(Frame::message(
        publish[..10].to_vec(),
        OpCode::Data(Data::Binary),
        false,
    )))
    .unwrap();
    ws.write(Message::Ping(b"between".to_vec().into())).unwrap();
    ws.write(Message::Frame(Frame::message(
        publish[10..500].to_vec(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .unwrap();
    ws.write(Message::Frame(Frame::message(
        publish[500..].to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
    ws.flush().unwrap();
    // The pong comes first (it was answered before the PUBLISH was whole).
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"between"),
        other => panic!("expected the pong, got {other:?}"),
    }
    match next_packet(&mut ws, &mut buf, v) {
        Packet::Publish(p) => assert_eq!(p.payload.len(), 1000),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    // A close frame is answered with a close frame.
    ws.close(None).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match ws.read() {
            Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => break,
            Ok(_) => {}
            Err(e) => panic!("expected the close answer, got {e}"),
        }
        assert!(Instant::now() < deadline);
    }
}

#[test]
fn text_frames_are_refused_with_a_close() {
    let (broker, addr) = broker(1, "");
    let (_socket, mut ws) = ws_connect(addr, "/mqtt", "mqtt", None).unwrap();
    let v = ProtocolVersion::V3_1_1;
    let mut buf = BytesMut::new();
    let connect = encode(&[Packet::Connect(Box::new(connect_packet("texter", v)))], v);
    ws.send(Message::Binary(connect.into())).unwrap();
    assert!(matches!(
        next_packet(&mut ws, &mut buf, v),
        Packet::ConnAck(_)
    ));
    ws.send(Message::Text("{\"not\": \"mqtt\"}".into()))
        .unwrap();
    match ws.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Unsupported),
        other => panic!("expected close 1003, got {other:?}"),
    }
    // The broker goes on serving, over WebSocket and TCP.
    ws_client(addr, "after-ws", v).disconnect();
    Client::connect(broker.addr, "after-tcp", v).disconnect();
}

#[test]
fn wrong_subprotocol_path_and_requests_are_refused() {
    let (_broker, addr) = broker(1, "[limits]\nmax_websocket_handshake_bytes = 1024\n");
    let status = |path: &str, protocol: &str| match ws_connect(addr, path, protocol, None) {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP error, got {e}"),
        Ok(_) => panic!("upgrade to {path} with {protocol:?} accepted"),
    };
    assert_eq!(status("/mqtt", "chat"), 400);
    assert_eq!(status("/mqtt", ""), 400);
    assert_eq!(status("/other", "mqtt"), 404);
    // mqttv3.1 is accepted (MQTT 3.1 clients).
    assert!(ws_connect(addr, "/mqtt", "chat, mqttv3.1", None).is_ok());
    // Raw requests: plain MQTT on the WebSocket port, an oversized request.
    let raw = |bytes: &[u8]| -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let _ = s.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let v = ProtocolVersion::V5;
    let mqtt = encode(&[Packet::Connect(Box::new(connect_packet("raw", v)))], v);
    assert!(raw(&mqtt).starts_with("HTTP/1.1 400 "), "{}", raw(&mqtt));
    let mut big = b"GET /mqtt HTTP/1.1\r\n".to_vec();
    big.extend(b"X-Filler: ".iter().chain([b'a'; 2000].iter()));
    let answer = raw(&big);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
}

#[test]
fn slow_upgrade_requests_are_closed_after_the_handshake_timeout() {
    let (broker, addr) = broker(1, "[limits]\nhandshake_timeout_ms = 500\n");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let started = Instant::now();
    s.write_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let _ = s.write_all(b"Upgrade: websocket\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        took >= Duration::from_millis(400) && took < TIMEOUT,
        "{took:?}"
    );
    Client::connect(broker.addr, "still-here", ProtocolVersion::V5).disconnect();
}

#[test]
fn websocket_over_tls() {
    let files = TlsFiles::new();
    let toml = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n\n[[listeners]]\nbind = \"127.0.0.1:0\"\n\
         websocket = {{ path = \"/secure\" }}\ntls = {}\n",
        files.inline(false, false)
    );
    let broker = Broker::start_with_listeners(&["--cores", "1"], &toml, 2);
    let addr = broker.addrs[1];
    let config = client_config(&files.ca.cert_der(), None);
    let v = ProtocolVersion::V5;
    let mut sub = Client::open_ws(addr, v, "/secure", "mqtt", Some(config.clone())).unwrap();
    sub.send(&Packet::Connect(Box::new(connect_packet("wss-sub", v))));
    assert!(matches!(sub.expect(), Packet::ConnAck(a) if a.reason_code == ReasonCode::Success));
    sub.subscribe_ok("wss/#", QoS::AtLeastOnce);
    let mut tcp = Client::connect(broker.addr, "tcp", v);
    let big = vec![1u8; 70_000];
    tcp.publish_acked("wss/x", &big, QoS::AtLeastOnce, false, 1);
    assert_eq!(sub.expect_publish_acked().payload.len(), big.len());
    sub.disconnect();
    // Plain WebSocket on the wss port: refused by TLS.
    assert!(ws_connect(addr, "/secure", "mqtt", None).is_err());
}

#[test]
fn websocket_connections_move_to_their_home_core() {
    let files = TlsFiles::new();
    let toml = format!(
        "{WS}\n[[listeners]]\nbind = \"127.0.0.1:0\"\n[listeners.websocket]\n\
         [listeners.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        files.cert.display().to_string(),
        files.key.display().to_string()
    );
    let broker = Broker::start_with_listeners(&["--cores", "2"], &toml, 3);
    let (ws_addr, wss_addr) = (broker.addrs[1], broker.addrs[2]);
    let config = client_config(&files.ca.cert_der(), None);
    let v = ProtocolVersion::V5;
    let mut subs = Vec::new();
    for core in 0..2u16 {
        for n in 0..3 {
            for secure in [false, true] {
                let id = id_on_core(&format!("ws-home-{n}-{secure}"), core, 2);
                let (addr, tls) = if secure {
                    (wss_addr, Some(config.clone()))
                } else {
                    (ws_addr, None)
                };
                // CONNECT, then a ping, then SUBSCRIBE, in one write: whichever core reads the
                // CONNECT, the rest is read (undecoded frames, a pong to send) when it moves.
                let (socket, mut ws) = ws_connect(addr, "/mqtt", "mqtt", tls).unwrap();
                let connect = encode(&[Packet::Connect(Box::new(connect_packet(&id, v)))], v);
                let subscribe = encode(
                    &[Packet::Subscribe(ringmq_codec::Subscribe {
                        packet_id: 1,
                        properties: None,
                        filters: vec![ringmq_codec::SubscribeFilter {
                            filter: format!("home/{core}").as_str().try_into().unwrap(),
                            options: ringmq_codec::SubscriptionOptions::qos(QoS::AtLeastOnce),
                        }],
                    })],
                    v,
                );
                ws.write(Message::Binary(connect.into())).unwrap();
                ws.write(Message::Ping(b"p".to_vec().into())).unwrap();
                ws.write(Message::Binary(subscribe.into())).unwrap();
                ws.flush().unwrap();
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                let mut pong = false;
                let deadline = Instant::now() + TIMEOUT;
                while got.len() < 2 || !pong {
                    assert!(Instant::now() < deadline, "{id}: {got:?} pong {pong}");
                    let options = DecodeOptions::new(v);
                    while let Some(p) = decode(&mut buf, &options).unwrap() {
                        got.push(p);
                    }
                    if got.len() >= 2 && pong {
                        break;
                    }
                    match ws.read().unwrap() {
                        Message::Binary(b) => buf.extend_from_slice(&b),
                        Message::Pong(_) => pong = true,
                        other => panic!("{other:?}"),
                    }
                }
                assert!(
                    matches!(&got[0], Packet::ConnAck(a) if a.reason_code == ReasonCode::Success)
                );
                assert!(matches!(&got[1], Packet::SubAck(_)), "{got:?}");
                subs.push((
                    core,
                    Client::over(socket, Box::new(common::WsIo::new(ws)), v),
                ));
            }
        }
    }
    broker.settle();
    for core in 0..2u16 {
        let mut p = Client::connect(broker.addr, &id_on_core("ws-pub", 1 - core, 2), v);
        p.publish_acked(
            &format!("home/{core}"),
            b"moved",
            QoS::AtLeastOnce,
            false,
            1,
        );
        for (_, sub) in subs.iter_mut().filter(|(c, _)| *c == core) {
            assert_eq!(&sub.expect_publish_acked().payload[..], b"moved");
        }
        p.disconnect();
    }
    for (_, sub) in subs {
        sub.disconnect();
    }
}
