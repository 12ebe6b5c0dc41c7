//! One generator thread: a `mio` loop over its share of the connections (publishers and
//! subscribers), with the state the main thread needs to follow the run in [`Shared`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize,
    Ordering::{Relaxed, Release, SeqCst},
};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token, Waker};
use ringmq_codec::{
    decode, Ack, ConnAck, Connect, DecodeOptions, Disconnect, Packet, Properties, ProtocolVersion,
    Publish, QoS, Subscribe, SubscribeFilter, SubscriptionOptions, Utf8Bytes,
};

use crate::counter::{Arrival, StreamCounter};
use crate::payload::{self, Stamp};
use crate::tls::{self, Stream, TlsClient};

/// What every connection of the run shares.
#[derive(Clone, Debug)]
pub struct Settings {
    pub addr: SocketAddr,
    pub version: ProtocolVersion,
    pub qos: QoS,
    pub payload_bytes: usize,
    /// Messages per second per publisher; 0 = as fast as the socket takes them.
    pub rate_per_publisher: f64,
    /// Most unacknowledged QoS 1 messages per publisher.
    pub inflight: usize,
    /// Most messages per publisher sent but not yet seen by every subscriber that expects them
    /// (judged by the highest sequence number each has seen); 0 = no such window.
    pub window_per_publisher: u64,
    pub keep_alive_secs: u16,
    /// Client ids are `{client_prefix}-p{id}` and `{client_prefix}-s{id}`.
    pub client_prefix: String,
    /// Publishers in the whole run (sizes the per-subscriber stream table).
    pub publishers: usize,
    /// How long the connect and subscribe handshakes may take.
    pub handshake_timeout: Duration,
    /// Added to the publisher index in every payload stamp (`pub`: several processes).
    pub id_base: u32,
    /// Messages per publisher, 0 = no limit.
    pub count_per_publisher: u64,
    /// Shared subscription: the window counts the messages the group received (each member
    /// sees only some), rather than following each subscriber's highest number.
    pub group_window: bool,
    /// Bytes per second each subscriber reads at most (a slow subscriber); 0 = no limit.
    pub sub_read_bytes_per_sec: u64,
    /// `--tls`: every connection through this client.
    pub tls: Option<TlsClient>,
}

/// One connection's job.
#[derive(Clone, Debug)]
pub enum Role {
    Publisher {
        id: u32,
        topic: String,
    },
    Subscriber {
        id: u32,
        filter: String,
        /// For each publisher it expects: (publisher id, its slot in `Shared::progress`).
        slots: Vec<(u32, usize)>,
    },
}

/// State shared by the workers and the main thread. Counters are published by each worker once
/// per loop turn, not per message.
pub struct Shared {
    /// Payload time stamps count nanoseconds from here (plus `clock_offset_ns`).
    pub start: Instant,
    /// Added to every time stamp: 0, or the wall-clock time of `start` in nanoseconds since
    /// the Unix epoch, so that stamps compare across processes (`pub`, `sub`).
    clock_offset_ns: u64,
    /// Workers whose connections are all connected and subscribed.
    pub ready: AtomicUsize,
    /// The first set-up failure.
    pub failed: Mutex<Option<String>>,
    /// When publishing started (ns since `start`); 0 = not yet.
    pub go_ns: AtomicU64,
    /// Publishers stop producing new messages.
    pub stop: AtomicBool,
    /// Workers that saw `stop` and published their final `sent` counts.
    pub stopped: AtomicUsize,
    /// Workers disconnect and return their reports.
    pub finish: AtomicBool,
    /// Messages produced per publisher.
    pub sent: Vec<AtomicU64>,
    /// Unacknowledged QoS 1 messages per worker.
    pub unacked: Vec<AtomicU64>,
    /// Deliveries at all subscribers, duplicates included.
    pub received: AtomicU64,
    /// Deliveries that were not duplicates.
    pub distinct: AtomicU64,
    /// Latest delivery (ns since `start`).
    pub last_receive_ns: AtomicU64,
    /// Per publisher, one slot per subscriber that expects it: the highest sequence number that
    /// subscriber has seen, plus one. Publishers read it to keep their end-to-end window.
    pub progress: Vec<Vec<AtomicU64>>,
    /// The worker that owns each publisher.
    owner: Vec<usize>,
    /// Per worker: about to sleep in `poll` (a subscriber's progress should wake it).
    idle: Vec<AtomicBool>,
    /// Per worker: wakes its `poll`.
    wakers: Vec<OnceLock<Waker>>,
}

