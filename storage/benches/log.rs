//! Benchmarks of the per-core log (filled in with the implementation).
use criterion::{criterion_group, criterion_main, Criterion};

fn bench(c: &mut Criterion) {
    c.bench_function("record_size", |b| {
        b.iter(|| ringmq_storage::record_size(std::hint::black_box(64)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
