//! The log on std::fs in a temporary directory: round trips, rotation, policies, torn tails,
//! retire, quota.

mod common;

use std::time::Instant;

use common::*;
use ringmq_storage::format::{segment_file_name, SEGMENT_HEADER_LEN};
use ringmq_storage::{
    record_size, recover, AppendError, Class, Flusher, FsyncPolicy, MemFs, SegmentId, StdFs,
};

fn append_many(log: &mut ringmq_storage::Log, out: &mut Vec<Rec>, n: u64, seed: u64) {
    for i in 0..n {
        let len = ((seed + i) * 37 % 300) as usize;
        let b = body(seed + i, len);
        let kind = (i % 7) as u8;
        let lsn = log.append(kind, &b, Class::Data).expect("append");
        out.push((lsn, kind, b));
    }
}

#[test]
fn stdfs_round_trip_across_segments_and_restarts() {
    let tmp = TempDir::new("roundtrip");
    let cfg = config(&tmp.0, FsyncPolicy::Always);
    let (mut log, report, recs) = recover_all(&StdFs, &cfg);
    assert_eq!((report.segments, recs.len(), log.appended_lsn()), (0, 0, 0));
    let mut flusher = Flusher::new(StdFs, &cfg);
    let mut expect = Vec::new();
    let now = Instant::now();
    for round in 0..5 {
        append_many(&mut log, &mut expect, 100, round * 1000);
        assert!(flush_all(&mut log, &mut flusher, now));
        assert_eq!(log.durable_lsn(), log.appended_lsn());
    }
    let appended = log.appended_lsn();
    drop((log, flusher));
    let (log, report, recs) = recover_all(&StdFs, &cfg);
    assert_eq!(recs, expect);
    assert!(report.segments > 5, "rotation: {report:?}");
    assert_eq!((report.truncated_bytes, report.corrupt_records), (0, 0));
    assert_eq!(log.appended_lsn(), appended);
    // Every segment but the last is at most segment_size_bytes; names sort like LSNs.
    let mut names: Vec<String> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names[..names.len() - 1] {
        assert!(std::fs::metadata(tmp.0.join(name)).unwrap().len() <= cfg.segment_size_bytes);
    }
    // Continue after recovery, restart again.
    let (mut log, _, _) = recover_all(&StdFs, &cfg);
    let mut flusher = Flusher::new(StdFs, &cfg);
    append_many(&mut log, &mut expect, 50, 99);
    assert!(flush_all(&mut log, &mut flusher, now));
    drop(flusher);
    let (_, _, recs) = recover_all(&StdFs, &cfg);
    assert_eq!(recs, expect);
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own() {
    let fs = MemFs::new();
    let cfg = config("/log", FsyncPolicy::Always);
    let (mut log, _, _) = recover_all(&fs, &cfg);
    let mut fl = Flusher::new(fs.clone(), &cfg);
    let small = log.append(1, b"small", Class::Data).unwrap();
    let big = body(1, 10_000);
    let big_lsn = log.append(2, &big, Class::Data).unwrap();
    let after = log.append(3, b"after", Class::Data).unwrap();
    assert!(flush_all(&mut log, &mut fl, Instant::now()));
    let segs: Vec<_> = log.segments().collect();
    assert_eq!(segs.len(), 3);
    assert_eq!(big_lsn, segs[1].base_lsn + SEGMENT_HEADER_LEN);
    assert_eq!(after, segs[2].base_lsn + SEGMENT_HEADER_LEN);
    let (_, _, recs) = recover_all(&fs, &cfg);
    assert_eq!(
        recs,
        vec![
            (small, 1, b"small".to_vec()),
            (big_lsn, 2, big),
            (after, 3, b"after".to_vec())
        ]
    );
}

#[test]
fn always_group_commit() {
    let fs = MemFs::new();
    let cfg = config("/log", FsyncPolicy::Always);
    let (mut log, _, _) = recover_all(&fs, &cfg);
    let mut fl = Flusher::new(fs.clone(), &cfg);
    let now = Instant::now();
    assert!(log.take_batch(now).is_none(), "nothing to do");
    let a = log.append(1, b"a", Class::Data).unwrap();
    let b = log.append(1, b"b", Class::Data).unwrap();
    assert!(!log.is_durable(a));
    let batch = log.take_batch(now).unwrap();
    assert!(batch.sync());
    assert!(
        log.take_batch(now).is_none(),
        "one batch in flight at a time"
    );
    // Appends while the batch is in flight go to the next one.
    let c = log.append(1, b"c", Class::Data).unwrap();
    let d = log.append(1, b"d", Class::Data).unwrap();
    let end_first = batch.end_lsn();
    let r = futures_lite::future::block_on(fl.run_batch(batch));
    log.complete(r);
    assert_eq!(log.durable_lsn(), end_first);
    assert!(log.is_durable(a) && log.is_durable(b) && !log.is_durable(c));
    assert_eq!(fs.syncs(), 1);
    let batch = log.take_batch(now).unwrap();
    assert_eq!(batch.write_bytes(), 2 * record_size(1));
    let r = futures_lite::future::block_on(fl.run_batch(batch));
    log.complete(r);
    assert!(log.is_durable(d));
    assert_eq!(fs.syncs(), 2, "c and d shared one fsync");
    assert_eq!(log.durable_lsn(), log.appended_lsn());
}

#[test]
fn every_ms_syncs_at_most_every_n_ms() {
    let fs = MemFs::new();
    let cfg = config("/log", FsyncPolicy::EveryMs(100));
    let (mut log, _, _) = recover_all(&fs, &cfg);
    let mut fl = Flusher::new(fs.clone(), &cfg);
    let t0 = Instant::now();
    log.append(1, b"first", Class::Data).unwrap();
    let b = log.take_batch(t0).unwrap();
    assert!(b.sync(), "first sync is due at once");
    log.complete(futures_lite::future::block_on(fl.run_batch(b)));
    assert_eq!(log.durable_lsn(), log.appended_lsn());

    let second = log.append(1, b"second", Class::Data).unwrap();
    let b = log.take_batch(later(t0, 10)).unwrap();
    assert!(!b.sync(), "written now, synced later");
    log.complete(futures_lite::future::block_on(fl.run_batch(b)));
    assert!(!log.is_durable(second));
    assert_eq!(log.stats().written_lsn, log.appended_lsn());
    assert_eq!(log.next_flush_deadline(), Some(later(t0, 100)));
    assert!(log.take_batch(later(t0, 99)).is_none());
    let b = log.take_batch(later(t0, 100)).unwrap();
    assert!(b.sync());
    assert_eq!(b.write_bytes(), 0);
    log.complete(futures_lite::future::block_on(fl.run_batch(b)));
    assert!(log.is_durable(second));
    assert_eq!(fs.syncs(), 2);
    assert_eq!(log.next_flush_deadline(), None);
}

#[test]
fn never_is_durable_once_written_and_never_syncs_data() {
    let fs = MemFs::new();
    let cfg = config("/log", FsyncPolicy::Never);
    let (mut log, _, _) = recover_all(&fs, &cfg);
    let mut fl = Flusher::new(fs.clone(), &cfg);
    let mut expect = Vec::new();
    append_many(&mut log, &mut expect, 200, 5);
    let b = log.take_batch(Instant::now()).unwrap();
    assert!(!b.sync());
    log.complete(futures_lite::future::block_on(fl.run_batch(b)));
    assert_eq!(log.durable_lsn(), log.appended_lsn());
    assert_eq!(fs.syncs(), 0);
    // kill -9 keeps it; a power loss keeps only what the OS happened to sync (here: nothing but
    // the names, which are synced on creation).
    fs.crash(ringmq_storage::CrashMode::KeepPageCache);
    let (_, _, recs) = recover_all(&fs, &cfg);
    assert_eq!(recs, expect);
}

#[test]
fn torn_tail_is_cut_then_appending_continues() {
    let tmp = TempDir::new("torn");
    let cfg = config(&tmp.0, FsyncPolicy::Always);
    let (mut log, _, _) = recover_all(&StdFs, &cfg);
    let mut fl = Flusher::new(StdFs, &cfg);
    let mut expect = Vec::new();
    append_many(&mut log, &mut expect, 10, 1);
    assert!(flush_all(&mut log, &mut fl, Instant::now()));
    drop((log, fl));
    // Tear the last record: cut 5 bytes off, and add garbage after it.
    let path = tmp.0.join(segment_file_name(0));
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - 5).unwrap();
    drop(file);
    let (mut log, report, recs) = recover_all(&StdFs, &cfg);
    let last = expect.pop().unwrap();
    assert_eq!(recs, expect);
    assert_eq!(report.truncated_bytes, record_size(last.2.len()) - 5);
    assert_eq!(
        log.appended_lsn(),
        last.0,
        "appending continues where the torn record began"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), last.0);
    let mut fl = Flusher::new(StdFs, &cfg);
    append_many(&mut log, &mut expect, 10, 2);
    assert!(flush_all(&mut log, &mut fl, Instant::now()));
    drop((log, fl));
    let (_, report, recs) = recover_all(&StdFs, &cfg);
    assert_eq!(recs, expect);
    assert_eq!(report.truncated_bytes, 0);
}

