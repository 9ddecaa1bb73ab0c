//! What writer and reader have in common: the channel object and the reader table, mapped,
//! with the geometry validated from them.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};

use crate::liveness::{Liveness, ProcessId};
use crate::segment::Mmf;

use super::layout::{
    load64, reader_byte, Control, Geometry, ReaderEntry, ReaderTable, CLAIM_BUSY, CLAIM_FREE,
    CLAIM_GEN_ONE, CLAIM_OWNED, CLAIM_STATE, CONTROL_LEN, LATEST_CLOSED, NO_SLOT, WRITER_BYTE,
};

/// The channel object and the reader table, plus the validated geometry: what writer and
/// reader have in common. The writer maps `mmf` read-write, readers read-only; both map
/// `table` read-write.
pub(super) struct Channel {
    pub(super) mmf: Mmf,
    pub(super) table: Mmf,
    pub(super) geometry: Geometry,
}

/// The control block at the start of a channel object's data region.
pub(super) fn control_of(mmf: &Mmf) -> &Control {
    // On a reader's read-only mapping the control block is only ever loaded from.
    // SAFETY: the data region is page aligned, at least CONTROL_LEN long (checked at create
    // and open) and lives as long as `mmf`; Control is only atomics, valid for any bits.
    unsafe { &*mmf.data_ptr().cast::<Control>() }
}

impl Channel {
    pub(super) fn control(&self) -> &Control {
        control_of(&self.mmf)
    }

    pub(super) fn table(&self) -> &ReaderTable {
        // The mapping is patchable (MmfOptions::companion): if another process truncates
        // the object, its pages turn into private zero pages instead of faulting.
        // SAFETY: page aligned, at least TABLE_LEN long (checked before a Channel exists),
        // lives as long as `self.table`; ReaderTable is only atomics, valid for any bits.
        unsafe { &*self.table.data_ptr().cast::<ReaderTable>() }
    }

    /// Who wakes whom: the reader table's waiter, whose OS state (Windows: the semaphore's
    /// sleeper count in its header) readers may write, unlike the channel's. Readers sleep
    /// on `latest` in the channel object all the same.
    pub(super) fn waiter(&self) -> crate::lock::Waiter<'_> {
        self.table.waiter()
    }

    /// Whether the writer has dropped (always checked: one load of a line that changes only
    /// then) or, with `check_process`, whether its process has died (reads `/proc` or asks
    /// the OS, so only where a wait has run out or at open).
    pub(super) fn writer_gone(&self, check_process: bool) -> bool {
        let control = self.control();
        // SeqCst (also Acquire): pairs with the SeqCst fetch_or in FrameWriter's Drop, so
        // every frame published before it is visible to our next look at `latest`.
        if control.latest.load(SeqCst) & LATEST_CLOSED != 0 {
            return true;
        }
        if !check_process {
            return false;
        }
        // Untrusted like everything here: a garbage identity at worst reports the writer gone.
        let writer = ProcessId {
            pid: control.writer_pid.load(Relaxed),
            start: load64(&control.writer_start),
        };
        // The kernel's answer when the writer holds its byte (see "Liveness"); our own
        // handle never holds the writer's byte, so it cannot answer for itself.
        let byte = (control.writer_held.load(Relaxed) != 0).then_some(WRITER_BYTE);
        self.mmf.data_holder_liveness(writer, byte) == Liveness::Dead
    }

    /// Start of slot `slot`'s bytes; `slot < geometry.slots` is the caller's to check.
    pub(super) fn slot_ptr(&self, slot: u32) -> *mut u8 {
        debug_assert!(slot < self.geometry.slots);
        let offset = CONTROL_LEN + slot as usize * self.geometry.stride;
        // SAFETY: slot < slots, and CONTROL_LEN + slots * stride <= data_len was checked when
        // the geometry was made, so the offset stays inside the data region.
        unsafe { self.mmf.data_ptr().add(offset) }
    }

    /// Start of slot `slot`'s user header (`geometry.user_header_len` bytes, page aligned);
    /// `slot < geometry.slots` is the caller's to check.
    pub(super) fn user_header_ptr(&self, slot: u32) -> *mut u8 {
        let offset = self.geometry.user_header_offset();
        // SAFETY: the header's bytes end at the slot's end (user_header_offset + len <=
        // stride, from the validated geometry), inside the data region as for slot_ptr.
        unsafe { self.slot_ptr(slot).add(offset) }
    }

    pub(super) fn readers(&self) -> &[ReaderEntry] {
        &self.table().readers[..self.geometry.max_readers as usize]
    }

    /// Releases the entries of readers whose process has died; returns how many.
    pub(super) fn reclaim_dead_readers(&self) -> usize {
        let table = self.table();
        let mut reclaimed = 0;
        for (index, entry) in self.readers().iter().enumerate() {
            // Acquire: pairs with the Release store of CLAIM_OWNED in `FrameReader::claim`,
            // so the pid and start time read next belong to this claim.
            let claim = entry.claim.load(Acquire);
            if claim & CLAIM_STATE != CLAIM_OWNED {
                continue;
            }
            let owner = ProcessId {
                pid: entry.pid.load(Relaxed),
                start: load64(&entry.start),
            };
            // The owner takes its byte before it marks the entry owned and releases it only
            // after freeing the entry, so an owned entry's byte is free only once its owner
            // can no longer run; if the entry was freed since, the compare-exchange below
            // fails (the generation changed). Our own handle holds no reader byte, unless it
            // is this entry's owner, which a reader never sweeps while it holds an entry.
            let byte = (entry.held.load(Relaxed) != 0).then(|| reader_byte(index));
            if self.table.data_holder_liveness(owner, byte) != Liveness::Dead {
                continue;
            }
            // The generation makes this CAS fail if the dead owner's entry was already
            // released and claimed by someone else meanwhile. Acquire: we take over the
            // entry and read its parked flag.
            let busy = (claim & !CLAIM_STATE) | CLAIM_BUSY;
            if entry
                .claim
                .compare_exchange(claim, busy, Acquire, Relaxed)
                .is_err()
            {
                continue;
            }
            if entry.parked.swap(0, Relaxed) != 0 {
                // The dead reader was counted as sleeping; stop waking on its behalf.
                // Relaxed: the count only decides whether the writer calls wake.
                let _ = table
                    .parked
                    .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
            }
            // Release: pairs with the writer's SeqCst load of pins.
            entry.pin.store(NO_SLOT, Release);
            // Release: the cleared fields are visible to the next claimer's Acquire CAS.
            entry.claim.store(
                (claim & !CLAIM_STATE).wrapping_add(CLAIM_GEN_ONE) | CLAIM_FREE,
                Release,
            );
            reclaimed += 1;
        }
        reclaimed
    }
}
