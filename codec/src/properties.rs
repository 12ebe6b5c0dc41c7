//! MQTT 5 properties (spec 2.2.2): one struct for every packet, with a per-packet mask of the
//! identifiers allowed (spec table 2-4 in 2.2.2.2).
//!
//! Trade-off: a single [`Properties`] type keeps the model small and lets the engine read any
//! property the same way, at the price of a large struct. Packets hold it as
//! `Option<Box<Properties>>`: `None` when the property length is 0, which is the common case and
//! costs no allocation (and always the case in MQTT 3.x).

use bytes::{BufMut, Bytes};

use crate::wire::{self, put_binary, put_str, put_varint, varint_len, Reader, VARINT_MAX};
use crate::{DecodeError, EncodeError, PacketType, QoS, Utf8Bytes};

/// Property identifiers (spec 2.2.2.2).
#[allow(missing_docs)]
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// Every identifier MQTT 5 defines, one bit per identifier.
pub const DEFINED: u64 = PropertyContext::Connect.allowed()
    | PropertyContext::Will.allowed()
    | PropertyContext::ConnAck.allowed()
    | PropertyContext::Publish.allowed()
    | PropertyContext::Subscribe.allowed()
    | PropertyContext::Disconnect.allowed()
    | PropertyContext::Auth.allowed();
const _: () = assert!(DEFINED.count_ones() == 27, "MQTT 5 defines 27 properties");

/// Where a property block sits: each place allows its own set of identifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropertyContext {
    /// CONNECT variable header.
    Connect,
    /// CONNECT payload, will properties.
    Will,
    /// CONNACK.
    ConnAck,
    /// PUBLISH.
    Publish,
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack(PacketType),
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK.
    SubAck,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// UNSUBACK.
    UnsubAck,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

const fn mask(ids: &[u8]) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < ids.len() {
        m |= 1 << ids[i];
        i += 1;
    }
    m
}

impl PropertyContext {
    /// The identifiers allowed here, one bit per identifier.
    pub const fn allowed(self) -> u64 {
        use id::*;
        match self {
            Self::Connect => mask(&[
                SESSION_EXPIRY_INTERVAL,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                REQUEST_PROBLEM_INFORMATION,
                REQUEST_RESPONSE_INFORMATION,
                RECEIVE_MAXIMUM,
                TOPIC_ALIAS_MAXIMUM,
                USER_PROPERTY,
                MAXIMUM_PACKET_SIZE,
            ]),
            Self::Will => mask(&[
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                WILL_DELAY_INTERVAL,
                USER_PROPERTY,
            ]),
            Self::ConnAck => mask(&[
                SESSION_EXPIRY_INTERVAL,
                ASSIGNED_CLIENT_IDENTIFIER,
                SERVER_KEEP_ALIVE,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                RESPONSE_INFORMATION,
                SERVER_REFERENCE,
                REASON_STRING,
                RECEIVE_MAXIMUM,
                TOPIC_ALIAS_MAXIMUM,
                MAXIMUM_QOS,
                RETAIN_AVAILABLE,
                USER_PROPERTY,
                MAXIMUM_PACKET_SIZE,
                WILDCARD_SUBSCRIPTION_AVAILABLE,
                SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                SHARED_SUBSCRIPTION_AVAILABLE,
            ]),
            Self::Publish => mask(&[
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                SUBSCRIPTION_IDENTIFIER,
                TOPIC_ALIAS,
                USER_PROPERTY,
            ]),
            Self::Ack(_) | Self::SubAck | Self::UnsubAck => mask(&[REASON_STRING, USER_PROPERTY]),
            Self::Subscribe => mask(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]),
            Self::Unsubscribe => mask(&[USER_PROPERTY]),
            Self::Disconnect => mask(&[
                SESSION_EXPIRY_INTERVAL,
                SERVER_REFERENCE,
                REASON_STRING,
                USER_PROPERTY,
            ]),
            Self::Auth => mask(&[
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                REASON_STRING,
                USER_PROPERTY,
            ]),
        }
    }

    /// The identifiers that may appear more than once here.
    pub const fn repeatable(self) -> u64 {
        match self {
            // A PUBLISH to a client carries one identifier per matching subscription (3.3.2.3.8).
            Self::Publish => mask(&[id::USER_PROPERTY, id::SUBSCRIPTION_IDENTIFIER]),
            _ => mask(&[id::USER_PROPERTY]),
        }
    }

    /// The packet type to name in errors.
    pub const fn packet_type(self) -> PacketType {
        match self {
            Self::Connect | Self::Will => PacketType::Connect,
            Self::ConnAck => PacketType::ConnAck,
            Self::Publish => PacketType::Publish,
            Self::Ack(t) => t,
            Self::Subscribe => PacketType::Subscribe,
            Self::SubAck => PacketType::SubAck,
            Self::Unsubscribe => PacketType::Unsubscribe,
            Self::UnsubAck => PacketType::UnsubAck,
            Self::Disconnect => PacketType::Disconnect,
            Self::Auth => PacketType::Auth,
        }
    }
}