impl Shared {
    /// `watchers[p]`: how many subscribers expect publisher `p`; `owner[p]`: the worker that
    /// runs it.
    /// `wall_clock`: time stamps in nanoseconds since the Unix epoch rather than since start.
    pub fn new(watchers: &[usize], owner: Vec<usize>, workers: usize, wall_clock: bool) -> Self {
        let publishers = watchers.len();
        assert_eq!(owner.len(), publishers);
        let clock_offset_ns = if wall_clock {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        } else {
            0
        };
        Self {
            start: Instant::now(),
            clock_offset_ns,
            ready: AtomicUsize::new(0),
            failed: Mutex::new(None),
            go_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            stopped: AtomicUsize::new(0),
            finish: AtomicBool::new(false),
            sent: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
            unacked: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            received: AtomicU64::new(0),
            distinct: AtomicU64::new(0),
            last_receive_ns: AtomicU64::new(0),
            progress: watchers
                .iter()
                .map(|&n| (0..n).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            owner,
            idle: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            wakers: (0..workers).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Publishes subscriber progress on publisher `p`, and wakes the worker running `p` if it
    /// is asleep (it may be waiting for exactly this to open its window).
    /// With `add`, `value` is a number of new distinct arrivals added to the slot (the members
    /// of a shared subscription share one slot, which counts the messages the group received);
    /// otherwise it is the subscriber's high-water mark.
    fn progress(&self, p: usize, slot: usize, value: u64, add: bool, me: usize) {
        if add {
            self.progress[p][slot].fetch_add(value, Relaxed);
        } else {
            self.progress[p][slot].store(value, Relaxed);
        }
        let w = self.owner[p];
        if w != me && self.idle[w].swap(false, SeqCst) {
            if let Some(waker) = self.wakers[w].get() {
                let _ = waker.wake();
            }
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64 + self.clock_offset_ns
    }

    fn fail(&self, why: String) {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert(why);
    }
}

/// What one subscriber saw.
pub struct SubscriberReport {
    pub id: u32,
    /// Indexed by publisher id.
    pub streams: Vec<StreamCounter>,
    /// Payloads that carried no valid stamp or an unknown publisher id.
    pub foreign: u64,
}

/// What one worker returns.
pub struct Report {
    pub subscribers: Vec<SubscriberReport>,
    /// Publish-to-delivery latency in nanoseconds.
    pub latency: Histogram<u64>,
    /// Connections closed or broken during the run, with the reason.
    pub errors: Vec<String>,
    /// PUBACKs for packet ids that were not in flight.
    pub unexpected_acks: u64,
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 1 hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// The token of the worker's waker.
const WAKE_TOKEN: Token = Token(usize::MAX);
/// Bytes of pending output per connection above which a publisher produces no more.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Messages one publisher produces per loop turn at most.
const BATCH_MESSAGES: u64 = 256;
/// Bytes read from one connection per loop turn at most.
const READ_BUDGET: usize = 1 << 20;

struct PubState {
    id: u32,
    topic: Utf8Bytes,
    seq: u64,
    inflight: usize,
    window: usize,
    next_packet_id: u16,
    in_use: Vec<u64>,
}

impl PubState {
    fn take_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
            let (word, bit) = (usize::from(id) / 64, id % 64);
            if self.in_use[word] & (1 << bit) == 0 {
                self.in_use[word] |= 1 << bit;
                return id;
            }
        }
    }

    /// Frees `id`; false if it was not in flight.
    fn release(&mut self, id: u16) -> bool {
        let (word, bit) = (usize::from(id) / 64, id % 64);
        let was = self.in_use[word] & (1 << bit) != 0;
        self.in_use[word] &= !(1 << bit);
        was
    }
}

struct SubState {
    id: u32,
    streams: Vec<StreamCounter>,
    foreign: u64,
    /// Per publisher: this subscriber's slot in `Shared::progress`.
    slots: Vec<Option<usize>>,
    /// Publishers heard from in this read, to publish progress once per read.
    touched: Vec<u32>,
    is_touched: Vec<bool>,
    /// Per publisher: new distinct arrivals since progress was last published.
    fresh: Vec<u64>,
}

enum Kind {
    Pub(PubState),
    Sub(SubState),
}

/// A token bucket on the bytes one subscriber reads (`--sub-read-bytes-per-sec`).
struct ReadThrottle {
    bytes_per_sec: f64,
    /// Bytes it may read now.
    tokens: f64,
    /// Most tokens it can save up: 1/20 s worth, at least 1 KiB.
    burst: f64,
    last: Instant,
}

impl ReadThrottle {
    fn new(bytes_per_sec: u64) -> Self {
        let bytes_per_sec = bytes_per_sec as f64;
        Self {
            bytes_per_sec,
            tokens: 0.0,
            burst: (bytes_per_sec / 20.0).max(1024.0),
            last: Instant::now(),
        }
    }

    /// Adds the tokens earned since the last call; returns the whole bytes it may read now.
    fn available(&mut self) -> usize {
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * self.bytes_per_sec;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
        self.tokens as usize
    }

    fn take(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

struct Conn {
    stream: Stream<mio::net::TcpStream>,
    name: String,
    rbuf: BytesMut,
    wbuf: BytesMut,
    readable: bool,
    writable: bool,
    closed: bool,
    last_write: Instant,
    kind: Kind,
    /// Subscribers with `--sub-read-bytes-per-sec`: how much they may read.
    throttle: Option<ReadThrottle>,
}

impl Conn {
    /// Whether reading now may make progress: input is waiting, and a throttled subscriber
    /// has saved up at least a little (1 KiB, or its whole burst if smaller).
    fn may_read(&mut self) -> bool {
        self.readable
            && self.throttle.as_mut().is_none_or(|t| {
                let min = t.burst.min(1024.0) as usize;
                t.available() >= min.max(1)
            })
    }
}

/// A CONNECT packet: a clean session, or (`persistent = Some(expiry)`) one that the broker keeps
/// after the connection ends (MQTT 3.1.1 clean session 0; MQTT 5 clean start 0 and a Session
/// Expiry Interval of `expiry` seconds).
pub(crate) fn connect_packet(
    version: ProtocolVersion,
    client_id: &str,
    keep_alive_secs: u16,
    persistent: Option<u32>,
) -> Result<Packet, String> {
    let properties = match (version, persistent) {
        (ProtocolVersion::V5, Some(expiry)) => Some(Box::new(Properties {
            session_expiry_interval: Some(expiry),
            ..Properties::default()
        })),
        _ => None,
    };
    Ok(Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start: persistent.is_none(),
        keep_alive: keep_alive_secs,
        properties,
        client_id: Utf8Bytes::try_from(client_id).map_err(|e| format!("client id: {e}"))?,
        will: None,
        username: None,
        password: None,
    })))
}

/// Connects, sends CONNECT and waits for a successful CONNACK; returns the stream, the bytes
/// read past the CONNACK and the server's Receive Maximum (MQTT 5).
fn connect(
    s: &Settings,
    client_id: &str,
) -> Result<(Stream<TcpStream>, BytesMut, Option<u16>), String> {
    let (stream, buf, ack) = connect_session(
        s.addr,
        s.version,
        s.keep_alive_secs,
        s.handshake_timeout,
        client_id,
        None,
        s.tls.as_ref(),
    )?;
    let receive_max = ack.properties.as_ref().and_then(|p| p.receive_maximum);
    Ok((stream, buf, receive_max))
}

/// Connects (through `tls` if given), sends [`connect_packet`] and waits for a successful
/// CONNACK (blocking, with `timeout` on each read); returns the stream, the bytes read past the
/// CONNACK and the CONNACK.
pub(crate) fn connect_session(
    addr: SocketAddr,
    version: ProtocolVersion,
    keep_alive_secs: u16,
    timeout: Duration,
    client_id: &str,
    persistent: Option<u32>,
    tls: Option<&TlsClient>,
) -> Result<(Stream<TcpStream>, BytesMut, ConnAck), String> {
    let mut stream = open_blocking(addr, timeout, tls)?;
    let connect = connect_packet(version, client_id, keep_alive_secs, persistent)?;
    let mut buf = BytesMut::new();
    send_blocking(&mut stream, &connect, version)?;
    match read_blocking(&mut stream, &mut buf, version)? {
        Packet::ConnAck(ack) if !ack.reason_code.is_error() => Ok((stream, buf, ack)),
        Packet::ConnAck(ack) => Err(format!("CONNACK refused: {:?}", ack.reason_code)),
        other => Err(format!("expected CONNACK, got {:?}", other.packet_type())),
    }
}

/// A blocking connection (through `tls` if given) with `timeout` on each read.
pub(crate) fn open_blocking(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&TlsClient>,
) -> Result<Stream<TcpStream>, String> {
    let stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(timeout)))
        .map_err(|e| format!("socket options: {e}"))?;
    tls::stream(stream, tls)
}

