//! SUBSCRIBE (spec 3.8) and subscription options.

use bytes::BufMut;

use crate::properties::{self, Properties, PropertyContext};
use crate::wire::{put_str, Reader};
use crate::{topic, DecodeError, ProtocolVersion, QoS, Utf8Bytes};

/// Retain Handling (3.8.3.1): when retained messages are sent for a new subscription.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist.
    SendIfNew = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

/// The options byte of one SUBSCRIBE entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// MQTT 5 No Local: do not send the client its own publications.
    pub no_local: bool,
    /// MQTT 5 Retain As Published: keep the RETAIN flag of forwarded messages.
    pub retain_as_published: bool,
    /// MQTT 5 Retain Handling.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with this QoS and MQTT 5 defaults.
    pub const fn qos(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }

    fn decode(byte: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let reserved = if version.is_v5() {
            0b1100_0000
        } else {
            0b1111_1100
        };
        if byte & reserved != 0 {
            return Err(DecodeError::ReservedSubscriptionOptions); // [MQTT-3.8.3-5], 3.1.1 [MQTT-3-8.3-4]
        }
        let retain_handling = match (byte >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        let qos = match QoS::from_u8(byte & 0b11) {
            // 5.0: "It is a Protocol Error if the Maximum QoS field has the value 3" (3.8.3.1).
            Err(_) if version.is_v5() => return Err(DecodeError::InvalidSubscriptionQoS),
            qos => qos?, // 3.1.1 [MQTT-3-8.3-4]: malformed
        };
        Ok(Self {
            qos,
            no_local: byte & 0b0100 != 0,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        })
    }

    fn encode(&self, version: ProtocolVersion) -> u8 {
        let qos = self.qos as u8;
        if !version.is_v5() {
            return qos;
        }
        qos | (u8::from(self.no_local) << 2)
            | (u8::from(self.retain_as_published) << 3)
            | ((self.retain_handling as u8) << 4)
    }
}

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// The topic filter, possibly `$share/{group}/{filter}` or `$queue/{filter}`.
    pub filter: Utf8Bytes,
    /// Its options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// MQTT 5 properties (subscription identifier, user properties).
    pub properties: Option<Box<Properties>>,
    /// At least one filter.
    pub filters: Vec<SubscribeFilter>,
}

impl Subscribe {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = if version.is_v5() {
            Properties::decode(&mut r, PropertyContext::Subscribe)?
        } else {
            None
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string()?;
            let options = SubscriptionOptions::decode(r.u8()?, version)?;
            let shared = topic::validate_subscription_filter(&filter)?;
            if shared && options.no_local {
                return Err(DecodeError::NoLocalOnSharedSubscription); // [MQTT-3.8.3-4]
            }
            filters.push(SubscribeFilter { filter, options });
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters); // [MQTT-3.8.3-2]
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let props = if version.is_v5() {
            properties::block_len(&self.properties)
        } else {
            0
        };
        2 + props
            + self
                .filters
                .iter()
                .map(|f| 2 + f.filter.len() + 1)
                .sum::<usize>()
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, buf: &mut impl BufMut) {
        buf.put_u16(self.packet_id);
        if version.is_v5() {
            properties::put_block(buf, &self.properties);
        }
        for f in &self.filters {
            put_str(buf, &f.filter);
            buf.put_u8(f.options.encode(version));
        }
    }
}