/// Every MQTT 5 property. Which ones a packet may carry is checked on decode; see
/// [`PropertyContext::allowed`]. Flags that the spec encodes as a byte 0 or 1 are `bool`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Properties {
    /// 0x01: true when the payload is UTF-8.
    pub payload_format_indicator: Option<bool>,
    /// 0x02, seconds.
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<Utf8Bytes>,
    pub response_topic: Option<Utf8Bytes>,
    pub correlation_data: Option<Bytes>,
    /// 0x0B, each in 1..=268,435,455; several only in PUBLISH.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11, seconds.
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<Utf8Bytes>,
    /// 0x13, seconds.
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<Utf8Bytes>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<bool>,
    /// 0x18, seconds.
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<bool>,
    pub response_information: Option<Utf8Bytes>,
    pub server_reference: Option<Utf8Bytes>,
    pub reason_string: Option<Utf8Bytes>,
    /// 0x21, non-zero.
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    /// 0x23, non-zero.
    pub topic_alias: Option<u16>,
    /// 0x24, QoS 0 or 1 only.
    pub maximum_qos: Option<QoS>,
    pub retain_available: Option<bool>,
    /// 0x26, in the order received.
    pub user_properties: Vec<(Utf8Bytes, Utf8Bytes)>,
    /// 0x27, bytes, non-zero.
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<bool>,
    pub subscription_identifier_available: Option<bool>,
    pub shared_subscription_available: Option<bool>,
}

fn flag(r: &mut Reader, pid: u8) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidPropertyValue(pid)),
    }
}

fn non_zero_u16(r: &mut Reader, pid: u8) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::InvalidPropertyValue(pid)),
        v => Ok(v),
    }
}

impl Properties {
    /// Reads a property block (length then properties). `None` when the length is 0.
    pub(crate) fn decode(
        r: &mut Reader,
        ctx: PropertyContext,
    ) -> Result<Option<Box<Properties>>, DecodeError> {
        let len = r.varint()? as usize;
        if len == 0 {
            return Ok(None);
        }
        let mut block = Reader::new(r.take(len)?);
        let mut p = Box::<Properties>::default();
        let (allowed, repeatable) = (ctx.allowed(), ctx.repeatable());
        let mut seen = 0u64;
        while !block.is_empty() {
            let pid = block.varint()?;
            if pid > u32::from(id::SHARED_SUBSCRIPTION_AVAILABLE) {
                return Err(DecodeError::UnknownProperty(pid.min(255) as u8));
            }
            let pid = pid as u8;
            let bit = 1u64 << pid;
            if DEFINED & bit == 0 {
                return Err(DecodeError::UnknownProperty(pid));
            }
            if allowed & bit == 0 {
                return Err(DecodeError::PropertyNotAllowed {
                    id: pid,
                    packet: ctx.packet_type(),
                });
            }
            if seen & bit != 0 && repeatable & bit == 0 {
                return Err(DecodeError::DuplicateProperty(pid));
            }
            seen |= bit;
            p.read_one(&mut block, pid)?;
        }
        Ok(Some(p))
    }

