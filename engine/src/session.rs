//! The protocol state of one client session, as a pure state machine: no sockets, no clock of
//! its own (time is passed in), no executor. Outgoing packets are encoded into [`Session::out`],
//! which the connection's writer drains.
//!
//! Outgoing QoS 1/2 messages go through an in-flight window (the smaller of our
//! `max_inflight_messages` and the client's Receive Maximum); the rest wait in a queue bounded in
//! messages and bytes. Policy when a bound is hit: QoS 0 messages are dropped when the writer is
//! behind (its buffer is over the high-water mark) or the client is offline; QoS 1/2 messages are
//! dropped when the queue is full. Every drop is counted by reason.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::BytesMut;
use ringmq_codec::{
    Ack, Packet, PacketType, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    SubscriptionOptions, Utf8Bytes, Will,
};

use crate::message::{SessionId, SharedMessage};
use crate::overload::QueueGauge;

/// The limits a session enforces, taken from the configuration.
#[derive(Clone, Debug)]
pub struct SessionLimits {
    /// Outgoing QoS 1/2 window; also the Receive Maximum we announce for incoming QoS 2.
    pub max_inflight_messages: u16,
    /// Messages waiting beyond the window.
    pub max_queued_messages: usize,
    /// Bytes waiting beyond the window.
    pub max_queued_bytes: usize,
    /// Encoded bytes waiting for the socket above which no more messages are encoded.
    pub write_buffer_high_water_bytes: usize,
    /// Topic Alias Maximum we announce.
    pub max_topic_alias: u16,
}

/// One subscription of the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Its options.
    pub options: SubscriptionOptions,
    /// MQTT 5 subscription identifier.
    pub id: Option<u32>,
}

/// A message on its way to this session.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The message.
    pub msg: SharedMessage,
    /// QoS of this delivery (the lower of the message's and the subscription's).
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (MQTT 5).
    pub sub_ids: Vec<u32>,
    /// The message's id in the home core's log when it is stored for this session (0: not
    /// stored). The session reports what happens to stored deliveries in
    /// [`Session::store_events`].
    pub stored: u64,
}

/// What happened to a stored delivery, for the core's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// A QoS 2 delivery was sent with this packet identifier.
    Sent {
        /// The message id in the log.
        stored: u64,
        /// Its packet identifier.
        packet_id: u16,
    },
    /// PUBREC arrived for it; PUBREL was sent.
    Released {
        /// The message id in the log.
        stored: u64,
        /// Its packet identifier.
        packet_id: u16,
    },
    /// The session is done with it: acknowledged, expired, or dropped.
    Finished {
        /// The message id in the log.
        stored: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    PublishedQos1,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    PublishedQos2,
    /// PUBREL sent, waiting for PUBCOMP.
    Released,
}

#[derive(Debug)]
struct InFlight {
    packet_id: u16,
    delivery: Delivery,
    state: OutState,
}

/// Counters of what a session dropped, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// QoS 0 messages dropped because the client was offline or its writer behind.
    pub qos0: u64,
    /// QoS 1/2 messages dropped because the queue was full.
    pub queue_full: u64,
    /// Messages that expired before delivery.
    pub expired: u64,
    /// Messages larger than the client's Maximum Packet Size.
    pub too_large: u64,
}

impl DropCounters {
    /// All drops, whatever the reason.
    pub fn total(&self) -> u64 {
        self.qos0 + self.queue_full + self.expired + self.too_large
    }
}

/// What the connection must do after an incoming packet.
#[derive(Debug, PartialEq, Eq)]
pub enum ProtocolViolation {
    /// Close with this reason code (sent in a DISCONNECT to v5 clients).
    Disconnect(ReasonCode),
}

