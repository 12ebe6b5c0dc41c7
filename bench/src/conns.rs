//! `conn` and `storm`: many MQTT connections that do nothing but connect and stay.
//!
//! The parent process forks `--workers` copies of this binary (each with `--worker-index`),
//! so that no process holds more descriptors than its limit allows; each worker opens its share
//! of the connections (connection `i` belongs to worker `i mod K`) in one `mio` loop, and
//! reports over its stdout, one JSON object a line: `progress` twice a second, `connected` when
//! its share is connected (or failed), `stormed` after a storm, and `final` with its counters
//! and latency histograms. The parent tells the workers what to do next over their stdin
//! (`storm`, `finish`), reads the broker's RSS and CPU time between the steps, and sums.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use ringmq_codec::{decode, DecodeOptions, Disconnect, Packet, ProtocolVersion};
use serde_json::{json, Value};

use crate::cli::{Options, Scenario, StormMode};
use crate::tls::{self, Stream, TlsClient};
use crate::worker::connect_packet;
use crate::{procfs, Progress};

fn epoch_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// A histogram as `[[value, count], ...]`, for the pipe between processes.
fn histogram_to_json(h: &Histogram<u64>) -> Value {
    Value::Array(
        h.iter_recorded()
            .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

fn histogram_from_json(v: &Value, into: &mut Histogram<u64>) -> Result<(), String> {
    for pair in v.as_array().ok_or("histogram: not an array")? {
        let (value, count) = (
            pair.get(0).and_then(Value::as_u64),
            pair.get(1).and_then(Value::as_u64),
        );
        match (value, count) {
            (Some(value), Some(count)) => into.saturating_record_n(value, count),
            _ => return Err(format!("histogram: bad entry {pair}")),
        }
    }
    Ok(())
}

fn add_counts(into: &mut BTreeMap<String, u64>, v: &Value) {
    if let Some(m) = v.as_object() {
        for (k, n) in m {
            *into.entry(k.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
    }
}

/// Connections per process that fit under its descriptor limit, keeping `reserve` for the rest.
pub fn fits_fd_limit(connections: usize, workers: usize, limit: u64, reserve: u64) -> bool {
    connections.div_ceil(workers) as u64 + reserve <= limit
}

/// Raises the soft descriptor limit to the hard one; returns the soft limit after.
fn raise_fd_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    r.rlim_cur
}

const FD_RESERVE: u64 = 64;

pub fn run(o: &Options, addr: SocketAddr) -> Result<(), String> {
    match o.worker_index {
        Some(index) => worker_main(o, addr, index),
        None => parent(o, addr),
    }
}

// ---------------------------------------------------------------------------------------------
// The parent: forks the workers, steps them, measures the broker, sums.

struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
}

fn version_name(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V5 => "5",
        _ => "3.1.1",
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn rss(o: &Options) -> Option<u64> {
    o.broker_pid
        .and_then(|pid| procfs::rss_kib(pid).ok())
        .map(|r| r.0)
}

fn cpu(o: &Options) -> Option<f64> {
    o.broker_pid.and_then(|pid| procfs::cpu_secs(pid).ok())
}

/// Waits for one message of type `kind` from every worker, printing progress meanwhile.
fn wait_all(
    rx: &mpsc::Receiver<(usize, Value)>,
    workers: usize,
    kind: &str,
    limit: Duration,
    progress: &mut Progress,
    finals: &mut [Option<Value>],
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut got = vec![false; workers];
    let mut latest: Vec<Value> = vec![Value::Null; workers];
    while got.iter().any(|g| !g) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("workers did not report {kind:?} within {limit:?}"));
        }
        match rx.recv_timeout(left.min(Duration::from_millis(250))) {
            Ok((w, v)) => {
                let t = v["t"].as_str().unwrap_or("");
                if t == "progress" {
                    latest[w] = v;
                } else if t == "final" {
                    finals[w] = Some(v.clone());
                    if kind == "final" {
                        got[w] = true;
                    } else {
                        return Err(format!(
                            "worker {w} ended early: {}",
                            v["error"].as_str().unwrap_or("see its output")
                        ));
                    }
                } else if t == kind {
                    got[w] = true;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!("a worker exited before reporting {kind:?}"));
            }
        }
        let sum = |k: &str| {
            latest
                .iter()
                .map(|v| v[k].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        progress.tick(&format!(
            "connected {}, failed {}, reconnected {}, in flight {}",
            sum("connected"),
            sum("failed"),
            sum("reconnected"),
            sum("inflight")
        ));
    }
    Ok(())
}

fn hold(secs: f64, progress: &mut Progress, what: &str) {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        progress.tick(what);
        std::thread::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100)),
        );
    }
}

fn tell(workers: &mut [WorkerProc], line: &str) {
    for w in workers {
        if let Some(stdin) = w.stdin.as_mut() {
            let _ = stdin.write_all(line.as_bytes());
            let _ = stdin.flush();
        }
    }
}

