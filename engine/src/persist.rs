//! Durable sessions, the engine's side: what a core writes into its log (through
//! `ringmq-storage`, whose `model` defines the records) and the state it rebuilds from it at
//! start-up.
//!
//! Each core owns one log in `data_dir/core-N`, holding the persistent sessions homed on that
//! core and the messages queued for them. Writing is a plain append into the log's memory
//! buffer from the core's state machine; the runtime's flusher task writes and syncs batches
//! (group commit) and tells the core how far the log is durable, which releases the held
//! acknowledgements (`Core::on_durable`).
//!
//! Liveness for compaction: every record this module appends is either live (tracked here with
//! its position, released when superseded) or a tombstone (released at once: by the time the
//! segment holding it is the oldest, what it deletes is gone).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use ringmq_codec::{
    decode, DecodeOptions, Packet, ProtocolVersion, Publish, QoS, RetainHandling,
    SubscriptionOptions, Will,
};
use ringmq_storage::model::{self, kind};
use ringmq_storage::{AppendError, Class, Log, LogConfig, Lsn};

use crate::message::{Message, SharedMessage};
use crate::notify::Notify;

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The wall-clock time (Unix ms) of an `Instant` (0 for `None`).
pub fn instant_to_unix_ms(at: Option<Instant>, now: Instant, now_unix_ms: u64) -> u64 {
    match at {
        None => 0,
        Some(at) if at >= now => now_unix_ms + (at - now).as_millis() as u64,
        Some(at) => now_unix_ms
            .saturating_sub((now - at).as_millis() as u64)
            .max(1),
    }
}

/// The `Instant` of a wall-clock time (Unix ms, 0 = none).
pub fn unix_ms_to_instant(unix_ms: u64, now: Instant, now_unix_ms: u64) -> Option<Instant> {
    if unix_ms == 0 {
        return None;
    }
    Some(if unix_ms >= now_unix_ms {
        now + Duration::from_millis(unix_ms - now_unix_ms)
    } else {
        now.checked_sub(Duration::from_millis(now_unix_ms - unix_ms))
            .unwrap_or(now)
    })
}

/// The subscription options byte as MQTT 5 writes it.
pub fn options_byte(o: SubscriptionOptions) -> u8 {
    o.qos as u8
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling as u8) << 4)
}

/// The subscription options of a byte written by [`options_byte`] (`None` if it is not one).
pub fn options_from_byte(b: u8) -> Option<SubscriptionOptions> {
    Some(SubscriptionOptions {
        qos: QoS::from_u8(b & 0b11).ok()?,
        no_local: b & 0b100 != 0,
        retain_as_published: b & 0b1000 != 0,
        retain_handling: match (b >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return None,
        },
    })
}

/// Encodes a message as an MQTT 5 PUBLISH (packet id 1 for QoS > 0; expiry kept apart).
pub fn encode_message(m: &Message) -> Vec<u8> {
    encode_publish(m.qos, m.retain, &m.topic, &m.properties, &m.payload)
}

/// Encodes a will as an MQTT 5 PUBLISH.
pub fn encode_will(w: &Will) -> Vec<u8> {
    encode_publish(w.qos, w.retain, &w.topic, &w.properties, &w.payload)
}

fn encode_publish(
    qos: QoS,
    retain: bool,
    topic: &ringmq_codec::Utf8Bytes,
    properties: &Option<Box<ringmq_codec::Properties>>,
    payload: &bytes::Bytes,
) -> Vec<u8> {
    let p = Publish {
        dup: false,
        qos,
        retain,
        topic: topic.clone(),
        packet_id: u16::from(qos != QoS::AtMostOnce),
        properties: properties.clone(),
        payload: payload.clone(),
    };
    let mut out = BytesMut::new();
    // What the broker holds always encodes: its parts came from decoded packets.
    let _ = Packet::Publish(p).encode(ProtocolVersion::V5, &mut out);
    out.to_vec()
}

/// Decodes a PUBLISH written by [`encode_message`] or [`encode_will`]; the codec validates it
/// like any input (a damaged record that passed its checksum still cannot inject garbage).
pub fn decode_publish(bytes: &[u8]) -> Option<Publish> {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, &DecodeOptions::new(ProtocolVersion::V5)) {
        Ok(Some(Packet::Publish(p))) if buf.is_empty() && !p.topic.is_empty() => Some(p),
        _ => None,
    }
}

/// A will decoded from a record.
pub fn decode_will(bytes: &[u8]) -> Option<Will> {
    let p = decode_publish(bytes)?;
    Some(Will {
        topic: p.topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        properties: p.properties,
    })
}

/// Where a record lies, for release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    /// Its LSN.
    pub lsn: Lsn,
    /// Its body length.
    pub len: usize,
}

/// A subscription of a persistent session: its key and filter.
type SubKey = (u64, Box<str>);

/// A message stored on this core, with what a copy of its record needs.
struct StoredMsg {
    pos: Pos,
    msg: SharedMessage,
    /// The sessions still holding it (the record's targets).
    targets: Vec<model::TargetRec>,
}

/// A live record, by identity, waiting to be copied out of the segment being compacted.
enum Item {
    Session(u64),
    Sub(u64, Box<str>),
    Msg(u64),
    Qos2In(u64, u16),
    Retained(Box<str>),
}

/// Progress of [`Store::compact_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactStep {
    /// Nothing to compact.
    Idle,
    /// Records were copied; more remain in the segment.
    More,
    /// The segment's live records are all copied; it is retired (deleted once they are
    /// durable).
    Retired,
}

