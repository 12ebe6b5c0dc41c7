//! Authentication and ACLs over real sockets: a password file written by `mosquitto_passwd`
//! (both hash formats), wrong passwords and anonymous clients refused in 3.1.1 and 5.0, the
//! failed-login limit per address and its window, ACL grants and denials for SUBSCRIBE (per
//! filter), PUBLISH (PUBACK 0x87 in 5.0; acknowledged but not routed in 3.1.1), the will and
//! delivery, `check-config` and start-up errors naming file and line, `ringmq passwd`, and
//! SIGHUP reloading the files while existing connections stay up.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{publish_packet, will, Broker, Client, VERSIONS};
use ringmq_codec::{
    ConnAck, Packet, ProtocolVersion, QoS, ReasonCode, SubscriptionOptions, Utf8Bytes,
};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V3_1_1;

/// Written by `mosquitto_passwd`: alice / alice-secret ($7$), carol / carol-secret ($6$), ...
const PASSWD: &str = include_str!("../src/auth/testdata/mosquitto.passwd");

/// A temporary directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "ringmq-auth-{name}-{}-{:?}",
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

fn login(
    addr: std::net::SocketAddr,
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

fn login_ok(
    addr: std::net::SocketAddr,
    id: &str,
    v: ProtocolVersion,
    user: Option<&str>,
    password: Option<&str>,
) -> Client {
    let (c, ack) = login(addr, id, v, user, password);
    assert_eq!(ack.reason_code, ReasonCode::Success, "{id} {user:?} {v:?}");
    c
}

fn refused(v: ProtocolVersion) -> ReasonCode {
    // 0x80 in 3.1.1 reads back as Unspecified error.
    if v.is_v5() {
        ReasonCode::NotAuthorized
    } else {
        ReasonCode::UnspecifiedError
    }
}

#[test]
fn passwords_from_mosquitto_passwd_are_checked() {
    let dir = Dir::new("pw");
    let pw = dir.file("passwd", PASSWD);
    let broker = Broker::with_config(
        2,
        &format!(
            "allow_anonymous = false\n[auth]\npassword_file = {}\nfailed_login_limit = 0\n",
            toml_path(&pw)
        ),
    );
    for v in VERSIONS {
        login_ok(broker.addr, "a", v, Some("alice"), Some("alice-secret")).disconnect();
        login_ok(broker.addr, "c", v, Some("carol"), Some("carol-secret")).disconnect();
        login_ok(
            broker.addr,
            "b",
            v,
            Some("bob smith"),
            Some("p@ss:w0rd with spaces"),
        )
        .disconnect();
        for (user, password) in [
            (Some("alice"), Some("wrong")),
            (Some("alice"), None),
            (Some("carol"), Some("alice-secret")),
            (Some("mallory"), Some("alice-secret")),
        ] {
            let (mut c, ack) = login(broker.addr, "x", v, user, password);
            // 0x86 Bad User Name or Password; 3.1.1 return code 4.
            assert_eq!(
                ack.reason_code,
                ReasonCode::BadUserNameOrPassword,
                "{v:?} {user:?}"
            );
            assert!(c.closed_within(common::TIMEOUT).0);
        }
        let (mut c, ack) = login(broker.addr, "anon", v, None, None);
        let expected = if v.is_v5() {
            ReasonCode::NotAuthorized
        } else {
            ReasonCode::BadUserNameOrPassword
        };
        assert_eq!(ack.reason_code, expected, "{v:?}");
        assert!(c.closed_within(common::TIMEOUT).0);
    }
    // 3.1.1: a password without a user name is a protocol error [MQTT-3.1.2-22]: closed, no
    // CONNACK.
    let mut c = Client::open(broker.addr, V311);
    c.send_raw(&[
        0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 60, 0, 1, b'x', 0, 2, b'p', b'w',
    ]);
    let (closed, packets) = c.closed_within(common::TIMEOUT);
    assert!(closed && packets.is_empty(), "{packets:?}");
}

#[test]
fn failed_logins_are_rate_limited_per_address_and_the_window_passes() {
    let dir = Dir::new("limit");
    let pw = dir.file("passwd", PASSWD);
    // One core: the limit counts per core.
    let broker = Broker::with_config(
        1,
        &format!(
            "[auth]\npassword_file = {}\nfailed_login_limit = 3\nfailed_login_window_secs = 2\n\
             [sys]\ninterval_secs = 1\n",
            toml_path(&pw)
        ),
    );
    let start = Instant::now();
    for i in 0..3 {
        let v = VERSIONS[i % 2];
        let (_, ack) = login(broker.addr, "x", v, Some("alice"), Some("nope"));
        assert_eq!(ack.reason_code, ReasonCode::BadUserNameOrPassword, "{i}");
    }
    // Banned now, even with the right password: 0x8A in 5.0, return code 5 in 3.1.1.
    let (_, ack) = login(broker.addr, "x", V5, Some("alice"), Some("alice-secret"));
    assert_eq!(ack.reason_code, ReasonCode::Banned);
    let (_, ack) = login(broker.addr, "x", V311, Some("alice"), Some("alice-secret"));
    assert_eq!(ack.reason_code, ReasonCode::NotAuthorized); // return code 5
    assert!(start.elapsed() < Duration::from_secs(2), "too slow to test");
    // After the window: in again.
    std::thread::sleep(
        Duration::from_secs(2).saturating_sub(start.elapsed()) + Duration::from_millis(200),
    );
    let mut c = login_ok(broker.addr, "ok", V5, Some("alice"), Some("alice-secret"));
    // Counted in $SYS: 3 bad passwords and 2 refusals.
    c.subscribe_ok("$SYS/broker/clients/auth_failed", QoS::AtMostOnce);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(Packet::Publish(p)) = c.recv_within(Duration::from_millis(500)) {
            if &p.payload[..] == b"5" {
                break;
            }
        }
        assert!(Instant::now() < deadline, "auth_failed never reached 5");
    }
}

