//! The on-disk format: segment files, segment headers and record frames.
//!
//! A segment file starts with a [`SEGMENT_HEADER_LEN`]-byte header and holds records, each a
//! [`RECORD_HEADER_LEN`]-byte header, the body, and zero padding up to the next multiple of
//! [`ALIGN`]. LSNs are positions in one global byte space: the byte at offset `o` of the segment
//! whose base is `b` has LSN `b + o`, so a record's LSN is where its header starts, and every LSN
//! of a record is a multiple of [`ALIGN`].
//!
//! Segment header (little endian): magic `RINGMQLG` (8 bytes), format version `u32`, header
//! length `u32` (32), base LSN `u64`, reserved `u32` (0), CRC32C of the 28 bytes before it.
//!
//! Record header (little endian): body length `u32`, kind `u8`, flags `u8` (0), reserved `u16`
//! (0), low 32 bits of the record's LSN `u32`, CRC32C of those 12 bytes followed by the body. The
//! LSN inside the CRC makes a stale record at another position (an old file's bytes) invalid.

use crate::Lsn;

/// Alignment of every record (and so of every body) in a segment file and in memory.
pub const ALIGN: u64 = 16;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 16;
/// Bytes of a segment header (part of the segment's LSN range).
pub const SEGMENT_HEADER_LEN: u64 = 32;
/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RINGMQLG";
/// Format version written into segment headers.
pub const FORMAT_VERSION: u32 = 1;
/// Largest body a record may carry (1 GiB).
pub const MAX_BODY_LEN: usize = 1 << 30;
/// Highest base LSN a segment may have (2^62): a file named beyond it is not a segment, so LSN
/// arithmetic never overflows.
pub const MAX_LSN: Lsn = 1 << 62;
/// Extension of segment file names.
pub const SEGMENT_EXTENSION: &str = ".seg";

/// Bytes a record with a body of `body_len` bytes takes in the log: header, body, padding.
pub const fn record_size(body_len: usize) -> u64 {
    RECORD_HEADER_LEN as u64 + (body_len as u64).div_ceil(ALIGN) * ALIGN
}

/// File name of the segment whose base LSN is `base`: 20 digits, so that names sort like LSNs.
pub fn segment_file_name(base: Lsn) -> String {
    format!("{base:020}{SEGMENT_EXTENSION}")
}

/// The base LSN named by a segment file name, if `name` is one (exactly 20 digits + `.seg`).
pub fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_EXTENSION)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&base| base <= MAX_LSN)
}

/// The header of a segment whose base LSN is `base`.
pub fn encode_segment_header(base: Lsn) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The base LSN of a valid segment header at the start of `bytes`, or `None`.
pub fn decode_segment_header(bytes: &[u8]) -> Option<Lsn> {
    let h = bytes.get(0..SEGMENT_HEADER_LEN as usize)?;
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if h[0..8] != SEGMENT_MAGIC
        || u32_at(8) != FORMAT_VERSION
        || u32_at(12) != SEGMENT_HEADER_LEN as u32
        || u32_at(24) != 0
        || u32_at(28) != crc32c::crc32c(&h[0..28])
    {
        return None;
    }
    let mut base = [0u8; 8];
    base.copy_from_slice(&h[16..24]);
    let base = u64::from_le_bytes(base);
    (base % ALIGN == 0 && base <= MAX_LSN).then_some(base)
}

fn header_fields(body_len: u32, kind: u8, lsn: Lsn) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0..4].copy_from_slice(&body_len.to_le_bytes());
    h[4] = kind;
    // h[5] flags, h[6..8] reserved: 0
    h[8..12].copy_from_slice(&(lsn as u32).to_le_bytes());
    h
}

fn record_crc(fields: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(fields), body)
}

/// The 16-byte header of the record at `lsn` with this kind and body. `body.len()` must be at
/// most [`MAX_BODY_LEN`] (the caller checks).
pub fn encode_record_header(lsn: Lsn, kind: u8, body: &[u8]) -> [u8; RECORD_HEADER_LEN] {
    debug_assert!(body.len() <= MAX_BODY_LEN);
    let fields = header_fields(body.len() as u32, kind, lsn);
    let crc = record_crc(&fields, body);
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..12].copy_from_slice(&fields);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Bytes of zero padding after a body of `body_len` bytes.
pub const fn padding(body_len: usize) -> usize {
    (record_size(body_len) as usize) - RECORD_HEADER_LEN - body_len
}