#[test]
fn odd_directory_contents_are_survived() {
    let tmp = TempDir::new("odd");
    let cfg = config(&tmp.0, FsyncPolicy::Always);
    let (mut log, _, _) = recover_all(&StdFs, &cfg);
    let mut fl = Flusher::new(StdFs, &cfg);
    let mut expect = Vec::new();
    append_many(&mut log, &mut expect, 60, 3);
    assert!(flush_all(&mut log, &mut fl, Instant::now()));
    let appended = log.appended_lsn();
    drop((log, fl));
    std::fs::write(tmp.0.join("README"), b"not a segment").unwrap();
    std::fs::write(tmp.0.join("0000000000000000000x.seg"), b"bad name").unwrap();
    std::fs::create_dir(tmp.0.join("00000000000000000016.seg")).unwrap(); // a directory
    std::fs::write(tmp.0.join(segment_file_name(appended + 4096)), [0u8; 100]).unwrap();
    std::fs::write(tmp.0.join(segment_file_name(appended + 8192)), [1u8; 7]).unwrap();
    let (mut log, report, recs) = recover_all(&StdFs, &cfg);
    assert_eq!(recs, expect);
    assert_eq!(report.ignored_files, 2);
    assert_eq!(report.bad_segments, 2, "{report:?}");
    assert_eq!(
        report.truncated_bytes, 7,
        "the short file after the last segment is removed"
    );
    assert!(!tmp.0.join(segment_file_name(appended + 8192)).exists());
    // Appending starts past every file named like a segment.
    assert_eq!(log.appended_lsn(), appended + 4096 + 112);
    let mut fl = Flusher::new(StdFs, &cfg);
    append_many(&mut log, &mut expect, 5, 4);
    assert!(flush_all(&mut log, &mut fl, Instant::now()));
    drop((log, fl));
    let (_, report, recs) = recover_all(&StdFs, &cfg);
    assert_eq!(recs, expect);
    assert_eq!(report.bad_segments, 2);
}

