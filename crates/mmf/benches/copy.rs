//! Copy bandwidth of `write_at` / `read_at` next to a plain memcpy (`copy_from_slice`
//! between two warm heap buffers) of the same size, measured in the same run (goal: at least
//! 0.9x memcpy at 1 MiB and 8 MiB), and the cost of first touching a fresh segment.
//!
//! `cargo bench -p mmf --bench copy`.

use std::hint::black_box;
use std::process;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
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

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn label(size: usize) -> String {
    if size >= MIB {
        format!("{}MiB", size / MIB)
    } else {
        format!("{}KiB", size / KIB)
    }
}

/// A buffer whose pages are faulted in and whose contents are not all zero (so no copy can
/// be served from the shared zero page).
fn warm_buffer(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 7 + 1) as u8).collect()
}

fn copies(c: &mut Criterion) {
    for size in [4 * KIB, MIB, 8 * MIB] {
        // Prefaulted, then written once more, so no page fault lands in the measurement.
        let seg = MmfOptions::new(unique_name("copy"))
            .prefault(true)
            .create(size)
            .expect("create the benchmark segment");
        let src = warm_buffer(size);
        let mut dst = warm_buffer(size);
        seg.write_at(0, &src).expect("warm the segment");

        let mut group = c.benchmark_group(format!("copy_{}", label(size)));
        group.throughput(Throughput::Bytes(size as u64));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        if size >= MIB {
            group.sample_size(40);
        }
        group.bench_function("memcpy", |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&mut dst);
            })
        });
        group.bench_function("write_at", |b| {
            b.iter(|| seg.write_at(0, black_box(&src)).unwrap())
        });
        group.bench_function("read_at", |b| {
            b.iter(|| {
                seg.read_at(0, black_box(&mut dst)).unwrap();
                black_box(&mut dst);
            })
        });
        group.finish();
    }
}

/// The first touch of fresh shared pages, informational: the first `write_at` of a whole
/// 8 MiB segment just created without prefaulting (every page faults), the same after
/// `MmfOptions::prefault(true)`, and for reference a `write_at` into a warm segment; then the
/// cost of `create` itself with and without prefaulting, which is where the faulting moves.
fn first_touch(c: &mut Criterion) {
    let size = 8 * MIB;
    let src = warm_buffer(size);
    let warm = MmfOptions::new(unique_name("touch"))
        .prefault(true)
        .create(size)
        .expect("create the warm segment");
    warm.write_at(0, &src).expect("warm the segment");

    let mut group = c.benchmark_group("first_touch_8MiB");
    group.throughput(Throughput::Bytes(size as u64));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    group.bench_function("warm_write_at", |b| {
        b.iter(|| warm.write_at(0, black_box(&src)).unwrap())
    });
    for prefault in [false, true] {
        let create = || -> Mmf {
            MmfOptions::new(unique_name("touch"))
                .prefault(prefault)
                .create(size)
                .expect("create a fresh segment")
        };
        let id = BenchmarkId::new("first_write_at", format!("prefault_{prefault}"));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let seg = create();
                    let start = Instant::now();
                    seg.write_at(0, black_box(&src)).unwrap();
                    total += start.elapsed();
                }
                total
            })
        });
        let id = BenchmarkId::new("create", format!("prefault_{prefault}"));
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let seg = black_box(create());
                    total += start.elapsed();
                    // Unmapping and removing the segment is not part of creating it.
                    drop(seg);
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, copies, first_touch);
criterion_main!(benches);
