//! The default lock's protocol: how readers and the writer enter, wait and leave through
//! the lock word, the drain word and their slots' counts (module docs, "Fairness",
//! "Waiting" and "Releasing only what is still yours"), and [`SharedRwLock`]'s
//! [`RawRwLock`] implementation. The bits it moves are defined in `layout.rs`; the slot table
//! and recovery it calls on are in `slots.rs`.

use std::time::{Duration, Instant};

use super::layout::*;
use super::{Acquired, Context, Liveness, LockArea, NotAcquired, ProcessId, RawRwLock};
use crate::sync::Ordering::{self, Acquire, Relaxed, Release, SeqCst};
use crate::sync::{self, AtomicU32};

/// Bounded spinning before sleeping: rounds of 2, 4, ... 64 `spin_loop` hints (126 in all,
/// a few microseconds), then sleep.
///
/// No `sched_yield` rounds (parking_lot's `SpinWait` has them): on Linux's EEVDF scheduler a
/// task that yielded does not preempt the task that wakes it, so on a shared CPU a waiter that
/// yielded before sleeping was woken about 4x later than a bare futex waiter (about 10 us
/// against 2.2 us, `cargo bench -p mmf --bench wakeup`, case `futex_yields`); without them it
/// wakes as fast as the bare futex.
struct SpinWait {
    rounds: u32,
}

impl SpinWait {
    /// Under loom every spin is a scheduling point that multiplies the interleavings to
    /// explore, and sleeping is a yield anyway: go straight to sleep.
    const SPIN_ROUNDS: u32 = if cfg!(loom) { 0 } else { 6 };

    fn new() -> Self {
        SpinWait { rounds: 0 }
    }

    /// Spins once; returns `false` when it is time to sleep instead.
    #[cfg_attr(loom, allow(clippy::absurd_extreme_comparisons))]
    fn spin(&mut self) -> bool {
        if self.rounds >= Self::SPIN_ROUNDS {
            return false;
        }
        self.rounds += 1;
        for _ in 0..(1 << self.rounds) {
            sync::spin_loop();
        }
        true
    }
}

/// When a sleeper next checks its holders' liveness.
struct Recovery {
    interval: Duration,
    next: Option<Instant>,
}

impl Recovery {
    fn new(interval: Duration) -> Self {
        Recovery {
            interval,
            next: None,
        }
    }

    /// Called right before each sleep: whether a liveness check is due now. The first call
    /// starts the clock, so a waiter checks one interval after it first had to sleep, and then
    /// once per interval (every time if the interval is zero).
    fn due(&mut self) -> bool {
        let now = Instant::now();
        match self.next {
            Some(next) if now < next => false,
            Some(_) => {
                self.next = Some(now + self.interval);
                true
            }
            None => {
                self.next = Some(now + self.interval);
                self.interval.is_zero()
            }
        }
    }

    /// The end of the next sleep: the caller's deadline or the next check, whichever is first.
    fn wake_by(&self, deadline: Option<Instant>) -> Option<Instant> {
        match (deadline, self.next) {
            (Some(d), Some(n)) => Some(d.min(n)),
            (d, n) => d.or(n),
        }
    }
}

fn deadline_passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Result of one attempt to enter as a reader.
enum Enter {
    Acquired(Acquired),
    /// A writer has `WRITER`; the lock word as seen.
    Blocked(u32),
    /// The handle's read-lock count is at its maximum.
    Saturated,
    /// The handle's slot was taken back.
    Revoked,
}