#[test]
fn retired_segment_is_deleted_only_after_its_copies_are_durable() {
    let fs = MemFs::new();
    let cfg = config("/log", FsyncPolicy::Always);
    let (mut log, _, _) = recover_all(&fs, &cfg);
    let mut fl = Flusher::new(fs.clone(), &cfg);
    let now = Instant::now();
    let mut recs = Vec::new();
    append_many(&mut log, &mut recs, 80, 7);
    assert!(flush_all(&mut log, &mut fl, now));
    let oldest = log.segments().next().unwrap();
    assert!(log.segments().count() >= 3);
    assert!(
        !log.retire(SegmentId(log.segments().last().unwrap().base_lsn)),
        "active segment"
    );
    assert!(!log.retire(SegmentId(12345)), "unknown segment");
    assert_eq!(log.compaction_candidate(), None, "everything live");
    // All but one record of the oldest segment die.
    let in_oldest: Vec<&Rec> = recs.iter().filter(|r| oldest.contains(r.0)).collect();
    assert!(in_oldest.len() >= 2);
    for r in &in_oldest[1..] {
        log.release(r.0, r.2.len());
    }
    let cand = log.compaction_candidate().expect("sparse oldest segment");
    assert_eq!(cand.id, oldest.id);
    assert_eq!(cand.live_bytes, record_size(in_oldest[0].2.len()));
    // Evacuate: copy the live record, retire.
    let survivor = in_oldest[0].clone();
    let copy = log.append(survivor.1, &survivor.2, Class::Control).unwrap();
    assert!(log.retire(cand.id));
    assert_eq!(log.compaction_candidate(), None, "one evacuation at a time");
    let path = std::path::Path::new("/log").join(segment_file_name(cand.base_lsn));
    // The first batch writes and syncs the copy; the file stays.
    let b = log.take_batch(now).unwrap();
    assert_eq!(b.removes().count(), 0);
    log.complete(futures_lite::future::block_on(fl.run_batch(b)));
    assert!(log.is_durable(copy));
    assert!(fs.read(&path).is_some());
    // The next one deletes it.
    let b = log.take_batch(now).unwrap();
    assert_eq!(b.removes().collect::<Vec<_>>(), vec![cand.id]);
    log.complete(futures_lite::future::block_on(fl.run_batch(b)));
    assert!(fs.read(&path).is_none());
    assert_eq!(log.stats().segments_removed, 1);
    assert!(log.take_batch(now).is_none());
    // A power loss now still has the copy and not the old segment.
    fs.crash(ringmq_storage::CrashMode::DropUnsynced);
    let (_, _, got) = recover_all(&fs, &cfg);
    let expect: Vec<Rec> = recs
        .iter()
        .filter(|r| !oldest.contains(r.0))
        .cloned()
        .chain([(copy, survivor.1, survivor.2.clone())])
        .collect();
    assert_eq!(got, expect);
}

