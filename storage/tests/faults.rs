//! The log on MemFs with injected faults: torn writes at every byte, short writes, bit flips,
//! ENOSPC, failing writes and fsyncs, power loss.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::*;
use ringmq_storage::format::SEGMENT_HEADER_LEN;
use ringmq_storage::{AppendError, Class, CrashMode, Flusher, FsyncPolicy, LogConfig, MemFs};

fn small_config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        segment_size_bytes: 256,
        ..config("/data/core-0", fsync)
    }
}

/// Appends `recs` records in batches of 3, flushing after each; stops at the first failed
/// batch. Returns the records appended and the durable LSN at the end.
fn workload(fs: &MemFs, cfg: &LogConfig, base: &[Rec], n: u64) -> (Vec<Rec>, ringmq_storage::Lsn) {
    let (mut log, _, recs) = recover_all(fs, cfg);
    assert_eq!(recs, base);
    let mut fl = Flusher::new(fs.clone(), cfg);
    let mut all = recs;
    let now = Instant::now();
    for i in 0..n {
        let b = body(i, (i as usize * 13) % 70);
        match log.append((i % 5) as u8, &b, Class::Data) {
            Ok(lsn) => all.push((lsn, (i % 5) as u8, b)),
            Err(_) => break,
        }
        if i % 3 == 2 && !flush_all(&mut log, &mut fl, now) {
            break;
        }
    }
    flush_all(&mut log, &mut fl, now);
    (all, log.durable_lsn())
}

fn assert_prefix(got: &[Rec], all: &[Rec], durable: u64, ctx: &str) {
    assert!(got.len() <= all.len(), "{ctx}: more records than appended");
    assert_eq!(
        got,
        &all[..got.len()],
        "{ctx}: not a prefix of what was appended"
    );
    let durable_count = all.iter().filter(|r| r.0 < durable).count();
    assert!(
        got.len() >= durable_count,
        "{ctx}: lost durable records ({} < {durable_count})",
        got.len()
    );
}

#[test]
fn torn_write_at_every_byte() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Never,
        FsyncPolicy::EveryMs(0),
    ] {
        let cfg = small_config(policy);
        let probe = MemFs::new();
        let (full, _) = workload(&probe, &cfg, &[], 12);
        let total = probe.bytes_written();
        assert!(total > 3 * 256, "spans several segments");
        for cut in 0..=total {
            for mode in [CrashMode::KeepPageCache, CrashMode::DropUnsynced] {
                let fs = MemFs::new();
                fs.tear_after(Some(cut));
                let (all, durable) = workload(&fs, &cfg, &[], 12);
                assert_eq!(fs.is_stopped(), cut < total, "cut {cut}");
                assert_eq!(all[..], full[..all.len()]);
                fs.crash(mode);
                let ctx = format!("{policy:?} cut {cut} {mode:?}");
                // Never: durable means written to the OS, which a power loss does not keep.
                let power_safe = !(policy == FsyncPolicy::Never && mode == CrashMode::DropUnsynced);
                let (_, _, got) = recover_all(&fs, &cfg);
                assert_prefix(&got, &all, if power_safe { durable } else { 0 }, &ctx);
                if mode == CrashMode::KeepPageCache {
                    // Writes are LSN-contiguous from 0 here: exactly the records whose bytes
                    // all landed are there.
                    let landed = all
                        .iter()
                        .filter(|r| r.0 + ringmq_storage::record_size(r.2.len()) <= cut)
                        .count();
                    assert_eq!(got.len(), landed, "{ctx}");
                }
                // Appending continues after the torn tail, and survives another recovery.
                let (after, durable) = workload(&fs, &cfg, &got, 4);
                fs.crash(mode);
                let (_, report, again) = recover_all(&fs, &cfg);
                if power_safe {
                    assert_eq!(
                        again.len(),
                        after.len(),
                        "{ctx}: second recovery {report:?}"
                    );
                }
                assert_prefix(&again, &after, if power_safe { durable } else { 0 }, &ctx);
            }
        }
    }
}

#[test]
fn short_writes_are_completed() {
    let cfg = small_config(FsyncPolicy::Always);
    let fs = MemFs::new();
    fs.set_max_write(Some(7));
    let (all, durable) = workload(&fs, &cfg, &[], 40);
    assert_eq!(all.len(), 40);
    fs.crash(CrashMode::DropUnsynced);
    let (log, _, got) = recover_all(&fs, &cfg);
    assert_eq!(got, all);
    assert_eq!(log.appended_lsn(), durable);
}

