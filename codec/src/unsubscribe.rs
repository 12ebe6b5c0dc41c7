//! UNSUBSCRIBE (spec 3.10).

use bytes::BufMut;

use crate::properties::{self, Properties, PropertyContext};
use crate::wire::{put_str, Reader};
use crate::{topic, DecodeError, ProtocolVersion, Utf8Bytes};

/// UNSUBSCRIBE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier (non-zero).
    pub packet_id: u16,
    /// MQTT 5 properties (user properties).
    pub properties: Option<Box<Properties>>,
    /// At least one topic filter.
    pub filters: Vec<Utf8Bytes>,
}

impl Unsubscribe {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = if version.is_v5() {
            Properties::decode(&mut r, PropertyContext::Unsubscribe)?
        } else {
            None
        };
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = r.string()?;
            topic::validate_subscription_filter(&filter)?;
            filters.push(filter);
        }
        if filters.is_empty() {
            return Err(DecodeError::NoTopicFilters); // [MQTT-3.10.3-2]
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
        2 + props + self.filters.iter().map(|f| 2 + f.len()).sum::<usize>()
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, buf: &mut impl BufMut) {
        buf.put_u16(self.packet_id);
        if version.is_v5() {
            properties::put_block(buf, &self.properties);
        }
        for f in &self.filters {
            put_str(buf, f);
        }
    }
}
