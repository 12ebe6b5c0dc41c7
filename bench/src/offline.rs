//! The `offline` scenario: QoS 1 messages into persistent sessions whose clients are offline.
//!
//! 1. **Set-up.** `S` persistent sessions (MQTT 3.1.1 clean session 0, or MQTT 5 clean start 0
//!    with a Session Expiry Interval) connect, subscribe at QoS 1 and disconnect, a bounded
//!    number at once (`--connect-concurrency`), one blocking connection per thread.
//! 2. **Publish.** `P` publishers publish `M` QoS 1 messages in total, flat out, each with at most
//!    `--inflight` unacknowledged messages (a closed loop on PUBACK).
//! 3. **Drain.** The sessions reconnect, a batch at a time, receive and acknowledge their queued
//!    messages; every acknowledged message must arrive, once, in order per (publisher, topic).
//!
//! Publish and drain may run in two processes (`--phase publish`, then `--phase drain`) with a
//! state file between them, so that the broker can be killed and restarted in between.
//!
//! The streams, and so the sequence numbers in the payloads, are per (publisher, session) in
//! the `own` layout (each topic is one session's) and per publisher in the `all` layout (every
//! session gets every message): in both, each (session, publisher) stream is numbered 0, 1, 2,
//! ... without gaps at the source, which is what [`StreamCounter`] expects.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use mio::{Events, Interest, Poll, Token};
use ringmq_codec::{
    decode, Ack, DecodeOptions, Disconnect, Packet, ProtocolVersion, Publish, QoS, Subscribe,
    SubscribeFilter, SubscriptionOptions, Utf8Bytes,
};
use serde_json::json;

use crate::cli::{Match, Options, Phase};
use crate::counter::{Arrival, StreamCounter};
use crate::payload::{self, Stamp};
use crate::procfs;
use crate::tls::{Stream, TlsClient};
use crate::worker::{
    connect_packet, connect_session, into_mio, open_blocking, read_blocking, send_blocking,
};

/// Keep-alive of every connection (publishers write all the time; drain batches are short).
const KEEP_ALIVE_SECS: u16 = 300;
/// Bytes of pending output per publisher above which it encodes no more.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// How long a connection may take to connect, answer or close.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which session gets which message, and with which sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub sessions: usize,
    pub publishers: usize,
    pub matching: Match,
}

impl Layout {
    /// The filter session `s` subscribes to.
    pub fn filter(&self, s: usize) -> String {
        match self.matching {
            Match::Own => format!("bench/off/{s}"),
            Match::All => "bench/off/+".into(),
        }
    }

    /// `own`: the sessions publisher `p` serves (those with `s mod P = p`).
    pub fn sessions_of(&self, p: usize) -> usize {
        if p >= self.sessions {
            0
        } else {
            (self.sessions - p).div_ceil(self.publishers)
        }
    }

    /// The `j`-th message of publisher `p`: the session it is for (`None`: all of them) and its
    /// sequence number in its (session, publisher) stream.
    pub fn target(&self, p: usize, j: u64) -> (Option<usize>, u64) {
        match self.matching {
            Match::Own => {
                let n = self.sessions_of(p) as u64;
                let k = (j % n) as usize;
                (Some(p + self.publishers * k), j / n)
            }
            Match::All => (None, j),
        }
    }

    /// The topics publisher `p` publishes on, in the order it cycles through them.
    pub fn topics(&self, p: usize) -> Vec<String> {
        match self.matching {
            Match::Own => (0..self.sessions_of(p))
                .map(|k| format!("bench/off/{}", p + self.publishers * k))
                .collect(),
            Match::All => vec![format!("bench/off/p{p}")],
        }
    }

    /// The publishers session `s` hears from.
    pub fn publishers_of(&self, s: usize) -> Vec<usize> {
        match self.matching {
            Match::Own => vec![s % self.publishers],
            Match::All => (0..self.publishers).collect(),
        }
    }

    /// How many of the first `count` messages of publisher `p` are for session `s`: the length
    /// of the (s, p) stream, whose sequence numbers are `0..` that.
    pub fn stream_len(&self, s: usize, p: usize, count: u64) -> u64 {
        match self.matching {
            Match::Own => {
                if s % self.publishers != p {
                    return 0;
                }
                let n = self.sessions_of(p) as u64;
                let k = (s / self.publishers) as u64;
                count / n + u64::from(k < count % n)
            }
            Match::All => count,
        }
    }
}

/// What the publish phase leaves for the drain phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub layout: Layout,
    pub client_prefix: String,
    pub version: ProtocolVersion,
    pub payload_bytes: usize,
    /// Per publisher: messages sent.
    pub published: Vec<u64>,
    /// Per publisher: the messages `0..acked_prefix` were all acknowledged.
    pub acked_prefix: Vec<u64>,
    /// Per publisher: messages acknowledged (at least `acked_prefix`).
    pub acked: Vec<u64>,
}

impl State {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "sessions": self.layout.sessions,
            "publishers": self.layout.publishers,
            "match": match self.layout.matching { Match::Own => "own", Match::All => "all" },
            "client_prefix": self.client_prefix,
            "mqtt_version": version_name(self.version),
            "payload_bytes": self.payload_bytes,
            "published": self.published,
            "acked_prefix": self.acked_prefix,
            "acked": self.acked,
        })
    }

    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let num = |k: &str| {
            v[k].as_u64()
                .ok_or_else(|| format!("state file: no number {k:?}"))
        };
        let list = |k: &str| -> Result<Vec<u64>, String> {
            v[k].as_array()
                .ok_or_else(|| format!("state file: no list {k:?}"))?
                .iter()
                .map(|x| x.as_u64().ok_or_else(|| format!("state file: bad {k:?}")))
                .collect()
        };
        let text = |k: &str| {
            v[k].as_str()
                .ok_or_else(|| format!("state file: no string {k:?}"))
        };
        let layout = Layout {
            sessions: num("sessions")? as usize,
            publishers: num("publishers")? as usize,
            matching: match text("match")? {
                "own" => Match::Own,
                "all" => Match::All,
                m => return Err(format!("state file: match {m:?}")),
            },
        };
        let state = State {
            layout,
            client_prefix: text("client_prefix")?.to_string(),
            version: match text("mqtt_version")? {
                "5" => ProtocolVersion::V5,
                _ => ProtocolVersion::V3_1_1,
            },
            payload_bytes: num("payload_bytes")? as usize,
            published: list("published")?,
            acked_prefix: list("acked_prefix")?,
            acked: list("acked")?,
        };
        let p = layout.publishers;
        if layout.sessions == 0
            || p == 0
            || state.published.len() != p
            || state.acked_prefix.len() != p
            || state.acked.len() != p
        {
            return Err("state file: inconsistent sizes".into());
        }
        Ok(state)
    }
}

