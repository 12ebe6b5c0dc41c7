//! [`Log`]: the synchronous, I/O-free half of the per-core log.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::format::{self, record_size, SEGMENT_HEADER_LEN};
use crate::{AppendError, Class, FsyncPolicy, LogConfig, Lsn, SegmentId, SegmentInfo};

/// First pause before a failed batch is retried; it doubles with every failure in a row.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between retries of a failing batch.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub(crate) base: Lsn,
    /// End of the records (what the next record's LSN would be).
    pub(crate) end: Lsn,
    /// Bytes on disk, or that will be once pending data is written.
    pub(crate) bytes: u64,
    /// Framed bytes of records not released.
    pub(crate) live: u64,
    /// Retired: delete once `durable_lsn` reaches this.
    pub(crate) retire_after: Option<Lsn>,
    /// In the batch in flight as a removal.
    pub(crate) removing: bool,
}

impl Segment {
    fn info(&self) -> SegmentInfo {
        SegmentInfo {
            id: SegmentId(self.base),
            base_lsn: self.base,
            end_lsn: self.end,
            bytes: self.bytes,
            live_bytes: self.live,
        }
    }
    fn record_bytes(&self) -> u64 {
        (self.end - self.base).saturating_sub(SEGMENT_HEADER_LEN)
    }
}

/// One positional write of a [`Batch`].
#[derive(Debug, Clone)]
pub(crate) struct Write {
    /// Base LSN of the segment (names the file).
    pub(crate) segment: Lsn,
    /// LSN of the first byte of `data`; the file offset is `lsn - segment`.
    pub(crate) lsn: Lsn,
    pub(crate) data: Bytes,
}

/// A unit of work for the [`Flusher`](crate::Flusher), taken from the [`Log`] with
/// [`Log::take_batch`]: positional writes in LSN order (creating segment files where a write
/// starts at offset 0), whether to `fdatasync` afterwards, and segment files to delete.
#[derive(Debug)]
pub struct Batch {
    pub(crate) seq: u64,
    pub(crate) writes: Vec<Write>,
    pub(crate) sync: bool,
    pub(crate) removes: Vec<Lsn>,
    pub(crate) end: Lsn,
}

impl Batch {
    /// Whether the batch ends with an `fdatasync` of the files it wrote since the last one.
    pub fn sync(&self) -> bool {
        self.sync
    }
    /// Bytes the batch writes.
    pub fn write_bytes(&self) -> u64 {
        self.writes.iter().map(|w| w.data.len() as u64).sum()
    }
    /// The LSN up to which the log is written when the batch succeeds.
    pub fn end_lsn(&self) -> Lsn {
        self.end
    }
    /// Segments the batch deletes.
    pub fn removes(&self) -> impl Iterator<Item = SegmentId> + '_ {
        self.removes.iter().map(|&b| SegmentId(b))
    }
}

/// What the [`Flusher`](crate::Flusher) did with a [`Batch`]; hand it to [`Log::complete`].
#[derive(Debug)]
pub struct BatchResult {
    pub(crate) seq: u64,
    /// End of the last write that completed (writes are done in order), 0 if none.
    pub(crate) written_to: Lsn,
    /// The batch asked for a sync, every write completed and every sync succeeded.
    pub(crate) synced: bool,
    /// A write or a sync failed: the data must be written again.
    pub(crate) write_failed: bool,
    /// A sync failed: what was written since the last durable point must be written again.
    pub(crate) sync_failed: bool,
    /// Segments deleted (and the directory synced).
    pub(crate) removed: Vec<Lsn>,
    /// The first error, with what was being done.
    pub(crate) error: Option<(&'static str, io::Error)>,
}

impl BatchResult {
    /// Whether everything in the batch succeeded.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }
    /// The first error, if any: what was being done and the I/O error.
    pub fn error(&self) -> Option<(&'static str, &io::Error)> {
        self.error.as_ref().map(|(op, e)| (*op, e))
    }
}

/// Counters and positions of a [`Log`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// End of the last appended record.
    pub appended_lsn: Lsn,
    /// End of what was written to the OS.
    pub written_lsn: Lsn,
    /// End of what is durable under the policy.
    pub durable_lsn: Lsn,
    /// Appended bytes not yet durable (held in memory).
    pub pending_bytes: u64,
    /// Bytes of segments, pending data included ([`Log::disk_bytes`]).
    pub disk_bytes: u64,
    /// Framed bytes of records not released, over all segments.
    pub live_bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// Records appended since start.
    pub records_appended: u64,
    /// Batches completed.
    pub batches: u64,
    /// Batches that ended with a successful sync.
    pub syncs: u64,
    /// Batches that failed (write, sync or removal error).
    pub failed_batches: u64,
    /// Appends refused with [`AppendError::QuotaExceeded`].
    pub quota_rejections: u64,
    /// Appends refused with [`AppendError::Backlog`].
    pub backlog_rejections: u64,
    /// Appends refused with [`AppendError::Failed`].
    pub failed_rejections: u64,
    /// Segments deleted after [`Log::retire`].
    pub segments_removed: u64,
    /// Writes are failing (Data appends are refused until a batch succeeds).
    pub failing: bool,
    /// A framing check failed: the log refuses everything.
    pub poisoned: bool,
}