/// A client session.
#[derive(Debug)]
pub struct Session {
    /// Identifier on the home core.
    pub id: SessionId,
    /// Client identifier.
    pub client_id: Utf8Bytes,
    /// Protocol version of the current (or last) connection.
    pub version: ProtocolVersion,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_secs: u32,
    /// Subscriptions by filter, as the client wrote them (with `$share/` prefixes).
    pub subscriptions: HashMap<Box<str>, Subscription>,
    /// Will of the current connection.
    pub will: Option<Will>,
    /// Encoded packets waiting for the socket.
    pub out: BytesMut,
    /// Drops, by reason.
    pub drops: DropCounters,
    /// What happened to stored deliveries since the core last took them.
    pub store_events: Vec<StoreEvent>,
    /// Messages the queue may hold beyond `max_queued_messages` while the session pauses its
    /// publishers (what was already on its way when the pause went out); 0 otherwise.
    pub backpressure_allowance: usize,
    limits: SessionLimits,
    connected: bool,
    peer_receive_maximum: u16,
    peer_max_packet_size: u32,
    next_packet_id: u16,
    inflight: VecDeque<InFlight>,
    /// How many of the first in-flight messages were sent on the current connection and count
    /// against the window; after a resume the others wait for room to be resent, so a client
    /// back with a smaller Receive Maximum is never sent more than it allows.
    inflight_sent: usize,
    queue: VecDeque<Delivery>,
    queued_bytes: usize,
    /// The core's count of queued messages, kept equal to the sum of its sessions' queue
    /// lengths: every change of `queue` goes through [`Session::enqueue`],
    /// [`Session::dequeue`] or [`Session::clear_messages`], and a dropped session takes its
    /// queue out (`Drop`).
    queued_gauge: QueueGauge,
    incoming_qos2: HashSet<u16>,
    aliases_in: HashMap<u16, Utf8Bytes>,
    aliases_out: HashMap<Utf8Bytes, u16>,
    peer_topic_alias_maximum: u16,
}

impl Session {
    /// A new, disconnected session.
    pub fn new(
        id: SessionId,
        client_id: Utf8Bytes,
        version: ProtocolVersion,
        limits: SessionLimits,
    ) -> Self {
        Self {
            id,
            client_id,
            version,
            expiry_secs: 0,
            subscriptions: HashMap::new(),
            will: None,
            out: BytesMut::new(),
            drops: DropCounters::default(),
            store_events: Vec::new(),
            backpressure_allowance: 0,
            limits,
            connected: false,
            peer_receive_maximum: u16::MAX,
            peer_max_packet_size: ringmq_codec::PACKET_SIZE_MAX,
            next_packet_id: 1,
            inflight: VecDeque::new(),
            inflight_sent: 0,
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_gauge: QueueGauge::default(),
            incoming_qos2: HashSet::new(),
            aliases_in: HashMap::new(),
            aliases_out: HashMap::new(),
            peer_topic_alias_maximum: 0,
        }
    }

    /// Whether a client is connected to the session.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Messages waiting in the queue (not in flight).
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// Bytes of the messages waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Counts this session's queued messages in `gauge` (the core's) from now on.
    pub fn set_queue_gauge(&mut self, gauge: QueueGauge) {
        let n = self.queue.len();
        self.queued_gauge.sub(n);
        gauge.add(n);
        self.queued_gauge = gauge;
    }

    fn enqueue(&mut self, d: Delivery) {
        self.queued_bytes += d.msg.cost_bytes();
        self.queue.push_back(d);
        self.queued_gauge.add(1);
    }

    fn dequeue(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        self.queued_bytes -= d.msg.cost_bytes();
        self.queued_gauge.sub(1);
        Some(d)
    }

    /// How many more messages the session takes now without dropping any: 0 when offline or
    /// when its writer is behind.
    pub fn room(&self) -> usize {
        if !self.connected || self.writer_behind() {
            return 0;
        }
        self.limits
            .max_queued_messages
            .saturating_sub(self.queue.len())
    }

    /// Messages in flight.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// A client connected (new or resumed session). Resends what was in flight (PUBLISH with
    /// DUP, or PUBREL) in order as far as the window allows, then fills the window from the
    /// queue [MQTT-4.4.0-1], [MQTT-3.3.4-9].
    pub fn attach(
        &mut self,
        version: ProtocolVersion,
        receive_maximum: u16,
        max_packet_size: u32,
        now: Instant,
    ) {
        self.version = version;
        self.connected = true;
        self.peer_receive_maximum = receive_maximum.max(1);
        self.peer_max_packet_size = max_packet_size;
        self.aliases_in.clear();
        self.aliases_out.clear();
        self.inflight_sent = 0;
        self.pump(now);
    }

    /// The Topic Alias Maximum the client announced in CONNECT (0: no aliases to it). Topic
    /// aliases last one connection: set before [`Session::attach`].
    pub fn set_peer_topic_alias_maximum(&mut self, maximum: u16) {
        self.peer_topic_alias_maximum = maximum;
    }

    /// The client went away. In-flight and queued messages stay for a resumed session; bytes
    /// encoded for this connection and not yet taken by its writer are dropped: the next
    /// connection must receive its CONNACK first [MQTT-3.2.0-1], and what they held is resent
    /// from the in-flight window (QoS 1/2) or was QoS 0.
    pub fn detach(&mut self) {
        self.out.clear();
        self.connected = false;
        self.inflight_sent = 0;
        self.aliases_in.clear();
        self.aliases_out.clear();
    }

