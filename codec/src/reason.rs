//! MQTT 5 reason codes (OASIS MQTT 5.0, section 2.4) and the subsets each packet may carry.
//!
//! One enum serves every packet: the value 0x00 means "Success", "Normal disconnection" or
//! "Granted QoS 0" depending on the packet, so those names are associated constants of the same
//! variant. For MQTT 3.1 and 3.1.1 the CONNACK return codes and SUBACK return codes are mapped to
//! and from the same enum by the packets that carry them.

use crate::PacketType;

macro_rules! reason_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal,)*) => {
        /// An MQTT 5 reason code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum ReasonCode {
            $($(#[$doc])* $name = $value,)*
        }

        impl ReasonCode {
            /// The reason code for a byte, or `None` if the byte is no MQTT 5 reason code.
            pub const fn from_u8(value: u8) -> Option<Self> {
                match value {
                    $($value => Some(Self::$name),)*
                    _ => None,
                }
            }

            /// Every reason code, in ascending order.
            pub const ALL: &'static [ReasonCode] = &[$(Self::$name,)*];
        }
    };
}

reason_codes! {
    /// 0x00: Success, Normal disconnection, Granted QoS 0.
    Success = 0x00,
    /// 0x01: Granted QoS 1 (SUBACK).
    GrantedQoS1 = 0x01,
    /// 0x02: Granted QoS 2 (SUBACK).
    GrantedQoS2 = 0x02,
    /// 0x04: Disconnect with Will Message (DISCONNECT from the client).
    DisconnectWithWillMessage = 0x04,
    /// 0x10: No matching subscribers (PUBACK, PUBREC).
    NoMatchingSubscribers = 0x10,
    /// 0x11: No subscription existed (UNSUBACK).
    NoSubscriptionExisted = 0x11,
    /// 0x18: Continue authentication (AUTH).
    ContinueAuthentication = 0x18,
    /// 0x19: Re-authenticate (AUTH).
    ReAuthenticate = 0x19,
    /// 0x80: Unspecified error.
    UnspecifiedError = 0x80,
    /// 0x81: Malformed Packet.
    MalformedPacket = 0x81,
    /// 0x82: Protocol Error.
    ProtocolError = 0x82,
    /// 0x83: Implementation specific error.
    ImplementationSpecificError = 0x83,
    /// 0x84: Unsupported Protocol Version.
    UnsupportedProtocolVersion = 0x84,
    /// 0x85: Client Identifier not valid.
    ClientIdentifierNotValid = 0x85,
    /// 0x86: Bad User Name or Password.
    BadUserNameOrPassword = 0x86,
    /// 0x87: Not authorized.
    NotAuthorized = 0x87,
    /// 0x88: Server unavailable.
    ServerUnavailable = 0x88,
    /// 0x89: Server busy.
    ServerBusy = 0x89,
    /// 0x8A: Banned.
    Banned = 0x8A,
    /// 0x8B: Server shutting down.
    ServerShuttingDown = 0x8B,
    /// 0x8C: Bad authentication method.
    BadAuthenticationMethod = 0x8C,
    /// 0x8D: Keep Alive timeout.
    KeepAliveTimeout = 0x8D,
    /// 0x8E: Session taken over.
    SessionTakenOver = 0x8E,
    /// 0x8F: Topic Filter invalid.
    TopicFilterInvalid = 0x8F,
    /// 0x90: Topic Name invalid.
    TopicNameInvalid = 0x90,
    /// 0x91: Packet Identifier in use.
    PacketIdentifierInUse = 0x91,
    /// 0x92: Packet Identifier not found.
    PacketIdentifierNotFound = 0x92,
    /// 0x93: Receive Maximum exceeded.
    ReceiveMaximumExceeded = 0x93,
    /// 0x94: Topic Alias invalid.
    TopicAliasInvalid = 0x94,
    /// 0x95: Packet too large.
    PacketTooLarge = 0x95,
    /// 0x96: Message rate too high.
    MessageRateTooHigh = 0x96,
    /// 0x97: Quota exceeded.
    QuotaExceeded = 0x97,
    /// 0x98: Administrative action.
    AdministrativeAction = 0x98,
    /// 0x99: Payload format invalid.
    PayloadFormatInvalid = 0x99,
    /// 0x9A: Retain not supported.
    RetainNotSupported = 0x9A,
    /// 0x9B: QoS not supported.
    QoSNotSupported = 0x9B,
    /// 0x9C: Use another server.
    UseAnotherServer = 0x9C,
    /// 0x9D: Server moved.
    ServerMoved = 0x9D,
    /// 0x9E: Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E,
    /// 0x9F: Connection rate exceeded.
    ConnectionRateExceeded = 0x9F,
    /// 0xA0: Maximum connect time.
    MaximumConnectTime = 0xA0,
    /// 0xA1: Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1,
    /// 0xA2: Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2,
}

impl ReasonCode {
    /// 0x00 in DISCONNECT.
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode::Success;
    /// 0x00 in SUBACK.
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode::Success;

