//! `ringmq-bench`: the MQTT load generator of ringmq.
//!
//! Publishers and subscribers run in this one process, spread over a few threads, each a `mio`
//! loop over many connections. Every payload carries the publisher's id, a sequence number and
//! the send time, so that the subscribers can count what was lost, duplicated or reordered and
//! measure latency on one clock. With `--broker-pid`, the broker's CPU time over the measured
//! window and its memory are read from `/proc`.

mod cli;
mod conns;
mod counter;
mod offline;
mod payload;
mod procfs;
mod tls;
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
    /// Indexed by subscriber id: the publisher ids it must receive every message of (for a
    /// shared subscription: that the group must receive, each message at one member).
    expects: Vec<Vec<u32>>,
    /// Per publisher: how many times each of its messages must be delivered, which is also
    /// the number of its slots in `Shared::progress`.
    watchers: Vec<usize>,
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
        Scenario::SharedSub => {
            publishers = o.publishers;
            // One progress slot per publisher, shared by the members: it counts the messages
            // the group received, so the window bounds what is in flight to the whole group.
            for j in 0..o.subscribers as u32 {
                roles.push(Role::Subscriber {
                    id: j,
                    filter: format!("$share/{}/bench/shared/+", o.group),
                    slots: (0..publishers as u32).map(|p| (p, 0)).collect(),
                });
                expects.push((0..publishers as u32).collect());
            }
            for i in 0..publishers as u32 {
                roles.push(Role::Publisher {
                    id: i,
                    topic: format!("bench/shared/{i}"),
                });
            }
            let watchers = vec![1; publishers];
            return Plan {
                roles,
                publishers,
                expects,
                watchers,
            };
        }
        Scenario::Pub => {
            publishers = o.publishers;
            let topic = o.topic.as_deref().unwrap_or("bench/pubsub/{i}");
            for i in 0..publishers as u32 {
                roles.push(Role::Publisher {
                    id: i,
                    topic: topic.replace("{i}", &(o.id_base + i).to_string()),
                });
            }
        }
        Scenario::Sub => {
            // Publisher ids come from the payloads; no progress slots (no window).
            publishers = o.max_publishers;
            let filter = o.topic.clone().unwrap_or_else(|| "bench/pubsub/+".into());
            for j in 0..o.subscribers as u32 {
                roles.push(Role::Subscriber {
                    id: j,
                    filter: filter.clone(),
                    slots: Vec::new(),
                });
                expects.push((0..publishers as u32).collect());
            }
            return Plan {
                roles,
                publishers,
                expects,
                watchers: vec![0; publishers],
            };
        }
        Scenario::Offline | Scenario::Conn | Scenario::Storm => {
            unreachable!("{} has its own driver", o.scenario.name())
        }
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
    let mut watchers = vec![0usize; publishers];
    for e in &expects {
        for &p in e {
            watchers[p as usize] += 1;
        }
    }
    Plan {
        roles,
        publishers,
        expects,
        watchers,
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
    match o.scenario {
        Scenario::Offline => return offline::run(o, addr),
        Scenario::Conn | Scenario::Storm => return conns::run(o, addr),
        _ => {}
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
            let streams: usize = plan.watchers.iter().sum();
            o.window.div_ceil(streams.max(1) as u64)
        } else {
            0
        },
        keep_alive_secs: 60,
        client_prefix: format!("rmqb{}", std::process::id()),
        publishers: plan.publishers,
        handshake_timeout: Duration::from_secs(10),
        id_base: if o.scenario == Scenario::Pub {
            o.id_base
        } else {
            0
        },
        count_per_publisher: if o.scenario == Scenario::Pub {
            o.count
        } else {
            0
        },
        group_window: o.scenario == Scenario::SharedSub,
        sub_read_bytes_per_sec: o.sub_read_bytes_per_sec,
        tls: o.tls.as_ref().map(tls::TlsClient::new).transpose()?,
    };
    let mut shares: Vec<Vec<Role>> = vec![Vec::new(); threads];
    for (k, role) in plan.roles.iter().enumerate() {
        shares[k % threads].push(role.clone());
    }
    let watchers = plan.watchers.clone();
    let mut owner = vec![0usize; plan.publishers];
    for (w, roles) in shares.iter().enumerate() {
        for role in roles {
            if let Role::Publisher { id, .. } = role {
                owner[*id as usize] = w;
            }
        }
    }
    let wall_clock = matches!(o.scenario, Scenario::Pub | Scenario::Sub);
    let shared = Shared::new(&watchers, owner, threads, wall_clock);
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
        let deadline = Instant::now() + Duration::from_secs_f64(o.duration_secs);
        let mut progress = Progress::new(o.scenario.name());
        let count = o.count;
        let subscribers = plan.expects.len() as u64;
        wait_until(deadline, || {
            let received = shared.received.load(Relaxed);
            let sent: u64 = shared.sent.iter().map(|s| s.load(Relaxed)).sum();
            progress.tick(&format!("sent {sent}, received {received}"));
            match o.scenario {
                Scenario::Pub => {
                    count > 0
                        && shared.sent.iter().all(|s| s.load(Relaxed) >= count)
                        && shared.unacked.iter().all(|u| u.load(Relaxed) == 0)
                }
                Scenario::Sub => {
                    (count > 0 && shared.distinct.load(Relaxed) >= count * subscribers)
                        || (received > 0
                            && shared
                                .now_ns()
                                .saturating_sub(shared.last_receive_ns.load(Relaxed))
                                >= o.drain_idle_ms * 1_000_000)
                }
                _ => false,
            }
        });
        progress.done();
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
        let summary = summarize(o.scenario, &plan, &sent, expected, reports);
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
    /// sharedsub: extra deliveries of a message to a second member (part of `duplicated`).
    across_members: u64,
    /// Deliveries per subscriber (per member, for sharedsub).
    member_received: Vec<u64>,
    /// sub: publishers heard from.
    publishers_seen: u64,
}