    /// Encodes a packet for the client, unless it exceeds the client's Maximum Packet Size.
    /// Returns whether it was written.
    pub fn write(&mut self, packet: &Packet) -> bool {
        // Sizing the packet is only needed when the client set a limit below the protocol's:
        // most do not, and the check would size every PUBLISH twice.
        if self.peer_max_packet_size < ringmq_codec::PACKET_SIZE_MAX
            && packet.encoded_len(self.version) > self.peer_max_packet_size as usize
        {
            return false;
        }
        // Encoding a packet the session built cannot fail: values come from decoded packets
        // and the configuration.
        packet.encode(self.version, &mut self.out).is_ok()
    }

    fn window(&self) -> usize {
        usize::from(
            self.limits
                .max_inflight_messages
                .min(self.peer_receive_maximum),
        )
    }

    fn writer_behind(&self) -> bool {
        self.out.len() >= self.limits.write_buffer_high_water_bytes
    }

    /// Offers a message to the session: sent now, queued, or dropped (and counted).
    pub fn deliver(&mut self, d: Delivery, now: Instant) {
        if d.qos == QoS::AtMostOnce {
            if !self.connected || self.writer_behind() {
                self.drops.qos0 += 1;
            } else {
                self.send_publish(d, now);
            }
            return;
        }
        if self.connected
            && self.queue.is_empty()
            && self.inflight_sent == self.inflight.len()
            && self.inflight.len() < self.window()
            && !self.writer_behind()
        {
            self.send_publish(d, now);
            return;
        }
        let cost = d.msg.cost_bytes();
        if self.queue.len()
            >= self
                .limits
                .max_queued_messages
                .saturating_add(self.backpressure_allowance)
            || self.queued_bytes + cost > self.limits.max_queued_bytes
        {
            self.drops.queue_full += 1;
            self.finished(&d);
            return;
        }
        self.enqueue(d);
    }

    /// Resends in-flight messages not yet sent on this connection, then moves queued messages
    /// into the window, while there is room and the writer keeps up.
    pub fn pump(&mut self, now: Instant) {
        while self.connected
            && self.inflight_sent < self.inflight.len().min(self.window())
            && !self.writer_behind()
        {
            let f = &self.inflight[self.inflight_sent];
            let written = match f.state {
                OutState::Released => {
                    let rel = Packet::PubRel(Ack::new(f.packet_id));
                    self.write(&rel)
                }
                _ => {
                    let publish = self.publish_packet(&f.delivery, f.packet_id, true, now);
                    self.write_publish(publish)
                }
            };
            if written {
                self.inflight_sent += 1;
            } else {
                // Over the Maximum Packet Size the client now announces: treated as delivered
                // [MQTT-3.1.2-25].
                if let Some(f) = self.inflight.remove(self.inflight_sent) {
                    self.finished(&f.delivery);
                }
                self.drops.too_large += 1;
            }
        }
        while self.connected
            && self.inflight_sent == self.inflight.len()
            && self.inflight.len() < self.window()
            && !self.writer_behind()
        {
            let Some(d) = self.dequeue() else {
                break;
            };
            self.send_publish(d, now);
        }
    }

