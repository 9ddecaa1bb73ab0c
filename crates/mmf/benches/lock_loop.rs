//! Uncontended lock + unlock in a tight loop, next to `std::sync::RwLock` in the same run
//! (goal: at most 1.2x std, read and write).
//!
//! `benches/lock.rs` measures the same through criterion, whose closure and timing loop add a
//! call per iteration; this is a plain loop of `iterations` acquisitions, each guard dropped at
//! once, timed as a whole. Every round runs every case once, in turn, so a busy moment of the
//! machine hits all cases alike; the ratio to std is taken per round and the report gives the
//! median over the rounds of each ratio, next to the median time.
//!
//! `cargo bench -p mmf --bench lock_loop [-- ROUNDS]` (default 15 rounds of 20 M iterations;
//! under `cargo test --benches` one small round as a smoke test).

use std::hint::black_box;
use std::process;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::RwLock;
use std::time::Instant;

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

/// Nanoseconds per iteration of `f` run `n` times.
#[inline(never)]
fn time(n: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let rounds: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { 15 } else { 1 });
    let n: u64 = if bench { 20_000_000 } else { 10_000 };

    let std_lock = RwLock::new([0u8; 64]);
    let seg: Mmf = MmfOptions::new(unique_name("lock-loop"))
        .prefault(true)
        .create(4096)
        .expect("create the benchmark segment");
    let seg = &seg;
    let std_lock = &std_lock;

    // (name, baseline index, run): each mmf case is compared with the std case of its kind.
    type Case<'a> = (&'static str, usize, Box<dyn Fn(u64) -> f64 + 'a>);
    let cases: Vec<Case<'_>> = vec![
        (
            "std read",
            0,
            Box::new(|n| time(n, || drop(black_box(std_lock).read().unwrap()))),
        ),
        (
            "std write",
            1,
            Box::new(|n| time(n, || drop(black_box(std_lock).write().unwrap()))),
        ),
        (
            "mmf read()",
            0,
            Box::new(|n| time(n, || drop(black_box(seg).read().unwrap()))),
        ),
        (
            "mmf try_read()",
            0,
            Box::new(|n| time(n, || drop(black_box(seg).try_read().unwrap()))),
        ),
        (
            "mmf write()",
            1,
            Box::new(|n| time(n, || drop(black_box(seg).write().unwrap()))),
        ),
        (
            "mmf try_write()",
            1,
            Box::new(|n| time(n, || drop(black_box(seg).try_write().unwrap()))),
        ),
        (
            "mmf write_seq()",
            0,
            Box::new(|n| {
                time(n, || {
                    black_box(black_box(seg).write_seq());
                })
            }),
        ),
    ];

    // Warm-up: page in, settle the clock.
    for (_, _, run) in &cases {
        run(n / 10);
    }
    let mut times = vec![Vec::new(); cases.len()];
    let mut ratios = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        let t: Vec<f64> = cases.iter().map(|(_, _, run)| run(n)).collect();
        for (i, (_, base, _)) in cases.iter().enumerate() {
            times[i].push(t[i]);
            ratios[i].push(t[i] / t[*base]);
        }
    }
    println!("uncontended lock + unlock, tight loop: {rounds} rounds of {n} iterations, medians");
    for (i, (name, base, _)) in cases.iter().enumerate() {
        let base_name = cases[*base].0;
        println!(
            "{name:>16}: {:6.2} ns  {:5.2}x {base_name}",
            median(&mut times[i]),
            median(&mut ratios[i])
        );
    }
}