fn summarize(
    scenario: Scenario,
    plan: &Plan,
    sent: &[u64],
    expected: u64,
    reports: Vec<Report>,
) -> Summary {
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
        across_members: 0,
        member_received: Vec::new(),
        publishers_seen: 0,
    };
    // Shared subscription: the members' streams of each publisher, tallied as one group.
    let mut group: Vec<Vec<counter::StreamCounter>> = vec![Vec::new(); plan.publishers];
    let mut seen = vec![false; plan.publishers];
    for r in reports {
        let _ = s.latency.add(&r.latency);
        s.errors.extend(r.errors);
        s.unexpected_acks += r.unexpected_acks;
        for sub in r.subscribers {
            s.unexpected += sub.foreign;
            s.received += sub.foreign;
            let expects = &plan.expects[sub.id as usize];
            let mut member = 0;
            for (p, stream) in sub.streams.into_iter().enumerate() {
                member += stream.received();
                if !expects.contains(&(p as u32)) {
                    s.received += stream.received();
                    s.unexpected += stream.received();
                    continue;
                }
                if scenario == Scenario::SharedSub {
                    group[p].push(stream);
                    continue;
                }
                s.received += stream.received();
                seen[p] |= stream.received() > 0;
                // A standalone subscriber knows no sent count: gaps below the highest number.
                let sent_p = if scenario == Scenario::Sub {
                    stream.high_water()
                } else {
                    sent[p]
                };
                s.distinct += stream.distinct();
                let lost = stream.lost(sent_p);
                s.lost += lost;
                s.duplicated += stream.duplicates();
                s.reordered += stream.reordered();
                if stream.beyond(sent_p) {
                    s.beyond_sent += 1;
                }
                if lost > 0 {
                    s.streams_with_loss += 1;
                    s.worst.push((sub.id, p as u32, lost));
                }
            }
            s.member_received.push(member);
        }
    }
    for (p, members) in group.iter().enumerate() {
        if scenario != Scenario::SharedSub {
            break;
        }
        let refs: Vec<&counter::StreamCounter> = members.iter().collect();
        let t = counter::group_tally(&refs, sent[p]);
        s.received += t.received;
        s.distinct += t.distinct;
        s.lost += t.lost;
        s.duplicated += t.duplicated();
        s.across_members += t.across_members;
        s.reordered += t.reordered;
        if members.iter().any(|m| m.beyond(sent[p])) {
            s.beyond_sent += 1;
        }
        if t.lost > 0 {
            s.streams_with_loss += 1;
            s.worst.push((u32::MAX, p as u32, t.lost));
        }
    }
    s.publishers_seen = seen.iter().filter(|&&x| x).count() as u64;
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
        "{} against {} ({}:{}{}), MQTT {version}, QoS {}, {} B payloads, {} publishers, {} subscribers, {}",
        o.scenario.name(),
        o.label,
        o.host,
        o.port,
        if o.tls.is_some() { ", TLS" } else { "" },
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
        if *sub == u32::MAX {
            println!("    the group lost {lost} of publisher {publ}");
        } else {
            println!("    subscriber {sub} lost {lost} of publisher {publ}");
        }
    }
    if o.scenario == Scenario::SharedSub {
        let (lo, hi) = (
            s.member_received.iter().min().copied().unwrap_or(0),
            s.member_received.iter().max().copied().unwrap_or(0),
        );
        println!(
            "  group      {} deliveries reached a second member; per member {lo} to {hi} deliveries",
            s.across_members
        );
    }
    if o.scenario == Scenario::Sub {
        println!(
            "  sub        {} publishers heard; lost = gaps below each publisher's highest number",
            s.publishers_seen
        );
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
        "tls": o.tls.is_some(),
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
    let mut json = json;
    if o.sub_read_bytes_per_sec > 0 {
        json["sub_read_bytes_per_sec"] = o.sub_read_bytes_per_sec.into();
    }
    if o.scenario == Scenario::SharedSub {
        json["group"] = o.group.clone().into();
        json["duplicated_across_members"] = s.across_members.into();
        json["member_received"] = s.member_received.clone().into();
    }
    if o.scenario == Scenario::Sub {
        json["publishers_seen"] = s.publishers_seen.into();
        json["topic"] = o.topic.clone().into();
    }
    if o.scenario == Scenario::Pub {
        json["topic"] = o.topic.clone().into();
        json["id_base"] = o.id_base.into();
        json["count"] = o.count.into();
    }
    println!("{json}");
}