impl SharedRwLock {
    /// Counts the handle in as a reader, then checks for a writer (undoing the count if
    /// there is one).
    #[inline]
    fn enter(area: &LockArea, ctx: &Context<'_>) -> Enter {
        let counter = Self::reader_word(area, ctx);
        let tracked = Self::slot_of(ctx).is_some();
        let mut t = counter.load(Relaxed);
        loop {
            // The compare-exchange below succeeds only on this very tag, so a slot taken back
            // from us is never counted in (it may be someone else's by now).
            if tracked && !Self::still_ours(t, ctx) {
                return Enter::Revoked;
            }
            if t & SLOT_READERS == SLOT_READERS {
                return Enter::Saturated;
            }
            // SeqCst: with the load of the lock word below this is one side of a Dekker pair;
            // the other is a writer's SeqCst compare-exchange setting WRITER followed by its
            // SeqCst loads of the counts (`readers_present`). In the single total order one of
            // us sees the other: either we see WRITER and back out, or the writer sees our
            // count and waits for it.
            match counter.compare_exchange_weak(t, t + 1, SeqCst, Relaxed) {
                Ok(_) => break,
                Err(now) => t = now,
            }
        }
        // SeqCst (so also Acquire): the Dekker load above; and it reads the value written by
        // the last writer's Release in unlock_exclusive, so that writer's data stores are
        // visible to this reader.
        let s = sync::load_sc(Self::control(area, LOCK));
        if s & WRITER == 0 {
            return Enter::Acquired(Acquired::from_word(s));
        }
        Self::leave(area, ctx);
        Enter::Blocked(s)
    }

    /// Counts the handle out as a reader and wakes a writer waiting for readers to leave.
    #[inline]
    fn leave(area: &LockArea, ctx: &Context<'_>) {
        let counter = Self::reader_word(area, ctx);
        let tracked = Self::slot_of(ctx).is_some();
        let mut t = counter.load(Relaxed);
        loop {
            if tracked && !Self::still_ours(t, ctx) {
                // Taken back while we held the read lock: the recoverer dropped our count with
                // the slot, and the slot may be someone else's now. Nothing of ours is left
                // to release; our next acquisition reports the revocation.
                return;
            }
            if t & SLOT_READERS == 0 {
                // Nothing to release: another process corrupted the slot. Leave it alone
                // rather than borrow from the state bits.
                return;
            }
            // SeqCst: Release for our reads of the data (the writer's SeqCst load of the
            // count acquires it), and one side of the drain Dekker pair: decrement, then load
            // the drain word; the draining writer stores the drain word, then loads the
            // counts. One of us sees the other, so the writer is never left asleep.
            match counter.compare_exchange_weak(t, t - 1, SeqCst, Relaxed) {
                Ok(_) => break,
                Err(now) => t = now,
            }
        }
        let drain = Self::control(area, DRAIN);
        // SeqCst: the drain Dekker load (see above). The swap is Relaxed: the futex call
        // orders the wake-up, and the writer re-checks the counts after waking.
        if sync::load_sc(drain) != 0 && drain.swap(0, Relaxed) != 0 {
            ctx.waiter.wake_all(drain);
        }
    }

    /// Clears `WRITER` (and the owner, `PARKED` and `DRAINING`) and wakes sleepers, if the
    /// write lock is still the handle's. Returns `false`, changing nothing, if it is not: a
    /// recoverer took it from us (see "Releasing only what is still yours").
    ///
    /// For a release that wrote nothing (a withdrawn claim, a timed-out writer). It clears
    /// `PARKED` too, so it can use up the announcement of a sleeper waiting for the next
    /// *write* ([`RawRwLock::wait_for_release`]) that came after the claim: that sleeper
    /// then sleeps until its next liveness check, one recovery interval at most (keeping the
    /// bit instead was tried, and breaks the lock's promise that a timed-out writer leaves
    /// the word clean; not pursued).
    fn release_writer(area: &LockArea, ctx: &Context<'_>) -> bool {
        Self::release_clearing(area, ctx, PARKED)
    }

    /// The release of a write: as [`release_writer`](Self::release_writer).
    fn release_write(area: &LockArea, ctx: &Context<'_>) -> bool {
        Self::release_clearing(area, ctx, PARKED)
    }

    fn release_clearing(area: &LockArea, ctx: &Context<'_>, parked: u32) -> bool {
        let lock = Self::control(area, LOCK);
        // Release: pairs with the Acquire (SeqCst) of the next locker, publishing our writes.
        match Self::change_own(
            lock,
            Self::owner_bits(ctx),
            |s| s & !(WRITER | OWNED_BY | DRAINING | parked),
            Release,
        ) {
            Some(s) => {
                if s & PARKED != 0 {
                    ctx.waiter.wake_all_and(lock, ctx.release_word);
                }
                true
            }
            None => false,
        }
    }