#[derive(Debug)]
struct InFlight {
    seq: u64,
    end: Lsn,
    sync: bool,
    taken_at: Instant,
}

#[derive(Debug)]
struct Failing {
    backoff: Duration,
    retry_at: Instant,
    writes: bool,
}

/// The per-core log, without I/O: the engine appends into it synchronously, the flusher task
/// takes [`Batch`]es out of it, performs them with a [`Flusher`](crate::Flusher) and reports the
/// [`BatchResult`] back. Made by [`recover`](crate::recover).
///
/// The flusher task's loop:
///
/// ```text
/// loop {
///     let batch = state.borrow_mut().log.take_batch(Instant::now());   // under the borrow
///     match batch {
///         Some(b) => {
///             let result = flusher.run_batch(b).await;                 // no borrow held
///             state.borrow_mut().log.complete(result);                 // release acks <= durable_lsn
///         }
///         None => wait until an append (or retire) happens or next_flush_deadline() passes,
///     }
/// }
/// ```
///
/// Group commit: appends made while a batch is in flight go into the next batch, which writes
/// them together and shares one `fdatasync`.
#[derive(Debug)]
pub struct Log {
    pub(crate) cfg: LogConfig,
    pub(crate) segments: VecDeque<Segment>,
    /// Whether the last segment takes appends (false: the next append starts a segment).
    pub(crate) active: bool,
    appended: Lsn,
    written: Lsn,
    durable: Lsn,
    /// Appended bytes not yet frozen into a chunk: `[tail_start, appended)`.
    tail: BytesMut,
    tail_start: Lsn,
    /// Frozen chunks, contiguous, ending at `tail_start`, kept until durable.
    chunks: VecDeque<(Lsn, Bytes)>,
    in_flight: Option<InFlight>,
    seq: u64,
    last_sync: Option<Instant>,
    failing: Option<Failing>,
    poisoned: bool,
    stats: LogStats,
}