#[test]
fn retire_waits_for_a_failing_copy() {
    let fs = MemFs::new();
    let cfg = config("/log", FsyncPolicy::Always);
    let (mut log, _, _) = recover_all(&fs, &cfg);
    let mut fl = Flusher::new(fs.clone(), &cfg);
    let now = Instant::now();
    let mut recs = Vec::new();
    append_many(&mut log, &mut recs, 40, 8);
    assert!(flush_all(&mut log, &mut fl, now));
    let oldest = log.segments().next().unwrap();
    log.append(9, b"copy", Class::Control).unwrap();
    assert!(log.retire(oldest.id));
    fs.fail_syncs(1);
    assert_eq!(flush_once(&mut log, &mut fl, now), Some(false));
    assert!(log.take_batch(later(now, 5)).is_none(), "back-off");
    let b = log.take_batch(later(now, 1000)).unwrap();
    assert_eq!(b.removes().count(), 0, "copy not durable yet");
    log.complete(futures_lite::future::block_on(fl.run_batch(b)));
    let b = log.take_batch(later(now, 1000)).unwrap();
    assert_eq!(b.removes().count(), 1);
    log.complete(futures_lite::future::block_on(fl.run_batch(b)));
    assert_eq!(log.segments().next().unwrap().base_lsn, oldest.end_lsn);
}

