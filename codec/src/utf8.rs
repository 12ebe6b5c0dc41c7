//! [`Utf8Bytes`]: an MQTT UTF-8 string (spec 1.5.4) held as a zero-copy slice of the packet.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

use crate::DecodeError;

/// The longest MQTT string in bytes: its length prefix is 16 bits.
pub const STRING_LEN_MAX: usize = u16::MAX as usize;

/// A well-formed MQTT UTF-8 string: valid UTF-8 (hence no surrogates), no U+0000, at most
/// 65,535 bytes. Cloning is a reference-count increment.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Utf8Bytes(Bytes);

/// Checks the MQTT rules for a string held in `bytes` (spec 1.5.4, [MQTT-1.5.4-1], [MQTT-1.5.4-2]).
pub fn validate_utf8(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() > STRING_LEN_MAX {
        return Err(DecodeError::Truncated);
    }
    // Fast path: ASCII without NUL is well-formed UTF-8 without U+0000.
    if scan_ascii(bytes).is_some() {
        return Ok(());
    }
    validate_utf8_slow(bytes)
}

/// The general check, for strings that are not plain ASCII or that hold a NUL: UTF-8 first, so
/// that an ill-formed string containing a NUL reports [`DecodeError::InvalidUtf8`].
#[cold]
#[inline(never)]
fn validate_utf8_slow(bytes: &[u8]) -> Result<(), DecodeError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(DecodeError::InvalidUtf8);
    }
    if bytes.contains(&0) {
        return Err(DecodeError::NullCharacter);
    }
    Ok(())
}

/// One pass over a string that is, almost always, plain ASCII (topics, client identifiers).
/// `Some(wildcard)` when every byte is ASCII and none is NUL, with `wildcard` telling whether a
/// `+` or `#` occurs; `None` otherwise, and the caller takes the general path.
///
/// Eight bytes at a time (SWAR). For a word `w` whose bytes are all below 0x80, `w - 0x0101..01`
/// borrows only out of a zero byte, and the lowest zero byte becomes 0xFF; with no zero byte
/// there is no borrow and every byte `b` becomes `b - 1`, below 0x80. So
/// `(w - 0x01..) & 0x80..` is non-zero exactly when `w` holds a zero byte.
/// `bad` gathers that test and the high bits of `w`: it is zero exactly for ASCII without NUL.
/// `+` (0x2B) and `#` (0x23) differ only in bit 3, so both become 0 in `(w | 0x08..) ^ 0x2B..`,
/// and only they do; that word's bytes are also below 0x80 when `w`'s are, so the same zero
/// test applies (its result matters only when `bad` is zero). Overlapping loads cover the tail:
/// a byte seen twice changes nothing.
#[inline]
fn scan_ascii(bytes: &[u8]) -> Option<bool> {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    const BIT3: u64 = u64::from_ne_bytes([0x08; 8]);
    const PLUS: u64 = u64::from_ne_bytes([b'+'; 8]);
    #[inline(always)]
    fn word(b: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_ne_bytes(w)
    }
    #[inline(always)]
    fn half(b: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[at..at + 4]);
        u64::from(u32::from_ne_bytes(w))
    }

    // Only the high bit of each byte of the accumulators matters: masked once at the end.
    let (mut bad, mut wildcard) = (0u64, 0u64);
    let mut scan = |w: u64| {
        bad |= w.wrapping_sub(LO) | w;
        wildcard |= ((w | BIT3) ^ PLUS).wrapping_sub(LO);
    };
    let n = bytes.len();
    if n >= 8 {
        let mut at = 0;
        while at + 8 <= n {
            scan(word(bytes, at));
            at += 8;
        }
        if at < n {
            scan(word(bytes, n - 8));
        }
    } else if n >= 4 {
        scan(half(bytes, 0) | (half(bytes, n - 4) << 32));
    } else if n > 0 {
        // First, middle and last byte cover 1 to 3 bytes; the rest is spaces.
        let (a, b, c) = (bytes[0], bytes[n / 2], bytes[n - 1]);
        scan(u64::from_ne_bytes([a, b, c, b' ', b' ', b' ', b' ', b' ']));
    }
    (bad & HI == 0).then_some(wildcard & HI != 0)
}

