//! The admin HTTP listener against the real binary: `GET /metrics` parsed strictly as the
//! Prometheus text format, every JSON endpoint, kicking a client on either core, and hostile
//! HTTP input (400, 413, 408, 404, 405), after which the broker still answers.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{id_on_core, Broker, Client};
use ringmq_codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use serde_json::Value;

/// One HTTP exchange over a plain socket: the status and the body.
fn http(addr: SocketAddr, method: &str, target: &str) -> (u16, String) {
    raw(
        addr,
        format!("{method} {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    assert_eq!(length, body.len(), "Content-Length matches the body");
    (status, body.to_owned())
}

fn json(addr: SocketAddr, method: &str, target: &str) -> (u16, Value) {
    let (status, body) = http(addr, method, target);
    (status, serde_json::from_str(&body).expect("JSON body"))
}

fn admin(b: &Broker) -> SocketAddr {
    b.admin.expect("admin listener")
}

/// A strict parser of the Prometheus text exposition format (0.0.4): every sample belongs to
/// the family its `# TYPE` line declared just before, names and labels are well formed, values
/// parse. Returns `name{labels}` → value.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut samples = HashMap::new();
    let mut family: Option<String> = None;
    let mut typed = std::collections::HashSet::new();
    assert!(text.ends_with('\n'), "ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("metric name");
            assert!(valid_name(name), "{line}");
            match kind {
                "HELP" => assert!(parts.next().is_some_and(|h| !h.is_empty()), "{line}"),
                "TYPE" => {
                    let t = parts.next().unwrap();
                    assert!(
                        ["counter", "gauge", "untyped", "summary", "histogram"].contains(&t),
                        "{line}"
                    );
                    assert!(typed.insert(name.to_owned()), "TYPE given twice: {line}");
                    family = Some(name.to_owned());
                }
                _ => panic!("unknown comment {line}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "empty line");
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "{line}");
        assert_eq!(
            Some(name),
            family.as_deref(),
            "sample outside its family: {line}"
        );
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .expect("labels in braces");
            for pair in inner.split(',') {
                let (k, v) = pair.split_once('=').expect("label=value");
                assert!(valid_name(k), "{line}");
                assert!(
                    v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                    "{line}"
                );
            }
        }
        let v: f64 = value.parse().expect("a number");
        assert!(
            samples.insert(series.to_owned(), v).is_none(),
            "duplicate {series}"
        );
    }
    samples
}

fn metrics(b: &Broker) -> HashMap<String, f64> {
    let (status, body) = http(admin(b), "GET", "/metrics");
    assert_eq!(status, 200);
    parse_prometheus(&body)
}

/// Polls until `done` holds (reports reach core 0 once per tick).
fn until<T>(what: &str, mut f: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = f();
        if done(&v) || Instant::now() > deadline {
            assert!(done(&v), "{what}");
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_parse_and_move_after_publishing() {
    let b = Broker::cores(2);
    let m = metrics(&b);
    assert_eq!(m["ringmq_cores"], 2.0);
    assert!(m.contains_key("ringmq_core_messages_received_total{core=\"1\"}"));
    let before = m["ringmq_messages_received_total"];
    let mut subs = Vec::new();
    for core in 0..2u16 {
        let id = id_on_core("metrics-sub", core, 2);
        let mut c = Client::connect(b.addr, &id, ProtocolVersion::V5);
        c.subscribe_ok("m/#", QoS::AtMostOnce);
        subs.push(c);
    }
    b.settle();
    let mut p = Client::connect(b.addr, "metrics-pub", ProtocolVersion::V3_1_1);
    for i in 0..5 {
        p.publish(&format!("m/{i}"), b"x", QoS::AtMostOnce, false);
    }
    p.publish("m/retained", b"keep", QoS::AtMostOnce, true);
    for c in &mut subs {
        for _ in 0..6 {
            c.expect_publish();
        }
    }
    let m = until(
        "counters moved",
        || metrics(&b),
        |m| {
            m["ringmq_messages_received_total"] >= before + 6.0
                && m["ringmq_messages_sent_total"] >= 12.0
                && m["ringmq_retained_messages"] >= 1.0
        },
    );
    let per_core: f64 = (0..2)
        .map(|c| m[&format!("ringmq_core_messages_received_total{{core=\"{c}\"}}")])
        .sum();
    assert_eq!(per_core, m["ringmq_messages_received_total"]);
    assert!(m["ringmq_clients_connected"] >= 3.0);
    assert!(m["ringmq_subscriptions"] >= 2.0);
    assert!(m["ringmq_bytes_received_total"] > 0.0);
    assert!(m["process_resident_memory_bytes"] > 0.0);
}

#[test]
fn log_positions_move_with_a_persistent_session() {
    let b = Broker::cores(2);
    let before = metrics(&b)["ringmq_log_appended_bytes"];
    let (mut c, _) = Client::connect_persistent(b.addr, "durable-1", ProtocolVersion::V5, 600);
    c.subscribe_ok("d/#", QoS::AtLeastOnce);
    until(
        "the log grew and became durable",
        || metrics(&b),
        |m| {
            m["ringmq_log_appended_bytes"] > before
                && m["ringmq_log_durable_bytes"] >= m["ringmq_log_appended_bytes"]
        },
    );
    let (_, v) = json(admin(&b), "GET", "/api/v1/clients/durable-1");
    assert_eq!(v["persistent"], true);
    assert_eq!(v["session_expiry_secs"], 600);
}

#[test]
fn connections_over_the_bound_get_503() {
    let b = Broker::start_with_config(
        &["--cores", "1"],
        Some("[admin]\nmax_connections = 1\nrequest_timeout_ms = 1500\n"),
    );
    let a = admin(&b);
    // An idle connection holds the only slot until its request times out.
    let idle = std::thread::spawn(move || raw_slow(a, b""));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http(a, "GET", "/metrics").0, 503);
    assert_eq!(idle.join().unwrap(), 408);
    // The slot is free again once the admin task has closed the timed-out connection (on a
    // loaded machine, a moment after the client saw the 408).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let status = http(a, "GET", "/metrics").0;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stats_and_listeners() {
    let b = Broker::cores(2);
    let _c = Client::connect(b.addr, "stats-1", ProtocolVersion::V5);
    let v = until(
        "client counted",
        || json(admin(&b), "GET", "/api/v1/stats").1,
        |v| v["total"]["clients_connected"] == 1,
    );
    assert_eq!(v["cores"], 2);
    assert_eq!(v["per_core"].as_array().unwrap().len(), 2);
    let (status, v) = json(admin(&b), "GET", "/api/v1/listeners");
    assert_eq!(status, 200);
    assert_eq!(v[0]["addr"], b.addr.to_string());
    assert_eq!(v[0]["transport"], "tcp");
}

#[test]
fn clients_lookup_list_and_subscriptions_on_both_cores() {
    let b = Broker::cores(2);
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for core in 0..2u16 {
        for n in 0..3 {
            let id = id_on_core(&format!("list-{n}"), core, 2);
            let mut c = Client::connect(b.addr, &id, ProtocolVersion::V5);
            c.subscribe_ok(&format!("t/{id}/+"), QoS::AtLeastOnce);
            ids.push(id);
            clients.push(c);
        }
    }
    ids.sort();
    for (core, id) in [0u16, 1].iter().map(|&c| (c, id_on_core("list-0", c, 2))) {
        let (status, v) = json(admin(&b), "GET", &format!("/api/v1/clients/{id}"));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["client_id"], id.as_str());
        assert_eq!(v["core"], core);
        assert_eq!(v["connected"], true);
        assert_eq!(v["protocol"], "5.0");
        assert_eq!(v["queued"], 0);
        assert_eq!(v["inflight"], 0);
        assert_eq!(v["subscriptions"][0]["filter"], format!("t/{id}/+"));
        assert_eq!(v["subscriptions"][0]["qos"], 1);
        let (status, v) = json(
            admin(&b),
            "GET",
            &format!("/api/v1/subscriptions?client_id={id}"),
        );
        assert_eq!(status, 200);
        assert_eq!(v["subscriptions"].as_array().unwrap().len(), 1);
    }
    let (status, _) = json(admin(&b), "GET", "/api/v1/clients/nobody");
    assert_eq!(status, 404);
    let (status, _) = json(admin(&b), "GET", "/api/v1/subscriptions?client_id=nobody");
    assert_eq!(status, 404);
    let (status, _) = json(admin(&b), "GET", "/api/v1/subscriptions");
    assert_eq!(status, 400);

    let (status, v) = json(admin(&b), "GET", "/api/v1/clients");
    assert_eq!(status, 200);
    assert_eq!(v["total"], 6);
    let listed: Vec<&str> = v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids);
    let (_, v) = json(admin(&b), "GET", "/api/v1/clients?limit=2&offset=3");
    let page: Vec<&str> = v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(page, ids[3..5]);
    let (status, _) = json(admin(&b), "GET", "/api/v1/clients?limit=x");
    assert_eq!(status, 400);
}

