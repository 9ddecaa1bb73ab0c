//! Reading a channel's control block and reader table for a report ([`crate::inspect`]):
//! both mapped read-only, every word loaded once, nothing stored, nothing pinned.

use std::sync::atomic::fence;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::time::Duration;

use super::common::control_of;
use super::layout::{
    load64, magic_words, reader_byte, Geometry, ReaderTable, CLAIM_OWNED, CLAIM_STATE, CONTROL_LEN,
    LATEST_BUSY, LATEST_CLOSED, LATEST_NONE, LATEST_SEQ_SHIFT, LATEST_SLOT, NO_SLOT, TABLE_LEN,
    WRITER_BYTE,
};
use crate::error::{Error, Result};
use crate::header::{KIND_FRAME_CHANNEL, KIND_FRAME_READERS};
use crate::inspect::report::{ChannelInfo, NewestFrame, ProcessInfo, ReaderInfo};
use crate::liveness::ProcessId;
use crate::segment::MmfOptions;
use crate::trust::TrustedOwners;

/// How long inspection waits for a creator still initialising: a report, not a reader.
const OPEN_WAIT: Duration = Duration::from_millis(200);

/// The channel `name` as it is now.
pub(crate) fn channel(name: &str, trusted: &TrustedOwners) -> Result<ChannelInfo> {
    let mmf = MmfOptions::new(name)
        .kind(KIND_FRAME_CHANNEL)
        .open_timeout(OPEN_WAIT)
        .trusted_owners(trusted.clone())
        .open_read_only()?;
    if mmf.len() < CONTROL_LEN {
        return Err(Error::corrupt(format!(
            "frame channel data region of {} bytes cannot hold its control block",
            mmf.len()
        )));
    }
    let control = control_of(&mmf);
    // Acquire: pairs with the creator's Release store of magic[0] after every other control
    // field, so the geometry read below is the creator's.
    let m0 = control.magic[0].load(Acquire);
    if [m0, control.magic[1].load(Relaxed)] != magic_words() {
        return Err(Error::corrupt(
            "frame channel control block has no valid magic (not yet initialised, or overwritten)",
        ));
    }
    let geometry = Geometry::read(control, mmf.len())?;
    // Relaxed: published with the magic above (the writer's identity is written before it).
    let writer_id = ProcessId {
        pid: control.writer_pid.load(Relaxed),
        start: load64(&control.writer_start),
    };
    // Relaxed: written with the writer's identity, before the magic (see above).
    let writer_byte = (control.writer_held.load(Relaxed) != 0).then_some(WRITER_BYTE);
    let writer = ProcessInfo {
        pid: writer_id.pid,
        alive: mmf.data_holder_liveness(writer_id, writer_byte),
    };
    let (newest, closed) = newest(control);
    let mut info = ChannelInfo {
        // Relaxed: geometry, published with the magic (see above).
        version: control.version.load(Relaxed),
        slot_count: geometry.slots,
        max_readers: geometry.max_readers,
        max_frame_len: geometry.max_frame_len as u64,
        slot_stride: geometry.stride as u64,
        writer,
        writer_closed: closed,
        newest,
        parked: 0,
        readers: Vec::new(),
        reader_table_error: None,
    };
    match readers(name, trusted, geometry.max_readers as usize) {
        Ok((parked, readers)) => {
            info.parked = parked;
            info.readers = readers;
        }
        Err(e) => info.reader_table_error = Some(e),
    }
    Ok(info)
}

/// The newest frame's metadata, read seqlock-style as a reader does (module docs, "Never
/// torn"), and whether the writer has dropped. `None` before the first frame, or when
/// `latest` stayed busy (a writer killed mid-publish).
fn newest(control: &super::layout::Control) -> (Option<NewestFrame>, bool) {
    let desc = &control.desc;
    let mut closed = false;
    for _ in 0..1000 {
        // Acquire: pairs with the writer's Release (SeqCst) store of `latest`, after which
        // the metadata it names is complete.
        let word = control.latest.load(Acquire);
        closed = word & LATEST_CLOSED != 0;
        match word & LATEST_SLOT {
            LATEST_NONE => return (None, closed),
            LATEST_BUSY => {
                std::thread::yield_now();
                continue;
            }
            _ => {}
        }
        // Relaxed: validated by the re-check of `latest` below.
        let frame = NewestFrame {
            seq: load64(&desc.seq),
            timestamp_ns: load64(&desc.timestamp),
            len: load64(&desc.len),
            width: desc.width.load(Relaxed),
            height: desc.height.load(Relaxed),
            pixel_format: desc.pixel_format.load(Relaxed),
            age_ns: None,
        };
        // Acquire fence: orders the metadata loads before the re-check; pairs with the
        // writer's Release fence after it marks `latest` busy.
        fence(Acquire);
        // Relaxed: ordered after the metadata by the fence above.
        if control.latest.load(Relaxed) != word
            || (frame.seq as u32) << LATEST_SEQ_SHIFT != word & !(LATEST_SLOT | LATEST_CLOSED)
        {
            continue;
        }
        let age_ns = (frame.timestamp_ns != 0)
            .then(|| super::monotonic_ns().saturating_sub(frame.timestamp_ns));
        return (Some(NewestFrame { age_ns, ..frame }), closed);
    }
    (None, closed)
}

/// The reader table's `parked` count and its owned entries.
fn readers(
    name: &str,
    trusted: &TrustedOwners,
    max_readers: usize,
) -> Result<(u32, Vec<ReaderInfo>)> {
    let table = MmfOptions::new(super::reader_table_name(name))
        .kind(KIND_FRAME_READERS)
        .companion()
        .open_timeout(OPEN_WAIT)
        .trusted_owners(trusted.clone())
        .open_read_only()?;
    if table.len() < TABLE_LEN {
        return Err(Error::corrupt(format!(
            "frame channel reader table of {} bytes cannot hold {TABLE_LEN}",
            table.len()
        )));
    }
    // The companion mapping is patchable (a truncation turns into zero pages), read-only,
    // and only ever loaded from here.
    // SAFETY: page aligned, at least TABLE_LEN long (checked above), lives as long as
    // `table`; ReaderTable is only atomics, valid for every bit pattern.
    let entries = unsafe { &*table.data_ptr().cast::<ReaderTable>() };
    let mut readers = Vec::new();
    for (index, entry) in entries.readers.iter().enumerate().take(max_readers) {
        // Acquire: pairs with the Release store of CLAIM_OWNED after the owner wrote its
        // identity, so pid and start time below are the owner's.
        if entry.claim.load(Acquire) & CLAIM_STATE != CLAIM_OWNED {
            continue;
        }
        // Relaxed: published by the claim's Release, read with Acquire above.
        let id = ProcessId {
            pid: entry.pid.load(Relaxed),
            start: u64::from(entry.start[0].load(Relaxed))
                | u64::from(entry.start[1].load(Relaxed)) << 32,
        };
        let byte = (entry.held.load(Relaxed) != 0).then(|| reader_byte(index));
        // Relaxed: a snapshot of the pin and the parked flag for a report; the pin protocol's
        // SeqCst pairs writer and reader, and an onlooker takes part in neither.
        let pin = entry.pin.load(Relaxed);
        readers.push(ReaderInfo {
            index: index as u32,
            process: ProcessInfo {
                pid: id.pid,
                alive: table.data_holder_liveness(id, byte),
            },
            pinned_slot: (pin != NO_SLOT).then(|| pin - 1),
            parked: entry.parked.load(Relaxed) != 0,
        });
    }
    // Relaxed: a count for a report.
    Ok((entries.parked.load(Relaxed), readers))
}