    /// Applies `change` to the lock word if, and only if, it still says that the handle whose
    /// owner field is `me` holds `WRITER`; returns the word as it was before, or `None`
    /// (changing nothing) if the write lock is no longer ours. `success` is the ordering of
    /// the compare-exchange that makes the change.
    fn change_own(
        lock: &AtomicU32,
        me: u32,
        change: impl Fn(u32) -> u32,
        success: Ordering,
    ) -> Option<u32> {
        let mut s = lock.load(Relaxed);
        loop {
            if s & WRITER == 0 || s & OWNED_BY != me {
                return None;
            }
            match lock.compare_exchange_weak(s, change(s), success, Relaxed) {
                Ok(_) => return Some(s),
                Err(now) => s = now,
            }
        }
    }

    /// Takes back a write claim that found readers inside (`try_lock_exclusive`): out of
    /// line, to keep the uncontended path short. [`NotAcquired::Revoked`] if the claim was
    /// taken from us meanwhile.
    ///
    /// The cold paths take the context by value (here and below): then the uncontended path
    /// that calls them builds it only on the way to the call, rather than storing its fields
    /// on the stack before every acquisition (see docs/benchmarks.md, issue 12).
    #[cold]
    fn withdraw_claim(area: &LockArea, ctx: Context<'_>) -> NotAcquired {
        if Self::release_writer(area, &ctx) {
            NotAcquired::Unavailable
        } else {
            NotAcquired::Revoked
        }
    }

    /// The write unlock when the word is not just "`W`, ours": sleepers to wake (`PARKED`),
    /// `POISONED` to keep, or the lock taken from us.
    #[cold]
    fn unlock_exclusive_slow(area: &LockArea, ctx: Context<'_>) {
        if !Self::release_write(area, &ctx) {
            // Robbed: a recoverer took the lock from us while we wrote.
            Self::poison_robbed(area);
        }
    }

    /// A writer that finds its write lock gone (taken by a recoverer that judged it dead)
    /// marks the data untrustworthy: what it wrote may have interleaved with the next
    /// writer's. The lock word's other bits (someone else's `WRITER` perhaps) stay as they
    /// are.
    fn poison_robbed(area: &LockArea) {
        // Release: our data writes, which the poisoned readers will now distrust, are at
        // least visible to whoever acquires after seeing the flag.
        Self::control(area, LOCK).fetch_or(POISONED, Release);
    }

    /// The slow half of `lock_shared`, which made the `first` attempt: spin, recover, sleep,
    /// until the read lock is ours or the deadline passes.
    ///
    /// It continues from that attempt rather than making a fresh one: with a fresh `enter`
    /// (and so one more count-in and count-out) before the first sleep, loom reported a
    /// deadlock in `loom_writer_and_readers_exclude` (every thread asleep, a reader in this
    /// loop's wait). An extra count-in and count-out should be harmless, so that result is
    /// not yet explained: either a wake-up race that the shape of this loop hides within
    /// loom's preemption bound, or an artefact of the model futex. Change this loop only
    /// with that in mind.
    #[cold]
    fn lock_shared_slow(
        area: &LockArea,
        ctx: Context<'_>,
        deadline: Option<Instant>,
        first: Enter,
    ) -> Result<Acquired, NotAcquired> {
        let ctx = &ctx;
        let lock = Self::control(area, LOCK);
        let mut spin = SpinWait::new();
        let mut recovery = Recovery::new(ctx.recovery_interval);
        // The fast path's attempt is this loop's first round.
        let mut attempt = Some(first);
        loop {
            let s = match attempt.take().unwrap_or_else(|| Self::enter(area, ctx)) {
                Enter::Acquired(acquired) => return Ok(acquired),
                Enter::Blocked(s) => s,
                Enter::Revoked => return Err(NotAcquired::Revoked),
                Enter::Saturated => {
                    // 2^17 - 1 read locks through one handle: only a leak gets here. Wait
                    // for one to be released, without a wake-up to rely on.
                    if deadline_passed(deadline) {
                        return Err(NotAcquired::Unavailable);
                    }
                    if !spin.spin() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    continue;
                }
            };
            if spin.spin() {
                continue;
            }
            if deadline_passed(deadline) {
                return Err(NotAcquired::Unavailable);
            }
            if recovery.due() && Self::recover_writer(area, ctx, s) {
                spin = SpinWait::new();
                continue;
            }
            // Relaxed: as in lock_exclusive_slow.
            if s & PARKED == 0
                && lock
                    .compare_exchange(s, s | PARKED, Relaxed, Relaxed)
                    .is_err()
            {
                continue;
            }
            ctx.waiter
                .wait(lock, s | PARKED, recovery.wake_by(deadline));
            spin = SpinWait::new();
        }
    }

