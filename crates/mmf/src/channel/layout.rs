//! The channel's on-region layout (the tables in the [module docs](crate::channel)): the
//! control block, the frame descriptors, the reader table and its entries, their offsets and
//! constants, and the validated geometry every mapping is read through.

use std::mem::{offset_of, size_of};
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::error::{Error, Result};

/// Most readers a channel can be created for.
pub const MAX_READERS: usize = 32;

/// Most slots a channel can have (slot numbers 62 and 63 are reserved in the `latest` word).
pub const MAX_SLOTS: usize = 62;

/// Most slots a channel gets by default (see the module docs on slots).
pub const SMALL_FRAME_SLOTS: usize = 16;

/// Slot bytes the default slot count may fill: a channel gets as many slots as fit in this
/// (by slot stride, whole pages), up to [`SMALL_FRAME_SLOTS`], and never fewer than
/// `max_readers + 2`. Small enough that the slots a writer rotates through stay in its
/// core's first-level cache: 16 slots of 8 KiB frames (128 KiB) made an 8 KiB frame's
/// hand-over about 10% slower than 8 or 4 slots in `cargo xtask bench-peers`.
pub const SMALL_FRAME_SLOTS_BYTES: usize = 64 << 10;

/// Version of the control block layout (and of the reader table that goes with it).
pub const CHANNEL_VERSION: u32 = 5;

/// Largest per-frame user header ([`FrameSpec::user_header_len`](super::FrameSpec::user_header_len)):
/// one page, which every slot then gives it.
pub const MAX_USER_HEADER_LEN: usize = 4096;

/// Byte of the channel's data region on which the writer holds its kernel lock: the first
/// byte of `writer_pid`.
pub(super) const WRITER_BYTE: usize = 40;

/// Byte of the reader table's data region on which the owner of reader entry `index` holds
/// its kernel lock: the first byte of the entry's claim word.
pub(super) fn reader_byte(index: usize) -> usize {
    offset_of!(ReaderTable, readers) + size_of::<ReaderEntry>() * index
}

/// Bytes before the first frame slot.
pub(super) const CONTROL_LEN: usize = 4096;

/// Data bytes of a reader table: the whole [`ReaderTable`], for any `max_readers`.
pub(super) const TABLE_LEN: usize = size_of::<ReaderTable>();

/// Slots of more than this many bytes are reused warm-first (module docs, **Warm slots**):
/// from here on the pins are scanned on every publish, a cost that is small next to copying
/// the frame.
pub const WARM_SLOT_MIN_STRIDE: usize = 64 << 10;

/// Slots start on page boundaries (4096 is the smallest page size we run on).
pub(super) const SLOT_ALIGN: usize = 4096;

/// `pin` value meaning "no slot" (a pin stores slot + 1, so that all-zero bytes, what a
/// truncated and regrown table holds, pin nothing).
pub(super) const NO_SLOT: u32 = 0;

/// Longest a reader sleeps in the kernel before it looks at `latest` again, woken or not: a
/// reader that scribbles the table's `parked` count to 0 stops the writer's wake-ups, and
/// this bounds the delay it causes (Windows caps each kernel wait the same way anyway).
pub(super) const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Longest pause between two tries of [`FrameReaderOptions::wait`](super::FrameReaderOptions::wait):
/// bounds how late a waiting reader attaches, at about 20 cheap open attempts a second.
pub(super) const OPEN_WAIT_MAX_PAUSE: Duration = Duration::from_millis(50);

/// How long [`FrameWriter::create`](super::FrameWriter::create) keeps trying to take over a
/// dead writer's channel whose name cannot be removed at once: on Windows a section lives
/// as long as a handle, and the old readers close theirs within about a second of learning
/// the writer is gone (their sleeps are capped at [`MAX_SLEEP`]).
pub(super) const TAKEOVER_WAIT: Duration = Duration::from_secs(3);

/// Bits of the `latest` word that hold the slot.
pub(super) const LATEST_SLOT: u32 = 63;

/// Shift of the sequence number in the `latest` word.
pub(super) const LATEST_SEQ_SHIFT: u32 = 7;

/// Bit of the `latest` word set when the writer has dropped (see "The writer going away").
pub(super) const LATEST_CLOSED: u32 = 1 << 6;

/// Slot field of `latest` before the first frame.
pub(super) const LATEST_NONE: u32 = 63;

/// Slot field of `latest` while the writer rewrites the metadata next to it.
pub(super) const LATEST_BUSY: u32 = 62;

/// The `latest` word for frame `seq` in `slot`.
pub(super) fn latest_word(slot: u32, seq: u64) -> u32 {
    ((seq as u32) << LATEST_SEQ_SHIFT) | slot
}

pub(super) const MAGIC: [u8; 8] = *b"mmfchan1";