fn version_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V5 => "5",
        _ => "3.1.1",
    }
}

fn session_id(prefix: &str, s: usize) -> String {
    format!("{prefix}-s{s}")
}

fn publisher_id(prefix: &str, p: usize) -> String {
    format!("{prefix}-p{p}")
}

fn cpu(pid: Option<u32>) -> Option<f64> {
    pid.and_then(|pid| procfs::cpu_secs(pid).ok())
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Runs the scenario as the options say; prints a summary and one JSON line.
pub fn run(o: &Options, addr: SocketAddr) -> Result<(), String> {
    if let Some(pid) = o.broker_pid {
        procfs::cpu_secs(pid).map_err(|e| format!("broker pid {pid}: {e}"))?;
    }
    let mut out = serde_json::Map::new();
    out.insert("scenario".into(), json!("offline"));
    out.insert("broker".into(), json!(o.label));
    out.insert("phase".into(), json!(o.phase.name()));
    out.insert("qos".into(), json!(1));
    out.insert("inflight".into(), json!(o.inflight));
    out.insert("tls".into(), json!(o.tls.is_some()));
    let tls = o.tls.as_ref().map(TlsClient::new).transpose()?;
    let tls = tls.as_ref();

    let state = if o.phase == Phase::Drain {
        let path = o.state_file.as_ref().expect("checked by the parser");
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("state file {}: {e}", path.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("state file: {e}"))?;
        State::from_json(&v)?
    } else {
        let layout = Layout {
            sessions: o.sessions,
            publishers: o.publishers,
            matching: o.matching,
        };
        let version = o.version;
        if o.setup {
            let r = setup(o, addr, &layout, tls)?;
            println!(
                "offline set-up against {} ({addr}): {} persistent sessions created in {:.2} s = {:.0} sessions/s ({} at once), MQTT {}",
                o.label,
                layout.sessions,
                r.secs,
                layout.sessions as f64 / r.secs,
                o.connect_concurrency,
                version_name(version),
            );
            out.insert(
                "setup".into(),
                json!({
                    "sessions": layout.sessions,
                    "secs": round(r.secs, 3),
                    "sessions_per_s": round(layout.sessions as f64 / r.secs, 1),
                    "concurrency": o.connect_concurrency,
                    "already_present": r.present,
                }),
            );
        }
        if o.phase == Phase::Setup {
            print_json(o, &layout, version, o.payload_bytes, out);
            return Ok(());
        }
        let (state, report) = publish(o, addr, layout, tls)?;
        report.print(o, &state);
        out.insert("publish".into(), report.to_json());
        if let Some(path) = &o.state_file {
            let text = serde_json::to_string(&state.to_json()).expect("JSON of the state");
            std::fs::write(path, text + "\n")
                .map_err(|e| format!("state file {}: {e}", path.display()))?;
        }
        state
    };
    if o.phase == Phase::Drain || (o.phase == Phase::All && o.verify) {
        let d = drain(o, addr, &state, tls)?;
        d.print(o);
        out.insert("drain".into(), d.to_json());
    }
    print_json(o, &state.layout, state.version, state.payload_bytes, out);
    Ok(())
}

fn print_json(
    o: &Options,
    layout: &Layout,
    version: ProtocolVersion,
    payload_bytes: usize,
    mut out: serde_json::Map<String, serde_json::Value>,
) {
    out.insert("mqtt_version".into(), json!(version_name(version)));
    out.insert("payload_bytes".into(), json!(payload_bytes));
    out.insert("sessions".into(), json!(layout.sessions));
    out.insert("publishers".into(), json!(layout.publishers));
    out.insert(
        "match".into(),
        json!(match layout.matching {
            Match::Own => "own",
            Match::All => "all",
        }),
    );
    if o.phase != Phase::Drain {
        out.insert("messages".into(), json!(o.messages));
    }
    println!("{}", serde_json::Value::Object(out));
}

// ---------------------------------------------------------------------------------------------
// Set-up

struct SetupReport {
    secs: f64,
    /// Sessions the broker already had (CONNACK session present).
    present: u64,
}

fn setup(
    o: &Options,
    addr: SocketAddr,
    layout: &Layout,
    tls: Option<&TlsClient>,
) -> Result<SetupReport, String> {
    let next = AtomicUsize::new(0);
    let present = AtomicU64::new(0);
    let failed: Mutex<Option<String>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let persistent = Some(o.session_expiry_secs);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..o.connect_concurrency.min(layout.sessions) {
            scope.spawn(|| loop {
                if stop.load(Relaxed) {
                    return;
                }
                let s = next.fetch_add(1, Relaxed);
                if s >= layout.sessions {
                    return;
                }
                let id = session_id(&o.client_prefix, s);
                match create_session(addr, o.version, &id, persistent, &layout.filter(s), tls) {
                    Ok(p) => {
                        present.fetch_add(u64::from(p), Relaxed);
                    }
                    Err(e) => {
                        stop.store(true, Relaxed);
                        let mut f = failed.lock().unwrap_or_else(|e| e.into_inner());
                        f.get_or_insert(format!("{id}: {e}"));
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(format!("set-up failed: {e}"));
    }
    Ok(SetupReport {
        secs: started.elapsed().as_secs_f64(),
        present: present.load(Relaxed),
    })
}

/// Connects a persistent session, subscribes it at QoS 1, disconnects and waits for the broker
/// to close (so that the broker's side, not ours, holds the TIME_WAIT and our ports are free
/// again). Returns whether the broker already had the session.
fn create_session(
    addr: SocketAddr,
    version: ProtocolVersion,
    id: &str,
    persistent: Option<u32>,
    filter: &str,
    tls: Option<&TlsClient>,
) -> Result<bool, String> {
    let (mut stream, mut buf, ack) = connect_session(
        addr,
        version,
        KEEP_ALIVE_SECS,
        HANDSHAKE_TIMEOUT,
        id,
        persistent,
        tls,
    )?;
    let sub = Packet::Subscribe(Subscribe {
        packet_id: 1,
        properties: None,
        filters: vec![SubscribeFilter {
            filter: Utf8Bytes::try_from(filter).map_err(|e| format!("filter: {e}"))?,
            options: SubscriptionOptions::qos(QoS::AtLeastOnce),
        }],
    });
    send_blocking(&mut stream, &sub, version)?;
    match read_blocking(&mut stream, &mut buf, version)? {
        Packet::SubAck(a)
            if a.return_codes.len() == 1
                && !a.return_codes[0].is_error()
                && a.return_codes[0] as u8 == 1 => {}
        Packet::SubAck(a) => return Err(format!("SUBACK not QoS 1: {:?}", a.return_codes)),
        other => return Err(format!("expected SUBACK, got {:?}", other.packet_type())),
    }
    send_blocking(
        &mut stream,
        &Packet::Disconnect(Disconnect::NORMAL),
        version,
    )?;
    let mut sink = [0u8; 512];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Timed out, or reset: the session was created either way.
            Err(_) => break,
        }
    }
    Ok(ack.session_present)
}

// ---------------------------------------------------------------------------------------------
// Publish

struct PubConn {
    p: usize,
    layout: Layout,
    stream: Stream<mio::net::TcpStream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    readable: bool,
    writable: bool,
    closed: Option<String>,
    topics: Vec<Utf8Bytes>,
    window: usize,
    quota: u64,
    /// Messages encoded so far (the next message is number `next`).
    next: u64,
    /// Packet id -> message number + 1 (0 = free).
    by_packet_id: Vec<u64>,
    next_packet_id: u16,
    /// Message numbers awaiting their PUBACK.
    in_flight: BTreeSet<u64>,
    acked: u64,
    unexpected_acks: u64,
    last_ack_ns: u64,
}

impl PubConn {
    fn done(&self) -> bool {
        self.closed.is_some() || (self.next == self.quota && self.in_flight.is_empty())
    }

    fn acked_prefix(&self) -> u64 {
        self.in_flight.first().copied().unwrap_or(self.next)
    }

    fn take_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
            if self.by_packet_id[usize::from(id)] == 0 {
                return id;
            }
        }
    }
}

struct PublishReport {
    secs: f64,
    published: u64,
    acked: u64,
    broker_cpu_s: Option<f64>,
    rss_kib: Option<(u64, u64)>,
    generator_cpu_s: Option<f64>,
    errors: Vec<String>,
    unexpected_acks: u64,
    timed_out: bool,
}

impl PublishReport {
    fn msgs_per_s(&self) -> f64 {
        self.acked as f64 / self.secs.max(1e-9)
    }

    fn per_cpu(&self) -> Option<f64> {
        self.broker_cpu_s
            .filter(|&c| c > 0.0)
            .map(|c| self.acked as f64 / c)
    }

    fn print(&self, o: &Options, state: &State) {
        println!(
            "offline publish against {} : {} publishers, {} sessions ({}), {} B payloads, window {} per publisher",
            o.label,
            state.layout.publishers,
            state.layout.sessions,
            match state.layout.matching {
                Match::Own => "own topic each",
                Match::All => "all on one pattern",
            },
            state.payload_bytes,
            o.inflight,
        );
        println!(
            "  acknowledged {:>10} of {} published in {:.2} s = {:.0} msgs/s{}",
            self.acked,
            self.published,
            self.secs,
            self.msgs_per_s(),
            if self.timed_out { " (TIMED OUT)" } else { "" }
        );
        match (self.broker_cpu_s, self.per_cpu()) {
            (Some(c), Some(pc)) => println!(
                "  broker       {c:.2} CPU-s ({:.0}% of one core), {pc:.0} msgs per broker CPU-second",
                100.0 * c / self.secs.max(1e-9)
            ),
            (Some(c), None) => println!("  broker       {c:.2} CPU-s"),
            _ => println!("  broker       CPU not measured (no --broker-pid)"),
        }
        if let Some((rss, hwm)) = self.rss_kib {
            println!("  broker       RSS {rss} KiB (peak {hwm} KiB)");
        }
        if let Some(g) = self.generator_cpu_s {
            println!("  generator    {g:.2} CPU-s");
        }
        if self.unexpected_acks > 0 {
            println!(
                "  ANOMALY      {} PUBACKs for ids not in flight",
                self.unexpected_acks
            );
        }
        for e in &self.errors {
            println!("  error        {e}");
        }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "published": self.published,
            "acked": self.acked,
            "secs": round(self.secs, 3),
            "msgs_per_s": round(self.msgs_per_s(), 1),
            "broker_cpu_s": self.broker_cpu_s.map(|c| round(c, 3)),
            "broker_msgs_per_cpu_s": self.per_cpu().map(|x| round(x, 1)),
            "broker_rss_kib": self.rss_kib.map(|r| r.0),
            "broker_rss_peak_kib": self.rss_kib.map(|r| r.1),
            "generator_cpu_s": self.generator_cpu_s.map(|c| round(c, 3)),
            "errors": self.errors.len(),
            "unexpected_acks": self.unexpected_acks,
            "timed_out": self.timed_out,
        })
    }
}