fn parent(o: &Options, addr: SocketAddr) -> Result<(), String> {
    let limit = raise_fd_limit();
    if !fits_fd_limit(o.connections, o.workers, limit, FD_RESERVE) {
        return Err(format!(
            "{} connections over {} worker(s) is {} per process, above this machine's limit of \
             {limit} descriptors (less {FD_RESERVE}): use --workers {}",
            o.connections,
            o.workers,
            o.connections.div_ceil(o.workers),
            o.connections
                .div_ceil(limit.saturating_sub(FD_RESERVE).max(1) as usize)
        ));
    }
    if let Some(pid) = o.broker_pid {
        procfs::rss_kib(pid).map_err(|e| format!("broker pid {pid}: {e}"))?;
    }
    let prefix = if o.client_prefix_given {
        o.client_prefix.clone()
    } else {
        format!("rmqc{}", std::process::id())
    };
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let args: Vec<String> = std::env::args().skip(1).collect();

    let rss_before = rss(o);
    let cpu_before = cpu(o);
    let (tx, rx) = mpsc::channel::<(usize, Value)>();
    let mut procs = Vec::new();
    for w in 0..o.workers {
        let mut child = Command::new(&exe)
            .args(&args)
            .args(["--worker-index", &w.to_string(), "--client-prefix", &prefix])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start worker {w}: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send((w, v)).is_err() {
                        break;
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        procs.push(WorkerProc { child, stdin });
    }
    drop(tx);
    let result = drive(o, &rx, &mut procs, rss_before, cpu_before, addr);
    // Whatever happened: the workers finish (stdin closed) and are waited for.
    for p in &mut procs {
        p.stdin = None;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in &mut procs {
        loop {
            match p.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break;
                }
            }
        }
    }
    result
}

