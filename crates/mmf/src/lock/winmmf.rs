//! [`WinMmfLock`]: the lock of the `winmmf` crate (0.6), a second [`RawRwLock`] and the lock
//! of the headerless layout that `winmmf` itself uses ([`crate::winmmf`]).
//!
//! The type's docs hold its bit table and what it gives up; the word-level functions here
//! are also what [`crate::winmmf`] locks its headerless mappings with.

use std::time::Instant;

use super::{Acquired, Context, LockArea, NotAcquired, RawRwLock};
use crate::sync::AtomicU32;
use crate::sync::Ordering::{Acquire, Relaxed, Release};

/// `W`: a writer holds the lock (winmmf's `WRITE_LOCK_MASK`).
pub(crate) const WRITER: u32 = 1 << 31;
/// The read-lock count (winmmf's `READ_LOCK_MASK`, `!INITIALIZE_MASK`); also the most
/// read locks there can be.
pub(crate) const READERS: u32 = 0x00FF_FFFF;
/// The top byte all ones: the word is not initialised yet (winmmf's `INITIALIZE_MASK`).
pub(crate) const UNINITIALISED: u32 = 0xFF << 24;

/// The lock of the `winmmf` crate: one word, spin only, no recovery.
///
/// One 32-bit word, changed only by compare-exchange, exactly as `winmmf::states::RWLock`
/// (0.6.2, `src/states.rs`) changes it, so that this lock and that one exclude each other on
/// the same word:
///
/// ```text
///  31   30 ............ 24   23 ................................. 0
/// +----+------------------+----------------------------------------+
/// | W  |  unused (0)      |  read locks held (24 bits)             |
/// +----+------------------+----------------------------------------+
///  \________ top byte: 0xFF while uninitialised _________/
/// ```
///
/// | bits  | name            | rule                                                                 |
/// |-------|-----------------|----------------------------------------------------------------------|
/// | 31    | `W` (`WRITER`)  | a writer holds the lock; set only from "initialised, no `W`, no readers" |
/// | 24–30 | unused          | zero; kept as found by every change (winmmf's `chunk ± 1`, `chunk \| W`) |
/// | 0–23  | readers (`READERS`) | read locks held, by anyone; a reader enters only while `W` is clear and the count is below `0xFF_FFFF` |
/// | 24–31 all ones | `UNINITIALISED` | winmmf's creator stores `0xFF00_0000` and then changes it to `0` once it has zeroed the data; no lock is taken while the top byte is `0xFF` |
///
/// As in winmmf, "uninitialised" is read from the whole top byte, so a word whose unused bits
/// are all set while `W` is set reads as uninitialised too; neither crate ever sets the unused
/// bits.
///
/// # What it gives up, against [`SharedRwLock`](super::SharedRwLock)
///
/// - **No recovery.** The word says how many readers there are, not who they are, and not
///   who the writer is: a process that dies holding the lock wedges it. A dead writer leaves
///   `W` set for good; a dead reader leaves the count one too high, so no writer ever gets in
///   again. Only recreating the segment clears it. [`RawRwLock::writer_is_gone`] cannot tell.
/// - **No poison.** Since nobody recovers a dead writer's lock, nobody can be told that it
///   did: every acquisition is [`Acquired::Clean`].
/// - **No sleeping.** Waiters spin: a bounded spin of 2 + 4 + … + 64 `spin_loop` hints, then
///   `yield_now` between attempts until they get the lock or their deadline passes. A blocked
///   process therefore burns a CPU while it waits (winmmf's own `spin_and_lock_*` spin with no
///   pause at all); it never sleeps in the kernel, and a release wakes nobody.
///   [`RawRwLock::wait_for_release`] is the trait's default, a 1 ms poll.
/// - **No fairness.** Writers are not preferred: a writer needs a moment with no reader at
///   all, so a steady stream of overlapping readers starves it. A reader may therefore take
///   a second read lock while holding one (winmmf's lock is recursive for readers), unlike
///   with the default lock.
/// - **No ownership.** A release trusts that the caller holds what it releases (the trait's
///   contract); a word that a foreign process has corrupted is released as far as it makes
///   sense (a read unlock on a zero count does nothing) and never panics.
///
/// What it keeps: the exclusion of the trait's contract between every process that follows
/// the protocol, `winmmf` 0.6 processes included; try and timed acquisitions.
///
/// It works in an ordinary `mmf` segment, where it uses word 0 of the header's
/// [`LockArea`]:
///
/// ```no_run
/// use mmf::{lock::WinMmfLock, MmfOptions};
///
/// # fn main() -> mmf::Result<()> {
/// let segment = MmfOptions::new("spin-only").lock::<WinMmfLock>().create(4096)?;
/// segment.write_at(0, b"hello")?;
/// # Ok(()) }
/// ```
///
/// and it is the lock of [`WinMmf`](crate::winmmf::WinMmf), the headerless layout of the
/// `winmmf` crate, where its word sits at offset 0 of the mapping.
#[derive(Debug, Clone, Copy)]
pub struct WinMmfLock;