/// A core's log and the liveness of what it holds: the position of every live record, and
/// what is needed to write it again when compaction evacuates its segment, so compaction never
/// has to walk the sessions.
pub struct Store {
    log: Log,
    next_msg: u64,
    next_key: u64,
    msgs: HashMap<u64, StoredMsg>,
    sessions: HashMap<u64, (Pos, model::SessionRec)>,
    /// (session, filter) -> record, options byte, subscription identifier.
    subs: HashMap<SubKey, (Pos, u8, Option<u32>)>,
    /// (session, message) -> record, packet id, PUBREL sent.
    sent: HashMap<(u64, u64), (Pos, u16, bool)>,
    qos2_in: HashMap<(u64, u16), Pos>,
    retained: HashMap<Box<str>, (Pos, SharedMessage)>,
    /// The segment being evacuated and what is left to copy.
    compaction: Option<(ringmq_storage::SegmentInfo, Vec<Item>)>,
    /// Woken when records are appended (the flusher waits on it).
    pub flush_notify: Rc<Notify>,
    /// Appends refused (quota, backlog, failing disk), counted.
    pub refused: u64,
}

impl Store {
    /// A store over a recovered log; ids continue after what recovery saw.
    pub fn new(log: Log, next_key: u64, next_msg: u64) -> Self {
        Self {
            log,
            next_msg: next_msg.max(1),
            next_key: next_key.max(1),
            msgs: HashMap::new(),
            sessions: HashMap::new(),
            subs: HashMap::new(),
            sent: HashMap::new(),
            qos2_in: HashMap::new(),
            retained: HashMap::new(),
            compaction: None,
            flush_notify: Rc::new(Notify::default()),
            refused: 0,
        }
    }

    /// The log (for the flusher's batches).
    pub fn log_mut(&mut self) -> &mut Log {
        &mut self.log
    }

    /// The log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Everything appended so far.
    pub fn appended(&self) -> Lsn {
        self.log.appended_lsn()
    }

    /// Everything durable.
    pub fn durable(&self) -> Lsn {
        self.log.durable_lsn()
    }

    /// A new session key.
    pub fn new_key(&mut self) -> u64 {
        let k = self.next_key;
        self.next_key += 1;
        k
    }

