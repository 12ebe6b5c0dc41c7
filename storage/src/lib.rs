//! The per-core append-only log of ringmq: segment files of CRC32C-framed records, group commit
//! under an fsync policy, recovery that cuts a torn tail, a disk quota and oldest-segment
//! compaction. It knows nothing about MQTT: a record is a kind byte and a body.
//!
//! - [`Log`]: the synchronous state the engine appends to (no I/O).
//! - [`Flusher`]: performs the [`Batch`]es the log hands out, on a [`FileSystem`]
//!   ([`GlommioFs`] in the broker, [`StdFs`] and [`MemFs`] in tests).
//! - [`recover`]: reads a core's directory at start-up and returns the log.
//!
//! See the crate's README for the format, the durability policies and the compaction model.
#![warn(missing_docs)]

pub mod model;

use std::io;
use std::path::PathBuf;

mod aligned;
mod flusher;
pub mod format;
mod fs;
mod log;
mod memfs;
mod recovery;

pub use crate::flusher::Flusher;
pub use crate::format::record_size;
pub use crate::fs::{FileSystem, GlommioFs, StdFs};
pub use crate::log::{Batch, BatchResult, Log, LogStats, RETRY_BACKOFF_MAX, RETRY_BACKOFF_MIN};
pub use crate::memfs::{CrashMode, MemFile, MemFs};
pub use crate::recovery::{recover, recover_on, RecoveryReport};

/// Log sequence number: a global byte position, monotonically increasing across segments.
/// `0` means "nothing".
pub type Lsn = u64;

/// When the flusher calls `fdatasync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every batch ends with an fdatasync; `durable_lsn` advances after it.
    Always,
    /// Batches are written as they come, fsync at most every n milliseconds.
    EveryMs(u32),
    /// Durable means written to the OS (survives kill -9, not power loss).
    Never,
}

/// Default reserve above `max_disk_bytes` for [`Class::Control`] records.
pub const DEFAULT_CONTROL_RESERVE_BYTES: u64 = 1 << 20;

/// Configuration of one core's log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// This core's directory (created if missing).
    pub dir: PathBuf,
    /// Rotate when a segment would exceed this size.
    pub segment_size_bytes: u64,
    /// Quota for this core's segments plus pending bytes.
    pub max_disk_bytes: u64,
    /// Fsync policy.
    pub fsync: FsyncPolicy,
    /// Bound of the in-memory append buffer.
    pub max_pending_bytes: usize,
    /// Bytes [`Class::Control`] records may use above the quota and the pending bound.
    pub control_reserve_bytes: u64,
    /// The oldest sealed segment is a compaction candidate when its live bytes are at most this
    /// fraction of its bytes.
    pub compaction_live_ratio: f64,
    /// The oldest sealed segment is a compaction candidate when the disk usage is at least this
    /// fraction of `max_disk_bytes`.
    pub compaction_disk_ratio: f64,
}

impl LogConfig {
    /// A configuration with defaults for everything but the directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            segment_size_bytes: 64 << 20,
            max_disk_bytes: 1 << 30,
            fsync: FsyncPolicy::Always,
            max_pending_bytes: 64 << 20,
            control_reserve_bytes: DEFAULT_CONTROL_RESERVE_BYTES,
            compaction_live_ratio: 0.5,
            compaction_disk_ratio: 0.75,
        }
    }
}

/// Class of a record for the quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Ordinary records: refused past the quota.
    Data,
    /// Records that free space or end state (acks, deletes): allowed into a reserve.
    Control,
}

/// Why an append was refused.
#[derive(thiserror::Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendError {
    /// The disk quota is used up.
    #[error("disk quota exceeded")]
    QuotaExceeded,
    /// The in-memory buffer is full.
    #[error("append backlog full")]
    Backlog,
    /// The record can never be stored.
    #[error("record too large")]
    TooLarge,
    /// The log is poisoned or writes are failing.
    #[error("log writes are failing")]
    Failed,
}

/// Errors of recovery.
#[derive(thiserror::Error, Debug)]
pub enum StorageError {
    /// An I/O error on a path.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Identity of a segment: its base LSN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub Lsn);

/// A segment as seen by compaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment.
    pub id: SegmentId,
    /// First LSN of the segment.
    pub base_lsn: Lsn,
    /// End of the segment's records.
    pub end_lsn: Lsn,
    /// Bytes of the segment.
    pub bytes: u64,
    /// Bytes of its records not yet released.
    pub live_bytes: u64,
}

impl SegmentInfo {
    /// Whether `lsn` lies in this segment.
    pub fn contains(&self, lsn: Lsn) -> bool {
        lsn >= self.base_lsn && lsn < self.end_lsn
    }
}