/// A blocking connection made non-blocking, for a `mio` loop.
pub(crate) fn into_mio(stream: Stream<TcpStream>) -> Result<Stream<mio::net::TcpStream>, String> {
    stream
        .socket()
        .set_nonblocking(true)
        .map_err(|e| format!("set_nonblocking: {e}"))?;
    Ok(stream.map_socket(mio::net::TcpStream::from_std))
}

pub(crate) fn send_blocking(
    stream: &mut impl Write,
    p: &Packet,
    v: ProtocolVersion,
) -> Result<(), String> {
    let mut out = BytesMut::new();
    p.encode(v, &mut out).map_err(|e| format!("encode: {e}"))?;
    stream.write_all(&out).map_err(|e| format!("write: {e}"))
}

pub(crate) fn read_blocking(
    stream: &mut impl Read,
    buf: &mut BytesMut,
    v: ProtocolVersion,
) -> Result<Packet, String> {
    let options = DecodeOptions::new(v);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(p) = decode(buf, &options).map_err(|e| format!("decode: {e}"))? {
            return Ok(p);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err("connection closed by the broker".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

fn open(s: &Settings, role: &Role) -> Result<Conn, String> {
    let (name, kind, filter) = match role {
        Role::Publisher { id, topic } => {
            let name = format!("{}-p{id}", s.client_prefix);
            let topic = Utf8Bytes::try_from(topic.as_str()).map_err(|e| format!("topic: {e}"))?;
            let st = PubState {
                id: *id,
                topic,
                seq: 0,
                inflight: 0,
                window: s.inflight,
                next_packet_id: 1,
                in_use: vec![0; 1024],
            };
            (name, Kind::Pub(st), None)
        }
        Role::Subscriber { id, filter, slots } => {
            let name = format!("{}-s{id}", s.client_prefix);
            let mut st = SubState {
                id: *id,
                streams: vec![StreamCounter::default(); s.publishers],
                foreign: 0,
                slots: vec![None; s.publishers],
                touched: Vec::new(),
                is_touched: vec![false; s.publishers],
                fresh: vec![0; s.publishers],
            };
            for &(p, slot) in slots {
                st.slots[p as usize] = Some(slot);
            }
            (name, Kind::Sub(st), Some(filter))
        }
    };
    let (mut stream, mut rbuf, receive_max) =
        connect(s, &name).map_err(|e| format!("{name}: {e}"))?;
    let mut kind = kind;
    if let (Kind::Pub(st), Some(max)) = (&mut kind, receive_max) {
        st.window = st.window.min(usize::from(max));
    }
    if let Some(filter) = filter {
        let sub = Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: None,
            filters: vec![SubscribeFilter {
                filter: Utf8Bytes::try_from(filter.as_str()).map_err(|e| format!("filter: {e}"))?,
                options: SubscriptionOptions::qos(s.qos),
            }],
        });
        send_blocking(&mut stream, &sub, s.version).map_err(|e| format!("{name}: {e}"))?;
        match read_blocking(&mut stream, &mut rbuf, s.version)
            .map_err(|e| format!("{name}: {e}"))?
        {
            Packet::SubAck(ack) if ack.return_codes.iter().all(|c| !c.is_error()) => {}
            Packet::SubAck(ack) => {
                return Err(format!("{name}: SUBACK refused: {:?}", ack.return_codes))
            }
            other => {
                return Err(format!(
                    "{name}: expected SUBACK, got {:?}",
                    other.packet_type()
                ))
            }
        }
    }
    let throttle = match kind {
        Kind::Sub(_) if s.sub_read_bytes_per_sec > 0 => {
            Some(ReadThrottle::new(s.sub_read_bytes_per_sec))
        }
        _ => None,
    };
    Ok(Conn {
        stream: into_mio(stream).map_err(|e| format!("{name}: {e}"))?,
        name,
        rbuf,
        wbuf: BytesMut::with_capacity(WRITE_HIGH_WATER),
        readable: true,
        writable: true,
        closed: false,
        last_write: Instant::now(),
        kind,
        throttle,
    })
}

/// Per-turn counters, added to [`Shared`] after each loop turn.
#[derive(Default)]
struct Delta {
    received: u64,
    distinct: u64,
}

pub struct Worker {
    index: usize,
    settings: Settings,
    roles: Vec<Role>,
}

impl Worker {
    pub fn new(index: usize, settings: Settings, roles: Vec<Role>) -> Self {
        Self {
            index,
            settings,
            roles,
        }
    }

    /// Sets up the connections, then runs until `shared.finish`.
    pub fn run(self, shared: &Shared) -> Report {
        let mut report = Report {
            subscribers: Vec::new(),
            latency: new_histogram(),
            errors: Vec::new(),
            unexpected_acks: 0,
        };
        let mut conns = Vec::with_capacity(self.roles.len());
        for role in &self.roles {
            if shared.finish.load(Relaxed) {
                return report;
            }
            match open(&self.settings, role) {
                Ok(c) => conns.push(c),
                Err(e) => {
                    shared.fail(e);
                    return report;
                }
            }
        }
        let mut poll = match Poll::new() {
            Ok(p) => p,
            Err(e) => {
                shared.fail(format!("mio poll: {e}"));
                return report;
            }
        };
        match Waker::new(poll.registry(), WAKE_TOKEN) {
            Ok(w) => {
                let _ = shared.wakers[self.index].set(w);
            }
            Err(e) => {
                shared.fail(format!("mio waker: {e}"));
                return report;
            }
        }
        for (i, c) in conns.iter_mut().enumerate() {
            if let Err(e) = poll.registry().register(
                c.stream.socket_mut(),
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                shared.fail(format!("mio register: {e}"));
                return report;
            }
        }
        shared.ready.fetch_add(1, Relaxed);
        self.event_loop(shared, &mut poll, &mut conns, &mut report);
        for c in &mut conns {
            if !c.closed {
                let mut out = BytesMut::new();
                let _ =
                    Packet::Disconnect(Disconnect::NORMAL).encode(self.settings.version, &mut out);
                let _ = c.stream.write(&out);
                let _ = c.stream.flush();
            }
            if let Kind::Sub(st) = &mut c.kind {
                report.subscribers.push(SubscriberReport {
                    id: st.id,
                    streams: std::mem::take(&mut st.streams),
                    foreign: st.foreign,
                });
            }
        }
        report
    }

    fn event_loop(
        &self,
        shared: &Shared,
        poll: &mut Poll,
        conns: &mut [Conn],
        report: &mut Report,
    ) {
        let s = &self.settings;
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; 64 * 1024];
        let mut pool = BytesMut::with_capacity(64 * 1024);
        let ctx = ReadCtx {
            settings: s,
            shared,
            options: DecodeOptions::new(s.version),
            me: self.index,
        };
        let mut stopped = false;
        let mut last_ping_check = Instant::now();
        loop {
            if shared.finish.load(Relaxed) {
                return;
            }
            let go_ns = shared.go_ns.load(Relaxed);
            if !stopped && shared.stop.load(Relaxed) {
                stopped = true;
                for c in conns.iter() {
                    if let Kind::Pub(st) = &c.kind {
                        shared.sent[st.id as usize].store(st.seq, Relaxed);
                    }
                }
                // Release: the final `sent` counts above are visible to whoever sees this.
                shared.stopped.fetch_add(1, Release);
            }
            let publishing = go_ns != 0 && !stopped;
            let due = if publishing && s.rate_per_publisher > 0.0 {
                let secs = (shared.now_ns().saturating_sub(go_ns)) as f64 / 1e9;
                (secs * s.rate_per_publisher) as u64 + 1
            } else {
                u64::MAX
            };
            // Idle first, then look for work: progress published in between wakes the poll.
            shared.idle[self.index].store(true, SeqCst);
            let busy = conns.iter_mut().any(|c| {
                !c.closed
                    && (c.may_read()
                        || (c.writable && has_output(c))
                        || (publishing && c.writable && can_produce(c, due, s, shared)))
            });
            let timeout = if busy {
                shared.idle[self.index].store(false, SeqCst);
                Duration::ZERO
            } else {
                Duration::from_millis(1)
            };
            let polled = poll.poll(&mut events, Some(timeout));
            shared.idle[self.index].store(false, SeqCst);
            if let Err(e) = polled {
                if e.kind() != io::ErrorKind::Interrupted {
                    report.errors.push(format!("poll: {e}"));
                    return;
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKE_TOKEN {
                    continue;
                }
                let c = &mut conns[ev.token().0];
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    c.readable = true;
                }
                if ev.is_writable() || ev.is_write_closed() {
                    c.writable = true;
                }
            }
            let mut delta = Delta::default();
            for c in conns.iter_mut() {
                if c.closed {
                    continue;
                }
                if c.may_read() {
                    read_conn(c, &mut scratch, &ctx, report, &mut delta);
                }
                if publishing && !c.closed {
                    produce(c, due, s, shared, &mut pool);
                }
                if c.writable && has_output(c) && !c.closed {
                    flush(c, report);
                }
            }
            if delta.received > 0 {
                shared.received.fetch_add(delta.received, Relaxed);
                shared.distinct.fetch_add(delta.distinct, Relaxed);
                shared.last_receive_ns.fetch_max(shared.now_ns(), Relaxed);
            }
            let mut unacked = 0;
            for c in conns.iter() {
                if let Kind::Pub(st) = &c.kind {
                    if !stopped {
                        shared.sent[st.id as usize].store(st.seq, Relaxed);
                    }
                    unacked += st.inflight as u64;
                }
            }
            shared.unacked[self.index].store(unacked, Relaxed);
            if last_ping_check.elapsed() >= Duration::from_secs(1) && s.keep_alive_secs > 0 {
                last_ping_check = Instant::now();
                let idle = Duration::from_secs(u64::from(s.keep_alive_secs) / 2);
                for c in conns.iter_mut().filter(|c| !c.closed) {
                    if c.last_write.elapsed() >= idle {
                        let _ = Packet::PingReq.encode(s.version, &mut c.wbuf);
                        flush(c, report);
                    }
                }
            }
        }
    }
}

