//! UNSUBACK (spec 3.11).

use bytes::BufMut;

use crate::properties::{self, Properties, PropertyContext};
use crate::wire::Reader;
use crate::{DecodeError, PacketType, ProtocolVersion, ReasonCode};

/// UNSUBACK. MQTT 3.x carries only the packet identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE (non-zero).
    pub packet_id: u16,
    /// MQTT 5 properties.
    pub properties: Option<Box<Properties>>,
    /// MQTT 5: one reason code per filter of the UNSUBSCRIBE; empty in 3.x.
    pub reason_codes: Vec<ReasonCode>,
}

impl UnsubAck {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let mut ack = Self {
            packet_id,
            properties: None,
            reason_codes: Vec::new(),
        };
        if version.is_v5() {
            ack.properties = Properties::decode(&mut r, PropertyContext::UnsubAck)?;
            while !r.is_empty() {
                let code = r.u8()?;
                ack.reason_codes.push(
                    ReasonCode::from_u8(code)
                        .filter(|c| c.valid_for(PacketType::UnsubAck))
                        .ok_or(DecodeError::InvalidReasonCode {
                            packet: PacketType::UnsubAck,
                            code,
                        })?,
                );
            }
            if ack.reason_codes.is_empty() {
                return Err(DecodeError::Truncated); // one code per filter (3.11.3)
            }
        }
        r.finish()?;
        Ok(ack)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            return 2;
        }
        2 + properties::block_len(&self.properties) + self.reason_codes.len()
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, buf: &mut impl BufMut) {
        buf.put_u16(self.packet_id);
        if version.is_v5() {
            properties::put_block(buf, &self.properties);
            for c in &self.reason_codes {
                buf.put_u8(c.as_u8());
            }
        }
    }
}
