//! CONNECT (spec 3.1 in MQTT 5.0, 3.1 in 3.1.1) and its will message.

use bytes::{BufMut, Bytes};

use crate::properties::{self, Properties, PropertyContext};
use crate::wire::{check_binary, put_binary, put_str, Reader};
use crate::{topic, DecodeError, EncodeError, ProtocolVersion, QoS, Utf8Bytes};

/// A will message, carried in CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    /// The topic the will is published to (a topic name: no wildcards).
    pub topic: Utf8Bytes,
    /// The message body.
    pub payload: Bytes,
    /// QoS of the will publication.
    pub qos: QoS,
    /// Whether the will is published retained.
    pub retain: bool,
    /// MQTT 5 will properties (will delay, message expiry, ...).
    pub properties: Option<Box<Properties>>,
}

/// CONNECT: the first packet from a client. It names its own protocol version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// The version requested by the protocol name and level.
    pub protocol: ProtocolVersion,
    /// Clean Start (5.0) or Clean Session (3.x).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// MQTT 5 CONNECT properties.
    pub properties: Option<Box<Properties>>,
    /// The client identifier, possibly empty.
    pub client_id: Utf8Bytes,
    /// The will message, if any.
    pub will: Option<Will>,
    /// User name, if any.
    pub username: Option<Utf8Bytes>,
    /// Password, if any (binary data).
    pub password: Option<Bytes>,
}

mod flag {
    pub const RESERVED: u8 = 0x01;
    pub const CLEAN_START: u8 = 0x02;
    pub const WILL: u8 = 0x04;
    pub const WILL_QOS_SHIFT: u8 = 3;
    pub const WILL_RETAIN: u8 = 0x20;
    pub const PASSWORD: u8 = 0x40;
    pub const USERNAME: u8 = 0x80;
}

fn protocol(name: &[u8], level: u8) -> Result<ProtocolVersion, DecodeError> {
    match (name, level) {
        (b"MQTT", 4) => Ok(ProtocolVersion::V3_1_1),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V3_1),
        (b"MQTT" | b"MQIsdp", level) => Err(DecodeError::UnsupportedProtocolVersion(level)),
        _ => Err(DecodeError::InvalidProtocolName),
    }
}

impl Connect {
    pub(crate) fn decode(mut r: Reader) -> Result<Self, DecodeError> {
        let name = r.binary()?;
        let protocol = protocol(&name, r.u8()?)?;
        let flags = r.u8()?;
        if flags & flag::RESERVED != 0 {
            return Err(DecodeError::ReservedConnectFlag); // [MQTT-3.1.2-3]
        }
        let will_qos = QoS::from_u8((flags >> flag::WILL_QOS_SHIFT) & 0b11)?;
        let has_will = flags & flag::WILL != 0;
        if !has_will && (will_qos != QoS::AtMostOnce || flags & flag::WILL_RETAIN != 0) {
            return Err(DecodeError::InvalidWillFlags); // [MQTT-3.1.2-11], [MQTT-3.1.2-13]
        }
        let (has_user, has_password) = (flags & flag::USERNAME != 0, flags & flag::PASSWORD != 0);
        if has_password && !has_user && !protocol.is_v5() {
            return Err(DecodeError::PasswordWithoutUsername); // 3.1.1 [MQTT-3.1.2-22]
        }
        let keep_alive = r.u16()?;
        let properties = if protocol.is_v5() {
            Properties::decode(&mut r, PropertyContext::Connect)?
        } else {
            None
        };
        let client_id = r.string()?;
        let will = if has_will {
            let properties = if protocol.is_v5() {
                Properties::decode(&mut r, PropertyContext::Will)?
            } else {
                None
            };
            let topic = r.string()?;
            topic::validate_topic_name(&topic)?;
            let payload = r.binary()?;
            if properties.as_ref().and_then(|p| p.payload_format_indicator) == Some(true)
                && std::str::from_utf8(&payload).is_err()
            {
                return Err(DecodeError::PayloadFormatInvalid); // [MQTT-3.1.2-?] 3.1.3.2.3
            }
            Some(Will {
                topic,
                payload,
                qos: will_qos,
                retain: flags & flag::WILL_RETAIN != 0,
                properties,
            })
        } else {
            None
        };
        let username = if has_user { Some(r.string()?) } else { None };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        r.finish()?;
        Ok(Self {
            protocol,
            clean_start: flags & flag::CLEAN_START != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    fn flags(&self) -> u8 {
        let mut f = 0;
        if self.clean_start {
            f |= flag::CLEAN_START;
        }
        if let Some(w) = &self.will {
            f |= flag::WILL | ((w.qos as u8) << flag::WILL_QOS_SHIFT);
            if w.retain {
                f |= flag::WILL_RETAIN;
            }
        }
        if self.password.is_some() {
            f |= flag::PASSWORD;
        }
        if self.username.is_some() {
            f |= flag::USERNAME;
        }
        f
    }

    pub(crate) fn check(&self) -> Result<(), EncodeError> {
        let v5 = self.protocol.is_v5();
        if v5 {
            properties::check_block(&self.properties)?;
        }
        if let Some(w) = &self.will {
            check_binary(&w.payload)?;
            if v5 {
                properties::check_block(&w.properties)?;
            }
        }
        if let Some(p) = &self.password {
            check_binary(p)?;
            if self.username.is_none() && !v5 {
                return Err(EncodeError::ValueOutOfRange("password without user name"));
            }
        }
        Ok(())
    }

    pub(crate) fn body_len(&self) -> usize {
        let v5 = self.protocol.is_v5();
        let mut n = 2 + self.protocol.protocol_name().len() + 1 + 1 + 2;
        if v5 {
            n += properties::block_len(&self.properties);
        }
        n += 2 + self.client_id.len();
        if let Some(w) = &self.will {
            if v5 {
                n += properties::block_len(&w.properties);
            }
            n += 2 + w.topic.len() + 2 + w.payload.len();
        }
        n += self.username.as_ref().map_or(0, |u| 2 + u.len());
        n += self.password.as_ref().map_or(0, |p| 2 + p.len());
        n
    }

    pub(crate) fn encode_body(&self, buf: &mut impl BufMut) {
        let v5 = self.protocol.is_v5();
        let name = self.protocol.protocol_name();
        buf.put_u16(name.len() as u16);
        buf.put_slice(name.as_bytes());
        buf.put_u8(self.protocol.level());
        buf.put_u8(self.flags());
        buf.put_u16(self.keep_alive);
        if v5 {
            properties::put_block(buf, &self.properties);
        }
        put_str(buf, &self.client_id);
        if let Some(w) = &self.will {
            if v5 {
                properties::put_block(buf, &w.properties);
            }
            put_str(buf, &w.topic);
            put_binary(buf, &w.payload);
        }
        if let Some(u) = &self.username {
            put_str(buf, u);
        }
        if let Some(p) = &self.password {
            put_binary(buf, p);
        }
    }
}
