//! The lock's state machine under loom: `RUSTFLAGS="--cfg loom" cargo test -p mmf --lib
//! --release loom`. Each "process" is a thread with its own handle slot; a dead process is a
//! thread that stops without unlocking and then tells the liveness oracle it is dead.

use super::layout::*;
use super::*;
use crate::sync::Ordering::{Acquire, Release, SeqCst};
use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicBool;
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::AtomicUsize;

type L = SharedRwLock;

fn token_slot(token: u32) -> usize {
    SharedRwLock::token_slot(token)
}

struct World {
    area: LockArea,
    futex: ModelFutex,
    dead: [AtomicBool; 4],
    tokens: [u32; 4],
    /// The kernel's byte locks, per slot: `(handle + 1) | pid << 8` of the holder, 0 if
    /// free. Outside the model (std atomics): the kernel is not what is checked here.
    bytes: [std::sync::atomic::AtomicU32; SLOTS],
    data: UnsafeCell<u32>,
}

/// The liveness oracle of handle `handle` of process `pid`, answering as the kernel does
/// about open-file-description locks: a byte held by another handle whose process has
/// not died is alive; a byte nobody holds, or whose holder died, is free (dead); and a
/// byte held by the asking handle itself reads free too, as its own lock does not
/// conflict with itself. Holders without a byte are answered by pid.
struct Kernel<'w> {
    world: &'w World,
    handle: usize,
    pid: u32,
}

impl Kernel<'_> {
    fn slot(byte: u32) -> usize {
        (byte as usize / 4 - CONTROL_WORDS) / SLOT_WORDS
    }
    fn pid_dead(&self, pid: u32) -> bool {
        self.world
            .dead
            .get(pid as usize)
            .map_or(true, |d| d.load(SeqCst))
    }
}

impl Presence for Kernel<'_> {
    fn hold(&self, byte: u32) -> Hold {
        let held = &self.world.bytes[Self::slot(byte)];
        let now = held.load(SeqCst);
        if now != 0 && !self.pid_dead(now >> 8) {
            return Hold::Busy;
        }
        held.store((self.handle as u32 + 1) | self.pid << 8, SeqCst);
        Hold::Held
    }
    fn release(&self, byte: u32) {
        self.world.bytes[Self::slot(byte)].store(0, SeqCst);
    }
    fn liveness(&self, holder: Holder) -> Liveness {
        let Some(byte) = holder.byte else {
            return if self.pid_dead(holder.id.pid) {
                Liveness::Dead
            } else {
                Liveness::Alive
            };
        };
        let now = self.world.bytes[Self::slot(byte)].load(SeqCst);
        if now == 0 || (now & 0xFF) as usize == self.handle + 1 || self.pid_dead(now >> 8) {
            Liveness::Dead
        } else {
            Liveness::Alive
        }
    }
}

// SAFETY: `data` is only touched under the lock, and loom reports any access that the
// lock failed to order; everything else in World is atomic.
unsafe impl Sync for World {}

impl World {
    /// A zeroed area with `n` handles attached, for pids 1..=n (token i for pid i+1).
    fn new(n: usize) -> Arc<Self> {
        let area = LockArea::new_zeroed();
        L::init(&area);
        let mut world = World {
            area,
            futex: ModelFutex::new(),
            dead: std::array::from_fn(|_| AtomicBool::new(false)),
            tokens: [UNTRACKED; 4],
            bytes: std::array::from_fn(|_| std::sync::atomic::AtomicU32::new(0)),
            data: UnsafeCell::new(0),
        };
        for i in 0..n {
            let token = world.with_ctx(i, i as u32 + 1, UNTRACKED, |area, ctx| {
                L::attach(
                    area,
                    ctx,
                    ProcessId {
                        pid: i as u32 + 1,
                        start: 7,
                    },
                )
            });
            world.tokens[i] = token;
        }
        Arc::new(world)
    }

