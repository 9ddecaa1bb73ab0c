//! The default lock's slot table: claiming a slot for a handle and freeing it, counting
//! the readers in it, and taking back the slots (and the write lock) of holders that can no
//! longer run (module docs, "Owner death").

use super::layout::*;
use super::{Context, Hold, Holder, Liveness, LockArea, ProcessId};
use crate::sync::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use crate::sync::{self, AtomicU32};

impl SharedRwLock {
    /// Whether the handle had a slot and it has been taken back (see "Releasing only what is
    /// still yours"). Relaxed: a report; the compare-exchanges that act on the slot or the
    /// lock word check the same facts atomically.
    #[inline]
    pub(super) fn revoked(area: &LockArea, ctx: &Context<'_>) -> bool {
        Self::slot_of(ctx).is_some_and(|slot| {
            !Self::still_ours(Self::slot_word(area, slot, 0).load(Relaxed), ctx)
        })
    }

    /// The word counting the handle's read locks: its slot's tag, or the overflow word.
    #[inline]
    pub(super) fn reader_word<'a>(area: &'a LockArea, ctx: &Context<'_>) -> &'a AtomicU32 {
        match Self::slot_of(ctx) {
            Some(slot) => Self::slot_word(area, slot, 0),
            None => Self::control(area, OVERFLOW),
        }
    }

    /// How many slots a writer must scan; clamped, as the word is untrusted.
    #[inline]
    fn slots_used(area: &LockArea) -> usize {
        // SeqCst: part of the writer's side of the Dekker pair described in `enter`; a slot's
        // claim raised this before any reader could count itself in the slot.
        (sync::load_sc(Self::control(area, SLOTS_USED)) as usize).min(SLOTS)
    }

    /// Whether any handle holds (or is taking) a read lock.
    #[inline]
    pub(super) fn readers_present(area: &LockArea) -> bool {
        // SeqCst loads: the writer's side of the Dekker pair in `enter` (after its SeqCst
        // compare-exchange of WRITER) and in `lock_exclusive_slow`'s drain (after its SeqCst
        // store to the drain word). They also acquire the Release half of the readers' SeqCst
        // decrements, so their reads of the data happen before the writer's writes.
        (0..Self::slots_used(area))
            .any(|slot| sync::load_sc(Self::slot_word(area, slot, 0)) & SLOT_READERS != 0)
            || sync::load_sc(Self::control(area, OVERFLOW)) & SLOT_READERS != 0
    }

    /// If the writer holding `WRITER` in lock word `s` is dead, takes its slot back (clearing
    /// `WRITER` and poisoning the lock). Returns whether anything was taken back.
    pub(super) fn recover_writer(area: &LockArea, ctx: &Context<'_>, s: u32) -> bool {
        if s & WRITER == 0 {
            return false;
        }
        let owner = (s & OWNER) as usize;
        // An untracked writer cannot be identified; our own handle's writer is alive.
        if owner >= SLOTS || Some(owner) == Self::slot_of(ctx) {
            return false;
        }
        Self::reclaim_if_dead(area, ctx, owner)
    }

    /// Takes back the slots of dead processes that hold read locks. Returns whether any was
    /// taken back.
    pub(super) fn recover_readers(area: &LockArea, ctx: &Context<'_>) -> bool {
        let mut any = false;
        for slot in 0..Self::slots_used(area) {
            if Some(slot) == Self::slot_of(ctx) {
                continue;
            }
            let tag = Self::slot_word(area, slot, 0).load(Relaxed);
            if tag & SLOT_STATE == SLOT_ACTIVE && tag & SLOT_READERS != 0 {
                any |= Self::reclaim_if_dead(area, ctx, slot);
            }
        }
        any
    }