    /// The byte on the wire.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// True for codes of 0x80 and above, which report a failure.
    pub const fn is_error(self) -> bool {
        self.as_u8() >= 0x80
    }

    /// Whether an MQTT 5 packet of this type may carry this reason code (section 2.4, table 2-6).
    pub fn valid_for(self, packet: PacketType) -> bool {
        use ReasonCode::*;
        match packet {
            PacketType::ConnAck => matches!(
                self,
                Success
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | UnsupportedProtocolVersion
                    | ClientIdentifierNotValid
                    | BadUserNameOrPassword
                    | NotAuthorized
                    | ServerUnavailable
                    | ServerBusy
                    | Banned
                    | BadAuthenticationMethod
                    | TopicNameInvalid
                    | PacketTooLarge
                    | QuotaExceeded
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | ConnectionRateExceeded
            ),
            PacketType::PubAck | PacketType::PubRec => matches!(
                self,
                Success
                    | NoMatchingSubscribers
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicNameInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | PayloadFormatInvalid
            ),
            PacketType::PubRel | PacketType::PubComp => {
                matches!(self, Success | PacketIdentifierNotFound)
            }
            PacketType::SubAck => matches!(
                self,
                Success
                    | GrantedQoS1
                    | GrantedQoS2
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
                    | QuotaExceeded
                    | SharedSubscriptionsNotSupported
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::UnsubAck => matches!(
                self,
                Success
                    | NoSubscriptionExisted
                    | UnspecifiedError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | TopicFilterInvalid
                    | PacketIdentifierInUse
            ),
            PacketType::Disconnect => matches!(
                self,
                Success
                    | DisconnectWithWillMessage
                    | UnspecifiedError
                    | MalformedPacket
                    | ProtocolError
                    | ImplementationSpecificError
                    | NotAuthorized
                    | ServerBusy
                    | ServerShuttingDown
                    | KeepAliveTimeout
                    | SessionTakenOver
                    | TopicFilterInvalid
                    | TopicNameInvalid
                    | ReceiveMaximumExceeded
                    | TopicAliasInvalid
                    | PacketTooLarge
                    | MessageRateTooHigh
                    | QuotaExceeded
                    | AdministrativeAction
                    | PayloadFormatInvalid
                    | RetainNotSupported
                    | QoSNotSupported
                    | UseAnotherServer
                    | ServerMoved
                    | SharedSubscriptionsNotSupported
                    | ConnectionRateExceeded
                    | MaximumConnectTime
                    | SubscriptionIdentifiersNotSupported
                    | WildcardSubscriptionsNotSupported
            ),
            PacketType::Auth => matches!(self, Success | ContinueAuthentication | ReAuthenticate),
            _ => false,
        }
    }

    /// The MQTT 3.1 / 3.1.1 CONNACK return code closest to this reason code (3.1.1 section 3.2.2.3).
    pub const fn to_v3_connack(self) -> u8 {
        use ReasonCode::*;
        match self {
            Success => 0,
            UnsupportedProtocolVersion => 1,
            ClientIdentifierNotValid => 2,
            BadUserNameOrPassword | BadAuthenticationMethod => 4,
            NotAuthorized | Banned => 5,
            _ => 3,
        }
    }

    /// The reason code for an MQTT 3.1 / 3.1.1 CONNACK return code.
    pub const fn from_v3_connack(code: u8) -> Option<Self> {
        use ReasonCode::*;
        Some(match code {
            0 => Success,
            1 => UnsupportedProtocolVersion,
            2 => ClientIdentifierNotValid,
            3 => ServerUnavailable,
            4 => BadUserNameOrPassword,
            5 => NotAuthorized,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_byte() {
        for &code in ReasonCode::ALL {
            assert_eq!(ReasonCode::from_u8(code.as_u8()), Some(code));
        }
        let known = (0..=255u8)
            .filter(|b| ReasonCode::from_u8(*b).is_some())
            .count();
        assert_eq!(known, ReasonCode::ALL.len());
        assert_eq!(known, 43);
    }

    #[test]
    fn v3_connack_codes_map_both_ways() {
        for code in 0..=5u8 {
            let reason = ReasonCode::from_v3_connack(code).unwrap();
            assert_eq!(reason.to_v3_connack(), code);
        }
        assert_eq!(ReasonCode::from_v3_connack(6), None);
        assert_eq!(ReasonCode::ServerBusy.to_v3_connack(), 3);
    }

    #[test]
    fn packet_subsets_follow_table_2_6() {
        assert!(ReasonCode::PacketIdentifierNotFound.valid_for(PacketType::PubRel));
        assert!(!ReasonCode::NoMatchingSubscribers.valid_for(PacketType::PubRel));
        assert!(ReasonCode::SessionTakenOver.valid_for(PacketType::Disconnect));
        assert!(!ReasonCode::SessionTakenOver.valid_for(PacketType::ConnAck));
        assert!(ReasonCode::ReAuthenticate.valid_for(PacketType::Auth));
        assert!(!ReasonCode::GrantedQoS1.valid_for(PacketType::UnsubAck));
    }
}
