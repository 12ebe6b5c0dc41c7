//! The flusher on glommio's io_uring buffered files, inside a real executor: a few thousand
//! records written across segments, recovered with std::fs, then more written after the
//! recovery (reopening the last segment) and recovered again.

mod common;

use std::time::Instant;

use common::*;
use glommio::{LocalExecutorBuilder, Placement};
use ringmq_storage::{recover, Class, Flusher, FsyncPolicy, GlommioFs, Log, LogConfig};

fn run_in_glommio(cfg: LogConfig, mut log: Log, records: Vec<Rec>) -> (Log, Vec<Rec>) {
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("storage-test")
        .io_memory(512 << 10)
        .spawn(move || async move {
            let mut flusher = Flusher::new(GlommioFs, &cfg);
            let mut records = records;
            for i in 0..3000u64 {
                let b = body(i, (i % 97) as usize);
                let kind = (i % 11) as u8;
                let lsn = log.append(kind, &b, Class::Data).expect("append");
                records.push((lsn, kind, b));
                if i % 50 == 49 {
                    while let Some(batch) = log.take_batch(Instant::now()) {
                        let result = flusher.run_batch(batch).await;
                        assert!(result.is_ok(), "{:?}", result.error());
                        log.complete(result);
                    }
                }
            }
            while let Some(batch) = log.take_batch(Instant::now()) {
                let result = flusher.run_batch(batch).await;
                assert!(result.is_ok(), "{:?}", result.error());
                log.complete(result);
            }
            assert_eq!(log.durable_lsn(), log.appended_lsn());
            (log, records)
        })
        .expect("glommio executor (memlock, io_uring)");
    handle.join().expect("executor thread")
}

#[test]
fn glommio_flusher_writes_what_recovery_reads() {
    let tmp = TempDir::new("glommio");
    let cfg = LogConfig {
        segment_size_bytes: 64 << 10,
        ..config(&tmp.0, FsyncPolicy::Always)
    };
    let (log, _) = recover(&cfg, |_, _, _| panic!("empty directory")).unwrap();
    let (log, written) = run_in_glommio(cfg.clone(), log, Vec::new());
    assert!(log.segments().count() > 2);
    drop(log);

    let mut got = Vec::new();
    let (log, report) = recover(&cfg, |lsn, kind, body| {
        assert_eq!(body.as_ptr() as usize % 16, 0);
        got.push((lsn, kind, body.to_vec()));
    })
    .unwrap();
    assert_eq!(got, written);
    assert_eq!((report.truncated_bytes, report.corrupt_records), (0, 0));

    let (_, written) = run_in_glommio(cfg.clone(), log, written);
    let (_, _, got) = recover_all(&ringmq_storage::StdFs, &cfg);
    assert_eq!(got.len(), 6000);
    assert_eq!(got, written);
}