/// Why the word could not be taken now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    /// The top byte is `0xFF`: a winmmf creator has not finished initialising the word.
    Uninitialised,
    /// `W` is set.
    Writer,
    /// Readers are inside (for a writer), or there are `READERS` of them (for a reader).
    Readers,
}

/// Whether the word has been initialised (winmmf's `RWLock::initialized`).
#[inline]
pub(crate) fn is_initialised(word: u32) -> bool {
    word & UNINITIALISED != UNINITIALISED
}

/// One attempt at a read lock on `word`: the count goes up by one, from a state with `W`
/// clear, initialised, and fewer than `READERS` readers.
#[inline]
pub(crate) fn try_read(word: &AtomicU32) -> Result<(), Busy> {
    // Relaxed: only a guess for the compare-exchange, which checks it.
    let mut current = word.load(Relaxed);
    loop {
        if !is_initialised(current) {
            return Err(Busy::Uninitialised);
        }
        if current & WRITER != 0 {
            return Err(Busy::Writer);
        }
        if current & READERS == READERS {
            return Err(Busy::Readers);
        }
        // Acquire on success: pairs with the Release of the last write unlock, so this
        // reader sees what that writer wrote. Relaxed on failure: we only retry.
        match word.compare_exchange_weak(current, current + 1, Acquire, Relaxed) {
            Ok(_) => return Ok(()),
            Err(now) => current = now,
        }
    }
}

/// One attempt at the write lock on `word`: sets `W` in a state with `W` clear, no readers,
/// initialised.
#[inline]
pub(crate) fn try_write(word: &AtomicU32) -> Result<(), Busy> {
    // Relaxed: only a guess for the compare-exchange, which checks it.
    let mut current = word.load(Relaxed);
    loop {
        if !is_initialised(current) {
            return Err(Busy::Uninitialised);
        }
        if current & WRITER != 0 {
            return Err(Busy::Writer);
        }
        if current & READERS != 0 {
            return Err(Busy::Readers);
        }
        // Acquire on success: pairs with the Release of the last read and write unlocks, so
        // no reader's reads and no earlier writer's writes come after ours.
        match word.compare_exchange_weak(current, current | WRITER, Acquire, Relaxed) {
            Ok(_) => return Ok(()),
            Err(now) => current = now,
        }
    }
}

/// Releases one read lock: the count goes down by one. Returns `false`, changing nothing,
/// if the word holds no read lock to release (another process corrupted it).
#[inline]
pub(crate) fn unlock_read(word: &AtomicU32) -> bool {
    // Relaxed: only a guess for the compare-exchange, which checks it.
    let mut current = word.load(Relaxed);
    loop {
        if !is_initialised(current) || current & WRITER != 0 || current & READERS == 0 {
            return false;
        }
        // Release: pairs with the Acquire of the next write lock, so our reads come before
        // its writes.
        match word.compare_exchange_weak(current, current - 1, Release, Relaxed) {
            Ok(_) => return true,
            Err(now) => current = now,
        }
    }
}

/// Releases the write lock: clears `W`. Returns `false`, changing nothing, if `W` is not set
/// (another process corrupted the word). A word that also counts readers (impossible under
/// the protocol) still loses `W`: winmmf refuses that release and leaves the lock wedged,
/// which helps nobody.
#[inline]
pub(crate) fn unlock_write(word: &AtomicU32) -> bool {
    // Relaxed: only a guess for the compare-exchange, which checks it.
    let mut current = word.load(Relaxed);
    loop {
        if !is_initialised(current) || current & WRITER == 0 {
            return false;
        }
        // Release: pairs with the Acquire of the next lock of either kind, so it sees what
        // we wrote.
        match word.compare_exchange_weak(current, current & !WRITER, Release, Relaxed) {
            Ok(_) => return true,
            Err(now) => current = now,
        }
    }
}

