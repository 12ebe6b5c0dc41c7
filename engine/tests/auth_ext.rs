//! JWT and the HTTP authentication hook against the real binary over loopback: HMAC and RSA
//! tokens right and wrong (signature, expiry, claim, `alg: none`, algorithm confusion), SIGHUP
//! rereading the secret, the hook's allow / deny / ignore / failure / timeout answers from a
//! small HTTP server in the test (which counts the questions, to prove the per-core cache),
//! CONNACK codes in 3.1.1 and 5.0, the failures counted in the metrics, and configuration errors
//! stopping `check-config` and start-up.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{Broker, Client, VERSIONS};
use ring::{hmac, signature};
use ringmq_codec::{ConnAck, ProtocolVersion, ReasonCode, Utf8Bytes};

const V5: ProtocolVersion = ProtocolVersion::V5;

const RSA_PRIVATE: &str = include_str!("fixtures/jwt-rsa-private.pem");
const RSA_OTHER_PRIVATE: &str = include_str!("fixtures/jwt-rsa-other-private.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/jwt-rsa-public.pem");
const SECRET: &str = "integration test secret, 32+ bytes";

/// A temporary directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "ringmq-authext-{name}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn login(
    addr: SocketAddr,
    id: &str,
    v: ProtocolVersion,
    user: Option<&str>,
    password: Option<&str>,
) -> (Client, ConnAck) {
    Client::connect_edit(addr, id, v, |c| {
        c.username = user.map(|u| Utf8Bytes::try_from(u).unwrap());
        c.password = password.map(|p| bytes::Bytes::copy_from_slice(p.as_bytes()));
    })
}

/// Logs in and checks the CONNACK (3.1.1 return codes read back as reason codes: 4 is
/// BadUserNameOrPassword, 3 ServerUnavailable); a refused client is closed.
fn expect_login(
    addr: SocketAddr,
    id: &str,
    v: ProtocolVersion,
    user: &str,
    password: &str,
    expected: ReasonCode,
) {
    let (mut c, ack) = login(addr, id, v, Some(user), Some(password));
    assert_eq!(
        ack.reason_code, expected,
        "{v:?} {id} {user} {password:.40}"
    );
    if expected == ReasonCode::Success {
        c.disconnect();
    } else {
        assert!(
            c.closed_within(common::TIMEOUT).0,
            "{v:?} {user}: not closed"
        );
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A JWS over `header` and `claims`: `alg` HS* signs with `secret`, RS* with the PEM
/// PKCS#8 key `rsa`.
fn sign(header: &str, claims: &str, secret: &[u8], rsa: &str) -> String {
    let signed = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let alg: serde_json::Value = serde_json::from_str(header).unwrap();
    let sig = match alg["alg"].as_str().unwrap() {
        "HS256" => hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret),
            signed.as_bytes(),
        )
        .as_ref()
        .to_vec(),
        "HS512" => hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA512, secret),
            signed.as_bytes(),
        )
        .as_ref()
        .to_vec(),
        "RS256" => {
            let b64: String = rsa.lines().filter(|l| !l.starts_with("-----")).collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            let key = signature::RsaKeyPair::from_pkcs8(&der).unwrap();
            let mut sig = vec![0; key.public().modulus_len()];
            key.sign(
                &signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                signed.as_bytes(),
                &mut sig,
            )
            .unwrap();
            sig
        }
        _ => Vec::new(),
    };
    format!("{signed}.{}", b64(&sig))
}

fn hs(alg: &str, claims: &str) -> String {
    sign(
        &format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#),
        claims,
        SECRET.as_bytes(),
        "",
    )
}