/// The sequence number below which publisher `id` may send now: `due` (its rate), capped by
/// its end-to-end window.
fn limit(id: u32, due: u64, s: &Settings, shared: &Shared) -> u64 {
    let due = if s.count_per_publisher > 0 {
        due.min(s.count_per_publisher)
    } else {
        due
    };
    let slots = &shared.progress[id as usize];
    if s.window_per_publisher == 0 || slots.is_empty() {
        return due;
    }
    let slowest = slots.iter().map(|p| p.load(Relaxed)).min().unwrap_or(0);
    due.min(slowest + s.window_per_publisher)
}

fn can_produce(c: &Conn, due: u64, s: &Settings, shared: &Shared) -> bool {
    match &c.kind {
        Kind::Pub(st) => {
            c.wbuf.len() < WRITE_HIGH_WATER
                && st.seq < limit(st.id, due, s, shared)
                && (s.qos == QoS::AtMostOnce || st.inflight < st.window)
        }
        Kind::Sub(_) => false,
    }
}

/// Encodes up to a batch of due messages into the connection's output buffer.
fn produce(c: &mut Conn, due: u64, s: &Settings, shared: &Shared, pool: &mut BytesMut) {
    if !can_produce(c, due, s, shared) {
        return;
    }
    let Kind::Pub(st) = &mut c.kind else {
        return;
    };
    let due = limit(st.id, due, s, shared);
    let sent_ns = shared.now_ns();
    let mut n = 0;
    while n < BATCH_MESSAGES
        && c.wbuf.len() < WRITE_HIGH_WATER
        && st.seq < due
        && (s.qos == QoS::AtMostOnce || st.inflight < st.window)
    {
        let packet_id = if s.qos == QoS::AtMostOnce {
            0
        } else {
            st.inflight += 1;
            st.take_packet_id()
        };
        let p = Packet::Publish(Publish {
            dup: false,
            qos: s.qos,
            retain: false,
            topic: st.topic.clone(),
            packet_id,
            properties: None,
            payload: payload::write(
                pool,
                s.payload_bytes,
                Stamp {
                    publisher: st.id + s.id_base,
                    seq: st.seq,
                    sent_ns,
                },
            ),
        });
        p.encode(s.version, &mut c.wbuf)
            .expect("a benchmark PUBLISH always encodes");
        st.seq += 1;
        n += 1;
    }
}