/// How often the writer looks for dead readers while publishing.
pub(super) const SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Tries [`FrameReader::latest`] makes before [`Error::WouldBlock`] (a few milliseconds).
pub(super) const MAX_PIN_ATTEMPTS: u32 = 100_000;

/// Default spin of [`FrameReader::wait_next`] before sleeping.
pub(super) const DEFAULT_SPIN: Duration = Duration::from_micros(20);

// Claim word of a reader entry: generation in bits 2.., state in bits 0..2.
/// Nobody owns the entry (zero-initialised memory is a free entry).
pub(super) const CLAIM_FREE: u32 = 0;

/// An opener is filling in its identity, or a sweeper is releasing a dead owner's entry.
pub(super) const CLAIM_BUSY: u32 = 1;

/// A reader owns the entry; its pid and start time are valid.
pub(super) const CLAIM_OWNED: u32 = 2;

pub(super) const CLAIM_STATE: u32 = 3;

pub(super) const CLAIM_GEN_ONE: u32 = 4;

#[repr(C, align(64))]
pub(super) struct ReaderEntry {
    pub(super) claim: AtomicU32,
    pub(super) pid: AtomicU32,
    pub(super) start: [AtomicU32; 2],
    /// The slot this reader has pinned plus 1, or [`NO_SLOT`].
    pub(super) pin: AtomicU32,
    /// 1 while this reader is counted in `parked`.
    pub(super) parked: AtomicU32,
    /// 1 if the owner holds the kernel lock on this entry's first byte (see "Liveness").
    pub(super) held: AtomicU32,
    pub(super) _reserved: [AtomicU32; 9],
}

/// The newest frame's metadata (valid only as described for `latest` in the module docs).
#[repr(C)]
pub(super) struct FrameDesc {
    pub(super) seq: [AtomicU32; 2],
    pub(super) timestamp: [AtomicU32; 2],
    pub(super) len: [AtomicU32; 2],
    pub(super) width: AtomicU32,
    pub(super) height: AtomicU32,
    pub(super) pixel_format: AtomicU32,
    pub(super) tag: [AtomicU32; 2],
}

#[repr(C, align(64))]
pub(super) struct Control {
    pub(super) magic: [AtomicU32; 2],
    pub(super) version: AtomicU32,
    pub(super) slot_count: AtomicU32,
    pub(super) max_readers: AtomicU32,
    /// Bytes of the per-frame user header, 0..=[`MAX_USER_HEADER_LEN`].
    pub(super) user_header_len: AtomicU32,
    pub(super) max_frame_len: [AtomicU32; 2],
    pub(super) slot_stride: [AtomicU32; 2],
    pub(super) writer_pid: AtomicU32,
    pub(super) writer_start: [AtomicU32; 2],
    /// 1 if the writer holds the kernel lock on [`WRITER_BYTE`] (see "Liveness").
    pub(super) writer_held: AtomicU32,
    pub(super) _reserved1: [AtomicU32; 2],
    pub(super) latest: AtomicU32,
    pub(super) desc: FrameDesc,
    pub(super) _reserved2: [AtomicU32; 36],
    /// Per slot: the sequence number of the frame in it or being written into it, stored
    /// before the writer touches the slot (see [`Frame::verify`]).
    pub(super) stamps: [[AtomicU32; 2]; MAX_SLOTS],
    pub(super) _reserved3: [AtomicU32; (CONTROL_LEN - 256 - 8 * MAX_SLOTS) / 4],
}

/// The reader table: the data region of the second object, `<name>+readers`, which every
/// reader maps read-write (module docs, "Reader table layout"). All-zero bytes are a valid
/// table: every entry free, no pin, nobody parked.
#[repr(C, align(64))]
pub(super) struct ReaderTable {
    /// Readers sleeping in `wait_next`.
    pub(super) parked: AtomicU32,
    pub(super) _reserved0: [AtomicU32; 15],
    pub(super) readers: [ReaderEntry; MAX_READERS],
}

// Other binaries read these bytes: pin every offset of the tables in the module docs.
const _: () = {
    assert!(size_of::<ReaderEntry>() == 64);
    assert!(size_of::<FrameDesc>() == 44);
    assert!(MAX_SLOTS <= LATEST_BUSY as usize);
    assert!(size_of::<Control>() == CONTROL_LEN);
    assert!(offset_of!(Control, version) == 8);
    assert!(offset_of!(Control, slot_count) == 12);
    assert!(offset_of!(Control, max_readers) == 16);
    assert!(offset_of!(Control, user_header_len) == 20);
    assert!(offset_of!(Control, max_frame_len) == 24);
    assert!(offset_of!(Control, slot_stride) == 32);
    assert!(offset_of!(Control, writer_pid) == 40);
    assert!(offset_of!(Control, writer_held) == 52);
    assert!(offset_of!(Control, latest) == 64);
    assert!(offset_of!(Control, desc) == 68);
    assert!(offset_of!(Control, stamps) == 256);
    assert!(offset_of!(FrameDesc, tag) == 36);
    assert!(size_of::<ReaderTable>() == 64 + 64 * MAX_READERS);
    assert!(offset_of!(ReaderTable, parked) == 0);
    assert!(offset_of!(ReaderTable, readers) == 64);
    assert!(offset_of!(ReaderEntry, pin) == 16);
    assert!(offset_of!(ReaderEntry, parked) == 20);
    assert!(offset_of!(ReaderEntry, held) == 24);
};