/// Appends the frame of a record (header, body, zero padding) to `out`. `body.len()` must be at
/// most [`MAX_BODY_LEN`] (the caller checks).
pub fn encode_record(out: &mut Vec<u8>, lsn: Lsn, kind: u8, body: &[u8]) {
    out.extend_from_slice(&encode_record_header(lsn, kind, body));
    out.extend_from_slice(body);
    out.resize(out.len() + padding(body.len()), 0);
}

/// A record read back from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's kind byte.
    pub kind: u8,
    /// The body (as aligned as the frame was, plus 16).
    pub body: &'a [u8],
    /// Bytes of the frame, padding included ([`record_size`] of the body length).
    pub size: u64,
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than a header, or a body longer than the bytes left.
    Short,
    /// A header that no writer produces (length, flags, LSN).
    BadHeader,
    /// The CRC does not match.
    BadCrc,
}

/// Reads and verifies the record framed at the start of `bytes`, which must be the record at
/// `lsn`. Never panics.
pub fn decode_record(bytes: &[u8], lsn: Lsn) -> Result<RecordRef<'_>, FrameError> {
    let header = bytes.get(..RECORD_HEADER_LEN).ok_or(FrameError::Short)?;
    let u32_at =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let body_len = u32_at(0) as usize;
    if body_len > MAX_BODY_LEN || header[5] != 0 || header[6] != 0 || header[7] != 0 {
        return Err(FrameError::BadHeader);
    }
    if u32_at(8) != lsn as u32 {
        return Err(FrameError::BadHeader);
    }
    let size = record_size(body_len);
    if (bytes.len() as u64) < size {
        return Err(FrameError::Short);
    }
    let body = &bytes[RECORD_HEADER_LEN..RECORD_HEADER_LEN + body_len];
    if record_crc(&header[0..12], body) != u32_at(12) {
        return Err(FrameError::BadCrc);
    }
    Ok(RecordRef {
        kind: header[4],
        body,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip_and_every_bit_flip_is_caught() {
        for len in [0usize, 1, 15, 16, 17, 100] {
            let body: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            let mut frame = Vec::new();
            encode_record(&mut frame, 4096, 7, &body);
            assert_eq!(frame.len() as u64, record_size(len));
            assert_eq!(frame.len() % 16, 0);
            let rec = decode_record(&frame, 4096).unwrap();
            assert_eq!(
                (rec.kind, rec.body, rec.size),
                (7, &body[..], record_size(len))
            );
            assert!(
                decode_record(&frame, 4112).is_err(),
                "another position must not verify"
            );
            for bit in 0..(RECORD_HEADER_LEN + len) * 8 {
                let mut bad = frame.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    decode_record(&bad, 4096).is_err(),
                    "flip of bit {bit} (len {len})"
                );
            }
            for cut in 0..frame.len() {
                if cut < RECORD_HEADER_LEN + len {
                    assert!(decode_record(&frame[..cut], 4096).is_err());
                }
            }
        }
    }

    #[test]
    fn zeroes_are_not_a_record() {
        assert_eq!(decode_record(&[0u8; 64], 0), Err(FrameError::BadCrc));
        assert_eq!(decode_record(&[0u8; 64], 32), Err(FrameError::BadHeader));
        assert_eq!(decode_segment_header(&[0u8; 32]), None);
    }

    #[test]
    fn segment_header_and_names() {
        let h = encode_segment_header(1 << 40);
        assert_eq!(decode_segment_header(&h), Some(1 << 40));
        for byte in 0..h.len() {
            let mut bad = h;
            bad[byte] ^= 0x10;
            assert_eq!(decode_segment_header(&bad), None);
        }
        assert_eq!(segment_file_name(32), "00000000000000000032.seg");
        assert_eq!(
            parse_segment_file_name("00000000000000000032.seg"),
            Some(32)
        );
        assert_eq!(parse_segment_file_name("0000000000000000032.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000003x.seg"), None);
        assert_eq!(parse_segment_file_name("99999999999999999999.seg"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000032.seg.tmp"),
            None
        );
    }
}
