//! The fault-catching copy at every alignment: `read_at` / `write_at` against a plain
//! `copy_from_slice` (glibc memcpy) under the same lock, on the very same segment bytes and
//! buffer bytes, point by point over a grid of source and destination offsets within a page,
//! at 4 KiB, 64 KiB, 1 MiB and 8 MiB; and `read_to_vec` against `to_vec()` of the guarded slice.
//! Goal (issue 12): every ratio (memcpy time / mmf time) at least 0.9.
//!
//! The grid: the segment's data region starts on a page, so a segment offset is the source's
//! (read) or destination's (write) offset within a page. `mem` sweeps the caller's buffer
//! over 0, 16, .., 4080 and a few odd offsets with the segment side at offset 0, `seg` sweeps
//! the segment side the same way with the buffer page-aligned: together they cover every
//! distance (dst - src) mod 4096 in steps of 16 (what `rep movsb` is sensitive to) with each
//! side aligned, and `odd` pairs two odd offsets. `heap` is the user's case: a `Vec` where the
//! allocator put it (glibc: 16 bytes past a page for large ones), segment offsets 0 and 16.
//!
//! Each point times both copies alternately, `ROUNDS` times, and keeps each one's fastest
//! round (the noise on a shared machine only ever adds time); the ratio of the two is the
//! point's figure. Per size and case the output gives the minimum and median ratio over the
//! grid and the worst points. A plain timed loop: criterion for ~1000 points is too slow.
//!
//! `cargo bench -p mmf --bench copy_sweep [-- SIZE_KIB...]`; under
//! `flock /tmp/bench.lock` on a shared machine.

use std::hint::black_box;
use std::process;
use std::time::Instant;

use mmf::{Mmf, MmfOptions};

const PAGE: usize = 4096;
const ROUNDS: usize = 5;
/// Odd offsets: a byte off, within the first vector, just short of a cache line, a page.
const ODD: [usize; 6] = [1, 3, 7, 33, 63, 4095];

fn label(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{}MiB", size >> 20)
    } else {
        format!("{}KiB", size >> 10)
    }
}

/// Seconds per call of `f(true)` (mmf) and of `f(false)` (memcpy), timed alternately, each
/// the fastest of the rounds. One closure for both, as both borrow the same buffers.
fn race(reps: usize, mut f: impl FnMut(bool)) -> (f64, f64) {
    let mut best = [f64::MAX; 2];
    for _ in 0..ROUNDS {
        for (mmf, best) in [true, false].into_iter().zip(&mut best) {
            let start = Instant::now();
            for _ in 0..reps {
                f(mmf);
            }
            *best = best.min(start.elapsed().as_secs_f64());
        }
    }
    (best[0] / reps as f64, best[1] / reps as f64)
}

/// (segment offset, buffer offset) pairs of one case of the grid.
fn grid(case: &str) -> Vec<(usize, usize)> {
    let sweep = (0..PAGE).step_by(16).chain(ODD);
    match case {
        "mem" => sweep.map(|o| (0, o)).collect(),
        "seg" => sweep.map(|o| (o, 0)).collect(),
        _ => vec![(1, 3), (3, 1), (7, 4095), (33, 63), (4095, 7), (63, 33)],
    }
}

struct Summary {
    ratios: Vec<(f64, usize, usize)>,
}

impl Summary {
    fn print(mut self, size: usize, what: &str) {
        // COPY_SWEEP_POINTS=1: every point, for telling systematic dips from noise.
        if std::env::var_os("COPY_SWEEP_POINTS").is_some() {
            for (r, s, b) in &self.ratios {
                println!("point {} {what} s{s} b{b} {r:.3}", label(size));
            }
        }
        self.ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = self.ratios.len();
        let worst: Vec<String> = self
            .ratios
            .iter()
            .take(4)
            .map(|(r, s, b)| format!("{r:.2}@s{s}/b{b}"))
            .collect();
        println!(
            "{:>6} {what:<14} points {n:>4}  min {:.2}  median {:.2}  below-0.9 {:>3}  worst {}",
            label(size),
            self.ratios[0].0,
            self.ratios[n / 2].0,
            self.ratios.iter().filter(|r| r.0 < 0.9).count(),
            worst.join(" ")
        );
    }
}

