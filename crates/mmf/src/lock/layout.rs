//! The default lock's area, word by word: the control block, the lock word's bits and the
//! slot tags' bits (their tables and diagrams are in the [module docs](crate::lock)), and
//! [`SharedRwLock`]'s accessors for them. The protocol that moves these bits is in
//! `protocol.rs`; the slot table's claims and recovery in `slots.rs`.
//!
//! Only the constants re-exported by the `testing` feature are `pub` here, for the crate's
//! own integration tests that forge lock words; nothing of this file is API.

use super::{Acquired, Context, LockArea, LOCK_AREA_WORDS};
use crate::sync::AtomicU32;

/// The default lock: a writer-preferring reader/writer lock that recovers from holders that
/// die, with poisoning.
///
/// See the [module documentation](crate::lock) for the area layout, the fairness policy, how
/// waiting works and what happens when a holder dies.
pub enum SharedRwLock {}

/// Words in the control block at the start of the default lock's area.
pub(super) const CONTROL_WORDS: usize = 16;
/// Words per handle slot.
pub(super) const SLOT_WORDS: usize = 4;

/// Number of handle slots of the default lock (124): read-write handles beyond this many at
/// once are untracked (see the module docs).
pub const SLOTS: usize = (LOCK_AREA_WORDS - CONTROL_WORDS) / SLOT_WORDS;

/// The token of a handle that has no slot (see the module docs, "Slot table full").
pub(crate) const UNTRACKED: u32 = u32::MAX;

/// Control word indices.
pub(super) const LOCK: usize = 0;
pub(super) const DRAIN: usize = 1;
pub(super) const SLOTS_USED: usize = 2;
pub(super) const OVERFLOW: usize = 3;

/// Set while a writer owns the lock or has claimed it and waits for readers to leave.
pub const WRITER: u32 = 1 << 31;
/// Set while someone sleeps in the kernel on the lock word; whoever clears `WRITER` clears it
/// and wakes all. May be set while `WRITER` is clear (a waiter for the next write, or a lock
/// waiter that timed out): writers keep it when they take the lock.
pub const PARKED: u32 = 1 << 30;
/// Set when a writer died holding the lock; cleared only by `clear_poison`.
pub const POISONED: u32 = 1 << 29;
/// Set while the writer that set `WRITER` waits for readers to leave (it has written
/// nothing yet, so its death does not poison).
pub const DRAINING: u32 = 1 << 28;
/// Slot of the handle whose writer set `WRITER` (all ones: an untracked handle). Written by
/// the same compare-exchange as `WRITER`, and meaningless while `WRITER` is clear.
pub const OWNER: u32 = 0xFF;
/// Generation of the owner's slot claim (the slot tag's generation, shifted down), written
/// with `OWNER`; zero for an untracked handle.
pub const OWNER_GEN: u32 = 0xFFF << 8;
/// The whole owner field: slot and generation.
pub(super) const OWNED_BY: u32 = OWNER | OWNER_GEN;
/// A lock word's owner field from a slot tag's generation bits.
#[inline]
pub(super) const fn owner_generation(tag: u32) -> u32 {
    (tag & SLOT_GEN) >> 10
}

/// Slot tag: the state field.
pub(super) const SLOT_STATE: u32 = 3 << 30;
/// Slot tag state: nobody owns the slot.
pub(super) const SLOT_FREE: u32 = 0;
/// Slot tag state: the claimer is writing its identity; no lock is held through the slot yet.
pub(super) const SLOT_CLAIMING: u32 = 1 << 30;
/// Slot tag state: a live (or not yet recovered) handle owns the slot.
pub(super) const SLOT_ACTIVE: u32 = 2 << 30;
/// Slot tag state: a recoverer is taking back a dead process's share.
pub(super) const SLOT_RECLAIMING: u32 = 3 << 30;
/// Slot tag: the generation, bumped on every claim.
pub(super) const SLOT_GEN: u32 = 0xFFF << 18;
/// One generation step.
pub(super) const SLOT_GEN_ONE: u32 = 1 << 18;
/// Slot tag: the handle holds the kernel lock on its slot's byte ([`Context::hold`]), so
/// recoverers ask the kernel about that byte rather than about the recorded process.
pub(super) const SLOT_HELD: u32 = 1 << 17;
/// Slot tag (and overflow word): the number of read locks held.
pub(super) const SLOT_READERS: u32 = SLOT_HELD - 1;

