//! `ringmq-bench`: the MQTT load generator of ringmq.
//!
//! Publishers and subscribers run in this one process, spread over a few threads, each a `mio`
//! loop over many connections. Every payload carries the publisher's id, a sequence number and
//! the send time, so that the subscribers can count what was lost, duplicated or reordered and
//! measure latency on one clock. With `--broker-pid`, the broker's CPU time over the measured
//! window and its memory are read from `/proc`.

mod cli;
mod counter;
mod offline;
mod payload;
mod procfs;
mod worker;

use std::process::ExitCode;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use cli::{Options, Scenario};
use worker::{Report, Role, Settings, Shared, Worker};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match cli::parse(&args) {
        Ok(cli::Parsed::Run(o)) => o,
        Ok(cli::Parsed::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ringmq-bench: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringmq-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The connections of a scenario, and which publishers each subscriber expects to hear.
struct Plan {
    roles: Vec<Role>,
    publishers: usize,
    /// Indexed by subscriber id: the publisher ids it must receive every message of.
    expects: Vec<Vec<u32>>,
}

fn plan(o: &Options) -> Plan {
    let mut roles = Vec::new();
    let mut expects = Vec::new();
    let publishers;
    match o.scenario {
        Scenario::FanIn => {
            publishers = o.publishers;
            roles.push(Role::Subscriber {
                id: 0,
                filter: "bench/fanin/+".into(),
                slots: (0..publishers as u32).map(|p| (p, 0)).collect(),
            });
            expects.push((0..publishers as u32).collect());
            for i in 0..publishers as u32 {
                roles.push(Role::Publisher {
                    id: i,
                    topic: format!("bench/fanin/{i}"),
                });
            }
        }
        Scenario::FanOut => {
            publishers = 1;
            for j in 0..o.subscribers as u32 {
                roles.push(Role::Subscriber {
                    id: j,
                    filter: "bench/fanout".into(),
                    slots: vec![(0, j as usize)],
                });
                expects.push(vec![0]);
            }
            roles.push(Role::Publisher {
                id: 0,
                topic: "bench/fanout".into(),
            });
        }
        Scenario::Offline => unreachable!("offline has its own driver"),
        Scenario::P2p => {
            publishers = o.pairs;
            for i in 0..o.pairs as u32 {
                roles.push(Role::Subscriber {
                    id: i,
                    filter: format!("bench/p2p/{i}"),
                    slots: vec![(i, 0)],
                });
                expects.push(vec![i]);
            }
            for i in 0..o.pairs as u32 {
                roles.push(Role::Publisher {
                    id: i,
                    topic: format!("bench/p2p/{i}"),
                });
            }
        }
    }
    Plan {
        roles,
        publishers,
        expects,
    }
}

/// CPU seconds and memory of the broker, if its pid was given.
fn broker_cpu(o: &Options) -> Result<Option<f64>, String> {
    o.broker_pid
        .map(|pid| procfs::cpu_secs(pid).map_err(|e| format!("broker pid {pid}: {e}")))
        .transpose()
}

fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

fn run(o: &Options) -> Result<(), String> {
    let addr = cli::resolve(&o.host, o.port)?;
    if o.scenario == Scenario::Offline {
        return offline::run(o, addr);
    }
    let plan = plan(o);
    let threads = o.threads.clamp(1, plan.roles.len());
    let settings = Settings {
        addr,
        version: o.version,
        qos: o.qos,
        payload_bytes: o.payload_bytes,
        rate_per_publisher: if o.rate == 0 {
            0.0
        } else {
            o.rate as f64 / plan.publishers as f64
        },
        inflight: o.inflight,
        // Every (subscriber, publisher) stream gets an equal share of the window.
        window_per_publisher: if o.rate == 0 && o.window > 0 {
            let streams: usize = plan.expects.iter().map(Vec::len).sum();
            o.window.div_ceil(streams.max(1) as u64)
        } else {
            0
        },
        keep_alive_secs: 60,
        client_prefix: format!("rmqb{}", std::process::id()),
        publishers: plan.publishers,
        handshake_timeout: Duration::from_secs(10),
    };
    let mut shares: Vec<Vec<Role>> = vec![Vec::new(); threads];
    for (k, role) in plan.roles.iter().enumerate() {
        shares[k % threads].push(role.clone());
    }
    let mut watchers = vec![0usize; plan.publishers];
    for e in &plan.expects {
        for &p in e {
            watchers[p as usize] += 1;
        }
    }
    let mut owner = vec![0usize; plan.publishers];
    for (w, roles) in shares.iter().enumerate() {
        for role in roles {
            if let Role::Publisher { id, .. } = role {
                owner[*id as usize] = w;
            }
        }
    }
    let shared = Shared::new(&watchers, owner, threads);
    if let Some(pid) = o.broker_pid {
        procfs::cpu_secs(pid).map_err(|e| format!("broker pid {pid}: {e}"))?;
    }

    std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(i, roles)| {
                let worker = Worker::new(i, settings.clone(), roles);
                let shared = &shared;
                std::thread::Builder::new()
                    .name(format!("bench-{i}"))
                    .spawn_scoped(scope, move || worker.run(shared))
                    .expect("spawn a worker thread")
            })
            .collect();
        let join = |shared: &Shared| -> Vec<Report> {
            shared.finish.store(true, Relaxed);
            handles
                .into_iter()
                .map(|h| h.join().expect("worker thread panicked"))
                .collect()
        };

        // Set-up: every connection connected and subscribed.
        let failed = |shared: &Shared| {
            shared
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        let setup_deadline = Instant::now() + Duration::from_secs(120);
        wait_until(setup_deadline, || {
            shared.ready.load(Relaxed) == threads || failed(&shared).is_some()
        });
        if let Some(why) = failed(&shared) {
            join(&shared);
            return Err(format!("set-up failed: {why}"));
        }
        if shared.ready.load(Relaxed) != threads {
            join(&shared);
            return Err("set-up did not finish in 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(o.settle_ms));

        // Measured window: from go to the end of the drain.
        let cpu0 = broker_cpu(o)?;
        let gen0 = procfs::cpu_secs(std::process::id()).ok();
        let go_ns = shared.now_ns().max(1);
        shared.go_ns.store(go_ns, Relaxed);
        std::thread::sleep(Duration::from_secs_f64(o.duration_secs));
        shared.stop.store(true, Relaxed);
        let stop_ns = shared.now_ns();
        wait_until(Instant::now() + Duration::from_secs(10), || {
            shared.stopped.load(Acquire) == threads
        });
        let sent: Vec<u64> = shared.sent.iter().map(|s| s.load(Relaxed)).collect();
        let expected: u64 = sent
            .iter()
            .zip(&watchers)
            .map(|(&s, &m)| s * m as u64)
            .sum();

        // Drain: until everything expected arrived and was acknowledged, nothing moved for
        // `drain_idle_ms`, or `drain_max_secs` passed.
        let drain_start = Instant::now();
        let (mut last_seen, mut last_change) = ((u64::MAX, u64::MAX), Instant::now());
        let drain_complete = loop {
            let distinct = shared.distinct.load(Relaxed);
            let unacked: u64 = shared.unacked.iter().map(|u| u.load(Relaxed)).sum();
            if distinct >= expected && unacked == 0 {
                break true;
            }
            let now = (shared.received.load(Relaxed), unacked);
            if now != last_seen {
                (last_seen, last_change) = (now, Instant::now());
            } else if last_change.elapsed() >= Duration::from_millis(o.drain_idle_ms) {
                break false;
            }
            if drain_start.elapsed() >= Duration::from_secs_f64(o.drain_max_secs) {
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let end_ns = shared.now_ns();
        let cpu1 = broker_cpu(o)?;
        let gen1 = procfs::cpu_secs(std::process::id()).ok();
        let rss = o.broker_pid.and_then(|pid| procfs::rss_kib(pid).ok());
        let last_receive_ns = shared.last_receive_ns.load(Relaxed);
        let reports = join(&shared);

        let window = Window {
            go_ns,
            stop_ns,
            end_ns,
            last_receive_ns,
            drain_complete,
        };
        let broker = BrokerUsage {
            cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
            rss_kib: rss,
            generator_cpu_s: gen0.zip(gen1).map(|(a, b)| b - a),
        };
        let summary = summarize(&plan, &sent, expected, reports);
        print_results(o, &summary, &window, &broker);
        Ok(())
    })
}

struct Window {
    go_ns: u64,
    stop_ns: u64,
    end_ns: u64,
    last_receive_ns: u64,
    drain_complete: bool,
}

struct BrokerUsage {
    cpu_s: Option<f64>,
    rss_kib: Option<(u64, u64)>,
    generator_cpu_s: Option<f64>,
}

struct Summary {
    sent: u64,
    expected: u64,
    received: u64,
    distinct: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    /// Deliveries from a publisher the subscriber did not subscribe to, or foreign payloads.
    unexpected: u64,
    /// Streams that delivered sequence numbers never sent.
    beyond_sent: u64,
    /// (subscriber, publisher, lost) for the streams with the most loss.
    worst: Vec<(u32, u32, u64)>,
    streams_with_loss: u64,
    errors: Vec<String>,
    unexpected_acks: u64,
    latency: Histogram<u64>,
}

fn summarize(plan: &Plan, sent: &[u64], expected: u64, reports: Vec<Report>) -> Summary {
    let mut s = Summary {
        sent: sent.iter().sum(),
        expected,
        received: 0,
        distinct: 0,
        lost: 0,
        duplicated: 0,
        reordered: 0,
        unexpected: 0,
        beyond_sent: 0,
        worst: Vec::new(),
        streams_with_loss: 0,
        errors: Vec::new(),
        unexpected_acks: 0,
        latency: Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
            .expect("valid histogram bounds"),
    };
    for r in reports {
        let _ = s.latency.add(&r.latency);
        s.errors.extend(r.errors);
        s.unexpected_acks += r.unexpected_acks;
        for sub in r.subscribers {
            s.unexpected += sub.foreign;
            s.received += sub.foreign;
            let expects = &plan.expects[sub.id as usize];
            for (p, stream) in sub.streams.iter().enumerate() {
                s.received += stream.received();
                if !expects.contains(&(p as u32)) {
                    s.unexpected += stream.received();
                    continue;
                }
                s.distinct += stream.distinct();
                let lost = stream.lost(sent[p]);
                s.lost += lost;
                s.duplicated += stream.duplicates();
                s.reordered += stream.reordered();
                if stream.beyond(sent[p]) {
                    s.beyond_sent += 1;
                }
                if lost > 0 {
                    s.streams_with_loss += 1;
                    s.worst.push((sub.id, p as u32, lost));
                }
            }
        }
    }
    s.worst.sort_by_key(|w| std::cmp::Reverse(w.2));
    s.worst.truncate(5);
    s
}

fn percentile_us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn print_results(o: &Options, s: &Summary, w: &Window, b: &BrokerUsage) {
    let secs = |ns: u64| ns as f64 / 1e9;
    let publish_s = secs(w.stop_ns - w.go_ns);
    let delivery_s = secs(w.last_receive_ns.max(w.stop_ns) - w.go_ns);
    let measured_s = secs(w.end_ns - w.go_ns);
    let msgs_per_s = s.sent as f64 / publish_s;
    let deliveries_per_s = s.received as f64 / delivery_s;
    let per_cpu = b.cpu_s.filter(|&c| c > 0.0).map(|c| s.received as f64 / c);
    let (p50, p99, p999, max) = (
        percentile_us(&s.latency, 0.5),
        percentile_us(&s.latency, 0.99),
        percentile_us(&s.latency, 0.999),
        s.latency.max() as f64 / 1000.0,
    );
    let version = match o.version {
        ringmq_codec::ProtocolVersion::V5 => "5",
        _ => "3.1.1",
    };

    println!(
        "{} against {} ({}:{}), MQTT {version}, QoS {}, {} B payloads, {} publishers, {} subscribers, {}",
        o.scenario.name(),
        o.label,
        o.host,
        o.port,
        o.qos as u8,
        o.payload_bytes,
        s_publishers(o),
        s_subscribers(o),
        if o.rate > 0 {
            format!("{} msgs/s offered", o.rate)
        } else if o.window > 0 {
            format!("flat out, closed loop: window {} deliveries", o.window)
        } else {
            "flat out, open loop".to_string()
        }
    );
    println!(
        "  published  {:>12} in {publish_s:.2} s = {msgs_per_s:.0} msgs/s",
        s.sent
    );
    println!(
        "  delivered  {:>12} in {delivery_s:.2} s = {deliveries_per_s:.0} deliveries/s (expected {}, drain {})",
        s.received,
        s.expected,
        if w.drain_complete { "complete" } else { "timed out or idle" }
    );
    println!(
        "  lost {} (in {} streams), duplicated {}, reordered {}, unexpected {}",
        s.lost, s.streams_with_loss, s.duplicated, s.reordered, s.unexpected
    );
    for (sub, publ, lost) in &s.worst {
        println!("    subscriber {sub} lost {lost} of publisher {publ}");
    }
    println!("  latency    p50 {p50:.0} us, p99 {p99:.0} us, p99.9 {p999:.0} us, max {max:.0} us");
    match (b.cpu_s, per_cpu) {
        (Some(cpu), Some(pc)) => println!(
            "  broker     {cpu:.2} CPU-s over {measured_s:.2} s ({:.0}% of one core), {pc:.0} deliveries per broker CPU-second",
            100.0 * cpu / measured_s
        ),
        (Some(cpu), None) => println!("  broker     {cpu:.2} CPU-s over {measured_s:.2} s"),
        _ => println!("  broker     CPU not measured (no --broker-pid)"),
    }
    if let Some((rss, hwm)) = b.rss_kib {
        println!("  broker     RSS {rss} KiB (peak {hwm} KiB)");
    }
    if let Some(g) = b.generator_cpu_s {
        println!("  generator  {g:.2} CPU-s over the same window");
    }
    if s.beyond_sent > 0 || s.unexpected_acks > 0 {
        println!(
            "  ANOMALY    {} streams delivered numbers never sent, {} PUBACKs for ids not in flight",
            s.beyond_sent, s.unexpected_acks
        );
    }
    for e in s.errors.iter().take(10) {
        println!("  error      {e}");
    }
    if s.errors.len() > 10 {
        println!("  error      ... {} more", s.errors.len() - 10);
    }

    let json = serde_json::json!({
        "scenario": o.scenario.name(),
        "broker": o.label,
        "mqtt_version": version,
        "qos": o.qos as u8,
        "payload_bytes": o.payload_bytes,
        "publishers": s_publishers(o),
        "subscribers": s_subscribers(o),
        "rate_offered": o.rate,
        "window": if o.rate == 0 { o.window } else { 0 },
        "duration_s": round(publish_s, 3),
        "sent": s.sent,
        "expected": s.expected,
        "received": s.received,
        "msgs_per_s": round(msgs_per_s, 1),
        "deliveries_per_s": round(deliveries_per_s, 1),
        "lost": s.lost,
        "duplicated": s.duplicated,
        "reordered": s.reordered,
        "unexpected": s.unexpected,
        "errors": s.errors.len(),
        "drain_complete": w.drain_complete,
        "latency_us": {
            "p50": round(p50, 1),
            "p99": round(p99, 1),
            "p999": round(p999, 1),
            "max": round(max, 1),
        },
        "broker_cpu_s": b.cpu_s.map(|c| round(c, 3)),
        "broker_deliveries_per_cpu_s": per_cpu.map(|x| round(x, 1)),
        "broker_rss_kib": b.rss_kib.map(|r| r.0),
        "broker_rss_peak_kib": b.rss_kib.map(|r| r.1),
        "generator_cpu_s": b.generator_cpu_s.map(|c| round(c, 3)),
        "measured_s": round(measured_s, 3),
    });
    println!("{json}");
}

fn s_publishers(o: &Options) -> usize {
    match o.scenario {
        Scenario::FanIn => o.publishers,
        Scenario::FanOut => 1,
        Scenario::P2p | Scenario::Offline => o.pairs,
    }
}

fn s_subscribers(o: &Options) -> usize {
    match o.scenario {
        Scenario::FanIn => 1,
        Scenario::FanOut => o.subscribers,
        Scenario::P2p | Scenario::Offline => o.pairs,
    }
}
