//! Helpers shared by the storage tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use ringmq_storage::{
    recover_on, FileSystem, Flusher, FsyncPolicy, Log, LogConfig, Lsn, RecoveryReport,
};

/// A record as appended or recovered.
pub type Rec = (Lsn, u8, Vec<u8>);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringmq-storage-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn config(dir: impl Into<PathBuf>, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        segment_size_bytes: 4096,
        max_disk_bytes: 64 << 20,
        max_pending_bytes: 16 << 20,
        fsync,
        ..LogConfig::new(dir)
    }
}

/// Recovers and collects every record, checking that each body is 16-byte aligned.
pub fn recover_all<F: FileSystem>(fs: &F, cfg: &LogConfig) -> (Log, RecoveryReport, Vec<Rec>) {
    let mut recs = Vec::new();
    let (log, report) = recover_on(fs, cfg, |lsn, kind, body| {
        assert_eq!(
            body.as_ptr() as usize % 16,
            0,
            "body of {lsn} not 16-aligned"
        );
        recs.push((lsn, kind, body.to_vec()));
    })
    .expect("recovery");
    assert_eq!(report.records as usize, recs.len());
    (log, report, recs)
}

/// One take_batch / run_batch / complete round; `Some(ok)` if there was a batch.
pub fn flush_once<F: FileSystem>(log: &mut Log, fl: &mut Flusher<F>, now: Instant) -> Option<bool> {
    let batch = log.take_batch(now)?;
    let result = block_on(fl.run_batch(batch));
    let ok = result.is_ok();
    log.complete(result);
    Some(ok)
}

/// Flushes until there is nothing left to do at `now` (at most 100 rounds); false if a batch
/// failed.
pub fn flush_all<F: FileSystem>(log: &mut Log, fl: &mut Flusher<F>, now: Instant) -> bool {
    for _ in 0..100 {
        match flush_once(log, fl, now) {
            None => return true,
            Some(false) => return false,
            Some(true) => {}
        }
    }
    panic!("flush did not settle");
}

/// A body of `len` bytes derived from `seed`.
pub fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn later(now: Instant, ms: u64) -> Instant {
    now + Duration::from_millis(ms)
}
