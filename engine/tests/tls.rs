//! TLS listeners against the real binary, with a CA made by the test: MQTT over TLS, client
//! certificates (required, from the right CA, from another CA, missing), the certificate's CN
//! as the username for the ACL, the move to the home core of another executor with the TLS
//! session, hostile clients, and start-up failures on bad PEM files.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    client_config, connect_packet, id_on_core, Broker, Client, TestCa, TlsFiles, TIMEOUT,
};
use ringmq_codec::{Packet, ProtocolVersion, QoS, ReasonCode};

fn tls_listener(files: &TlsFiles, client_certs: bool, identity: bool) -> String {
    format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\ntls = {}\n",
        files.inline(client_certs, identity)
    )
}

/// Connects over TLS and returns the client and the CONNACK's reason; `Err` when the TLS
/// handshake or the CONNECT exchange failed (the broker closed).
fn try_connect(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    id: &str,
    version: ProtocolVersion,
) -> Result<(Client, ReasonCode), String> {
    let mut c = Client::open_tls(addr, version, config).map_err(|e| e.to_string())?;
    c.send(&Packet::Connect(Box::new(connect_packet(id, version))));
    match c.recv() {
        Some(Packet::ConnAck(a)) => Ok((c, a.reason_code)),
        other => Err(format!("no CONNACK: {other:?}")),
    }
}

