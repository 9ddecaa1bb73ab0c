//! The fault-catching copy routine (`rep movsb` or an SSE2 loop inside an exception-table
//! range, used by `read_at`/`write_at` so that a truncated segment is an error, not a SIGBUS;
//! `benches/copy_sweep.rs` covers every alignment) next to a plain
//! `copy_from_slice` (glibc memcpy) between the very same segment pages and buffer, under the
//! same lock, in the same run. The ratio isolates the routine: lock and pages are identical.
//!
//! `cargo bench -p mmf --bench fault_copy`.

use std::hint::black_box;
use std::process;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mmf::MmfOptions;

fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "mmf-bench-fault-copy-{}-{}",
        process::id(),
        COUNTER.fetch_add(1, Relaxed)
    )
}

fn label(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{}MiB", size >> 20)
    } else {
        format!("{}KiB", size >> 10)
    }
}

fn fault_copy(c: &mut Criterion) {
    for size in [4 << 10, 64 << 10, 1 << 20, 8 << 20] {
        let seg = MmfOptions::new(unique_name())
            .prefault(true)
            .create(size)
            .expect("create the benchmark segment");
        let src: Vec<u8> = (0..size).map(|i| (i * 7 + 1) as u8).collect();
        let mut dst = src.clone();
        seg.write_at(0, &src).expect("warm the segment");

        let mut group = c.benchmark_group(format!("fault_copy_{}", label(size)));
        group.throughput(Throughput::Bytes(size as u64));
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        if size >= 1 << 20 {
            group.sample_size(40);
        }
        group.bench_function("read_guard_copy_from_slice", |b| {
            b.iter(|| {
                let guard = seg.read().unwrap();
                dst.copy_from_slice(black_box(&guard[..]));
                drop(guard);
                black_box(&mut dst);
            })
        });
        group.bench_function("read_at", |b| {
            b.iter(|| {
                seg.read_at(0, black_box(&mut dst)).unwrap();
                black_box(&mut dst);
            })
        });
        group.bench_function("write_guard_copy_from_slice", |b| {
            b.iter(|| {
                let mut guard = seg.write().unwrap();
                guard.copy_from_slice(black_box(&src));
            })
        });
        group.bench_function("write_at", |b| {
            b.iter(|| seg.write_at(0, black_box(&src)).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, fault_copy);
criterion_main!(benches);
