//! The payload of every benchmark message: publisher id, sequence number and send time, then
//! padding up to the requested size.
//!
//! Layout (big endian): `publisher: u32`, `seq: u64`, `sent_ns: u64` (nanoseconds since the
//! run's start instant, shared by publishers and subscribers in this process), then zeros.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the header; the smallest payload size accepted.
pub const HEADER_LEN: usize = 4 + 8 + 8;

/// What a payload says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the publisher, 0-based, unique in the run.
    pub publisher: u32,
    /// Sequence number of the message for that publisher, from 0.
    pub seq: u64,
    /// When it was written, in nanoseconds since the run's start instant.
    pub sent_ns: u64,
}

/// Writes a payload of `len` bytes (at least [`HEADER_LEN`]) into `pool` and returns it as
/// `Bytes`. `pool` is a reusable arena: payloads share its allocation.
pub fn write(pool: &mut BytesMut, len: usize, stamp: Stamp) -> Bytes {
    debug_assert!(len >= HEADER_LEN);
    if pool.capacity() - pool.len() < len {
        pool.reserve(len.max(64 * 1024));
    }
    pool.put_u32(stamp.publisher);
    pool.put_u64(stamp.seq);
    pool.put_u64(stamp.sent_ns);
    pool.put_bytes(0, len - HEADER_LEN);
    pool.split().freeze()
}

/// Reads the stamp at the front of a payload; `None` if it is too short.
pub fn read(payload: &[u8]) -> Option<Stamp> {
    let h = payload.get(..HEADER_LEN)?;
    Some(Stamp {
        publisher: u32::from_be_bytes(h[0..4].try_into().ok()?),
        seq: u64::from_be_bytes(h[4..12].try_into().ok()?),
        sent_ns: u64::from_be_bytes(h[12..20].try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let mut pool = BytesMut::new();
        let stamp = Stamp {
            publisher: 77,
            seq: 1 << 40,
            sent_ns: 123_456_789,
        };
        for len in [HEADER_LEN, 64, 1000] {
            let p = write(&mut pool, len, stamp);
            assert_eq!(p.len(), len);
            assert_eq!(read(&p), Some(stamp));
        }
        assert_eq!(read(&[0; HEADER_LEN - 1]), None);
    }
}
