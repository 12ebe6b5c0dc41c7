//! The broker logic of one core, as a state machine: sessions homed here, the trie of local
//! subscriptions, the interest table of other cores, the shared groups this core owns, and its
//! replica of the retained messages. It is fed packets, mesh messages and the clock; it answers
//! by encoding packets into sessions' buffers (waking their writers) and by queueing mesh
//! messages for other cores. No I/O and no executor here, so it is tested directly.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringmq_codec::topic::{self, SharedFilter};
use ringmq_codec::{
    ConnAck, Connect, Disconnect, Packet, PacketType, Properties, Publish, QoS, ReasonCode, SubAck,
    Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Utf8Bytes,
};

use crate::auth::{Auth, ClientAuth};
use crate::mesh::{home_core, Handoff, MeshMsg};
use crate::message::{CoreId, Message, Origin, SessionId, SharedMessage};
use crate::notify::{Notify, WaitList};
use crate::overload::{Overload, OverloadLimits};
use crate::persist::{self, Store};
use crate::retained::RetainedStore;
use crate::session::{
    Delivery, ProtocolViolation, Session, SessionLimits, StoreEvent, Subscription,
};
use crate::trie::SubscriptionTrie;
use ringmq_storage::model;
use ringmq_storage::Lsn;

/// A shared-group membership change: the share, the member's core and session, and its options
/// and subscription identifier to join (`None` to leave).
type Membership = (
    Box<str>,
    CoreId,
    SessionId,
    Option<(SubscriptionOptions, Option<u32>)>,
);

/// How a shared group picks the member that receives a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShareStrategy {
    /// Members in turn.
    #[default]
    RoundRobin,
    /// A random member.
    Random,
    /// A member chosen by a hash of the publisher, so one publisher always reaches one member.
    HashClientId,
    /// The same member until it leaves.
    Sticky,
}

/// What the core needs from the configuration.
#[derive(Clone, Debug)]
pub struct CoreSettings {
    /// Number of cores.
    pub cores: usize,
    /// Per-session limits.
    pub session: SessionLimits,
    /// Largest packet we accept (announced as Maximum Packet Size).
    pub max_packet_size_bytes: u32,
    /// Largest keep-alive accepted; larger requests get this as Server Keep Alive (v5).
    pub max_keep_alive_secs: u16,
    /// Cap on Session Expiry Interval.
    pub session_expiry_max_secs: u32,
    /// Cap on Message Expiry Interval (0: none).
    pub message_expiry_max_secs: u32,
    /// Topic levels allowed in names and filters.
    pub max_topic_levels: usize,
    /// Bytes allowed in a topic name or filter.
    pub max_topic_length_bytes: usize,
    /// Subscriptions per client.
    pub max_subscriptions_per_client: usize,
    /// Retained messages kept.
    pub retained_messages_max: usize,
    /// Retained messages delivered per loop turn for one subscription, so a wildcard subscribe
    /// against a huge store does not stall the core.
    pub retained_scan_budget_messages: usize,
    /// Bytes of client identifier accepted.
    pub max_client_id_length_bytes: usize,
    /// Whether clients without a user name are let in.
    pub allow_anonymous: bool,
    /// Shared subscription member selection.
    pub share_strategy: ShareStrategy,
    /// Whether `$share/` and `$queue/` subscriptions are accepted.
    pub shared_subscriptions_enabled: bool,
    /// Highest QoS accepted from and granted to clients.
    pub maximum_qos: QoS,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Live connections allowed on one core.
    pub max_connections_per_core: usize,
    /// Back-pressure on publishers (see [`Backpressure`]); `None`: off.
    pub backpressure: Option<Backpressure>,
    /// Messages queued for one other core before readers on this core pause.
    pub cross_core_queue_capacity: usize,
    /// QoS 1/2 publications sent to one other core and not yet seen by it, before readers on
    /// this core stop handling QoS 1/2 PUBLISH: bounds what crosses to a full session before
    /// its back-pressure comes back.
    pub cross_core_window_messages: u64,
    /// High-water marks above which new connections are refused (`overload.rs`).
    pub overload: OverloadLimits,
}

/// Back-pressure on the publishers of a slow, connected session: at `high` queued messages
/// (or `high_bytes`), each publisher whose QoS 1/2 message is queued there is asked to wait
/// (its connection stops reading QoS 1/2 PUBLISH packets); under `high / 2` (and
/// `high_bytes / 2`) they are all released. Offline sessions never pause anyone: their
/// queues are bounded by the queue limits alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backpressure {
    /// Queued messages at which publishers are paused.
    pub high: usize,
    /// Queued bytes at which publishers are paused.
    pub high_bytes: usize,
    /// Longest a publisher waits, once per episode.
    pub max_wait: Duration,
    /// Publishers one session pauses at most.
    pub max_publishers: usize,
}

impl Backpressure {
    /// From `limits.publisher_backpressure_*` and the queue limits (`percent` 0: off).
    pub fn new(
        percent: u8,
        limits: &SessionLimits,
        max_wait: Duration,
        max_publishers: usize,
    ) -> Option<Backpressure> {
        if percent == 0 {
            return None;
        }
        let part = |v: usize| {
            let p = u128::from(v as u64) * u128::from(percent) / 100;
            usize::try_from(p).unwrap_or(usize::MAX).max(1)
        };
        Some(Backpressure {
            high: part(limits.max_queued_messages),
            high_bytes: part(limits.max_queued_bytes),
            max_wait,
            max_publishers,
        })
    }
}

/// The link between a session and its live connection.
#[derive(Default)]
pub struct ConnLink {
    /// Wakes the connection's writer: there are bytes in the session's buffer or it must close.
    pub notify: Notify,
    /// Set when the broker closes the connection, with the reason (sent to v5 clients).
    pub close: Cell<Option<ReasonCode>>,
    /// Sessions that asked this connection's publisher to wait (back-pressure): while
    /// non-zero, its reader handles no QoS 1/2 PUBLISH.
    pub throttled: Cell<u32>,
    /// Its QoS 1/2 publications another core has not reported handled yet.
    pub unseen: Cell<u32>,
}

struct Slot {
    session: Session,
    link: Option<Rc<ConnLink>>,
    /// Incremented at every connect: stale cleanups and timers compare it.
    generation: u64,
    /// Key of the session in this core's log (0: not persistent).
    key: u64,
    /// When its connection ended (Unix ms; 0 while connected), as written in the log.
    disconnected_at_unix_ms: u64,
    /// Who the connection is, for the ACL (set at every connect).
    auth: ClientAuth,
    /// Publishers this session paused (back-pressure), released together.
    throttling: Vec<Origin>,
}

/// A PUBACK/PUBREC held until the message it answers is durable: on this core's log up to
/// `local`, and on each other core it was sent to up to the mesh sequence number given.
struct HeldAck {
    session: SessionId,
    generation: u64,
    packet: PacketType,
    packet_id: u16,
    reason: ReasonCode,
    local: Lsn,
    remote: Vec<(CoreId, u64)>,
}

struct SharedGroup {
    id: u64,
    filter: Box<str>,
    members: Vec<(CoreId, SessionId, SubscriptionOptions, Option<u32>)>,
    next: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Will,
    Expiry,
}

/// A retained-message delivery in progress: resumed after `after` (topic order).
struct RetainedScan {
    session: SessionId,
    generation: u64,
    filter: Box<str>,
    options: SubscriptionOptions,
    sub_id: Option<u32>,
    after: Option<String>,
}

/// Progress of [`Core::continue_retained_scans`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanProgress {
    /// Nothing pending.
    Done,
    /// Messages were delivered; more are pending.
    Advanced,
    /// Pending scans wait for their sessions to drain.
    Stalled,
}

/// Counters of one core, summed for `$SYS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// PUBLISH packets received from clients.
    pub messages_received: u64,
    /// PUBLISH packets encoded for clients.
    pub messages_sent: u64,
    /// Messages dropped (all reasons).
    pub messages_dropped: u64,
    /// Times a connected session's queue reached the back-pressure mark and paused its
    /// publishers.
    pub backpressure_episodes: u64,
    /// Publishers that waited `limits.publisher_backpressure_max_wait_ms` and went on.
    pub backpressure_timeouts: u64,
    /// Connections accepted.
    pub connections_total: u64,
    /// Connections closed for a protocol violation.
    pub protocol_errors: u64,
    /// Bytes read from client sockets.
    pub bytes_received: u64,
    /// Bytes written to client sockets.
    pub bytes_sent: u64,
    /// CONNECTs refused by authentication (bad credentials, anonymous, rate-limited).
    pub auth_failed: u64,
    /// CONNECTs refused because memory or this core's queues were over their overload marks.
    pub connections_refused_overload: u64,
}

/// What one core tells core 0 for `$SYS`, once per tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsReport {
    /// The counters.
    pub stats: CoreStats,
    /// Live connections.
    pub clients_connected: u64,
    /// Sessions, connected or not.
    pub sessions: u64,
    /// Local subscriptions.
    pub subscriptions: u64,
    /// Retained messages in the core's replica.
    pub retained: u64,
    /// Log position appended so far, bytes (0 without storage).
    pub log_appended_bytes: u64,
    /// Log position durable so far, bytes (0 without storage).
    pub log_durable_bytes: u64,
    /// Messages waiting in the queues of the core's sessions (beyond their in-flight windows).
    pub messages_queued: u64,
    /// 1 while the core refuses new connections for overload, else 0.
    pub overloaded: u64,
}

/// How the connection continues after a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// The client sent DISCONNECT: close; the will is published only if it asked for it (0x04).
    Close(Ending),
}

/// How a connection ended, for will and expiry handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// DISCONNECT 0x00: discard the will.
    Normal,
    /// DISCONNECT 0x04, or any close without DISCONNECT: publish the will.
    WithWill,
}

/// Result of a successful CONNECT.
#[derive(Debug)]
pub struct Accepted {
    /// The session.
    pub session: SessionId,
    /// Its connection generation.
    pub generation: u64,
    /// Keep alive to enforce, seconds (0: none).
    pub keep_alive_secs: u16,
}

#[derive(Default)]
struct Agg {
    qos: QoS,
    retain_as_published: bool,
    sub_ids: Vec<u32>,
}