    /// Runs `f` as handle `handle` of process `pid`, with lock token `token`.
    fn with_ctx<R>(
        &self,
        handle: usize,
        pid: u32,
        token: u32,
        f: impl FnOnce(&LockArea, &Context<'_>) -> R,
    ) -> R {
        let kernel = Kernel {
            world: self,
            handle,
            pid,
        };
        let ctx = Context::new(Waiter::model(&self.futex), token, Duration::ZERO, &kernel);
        f(&self.area, &ctx)
    }

    /// Runs `f` as handle `i` (pid i + 1).
    fn as_handle<R>(&self, i: usize, f: impl FnOnce(&LockArea, &Context<'_>) -> R) -> R {
        self.with_ctx(i, i as u32 + 1, self.tokens[i], f)
    }

    fn die(&self, i: usize) {
        self.dead[i + 1].store(true, SeqCst);
        self.futex.death();
    }

    fn word(&self) -> u32 {
        L::control(&self.area, LOCK).load(SeqCst)
    }
}

/// Runs `f` under loom and prints how many interleavings were explored.
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) {
    let explored = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = explored.clone();
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    // A waiter's sleep is a yield here (a spurious wake-up), so waiting loops run more
    // rounds than natively; the bound only guards against a real livelock.
    builder.max_branches = 50_000;
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    let explored = explored.load(std::sync::atomic::Ordering::Relaxed);
    println!("loom {name}: {explored} interleavings explored");
}

fn write_data(world: &World, i: usize) -> Result<Acquired, NotAcquired> {
    world.as_handle(i, |area, ctx| {
        let got = L::lock_exclusive(area, ctx, None);
        assert!(got.is_ok());
        // SAFETY: under the exclusive lock; loom reports a race if exclusion fails.
        world.data.with_mut(|d| unsafe { *d += 1 });
        // SAFETY: taken just above through this handle.
        unsafe { L::unlock_exclusive(area, ctx) };
        got
    })
}

fn read_data(world: &World, i: usize) -> u32 {
    world.as_handle(i, |area, ctx| {
        assert!(L::lock_shared(area, ctx, None).is_ok());
        // SAFETY: under a shared lock; loom reports a race with an unexcluded writer.
        let value = world.data.with(|d| unsafe { *d });
        // SAFETY: taken just above through this handle.
        unsafe { L::unlock_shared(area, ctx) };
        value
    })
}

#[test]
fn loom_writer_and_readers_exclude() {
    model("exclusion", || {
        let world = World::new(3);
        let w = world.clone();
        let writer = thread::spawn(move || write_data(&w, 0));
        let r = world.clone();
        let reader = thread::spawn(move || read_data(&r, 1));
        let seen = read_data(&world, 2);
        assert!(seen <= 1);
        assert_eq!(writer.join().unwrap(), Ok(Acquired::Clean));
        assert!(reader.join().unwrap() <= 1);
        assert_eq!(world.word() & WRITER, 0);
    });
}

#[test]
fn loom_two_writers_exclude() {
    model("two writers", || {
        let world = World::new(2);
        let w = world.clone();
        let other = thread::spawn(move || write_data(&w, 0));
        assert_eq!(write_data(&world, 1), Ok(Acquired::Clean));
        assert_eq!(other.join().unwrap(), Ok(Acquired::Clean));
        assert_eq!(read_data(&world, 0), 2);
    });
}

#[test]
fn loom_waiting_writer_blocks_new_readers() {
    model("writer preference", || {
        let world = World::new(3);
        world.as_handle(0, |area, ctx| {
            assert!(L::lock_shared(area, ctx, None).is_ok())
        });
        let w = world.clone();
        let writer = thread::spawn(move || write_data(&w, 1));
        // Wait until the writer has claimed the lock (it then waits for our read lock).
        while world.word() & WRITER == 0 {
            thread::yield_now();
        }
        world.as_handle(2, |area, ctx| {
            assert_eq!(
                L::try_lock_shared(area, ctx),
                Err(NotAcquired::Unavailable),
                "a new reader got past a waiting writer"
            );
        });
        // SAFETY: the shared lock taken above through handle 0.
        world.as_handle(0, |area, ctx| unsafe { L::unlock_shared(area, ctx) });
        assert_eq!(writer.join().unwrap(), Ok(Acquired::Clean));
    });
}

/// Recovery as the lock does it, from inside `lock_shared` and `lock_exclusive`. That the
/// slot is taken back exactly once is asserted by the two models after this one, which
/// call `reclaim_if_dead` directly and can count its successes.
#[test]
fn loom_dead_writer_is_recovered_and_poisons() {
    model("dead writer", || {
        let world = World::new(3);
        let v = world.clone();
        let victim = thread::spawn(move || {
            v.as_handle(0, |area, ctx| {
                assert!(L::lock_exclusive(area, ctx, None).is_ok());
            });
            // Dies holding the lock.
            v.die(0);
        });
        let r = world.clone();
        let reader = thread::spawn(move || {
            r.as_handle(1, |area, ctx| {
                let got = L::lock_shared(area, ctx, None);
                // SAFETY: taken just above.
                unsafe { L::unlock_shared(area, ctx) };
                got
            })
        });
        let mine = write_data(&world, 2);
        victim.join().unwrap();
        let theirs = reader.join().unwrap();
        assert!(mine.is_ok() && theirs.is_ok());
        // The victim may have taken the lock after both finished; one more acquisition
        // then recovers it. Either way the lock ends free and poisoned, and the victim's
        // slot free.
        let last = world.as_handle(1, |area, ctx| {
            let got = L::lock_shared(area, ctx, None);
            // SAFETY: taken just above.
            unsafe { L::unlock_shared(area, ctx) };
            got
        });
        assert_eq!(last, Ok(Acquired::Poisoned));
        assert_eq!(world.word() & (WRITER | OWNER | POISONED), POISONED);
        let tag = L::slot_word(&world.area, token_slot(world.tokens[0]), 0).load(SeqCst);
        assert_eq!(tag & SLOT_STATE, SLOT_FREE);
    });
}

#[test]
fn loom_dead_reader_is_recovered_without_poison() {
    model("dead reader", || {
        let world = World::new(3);
        let v = world.clone();
        let victim = thread::spawn(move || {
            v.as_handle(0, |area, ctx| {
                assert!(L::lock_shared(area, ctx, None).is_ok());
            });
            v.die(0);
        });
        let r = world.clone();
        let reader = thread::spawn(move || read_data(&r, 1));
        assert_eq!(write_data(&world, 2), Ok(Acquired::Clean));
        victim.join().unwrap();
        reader.join().unwrap();
        assert_eq!(world.word() & POISONED, 0);
    });
}

/// Two recoverers find the same dead writer's slot at once and call the real
/// `reclaim_if_dead`: exactly one takes it back, and the slot and the lock word end as
/// one recovery leaves them (free, same generation; lock released and poisoned).
#[test]
fn loom_two_recoverers_reclaim_a_dead_slot_exactly_once() {
    model("two recoverers", || {
        let world = World::new(3);
        world.as_handle(0, |area, ctx| {
            assert_eq!(L::lock_exclusive(area, ctx, None), Ok(Acquired::Clean));
        });
        world.die(0);
        let slot = token_slot(world.tokens[0]);
        let tag_word = L::slot_word(&world.area, slot, 0);
        let generation = tag_word.load(SeqCst) & SLOT_GEN;
        let w = world.clone();
        let other =
            thread::spawn(move || w.as_handle(1, |area, ctx| L::reclaim_if_dead(area, ctx, slot)));
        let mine = world.as_handle(2, |area, ctx| L::reclaim_if_dead(area, ctx, slot));
        let theirs = other.join().unwrap();
        assert!(
            mine != theirs,
            "the dead slot was taken back {} times",
            u8::from(mine) + u8::from(theirs)
        );
        assert_eq!(world.word(), POISONED);
        assert_eq!(tag_word.load(SeqCst), SLOT_FREE | generation);
    });
}

/// A stale recoverer read a dead process's slot; meanwhile another recoverer takes the
/// slot back, its process claims the slot again (`attach`, the only free slot) and takes
/// a read lock through it. The dead process's share is taken back exactly once, and the
/// new owner's slot, with its read lock, is left alone.
#[test]
fn loom_stale_recoverer_cannot_take_a_reclaimed_and_reused_slot() {
    model("stale recoverer", || {
        let world = World::new(3);
        world.as_handle(0, |area, ctx| {
            assert!(L::lock_shared(area, ctx, None).is_ok());
        });
        world.die(0);
        let slot = token_slot(world.tokens[0]);
        let tag_word = L::slot_word(&world.area, slot, 0);
        let generation = tag_word.load(SeqCst) & SLOT_GEN;
        let w = world.clone();
        let stale =
            thread::spawn(move || w.as_handle(1, |area, ctx| L::reclaim_if_dead(area, ctx, slot)));
        let won = world.as_handle(2, |area, ctx| L::reclaim_if_dead(area, ctx, slot));
        // Whoever won, the slot is free once its recovery is complete.
        while tag_word.load(SeqCst) & SLOT_STATE != SLOT_FREE {
            thread::yield_now();
        }
        // Process 3 (alive) opens a second handle (handle 3).
        let me = ProcessId { pid: 3, start: 7 };
        let reborn = world.with_ctx(3, 3, UNTRACKED, |area, ctx| L::attach(area, ctx, me));
        assert_eq!(token_slot(reborn), slot, "the only free slot");
        let got = world.with_ctx(3, 3, reborn, |area, ctx| L::lock_shared(area, ctx, None));
        assert_eq!(got, Ok(Acquired::Clean));
        let stale_won = stale.join().unwrap();
        assert!(
            won != stale_won,
            "the dead slot was taken back {} times",
            u8::from(won) + u8::from(stale_won)
        );
        let next_generation = generation.wrapping_add(SLOT_GEN_ONE) & SLOT_GEN;
        assert_eq!(
            tag_word.load(SeqCst),
            SLOT_ACTIVE | next_generation | SLOT_HELD | 1,
            "the new owner's slot or its read lock was taken"
        );
        // SAFETY: the shared lock taken just above through the reborn handle.
        world.with_ctx(3, 3, reborn, |area, ctx| unsafe {
            L::unlock_shared(area, ctx)
        });
        assert_eq!(
            tag_word.load(SeqCst),
            SLOT_ACTIVE | next_generation | SLOT_HELD
        );
        assert_eq!(world.word(), 0);
    });
}

/// A writer whose deadline passes while a reader is inside (`Some(Instant::now())` has
/// passed by the time it looks) withdraws `WRITER` and `DRAINING` and wakes whoever sleeps
/// behind its claim, a reader or another writer: a lost wake-up leaves that one asleep
/// for ever, which loom reports as a deadlock.
#[test]
fn loom_timed_out_writer_withdraws_and_wakes_those_behind_it() {
    for behind_writes in [false, true] {
        let name = if behind_writes {
            "timed-out writer, writer behind"
        } else {
            "timed-out writer, reader behind"
        };
        model(name, move || {
            let world = World::new(3);
            world.as_handle(0, |area, ctx| {
                assert!(L::lock_shared(area, ctx, None).is_ok());
            });
            let w = world.clone();
            let timed_out = thread::spawn(move || {
                w.as_handle(1, |area, ctx| {
                    L::lock_exclusive(area, ctx, Some(Instant::now()))
                })
            });
            let b = world.clone();
            let behind = thread::spawn(move || {
                if behind_writes {
                    assert_eq!(write_data(&b, 2), Ok(Acquired::Clean));
                } else {
                    assert_eq!(read_data(&b, 2), 0);
                }
            });
            assert_eq!(
                timed_out.join().unwrap(),
                Err(NotAcquired::Unavailable),
                "got in past a read lock"
            );
            // SAFETY: the shared lock taken above through handle 0.
            world.as_handle(0, |area, ctx| unsafe { L::unlock_shared(area, ctx) });
            behind.join().unwrap();
            assert_eq!(world.word(), 0, "a claim (or a PARKED bit) was left behind");
            assert_eq!(L::control(&world.area, DRAIN).load(SeqCst), 0);
        });
    }
}

/// A holder wrongly judged dead (its thread runs on) while another handle waits for the
/// write lock: whatever the robbed one still does (take the lock, release it, or be told
/// it was revoked), it never releases the other's write lock, and the lock ends free.
#[test]
fn loom_robbed_writer_never_releases_the_recoverers_lock() {
    model("robbed writer", || {
        let world = World::new(2);
        let a = world.clone();
        let robbed = thread::spawn(move || {
            a.as_handle(0, |area, ctx| match L::lock_exclusive(area, ctx, None) {
                Ok(_) => {
                    // SAFETY: taken just above through this handle.
                    unsafe { L::unlock_exclusive(area, ctx) };
                    true
                }
                Err(not) => {
                    assert_eq!(not, NotAcquired::Revoked);
                    false
                }
            })
        });
        // Judged dead from the start, though its thread runs on.
        world.die(0);
        let mine = WRITER | SharedRwLock::token_owner(world.tokens[1]);
        world.as_handle(1, |area, ctx| {
            assert!(L::lock_exclusive(area, ctx, None).is_ok());
            assert_eq!(
                world.word() & (WRITER | OWNED_BY),
                mine,
                "released by another"
            );
            // SAFETY: taken just above through this handle.
            unsafe { L::unlock_exclusive(area, ctx) };
        });
        let robbed_took_it = robbed.join().unwrap();
        assert_eq!(world.word() & WRITER, 0, "nothing left held");
        if !robbed_took_it {
            assert!(
                world.as_handle(0, |area, ctx| L::revoked(area, ctx)),
                "told it was revoked only if its slot was taken"
            );
        }
    });
}

/// `Mmf::wait_for_write`'s sleep: a waiter that looks at a write sequence and sleeps
/// until it changes is woken by the release of every write that changes it, however the
/// look, the announcement (`PARKED`) and the sleep interleave with the writer's lock,
/// sequence bump and unlock. Two writes, so the waiter also re-arms after a wake-up or
/// finds the bit still set. A lost wake-up leaves the waiter asleep: a deadlock loom
/// reports.
#[test]
fn loom_write_waiter_is_woken_by_every_release() {
    model("write waiter", || {
        let world = World::new(2);
        let seq = Arc::new(AtomicU32::new(0));
        let (w, s) = (world.clone(), seq.clone());
        let writer = thread::spawn(move || {
            w.as_handle(0, |area, ctx| {
                let ctx = &ctx.with_release_word(&s);
                for n in 1..=2 {
                    assert!(L::lock_exclusive(area, ctx, None).is_ok());
                    // As WriteGuard::drop: the sequence, then the unlock.
                    s.store(2 * n, Release);
                    // SAFETY: taken just above through this handle.
                    unsafe { L::unlock_exclusive(area, ctx) };
                }
            });
        });
        world.as_handle(1, |area, ctx| {
            let ctx = &ctx.with_release_word(&seq);
            for n in 1..=2 {
                let seen = 2 * (n - 1);
                loop {
                    let raw = seq.load(Acquire);
                    if raw != seen {
                        break;
                    }
                    L::wait_for_release(area, ctx, &seq, raw, None);
                }
            }
        });
        writer.join().unwrap();
        assert_eq!(world.word() & (WRITER | OWNED_BY), 0);
    });
}

/// Killed between counting itself in and checking the lock word: the count is all that
/// is left, and the writer must still get in.
#[test]
fn loom_reader_killed_mid_entry_is_recovered() {
    model("reader killed mid-entry", || {
        let world = World::new(2);
        let v = world.clone();
        let victim = thread::spawn(move || {
            let tag = L::slot_word(&v.area, token_slot(v.tokens[0]), 0);
            tag.fetch_add(1, SeqCst);
            v.die(0);
        });
        assert_eq!(write_data(&world, 1), Ok(Acquired::Clean));
        victim.join().unwrap();
    });
}