    fn append<T>(&mut self, k: u8, rec: &T, class: Class) -> Result<Pos, AppendError>
    where
        T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        let body = model::encode(rec);
        match self.log.append(k, &body, class) {
            Ok(lsn) => {
                self.flush_notify.notify();
                Ok(Pos {
                    lsn,
                    len: body.len(),
                })
            }
            Err(e) => {
                self.refused += 1;
                if self.refused.is_power_of_two() {
                    tracing::error!(
                        error = %e,
                        refused = self.refused,
                        "the log refused a record: persistent messages are refused (0x97) until \
                         it has room again (storage.max_disk_bytes, storage.max_pending_bytes, \
                         or a failing disk)"
                    );
                }
                Err(e)
            }
        }
    }

    fn release(&mut self, p: Pos) {
        self.log.release(p.lsn, p.len);
    }

    fn tombstone<T>(&mut self, k: u8, rec: &T)
    where
        T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        if let Ok(p) = self.append(k, rec, Class::Control) {
            self.release(p);
        }
    }

    /// Writes a session's current state (created, connected, disconnected).
    pub fn put_session(&mut self, rec: &model::SessionRec) -> Result<(), AppendError> {
        let p = self.append(kind::SESSION, rec, Class::Control)?;
        if let Some((old, _)) = self.sessions.insert(rec.key, (p, rec.clone())) {
            self.release(old);
        }
        Ok(())
    }

    /// Ends a session: its record, its subscriptions (`filters`), its incoming QoS 2 states
    /// (`qos2_in`) and SENT states are dead, and so is its hold on the messages `held`. The
    /// caller names them from the session, so ending one session never scans every session's
    /// records.
    pub fn end_session<'a>(
        &mut self,
        key: u64,
        held: &[u64],
        filters: impl IntoIterator<Item = &'a str>,
        qos2_in: impl IntoIterator<Item = u16>,
    ) {
        self.tombstone(kind::SESSION_END, &model::SessionEndRec { key });
        if let Some((p, _)) = self.sessions.remove(&key) {
            self.release(p);
        }
        for f in filters {
            if let Some((p, ..)) = self.subs.remove(&(key, f.into())) {
                self.release(p);
            }
        }
        for pid in qos2_in {
            if let Some(p) = self.qos2_in.remove(&(key, pid)) {
                self.release(p);
            }
        }
        for &id in held {
            self.unref(key, id);
        }
    }

    /// Records a subscription.
    pub fn subscribe(
        &mut self,
        key: u64,
        filter: &str,
        options: SubscriptionOptions,
        sub_id: Option<u32>,
    ) {
        self.subscribe_raw(key, filter, options_byte(options), sub_id);
    }

    fn subscribe_raw(&mut self, key: u64, filter: &str, options: u8, sub_id: Option<u32>) {
        let rec = model::SubscribeRec {
            key,
            filter: filter.to_owned(),
            options,
            sub_id,
        };
        if let Ok(p) = self.append(kind::SUBSCRIBE, &rec, Class::Control) {
            if let Some((old, ..)) = self.subs.insert((key, filter.into()), (p, options, sub_id)) {
                self.release(old);
            }
        }
    }

    /// Records an unsubscribe.
    pub fn unsubscribe(&mut self, key: u64, filter: &str) {
        let rec = model::UnsubscribeRec {
            key,
            filter: filter.to_owned(),
        };
        self.tombstone(kind::UNSUBSCRIBE, &rec);
        if let Some((p, ..)) = self.subs.remove(&(key, filter.into())) {
            self.release(p);
        }
    }

    fn message_record(
        &mut self,
        id: u64,
        m: &Message,
        targets: Vec<model::TargetRec>,
        class: Class,
        now: Instant,
    ) -> (Result<Pos, AppendError>, Vec<model::TargetRec>) {
        let rec = model::MessageRec {
            id,
            expires_at_unix_ms: instant_to_unix_ms(m.expires_at, now, unix_ms_now()),
            publish: encode_message(m),
            targets,
        };
        let r = self.append(kind::MESSAGE, &rec, class);
        (r, rec.targets)
    }

    /// Stores a message once for the sessions of this core in `targets`; returns its id.
    pub fn message(
        &mut self,
        m: &SharedMessage,
        targets: Vec<model::TargetRec>,
        now: Instant,
    ) -> Result<u64, AppendError> {
        let id = self.next_msg;
        let (r, targets) = self.message_record(id, m, targets, Class::Data, now);
        let pos = r?;
        self.next_msg += 1;
        self.msgs.insert(
            id,
            StoredMsg {
                pos,
                msg: m.clone(),
                targets,
            },
        );
        Ok(id)
    }

    /// Session `key` no longer holds message `id` (no record written).
    fn unref(&mut self, key: u64, id: u64) {
        if let Some((p, ..)) = self.sent.remove(&(key, id)) {
            self.release(p);
        }
        if let Some(m) = self.msgs.get_mut(&id) {
            if let Some(i) = m.targets.iter().position(|t| t.key == key) {
                m.targets.swap_remove(i);
            }
            if m.targets.is_empty() {
                let p = m.pos;
                self.msgs.remove(&id);
                self.release(p);
            }
        }
    }

    /// A session is done with a message.
    pub fn done(&mut self, key: u64, id: u64) {
        self.tombstone(kind::DONE, &model::DoneRec { key, id });
        self.unref(key, id);
    }

    /// A QoS 2 delivery was sent (or released) with this packet id.
    pub fn sent(&mut self, key: u64, id: u64, packet_id: u16, released: bool) {
        let rec = model::SentRec {
            key,
            id,
            packet_id,
            released,
        };
        if let Ok(p) = self.append(kind::SENT, &rec, Class::Control) {
            if let Some((old, ..)) = self.sent.insert((key, id), (p, packet_id, released)) {
                self.release(old);
            }
        }
    }

    /// An incoming QoS 2 packet id was opened (PUBREC to send) or released (PUBREL received).
    pub fn qos2_in(&mut self, key: u64, packet_id: u16, open: bool) {
        let rec = model::Qos2InRec {
            key,
            packet_id,
            open,
        };
        if open {
            if let Ok(p) = self.append(kind::QOS2_IN, &rec, Class::Control) {
                if let Some(old) = self.qos2_in.insert((key, packet_id), p) {
                    self.release(old);
                }
            }
        } else {
            self.tombstone(kind::QOS2_IN, &rec);
            if let Some(p) = self.qos2_in.remove(&(key, packet_id)) {
                self.release(p);
            }
        }
    }

    /// A retained message published on this core was set (`Some`) or cleared.
    pub fn retain(&mut self, topic: &str, m: Option<&SharedMessage>, now: Instant) {
        self.retain_at(topic, m, unix_ms_now(), now);
    }

    fn retain_at(&mut self, topic: &str, m: Option<&SharedMessage>, at_unix_ms: u64, now: Instant) {
        let rec = model::RetainRec {
            at_unix_ms,
            expires_at_unix_ms: m
                .map_or(0, |m| instant_to_unix_ms(m.expires_at, now, unix_ms_now())),
            topic: topic.to_owned(),
            publish: m.map(|m| encode_message(m)),
        };
        let class = if m.is_some() {
            Class::Data
        } else {
            Class::Control
        };
        let Ok(p) = self.append(kind::RETAIN, &rec, class) else {
            return;
        };
        if m.is_none() {
            self.release(p);
        }
        if let Some((old, _)) = self.retained.remove(topic) {
            self.release(old);
        }
        if let Some(m) = m {
            self.retained.insert(topic.into(), (p, m.clone()));
        }
    }

    /// Another core set or cleared a retained topic: this core's record of it is superseded.
    /// A tombstone with time 0 clears it here on replay and loses every merge across cores.
    pub fn retained_superseded(&mut self, topic: &str) {
        if let Some((old, _)) = self.retained.remove(topic) {
            let rec = model::RetainRec {
                at_unix_ms: 0,
                expires_at_unix_ms: 0,
                topic: topic.to_owned(),
                publish: None,
            };
            self.tombstone(kind::RETAIN, &rec);
            self.release(old);
        }
    }

    /// One step of compaction: when the log's oldest sealed segment is worth evacuating, copies
    /// up to `budget` of its live records to the head of the log (they supersede the originals
    /// by identity) and, once none is left, retires the segment. The first step of a segment
    /// lists its live records (one pass over this store's maps); every step after that costs
    /// only its budget, so the core never stalls for a whole segment.
    pub fn compact_step(&mut self, budget: usize, now: Instant) -> CompactStep {
        if self.compaction.is_none() {
            let Some(seg) = self.log.compaction_candidate() else {
                return CompactStep::Idle;
            };
            let inside = |p: &Pos| seg.contains(p.lsn);
            let mut items = Vec::new();
            items.extend(
                self.sessions
                    .iter()
                    .filter(|(_, (p, _))| inside(p))
                    .map(|(&k, _)| Item::Session(k)),
            );
            items.extend(
                self.subs
                    .iter()
                    .filter(|(_, (p, ..))| inside(p))
                    .map(|((k, f), _)| Item::Sub(*k, f.clone())),
            );
            // A message copy resets its targets' SENT states on replay, so a message is copied
            // when either its record or a SENT record of it lies in the segment.
            let mut ids: Vec<u64> = self
                .msgs
                .iter()
                .filter(|(_, m)| inside(&m.pos))
                .map(|(&id, _)| id)
                .collect();
            ids.extend(
                self.sent
                    .iter()
                    .filter(|(_, (p, ..))| inside(p))
                    .map(|(&(_, id), _)| id),
            );
            ids.sort_unstable();
            ids.dedup();
            items.extend(ids.into_iter().map(Item::Msg));
            items.extend(
                self.qos2_in
                    .iter()
                    .filter(|(_, p)| inside(p))
                    .map(|(&(k, pid), _)| Item::Qos2In(k, pid)),
            );
            items.extend(
                self.retained
                    .iter()
                    .filter(|(_, (p, _))| inside(p))
                    .map(|(t, _)| Item::Retained(t.clone())),
            );
            self.compaction = Some((seg, items));
        }
        let Some((seg, mut items)) = self.compaction.take() else {
            return CompactStep::Idle;
        };
        let inside = |p: &Pos| seg.contains(p.lsn);
        for _ in 0..budget {
            let Some(item) = items.pop() else { break };
            let copied = match item {
                Item::Session(k) => match self.sessions.get(&k) {
                    Some((p, rec)) if inside(p) => {
                        let rec = rec.clone();
                        self.put_session(&rec).is_ok()
                    }
                    _ => true,
                },
                Item::Sub(k, f) => match self.subs.get(&(k, f.clone())) {
                    Some(&(p, o, id)) if inside(&p) => {
                        self.subscribe_raw(k, &f, o, id);
                        self.subs.get(&(k, f)).is_some_and(|(p, ..)| !inside(p))
                    }
                    _ => true,
                },
                Item::Msg(id) => self.copy_message(id, now),
                Item::Qos2In(k, pid) => match self.qos2_in.get(&(k, pid)) {
                    Some(p) if inside(p) => {
                        self.qos2_in(k, pid, true);
                        self.qos2_in.get(&(k, pid)).is_some_and(|p| !inside(p))
                    }
                    _ => true,
                },
                Item::Retained(t) => match self.retained.get(&t) {
                    Some((p, m)) if inside(p) => {
                        let m = m.clone();
                        // Re-stamped: this core's record was the newest of the topic, or a
                        // newer one would have superseded it.
                        self.retain(&t, Some(&m), now);
                        self.retained.get(&t).is_some_and(|(p, _)| !inside(p))
                    }
                    _ => true,
                },
            };
            if !copied {
                tracing::warn!("log compaction could not copy a live record; the segment stays");
                self.compaction = None;
                return CompactStep::Idle;
            }
        }
        if !items.is_empty() {
            self.compaction = Some((seg, items));
            return CompactStep::More;
        }
        let retired = self.log.retire(seg.id);
        self.flush_notify.notify();
        if retired {
            CompactStep::Retired
        } else {
            CompactStep::Idle
        }
    }

    /// Writes a stored message again with the targets still holding it, then their SENT
    /// states (which the copy resets on replay). Returns false if the log refused.
    fn copy_message(&mut self, id: u64, now: Instant) -> bool {
        let Some(m) = self.msgs.get_mut(&id) else {
            return true;
        };
        let msg = m.msg.clone();
        let targets = std::mem::take(&mut m.targets);
        let (r, targets) = self.message_record(id, &msg, targets, Class::Control, now);
        let Some(m) = self.msgs.get_mut(&id) else {
            return true;
        };
        m.targets = targets;
        let Ok(p) = r else {
            return false;
        };
        let was = std::mem::replace(&mut m.pos, p);
        let keys: Vec<u64> = m.targets.iter().map(|t| t.key).collect();
        self.release(was);
        for key in keys {
            if let Some(&(_, pid, released)) = self.sent.get(&(key, id)) {
                self.sent(key, id, pid, released);
            }
        }
        true
    }

    /// Adopts a message found by recovery (its record and the sessions holding it).
    pub fn adopt_message(
        &mut self,
        id: u64,
        pos: Pos,
        msg: SharedMessage,
        targets: Vec<model::TargetRec>,
    ) {
        if targets.is_empty() {
            self.release(pos);
            return;
        }
        self.msgs.insert(id, StoredMsg { pos, msg, targets });
    }

    /// Adopts this core's retained record of a topic found by recovery.
    pub fn adopt_retained(&mut self, topic: &str, pos: Pos, msg: SharedMessage) {
        self.retained.insert(topic.into(), (pos, msg));
    }

    /// Restores the liveness of what recovery found (messages and retained messages are
    /// adopted by the core as it rebuilds them).
    fn adopt(&mut self, r: &Recovered) {
        for s in r.sessions.values() {
            let rec = model::SessionRec {
                key: s.key,
                client_id: s.client_id.clone(),
                protocol: s.protocol,
                expiry_secs: s.expiry_secs,
                disconnected_at_unix_ms: s.disconnected_at_unix_ms,
                will: s.will.clone(),
            };
            self.sessions.insert(s.key, (s.pos, rec));
            for (f, sub) in &s.subs {
                self.subs.insert(
                    (s.key, f.as_str().into()),
                    (sub.pos, options_byte(sub.options), sub.sub_id),
                );
            }
            for (&pid, &p) in &s.incoming_qos2 {
                self.qos2_in.insert((s.key, pid), p);
            }
            for (&id, t) in &s.queue {
                if let Some((pid, released, p)) = t.sent {
                    self.sent.insert((s.key, id), (p, pid, released));
                }
            }
        }
    }
}

