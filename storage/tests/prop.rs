//! Random sequences of appends, flushes, faults and crashes on MemFs: what recovery returns is
//! always a prefix of what was appended, containing every record that was durable at the crash,
//! byte-exact and in order.

mod common;

use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use ringmq_storage::{Class, CrashMode, Flusher, FsyncPolicy, LogConfig, MemFs};

#[derive(Debug, Clone)]
enum Op {
    Append { len: usize, kind: u8, control: bool },
    Flush { advance_ms: u64 },
    Tear { after: u64 },
    FailSync,
    Enospc { room: u64 },
    Crash { keep_page_cache: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..200, any::<u8>(), any::<bool>())
            .prop_map(|(len, kind, control)| Op::Append { len, kind, control }),
        4 => (0u64..30).prop_map(|advance_ms| Op::Flush { advance_ms }),
        1 => (0u64..400).prop_map(|after| Op::Tear { after }),
        1 => Just(Op::FailSync),
        1 => (0u64..600).prop_map(|room| Op::Enospc { room }),
        2 => any::<bool>().prop_map(|keep_page_cache| Op::Crash { keep_page_cache }),
    ]
}

fn policy() -> impl Strategy<Value = FsyncPolicy> {
    prop_oneof![
        Just(FsyncPolicy::Always),
        Just(FsyncPolicy::Never),
        (0u32..20).prop_map(FsyncPolicy::EveryMs),
    ]
}

fn check_crash(
    fs: &MemFs,
    cfg: &LogConfig,
    all: &[Rec],
    durable: u64,
    mode: CrashMode,
) -> Vec<Rec> {
    fs.crash(mode);
    let (_, _, got) = recover_all(fs, cfg);
    assert!(got.len() <= all.len(), "more records than appended");
    assert_eq!(
        &got[..],
        &all[..got.len()],
        "not a prefix of the appended records"
    );
    let power_safe = !(cfg.fsync == FsyncPolicy::Never && mode == CrashMode::DropUnsynced);
    if power_safe {
        let durable_count = all.iter().filter(|r| r.0 < durable).count();
        assert!(
            got.len() >= durable_count,
            "lost durable records: {} < {durable_count}",
            got.len()
        );
    }
    got
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn recovered_is_a_prefix_holding_every_durable_record(
        policy in policy(),
        segment in 128u64..2048,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let cfg = LogConfig {
            segment_size_bytes: segment,
            ..config("/d", policy)
        };
        let fs = MemFs::new();
        let (mut log, _, mut all) = recover_all(&fs, &cfg);
        let mut fl = Flusher::new(fs.clone(), &cfg);
        let mut now = Instant::now();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { len, kind, control } => {
                    let b = body(i as u64, len);
                    let class = if control { Class::Control } else { Class::Data };
                    if let Ok(lsn) = log.append(kind, &b, class) {
                        all.push((lsn, kind, b));
                    }
                }
                Op::Flush { advance_ms } => {
                    now += Duration::from_millis(advance_ms);
                    flush_all(&mut log, &mut fl, now);
                }
                Op::Tear { after } => fs.tear_after(Some(after)),
                Op::FailSync => fs.fail_syncs(1),
                Op::Enospc { room } => {
                    let used: u64 = fs.paths().iter().map(|p| fs.read(p).unwrap().len() as u64).sum();
                    fs.set_space_limit(Some(used + room));
                }
                Op::Crash { keep_page_cache } => {
                    let mode = if keep_page_cache { CrashMode::KeepPageCache } else { CrashMode::DropUnsynced };
                    all = check_crash(&fs, &cfg, &all, log.durable_lsn(), mode);
                    let (l, _, _) = recover_all(&fs, &cfg);
                    log = l;
                    fl = Flusher::new(fs.clone(), &cfg);
                }
            }
            prop_assert!(log.durable_lsn() <= log.appended_lsn());
        }
        // Lift the faults, flush everything: nothing is lost.
        let stopped = fs.is_stopped();
        if !stopped {
            fs.set_space_limit(None);
            fs.fail_syncs(0);
            fs.tear_after(None);
            flush_all(&mut log, &mut fl, now + Duration::from_secs(60));
            prop_assert_eq!(log.durable_lsn(), log.appended_lsn());
            let got = check_crash(&fs, &cfg, &all, log.durable_lsn(), CrashMode::KeepPageCache);
            prop_assert_eq!(got.len(), all.len());
        }
        let mode = CrashMode::DropUnsynced;
        check_crash(&fs, &cfg, &all, log.durable_lsn(), mode);
    }
}