#[test]
fn kick_closes_with_administrative_action_on_either_core() {
    let b = Broker::cores(2);
    for core in 0..2u16 {
        let id = id_on_core("kick-v5", core, 2);
        let mut c = Client::connect(b.addr, &id, ProtocolVersion::V5);
        let (status, v) = json(admin(&b), "DELETE", &format!("/api/v1/clients/{id}"));
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["disconnected"], true);
        c.expect_close(ReasonCode::AdministrativeAction);
        let (_, v) = json(admin(&b), "GET", &format!("/api/v1/clients/{id}"));
        // A clean session ends with its connection.
        assert!(
            v.get("connected").is_none() || v["connected"] == false,
            "{v}"
        );
    }
    // 3.1.1: closed without a DISCONNECT.
    let id = id_on_core("kick-v311", 1, 2);
    let mut c = Client::connect(b.addr, &id, ProtocolVersion::V3_1_1);
    let (status, _) = json(admin(&b), "POST", &format!("/api/v1/clients/{id}/kick"));
    assert_eq!(status, 200);
    c.expect_close(ReasonCode::AdministrativeAction);
    let (status, _) = json(admin(&b), "DELETE", "/api/v1/clients/nobody");
    assert_eq!(status, 404);
}

#[test]
fn kick_publishes_the_will() {
    let b = Broker::cores(2);
    let mut watcher = Client::connect(b.addr, "will-watcher", ProtocolVersion::V5);
    watcher.subscribe_ok("wills/#", QoS::AtMostOnce);
    b.settle();
    let id = id_on_core("kick-will", 1, 2);
    let (mut c, _) = Client::connect_ok(b.addr, &id, ProtocolVersion::V5, |c| {
        c.will = Some(common::will("wills/k", b"gone", QoS::AtMostOnce, false));
    });
    let (status, _) = json(admin(&b), "DELETE", &format!("/api/v1/clients/{id}"));
    assert_eq!(status, 200);
    c.expect_close(ReasonCode::AdministrativeAction);
    let p = watcher.expect_publish();
    assert_eq!(&p.payload[..], b"gone");
}