fn publish(
    o: &Options,
    addr: SocketAddr,
    layout: Layout,
    tls: Option<&TlsClient>,
) -> Result<(State, PublishReport), String> {
    let p_count = layout.publishers;
    let mut conns = Vec::with_capacity(p_count);
    for p in 0..p_count {
        let id = publisher_id(&o.client_prefix, p);
        let (stream, rbuf, ack) = connect_session(
            addr,
            o.version,
            KEEP_ALIVE_SECS,
            HANDSHAKE_TIMEOUT,
            &id,
            None,
            tls,
        )
        .map_err(|e| format!("{id}: {e}"))?;
        let stream = into_mio(stream).map_err(|e| format!("{id}: {e}"))?;
        let receive_max = ack
            .properties
            .as_ref()
            .and_then(|p| p.receive_maximum)
            .map_or(usize::MAX, usize::from);
        let quota =
            o.messages / p_count as u64 + u64::from((p as u64) < o.messages % p_count as u64);
        conns.push(PubConn {
            p,
            layout,
            stream,
            rbuf,
            wbuf: BytesMut::with_capacity(WRITE_HIGH_WATER),
            readable: true,
            writable: true,
            closed: None,
            topics: layout
                .topics(p)
                .iter()
                .map(|t| Utf8Bytes::try_from(t.as_str()).expect("ASCII topic"))
                .collect(),
            window: o.inflight.min(receive_max),
            quota,
            next: 0,
            by_packet_id: vec![0; 65_536],
            next_packet_id: 1,
            in_flight: BTreeSet::new(),
            acked: 0,
            unexpected_acks: 0,
            last_ack_ns: 0,
        });
    }
    let threads = o.threads.clamp(1, p_count);
    let mut shares: Vec<Vec<PubConn>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in conns.into_iter().enumerate() {
        shares[i % threads].push(c);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.publish_max_secs);
    let cpu0 = cpu(o.broker_pid);
    let gen0 = procfs::cpu_secs(std::process::id()).ok();
    let payload_bytes = o.payload_bytes;
    let results: Vec<Vec<PubConn>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|mut conns| {
                scope.spawn(move || {
                    publish_loop(&mut conns, o.version, payload_bytes, start, deadline);
                    conns
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("publisher thread panicked"))
            .collect()
    });
    let cpu1 = cpu(o.broker_pid);
    let gen1 = procfs::cpu_secs(std::process::id()).ok();
    let rss_kib = o.broker_pid.and_then(|pid| procfs::rss_kib(pid).ok());
    let mut conns: Vec<PubConn> = results.into_iter().flatten().collect();
    conns.sort_by_key(|c| c.p);
    let last_ack_ns = conns.iter().map(|c| c.last_ack_ns).max().unwrap_or(0);
    let timed_out = conns.iter().any(|c| !c.done());
    let report = PublishReport {
        secs: (last_ack_ns as f64 / 1e9).max(1e-9),
        published: conns.iter().map(|c| c.next).sum(),
        acked: conns.iter().map(|c| c.acked).sum(),
        broker_cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
        rss_kib,
        generator_cpu_s: gen0.zip(gen1).map(|(a, b)| b - a),
        errors: conns
            .iter()
            .filter_map(|c| c.closed.as_ref().map(|e| format!("publisher {}: {e}", c.p)))
            .collect(),
        unexpected_acks: conns.iter().map(|c| c.unexpected_acks).sum(),
        timed_out,
    };
    for c in &mut conns {
        if c.closed.is_none() {
            let mut out = BytesMut::new();
            let _ = Packet::Disconnect(Disconnect::NORMAL).encode(o.version, &mut out);
            let _ = c.stream.write(&out);
            let _ = c.stream.flush();
        }
    }
    let state = State {
        layout,
        client_prefix: o.client_prefix.clone(),
        version: o.version,
        payload_bytes: o.payload_bytes,
        published: conns.iter().map(|c| c.next).collect(),
        acked_prefix: conns.iter().map(PubConn::acked_prefix).collect(),
        acked: conns.iter().map(|c| c.acked).collect(),
    };
    Ok((state, report))
}