#[test]
fn compaction_candidate_when_the_disk_is_high() {
    let fs = MemFs::new();
    let mut cfg = config("/log", FsyncPolicy::Never);
    cfg.max_disk_bytes = 20_000;
    cfg.compaction_disk_ratio = 0.5;
    let (mut log, _, _) = recover_all(&fs, &cfg);
    let mut recs = Vec::new();
    while log.disk_bytes() < 10_000 {
        let seed = recs.len() as u64;
        append_many(&mut log, &mut recs, 1, seed);
    }
    assert_eq!(
        log.compaction_candidate(),
        None,
        "all live: copying gains nothing"
    );
    let first = &recs[0];
    log.release(first.0, first.2.len());
    let cand = log
        .compaction_candidate()
        .expect("disk high and a dead record");
    assert!(cand.contains(first.0));
}

#[test]
fn quota_data_vs_control() {
    let fs = MemFs::new();
    let mut cfg = config("/log", FsyncPolicy::Always);
    cfg.max_disk_bytes = 10_000;
    cfg.control_reserve_bytes = 2_000;
    let (mut log, _, _) = recover_all(&fs, &cfg);
    let b = body(1, 100);
    let mut n = 0;
    let err = loop {
        match log.append(1, &b, Class::Data) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, AppendError::QuotaExceeded);
    assert!(log.disk_bytes() <= cfg.max_disk_bytes);
    assert!(n > 50);
    let mut control = 0;
    let err = loop {
        match log.append(2, &b, Class::Control) {
            Ok(_) => control += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, AppendError::QuotaExceeded);
    assert!(
        control >= 10,
        "the reserve holds control records: {control}"
    );
    assert!(log.disk_bytes() <= cfg.max_disk_bytes + cfg.control_reserve_bytes);
    assert_eq!(log.stats().quota_rejections, 2);
    // Deleting a segment frees quota.
    let mut fl = Flusher::new(fs.clone(), &cfg);
    assert!(flush_all(&mut log, &mut fl, Instant::now()));
    let oldest = log.segments().next().unwrap();
    assert!(log.retire(oldest.id));
    assert!(flush_all(&mut log, &mut fl, Instant::now()));
    log.append(1, &b, Class::Data).expect("room again");
}

#[test]
fn backlog_and_too_large() {
    let fs = MemFs::new();
    let mut cfg = config("/log", FsyncPolicy::Always);
    cfg.max_pending_bytes = 4096;
    cfg.control_reserve_bytes = 1024;
    let (mut log, _, _) = recover_all(&fs, &cfg);
    assert_eq!(
        log.append(1, &[0; 5000], Class::Data),
        Err(AppendError::TooLarge)
    );
    assert_eq!(
        log.append(1, &[0; 5000], Class::Control),
        Err(AppendError::TooLarge)
    );
    let err = loop {
        if let Err(e) = log.append(1, &[7; 100], Class::Data) {
            break e;
        }
    };
    assert_eq!(err, AppendError::Backlog);
    assert!(log.stats().pending_bytes <= 4096);
    log.append(2, &[7; 100], Class::Control)
        .expect("control has a reserve");
    let mut fl = Flusher::new(fs, &cfg);
    assert!(flush_all(&mut log, &mut fl, Instant::now()));
    assert_eq!(log.stats().pending_bytes, 0);
    log.append(1, &[7; 100], Class::Data).expect("drained");
}

#[test]
fn recover_with_std_fs_entry_point() {
    let tmp = TempDir::new("entry");
    let cfg = config(tmp.0.join("core-0"), FsyncPolicy::Always);
    let (mut log, _) = recover(&cfg, |_, _, _| panic!("empty")).unwrap();
    assert!(cfg.dir.is_dir(), "directory created");
    let mut fl = Flusher::new(StdFs, &cfg);
    let lsn = log.append(42, b"hello", Class::Data).unwrap();
    assert!(flush_all(&mut log, &mut fl, Instant::now()));
    let mut seen = Vec::new();
    recover(&cfg, |l, k, b| seen.push((l, k, b.to_vec()))).unwrap();
    assert_eq!(seen, vec![(lsn, 42, b"hello".to_vec())]);
}