    /// The slow half of `lock_exclusive`; `held` says whether `WRITER` is already ours.
    #[cold]
    fn lock_exclusive_slow(
        area: &LockArea,
        ctx: Context<'_>,
        deadline: Option<Instant>,
        mut held: bool,
    ) -> Result<Acquired, NotAcquired> {
        let ctx = &ctx;
        let lock = Self::control(area, LOCK);
        let me = Self::owner_bits(ctx);
        let mut spin = SpinWait::new();
        let mut recovery = Recovery::new(ctx.recovery_interval);
        while !held {
            let s = lock.load(Relaxed);
            if s & WRITER == 0 {
                // Keep PARKED for the sleepers and POISONED for everyone.
                // SeqCst: the writer's side of the Dekker pair in `enter`; also Acquire,
                // pairing with the Release of the last writer's unlock.
                if lock
                    .compare_exchange_weak(
                        s,
                        (s & (PARKED | POISONED)) | WRITER | me,
                        SeqCst,
                        Relaxed,
                    )
                    .is_ok()
                {
                    held = true;
                }
                continue;
            }
            if spin.spin() {
                continue;
            }
            if deadline_passed(deadline) {
                return Err(NotAcquired::Unavailable);
            }
            if recovery.due() && Self::recover_writer(area, ctx, s) {
                spin = SpinWait::new();
                continue;
            }
            // Announce the sleep so the releaser knows to wake us. Relaxed: the futex call
            // orders the wake-up; we re-check the word after waking.
            if s & PARKED == 0
                && lock
                    .compare_exchange(s, s | PARKED, Relaxed, Relaxed)
                    .is_err()
            {
                continue;
            }
            ctx.waiter
                .wait(lock, s | PARKED, recovery.wake_by(deadline));
            spin = SpinWait::new();
        }
        // WRITER is ours, so no new reader enters; wait for the ones inside to leave.
        let drain = Self::control(area, DRAIN);
        spin = SpinWait::new();
        let mut draining = false;
        loop {
            if !Self::readers_present(area) {
                // Every change here checks that WRITER is still ours: a recoverer that
                // judged us dead may have taken it, and then we must not write.
                let s = if draining {
                    // Acquire: our data accesses, which follow, cannot be ordered before this
                    // clear, so a recoverer that still finds DRAINING knows we wrote nothing.
                    Self::change_own(lock, me, |s| s & !DRAINING, Acquire)
                } else {
                    let s = lock.load(Relaxed);
                    (s & WRITER != 0 && s & OWNED_BY == me).then_some(s)
                };
                return s.map(Acquired::from_word).ok_or(NotAcquired::Revoked);
            }
            if !draining {
                // Relaxed: recoverers act on it only once the OS says we are dead, and they
                // read it with the compare-exchange that takes our WRITER away.
                if Self::change_own(lock, me, |s| s | DRAINING, Relaxed).is_none() {
                    return Err(NotAcquired::Revoked);
                }
                draining = true;
            }
            if spin.spin() {
                continue;
            }
            if deadline_passed(deadline) {
                drain.store(0, Relaxed);
                return Err(if Self::release_writer(area, ctx) {
                    NotAcquired::Unavailable
                } else {
                    NotAcquired::Revoked
                });
            }
            if recovery.due() && Self::recover_readers(area, ctx) {
                spin = SpinWait::new();
                continue;
            }
            // SeqCst: the writer's side of the drain Dekker pair (see `leave`): store, then
            // load the counts in `readers_present`.
            sync::store_sc(drain, 1);
            if !Self::readers_present(area) {
                // Relaxed: nobody needs to wake us any more.
                drain.store(0, Relaxed);
                continue;
            }
            ctx.waiter.wait(drain, 1, recovery.wake_by(deadline));
            spin = SpinWait::new();
        }
    }
}

