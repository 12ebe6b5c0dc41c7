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
    if std::str::from_utf8(bytes).is_err() {
        return Err(DecodeError::InvalidUtf8);
    }
    if bytes.contains(&0) {
        return Err(DecodeError::NullCharacter);
    }
    Ok(())
}

impl Utf8Bytes {
    /// Wraps `bytes` after checking the MQTT string rules.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, DecodeError> {
        validate_utf8(&bytes)?;
        Ok(Self(bytes))
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
}