/// A subscription found in the log.
#[derive(Debug, Clone)]
pub struct RecoveredSub {
    /// Options.
    pub options: SubscriptionOptions,
    /// Subscription identifier.
    pub sub_id: Option<u32>,
    /// Its record.
    pub pos: Pos,
}

/// A queued delivery found in the log.
#[derive(Debug, Clone)]
pub struct RecoveredTarget {
    /// QoS of the delivery.
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers.
    pub sub_ids: Vec<u32>,
    /// QoS 2 packet id, PUBREL sent, and the record, if it had been sent.
    pub sent: Option<(u16, bool, Pos)>,
}

/// A session found in the log.
#[derive(Debug, Clone)]
pub struct RecoveredSession {
    /// Its key.
    pub key: u64,
    /// Client identifier.
    pub client_id: Vec<u8>,
    /// Protocol level.
    pub protocol: u8,
    /// Session Expiry Interval.
    pub expiry_secs: u32,
    /// When it was disconnected (Unix ms; 0: it was connected when the broker stopped).
    pub disconnected_at_unix_ms: u64,
    /// Its will, encoded, with its delay.
    pub will: Option<model::WillRec>,
    /// Subscriptions by filter.
    pub subs: BTreeMap<String, RecoveredSub>,
    /// Queued messages by id (the queue order).
    pub queue: BTreeMap<u64, RecoveredTarget>,
    /// Incoming QoS 2 packet ids waiting for PUBREL.
    pub incoming_qos2: BTreeMap<u16, Pos>,
    /// Its SESSION record.
    pub pos: Pos,
    /// Whether its SESSION record was seen (compaction may copy a session's record after the
    /// records that name it, so those are collected first and joined at the end).
    pub seen: bool,
}