#[test]
fn retained_by_topic_and_by_filter() {
    let b = Broker::cores(2);
    let mut p = Client::connect(b.addr, "ret-pub", ProtocolVersion::V5);
    for i in 0..5 {
        p.publish_acked(&format!("r/{i}"), b"v", QoS::AtLeastOnce, true, i + 1);
    }
    p.publish_acked("r/bin", &[0xff, 0x00], QoS::AtLeastOnce, true, 9);
    let (status, v) = json(admin(&b), "GET", "/api/v1/retained?topic=r%2F3");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["topic"], "r/3");
    assert_eq!(v["payload"], "v");
    assert_eq!(v["qos"], 1);
    let (_, v) = json(admin(&b), "GET", "/api/v1/retained?topic=r/bin");
    assert_eq!(v["payload_base64"], "/wA=");
    let (status, _) = json(admin(&b), "GET", "/api/v1/retained?topic=r/none");
    assert_eq!(status, 404);
    let (status, _) = json(admin(&b), "GET", "/api/v1/retained?topic=r/%2B");
    assert_eq!(status, 400);
    let (status, v) = json(admin(&b), "GET", "/api/v1/retained?filter=r/%2B&limit=3");
    assert_eq!(status, 200);
    assert_eq!(v["messages"].as_array().unwrap().len(), 3);
    assert_eq!(v["truncated"], true);
    let (_, v) = json(admin(&b), "GET", "/api/v1/retained?filter=r/%23");
    assert_eq!(v["messages"].as_array().unwrap().len(), 6);
    let (status, _) = json(admin(&b), "GET", "/api/v1/retained?filter=r/%23/x");
    assert_eq!(status, 400);
}

#[test]
fn hostile_http_is_refused_and_the_broker_keeps_serving() {
    let b = Broker::start_with_config(
        &["--cores", "2"],
        Some("[admin]\nmax_request_bytes = 1024\nrequest_timeout_ms = 300\n"),
    );
    let a = admin(&b);
    assert_eq!(raw(a, b"\x16\x03\x01garbage\r\n\r\n").0, 400);
    assert_eq!(
        raw(a, b"GET /metrics HTTP/1.1\r\nContent-Length: x\r\n\r\n").0,
        400
    );
    let big = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(4000));
    assert_eq!(raw(a, big.as_bytes()).0, 413);
    assert_eq!(
        raw(
            a,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"
        )
        .0,
        413
    );
    // Half a request, then silence: 408.
    assert_eq!(raw_slow(a, b"GET /metr"), 408);
    assert_eq!(http(a, "GET", "/nothing").0, 404);
    assert_eq!(http(a, "PUT", "/metrics").0, 405);
    assert_eq!(http(a, "GET", "/api/v1/clients/%zz").0, 400);
    // Still serving, MQTT too.
    assert_eq!(http(a, "GET", "/metrics").0, 200);
    let mut c = Client::connect(b.addr, "after-hostile", ProtocolVersion::V5);
    c.send(&Packet::PingReq);
    assert!(matches!(c.recv(), Some(Packet::PingResp)));
}

fn raw_slow(addr: SocketAddr, partial: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(partial).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8(out).unwrap();
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap()
}

#[test]
fn admin_config_is_validated_and_the_flag_enables_it() {
    let b = Broker::start_with_config(&["--admin-listen", "127.0.0.1:0"], None);
    assert!(b.admin.is_some());
    // The flag enables it; the file alone can turn it off.
    let dir = std::env::temp_dir().join(format!("ringmq-admin-off-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, "[admin]\nenabled = false\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&cfg, "[admin]\nmax_request_bytes = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.max_request_bytes"));
    let _ = std::fs::remove_dir_all(&dir);
}