fn snapshot(fs: &MemFs) -> Vec<(PathBuf, Vec<u8>)> {
    fs.paths()
        .into_iter()
        .map(|p| {
            let d = fs.read(&p).unwrap();
            (p, d)
        })
        .collect()
}

fn restore(files: &[(PathBuf, Vec<u8>)]) -> MemFs {
    let fs = MemFs::new();
    for (p, d) in files {
        fs.put(p, d);
    }
    fs
}

#[test]
fn bit_flips_never_yield_a_bad_record_and_keep_everything_before_the_damage() {
    let cfg = small_config(FsyncPolicy::Always);
    let fs = MemFs::new();
    let (all, _) = workload(&fs, &cfg, &[], 30);
    let files = snapshot(&fs);
    assert!(files.len() >= 4);
    let bases: Vec<u64> = files
        .iter()
        .map(|(p, _)| {
            ringmq_storage::format::parse_segment_file_name(
                &p.file_name().unwrap().to_string_lossy(),
            )
            .unwrap()
        })
        .collect();
    for (i, (path, data)) in files.iter().enumerate() {
        for offset in 0..data.len() as u64 {
            let bit = (offset % 8) as u8;
            let fs = restore(&files);
            assert!(fs.flip_bit(path, offset, bit));
            let (_, report, got) = recover_all(&fs, &cfg);
            let lsn = bases[i] + offset;
            let ctx = format!("{} offset {offset}", path.display());
            // Every record handed out is one that was written, byte-exact, in order.
            let mut it = all.iter();
            for r in &got {
                assert!(it.any(|a| a == r), "{ctx}: record {} not as written", r.0);
            }
            // Everything not in the damaged segment, and everything before the damaged record
            // in it, is recovered.
            let seg_end = bases.get(i + 1).copied().unwrap_or(u64::MAX);
            for a in &all {
                let damaged_seg = a.0 >= bases[i] && a.0 < seg_end;
                let before = a.0 + ringmq_storage::record_size(a.2.len()) <= lsn;
                if (!damaged_seg || before) && offset >= SEGMENT_HEADER_LEN {
                    assert!(got.contains(a), "{ctx}: lost record {}", a.0);
                }
                if !damaged_seg && offset < SEGMENT_HEADER_LEN && i + 1 < files.len() {
                    // A bad header skips only that segment.
                    assert!(
                        got.contains(a),
                        "{ctx}: lost record {} of another segment",
                        a.0
                    );
                }
            }
            if offset < SEGMENT_HEADER_LEN {
                assert_eq!(report.bad_segments, 1, "{ctx}");
            } else if got.len() < all.len() {
                assert!(report.corrupt_records + (report.truncated_bytes > 0) as u64 >= 1);
            }
        }
    }
}

#[test]
fn enospc_keeps_the_data_and_retries_it() {
    let cfg = small_config(FsyncPolicy::Always);
    let fs = MemFs::new();
    let (mut log, _, _) = recover_all(&fs, &cfg);
    let mut fl = Flusher::new(fs.clone(), &cfg);
    let now = Instant::now();
    let mut all = Vec::new();
    for i in 0..10u64 {
        let b = body(i, 50);
        all.push((log.append(1, &b, Class::Data).unwrap(), 1, b));
    }
    assert!(flush_all(&mut log, &mut fl, now));
    fs.set_space_limit(Some(
        fs.read(Path::new("/data/core-0/00000000000000000000.seg"))
            .map_or(0, |d| d.len() as u64)
            + 2 * 256
            + 100,
    ));
    for i in 10..40u64 {
        let b = body(i, 50);
        all.push((log.append(1, &b, Class::Data).unwrap(), 1, b));
    }
    let durable_before = log.durable_lsn();
    assert_eq!(flush_once(&mut log, &mut fl, now), Some(false));
    assert_eq!(
        log.durable_lsn(),
        durable_before,
        "nothing durable past the failure"
    );
    assert!(log.stats().failing);
    assert_eq!(log.append(1, b"x", Class::Data), Err(AppendError::Failed));
    let ctl = log
        .append(2, b"ack", Class::Control)
        .expect("control records still accepted");
    all.push((ctl, 2, b"ack".to_vec()));
    assert!(log.take_batch(now).is_none(), "back-off before the retry");
    let retry = log.next_flush_deadline().unwrap();
    assert!(retry > now);
    // Still full: the retry fails, the back-off grows.
    assert_eq!(flush_once(&mut log, &mut fl, retry), Some(false));
    let retry2 = log.next_flush_deadline().unwrap();
    assert!(retry2 - retry > retry - now);
    // Space comes back.
    fs.set_space_limit(None);
    assert!(flush_all(&mut log, &mut fl, retry2));
    assert!(!log.stats().failing);
    assert_eq!(log.durable_lsn(), log.appended_lsn());
    let b = body(99, 10);
    all.push((
        log.append(1, &b, Class::Data).expect("data accepted again"),
        1,
        b,
    ));
    assert!(flush_all(&mut log, &mut fl, retry2));
    fs.crash(CrashMode::DropUnsynced);
    let (_, report, got) = recover_all(&fs, &cfg);
    assert_eq!(got, all, "{report:?}");
    assert_eq!(report.truncated_bytes, 0);
}

