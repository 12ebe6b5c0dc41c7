//! Benchmarks of the per-core log: appending 64-byte records into the in-memory buffer, and a
//! whole append + flush (`Never`) + recover cycle of 100k records on std::fs in a temp dir.
//!
//! `cargo bench -p ringmq-storage --bench log`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures_lite::future::block_on;
use ringmq_storage::{recover, recover_on, Class, Flusher, FsyncPolicy, LogConfig, MemFs, StdFs};

const APPENDS: u64 = 10_000;
const CYCLE: u64 = 100_000;

fn append_64(c: &mut Criterion) {
    let body = [0x5au8; 64];
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(APPENDS));
    g.bench_function("64B_x10k_into_buffer", |b| {
        b.iter_batched(
            || {
                let cfg = LogConfig::new("/bench");
                recover_on(&MemFs::new(), &cfg, |_, _, _| {}).unwrap().0
            },
            |mut log| {
                for _ in 0..APPENDS {
                    black_box(log.append(1, black_box(&body), Class::Data).unwrap());
                }
                log
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn cycle(c: &mut Criterion) {
    let body = [0xa5u8; 64];
    let mut g = c.benchmark_group("cycle");
    g.throughput(Throughput::Elements(CYCLE));
    g.sample_size(10);
    g.bench_function("append_flush_never_recover_100k_stdfs", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let dir = std::env::temp_dir()
                .join(format!("ringmq-storage-bench-{}-{n}", std::process::id()));
            let cfg = LogConfig {
                fsync: FsyncPolicy::Never,
                segment_size_bytes: 4 << 20,
                ..LogConfig::new(&dir)
            };
            let (mut log, _) = recover(&cfg, |_, _, _| {}).unwrap();
            let mut flusher = Flusher::new(StdFs, &cfg);
            for i in 0..CYCLE {
                log.append(1, &body, Class::Data).unwrap();
                if i % 4096 == 4095 {
                    while let Some(batch) = log.take_batch(Instant::now()) {
                        log.complete(block_on(flusher.run_batch(batch)));
                    }
                }
            }
            while let Some(batch) = log.take_batch(Instant::now()) {
                log.complete(block_on(flusher.run_batch(batch)));
            }
            drop((log, flusher));
            let mut count = 0u64;
            recover(&cfg, |_, _, b| count += b.len() as u64).unwrap();
            assert_eq!(count, CYCLE * 64);
            let _ = std::fs::remove_dir_all(&dir);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = append_64, cycle
}
criterion_main!(benches);
