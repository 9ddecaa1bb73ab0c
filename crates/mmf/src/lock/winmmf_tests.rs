//! Unit tests of [`WinMmfLock`]'s state machine, on a heap-allocated area: the exact words
//! winmmf 0.6 reads and writes, exclusion, try and timed acquisitions, the uninitialised
//! word, and words another process corrupted.

use super::winmmf::{self, Busy, READERS, UNINITIALISED, WRITER};
use super::*;
use crate::sync::Ordering::{Acquire, Release};
use crate::sys;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::thread;

type L = WinMmfLock;

/// A zeroed, initialised area and what a [`Context`] needs (the lock uses none of it).
struct Fixture {
    area: Box<LockArea>,
    sleepers: std::sync::atomic::AtomicU32,
    os: sys::Waiter,
    presence: fn(ProcessId) -> Liveness,
}

impl Fixture {
    fn new() -> Self {
        let area = Box::new(LockArea::new_zeroed());
        // Garbage where the default lock would keep its state: this lock must ignore it.
        for word in &area.words()[1..] {
            word.store(0xDEAD_BEEF, Relaxed);
        }
        L::init(&area);
        Fixture {
            area,
            sleepers: std::sync::atomic::AtomicU32::new(0),
            os: sys::Waiter::for_tests(),
            presence: |_| Liveness::Alive,
        }
    }
    fn ctx(&self) -> Context<'_> {
        Context::new(
            Waiter::new(&self.os, &self.sleepers),
            0,
            Duration::from_millis(10),
            &self.presence,
        )
    }
    fn word(&self) -> u32 {
        self.area.words()[0].load(Relaxed)
    }
    fn set(&self, value: u32) {
        self.area.words()[0].store(value, Relaxed);
    }
}

#[test]
fn the_words_are_winmmfs_zero_free_one_per_reader_bit_31_for_the_writer() {
    let f = Fixture::new();
    let (area, ctx) = (&*f.area, f.ctx());
    assert_eq!(
        f.word(),
        0,
        "init leaves winmmf's initialised, unlocked word"
    );
    assert_eq!(L::try_lock_shared(area, &ctx), Ok(Acquired::Clean));
    assert_eq!(f.word(), 1);
    assert_eq!(L::lock_shared(area, &ctx, None), Ok(Acquired::Clean));
    assert_eq!(
        f.word(),
        2,
        "read locks are recursive: no writer preference"
    );
    for _ in 0..2 {
        // SAFETY: two read locks are held, released once each.
        unsafe { L::unlock_shared(area, &ctx) };
    }
    assert_eq!(f.word(), 0);
    assert_eq!(L::try_lock_exclusive(area, &ctx), Ok(Acquired::Clean));
    assert_eq!(f.word(), 0x8000_0000);
    // SAFETY: the write lock is held, released once.
    unsafe { L::unlock_exclusive(area, &ctx) };
    assert_eq!(f.word(), 0);
    for (i, word) in f.area.words().iter().enumerate().skip(1) {
        assert_eq!(word.load(Relaxed), 0xDEAD_BEEF, "word {i} touched");
    }
    assert!(!L::is_poisoned(area));
}

#[test]
fn a_writer_excludes_readers_and_writers_and_readers_exclude_writers() {
    let f = Fixture::new();
    let (area, ctx) = (&*f.area, f.ctx());
    assert!(L::try_lock_exclusive(area, &ctx).is_ok());
    assert_eq!(
        L::try_lock_shared(area, &ctx),
        Err(NotAcquired::Unavailable)
    );
    assert_eq!(
        L::try_lock_exclusive(area, &ctx),
        Err(NotAcquired::Unavailable)
    );
    assert_eq!(f.word(), WRITER, "failed attempts change nothing");
    // SAFETY: the write lock is held, released once.
    unsafe { L::unlock_exclusive(area, &ctx) };
    assert!(L::try_lock_shared(area, &ctx).is_ok());
    assert_eq!(
        L::try_lock_exclusive(area, &ctx),
        Err(NotAcquired::Unavailable)
    );
    assert_eq!(f.word(), 1);
    // SAFETY: one read lock is held, released once.
    unsafe { L::unlock_shared(area, &ctx) };
    assert!(L::try_lock_exclusive(area, &ctx).is_ok());
}

