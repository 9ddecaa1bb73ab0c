//! The lock that lives inside the segment.
//!
//! A segment's header holds a [`LockArea`]: 2048 bytes of 32-bit atomic words that belong to
//! the lock type the segment was created with. Every process that maps the segment locks the
//! same words, so they all see and respect the same lock. The lock type is pluggable through
//! [`RawRwLock`]; [`SharedRwLock`] is the default.
//!
//! # The default lock word
//!
//! [`SharedRwLock`] keeps its whole state in word 0 of the area:
//!
//! ```text
//!  31   30   29   28   27 ............................ 0
//! +----+----+----+----+----------------------------------+
//! | W  | WW | P  | 0  |        reader count (28 bits)     |
//! +----+----+----+----+----------------------------------+
//! ```
//!
//! - `W` ([`WRITER`]): a writer holds the lock; the reader count is then 0.
//! - `WW` ([`WRITER_WAITING`]): a writer wants the lock; new readers hold back.
//! - `P` ([`PARKED`]): someone sleeps (or is about to) in a kernel wait on this word; whoever
//!   releases the lock clears it and wakes every sleeper.
//! - reader count ([`READERS`]): number of shared holders.
//! - bit 28 is reserved (always written as 0) for owner tracking and poisoning.
//!
//! # Fairness
//!
//! Writers are not starved: as soon as a writer fails to get the lock it sets `WW`, which
//! stops new readers from entering, so the readers in place drain and the writer gets in.
//! Readers are not starved by a stream of writers either: releasing the write lock clears
//! `WW`, so readers woken at that moment compete on equal terms with the next writer, who has
//! to announce itself again. The cost of writer preference: a thread that already holds a read
//! lock and asks for another one may deadlock with a waiting writer, so read locks are not
//! recursive.
//!
//! # Waiting
//!
//! Acquisition is one compare-exchange when uncontended. When it fails, the waiter spins a few
//! rounds (a handful of `spin_loop` hints, then `yield_now`), then sets `P` and sleeps in the
//! kernel through the segment's [`Waiter`] (a shared futex on Linux, a named semaphore on
//! Windows), so a blocked process burns no CPU.

use std::hint;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::thread;
use std::time::Instant;

use crate::sys;

/// Number of 32-bit words in a [`LockArea`].
pub const LOCK_AREA_WORDS: usize = 512;

/// The part of the segment header that belongs to the lock: 2048 bytes of atomic words,
/// zeroed at creation, starting on its own cache line.
///
/// A custom [`RawRwLock`] keeps all of its state here. The words are shared with every
/// process that maps the segment, including buggy ones: treat any value read as untrusted.
#[repr(C, align(64))]
pub struct LockArea {
    words: [AtomicU32; LOCK_AREA_WORDS],
}

impl LockArea {
    /// Word `index` of the area (`index < LOCK_AREA_WORDS`), or `None` past the end.
    pub fn word(&self, index: usize) -> Option<&AtomicU32> {
        self.words.get(index)
    }

    /// All words of the area.
    pub fn words(&self) -> &[AtomicU32; LOCK_AREA_WORDS] {
        &self.words
    }
}

/// Puts a thread to sleep on a word of the segment until another process wakes it.
///
/// Handed to [`RawRwLock`] implementations by the segment. Works across processes: on Linux
/// it is a shared (non-private) futex; on Windows a named semaphore per segment with a waiter
/// count in the header; on platforms without either, a short sleep (see the crate's platform
/// table).
#[derive(Clone, Copy)]
pub struct Waiter<'a> {
    os: &'a sys::Waiter,
    sleepers: &'a AtomicU32,
}

impl<'a> Waiter<'a> {
    pub(crate) fn new(os: &'a sys::Waiter, sleepers: &'a AtomicU32) -> Self {
        Waiter { os, sleepers }
    }

    /// Sleeps while `word` holds `expected`, until woken, until `deadline`, or spuriously.
    ///
    /// Returns at once if `word` already differs. Callers re-check their condition in a loop.
    /// `word` must lie in the segment this waiter came from.
    pub fn wait(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) {
        sys::OsWaiter::wait(self.os, self.sleepers, word, expected, deadline);
    }

    /// Wakes every process sleeping in [`wait`](Self::wait) on `word`.
    pub fn wake_all(&self, word: &AtomicU32) {
        sys::OsWaiter::wake_all(self.os, self.sleepers, word);
    }
}

