//! Recovery: read every segment of a core's directory, hand out the valid records in LSN order,
//! cut the torn tail of the last segment, and build the [`Log`] that continues after it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::aligned::AlignedBuf;
use crate::format::{self, SEGMENT_HEADER_LEN};
use crate::log::{Log, Segment};
use crate::{FileSystem, LogConfig, Lsn, StdFs, StorageError};

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments with a valid header that were read.
    pub segments: usize,
    /// Records handed to the visitor.
    pub records: u64,
    /// Framed bytes of those records.
    pub bytes: u64,
    /// Bytes cut from the end of the last segment (a torn or garbage tail), plus segment files
    /// after it too short to hold a header (removed).
    pub truncated_bytes: u64,
    /// Segments other than the last whose records stopped at a bad record (the rest of that
    /// segment is skipped).
    pub corrupt_records: u64,
    /// Files named like segments whose header is bad (skipped, left in place).
    pub bad_segments: usize,
    /// Other entries of the directory (ignored).
    pub ignored_files: usize,
    /// Where appending continues.
    pub next_lsn: Lsn,
}

/// Recovers the log of `cfg.dir` with [`StdFs`] (creating the directory if missing): calls
/// `visit(lsn, kind, body)` for every valid record in LSN order, with `body` 16-byte aligned,
/// and returns the [`Log`] that continues after the last valid record.
///
/// Never hands out a record whose CRC fails and never panics on file contents. A bad record in
/// the last segment ends the log: the file is truncated there. A bad record in an earlier
/// segment ends that segment (counted in [`RecoveryReport::corrupt_records`], logged); reading
/// goes on with the next. Files with a bad segment header are skipped and reported. Errors are
/// I/O errors on the directory or on the truncation of the tail.
pub fn recover(
    cfg: &LogConfig,
    visit: impl FnMut(Lsn, u8, &[u8]),
) -> Result<(Log, RecoveryReport), StorageError> {
    recover_on(&StdFs, cfg, visit)
}