fn connect_ok(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    id: &str,
    version: ProtocolVersion,
) -> Client {
    match try_connect(addr, config, id, version) {
        Ok((c, ReasonCode::Success)) => c,
        other => panic!("TLS CONNECT of {id} failed: {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn publish_and_subscribe_over_tls_next_to_plain_tcp() {
    let files = TlsFiles::new();
    let toml = format!(
        "{}[[listeners]]\nbind = \"127.0.0.1:0\"\n",
        tls_listener(&files, false, false)
    );
    let broker = Broker::start_with_listeners(&["--cores", "1"], &toml, 2);
    let (tls_addr, tcp_addr) = (broker.addrs[0], broker.addrs[1]);
    let config = client_config(&files.ca.cert_der(), None);
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut sub = connect_ok(
            tls_addr,
            config.clone(),
            &format!("tls-sub-{version:?}"),
            version,
        );
        sub.subscribe_ok("tls/#", QoS::AtLeastOnce);
        let mut plain = Client::connect(tcp_addr, "tcp-sub", version);
        plain.subscribe_ok("tls/#", QoS::AtMostOnce);
        let mut publisher = connect_ok(tls_addr, config.clone(), "tls-pub", version);
        // Larger than one TLS record (16 KiB) both ways.
        let big = vec![0x5a; 100_000];
        publisher.publish_acked("tls/a", &big, QoS::AtLeastOnce, false, 1);
        let p = sub.expect_publish_acked();
        assert_eq!((&*p.topic, p.payload.len()), ("tls/a", big.len()));
        assert!(p.payload == big, "payload differs");
        assert_eq!(plain.expect_publish().payload.len(), big.len());
        // From plain TCP to TLS.
        plain.publish_acked("tls/b", b"from tcp", QoS::AtLeastOnce, false, 2);
        assert_eq!(&sub.expect_publish_acked().payload[..], b"from tcp");
        publisher.disconnect();
        sub.disconnect();
    }
}

#[test]
fn client_certificates_are_required_and_verified() {
    let files = TlsFiles::new();
    let broker =
        Broker::start_with_listeners(&["--cores", "1"], &tls_listener(&files, true, false), 1);
    let ca = files.ca.cert_der();
    let good = files.ca.issue(&["client"], Some("client-a"));
    let (c, reason) = try_connect(
        broker.addr,
        client_config(&ca, Some(&good)),
        "cert-ok",
        ProtocolVersion::V5,
    )
    .expect("a client with a certificate from the CA is accepted");
    assert_eq!(reason, ReasonCode::Success);
    drop(c);
    let refused = try_connect(
        broker.addr,
        client_config(&ca, None),
        "no-cert",
        ProtocolVersion::V5,
    );
    assert!(
        refused.is_err(),
        "no client certificate: {:?}",
        refused.map(|r| r.1)
    );
    let other_ca = TestCa::new("another CA");
    let stranger = other_ca.issue(&["client"], Some("client-a"));
    let refused = try_connect(
        broker.addr,
        client_config(&ca, Some(&stranger)),
        "other-ca",
        ProtocolVersion::V5,
    );
    assert!(
        refused.is_err(),
        "certificate of another CA: {:?}",
        refused.map(|r| r.1)
    );
    // The broker goes on serving.
    let (_, reason) = try_connect(
        broker.addr,
        client_config(&ca, Some(&good)),
        "cert-again",
        ProtocolVersion::V3_1_1,
    )
    .unwrap();
    assert_eq!(reason, ReasonCode::Success);
}

#[test]
fn certificate_common_name_is_the_username_for_the_acl() {
    let files = TlsFiles::new();
    // A password file that does not know the certificate users: the certificate replaces it.
    let passwd = files.dir.join("passwd");
    let status = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["passwd", "-c", "-b"])
        .arg(&passwd)
        .args(["someone", "pw"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let acl = files.write(
        "acl",
        b"user sensor-7\ntopic readwrite sensors/7/#\n\nuser other\ntopic read public/#\n",
    );
    let toml = format!(
        "allow_anonymous = false\n[auth]\npassword_file = {:?}\nacl_file = {:?}\n\n{}",
        passwd.display().to_string(),
        acl.display().to_string(),
        tls_listener(&files, true, true)
    );
    let broker = Broker::start_with_listeners(&["--cores", "1"], &toml, 1);
    let ca = files.ca.cert_der();
    let sensor = files.ca.issue(&["client"], Some("sensor-7"));
    let other = files.ca.issue(&["client"], Some("other"));
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        // The CONNECT's own user name and password are ignored.
        let mut c =
            Client::open_tls(broker.addr, version, client_config(&ca, Some(&sensor))).unwrap();
        let mut connect = connect_packet("sensor", version);
        connect.username = Some("someone".try_into().unwrap());
        connect.password = Some(bytes::Bytes::from_static(b"wrong"));
        c.send(&Packet::Connect(Box::new(connect)));
        match c.recv() {
            Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code, ReasonCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c.subscribe_ok("sensors/7/#", QoS::AtLeastOnce);
        let refused = c.subscribe_many(8, &[("sensors/8/#", Default::default())], None);
        assert_ne!(
            refused.return_codes,
            vec![ReasonCode::Success],
            "{version:?}"
        );
        c.publish_acked("sensors/7/t", b"21.5", QoS::AtLeastOnce, false, 3);
        assert_eq!(&c.expect_publish_acked().payload[..], b"21.5");
        c.disconnect();

        let mut o = connect_ok(
            broker.addr,
            client_config(&ca, Some(&other)),
            "other",
            version,
        );
        let refused = o.subscribe_many(9, &[("sensors/7/#", Default::default())], None);
        assert_ne!(
            refused.return_codes,
            vec![ReasonCode::Success],
            "{version:?}"
        );
        o.subscribe_ok("public/#", QoS::AtMostOnce);
        o.disconnect();
    }
    // A certificate without a CN cannot name a user.
    let anonymous = files.ca.issue(&["client"], None);
    let refused = try_connect(
        broker.addr,
        client_config(&ca, Some(&anonymous)),
        "no-cn",
        ProtocolVersion::V5,
    );
    assert!(
        matches!(refused, Ok((_, ReasonCode::NotAuthorized)) | Err(_)),
        "{:?}",
        refused.map(|r| r.1)
    );
}

#[test]
fn tls_connections_move_to_their_home_core_with_their_session() {
    let files = TlsFiles::new();
    // A plain listener first: `settle` speaks plain MQTT to the first address.
    let toml = format!(
        "[[listeners]]\nbind = \"127.0.0.1:0\"\n{}",
        tls_listener(&files, false, false)
    );
    let broker = Broker::start_with_listeners(&["--cores", "2"], &toml, 2);
    let tls_addr = broker.addrs[1];
    let config = client_config(&files.ca.cert_der(), None);
    let mut subs = Vec::new();
    // Three clients per home core: the kernel spreads connections over both cores, so some
    // land on the other core and move.
    for (core, n) in [0u16, 1]
        .into_iter()
        .flat_map(|c| (0..3).map(move |n| (c, n)))
    {
        let id = id_on_core(&format!("tls-home-{n}"), core, 2);
        // CONNECT and SUBSCRIBE in one TLS write: whatever core reads the CONNECT, the
        // SUBSCRIBE is already decrypted (or buffered by rustls) when the connection moves.
        let mut c = Client::open_tls(tls_addr, ProtocolVersion::V5, config.clone()).unwrap();
        let mut out = bytes::BytesMut::new();
        Packet::Connect(Box::new(connect_packet(&id, ProtocolVersion::V5)))
            .encode(ProtocolVersion::V5, &mut out)
            .unwrap();
        Packet::Subscribe(ringmq_codec::Subscribe {
            packet_id: 1,
            properties: None,
            filters: vec![ringmq_codec::SubscribeFilter {
                filter: format!("home/{core}").as_str().try_into().unwrap(),
                options: ringmq_codec::SubscriptionOptions::qos(QoS::AtLeastOnce),
            }],
        })
        .encode(ProtocolVersion::V5, &mut out)
        .unwrap();
        c.send_raw(&out);
        match c.expect() {
            Packet::ConnAck(a) => assert_eq!(a.reason_code, ReasonCode::Success, "{id}"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        match c.expect() {
            Packet::SubAck(a) => assert_eq!(a.return_codes, vec![ReasonCode::GrantedQoS1]),
            other => panic!("expected SUBACK, got {other:?}"),
        }
        subs.push(c);
    }
    broker.settle();
    for core in 0..2u16 {
        let id = id_on_core("tls-pub", 1 - core, 2);
        let mut p = connect_ok(tls_addr, config.clone(), &id, ProtocolVersion::V3_1_1);
        p.publish_acked(
            &format!("home/{core}"),
            b"moved",
            QoS::AtLeastOnce,
            false,
            1,
        );
        for sub in &mut subs[usize::from(core) * 3..][..3] {
            assert_eq!(&sub.expect_publish_acked().payload[..], b"moved");
        }
        p.disconnect();
    }
    for sub in subs {
        sub.disconnect();
    }
}

#[test]
fn hostile_clients_on_a_tls_listener_are_closed() {
    use std::io::{Read, Write};
    let files = TlsFiles::new();
    let toml = format!(
        "{}[limits]\nhandshake_timeout_ms = 500\n",
        tls_listener(&files, false, false)
    );
    let broker = Broker::start_with_listeners(&["--cores", "1"], &toml, 1);
    let closed = |mut s: std::net::TcpStream, within: Duration| {
        s.set_read_timeout(Some(within)).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {} // an alert
            }
            assert!(started.elapsed() < within, "not closed");
        }
    };
    // Plain MQTT on the TLS port.
    let mut s = std::net::TcpStream::connect(broker.addr).unwrap();
    let mut connect = bytes::BytesMut::new();
    Packet::Connect(Box::new(connect_packet("plain", ProtocolVersion::V5)))
        .encode(ProtocolVersion::V5, &mut connect)
        .unwrap();
    s.write_all(&connect).unwrap();
    closed(s, TIMEOUT);
    // Garbage.
    let mut s = std::net::TcpStream::connect(broker.addr).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5])
        .unwrap();
    s.write_all(&[0xAB; 4000]).unwrap();
    closed(s, TIMEOUT);
    // A client that says nothing is closed after limits.handshake_timeout_ms.
    let s = std::net::TcpStream::connect(broker.addr).unwrap();
    let took = closed(s, TIMEOUT);
    assert!(took >= Duration::from_millis(400), "{took:?}");
    // Still serving.
    let config = client_config(&files.ca.cert_der(), None);
    connect_ok(broker.addr, config, "after", ProtocolVersion::V5).disconnect();
}