impl Log {
    /// A log whose segments are `segments` (ordered by base), continuing at `next` (everything
    /// below it durable).
    pub(crate) fn new(
        cfg: LogConfig,
        segments: VecDeque<Segment>,
        active: bool,
        next: Lsn,
    ) -> Self {
        Log {
            cfg,
            segments,
            active,
            appended: next,
            written: next,
            durable: next,
            tail: BytesMut::new(),
            tail_start: next,
            chunks: VecDeque::new(),
            in_flight: None,
            seq: 0,
            last_sync: None,
            failing: None,
            poisoned: false,
            stats: LogStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LogConfig {
        &self.cfg
    }

    /// Appends a record and returns its LSN. The record is durable once
    /// [`durable_lsn`](Self::durable_lsn) is above the returned LSN
    /// ([`is_durable`](Self::is_durable)).
    ///
    /// Errors: [`AppendError::TooLarge`] if the record can never fit (body over
    /// [`format::MAX_BODY_LEN`], or larger than the pending bound or the quota);
    /// [`AppendError::Failed`] if the log is poisoned, or for [`Class::Data`] while writes are
    /// failing; [`AppendError::QuotaExceeded`] past `max_disk_bytes` (plus the control reserve
    /// for [`Class::Control`]); [`AppendError::Backlog`] past `max_pending_bytes` (plus the
    /// control reserve for [`Class::Control`]).
    pub fn append(&mut self, kind: u8, body: &[u8], class: Class) -> Result<Lsn, AppendError> {
        if self.poisoned {
            self.stats.failed_rejections += 1;
            return Err(AppendError::Failed);
        }
        let size = record_size(body.len());
        if body.len() > format::MAX_BODY_LEN
            || size + SEGMENT_HEADER_LEN > self.cfg.max_pending_bytes as u64
            || size + SEGMENT_HEADER_LEN > self.cfg.max_disk_bytes
        {
            return Err(AppendError::TooLarge);
        }
        if class == Class::Data && self.failing.as_ref().is_some_and(|f| f.writes) {
            self.stats.failed_rejections += 1;
            return Err(AppendError::Failed);
        }
        let rotate = match self.segments.back() {
            Some(seg) if self.active => {
                seg.end - seg.base + size > self.cfg.segment_size_bytes
                    && seg.end > seg.base + SEGMENT_HEADER_LEN
            }
            _ => true,
        };
        let needed = size + if rotate { SEGMENT_HEADER_LEN } else { 0 };
        let reserve = match class {
            Class::Data => 0,
            Class::Control => self.cfg.control_reserve_bytes,
        };
        if self.disk_bytes() + needed > self.cfg.max_disk_bytes.saturating_add(reserve) {
            self.stats.quota_rejections += 1;
            return Err(AppendError::QuotaExceeded);
        }
        if self.pending_bytes() + needed
            > (self.cfg.max_pending_bytes as u64).saturating_add(reserve)
        {
            self.stats.backlog_rejections += 1;
            return Err(AppendError::Backlog);
        }
        if rotate {
            self.start_segment();
        }
        let lsn = self.appended;
        let start = self.tail.len();
        self.tail
            .extend_from_slice(&format::encode_record_header(lsn, kind, body));
        self.tail.extend_from_slice(body);
        self.tail.put_bytes(0, format::padding(body.len()));
        // Cheap guard against a framing bug or memory corruption: the bytes about to be written
        // must verify exactly as recovery will verify them.
        let verified = format::decode_record(&self.tail[start..], lsn)
            .is_ok_and(|r| r.kind == kind && r.body == body && r.size == size);
        if !verified {
            self.tail.truncate(start);
            self.poisoned = true;
            tracing::error!(lsn, "storage: a record failed its CRC check right after framing; the log refuses further appends");
            return Err(AppendError::Failed);
        }
        self.appended += size;
        let seg = self.segments.back_mut().expect("a segment was started");
        seg.end += size;
        seg.bytes += size;
        seg.live += size;
        self.stats.records_appended += 1;
        Ok(lsn)
    }

    fn start_segment(&mut self) {
        let base = self.appended;
        self.tail
            .extend_from_slice(&format::encode_segment_header(base));
        self.appended += SEGMENT_HEADER_LEN;
        self.segments.push_back(Segment {
            base,
            end: self.appended,
            bytes: SEGMENT_HEADER_LEN,
            live: 0,
            retire_after: None,
            removing: false,
        });
        self.active = true;
    }

    /// End of the last appended record (or segment header).
    pub fn appended_lsn(&self) -> Lsn {
        self.appended
    }

    /// Everything below is durable under the policy: for [`FsyncPolicy::Never`] written to the
    /// OS, otherwise written and `fdatasync`ed.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable
    }

    /// Whether the record appended at `lsn` is durable.
    pub fn is_durable(&self, lsn: Lsn) -> bool {
        self.durable > lsn
    }

    fn pending_bytes(&self) -> u64 {
        self.appended - self.durable
    }

    fn removable(&self) -> impl Iterator<Item = &Segment> + '_ {
        let durable = self.durable;
        let count = self.segments.len() - usize::from(self.active);
        self.segments
            .iter()
            .take(count)
            .filter(move |s| !s.removing && s.retire_after.is_some_and(|r| durable >= r))
    }