/// [`recover`] on another file system whose futures complete without an executor
/// ([`StdFs`], [`MemFs`](crate::MemFs)).
pub fn recover_on<F: FileSystem>(
    fs: &F,
    cfg: &LogConfig,
    visit: impl FnMut(Lsn, u8, &[u8]),
) -> Result<(Log, RecoveryReport), StorageError> {
    futures_lite::future::block_on(recover_async(fs, cfg, visit))
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

struct Found<File> {
    base: Lsn,
    path: PathBuf,
    file: File,
    len: u64,
}

async fn read_all<F: FileSystem>(fs: &F, file: &F::File, len: u64) -> std::io::Result<AlignedBuf> {
    let len = usize::try_from(len)
        .map_err(|_| std::io::Error::other("segment larger than the address space"))?;
    let mut buf = AlignedBuf::zeroed(len);
    let mut done = 0;
    while done < len {
        match fs
            .read_at(file, done as u64, &mut buf.as_mut_slice()[done..])
            .await
        {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

async fn recover_async<F: FileSystem>(
    fs: &F,
    cfg: &LogConfig,
    mut visit: impl FnMut(Lsn, u8, &[u8]),
) -> Result<(Log, RecoveryReport), StorageError> {
    let dir = &cfg.dir;
    let mut report = RecoveryReport::default();
    fs.create_dir_all(dir)
        .await
        .map_err(io_err("create directory", dir))?;
    let mut names: Vec<(Lsn, String)> = Vec::new();
    for name in fs.list(dir).await.map_err(io_err("list directory", dir))? {
        match format::parse_segment_file_name(&name) {
            Some(base) => names.push((base, name)),
            None => {
                tracing::debug!(name, "storage: not a segment file, ignored");
                report.ignored_files += 1;
            }
        }
    }
    names.sort();

    // Headers first: the next valid segment's base bounds the records of the one before.
    let mut valid: Vec<Found<F::File>> = Vec::new();
    // Files named like segments that are not valid: (base, len, path).
    let mut others: Vec<(Lsn, u64, PathBuf)> = Vec::new();
    for (base, name) in names {
        let path = dir.join(&name);
        let file = match fs.open(&path).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(path = %path.display(), %e, "storage: cannot open segment file, skipped");
                report.bad_segments += 1;
                continue;
            }
        };
        let len = match fs.len(&file).await {
            Ok(len) => len,
            Err(e) => {
                tracing::error!(path = %path.display(), %e, "storage: cannot stat segment file, skipped");
                report.bad_segments += 1;
                let _ = fs.close(file).await;
                continue;
            }
        };
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        let mut got = 0;
        while got < header.len() {
            match fs.read_at(&file, got as u64, &mut header[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        if got == header.len() && format::decode_segment_header(&header) == Some(base) {
            valid.push(Found {
                base,
                path,
                file,
                len,
            });
        } else {
            let _ = fs.close(file).await;
            others.push((base, len, path));
        }
    }
    let last_valid_base = valid.last().map(|f| f.base);
    let mut highest_end: Lsn = 0;
    for (base, len, path) in others {
        if len < SEGMENT_HEADER_LEN && last_valid_base.is_none_or(|b| base > b) {
            // It holds no record: the torn creation of a new segment. Remove it.
            tracing::warn!(path = %path.display(), len, "storage: removing a segment file shorter than its header");
            fs.remove(&path)
                .await
                .map_err(io_err("remove torn segment", &path))?;
            fs.sync_dir(dir)
                .await
                .map_err(io_err("fsync directory", dir))?;
            report.truncated_bytes += len;
        } else {
            tracing::error!(path = %path.display(), len, "storage: bad segment header, file skipped");
            report.bad_segments += 1;
            highest_end = highest_end.max(base.saturating_add(len));
        }
    }

    let mut segments = VecDeque::new();
    let count = valid.len();
    let mut last_end: Lsn = 0;
    let mut valid = valid.into_iter().peekable();
    let mut index = 0;
    while let Some(found) = valid.next() {
        index += 1;
        let is_last = index == count;
        let limit = valid
            .peek()
            .map(|n| n.base - found.base)
            .unwrap_or(u64::MAX);
        let buf = match read_all(fs, &found.file, found.len).await {
            Ok(buf) => buf,
            Err(e) if !is_last => {
                tracing::error!(path = %found.path.display(), %e, "storage: cannot read segment, skipped");
                report.bad_segments += 1;
                let _ = fs.close(found.file).await;
                continue;
            }
            Err(e) => {
                return Err(StorageError::Io {
                    op: "read last segment",
                    path: found.path,
                    source: e,
                })
            }
        };
        let data = buf.as_slice();
        let readable = (data.len() as u64).min(limit) as usize;
        let mut pos = SEGMENT_HEADER_LEN as usize;
        let mut live = 0u64;
        let mut bad = None;
        while pos < readable {
            let lsn = found.base + pos as u64;
            match format::decode_record(&data[pos..readable], lsn) {
                Ok(rec) => {
                    visit(lsn, rec.kind, rec.body);
                    report.records += 1;
                    report.bytes += rec.size;
                    live += rec.size;
                    pos += rec.size as usize;
                }
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        let clean_end = bad.is_none() && pos == data.len();
        let end = found.base + pos as u64;
        let mut bytes = data.len() as u64;
        if !clean_end {
            if is_last {
                let cut = data.len() as u64 - pos as u64;
                tracing::warn!(
                    path = %found.path.display(),
                    at = pos,
                    cut,
                    reason = ?bad,
                    "storage: torn tail of the last segment, truncated"
                );
                fs.truncate(&found.file, pos as u64)
                    .await
                    .map_err(io_err("truncate torn tail", &found.path))?;
                fs.sync_data(&found.file)
                    .await
                    .map_err(io_err("fsync truncated segment", &found.path))?;
                report.truncated_bytes += cut;
                bytes = pos as u64;
            } else {
                tracing::error!(
                    path = %found.path.display(),
                    at = pos,
                    reason = ?bad,
                    "storage: bad record inside a sealed segment; the rest of it is skipped"
                );
                report.corrupt_records += 1;
            }
        }
        let _ = fs.close(found.file).await;
        report.segments += 1;
        last_end = end;
        highest_end = highest_end.max(found.base.saturating_add(bytes));
        segments.push_back(Segment {
            base: found.base,
            end,
            bytes,
            live,
            retire_after: None,
            removing: false,
        });
    }
    // Continue in the last segment if nothing named like a segment lies beyond it; otherwise
    // start a new segment past everything, leaving a gap in the LSNs.
    let highest_end = highest_end.div_ceil(format::ALIGN) * format::ALIGN;
    let (active, next) = if !segments.is_empty() && highest_end <= last_end {
        (true, last_end)
    } else {
        (false, highest_end.max(last_end))
    };
    report.next_lsn = next;
    tracing::info!(
        dir = %dir.display(),
        segments = report.segments,
        records = report.records,
        truncated = report.truncated_bytes,
        corrupt = report.corrupt_records,
        bad_segments = report.bad_segments,
        next,
        "storage: log recovered"
    );
    Ok((Log::new(cfg.clone(), segments, active, next), report))
}