#[test]
fn an_uninitialised_word_is_never_locked_and_waiters_get_in_once_it_is_initialised() {
    let f = Fixture::new();
    let (area, ctx) = (&*f.area, f.ctx());
    f.set(UNINITIALISED);
    assert_eq!(
        winmmf::try_read(&f.area.words()[0]),
        Err(Busy::Uninitialised)
    );
    assert_eq!(
        winmmf::try_write(&f.area.words()[0]),
        Err(Busy::Uninitialised)
    );
    let soon = Some(Instant::now() + Duration::from_millis(5));
    assert_eq!(
        L::lock_shared(area, &ctx, soon),
        Err(NotAcquired::Unavailable)
    );
    assert_eq!(
        L::lock_exclusive(area, &ctx, soon),
        Err(NotAcquired::Unavailable)
    );
    assert_eq!(
        f.word(),
        UNINITIALISED,
        "nothing is counted on an uninitialised word"
    );
    // Releases on it change nothing either (a corrupt word, not ours to fix).
    // SAFETY: no lock is held; the lock must tolerate a corrupt word without UB.
    unsafe { L::unlock_shared(area, &ctx) };
    // SAFETY: as above.
    unsafe { L::unlock_exclusive(area, &ctx) };
    assert_eq!(f.word(), UNINITIALISED);
    // Any top byte other than 0xFF is initialised: `W` with six unused bits set too.
    f.set(0x7E00_0000 | WRITER);
    assert_eq!(winmmf::try_read(&f.area.words()[0]), Err(Busy::Writer));
    // `W` with all seven unused bits set reads as uninitialised, as in winmmf.
    f.set(0x7F00_0000 | WRITER);
    assert_eq!(
        winmmf::try_read(&f.area.words()[0]),
        Err(Busy::Uninitialised)
    );

    // A waiter spinning on an uninitialised word gets in once winmmf's creator changes it.
    f.set(UNINITIALISED);
    thread::scope(|s| {
        let waiter = s.spawn(|| L::lock_exclusive(area, &f.ctx(), None));
        thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished(), "locked an uninitialised word");
        // What winmmf's `set_init` does.
        let _ = f.area.words()[0].compare_exchange(UNINITIALISED, 0, Release, Relaxed);
        assert_eq!(waiter.join().unwrap(), Ok(Acquired::Clean));
    });
    assert_eq!(f.word(), WRITER);
}

#[test]
fn unused_bits_are_kept_as_found_by_every_change() {
    let f = Fixture::new();
    let (area, ctx) = (&*f.area, f.ctx());
    let unused = 0x0100_0000;
    f.set(unused);
    assert!(L::try_lock_shared(area, &ctx).is_ok());
    assert_eq!(f.word(), unused | 1);
    // SAFETY: one read lock is held, released once.
    unsafe { L::unlock_shared(area, &ctx) };
    assert!(L::try_lock_exclusive(area, &ctx).is_ok());
    assert_eq!(f.word(), unused | WRITER);
    // SAFETY: the write lock is held, released once.
    unsafe { L::unlock_exclusive(area, &ctx) };
    assert_eq!(f.word(), unused);
}

#[test]
fn the_reader_count_saturates_at_24_bits_rather_than_overflowing_into_the_top_byte() {
    let f = Fixture::new();
    let (area, ctx) = (&*f.area, f.ctx());
    f.set(READERS - 1);
    assert!(L::try_lock_shared(area, &ctx).is_ok());
    assert_eq!(f.word(), READERS);
    assert_eq!(winmmf::try_read(&f.area.words()[0]), Err(Busy::Readers));
    assert_eq!(
        L::try_lock_exclusive(area, &ctx),
        Err(NotAcquired::Unavailable)
    );
    assert_eq!(f.word(), READERS, "a full count stays below the top byte");
}