fn publish_loop(
    conns: &mut [PubConn],
    version: ProtocolVersion,
    payload_bytes: usize,
    start: Instant,
    deadline: Instant,
) {
    let Ok(mut poll) = Poll::new() else {
        for c in conns.iter_mut() {
            c.closed = Some("mio poll".into());
        }
        return;
    };
    for (i, c) in conns.iter_mut().enumerate() {
        if let Err(e) = poll.registry().register(
            c.stream.socket_mut(),
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            c.closed = Some(format!("mio register: {e}"));
        }
    }
    let options = DecodeOptions::new(version);
    let mut events = Events::with_capacity(256);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut pool = BytesMut::with_capacity(64 * 1024);
    while !conns.iter().all(PubConn::done) && Instant::now() < deadline {
        let busy = conns.iter().any(|c| {
            c.closed.is_none()
                && (c.readable
                    || (c.writable
                        && (!c.wbuf.is_empty()
                            || c.stream.wants_write()
                            || (c.next < c.quota && c.in_flight.len() < c.window))))
        });
        let timeout = if busy {
            Duration::ZERO
        } else {
            Duration::from_millis(10)
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                for c in conns.iter_mut() {
                    c.closed.get_or_insert(format!("poll: {e}"));
                }
                return;
            }
        }
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                c.readable = true;
            }
            if ev.is_writable() || ev.is_write_closed() {
                c.writable = true;
            }
        }
        for c in conns.iter_mut() {
            if c.closed.is_some() {
                continue;
            }
            if c.readable {
                read_into(
                    &mut c.stream,
                    &mut c.rbuf,
                    &mut scratch,
                    &mut c.readable,
                    &mut c.closed,
                );
                let now_ns = start.elapsed().as_nanos() as u64;
                loop {
                    match decode(&mut c.rbuf, &options) {
                        Ok(Some(Packet::PubAck(a))) => {
                            let j = std::mem::take(&mut c.by_packet_id[usize::from(a.packet_id)]);
                            if j == 0 {
                                c.unexpected_acks += 1;
                            } else {
                                c.in_flight.remove(&(j - 1));
                                c.acked += 1;
                                c.last_ack_ns = now_ns;
                            }
                        }
                        Ok(Some(Packet::PingResp)) => {}
                        Ok(Some(other)) => {
                            c.closed
                                .get_or_insert(format!("unexpected {:?}", other.packet_type()));
                            break;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            c.closed.get_or_insert(format!("decode: {e}"));
                            break;
                        }
                    }
                }
            }
            if c.closed.is_some() {
                continue;
            }
            let sent_ns = start.elapsed().as_nanos() as u64;
            while c.next < c.quota
                && c.in_flight.len() < c.window
                && c.wbuf.len() < WRITE_HIGH_WATER
            {
                let j = c.next;
                let packet_id = c.take_packet_id();
                c.by_packet_id[usize::from(packet_id)] = j + 1;
                c.in_flight.insert(j);
                let topic = c.topics[(j % c.topics.len() as u64) as usize].clone();
                let seq = c.layout.target(c.p, j).1;
                let p = Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic,
                    packet_id,
                    properties: None,
                    payload: payload::write(
                        &mut pool,
                        payload_bytes,
                        Stamp {
                            publisher: c.p as u32,
                            seq,
                            sent_ns,
                        },
                    ),
                });
                p.encode(version, &mut c.wbuf)
                    .expect("a benchmark PUBLISH always encodes");
                c.next += 1;
            }
            if c.writable && (!c.wbuf.is_empty() || c.stream.wants_write()) {
                write_out(&mut c.stream, &mut c.wbuf, &mut c.writable, &mut c.closed);
            }
        }
    }
}