impl RecoveredSession {
    fn empty(key: u64, pos: Pos) -> Self {
        RecoveredSession {
            key,
            client_id: Vec::new(),
            protocol: 4,
            expiry_secs: 0,
            disconnected_at_unix_ms: 0,
            will: None,
            subs: BTreeMap::new(),
            queue: BTreeMap::new(),
            incoming_qos2: BTreeMap::new(),
            pos,
            seen: false,
        }
    }
}

/// A stored message found in the log.
#[derive(Debug, Clone)]
pub struct RecoveredMessage {
    /// The encoded PUBLISH.
    pub publish: Vec<u8>,
    /// Expiry (Unix ms, 0: never).
    pub expires_at_unix_ms: u64,
    /// Sessions still holding it.
    pub refs: u32,
    /// Its record.
    pub pos: Pos,
}

/// A retained message found in some core's log.
#[derive(Debug, Clone)]
pub struct RecoveredRetained {
    /// The topic.
    pub topic: String,
    /// When it was set (Unix ms).
    pub at_unix_ms: u64,
    /// Which core's log holds it.
    pub core: usize,
    /// Expiry (Unix ms, 0: never).
    pub expires_at_unix_ms: u64,
    /// The encoded PUBLISH (`None`: cleared).
    pub publish: Option<Vec<u8>>,
    /// Its record in the log of `core`, if that core is the one reading.
    pub pos: Option<Pos>,
}

/// What one core's log holds, rebuilt by replaying it. Plain data: it is built before the
/// executors start and moved into its core.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Sessions by key.
    pub sessions: BTreeMap<u64, RecoveredSession>,
    /// Messages still referenced, by id.
    pub messages: HashMap<u64, RecoveredMessage>,
    /// Retained messages set or cleared on this core, latest per topic.
    pub retained: Vec<RecoveredRetained>,
    /// The next free session key.
    pub next_key: u64,
    /// The next free message id.
    pub next_msg: u64,
    /// Records that did not decode (skipped and logged).
    pub bad_records: u64,
}