impl Utf8Bytes {
    /// Wraps `bytes` after checking the MQTT string rules.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, DecodeError> {
        validate_utf8(&bytes)?;
        Ok(Self(bytes))
    }

    /// [`Utf8Bytes::try_from_bytes`], also telling whether the string holds a wildcard (`+` or
    /// `#`), found in the same pass for ASCII strings. For topic names.
    #[inline]
    pub(crate) fn try_from_bytes_wildcard(bytes: Bytes) -> Result<(Self, bool), DecodeError> {
        if bytes.len() <= STRING_LEN_MAX {
            if let Some(wildcard) = scan_ascii(&bytes) {
                return Ok((Self(bytes), wildcard));
            }
        }
        let s = Self::try_from_bytes(bytes)?;
        let wildcard = crate::topic::has_wildcard(&s);
        Ok((s, wildcard))
    }

    /// A string from a literal. Panics if the literal breaks the MQTT string rules: that is a bug
    /// in the caller, never a reaction to input.
    pub fn from_static(s: &'static str) -> Self {
        assert!(
            validate_utf8(s.as_bytes()).is_ok(),
            "invalid MQTT string literal"
        );
        Self(Bytes::from_static(s.as_bytes()))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checked that the bytes are valid UTF-8 and they are immutable.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes (a slice of the packet buffer when decoded).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Gives up the wrapper.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Utf8Bytes {
    type Error = DecodeError;
    fn try_from(s: String) -> Result<Self, DecodeError> {
        Self::try_from_bytes(Bytes::from(s))
    }
}

impl TryFrom<&str> for Utf8Bytes {
    type Error = DecodeError;
    fn try_from(s: &str) -> Result<Self, DecodeError> {
        Self::try_from_bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_1_5_4_forbids() {
        assert_eq!(validate_utf8(b"a\0b"), Err(DecodeError::NullCharacter));
        // U+D800 encoded as UTF-8 (a surrogate): ED A0 80 [MQTT-1.5.4-1].
        assert_eq!(
            validate_utf8(&[0xED, 0xA0, 0x80]),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(validate_utf8(&[0xC0, 0x80]), Err(DecodeError::InvalidUtf8));
        assert_eq!(validate_utf8(&[0xFF]), Err(DecodeError::InvalidUtf8));
        assert!(validate_utf8("sensor/température/☃".as_bytes()).is_ok());
        assert!(Utf8Bytes::try_from("x".repeat(STRING_LEN_MAX + 1)).is_err());
        // U+FEFF is allowed and must not be stripped [MQTT-1.5.4-3].
        let bom = Utf8Bytes::try_from("\u{FEFF}a").unwrap();
        assert_eq!(bom.as_str(), "\u{FEFF}a");
    }

    #[test]
    fn ascii_scan_agrees_with_the_byte_by_byte_rules() {
        fn reference(b: &[u8]) -> Option<bool> {
            (b.is_ascii() && !b.contains(&0)).then(|| b.iter().any(|&c| c == b'+' || c == b'#'))
        }
        let specials = [
            0x00, b'+', b'#', 0x7F, 0x80, 0xC3, 0xFF, b'*', b'"', 0x01, 0x2A, 0x24,
        ];
        for len in 0..=40usize {
            let base: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert_eq!(scan_ascii(&base), Some(false), "len {len}");
            for at in 0..len {
                for &x in &specials {
                    let mut b = base.clone();
                    b[at] = x;
                    assert_eq!(
                        scan_ascii(&b),
                        reference(&b),
                        "len {len} at {at} byte {x:#x}"
                    );
                    // The original three-pass rules are the reference.
                    let wildcard = b.iter().any(|&c| c == b'+' || c == b'#');
                    assert_eq!(validate_utf8(&b), validate_utf8_slow(&b));
                    assert_eq!(
                        Utf8Bytes::try_from_bytes_wildcard(Bytes::from(b.clone())).map(|(_, w)| w),
                        validate_utf8_slow(&b).map(|()| wildcard)
                    );
                }
            }
        }
        // Multi-byte strings take the general path and still report wildcards.
        let (s, wildcard) =
            Utf8Bytes::try_from_bytes_wildcard(Bytes::from("température/+".as_bytes())).unwrap();
        assert_eq!((s.as_str(), wildcard), ("température/+", true));
        assert_eq!(
            Utf8Bytes::try_from_bytes_wildcard(Bytes::from_static(&[0xC3, 0x00])),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            Utf8Bytes::try_from_bytes_wildcard(Bytes::from_static(b"a\0+")),
            Err(DecodeError::NullCharacter)
        );
    }

    proptest::proptest! {
        #[test]
        fn ascii_scan_agrees_on_random_strings(
            b in proptest::collection::vec(
                proptest::sample::select(vec![0u8, 1, b'+', b'#', b'/', b'a', 0x7F, 0x80, 0xC3, 0xA9, 0xFF]),
                0..80,
            )
        ) {
            let wildcard = b.iter().any(|&c| c == b'+' || c == b'#');
            proptest::prop_assert_eq!(validate_utf8(&b), validate_utf8_slow(&b));
            proptest::prop_assert_eq!(
                Utf8Bytes::try_from_bytes_wildcard(Bytes::from(b.clone())).map(|(_, w)| w),
                validate_utf8_slow(&b).map(|()| wildcard)
            );
        }
    }
}
