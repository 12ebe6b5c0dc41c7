//! In-process scale test: puts N sessions (one subscription each) and N retained topics into one
//! core's own structures, without sockets, and reports memory per session, the time to connect
//! and subscribe, and the time to match publications.
//!
//! ```text
//! cargo run --release -p ringmq --example scale -- [SESSIONS] [RETAINED]
//! ```
//! Defaults: 1,000,000 sessions and 1,000,000 retained topics. Memory is the process's resident
//! set (the broker's allocator, mimalloc), measured before and after each phase.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use ringmq::broker::{ConnLink, Core, CoreSettings, ShareStrategy};
use ringmq::session::SessionLimits;
use ringmq_codec::{
    Connect, Packet, ProtocolVersion, Publish, QoS, Subscribe, SubscribeFilter,
    SubscriptionOptions, Utf8Bytes,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn settings(n: usize) -> CoreSettings {
    CoreSettings {
        cores: 1,
        session: SessionLimits {
            max_inflight_messages: 32,
            max_queued_messages: 1000,
            max_queued_bytes: 1 << 20,
            write_buffer_high_water_bytes: 1 << 20,
            max_topic_alias: 0,
        },
        max_packet_size_bytes: 1 << 20,
        max_keep_alive_secs: 600,
        session_expiry_max_secs: u32::MAX,
        message_expiry_max_secs: 0,
        max_topic_levels: 16,
        max_topic_length_bytes: 1024,
        max_subscriptions_per_client: 16,
        retained_messages_max: n.max(1) * 2,
        retained_scan_budget_messages: 1024,
        max_client_id_length_bytes: 64,
        allow_anonymous: true,
        share_strategy: ShareStrategy::RoundRobin,
        shared_subscriptions_enabled: true,
        maximum_qos: QoS::ExactlyOnce,
        retain_available: true,
        max_connections_per_core: n + 10,
        backpressure: None,
        cross_core_queue_capacity: 1024,
        cross_core_window_messages: 128,
        overload: Default::default(),
    }
}

fn utf8(s: String) -> Utf8Bytes {
    Utf8Bytes::try_from(s).expect("ASCII")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sessions: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let retained: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let now = Instant::now();
    let mut core = Core::new(0, settings(sessions.max(retained)));
    let base = rss_bytes();

    // Sessions, each connected (a link, as a live connection has) and subscribed once.
    let t = Instant::now();
    let mut links = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let link = Rc::new(ConnLink::default());
        let c = Connect {
            protocol: ProtocolVersion::V3_1_1,
            clean_start: true,
            keep_alive: 60,
            properties: None,
            client_id: utf8(format!("c{i}")),
            will: None,
            username: None,
            password: None,
        };
        let a = core.connect(&c, link.clone(), now).expect("accepted");
        let _ = core.take_output(a.session, &link); // the CONNACK
        let sub = Subscribe {
            packet_id: 1,
            properties: None,
            filters: vec![SubscribeFilter {
                filter: utf8(format!("dev/{}/{i}/+", i % 1000)),
                options: SubscriptionOptions::qos(QoS::AtMostOnce),
            }],
        };
        core.on_packet(a.session, Packet::Subscribe(sub), now)
            .expect("subscribed");
        let _ = core.take_output(a.session, &link); // the SUBACK
        links.push((a.session, link));
    }
    let subscribe_secs = t.elapsed().as_secs_f64();
    let after_sessions = rss_bytes();

    // Retained topics, published by one client.
    let t = Instant::now();
    let publisher = core
        .connect(
            &Connect {
                protocol: ProtocolVersion::V3_1_1,
                clean_start: true,
                keep_alive: 60,
                properties: None,
                client_id: utf8("publisher".into()),
                will: None,
                username: None,
                password: None,
            },
            Rc::new(ConnLink::default()),
            now,
        )
        .expect("accepted")
        .session;
    let payload = Bytes::from_static(b"21.5");
    for i in 0..retained {
        let p = Publish {
            qos: QoS::AtMostOnce,
            retain: true,
            topic: utf8(format!("state/{}/{i}", i % 1000)),
            payload: payload.clone(),
            ..Default::default()
        };
        core.on_packet(publisher, Packet::Publish(p), now)
            .expect("published");
    }
    let retain_secs = t.elapsed().as_secs_f64();
    let after_retained = rss_bytes();

    // Matching: publications to one session's topic each (a trie walk among N filters), and
    // the session's output taken so memory does not grow.
    let publishes = sessions.clamp(1, 200_000);
    let t = Instant::now();
    let mut delivered = 0usize;
    for k in 0..publishes {
        let i = (k * 7919) % sessions.max(1);
        let p = Publish {
            qos: QoS::AtMostOnce,
            topic: utf8(format!("dev/{}/{i}/temp", i % 1000)),
            payload: payload.clone(),
            ..Default::default()
        };
        core.on_packet(publisher, Packet::Publish(p), now)
            .expect("published");
        if let Some((sid, link)) = links.get(i) {
            if core.take_output(*sid, link).is_some() {
                delivered += 1;
            }
        }
    }
    let match_secs = t.elapsed().as_secs_f64();
    assert_eq!(
        delivered, publishes,
        "every publication reached its session"
    );

    let per_session = (after_sessions - base) as f64 / sessions.max(1) as f64;
    let per_retained = (after_retained - after_sessions) as f64 / retained.max(1) as f64;
    println!("sessions: {sessions} (one subscription each), retained topics: {retained}");
    println!(
        "connect+subscribe: {:.2} s ({:.0}/s); memory {:.0} bytes per session (RSS)",
        subscribe_secs,
        sessions as f64 / subscribe_secs,
        per_session
    );
    println!(
        "retained: {:.2} s ({:.0}/s); memory {:.0} bytes per retained topic (RSS)",
        retain_secs,
        retained as f64 / retain_secs,
        per_retained
    );
    println!(
        "match: {publishes} publications in {:.3} s: {:.0} ns per publication (trie of {sessions} filters, encode included)",
        match_secs,
        match_secs * 1e9 / publishes as f64
    );
    println!(
        "{{\"sessions\":{sessions},\"retained\":{retained},\"bytes_per_session\":{per_session:.0},\"bytes_per_retained\":{per_retained:.0},\"subscribe_per_sec\":{:.0},\"match_ns\":{:.0}}}",
        sessions as f64 / subscribe_secs,
        match_secs * 1e9 / publishes as f64
    );
}