    fn alloc_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }

    /// Writes a PUBLISH, replacing its topic by a topic alias when the client accepts aliases
    /// (MQTT 5 3.3.2.3.4): the first PUBLISH on a topic carries the topic and a new alias, later
    /// ones the alias alone. A mapping is kept only once its PUBLISH was written, and there are
    /// never more than the client's Topic Alias Maximum; topics beyond them go without alias.
    fn write_publish(&mut self, mut publish: Publish) -> bool {
        if !self.version.is_v5() || self.peer_topic_alias_maximum == 0 {
            return self.write(&Packet::Publish(publish));
        }
        let (alias, new) = match self.aliases_out.get(&publish.topic) {
            Some(&alias) => (Some(alias), false),
            None if self.aliases_out.len() < usize::from(self.peer_topic_alias_maximum) => {
                (Some(self.aliases_out.len() as u16 + 1), true)
            }
            None => (None, false),
        };
        let Some(alias) = alias else {
            return self.write(&Packet::Publish(publish));
        };
        let topic = publish.topic.clone();
        if !new {
            publish.topic = Utf8Bytes::default();
        }
        publish
            .properties
            .get_or_insert_with(Default::default)
            .topic_alias = Some(alias);
        let written = self.write(&Packet::Publish(publish));
        if written && new {
            self.aliases_out.insert(topic, alias);
        }
        written
    }

    fn publish_packet(&self, d: &Delivery, packet_id: u16, dup: bool, now: Instant) -> Publish {
        let mut properties = None;
        if self.version.is_v5() {
            let expiry = d.msg.remaining_expiry_secs(now).ok().flatten();
            if d.msg.properties.is_some() || expiry.is_some() || !d.sub_ids.is_empty() {
                let mut p = d.msg.properties.clone().unwrap_or_default();
                p.message_expiry_interval = expiry;
                p.subscription_identifiers.clone_from(&d.sub_ids);
                properties = Some(p);
            }
        }
        Publish {
            dup,
            qos: d.qos,
            retain: d.retain,
            topic: d.msg.topic.clone(),
            packet_id,
            properties,
            payload: d.msg.payload.clone(),
        }
    }

    fn finished(&mut self, d: &Delivery) {
        if d.stored != 0 {
            self.store_events
                .push(StoreEvent::Finished { stored: d.stored });
        }
    }

    fn send_publish(&mut self, d: Delivery, now: Instant) {
        if d.msg.remaining_expiry_secs(now).is_err() {
            self.drops.expired += 1;
            self.finished(&d);
            return;
        }
        let packet_id = if d.qos == QoS::AtMostOnce {
            0
        } else {
            self.alloc_packet_id()
        };
        let publish = self.publish_packet(&d, packet_id, false, now);
        if !self.write_publish(publish) {
            // [MQTT-3.1.2-25]: not sent, and treated as if its delivery had completed.
            self.drops.too_large += 1;
            self.finished(&d);
            return;
        }
        if d.qos == QoS::ExactlyOnce && d.stored != 0 {
            self.store_events.push(StoreEvent::Sent {
                stored: d.stored,
                packet_id,
            });
        }
        let state = match d.qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => OutState::PublishedQos1,
            QoS::ExactlyOnce => OutState::PublishedQos2,
        };
        self.inflight.push_back(InFlight {
            packet_id,
            delivery: d,
            state,
        });
        self.inflight_sent += 1;
    }

    fn remove_inflight(&mut self, i: usize) {
        if let Some(f) = self.inflight.remove(i) {
            self.finished(&f.delivery);
        }
        if i < self.inflight_sent {
            self.inflight_sent -= 1;
        }
    }

    fn position(&self, packet_id: u16, state: OutState) -> Option<usize> {
        self.inflight
            .iter()
            .position(|f| f.packet_id == packet_id && f.state == state)
    }

    /// PUBACK from the client.
    pub fn on_puback(&mut self, packet_id: u16, now: Instant) {
        if let Some(i) = self.position(packet_id, OutState::PublishedQos1) {
            self.remove_inflight(i);
            self.pump(now);
        }
    }

    /// PUBREC from the client: answer PUBREL, or end the exchange if the client refused it.
    pub fn on_pubrec(&mut self, ack: &Ack, now: Instant) {
        let Some(i) = self.position(ack.packet_id, OutState::PublishedQos2) else {
            // Unknown identifier: answer so the client's state machine can finish.
            let mut rel = Ack::new(ack.packet_id);
            if self.version.is_v5() {
                rel.reason_code = ReasonCode::PacketIdentifierNotFound;
            }
            self.write(&Packet::PubRel(rel));
            return;
        };
        if ack.reason_code.is_error() {
            self.remove_inflight(i);
            self.pump(now);
            return;
        }
        self.inflight[i].state = OutState::Released;
        let stored = self.inflight[i].delivery.stored;
        if stored != 0 {
            self.store_events.push(StoreEvent::Released {
                stored,
                packet_id: ack.packet_id,
            });
        }
        self.write(&Packet::PubRel(Ack::new(ack.packet_id)));
    }

    /// PUBCOMP from the client.
    pub fn on_pubcomp(&mut self, packet_id: u16, now: Instant) {
        if let Some(i) = self.position(packet_id, OutState::Released) {
            self.remove_inflight(i);
            self.pump(now);
        }
    }

    /// An incoming QoS 2 PUBLISH: returns whether it is new (to be routed) or a duplicate of one
    /// whose PUBREL has not arrived (not routed again). Errs when an MQTT 5 client exceeds our
    /// Receive Maximum [MQTT-3.3.4-9]. MQTT 3.x has no Receive Maximum (none is announced): a
    /// 3.x client may have as many in flight as it has packet identifiers.
    pub fn on_incoming_qos2(&mut self, packet_id: u16) -> Result<bool, ProtocolViolation> {
        if self.incoming_qos2.contains(&packet_id) {
            return Ok(false);
        }
        if self.version.is_v5()
            && self.incoming_qos2.len() >= usize::from(self.limits.max_inflight_messages)
        {
            return Err(ProtocolViolation::Disconnect(
                ReasonCode::ReceiveMaximumExceeded,
            ));
        }
        self.incoming_qos2.insert(packet_id);
        Ok(true)
    }

    /// PUBREL from the client: answer PUBCOMP.
    pub fn on_pubrel(&mut self, packet_id: u16) {
        let mut comp = Ack::new(packet_id);
        if !self.incoming_qos2.remove(&packet_id) && self.version.is_v5() {
            comp.reason_code = ReasonCode::PacketIdentifierNotFound;
        }
        self.write(&Packet::PubComp(comp));
    }

    /// Resolves an incoming topic alias (MQTT 5 3.3.2.3.4): sets the mapping when the PUBLISH
    /// carries a topic, fills in the topic when it does not.
    pub fn resolve_topic_alias(&mut self, publish: &mut Publish) -> Result<(), ProtocolViolation> {
        let Some(alias) = publish.properties.as_ref().and_then(|p| p.topic_alias) else {
            return Ok(());
        };
        if alias == 0 || alias > self.limits.max_topic_alias {
            return Err(ProtocolViolation::Disconnect(ReasonCode::TopicAliasInvalid));
        }
        if publish.topic.is_empty() {
            match self.aliases_in.get(&alias) {
                Some(topic) => publish.topic = topic.clone(),
                None => return Err(ProtocolViolation::Disconnect(ReasonCode::ProtocolError)),
            }
        } else {
            self.aliases_in.insert(alias, publish.topic.clone());
        }
        Ok(())
    }

    /// Answers a QoS 1 or 2 PUBLISH from the client.
    pub fn ack_publish(&mut self, packet: PacketType, packet_id: u16, reason: ReasonCode) {
        let mut ack = Ack::new(packet_id);
        if self.version.is_v5() {
            ack.reason_code = reason;
        }
        let packet = if packet == PacketType::PubRec {
            Packet::PubRec(ack)
        } else {
            Packet::PubAck(ack)
        };
        self.write(&packet);
    }

    /// Drops every message (used when the session ends); returns the log ids of the stored
    /// ones (no events are reported for them: the end of the session covers them).
    pub fn clear_messages(&mut self) -> Vec<u64> {
        let stored = self
            .inflight
            .iter()
            .map(|f| f.delivery.stored)
            .chain(self.queue.iter().map(|d| d.stored))
            .filter(|&id| id != 0)
            .collect();
        self.inflight.clear();
        self.inflight_sent = 0;
        self.queued_gauge.sub(self.queue.len());
        self.queue.clear();
        self.queued_bytes = 0;
        self.incoming_qos2.clear();
        self.store_events.clear();
        stored
    }

    /// Every message the session holds, in flight first, then queued.
    pub fn deliveries(&self) -> impl Iterator<Item = &Delivery> {
        self.inflight
            .iter()
            .map(|f| &f.delivery)
            .chain(self.queue.iter())
    }

    /// The packet identifier and PUBREL state of an in-flight QoS 2 delivery of a stored
    /// message, if it was sent.
    pub fn sent_state(&self, stored: u64) -> Option<(u16, bool)> {
        self.inflight
            .iter()
            .find(|f| f.delivery.stored == stored && f.delivery.qos == QoS::ExactlyOnce)
            .map(|f| (f.packet_id, f.state == OutState::Released))
    }

    /// Incoming QoS 2 packet identifiers waiting for PUBREL.
    pub fn incoming_qos2_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.incoming_qos2.iter().copied()
    }

    /// Puts back a message recovered from the log: in flight with its packet identifier when a
    /// QoS 2 delivery had been sent (`sent`: packet id, PUBREL sent), else at the end of the
    /// queue. Recovery restores what the log holds even beyond the queue limits.
    pub fn restore(&mut self, d: Delivery, sent: Option<(u16, bool)>) {
        match sent {
            Some((packet_id, released)) => self.inflight.push_back(InFlight {
                packet_id,
                delivery: d,
                state: if released {
                    OutState::Released
                } else {
                    OutState::PublishedQos2
                },
            }),
            None => self.enqueue(d),
        }
    }

    /// Puts back an incoming QoS 2 packet identifier recovered from the log (PUBREC sent, PUBREL
    /// not yet received).
    pub fn restore_incoming_qos2(&mut self, packet_id: u16) {
        self.incoming_qos2.insert(packet_id);
    }

    /// The properties of a will, if any.
    pub fn will_properties(&self) -> Option<&Properties> {
        self.will.as_ref().and_then(|w| w.properties.as_deref())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // However the session goes away, its queue leaves the core's count with it.
        self.queued_gauge.sub(self.queue.len());
    }
}

#[cfg(test)]
mod tests;