// SAFETY: a shared holder is counted in its handle's slot (or the overflow word) and the
// exclusive holder sets WRITER. A reader counts itself in and then checks WRITER; a writer
// sets WRITER and then waits until every count is zero; both with SeqCst, so (Dekker) they
// never both proceed. Acquisitions synchronise with the previous release (SeqCst loads and
// compare-exchanges, which include Acquire, against Release stores and read-modify-writes).
// A holder's share is only taken back once the OS says it can no longer run (its kernel lock
// is gone, or its process is dead). KIND is unique to this protocol (it changed from "RWL1"
// when slots were added, from "RWL2" when the DRAINING bit was, and from "RWL3" when slots
// took kernel locks: an RWL3 peer holds none and would be declared dead).
unsafe impl RawRwLock for SharedRwLock {
    const KIND: u32 = u32::from_be_bytes(*b"RWL4");

    fn init(area: &LockArea) {
        // Relaxed: the header's Release store of STATE_READY publishes these to openers.
        for word in area.words.iter() {
            word.store(0, Relaxed);
        }
    }

    fn attach(area: &LockArea, ctx: &Context<'_>, me: ProcessId) -> u32 {
        Self::claim_slot(area, ctx, me)
    }

    fn detach(area: &LockArea, ctx: &Context<'_>) {
        Self::free_slot(area, ctx)
    }

    #[inline]
    fn try_lock_shared(area: &LockArea, ctx: &Context<'_>) -> Result<Acquired, NotAcquired> {
        match Self::enter(area, ctx) {
            Enter::Acquired(acquired) => Ok(acquired),
            Enter::Blocked(_) | Enter::Saturated => Err(NotAcquired::Unavailable),
            Enter::Revoked => Err(NotAcquired::Revoked),
        }
    }

    #[inline]
    fn lock_shared(
        area: &LockArea,
        ctx: &Context<'_>,
        deadline: Option<Instant>,
    ) -> Result<Acquired, NotAcquired> {
        // The uncontended case inline, the waiting loop out of line (as for the exclusive
        // lock): a read lock that is free costs what `try_lock_shared` costs.
        match Self::enter(area, ctx) {
            Enter::Acquired(acquired) => Ok(acquired),
            Enter::Revoked => Err(NotAcquired::Revoked),
            first => Self::lock_shared_slow(area, *ctx, deadline, first),
        }
    }

    #[inline]
    unsafe fn unlock_shared(area: &LockArea, ctx: &Context<'_>) {
        Self::leave(area, ctx);
    }

    #[inline]
    fn try_lock_exclusive(area: &LockArea, ctx: &Context<'_>) -> Result<Acquired, NotAcquired> {
        if Self::revoked(area, ctx) {
            return Err(NotAcquired::Revoked);
        }
        let lock = Self::control(area, LOCK);
        let s = lock.load(Relaxed);
        if s & WRITER != 0 {
            return Err(NotAcquired::Unavailable);
        }
        // SeqCst: the writer's side of the Dekker pair in `enter`; Acquire for the data.
        if lock
            .compare_exchange(
                s,
                (s & (PARKED | POISONED)) | WRITER | Self::owner_bits(ctx),
                SeqCst,
                Relaxed,
            )
            .is_err()
        {
            return Err(NotAcquired::Unavailable);
        }
        if Self::readers_present(area) {
            return Err(Self::withdraw_claim(area, *ctx));
        }
        Ok(Acquired::from_word(s))
    }

    #[inline]
    fn lock_exclusive(
        area: &LockArea,
        ctx: &Context<'_>,
        deadline: Option<Instant>,
    ) -> Result<Acquired, NotAcquired> {
        // A handle whose slot was taken back gets no more locks: it could not be recovered if
        // it died holding one (see "Releasing only what is still yours").
        if Self::revoked(area, ctx) {
            return Err(NotAcquired::Revoked);
        }
        let lock = Self::control(area, LOCK);
        // SeqCst: the writer's side of the Dekker pair in `enter`; Acquire for the data.
        let held = lock
            .compare_exchange(0, WRITER | Self::owner_bits(ctx), SeqCst, Relaxed)
            .is_ok();
        if held && !Self::readers_present(area) {
            return Ok(Acquired::Clean);
        }
        Self::lock_exclusive_slow(area, *ctx, deadline, held)
    }