/// Output waits: encoded packets, or TLS records the socket did not take yet.
fn has_output(c: &Conn) -> bool {
    !c.wbuf.is_empty() || c.stream.wants_write()
}

/// Writes pending output until it is all written or the socket would block.
fn flush(c: &mut Conn, report: &mut Report) {
    while has_output(c) {
        if c.wbuf.is_empty() {
            // Only TLS records are left.
            match c.stream.flush() {
                Ok(()) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => close(c, report, format!("write: {e}")),
            }
            return;
        }
        match c.stream.write(&c.wbuf) {
            Ok(0) => {
                close(c, report, "write returned 0".into());
                return;
            }
            Ok(n) => {
                c.wbuf.advance(n);
                c.last_write = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.writable = false;
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                close(c, report, format!("write: {e}"));
                return;
            }
        }
    }
}

fn close(c: &mut Conn, report: &mut Report, why: String) {
    if !c.closed {
        c.closed = true;
        report.errors.push(format!("{}: {why}", c.name));
    }
}

/// Reads what is available (up to a budget) and handles every whole packet.
/// What reading a connection needs from its worker.
struct ReadCtx<'a> {
    settings: &'a Settings,
    shared: &'a Shared,
    options: DecodeOptions,
    /// The worker's index.
    me: usize,
}

