//! The records the broker writes into its per-core log, and their rkyv encoding.
//!
//! The log itself knows only `(kind, body)`; this module gives each kind its body type. Messages
//! and wills are kept as encoded MQTT 5 PUBLISH packets: on recovery they are decoded again by the
//! codec, which validates them like any other input from outside.
//!
//! Identity, not position: every record names what it is about (a session key, a message id), so
//! replaying the log in order gives the state whatever copies compaction made. The rules of the
//! replay:
//! - `SESSION` creates or replaces a session (by key); `SESSION_END` removes it and everything it
//!   holds.
//! - `SUBSCRIBE` / `UNSUBSCRIBE` change its subscriptions (by filter).
//! - `MESSAGE` stores a message once per core with the sessions of this core it is queued for;
//!   `DONE` removes one session's reference; `SENT` records the packet identifier (and PUBREL
//!   state) of a QoS 2 delivery so exactly-once survives a restart.
//! - `QOS2_IN` records an incoming QoS 2 packet identifier (PUBREC sent) and its release.
//! - `RETAIN` sets or clears a retained message; the newest (`at_unix_ms`, then core, then
//!   position) wins across cores.

use rkyv::rancor;
use rkyv::{Archive, Deserialize, Serialize};

/// Record kinds (the `kind` byte of a log record).
pub mod kind {
    /// [`super::SessionRec`]
    pub const SESSION: u8 = 1;
    /// [`super::SessionEndRec`]
    pub const SESSION_END: u8 = 2;
    /// [`super::SubscribeRec`]
    pub const SUBSCRIBE: u8 = 3;
    /// [`super::UnsubscribeRec`]
    pub const UNSUBSCRIBE: u8 = 4;
    /// [`super::MessageRec`]
    pub const MESSAGE: u8 = 5;
    /// [`super::DoneRec`]
    pub const DONE: u8 = 6;
    /// [`super::SentRec`]
    pub const SENT: u8 = 7;
    /// [`super::Qos2InRec`]
    pub const QOS2_IN: u8 = 8;
    /// [`super::RetainRec`]
    pub const RETAIN: u8 = 9;
}

/// A persistent session (created, reconnected, disconnected, or its expiry changed).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SessionRec {
    /// The session's key in this core's log (never reused).
    pub key: u64,
    /// Client identifier.
    pub client_id: Vec<u8>,
    /// Protocol level of the last connection (3, 4 or 5).
    pub protocol: u8,
    /// Session Expiry Interval, seconds (`u32::MAX`: never).
    pub expiry_secs: u32,
    /// Wall-clock time of the disconnect, milliseconds since the Unix epoch; 0 while connected.
    pub disconnected_at_unix_ms: u64,
    /// The will of the current connection, as an encoded MQTT 5 PUBLISH, with its delay.
    pub will: Option<WillRec>,
}

/// A will message.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WillRec {
    /// Will Delay Interval, seconds.
    pub delay_secs: u32,
    /// The will as an MQTT 5 PUBLISH packet (QoS, retain, topic, properties, payload).
    pub publish: Vec<u8>,
}

/// The end of a session and of everything it holds.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SessionEndRec {
    /// The session's key.
    pub key: u64,
}

/// A subscription of a persistent session (added or replaced).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SubscribeRec {
    /// The session's key.
    pub key: u64,
    /// The filter as subscribed (with any `$share/` prefix).
    pub filter: String,
    /// Subscription options byte as on the wire (QoS, No Local, Retain As Published, Retain
    /// Handling).
    pub options: u8,
    /// MQTT 5 Subscription Identifier.
    pub sub_id: Option<u32>,
}

/// A subscription removed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeRec {
    /// The session's key.
    pub key: u64,
    /// The filter.
    pub filter: String,
}

/// One session a stored message is queued for.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TargetRec {
    /// The session's key.
    pub key: u64,
    /// QoS of this delivery (1 or 2).
    pub qos: u8,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers to send (MQTT 5).
    pub sub_ids: Vec<u32>,
}