    /// What the flusher must do next: write what was appended since the last batch (and what
    /// a failed batch left), `fdatasync` when the policy says so, delete retired segments whose
    /// copies are durable. `None` if there is nothing to do, a batch is in flight, or a failed
    /// batch waits for its back-off ([`next_flush_deadline`](Self::next_flush_deadline)).
    pub fn take_batch(&mut self, now: Instant) -> Option<Batch> {
        if self.in_flight.is_some() || self.poisoned {
            return None;
        }
        if self.failing.as_ref().is_some_and(|f| now < f.retry_at) {
            return None;
        }
        let want_write = self.appended > self.written;
        let want_sync = self.appended > self.durable
            && match self.cfg.fsync {
                FsyncPolicy::Always => true,
                FsyncPolicy::EveryMs(ms) => self
                    .last_sync
                    .is_none_or(|t| now >= t + Duration::from_millis(u64::from(ms))),
                FsyncPolicy::Never => false,
            };
        let removes: Vec<Lsn> = self.removable().map(|s| s.base).collect();
        if !want_write && !want_sync && removes.is_empty() {
            return None;
        }
        if !self.tail.is_empty() {
            let chunk = self.tail.split().freeze();
            self.chunks.push_back((self.tail_start, chunk));
            self.tail_start = self.appended;
        }
        let mut writes = Vec::new();
        for (start, data) in &self.chunks {
            let end = start + data.len() as u64;
            let mut lsn = (*start).max(self.written);
            while lsn < end {
                let idx = self.segments.partition_point(|s| s.end <= lsn);
                let seg = &self.segments[idx];
                debug_assert!(seg.base <= lsn, "unwritten bytes outside a segment");
                let piece_end = end.min(seg.end);
                writes.push(Write {
                    segment: seg.base,
                    lsn,
                    data: data.slice((lsn - start) as usize..(piece_end - start) as usize),
                });
                lsn = piece_end;
            }
        }
        for seg in self.segments.iter_mut() {
            if removes.contains(&seg.base) {
                seg.removing = true;
            }
        }
        if want_sync {
            self.last_sync = Some(now);
        }
        self.seq += 1;
        self.in_flight = Some(InFlight {
            seq: self.seq,
            end: self.appended,
            sync: want_sync,
            taken_at: now,
        });
        Some(Batch {
            seq: self.seq,
            writes,
            sync: want_sync,
            removes,
            end: self.appended,
        })
    }

    /// Takes the flusher's report on the batch in flight: advances the written and durable
    /// positions, or keeps the data for a retry after a back-off.
    pub fn complete(&mut self, result: BatchResult) {
        let Some(flight) = self.in_flight.take() else {
            tracing::warn!("storage: complete() without a batch in flight");
            return;
        };
        if flight.seq != result.seq {
            tracing::warn!(
                expected = flight.seq,
                got = result.seq,
                "storage: complete() with another batch's result"
            );
            self.in_flight = Some(flight);
            return;
        }
        self.stats.batches += 1;
        if result.write_failed {
            self.written = self.written.max(result.written_to.min(flight.end));
        } else {
            self.written = self.written.max(flight.end);
        }
        if result.sync_failed {
            // The kernel may have dropped the dirty pages: write everything again.
            self.written = self.durable;
        } else if flight.sync && result.synced {
            self.durable = self.durable.max(flight.end);
            self.stats.syncs += 1;
        }
        if self.cfg.fsync == FsyncPolicy::Never {
            self.durable = self.written;
        }
        for seg in self.segments.iter_mut() {
            seg.removing = false;
        }
        for base in &result.removed {
            if let Some(idx) = self.segments.iter().position(|s| s.base == *base) {
                self.segments.remove(idx);
                self.stats.segments_removed += 1;
            }
        }
        while let Some((start, data)) = self.chunks.front() {
            if start + data.len() as u64 <= self.durable {
                self.chunks.pop_front();
            } else {
                break;
            }
        }
        match (&result.error, self.failing.as_mut()) {
            (Some((op, err)), Some(f)) => {
                self.stats.failed_batches += 1;
                f.backoff = (f.backoff * 2).min(RETRY_BACKOFF_MAX);
                f.retry_at = flight.taken_at + f.backoff;
                f.writes = result.write_failed;
                tracing::debug!(op, %err, "storage: batch failed again");
            }
            (Some((op, err)), None) => {
                self.stats.failed_batches += 1;
                tracing::error!(
                    op,
                    %err,
                    dir = %self.cfg.dir.display(),
                    "storage: log writes failing; data stays in memory and is retried, data appends are refused"
                );
                self.failing = Some(Failing {
                    backoff: RETRY_BACKOFF_MIN,
                    retry_at: flight.taken_at + RETRY_BACKOFF_MIN,
                    writes: result.write_failed,
                });
            }
            (None, Some(_)) => {
                tracing::info!(dir = %self.cfg.dir.display(), "storage: log writes succeed again");
                self.failing = None;
            }
            (None, None) => {}
        }
    }

