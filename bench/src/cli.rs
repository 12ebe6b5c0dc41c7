//! Command-line options.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use ringmq_codec::{ProtocolVersion, QoS};

use crate::tls::TlsOptions;

pub const USAGE: &str = "\
usage: ringmq-bench SCENARIO [OPTIONS]

scenarios:
  fanin    P publishers, each on its own topic bench/fanin/{i}; one subscriber on bench/fanin/+
  fanout   one publisher on bench/fanout; S subscribers on it
  p2p      N pairs: publisher i to bench/p2p/{i}, which only subscriber i subscribes to
  offline  S persistent sessions subscribe at QoS 1 and go offline; P publishers put M QoS 1
           messages into them flat out; then the sessions reconnect in batches and drain
           their queues, and every acknowledged message is checked off
  sharedsub  P publishers on bench/shared/{i}; S members of the shared subscription
           $share/{--group}/bench/shared/+: every message must reach exactly one member
  conn     open N connections (CONNECT, CONNACK), hold them idle, report the connect rate,
           CONNACK latency, failures and the broker's RSS per connection
  storm    open N connections, then all disconnect and reconnect at once: reconnect rate,
           CONNACK latency, session-present correctness
  pub      publishers only, on --topic (for runs across machines; wall-clock stamps)
  sub      subscribers only, on --topic: per-publisher gaps, duplicates, latency

options:
  --host HOST            broker host (127.0.0.1)
  --port PORT            broker port (1883; 8883 with --tls)
  --tls                  every connection over TLS (rustls, TLS 1.2 or 1.3, a full handshake
                         each time: no session resumption), in every scenario
  --cafile PATH          --tls: PEM file of the CA certificates the broker's certificate must
                         lead to
  --insecure             --tls: accept any broker certificate (handshake still verified)
  --server-name NAME     --tls: name checked in the broker's certificate, a DNS name or an IP
                         address (--host)
  --qos 0|1              QoS of publications and subscriptions (0)
  --payload-bytes N      payload size, at least 20 (64)
  --duration-secs S      publishing time (10)
  --rate N               messages per second offered, all publishers together; 0 = flat out (0)
  --window N             flat out only: most deliveries in flight end to end, all streams
                         (subscriber, publisher) together, split evenly; a publisher waits
                         while its slowest subscriber is that far behind it (by sequence
                         number); 0 = open loop, only TCP back-pressure holds it back (2000)
  --publishers N         fanin publishers (100); offline publishers (10)
  --subscribers N        fanout subscribers (100)
  --pairs N              p2p pairs (100)
  --mqtt-version V       3.1.1 or 5 (3.1.1)
  --broker-pid PID       read the broker's CPU time and RSS from /proc/PID
  --label NAME           broker name in the report (broker)
  --threads N            generator threads (2)
  --inflight N           unacknowledged QoS 1 messages per publisher (32)
  --settle-ms N          wait after the last SUBACK before publishing (500)
  --drain-idle-ms N      end the drain after this long without a delivery or ack (1000)
  --drain-max-secs S     longest drain after publishing stops (10)
  --sub-read-bytes-per-sec N  a slow subscriber: each subscriber reads at most N bytes per
                         second from its socket (token bucket, bursts up to N/20 bytes), so
                         the broker has to queue or drop; 0 = as fast as it can (0)