const ACL: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret
topic read shared/#

user carol
topic read #
topic write alice/inbox

pattern readwrite devices/%c/#
pattern read users/%u/#
# for Broker::settle
pattern readwrite ringmq-probe/#
";

fn acl_broker(dir: &Dir, acl: &str) -> (Broker, PathBuf) {
    let pw = dir.file("passwd", PASSWD);
    let acl = dir.file("acl", acl);
    let broker = Broker::with_config(
        2,
        &format!(
            "[auth]\npassword_file = {}\nacl_file = {}\nfailed_login_limit = 0\n",
            toml_path(&pw),
            toml_path(&acl)
        ),
    );
    (broker, acl)
}

#[test]
fn acl_grants_and_refuses_subscriptions_per_filter() {
    let dir = Dir::new("acl-sub");
    let (broker, _) = acl_broker(&dir, ACL);
    for v in VERSIONS {
        let id = format!("dev-{v:?}");
        let mut alice = login_ok(broker.addr, &id, v, Some("alice"), Some("alice-secret"));
        let q1 = SubscriptionOptions::qos(QoS::AtLeastOnce);
        let devices = format!("devices/{id}/#");
        let other_device = "devices/someone-else/#".to_owned();
        let a = alice.subscribe_many(
            3,
            &[
                ("alice/x/+", q1),
                ("alice/#", q1), // alice/secret is denied
                ("shared/+/status", q1),
                ("public/#", q1), // the anonymous block is not alice's
                (&devices, q1),
                (&other_device, q1),
                ("users/alice/inbox", q1),
                ("#", q1),
                ("$share/g/alice/y/#", q1),
                ("$share/g/other/#", q1),
            ],
            None,
        );
        let ok = ReasonCode::GrantedQoS1;
        let no = refused(v);
        assert_eq!(
            a.return_codes,
            vec![ok, no, ok, no, ok, no, ok, no, ok, no],
            "{v:?}"
        );
        // Anonymous clients get the anonymous block and the patterns without %u.
        let mut anon = login_ok(broker.addr, &format!("anon-{v:?}"), v, None, None);
        let a = anon.subscribe_many(
            4,
            &[
                ("public/#", q1),
                ("public/+/x", q1),
                ("alice/#", q1),
                ("users/+/x", q1),
            ],
            None,
        );
        assert_eq!(a.return_codes, vec![ok, ok, no, no], "{v:?}");
    }
}

