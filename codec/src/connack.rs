//! CONNACK (spec 3.2).

use bytes::BufMut;

use crate::properties::{self, Properties, PropertyContext};
use crate::wire::Reader;
use crate::{DecodeError, PacketType, ProtocolVersion, ReasonCode};

/// CONNACK: the server's answer to CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed a stored session.
    pub session_present: bool,
    /// The outcome. For MQTT 3.x it is mapped to and from the return codes 0 to 5.
    pub reason_code: ReasonCode,
    /// MQTT 5 CONNACK properties.
    pub properties: Option<Box<Properties>>,
}

impl ConnAck {
    pub(crate) fn decode(mut r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags = r.u8()?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::ReservedConnAckFlags); // [MQTT-3.2.2-1]
        }
        let code = r.u8()?;
        let invalid = DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code,
        };
        let (reason_code, properties) = if version.is_v5() {
            let reason = ReasonCode::from_u8(code)
                .filter(|c| c.valid_for(PacketType::ConnAck))
                .ok_or(invalid)?;
            (
                reason,
                Properties::decode(&mut r, PropertyContext::ConnAck)?,
            )
        } else {
            (ReasonCode::from_v3_connack(code).ok_or(invalid)?, None)
        };
        r.finish()?;
        Ok(Self {
            session_present: flags & 1 == 1 && version != ProtocolVersion::V3_1,
            reason_code,
            properties,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() {
            properties::block_len(&self.properties)
        } else {
            0
        }
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, buf: &mut impl BufMut) {
        // MQTT 3.1 has no Session Present flag: the byte is reserved ("not used").
        buf.put_u8(u8::from(
            self.session_present && version != ProtocolVersion::V3_1,
        ));
        if version.is_v5() {
            buf.put_u8(self.reason_code.as_u8());
            properties::put_block(buf, &self.properties);
        } else {
            buf.put_u8(self.reason_code.to_v3_connack());
        }
    }
}