/// A message stored once on this core for the sessions that want it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MessageRec {
    /// The message's id on this core (increasing in arrival order: a session's queue order).
    pub id: u64,
    /// When it expires, milliseconds since the Unix epoch; 0: never.
    pub expires_at_unix_ms: u64,
    /// The message as an MQTT 5 PUBLISH packet (its Message Expiry Interval removed).
    pub publish: Vec<u8>,
    /// The sessions it is queued for.
    pub targets: Vec<TargetRec>,
}

/// A session is done with a message (acknowledged, expired or dropped).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DoneRec {
    /// The session's key.
    pub key: u64,
    /// The message id.
    pub id: u64,
}

/// A QoS 2 delivery was sent with this packet identifier (`released`: PUBREC received, PUBREL
/// sent).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SentRec {
    /// The session's key.
    pub key: u64,
    /// The message id.
    pub id: u64,
    /// Packet identifier used.
    pub packet_id: u16,
    /// PUBREL sent.
    pub released: bool,
}

/// An incoming QoS 2 packet identifier: PUBREC sent (`open`), or PUBREL received (`!open`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Qos2InRec {
    /// The publishing session's key.
    pub key: u64,
    /// The packet identifier.
    pub packet_id: u16,
    /// Waiting for PUBREL.
    pub open: bool,
}

/// A retained message set (`publish` holds it) or cleared (`None`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RetainRec {
    /// Wall-clock time it was published, milliseconds since the Unix epoch (orders the cores).
    pub at_unix_ms: u64,
    /// When it expires, milliseconds since the Unix epoch; 0: never.
    pub expires_at_unix_ms: u64,
    /// The topic.
    pub topic: String,
    /// The message as an MQTT 5 PUBLISH packet, or `None` when cleared.
    pub publish: Option<Vec<u8>>,
}

/// A record body that does not decode as its kind says.
#[derive(Debug, thiserror::Error)]
#[error("record of kind {kind} does not decode: {detail}")]
pub struct ModelError {
    /// The kind byte.
    pub kind: u8,
    /// What rkyv said.
    pub detail: String,
}

/// Encodes a record body.
pub fn encode<T>(record: &T) -> rkyv::util::AlignedVec
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    // Serializing plain owned data into a growable buffer cannot fail.
    rkyv::to_bytes::<rancor::Error>(record).unwrap_or_default()
}

/// Decodes and validates a record body (which must be 16-byte aligned, as the log hands them
/// out).
pub fn decode<T>(kind: u8, body: &[u8]) -> Result<T, ModelError>
where
    T: Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    rkyv::from_bytes::<T, rancor::Error>(body).map_err(|e| ModelError {
        kind,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_round_trips() {
        let m = MessageRec {
            id: 7,
            expires_at_unix_ms: 0,
            publish: vec![0x30, 3, 0, 1, b'a'],
            targets: vec![TargetRec {
                key: 3,
                qos: 2,
                retain: false,
                sub_ids: vec![1, 9],
            }],
        };
        assert_eq!(decode::<MessageRec>(kind::MESSAGE, &encode(&m)).unwrap(), m);
        let s = SessionRec {
            key: 1,
            client_id: b"c".to_vec(),
            protocol: 5,
            expiry_secs: u32::MAX,
            disconnected_at_unix_ms: 12,
            will: Some(WillRec {
                delay_secs: 3,
                publish: vec![1, 2],
            }),
        };
        assert_eq!(decode::<SessionRec>(kind::SESSION, &encode(&s)).unwrap(), s);
        let r = RetainRec {
            at_unix_ms: 5,
            expires_at_unix_ms: 0,
            topic: "t".into(),
            publish: None,
        };
        assert_eq!(decode::<RetainRec>(kind::RETAIN, &encode(&r)).unwrap(), r);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut body = rkyv::util::AlignedVec::<16>::new();
        body.extend_from_slice(&[0xFFu8; 40]);
        assert!(decode::<MessageRec>(kind::MESSAGE, &body).is_err());
        assert!(decode::<SessionRec>(kind::SESSION, &[]).is_err());
        let m = encode(&DoneRec { key: 1, id: 2 });
        let mut cut = rkyv::util::AlignedVec::<16>::new();
        cut.extend_from_slice(&m[..m.len() - 1]);
        assert!(decode::<DoneRec>(kind::DONE, &cut).is_err());
    }
}