fn drive(
    o: &Options,
    rx: &mpsc::Receiver<(usize, Value)>,
    procs: &mut [WorkerProc],
    rss_before: Option<u64>,
    cpu_before: Option<f64>,
    addr: SocketAddr,
) -> Result<(), String> {
    let k = o.workers;
    let mut finals: Vec<Option<Value>> = vec![None; k];
    let mut progress = Progress::new(o.scenario.name());
    // Each worker bounds every handshake; this bounds the whole connect phase.
    let connect_limit = Duration::from_secs(900);
    wait_all(
        rx,
        k,
        "connected",
        connect_limit,
        &mut progress,
        &mut finals,
    )?;
    let cpu_connected = cpu(o);
    let rss_connected = rss(o);
    let storm = o.scenario == Scenario::Storm;
    hold(
        o.hold_secs,
        &mut progress,
        &format!("holding for {} s", o.hold_secs),
    );
    let rss_after_hold = rss(o);
    let mut rss_after_storm = None;
    let mut cpu_storm = None;
    if storm {
        let c0 = cpu(o);
        tell(procs, "storm\n");
        wait_all(rx, k, "stormed", connect_limit, &mut progress, &mut finals)?;
        cpu_storm = c0.zip(cpu(o)).map(|(a, b)| b - a);
        // Let the broker finish with the old connections before reading its memory.
        hold(1.0, &mut progress, "after the storm");
        rss_after_storm = rss(o);
    }
    tell(procs, "finish\n");
    wait_all(
        rx,
        k,
        "final",
        Duration::from_secs(120),
        &mut progress,
        &mut finals,
    )?;
    progress.done();

    // Sum the workers.
    let mut t = Totals::default();
    for f in finals.iter().flatten() {
        t.add(f)?;
    }
    let connected = t.connect.ok;
    let connect_s = t.connect.span_s();
    let per_conn = |after: Option<u64>| {
        rss_before
            .zip(after)
            .filter(|_| connected > 0)
            .map(|(b, a)| (a as f64 - b as f64) * 1024.0 / connected as f64)
    };
    let rss_per_conn = per_conn(rss_after_hold);
    let cpu_connect = cpu_before.zip(cpu_connected).map(|(a, b)| b - a);
    let lat = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1000.0
        }
    };
    let version = version_name(o.version);
    let sessions = if o.persistent { "persistent" } else { "clean" };
    let fmt_counts = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(k, v)| format!("{v} × {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    println!(
        "{} against {} ({addr}{}), MQTT {version}, {sessions} sessions, {} connections over {} worker(s), {}",
        o.scenario.name(),
        o.label,
        if o.tls.is_some() { ", TLS" } else { "" },
        o.connections,
        k,
        if o.rate > 0 {
            format!("{} connects/s offered", o.rate)
        } else {
            format!("flat out, {} handshakes in flight", o.handshakes)
        }
    );
    println!(
        "  connected  {connected} in {connect_s:.2} s = {:.0} CONNACKs/s; failed {}: {}",
        connected as f64 / connect_s.max(1e-9),
        t.connect.failed(),
        fmt_counts(&t.connect.failures)
    );
    println!(
        "  CONNACK    p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us (connect() to CONNACK)",
        lat(&t.connect.hist, 0.5),
        lat(&t.connect.hist, 0.99),
        lat(&t.connect.hist, 0.999),
        t.connect.hist.max() as f64 / 1000.0
    );
    println!(
        "  held       {} s; {} PINGREQs; closed while held: {}; session present on first connect: {}",
        o.hold_secs,
        t.pings,
        fmt_counts(&t.idle_failures),
        t.connect.session_present
    );
    if let (Some(b), Some(c), Some(a)) = (rss_before, rss_connected, rss_after_hold) {
        println!(
            "  broker     RSS {b} KiB before, {c} KiB connected, {a} KiB after holding: {:.0} bytes per connection",
            rss_per_conn.unwrap_or(0.0)
        );
    }
    if let Some(c) = cpu_connect {
        println!(
            "  broker     {c:.2} CPU-s for the connect phase = {:.1} us per connection",
            c * 1e6 / connected.max(1) as f64
        );
    }
    let mut out = json!({
        "scenario": o.scenario.name(),
        "broker": o.label,
        "mqtt_version": version,
        "tls": o.tls.is_some(),
        "persistent": o.persistent,
        "connections": o.connections,
        "workers": k,
        "rate_offered": o.rate,
        "handshakes": o.handshakes,
        "source_addrs": o.source_addrs.len(),
        "keep_alive_s": o.keep_alive_secs,
        "connected": connected,
        "failed": t.connect.failed(),
        "failures": t.connect.failures,
        "connect_s": round(connect_s, 3),
        "connects_per_s": round(connected as f64 / connect_s.max(1e-9), 1),
        "connack_latency_us": {
            "p50": round(lat(&t.connect.hist, 0.5), 1),
            "p99": round(lat(&t.connect.hist, 0.99), 1),
            "p999": round(lat(&t.connect.hist, 0.999), 1),
            "max": round(t.connect.hist.max() as f64 / 1000.0, 1),
        },
        "session_present_on_connect": t.connect.session_present,
        "hold_s": o.hold_secs,
        "pings_sent": t.pings,
        "closed_while_held": t.idle_failures,
        "broker_rss_before_kib": rss_before,
        "broker_rss_connected_kib": rss_connected,
        "broker_rss_after_kib": rss_after_hold,
        "broker_rss_per_conn_bytes": rss_per_conn.map(|x| round(x, 1)),
        "broker_cpu_connect_s": cpu_connect.map(|c| round(c, 3)),
        "broker_cpu_us_per_connect": cpu_connect.map(|c| round(c * 1e6 / connected.max(1) as f64, 2)),
    });
    if storm {
        let r = &t.reconnect;
        let span = r.span_s();
        // Persistent sessions must be resumed (session present 1); clean ones must not.
        let expected_present = if o.persistent { r.ok } else { 0 };
        let wrong = r.session_present.abs_diff(expected_present);
        println!(
            "  storm      {} clients {}: {} reconnected in {span:.2} s = {:.0} reconnects/s; failed {}: {}",
            t.storm_clients,
            match o.storm_mode {
                StormMode::Disconnect => "sent DISCONNECT",
                StormMode::Drop => "dropped (RST)",
            },
            r.ok,
            r.ok as f64 / span.max(1e-9),
            r.failed(),
            fmt_counts(&r.failures)
        );
        println!(
            "  CONNACK    p50 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us (reconnects)",
            lat(&r.hist, 0.5),
            lat(&r.hist, 0.99),
            lat(&r.hist, 0.999),
            r.hist.max() as f64 / 1000.0
        );
        println!(
            "  sessions   {} of {} reconnects with session present (expected {}): {}",
            r.session_present,
            r.ok,
            expected_present,
            if wrong == 0 {
                "correct".to_string()
            } else {
                format!("{wrong} WRONG")
            }
        );
        if let Some(c) = cpu_storm {
            println!(
                "  broker     {c:.2} CPU-s for the storm = {:.1} us per reconnect; RSS after it {} KiB",
                c * 1e6 / r.ok.max(1) as f64,
                rss_after_storm.unwrap_or(0)
            );
        }
        out["storm_mode"] = json!(match o.storm_mode {
            StormMode::Disconnect => "disconnect",
            StormMode::Drop => "drop",
        });
        out["storm_clients"] = json!(t.storm_clients);
        out["disconnect_failures"] = json!(t.disconnect_failures);
        out["reconnected"] = json!(r.ok);
        out["reconnect_failed"] = json!(r.failed());
        out["reconnect_failures"] = json!(r.failures);
        out["reconnect_s"] = json!(round(span, 3));
        out["reconnects_per_s"] = json!(round(r.ok as f64 / span.max(1e-9), 1));
        out["reconnect_latency_us"] = json!({
            "p50": round(lat(&r.hist, 0.5), 1),
            "p99": round(lat(&r.hist, 0.99), 1),
            "p999": round(lat(&r.hist, 0.999), 1),
            "max": round(r.hist.max() as f64 / 1000.0, 1),
        });
        out["session_present_on_reconnect"] = json!(r.session_present);
        out["session_present_expected"] = json!(expected_present);
        out["session_present_wrong"] = json!(wrong);
        out["broker_cpu_storm_s"] = json!(cpu_storm.map(|c| round(c, 3)));
        out["broker_rss_after_storm_kib"] = json!(rss_after_storm);
    }
    println!("{out}");
    Ok(())
}

