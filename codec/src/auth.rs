//! AUTH (spec 3.15), MQTT 5 only: the exchange of enhanced authentication.

use bytes::BufMut;

use crate::disconnect::{
    decode_reason_and_properties, put_reason_and_properties, reason_and_properties_len,
};
use crate::properties::{Properties, PropertyContext};
use crate::wire::Reader;
use crate::{DecodeError, PacketType, ReasonCode};

/// AUTH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Authentication method and data, reason string, user properties.
    pub properties: Option<Box<Properties>>,
}

impl Auth {
    pub(crate) fn decode(r: Reader) -> Result<Self, DecodeError> {
        let (reason_code, properties) =
            decode_reason_and_properties(r, PacketType::Auth, PropertyContext::Auth)?;
        Ok(Self {
            reason_code,
            properties,
        })
    }

    pub(crate) fn body_len(&self) -> usize {
        reason_and_properties_len(self.reason_code, &self.properties)
    }

    pub(crate) fn encode_body(&self, buf: &mut impl BufMut) {
        put_reason_and_properties(buf, self.reason_code, &self.properties);
    }
}
