//! What the admin API (`crate::admin`) asks a core and what the core answers. A client and its
//! session live on their home core, so a per-client request travels there over the mesh
//! ([`MeshMsg::AdminRequest`]) with a request id and comes back as [`MeshMsg::AdminReply`];
//! core 0, which serves HTTP, waits for it with a timeout ([`Waiter`]). Nothing is shared.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use serde::Serialize;

use super::{Core, Ending, StatsReport};
use crate::mesh::MeshMsg;
use crate::message::CoreId;
use crate::notify::Notify;
use ringmq_codec::{QoS, ReasonCode, Utf8Bytes};

/// A question for the core that holds the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// One client, with its subscriptions.
    Client(Box<str>),
    /// Close a client's connection (DISCONNECT 0x98 Administrative action in 5.0).
    Kick(Box<str>),
    /// The first `upto` clients of the core in client id order, and how many it has.
    Clients {
        /// How many to return at most.
        upto: usize,
    },
}

/// A core's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The client, if the core has a session for it.
    Client(Option<ClientInfo>),
    /// Whether a live connection was closed, and whether a session existed.
    Kicked {
        /// A session exists.
        found: bool,
        /// Its connection was closed.
        closed: bool,
    },
    /// A page of clients.
    Clients {
        /// Sessions on the core.
        total: u64,
        /// The first ones in client id order (without subscriptions).
        first: Vec<ClientInfo>,
    },
}

/// One client session as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientInfo {
    /// Its client identifier.
    pub client_id: String,
    /// Its home core.
    pub core: CoreId,
    /// A connection is attached.
    pub connected: bool,
    /// `"3.1"`, `"3.1.1"` or `"5.0"`.
    pub protocol: &'static str,
    /// Kept on disk (durable sessions).
    pub persistent: bool,
    /// Session expiry interval granted, seconds.
    pub session_expiry_secs: u32,
    /// Messages queued beyond the in-flight window.
    pub queued: usize,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight: usize,
    /// Messages dropped for this session.
    pub dropped: u64,
    /// How many subscriptions.
    pub subscription_count: usize,
    /// Its subscriptions (only when one client is asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<Vec<SubscriptionInfo>>,
}

/// One subscription of a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionInfo {
    /// The filter as subscribed (`$share/...` included).
    pub filter: String,
    /// Maximum QoS.
    pub qos: u8,
    /// MQTT 5 No Local.
    pub no_local: bool,
    /// MQTT 5 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5 subscription identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_identifier: Option<u32>,
}

/// A retained message as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetainedInfo {
    /// Topic name.
    pub topic: String,
    /// QoS it was published with.
    pub qos: u8,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// The payload when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload in base64 when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

/// An answer waited for on the asking core.
#[derive(Default)]
pub struct Waiter {
    /// Set when the answer arrives.
    pub reply: RefCell<Option<Reply>>,
    /// Woken then.
    pub notify: Notify,
}

/// Requests sent to other cores and not answered yet.
#[derive(Default)]
pub struct Pending {
    next: u64,
    waiting: HashMap<u64, Rc<Waiter>>,
}

fn qos_number(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

fn protocol_name(level: u8) -> &'static str {
    match level {
        3 => "3.1",
        4 => "3.1.1",
        5 => "5.0",
        _ => "unknown",
    }
}

impl Core {
    /// Answers an admin query from this core's own state.
    pub fn admin_answer(&mut self, query: Query, now: Instant) -> Reply {
        match query {
            Query::Client(id) => Reply::Client(self.admin_client(&id, true)),
            Query::Kick(id) => {
                let key = Utf8Bytes::try_from(id.as_ref()).ok();
                let Some(&sid) = key.and_then(|k| self.by_client.get(&k)) else {
                    return Reply::Kicked {
                        found: false,
                        closed: false,
                    };
                };
                let connected = self.slots.get(&sid).is_some_and(|s| s.link.is_some());
                if connected {
                    tracing::info!(client_id = %id, "closed by the admin API");
                    // As if the connection had dropped: the will is published.
                    self.end_connection(
                        sid,
                        None,
                        Ending::WithWill,
                        Some(ReasonCode::AdministrativeAction),
                        now,
                    );
                }
                Reply::Kicked {
                    found: true,
                    closed: connected,
                }
            }
            Query::Clients { upto } => {
                let mut ids: Vec<&str> = self.by_client.keys().map(|k| k.as_str()).collect();
                let total = ids.len() as u64;
                let upto = upto.min(ids.len());
                if upto < ids.len() {
                    ids.select_nth_unstable(upto);
                    ids.truncate(upto);
                }
                ids.sort_unstable();
                let ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
                let first = ids
                    .iter()
                    .filter_map(|id| self.admin_client(id, false))
                    .collect();
                Reply::Clients { total, first }
            }
        }
    }

