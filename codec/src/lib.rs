//! The MQTT 3.1, 3.1.1 and 5.0 codec of ringmq: one packet model for every version, a decoder
//! and an encoder. Pure: no I/O, no async, no connection state, and no panic on any input.
//!
//! * [`decode`] takes bytes from the front of a `BytesMut` and returns `Ok(None)` until a whole
//!   packet is there. Topics, payloads and binary properties of the decoded packet are `Bytes`
//!   slices of that buffer: nothing is copied. A declared size above the configured maximum is
//!   refused from the fixed header, before the body is buffered.
//! * [`Packet::encode`] writes a packet; [`Packet::encoded_len`] gives its exact size first, so
//!   that a sender can honour the peer's maximum packet size.
//! * Every [`DecodeError`] names the MQTT 5 reason code to send for it.
//! * [`topic`] validates topic names and filters, matches them, and parses shared subscriptions.
#![warn(missing_docs)]

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod error;
mod packet;
pub mod properties;
mod publish;
mod reason;
mod suback;
mod subscribe;
pub mod topic;
mod unsuback;
mod unsubscribe;
mod utf8;
mod wire;

pub use ack::Ack;
pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, Will};
pub use disconnect::Disconnect;
pub use error::{DecodeError, EncodeError};
pub use packet::{
    decode, DecodeOptions, FixedHeader, Packet, PacketType, ProtocolVersion, QoS, PACKET_SIZE_MAX,
};
pub use properties::Properties;
pub use publish::Publish;
pub use reason::ReasonCode;
pub use suback::SubAck;
pub use subscribe::{RetainHandling, Subscribe, SubscribeFilter, SubscriptionOptions};
pub use unsuback::UnsubAck;
pub use unsubscribe::Unsubscribe;
pub use utf8::{validate_utf8, Utf8Bytes, STRING_LEN_MAX};
pub use wire::{varint_len, VARINT_MAX};