// The owner field must be able to name every slot and still have a value left for "untracked".
const _: () = assert!(SLOTS < OWNER as usize);
// A handle's token is its slot (the owner field's bits) plus the generation it claimed (the
// tag's generation bits); the two fields must not overlap, and the generation must fit the
// lock word's owner generation field.
const _: () = assert!(OWNER & SLOT_GEN == 0);
const _: () = assert!(owner_generation(SLOT_GEN) == OWNER_GEN);
const _: () = assert!(CONTROL_WORDS + SLOTS * SLOT_WORDS <= LOCK_AREA_WORDS);
// Under loom `LOCK_AREA_WORDS` is written out (the area is the trait's, and knows nothing of
// this lock's words): it must still be three of this lock's slots.
#[cfg(loom)]
const _: () = assert!(LOCK_AREA_WORDS == CONTROL_WORDS + 3 * SLOT_WORDS);

impl Acquired {
    #[inline]
    pub(super) fn from_word(s: u32) -> Self {
        if s & POISONED != 0 {
            Acquired::Poisoned
        } else {
            Acquired::Clean
        }
    }
}

impl SharedRwLock {
    #[inline]
    pub(super) fn control(area: &LockArea, index: usize) -> &AtomicU32 {
        &area.words[index]
    }

    /// Word `field` (0 = tag, 1 = pid, 2/3 = start time) of slot `slot < SLOTS`.
    #[inline]
    pub(super) fn slot_word(area: &LockArea, slot: usize, field: usize) -> &AtomicU32 {
        &area.words[CONTROL_WORDS + slot * SLOT_WORDS + field]
    }

    /// The byte of the area whose kernel lock says slot `slot`'s handle is alive: the first
    /// byte of its tag word.
    pub(super) fn slot_byte(slot: usize) -> u32 {
        ((CONTROL_WORDS + slot * SLOT_WORDS) * 4) as u32
    }

    /// Slot index bits of a token (all ones, beyond [`SLOTS`], for [`UNTRACKED`]).
    #[cfg(test)]
    pub(super) fn token_slot(token: u32) -> usize {
        (token & OWNER) as usize
    }

    /// The lock word's owner field for a handle with token `token` from a tracked slot.
    #[cfg(test)]
    pub(super) fn token_owner(token: u32) -> u32 {
        (token & OWNER) | owner_generation(token)
    }

    /// The handle's slot, if it has one. A token is the slot's index (in [`OWNER`]'s bits)
    /// plus the generation the handle claimed it with (in the tag's generation bits);
    /// [`UNTRACKED`] has all ones in the index, which names no slot.
    #[inline]
    pub(super) fn slot_of(ctx: &Context<'_>) -> Option<usize> {
        let slot = (ctx.token & OWNER) as usize;
        (slot < SLOTS).then_some(slot)
    }

    /// Whether slot tag `tag` is still the handle's own claim: active, with the generation
    /// the handle claimed it with. Once a recoverer has taken the slot back it never is
    /// again (until the 12-bit generation wraps, 4096 claims of that slot later).
    #[inline]
    pub(super) fn still_ours(tag: u32, ctx: &Context<'_>) -> bool {
        tag & (SLOT_STATE | SLOT_GEN) == SLOT_ACTIVE | (ctx.token & SLOT_GEN)
    }

    /// The owner field value for the handle: its slot and claim generation, or [`OWNER`].
    #[inline]
    pub(super) fn owner_bits(ctx: &Context<'_>) -> u32 {
        match Self::slot_of(ctx) {
            Some(slot) => slot as u32 | owner_generation(ctx.token),
            None => OWNER,
        }
    }
}