/// The broker state of one core.
pub struct Core {
    /// This core.
    pub id: CoreId,
    settings: CoreSettings,
    next_session: SessionId,
    next_assigned: u64,
    by_client: HashMap<Utf8Bytes, SessionId>,
    slots: HashMap<SessionId, Slot>,
    subs: SubscriptionTrie<SessionId, Subscription>,
    filter_refs: HashMap<Box<str>, u32>,
    interest: SubscriptionTrie<CoreId, ()>,
    shared_interest: SubscriptionTrie<CoreId, ()>,
    groups: HashMap<Box<str>, SharedGroup>,
    group_trie: SubscriptionTrie<u64, Box<str>>,
    shared_filter_refs: HashMap<Box<str>, u32>,
    next_group: u64,
    rng: u64,
    retained: RetainedStore<SharedMessage>,
    timers: BinaryHeap<Reverse<(Instant, TimerKind, SessionId, u64)>>,
    scratch: HashMap<SessionId, Agg>,
    /// Messages waiting for each other core (index: destination core).
    pub mesh_out: Vec<VecDeque<MeshMsg>>,
    /// Woken when `mesh_out[c]` gains messages (index: destination core).
    pub mesh_notify: Vec<Rc<Notify>>,
    /// QoS 1/2 publications sent to each core (index: destination).
    mesh_qos_sent: Vec<u64>,
    /// How many of them each core reported handled ([`MeshMsg::Seen`]).
    mesh_qos_seen: Vec<u64>,
    /// QoS 1/2 publications received from each core (index: source).
    mesh_qos_received: Vec<u64>,
    /// QoS 1/2 publications in the mesh batch being handled.
    mesh_qos_batch: u64,
    /// Readers waiting for the cross-core window to open.
    pub window_waiters: Rc<WaitList>,
    /// The connection whose PUBLISH is being routed (QoS 1/2, several cores).
    publishing: Option<Rc<ConnLink>>,
    /// Its QoS 1/2 publications each other core has not reported seen, with the running count
    /// they were sent at (index: destination core; at most the window each).
    unseen: Vec<VecDeque<(u64, Rc<ConnLink>)>>,
    /// Sessions on this core pausing publishers now.
    throttling_sessions: usize,
    /// Which other cores have sessions pausing publishers ([`MeshMsg::Congested`]).
    congested: Vec<bool>,
    /// How many.
    congested_cores: usize,
    /// Counters.
    pub stats: CoreStats,
    live: usize,
    scans: VecDeque<RetainedScan>,
    /// The latest report of every core (kept on core 0).
    reports: Vec<StatsReport>,
    /// Woken when retained deliveries are pending.
    pub scan_notify: Rc<Notify>,
    /// The log, when durable sessions are on.
    store: Option<Store>,
    /// Acknowledgements waiting for durability, in the order they must be sent.
    held: VecDeque<HeldAck>,
    /// Publications sent to each core that it must confirm durable.
    seq_out: Vec<u64>,
    /// The highest of those each core has confirmed.
    confirmed: Vec<u64>,
    /// Publications received from each core that it waits to see confirmed.
    seq_in: Vec<u64>,
    /// Confirmation owed to each core: its sequence number, once the log is durable to the LSN.
    reply_due: Vec<Option<(u64, Lsn)>>,
    /// Set while routing when the log refused to store a message for a persistent session.
    refused_in_route: bool,
    /// [`Core::shutdown`] was called.
    stopped: bool,
    /// Subscriptions of persistent sessions on this core.
    persistent_subs: usize,
    /// Which other cores have subscriptions of persistent sessions (only their copies need a
    /// durability confirmation).
    persistent_cores: Vec<bool>,
    /// Passwords, ACL and failed-login limiter of this core (allow-all until set).
    pub auth: Auth,
    /// Admin API requests this core sent to others and waits for (`admin.rs`).
    admin_pending: admin::Pending,
    /// Overload marks and their state; the count of queued messages its sessions keep.
    pub overload: Overload,
}

/// Live records copied per compaction step (a few hundred microseconds of work).
pub const COMPACT_STEP_RECORDS: usize = 256;

fn protocol_of(level: u8) -> Option<ringmq_codec::ProtocolVersion> {
    use ringmq_codec::ProtocolVersion as V;
    match level {
        3 => Some(V::V3_1),
        4 => Some(V::V3_1_1),
        5 => Some(V::V5),
        _ => None,
    }
}

/// The log record of a session's current state.
fn session_record(slot: &Slot) -> model::SessionRec {
    let s = &slot.session;
    let disconnected_at_unix_ms = slot.disconnected_at_unix_ms;
    model::SessionRec {
        key: slot.key,
        client_id: s.client_id.as_bytes().to_vec(),
        protocol: s.version.level(),
        expiry_secs: s.expiry_secs,
        disconnected_at_unix_ms,
        will: s.will.as_ref().map(|w| model::WillRec {
            delay_secs: w
                .properties
                .as_ref()
                .and_then(|p| p.will_delay_interval)
                .unwrap_or(0),
            publish: persist::encode_will(w),
        }),
    }
}

fn limits_ok(s: &CoreSettings, t: &str) -> bool {
    t.len() <= s.max_topic_length_bytes && t.split('/').count() <= s.max_topic_levels
}

impl Core {
    /// A core with no sessions.
    pub fn new(id: CoreId, settings: CoreSettings) -> Self {
        let cores = settings.cores;
        let settings_overload = settings.overload;
        Self {
            id,
            settings,
            next_session: 1,
            next_assigned: 0,
            by_client: HashMap::new(),
            slots: HashMap::new(),
            subs: SubscriptionTrie::new(),
            filter_refs: HashMap::new(),
            interest: SubscriptionTrie::new(),
            shared_interest: SubscriptionTrie::new(),
            groups: HashMap::new(),
            group_trie: SubscriptionTrie::new(),
            shared_filter_refs: HashMap::new(),
            next_group: 1,
            rng: 0x9E37_79B9_7F4A_7C15 ^ u64::from(id),
            retained: RetainedStore::new(),
            timers: BinaryHeap::new(),
            scratch: HashMap::new(),
            mesh_out: (0..cores).map(|_| VecDeque::new()).collect(),
            mesh_notify: (0..cores).map(|_| Rc::new(Notify::default())).collect(),
            mesh_qos_sent: vec![0; cores],
            mesh_qos_seen: vec![0; cores],
            mesh_qos_received: vec![0; cores],
            mesh_qos_batch: 0,
            window_waiters: Rc::new(WaitList::default()),
            publishing: None,
            unseen: (0..cores).map(|_| VecDeque::new()).collect(),
            throttling_sessions: 0,
            congested: vec![false; cores],
            congested_cores: 0,
            stats: CoreStats::default(),
            live: 0,
            scans: VecDeque::new(),
            reports: vec![StatsReport::default(); cores],
            scan_notify: Rc::new(Notify::default()),
            store: None,
            held: VecDeque::new(),
            seq_out: vec![0; cores],
            confirmed: vec![0; cores],
            seq_in: vec![0; cores],
            reply_due: vec![None; cores],
            refused_in_route: false,
            stopped: false,
            persistent_subs: 0,
            persistent_cores: vec![false; cores],
            auth: Auth::default(),
            admin_pending: admin::Pending::default(),
            overload: Overload::new(id, settings_overload),
        }
    }

    /// Counts subscriptions of persistent sessions; tells the other cores when the first one
    /// appears or the last one goes, before the interest it comes with.
    fn persistent_subs_changed(&mut self, added: bool) {
        if self.store.is_none() {
            return;
        }
        let before = self.persistent_subs;
        if added {
            self.persistent_subs += 1;
        } else {
            self.persistent_subs = self.persistent_subs.saturating_sub(1);
        }
        if (before == 0) != (self.persistent_subs == 0) {
            let (core, on) = (self.id, self.persistent_subs > 0);
            self.broadcast(|| MeshMsg::Persistent { core, on });
        }
    }

    /// Whether [`Core::shutdown`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Turns durable sessions on with this core's log.
    pub fn set_store(&mut self, store: Store) {
        self.store = Some(store);
    }

    /// The log, if durable sessions are on.
    pub fn store_mut(&mut self) -> Option<&mut Store> {
        self.store.as_mut()
    }

    /// Whether durable sessions are on.
    pub fn has_store(&self) -> bool {
        self.store.is_some()
    }

    /// Acknowledgements waiting for the log.
    pub fn held_acks(&self) -> usize {
        self.held.len()
    }

    /// The settings.
    pub fn settings(&self) -> &CoreSettings {
        &self.settings
    }

    /// Sessions homed here (connected or not).
    pub fn session_count(&self) -> usize {
        self.slots.len()
    }

    /// Sessions with a live connection.
    pub fn connected_count(&self) -> usize {
        self.live
    }

    /// Local subscriptions (plain entries in the trie).
    pub fn subscription_count(&self) -> usize {
        self.subs.len()
    }

    /// Retained messages in this core's replica.
    pub fn retained_count(&self) -> usize {
        self.retained.len()
    }

    /// Whether readers should pause: some other core is not draining its queue.
    pub fn mesh_backlogged(&self) -> bool {
        self.mesh_out
            .iter()
            .any(|q| q.len() >= self.settings.cross_core_queue_capacity)
    }

    /// Whether the reader of `link` waits before its next QoS 1/2 PUBLISH: the cross-core
    /// window is full, or some core is pausing publishers and one of this connection's
    /// publications has not reached its destination core yet (so a publisher that core has
    /// not named yet sends one message, not a window, into a full session).
    pub fn must_wait_for_mesh(&self, link: &ConnLink) -> bool {
        self.cross_core_window_full() || (link.unseen.get() > 0 && self.congested_cores > 0)
    }

    /// Whether some other core has `cross_core_window_messages` QoS 1/2 publications from this
    /// one that it has not handled yet: readers stop handling QoS 1/2 PUBLISH until it has.
    pub fn cross_core_window_full(&self) -> bool {
        let window = self.settings.cross_core_window_messages;
        self.mesh_qos_sent
            .iter()
            .zip(&self.mesh_qos_seen)
            .any(|(sent, seen)| sent - seen >= window)
    }

    fn send_mesh(&mut self, core: CoreId, msg: MeshMsg) {
        debug_assert_ne!(core, self.id);
        if let MeshMsg::Publish { msg, .. } | MeshMsg::Deliver { msg, .. } = &msg {
            if msg.qos != QoS::AtMostOnce {
                let c = usize::from(core);
                self.mesh_qos_sent[c] += 1;
                if let Some(link) = &self.publishing {
                    link.unseen.set(link.unseen.get() + 1);
                    self.unseen[c].push_back((self.mesh_qos_sent[c], link.clone()));
                }
            }
        }
        self.mesh_out[usize::from(core)].push_back(msg);
        self.mesh_notify[usize::from(core)].notify();
    }

    fn broadcast(&mut self, mut make: impl FnMut() -> MeshMsg) {
        for c in 0..self.settings.cores as CoreId {
            if c != self.id {
                let m = make();
                self.send_mesh(c, m);
            }
        }
    }

    fn linked_slot(&mut self, session: SessionId, link: &Rc<ConnLink>) -> Option<&mut Slot> {
        self.slots
            .get_mut(&session)
            .filter(|s| s.link.as_ref().is_some_and(|l| Rc::ptr_eq(l, link)))
    }

