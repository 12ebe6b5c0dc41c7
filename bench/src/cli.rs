//! Command-line options.

use std::net::{SocketAddr, ToSocketAddrs};

use ringmq_codec::{ProtocolVersion, QoS};

pub const USAGE: &str = "\
usage: ringmq-bench SCENARIO [OPTIONS]

scenarios:
  fanin    P publishers, each on its own topic bench/fanin/{i}; one subscriber on bench/fanin/+
  fanout   one publisher on bench/fanout; S subscribers on it
  p2p      N pairs: publisher i to bench/p2p/{i}, which only subscriber i subscribes to
  offline  S persistent sessions subscribe at QoS 1 and go offline; P publishers put M QoS 1
           messages into them flat out; then the sessions reconnect in batches and drain
           their queues, and every acknowledged message is checked off

options:
  --host HOST            broker host (127.0.0.1)
  --port PORT            broker port (1883)
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

  -h, --help             this text

Prints a human summary, then one JSON line.
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    FanIn,
    FanOut,
    P2p,
    Offline,
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
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub scenario: Scenario,
    pub host: String,
    pub port: u16,
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
}

impl Options {
    fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            host: "127.0.0.1".into(),
            port: 1883,
            qos: if scenario == Scenario::Offline {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
            payload_bytes: 64,
            duration_secs: 10.0,
            rate: 0,
            window: 2000,
            publishers: if scenario == Scenario::Offline {
                10
            } else {
                100
            },
            subscribers: 100,
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
        other => return Err(format!("unknown scenario {other:?}")),
    };
    let mut o = Options::new(scenario);
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
            "--port" => o.port = number(name, &value()?)?,
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
            "--client-prefix" => o.client_prefix = value()?,
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
    Ok(Parsed::Run(Box::new(o)))
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
            "storm",
            "fanin --qos 2",
            "fanin --payload-bytes 19",
            "fanin --pairs 0",
            "fanin --port",
            "fanin --duration-secs 0",
            "fanin --mqtt-version 3.1",
            "fanin --whatever 1",
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
}
