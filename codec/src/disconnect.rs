//! DISCONNECT (spec 3.14), and the "reason code then optional properties" body it shares with
//! AUTH.

use bytes::BufMut;

use crate::properties::{self, Properties, PropertyContext};
use crate::wire::Reader;
use crate::{DecodeError, PacketType, ProtocolVersion, ReasonCode};

/// DISCONNECT. In MQTT 3.x it has no body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disconnect {
    /// MQTT 5 reason code; `Success` (normal disconnection) in 3.x.
    pub reason_code: ReasonCode,
    /// MQTT 5 properties (session expiry, reason string, server reference, user properties).
    pub properties: Option<Box<Properties>>,
}

impl Disconnect {
    /// A normal disconnection without properties.
    pub const NORMAL: Disconnect = Disconnect {
        reason_code: ReasonCode::NORMAL_DISCONNECTION,
        properties: None,
    };

    /// A disconnection with this reason code and no properties.
    pub const fn new(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            properties: None,
        }
    }

    pub(crate) fn decode(r: Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        if !version.is_v5() {
            r.finish()?;
            return Ok(Self::NORMAL);
        }
        let (reason_code, properties) =
            decode_reason_and_properties(r, PacketType::Disconnect, PropertyContext::Disconnect)?;
        Ok(Self {
            reason_code,
            properties,
        })
    }

    pub(crate) fn body_len(&self, version: ProtocolVersion) -> usize {
        if !version.is_v5() {
            return 0;
        }
        reason_and_properties_len(self.reason_code, &self.properties)
    }

    pub(crate) fn encode_body(&self, version: ProtocolVersion, buf: &mut impl BufMut) {
        if version.is_v5() {
            put_reason_and_properties(buf, self.reason_code, &self.properties);
        }
    }
}

/// Decodes a body of an optional reason code and optional properties (3.14.2.1, 3.15.2.1):
/// an empty body means Success without properties.
pub(crate) fn decode_reason_and_properties(
    mut r: Reader,
    packet: PacketType,
    ctx: PropertyContext,
) -> Result<(ReasonCode, Option<Box<Properties>>), DecodeError> {
    if r.is_empty() {
        return Ok((ReasonCode::Success, None));
    }
    let code = r.u8()?;
    let reason = ReasonCode::from_u8(code)
        .filter(|c| c.valid_for(packet))
        .ok_or(DecodeError::InvalidReasonCode { packet, code })?;
    let properties = if r.is_empty() {
        None
    } else {
        Properties::decode(&mut r, ctx)?
    };
    r.finish()?;
    Ok((reason, properties))
}

pub(crate) fn reason_and_properties_len(
    reason: ReasonCode,
    props: &Option<Box<Properties>>,
) -> usize {
    match (props, reason) {
        (None, ReasonCode::Success) => 0,
        (None, _) => 1,
        (p @ Some(_), _) => 1 + properties::block_len(p),
    }
}

pub(crate) fn put_reason_and_properties(
    buf: &mut impl BufMut,
    reason: ReasonCode,
    props: &Option<Box<Properties>>,
) {
    if reason_and_properties_len(reason, props) > 0 {
        buf.put_u8(reason.as_u8());
        if props.is_some() {
            properties::put_block(buf, props);
        }
    }
}