    /// The bytes waiting for a session's socket, taken for writing by the connection `link`
    /// (`None` if there are none, or if the session has moved to a newer connection).
    pub fn take_output(
        &mut self,
        session: SessionId,
        link: &Rc<ConnLink>,
    ) -> Option<bytes::BytesMut> {
        let slot = self.linked_slot(session, link)?;
        if slot.session.out.is_empty() {
            return None;
        }
        Some(slot.session.out.split())
    }

    /// The writer of `link` flushed: refill the window from the queue.
    pub fn on_written(&mut self, session: SessionId, link: &Rc<ConnLink>, now: Instant) {
        if let Some(slot) = self.linked_slot(session, link) {
            slot.session.pump(now);
            self.drain_store_events(session);
            self.relieve(session, false);
        }
    }

    /// Sends a connection to its home core.
    pub fn handoff(&mut self, home: CoreId, h: Box<Handoff>) {
        self.send_mesh(home, MeshMsg::Handoff(h));
    }

    /// Writes what happened to a session's stored deliveries into the log.
    fn drain_store_events(&mut self, session: SessionId) {
        let Some(slot) = self.slots.get_mut(&session) else {
            return;
        };
        if slot.session.store_events.is_empty() {
            return;
        }
        let events = std::mem::take(&mut slot.session.store_events);
        let key = slot.key;
        let Some(store) = self.store.as_mut().filter(|_| key != 0) else {
            return;
        };
        for e in events {
            match e {
                StoreEvent::Finished { stored } => store.done(key, stored),
                StoreEvent::Sent { stored, packet_id } => store.sent(key, stored, packet_id, false),
                StoreEvent::Released { stored, packet_id } => {
                    store.sent(key, stored, packet_id, true)
                }
            }
        }
    }

    fn wake(&mut self, session: SessionId) {
        self.drain_store_events(session);
        if let Some(Slot {
            link: Some(link),
            session: s,
            ..
        }) = self.slots.get(&session)
        {
            if !s.out.is_empty() {
                link.notify.notify();
            }
        }
    }

    fn assign_client_id(&mut self) -> Utf8Bytes {
        loop {
            self.next_assigned += 1;
            let id = format!("ringmq-{}-{}", self.id, self.next_assigned);
            if home_core(id.as_bytes(), self.settings.cores) == self.id {
                // Always valid: ASCII, short.
                return Utf8Bytes::try_from(id).unwrap_or_default();
            }
        }
    }

    /// Whether a CONNECT may go on under overload (`overload.rs`); a refusal is counted and
    /// answered by the caller with CONNACK 0x89 Server busy (3.x: 3, Server unavailable).
    /// The connection driver asks on the core that read the CONNECT, before authentication
    /// (on another core than the client id's home core only the memory mark is checked), and
    /// again on the home core right before [`Core::connect`], where a client resuming its
    /// session is let in.
    pub fn admit_under_overload(&mut self, c: &Connect) -> Result<(), crate::overload::Cause> {
        let home_here = c.client_id.is_empty()
            || home_core(c.client_id.as_bytes(), self.settings.cores) == self.id;
        let resumes = home_here && !c.clean_start && self.by_client.contains_key(&c.client_id);
        let verdict = self.overload.admit(home_here, c.clean_start, resumes);
        if verdict.is_err() {
            self.stats.connections_refused_overload += 1;
        }
        verdict
    }

    /// Messages queued in this core's sessions, counted by a scan (the running count,
    /// `Overload::queued`, must always equal it).
    pub fn queued_by_scan(&self) -> u64 {
        self.slots
            .values()
            .map(|s| s.session.queued_len() as u64)
            .sum()
    }

    #[cfg(debug_assertions)]
    fn assert_queue_gauge(&self) {
        debug_assert_eq!(
            self.overload.queued(),
            self.queued_by_scan(),
            "the running count of queued messages differs from a scan"
        );
    }

    /// Handles CONNECT for a connection on this core (the client id's home core). On success
    /// the CONNACK is in the session's buffer; on failure the caller sends a CONNACK with the
    /// returned reason and closes.
    pub fn connect(
        &mut self,
        c: &Connect,
        link: Rc<ConnLink>,
        now: Instant,
    ) -> Result<Accepted, ReasonCode> {
        self.stats.connections_total += 1;
        let v5 = c.protocol.is_v5();
        if self.live >= self.settings.max_connections_per_core {
            return Err(ReasonCode::ServerBusy);
        }
        if c.client_id.len() > self.settings.max_client_id_length_bytes {
            return Err(ReasonCode::ClientIdentifierNotValid);
        }
        if c.username.is_none() && !self.settings.allow_anonymous {
            return Err(if v5 {
                ReasonCode::NotAuthorized
            } else {
                ReasonCode::BadUserNameOrPassword
            });
        }
        if let Some(w) = &c.will {
            if !limits_ok(&self.settings, &w.topic) || w.topic.starts_with('$') {
                return Err(ReasonCode::TopicNameInvalid);
            }
            if w.qos > self.settings.maximum_qos {
                return Err(ReasonCode::QoSNotSupported); // [MQTT-3.2.2-12]
            }
            if w.retain && !self.settings.retain_available {
                return Err(ReasonCode::RetainNotSupported); // [MQTT-3.2.2-13]
            }
        }
        // Enhanced authentication ran on the accepting core (`connection.rs`), which lets only
        // CONNECTs verified by SCRAM-SHA-256 through with a method.
        let method = c
            .properties
            .as_ref()
            .and_then(|p| p.authentication_method.as_ref());
        if method.is_some_and(|m| m.as_str() != crate::auth::scram::METHOD) {
            return Err(ReasonCode::BadAuthenticationMethod);
        }
        let enhanced = method.is_some();
        let (client_id, assigned) = if c.client_id.is_empty() {
            if !v5 && !c.clean_start {
                return Err(ReasonCode::ClientIdentifierNotValid); // [MQTT-3.1.3-8]
            }
            (self.assign_client_id(), true)
        } else {
            (c.client_id.clone(), false)
        };
        let props = c.properties.as_deref();
        let expiry_secs = if v5 {
            props.and_then(|p| p.session_expiry_interval).unwrap_or(0)
        } else if c.clean_start {
            0
        } else {
            u32::MAX
        }
        .min(self.settings.session_expiry_max_secs);

        // Takeover [MQTT-3.1.4-3]: close the old connection, its will follows the usual rules.
        let existing = self.by_client.get(&client_id).copied();
        if let Some(sid) = existing {
            self.end_connection(
                sid,
                None,
                Ending::WithWill,
                Some(ReasonCode::SessionTakenOver),
                now,
            );
        }
        let resumed = match existing {
            Some(sid) if !c.clean_start && self.slots.contains_key(&sid) => Some(sid),
            Some(sid) => {
                self.end_session(sid, now);
                None
            }
            None => None,
        };
        let sid = match resumed {
            Some(sid) => sid,
            None => {
                let sid = self.next_session;
                self.next_session += 1;
                let mut session = Session::new(
                    sid,
                    client_id.clone(),
                    c.protocol,
                    self.settings.session.clone(),
                );
                session.set_queue_gauge(self.overload.gauge().clone());
                self.slots.insert(
                    sid,
                    Slot {
                        session,
                        link: None,
                        generation: 0,
                        key: 0,
                        disconnected_at_unix_ms: 0,
                        auth: ClientAuth::default(),
                        throttling: Vec::new(),
                    },
                );
                self.by_client.insert(client_id.clone(), sid);
                sid
            }
        };
        // Keep Alive 0 (never time out) asks for more than any maximum below 65535, the default
        // that leaves keep alive to the client.
        let max_keep_alive = self.settings.max_keep_alive_secs;
        let keep_alive = match c.keep_alive {
            0 if max_keep_alive < u16::MAX => max_keep_alive,
            k => k.min(max_keep_alive),
        };
        let mut connack = ConnAck {
            session_present: resumed.is_some(),
            reason_code: ReasonCode::Success,
            properties: None,
        };
        if v5 {
            let mut p = Properties {
                receive_maximum: Some(self.settings.session.max_inflight_messages),
                maximum_packet_size: Some(self.settings.max_packet_size_bytes),
                topic_alias_maximum: Some(self.settings.session.max_topic_alias),
                ..Default::default()
            };
            if self.settings.maximum_qos < QoS::ExactlyOnce {
                p.maximum_qos = Some(self.settings.maximum_qos);
            }
            if !self.settings.retain_available {
                p.retain_available = Some(false);
            }
            if !self.settings.shared_subscriptions_enabled {
                p.shared_subscription_available = Some(false);
            }
            let asked = props.and_then(|p| p.session_expiry_interval).unwrap_or(0);
            if asked != expiry_secs {
                p.session_expiry_interval = Some(expiry_secs);
            }
            if assigned {
                p.assigned_client_identifier = Some(client_id.clone());
            }
            if keep_alive != c.keep_alive {
                p.server_keep_alive = Some(keep_alive);
            }
            if enhanced {
                // [MQTT-4.12.0-5]: the method again, with the server-final-message.
                p.authentication_method = props.and_then(|p| p.authentication_method.clone());
                p.authentication_data = props.and_then(|p| p.authentication_data.clone());
            }
            connack.properties = Some(Box::new(p));
        }
        let slot = self.slots.get_mut(&sid).expect("slot inserted above");
        slot.generation += 1;
        slot.link = Some(link);
        self.live += 1;
        // ACL: who this connection is; a will it may not publish is dropped.
        slot.auth = self.auth.client(c.username.as_deref(), &client_id);
        if enhanced {
            slot.auth.enable_reauthentication();
        }
        let will = c.will.clone().filter(|w| {
            let ok = self.auth.may_write(&mut slot.auth, &w.topic);
            if !ok {
                tracing::info!(client_id = %client_id, topic = %w.topic, "will dropped: the ACL does not grant writing its topic");
            }
            ok
        });
        let s = &mut slot.session;
        s.expiry_secs = expiry_secs;
        s.will = will;
        s.version = c.protocol;
        s.write(&Packet::ConnAck(connack));
        let receive_max = props.and_then(|p| p.receive_maximum).unwrap_or(u16::MAX);
        let max_packet = props
            .and_then(|p| p.maximum_packet_size)
            .unwrap_or(ringmq_codec::PACKET_SIZE_MAX);
        s.set_peer_topic_alias_maximum(props.and_then(|p| p.topic_alias_maximum).unwrap_or(0));
        s.attach(c.protocol, receive_max, max_packet, now);
        if let Some(store) = self.store.as_mut() {
            if expiry_secs > 0 && slot.key == 0 {
                slot.key = store.new_key();
            }
            slot.disconnected_at_unix_ms = 0;
            if slot.key != 0 {
                let rec = session_record(slot);
                // A session record is a control record: it is refused only when the disk
                // fails, and then the session is simply not durable (logged by the store).
                let _ = store.put_session(&rec);
            }
        }
        let generation = slot.generation;
        self.wake(sid);
        Ok(Accepted {
            session: sid,
            generation,
            keep_alive_secs: if v5 { keep_alive } else { c.keep_alive },
        })
    }