    #[inline]
    unsafe fn unlock_exclusive(area: &LockArea, ctx: &Context<'_>) {
        let lock = Self::control(area, LOCK);
        // Release: pairs with the Acquire of the next locker, publishing our data writes.
        // The owner field names our claim of our slot, so this can only release our lock.
        if lock
            .compare_exchange(WRITER | Self::owner_bits(ctx), 0, Release, Relaxed)
            .is_ok()
        {
            return;
        }
        Self::unlock_exclusive_slow(area, *ctx);
    }

    fn writer_is_gone(area: &LockArea, ctx: &Context<'_>) -> bool {
        // Relaxed: a report; nothing is acted on but the answer.
        let s = Self::control(area, LOCK).load(Relaxed);
        let owner = (s & OWNER) as usize;
        // An untracked writer cannot be identified.
        if s & WRITER == 0 || owner >= SLOTS || Some(owner) == Self::slot_of(ctx) {
            return false;
        }
        // Acquire: pairs with the Release store of SLOT_ACTIVE in `attach` (see `holder`).
        let tag = Self::slot_word(area, owner, 0).load(Acquire);
        // Only while the slot is still the claim that took WRITER: otherwise a recoverer is
        // at work, or the writer's identity is no longer there to ask about.
        tag & SLOT_STATE == SLOT_ACTIVE
            && owner_generation(tag) == s & OWNER_GEN
            && ctx.liveness(Self::holder(area, owner, tag)) == Liveness::Dead
    }

    fn is_poisoned(area: &LockArea) -> bool {
        // Relaxed: a report, not a synchronisation; lock acquisitions report poisoning with
        // their own ordered loads.
        Self::control(area, LOCK).load(Relaxed) & POISONED != 0
    }

    fn clear_poison(area: &LockArea) {
        // Relaxed: only the flag changes; no data is published by it.
        Self::control(area, LOCK).fetch_and(!POISONED, Relaxed);
    }

    /// Announces the sleep with `PARKED` on the lock word, which every release of the write
    /// lock clears, waking the lock word's sleepers and the context's release word
    /// (`release_writer`; the uncontended unlock's compare-exchange expects the word without
    /// `PARKED`, so it falls through to that). So writers pay nothing while nobody sleeps,
    /// and one wake-up per release while someone does. `PARKED` on a free lock is a state
    /// the lock already knows (a lock waiter that timed out leaves it): the next writer takes
    /// the lock through the slow path, keeping the bit, and its release clears it.
    ///
    /// With the lock free, the sleep is on `word` (the write sequence), not on the lock word:
    /// the lock word returns to the same value (free, `PARKED`) whenever another waiter
    /// announces itself on a free lock, so a sleeper comparing it could sleep through a whole
    /// write in between (found by the two-process ping-pong test, where both sides wait in
    /// turn); the write sequence never returns to a value (until it wraps, 2^31 writes
    /// later). With the lock held, the sleep is on the lock word until its release (found
    /// by the loom model: the holder may be a write already counted, whose release uses up
    /// the announcement without changing `word`); a lock word that returns to the same held
    /// value has `PARKED` set again, so that holder's release wakes us in turn.
    fn wait_for_release(
        area: &LockArea,
        ctx: &Context<'_>,
        word: &AtomicU32,
        expected: u32,
        deadline: Option<Instant>,
    ) {
        let lock = Self::control(area, LOCK);
        // Acquire, in a read-modify-write: it reads the latest value of the lock word, so it
        // synchronises with the latest write unlock (Release, or the read-modify-writes that
        // followed it), and the kernel's comparison of `word` below sees the sequence that
        // writer advanced before unlocking. Every release after this one in the word's order
        // finds PARKED and wakes `word`, so none falls between the announcement and the sleep.
        let s = lock.fetch_or(PARKED, Acquire) | PARKED;
        if s & WRITER != 0 {
            // A writer holds the lock: its release clears our announcement, yet may bring no
            // write we have not counted (it may have advanced `word` before we read
            // `expected`). Sleep on the lock word until that release, then look again.
            ctx.waiter.wait(lock, s, deadline);
        } else {
            // Any release from now on is of a lock taken after our announcement: a write that
            // changes `word` (or, rarely, a claim withdrawn without writing, which the caller's
            // recovery-interval cap on `deadline` covers).
            ctx.waiter.wait(word, expected, deadline);
        }
    }
}