impl Recovered {
    /// Applies one record, in log order. Unknown kinds and bodies that do not decode are
    /// counted and skipped: the log's checksum passed, so they come from a newer or broken
    /// writer, never from a torn write.
    pub fn apply(&mut self, core: usize, lsn: Lsn, k: u8, body: &[u8]) {
        let pos = Pos {
            lsn,
            len: body.len(),
        };
        let ok = match k {
            kind::SESSION => model::decode::<model::SessionRec>(k, body).map(|r| {
                self.next_key = self.next_key.max(r.key + 1);
                let e = self
                    .sessions
                    .entry(r.key)
                    .or_insert_with(|| RecoveredSession::empty(r.key, pos));
                e.seen = true;
                e.client_id = r.client_id;
                e.protocol = r.protocol;
                e.expiry_secs = r.expiry_secs;
                e.disconnected_at_unix_ms = r.disconnected_at_unix_ms;
                e.will = r.will;
                e.pos = pos;
            }),
            kind::SESSION_END => model::decode::<model::SessionEndRec>(k, body).map(|r| {
                if let Some(s) = self.sessions.remove(&r.key) {
                    for id in s.queue.keys() {
                        self.unref(*id);
                    }
                }
            }),
            kind::SUBSCRIBE => model::decode::<model::SubscribeRec>(k, body).map(|r| {
                if let Some(options) = options_from_byte(r.options) {
                    let s = self
                        .sessions
                        .entry(r.key)
                        .or_insert_with(|| RecoveredSession::empty(r.key, pos));
                    s.subs.insert(
                        r.filter,
                        RecoveredSub {
                            options,
                            sub_id: r.sub_id,
                            pos,
                        },
                    );
                }
            }),
            kind::UNSUBSCRIBE => model::decode::<model::UnsubscribeRec>(k, body).map(|r| {
                if let Some(s) = self.sessions.get_mut(&r.key) {
                    s.subs.remove(&r.filter);
                }
            }),
            kind::MESSAGE => model::decode::<model::MessageRec>(k, body).map(|r| {
                self.next_msg = self.next_msg.max(r.id + 1);
                // A copy made by compaction replaces the original's targets.
                if self.messages.contains_key(&r.id) {
                    for s in self.sessions.values_mut() {
                        s.queue.remove(&r.id);
                    }
                }
                let mut refs = 0;
                for t in r.targets {
                    let Ok(qos) = QoS::from_u8(t.qos) else {
                        continue;
                    };
                    let s = self
                        .sessions
                        .entry(t.key)
                        .or_insert_with(|| RecoveredSession::empty(t.key, pos));
                    refs += 1;
                    s.queue.insert(
                        r.id,
                        RecoveredTarget {
                            qos,
                            retain: t.retain,
                            sub_ids: t.sub_ids,
                            sent: None,
                        },
                    );
                }
                self.messages.insert(
                    r.id,
                    RecoveredMessage {
                        publish: r.publish,
                        expires_at_unix_ms: r.expires_at_unix_ms,
                        refs,
                        pos,
                    },
                );
            }),
            kind::DONE => model::decode::<model::DoneRec>(k, body).map(|r| {
                if let Some(s) = self.sessions.get_mut(&r.key) {
                    if s.queue.remove(&r.id).is_some() {
                        self.unref(r.id);
                    }
                }
            }),
            kind::SENT => model::decode::<model::SentRec>(k, body).map(|r| {
                if let Some(t) = self
                    .sessions
                    .get_mut(&r.key)
                    .and_then(|s| s.queue.get_mut(&r.id))
                {
                    t.sent = Some((r.packet_id, r.released, pos));
                }
            }),
            kind::QOS2_IN => model::decode::<model::Qos2InRec>(k, body).map(|r| {
                if r.open {
                    let s = self
                        .sessions
                        .entry(r.key)
                        .or_insert_with(|| RecoveredSession::empty(r.key, pos));
                    s.incoming_qos2.insert(r.packet_id, pos);
                } else if let Some(s) = self.sessions.get_mut(&r.key) {
                    s.incoming_qos2.remove(&r.packet_id);
                }
            }),
            kind::RETAIN => model::decode::<model::RetainRec>(k, body).map(|r| {
                self.retained.retain(|e| e.topic != r.topic);
                let live = r.publish.is_some();
                self.retained.push(RecoveredRetained {
                    topic: r.topic,
                    at_unix_ms: r.at_unix_ms,
                    core,
                    expires_at_unix_ms: r.expires_at_unix_ms,
                    publish: r.publish,
                    pos: live.then_some(pos),
                });
            }),
            _ => Err(model::ModelError {
                kind: k,
                detail: "unknown record kind".into(),
            }),
        };
        if let Err(e) = ok {
            self.bad_records += 1;
            tracing::error!(core, lsn, error = %e, "skipping a log record that does not decode");
        }
    }

    fn unref(&mut self, id: u64) {
        if let Some(m) = self.messages.get_mut(&id) {
            m.refs = m.refs.saturating_sub(1);
            if m.refs == 0 {
                self.messages.remove(&id);
            }
        }
    }

    /// Ends the replay: records that named a session whose SESSION record never came (it
    /// ended, or its creation was not durable) are dropped.
    pub fn finish(&mut self) {
        let orphans: Vec<u64> = self
            .sessions
            .values()
            .filter(|s| !s.seen)
            .map(|s| s.key)
            .collect();
        for key in orphans {
            if let Some(s) = self.sessions.remove(&key) {
                for id in s.queue.keys() {
                    self.unref(*id);
                }
            }
        }
    }
}

/// Storage settings of the engine.
#[derive(Clone, Debug)]
pub struct StorageSettings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Per-core log settings (`dir` is set per core).
    pub log: LogConfig,
}

/// The directory of a core's log.
pub fn core_dir(data_dir: &Path, core: usize) -> PathBuf {
    data_dir.join(format!("core-{core}"))
}