#[test]
fn acl_controls_publish_will_and_delivery() {
    let dir = Dir::new("acl-pub");
    let (broker, _) = acl_broker(&dir, ACL);
    for v in VERSIONS {
        // carol reads everything but $ topics.
        let mut carol = login_ok(
            broker.addr,
            &format!("carol-{v:?}"),
            V5,
            Some("carol"),
            Some("carol-secret"),
        );
        for f in ["alice/#", "other/#", "devices/#"] {
            carol.subscribe_ok(f, QoS::AtLeastOnce);
        }
        let mut alice = login_ok(
            broker.addr,
            &format!("alice-{v:?}"),
            v,
            Some("alice"),
            Some("alice-secret"),
        );
        alice.subscribe_ok("alice/x/+", QoS::AtLeastOnce);
        broker.settle();

        // Granted: routed and acknowledged with Success.
        alice.publish_acked("alice/x/1", b"ok", QoS::AtLeastOnce, false, 1);
        let p = alice.expect_publish_acked();
        assert_eq!(&*p.topic, "alice/x/1");
        assert_eq!(&*carol.expect_publish_acked().topic, "alice/x/1");

        // Refused QoS 1 and 2: 0x87 in 5.0; in 3.1.1 acknowledged normally; never routed.
        for (qos, id) in [(QoS::AtLeastOnce, 2), (QoS::ExactlyOnce, 3)] {
            alice.send(&Packet::Publish(publish_packet(
                "other/t", b"no", qos, false, id,
            )));
            let ack = match alice.expect() {
                Packet::PubAck(a) if qos == QoS::AtLeastOnce => a,
                Packet::PubRec(a) if qos == QoS::ExactlyOnce => a,
                other => panic!("{v:?}: {other:?}"),
            };
            assert_eq!(ack.packet_id, id);
            if v.is_v5() {
                assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
            } else {
                assert_eq!(ack.reason_code, ReasonCode::Success);
                alice.send(&Packet::PubRel(ringmq_codec::Ack::new(id)));
                assert!(matches!(alice.expect(), Packet::PubComp(_)));
            }
        }
        // Refused QoS 0: dropped silently; a denied topic under a granted one too.
        alice.publish("other/t", b"no", QoS::AtMostOnce, false);
        alice.publish("alice/secret", b"no", QoS::AtMostOnce, false);
        // A 5.0 QoS 2 id refused with PUBREC 0x87 is free again right away: the same id on a
        // granted topic is routed, not taken for a duplicate.
        alice.send(&Packet::Publish(publish_packet(
            "alice/x/2",
            b"again",
            QoS::ExactlyOnce,
            false,
            3,
        )));
        match alice.expect() {
            Packet::PubRec(a) => assert_eq!(a.reason_code, ReasonCode::Success),
            other => panic!("{other:?}"),
        }
        assert_eq!(&*alice.expect_publish_acked().topic, "alice/x/2");
        alice.send(&Packet::PubRel(ringmq_codec::Ack::new(3)));
        assert!(matches!(alice.expect(), Packet::PubComp(_)));
        let p = carol.expect_publish_acked();
        assert_eq!(
            &*p.topic, "alice/x/2",
            "{v:?}: refused messages were routed"
        );
        carol.expect_nothing(Duration::from_millis(300));

        // A pattern grant: devices/%c/#.
        let dev = format!("alice-{v:?}");
        alice.publish_acked(
            &format!("devices/{dev}/t"),
            b"d",
            QoS::AtLeastOnce,
            false,
            4,
        );
        assert_eq!(
            &*carol.expect_publish_acked().topic,
            format!("devices/{dev}/t")
        );

        // The will: dropped when its topic is not writable, published when it is.
        for (topic, published) in [("other/will", false), ("alice/will", true)] {
            let (c, ack) = Client::connect_edit(broker.addr, &format!("w-{v:?}"), v, |c| {
                c.username = Some(Utf8Bytes::from_static("alice"));
                c.password = Some(bytes::Bytes::from_static(b"alice-secret"));
                c.will = Some(will(topic, b"gone", QoS::AtLeastOnce, false));
            });
            assert_eq!(ack.reason_code, ReasonCode::Success);
            drop(c); // closed without DISCONNECT: the will is due
            if published {
                assert_eq!(&*carol.expect_publish_acked().topic, topic);
            } else {
                carol.expect_nothing(Duration::from_millis(500));
            }
        }
        alice.disconnect();
        carol.disconnect();
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_reloads_files_and_keeps_connections() {
    let dir = Dir::new("reload");
    let (broker, acl) = acl_broker(
        &dir,
        "topic readwrite r/#\npattern readwrite ringmq-probe/#\n",
    );
    let pw = dir.0.join("passwd");
    let q0 = SubscriptionOptions::qos(QoS::AtMostOnce);
    let mut old = login_ok(broker.addr, "old", V5, None, None);
    assert_eq!(
        old.subscribe_many(1, &[("r/#", q0)], None).return_codes,
        vec![ReasonCode::Success]
    );
    let mut w = login_ok(broker.addr, "w", V5, None, None);
    broker.settle();
    w.publish_acked("r/1", b"before", QoS::AtLeastOnce, false, 1);
    assert_eq!(&*old.expect_publish().topic, "r/1");

    // New rules: s/# instead of r/#, and a new user added with `ringmq passwd`.
    std::fs::write(
        &acl,
        "topic readwrite s/#\ntopic write r/#\npattern readwrite ringmq-probe/#\n",
    )
    .unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["passwd", "-b"])
        .arg(&pw)
        .args(["zoe", "zoe-pw"])
        .status()
        .unwrap();
    assert!(status.success());
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(broker.pid() as i32, libc::SIGHUP) };
    wait_until("the new rules", || {
        let mut c = login_ok(broker.addr, "probe", V5, None, None);
        c.subscribe_many(2, &[("s/#", q0)], None).return_codes == [ReasonCode::Success]
    });
    std::thread::sleep(Duration::from_millis(300)); // every core's ticker has run
    for i in 0..4 {
        let mut c = login_ok(broker.addr, &format!("new-{i}"), V5, None, None);
        let a = c.subscribe_many(3, &[("s/#", q0), ("r/#", q0)], None);
        assert_eq!(
            a.return_codes,
            vec![ReasonCode::Success, ReasonCode::NotAuthorized]
        );
        login_ok(
            broker.addr,
            &format!("zoe-{i}"),
            V311,
            Some("zoe"),
            Some("zoe-pw"),
        );
    }
    // The old connection is still up; its r/# subscription stays, but deliveries are checked
    // again: r/ is no longer readable.
    old.send(&Packet::PingReq);
    assert_eq!(old.expect(), Packet::PingResp);
    w.publish_acked("r/2", b"after", QoS::AtLeastOnce, false, 2);
    old.expect_nothing(Duration::from_millis(400));

    // A reload that fails keeps the rules in force.
    std::fs::write(&acl, "topic readwrite t/#\nbogus line\n").unwrap();
    unsafe { libc::kill(broker.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(400));
    let mut c = login_ok(broker.addr, "after-bad", V5, None, None);
    let a = c.subscribe_many(4, &[("s/#", q0), ("t/#", q0)], None);
    assert_eq!(
        a.return_codes,
        vec![ReasonCode::Success, ReasonCode::NotAuthorized]
    );
    old.send(&Packet::PingReq);
    assert_eq!(old.expect(), Packet::PingResp);
}

#[test]
fn bad_files_stop_check_config_and_start_up_naming_file_and_line() {
    let dir = Dir::new("bad");
    let pw = dir.file("passwd", &format!("{PASSWD}# fine\nmallory:plaintext\n"));
    let acl = dir.file("acl", "topic read a/#\nuser x\ntopic read a/#/b\n");
    let good_pw = dir.file("good-passwd", PASSWD);
    let run = |args: &[&str], config: &str| {
        let cfg = dir.file("ringmq.toml", config);
        Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .unwrap()
    };
    let cases = [
        (
            format!("[auth]\npassword_file = {}\n", toml_path(&pw)),
            "passwd:7:".to_owned(),
        ),
        (
            format!(
                "[auth]\npassword_file = {}\nacl_file = {}\n",
                toml_path(&good_pw),
                toml_path(&acl)
            ),
            "acl:3:".to_owned(),
        ),
        (
            format!("[auth]\nacl_file = {}\n", toml_path(&dir.0.join("missing"))),
            "missing: cannot open".to_owned(),
        ),
    ];
    for (config, needle) in cases {
        for args in [&["check-config"][..], &[][..]] {
            let out = run(args, &config);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} {config}: {stderr}");
            assert!(stderr.contains(&needle), "{args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
}