    /// Handles one packet from a connected client.
    pub fn on_packet(
        &mut self,
        sid: SessionId,
        packet: Packet,
        now: Instant,
    ) -> Result<Flow, ReasonCode> {
        let acked = matches!(
            packet,
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_)
        );
        let flow = match packet {
            Packet::Publish(p) => self.on_publish(sid, p, now).map(|()| Flow::Continue),
            Packet::PubAck(a) => self.with_session(sid, |s| s.on_puback(a.packet_id, now)),
            Packet::PubRec(a) => self.with_session(sid, |s| s.on_pubrec(&a, now)),
            Packet::PubRel(a) => {
                if let Some(slot) = self.slots.get(&sid).filter(|s| s.key != 0) {
                    if let Some(store) = self.store.as_mut() {
                        store.qos2_in(slot.key, a.packet_id, false);
                    }
                }
                self.with_session(sid, |s| s.on_pubrel(a.packet_id))
            }
            Packet::PubComp(a) => self.with_session(sid, |s| s.on_pubcomp(a.packet_id, now)),
            Packet::Subscribe(s) => self.on_subscribe(sid, s, now).map(|()| Flow::Continue),
            Packet::Unsubscribe(u) => self.on_unsubscribe(sid, u).map(|()| Flow::Continue),
            Packet::PingReq => self.with_session(sid, |s| {
                s.write(&Packet::PingResp);
            }),
            Packet::Disconnect(d) => self.on_disconnect(sid, &d),
            Packet::Auth(a) => return self.on_auth(sid, a),
            // A second CONNECT [MQTT-3.1.0-2] and packets only a server sends.
            _ => Err(ReasonCode::ProtocolError),
        };
        if flow.is_err() {
            self.stats.protocol_errors += 1;
        }
        if acked {
            self.relieve(sid, false);
        }
        self.wake(sid);
        flow
    }

    /// AUTH after the CONNACK: re-authentication (spec 4.12.1) of a connection verified by
    /// SCRAM-SHA-256 at CONNECT (`auth::scram::Reauth`); from any other connection a Protocol
    /// Error [MQTT-4.12.0-7]. A failure ends the connection with DISCONNECT 0x87 (0x8C for
    /// another method, 0x82 out of sequence) [MQTT-4.12.1-2], counted in `auth_failed`; it is
    /// not counted in the failed-login limiter, which works on addresses at connect time.
    fn on_auth(&mut self, sid: SessionId, a: ringmq_codec::Auth) -> Result<Flow, ReasonCode> {
        let Some(slot) = self.slots.get_mut(&sid) else {
            return Ok(Flow::Continue);
        };
        let Some(reauth) = slot.auth.reauthentication() else {
            self.stats.protocol_errors += 1;
            return Err(ReasonCode::ProtocolError);
        };
        let props = a.properties.unwrap_or_default();
        let method = props.authentication_method.as_deref();
        let data = props.authentication_data.as_deref().unwrap_or_default();
        let step = reauth.on_auth(self.auth.scram(), a.reason_code, method, data);
        let (reason, data) = match step {
            Ok(crate::auth::scram::Step::Continue(d)) => (ReasonCode::ContinueAuthentication, d),
            Ok(crate::auth::scram::Step::Done(d)) => (ReasonCode::Success, d),
            Err(reason) => {
                if reason == ReasonCode::ProtocolError {
                    self.stats.protocol_errors += 1;
                } else {
                    self.stats.auth_failed += 1;
                }
                tracing::info!(client_id = %slot.session.client_id, ?reason, "re-authentication failed; disconnecting");
                return Err(reason);
            }
        };
        if reason == ReasonCode::Success {
            tracing::debug!(client_id = %slot.session.client_id, "re-authenticated");
        }
        slot.session.write(&Packet::Auth(ringmq_codec::Auth {
            reason_code: reason,
            properties: Some(Box::new(Properties {
                authentication_method: props.authentication_method.clone(),
                authentication_data: Some(data.into()),
                ..Default::default()
            })),
        }));
        self.wake(sid);
        Ok(Flow::Continue)
    }

    fn with_session(
        &mut self,
        sid: SessionId,
        f: impl FnOnce(&mut Session),
    ) -> Result<Flow, ReasonCode> {
        if let Some(slot) = self.slots.get_mut(&sid) {
            f(&mut slot.session);
        }
        Ok(Flow::Continue)
    }

    fn on_publish(
        &mut self,
        sid: SessionId,
        mut p: Publish,
        now: Instant,
    ) -> Result<(), ReasonCode> {
        self.stats.messages_received += 1;
        let Some(slot) = self.slots.get_mut(&sid) else {
            return Ok(());
        };
        let s = &mut slot.session;
        s.resolve_topic_alias(&mut p)
            .map_err(|ProtocolViolation::Disconnect(r)| r)?;
        if p.properties
            .as_ref()
            .is_some_and(|pr| !pr.subscription_identifiers.is_empty())
        {
            return Err(ReasonCode::ProtocolError); // [MQTT-3.3.4-6]
        }
        if !limits_ok(&self.settings, &p.topic) {
            return Err(ReasonCode::TopicNameInvalid);
        }
        if p.qos > self.settings.maximum_qos {
            return Err(ReasonCode::QoSNotSupported); // [MQTT-3.2.2-11]
        }
        if p.retain && !self.settings.retain_available {
            return Err(ReasonCode::RetainNotSupported); // [MQTT-3.3.1-8]
        }
        let (qos, packet_id) = (p.qos, p.packet_id);
        let generation = slot.generation;
        // Counted per connection only while some core pauses publishers.
        let publisher = if qos == QoS::AtMostOnce || self.congested_cores == 0 {
            None
        } else {
            slot.link.clone()
        };
        // Clients do not publish into $SYS and other $ topics, nor where the ACL does not grant
        // it: 0x87 in 5.0; in 3.x acknowledged, not routed.
        let reason = if p.topic.starts_with('$') || !self.auth.may_write(&mut slot.auth, &p.topic) {
            ReasonCode::NotAuthorized
        } else {
            ReasonCode::Success
        };
        // A refused QoS 2 PUBLISH in 5.0 ends with the PUBREC (4.3.3): its id is not kept.
        if qos == QoS::ExactlyOnce
            && (reason == ReasonCode::Success || !s.version.is_v5())
            && !s
                .on_incoming_qos2(packet_id)
                .map_err(|ProtocolViolation::Disconnect(r)| r)?
        {
            // A duplicate: answered once everything before it is durable (its original may
            // still be on its way to the disk).
            let local = self.store.as_ref().map_or(0, Store::appended);
            self.ack_when_durable(
                HeldAck {
                    session: sid,
                    generation,
                    packet: PacketType::PubRec,
                    packet_id,
                    reason: ReasonCode::Success,
                    local,
                    remote: Vec::new(),
                },
                now,
            );
            return Ok(());
        }
        let kept = reason == ReasonCode::Success || !s.version.is_v5();
        if qos == QoS::ExactlyOnce && slot.key != 0 && kept {
            if let Some(store) = self.store.as_mut() {
                store.qos2_in(slot.key, packet_id, true);
            }
        }
        let mut reason = reason;
        let packet = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(PacketType::PubAck),
            QoS::ExactlyOnce => Some(PacketType::PubRec),
        };
        // Fast path: nothing this publication does can wait for the disk (no persistent
        // subscription anywhere, nothing pending, not retained): acknowledge before routing,
        // as without storage.
        let may_wait = self.store.as_ref().is_some_and(|st| {
            p.retain
                || st.appended() > st.durable()
                || !self.held.is_empty()
                || self.persistent_subs > 0
                || self.persistent_cores.iter().any(|&f| f)
        });
        if let (Some(packet), false) = (packet, may_wait) {
            s.ack_publish(packet, packet_id, reason);
        }
        let mut remote = Vec::new();
        if reason == ReasonCode::Success {
            let origin = Origin {
                core: self.id,
                session: sid,
            };
            let msg = Arc::new(Message::from_publish(
                p,
                origin,
                now,
                self.settings.message_expiry_max_secs,
            ));
            self.refused_in_route = false;
            self.publishing = publisher;
            let confirm = self.route(msg, now);
            self.publishing = None;
            if qos != QoS::AtMostOnce {
                for c in 0..self.settings.cores {
                    if confirm & (1 << c) != 0 {
                        remote.push((c as CoreId, self.seq_out[c]));
                    }
                }
            }
            if self.refused_in_route {
                // Delivered, but not made durable for some persistent session.
                reason = ReasonCode::QuotaExceeded;
            }
        }
        let after = self.store.as_ref().map_or(0, Store::appended);
        let Some(packet) = packet.filter(|_| may_wait) else {
            return Ok(());
        };
        self.ack_when_durable(
            HeldAck {
                session: sid,
                generation,
                packet,
                packet_id,
                reason,
                // Everything this core appended so far, the publisher's own QoS 2 state
                // included (a no-op wait when nothing was appended: `appended == durable`).
                local: after,
                remote,
            },
            now,
        );
        Ok(())
    }

    /// Sends an acknowledgement now if nothing it depends on is pending, else queues it behind
    /// the others (acknowledgements keep the order of the publications [MQTT-4.6.0-2]).
    fn ack_when_durable(&mut self, h: HeldAck, now: Instant) {
        if self.held.is_empty() && self.ack_ready(&h) {
            if let Some(slot) = self.slots.get_mut(&h.session) {
                slot.session.ack_publish(h.packet, h.packet_id, h.reason);
            }
            return;
        }
        self.held.push_back(h);
        self.release_acks(now);
    }

    fn ack_ready(&self, h: &HeldAck) -> bool {
        let durable = self.store.as_ref().map_or(Lsn::MAX, Store::durable);
        h.local <= durable
            && h.remote
                .iter()
                .all(|&(c, seq)| self.confirmed[usize::from(c)] >= seq)
    }

    /// Sends the held acknowledgements whose messages are now durable, in order.
    fn release_acks(&mut self, _now: Instant) {
        let mut touched = Vec::new();
        while let Some(h) = self.held.front() {
            if !self.ack_ready(h) {
                break;
            }
            let Some(h) = self.held.pop_front() else {
                break;
            };
            if let Some(slot) = self.slots.get_mut(&h.session) {
                // A publisher that reconnected resends what was not acknowledged.
                if slot.generation == h.generation && slot.link.is_some() {
                    slot.session.ack_publish(h.packet, h.packet_id, h.reason);
                    if touched.last() != Some(&h.session) {
                        touched.push(h.session);
                    }
                }
            }
        }
        for sid in touched {
            self.wake(sid);
        }
    }

    /// The log is durable further (the flusher finished a batch): release acknowledgements
    /// and confirm to other cores.
    pub fn on_durable(&mut self, now: Instant) {
        self.release_acks(now);
        self.send_confirmations();
    }

    /// After a batch of mesh messages from core `from`: report the QoS 1/2 publications it
    /// held as seen (after any back-pressure they caused, on the same queue), and confirm what
    /// is already durable.
    pub fn after_mesh_batch(&mut self, from: CoreId) {
        if self.mesh_qos_batch > 0 && from != self.id {
            let received = &mut self.mesh_qos_received[usize::from(from)];
            *received += std::mem::take(&mut self.mesh_qos_batch);
            let count = *received;
            let me = self.id;
            self.send_mesh(from, MeshMsg::Seen { from: me, count });
        }
        self.send_confirmations();
    }

    fn send_confirmations(&mut self) {
        let durable = self.store.as_ref().map_or(Lsn::MAX, Store::durable);
        for c in 0..self.settings.cores {
            if let Some((seq, lsn)) = self.reply_due[c] {
                if lsn <= durable {
                    self.reply_due[c] = None;
                    let from = self.id;
                    self.send_mesh(c as CoreId, MeshMsg::Durable { from, seq });
                }
            }
        }
    }

    /// Routes a message published on this core: retained store, local subscribers, shared
    /// groups, and each other core that has interest, once.
    /// Returns the cores that were sent the message and will confirm it durable (a bit per
    /// core).
    pub fn route(&mut self, msg: SharedMessage, now: Instant) -> u128 {
        if msg.retain {
            self.store_retained(&msg);
            if let Some(store) = self.store.as_mut().filter(|_| !msg.topic.starts_with('$')) {
                let set = (!msg.payload.is_empty()).then_some(&msg);
                store.retain(&msg.topic, set, now);
            }
            self.broadcast(|| MeshMsg::Retain(msg.clone()));
        }
        self.deliver_local(&msg, now);
        let (mut plain, mut shared) = (0u128, 0u128);
        self.interest
            .for_each_match(&msg.topic, |c, _| plain |= 1 << c);
        self.shared_interest
            .for_each_match(&msg.topic, |c, _| shared |= 1 << c);
        if shared & (1 << self.id) != 0 {
            self.deliver_shared(&msg, now);
        }
        let durable = self.store.is_some() && msg.qos != QoS::AtMostOnce;
        let mut confirm = 0u128;
        for c in 0..self.settings.cores as CoreId {
            let (p, s) = (plain & (1 << c) != 0, shared & (1 << c) != 0);
            if c != self.id && (p || s) {
                let ack = durable && self.persistent_cores[usize::from(c)];
                if ack {
                    self.seq_out[usize::from(c)] += 1;
                    confirm |= 1 << c;
                }
                self.send_mesh(
                    c,
                    MeshMsg::Publish {
                        msg: msg.clone(),
                        plain: p,
                        shared: s,
                        ack,
                    },
                );
            }
        }
        confirm
    }

    fn store_retained(&mut self, msg: &SharedMessage) {
        if msg.payload.is_empty() {
            self.retained.remove(&msg.topic);
        } else if self.retained.len() < self.settings.retained_messages_max
            || self.retained.get(&msg.topic).is_some()
        {
            self.retained.set(&msg.topic, msg.clone());
        }
    }

    fn deliver_local(&mut self, msg: &SharedMessage, now: Instant) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let me = self.id;
        self.subs.for_each_match(&msg.topic, |sid, sub| {
            if sub.options.no_local
                && msg.origin
                    == (Origin {
                        core: me,
                        session: sid,
                    })
            {
                return;
            }
            let agg = scratch.entry(sid).or_default();
            agg.qos = agg.qos.max(sub.options.qos);
            agg.retain_as_published |= sub.options.retain_as_published;
            if let Some(id) = sub.id {
                agg.sub_ids.push(id);
            }
        });
        let delivery = |agg: Agg| Delivery {
            msg: msg.clone(),
            qos: msg.qos.min(agg.qos),
            retain: agg.retain_as_published && msg.retain,
            sub_ids: agg.sub_ids,
            stored: 0,
        };
        if self.store.is_none() || msg.qos == QoS::AtMostOnce || self.persistent_subs == 0 {
            // Nothing to store: straight to the sessions, no batch to build.
            for (sid, agg) in scratch.drain() {
                self.deliver_to(sid, delivery(agg), now);
            }
            self.scratch = scratch;
            return;
        }
        let mut batch: Vec<(SessionId, Delivery)> = scratch
            .drain()
            .map(|(sid, agg)| (sid, delivery(agg)))
            .collect();
        self.scratch = scratch;
        self.persist_deliveries(msg, &mut batch, now);
        for (sid, d) in batch {
            self.deliver_to(sid, d, now);
        }
    }

    /// Stores a message once in this core's log for the persistent sessions among `batch`
    /// that receive it at QoS 1 or 2, and marks their deliveries with its id. When the log
    /// refuses it, they still get it from memory, and the publisher is told (0x97).
    fn persist_deliveries(
        &mut self,
        msg: &SharedMessage,
        batch: &mut [(SessionId, Delivery)],
        now: Instant,
    ) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if msg.qos == QoS::AtMostOnce {
            return;
        }
        let mut targets = Vec::new();
        for (sid, d) in batch.iter() {
            if d.qos == QoS::AtMostOnce {
                continue;
            }
            if let Some(slot) = self.slots.get(sid).filter(|s| s.key != 0) {
                targets.push(model::TargetRec {
                    key: slot.key,
                    qos: d.qos as u8,
                    retain: d.retain,
                    sub_ids: d.sub_ids.clone(),
                });
            }
        }
        if targets.is_empty() {
            return;
        }
        match store.message(msg, targets, now) {
            Ok(id) => {
                for (sid, d) in batch.iter_mut() {
                    if d.qos != QoS::AtMostOnce && self.slots.get(sid).is_some_and(|s| s.key != 0) {
                        d.stored = id;
                    }
                }
            }
            Err(_) => self.refused_in_route = true,
        }
    }

    fn deliver_to(&mut self, sid: SessionId, d: Delivery, now: Instant) {
        if let Some(slot) = self.slots.get_mut(&sid) {
            // ACL read check on the concrete topic: a wildcard subscription granted earlier (or
            // before a reload) never carries a topic the client may not read.
            if !self.auth.may_read(&mut slot.auth, &d.msg.topic) {
                return;
            }
            let before = slot.session.drops.total();
            let before_full = slot.session.drops.queue_full;
            let (d_qos, origin) = (d.qos, d.msg.origin);
            slot.session.deliver(d, now);
            let after = slot.session.drops.total();
            let dropped = after - before;
            if dropped > 0 && after.is_power_of_two() {
                // Logged at 1, 2, 4, 8, ... drops per session: visible, never a flood.
                let s = &slot.session;
                tracing::warn!(
                    client_id = %s.client_id,
                    drops = ?s.drops,
                    queued = s.queued_len(),
                    "messages dropped for a session (limits.max_queued_messages / max_queued_bytes, \
                     runtime.write_buffer_high_water_bytes, expiry or the client's maximum packet size)"
                );
            }
            if d_qos != QoS::AtMostOnce {
                if let Some(bp) = self.settings.backpressure {
                    self.maybe_throttle(sid, origin, bp);
                }
            }
            let Some(slot) = self.slots.get_mut(&sid) else {
                return;
            };
            if slot.session.drops.queue_full > before_full {
                // A QoS 1/2 message this session could not queue: its publisher is told
                // (0x97 in MQTT 5) when it published on this core.
                self.refused_in_route = true;
            }
            self.stats.messages_dropped += dropped;
            self.stats.messages_sent += 1 - dropped.min(1);
            self.wake(sid);
        }
    }

    /// Back-pressure: session `sid` just queued a QoS 1/2 message from `origin`; at the high
    /// mark, while connected, it pauses that publisher (once).
    fn maybe_throttle(&mut self, sid: SessionId, origin: Origin, bp: Backpressure) {
        let Some(slot) = self.slots.get_mut(&sid) else {
            return;
        };
        // Never its own publisher: its reader also carries the acknowledgements that drain it.
        if origin.session == 0
            || origin
                == (Origin {
                    core: self.id,
                    session: sid,
                })
            || slot.link.is_none()
            || (slot.session.queued_len() < bp.high && slot.session.queued_bytes() < bp.high_bytes)
            || slot.throttling.len() >= bp.max_publishers
            || slot.throttling.contains(&origin)
        {
            return;
        }
        let first = slot.throttling.is_empty();
        slot.throttling.push(origin);
        if first {
            // What is already on its way from other cores when the pause goes out: at most a
            // window per core before the pause arrives and another before `Congested` does,
            // and one message per publisher after.
            let window =
                usize::try_from(self.settings.cross_core_window_messages).unwrap_or(usize::MAX);
            slot.session.backpressure_allowance = window
                .saturating_mul(2 * (self.settings.cores - 1))
                .saturating_add(bp.max_publishers);
            self.stats.backpressure_episodes += 1;
            self.throttling_sessions += 1;
            if self.throttling_sessions == 1 {
                let core = self.id;
                self.broadcast(|| MeshMsg::Congested { core, on: true });
            }
        }
        self.throttle(origin, true);
    }

    /// Releases every publisher session `sid` paused.
    fn release_publishers(&mut self, sid: SessionId) {
        let Some(slot) = self.slots.get_mut(&sid) else {
            return;
        };
        if slot.throttling.is_empty() {
            return;
        }
        slot.session.backpressure_allowance = 0;
        for origin in std::mem::take(&mut slot.throttling) {
            self.throttle(origin, false);
        }
        self.throttling_sessions -= 1;
        if self.throttling_sessions == 0 {
            let core = self.id;
            self.broadcast(|| MeshMsg::Congested { core, on: false });
        }
    }

    /// Back-pressure: releases the publishers session `sid` paused once its queue is under
    /// half the high mark, or it went offline, or it ended (`force`).
    fn relieve(&mut self, sid: SessionId, force: bool) {
        let Some(bp) = self.settings.backpressure else {
            return;
        };
        let Some(slot) = self.slots.get_mut(&sid) else {
            return;
        };
        if slot.throttling.is_empty() {
            return;
        }
        let drained = slot.session.queued_len() <= bp.high / 2
            && slot.session.queued_bytes() <= bp.high_bytes / 2;
        if force || drained || slot.link.is_none() {
            self.release_publishers(sid);
        }
    }

    /// Pauses or releases the publisher `origin` (its connection's reader looks at the count).
    fn throttle(&mut self, origin: Origin, on: bool) {
        if origin.core != self.id {
            self.send_mesh(
                origin.core,
                MeshMsg::Throttle {
                    session: origin.session,
                    on,
                },
            );
            return;
        }
        let Some(link) = self
            .slots
            .get(&origin.session)
            .and_then(|s| s.link.as_ref())
        else {
            // Gone or reconnected since: the new connection starts unpaused.
            return;
        };
        let n = link.throttled.get();
        link.throttled.set(if on {
            n.saturating_add(1)
        } else {
            n.saturating_sub(1)
        });
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: member selection only, not security.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn deliver_shared(&mut self, msg: &SharedMessage, now: Instant) {
        let mut names = Vec::new();
        self.group_trie
            .for_each_match(&msg.topic, |_, name| names.push(name.clone()));
        for name in names {
            let strategy = self.settings.share_strategy;
            let r = self.next_random();
            let Some(g) = self.groups.get_mut(&name) else {
                continue;
            };
            if g.members.is_empty() {
                continue;
            }
            let n = g.members.len();
            let i = match strategy {
                ShareStrategy::RoundRobin => {
                    g.next = (g.next + 1) % n;
                    g.next
                }
                ShareStrategy::Random => (r % n as u64) as usize,
                ShareStrategy::HashClientId => {
                    let o = msg.origin;
                    ((u64::from(o.core) << 48 ^ o.session).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        % n as u64) as usize
                }
                ShareStrategy::Sticky => g.next.min(n - 1),
            };
            let (core, sid, options, sub_id) = g.members[i];
            if core == self.id {
                self.deliver_member(sid, msg.clone(), options, sub_id, now);
            } else {
                self.send_mesh(
                    core,
                    MeshMsg::Deliver {
                        session: sid,
                        msg: msg.clone(),
                        options,
                        sub_id,
                    },
                );
            }
        }
    }

    fn deliver_member(
        &mut self,
        sid: SessionId,
        msg: SharedMessage,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
        now: Instant,
    ) {
        let d = Delivery {
            qos: msg.qos.min(options.qos),
            retain: options.retain_as_published && msg.retain,
            sub_ids: sub_id.into_iter().collect(),
            msg: msg.clone(),
            stored: 0,
        };
        let mut batch = [(sid, d)];
        self.persist_deliveries(&msg, &mut batch, now);
        let [(sid, d)] = batch;
        self.deliver_to(sid, d, now);
    }

    fn share_owner(&self, share: &str) -> CoreId {
        home_core(share.as_bytes(), self.settings.cores)
    }

    fn on_subscribe(
        &mut self,
        sid: SessionId,
        sub: Subscribe,
        now: Instant,
    ) -> Result<(), ReasonCode> {
        let sub_id = sub
            .properties
            .as_ref()
            .and_then(|p| p.subscription_identifiers.first().copied());
        let mut codes = Vec::with_capacity(sub.filters.len());
        let mut retained_for = Vec::new();
        for f in &sub.filters {
            let code = self.subscribe_one(sid, &f.filter, f.options, sub_id, &mut retained_for);
            codes.push(code);
        }
        let Some(slot) = self.slots.get_mut(&sid) else {
            return Ok(());
        };
        slot.session.write(&Packet::SubAck(SubAck {
            packet_id: sub.packet_id,
            properties: None,
            return_codes: codes,
        }));
        for (filter, options) in retained_for {
            self.send_retained(sid, &filter, options, sub_id, now);
        }
        Ok(())
    }

    fn subscribe_one(
        &mut self,
        sid: SessionId,
        filter: &Utf8Bytes,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
        retained_for: &mut Vec<(Box<str>, SubscriptionOptions)>,
    ) -> ReasonCode {
        let shared = match topic::parse_shared(filter) {
            Ok(s) => s,
            Err(_) => return ReasonCode::TopicFilterInvalid,
        };
        if shared.is_some() && !self.settings.shared_subscriptions_enabled {
            return ReasonCode::SharedSubscriptionsNotSupported;
        }
        let inner = shared.map_or(&**filter, |s| s.filter);
        if !limits_ok(&self.settings, inner) {
            return ReasonCode::TopicFilterInvalid;
        }
        let options = SubscriptionOptions {
            qos: options.qos.min(self.settings.maximum_qos),
            ..options
        };
        let Some(slot) = self.slots.get_mut(&sid) else {
            return ReasonCode::UnspecifiedError;
        };
        if !self.auth.may_subscribe(&mut slot.auth, inner) {
            return ReasonCode::NotAuthorized; // 0x87; 0x80 in 3.x
        }
        let s = &mut slot.session;
        let existed = s.subscriptions.contains_key(&**filter);
        if !existed && s.subscriptions.len() >= self.settings.max_subscriptions_per_client {
            return ReasonCode::QuotaExceeded;
        }
        s.subscriptions.insert(
            filter.as_str().into(),
            Subscription {
                options,
                id: sub_id,
            },
        );
        if slot.key != 0 {
            if let Some(store) = self.store.as_mut() {
                store.subscribe(slot.key, filter, options, sub_id);
            }
            if !existed {
                self.persistent_subs_changed(true);
            }
        }
        match shared {
            Some(SharedFilter { .. }) => {
                let owner = self.share_owner(filter);
                let m = (
                    filter.as_str().into(),
                    self.id,
                    sid,
                    Some((options, sub_id)),
                );
                self.shared_member(owner, m);
            }
            None => {
                let old = self.subs.insert(
                    inner,
                    sid,
                    Subscription {
                        options,
                        id: sub_id,
                    },
                );
                if old.is_none() {
                    self.add_filter_ref(inner);
                }
                let send = match options.retain_handling {
                    ringmq_codec::RetainHandling::SendAtSubscribe => true,
                    ringmq_codec::RetainHandling::SendIfNew => !existed,
                    ringmq_codec::RetainHandling::DoNotSend => false,
                };
                if send {
                    retained_for.push((inner.into(), options));
                }
            }
        }
        match options.qos {
            QoS::AtMostOnce => ReasonCode::Success,
            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        }
    }

    fn shared_member(&mut self, owner: CoreId, m: Membership) {
        if owner == self.id {
            self.on_shared_member(&m.0, m.1, m.2, m.3);
        } else {
            self.send_mesh(
                owner,
                MeshMsg::SharedMember {
                    share: m.0,
                    core: m.1,
                    session: m.2,
                    join: m.3,
                },
            );
        }
    }

    fn send_retained(
        &mut self,
        sid: SessionId,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
        now: Instant,
    ) {
        let Some(slot) = self.slots.get(&sid) else {
            return;
        };
        self.scans.push_back(RetainedScan {
            session: sid,
            generation: slot.generation,
            filter: filter.into(),
            options,
            sub_id,
            after: None,
        });
        if self.continue_retained_scans(now) != ScanProgress::Done {
            self.scan_notify.notify();
        }
    }

    /// Delivers the next slice of every pending retained-message scan: at most
    /// `retained_scan_budget_messages` per scan, and no more than the session can queue. Scans
    /// of sessions whose writer is behind wait.
    pub fn continue_retained_scans(&mut self, now: Instant) -> ScanProgress {
        let mut advanced = false;
        for _ in 0..self.scans.len() {
            let Some(mut scan) = self.scans.pop_front() else {
                break;
            };
            let Some(slot) = self.slots.get(&scan.session) else {
                continue;
            };
            if slot.generation != scan.generation || !slot.session.is_connected() {
                continue; // the connection that subscribed is gone
            }
            let room = slot
                .session
                .room()
                .min(self.settings.retained_scan_budget_messages);
            if room == 0 {
                self.scans.push_back(scan);
                continue;
            }
            let mut found = Vec::new();
            let resume = self
                .retained
                .scan(&scan.filter, scan.after.as_deref(), room, |_, m| {
                    found.push(m.clone());
                });
            advanced |= !found.is_empty();
            for msg in found {
                let d = Delivery {
                    qos: msg.qos.min(scan.options.qos),
                    retain: true,
                    sub_ids: scan.sub_id.into_iter().collect(),
                    msg,
                    stored: 0,
                };
                self.deliver_to(scan.session, d, now);
            }
            if let Some(after) = resume {
                scan.after = Some(after);
                self.scans.push_back(scan);
            }
        }
        match (self.scans.is_empty(), advanced) {
            (true, _) => ScanProgress::Done,
            (false, true) => ScanProgress::Advanced,
            (false, false) => ScanProgress::Stalled,
        }
    }

    fn add_filter_ref(&mut self, filter: &str) {
        let n = self.filter_refs.entry(filter.into()).or_insert(0);
        *n += 1;
        if *n == 1 {
            let me = self.id;
            self.broadcast(|| MeshMsg::Interest {
                filter: filter.into(),
                core: me,
                add: true,
            });
        }
    }

    fn remove_filter_ref(&mut self, filter: &str) {
        let Some(n) = self.filter_refs.get_mut(filter) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.filter_refs.remove(filter);
            let me = self.id;
            self.broadcast(|| MeshMsg::Interest {
                filter: filter.into(),
                core: me,
                add: false,
            });
        }
    }

    fn on_unsubscribe(&mut self, sid: SessionId, u: Unsubscribe) -> Result<(), ReasonCode> {
        let mut codes = Vec::with_capacity(u.filters.len());
        for f in &u.filters {
            codes.push(if self.unsubscribe_one(sid, f) {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        if let Some(slot) = self.slots.get_mut(&sid) {
            slot.session.write(&Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                properties: None,
                reason_codes: codes,
            }));
        }
        Ok(())
    }

    fn unsubscribe_one(&mut self, sid: SessionId, filter: &str) -> bool {
        let Some(slot) = self.slots.get_mut(&sid) else {
            return false;
        };
        if slot.session.subscriptions.remove(filter).is_none() {
            return false;
        }
        if slot.key != 0 {
            if let Some(store) = self.store.as_mut() {
                store.unsubscribe(slot.key, filter);
            }
            self.persistent_subs_changed(false);
        }
        match topic::parse_shared(filter) {
            Ok(Some(_)) => {
                let owner = self.share_owner(filter);
                self.shared_member(owner, (filter.into(), self.id, sid, None));
            }
            _ => {
                if self.subs.remove(filter, sid).is_some() {
                    self.remove_filter_ref(filter);
                }
            }
        }
        true
    }

    fn on_disconnect(&mut self, sid: SessionId, d: &Disconnect) -> Result<Flow, ReasonCode> {
        let Some(slot) = self.slots.get_mut(&sid) else {
            return Ok(Flow::Close(Ending::Normal));
        };
        if let Some(new) = d
            .properties
            .as_ref()
            .and_then(|p| p.session_expiry_interval)
        {
            if slot.session.expiry_secs == 0 && new != 0 {
                return Err(ReasonCode::ProtocolError); // [MQTT-3.14.2-2]
            }
            slot.session.expiry_secs = new.min(self.settings.session_expiry_max_secs);
        }
        if d.reason_code == ReasonCode::DisconnectWithWillMessage {
            return Ok(Flow::Close(Ending::WithWill));
        }
        slot.session.will = None; // [MQTT-3.1.2-10]
        Ok(Flow::Close(Ending::Normal))
    }

    /// The connection of `sid` (of this generation) ended. Publishes or schedules the will,
    /// ends or schedules the end of the session. Stale calls (after a takeover) do nothing.
    pub fn disconnected(&mut self, sid: SessionId, generation: u64, ending: Ending, now: Instant) {
        self.end_connection(sid, Some(generation), ending, None, now);
    }

    fn end_connection(
        &mut self,
        sid: SessionId,
        generation: Option<u64>,
        ending: Ending,
        close: Option<ReasonCode>,
        now: Instant,
    ) {
        let Some(slot) = self.slots.get_mut(&sid) else {
            return;
        };
        if generation.is_some_and(|g| g != slot.generation) || slot.link.is_none() {
            return;
        }
        if let Some(link) = slot.link.take() {
            self.live -= 1;
            if close.is_some() {
                link.close.set(close);
                link.notify.notify();
            }
        }
        slot.session.detach();
        // Offline, it pauses nobody: its queue limits apply alone.
        self.release_publishers(sid);
        let Some(slot) = self.slots.get_mut(&sid) else {
            return;
        };
        let will = if ending == Ending::WithWill {
            slot.session.will.take()
        } else {
            None
        };
        slot.session.will = None;
        let expiry = slot.session.expiry_secs;
        let gen = slot.generation;
        if let Some(w) = will {
            let delay = w
                .properties
                .as_ref()
                .and_then(|p| p.will_delay_interval)
                .unwrap_or(0);
            if delay == 0 || expiry == 0 {
                self.publish_will(w, sid, now);
            } else {
                slot.session.will = Some(w);
                let at = now + Duration::from_secs(u64::from(delay.min(expiry)));
                self.timers.push(Reverse((at, TimerKind::Will, sid, gen)));
            }
        }
        if expiry != 0 {
            if let Some(slot) = self.slots.get_mut(&sid).filter(|s| s.key != 0) {
                slot.disconnected_at_unix_ms = persist::unix_ms_now().max(1);
                let rec = session_record(slot);
                if let Some(store) = self.store.as_mut() {
                    let _ = store.put_session(&rec);
                }
            }
        }
        match expiry {
            0 => self.end_session(sid, now),
            u32::MAX => {}
            secs => self.timers.push(Reverse((
                now + Duration::from_secs(u64::from(secs)),
                TimerKind::Expiry,
                sid,
                gen,
            ))),
        }
    }

    fn publish_will(&mut self, w: ringmq_codec::Will, sid: SessionId, now: Instant) {
        let publish = Publish {
            dup: false,
            qos: w.qos,
            retain: w.retain,
            topic: w.topic,
            packet_id: 0,
            properties: w.properties.map(|mut p| {
                p.will_delay_interval = None;
                p
            }),
            payload: w.payload,
        };
        let msg = Message::from_publish(
            publish,
            Origin {
                core: self.id,
                session: sid,
            },
            now,
            self.settings.message_expiry_max_secs,
        );
        self.route(Arc::new(msg), now);
    }

    /// Removes a session and all its subscriptions; a pending will is published first.
    fn end_session(&mut self, sid: SessionId, now: Instant) {
        self.relieve(sid, true);
        let Some(mut slot) = self.slots.remove(&sid) else {
            return;
        };
        if let Some(link) = slot.link.take() {
            self.live -= 1;
            link.close.set(Some(ReasonCode::SessionTakenOver));
            link.notify.notify();
        }
        if let Some(w) = slot.session.will.take() {
            self.publish_will(w, sid, now);
        }
        if self.by_client.get(&slot.session.client_id) == Some(&sid) {
            self.by_client.remove(&slot.session.client_id);
        }
        let qos2_in: Vec<u16> = slot.session.incoming_qos2_ids().collect();
        let held = slot.session.clear_messages();
        if slot.key != 0 {
            if let Some(store) = self.store.as_mut() {
                let filters = slot.session.subscriptions.keys().map(|f| &**f);
                store.end_session(slot.key, &held, filters, qos2_in);
            }
            slot.key = 0; // the end record covers the subscriptions removed below
            for _ in 0..slot.session.subscriptions.len() {
                self.persistent_subs_changed(false);
            }
        }
        let filters: Vec<Box<str>> = slot.session.subscriptions.keys().cloned().collect();
        self.slots.insert(sid, slot);
        for f in filters {
            self.unsubscribe_one(sid, &f);
        }
        self.slots.remove(&sid);
    }

    /// The earliest pending timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, ..))| *at)
    }

    /// Fires due timers: delayed wills and session expiry.
    pub fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, kind, sid, gen))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.slots.get_mut(&sid) else {
                continue;
            };
            if slot.generation != gen || slot.link.is_some() {
                continue; // the client came back [MQTT-3.1.3-9]
            }
            match kind {
                TimerKind::Will => {
                    if let Some(w) = slot.session.will.take() {
                        self.publish_will(w, sid, now);
                    }
                }
                TimerKind::Expiry => self.end_session(sid, now),
            }
        }
    }

    /// Handles a message from another core. A connection handoff is returned to the caller,
    /// which owns sockets.
    pub fn on_mesh(&mut self, msg: MeshMsg, now: Instant) -> Option<Box<Handoff>> {
        if let MeshMsg::Publish { msg, .. } | MeshMsg::Deliver { msg, .. } = &msg {
            if msg.qos != QoS::AtMostOnce {
                self.mesh_qos_batch += 1;
            }
        }
        match msg {
            MeshMsg::Publish {
                msg,
                plain,
                shared,
                ack,
            } => {
                if plain {
                    self.deliver_local(&msg, now);
                }
                if shared {
                    self.deliver_shared(&msg, now);
                }
                if ack {
                    let from = usize::from(msg.origin.core);
                    if let (Some(seq), Some(store)) =
                        (self.seq_in.get_mut(from), self.store.as_ref())
                    {
                        *seq += 1;
                        self.reply_due[from] = Some((*seq, store.appended()));
                    }
                }
            }
            MeshMsg::Persistent { core, on } => {
                if let Some(f) = self.persistent_cores.get_mut(usize::from(core)) {
                    *f = on;
                }
            }
            MeshMsg::Seen { from, count } => {
                let c = usize::from(from);
                self.mesh_qos_seen[c] = self.mesh_qos_seen[c].max(count);
                while self.unseen[c].front().is_some_and(|(at, _)| *at <= count) {
                    if let Some((_, link)) = self.unseen[c].pop_front() {
                        link.unseen.set(link.unseen.get().saturating_sub(1));
                    }
                }
                self.window_waiters.wake_all();
            }
            MeshMsg::Congested { core, on } => {
                let was = std::mem::replace(&mut self.congested[usize::from(core)], on);
                match (was, on) {
                    (false, true) => self.congested_cores += 1,
                    (true, false) => {
                        self.congested_cores -= 1;
                        self.window_waiters.wake_all();
                    }
                    _ => {}
                }
            }
            MeshMsg::Throttle { session, on } => {
                let origin = Origin {
                    core: self.id,
                    session,
                };
                self.throttle(origin, on);
            }
            MeshMsg::Durable { from, seq } => {
                if let Some(c) = self.confirmed.get_mut(usize::from(from)) {
                    *c = (*c).max(seq);
                }
                self.release_acks(now);
            }
            MeshMsg::Interest { filter, core, add } => {
                if add {
                    self.interest.insert(&filter, core, ());
                } else {
                    self.interest.remove(&filter, core);
                }
            }
            MeshMsg::SharedInterest { filter, owner, add } => {
                if add {
                    self.shared_interest.insert(&filter, owner, ());
                } else {
                    self.shared_interest.remove(&filter, owner);
                }
            }
            MeshMsg::SharedMember {
                share,
                core,
                session,
                join,
            } => self.on_shared_member(&share, core, session, join),
            MeshMsg::Deliver {
                session,
                msg,
                options,
                sub_id,
            } => self.deliver_member(session, msg, options, sub_id, now),
            MeshMsg::Retain(msg) => {
                self.store_retained(&msg);
                if let Some(store) = self.store.as_mut() {
                    store.retained_superseded(&msg.topic);
                }
            }
            MeshMsg::Stats { core, report } => {
                if let Some(slot) = self.reports.get_mut(usize::from(core)) {
                    *slot = report;
                }
            }
            MeshMsg::Handoff(h) => return Some(h),
            MeshMsg::AdminRequest { from, id, query } => {
                self.on_admin_request(from, id, *query, now)
            }
            MeshMsg::AdminReply { id, reply } => self.on_admin_reply(id, *reply),
        }
        None
    }

    fn on_shared_member(
        &mut self,
        share: &str,
        core: CoreId,
        session: SessionId,
        join: Option<(SubscriptionOptions, Option<u32>)>,
    ) {
        let Ok(Some(parsed)) = topic::parse_shared(share) else {
            return;
        };
        let inner: Box<str> = parsed.filter.into();
        match join {
            Some((options, sub_id)) => {
                if !self.groups.contains_key(share) {
                    let id = self.next_group;
                    self.next_group += 1;
                    self.groups.insert(
                        share.into(),
                        SharedGroup {
                            id,
                            filter: inner.clone(),
                            members: Vec::new(),
                            next: 0,
                        },
                    );
                    self.group_trie.insert(&inner, id, share.into());
                    let n = self.shared_filter_refs.entry(inner.clone()).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        let me = self.id;
                        self.shared_interest.insert(&inner, me, ());
                        self.broadcast(|| MeshMsg::SharedInterest {
                            filter: inner.clone(),
                            owner: me,
                            add: true,
                        });
                    }
                }
                let g = self.groups.get_mut(share).expect("group inserted above");
                match g.members.iter_mut().find(|m| m.0 == core && m.1 == session) {
                    Some(m) => *m = (core, session, options, sub_id),
                    None => g.members.push((core, session, options, sub_id)),
                }
            }
            None => {
                let Some(g) = self.groups.get_mut(share) else {
                    return;
                };
                g.members.retain(|m| !(m.0 == core && m.1 == session));
                if g.next >= g.members.len() {
                    g.next = 0;
                }
                if g.members.is_empty() {
                    let g = self.groups.remove(share).expect("group exists");
                    self.group_trie.remove(&g.filter, g.id);
                    if let Some(n) = self.shared_filter_refs.get_mut(&g.filter) {
                        *n -= 1;
                        if *n == 0 {
                            self.shared_filter_refs.remove(&g.filter);
                            let me = self.id;
                            self.shared_interest.remove(&g.filter, me);
                            let f = g.filter.clone();
                            self.broadcast(|| MeshMsg::SharedInterest {
                                filter: f.clone(),
                                owner: me,
                                add: false,
                            });
                        }
                    }
                }
            }
        }
    }

    /// Rebuilds the sessions of this core from its recovered log, and the retained messages
    /// (merged from every core's log). Called once at start-up, after [`Core::set_store`],
    /// before any client connects.
    pub fn restore(
        &mut self,
        mut rec: persist::Recovered,
        retained: &[persist::RecoveredRetained],
        now: Instant,
    ) {
        let now_unix = persist::unix_ms_now();
        let expiry_max = self.settings.message_expiry_max_secs;
        let message = |publish: &[u8], expires_unix: u64| -> Option<SharedMessage> {
            let p = persist::decode_publish(publish)?;
            let mut m = Message::from_publish(
                p,
                Origin {
                    core: 0,
                    session: 0,
                },
                now,
                expiry_max,
            );
            m.expires_at = persist::unix_ms_to_instant(expires_unix, now, now_unix);
            Some(Arc::new(m))
        };
        // This core's own retained records: adopted when they won the merge across cores,
        // superseded (a tombstone) when another core's record of the topic is newer.
        let winners: HashMap<&str, (usize, u64)> = retained
            .iter()
            .map(|e| (e.topic.as_str(), (e.core, e.at_unix_ms)))
            .collect();
        for e in &rec.retained {
            let (Some(pos), Some(bytes)) = (e.pos, e.publish.as_deref()) else {
                continue;
            };
            let Some(m) = message(bytes, e.expires_at_unix_ms) else {
                continue;
            };
            if let Some(store) = self.store.as_mut() {
                store.adopt_retained(&e.topic, pos, m);
                if winners.get(e.topic.as_str()) != Some(&(e.core, e.at_unix_ms)) {
                    store.retained_superseded(&e.topic);
                }
            }
        }
        for e in retained {
            let Some(m) = e
                .publish
                .as_deref()
                .and_then(|b| message(b, e.expires_at_unix_ms))
            else {
                continue;
            };
            if m.remaining_expiry_secs(now).is_ok() {
                self.retained.set(&e.topic, m);
            }
        }
        // Each stored message decoded once, with the sessions found holding it (one map, one
        // lookup per queued delivery: restore time is dominated by random memory accesses).
        let mut msgs: HashMap<u64, (Option<SharedMessage>, persist::Pos, Vec<model::TargetRec>)> =
            std::mem::take(&mut rec.messages)
                .into_iter()
                .map(|(id, m)| {
                    let msg = message(&m.publish, m.expires_at_unix_ms);
                    (id, (msg, m.pos, Vec::new()))
                })
                .collect();
        let mut dropped = Vec::new();
        for (key, rs) in rec.sessions {
            let (Ok(client_id), Some(version)) = (
                Utf8Bytes::try_from(String::from_utf8_lossy(&rs.client_id).into_owned()),
                protocol_of(rs.protocol),
            ) else {
                continue;
            };
            if rs.client_id.is_empty() || self.by_client.contains_key(&client_id) {
                continue;
            }
            let elapsed_secs = if rs.disconnected_at_unix_ms == 0 {
                0
            } else {
                now_unix.saturating_sub(rs.disconnected_at_unix_ms) / 1000
            };
            let sid = self.next_session;
            self.next_session += 1;
            let mut session = Session::new(
                sid,
                client_id.clone(),
                version,
                self.settings.session.clone(),
            );
            session.set_queue_gauge(self.overload.gauge().clone());
            session.expiry_secs = rs.expiry_secs.min(self.settings.session_expiry_max_secs);
            session.will = rs
                .will
                .as_ref()
                .and_then(|w| persist::decode_will(&w.publish));
            for &pid in rs.incoming_qos2.keys() {
                session.restore_incoming_qos2(pid);
            }
            for (id, t) in &rs.queue {
                let Some((Some(m), _, holders)) = msgs.get_mut(id) else {
                    dropped.push((key, *id));
                    continue;
                };
                holders.push(model::TargetRec {
                    key,
                    qos: t.qos as u8,
                    retain: t.retain,
                    sub_ids: t.sub_ids.clone(),
                });
                let m = m.clone();
                let d = Delivery {
                    msg: m,
                    qos: t.qos,
                    retain: t.retain,
                    sub_ids: t.sub_ids.clone(),
                    stored: *id,
                };
                session.restore(d, t.sent.map(|(pid, released, _)| (pid, released)));
            }
            self.slots.insert(
                sid,
                Slot {
                    session,
                    link: None,
                    generation: 1,
                    key: 0, // set after the subscriptions, which are already in the log
                    disconnected_at_unix_ms: rs.disconnected_at_unix_ms.max(1),
                    auth: ClientAuth::default(),
                    throttling: Vec::new(),
                },
            );
            self.by_client.insert(client_id, sid);
            let mut ignored = Vec::new();
            for (filter, sub) in &rs.subs {
                let Ok(f) = Utf8Bytes::try_from(filter.clone()) else {
                    continue;
                };
                self.subscribe_one(sid, &f, sub.options, sub.sub_id, &mut ignored);
            }
            let expiry = self.settings.session_expiry_max_secs.min(rs.expiry_secs);
            let mut subs = 0;
            if let Some(slot) = self.slots.get_mut(&sid) {
                slot.key = key;
                subs = slot.session.subscriptions.len();
            }
            for _ in 0..subs {
                self.persistent_subs_changed(true);
            }
            // A session that was connected when the broker stopped lost its connection then:
            // its will is due (after its delay; at least a second, so that the other cores
            // have restored the subscriptions it may reach).
            if let Some(w) = &rs.will {
                let delay = u64::from(w.delay_secs).max(1);
                let left = delay.saturating_sub(elapsed_secs).max(1);
                self.timers.push(Reverse((
                    now + Duration::from_secs(left),
                    TimerKind::Will,
                    sid,
                    1,
                )));
            }
            if expiry != u32::MAX {
                let left = u64::from(expiry).saturating_sub(elapsed_secs);
                self.timers.push(Reverse((
                    now + Duration::from_secs(left),
                    TimerKind::Expiry,
                    sid,
                    1,
                )));
            }
        }
        if let Some(store) = self.store.as_mut() {
            for (id, (msg, pos, holders)) in msgs {
                match msg {
                    Some(msg) => store.adopt_message(id, pos, msg, holders),
                    None => store.log_mut().release(pos.lsn, pos.len),
                }
            }
            for (key, id) in dropped {
                store.done(key, id);
            }
        }
    }

    /// Compacts the log a step (see [`Store::compact_step`]): at most
    /// [`COMPACT_STEP_RECORDS`] records are copied per call, so the core serves its clients
    /// between steps.
    pub fn compact(&mut self, now: Instant) -> persist::CompactStep {
        match self.store.as_mut() {
            Some(store) => store.compact_step(COMPACT_STEP_RECORDS, now),
            None => persist::CompactStep::Idle,
        }
    }

    /// Closes every connection with Server shutting down (0x8B in v5).
    pub fn shutdown(&mut self) {
        self.stopped = true;
        for slot in self.slots.values_mut() {
            if let Some(link) = slot.link.take() {
                self.live -= 1;
                link.close.set(Some(ReasonCode::ServerShuttingDown));
                link.notify.notify();
            }
            slot.session.detach();
        }
    }

    /// This core's counters.
    pub fn stats_report(&self) -> StatsReport {
        StatsReport {
            stats: self.stats,
            clients_connected: self.live as u64,
            sessions: self.slots.len() as u64,
            subscriptions: self.subs.len() as u64,
            retained: self.retained.len() as u64,
            log_appended_bytes: self.store.as_ref().map_or(0, |s| s.appended()),
            log_durable_bytes: self.store.as_ref().map_or(0, |s| s.durable()),
            messages_queued: self.overload.queued(),
            overloaded: u64::from(self.overload.is_over()),
        }
    }

    /// Sends this core's counters to core `to` (kept locally if it is this core).
    pub fn report_stats(&mut self, to: CoreId) {
        #[cfg(debug_assertions)]
        self.assert_queue_gauge();
        self.overload.observe_queues();
        let report = self.stats_report();
        if to == self.id {
            self.reports[usize::from(to)] = report;
        } else {
            self.send_mesh(
                to,
                MeshMsg::Stats {
                    core: self.id,
                    report,
                },
            );
        }
    }

    /// The `$SYS/broker/...` topics and their values, from the latest report of every core.
    pub fn sys_values(&self, uptime: Duration) -> Vec<(&'static str, String)> {
        let mut reports = self.reports.clone();
        reports[usize::from(self.id)] = self.stats_report();
        let sum = |f: fn(&StatsReport) -> u64| reports.iter().map(f).sum::<u64>().to_string();
        vec![
            (
                "$SYS/broker/version",
                format!("ringmq {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "$SYS/broker/uptime",
                format!("{} seconds", uptime.as_secs()),
            ),
            (
                "$SYS/broker/clients/connected",
                sum(|r| r.clients_connected),
            ),
            ("$SYS/broker/clients/total", sum(|r| r.sessions)),
            (
                "$SYS/broker/messages/received",
                sum(|r| r.stats.messages_received),
            ),
            ("$SYS/broker/messages/sent", sum(|r| r.stats.messages_sent)),
            (
                "$SYS/broker/messages/dropped",
                sum(|r| r.stats.messages_dropped),
            ),
            (
                "$SYS/broker/backpressure/episodes",
                sum(|r| r.stats.backpressure_episodes),
            ),
            (
                "$SYS/broker/backpressure/timeouts",
                sum(|r| r.stats.backpressure_timeouts),
            ),
            (
                "$SYS/broker/bytes/received",
                sum(|r| r.stats.bytes_received),
            ),
            ("$SYS/broker/bytes/sent", sum(|r| r.stats.bytes_sent)),
            (
                "$SYS/broker/clients/auth_failed",
                sum(|r| r.stats.auth_failed),
            ),
            (
                "$SYS/broker/clients/refused_overload",
                sum(|r| r.stats.connections_refused_overload),
            ),
            ("$SYS/broker/messages/queued", sum(|r| r.messages_queued)),
            ("$SYS/broker/overloaded_cores", sum(|r| r.overloaded)),
            ("$SYS/broker/subscriptions/count", sum(|r| r.subscriptions)),
            // Every core holds the same retained replica: this core's count is the broker's.
            (
                "$SYS/broker/retained messages/count",
                self.retained.len().to_string(),
            ),
        ]
    }

    /// Publishes the `$SYS/broker/...` topics (retained).
    pub fn publish_sys_topics(&mut self, uptime: Duration, now: Instant) {
        for (topic, value) in self.sys_values(uptime) {
            self.publish_sys(topic, value, now);
        }
    }

    /// Publishes a message from the broker itself (`$SYS`), retained.
    pub fn publish_sys(&mut self, topic: &str, value: String, now: Instant) {
        let Ok(topic) = Utf8Bytes::try_from(topic) else {
            return;
        };
        let msg = Message {
            topic,
            payload: Bytes::from(value),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: None,
            expires_at: None,
            origin: Origin {
                core: self.id,
                session: 0,
            },
        };
        self.route(Arc::new(msg), now);
    }
}

pub mod admin;

#[cfg(test)]
mod tests;