/// One step's counters (the first connects, or the reconnects of a storm).
struct PhaseTotals {
    ok: u64,
    failures: BTreeMap<String, u64>,
    session_present: u64,
    /// Wall-clock ns: the first handshake started, the last CONNACK arrived.
    first_ns: Option<u64>,
    last_ns: u64,
    hist: Histogram<u64>,
}

impl PhaseTotals {
    fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    fn span_s(&self) -> f64 {
        match self.first_ns {
            Some(f) if self.last_ns > f => (self.last_ns - f) as f64 / 1e9,
            _ => 0.0,
        }
    }

    fn add(&mut self, v: &Value) -> Result<(), String> {
        self.ok += v["ok"].as_u64().unwrap_or(0);
        add_counts(&mut self.failures, &v["failures"]);
        self.session_present += v["session_present"].as_u64().unwrap_or(0);
        if let Some(f) = v["first_ns"].as_u64() {
            self.first_ns = Some(self.first_ns.map_or(f, |x| x.min(f)));
        }
        self.last_ns = self.last_ns.max(v["last_ns"].as_u64().unwrap_or(0));
        histogram_from_json(&v["hist"], &mut self.hist)
    }
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            connect: PhaseTotals::empty(),
            reconnect: PhaseTotals::empty(),
            idle_failures: BTreeMap::new(),
            disconnect_failures: BTreeMap::new(),
            pings: 0,
            storm_clients: 0,
        }
    }
}

impl PhaseTotals {
    fn empty() -> Self {
        Self {
            ok: 0,
            failures: BTreeMap::new(),
            session_present: 0,
            first_ns: None,
            last_ns: 0,
            hist: new_histogram(),
        }
    }
}

struct Totals {
    connect: PhaseTotals,
    reconnect: PhaseTotals,
    idle_failures: BTreeMap<String, u64>,
    disconnect_failures: BTreeMap<String, u64>,
    pings: u64,
    storm_clients: u64,
}

impl Totals {
    fn add(&mut self, f: &Value) -> Result<(), String> {
        if let Some(e) = f["error"].as_str() {
            return Err(format!("a worker failed: {e}"));
        }
        self.connect.add(&f["connect"])?;
        self.reconnect.add(&f["reconnect"])?;
        add_counts(&mut self.idle_failures, &f["idle_failures"]);
        add_counts(&mut self.disconnect_failures, &f["disconnect_failures"]);
        self.pings += f["pings"].as_u64().unwrap_or(0);
        self.storm_clients += f["storm_clients"].as_u64().unwrap_or(0);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// A worker: one mio loop over its share of the connections.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not started (or waiting to reconnect).
    Waiting,
    /// connect() in progress.
    Connecting,
    /// CONNECT sent, no CONNACK yet.
    AwaitConnAck,
    /// Connected, idle.
    Idle,
    /// DISCONNECT sent (or to be sent), waiting for the broker to close.
    Disconnecting,
    /// Gave up on it.
    Failed,
    /// Closed for good.
    Done,
}

struct Slot {
    /// The connection's number in the whole run (its client id and source address).
    index: usize,
    stream: Option<Stream<mio::net::TcpStream>>,
    state: State,
    /// When the handshake (or the disconnect) started.
    since: Instant,
    last_write: Instant,
    rbuf: BytesMut,
    out: Vec<u8>,
    /// Part of the storm (reconnects count in the storm's step).
    storm: bool,
}

/// One step's counters in a worker.
struct PhaseStats {
    ok: u64,
    failures: BTreeMap<String, u64>,
    session_present: u64,
    first_ns: Option<u64>,
    last_ns: u64,
    hist: Histogram<u64>,
}

impl PhaseStats {
    fn new() -> Self {
        Self {
            ok: 0,
            failures: BTreeMap::new(),
            session_present: 0,
            first_ns: None,
            last_ns: 0,
            hist: new_histogram(),
        }
    }

    fn fail(&mut self, kind: String) {
        *self.failures.entry(kind).or_default() += 1;
    }

