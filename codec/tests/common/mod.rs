//! Helpers shared by the byte-exact vectors and the negative tests.
//!
//! A vector is a byte string worked out by hand from the OASIS specifications together with the
//! `Packet` it stands for. [`assert_vector`] checks both directions: decoding the bytes gives the
//! packet (and consumes exactly them), encoding the packet gives the bytes, and `encoded_len`
//! agrees with their count.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use ringmq_codec::{
    decode, DecodeError, DecodeOptions, FixedHeader, Packet, Properties, ProtocolVersion,
    ReasonCode, Utf8Bytes, PACKET_SIZE_MAX,
};

pub use ringmq_codec::ProtocolVersion::{V3_1, V3_1_1, V5};

/// Both MQTT 3 versions: every packet but CONNECT (and CONNACK's meaning of byte 1) is the same
/// on the wire in 3.1 and 3.1.1.
pub const V3: [ProtocolVersion; 2] = [V3_1, V3_1_1];
/// Every version.
pub const ALL: [ProtocolVersion; 3] = [V3_1, V3_1_1, V5];

/// Decode options without a size limit.
pub fn opts(version: ProtocolVersion) -> DecodeOptions {
    DecodeOptions::new(version)
}

/// A string literal as an MQTT string.
pub fn s(text: &'static str) -> Utf8Bytes {
    Utf8Bytes::from_static(text)
}

/// Static bytes.
pub fn b(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

/// A property block holding `p`.
pub fn props(p: Properties) -> Option<Box<Properties>> {
    Some(Box::new(p))
}

/// Lower-case hex with a space between bytes, for readable failure messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Decodes a whole buffer and checks that exactly the packet's bytes were consumed. When the
/// fixed header is valid, it must declare exactly `bytes`: a test input is one whole packet, so
/// that an error comes from the field under test and not from a miscounted remaining length.
#[track_caller]
pub fn decode_all(version: ProtocolVersion, bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    if let Ok(Some(header)) = FixedHeader::parse(bytes, version, PACKET_SIZE_MAX) {
        assert_eq!(
            header.total_len(),
            bytes.len(),
            "{version:?}: the remaining length of {} does not match the test input",
            hex(bytes)
        );
    }
    let mut buf = BytesMut::from(bytes);
    let result = decode(&mut buf, &opts(version));
    if let Ok(Some(_)) = result {
        assert!(
            buf.is_empty(),
            "{version:?}: {} bytes left after the packet",
            buf.len()
        );
    }
    result
}

/// Encodes `packet` and checks that the count returned and `encoded_len` agree with the output.
#[track_caller]
pub fn encode(version: ProtocolVersion, packet: &Packet) -> Vec<u8> {
    let mut out = Vec::new();
    let written = packet
        .encode(version, &mut out)
        .unwrap_or_else(|e| panic!("{version:?}: encoding {packet:?} failed: {e}"));
    assert_eq!(written, out.len(), "{version:?}: count returned by encode");
    assert_eq!(
        packet.encoded_len(version),
        out.len(),
        "{version:?}: encoded_len"
    );
    out
}

/// The bytes decode to `expected`.
#[track_caller]
pub fn assert_decodes(version: ProtocolVersion, bytes: &[u8], expected: &Packet) {
    assert_eq!(
        decode_all(version, bytes),
        Ok(Some(expected.clone())),
        "{version:?}: decoding {}",
        hex(bytes)
    );
}

/// `packet` encodes to exactly `bytes`, and `encoded_len` is their count.
#[track_caller]
pub fn assert_encodes(version: ProtocolVersion, packet: &Packet, bytes: &[u8]) {
    assert_eq!(
        hex(&encode(version, packet)),
        hex(bytes),
        "{version:?}: encoding {packet:?}"
    );
    assert_eq!(packet.encoded_len(version), bytes.len());
}

/// A byte-exact vector, checked in both directions.
#[track_caller]
pub fn assert_vector(version: ProtocolVersion, bytes: &[u8], expected: &Packet) {
    assert_decodes(version, bytes, expected);
    assert_encodes(version, expected, bytes);
}

/// The same vector in several versions.
#[track_caller]
pub fn assert_vector_in(versions: &[ProtocolVersion], bytes: &[u8], expected: &Packet) {
    for &version in versions {
        assert_vector(version, bytes, expected);
    }
}

/// Decoding `bytes` fails with exactly `expected`, whose MQTT 5 reason code is `reason`.
#[track_caller]
pub fn assert_rejects(
    version: ProtocolVersion,
    bytes: &[u8],
    expected: DecodeError,
    reason: ReasonCode,
) {
    assert_eq!(
        decode_all(version, bytes),
        Err(expected),
        "{version:?}: decoding {}",
        hex(bytes)
    );
    assert_eq!(
        expected.reason_code(),
        reason,
        "reason code of {expected:?}"
    );
}

/// A packet: the first byte, the remaining length (minimal variable byte integer) and `body`.
/// Negative tests use it so that the remaining length is right and only the field under test is
/// wrong.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field (spec 1.5.4, 1.5.6).
pub fn field(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// Concatenates byte slices.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}