#[test]
fn releases_of_what_the_word_does_not_hold_change_nothing() {
    let f = Fixture::new();
    let (area, ctx) = (&*f.area, f.ctx());
    assert!(
        !winmmf::unlock_read(&f.area.words()[0]),
        "no reader to release"
    );
    assert!(
        !winmmf::unlock_write(&f.area.words()[0]),
        "no writer to release"
    );
    assert_eq!(f.word(), 0);
    f.set(WRITER);
    assert!(
        !winmmf::unlock_read(&f.area.words()[0]),
        "a read unlock under W"
    );
    assert_eq!(f.word(), WRITER);
    f.set(3);
    assert!(
        !winmmf::unlock_write(&f.area.words()[0]),
        "a write unlock without W"
    );
    assert_eq!(f.word(), 3);
    // Impossible under the protocol: the writer's release still clears its bit.
    f.set(WRITER | 3);
    // SAFETY: stands for the writer that set `W`; the lock must survive the readers' bits.
    unsafe { L::unlock_exclusive(area, &ctx) };
    assert_eq!(f.word(), 3);
}

#[test]
fn timed_acquisitions_give_up_at_their_deadline_and_try_never_waits() {
    let f = Fixture::new();
    let (area, ctx) = (&*f.area, f.ctx());
    assert!(L::try_lock_exclusive(area, &ctx).is_ok());
    let timeout = Duration::from_millis(30);
    let start = Instant::now();
    assert_eq!(
        L::lock_shared(area, &ctx, Some(start + timeout)),
        Err(NotAcquired::Unavailable)
    );
    let waited = start.elapsed();
    assert!(waited >= timeout, "gave up early, after {waited:?}");
    assert!(
        waited < timeout + Duration::from_secs(2),
        "overslept: {waited:?}"
    );
    let start = Instant::now();
    assert_eq!(
        L::lock_exclusive(area, &ctx, Some(start)),
        Err(NotAcquired::Unavailable)
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(f.word(), WRITER);
}

#[test]
fn a_blocked_writer_gets_in_when_the_readers_leave() {
    let f = Fixture::new();
    let area = &*f.area;
    assert!(L::try_lock_shared(area, &f.ctx()).is_ok());
    thread::scope(|s| {
        let writer = s.spawn(|| {
            let got = L::lock_exclusive(
                area,
                &f.ctx(),
                Some(Instant::now() + Duration::from_secs(10)),
            );
            if got.is_ok() {
                // SAFETY: the write lock just taken, released once.
                unsafe { L::unlock_exclusive(area, &f.ctx()) };
            }
            got
        });
        thread::sleep(Duration::from_millis(20));
        assert!(!writer.is_finished(), "a writer got in past a reader");
        // SAFETY: the read lock taken above, released once.
        unsafe { L::unlock_shared(area, &f.ctx()) };
        assert_eq!(writer.join().unwrap(), Ok(Acquired::Clean));
    });
    assert_eq!(f.word(), 0);
}

/// Writers keep two counters equal under the write lock; readers check them under the read
/// lock. A broken exclusion shows as a reader seeing them differ, or as lost increments.
#[test]
fn threads_never_see_a_write_half_done() {
    let f = Arc::new(Fixture::new());
    let pair = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let torn = Arc::new(AtomicBool::new(false));
    let rounds = if cfg!(miri) { 20 } else { 2000 };
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let (f, pair, torn) = (f.clone(), pair.clone(), torn.clone());
            thread::spawn(move || {
                let ctx = f.ctx();
                for _ in 0..rounds {
                    if t % 2 == 0 {
                        assert!(L::lock_exclusive(&f.area, &ctx, None).is_ok());
                        // Relaxed: the lock orders these; a second writer inside would lose
                        // an increment or be seen half-way.
                        let a = pair.0.load(Relaxed);
                        pair.0.store(a + 1, Relaxed);
                        std::hint::spin_loop();
                        pair.1.store(pair.1.load(Relaxed) + 1, Relaxed);
                        // SAFETY: the write lock taken above, released once.
                        unsafe { L::unlock_exclusive(&f.area, &ctx) };
                    } else {
                        assert!(L::lock_shared(&f.area, &ctx, None).is_ok());
                        // Acquire/Relaxed: the lock orders them; a writer inside shows as a
                        // difference.
                        if pair.0.load(Acquire) != pair.1.load(Relaxed) {
                            torn.store(true, Relaxed);
                        }
                        // SAFETY: the read lock taken above, released once.
                        unsafe { L::unlock_shared(&f.area, &ctx) };
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert!(!torn.load(Relaxed), "a reader saw a write half done");
    assert_eq!(pair.0.load(Relaxed), 2 * rounds);
    assert_eq!(pair.1.load(Relaxed), 2 * rounds);
    assert_eq!(f.word(), 0);
}
