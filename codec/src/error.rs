//! The closed set of errors the codec reports. Each decode error names the MQTT 5 reason code a
//! broker sends for it (in a CONNACK before the session exists, in a DISCONNECT after).

use crate::{PacketType, ReasonCode};

/// Why a packet could not be decoded. "Need more bytes" is not an error: `decode` returns
/// `Ok(None)` for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The remaining length is longer than 4 bytes or not minimally encoded (spec 1.5.5, 2.1.4).
    #[error("malformed remaining length")]
    MalformedRemainingLength,
    /// The packet (fixed header included) is larger than the configured maximum packet size.
    #[error("packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// Declared total size of the packet in bytes.
        size: usize,
        /// The configured maximum in bytes.
        max: u32,
    },
    /// Packet type 0, or AUTH (15) outside MQTT 5.
    #[error("reserved or unsupported packet type {0}")]
    InvalidPacketType(u8),
    /// The low nibble of the fixed header does not hold the value required for the type (2.1.3).
    #[error("invalid fixed header flags {flags:#06b} for {packet:?}")]
    InvalidHeaderFlags {
        /// The packet type.
        packet: PacketType,
        /// The flag nibble received.
        flags: u8,
    },
    /// QoS 3 (PUBLISH flags, will QoS, or MQTT 3.x subscription options).
    #[error("QoS 3 is not a valid QoS")]
    InvalidQoS,
    /// A QoS 0 PUBLISH with DUP set (3.3.1.1).
    #[error("DUP set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// A field runs past the end of the packet.
    #[error("packet ends inside a field")]
    Truncated,
    /// Bytes remain after the last field of the packet.
    #[error("{0} unexpected bytes after the last field")]
    TrailingBytes(usize),
    /// A UTF-8 string is ill-formed or holds a surrogate (1.5.4).
    #[error("string is not well-formed UTF-8")]
    InvalidUtf8,
    /// A UTF-8 string holds U+0000 (1.5.4).
    #[error("string holds U+0000")]
    NullCharacter,
    /// A variable byte integer inside the packet is longer than 4 bytes or not minimal.
    #[error("malformed variable byte integer")]
    MalformedVarInt,
    /// A property identifier that MQTT 5 does not define.
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    /// A property that this packet type must not carry (2.2.2.2).
    #[error("property {id:#04x} is not allowed in {packet:?}")]
    PropertyNotAllowed {
        /// The property identifier.
        id: u8,
        /// The packet (or [`PacketType::Connect`] for will properties).
        packet: PacketType,
    },
    /// A property that may appear once appears again.
    #[error("property {0:#04x} appears more than once")]
    DuplicateProperty(u8),
    /// A property value outside its allowed range (for example Receive Maximum 0).
    #[error("property {0:#04x} has a value outside its allowed range")]
    InvalidPropertyValue(u8),
    /// The CONNECT protocol name is neither `MQTT` nor `MQIsdp`.
    #[error("unknown protocol name")]
    InvalidProtocolName,
    /// The CONNECT protocol level is not 3, 4 or 5 (or does not fit the name).
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// The CONNECT reserved flag is set (3.1.2.3).
    #[error("CONNECT reserved flag is set")]
    ReservedConnectFlag,
    /// Will QoS or Will Retain set without the Will Flag (3.1.2.5-3.1.2.7).
    #[error("will QoS or retain set without a will")]
    InvalidWillFlags,
    /// MQTT 3.1.1: the password flag without the user name flag (3.1.2.9).
    #[error("password flag set without user name flag")]
    PasswordWithoutUsername,
    /// A reason code this packet type must not carry, or an unknown one.
    #[error("reason code {code:#04x} is not valid in {packet:?}")]
    InvalidReasonCode {
        /// The packet type.
        packet: PacketType,
        /// The byte received.
        code: u8,
    },
    /// Reserved bits of the CONNACK acknowledge flags are set (3.2.2.1).
    #[error("reserved CONNACK flags are set")]
    ReservedConnAckFlags,
    /// A PUBLISH topic name holds `+` or `#` (3.3.2.1).
    #[error("topic name holds a wildcard")]
    WildcardInTopicName,
    /// A PUBLISH topic name is empty and no topic alias stands in for it (3.3.2.1, 3.3.2.3.4).
    #[error("empty topic name without a topic alias")]
    EmptyTopicName,
    /// A topic filter breaks the wildcard rules or is empty (4.7).
    #[error("invalid topic filter")]
    InvalidTopicFilter,
    /// A `$share/` filter without a valid share name and filter (4.8.2).
    #[error("invalid shared subscription filter")]
    InvalidSharedSubscription,
    /// No Local set on a shared subscription (3.8.3.1).
    #[error("no local set on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// A packet identifier of 0 where a non-zero one is required (2.2.1).
    #[error("packet identifier 0 where a non-zero one is required")]
    ZeroPacketId,
    /// SUBSCRIBE or UNSUBSCRIBE without any topic filter (3.8.3, 3.10.3).
    #[error("no topic filter in the payload")]
    NoTopicFilters,
    /// Reserved bits of the subscription options are set (3.8.3.1).
    #[error("reserved subscription option bits are set")]
    ReservedSubscriptionOptions,
    /// Retain Handling 3 (3.8.3.1).
    #[error("retain handling 3 is not defined")]
    InvalidRetainHandling,
    /// MQTT 5: Maximum QoS 3 in subscription options, a Protocol Error (3.8.3.1). In 3.x it is
    /// malformed and reported as [`DecodeError::InvalidQoS`].
    #[error("maximum QoS 3 in subscription options")]
    InvalidSubscriptionQoS,
    /// Payload Format Indicator 1 on a payload that is not UTF-8 (3.3.2.3.2, 3.1.3.2.3).
    #[error("payload marked UTF-8 is not valid UTF-8")]
    PayloadFormatInvalid,
}