    /// What slot `slot`, whose tag was read as `tag` (with Acquire, pairing with the Release
    /// store of SLOT_ACTIVE in `attach`), records about its holder.
    pub(super) fn holder(area: &LockArea, slot: usize, tag: u32) -> Holder {
        Holder {
            // Relaxed: published by the Release store of SLOT_ACTIVE the caller's load read.
            id: ProcessId {
                pid: Self::slot_word(area, slot, 1).load(Relaxed),
                start: u64::from(Self::slot_word(area, slot, 2).load(Relaxed))
                    | u64::from(Self::slot_word(area, slot, 3).load(Relaxed)) << 32,
            },
            byte: (tag & SLOT_HELD != 0).then(|| Self::slot_byte(slot)),
        }
    }

    /// If slot `slot` is active and its process is dead, takes it back: its read locks vanish,
    /// its write lock (if any) is released and the lock poisoned, and the slot is freed.
    /// Exactly one of several concurrent recoverers succeeds. Returns whether this call did.
    pub(super) fn reclaim_if_dead(area: &LockArea, ctx: &Context<'_>, slot: usize) -> bool {
        let tag_word = Self::slot_word(area, slot, 0);
        // Acquire: pairs with the Release store of SLOT_ACTIVE in `attach`, so the identity
        // written before it is what we read below.
        let tag = tag_word.load(Acquire);
        if tag & SLOT_STATE != SLOT_ACTIVE {
            return false;
        }
        let holder = Self::holder(area, slot, tag);
        // A held byte is asked about only while the tag (read above) says active: the owner
        // takes the byte before it marks the slot active and frees the slot before it
        // releases the byte, so an active slot's byte is unlocked only if its holder can no
        // longer run. If the slot was freed since, the compare-exchange below fails.
        if ctx.liveness(holder) != Liveness::Dead {
            return false;
        }
        // The one compare-exchange that decides which recoverer takes the slot. It fails if
        // the slot changed since we read it (another recoverer won, or it was freed and
        // claimed again: the generation differs). AcqRel: Acquire orders our work below after
        // the dead process's last changes to the tag; Release is for later claimers.
        if tag_word
            .compare_exchange(tag, SLOT_RECLAIMING | (tag & SLOT_GEN), AcqRel, Relaxed)
            .is_err()
        {
            return false;
        }
        // The dead process's write lock goes too, poisoning the lock unless the writer was
        // still waiting for readers (DRAINING: it changed nothing). No one else can set this
        // owner while the slot is reclaiming, so the loop ends.
        let lock = Self::control(area, LOCK);
        let mut s = lock.load(Relaxed);
        let dead_owner = slot as u32 | owner_generation(tag);
        while s & WRITER != 0 && s & OWNED_BY == dead_owner {
            let poison = if s & DRAINING != 0 { 0 } else { POISONED };
            // Release: pairs with the Acquire of the next locker. The dead writer's own data
            // stores reached memory before it died (the kernel switched away from it, which
            // orders them); we publish no data of our own.
            match lock.compare_exchange_weak(
                s,
                (s & !(WRITER | OWNED_BY | PARKED | DRAINING)) | poison,
                Release,
                Relaxed,
            ) {
                Ok(_) => {
                    if s & PARKED != 0 {
                        ctx.waiter.wake_all(lock);
                    }
                    break;
                }
                Err(now) => s = now,
            }
        }
        // SeqCst: Release for the Acquire claim in `attach`, and the first half of the drain
        // Dekker pair (as the decrement in `leave`): store the zero count, then look at the
        // drain word, against the writer storing the drain word and then loading the counts.
        sync::store_sc(tag_word, SLOT_FREE | (tag & SLOT_GEN));
        // A writer may sleep waiting for the read locks we just dropped.
        let drain = Self::control(area, DRAIN);
        // SeqCst: the second half of the Dekker pair above.
        if drain.swap(0, SeqCst) != 0 {
            ctx.waiter.wake_all(drain);
        }
        true
    }

