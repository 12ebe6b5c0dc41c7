//! What cores say to each other. Every cross-core interaction is one of these messages, sent
//! over a bounded single-producer single-consumer queue per ordered core pair (an N×N mesh), so
//! that per (publisher, topic) order is kept: one publisher's messages to one core travel one
//! FIFO queue.

use std::os::fd::OwnedFd;

use bytes::BytesMut;
use ringmq_codec::{Connect, SubscriptionOptions};

use crate::message::{CoreId, SessionId, SharedMessage};

/// A message from one core to another.
#[derive(Debug)]
pub enum MeshMsg {
    /// A publication: deliver to local plain subscribers (`plain`) and/or to the shared groups
    /// this core owns (`shared`).
    Publish {
        /// The message.
        msg: SharedMessage,
        /// Match the receiver's plain subscriptions.
        plain: bool,
        /// Match the shared groups the receiver owns.
        shared: bool,
        /// The sender holds the publisher's acknowledgement until the receiver confirms it
        /// has made its copies durable ([`MeshMsg::Durable`]).
        ack: bool,
    },
    /// Core `core` gained its first (`on`) or lost its last subscription of a persistent
    /// session: publications to it need (or no longer need) a durability confirmation. Sent
    /// before the interest of that subscription, on the same queue.
    Persistent {
        /// The core.
        core: CoreId,
        /// Whether it has any.
        on: bool,
    },
    /// Core `from` has handled `count` QoS 1/2 publications ([`MeshMsg::Publish`] and
    /// [`MeshMsg::Deliver`]) from the receiver since start: the cross-core window.
    Seen {
        /// The core that handled them.
        from: CoreId,
        /// How many, in all.
        count: u64,
    },
    /// Core `core` has sessions pausing publishers (`on`), or no longer: while it has, a
    /// connection with a publication that core has not seen yet waits before its next one.
    Congested {
        /// The core.
        core: CoreId,
        /// Whether it has any.
        on: bool,
    },
    /// Back-pressure: a session on the sender is full of messages from the receiver's session
    /// `session`; pause (`on`) or release (`!on`) that publisher. Every pause is followed by
    /// exactly one release, on the same queue.
    Throttle {
        /// The publishing session, on the receiver.
        session: SessionId,
        /// Pause or release.
        on: bool,
    },
    /// Core `from` has made durable everything it stored for the first `seq` publications
    /// with `ack` it received from the receiver.
    Durable {
        /// The confirming core.
        from: CoreId,
        /// How many publications are covered.
        seq: u64,
    },
    /// Core `core` gained its first (`add`) or lost its last subscriber on a plain filter.
    Interest {
        /// The filter.
        filter: Box<str>,
        /// The core whose interest changed.
        core: CoreId,
        /// Gained or lost.
        add: bool,
    },
    /// Core `owner` created or removed a shared group on `filter` (the part after the group).
    SharedInterest {
        /// The inner filter.
        filter: Box<str>,
        /// The owner core.
        owner: CoreId,
        /// Created or removed.
        add: bool,
    },
    /// A session joins or leaves a shared group owned by the receiver.
    SharedMember {
        /// `$share/{group}/{filter}` or `$queue/{filter}` as subscribed.
        share: Box<str>,
        /// Member's home core.
        core: CoreId,
        /// Member session.
        session: SessionId,
        /// Its subscription options and identifier; `None` to leave.
        join: Option<(SubscriptionOptions, Option<u32>)>,
    },
    /// The shared group owner picked this session for a message.
    Deliver {
        /// The member session (on the receiving core).
        session: SessionId,
        /// The message.
        msg: SharedMessage,
        /// Subscription options of the member.
        options: SubscriptionOptions,
        /// Its subscription identifier.
        sub_id: Option<u32>,
    },
    /// A retained message was set (non-empty payload) or cleared (empty payload).
    Retain(SharedMessage),
    /// A core's counters, for the `$SYS` topics core 0 publishes.
    Stats {
        /// The reporting core.
        core: CoreId,
        /// Its counters.
        report: crate::broker::StatsReport,
    },
    /// A connection whose CONNECT arrived on another core moves to its session's home core.
    Handoff(Box<Handoff>),
    /// The admin API on core `from` asks the receiver (a client's home core) a question.
    AdminRequest {
        /// The asking core, to answer to.
        from: CoreId,
        /// Request id, echoed in the reply.
        id: u64,
        /// The question.
        query: Box<crate::broker::admin::Query>,
    },
    /// The answer to [`MeshMsg::AdminRequest`] `id`.
    AdminReply {
        /// The request id.
        id: u64,
        /// The answer.
        reply: Box<crate::broker::admin::Reply>,
    },
}

/// A connection on its way to its home core.
#[derive(Debug)]
pub struct Handoff {
    /// The socket.
    pub fd: OwnedFd,
    /// The decoded CONNECT.
    pub connect: Box<Connect>,
    /// MQTT bytes read after the CONNECT (decrypted and unframed).
    pub rest: BytesMut,
    /// Peer address, for logs.
    pub peer: std::net::SocketAddr,
    /// The TLS session and WebSocket state over the socket, with what they buffered.
    pub transport: crate::transport::Detached,
}

/// The home core of a client identifier: a pure function, so a client id's session lives on
/// exactly one core (stable across runs and platforms). FNV-1a, then a finalizer (MurmurHash3's
/// fmix64), then the high bits: FNV-1a alone modulo a small core count keeps only the low bits,
/// and those depend only on the low bits of each byte (with 2 cores, the parity of the number
/// of odd bytes: `dev-p7` and `dev-s7` always landed on different cores).
pub fn home_core(client_id: &[u8], cores: usize) -> CoreId {
    debug_assert!(cores > 0);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in client_id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    ((u128::from(h) * cores as u128) >> 64) as CoreId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_core_is_stable_and_spreads() {
        assert_eq!(home_core(b"client-1", 1), 0);
        assert_eq!(home_core(b"abc", 4), home_core(b"abc", 4));
        let mut seen = [0u32; 4];
        for i in 0..1000 {
            seen[home_core(format!("c{i}").as_bytes(), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
    }

    #[test]
    fn ids_that_differ_in_one_letter_are_not_split_by_it() {
        // Publisher/subscriber pairs named alike: FNV-1a modulo 2 put every such pair on
        // different cores (the parity of odd bytes); about half should share a core.
        for cores in [2usize, 3, 4] {
            let same = (0..1000)
                .filter(|i| {
                    home_core(format!("rmqb-p{i}").as_bytes(), cores)
                        == home_core(format!("rmqb-s{i}").as_bytes(), cores)
                })
                .count();
            let expected = 1000 / cores;
            assert!(
                same > expected * 7 / 10 && same < expected * 13 / 10,
                "{cores} cores: {same} of 1000 pairs share a core"
            );
        }
    }
}