impl DecodeError {
    /// The MQTT 5 reason code a broker sends for this error.
    pub const fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            // 5.0 3.3.4: "A Topic Alias value of 0 ... is a Protocol Error, the receiver uses
            // DISCONNECT with Reason Code of 0x94 (Topic Alias invalid)".
            InvalidPropertyValue(crate::properties::id::TOPIC_ALIAS) => {
                ReasonCode::TopicAliasInvalid
            }
            UnsupportedProtocolVersion(_) => ReasonCode::UnsupportedProtocolVersion,
            DuplicateProperty(_)
            | InvalidPropertyValue(_)
            | InvalidReasonCode { .. }
            | EmptyTopicName
            | NoLocalOnSharedSubscription
            | NoTopicFilters
            | InvalidRetainHandling
            | InvalidSubscriptionQoS => ReasonCode::ProtocolError,
            WildcardInTopicName => ReasonCode::TopicNameInvalid,
            InvalidTopicFilter | InvalidSharedSubscription => ReasonCode::TopicFilterInvalid,
            PayloadFormatInvalid => ReasonCode::PayloadFormatInvalid,
            MalformedRemainingLength
            | InvalidPacketType(_)
            | InvalidHeaderFlags { .. }
            | InvalidQoS
            | DupOnQoS0
            | Truncated
            | TrailingBytes(_)
            | InvalidUtf8
            | NullCharacter
            | MalformedVarInt
            | UnknownProperty(_)
            | PropertyNotAllowed { .. }
            | InvalidProtocolName
            | ReservedConnectFlag
            | InvalidWillFlags
            | PasswordWithoutUsername
            | ReservedConnAckFlags
            | ZeroPacketId
            | ReservedSubscriptionOptions => ReasonCode::MalformedPacket,
        }
    }
}

/// Why a packet could not be encoded: the model holds a value the wire format cannot carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A binary field (payload excluded) is longer than 65,535 bytes.
    #[error("binary field of {0} bytes exceeds 65,535")]
    BinaryTooLong(usize),
    /// The remaining length would exceed 268,435,455 bytes.
    #[error("packet body of {0} bytes exceeds the MQTT maximum of 268,435,455")]
    PacketTooLarge(usize),
    /// A QoS 1/2 PUBLISH, SUBSCRIBE, UNSUBSCRIBE or ack with packet identifier 0.
    #[error("packet identifier 0 where a non-zero one is required")]
    ZeroPacketId,
    /// A packet or value that does not exist in the chosen protocol version (AUTH before 5.0).
    #[error("{0:?} does not exist in this protocol version")]
    NotInVersion(PacketType),
    /// A value outside its range, such as a subscription identifier of 0 or above 268,435,455.
    #[error("value out of range: {0}")]
    ValueOutOfRange(&'static str),
}
