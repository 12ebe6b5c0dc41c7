//! SUBACK (spec 3.9).

use bytes::BufMut;

use crate::properties::{self, Properties, PropertyContext};
use crate::wire::Reader;
use crate::{DecodeError, PacketType, ProtocolVersion, ReasonCode};

/// SUBACK: one reason code per filter of the SUBSCRIBE, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE (non-zero).
    pub packet_id: u16,
    /// MQTT 5 properties.
    pub properties: Option<Box<Properties>>,
    /// Granted QoS (0x00-0x02) or failure. In 3.x every failure is written as 0x80.
    pub return_codes: Vec<ReasonCode>,
}

fn from_v3(code: u8) -> Option<ReasonCode> {
    match code {
        0 => Some(ReasonCode::Success),
        1 => Some(ReasonCode::GrantedQoS1),
        2 => Some(ReasonCode::GrantedQoS2),
        0x80 => Some(ReasonCode::UnspecifiedError),
        _ => None,
    }
}

fn to_v3(code: ReasonCode) -> u8 {
    match code {
        ReasonCode::Success | ReasonCode::GrantedQoS1 | ReasonCode::GrantedQoS2 => code.as_u8(),
        _ => 0x80,
    }
}

impl SubAck {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = if version.is_v5() {
            Properties::decode(&mut r, PropertyContext::SubAck)?
        } else {
            None
        };
        let mut return_codes = Vec::with_capacity(r.remaining());
        while !r.is_empty() {
            let code = r.u8()?;
            let reason = if version.is_v5() {
                ReasonCode::from_u8(code).filter(|c| c.valid_for(PacketType::SubAck))
            } else {
                from_v3(code)
            };
            return_codes.push(reason.ok_or(DecodeError::InvalidReasonCode {
                packet: PacketType::SubAck,
                code,
            })?);
        }
        if return_codes.is_empty() {
            return Err(DecodeError::Truncated); // one code per filter, and there is at least one
        }
        Ok(Self {
            packet_id,
            properties,
            return_codes,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        let props = if version.is_v5() {
            properties::block_len(&self.properties)
        } else {
            0
        };
        2 + props + self.return_codes.len()
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, buf: &mut impl BufMut) {
        buf.put_u16(self.packet_id);
        if version.is_v5() {
            properties::put_block(buf, &self.properties);
            for c in &self.return_codes {
                buf.put_u8(c.as_u8());
            }
        } else {
            for c in &self.return_codes {
                buf.put_u8(to_v3(*c));
            }
        }
    }
}