offline options (always QoS 1; --duration-secs, --rate, --window do not apply):
  --sessions N           persistent subscriber sessions (1000)
  --messages N           messages published in total, all publishers together (1000000)
  --match own|all        own: session i subscribes bench/off/{i}, publisher p serves the
                         sessions i with i mod P = p in turn, so each message is for one
                         session; all: every session subscribes bench/off/+ and publisher p
                         publishes on bench/off/p{p}, so every message is for every session
                         (own)
  --inflight N           closed loop: unacknowledged messages per publisher (32)
  --phase PHASE          setup: create the sessions only; publish: create them (unless
                         --no-setup) and publish, then stop; drain: reconnect and verify what
                         --state-file says was acknowledged; all: every step in one run (all)
  --state-file PATH      publish writes what was published and acknowledged here; drain
                         reads it (and takes sessions, publishers, --match, client ids and
                         MQTT version from it)
  --no-setup             publish into sessions an earlier --phase setup created
  --no-verify            with --phase all: stop after publishing
  --connect-concurrency N  sessions created at once, one blocking connection each (64)
  --drain-batch N        sessions reconnected at once while draining (1000)
  --client-prefix S      client ids are S-s{i} (sessions) and S-p{p} (publishers) (rmqb-off)
  --session-expiry-secs N  MQTT 5 Session Expiry Interval of the sessions (86400)
  --publish-max-secs S   longest publish phase (600)
  (--drain-idle-ms ends one batch after that long without a delivery; --drain-max-secs
   bounds the whole drain, 600 by default for offline)

sharedsub options: --publishers P (10), --subscribers S (members, 4), --group G (g),
  --qos, --rate, --window, --duration-secs as above

conn and storm options (--rate is connections per second here; 0 = flat out):
  --connections N        connections (1000)
  --handshakes N         flat out: most handshakes (connect to CONNACK) in flight, all
                         workers together (100)
  --hold-secs S          conn: how long to hold them after the last CONNACK (10); storm:
                         the pause between connected and the storm (1)
  --workers K            worker processes, each opening N/K connections under its own
                         file-descriptor limit, reporting to this one (1)
  --source-addrs SPEC    local addresses to bind before connecting, spread round robin:
                         127.0.0.2-127.0.0.50, or a comma list (none: the kernel's choice)
  --persistent           persistent sessions (3.1.1 clean session 0; 5 clean start 0 with
                         --session-expiry-secs); clean sessions by default
  --keep-alive-secs N    keep-alive in CONNECT; a PINGREQ after N/2 s idle (60)
  --handshake-timeout-secs S  a connect without CONNACK after S s fails (30)
  --storm-mode disconnect|drop  disconnect: DISCONNECT, wait for the broker to close, then
                         reconnect; drop: reset the connection (RST) and reconnect (disconnect)
  --client-prefix S      client ids are S-{i} (rmqc{pid})

pub and sub options:
  --topic T              pub: topic, {i} is replaced by the publisher id (bench/pubsub/{i});
                         sub: filter (bench/pubsub/+)
  --count N              pub: messages per publisher, 0 = until --duration-secs (0);
                         sub: stop once N distinct messages arrived, all publishers (0)
  --id-base N            pub: the first publisher id, so that several pub processes differ (0)
  --max-publishers N     sub: publisher ids 0..N are counted, others are foreign (1024)
  --publishers N, --subscribers N: connections in this process (1 each)
  sub runs --duration-secs at most (60), ends --drain-idle-ms after the last delivery once
  something arrived; stamps are wall-clock nanoseconds, so latency is right when the two
  machines' clocks agree

  -h, --help             this text

Prints a human summary, then one JSON line.
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    FanIn,
    FanOut,
    P2p,
    Offline,
    SharedSub,
    Conn,
    Storm,
    Pub,
    Sub,
}

/// How the clients of a `storm` go away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StormMode {
    /// MQTT DISCONNECT, then wait for the broker to close the connection.
    Disconnect,
    /// Reset the connection (SO_LINGER 0): the broker sees a network failure.
    Drop,
}

/// Which sessions a message of the `offline` scenario is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// Each session has its own topic; each message is for one session.
    Own,
    /// Every session subscribes to one pattern; each message is for every session.
    All,
}