    /// Reads the value of property `pid` into `self`.
    fn read_one(&mut self, r: &mut Reader, pid: u8) -> Result<(), DecodeError> {
        use id::*;
        match pid {
            PAYLOAD_FORMAT_INDICATOR => self.payload_format_indicator = Some(flag(r, pid)?),
            MESSAGE_EXPIRY_INTERVAL => self.message_expiry_interval = Some(r.u32()?),
            CONTENT_TYPE => self.content_type = Some(r.string()?),
            RESPONSE_TOPIC => {
                let topic = r.string()?;
                if topic.is_empty() || topic.bytes().any(|b| b == b'+' || b == b'#') {
                    // The Response Topic is a Topic Name [MQTT-3.3.2-14].
                    return Err(DecodeError::InvalidPropertyValue(pid));
                }
                self.response_topic = Some(topic);
            }
            CORRELATION_DATA => self.correlation_data = Some(r.binary()?),
            SUBSCRIPTION_IDENTIFIER => match r.varint()? {
                0 => return Err(DecodeError::InvalidPropertyValue(pid)),
                v => self.subscription_identifiers.push(v),
            },
            SESSION_EXPIRY_INTERVAL => self.session_expiry_interval = Some(r.u32()?),
            ASSIGNED_CLIENT_IDENTIFIER => self.assigned_client_identifier = Some(r.string()?),
            SERVER_KEEP_ALIVE => self.server_keep_alive = Some(r.u16()?),
            AUTHENTICATION_METHOD => self.authentication_method = Some(r.string()?),
            AUTHENTICATION_DATA => self.authentication_data = Some(r.binary()?),
            REQUEST_PROBLEM_INFORMATION => self.request_problem_information = Some(flag(r, pid)?),
            WILL_DELAY_INTERVAL => self.will_delay_interval = Some(r.u32()?),
            REQUEST_RESPONSE_INFORMATION => self.request_response_information = Some(flag(r, pid)?),
            RESPONSE_INFORMATION => self.response_information = Some(r.string()?),
            SERVER_REFERENCE => self.server_reference = Some(r.string()?),
            REASON_STRING => self.reason_string = Some(r.string()?),
            RECEIVE_MAXIMUM => self.receive_maximum = Some(non_zero_u16(r, pid)?),
            TOPIC_ALIAS_MAXIMUM => self.topic_alias_maximum = Some(r.u16()?),
            TOPIC_ALIAS => self.topic_alias = Some(non_zero_u16(r, pid)?),
            MAXIMUM_QOS => {
                self.maximum_qos = Some(match r.u8()? {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => return Err(DecodeError::InvalidPropertyValue(pid)),
                })
            }
            RETAIN_AVAILABLE => self.retain_available = Some(flag(r, pid)?),
            USER_PROPERTY => {
                let key = r.string()?;
                let value = r.string()?;
                self.user_properties.push((key, value));
            }
            MAXIMUM_PACKET_SIZE => match r.u32()? {
                0 => return Err(DecodeError::InvalidPropertyValue(pid)),
                v => self.maximum_packet_size = Some(v),
            },
            WILDCARD_SUBSCRIPTION_AVAILABLE => {
                self.wildcard_subscription_available = Some(flag(r, pid)?)
            }
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                self.subscription_identifier_available = Some(flag(r, pid)?)
            }
            SHARED_SUBSCRIPTION_AVAILABLE => {
                self.shared_subscription_available = Some(flag(r, pid)?)
            }
            _ => return Err(DecodeError::UnknownProperty(pid)),
        }
        Ok(())
    }

    /// Whether no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }

    /// Bytes of the properties themselves, without the length prefix.
    pub fn encoded_len(&self) -> usize {
        fn opt<T>(v: &Option<T>, size: impl Fn(&T) -> usize) -> usize {
            v.as_ref().map_or(0, |v| 1 + size(v))
        }
        let s = |v: &Utf8Bytes| 2 + v.len();
        let b = |v: &Bytes| 2 + v.len();
        opt(&self.payload_format_indicator, |_| 1)
            + opt(&self.message_expiry_interval, |_| 4)
            + opt(&self.content_type, s)
            + opt(&self.response_topic, s)
            + opt(&self.correlation_data, b)
            + self
                .subscription_identifiers
                .iter()
                .map(|v| 1 + varint_len(*v))
                .sum::<usize>()
            + opt(&self.session_expiry_interval, |_| 4)
            + opt(&self.assigned_client_identifier, s)
            + opt(&self.server_keep_alive, |_| 2)
            + opt(&self.authentication_method, s)
            + opt(&self.authentication_data, b)
            + opt(&self.request_problem_information, |_| 1)
            + opt(&self.will_delay_interval, |_| 4)
            + opt(&self.request_response_information, |_| 1)
            + opt(&self.response_information, s)
            + opt(&self.server_reference, s)
            + opt(&self.reason_string, s)
            + opt(&self.receive_maximum, |_| 2)
            + opt(&self.topic_alias_maximum, |_| 2)
            + opt(&self.topic_alias, |_| 2)
            + opt(&self.maximum_qos, |_| 1)
            + opt(&self.retain_available, |_| 1)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| 1 + s(k) + s(v))
                .sum::<usize>()
            + opt(&self.maximum_packet_size, |_| 4)
            + opt(&self.wildcard_subscription_available, |_| 1)
            + opt(&self.subscription_identifier_available, |_| 1)
            + opt(&self.shared_subscription_available, |_| 1)
    }

    /// Checks that every value fits its wire representation.
    pub(crate) fn check(&self) -> Result<(), EncodeError> {
        for b in [&self.correlation_data, &self.authentication_data]
            .into_iter()
            .flatten()
        {
            wire::check_binary(b)?;
        }
        if self
            .subscription_identifiers
            .iter()
            .any(|&v| v == 0 || v > VARINT_MAX)
        {
            return Err(EncodeError::ValueOutOfRange("subscription identifier"));
        }
        if self.maximum_qos == Some(QoS::ExactlyOnce) {
            return Err(EncodeError::ValueOutOfRange("maximum QoS"));
        }
        if self.receive_maximum == Some(0)
            || self.topic_alias == Some(0)
            || self.maximum_packet_size == Some(0)
        {
            return Err(EncodeError::ValueOutOfRange(
                "property that must be non-zero",
            ));
        }
        Ok(())
    }

    /// Writes the properties, without the length prefix, in identifier order.
    pub(crate) fn encode<B: BufMut>(&self, buf: &mut B) {
        use id::*;
        macro_rules! put {
            ($pid:expr, $field:expr, |$v:ident| $write:expr) => {
                if let Some($v) = &$field {
                    buf.put_u8($pid);
                    $write;
                }
            };
        }
        put!(
            PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator,
            |v| buf.put_u8(u8::from(*v))
        );
        put!(MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval, |v| {
            buf.put_u32(*v)
        });
        put!(CONTENT_TYPE, self.content_type, |v| put_str(buf, v));
        put!(RESPONSE_TOPIC, self.response_topic, |v| put_str(buf, v));
        put!(CORRELATION_DATA, self.correlation_data, |v| put_binary(
            buf, v
        ));
        for &v in &self.subscription_identifiers {
            buf.put_u8(SUBSCRIPTION_IDENTIFIER);
            put_varint(buf, v);
        }
        put!(SESSION_EXPIRY_INTERVAL, self.session_expiry_interval, |v| {
            buf.put_u32(*v)
        });
        put!(
            ASSIGNED_CLIENT_IDENTIFIER,
            self.assigned_client_identifier,
            |v| put_str(buf, v)
        );
        put!(SERVER_KEEP_ALIVE, self.server_keep_alive, |v| buf
            .put_u16(*v));
        put!(AUTHENTICATION_METHOD, self.authentication_method, |v| {
            put_str(buf, v)
        });
        put!(AUTHENTICATION_DATA, self.authentication_data, |v| {
            put_binary(buf, v)
        });
        put!(
            REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
            |v| buf.put_u8(u8::from(*v))
        );
        put!(WILL_DELAY_INTERVAL, self.will_delay_interval, |v| buf
            .put_u32(*v));
        put!(
            REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
            |v| buf.put_u8(u8::from(*v))
        );
        put!(
            RESPONSE_INFORMATION,
            self.response_information,
            |v| put_str(buf, v)
        );
        put!(SERVER_REFERENCE, self.server_reference, |v| put_str(buf, v));
        put!(REASON_STRING, self.reason_string, |v| put_str(buf, v));
        put!(RECEIVE_MAXIMUM, self.receive_maximum, |v| buf.put_u16(*v));
        put!(TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum, |v| buf
            .put_u16(*v));
        put!(TOPIC_ALIAS, self.topic_alias, |v| buf.put_u16(*v));
        put!(MAXIMUM_QOS, self.maximum_qos, |v| buf.put_u8(*v as u8));
        put!(RETAIN_AVAILABLE, self.retain_available, |v| buf
            .put_u8(u8::from(*v)));
        for (k, v) in &self.user_properties {
            buf.put_u8(USER_PROPERTY);
            put_str(buf, k);
            put_str(buf, v);
        }
        put!(MAXIMUM_PACKET_SIZE, self.maximum_packet_size, |v| buf
            .put_u32(*v));
        put!(
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
            |v| buf.put_u8(u8::from(*v))
        );
        put!(
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifier_available,
            |v| buf.put_u8(u8::from(*v))
        );
        put!(
            SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
            |v| buf.put_u8(u8::from(*v))
        );
    }
}

/// Size of a property block: the length prefix plus the properties.
pub(crate) fn block_len(p: &Option<Box<Properties>>) -> usize {
    let n = p.as_ref().map_or(0, |p| p.encoded_len());
    varint_len(n as u32) + n
}

/// Checks a packet that carries a packet identifier (which must be non-zero) and a property
/// block: the acks, SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK.
pub(crate) fn check_identified(
    packet_id: u16,
    p: &Option<Box<Properties>>,
) -> Result<(), EncodeError> {
    if packet_id == 0 {
        return Err(EncodeError::ZeroPacketId);
    }
    check_block(p)
}

/// Checks the values of a property block before encoding.
pub(crate) fn check_block(p: &Option<Box<Properties>>) -> Result<(), EncodeError> {
    p.as_ref().map_or(Ok(()), |p| p.check())
}

/// Writes a property block: the length prefix then the properties.
pub(crate) fn put_block(buf: &mut impl BufMut, p: &Option<Box<Properties>>) {
    match p {
        None => buf.put_u8(0),
        Some(p) => {
            put_varint(buf, p.encoded_len() as u32);
            p.encode(buf);
        }
    }
}