/// The version of [`crate::mesh::home_core`] written into a data directory's `CORES` file
/// (1: FNV-1a modulo the core count, before the file named it; 2: with a finalizer).
pub const HOME_CORE_HASH: u32 = 2;

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// An I/O error.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another process holds the directory.
    #[error(
        "data directory {0} is in use by another ringmq process (or a stale lock is held); \
         each broker needs its own storage.data_dir"
    )]
    Locked(PathBuf),
    /// The directory was written with another number of cores.
    #[error(
        "data directory {path} was written by a broker with {found} cores, this one runs {cores}: \
         sessions live on the core their client id hashes to, so the core count must stay the \
         same (run with --cores {found}, or move the directory away to start empty)"
    )]
    CoreCount {
        /// The directory.
        path: PathBuf,
        /// Cores it was written with.
        found: usize,
        /// Cores now.
        cores: usize,
    },
    /// The directory was written with another mapping of client ids to cores.
    #[error(
        "{path}: written by a ringmq whose mapping of client ids to cores (home-core hash \
         {found}) differs from this one's ({HOME_CORE_HASH}): its sessions would be restored on \
         the wrong cores. Drain it with the build that wrote it, or move the directory away to \
         start empty"
    )]
    HomeCoreHash {
        /// The directory.
        path: PathBuf,
        /// The mapping it was written with (1: before the mapping had a version).
        found: u32,
    },
    /// A log could not be recovered.
    #[error("recovering the log of core {core}: {source}")]
    Recover {
        /// The core.
        core: usize,
        /// The error.
        source: ringmq_storage::StorageError,
    },
}

/// The data directory, locked for this process (the lock is released when the process exits).
pub struct DataDir {
    _lock: std::fs::File,
}

/// Every core's recovered log, in core order.
pub type RecoveredLogs = Vec<(Log, Recovered)>;

/// Opens (creating) the data directory, locks it, checks the core count and recovers every
/// core's log. Returns the logs and what they hold, with retained messages merged across
/// cores (the newest write of a topic wins) and given to every core.
pub fn open_and_recover(
    s: &StorageSettings,
    cores: usize,
) -> Result<(DataDir, RecoveredLogs, Vec<RecoveredRetained>), OpenError> {
    use std::os::fd::AsRawFd;
    let dir = &s.data_dir;
    std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
        what: "creating",
        path: dir.clone(),
        source,
    })?;
    let lock_path = dir.join("LOCK");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| OpenError::Io {
            what: "opening",
            path: lock_path.clone(),
            source,
        })?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(OpenError::Locked(dir.clone()));
    }
    // The core count and the version of `mesh::home_core` the logs were written with: a
    // session is restored on the core its log is on, which must be its client id's home core.
    let meta = dir.join("CORES");
    match std::fs::read_to_string(&meta) {
        Ok(text) => {
            let mut lines = text.lines();
            let found = lines
                .next()
                .and_then(|l| l.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if found != cores {
                return Err(OpenError::CoreCount {
                    path: dir.clone(),
                    found,
                    cores,
                });
            }
            let hash = lines
                .find_map(|l| l.strip_prefix("home-core-hash "))
                .map_or(1, |v| v.trim().parse::<u32>().unwrap_or(0));
            if hash != HOME_CORE_HASH {
                return Err(OpenError::HomeCoreHash {
                    path: dir.clone(),
                    found: hash,
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = format!("{cores}\nhome-core-hash {HOME_CORE_HASH}\n");
            std::fs::write(&meta, text).map_err(|source| OpenError::Io {
                what: "writing",
                path: meta.clone(),
                source,
            })?;
        }
        Err(source) => {
            return Err(OpenError::Io {
                what: "reading",
                path: meta,
                source,
            })
        }
    }
    // Every core's log is read on a thread of its own: recovery takes the time of the largest
    // log, not the sum.
    let recover_one = |core: usize| -> Result<(Log, Recovered), OpenError> {
        let mut cfg = s.log.clone();
        cfg.dir = core_dir(dir, core);
        let mut rec = Recovered::default();
        let (log, report) = ringmq_storage::recover(&cfg, |lsn, k, body| {
            rec.apply(core, lsn, k, body);
        })
        .map_err(|source| OpenError::Recover { core, source })?;
        rec.finish();
        tracing::info!(
            core,
            records = report.records,
            bytes = report.bytes,
            truncated_bytes = report.truncated_bytes,
            corrupt_records = report.corrupt_records,
            sessions = rec.sessions.len(),
            messages = rec.messages.len(),
            "log recovered"
        );
        if report.corrupt_records > 0 || report.bad_segments > 0 || rec.bad_records > 0 {
            tracing::error!(
                core,
                corrupt_records = report.corrupt_records,
                bad_segments = report.bad_segments,
                bad_records = rec.bad_records,
                "the log held damaged records; they were skipped"
            );
        }
        Ok((log, rec))
    };
    let results: Vec<Result<(Log, Recovered), OpenError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cores)
            .map(|core| scope.spawn(move || recover_one(core)))
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(core, h)| {
                h.join().unwrap_or_else(|_| {
                    Err(OpenError::Recover {
                        core,
                        source: ringmq_storage::StorageError::Io {
                            op: "recovering (the thread panicked)",
                            path: core_dir(dir, core),
                            source: std::io::Error::other("recovery thread panicked"),
                        },
                    })
                })
            })
            .collect()
    });
    let mut out = Vec::with_capacity(cores);
    let mut retained: HashMap<String, RecoveredRetained> = HashMap::new();
    for result in results {
        let (log, rec) = result?;
        for e in &rec.retained {
            let newer = retained
                .get(&e.topic)
                .is_none_or(|o| (e.at_unix_ms, e.core) >= (o.at_unix_ms, o.core));
            if newer {
                retained.insert(e.topic.clone(), e.clone());
            }
        }
        out.push((log, rec));
    }
    let merged = retained
        .into_values()
        .filter(|e| e.publish.is_some())
        .collect();
    Ok((DataDir { _lock: lock }, out, merged))
}