    fn to_json(&self) -> Value {
        json!({
            "ok": self.ok,
            "failures": self.failures,
            "session_present": self.session_present,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "hist": histogram_to_json(&self.hist),
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Connect,
    Hold,
    Storm,
    Finish,
}

struct Ctx {
    addr: SocketAddr,
    version: ProtocolVersion,
    prefix: String,
    keep_alive: u16,
    persistent: Option<u32>,
    sources: Vec<Ipv4Addr>,
    handshake_timeout: Duration,
    options: DecodeOptions,
    /// `--tls`: each connection through this client; the handshake counts in its time to
    /// CONNACK.
    tls: Option<TlsClient>,
}

const STDIN: Token = Token(usize::MAX - 1);

fn emit(v: &Value) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn worker_main(o: &Options, addr: SocketAddr, index: usize) -> Result<(), String> {
    raise_fd_limit();
    let ctx = Ctx {
        addr,
        version: o.version,
        prefix: o.client_prefix.clone(),
        keep_alive: o.keep_alive_secs,
        persistent: o.persistent.then_some(o.session_expiry_secs),
        sources: o.source_addrs.clone(),
        handshake_timeout: Duration::from_secs_f64(o.handshake_timeout_secs),
        options: DecodeOptions::new(o.version),
        tls: o.tls.as_ref().map(TlsClient::new).transpose()?,
    };
    match worker_loop(o, &ctx, index) {
        Ok(v) => {
            emit(&v);
            Ok(())
        }
        Err(e) => {
            emit(&json!({"t": "final", "error": e}));
            Err(e)
        }
    }
}

/// Starts a non-blocking connect from the slot's source address.
fn start_connect(ctx: &Ctx, slot: &mut Slot) -> io::Result<mio::net::TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(ctx.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if !ctx.sources.is_empty() {
        let ip = ctx.sources[slot.index % ctx.sources.len()];
        // Choose the port at connect time, by the whole 4-tuple, not at bind time: the same
        // port serves several destinations, and TIME_WAIT entries can be reused.
        let one: libc::c_int = 1;
        // SAFETY: a valid socket, option value and length.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket
            .bind(&SocketAddr::from((ip, 0)).into())
            .map_err(|e| io::Error::new(e.kind(), format!("bind {ip}: {e}")))?;
    }
    match socket.connect(&ctx.addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(std::net::TcpStream::from(
        socket,
    )))
}

/// A short name for an I/O failure, for the failure table.
fn io_kind(what: &str, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!(
            "{what}: {}",
            io::Error::from_raw_os_error(code)
                .to_string()
                .split(" (os error")
                .next()
                .unwrap_or("")
        ),
        None => format!("{what}: {e}"),
    }
}

fn worker_loop(o: &Options, ctx: &Ctx, index: usize) -> Result<Value, String> {
    let k = o.workers;
    let mut slots: Vec<Slot> = (index..o.connections)
        .step_by(k)
        .map(|i| Slot {
            index: i,
            stream: None,
            state: State::Waiting,
            since: Instant::now(),
            last_write: Instant::now(),
            rbuf: BytesMut::new(),
            out: Vec::new(),
            storm: false,
        })
        .collect();
    let share = slots.len();
    // The share of this worker in the rate and the handshake bound.
    let rate = o.rate as f64 / k as f64;
    let max_inflight = if o.rate > 0 {
        usize::MAX
    } else {
        o.handshakes.div_ceil(k).max(1)
    };
    let mut poll = Poll::new().map_err(|e| format!("mio poll: {e}"))?;
    let stdin_fd = io::stdin().as_raw_fd();
    // SAFETY: fcntl on our own stdin.
    unsafe {
        let flags = libc::fcntl(stdin_fd, libc::F_GETFL);
        libc::fcntl(stdin_fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    poll.registry()
        .register(
            &mut mio::unix::SourceFd(&stdin_fd),
            STDIN,
            Interest::READABLE,
        )
        .map_err(|e| format!("register stdin: {e}"))?;

    let mut connect = PhaseStats::new();
    let mut reconnect = PhaseStats::new();
    let mut idle_failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut disconnect_failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut pings = 0u64;
    let mut storm_clients = 0u64;

    let mut waiting: VecDeque<usize> = (0..share).collect();
    let mut inflight = 0usize;
    let mut step = Step::Connect;
    let mut step_start = Instant::now();
    let mut started_in_step = 0u64;
    let mut finish_deadline = None;
    let mut events = Events::with_capacity(4096);
    let mut scratch = vec![0u8; 4096];
    let mut stdin_buf = Vec::new();
    let mut last_progress = Instant::now();
    let mut last_scan = Instant::now();
    let mut last_ping_scan = Instant::now();

    loop {
        // Start handshakes that are due.
        if matches!(step, Step::Connect | Step::Storm) {
            while inflight < max_inflight {
                if rate > 0.0 {
                    let due = step_start + Duration::from_secs_f64(started_in_step as f64 / rate);
                    if Instant::now() < due {
                        break;
                    }
                }
                let Some(i) = waiting.pop_front() else { break };
                started_in_step += 1;
                let slot = &mut slots[i];
                let stats = if slot.storm {
                    &mut reconnect
                } else {
                    &mut connect
                };
                slot.since = Instant::now();
                stats.first_ns.get_or_insert_with(epoch_ns);
                match start_connect(ctx, slot) {
                    Ok(mut stream) => {
                        if let Err(e) = poll.registry().register(
                            &mut stream,
                            Token(i),
                            Interest::READABLE | Interest::WRITABLE,
                        ) {
                            stats.fail(io_kind("register", &e));
                            slot.state = State::Failed;
                            continue;
                        }
                        match tls::stream(stream, ctx.tls.as_ref()) {
                            Ok(stream) => slot.stream = Some(stream),
                            Err(e) => {
                                stats.fail(e);
                                slot.state = State::Failed;
                                continue;
                            }
                        }
                        slot.state = State::Connecting;
                        inflight += 1;
                    }
                    Err(e) => {
                        stats.fail(io_kind("connect", &e));
                        slot.state = State::Failed;
                    }
                }
            }
        }

        // Step transitions.
        let busy = slots
            .iter()
            .any(|s| matches!(s.state, State::Connecting | State::AwaitConnAck));
        let pending_disconnects = slots.iter().any(|s| s.state == State::Disconnecting);
        if step == Step::Connect && waiting.is_empty() && !busy {
            step = Step::Hold;
            emit(&json!({"t": "connected", "ok": connect.ok}));
        }
        if step == Step::Storm && waiting.is_empty() && !busy && !pending_disconnects {
            step = Step::Hold;
            emit(&json!({"t": "stormed", "ok": reconnect.ok}));
        }
        if step == Step::Finish
            && (!pending_disconnects || finish_deadline.is_some_and(|d| Instant::now() >= d))
        {
            break;
        }

        let timeout = if matches!(step, Step::Connect | Step::Storm) && !waiting.is_empty() {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(50)
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("poll: {e}"));
            }
        }
        let mut command = None;
        for ev in events.iter() {
            if ev.token() == STDIN {
                let mut buf = [0u8; 256];
                loop {
                    // SAFETY: reading into a local buffer of that length.
                    let n = unsafe { libc::read(stdin_fd, buf.as_mut_ptr().cast(), buf.len()) };
                    if n > 0 {
                        stdin_buf.extend_from_slice(&buf[..n as usize]);
                        continue;
                    }
                    if n == 0 {
                        // The parent is gone or done with us: finish.
                        stdin_buf.extend_from_slice(b"finish\n");
                        let _ = poll
                            .registry()
                            .deregister(&mut mio::unix::SourceFd(&stdin_fd));
                    }
                    break;
                }
                while let Some(pos) = stdin_buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = stdin_buf.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&line).trim().to_string();
                    if !line.is_empty() {
                        command = Some(line);
                    }
                }
                continue;
            }
            let i = ev.token().0;
            let slot = &mut slots[i];
            let was_handshaking = matches!(slot.state, State::Connecting | State::AwaitConnAck);
            let stats = if slot.storm {
                &mut reconnect
            } else {
                &mut connect
            };
            let outcome = on_event(ctx, slot, stats, &mut scratch, ev.is_writable());
            if was_handshaking && !matches!(slot.state, State::Connecting | State::AwaitConnAck) {
                inflight -= 1;
            }
            match outcome {
                Outcome::Nothing => {}
                Outcome::ClosedIdle(why) => {
                    *idle_failures.entry(why).or_default() += 1;
                }
                Outcome::Disconnected => {
                    if step == Step::Storm && slot.storm {
                        slot.state = State::Waiting;
                        waiting.push_back(i);
                    } else {
                        slot.state = State::Done;
                    }
                }
            }
        }

        match command.as_deref() {
            Some("storm") if step == Step::Hold => {
                step = Step::Storm;
                step_start = Instant::now();
                started_in_step = 0;
                reconnect.first_ns = Some(epoch_ns());
                for (i, slot) in slots.iter_mut().enumerate() {
                    if slot.state != State::Idle {
                        continue;
                    }
                    storm_clients += 1;
                    slot.storm = true;
                    match o.storm_mode {
                        StormMode::Disconnect => {
                            send_disconnect(ctx, slot);
                        }
                        StormMode::Drop => {
                            if let Some(stream) = slot.stream.take() {
                                let _ = socket2::SockRef::from(stream.socket())
                                    .set_linger(Some(Duration::ZERO));
                                drop(stream);
                            }
                            slot.state = State::Waiting;
                            waiting.push_back(i);
                        }
                    }
                }
            }
            Some("finish") if step != Step::Finish => {
                step = Step::Finish;
                waiting.clear();
                finish_deadline = Some(Instant::now() + Duration::from_secs(5));
                for slot in slots.iter_mut() {
                    match slot.state {
                        State::Idle => send_disconnect(ctx, slot),
                        State::Connecting | State::AwaitConnAck => {
                            slot.stream = None;
                            slot.state = State::Done;
                        }
                        _ => {}
                    }
                }
                inflight = 0;
            }
            _ => {}
        }

        let now = Instant::now();
        if now.duration_since(last_scan) >= Duration::from_millis(100) {
            last_scan = now;
            for (i, slot) in slots.iter_mut().enumerate() {
                let late = now.duration_since(slot.since) >= ctx.handshake_timeout;
                match slot.state {
                    State::Connecting | State::AwaitConnAck if late => {
                        let stats = if slot.storm {
                            &mut reconnect
                        } else {
                            &mut connect
                        };
                        stats.fail(if slot.state == State::Connecting {
                            "timeout: no TCP connection".into()
                        } else {
                            "timeout: no CONNACK".into()
                        });
                        slot.stream = None;
                        slot.state = State::Failed;
                        inflight -= 1;
                    }
                    State::Disconnecting if late => {
                        *disconnect_failures
                            .entry("the broker did not close after DISCONNECT".into())
                            .or_default() += 1;
                        slot.stream = None;
                        if step == Step::Storm && slot.storm {
                            slot.state = State::Waiting;
                            waiting.push_back(i);
                        } else {
                            slot.state = State::Done;
                        }
                    }
                    _ => {}
                }
            }
        }
        if ctx.keep_alive > 0 && now.duration_since(last_ping_scan) >= Duration::from_secs(1) {
            last_ping_scan = now;
            let idle =
                Duration::from_secs(u64::from(ctx.keep_alive) / 2).max(Duration::from_secs(1));
            for slot in slots.iter_mut() {
                if slot.state == State::Idle && now.duration_since(slot.last_write) >= idle {
                    let mut out = BytesMut::new();
                    let _ = Packet::PingReq.encode(ctx.version, &mut out);
                    write_out(slot, &out);
                    pings += 1;
                }
            }
        }
        if now.duration_since(last_progress) >= Duration::from_millis(500) {
            last_progress = now;
            emit(&json!({
                "t": "progress",
                "connected": slots.iter().filter(|s| s.state == State::Idle).count(),
                "failed": connect.failures.values().sum::<u64>() + reconnect.failures.values().sum::<u64>(),
                "reconnected": reconnect.ok,
                "inflight": inflight,
            }));
        }
    }
    Ok(json!({
        "t": "final",
        "connect": connect.to_json(),
        "reconnect": reconnect.to_json(),
        "idle_failures": idle_failures,
        "disconnect_failures": disconnect_failures,
        "pings": pings,
        "storm_clients": storm_clients,
    }))
}

/// What an event on a connection led to, beyond its own state.
enum Outcome {
    Nothing,
    /// An idle connection closed, with the reason.
    ClosedIdle(String),
    /// A connection we disconnected is closed.
    Disconnected,
}

/// Writes what it can now, keeps the rest for the next writable event.
fn write_out(slot: &mut Slot, bytes: &[u8]) {
    slot.out.extend_from_slice(bytes);
    flush(slot);
}

/// Returns an error text if the connection broke.
fn flush(slot: &mut Slot) -> Option<String> {
    let stream = slot.stream.as_mut()?;
    loop {
        if slot.out.is_empty() {
            // TLS records (the handshake, or what the socket did not take) go now or on the
            // next writable event.
            return match stream.flush() {
                Ok(()) => None,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                Err(e) => Some(io_kind("write", &e)),
            };
        }
        match stream.write(&slot.out) {
            Ok(0) => return Some("write returned 0".into()),
            Ok(n) => {
                slot.out.drain(..n);
                slot.last_write = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(io_kind("write", &e)),
        }
    }
}

fn send_disconnect(ctx: &Ctx, slot: &mut Slot) {
    let mut out = BytesMut::new();
    let _ = Packet::Disconnect(Disconnect::NORMAL).encode(ctx.version, &mut out);
    slot.state = State::Disconnecting;
    slot.since = Instant::now();
    write_out(slot, &out);
}

/// Reads what is there; `Ok(true)` at end of stream.
fn read_in(slot: &mut Slot, scratch: &mut [u8]) -> Result<bool, String> {
    let Some(stream) = slot.stream.as_mut() else {
        return Ok(true);
    };
    loop {
        match stream.read(scratch) {
            Ok(0) => return Ok(true),
            Ok(n) => slot.rbuf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_kind("read", &e)),
        }
    }
}

fn on_event(
    ctx: &Ctx,
    slot: &mut Slot,
    stats: &mut PhaseStats,
    scratch: &mut [u8],
    writable: bool,
) -> Outcome {
    if slot.stream.is_none() {
        return Outcome::Nothing;
    }
    if slot.state == State::Connecting {
        let stream = slot.stream.as_ref().expect("checked").socket();
        match stream.take_error() {
            Ok(Some(e)) | Err(e) => {
                stats.fail(io_kind("connect", &e));
                slot.stream = None;
                slot.state = State::Failed;
                return Outcome::Nothing;
            }
            Ok(None) => {}
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Outcome::Nothing,
            Err(e) => {
                stats.fail(io_kind("connect", &e));
                slot.stream = None;
                slot.state = State::Failed;
                return Outcome::Nothing;
            }
        }
        let id = format!("{}-{}", ctx.prefix, slot.index);
        let mut out = BytesMut::new();
        match connect_packet(ctx.version, &id, ctx.keep_alive, ctx.persistent).and_then(|p| {
            p.encode(ctx.version, &mut out)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }) {
            Ok(()) => {}
            Err(e) => {
                stats.fail(format!("CONNECT: {e}"));
                slot.stream = None;
                slot.state = State::Failed;
                return Outcome::Nothing;
            }
        }
        slot.state = State::AwaitConnAck;
        write_out(slot, &out);
    } else if writable
        && (!slot.out.is_empty() || slot.stream.as_ref().is_some_and(Stream::wants_write))
    {
        if let Some(e) = flush(slot) {
            return broke(slot, stats, e);
        }
    }
    let eof = match read_in(slot, scratch) {
        Ok(eof) => eof,
        Err(e) => return broke(slot, stats, e),
    };
    loop {
        let packet = match decode(&mut slot.rbuf, &ctx.options) {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => return broke(slot, stats, format!("decode: {e}")),
        };
        match (slot.state, packet) {
            (State::AwaitConnAck, Packet::ConnAck(ack)) => {
                if ack.reason_code.is_error() {
                    stats.fail(format!("CONNACK refused: {:?}", ack.reason_code));
                    slot.stream = None;
                    slot.state = State::Failed;
                    return Outcome::Nothing;
                }
                stats.ok += 1;
                stats.session_present += u64::from(ack.session_present);
                let ns = slot.since.elapsed().as_nanos() as u64;
                stats.hist.saturating_record(ns.max(1));
                stats.last_ns = stats.last_ns.max(epoch_ns());
                slot.state = State::Idle;
            }
            (State::AwaitConnAck, other) => {
                return broke(
                    slot,
                    stats,
                    format!("expected CONNACK, got {:?}", other.packet_type()),
                );
            }
            (_, Packet::PingResp) => {}
            (State::Idle, Packet::Disconnect(d)) => {
                return broke(
                    slot,
                    stats,
                    format!("DISCONNECT from the broker: {:?}", d.reason_code),
                );
            }
            _ => {}
        }
    }
    if eof {
        return match slot.state {
            State::Disconnecting => {
                slot.stream = None;
                Outcome::Disconnected
            }
            _ => broke(slot, stats, "closed by the broker".into()),
        };
    }
    Outcome::Nothing
}

/// A connection broke: a handshake failure, or an idle connection lost.
fn broke(slot: &mut Slot, stats: &mut PhaseStats, why: String) -> Outcome {
    slot.stream = None;
    match slot.state {
        State::Connecting | State::AwaitConnAck => {
            stats.fail(if slot.state == State::Connecting {
                why
            } else {
                format!("before CONNACK: {why}")
            });
            slot.state = State::Failed;
            Outcome::Nothing
        }
        State::Disconnecting => Outcome::Disconnected,
        _ => {
            slot.state = State::Failed;
            Outcome::ClosedIdle(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_the_pipe() {
        let mut h = new_histogram();
        for v in [1u64, 5, 5, 1_000, 23_500_000, 1_000_000_000] {
            h.record(v).unwrap();
        }
        let text = histogram_to_json(&h).to_string();
        let mut back = new_histogram();
        histogram_from_json(&serde_json::from_str(&text).unwrap(), &mut back).unwrap();
        assert_eq!(back.len(), h.len());
        for q in [0.0, 0.5, 0.99, 1.0] {
            assert_eq!(back.value_at_quantile(q), h.value_at_quantile(q), "{q}");
        }
        // Two workers add up.
        histogram_from_json(&serde_json::from_str(&text).unwrap(), &mut back).unwrap();
        assert_eq!(back.len(), 2 * h.len());
        assert!(histogram_from_json(&json!([[1]]), &mut back).is_err());
        assert!(histogram_from_json(&json!({}), &mut back).is_err());
    }

    #[test]
    fn worker_reports_are_summed() {
        let mut h = new_histogram();
        h.record(2_000).unwrap();
        let worker = |ok: u64, first: u64, last: u64, failures: Value| {
            json!({
                "t": "final",
                "connect": {"ok": ok, "failures": failures, "session_present": 1,
                            "first_ns": first, "last_ns": last, "hist": histogram_to_json(&h)},
                "reconnect": {"ok": 0, "failures": {}, "session_present": 0,
                              "first_ns": null, "last_ns": 0, "hist": []},
                "idle_failures": {"closed by the broker": 2},
                "disconnect_failures": {},
                "pings": 3,
                "storm_clients": 0,
            })
        };
        let mut t = Totals::default();
        t.add(&worker(
            10,
            5_000_000_000,
            6_000_000_000,
            json!({"connect: Connection refused": 1}),
        ))
        .unwrap();
        t.add(&worker(
            20,
            4_000_000_000,
            5_500_000_000,
            json!({"connect: Connection refused": 2, "timeout: no CONNACK": 1}),
        ))
        .unwrap();
        assert_eq!(t.connect.ok, 30);
        assert_eq!(t.connect.failed(), 4);
        assert_eq!(t.connect.failures["connect: Connection refused"], 3);
        assert_eq!(t.connect.session_present, 2);
        // From the earliest start to the latest CONNACK, over both processes.
        assert_eq!(t.connect.span_s(), 2.0);
        assert_eq!(t.connect.hist.len(), 2);
        assert_eq!(t.idle_failures["closed by the broker"], 4);
        assert_eq!(t.pings, 6);
        assert_eq!(t.reconnect.span_s(), 0.0);
        assert!(t.add(&json!({"t": "final", "error": "boom"})).is_err());
    }

    #[test]
    fn descriptor_limit_per_worker() {
        // 19,000 connections: one process of 20,000 descriptors cannot hold them with its
        // reserve... it can (19,064); 39,000 need two.
        assert!(fits_fd_limit(19_000, 1, 20_000, 64));
        assert!(!fits_fd_limit(39_000, 1, 20_000, 64));
        assert!(fits_fd_limit(39_000, 2, 20_000, 64));
        assert!(!fits_fd_limit(19_950, 1, 20_000, 64));
        assert!(fits_fd_limit(3, 2, 66, 64));
        assert!(!fits_fd_limit(5, 2, 66, 64));
    }
}
