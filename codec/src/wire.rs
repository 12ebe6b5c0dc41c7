//! The data representations of spec section 1.5: integers, variable byte integers, strings and
//! binary data, read from a [`Reader`] over one packet body and written to any [`BufMut`].

use bytes::{Buf, BufMut, Bytes};

use crate::{DecodeError, EncodeError, Utf8Bytes};

/// The largest value a variable byte integer holds (spec 1.5.5).
pub const VARINT_MAX: u32 = 268_435_455;

/// Outcome of parsing a variable byte integer from the front of a slice.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum VarInt {
    /// The value and the number of bytes it took.
    Done(u32, usize),
    /// The slice ends before the last byte of the integer.
    Incomplete,
}

/// Parses a variable byte integer (1 to 4 bytes, minimally encoded [MQTT-1.5.5-1]).
#[inline]
pub(crate) fn parse_varint(bytes: &[u8]) -> Result<VarInt, DecodeError> {
    // One byte, values up to 127: most remaining lengths and every property identifier.
    match bytes.first() {
        Some(&byte) if byte & 0x80 == 0 => Ok(VarInt::Done(u32::from(byte), 1)),
        _ => parse_varint_multi(bytes),
    }
}

/// [`parse_varint`] past its one-byte fast path.
fn parse_varint_multi(bytes: &[u8]) -> Result<VarInt, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(4) {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A last byte of 0 after a continuation byte is a non-minimal encoding.
            if i > 0 && byte == 0 {
                return Err(DecodeError::MalformedRemainingLength);
            }
            return Ok(VarInt::Done(value, i + 1));
        }
    }
    if bytes.len() >= 4 {
        return Err(DecodeError::MalformedRemainingLength);
    }
    Ok(VarInt::Incomplete)
}

/// Bytes a variable byte integer of this value takes.
#[inline]
pub const fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer; `value` must not exceed [`VARINT_MAX`].
#[inline]
pub(crate) fn put_varint(buf: &mut impl BufMut, mut value: u32) {
    debug_assert!(value <= VARINT_MAX);
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            return;
        }
    }
}

/// Writes a length-prefixed string.
#[inline]
pub(crate) fn put_str(buf: &mut impl BufMut, s: &Utf8Bytes) {
    // Utf8Bytes guarantees at most 65,535 bytes.
    buf.put_u16(s.len() as u16);
    buf.put_slice(s.as_bytes());
}

/// Checks that binary data fits its 16-bit length prefix.
#[inline]
pub(crate) fn check_binary(b: &Bytes) -> Result<(), EncodeError> {
    if b.len() > usize::from(u16::MAX) {
        return Err(EncodeError::BinaryTooLong(b.len()));
    }
    Ok(())
}

/// Writes length-prefixed binary data; [`check_binary`] must have passed.
#[inline]
pub(crate) fn put_binary(buf: &mut impl BufMut, b: &Bytes) {
    buf.put_u16(b.len() as u16);
    buf.put_slice(b);
}

/// A cursor over one packet body. Every field taken is a zero-copy slice of the body.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    #[inline]
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(DecodeError::Truncated);
        }
        Ok(self.buf.get_u8())
    }

    #[inline]
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(DecodeError::Truncated);
        }
        Ok(self.buf.get_u16())
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(DecodeError::Truncated);
        }
        Ok(self.buf.get_u32())
    }

    /// A non-zero packet identifier (spec 2.2.1).
    #[inline]
    pub(crate) fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::ZeroPacketId),
            id => Ok(id),
        }
    }

    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match parse_varint(&self.buf) {
            Ok(VarInt::Done(value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            Ok(VarInt::Incomplete) => Err(DecodeError::Truncated),
            Err(_) => Err(DecodeError::MalformedVarInt),
        }
    }

    /// The next `len` bytes.
    #[inline]
    pub(crate) fn take(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < len {
            return Err(DecodeError::Truncated);
        }
        Ok(self.buf.split_to(len))
    }

    /// Length-prefixed binary data (spec 1.5.6).
    #[inline]
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A length-prefixed UTF-8 string (spec 1.5.4).
    #[inline]
    pub(crate) fn string(&mut self) -> Result<Utf8Bytes, DecodeError> {
        let bytes = self.binary()?;
        Utf8Bytes::try_from_bytes(bytes)
    }

    /// [`Reader::string`] that also tells whether the string holds `+` or `#`, found in the
    /// same pass: for topic names, whose wildcard check must come after later fields.
    #[inline]
    pub(crate) fn string_wildcard(&mut self) -> Result<(Utf8Bytes, bool), DecodeError> {
        let bytes = self.binary()?;
        Utf8Bytes::try_from_bytes_wildcard(bytes)
    }

    /// Everything left, consuming the reader.
    #[inline]
    pub(crate) fn rest(self) -> Bytes {
        self.buf
    }

    /// Fails unless every byte was consumed (remaining length equal to the content).
    #[inline]
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_of_table_1_1() {
        let cases: &[(u32, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for &(value, bytes) in cases {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, bytes, "encode {value}");
            assert_eq!(varint_len(value), bytes.len());
            assert_eq!(parse_varint(bytes), Ok(VarInt::Done(value, bytes.len())));
        }
    }

    #[test]
    fn varint_rejects_five_bytes_and_non_minimal() {
        assert_eq!(
            parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::MalformedRemainingLength)
        );
        assert_eq!(
            parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::MalformedRemainingLength)
        );
        assert_eq!(
            parse_varint(&[0x80, 0x00]),
            Err(DecodeError::MalformedRemainingLength)
        );
        assert_eq!(parse_varint(&[0x80, 0x80]), Ok(VarInt::Incomplete));
        assert_eq!(parse_varint(&[]), Ok(VarInt::Incomplete));
    }

    #[test]
    fn reader_reports_truncation() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x05, b'a']));
        assert_eq!(r.string(), Err(DecodeError::Truncated));
        let r = Reader::new(Bytes::from_static(&[1]));
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(1)));
    }
}
