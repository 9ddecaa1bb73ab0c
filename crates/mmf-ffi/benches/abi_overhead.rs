//! What the C ABI adds to a call, measured against the same Rust call in the same run
//! (issue 15's goal: at most 10 ns more for a write lock + unlock and for `latest()`).
//!
//! The C functions are called through function pointers hidden from the optimiser, as a C
//! program calls them through the dynamic linker's PLT: no inlining into the loop, and every
//! argument check, handle check and `catch_unwind` on the path. The Rust side calls the library
//! directly, as a Rust user does.
//!
//! Each round runs every case once, in turn, so a busy moment of the machine hits the Rust and C
//! forms of a call alike; the difference (C minus Rust) is taken per round, and the report gives
//! medians over the rounds.
//!
//! `cargo bench -p mmf-ffi --bench abi_overhead [-- ROUNDS]` (default 15 rounds of 5 M calls;
//! under `cargo test --benches` one small round as a smoke test).

use std::hint::black_box;
use std::process;
use std::ptr;
use std::time::Instant;

use mmf::{FrameReader, FrameSpec, FrameWriter, Mmf, MmfOptions};
use mmf_ffi::{
    mmf_frame_reader_close, mmf_frame_reader_latest, mmf_frame_reader_open,
    mmf_frame_reader_release, mmf_segment_close, mmf_segment_lock_write, mmf_segment_open,
    mmf_segment_unlock_write, MmfFrame, MmfFrameReader, MmfSegment, MMF_OK, MMF_WAIT_FOREVER,
};

/// Nanoseconds per iteration of `f` run `n` times.
#[inline(never)]
fn time(n: u64, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

type LockWrite = unsafe extern "C" fn(*mut MmfSegment, u32, *mut *mut u8, *mut usize) -> i32;
type Unlock = unsafe extern "C" fn(*mut MmfSegment) -> i32;
type Latest = unsafe extern "C" fn(*mut MmfFrameReader, *mut MmfFrame) -> i32;
type Release = unsafe extern "C" fn(*mut MmfFrameReader) -> i32;

/// The measured cases, in the order each round runs them.
const CASES: [&str; 5] = [
    "write lock + unlock, Rust",
    "write lock + unlock, C ABI",
    "latest() + release, Rust",
    "latest() + release, C ABI",
    "latest(), C ABI",
];

/// An `MmfFrame` for the call to fill, as a C caller declares one: `MmfFrame frame = {0};`.
fn empty_frame() -> MmfFrame {
    // SAFETY: MmfFrame is repr(C) plain data (integers and raw pointers), for which all-zero
    // bytes are valid values (null pointers, zeroes).
    unsafe { std::mem::zeroed() }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let rounds: usize = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(if bench { 15 } else { 1 });
    let n: u64 = if bench { 5_000_000 } else { 10_000 };

    let name = format!("mmf-ffi-bench-{}", process::id());
    let seg: Mmf = MmfOptions::new(&name)
        .prefault(true)
        .create(4096)
        .expect("create the benchmark segment");
    let channel = format!("{name}-frames");
    let mut writer =
        FrameWriter::create(&channel, FrameSpec::new(4096)).expect("create the channel");
    writer.publish(&[7u8; 4096]).expect("publish a frame");
    let mut reader = FrameReader::open(&channel).expect("open the channel from Rust");

    let c_name = std::ffi::CString::new(name.as_str()).unwrap();
    let c_channel = std::ffi::CString::new(channel.as_str()).unwrap();
    let mut c_seg: *mut MmfSegment = ptr::null_mut();
    let mut c_reader: *mut MmfFrameReader = ptr::null_mut();
    // SAFETY: NUL-terminated names and writable out-pointers, as the functions require.
    let opened = unsafe { mmf_segment_open(c_name.as_ptr(), &mut c_seg) };
    assert_eq!(opened, MMF_OK, "mmf_segment_open");
    // SAFETY: as above.
    let opened = unsafe { mmf_frame_reader_open(c_channel.as_ptr(), &mut c_reader) };
    assert_eq!(opened, MMF_OK, "mmf_frame_reader_open");

    // Hidden from the optimiser, like a call through the PLT into libmmf_ffi.so.
    let lock_write: LockWrite = black_box(mmf_segment_lock_write);
    let unlock_write: Unlock = black_box(mmf_segment_unlock_write);
    let latest: Latest = black_box(mmf_frame_reader_latest);
    let release: Release = black_box(mmf_frame_reader_release);

    let mut results: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    for _ in 0..rounds {
        results[0].push(time(n, || {
            let mut guard = seg.write().expect("write lock");
            black_box(guard.as_mut_ptr());
        }));
        results[1].push(time(n, || {
            let (mut data, mut len) = (ptr::null_mut(), 0usize);
            // SAFETY: a live handle from mmf_segment_open and writable out-pointers.
            let locked = unsafe { lock_write(c_seg, MMF_WAIT_FOREVER, &mut data, &mut len) };
            black_box(data);
            // SAFETY: the same live handle, which holds the lock.
            let unlocked = unsafe { unlock_write(c_seg) };
            assert!(locked == MMF_OK && unlocked == MMF_OK);
        }));
        results[2].push(time(n, || {
            let frame = reader.latest().expect("latest").expect("a frame");
            black_box(frame.as_ptr());
        }));
        results[3].push(time(n, || {
            let mut frame = empty_frame();
            // SAFETY: a live handle from mmf_frame_reader_open and a writable out-pointer.
            let took = unsafe { latest(c_reader, &mut frame) };
            black_box(frame.data);
            // SAFETY: the same live handle.
            let released = unsafe { release(c_reader) };
            assert!(took == MMF_OK && released == MMF_OK);
        }));
        // How a C consumer loops: each take releases the frame taken before.
        results[4].push(time(n, || {
            let mut frame = empty_frame();
            // SAFETY: a live handle from mmf_frame_reader_open and a writable out-pointer.
            let took = unsafe { latest(c_reader, &mut frame) };
            black_box(frame.data);
            assert_eq!(took, MMF_OK);
        }));
    }

    println!("C ABI overhead: {rounds} rounds of {n} calls, medians over the rounds");
    for (case, times) in CASES.iter().zip(&results) {
        println!("  {case:<30} {:>7.2} ns", median(times));
    }
    for (what, rust, c) in [
        ("write lock + unlock", 0, 1),
        ("latest() + release", 2, 3),
        ("latest(), next take releases", 2, 4),
    ] {
        let diffs: Vec<f64> = results[rust]
            .iter()
            .zip(&results[c])
            .map(|(r, c)| c - r)
            .collect();
        let ratios: Vec<f64> = results[rust]
            .iter()
            .zip(&results[c])
            .map(|(r, c)| c / r)
            .collect();
        println!(
            "  {what:<30} C ABI adds {:>+6.2} ns ({:.2}x the Rust call; goal: at most +10 ns)",
            median(&diffs),
            median(&ratios)
        );
    }

    // SAFETY: live handles, not used again.
    let closed = unsafe { mmf_frame_reader_close(c_reader) };
    // SAFETY: as above.
    let closed_seg = unsafe { mmf_segment_close(c_seg) };
    assert_eq!((closed, closed_seg), (MMF_OK, MMF_OK));
    drop(reader);
    drop(writer);
    drop(seg);
}