    /// [`RawRwLock::attach`]: claims a free slot for the handle (taking its byte's kernel lock
    /// first), taking back dead processes' slots if the table is full, or returns
    /// [`UNTRACKED`].
    pub(super) fn claim_slot(area: &LockArea, ctx: &Context<'_>, me: ProcessId) -> u32 {
        for round in 0..2 {
            for slot in 0..SLOTS {
                let tag_word = Self::slot_word(area, slot, 0);
                let tag = tag_word.load(Relaxed);
                if tag & SLOT_STATE != SLOT_FREE {
                    continue;
                }
                let generation = tag.wrapping_add(SLOT_GEN_ONE) & SLOT_GEN;
                // Acquire: pairs with the Release that freed the slot (`reclaim_if_dead`,
                // `detach`), so the previous owner's use of it is behind us.
                if tag_word
                    .compare_exchange(tag, SLOT_CLAIMING | generation, Acquire, Relaxed)
                    .is_err()
                {
                    continue;
                }
                // The kernel lock before the slot turns active, so an active slot's byte is
                // locked for as long as we can run. Busy: the previous owner freed the slot
                // but has not yet released its byte; give the slot back and try the next.
                let held = match ctx.hold(Self::slot_byte(slot)) {
                    Hold::Held => SLOT_HELD,
                    Hold::Unsupported => 0,
                    Hold::Busy => {
                        // Release: pairs with the next claimer's Acquire, as in `detach`.
                        tag_word.store(SLOT_FREE | generation, Release);
                        continue;
                    }
                };
                // Relaxed: published by the Release store of SLOT_ACTIVE below.
                Self::slot_word(area, slot, 1).store(me.pid, Relaxed);
                Self::slot_word(area, slot, 2).store(me.start as u32, Relaxed);
                Self::slot_word(area, slot, 3).store((me.start >> 32) as u32, Relaxed);
                let used = Self::control(area, SLOTS_USED);
                let mut seen = used.load(Relaxed);
                while (seen as usize) <= slot {
                    // SeqCst: a writer's scan bound (`slots_used`) must include this slot
                    // before any reader counts itself in it; the reader's SeqCst increment
                    // comes after this in program order.
                    match used.compare_exchange_weak(seen, slot as u32 + 1, SeqCst, Relaxed) {
                        Ok(_) => break,
                        Err(now) => seen = now,
                    }
                }
                // Release: publishes the identity to recoverers (Acquire in reclaim_if_dead).
                tag_word.store(SLOT_ACTIVE | generation | held, Release);
                return slot as u32 | generation;
            }
            if round == 0 {
                // Full: take back the slots of dead processes, then look again.
                for slot in 0..SLOTS {
                    Self::reclaim_if_dead(area, ctx, slot);
                }
            }
        }
        UNTRACKED
    }

    /// [`RawRwLock::detach`]: frees the handle's slot if it still holds it and no lock
    /// through it, then releases the slot's byte.
    pub(super) fn free_slot(area: &LockArea, ctx: &Context<'_>) {
        let Some(slot) = Self::slot_of(ctx) else {
            return;
        };
        let s = Self::control(area, LOCK).load(Relaxed);
        if s & WRITER != 0 && s & OWNED_BY == Self::owner_bits(ctx) {
            // A write guard was leaked (mem::forget): the lock stays held, as leaking a guard
            // promises; the slot stays ours until our process dies and is recovered.
            return;
        }
        let tag_word = Self::slot_word(area, slot, 0);
        let tag = tag_word.load(Relaxed);
        if !Self::still_ours(tag, ctx) || tag & SLOT_READERS != 0 {
            // Not ours any more (taken back, or a corrupt peer), or read guards were leaked:
            // leave it. A byte we still hold is released when the handle closes its
            // descriptor.
            return;
        }
        // Release: pairs with the Acquire claim in `attach`. Failure means the tag changed
        // under us, which only a corrupt peer can do; then the slot is not ours to free.
        // The slot is freed before its byte is released, never the other way round: an
        // active slot whose byte is unlocked would be taken for a dead one.
        if tag_word
            .compare_exchange(tag, SLOT_FREE | (tag & SLOT_GEN), Release, Relaxed)
            .is_ok()
            && tag & SLOT_HELD != 0
        {
            ctx.release(Self::slot_byte(slot));
        }
    }
}