pub(super) fn load64(pair: &[AtomicU32; 2]) -> u64 {
    // Relaxed: 64-bit fields are only read where something else (the pin protocol or the
    // magic's Acquire) already orders them after their writes.
    u64::from(pair[0].load(Relaxed)) | (u64::from(pair[1].load(Relaxed)) << 32)
}

pub(super) fn store64(pair: &[AtomicU32; 2], value: u64) {
    // Relaxed: published by a later Release/SeqCst store (magic, or `latest`).
    pair[0].store(value as u32, Relaxed);
    pair[1].store((value >> 32) as u32, Relaxed);
}

pub(super) fn magic_words() -> [u32; 2] {
    let [a, b, c, d, e, f, g, h] = MAGIC;
    [
        u32::from_ne_bytes([a, b, c, d]),
        u32::from_ne_bytes([e, f, g, h]),
    ]
}

/// Channel geometry, read once at open and validated; from then on only this copy is used.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    pub(super) slots: u32,
    pub(super) max_readers: u32,
    pub(super) max_frame_len: usize,
    /// Bytes from one slot to the next: the frame's pages, then the user header's.
    pub(super) stride: usize,
    /// Bytes of the user header, which starts `stride - header_pages` into a slot.
    pub(super) user_header_len: usize,
}

/// Bytes a slot gives a frame of up to `max_frame_len` bytes and a user header of
/// `user_header_len`: each rounded up to whole pages, the frame's first. `None` on
/// overflow.
pub(super) fn slot_stride(max_frame_len: u64, user_header_len: u64) -> Option<u64> {
    let frame = max_frame_len.checked_next_multiple_of(SLOT_ALIGN as u64)?;
    let header = user_header_len.checked_next_multiple_of(SLOT_ALIGN as u64)?;
    frame.checked_add(header)
}

impl Geometry {
    /// Offset of the user header within a slot: the frame's pages come first, so both
    /// start on a page boundary.
    pub(super) fn user_header_offset(&self) -> usize {
        self.stride - self.user_header_len.next_multiple_of(SLOT_ALIGN)
    }
}

impl Geometry {
    /// Reads and checks the geometry a creator wrote, against the real data length.
    pub(super) fn read(control: &Control, data_len: usize) -> Result<Geometry> {
        let version = control.version.load(Relaxed);
        if version != CHANNEL_VERSION {
            return Err(Error::IncompatibleVersion {
                found: version,
                supported: CHANNEL_VERSION,
            });
        }
        let slots = control.slot_count.load(Relaxed);
        let max_readers = control.max_readers.load(Relaxed);
        if max_readers == 0
            || max_readers as usize > MAX_READERS
            || slots < max_readers + 2
            || slots as usize > MAX_SLOTS
        {
            return Err(Error::corrupt(format!(
                "channel claims {slots} slots for {max_readers} readers"
            )));
        }
        let max_frame_len = load64(&control.max_frame_len);
        let stride = load64(&control.slot_stride);
        // Relaxed: as the fields above, ordered by the opener's Acquire load of the magic;
        // untrusted all the same, hence the checks.
        let user_header_len = control.user_header_len.load(Relaxed);
        if user_header_len as usize > MAX_USER_HEADER_LEN {
            return Err(Error::corrupt(format!(
                "channel claims a user header of {user_header_len} bytes (at most {MAX_USER_HEADER_LEN})"
            )));
        }
        let expected_stride = slot_stride(max_frame_len, u64::from(user_header_len));
        let end = stride
            .checked_mul(u64::from(slots))
            .and_then(|s| s.checked_add(CONTROL_LEN as u64));
        match (expected_stride, end) {
            (Some(s), Some(end)) if max_frame_len > 0 && s == stride && end <= data_len as u64 => {
                Ok(Geometry {
                    slots,
                    max_readers,
                    // Cannot truncate: both are below data_len, a usize.
                    max_frame_len: max_frame_len as usize,
                    stride: stride as usize,
                    user_header_len: user_header_len as usize,
                })
            }
            _ => Err(Error::corrupt(format!(
                "channel claims {slots} slots of {max_frame_len} bytes and a {user_header_len}-byte \
                 user header (stride {stride}) but its data region holds {data_len} bytes"
            ))),
        }
    }
}