fn s_publishers(o: &Options) -> usize {
    match o.scenario {
        Scenario::FanIn | Scenario::SharedSub | Scenario::Pub => o.publishers,
        Scenario::FanOut => 1,
        Scenario::Sub | Scenario::Conn | Scenario::Storm => 0,
        Scenario::P2p | Scenario::Offline => o.pairs,
    }
}

fn s_subscribers(o: &Options) -> usize {
    match o.scenario {
        Scenario::FanIn => 1,
        Scenario::FanOut | Scenario::SharedSub | Scenario::Sub => o.subscribers,
        Scenario::Pub | Scenario::Conn | Scenario::Storm => 0,
        Scenario::P2p | Scenario::Offline => o.pairs,
    }
}

/// The live progress line on stderr, once a second: rewritten in place on a terminal, one
/// line each time otherwise.
pub struct Progress {
    name: &'static str,
    start: Instant,
    last: Instant,
    tty: bool,
    printed: bool,
}

impl Progress {
    pub fn new(name: &'static str) -> Self {
        // SAFETY: isatty has no preconditions.
        let tty = unsafe { libc::isatty(2) } == 1;
        let now = Instant::now();
        Self {
            name,
            start: now,
            last: now,
            tty,
            printed: false,
        }
    }

    /// Prints `what` if a second passed since the last line.
    pub fn tick(&mut self, what: &str) {
        if self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        self.printed = true;
        let t = self.start.elapsed().as_secs_f64();
        if self.tty {
            eprint!("\r\x1b[K[{} {t:5.1} s] {what}", self.name);
        } else {
            eprintln!("[{} {t:5.1} s] {what}", self.name);
        }
    }

    /// Ends the line on a terminal.
    pub fn done(&mut self) {
        if self.tty && self.printed {
            eprintln!();
        }
        self.printed = false;
    }
}
