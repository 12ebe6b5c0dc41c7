//! Overload protection against the real binary: over the queued-messages mark a core refuses
//! new clients (CONNACK 0x89 in 5.0, return code 3 in 3.1.1) while the owner of the queue
//! resumes and drains it; over the memory mark every new client is refused; refusals are
//! counted in `/metrics` and `/api/v1/stats`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{id_on_core, Broker, Client, VERSIONS};
use ringmq_codec::{ProtocolVersion, QoS, ReasonCode};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// The body of `GET target` on the admin listener.
fn get(addr: SocketAddr, target: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// A broker-wide figure of `/metrics` (`ringmq_NAME`).
fn metric(broker: &Broker, name: &str) -> u64 {
    let text = get(broker.admin.unwrap(), "/metrics");
    let prefix = format!("ringmq_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// Waits (bounded) until `metric(name)` satisfies `ok`; the figures of cores other than 0
/// are at most one tick old.
fn wait_metric(broker: &Broker, name: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = metric(broker, name);
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The reason code 0x89 Server busy takes in `v` (3.1.1: return code 3).
fn busy(v: ProtocolVersion) -> ReasonCode {
    if v.is_v5() {
        ReasonCode::ServerBusy
    } else {
        ReasonCode::ServerUnavailable
    }
}

/// Connects as a new client and asserts the refusal and the close.
fn assert_refused(broker: &Broker, id: &str, v: ProtocolVersion, clean_start: bool) {
    let (mut c, ack) = Client::connect_edit(broker.addr, id, v, |c| c.clean_start = clean_start);
    assert_eq!(ack.reason_code, busy(v), "{id} {v:?}");
    assert!(!ack.session_present);
    assert!(c.closed_within(common::TIMEOUT).0, "{id}: not closed");
}

#[test]
fn a_core_over_its_queued_messages_mark_refuses_new_clients_until_the_owner_drains() {
    let broker = Broker::with_config(2, "[limits]\noverload_queued_messages = 5\n");
    // An offline persistent session on core 1 whose queue passes the mark.
    let keeper = id_on_core("ov-keeper", 1, 2);
    let (mut k, _) = Client::connect_persistent(broker.addr, &keeper, V5, 300);
    k.subscribe_ok("ov/t", QoS::AtLeastOnce);
    k.disconnect();
    let mut publisher = Client::connect(broker.addr, &id_on_core("ov-pub", 0, 2), V5);
    broker.settle();
    for i in 0..10u16 {
        publisher.publish_acked("ov/t", &i.to_be_bytes(), QoS::AtLeastOnce, false, i + 1);
    }
    wait_metric(&broker, "messages_queued", |n| n == 10);
    // Core 1 looks at its marks once per tick: wait until it says it is overloaded.
    wait_metric(&broker, "overloaded", |n| n == 1);
    // New clients homed on core 1 are refused, in both versions, with either Clean Start.
    for v in VERSIONS {
        assert_refused(
            &broker,
            &id_on_core(&format!("ov-new-{v:?}"), 1, 2),
            v,
            true,
        );
        assert_refused(
            &broker,
            &id_on_core(&format!("ov-old-{v:?}"), 1, 2),
            v,
            false,
        );
    }
    // Core 0 is not over its mark: its new clients are let in; the open connection is served.
    Client::connect(broker.addr, &id_on_core("ov-core0", 0, 2), V5).disconnect();
    publisher.publish_acked("ov/t", b"10", QoS::AtLeastOnce, false, 11);
    let refused = wait_metric(&broker, "connections_refused_overload_total", |n| n >= 4);
    assert_eq!(refused, 4);
    assert_eq!(wait_metric(&broker, "overloaded", |n| n == 1), 1);
    let stats: serde_json::Value =
        serde_json::from_str(&get(broker.admin.unwrap(), "/api/v1/stats")).unwrap();
    assert_eq!(stats["total"]["connections_refused_overload"], 4, "{stats}");
    assert_eq!(stats["per_core"][1]["figures"]["overloaded"], 1, "{stats}");
    // The owner resumes (a resume is always let in) and drains its queue.
    let (mut k, present) = Client::connect_persistent(broker.addr, &keeper, V5, 300);
    assert!(present);
    for i in 0..11u16 {
        let p = k.expect_publish_acked();
        let expected = if i < 10 {
            i.to_be_bytes().to_vec()
        } else {
            b"10".to_vec()
        };
        assert_eq!(p.payload.to_vec(), expected);
    }
    // Drained: core 1 takes new clients again.
    wait_metric(&broker, "messages_queued", |n| n == 0);
    for v in VERSIONS {
        Client::connect(
            broker.addr,
            &id_on_core(&format!("ov-after-{v:?}"), 1, 2),
            v,
        )
        .disconnect();
    }
    assert_eq!(wait_metric(&broker, "overloaded", |n| n == 0), 0);
    assert_eq!(metric(&broker, "connections_refused_overload_total"), 4);
}

#[test]
fn over_the_memory_mark_every_new_client_is_refused() {
    // 1 MiB, the smallest mark accepted: far below any broker's resident set.
    let broker = Broker::with_config(2, "[limits]\noverload_memory_bytes = 1048576\n");
    for v in VERSIONS {
        for core in [0, 1] {
            let id = id_on_core(&format!("mem-{v:?}"), core, 2);
            // Clean Start 1 is refused by whichever core accepted the socket; Clean Start 0
            // travels to the home core, which finds no session to resume.
            assert_refused(&broker, &id, v, true);
            assert_refused(&broker, &id, v, false);
        }
    }
    let refused = wait_metric(&broker, "connections_refused_overload_total", |n| n >= 8);
    assert_eq!(refused, 8);
    assert_eq!(wait_metric(&broker, "overloaded", |n| n == 2), 2);
    // The mark off (the default): the same clients are let in.
    let open = Broker::cores(2);
    for v in VERSIONS {
        let id = id_on_core(&format!("mem-{v:?}"), 1, 2);
        Client::connect(open.addr, &id, v).disconnect();
    }
    assert_eq!(metric(&open, "connections_refused_overload_total"), 0);
}

#[test]
fn check_config_shows_the_overload_options() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["check-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for line in [
        "overload_memory_bytes = 0",
        "overload_queued_messages = 0",
        "overload_resume_percent = 90",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    // A mark below 1 MiB is refused with the key's name.
    let dir = std::env::temp_dir().join(format!("ringmq-overload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[limits]\noverload_memory_bytes = 1000\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("limits.overload_memory_bytes"), "{err}");
}
