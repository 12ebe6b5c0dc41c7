//! Every `DecodeError` variant is produced by at least one input, with the reason code a broker
//! sends for it. The match in `name` has no wildcard: a new variant does not compile until it
//! has an input here. The other `negative_*.rs` files test each validation in depth.

mod common;

use std::collections::BTreeSet;

use bytes::BytesMut;
use common::*;
use ringmq_codec::{decode, DecodeError, DecodeOptions, PacketType, ProtocolVersion, ReasonCode};

fn name(e: &DecodeError) -> &'static str {
    use DecodeError::*;
    match e {
        MalformedRemainingLength => "MalformedRemainingLength",
        PacketTooLarge { .. } => "PacketTooLarge",
        InvalidPacketType(_) => "InvalidPacketType",
        InvalidHeaderFlags { .. } => "InvalidHeaderFlags",
        InvalidQoS => "InvalidQoS",
        DupOnQoS0 => "DupOnQoS0",
        Truncated => "Truncated",
        TrailingBytes(_) => "TrailingBytes",
        InvalidUtf8 => "InvalidUtf8",
        NullCharacter => "NullCharacter",
        MalformedVarInt => "MalformedVarInt",
        UnknownProperty(_) => "UnknownProperty",
        PropertyNotAllowed { .. } => "PropertyNotAllowed",
        DuplicateProperty(_) => "DuplicateProperty",
        InvalidPropertyValue(_) => "InvalidPropertyValue",
        InvalidProtocolName => "InvalidProtocolName",
        UnsupportedProtocolVersion(_) => "UnsupportedProtocolVersion",
        ReservedConnectFlag => "ReservedConnectFlag",
        InvalidWillFlags => "InvalidWillFlags",
        PasswordWithoutUsername => "PasswordWithoutUsername",
        InvalidReasonCode { .. } => "InvalidReasonCode",
        ReservedConnAckFlags => "ReservedConnAckFlags",
        WildcardInTopicName => "WildcardInTopicName",
        EmptyTopicName => "EmptyTopicName",
        InvalidTopicFilter => "InvalidTopicFilter",
        InvalidSharedSubscription => "InvalidSharedSubscription",
        NoLocalOnSharedSubscription => "NoLocalOnSharedSubscription",
        ZeroPacketId => "ZeroPacketId",
        NoTopicFilters => "NoTopicFilters",
        ReservedSubscriptionOptions => "ReservedSubscriptionOptions",
        InvalidRetainHandling => "InvalidRetainHandling",
        InvalidSubscriptionQoS => "InvalidSubscriptionQoS",
        PayloadFormatInvalid => "PayloadFormatInvalid",
    }
}

/// The number of arms above.
const VARIANTS: usize = 33;

/// A 5.0 CONNECT with these flags, property block and payload after the client id "c".
fn connect5(flags: u8, props: &[u8], rest: &[u8]) -> Vec<u8> {
    let head = [0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, flags, 0x00, 0x00];
    packet(
        0x10,
        &cat(&[&head, &[props.len() as u8], props, &field(b"c"), rest]),
    )
}

/// A 3.1.1 CONNECT with this protocol name, level and flags, client id "c" then `rest`.
fn connect4(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    packet(
        0x10,
        &cat(&[
            &field(name),
            &[level, flags, 0x00, 0x00],
            &field(b"c"),
            rest,
        ]),
    )
}

