//! Decoding the default lock's area for a report ([`crate::inspect`]): the lock word's bits,
//! the control words and the live handle slots, read once each and never written.

use super::layout::{
    SharedRwLock, DRAIN, DRAINING, OVERFLOW, OWNER, PARKED, POISONED, SLOTS, SLOTS_USED,
    SLOT_ACTIVE, SLOT_CLAIMING, SLOT_FREE, SLOT_GEN, SLOT_GEN_ONE, SLOT_HELD, SLOT_READERS,
    SLOT_STATE, WRITER,
};
use super::LockArea;
use crate::inspect::report::{LockInfo, ProcessInfo, SlotInfo, SlotState};
use crate::liveness::{Holder, Liveness};
use crate::sync::Ordering::{Acquire, Relaxed};

/// The area of a [`SharedRwLock`] as it is now. `liveness` answers for a slot's recorded
/// holder (the kernel byte lock where the holder took one, else its process identity).
pub(crate) fn decode(area: &LockArea, liveness: &dyn Fn(Holder) -> Liveness) -> LockInfo {
    // Relaxed: a diagnostic snapshot; nothing is published to us by these words, and a
    // report that is a moment stale is still a true account of a moment ago.
    let word = SharedRwLock::control(area, super::layout::LOCK).load(Relaxed);
    let used = (SharedRwLock::control(area, SLOTS_USED).load(Relaxed) as usize).min(SLOTS);
    let mut slots = Vec::new();
    for slot in 0..used {
        // Acquire: pairs with the Release store of SLOT_ACTIVE in `attach`, so the pid and
        // start time read by `holder` are the claimer's.
        let tag = SharedRwLock::slot_word(area, slot, 0).load(Acquire);
        let state = match tag & SLOT_STATE {
            SLOT_FREE => continue,
            SLOT_CLAIMING => SlotState::Claiming,
            SLOT_ACTIVE => SlotState::Active,
            _ => SlotState::Reclaiming,
        };
        let holder = SharedRwLock::holder(area, slot, tag);
        slots.push(SlotInfo {
            index: slot as u32,
            state,
            generation: (tag & SLOT_GEN) / SLOT_GEN_ONE,
            held: tag & SLOT_HELD != 0,
            read_locks: tag & SLOT_READERS,
            process: ProcessInfo {
                pid: holder.id.pid,
                alive: liveness(holder),
            },
        });
    }
    let writer = word & WRITER != 0;
    LockInfo {
        word,
        writer,
        parked: word & PARKED != 0,
        poisoned: word & POISONED != 0,
        draining: word & DRAINING != 0,
        // The owner field means something only while WRITER is set (layout.rs).
        owner_slot: writer.then_some(word & OWNER),
        // Relaxed, both: snapshot words like the lock word above; nothing pairs with them.
        drain: SharedRwLock::control(area, DRAIN).load(Relaxed),
        slots_used: used as u32,
        overflow: SharedRwLock::control(area, OVERFLOW).load(Relaxed),
        slots,
    }
}