/// A reader/writer lock whose whole state lives in a segment's [`LockArea`].
///
/// The segment calls these functions with its own lock area and waiter; an implementation
/// keeps no state outside the area, so every process that maps the segment shares the lock.
///
/// # Safety
///
/// [`Mmf`](crate::Mmf) hands out `&mut [u8]` to the data region while the exclusive lock is
/// held and `&[u8]` while a shared lock is held. An implementation must therefore guarantee,
/// across every thread of every process that uses the same area: while an exclusive lock is
/// held no other lock (shared or exclusive) is held; acquisition has Acquire and release has
/// Release semantics on the area; and `KIND` is unique to this lock's protocol.
pub unsafe trait RawRwLock: 'static {
    /// Identifies the lock protocol; recorded in the header at creation and checked on open,
    /// so processes never disagree about how the area is used.
    const KIND: u32;

    /// Prepares a zeroed area. Runs once, in the creator, before the segment is published.
    fn init(area: &LockArea);

    /// Takes a shared lock if that is possible without waiting.
    fn try_lock_shared(area: &LockArea) -> bool;

    /// Takes a shared lock, waiting until `deadline` (forever if `None`).
    /// Returns `false` if the deadline passed first.
    fn lock_shared(area: &LockArea, waiter: Waiter<'_>, deadline: Option<Instant>) -> bool;

    /// Releases a shared lock.
    ///
    /// # Safety
    /// May only be called by a holder of a shared lock taken on this area, once per lock.
    unsafe fn unlock_shared(area: &LockArea, waiter: Waiter<'_>);

    /// Takes the exclusive lock if that is possible without waiting.
    fn try_lock_exclusive(area: &LockArea) -> bool;

    /// Takes the exclusive lock, waiting until `deadline` (forever if `None`).
    /// Returns `false` if the deadline passed first.
    fn lock_exclusive(area: &LockArea, waiter: Waiter<'_>, deadline: Option<Instant>) -> bool;

    /// Releases the exclusive lock.
    ///
    /// # Safety
    /// May only be called by the holder of the exclusive lock taken on this area, once.
    unsafe fn unlock_exclusive(area: &LockArea, waiter: Waiter<'_>);
}

/// Set while a writer holds the lock.
pub const WRITER: u32 = 1 << 31;
/// Set while a writer waits; readers that are not yet in hold back.
pub const WRITER_WAITING: u32 = 1 << 30;
/// Set while someone sleeps in the kernel on the lock word; the releaser clears it and wakes all.
pub const PARKED: u32 = 1 << 29;
/// Mask of the reader count.
pub const READERS: u32 = (1 << 28) - 1;

/// The default lock: a writer-preferring reader/writer lock in one 32-bit word.
///
/// See the [module documentation](self) for the bit layout, the fairness policy and how
/// waiting works.
pub enum SharedRwLock {}

/// Bounded spinning before sleeping, after parking_lot's `SpinWait`.
struct SpinWait {
    rounds: u32,
}

impl SpinWait {
    const SPIN_ROUNDS: u32 = 3;
    const YIELD_ROUNDS: u32 = 10;

    fn new() -> Self {
        SpinWait { rounds: 0 }
    }

    /// Spins or yields once; returns `false` when it is time to sleep instead.
    fn spin(&mut self) -> bool {
        if self.rounds >= Self::YIELD_ROUNDS {
            return false;
        }
        self.rounds += 1;
        if self.rounds <= Self::SPIN_ROUNDS {
            for _ in 0..(1 << self.rounds) {
                hint::spin_loop();
            }
        } else {
            thread::yield_now();
        }
        true
    }
}

fn deadline_passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

fn lock_word(area: &LockArea) -> &AtomicU32 {
    &area.words[0]
}

impl SharedRwLock {
    /// Whether a reader may enter in state `s`.
    fn reader_may_enter(s: u32) -> bool {
        s & (WRITER | WRITER_WAITING) == 0 && s & READERS != READERS
    }
}

// SAFETY: a shared holder is counted in READERS and the exclusive holder sets WRITER; each
// acquisition CAS only succeeds from a state where the other kind is absent (reader: WRITER
// clear; writer: WRITER clear and READERS zero), so the two never coexist. Acquisitions use
// Acquire and releases Release on the same word. KIND is unique to this protocol.
unsafe impl RawRwLock for SharedRwLock {
    const KIND: u32 = u32::from_be_bytes(*b"RWL1");

    fn init(area: &LockArea) {
        // Relaxed: the header's Release store of STATE_READY publishes this to openers.
        lock_word(area).store(0, Relaxed);
    }

    #[inline]
    fn try_lock_shared(area: &LockArea) -> bool {
        let word = lock_word(area);
        let mut s = word.load(Relaxed);
        while Self::reader_may_enter(s) {
            // Acquire: pairs with the Release in unlock_exclusive, so the last writer's
            // data stores are visible to this reader.
            match word.compare_exchange_weak(s, s + 1, Acquire, Relaxed) {
                Ok(_) => return true,
                Err(now) => s = now,
            }
        }
        false
    }

    fn lock_shared(area: &LockArea, waiter: Waiter<'_>, deadline: Option<Instant>) -> bool {
        if Self::try_lock_shared(area) {
            return true;
        }
        let word = lock_word(area);
        let mut spin = SpinWait::new();
        loop {
            let s = word.load(Relaxed);
            if Self::reader_may_enter(s) {
                // Acquire: pairs with the Release in unlock_exclusive (see try_lock_shared).
                if word
                    .compare_exchange_weak(s, s + 1, Acquire, Relaxed)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if spin.spin() {
                continue;
            }
            if deadline_passed(deadline) {
                return false;
            }
            // Announce the sleep so the releaser knows to wake us. Relaxed: the futex (or
            // semaphore) call orders the wake-up; we re-check the word after waking.
            if s & PARKED == 0
                && word
                    .compare_exchange(s, s | PARKED, Relaxed, Relaxed)
                    .is_err()
            {
                continue;
            }
            waiter.wait(word, s | PARKED, deadline);
            spin = SpinWait::new();
        }
    }

    #[inline]
    unsafe fn unlock_shared(area: &LockArea, waiter: Waiter<'_>) {
        let word = lock_word(area);
        let mut s = word.load(Relaxed);
        loop {
            if s & READERS == 0 {
                // Nothing to release: another process corrupted the word. Leave it alone
                // rather than borrow from the flag bits.
                return;
            }
            let mut next = s - 1;
            let wake = next & READERS == 0 && s & PARKED != 0;
            if wake {
                next &= !PARKED;
            }
            // Release: pairs with the Acquire of the next writer's CAS, so our reads of the
            // data happen before its writes.
            match word.compare_exchange_weak(s, next, Release, Relaxed) {
                Ok(_) => {
                    if wake {
                        waiter.wake_all(word);
                    }
                    return;
                }
                Err(now) => s = now,
            }
        }
    }

    #[inline]
    fn try_lock_exclusive(area: &LockArea) -> bool {
        let word = lock_word(area);
        let s = word.load(Relaxed);
        s & (WRITER | READERS) == 0
            // Acquire: pairs with the Release in unlock_shared / unlock_exclusive.
            && word
                .compare_exchange(s, (s & PARKED) | WRITER, Acquire, Relaxed)
                .is_ok()
    }

    fn lock_exclusive(area: &LockArea, waiter: Waiter<'_>, deadline: Option<Instant>) -> bool {
        let word = lock_word(area);
        // Acquire: pairs with the Release in unlock_shared / unlock_exclusive.
        if word.compare_exchange(0, WRITER, Acquire, Relaxed).is_ok() {
            return true;
        }
        let mut spin = SpinWait::new();
        loop {
            let s = word.load(Relaxed);
            if s & (WRITER | READERS) == 0 {
                // Taking the lock clears WRITER_WAITING (ours or another writer's; a writer
                // still waiting sets it again) and keeps PARKED for the sleepers.
                // Acquire: pairs with the Release in unlock_shared / unlock_exclusive.
                if word
                    .compare_exchange_weak(s, (s & PARKED) | WRITER, Acquire, Relaxed)
                    .is_ok()
                {
                    return true;
                }
                continue;
            }
            if s & WRITER_WAITING == 0 {
                // Relaxed: only a hint to readers; no data is published by it.
                let _ = word.compare_exchange_weak(s, s | WRITER_WAITING, Relaxed, Relaxed);
                continue;
            }
            if spin.spin() {
                continue;
            }
            if deadline_passed(deadline) {
                // Withdraw our announcement so readers held back by it can go on; other
                // waiting writers are woken and announce themselves again.
                let prev = word.fetch_and(!(WRITER_WAITING | PARKED), Relaxed);
                if prev & PARKED != 0 {
                    waiter.wake_all(word);
                }
                return false;
            }
            if s & PARKED == 0
                && word
                    .compare_exchange(s, s | PARKED, Relaxed, Relaxed)
                    .is_err()
            {
                continue;
            }
            waiter.wait(word, s | PARKED, deadline);
            spin = SpinWait::new();
        }
    }

    #[inline]
    unsafe fn unlock_exclusive(area: &LockArea, waiter: Waiter<'_>) {
        let word = lock_word(area);
        // Release: pairs with the Acquire of the next locker, publishing our data writes.
        if word.compare_exchange(WRITER, 0, Release, Relaxed).is_ok() {
            return;
        }
        // Clearing WRITER_WAITING lets readers woken now compete with the next writer.
        let prev = word.fetch_and(!(WRITER | WRITER_WAITING | PARKED), Release);
        if prev & PARKED != 0 {
            waiter.wake_all(word);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::header::tests::FakeRegion;
    use crate::header::HEADER_LEN;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    type L = SharedRwLock;

    /// A lock area in heap memory, with a process-local waiter.
    struct Fixture {
        region: FakeRegion,
        os: sys::Waiter,
    }

    impl Fixture {
        fn new() -> Self {
            let region = FakeRegion::zeroed(HEADER_LEN);
            L::init(&region.header().lock);
            Fixture {
                region,
                os: sys::Waiter::for_tests(),
            }
        }
        fn area(&self) -> &LockArea {
            &self.region.header().lock
        }
        fn waiter(&self) -> Waiter<'_> {
            Waiter::new(&self.os, &self.region.header().os_waiters)
        }
        fn state(&self) -> u32 {
            lock_word(self.area()).load(Relaxed)
        }
    }

    #[test]
    fn readers_share_writer_excludes() {
        let f = Fixture::new();
        assert!(L::try_lock_shared(f.area()));
        assert!(L::try_lock_shared(f.area()));
        assert_eq!(f.state() & READERS, 2);
        assert!(!L::try_lock_exclusive(f.area()));
        // SAFETY: two shared locks are held, released once each.
        unsafe {
            L::unlock_shared(f.area(), f.waiter());
        }
        // SAFETY: as above, second of the two.
        unsafe {
            L::unlock_shared(f.area(), f.waiter());
        }
        assert!(L::try_lock_exclusive(f.area()));
        assert!(!L::try_lock_shared(f.area()));
        assert!(!L::try_lock_exclusive(f.area()));
        // SAFETY: the exclusive lock is held.
        unsafe { L::unlock_exclusive(f.area(), f.waiter()) };
        assert_eq!(f.state(), 0);
    }

    #[test]
    fn waiting_writer_holds_back_new_readers() {
        let f = Fixture::new();
        assert!(L::try_lock_shared(f.area()));
        // A writer that fails announces itself (lock_exclusive with an expired deadline
        // still announces before giving up; emulate the announcement directly).
        lock_word(f.area()).fetch_or(WRITER_WAITING, Relaxed);
        assert!(
            !L::try_lock_shared(f.area()),
            "new readers must yield to a waiting writer"
        );
        // SAFETY: one shared lock is held.
        unsafe { L::unlock_shared(f.area(), f.waiter()) };
        assert!(L::try_lock_exclusive(f.area()));
        assert_eq!(
            f.state() & WRITER_WAITING,
            0,
            "taking the lock clears the announcement"
        );
        // SAFETY: the exclusive lock is held.
        unsafe { L::unlock_exclusive(f.area(), f.waiter()) };
    }

    #[test]
    fn timed_out_writer_withdraws_its_announcement() {
        let f = Fixture::new();
        assert!(L::try_lock_shared(f.area()));
        let deadline = Some(Instant::now() + Duration::from_millis(20));
        assert!(!L::lock_exclusive(f.area(), f.waiter(), deadline));
        assert_eq!(f.state() & WRITER_WAITING, 0);
        assert!(L::try_lock_shared(f.area()), "readers may enter again");
        // SAFETY: two shared locks are held.
        unsafe {
            L::unlock_shared(f.area(), f.waiter());
        }
        // SAFETY: as above, second of the two.
        unsafe {
            L::unlock_shared(f.area(), f.waiter());
        }
        assert_eq!(f.state() & READERS, 0);
    }

    #[test]
    fn timed_reader_times_out_while_writer_holds() {
        let f = Fixture::new();
        assert!(L::try_lock_exclusive(f.area()));
        let start = Instant::now();
        assert!(!L::lock_shared(
            f.area(),
            f.waiter(),
            Some(start + Duration::from_millis(20))
        ));
        assert!(start.elapsed() >= Duration::from_millis(20));
        // SAFETY: the exclusive lock is held.
        unsafe { L::unlock_exclusive(f.area(), f.waiter()) };
        assert_eq!(
            f.state(),
            0,
            "unlock clears PARKED left by the timed-out reader"
        );
    }

    #[test]
    fn corrupt_reader_count_does_not_underflow_into_flags() {
        let f = Fixture::new();
        lock_word(f.area()).store(WRITER_WAITING, Relaxed);
        // SAFETY: deliberately violates the contract to model a corrupt peer; the lock must
        // not turn it into a flag change.
        unsafe { L::unlock_shared(f.area(), f.waiter()) };
        assert_eq!(f.state(), WRITER_WAITING);
    }

    #[test]
    fn saturated_reader_count_refuses_more_readers() {
        let f = Fixture::new();
        lock_word(f.area()).store(READERS, Relaxed);
        assert!(!L::try_lock_shared(f.area()));
    }

    /// Threads contend on one area: the exclusive section is never shared and no update is lost.
    #[test]
    fn threads_never_overlap_in_the_exclusive_section() {
        let f = Arc::new(Fixture::new());
        let inside = Arc::new(AtomicU32::new(0));
        let counter = Arc::new(AtomicU32::new(0));
        let iterations = if cfg!(miri) { 20 } else { 20_000 };
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (f, inside, counter) = (f.clone(), inside.clone(), counter.clone());
                thread::spawn(move || {
                    for i in 0..iterations {
                        if (t + i) % 3 == 0 {
                            assert!(L::lock_exclusive(f.area(), f.waiter(), None));
                            assert_eq!(inside.fetch_add(1, Relaxed), 0, "writer not alone");
                            let c = counter.load(Relaxed);
                            counter.store(c + 1, Relaxed);
                            inside.fetch_sub(1, Relaxed);
                            // SAFETY: the exclusive lock is held.
                            unsafe { L::unlock_exclusive(f.area(), f.waiter()) };
                        } else {
                            assert!(L::lock_shared(f.area(), f.waiter(), None));
                            assert!(inside.load(Relaxed) == 0, "reader saw a writer inside");
                            // SAFETY: a shared lock is held.
                            unsafe { L::unlock_shared(f.area(), f.waiter()) };
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let writes: u32 = (0..4u32)
            .map(|t| (0..iterations).filter(|i| (t + i) % 3 == 0).count() as u32)
            .sum();
        assert_eq!(counter.load(Relaxed), writes);
        assert_eq!(f.state() & (WRITER | READERS), 0);
    }

    /// A writer blocked behind a stream of readers gets in (writer preference).
    #[test]
    fn writer_is_not_starved_by_reader_stream() {
        let f = Arc::new(Fixture::new());
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (f, stop) = (f.clone(), stop.clone());
                thread::spawn(move || {
                    while !stop.load(Relaxed) {
                        assert!(L::lock_shared(f.area(), f.waiter(), None));
                        thread::yield_now();
                        // SAFETY: a shared lock is held.
                        unsafe { L::unlock_shared(f.area(), f.waiter()) };
                    }
                })
            })
            .collect();
        let rounds = if cfg!(miri) { 3 } else { 200 };
        for _ in 0..rounds {
            let deadline = Some(Instant::now() + Duration::from_secs(10));
            assert!(
                L::lock_exclusive(f.area(), f.waiter(), deadline),
                "writer starved"
            );
            // SAFETY: the exclusive lock is held.
            unsafe { L::unlock_exclusive(f.area(), f.waiter()) };
        }
        stop.store(true, Relaxed);
        for r in readers {
            r.join().unwrap();
        }
    }
}