#[test]
fn every_variant_has_an_input() {
    use DecodeError::*;
    use ReasonCode::{
        MalformedPacket as M, PayloadFormatInvalid as PFI, ProtocolError as PE,
        TopicFilterInvalid as TFI,
    };
    let cases: Vec<(ProtocolVersion, Vec<u8>, DecodeError, ReasonCode)> = vec![
        (V5, vec![0xC0, 0x80, 0x00], MalformedRemainingLength, M),
        (V5, vec![0x00, 0x00], InvalidPacketType(0), M),
        (
            V5,
            vec![0x41, 0x02, 0x00, 0x01],
            InvalidHeaderFlags {
                packet: PacketType::PubAck,
                flags: 1,
            },
            M,
        ),
        (
            V5,
            vec![0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01],
            InvalidQoS,
            M,
        ),
        (V5, vec![0x38, 0x04, 0x00, 0x01, b't', 0x00], DupOnQoS0, M),
        (V5, vec![0x40, 0x01, 0x00], Truncated, M),
        (V5, vec![0xC0, 0x01, 0x00], TrailingBytes(1), M),
        (
            V5,
            packet(0x30, &[0x00, 0x03, 0xED, 0xA0, 0x80, 0x00]),
            InvalidUtf8,
            M,
        ),
        (
            V5,
            packet(0x30, &[0x00, 0x02, b'a', 0x00, 0x00]),
            NullCharacter,
            M,
        ),
        (
            V5,
            packet(0x30, &[0x00, 0x01, b't', 0x80, 0x00]),
            MalformedVarInt,
            M,
        ),
        (
            V5,
            packet(0x30, &[0x00, 0x01, b't', 0x02, 0x05, 0x00]),
            UnknownProperty(5),
            M,
        ),
        (
            V5,
            connect5(0x02, &[0x23, 0x00, 0x01], &[]),
            PropertyNotAllowed {
                id: 0x23,
                packet: PacketType::Connect,
            },
            M,
        ),
        (
            V5,
            packet(
                0x30,
                &[0x00, 0x01, b't', 0x0A, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1],
            ),
            DuplicateProperty(0x02),
            PE,
        ),
        (
            V5,
            connect5(0x02, &[0x21, 0x00, 0x00], &[]),
            InvalidPropertyValue(0x21),
            PE,
        ),
        (V5, connect4(b"MQTX", 4, 0x02, &[]), InvalidProtocolName, M),
        (
            V5,
            connect4(b"MQTT", 6, 0x02, &[]),
            UnsupportedProtocolVersion(6),
            ReasonCode::UnsupportedProtocolVersion,
        ),
        (V5, connect5(0x03, &[], &[]), ReservedConnectFlag, M),
        (V5, connect5(0x0A, &[], &[]), InvalidWillFlags, M),
        (
            V3_1_1,
            connect4(b"MQTT", 4, 0x42, &field(b"pw")),
            PasswordWithoutUsername,
            M,
        ),
        (
            V5,
            vec![0xE0, 0x01, 0x01],
            InvalidReasonCode {
                packet: PacketType::Disconnect,
                code: 0x01,
            },
            PE,
        ),
        (
            V5,
            vec![0x20, 0x03, 0x02, 0x00, 0x00],
            ReservedConnAckFlags,
            M,
        ),
        (
            V5,
            packet(0x30, &[0x00, 0x01, b'#', 0x00]),
            WildcardInTopicName,
            ReasonCode::TopicNameInvalid,
        ),
        (V5, packet(0x30, &[0x00, 0x00, 0x00]), EmptyTopicName, PE),
        (
            V5,
            packet(0xA2, &[0x00, 0x01, 0x00, 0x00, 0x02, b'a', b'+']),
            InvalidTopicFilter,
            TFI,
        ),
        (
            V5,
            packet(0xA2, &cat(&[&[0x00, 0x01, 0x00], &field(b"$share/g")])),
            InvalidSharedSubscription,
            TFI,
        ),
        (
            V5,
            packet(
                0x82,
                &cat(&[&[0x00, 0x01, 0x00], &field(b"$share/g/t"), &[0x04]]),
            ),
            NoLocalOnSharedSubscription,
            PE,
        ),
        (V5, vec![0x40, 0x02, 0x00, 0x00], ZeroPacketId, M),
        (V5, vec![0x82, 0x03, 0x00, 0x01, 0x00], NoTopicFilters, PE),
        (
            V5,
            packet(0x82, &cat(&[&[0x00, 0x01, 0x00], &field(b"t"), &[0x80]])),
            ReservedSubscriptionOptions,
            M,
        ),
        (
            V5,
            packet(0x82, &cat(&[&[0x00, 0x01, 0x00], &field(b"t"), &[0x30]])),
            InvalidRetainHandling,
            PE,
        ),
        (
            V5,
            packet(0x82, &cat(&[&[0x00, 0x01, 0x00], &field(b"t"), &[0x03]])),
            InvalidSubscriptionQoS,
            PE,
        ),
        (
            V5,
            connect5(
                0x06,
                &[],
                &cat(&[&[0x02, 0x01, 0x01], &field(b"t"), &field(&[0xFF])]),
            ),
            PayloadFormatInvalid,
            PFI,
        ),
    ];
    let mut seen = BTreeSet::new();
    for (version, bytes, error, reason) in cases {
        assert_rejects(version, &bytes, error, reason);
        seen.insert(name(&error));
    }
    // PacketTooLarge needs a size limit: it is refused from the fixed header alone.
    let options = DecodeOptions {
        version: V5,
        max_packet_size: 64,
    };
    let error = PacketTooLarge { size: 129, max: 64 };
    assert_eq!(
        decode(&mut BytesMut::from(&[0x30, 0x7F][..]), &options),
        Err(error)
    );
    assert_eq!(error.reason_code(), ReasonCode::PacketTooLarge);
    seen.insert(name(&error));
    assert_eq!(seen.len(), VARIANTS, "covered: {seen:?}");
}