#[test]
fn jwt_with_an_hmac_secret() {
    let dir = Dir::new("hmac");
    let secret = dir.file("secret", &format!("{SECRET}\n"));
    let broker = Broker::with_config(
        2,
        &format!(
            "allow_anonymous = false\n[auth]\nfailed_login_limit = 0\n[auth.jwt]\n\
             hmac_secret_file = {}\nalgorithms = [\"HS256\", \"HS512\"]\nmatch_claim = \"sub\"\n\
             leeway_secs = 2\n",
            toml_path(&secret)
        ),
    );
    let now = now_secs();
    let bad = ReasonCode::BadUserNameOrPassword;
    let exp = now + 600;
    for v in VERSIONS {
        let ok = |password: &str| {
            expect_login(
                broker.addr,
                "dev",
                v,
                "alice",
                password,
                ReasonCode::Success,
            )
        };
        ok(&hs("HS256", &format!(r#"{{"sub":"alice","exp":{exp}}}"#)));
        ok(&hs("HS512", r#"{"sub":"alice"}"#));
        ok(&hs(
            "HS256",
            &format!(r#"{{"sub":"alice","nbf":{}}}"#, now - 10),
        ));
        let refused = |what: &str, password: &str| {
            let (mut c, ack) = login(broker.addr, "dev", v, Some("alice"), Some(password));
            // 0x86 in 5.0; return code 4 in 3.1.1.
            assert_eq!(ack.reason_code, bad, "{v:?}: {what}");
            assert!(c.closed_within(common::TIMEOUT).0, "{what}");
        };
        let other_secret = sign(
            r#"{"alg":"HS256"}"#,
            r#"{"sub":"alice"}"#,
            b"another secret",
            "",
        );
        refused("wrong secret", &other_secret);
        refused(
            "expired",
            &hs("HS256", &format!(r#"{{"sub":"alice","exp":{}}}"#, now - 60)),
        );
        refused(
            "not yet valid",
            &hs(
                "HS256",
                &format!(r#"{{"sub":"alice","nbf":{}}}"#, now + 600),
            ),
        );
        refused("another user's token", &hs("HS256", r#"{"sub":"bob"}"#));
        refused("no sub", &hs("HS256", r#"{"exp":9999999999}"#));
        refused(
            "HS384 is not configured",
            &sign(r#"{"alg":"HS384"}"#, r#"{"sub":"alice"}"#, b"", ""),
        );
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none"}"#),
            b64(br#"{"sub":"alice"}"#)
        );
        refused("alg none", &none);
        refused("not a token", "alice-secret");
        let long = hs(
            "HS256",
            &format!(r#"{{"sub":"alice","pad":"{}"}}"#, "x".repeat(5000)),
        );
        refused("longer than max_token_bytes", &long);
        // Anonymous clients: as before (0x87 in 5.0, return code 4 in 3.1.1).
        let (_, ack) = login(broker.addr, "anon", v, None, None);
        let expected = if v.is_v5() {
            ReasonCode::NotAuthorized
        } else {
            bad
        };
        assert_eq!(ack.reason_code, expected);
    }
    // Refusals are counted in the metrics: 9 per version, and the two anonymous ones.
    wait_for_metric(&broker, "auth_failures_total", 20.0);
}

#[test]
fn sighup_rereads_the_jwt_secret() {
    let dir = Dir::new("reload");
    let secret = dir.file("secret", "first secret\n");
    let broker = Broker::with_config(
        2,
        &format!(
            "[auth]\nfailed_login_limit = 0\n[auth.jwt]\nhmac_secret_file = {}\n",
            toml_path(&secret)
        ),
    );
    let header = r#"{"alg":"HS256"}"#;
    let first = sign(header, "{}", b"first secret", "");
    let second = sign(header, "{}", b"second secret", "");
    let (ok, bad) = (ReasonCode::Success, ReasonCode::BadUserNameOrPassword);
    expect_login(broker.addr, "c", V5, "u", &first, ok);
    expect_login(broker.addr, "c", V5, "u", &second, bad);
    std::fs::write(&secret, "second secret\n").unwrap();
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(broker.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while login(broker.addr, "c", V5, Some("u"), Some(&second))
        .1
        .reason_code
        != ok
    {
        assert!(
            Instant::now() < deadline,
            "the new secret never took effect"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300)); // every core's ticker has run
    for i in 0..4 {
        let id = format!("c{i}");
        expect_login(broker.addr, &id, V5, "u", &second, ok);
        expect_login(broker.addr, &id, V5, "u", &first, bad);
    }
    // A reload that fails (empty secret) keeps the keys in force.
    std::fs::write(&secret, "\n").unwrap();
    unsafe { libc::kill(broker.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(400));
    for i in 0..4 {
        expect_login(broker.addr, &format!("d{i}"), V5, "u", &second, ok);
    }
}

#[test]
fn jwt_with_an_rsa_key_matching_the_client_id() {
    let broker = Broker::with_config(
        2,
        &format!(
            "[auth]\nfailed_login_limit = 0\n[auth.jwt]\nrsa_public_key_file = {}\n\
             hmac_secret = {:?}\nalgorithms = [\"RS256\"]\nmatch_claim = \"cid\"\n\
             match_to = \"client_id\"\nrequire_exp = true\n",
            toml_path(&fixture("jwt-rsa-public.pem")),
            SECRET
        ),
    );
    let exp = now_secs() + 600;
    let claims = format!(r#"{{"cid":"sensor-7","exp":{exp}}}"#);
    let rs256 = r#"{"alg":"RS256","typ":"JWT"}"#;
    let good = sign(rs256, &claims, b"", RSA_PRIVATE);
    let bad = ReasonCode::BadUserNameOrPassword;
    for v in VERSIONS {
        expect_login(
            broker.addr,
            "sensor-7",
            v,
            "any",
            &good,
            ReasonCode::Success,
        );
        expect_login(broker.addr, "sensor-8", v, "any", &good, bad);
        let other_key = sign(rs256, &claims, b"", RSA_OTHER_PRIVATE);
        expect_login(broker.addr, "sensor-7", v, "any", &other_key, bad);
        let no_exp = sign(rs256, r#"{"cid":"sensor-7"}"#, b"", RSA_PRIVATE);
        expect_login(broker.addr, "sensor-7", v, "any", &no_exp, bad);
        // HMAC is configured but not in the algorithms, and the public key is no HMAC secret.
        let hs = sign(r#"{"alg":"HS256"}"#, &claims, SECRET.as_bytes(), "");
        expect_login(broker.addr, "sensor-7", v, "any", &hs, bad);
        let confused = sign(r#"{"alg":"HS256"}"#, &claims, RSA_PUBLIC.as_bytes(), "");
        expect_login(broker.addr, "sensor-7", v, "any", &confused, bad);
    }
}

/// How long the test's hook takes to answer user "slow": longer than the broker waits.
const SLOW_ANSWER: Duration = Duration::from_secs(6);

/// What the test's HTTP hook saw: questions per user name, and the last body.
#[derive(Default)]
struct Seen {
    questions: HashMap<String, usize>,
    last_body: Option<serde_json::Value>,
}

/// A small HTTP server on loopback that answers by user name; one thread per connection.
fn hook_server() -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let seen = shared.clone();
            std::thread::spawn(move || answer(stream, &seen));
        }
    });
    (addr, seen)
}

fn answer(mut s: TcpStream, seen: &Mutex<Seen>) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // Head, then Content-Length bytes of body.
    let body = loop {
        let Ok(n) = s.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|l| l.trim().parse().ok())
                .unwrap();
            if body.len() >= length {
                assert!(head.starts_with("POST /mqtt/auth HTTP/1.1\r\n"), "{head}");
                break body[..length].to_owned();
            }
        }
    };
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let user = json["username"].as_str().unwrap_or("").to_owned();
    {
        let mut seen = seen.lock().unwrap();
        *seen.questions.entry(user.clone()).or_default() += 1;
        seen.last_body = Some(json);
    }
    let reply = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let response = match user.as_str() {
        "allowed" => reply("200 OK", r#"{"result":"allow"}"#),
        "empty" => reply("200 OK", ""),
        "denied" => reply("200 OK", r#"{"result":"deny"}"#),
        "forbidden" => reply("403 Forbidden", r#"{"error":"no"}"#),
        "ignored" => reply("200 OK", r#"{"result":"ignore"}"#),
        "broken" => reply("500 Internal Server Error", ""),
        "chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                      12\r\n{\"result\":\"allow\"}\r\n0\r\n\r\n"
            .to_owned(),
        "slow" => {
            std::thread::sleep(SLOW_ANSWER);
            reply("200 OK", r#"{"result":"allow"}"#)
        }
        "garbage" => "SSH-2.0-nope\r\n\r\n".to_owned(),
        _ => reply("200 OK", r#"{"result":"deny"}"#),
    };
    let _ = s.write_all(response.as_bytes());
}

fn questions(seen: &Mutex<Seen>, user: &str) -> usize {
    seen.lock()
        .unwrap()
        .questions
        .get(user)
        .copied()
        .unwrap_or(0)
}

#[test]
fn http_hook_answers_and_its_cache() {
    let dir = Dir::new("hook");
    let pw = dir.file(
        "passwd",
        include_str!("../src/auth/testdata/mosquitto.passwd"),
    );
    let (hook, seen) = hook_server();
    // One core: every connection meets the same cache.
    let broker = Broker::with_config(
        1,
        &format!(
            "allow_anonymous = false\n[auth]\npassword_file = {}\nfailed_login_limit = 0\n\
             [auth.http]\nurl = \"http://{hook}/mqtt/auth\"\ntimeout_ms = 2000\n\
             cache_ttl_secs = 3\n",
            toml_path(&pw)
        ),
    );
    let ok = ReasonCode::Success;
    let bad = ReasonCode::BadUserNameOrPassword;
    let unavailable = ReasonCode::ServerUnavailable;
    for v in VERSIONS {
        // The password file decides for its users: the hook is not asked.
        expect_login(broker.addr, "a", v, "alice", "alice-secret", ok);
        expect_login(broker.addr, "a", v, "alice", "wrong", bad);
        assert_eq!(questions(&seen, "alice"), 0);
        let before = questions(&seen, "allowed");
        expect_login(broker.addr, "h1", v, "allowed", "pw1", ok);
        assert_eq!(questions(&seen, "allowed"), before + 1);
        let body = seen.lock().unwrap().last_body.clone().unwrap();
        assert_eq!(body["clientid"], "h1");
        assert_eq!(body["password"], "pw1");
        assert_eq!(body["peerhost"], "127.0.0.1");
        assert_eq!(body["protocol"], if v.is_v5() { 5 } else { 4 });
        // Within the TTL the same credentials are not asked about again; a changed password
        // or client id is.
        expect_login(broker.addr, "h1", v, "allowed", "pw1", ok);
        assert_eq!(
            questions(&seen, "allowed"),
            before + 1,
            "served from the cache"
        );
        expect_login(broker.addr, "h1", v, "allowed", "pw2", ok);
        expect_login(broker.addr, "h2", v, "allowed", "pw1", ok);
        assert_eq!(questions(&seen, "allowed"), before + 3);
        expect_login(broker.addr, "h", v, "empty", "pw", ok);
        expect_login(broker.addr, "h", v, "chunked", "pw", ok);
        expect_login(broker.addr, "h", v, "denied", "pw", bad);
        expect_login(broker.addr, "h", v, "denied", "pw", bad);
        assert_eq!(
            questions(&seen, "denied"),
            if v.is_v5() { 2 } else { 1 },
            "denials cached"
        );
        expect_login(broker.addr, "h", v, "forbidden", "pw", bad);
        // "ignore": the hook is the last method, so the client is refused.
        expect_login(broker.addr, "h", v, "ignored", "pw", bad);
        // Failures refuse as unavailable (0x88; return code 3) and are not cached.
        let broken = questions(&seen, "broken");
        expect_login(broker.addr, "h", v, "broken", "pw", unavailable);
        expect_login(broker.addr, "h", v, "broken", "pw", unavailable);
        assert_eq!(
            questions(&seen, "broken"),
            broken + 2,
            "failures are not cached"
        );
        expect_login(broker.addr, "h", v, "garbage", "pw", unavailable);
        let start = Instant::now();
        expect_login(broker.addr, "h", v, "slow", "pw", unavailable);
        assert!(
            start.elapsed() < SLOW_ANSWER,
            "the timeout did not end the wait: {:?}",
            start.elapsed()
        );
    }
    // After the TTL the hook is asked again.
    let before = questions(&seen, "allowed");
    std::thread::sleep(Duration::from_millis(3100));
    expect_login(broker.addr, "h1", V5, "allowed", "pw1", ok);
    assert_eq!(questions(&seen, "allowed"), before + 1);
    // Every refusal is counted: per version 1 (alice) + 2 denied + forbidden + ignored
    // + 2 broken + garbage + slow = 9.
    wait_for_metric(&broker, "auth_failures_total", 18.0);
}

#[test]
fn http_hook_that_does_not_listen() {
    // A socket bound but not listening holds a port where connections are refused.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    let broker = Broker::with_config(
        1,
        &format!("[auth.http]\nurl = \"http://127.0.0.1:{port}/mqtt/auth\"\ntimeout_ms = 1000\n"),
    );
    for v in VERSIONS {
        expect_login(
            broker.addr,
            "h",
            v,
            "someone",
            "pw",
            ReasonCode::ServerUnavailable,
        );
    }
    // Anonymous clients never reach the hook.
    let (c, ack) = login(broker.addr, "anon", V5, None, None);
    assert_eq!(ack.reason_code, ReasonCode::Success);
    c.disconnect();
}

/// Waits until the metric named `*name` reaches `value` (counters travel to core 0 on a tick).
fn wait_for_metric(broker: &Broker, name: &str, value: f64) {
    let admin = broker.admin.expect("an admin listener");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = None;
    while Instant::now() < deadline {
        let mut s = TcpStream::connect(admin).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        last = out.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (key, v) = l.split_once(' ')?;
            key.ends_with(name).then(|| v.trim().parse::<f64>().ok())?
        });
        if last == Some(value) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{name} is {last:?}, expected {value}");
}

/// Runs the binary, killing it if it has not exited within 10 s.
fn run_bounded(args: &[&str], config: &Path) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(args)
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.success(), stderr)
}

#[test]
fn bad_jwt_and_hook_settings_stop_check_config_and_start_up() {
    let dir = Dir::new("bad");
    let missing = dir.0.join("missing.pem");
    let empty = dir.file("empty-secret", "\n");
    let cases = [
        (
            format!(
                "[auth.jwt]\nrsa_public_key_file = {}\n",
                toml_path(&missing)
            ),
            "auth.jwt.rsa_public_key_file: ",
        ),
        (
            format!(
                "[auth.jwt]\nrsa_public_key_file = {}\n",
                toml_path(&fixture("jwt-ec-public.pem"))
            ),
            "not an RSA public key",
        ),
        (
            format!(
                "[auth.jwt]\nrsa_public_key_file = {}\n",
                toml_path(&fixture("jwt-rsa-private.pem"))
            ),
            "PRIVATE KEY",
        ),
        (
            format!("[auth.jwt]\nhmac_secret_file = {}\n", toml_path(&empty)),
            "auth.jwt.hmac_secret_file: ",
        ),
        (
            "[auth.jwt]\nhmac_secret = \"s\"\nalgorithms = [\"ES256\"]\n".to_owned(),
            "unknown algorithm \"ES256\"",
        ),
        (
            "[auth.jwt]\nhmac_secret = \"s\"\nalgorithms = [\"none\"]\n".to_owned(),
            "auth.jwt.algorithms",
        ),
        (
            "[auth.http]\nurl = \"http://auth.example/\"\n".to_owned(),
            "auth.http.url",
        ),
        (
            "[auth.http]\nurl = \"https://127.0.0.1/\"\n".to_owned(),
            "https is not supported",
        ),
    ];
    for (config, needle) in cases {
        let path = dir.file("ringmq.toml", &config);
        for args in [&["check-config"][..], &[][..]] {
            let (ok, stderr) = run_bounded(args, &path);
            assert!(!ok, "{args:?} {config}: {stderr}");
            assert!(stderr.contains(needle), "{args:?} {config}: {stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
    // A good configuration passes check-config.
    let good = dir.file(
        "good.toml",
        &format!(
            "[auth.jwt]\nrsa_public_key_file = {}\n[auth.http]\nurl = \"http://127.0.0.1:1/a\"\n",
            toml_path(&fixture("jwt-rsa-public.pem"))
        ),
    );
    let (ok, stderr) = run_bounded(&["check-config"], &good);
    assert!(ok, "{stderr}");
}
