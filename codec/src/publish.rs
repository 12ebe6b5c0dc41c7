//! PUBLISH (spec 3.3).

use bytes::{BufMut, Bytes};

use crate::properties::{self, Properties, PropertyContext};
use crate::wire::{put_str, Reader};
use crate::{DecodeError, EncodeError, ProtocolVersion, QoS, Utf8Bytes};

/// PUBLISH: an application message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Publish {
    /// DUP: this may be a re-delivery. Always false for QoS 0.
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// The topic name; empty only in MQTT 5 when a topic alias stands in for it.
    pub topic: Utf8Bytes,
    /// Packet identifier: non-zero for QoS 1 and 2, ignored (and 0) for QoS 0.
    pub packet_id: u16,
    /// MQTT 5 PUBLISH properties.
    pub properties: Option<Box<Properties>>,
    /// The application message.
    pub payload: Bytes,
}

impl Publish {
    #[inline]
    pub(crate) fn decode(
        flags: u8,
        mut r: Reader,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        // The fixed header parser has already rejected QoS 3 and DUP on QoS 0.
        let qos = QoS::from_u8((flags >> 1) & 0b11)?;
        // The wildcard scan shares the UTF-8 pass; its error is still reported after the other
        // fields, as `topic::validate_topic_name` would.
        let (topic, wildcard) = r.string_wildcard()?;
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            r.packet_id()?
        };
        let properties = if version.is_v5() {
            Properties::decode(&mut r, PropertyContext::Publish)?
        } else {
            None
        };
        let payload = r.rest();
        if topic.is_empty() {
            // [MQTT-4.7.3-1]; in 5.0 only with a Topic Alias (3.3.2.3.4).
            if properties.as_ref().and_then(|p| p.topic_alias).is_none() {
                return Err(DecodeError::EmptyTopicName);
            }
        } else if wildcard {
            // `topic::validate_topic_name` for a non-empty name [MQTT-3.3.2-2].
            return Err(DecodeError::WildcardInTopicName);
        }
        if let Some(p) = &properties {
            if p.payload_format_indicator == Some(true) && std::str::from_utf8(&payload).is_err() {
                return Err(DecodeError::PayloadFormatInvalid);
            }
        }
        Ok(Self {
            dup: flags & 0b1000 != 0,
            qos,
            retain: flags & 1 != 0,
            topic,
            packet_id,
            properties,
            payload,
        })
    }

    pub(crate) fn flags(&self) -> u8 {
        (u8::from(self.dup && self.qos != QoS::AtMostOnce) << 3)
            | ((self.qos as u8) << 1)
            | u8::from(self.retain)
    }

    pub(crate) fn check(&self) -> Result<(), EncodeError> {
        if self.qos != QoS::AtMostOnce && self.packet_id == 0 {
            return Err(EncodeError::ZeroPacketId);
        }
        properties::check_block(&self.properties)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let mut n = 2 + self.topic.len() + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
        if version.is_v5() {
            n += properties::block_len(&self.properties);
        }
        n
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, buf: &mut impl BufMut) {
        put_str(buf, &self.topic);
        if self.qos != QoS::AtMostOnce {
            buf.put_u16(self.packet_id);
        }
        if version.is_v5() {
            properties::put_block(buf, &self.properties);
        }
        buf.put_slice(&self.payload);
    }
}