#[test]
fn failed_fsync_rewrites_the_data() {
    for policy in [FsyncPolicy::Always, FsyncPolicy::EveryMs(10)] {
        let cfg = small_config(policy);
        let fs = MemFs::new();
        let (mut log, _, _) = recover_all(&fs, &cfg);
        let mut fl = Flusher::new(fs.clone(), &cfg);
        let now = Instant::now();
        let mut all = Vec::new();
        for i in 0..20u64 {
            let b = body(i, 30);
            all.push((log.append(1, &b, Class::Data).unwrap(), 1, b));
        }
        fs.fail_syncs(1);
        assert_eq!(
            flush_once(&mut log, &mut fl, now),
            Some(false),
            "{policy:?}"
        );
        assert_eq!(log.durable_lsn(), 0);
        assert_eq!(log.append(1, b"x", Class::Data), Err(AppendError::Failed));
        let t = later(now, 5_000);
        assert!(flush_all(&mut log, &mut fl, t));
        assert_eq!(log.durable_lsn(), log.appended_lsn());
        // The failed fsync dropped the dirty pages: only the rewrite put them on disk.
        fs.crash(CrashMode::DropUnsynced);
        let (_, _, got) = recover_all(&fs, &cfg);
        assert_eq!(got, all, "{policy:?}");
    }
}

#[test]
fn failed_write_is_retried() {
    let cfg = small_config(FsyncPolicy::Always);
    let fs = MemFs::new();
    let (mut log, _, _) = recover_all(&fs, &cfg);
    let mut fl = Flusher::new(fs.clone(), &cfg);
    let now = Instant::now();
    let mut all = Vec::new();
    for i in 0..20u64 {
        let b = body(i, 30);
        all.push((log.append(1, &b, Class::Data).unwrap(), 1, b));
    }
    fs.fail_writes(2);
    assert_eq!(flush_once(&mut log, &mut fl, now), Some(false));
    assert_eq!(
        flush_once(&mut log, &mut fl, later(now, 1_000)),
        Some(false)
    );
    assert!(flush_all(&mut log, &mut fl, later(now, 10_000)));
    assert_eq!(log.stats().failed_batches, 2);
    fs.crash(CrashMode::DropUnsynced);
    let (_, _, got) = recover_all(&fs, &cfg);
    assert_eq!(got, all);
}

#[test]
fn power_loss_under_every_ms_keeps_what_was_synced() {
    let cfg = small_config(FsyncPolicy::EveryMs(1000));
    let fs = MemFs::new();
    let (mut log, _, _) = recover_all(&fs, &cfg);
    let mut fl = Flusher::new(fs.clone(), &cfg);
    let t0 = Instant::now();
    let mut all = Vec::new();
    for i in 0..5u64 {
        let b = body(i, 30);
        all.push((log.append(1, &b, Class::Data).unwrap(), 1, b));
    }
    assert!(flush_all(&mut log, &mut fl, t0));
    let durable = log.durable_lsn();
    assert_eq!(durable, log.appended_lsn());
    for i in 5..40u64 {
        let b = body(i, 30);
        all.push((log.append(1, &b, Class::Data).unwrap(), 1, b));
        assert!(flush_all(&mut log, &mut fl, later(t0, i)));
    }
    assert_eq!(log.durable_lsn(), durable, "no sync within the interval");
    assert_eq!(log.stats().written_lsn, log.appended_lsn());
    fs.crash(CrashMode::DropUnsynced);
    let (_, _, got) = recover_all(&fs, &cfg);
    assert_prefix(&got, &all, durable, "every-ms power loss");
    assert_eq!(got.len(), 5, "the unsynced writes are gone");
}