/// What an `offline` run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Setup,
    Publish,
    Drain,
    All,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Publish => "publish",
            Phase::Drain => "drain",
            Phase::All => "all",
        }
    }
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::FanIn => "fanin",
            Scenario::FanOut => "fanout",
            Scenario::P2p => "p2p",
            Scenario::Offline => "offline",
            Scenario::SharedSub => "sharedsub",
            Scenario::Conn => "conn",
            Scenario::Storm => "storm",
            Scenario::Pub => "pub",
            Scenario::Sub => "sub",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub scenario: Scenario,
    pub host: String,
    pub port: u16,
    /// `--tls`, with how the broker's certificate is checked.
    pub tls: Option<TlsOptions>,
    pub qos: QoS,
    pub payload_bytes: usize,
    pub duration_secs: f64,
    pub rate: u64,
    pub window: u64,
    pub publishers: usize,
    pub subscribers: usize,
    pub pairs: usize,
    pub version: ProtocolVersion,
    pub broker_pid: Option<u32>,
    pub label: String,
    pub threads: usize,
    pub inflight: usize,
    pub settle_ms: u64,
    pub drain_idle_ms: u64,
    pub drain_max_secs: f64,
    /// Bytes per second each subscriber reads at most; 0 = no limit.
    pub sub_read_bytes_per_sec: u64,
    pub sessions: usize,
    pub messages: u64,
    pub matching: Match,
    pub phase: Phase,
    pub state_file: Option<std::path::PathBuf>,
    pub setup: bool,
    pub verify: bool,
    pub connect_concurrency: usize,
    pub drain_batch: usize,
    pub client_prefix: String,
    pub session_expiry_secs: u32,
    pub publish_max_secs: f64,
    pub client_prefix_given: bool,
    pub group: String,
    pub connections: usize,
    pub handshakes: usize,
    pub hold_secs: f64,
    pub workers: usize,
    pub source_addrs: Vec<Ipv4Addr>,
    pub persistent: bool,
    pub keep_alive_secs: u16,
    pub handshake_timeout_secs: f64,
    pub storm_mode: StormMode,
    pub topic: Option<String>,
    pub count: u64,
    pub id_base: u32,
    pub max_publishers: usize,
    /// Internal: this process is worker `i` of `--workers` (conn, storm).
    pub worker_index: Option<usize>,
}

impl Options {
    fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            host: "127.0.0.1".into(),
            port: 1883,
            tls: None,
            qos: if scenario == Scenario::Offline {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
            payload_bytes: 64,
            duration_secs: if scenario == Scenario::Sub {
                60.0
            } else {
                10.0
            },
            rate: 0,
            window: 2000,
            publishers: match scenario {
                Scenario::Offline | Scenario::SharedSub => 10,
                Scenario::Pub => 1,
                _ => 100,
            },
            subscribers: match scenario {
                Scenario::SharedSub => 4,
                Scenario::Sub => 1,
                _ => 100,
            },
            pairs: 100,
            version: ProtocolVersion::V3_1_1,
            broker_pid: None,
            label: "broker".into(),
            threads: 2,
            inflight: 32,
            settle_ms: 500,
            drain_idle_ms: 1000,
            drain_max_secs: if scenario == Scenario::Offline {
                600.0
            } else {
                10.0
            },
            sub_read_bytes_per_sec: 0,
            sessions: 1000,
            messages: 1_000_000,
            matching: Match::Own,
            phase: Phase::All,
            state_file: None,
            setup: true,
            verify: true,
            connect_concurrency: 64,
            drain_batch: 1000,
            client_prefix: "rmqb-off".into(),
            session_expiry_secs: 86_400,
            publish_max_secs: 600.0,
            client_prefix_given: false,
            group: "g".into(),
            connections: 1000,
            handshakes: 100,
            hold_secs: if scenario == Scenario::Storm {
                1.0
            } else {
                10.0
            },
            workers: 1,
            source_addrs: Vec::new(),
            persistent: false,
            keep_alive_secs: 60,
            handshake_timeout_secs: 30.0,
            storm_mode: StormMode::Disconnect,
            topic: None,
            count: 0,
            id_base: 0,
            max_publishers: 1024,
            worker_index: None,
        }
    }
}

pub enum Parsed {
    Run(Box<Options>),
    Help,
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{name}: not a valid number: {value:?}"))
}

fn positive(name: &str, value: &str) -> Result<usize, String> {
    match number::<usize>(name, value)? {
        0 => Err(format!("{name} must be at least 1")),
        n => Ok(n),
    }
}