    /// When [`take_batch`](Self::take_batch) has something to do without a new append: the
    /// retry time of a failed batch, or (for [`FsyncPolicy::EveryMs`]) the time of the next
    /// fsync while written data waits for one. `None` while a batch is in flight.
    pub fn next_flush_deadline(&self) -> Option<Instant> {
        if self.in_flight.is_some() || self.poisoned {
            return None;
        }
        if let Some(f) = &self.failing {
            return Some(f.retry_at);
        }
        match self.cfg.fsync {
            FsyncPolicy::EveryMs(ms) if self.appended > self.durable => self
                .last_sync
                .map(|t| t + Duration::from_millis(u64::from(ms))),
            _ => None,
        }
    }

    /// The record at `lsn`, whose body is `body_len` bytes long, is dead (superseded,
    /// acknowledged, deleted): it no longer counts as live in its segment. Unknown LSNs (in a
    /// deleted segment) are ignored.
    pub fn release(&mut self, lsn: Lsn, body_len: usize) {
        let idx = self.segments.partition_point(|s| s.end <= lsn);
        if let Some(seg) = self.segments.get_mut(idx) {
            if seg.base <= lsn {
                seg.live = seg.live.saturating_sub(record_size(body_len));
            }
        }
    }

    /// The oldest sealed segment, when it is worth evacuating: its live bytes are at most
    /// `compaction_live_ratio` of its record bytes, or the whole log's are, or the disk usage is
    /// at least `compaction_disk_ratio` of the quota and the segment holds dead bytes. `None`
    /// while a retired segment waits for its deletion (segments are deleted oldest first, one
    /// at a time) or when the copies would not fit in the quota plus the control reserve.
    ///
    /// To evacuate, the engine re-appends every live record of the segment (as
    /// [`Class::Control`]), then calls [`retire`](Self::retire).
    pub fn compaction_candidate(&self) -> Option<SegmentInfo> {
        if self.segments.iter().any(|s| s.retire_after.is_some()) {
            return None;
        }
        let sealed = self.segments.len() - usize::from(self.active);
        if sealed == 0 {
            return None;
        }
        let oldest = &self.segments[0];
        let ratio = self.cfg.compaction_live_ratio;
        let rec = oldest.record_bytes();
        let sparse = rec == 0 || (oldest.live as f64) <= ratio * rec as f64;
        let (live, total) = self
            .segments
            .iter()
            .fold((0u64, 0u64), |(l, t), s| (l + s.live, t + s.record_bytes()));
        let log_sparse = total > 0 && (live as f64) <= ratio * total as f64;
        let disk_high = self.disk_bytes() as f64
            >= self.cfg.compaction_disk_ratio * self.cfg.max_disk_bytes as f64;
        let worth = sparse || log_sparse || (disk_high && oldest.live < rec);
        let room = self
            .cfg
            .max_disk_bytes
            .saturating_add(self.cfg.control_reserve_bytes);
        let fits = self.disk_bytes() + oldest.live + SEGMENT_HEADER_LEN <= room;
        (worth && fits).then(|| oldest.info())
    }

    /// The engine has re-appended every live record of `segment`: delete the segment file once
    /// the copies (everything appended so far) are durable; the deletion is part of a later
    /// [`Batch`]. Returns false (and does nothing) if the segment is unknown or still takes
    /// appends.
    pub fn retire(&mut self, segment: SegmentId) -> bool {
        let count = self.segments.len() - usize::from(self.active);
        let appended = self.appended;
        match self
            .segments
            .iter_mut()
            .take(count)
            .find(|s| s.base == segment.0)
        {
            Some(seg) => {
                if seg.retire_after.is_none() {
                    seg.retire_after = Some(appended);
                }
                true
            }
            None => false,
        }
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> impl Iterator<Item = SegmentInfo> + '_ {
        self.segments.iter().map(Segment::info)
    }

    /// Bytes of all segments, pending data included: what the quota counts.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Positions and counters.
    pub fn stats(&self) -> LogStats {
        LogStats {
            appended_lsn: self.appended,
            written_lsn: self.written,
            durable_lsn: self.durable,
            pending_bytes: self.pending_bytes(),
            disk_bytes: self.disk_bytes(),
            live_bytes: self.segments.iter().map(|s| s.live).sum(),
            segments: self.segments.len(),
            failing: self.failing.is_some(),
            poisoned: self.poisoned,
            ..self.stats.clone()
        }
    }
}