/// Builds a core's store from its recovered log.
pub fn store_from(log: Log, rec: &Recovered) -> Store {
    let mut store = Store::new(log, rec.next_key, rec.next_msg);
    store.adopt(rec);
    store
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Origin;

    fn msg(topic: &str, payload: &[u8], qos: QoS) -> Message {
        Message {
            topic: ringmq_codec::Utf8Bytes::try_from(topic.to_owned()).unwrap(),
            payload: bytes::Bytes::copy_from_slice(payload),
            qos,
            retain: false,
            properties: None,
            expires_at: None,
            origin: Origin {
                core: 0,
                session: 1,
            },
        }
    }

    #[test]
    fn options_byte_round_trips() {
        for b in 0u8..64 {
            if let Some(o) = options_from_byte(b) {
                assert_eq!(options_byte(o), b);
            }
        }
        assert!(options_from_byte(3).is_none());
    }

    #[test]
    fn message_encoding_round_trips_through_the_codec() {
        let m = msg("a/b", b"hello", QoS::ExactlyOnce);
        let p = decode_publish(&encode_message(&m)).unwrap();
        assert_eq!(&*p.topic, "a/b");
        assert_eq!(&p.payload[..], b"hello");
        assert_eq!(p.qos, QoS::ExactlyOnce);
        assert!(decode_publish(&[0x30, 5, 0]).is_none());
        assert!(decode_publish(&[]).is_none());
    }

    #[test]
    fn unix_time_conversion_round_trips() {
        let now = Instant::now();
        let at = now + Duration::from_secs(30);
        let ms = instant_to_unix_ms(Some(at), now, 1_000_000);
        assert_eq!(ms, 1_030_000);
        let back = unix_ms_to_instant(ms, now, 1_000_000).unwrap();
        assert_eq!(back, at);
        assert_eq!(instant_to_unix_ms(None, now, 5), 0);
        assert!(unix_ms_to_instant(0, now, 5).is_none());
    }

    fn body<T>(rec: &T) -> rkyv::util::AlignedVec
    where
        T: for<'a> rkyv::Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        model::encode(rec)
    }

    #[test]
    fn replay_rebuilds_sessions_queues_and_qos2_state() {
        let mut r = Recovered::default();
        let mut lsn = 0;
        let mut apply = |r: &mut Recovered, k: u8, b: &[u8]| {
            lsn += 64;
            r.apply(0, lsn, k, b);
        };
        let s = model::SessionRec {
            key: 1,
            client_id: b"c1".to_vec(),
            protocol: 5,
            expiry_secs: 100,
            disconnected_at_unix_ms: 0,
            will: None,
        };
        apply(&mut r, kind::SESSION, &body(&s));
        let s2 = model::SessionRec {
            key: 2,
            client_id: b"c2".to_vec(),
            ..s.clone()
        };
        apply(&mut r, kind::SESSION, &body(&s2));
        let sub = model::SubscribeRec {
            key: 1,
            filter: "a/#".into(),
            options: 1,
            sub_id: Some(4),
        };
        apply(&mut r, kind::SUBSCRIBE, &body(&sub));
        let t = |key, qos| model::TargetRec {
            key,
            qos,
            retain: false,
            sub_ids: vec![],
        };
        let m = model::MessageRec {
            id: 10,
            expires_at_unix_ms: 0,
            publish: encode_message(&msg("a/b", b"x", QoS::ExactlyOnce)),
            targets: vec![t(1, 2), t(2, 1)],
        };
        apply(&mut r, kind::MESSAGE, &body(&m));
        let m2 = model::MessageRec {
            id: 11,
            targets: vec![t(1, 1)],
            ..m.clone()
        };
        apply(&mut r, kind::MESSAGE, &body(&m2));
        let sent = model::SentRec {
            key: 1,
            id: 10,
            packet_id: 7,
            released: true,
        };
        apply(&mut r, kind::SENT, &body(&sent));
        apply(
            &mut r,
            kind::DONE,
            &body(&model::DoneRec { key: 2, id: 10 }),
        );
        apply(
            &mut r,
            kind::DONE,
            &body(&model::DoneRec { key: 1, id: 11 }),
        );
        let q = model::Qos2InRec {
            key: 2,
            packet_id: 9,
            open: true,
        };
        apply(&mut r, kind::QOS2_IN, &body(&q));
        apply(&mut r, 200, &[0u8; 16]);
        assert_eq!(r.bad_records, 1);
        assert_eq!(r.next_key, 3);
        assert_eq!(r.next_msg, 12);
        let c1 = &r.sessions[&1];
        assert_eq!(c1.queue.len(), 1);
        let t10 = &c1.queue[&10];
        assert_eq!(t10.qos, QoS::ExactlyOnce);
        assert_eq!(t10.sent.map(|s| (s.0, s.1)), Some((7, true)));
        assert_eq!(c1.subs["a/#"].sub_id, Some(4));
        assert!(r.sessions[&2].queue.is_empty());
        assert_eq!(r.sessions[&2].incoming_qos2.len(), 1);
        assert_eq!(r.messages[&10].refs, 1);
        assert!(
            !r.messages.contains_key(&11),
            "message 11 has no reference left"
        );
        apply(
            &mut r,
            kind::SESSION_END,
            &body(&model::SessionEndRec { key: 1 }),
        );
        assert!(!r.sessions.contains_key(&1));
        assert!(r.messages.is_empty());
    }
}