pub fn parse(args: &[String]) -> Result<Parsed, String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Parsed::Help);
    }
    let Some((first, rest)) = args.split_first() else {
        return Err("no scenario given".into());
    };
    let scenario = match first.as_str() {
        "fanin" => Scenario::FanIn,
        "fanout" => Scenario::FanOut,
        "p2p" => Scenario::P2p,
        "offline" => Scenario::Offline,
        "sharedsub" => Scenario::SharedSub,
        "conn" => Scenario::Conn,
        "storm" => Scenario::Storm,
        "pub" => Scenario::Pub,
        "sub" => Scenario::Sub,
        other => return Err(format!("unknown scenario {other:?}")),
    };
    let mut o = Options::new(scenario);
    let (mut tls, mut cafile, mut insecure, mut server_name) = (false, None, false, None);
    let mut port_given = false;
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match name {
            "--host" => o.host = value()?,
            "--port" => {
                o.port = number(name, &value()?)?;
                port_given = true;
            }
            "--tls" => tls = true,
            "--cafile" => cafile = Some(PathBuf::from(value()?)),
            "--insecure" => insecure = true,
            "--server-name" => server_name = Some(value()?),
            "--qos" => {
                o.qos = match value()?.as_str() {
                    "0" => QoS::AtMostOnce,
                    "1" => QoS::AtLeastOnce,
                    v => return Err(format!("--qos: 0 or 1, not {v:?}")),
                }
            }
            "--payload-bytes" => {
                o.payload_bytes = number(name, &value()?)?;
                if o.payload_bytes < crate::payload::HEADER_LEN {
                    return Err(format!(
                        "--payload-bytes must be at least {}",
                        crate::payload::HEADER_LEN
                    ));
                }
            }
            "--duration-secs" => {
                o.duration_secs = number(name, &value()?)?;
                if !(o.duration_secs > 0.0 && o.duration_secs.is_finite()) {
                    return Err("--duration-secs must be positive".into());
                }
            }
            "--rate" => o.rate = number(name, &value()?)?,
            "--window" => o.window = number(name, &value()?)?,
            "--publishers" => o.publishers = positive(name, &value()?)?,
            "--subscribers" => o.subscribers = positive(name, &value()?)?,
            "--pairs" => o.pairs = positive(name, &value()?)?,
            "--mqtt-version" => {
                o.version = match value()?.as_str() {
                    "3.1.1" | "4" => ProtocolVersion::V3_1_1,
                    "5" | "5.0" => ProtocolVersion::V5,
                    v => return Err(format!("--mqtt-version: 3.1.1 or 5, not {v:?}")),
                }
            }
            "--broker-pid" => o.broker_pid = Some(number(name, &value()?)?),
            "--label" => o.label = value()?,
            "--threads" => o.threads = positive(name, &value()?)?,
            "--inflight" => {
                o.inflight = positive(name, &value()?)?;
                if o.inflight > 65_535 {
                    return Err("--inflight: at most 65535".into());
                }
            }
            "--settle-ms" => o.settle_ms = number(name, &value()?)?,
            "--drain-idle-ms" => o.drain_idle_ms = number(name, &value()?)?,
            "--drain-max-secs" => {
                o.drain_max_secs = number(name, &value()?)?;
                if !(o.drain_max_secs >= 0.0 && o.drain_max_secs.is_finite()) {
                    return Err("--drain-max-secs must not be negative".into());
                }
            }
            "--sub-read-bytes-per-sec" => o.sub_read_bytes_per_sec = number(name, &value()?)?,
            "--sessions" => o.sessions = positive(name, &value()?)?,
            "--messages" => o.messages = number(name, &value()?)?,
            "--match" => {
                o.matching = match value()?.as_str() {
                    "own" => Match::Own,
                    "all" => Match::All,
                    v => return Err(format!("--match: own or all, not {v:?}")),
                }
            }
            "--phase" => {
                o.phase = match value()?.as_str() {
                    "setup" => Phase::Setup,
                    "publish" => Phase::Publish,
                    "drain" => Phase::Drain,
                    "all" => Phase::All,
                    v => return Err(format!("--phase: setup, publish, drain or all, not {v:?}")),
                }
            }
            "--state-file" => o.state_file = Some(value()?.into()),
            "--no-setup" => o.setup = false,
            "--no-verify" => o.verify = false,
            "--connect-concurrency" => o.connect_concurrency = positive(name, &value()?)?,
            "--drain-batch" => o.drain_batch = positive(name, &value()?)?,
            "--client-prefix" => {
                o.client_prefix = value()?;
                o.client_prefix_given = true;
            }
            "--group" => {
                o.group = value()?;
                if o.group.is_empty() || o.group.contains(['/', '+', '#']) {
                    return Err("--group: a non-empty name without / + #".into());
                }
            }
            "--connections" => o.connections = positive(name, &value()?)?,
            "--handshakes" => o.handshakes = positive(name, &value()?)?,
            "--hold-secs" => {
                o.hold_secs = number(name, &value()?)?;
                if !(o.hold_secs >= 0.0 && o.hold_secs.is_finite()) {
                    return Err("--hold-secs must not be negative".into());
                }
            }
            "--workers" => o.workers = positive(name, &value()?)?,
            "--source-addrs" => o.source_addrs = parse_source_addrs(&value()?)?,
            "--persistent" => o.persistent = true,
            "--keep-alive-secs" => o.keep_alive_secs = number(name, &value()?)?,
            "--handshake-timeout-secs" => {
                o.handshake_timeout_secs = number(name, &value()?)?;
                if !(o.handshake_timeout_secs > 0.0 && o.handshake_timeout_secs.is_finite()) {
                    return Err("--handshake-timeout-secs must be positive".into());
                }
            }
            "--storm-mode" => {
                o.storm_mode = match value()?.as_str() {
                    "disconnect" => StormMode::Disconnect,
                    "drop" => StormMode::Drop,
                    v => return Err(format!("--storm-mode: disconnect or drop, not {v:?}")),
                }
            }
            "--topic" => o.topic = Some(value()?),
            "--count" => o.count = number(name, &value()?)?,
            "--id-base" => o.id_base = number(name, &value()?)?,
            "--max-publishers" => o.max_publishers = positive(name, &value()?)?,
            "--worker-index" => o.worker_index = Some(number(name, &value()?)?),
            "--session-expiry-secs" => o.session_expiry_secs = number(name, &value()?)?,
            "--publish-max-secs" => {
                o.publish_max_secs = number(name, &value()?)?;
                if !(o.publish_max_secs > 0.0 && o.publish_max_secs.is_finite()) {
                    return Err("--publish-max-secs must be positive".into());
                }
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if tls {
        if cafile.is_some() == insecure {
            return Err(
                "--tls: give --cafile PATH, or --insecure to accept any certificate".into(),
            );
        }
        if !port_given {
            o.port = 8883;
        }
        o.tls = Some(TlsOptions {
            cafile,
            insecure,
            server_name: server_name.unwrap_or_else(|| o.host.clone()),
        });
    } else if cafile.is_some() || insecure || server_name.is_some() {
        return Err("--cafile, --insecure and --server-name need --tls".into());
    }
    if o.scenario == Scenario::Offline {
        if o.qos != QoS::AtLeastOnce {
            return Err("offline: only --qos 1 (offline sessions queue QoS 1 messages)".into());
        }
        if o.matching == Match::Own && o.publishers > o.sessions {
            return Err("offline --match own: --publishers must not exceed --sessions".into());
        }
        if matches!(o.phase, Phase::Drain) && o.state_file.is_none() {
            return Err("offline --phase drain needs --state-file".into());
        }
        if o.phase == Phase::Publish && o.state_file.is_none() {
            return Err("offline --phase publish needs --state-file (for the drain)".into());
        }
    }
    if let Some(i) = o.worker_index {
        if i >= o.workers {
            return Err("--worker-index must be below --workers".into());
        }
    }
    if matches!(o.scenario, Scenario::Conn | Scenario::Storm) && o.workers > o.connections {
        return Err("--workers must not exceed --connections".into());
    }
    if matches!(o.scenario, Scenario::Pub | Scenario::Sub) {
        let topic = o.topic.get_or_insert_with(|| {
            if o.scenario == Scenario::Pub {
                "bench/pubsub/{i}".into()
            } else {
                "bench/pubsub/+".into()
            }
        });
        if topic.is_empty() {
            return Err("--topic must not be empty".into());
        }
        if o.scenario == Scenario::Pub && topic.contains(['+', '#']) {
            return Err("pub --topic: a topic name, without + or #".into());
        }
    }
    Ok(Parsed::Run(Box::new(o)))
}

/// `--source-addrs`: `A-B` (an inclusive range of IPv4 addresses), a comma list of addresses
/// and ranges, or one address.
pub fn parse_source_addrs(spec: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip = |s: &str| -> Result<Ipv4Addr, String> {
            s.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| format!("--source-addrs: not an IPv4 address: {s:?}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (u32::from(ip(a)?), u32::from(ip(b)?));
                if b < a {
                    return Err(format!("--source-addrs: empty range {part:?}"));
                }
                if b - a >= 65_536 {
                    return Err(format!("--source-addrs: range {part:?} is too long"));
                }
                out.extend((a..=b).map(Ipv4Addr::from));
            }
            None => out.push(ip(part)?),
        }
    }
    if out.is_empty() {
        return Err("--source-addrs: no address".into());
    }
    Ok(out)
}