fn read_conn(
    c: &mut Conn,
    scratch: &mut [u8],
    ctx: &ReadCtx,
    report: &mut Report,
    delta: &mut Delta,
) {
    let (shared, s, me) = (ctx.shared, ctx.settings, ctx.me);
    let mut budget = match &mut c.throttle {
        Some(t) => t.available().min(READ_BUDGET),
        None => READ_BUDGET,
    };
    loop {
        if budget == 0 {
            // Leave `readable` set: more next turn.
            break;
        }
        let want = scratch.len().min(budget);
        match c.stream.read(&mut scratch[..want]) {
            Ok(0) => {
                c.readable = false;
                close(c, report, "connection closed by the broker".into());
                break;
            }
            Ok(n) => {
                c.rbuf.extend_from_slice(&scratch[..n]);
                budget = budget.saturating_sub(n);
                if let Some(t) = &mut c.throttle {
                    t.take(n);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.readable = false;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                c.readable = false;
                close(c, report, format!("read: {e}"));
                break;
            }
        }
    }
    let now_ns = shared.now_ns();
    handle_packets(c, &ctx.options, report, delta, s, now_ns);
    if let Kind::Sub(st) = &mut c.kind {
        for p in st.touched.drain(..) {
            let p = p as usize;
            st.is_touched[p] = false;
            if let Some(slot) = st.slots[p] {
                if s.group_window {
                    shared.progress(p, slot, std::mem::take(&mut st.fresh[p]), true, me);
                } else {
                    shared.progress(p, slot, st.streams[p].high_water(), false, me);
                }
            }
        }
    }
}

/// Handles every whole packet in the connection's input buffer.
fn handle_packets(
    c: &mut Conn,
    options: &DecodeOptions,
    report: &mut Report,
    delta: &mut Delta,
    s: &Settings,
    now_ns: u64,
) {
    loop {
        let packet = match decode(&mut c.rbuf, options) {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                close(c, report, format!("decode: {e}"));
                return;
            }
        };
        match (packet, &mut c.kind) {
            (Packet::Publish(p), Kind::Sub(st)) => {
                delta.received += 1;
                match payload::read(&p.payload) {
                    Some(stamp) if (stamp.publisher as usize) < st.streams.len() => {
                        let p = stamp.publisher as usize;
                        if st.streams[p].record(stamp.seq) != Arrival::Duplicate {
                            delta.distinct += 1;
                            st.fresh[p] += 1;
                        }
                        if st.slots[p].is_some() && !st.is_touched[p] {
                            st.is_touched[p] = true;
                            st.touched.push(stamp.publisher);
                        }
                        report
                            .latency
                            .saturating_record(now_ns.saturating_sub(stamp.sent_ns).max(1));
                    }
                    _ => st.foreign += 1,
                }
                if p.qos == QoS::AtLeastOnce {
                    let _ = Packet::PubAck(Ack::new(p.packet_id)).encode(s.version, &mut c.wbuf);
                }
            }
            (Packet::PubAck(a), Kind::Pub(st)) => {
                if st.release(a.packet_id) {
                    st.inflight -= 1;
                } else {
                    report.unexpected_acks += 1;
                }
            }
            (Packet::PingResp, _) => {}
            (Packet::Disconnect(d), _) => {
                close(
                    c,
                    report,
                    format!("DISCONNECT from the broker: {:?}", d.reason_code),
                );
                return;
            }
            (other, _) => {
                close(c, report, format!("unexpected {:?}", other.packet_type()));
                return;
            }
        }
    }
}