/// Reads what is available (up to 1 MiB) into `rbuf`.
fn read_into(
    stream: &mut Stream<mio::net::TcpStream>,
    rbuf: &mut BytesMut,
    scratch: &mut [u8],
    readable: &mut bool,
    closed: &mut Option<String>,
) -> bool {
    let mut budget = 1usize << 20;
    let mut eof = false;
    while budget > 0 {
        match stream.read(scratch) {
            Ok(0) => {
                *readable = false;
                eof = true;
                closed.get_or_insert("connection closed by the broker".into());
                break;
            }
            Ok(n) => {
                rbuf.extend_from_slice(&scratch[..n]);
                budget = budget.saturating_sub(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *readable = false;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                *readable = false;
                eof = true;
                closed.get_or_insert(format!("read: {e}"));
                break;
            }
        }
    }
    eof
}

/// Writes `wbuf`, then the TLS records still waiting, until done or the socket would block.
fn write_out(
    stream: &mut Stream<mio::net::TcpStream>,
    wbuf: &mut BytesMut,
    writable: &mut bool,
    closed: &mut Option<String>,
) {
    loop {
        if wbuf.is_empty() {
            match stream.flush() {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => *writable = false,
                Err(e) => {
                    closed.get_or_insert(format!("write: {e}"));
                }
            }
            return;
        }
        match stream.write(wbuf) {
            Ok(0) => {
                closed.get_or_insert("write returned 0".into());
                return;
            }
            Ok(n) => wbuf.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *writable = false;
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                closed.get_or_insert(format!("write: {e}"));
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Drain

/// The tally of what the sessions received, against what was acknowledged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Acknowledged messages the sessions must receive (one per session a message is for).
    pub expected: u64,
    /// Every delivery, duplicates included.
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Deliveries on a topic or from a publisher that is not this session's, or foreign payloads.
    pub unexpected: u64,
    /// Deliveries of messages that were published but whose PUBACK never came (allowed).
    pub unacked_delivered: u64,
    /// Sessions that missed at least one acknowledged message.
    pub sessions_with_loss: u64,
    /// Sessions the broker no longer had (CONNACK session present = 0).
    pub sessions_not_present: u64,
    /// Sessions whose reconnection never got a CONNACK.
    pub sessions_no_connack: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.expected += o.expected;
        self.received += o.received;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.unexpected += o.unexpected;
        self.unacked_delivered += o.unacked_delivered;
        self.sessions_with_loss += o.sessions_with_loss;
        self.sessions_not_present += o.sessions_not_present;
        self.sessions_no_connack += o.sessions_no_connack;
    }
}

/// What one session receives while draining, and what it should.
pub struct SessionCheck {
    s: usize,
    topic: Bytes,
    /// Per publisher it hears from: (publisher, acknowledged stream length, published stream
    /// length, counter).
    streams: Vec<(usize, u64, u64, StreamCounter)>,
    foreign: u64,
    received: u64,
    /// Streams still missing acknowledged messages.
    incomplete: usize,
    /// CONNACKs received on reconnecting.
    connacks: u32,
    /// Whether a CONNACK said the broker had no session for it.
    not_present: bool,
}

impl SessionCheck {
    pub fn new(state: &State, s: usize) -> Self {
        let l = &state.layout;
        let streams: Vec<_> = l
            .publishers_of(s)
            .into_iter()
            .map(|p| {
                (
                    p,
                    l.stream_len(s, p, state.acked_prefix[p]),
                    l.stream_len(s, p, state.published[p]),
                    StreamCounter::default(),
                )
            })
            .collect();
        let incomplete = streams.iter().filter(|x| x.1 > 0).count();
        Self {
            s,
            topic: Bytes::from(format!("bench/off/{s}")),
            streams,
            foreign: 0,
            received: 0,
            incomplete,
            connacks: 0,
            not_present: false,
        }
    }

    /// Whether every acknowledged message for this session has arrived.
    pub fn complete(&self) -> bool {
        self.incomplete == 0
    }

    /// Records one delivery (`own` layout: its topic must be the session's).
    pub fn record(&mut self, matching: Match, topic: &[u8], payload: &[u8]) -> Option<Arrival> {
        self.received += 1;
        let stamp = payload::read(payload);
        let topic_ok = match matching {
            Match::Own => topic == &self.topic[..],
            Match::All => {
                stamp.is_some_and(|st| topic == format!("bench/off/p{}", st.publisher).as_bytes())
            }
        };
        let stream = stamp.filter(|_| topic_ok).and_then(|st| {
            self.streams
                .iter_mut()
                .find(|x| x.0 == st.publisher as usize)
                .map(|x| (x, st.seq))
        });
        let Some(((_, acked, _, counter), seq)) = stream else {
            self.foreign += 1;
            return None;
        };
        let was_complete = counter.lost(*acked) == 0;
        let arrival = counter.record(seq);
        if !was_complete && counter.lost(*acked) == 0 {
            self.incomplete -= 1;
        }
        Some(arrival)
    }

    /// The tally of this session.
    pub fn tally(&self) -> Tally {
        let mut t = Tally {
            received: self.received,
            unexpected: self.foreign,
            ..Tally::default()
        };
        for (_, acked, published, c) in &self.streams {
            t.expected += acked;
            let lost = c.lost(*acked);
            t.lost += lost;
            t.duplicated += c.duplicates();
            t.reordered += c.reordered();
            if c.beyond(*acked) {
                // Numbers at or above the acknowledged prefix: published, maybe acknowledged
                // out of order or not at all; they may arrive or not.
                t.unacked_delivered += c.distinct() - (acked - lost);
            }
            if c.beyond(*published) {
                // Never published: cannot be.
                t.unexpected += 1;
            }
        }
        t.sessions_with_loss = u64::from(t.lost > 0);
        t.sessions_not_present = u64::from(self.not_present);
        t.sessions_no_connack = u64::from(self.connacks == 0);
        t
    }
}

enum DrainStep {
    /// CONNECT sent, waiting for CONNACK.
    Connecting,
    Draining,
    /// DISCONNECT sent, waiting for the broker to close.
    Closing,
    Done,
}

struct DrainConn {
    stream: Stream<mio::net::TcpStream>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    readable: bool,
    writable: bool,
    closed: Option<String>,
    step: DrainStep,
    /// Its session's index in the batch.
    idx: usize,
}

struct DrainReport {
    secs: f64,
    tally: Tally,
    broker_cpu_s: Option<f64>,
    rss_kib: Option<(u64, u64)>,
    errors: Vec<String>,
    complete: bool,
    worst: Vec<(usize, u64)>,
    /// Batches that went `--drain-idle-ms` without a packet while sessions still missed
    /// messages.
    stalled_batches: u64,
    /// Sessions reconnected again after such a stall (counting each retry).
    sessions_retried: u64,
    /// Sessions that got everything only on a retry.
    completed_on_retry: u64,
    /// The longest time a batch went without a packet while it waited for one.
    longest_silence: Duration,
}

impl DrainReport {
    fn print(&self, o: &Options) {
        let t = &self.tally;
        println!(
            "offline drain against {}: {} deliveries in {:.2} s = {:.0} deliveries/s (expected {} acknowledged, drain {})",
            o.label,
            t.received,
            self.secs,
            t.received as f64 / self.secs.max(1e-9),
            t.expected,
            if self.complete { "complete" } else { "INCOMPLETE" }
        );
        println!(
            "  lost {} (in {} sessions), duplicated {}, reordered {}, unexpected {}, unacknowledged but delivered {}, sessions not present {}",
            t.lost, t.sessions_with_loss, t.duplicated, t.reordered, t.unexpected, t.unacked_delivered, t.sessions_not_present
        );
        println!(
            "  longest silence while waiting for a packet: {:.1} ms",
            self.longest_silence.as_secs_f64() * 1e3
        );
        if self.stalled_batches > 0 || t.sessions_no_connack > 0 {
            println!(
                "  STALLS       {} batches went {} without a packet while sessions missed messages; {} sessions reconnected again, {} of them then complete; {} sessions never got a CONNACK",
                self.stalled_batches,
                format_args!("{} ms", o.drain_idle_ms),
                self.sessions_retried,
                self.completed_on_retry,
                t.sessions_no_connack,
            );
        }
        for (s, lost) in &self.worst {
            println!("    session {s} lost {lost}");
        }
        match self.broker_cpu_s {
            Some(c) => println!(
                "  broker       {c:.2} CPU-s, {:.0} deliveries per broker CPU-second",
                t.received as f64 / c.max(1e-9)
            ),
            None => println!("  broker       CPU not measured (no --broker-pid)"),
        }
        if let Some((rss, hwm)) = self.rss_kib {
            println!("  broker       RSS {rss} KiB (peak {hwm} KiB)");
        }
        for e in self.errors.iter().take(10) {
            println!("  error        {e}");
        }
        if self.errors.len() > 10 {
            println!("  error        ... {} more", self.errors.len() - 10);
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let t = &self.tally;
        json!({
            "secs": round(self.secs, 3),
            "expected": t.expected,
            "received": t.received,
            "deliveries_per_s": round(t.received as f64 / self.secs.max(1e-9), 1),
            "lost": t.lost,
            "duplicated": t.duplicated,
            "reordered": t.reordered,
            "unexpected": t.unexpected,
            "unacked_delivered": t.unacked_delivered,
            "sessions_with_loss": t.sessions_with_loss,
            "sessions_not_present": t.sessions_not_present,
            "sessions_no_connack": t.sessions_no_connack,
            "stalled_batches": self.stalled_batches,
            "sessions_retried": self.sessions_retried,
            "completed_on_retry": self.completed_on_retry,
            "longest_silence_ms": round(self.longest_silence.as_secs_f64() * 1e3, 1),
            "complete": self.complete,
            "errors": self.errors.len(),
            "broker_cpu_s": self.broker_cpu_s.map(|c| round(c, 3)),
            "broker_deliveries_per_cpu_s": self.broker_cpu_s.filter(|&c| c > 0.0).map(|c| round(t.received as f64 / c, 1)),
            "broker_rss_kib": self.rss_kib.map(|r| r.0),
            "broker_rss_peak_kib": self.rss_kib.map(|r| r.1),
        })
    }
}

/// What one drain thread found.
struct DrainPart {
    tally: Tally,
    errors: Vec<String>,
    complete: bool,
    worst: Vec<(usize, u64)>,
    stalled_batches: u64,
    sessions_retried: u64,
    completed_on_retry: u64,
    longest_silence: Duration,
}

fn drain(
    o: &Options,
    addr: SocketAddr,
    state: &State,
    tls: Option<&TlsClient>,
) -> Result<DrainReport, String> {
    let sessions = state.layout.sessions;
    let threads = o.threads.clamp(1, sessions);
    let per_batch = o.drain_batch.div_ceil(threads).max(1);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(o.drain_max_secs);
    let cpu0 = cpu(o.broker_pid);
    let idle = Duration::from_millis(o.drain_idle_ms);
    let results: Vec<DrainPart> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mine: Vec<usize> = (t..sessions).step_by(threads).collect();
                    drain_sessions(
                        Broker { addr, tls },
                        state,
                        &mine,
                        per_batch,
                        idle,
                        deadline,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("drain thread panicked"))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = cpu(o.broker_pid);
    let mut report = DrainReport {
        secs,
        tally: Tally::default(),
        broker_cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
        rss_kib: o.broker_pid.and_then(|pid| procfs::rss_kib(pid).ok()),
        errors: Vec::new(),
        complete: true,
        worst: Vec::new(),
        stalled_batches: 0,
        sessions_retried: 0,
        completed_on_retry: 0,
        longest_silence: Duration::ZERO,
    };
    for part in results {
        report.tally.add(&part.tally);
        report.errors.extend(part.errors);
        report.complete &= part.complete;
        report.worst.extend(part.worst);
        report.stalled_batches += part.stalled_batches;
        report.sessions_retried += part.sessions_retried;
        report.completed_on_retry += part.completed_on_retry;
        report.longest_silence = report.longest_silence.max(part.longest_silence);
    }
    report.worst.sort_by_key(|w| std::cmp::Reverse(w.1));
    report.worst.truncate(5);
    Ok(report)
}

/// Where the drain connects, and how.
#[derive(Clone, Copy)]
struct Broker<'a> {
    addr: SocketAddr,
    tls: Option<&'a TlsClient>,
}

/// Times a session that did not get all its messages is reconnected after its batch stalled.
const DRAIN_RETRIES: usize = 2;

/// Drains `sessions` a batch at a time, then retries those that stalled; one thread.
fn drain_sessions(
    broker: Broker,
    state: &State,
    sessions: &[usize],
    per_batch: usize,
    idle: Duration,
    deadline: Instant,
) -> DrainPart {
    let mut part = DrainPart {
        tally: Tally::default(),
        errors: Vec::new(),
        complete: true,
        worst: Vec::new(),
        stalled_batches: 0,
        sessions_retried: 0,
        completed_on_retry: 0,
        longest_silence: Duration::ZERO,
    };
    let finish = |part: &mut DrainPart, c: &SessionCheck| {
        let t = c.tally();
        if t.lost > 0 {
            part.worst.push((c.s, t.lost));
            part.complete = false;
        }
        part.tally.add(&t);
    };
    let mut retry: Vec<SessionCheck> = Vec::new();
    for batch in sessions.chunks(per_batch) {
        let mut checks: Vec<SessionCheck> =
            batch.iter().map(|&s| SessionCheck::new(state, s)).collect();
        if Instant::now() < deadline
            && drain_batch(
                broker,
                state,
                &mut checks,
                idle,
                deadline,
                &mut part.errors,
                &mut part.longest_silence,
            )
        {
            part.stalled_batches += 1;
        }
        for c in checks {
            if c.complete() {
                finish(&mut part, &c);
            } else {
                retry.push(c);
            }
        }
    }
    for _ in 0..DRAIN_RETRIES {
        if retry.is_empty() || Instant::now() >= deadline {
            break;
        }
        part.sessions_retried += retry.len() as u64;
        for chunk in retry.chunks_mut(per_batch) {
            if drain_batch(
                broker,
                state,
                chunk,
                idle,
                deadline,
                &mut part.errors,
                &mut part.longest_silence,
            ) {
                part.stalled_batches += 1;
            }
        }
        let mut still = Vec::new();
        for c in retry {
            if c.complete() {
                part.completed_on_retry += 1;
                finish(&mut part, &c);
            } else {
                still.push(c);
            }
        }
        retry = still;
    }
    if Instant::now() >= deadline && !retry.is_empty() {
        part.errors.push("drain: --drain-max-secs reached".into());
    }
    for c in &retry {
        finish(&mut part, c);
    }
    part.worst.sort_by_key(|w| std::cmp::Reverse(w.1));
    part.worst.truncate(5);
    part
}

/// Reconnects one batch of sessions and takes what the broker sends them until each has every
/// acknowledged message; returns true when it stalled: gave up after `idle` without a packet
/// (or at the deadline) with sessions still incomplete. Connection failures go to `errors`.
fn drain_batch(
    broker: Broker,
    state: &State,
    checks: &mut [SessionCheck],
    idle: Duration,
    deadline: Instant,
    errors: &mut Vec<String>,
    longest_silence: &mut Duration,
) -> bool {
    let version = state.version;
    let matching = state.layout.matching;
    let options = DecodeOptions::new(version);
    let Ok(mut poll) = Poll::new() else {
        errors.push("mio poll".into());
        return true;
    };
    let started = Instant::now();
    let mut conns: Vec<DrainConn> = Vec::with_capacity(checks.len());
    for (idx, check) in checks.iter().enumerate() {
        let id = session_id(&state.client_prefix, check.s);
        let opened = (|| -> Result<Stream<mio::net::TcpStream>, String> {
            let mut stream = open_blocking(broker.addr, HANDSHAKE_TIMEOUT, broker.tls)?;
            // The session expiry given here only matters for MQTT 5; it keeps the session.
            let connect = connect_packet(version, &id, KEEP_ALIVE_SECS, Some(86_400))?;
            send_blocking(&mut stream, &connect, version)?;
            into_mio(stream)
        })();
        match opened {
            Ok(stream) => {
                let mut c = DrainConn {
                    stream,
                    rbuf: BytesMut::with_capacity(4096),
                    wbuf: BytesMut::new(),
                    readable: true,
                    writable: true,
                    closed: None,
                    step: DrainStep::Connecting,
                    idx,
                };
                if let Err(e) = poll.registry().register(
                    c.stream.socket_mut(),
                    Token(conns.len()),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    errors.push(format!("{id}: mio register: {e}"));
                    continue;
                }
                conns.push(c);
            }
            Err(e) => errors.push(format!("{id}: {e}")),
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut last_progress = Instant::now();
    loop {
        if conns.iter().all(|c| matches!(c.step, DrainStep::Done)) {
            break;
        }
        let now = Instant::now();
        if now >= deadline || now.duration_since(last_progress) >= idle {
            break;
        }
        let busy = conns.iter().any(|c| {
            !matches!(c.step, DrainStep::Done)
                && (c.readable || (c.writable && (!c.wbuf.is_empty() || c.stream.wants_write())))
        });
        let timeout = if busy {
            Duration::ZERO
        } else {
            Duration::from_millis(5)
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                errors.push(format!("poll: {e}"));
                return true;
            }
        }
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                c.readable = true;
            }
            if ev.is_writable() || ev.is_write_closed() {
                c.writable = true;
            }
        }
        for c in conns.iter_mut() {
            if matches!(c.step, DrainStep::Done) {
                continue;
            }
            let check = &mut checks[c.idx];
            if c.readable {
                let eof = read_into(
                    &mut c.stream,
                    &mut c.rbuf,
                    &mut scratch,
                    &mut c.readable,
                    &mut c.closed,
                );
                loop {
                    let packet = match decode(&mut c.rbuf, &options) {
                        Ok(Some(p)) => p,
                        Ok(None) => break,
                        Err(e) => {
                            c.closed.get_or_insert(format!("decode: {e}"));
                            break;
                        }
                    };
                    let now = Instant::now();
                    *longest_silence = (*longest_silence).max(now - last_progress);
                    last_progress = now;
                    match packet {
                        Packet::ConnAck(a) if matches!(c.step, DrainStep::Connecting) => {
                            if a.reason_code.is_error() {
                                c.closed
                                    .get_or_insert(format!("CONNACK refused: {:?}", a.reason_code));
                                break;
                            }
                            check.connacks += 1;
                            check.not_present |= !a.session_present;
                            c.step = DrainStep::Draining;
                        }
                        Packet::Publish(p) => {
                            check.record(matching, p.topic.as_bytes(), &p.payload);
                            if p.qos != QoS::AtMostOnce {
                                let _ = Packet::PubAck(Ack::new(p.packet_id))
                                    .encode(version, &mut c.wbuf);
                            }
                        }
                        Packet::PingResp => {}
                        Packet::Disconnect(d) => {
                            c.closed.get_or_insert(format!(
                                "DISCONNECT from the broker: {:?}",
                                d.reason_code
                            ));
                        }
                        other => {
                            c.closed
                                .get_or_insert(format!("unexpected {:?}", other.packet_type()));
                            break;
                        }
                    }
                }
                if matches!(c.step, DrainStep::Draining) && check.complete() {
                    // Everything acknowledged arrived: acknowledge, then leave.
                    let _ = Packet::Disconnect(Disconnect::NORMAL).encode(version, &mut c.wbuf);
                    c.step = DrainStep::Closing;
                }
                if eof {
                    if !matches!(c.step, DrainStep::Closing) {
                        let why = c.closed.clone().unwrap_or_default();
                        errors.push(format!(
                            "{}: {why}",
                            session_id(&state.client_prefix, check.s)
                        ));
                    }
                    c.step = DrainStep::Done;
                    continue;
                }
            }
            if c.writable && (!c.wbuf.is_empty() || c.stream.wants_write()) {
                let mut closed = None;
                write_out(&mut c.stream, &mut c.wbuf, &mut c.writable, &mut closed);
                if let Some(e) = closed {
                    if !matches!(c.step, DrainStep::Closing) {
                        errors.push(format!(
                            "{}: {e}",
                            session_id(&state.client_prefix, check.s)
                        ));
                    }
                    c.step = DrainStep::Done;
                }
            }
        }
    }
    let stalled = checks.iter().any(|c| !c.complete())
        && conns.iter().any(|c| !matches!(c.step, DrainStep::Done));
    if stalled {
        // Where each unfinished session was when the batch gave up.
        let (mut no_connack, mut nothing, mut partly) = (0, 0, 0);
        for c in &conns {
            let check = &checks[c.idx];
            match c.step {
                DrainStep::Connecting => no_connack += 1,
                DrainStep::Draining if check.received == 0 => nothing += 1,
                DrainStep::Draining => partly += 1,
                _ => {}
            }
        }
        errors.push(format!(
            "stall: batch of {} sessions from {}, {:.3} s after its start: {} sessions without CONNACK, {} with CONNACK and no message, {} part-drained; nothing for {} ms",
            checks.len(),
            session_id(&state.client_prefix, checks[0].s),
            started.elapsed().as_secs_f64(),
            no_connack,
            nothing,
            partly,
            idle.as_millis()
        ));
    }
    stalled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layouts() -> Vec<Layout> {
        let mut v = Vec::new();
        for (sessions, publishers) in [(1, 1), (7, 3), (10, 10), (100, 7), (5, 1)] {
            for matching in [Match::Own, Match::All] {
                v.push(Layout {
                    sessions,
                    publishers,
                    matching,
                });
            }
        }
        v
    }

    /// Enumerating what each publisher sends gives, for every (session, publisher) stream, the
    /// numbers 0..stream_len without gaps or repeats, and the topics the sessions subscribe to.
    #[test]
    fn streams_are_gapless_and_match_stream_len() {
        for l in layouts() {
            for count in [0u64, 1, 5, 13, 100, 101] {
                let mut seen = vec![vec![Vec::new(); l.publishers]; l.sessions];
                for p in 0..l.publishers {
                    let topics = l.topics(p);
                    for j in 0..count {
                        let (target, seq) = l.target(p, j);
                        let topic = &topics[(j % topics.len() as u64) as usize];
                        match target {
                            Some(s) => {
                                assert_eq!(topic, &l.filter(s), "{l:?}");
                                seen[s][p].push(seq);
                            }
                            None => {
                                assert!(
                                    topic.starts_with("bench/off/") && l.filter(0) == "bench/off/+"
                                );
                                for row in &mut seen {
                                    row[p].push(seq);
                                }
                            }
                        }
                    }
                }
                for (s, row) in seen.iter().enumerate() {
                    for (p, seqs) in row.iter().enumerate() {
                        let n = l.stream_len(s, p, count);
                        assert_eq!(seqs, &(0..n).collect::<Vec<_>>(), "{l:?} s{s} p{p} {count}");
                        if n > 0 {
                            assert!(l.publishers_of(s).contains(&p));
                        }
                    }
                }
            }
        }
    }

    fn state(l: Layout, published: Vec<u64>, acked_prefix: Vec<u64>) -> State {
        State {
            layout: l,
            client_prefix: "t".into(),
            version: ProtocolVersion::V3_1_1,
            payload_bytes: 64,
            acked: acked_prefix.clone(),
            published,
            acked_prefix,
        }
    }

    fn payload(p: u32, seq: u64) -> Bytes {
        payload::write(
            &mut BytesMut::new(),
            64,
            Stamp {
                publisher: p,
                seq,
                sent_ns: 1,
            },
        )
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = state(
            Layout {
                sessions: 9,
                publishers: 2,
                matching: Match::All,
            },
            vec![10, 11],
            vec![10, 9],
        );
        let text = serde_json::to_string(&s.to_json()).unwrap();
        let back = State::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn session_check_counts_loss_duplicates_reordering_and_misrouting() {
        let l = Layout {
            sessions: 4,
            publishers: 2,
            matching: Match::Own,
        };
        // Publisher 0 serves sessions 0 and 2; it published 9 messages, 7 acknowledged in a row.
        let st = state(l, vec![9, 8], vec![7, 8]);
        let mut c = SessionCheck::new(&st, 2);
        // Session 2 is the second of publisher 0's two sessions: messages 1, 3, 5 (acked) and
        // 7 (published, never acknowledged): sequence numbers 0, 1, 2 acknowledged, 3 not.
        assert_eq!(st.layout.stream_len(2, 0, 7), 3);
        assert!(!c.complete());
        let topic = b"bench/off/2";
        assert_eq!(
            c.record(Match::Own, topic, &payload(0, 0)),
            Some(Arrival::InOrder)
        );
        assert_eq!(
            c.record(Match::Own, topic, &payload(0, 2)),
            Some(Arrival::InOrder)
        );
        assert!(!c.complete());
        assert_eq!(
            c.record(Match::Own, topic, &payload(0, 1)),
            Some(Arrival::Reordered)
        );
        assert!(c.complete());
        assert_eq!(
            c.record(Match::Own, topic, &payload(0, 1)),
            Some(Arrival::Duplicate)
        );
        // The unacknowledged one may come.
        assert_eq!(
            c.record(Match::Own, topic, &payload(0, 3)),
            Some(Arrival::InOrder)
        );
        // Wrong topic, wrong publisher, garbage.
        assert_eq!(c.record(Match::Own, b"bench/off/0", &payload(0, 0)), None);
        assert_eq!(c.record(Match::Own, topic, &payload(1, 0)), None);
        assert_eq!(c.record(Match::Own, topic, b"short"), None);
        let t = c.tally();
        assert_eq!(
            t,
            Tally {
                expected: 3,
                received: 8,
                lost: 0,
                duplicated: 1,
                reordered: 1,
                unexpected: 3,
                unacked_delivered: 1,
                sessions_with_loss: 0,
                sessions_not_present: 0,
                sessions_no_connack: 1,
            }
        );
        // A session that got nothing lost everything acknowledged for it.
        let t = SessionCheck::new(&st, 0).tally();
        assert_eq!((t.expected, t.lost, t.sessions_with_loss), (4, 4, 1));
        // Numbers never published are unexpected.
        let mut c = SessionCheck::new(&st, 1);
        for seq in 0..4 {
            c.record(Match::Own, b"bench/off/1", &payload(1, seq));
        }
        assert!(c.complete());
        c.record(Match::Own, b"bench/off/1", &payload(1, 4));
        assert_eq!(c.tally().unexpected, 1);
    }

    #[test]
    fn session_check_in_the_all_layout_expects_every_publisher() {
        let l = Layout {
            sessions: 3,
            publishers: 2,
            matching: Match::All,
        };
        let st = state(l, vec![2, 1], vec![2, 1]);
        let mut c = SessionCheck::new(&st, 1);
        c.record(Match::All, b"bench/off/p0", &payload(0, 0));
        c.record(Match::All, b"bench/off/p1", &payload(1, 0));
        assert!(!c.complete());
        // Right publisher on the wrong topic does not count.
        c.record(Match::All, b"bench/off/p1", &payload(0, 1));
        assert!(!c.complete());
        c.record(Match::All, b"bench/off/p0", &payload(0, 1));
        assert!(c.complete());
        let t = c.tally();
        assert_eq!((t.expected, t.received, t.lost, t.unexpected), (3, 4, 0, 1));
    }
}