fn sweep(size: usize) {
    let seg: Mmf = MmfOptions::new(format!("mmf-bench-copy-sweep-{}-{size}", process::id()))
        .prefault(true)
        .create(size + PAGE)
        .expect("create the benchmark segment");
    let fill: Vec<u8> = (0..size + PAGE).map(|i| (i * 7 + 1) as u8).collect();
    seg.write_at(0, &fill).expect("warm the segment");
    let mut backing = vec![5u8; size + 2 * PAGE];
    let aligned = backing.as_ptr().align_offset(PAGE);
    let buf = &mut backing[aligned..aligned + size + PAGE];
    // Enough calls per round for about 2 ms, so the timer's resolution does not count.
    let reps = (256 << 20) / size / 64 + 1;

    for case in ["mem", "seg", "odd"] {
        let mut read = Summary { ratios: vec![] };
        let mut write = Summary { ratios: vec![] };
        for (s, b) in grid(case) {
            let (mmf, mem) = race(reps, |mmf| {
                let dst = black_box(&mut buf[b..b + size]);
                if mmf {
                    seg.read_at(s, dst).unwrap();
                } else {
                    dst.copy_from_slice(&seg.read().unwrap()[s..s + size]);
                }
            });
            read.ratios.push((mem / mmf, s, b));
            let (mmf, mem) = race(reps, |mmf| {
                let src = black_box(&buf[b..b + size]);
                if mmf {
                    seg.write_at(s, src).unwrap();
                } else {
                    seg.write().unwrap()[s..s + size].copy_from_slice(src);
                }
            });
            write.ratios.push((mem / mmf, s, b));
        }
        read.print(size, &format!("read_at {case}"));
        write.print(size, &format!("write_at {case}"));
    }

    let mut heap = vec![0u8; size];
    let at = heap.as_ptr() as usize % PAGE;
    let mut read = Summary { ratios: vec![] };
    let mut write = Summary { ratios: vec![] };
    for s in [0, 16] {
        let (mmf, mem) = race(reps, |mmf| {
            let dst = black_box(&mut heap[..]);
            if mmf {
                seg.read_at(s, dst).unwrap();
            } else {
                dst.copy_from_slice(&seg.read().unwrap()[s..s + size]);
            }
        });
        read.ratios.push((mem / mmf, s, at));
        let (mmf, mem) = race(reps, |mmf| {
            let src = black_box(&heap[..]);
            if mmf {
                seg.write_at(s, src).unwrap();
            } else {
                seg.write().unwrap()[s..s + size].copy_from_slice(src);
            }
        });
        write.ratios.push((mem / mmf, s, at));
    }
    read.print(size, "read_at heap");
    write.print(size, "write_at heap");

    let mut to_vec = Summary { ratios: vec![] };
    for s in [0, 16] {
        let (mmf, mem) = race(reps, |mmf| {
            let vec = if mmf {
                seg.read_to_vec(s, size).unwrap()
            } else {
                seg.read().unwrap()[s..s + size].to_vec()
            };
            drop(black_box(vec));
        });
        to_vec.ratios.push((mem / mmf, s, 0));
    }
    to_vec.print(size, "read_to_vec");
}

fn main() {
    // `cargo bench` passes `--bench`; any numbers are sizes in KiB to run instead of all.
    let picked: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok())
        .map(|kib| kib << 10)
        .collect();
    let sizes = if picked.is_empty() {
        vec![4 << 10, 64 << 10, 1 << 20, 8 << 20]
    } else {
        picked
    };
    println!("ratio = memcpy time / mmf time at the same point (>= 0.9 is the goal)");
    for size in sizes {
        sweep(size);
    }
}
