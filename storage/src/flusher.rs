//! [`Flusher`]: the I/O half of the per-core log.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;

use crate::format::segment_file_name;
use crate::log::{Batch, BatchResult, Write};
use crate::{FileSystem, FsyncPolicy, LogConfig, Lsn};

/// Performs the [`Batch`]es of a [`Log`](crate::Log) on a [`FileSystem`]; owns the open segment
/// files. It holds no log state: a failed batch is simply taken again later.
///
/// Order of work in a batch: the writes in LSN order (a write at offset 0 creates the segment
/// file, truncating any stale file of that name, and syncs the directory); when the batch syncs,
/// each segment is synced before the next one is written, so a later segment is never more
/// durable than an earlier one; then the deletions, each followed by a directory sync.
pub struct Flusher<F: FileSystem> {
    fs: F,
    dir: PathBuf,
    policy: FsyncPolicy,
    open: BTreeMap<Lsn, F::File>,
    unsynced: BTreeSet<Lsn>,
}

impl<F: FileSystem> Flusher<F> {
    /// A flusher for the log configured by `cfg` (its directory and fsync policy).
    pub fn new(fs: F, cfg: &LogConfig) -> Self {
        Flusher {
            fs,
            dir: cfg.dir.clone(),
            policy: cfg.fsync,
            open: BTreeMap::new(),
            unsynced: BTreeSet::new(),
        }
    }

    /// The file system.
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// Performs `batch`; never panics, reports what succeeded.
    pub async fn run_batch(&mut self, batch: Batch) -> BatchResult {
        let mut result = BatchResult {
            seq: batch.seq,
            written_to: 0,
            synced: false,
            write_failed: false,
            sync_failed: false,
            removed: Vec::new(),
            error: None,
        };
        for write in &batch.writes {
            if batch.sync {
                // Earlier segments become durable before a later one is touched.
                let earlier: Vec<Lsn> = self.unsynced.range(..write.segment).copied().collect();
                if let Err(e) = self.sync_segments(&earlier).await {
                    result.sync_failed = true;
                    result.write_failed = true;
                    result.error = Some(("fdatasync", e));
                    return result;
                }
            }
            if let Err((op, e)) = self.write(write).await {
                result.write_failed = true;
                result.error = Some((op, e));
                return result;
            }
            result.written_to = write.lsn + write.data.len() as u64;
        }
        if batch.sync {
            let all: Vec<Lsn> = self.unsynced.iter().copied().collect();
            if let Err(e) = self.sync_segments(&all).await {
                result.sync_failed = true;
                result.write_failed = true;
                result.error = Some(("fdatasync", e));
                return result;
            }
            result.synced = true;
        }
        // Close the files of sealed segments that need no further sync.
        if let Some(&last) = self.open.keys().next_back() {
            let sealed: Vec<Lsn> = self
                .open
                .range(..last)
                .map(|(&b, _)| b)
                .filter(|b| !self.unsynced.contains(b))
                .collect();
            for base in sealed {
                self.close(base).await;
            }
        }
        for &base in &batch.removes {
            self.close(base).await;
            self.unsynced.remove(&base);
            let path = self.dir.join(segment_file_name(base));
            match self.fs.remove(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    result.error.get_or_insert(("remove segment", e));
                    break;
                }
            }
            if let Err(e) = self.fs.sync_dir(&self.dir).await {
                result.error.get_or_insert(("fsync directory", e));
                break;
            }
            result.removed.push(base);
        }
        result
    }

    async fn sync_segments(&mut self, bases: &[Lsn]) -> io::Result<()> {
        for &base in bases {
            let Some(file) = self.open.get(&base) else {
                self.unsynced.remove(&base);
                continue;
            };
            if let Err(e) = self.fs.sync_data(file).await {
                // The file's state is unknown: reopen every file, the data is written again.
                let open: Vec<Lsn> = self.open.keys().copied().collect();
                for b in open {
                    self.close(b).await;
                }
                self.unsynced.clear();
                return Err(e);
            }
            self.unsynced.remove(&base);
        }
        Ok(())
    }

    async fn write(&mut self, w: &Write) -> Result<(), (&'static str, io::Error)> {
        let offset = w.lsn - w.segment;
        if !self.open.contains_key(&w.segment) {
            let path = self.dir.join(segment_file_name(w.segment));
            let file = if offset == 0 {
                let file = self
                    .fs
                    .create(&path)
                    .await
                    .map_err(|e| ("create segment", e))?;
                if let Err(e) = self.fs.sync_dir(&self.dir).await {
                    let _ = self.fs.close(file).await;
                    return Err(("fsync directory", e));
                }
                file
            } else {
                self.fs.open(&path).await.map_err(|e| ("open segment", e))?
            };
            self.open.insert(w.segment, file);
        }
        let file = &self.open[&w.segment];
        if self.policy != FsyncPolicy::Never {
            self.unsynced.insert(w.segment);
        }
        let mut done = 0;
        while done < w.data.len() {
            match self
                .fs
                .write_at(file, offset + done as u64, &w.data[done..])
                .await
            {
                Ok(0) => {
                    return Err((
                        "write segment",
                        io::Error::new(io::ErrorKind::WriteZero, "write returned 0"),
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(("write segment", e)),
            }
        }
        Ok(())
    }

    async fn close(&mut self, base: Lsn) {
        if let Some(file) = self.open.remove(&base) {
            if let Err(e) = self.fs.close(file).await {
                tracing::warn!(base, %e, "storage: closing a segment file failed");
            }
        }
    }
}