    fn admin_client(&self, client_id: &str, with_subscriptions: bool) -> Option<ClientInfo> {
        let sid = self.by_client.get(&Utf8Bytes::try_from(client_id).ok()?)?;
        let slot = self.slots.get(sid)?;
        let s = &slot.session;
        let subscriptions = with_subscriptions.then(|| {
            let mut subs: Vec<SubscriptionInfo> = s
                .subscriptions
                .iter()
                .map(|(filter, sub)| SubscriptionInfo {
                    filter: filter.to_string(),
                    qos: qos_number(sub.options.qos),
                    no_local: sub.options.no_local,
                    retain_as_published: sub.options.retain_as_published,
                    subscription_identifier: sub.id,
                })
                .collect();
            subs.sort_by(|a, b| a.filter.cmp(&b.filter));
            subs
        });
        Some(ClientInfo {
            client_id: client_id.to_owned(),
            core: self.id,
            connected: slot.link.is_some(),
            protocol: protocol_name(s.version.level()),
            persistent: slot.key != 0,
            session_expiry_secs: s.expiry_secs,
            queued: s.queued_len(),
            inflight: s.inflight_len(),
            dropped: s.drops.total(),
            subscription_count: s.subscriptions.len(),
            subscriptions,
        })
    }

    /// Asks core `to` (answered at once if it is this core). Wait on the returned waiter's
    /// `notify`, then call [`Core::admin_forget`] with the id whatever happened.
    pub fn admin_ask(&mut self, to: CoreId, query: Query, now: Instant) -> (u64, Rc<Waiter>) {
        let waiter = Rc::new(Waiter::default());
        let id = self.admin_pending.next;
        self.admin_pending.next += 1;
        if to == self.id {
            *waiter.reply.borrow_mut() = Some(self.admin_answer(query, now));
            waiter.notify.notify();
        } else {
            self.admin_pending.waiting.insert(id, waiter.clone());
            self.send_mesh(
                to,
                MeshMsg::AdminRequest {
                    from: self.id,
                    id,
                    query: Box::new(query),
                },
            );
        }
        (id, waiter)
    }

    /// Stops waiting for request `id` (answered or timed out).
    pub fn admin_forget(&mut self, id: u64) {
        self.admin_pending.waiting.remove(&id);
    }

    pub(super) fn on_admin_request(&mut self, from: CoreId, id: u64, query: Query, now: Instant) {
        let reply = Box::new(self.admin_answer(query, now));
        if from == self.id {
            return;
        }
        self.send_mesh(from, MeshMsg::AdminReply { id, reply });
    }

    pub(super) fn on_admin_reply(&mut self, id: u64, reply: Reply) {
        // A late answer (its request timed out) is dropped here.
        if let Some(w) = self.admin_pending.waiting.remove(&id) {
            *w.reply.borrow_mut() = Some(reply);
            w.notify.notify();
        }
    }

    /// The latest report of every core (this core's own is current; the others' are at most
    /// one tick old). Meaningful on core 0, which they report to.
    pub fn admin_reports(&self) -> Vec<StatsReport> {
        let mut reports = self.reports.clone();
        reports[usize::from(self.id)] = self.stats_report();
        reports
    }

    /// Retained messages: the one on `topic` when `filter` has no wildcard, else at most
    /// `limit` matching `filter` in topic order, and whether more matched. Every core holds the
    /// whole replica, so this core answers alone.
    pub fn admin_retained(&self, filter: &str, limit: usize) -> (Vec<RetainedInfo>, bool) {
        use base64::Engine as _;
        let mut out = Vec::new();
        let more = self
            .retained
            .scan(filter, None, limit.max(1), |topic, msg| {
                let text = std::str::from_utf8(&msg.payload).ok().map(str::to_owned);
                out.push(RetainedInfo {
                    topic: topic.to_owned(),
                    qos: qos_number(msg.qos),
                    payload_bytes: msg.payload.len(),
                    payload_base64: text
                        .is_none()
                        .then(|| base64::engine::general_purpose::STANDARD.encode(&msg.payload)),
                    payload: text,
                })
            })
            .is_some();
        (out, more)
    }
}
