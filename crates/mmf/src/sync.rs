//! The atomics and spin hints the lock uses, routed through one place so that the same lock
//! code runs under [loom](https://docs.rs/loom) (`RUSTFLAGS="--cfg loom"`), which replaces
//! them with model-checked versions, and natively otherwise.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, Ordering};

/// A processor hint for one round of a spin loop (a scheduling point under loom).
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::hint::spin_loop();
}

/// Under loom, a scheduling point for the model futex's timed-out sleeps (the native lock
/// never yields: see `SpinWait` in lock/protocol.rs).
#[cfg(loom)]
#[inline]
pub(crate) fn yield_now() {
    loom::thread::yield_now();
}

/// A SeqCst load taking part in a store-load (Dekker) pattern.
///
/// The lock relies on "SeqCst write to X, then SeqCst load of Y" in one thread against the
/// mirror image in another: in the single total order of SeqCst operations, at least one of
/// the two loads sees the other thread's write. That holds natively (x86 compiles the load to
/// a plain `mov`, the write being a locked instruction or an `xchg`), but loom models SeqCst
/// as AcqRel, under which both loads may miss. Under loom this is therefore a read-modify-write
/// that changes nothing: RMWs read the latest value, and of two RMWs on one word the later
/// acquires the earlier, which restores the guarantee the native code has.
#[inline(always)]
pub(crate) fn load_sc(atomic: &AtomicU32) -> u32 {
    #[cfg(not(loom))]
    return atomic.load(Ordering::SeqCst);
    #[cfg(loom)]
    return atomic.fetch_add(0, Ordering::AcqRel);
}

/// A SeqCst store taking part in a store-load pattern (see [`load_sc`]); a swap under loom.
#[inline(always)]
pub(crate) fn store_sc(atomic: &AtomicU32, value: u32) {
    #[cfg(not(loom))]
    atomic.store(value, Ordering::SeqCst);
    #[cfg(loom)]
    atomic.swap(value, Ordering::AcqRel);
}
