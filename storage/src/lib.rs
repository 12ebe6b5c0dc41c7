//! The per-core append-only log of ringmq (public API; the implementation follows).
#![warn(missing_docs)]

pub mod model;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid segments read.
    pub segments: usize,
    /// Records visited.
    pub records: u64,
    /// Bytes of the records visited (framed).
    pub bytes: u64,
    /// Bytes cut from the torn tail of the last segment.
    pub truncated_bytes: u64,
    /// Bad records inside earlier segments.
    pub corrupt_records: u64,
    /// Segment files with a bad header (skipped).
    pub bad_segments: usize,
    /// Other files in the directory (ignored).
    pub ignored_files: usize,
}

/// Counters of a log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogStats {
    /// End of the last appended record.
    pub appended_lsn: Lsn,
    /// End of what was written to the OS.
    pub written_lsn: Lsn,
    /// End of what is durable under the policy.
    pub durable_lsn: Lsn,
    /// Bytes held in memory.
    pub pending_bytes: u64,
    /// Bytes of segments and pending data.
    pub disk_bytes: u64,
    /// Segments.
    pub segments: usize,
}

/// A unit of work for the [`Flusher`].
#[derive(Debug)]
pub struct Batch {
    sync: bool,
}

impl Batch {
    /// Whether this batch ends with an fdatasync.
    pub fn sync(&self) -> bool {
        self.sync
    }
}

/// What the flusher did with a batch.
#[derive(Debug)]
pub struct BatchResult {
    ok: bool,
}

impl BatchResult {
    /// Whether everything in the batch succeeded.
    pub fn is_ok(&self) -> bool {
        self.ok
    }
}

/// The per-core log: pure state, no I/O.
#[derive(Debug)]
pub struct Log {
    cfg: LogConfig,
    appended: Lsn,
    durable: Lsn,
}

/// Recovers the log of `cfg.dir` with [`StdFs`].
pub fn recover(
    cfg: &LogConfig,
    visit: impl FnMut(Lsn, u8, &[u8]),
) -> Result<(Log, RecoveryReport), StorageError> {
    recover_on(&StdFs, cfg, visit)
}

/// Recovers the log of `cfg.dir` on the given file system (which must complete its futures
/// without an executor: [`StdFs`], [`MemFs`]).
pub fn recover_on<F: FileSystem>(
    _fs: &F,
    cfg: &LogConfig,
    _visit: impl FnMut(Lsn, u8, &[u8]),
) -> Result<(Log, RecoveryReport), StorageError> {
    Ok((
        Log {
            cfg: cfg.clone(),
            appended: 0,
            durable: 0,
        },
        RecoveryReport::default(),
    ))
}

impl Log {
    /// Appends a record; returns its LSN.
    pub fn append(&mut self, kind: u8, body: &[u8], class: Class) -> Result<Lsn, AppendError> {
        let _ = (kind, class, &self.cfg);
        let lsn = self.appended;
        self.appended += record_size(body.len());
        Ok(lsn)
    }
    /// End of the last appended record.
    pub fn appended_lsn(&self) -> Lsn {
        self.appended
    }
    /// Everything below is durable under the policy.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable
    }
    /// What the flusher must do next, if anything.
    pub fn take_batch(&mut self, now: Instant) -> Option<Batch> {
        let _ = now;
        None
    }
    /// The flusher's report on the last batch.
    pub fn complete(&mut self, result: BatchResult) {
        let _ = result;
    }
    /// When `take_batch` should be called again without a new append.
    pub fn next_flush_deadline(&self) -> Option<Instant> {
        None
    }
    /// The record at `lsn` with a body of `body_len` bytes is dead.
    pub fn release(&mut self, lsn: Lsn, body_len: usize) {
        let _ = (lsn, body_len);
    }
    /// The oldest sealed segment when it is worth evacuating.
    pub fn compaction_candidate(&self) -> Option<SegmentInfo> {
        None
    }
    /// Every live record of `segment` was re-appended: delete it once the copies are durable.
    /// Returns false if the segment is unknown or still the active one.
    pub fn retire(&mut self, segment: SegmentId) -> bool {
        let _ = segment;
        false
    }
    /// Bytes of the segments plus pending data.
    pub fn disk_bytes(&self) -> u64 {
        0
    }
    /// Counters.
    pub fn stats(&self) -> LogStats {
        LogStats::default()
    }
}

/// Bytes a record with a body of `body_len` bytes takes in the log (header, body, padding).
pub fn record_size(body_len: usize) -> u64 {
    16 + (body_len as u64).div_ceil(16) * 16
}

/// File operations the flusher and recovery need.
#[allow(async_fn_in_trait)]
pub trait FileSystem {
    /// An open file.
    type File;
    /// Creates (or truncates) a file for writing.
    async fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    async fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Writes at a position; may write less than asked.
    async fn write_at(&self, file: &Self::File, pos: u64, data: &[u8]) -> io::Result<usize>;
    /// Reads at a position; may read less than asked.
    async fn read_at(&self, file: &Self::File, pos: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Length of the file.
    async fn len(&self, file: &Self::File) -> io::Result<u64>;
    /// fdatasync.
    async fn sync_data(&self, file: &Self::File) -> io::Result<()>;
    /// Truncates to `len` bytes.
    async fn truncate(&self, file: &Self::File, len: u64) -> io::Result<()>;
    /// Closes a file.
    async fn close(&self, file: Self::File) -> io::Result<()>;
    /// Removes a file.
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and its parents.
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// fsyncs a directory.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of a directory.
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
}

/// The flusher: owns the open segment files.
pub struct Flusher<F: FileSystem> {
    fs: F,
    dir: PathBuf,
}

impl<F: FileSystem> Flusher<F> {
    /// A flusher for the log of `cfg`.
    pub fn new(fs: F, cfg: &LogConfig) -> Self {
        Flusher {
            fs,
            dir: cfg.dir.clone(),
        }
    }
    /// Performs a batch.
    pub async fn run_batch(&mut self, batch: Batch) -> BatchResult {
        let _ = (&self.fs, &self.dir, batch);
        BatchResult { ok: true }
    }
}

/// std::fs, blocking.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;
/// glommio buffered files; only inside a glommio executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlommioFs;
/// In-memory file system with fault injection.
#[derive(Clone, Debug, Default)]
pub struct MemFs;

#[allow(dead_code)]
const _RETRY: Duration = Duration::from_millis(10);

impl FileSystem for StdFs {
    type File = std::fs::File;
    async fn create(&self, path: &Path) -> io::Result<Self::File> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }
    async fn open(&self, path: &Path) -> io::Result<Self::File> {
        std::fs::OpenOptions::new().read(true).write(true).open(path)
    }
    async fn write_at(&self, file: &Self::File, pos: u64, data: &[u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::write_at(file, data, pos)
    }
    async fn read_at(&self, file: &Self::File, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(file, buf, pos)
    }
    async fn len(&self, file: &Self::File) -> io::Result<u64> {
        Ok(file.metadata()?.len())
    }
    async fn sync_data(&self, file: &Self::File) -> io::Result<()> {
        file.sync_data()
    }
    async fn truncate(&self, file: &Self::File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }
    async fn close(&self, file: Self::File) -> io::Result<()> {
        drop(file);
        Ok(())
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
}
