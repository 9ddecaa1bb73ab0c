//! Uncontended lock + unlock of a segment's in-region lock, next to `std::sync::RwLock`
//! measured in the same run (goal: within 1.5x of std).
//!
//! Every benchmark creates and drops one guard per iteration, so the figure is one
//! acquisition plus one release. `cargo bench -p mmf --bench lock`.

use std::hint::black_box;
use std::process;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::RwLock;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use mmf::{Mmf, MmfOptions};

/// A segment name unique to this process and call, so parallel runs never collide.
fn unique_name(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "mmf-bench-{what}-{}-{}",
        process::id(),
        COUNTER.fetch_add(1, Relaxed)
    )
}

fn segment() -> Mmf {
    MmfOptions::new(unique_name("lock"))
        .prefault(true)
        .create(4096)
        .expect("create the benchmark segment")
}

fn uncontended(c: &mut Criterion) {
    let std_lock = RwLock::new([0u8; 64]);
    let seg = segment();

    let mut group = c.benchmark_group("uncontended");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    group.bench_function("std_rwlock_read", |b| {
        b.iter(|| drop(black_box(&std_lock).read().unwrap()))
    });
    group.bench_function("mmf_read", |b| {
        b.iter(|| drop(black_box(&seg).read().unwrap()))
    });
    group.bench_function("mmf_try_read", |b| {
        b.iter(|| drop(black_box(&seg).try_read().unwrap()))
    });
    group.bench_function("std_rwlock_write", |b| {
        b.iter(|| drop(black_box(&std_lock).write().unwrap()))
    });
    group.bench_function("mmf_write", |b| {
        b.iter(|| drop(black_box(&seg).write().unwrap()))
    });
    group.bench_function("mmf_try_write", |b| {
        b.iter(|| drop(black_box(&seg).try_write().unwrap()))
    });
    group.finish();
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
