//! MQTT 5 enhanced authentication with SCRAM-SHA-256 over real sockets: the client side of
//! RFC 5802 is computed here, the credentials file is written by `ringmq passwd --scram`.
//! Covered: the right password (CONNACK 0x00 carrying a server-final-message the test
//! verifies), a wrong password and an unknown user (0x86, told apart by nothing), an unknown
//! method (0x8C), Authentication Data without a method and a packet other than AUTH during the
//! exchange (0x82), an AUTH with another method (0x8C), the failed-login limit, a stalled
//! exchange closed by the connect timeout, clients without enhanced authentication (3.1.1 and
//! 5.0) untouched, re-authentication, and `check-config` naming a bad line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use common::{connect_packet, id_on_core, Broker, Client};
use pbkdf2::hmac::{Hmac, Mac};
use ringmq_codec::{
    Auth, ConnAck, Packet, Properties, ProtocolVersion, QoS, ReasonCode, Utf8Bytes,
};
use sha2::{Digest, Sha256};

const V5: ProtocolVersion = ProtocolVersion::V5;
const METHOD: &str = "SCRAM-SHA-256";

/// A temporary directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "ringmq-scram-{name}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn passwd_scram(file: &Path, create: bool, user: &str, password: &str) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringmq"));
    cmd.args(["passwd", "--scram", "-b"]);
    if create {
        cmd.arg("-c");
    }
    let out = cmd.arg(file).args([user, password]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A broker with `alice` / `alice-pw` and `bob` / `bob-pw` in its SCRAM file, `extra` TOML
/// lines in `[auth]`, and `limits` lines in `[limits]`.
fn broker(dir: &Dir, cores: usize, extra: &str, limits: &str) -> Broker {
    let file = dir.0.join("scram");
    passwd_scram(&file, true, "alice", "alice-pw");
    passwd_scram(&file, false, "bob", "bob-pw");
    let toml = format!(
        "[auth]\nscram_file = {:?}\n{extra}\n[limits]\n{limits}\n",
        file.display().to_string()
    );
    Broker::with_config(cores, &toml)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The client side of one exchange.
struct ScramClient {
    bare: String,
}

impl ScramClient {
    fn new(user: &str) -> ScramClient {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nonce = format!(
            "test-nonce-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ScramClient {
            bare: format!("n={user},r={nonce}"),
        }
    }

    fn first(&self) -> Bytes {
        Bytes::from(format!("n,,{}", self.bare))
    }

    /// The client-final-message and the server-final-message expected back.
    fn last(&self, password: &str, server_first: &[u8]) -> (Bytes, Bytes) {
        let server_first = std::str::from_utf8(server_first).unwrap();
        let field = |k: &str| {
            server_first
                .split(',')
                .find_map(|a| a.strip_prefix(k))
                .unwrap()
                .to_owned()
        };
        let nonce = field("r=");
        assert!(nonce.starts_with(self.bare.split("r=").nth(1).unwrap()));
        let salt = B64.decode(field("s=")).unwrap();
        let iterations: u32 = field("i=").parse().unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let server_key = hmac(&salted, b"Server Key");
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_final = format!(
            "v={}",
            B64.encode(hmac(&server_key, auth_message.as_bytes()))
        );
        (
            Bytes::from(format!("{without_proof},p={}", B64.encode(proof))),
            Bytes::from(server_final),
        )
    }
}

fn auth_props(method: &str, data: Bytes) -> Option<Box<Properties>> {
    Some(Box::new(Properties {
        authentication_method: Some(Utf8Bytes::try_from(method).unwrap()),
        authentication_data: Some(data),
        ..Default::default()
    }))
}

fn auth(reason: ReasonCode, method: &str, data: Bytes) -> Packet {
    Packet::Auth(Auth {
        reason_code: reason,
        properties: auth_props(method, data),
    })
}

/// Sends CONNECT with the client-first-message; returns the client and the server-first.
fn start(addr: std::net::SocketAddr, id: &str, s: &ScramClient) -> (Client, Bytes) {
    let mut c = Client::open(addr, V5);
    let mut connect = connect_packet(id, V5);
    connect.properties = auth_props(METHOD, s.first());
    c.send(&Packet::Connect(Box::new(connect)));
    match c.expect() {
        Packet::Auth(a) => {
            assert_eq!(a.reason_code, ReasonCode::ContinueAuthentication);
            let p = a.properties.unwrap();
            assert_eq!(p.authentication_method.as_deref(), Some(METHOD));
            (c, p.authentication_data.unwrap())
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    }
}

/// A whole exchange; returns the client and the CONNACK, whose server-final-message (on
/// success) is checked against the one the password gives.
fn login(addr: std::net::SocketAddr, id: &str, user: &str, password: &str) -> (Client, ConnAck) {
    let s = ScramClient::new(user);
    let (mut c, server_first) = start(addr, id, &s);
    let (last, server_final) = s.last(password, &server_first);
    c.send(&auth(ReasonCode::ContinueAuthentication, METHOD, last));
    let ack = match c.expect() {
        Packet::ConnAck(a) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    if ack.reason_code == ReasonCode::Success {
        let p = ack.properties.as_ref().unwrap();
        assert_eq!(p.authentication_method.as_deref(), Some(METHOD));
        assert_eq!(
            p.authentication_data.as_ref(),
            Some(&server_final),
            "the server proves it knows the credential"
        );
    }
    (c, ack)
}

fn assert_refused_and_closed(c: &mut Client, ack: &ConnAck, reason: ReasonCode) {
    assert_eq!(ack.reason_code, reason);
    assert!(ack
        .properties
        .as_ref()
        .is_none_or(|p| p.authentication_data.is_none()));
    assert!(c.closed_within(Duration::from_secs(5)).0, "not closed");
}

#[test]
fn the_right_password_connects_on_every_core_and_wrong_ones_are_refused() {
    let dir = Dir::new("login");
    let b = broker(&dir, 2, "", "");
    for core in 0..2 {
        // Whichever core accepts the socket, the session lives on its home core.
        let id = id_on_core("scram", core, 2);
        let (mut c, ack) = login(b.addr, &id, "alice", "alice-pw");
        assert_eq!(ack.reason_code, ReasonCode::Success);
        assert!(matches!(
            c.subscribe("a/b", QoS::AtLeastOnce),
            Packet::SubAck(_)
        ));
        c.send(&Packet::PingReq);
        assert_eq!(c.expect(), Packet::PingResp);
        c.disconnect();
    }
    let (mut c, ack) = login(b.addr, "wrong", "alice", "bob-pw");
    assert_refused_and_closed(&mut c, &ack, ReasonCode::BadUserNameOrPassword);
    // An unknown user gets the same answer, after an exchange of the same shape.
    let s = ScramClient::new("mallory");
    let (_, unknown_first) = start(b.addr, "unknown", &s);
    let (_, known_first) = start(b.addr, "known", &ScramClient::new("bob"));
    assert_eq!(unknown_first.len(), known_first.len());
    let (mut c, ack) = login(b.addr, "unknown", "mallory", "x");
    assert_refused_and_closed(&mut c, &ack, ReasonCode::BadUserNameOrPassword);
    // A User Name in the CONNECT must be the SCRAM user.
    let s = ScramClient::new("alice");
    let mut c = Client::open(b.addr, V5);
    let mut connect = connect_packet("named", V5);
    connect.properties = auth_props(METHOD, s.first());
    connect.username = Some(Utf8Bytes::try_from("bob").unwrap());
    c.send(&Packet::Connect(Box::new(connect)));
    let Some(Packet::ConnAck(ack)) = c.recv() else {
        panic!("no CONNACK")
    };
    assert_refused_and_closed(&mut c, &ack, ReasonCode::NotAuthorized);
}

#[test]
fn methods_and_packets_out_of_place_are_refused() {
    let dir = Dir::new("methods");
    let b = broker(&dir, 1, "", "");
    let connack = |c: &mut Client| match c.expect() {
        Packet::ConnAck(a) => a,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    // An unknown method [MQTT-4.12.0-1].
    let mut c = Client::open(b.addr, V5);
    let mut connect = connect_packet("m1", V5);
    connect.properties = auth_props("SCRAM-SHA-1", Bytes::from_static(b"n,,n=alice,r=x"));
    c.send(&Packet::Connect(Box::new(connect)));
    let ack = connack(&mut c);
    assert_refused_and_closed(&mut c, &ack, ReasonCode::BadAuthenticationMethod);
    // Authentication Data without a method.
    let mut c = Client::open(b.addr, V5);
    let mut connect = connect_packet("m2", V5);
    connect.properties = Some(Box::new(Properties {
        authentication_data: Some(Bytes::from_static(b"x")),
        ..Default::default()
    }));
    c.send(&Packet::Connect(Box::new(connect)));
    let ack = connack(&mut c);
    assert_refused_and_closed(&mut c, &ack, ReasonCode::ProtocolError);
    // Anything but AUTH during the exchange [MQTT-3.1.2-30].
    let (mut c, _) = start(b.addr, "m3", &ScramClient::new("alice"));
    c.send(&Packet::PingReq);
    let ack = connack(&mut c);
    assert_refused_and_closed(&mut c, &ack, ReasonCode::ProtocolError);
    // AUTH with another method [MQTT-4.12.0-5].
    let s = ScramClient::new("alice");
    let (mut c, server_first) = start(b.addr, "m4", &s);
    let (last, _) = s.last("alice-pw", &server_first);
    c.send(&auth(ReasonCode::ContinueAuthentication, "OTHER", last));
    let ack = connack(&mut c);
    assert_refused_and_closed(&mut c, &ack, ReasonCode::BadAuthenticationMethod);
    // AUTH that is not Continue authentication.
    let s = ScramClient::new("alice");
    let (mut c, server_first) = start(b.addr, "m5", &s);
    let (last, _) = s.last("alice-pw", &server_first);
    c.send(&auth(ReasonCode::ReAuthenticate, METHOD, last));
    let ack = connack(&mut c);
    assert_refused_and_closed(&mut c, &ack, ReasonCode::ProtocolError);
    // A malformed client-first-message.
    let mut c = Client::open(b.addr, V5);
    let mut connect = connect_packet("m6", V5);
    connect.properties = auth_props(METHOD, Bytes::from_static(&[0xff, 0, b',']));
    c.send(&Packet::Connect(Box::new(connect)));
    let ack = connack(&mut c);
    assert_refused_and_closed(&mut c, &ack, ReasonCode::NotAuthorized);
    // A challenge larger than the client's Maximum Packet Size is not sent [MQTT-3.1.2-24].
    let mut c = Client::open(b.addr, V5);
    let mut connect = connect_packet("m7", V5);
    connect.properties = auth_props(METHOD, ScramClient::new("alice").first());
    connect.properties.as_mut().unwrap().maximum_packet_size = Some(40);
    c.send(&Packet::Connect(Box::new(connect)));
    let ack = connack(&mut c);
    assert_refused_and_closed(&mut c, &ack, ReasonCode::ImplementationSpecificError);
    // The broker is fine.
    let (c, ack) = login(b.addr, "m8", "bob", "bob-pw");
    assert_eq!(ack.reason_code, ReasonCode::Success);
    c.disconnect();
}

#[test]
fn clients_without_enhanced_authentication_are_untouched() {
    let dir = Dir::new("plain");
    let b = broker(&dir, 1, "", "");
    for v in [ProtocolVersion::V3_1_1, V5] {
        let (c, ack) = Client::connect_ok(b.addr, &format!("plain-{v:?}"), v, |c| {
            c.username = Some(Utf8Bytes::try_from("anyone").unwrap());
        });
        // [MQTT-4.12.0-6]: no method in the CONNACK (and no AUTH) for them.
        assert!(ack
            .properties
            .as_ref()
            .is_none_or(|p| p.authentication_method.is_none() && p.authentication_data.is_none()));
        c.disconnect();
    }
    // AUTH from a 5.0 client that did not use enhanced authentication [MQTT-4.12.0-7].
    let mut c = Client::connect(b.addr, "plain-auth", V5);
    c.send(&auth(ReasonCode::ReAuthenticate, METHOD, Bytes::new()));
    c.expect_close(ReasonCode::ProtocolError);
}

#[test]
fn a_stalled_exchange_is_closed_by_the_connect_timeout() {
    let dir = Dir::new("timeout");
    let b = broker(&dir, 1, "", "connect_timeout_ms = 300");
    let (mut c, _) = start(b.addr, "slow", &ScramClient::new("alice"));
    let begun = Instant::now();
    let (closed, packets) = c.closed_within(Duration::from_secs(5));
    assert!(closed && packets.is_empty(), "{packets:?}");
    assert!(begun.elapsed() >= Duration::from_millis(250));
}

#[test]
fn failed_exchanges_count_in_the_failed_login_limit() {
    let dir = Dir::new("limit");
    let b = broker(
        &dir,
        1,
        "failed_login_limit = 2\nfailed_login_window_secs = 600",
        "",
    );
    for i in 0..2 {
        let (_, ack) = login(b.addr, &format!("bad-{i}"), "alice", "nope");
        assert_eq!(ack.reason_code, ReasonCode::BadUserNameOrPassword);
    }
    // Even the right password is refused now, before any exchange.
    let mut c = Client::open(b.addr, V5);
    let mut connect = connect_packet("good", V5);
    connect.properties = auth_props(METHOD, ScramClient::new("alice").first());
    c.send(&Packet::Connect(Box::new(connect)));
    match c.expect() {
        Packet::ConnAck(a) => assert_refused_and_closed(&mut c, &a, ReasonCode::Banned),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn reauthentication() {
    let dir = Dir::new("reauth");
    let b = broker(&dir, 2, "", "");
    let id = id_on_core("reauth", 1, 2);
    let (mut c, ack) = login(b.addr, &id, "bob", "bob-pw");
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let round = |c: &mut Client, user: &str, password: &str| {
        let s = ScramClient::new(user);
        c.send(&auth(ReasonCode::ReAuthenticate, METHOD, s.first()));
        let server_first = match c.expect() {
            Packet::Auth(a) if a.reason_code == ReasonCode::ContinueAuthentication => {
                a.properties.unwrap().authentication_data.unwrap()
            }
            other => panic!("expected AUTH 0x18, got {other:?}"),
        };
        let (last, server_final) = s.last(password, &server_first);
        c.send(&auth(ReasonCode::ContinueAuthentication, METHOD, last));
        server_final
    };
    for _ in 0..2 {
        let server_final = round(&mut c, "bob", "bob-pw");
        match c.expect() {
            Packet::Auth(a) => {
                assert_eq!(a.reason_code, ReasonCode::Success);
                let p = a.properties.unwrap();
                assert_eq!(p.authentication_method.as_deref(), Some(METHOD));
                assert_eq!(p.authentication_data, Some(server_final));
            }
            other => panic!("expected AUTH 0x00, got {other:?}"),
        }
    }
    // Other packets flow during a re-authentication.
    let s = ScramClient::new("bob");
    c.send(&auth(ReasonCode::ReAuthenticate, METHOD, s.first()));
    c.send(&Packet::PingReq);
    let mut got = [c.expect(), c.expect()];
    got.sort_by_key(|p| matches!(p, Packet::Auth(_)));
    assert_eq!(got[0], Packet::PingResp);
    let Packet::Auth(a) = &got[1] else { panic!() };
    let server_first = a.properties.as_ref().unwrap().authentication_data.clone();
    let (last, _) = s.last("wrong", &server_first.unwrap());
    // A wrong password ends the connection [MQTT-4.12.1-2].
    c.send(&auth(ReasonCode::ContinueAuthentication, METHOD, last));
    c.expect_close(ReasonCode::NotAuthorized);
    // Another user may not take over the connection.
    let (mut c, _) = login(b.addr, &id, "bob", "bob-pw");
    c.send(&auth(
        ReasonCode::ReAuthenticate,
        METHOD,
        ScramClient::new("alice").first(),
    ));
    c.expect_close(ReasonCode::NotAuthorized);
}

#[test]
fn passwd_scram_writes_usable_lines_and_bad_lines_stop_check_config() {
    let dir = Dir::new("cli");
    let file = dir.0.join("scram");
    passwd_scram(&file, true, "carol", "carol-pw");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("carol:SCRAM-SHA-256$4096:") && text.lines().count() == 1,
        "{text}"
    );
    // Replacing keeps one line per user.
    passwd_scram(&file, false, "carol", "carol-pw2");
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["passwd", "--scram", "--iterations", "5000", "-b"])
        .arg(&file)
        .args(["dave", "dave-pw"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("\ndave:SCRAM-SHA-256$5000:"), "{text}");
    let b = Broker::with_config(
        1,
        &format!("[auth]\nscram_file = {:?}\n", file.display().to_string()),
    );
    let (c, ack) = login(b.addr, "carol", "carol", "carol-pw2");
    assert_eq!(ack.reason_code, ReasonCode::Success);
    c.disconnect();
    let (_, ack) = login(b.addr, "carol-old", "carol", "carol-pw");
    assert_eq!(ack.reason_code, ReasonCode::BadUserNameOrPassword);
    let (c, ack) = login(b.addr, "dave", "dave", "dave-pw");
    assert_eq!(ack.reason_code, ReasonCode::Success);
    c.disconnect();

    // A malformed line stops check-config and start-up, naming file and line.
    std::fs::write(
        &file,
        format!("{text}# comment\nerin:SCRAM-SHA-256$10:c2FsdA==$a:b\n"),
    )
    .unwrap();
    let cfg = dir.0.join("ringmq.toml");
    std::fs::write(
        &cfg,
        format!("[auth]\nscram_file = {:?}\n", file.display().to_string()),
    )
    .unwrap();
    for args in [&["check-config"][..], &[][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains("scram:4:"), "{args:?}: {stderr}");
        assert!(stderr.contains("iteration"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn sighup_reloads_the_scram_file() {
    let dir = Dir::new("reload");
    let b = broker(&dir, 2, "failed_login_limit = 0", "");
    let (_, ack) = login(b.addr, "erin-1", "erin", "erin-pw");
    assert_eq!(ack.reason_code, ReasonCode::BadUserNameOrPassword);
    passwd_scram(&dir.0.join("scram"), false, "erin", "erin-pw");
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(b.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut ok = 0;
    // Every core reloads: several logins in a row succeed (the accepting core varies).
    while ok < 6 {
        assert!(Instant::now() < deadline, "erin not accepted after SIGHUP");
        let (_, ack) = login(b.addr, &format!("erin-{ok}"), "erin", "erin-pw");
        if ack.reason_code == ReasonCode::Success {
            ok += 1;
        } else {
            ok = 0;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