/// Runs the binary with `args` (bounded); returns its exit code and stderr.
fn run_to_exit(args: &[&str], config: &std::path::Path, data: &std::path::Path) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringmq {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_certificate_files_stop_the_start_with_a_message_naming_them() {
    let files = TlsFiles::new();
    let garbage = files.write("garbage.pem", b"-----BEGIN CERTIFICATE-----\n!!!!\n");
    let empty = files.write("empty.pem", b"just text, no PEM\n");
    let other_key = files.write("other.key", files.ca.issue(&["x"], None).key_pem.as_bytes());
    let missing = common::missing_file(&files.dir);
    let q = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let cases = [
        (
            format!("cert_file = {}, key_file = {}", q(&missing), q(&files.key)),
            "listeners[0].tls.cert_file",
            missing.clone(),
        ),
        (
            format!("cert_file = {}, key_file = {}", q(&garbage), q(&files.key)),
            "listeners[0].tls.cert_file",
            garbage.clone(),
        ),
        (
            format!("cert_file = {}, key_file = {}", q(&empty), q(&files.key)),
            "listeners[0].tls.cert_file",
            empty.clone(),
        ),
        (
            format!("cert_file = {}, key_file = {}", q(&files.cert), q(&garbage)),
            "listeners[0].tls.key_file",
            garbage.clone(),
        ),
        (
            format!(
                "cert_file = {}, key_file = {}",
                q(&files.cert),
                q(&other_key)
            ),
            "listeners[0].tls",
            other_key.clone(),
        ),
        (
            format!(
                "cert_file = {}, key_file = {}, ca_file = {}",
                q(&files.cert),
                q(&files.key),
                q(&empty)
            ),
            "listeners[0].tls.ca_file",
            empty.clone(),
        ),
    ];
    let data = files.dir.join("data");
    for (tls, key, file) in cases {
        let config = files.write(
            "bad.toml",
            format!("[[listeners]]\nbind = \"127.0.0.1:0\"\ntls = {{ {tls} }}\n").as_bytes(),
        );
        for args in [&["check-config"][..], &[][..]] {
            let (code, err) = run_to_exit(args, &config, &data);
            assert_ne!(code, 0, "{args:?} {tls}: {err}");
            assert!(
                err.contains(key) && err.contains(&file.display().to_string()),
                "{args:?} {tls}: the message names neither {key} nor the file: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}