/// Repeats `attempt` until it succeeds or `deadline` passes: a bounded spin (6 rounds of
/// 2, 4, … 64 `spin_loop` hints), then one `yield_now` between attempts. The clock is read
/// only after the spin, so an uncontended or briefly contended lock never reads it. Returns
/// why the last attempt failed once the deadline has passed.
pub(crate) fn spin_until(
    deadline: Option<Instant>,
    mut attempt: impl FnMut() -> Result<(), Busy>,
) -> Result<(), Busy> {
    // Under loom every spin is a scheduling point that multiplies the interleavings.
    const SPIN_ROUNDS: u32 = if cfg!(loom) { 0 } else { 6 };
    let mut round = 0;
    loop {
        let busy = match attempt() {
            Ok(()) => return Ok(()),
            Err(busy) => busy,
        };
        if round < SPIN_ROUNDS {
            round += 1;
            for _ in 0..1 << round {
                crate::sync::spin_loop();
            }
            continue;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(busy);
        }
        #[cfg(not(loom))]
        std::thread::yield_now();
        #[cfg(loom)]
        crate::sync::yield_now();
    }
}

/// An attempt's outcome as `RawRwLock` reports it: winmmf's lock has no holders to recover,
/// so an acquisition is always clean and a failure only ever "unavailable".
fn acquired(attempt: Result<(), Busy>) -> Result<Acquired, NotAcquired> {
    attempt
        .map(|()| Acquired::Clean)
        .map_err(|_| NotAcquired::Unavailable)
}

impl WinMmfLock {
    /// The lock's one word in an area: word 0.
    #[inline]
    fn word(area: &LockArea) -> &AtomicU32 {
        &area.words()[0]
    }
}

// SAFETY: the exclusive lock is `W`, set only by a compare-exchange from a state without `W`
// and without readers, and a read lock is a count taken only by a compare-exchange from a
// state without `W`; one word, so every process sees one order of these changes and no read
// lock and write lock are ever held together. Acquisitions are Acquire and releases Release
// on that word. KIND ("WMF6") is used by no other lock in this crate.
unsafe impl RawRwLock for WinMmfLock {
    const KIND: u32 = u32::from_be_bytes(*b"WMF6");

    fn init(area: &LockArea) {
        // A zeroed word is winmmf's initialised, unlocked state (its creator ends there too,
        // after `0xFF00_0000`). Relaxed: the header's Release store of its ready state
        // publishes this to openers.
        Self::word(area).store(0, Relaxed);
    }

    fn try_lock_shared(area: &LockArea, _ctx: &Context<'_>) -> Result<Acquired, NotAcquired> {
        acquired(try_read(Self::word(area)))
    }

    fn lock_shared(
        area: &LockArea,
        _ctx: &Context<'_>,
        deadline: Option<Instant>,
    ) -> Result<Acquired, NotAcquired> {
        let word = Self::word(area);
        acquired(spin_until(deadline, || try_read(word)))
    }

    unsafe fn unlock_shared(area: &LockArea, _ctx: &Context<'_>) {
        // `false` only for a word another process corrupted: nothing of ours to release.
        let _ = unlock_read(Self::word(area));
    }

    fn try_lock_exclusive(area: &LockArea, _ctx: &Context<'_>) -> Result<Acquired, NotAcquired> {
        acquired(try_write(Self::word(area)))
    }

    fn lock_exclusive(
        area: &LockArea,
        _ctx: &Context<'_>,
        deadline: Option<Instant>,
    ) -> Result<Acquired, NotAcquired> {
        let word = Self::word(area);
        acquired(spin_until(deadline, || try_write(word)))
    }

    unsafe fn unlock_exclusive(area: &LockArea, _ctx: &Context<'_>) {
        // `false` only for a word another process corrupted: nothing of ours to release.
        let _ = unlock_write(Self::word(area));
    }
}
