//! The clock frame timestamps are taken from: monotonic, and the same for every process on
//! the machine, so a reader can subtract a writer's publish time from its own "now".

/// Nanoseconds on the system's monotonic clock, comparable across processes.
///
/// Linux and other Unix: `clock_gettime(CLOCK_MONOTONIC)`. Windows:
/// `QueryPerformanceCounter` scaled by `QueryPerformanceFrequency` (both are system-wide).
/// The epoch is unspecified (typically boot); only differences mean anything.
#[cfg(unix)]
#[doc(alias = "clock_gettime")]
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // Monotonic time is never negative; the casts cannot lose anything for ~584 years.
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// Nanoseconds on the system's monotonic clock, comparable across processes.
///
/// Linux and other Unix: `clock_gettime(CLOCK_MONOTONIC)`. Windows:
/// `QueryPerformanceCounter` scaled by `QueryPerformanceFrequency` (both are system-wide).
/// The epoch is unspecified (typically boot); only differences mean anything.
#[cfg(windows)]
#[doc(alias = "QueryPerformanceCounter")]
pub fn monotonic_ns() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use windows_sys::Win32::System::Performance::{
        QueryPerformanceCounter, QueryPerformanceFrequency,
    };
    // Relaxed: the frequency is fixed at boot, so racing threads store the same value.
    static FREQUENCY: AtomicU64 = AtomicU64::new(0);
    let mut frequency = FREQUENCY.load(Relaxed);
    if frequency == 0 {
        let mut f = 0i64;
        // SAFETY: `f` is a valid, writable i64 for the duration of the call.
        unsafe { QueryPerformanceFrequency(&mut f) };
        frequency = u64::try_from(f).unwrap_or(0).max(1);
        FREQUENCY.store(frequency, Relaxed);
    }
    let mut count = 0i64;
    // SAFETY: `count` is a valid, writable i64 for the duration of the call.
    unsafe { QueryPerformanceCounter(&mut count) };
    let count = u128::from(u64::try_from(count).unwrap_or(0));
    (count * 1_000_000_000 / u128::from(frequency)) as u64
}