/// The first address of `host:port`.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port}: no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn run(s: &str) -> Options {
        match parse(&args(s)) {
            Ok(Parsed::Run(o)) => *o,
            Ok(Parsed::Help) => panic!("help"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn defaults_and_overrides() {
        let o = run("fanin");
        assert_eq!(o.scenario, Scenario::FanIn);
        assert_eq!((o.port, o.payload_bytes, o.publishers), (1883, 64, 100));
        assert_eq!(o.qos, QoS::AtMostOnce);
        let o = run("p2p --qos 1 --pairs=7 --mqtt-version 5 --broker-pid 42 --rate 1000");
        assert_eq!(o.qos, QoS::AtLeastOnce);
        assert_eq!(o.pairs, 7);
        assert_eq!(o.version, ProtocolVersion::V5);
        assert_eq!(o.broker_pid, Some(42));
        assert_eq!(o.rate, 1000);
        assert_eq!(o.sub_read_bytes_per_sec, 0);
        let o = run("fanin --rate 100000 --sub-read-bytes-per-sec 1000000");
        assert_eq!(o.sub_read_bytes_per_sec, 1_000_000);
    }

    #[test]
    fn offline_defaults_and_overrides() {
        let o = run("offline");
        assert_eq!(o.scenario, Scenario::Offline);
        assert_eq!(o.qos, QoS::AtLeastOnce);
        assert_eq!(
            (o.sessions, o.publishers, o.messages),
            (1000, 10, 1_000_000)
        );
        assert_eq!((o.matching, o.phase), (Match::Own, Phase::All));
        assert!(o.setup && o.verify);
        let o = run(
            "offline --sessions 100000 --match all --phase publish --state-file x.json \
             --no-setup --drain-batch 500 --connect-concurrency 8 --inflight 1",
        );
        assert_eq!(
            (o.sessions, o.drain_batch, o.connect_concurrency),
            (100_000, 500, 8)
        );
        assert_eq!(
            (o.matching, o.phase, o.inflight),
            (Match::All, Phase::Publish, 1)
        );
        assert_eq!(
            o.state_file.as_deref(),
            Some(std::path::Path::new("x.json"))
        );
        assert!(!o.setup);
    }

    #[test]
    fn bad_input_is_refused() {
        for bad in [
            "",
            "storms",
            "fanin --qos 2",
            "conn --workers 3 --connections 2",
            "conn --source-addrs 127.0.0.9-127.0.0.2",
            "conn --source-addrs ::1",
            "conn --storm-mode soft",
            "conn --connections 0",
            "conn --workers 2 --worker-index 2",
            "sharedsub --group a/b",
            "pub --topic a/+",
            "fanin --payload-bytes 19",
            "fanin --pairs 0",
            "fanin --port",
            "fanin --duration-secs 0",
            "fanin --mqtt-version 3.1",
            "fanin --whatever 1",
            "fanin --tls",
            "fanin --tls --insecure --cafile ca.pem",
            "fanin --cafile ca.pem",
            "conn --insecure",
            "p2p --server-name localhost",
            "p2p --tls --cafile",
            "offline --qos 0",
            "offline --sessions 5 --publishers 6",
            "offline --phase drain",
            "offline --phase publish",
            "offline --match some",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(matches!(parse(&args("fanin --help")), Ok(Parsed::Help)));
    }

    #[test]
    fn connection_options() {
        let o = run("conn");
        assert_eq!((o.connections, o.workers, o.handshakes), (1000, 1, 100));
        assert!(!o.persistent && o.source_addrs.is_empty());
        assert_eq!(o.hold_secs, 10.0);
        assert_eq!(run("storm").hold_secs, 1.0);
        let o = run(
            "storm --connections 19000 --workers 2 --rate 5000 --persistent --storm-mode drop \
             --source-addrs 127.0.0.2-127.0.0.4,10.0.0.1 --worker-index 1 --client-prefix x",
        );
        assert_eq!((o.connections, o.workers, o.rate), (19_000, 2, 5000));
        assert_eq!((o.storm_mode, o.worker_index), (StormMode::Drop, Some(1)));
        assert!(o.persistent && o.client_prefix_given);
        assert_eq!(o.source_addrs.len(), 4);
        let o = run("sharedsub --group grp --qos 1");
        assert_eq!(
            (o.publishers, o.subscribers, o.group.as_str()),
            (10, 4, "grp")
        );
        let o = run("pub --count 5 --id-base 7");
        assert_eq!(o.topic.as_deref(), Some("bench/pubsub/{i}"));
        assert_eq!((o.count, o.id_base, o.publishers), (5, 7, 1));
        assert_eq!(run("sub").topic.as_deref(), Some("bench/pubsub/+"));
    }

    #[test]
    fn tls_options() {
        assert_eq!(run("p2p").tls, None);
        let o = run("p2p --tls --cafile /tmp/ca.pem");
        assert_eq!(o.port, 8883, "the MQTT over TLS port unless --port");
        assert_eq!(
            o.tls,
            Some(TlsOptions {
                cafile: Some("/tmp/ca.pem".into()),
                insecure: false,
                server_name: "127.0.0.1".into(),
            })
        );
        let o = run("conn --host broker --port 18883 --tls --insecure --server-name mqtt.test");
        assert_eq!(o.port, 18883);
        let tls = o.tls.unwrap();
        assert!(tls.insecure && tls.cafile.is_none());
        assert_eq!(tls.server_name, "mqtt.test");
        // The server name defaults to --host, wherever --host comes.
        let o = run("fanin --tls --insecure --host localhost");
        assert_eq!(o.tls.unwrap().server_name, "localhost");
        assert_eq!(run("fanin --port 1884").port, 1884);
    }

    #[test]
    fn source_address_ranges() {
        let a = parse_source_addrs("127.0.0.2-127.0.0.50").unwrap();
        assert_eq!(a.len(), 49);
        assert_eq!(a[0], Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(a[48], Ipv4Addr::new(127, 0, 0, 50));
        // Ranges cross octet boundaries.
        let a = parse_source_addrs("127.0.0.255-127.0.1.1").unwrap();
        assert_eq!(
            a,
            [
                Ipv4Addr::new(127, 0, 0, 255),
                Ipv4Addr::new(127, 0, 1, 0),
                Ipv4Addr::new(127, 0, 1, 1)
            ]
        );
        let a = parse_source_addrs("10.0.0.1, 10.0.0.3-10.0.0.3").unwrap();
        assert_eq!(a, [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 3)]);
        for bad in [
            "",
            ",",
            "127.0.0.1-",
            "x",
            "127.0.0.2-127.0.0.1",
            "1.0.0.0-2.0.0.0",
        ] {
            assert!(parse_source_addrs(bad).is_err(), "{bad:?}");
        }
    }
}
