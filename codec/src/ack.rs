//! PUBACK, PUBREC, PUBREL and PUBCOMP (spec 3.4 to 3.7): one shape, one codec.

use bytes::BufMut;

use crate::properties::{self, Properties, PropertyContext};
use crate::wire::Reader;
use crate::{DecodeError, PacketType, ProtocolVersion, ReasonCode};

/// The body of PUBACK, PUBREC, PUBREL and PUBCOMP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The packet identifier acknowledged (non-zero).
    pub packet_id: u16,
    /// MQTT 5 reason code; `Success` in 3.x.
    pub reason_code: ReasonCode,
    /// MQTT 5 properties (reason string, user properties).
    pub properties: Option<Box<Properties>>,
}

impl Ack {
    /// A successful ack without properties.
    pub const fn new(packet_id: u16) -> Self {
        Self {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: None,
        }
    }

    pub(crate) fn decode(
        packet: PacketType,
        mut r: Reader,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let mut ack = Self::new(packet_id);
        if version.is_v5() && !r.is_empty() {
            // 3.4.2.1: the reason code may be left out when it is 0x00 and there are no
            // properties; the property length may be left out when there are none.
            let code = r.u8()?;
            ack.reason_code = ReasonCode::from_u8(code)
                .filter(|c| c.valid_for(packet))
                .ok_or(DecodeError::InvalidReasonCode { packet, code })?;
            if !r.is_empty() {
                ack.properties = Properties::decode(&mut r, PropertyContext::Ack(packet))?;
            }
        }
        r.finish()?;
        Ok(ack)
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            return 2;
        }
        match (&self.properties, self.reason_code) {
            (None, ReasonCode::Success) => 2,
            (None, _) => 3,
            (p @ Some(_), _) => 3 + properties::block_len(p),
        }
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, buf: &mut impl BufMut) {
        buf.put_u16(self.packet_id);
        if self.body_len(version) > 2 {
            buf.put_u8(self.reason_code.as_u8());
            if self.properties.is_some() {
                properties::put_block(buf, &self.properties);
            }
        }
    }
}
