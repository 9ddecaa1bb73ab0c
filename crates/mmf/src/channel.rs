//! Frame channel: one writer publishes frames, any number of readers (up to a bound fixed at
//! creation) take the newest one, in place, without copying and without ever making the
//! writer wait.
//!
//! ```no_run
//! use std::time::Duration;
//! use mmf::{FrameMeta, FrameReader, FrameSpec, FrameWriter};
//!
//! # fn main() -> mmf::Result<()> {
//! // Camera process
//! let mut camera = FrameWriter::create("cam0", FrameSpec::new(1920 * 1080 * 3))?;
//! camera.set_meta(FrameMeta { width: 1920, height: 1080, pixel_format: 0, tag: 0 });
//! camera.publish_with(|buf| {
//!     buf[..6].copy_from_slice(b"pixels"); // render straight into shared memory
//!     1920 * 1080 * 3
//! })?;
//!
//! // Consumer process
//! let mut reader = FrameReader::open("cam0")?;
//! let frame = reader.wait_next(Duration::from_millis(100))?;
//! println!("frame {} ({} bytes, {} skipped)", frame.seq(), frame.len(), frame.skipped());
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! A channel is two ordinary segments (same naming rules, permissions, lifetime, header
//! checks). The channel object `name`, whose header `flags` word says [`KIND_FRAME_CHANNEL`]
//! ([`Mmf::open`](crate::Mmf::open) on it, or [`FrameReader::open`] on a plain segment, fails
//! with [`Error::WrongKind`]), holds a control block and `slots` frame slots of
//! `max_frame_len` bytes each (page aligned): only the writer can write it, readers map it
//! read-only. The reader table `name+readers` ([`reader_table_name`], kind
//! [`KIND_FRAME_READERS`]) holds what readers write: their entries, pins and the count of
//! sleeping readers; writer and readers map it read-write. The `+` lies outside the user
//! alphabet, so no user's segment can take that name. The writer creates both (the table
//! before it publishes the control block, so a reader that finds the channel finds the
//! table) and removes both when it drops; [`Mmf::remove`](crate::Mmf::remove) on the
//! channel's name removes both.
//!
//! **Slots.** A channel created for `R` readers (`FrameSpec::max_readers`, 1 to
//! [`MAX_READERS`]) has at least `R + 2` slots: by default exactly `R + 2`, raised to
//! [`SMALL_FRAME_SLOTS`] (16) when that many slots fit in 1 MiB (frames up to 64 KiB), or
//! any count from `R + 2` to [`MAX_SLOTS`] set with [`FrameSpec::slots`]. Slots beyond
//! `R + 2` do not change the guarantees; they let the writer look at the readers' pins less
//! often (see **Never torn**), which is what makes small frames fast: in
//! `cargo bench -p mmf --bench channel`, a 64 B frame crosses between processes in about
//! 2.7x the time of a bare cache-line ping-pong with 16 slots, against 3.7x to 4x with the
//! 3 slots of `R + 2` for one reader. Each reader owns one entry in a reader table
//! and pins at most one slot at a time through it (a [`Frame`] borrows its reader mutably).
//! To publish, the writer picks a slot that is neither the latest frame nor named by any pin:
//! at most `R` pins plus the latest exclude at most `R + 1` slots, so one is always free, and
//! publishing never waits, whatever readers do — hold a frame forever, die holding it, or
//! write garbage into their pin word (one entry holds one value, so it excludes at most one
//! slot; a value that names no slot excludes nothing). Past the bound: the `R + 1`-th
//! concurrent [`FrameReader::open`] fails with [`Error::ChannelFull`] (after reclaiming
//! entries of dead readers).
//!
//! **Warm slots.** Which free slot the writer takes depends on the frame size. Small frames
//! (slots of up to [`WARM_SLOT_MIN_STRIDE`] bytes, the ones that get 16 slots by default)
//! rotate through the slots, so that the writer can take one scan's worth of free slots
//! without looking at the pins again (see **Never torn**). Larger frames go into the free
//! slot the writer published into most recently, found by a scan of the pins on every
//! publish: a reader that keeps up has let go of the frame before last, so writer and
//! reader alternate between two slots (three while a reader holds a frame), whose bytes are
//! still in the caches they share, instead of walking through `R + 2` slots of several
//! megabytes each, every one cold by the time it comes round again. The scan costs one load
//! per reader entry, nothing next to copying such a frame; the choice never changes what
//! readers see, only where the bytes sit.
//!
//! **Never torn.** A reader publishes a pin (the slot it wants), then checks the slot is
//! still the latest. The writer stores `latest` and reads pins with sequentially consistent
//! operations, so either the reader's check sees the writer has moved on (the reader retries),
//! or the writer's next scan sees the pin (the writer keeps off the slot). One scan finds
//! every slot free at that moment, and each stays free until the writer publishes into it
//! (a reader can only newly pin the latest slot), so the writer scans again only when it has
//! used them all: most publishes touch none of the cache lines readers write. A slot that is
//! latest or pinned is never written, so a pinned frame stays complete and unchanged until
//! the guard drops. The newest frame's metadata sits next to `latest` on one cache line
//! (so a reader picks up both with one cache miss) and is read seqlock-style: `latest` is set
//! to a busy value while the writer rewrites the metadata, and the reader accepts what it
//! read only if `latest` is the same before and after (it carries 25 bits of the sequence
//! number, so a slot reused in between does not look the same).
//!
//! **Waiting.** [`FrameReader::wait_next`] spins briefly (20 µs by default,
//! [`FrameReader::set_spin`]; skipped while frames arrive more slowly than that, resumed when
//! one arrives within it), then sleeps in the kernel on the `latest` word through the
//! segment's waiter (a shared futex on Linux, the segment's named semaphore on Windows). A
//! sleeping reader counts itself in the table's `parked`; the writer makes the wake-up system
//! call only when that count is non-zero, so publishing to busy readers costs no system call.
//! Each kernel sleep lasts at most 1 s before the reader looks again, so a reader that
//! zeroes `parked` (see **Trust**) delays other readers' wake-ups by at most that.
//!
//! **Liveness.** Whether a writer or a reader can still touch the channel is the kernel's
//! answer, as for the segment's lock (see [`lock`](crate::lock), "Owner death"): on Linux
//! the writer holds an open-file-description write lock on byte 40 of the control block (the
//! first byte of `writer_pid`), and the owner of reader entry `i` one on byte `64 + 64i` of
//! the reader table (the first byte of its claim word), each through its own handle's
//! descriptor, from before it
//! publishes its identity until after it gives the entry up; the kernel drops them when the
//! process exits, is killed, or execs. A reader or writer that asks another whether it is
//! alive asks the kernel about that byte (`F_OFD_GETLK`, probing with a read lock, which
//! only write locks conflict with: a reader can read-lock the writer's byte through its
//! read-only descriptor, but that never makes a dead writer look alive), which means the same
//! in every PID namespace, so a reader in another container does not take a live writer for
//! dead. The
//! pid and start time are still recorded, for the platforms without such locks (macOS,
//! FreeBSD) and the `*_held` flag says which answer applies; there the limits of the
//! lock's fallback apply (no PID namespaces, a zombie leader counts as dead on Linux).
//!
//! **Dead readers.** Each reader entry records its owner's process identity (pid and start
//! time) and whether it holds its byte (see Liveness). The writer checks for dead owners on every 16th publish once 100 ms have passed
//! since its last check (so within 100 ms or 16 frames, whichever is later), on
//! [`FrameWriter::reclaim_dead_readers`], and every [`FrameReader::open`] that finds the
//! table full checks before giving up: a dead owner's
//! entry, pin and parked count are released. A dead reader's pin never blocks the writer even
//! before that (see Slots); reclaiming only frees its table entry for a new reader.
//! Limitation: a process killed in the microsecond between claiming an entry and recording
//! its identity leaves that entry busy until the channel is recreated.
//!
//! **Untrusted memory.** Everything read from the region is checked: the geometry once at
//! open against the real mapping length (then only the local copy is used), slot indices and
//! frame lengths on every read. Garbage yields [`Error::Corrupt`], never a panic or an
//! out-of-bounds access. The writer validates nothing it reads from the reader table beyond
//! that: a pin is only compared with slot numbers, a claim word only with what was there. A writer killed in the middle of publishing leaves `latest` busy:
//! [`FrameReader::latest`] then gives [`Error::WriterGone`] after a few milliseconds of
//! retrying, rather than spinning forever.
//!
//! **The writer going away.** A [`FrameWriter`] that drops marks the channel closed and wakes
//! sleeping readers; a writer process that dies cannot, so readers check whether it lives
//! (see Liveness) whenever a wait runs out. Either way readers learn it as
//! [`Error::WriterGone`]: [`FrameReader::wait_next`] returns it instead of
//! [`Error::Timeout`] (at once when the writer dropped, at the timeout when it died),
//! [`FrameReader::try_next`] returns it once the last frame has been taken after a drop, and
//! [`FrameReader::writer_alive`] asks directly. Frames already published stay readable
//! through [`FrameReader::latest`] for as long as the reader is open. To resume, open the
//! channel again once a new writer has created it (after a writer crash on Linux the name is
//! still there: the new writer must [`Mmf::remove`](crate::Mmf::remove) it first).
//!
//! # Trust
//!
//! What each role can count on, whatever the others do (Linux; see the end for other
//! systems):
//!
//! - **The writer** cannot be crashed, blocked or corrupted by readers: they have no write
//!   access to the channel object (its mode has no group or other write bit; readers of
//!   the writer's own user open it read-only too), so they cannot truncate it or change
//!   frames, metadata or `latest`. What it reads from the reader table is only compared,
//!   and all-zero bytes are a valid table; if a reader truncates the table, the `SIGBUS`
//!   handler (`sys::fault`) maps private zero pages over the writer's mapping of it and the
//!   access runs again there, on any instruction, at no cost on the hot path:
//!   publishing goes on, but the writer no longer sees pins or sleepers
//!   ([`FrameWriter::reader_table_lost`]). A reader that holds read locks on the writer's
//!   liveness byte cannot make a dead writer look alive (see **Liveness**).
//! - **A reader** (any process the channel's mode lets open it, [`FrameSpec::mode`]) gets
//!   frames that only the writer wrote, and typed errors for everything else. It cannot
//!   stop other readers from being readers, but it can write the whole reader table, so
//!   it can: take or free other readers' entries (they get [`Error::ReaderEvicted`] on
//!   their next call, and never touch the entry again); clear their pins, so the writer may
//!   overwrite a frame another reader still holds, which [`Frame::verify`] reports as
//!   [`Error::FrameOverwritten`] (each slot carries the sequence number of the frame
//!   being written into it, in the control block, stamped before the first byte); fill the
//!   table ([`Error::ChannelFull`]) or scribble its header (opens fail with typed errors);
//!   truncate it (every reader of it gets [`Error::ReaderEvicted`] from then on); make the
//!   writer call wake on every publish, or none (sleepers look again after 1 s at most).
//!   Call [`Frame::verify`] after consuming a frame whenever not every reader is trusted;
//!   while nobody writes the table behind the crate's back it never fails.
//! - **A process of the writer's user** is fully trusted: it may open the channel object
//!   read-write and change anything (the segment's shared-memory contract, [`crate::Mmf`]).
//!
//! A reader of another user account opens with [`FrameReader::open_trusting`]. On macOS
//! and FreeBSD there is no `SIGBUS` handler: a reader that truncates the table still kills
//! the writer (and readers) there, and liveness falls back to process ids.
//!
//! # Control block layout (version 4, at the start of the channel's data region)
//!
//! Version 4 (this one) moved everything readers write (entries, pins, `parked`) to the
//! reader table, which readers map read-write while the channel is read-only for them, and
//! added the slot stamps. Version 3 decided liveness by kernel locks and had the `held`
//! flags; version 2 asked by pid only (and was fooled across PID namespaces), allowed more
//! than `max_readers + 2` slots and had the writer-dropped bit in `latest`; version 1
//! required exactly `max_readers + 2` slots. Readers and writers of different versions
//! refuse each other's channels with [`Error::IncompatibleVersion`].
//!
//! All words are native-endian `u32`, 64-bit values are (low, high) pairs.
//!
//! | offset | size | field | meaning |
//! |-------:|-----:|-------|---------|
//! | 0 | 8 | `magic` | `b"mmfchan1"`, stored (Release) once every other field is set and the reader table exists, before the slots are prefaulted |
//! | 8 | 4 | `version` | [`CHANNEL_VERSION`] |
//! | 12 | 4 | `slot_count` | `max_readers + 2` ..= [`MAX_SLOTS`] |
//! | 16 | 4 | `max_readers` | 1..=[`MAX_READERS`] |
//! | 24 | 8 | `max_frame_len` | bytes per frame, at least 1 |
//! | 32 | 8 | `slot_stride` | `max_frame_len` rounded up to 4096 |
//! | 40 | 12 | writer pid, start time | who the writer is; byte 40 is the writer's kernel-lock byte (see Liveness) |
//! | 52 | 4 | `writer_held` | 1 if the writer holds the lock on byte 40: readers ask the kernel, not the pid |
//! | 64 | 4 | `latest` | bits 0..6: slot of the newest frame (63: none yet, 62: metadata being rewritten); bit 6: the writer has dropped; bits 7..32: its sequence number mod 2^25. Also the futex word readers sleep on |
//! | 68 | 44 | newest frame's metadata | seq, timestamp, len (2 words each), width, height, pixel format, tag (2 words) |
//! | 256 | 8 × [`MAX_SLOTS`] | slot stamps | per slot, the sequence number of the frame in it or being written into it (0: none yet), stored before its first byte (see [`Frame::verify`]) |
//! | 4096 | `slot_stride` × `slot_count` | frame slots | page aligned |
//!
//! # Reader table layout (version 4, the data region of `name+readers`)
//!
//! 2112 data bytes whatever `max_readers` (entries past it are unused). All-zero bytes
//! mean: every entry free, no pin, nobody parked; which is what a table truncated and
//! regrown by a reader holds, and what a fresh one does.
//!
//! | offset | size | field | meaning |
//! |-------:|-----:|-------|---------|
//! | 0 | 4 | `parked` | readers sleeping in `wait_next` (the writer wakes them only when non-zero) |
//! | 64 + 64i | 64 | reader entry `i` | claim word (bits 0..2: 0 free, 1 busy, 2 owned; bits 2..: generation; its first byte is the owner's kernel-lock byte), pid, start time (2 words), pin (slot + 1, 0: none), parked flag, `held` (as `writer_held`, for the entry's byte) |

use std::hint;
use std::mem::{offset_of, size_of};
use std::ops::Deref;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{fence, AtomicBool, AtomicU32};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::header::{KIND_FRAME_CHANNEL, KIND_FRAME_READERS};
pub use crate::name::reader_table_name;
use crate::segment::{Mmf, MmfOptions};
use crate::sys::{Hold, Liveness, OsProcess, Process, ProcessId};
use crate::trust::TrustedOwners;

mod clock;
pub use clock::monotonic_ns;

/// Most readers a channel can be created for.
pub const MAX_READERS: usize = 32;
/// Most slots a channel can have (slot numbers 62 and 63 are reserved in the `latest` word).
pub const MAX_SLOTS: usize = 62;
/// Slots a channel gets by default when that many fit in [`SMALL_FRAME_SLOTS_BYTES`]
/// (see the module docs on slots).
pub const SMALL_FRAME_SLOTS: usize = 16;
/// Memory budget under which the default slot count is raised to [`SMALL_FRAME_SLOTS`].
pub const SMALL_FRAME_SLOTS_BYTES: usize = 1 << 20;
/// Version of the control block layout (and of the reader table that goes with it).
pub const CHANNEL_VERSION: u32 = 4;
/// Byte of the channel's data region on which the writer holds its kernel lock: the first
/// byte of `writer_pid`.
const WRITER_BYTE: usize = 40;
/// Byte of the reader table's data region on which the owner of reader entry `index` holds
/// its kernel lock: the first byte of the entry's claim word.
fn reader_byte(index: usize) -> usize {
    offset_of!(ReaderTable, readers) + size_of::<ReaderEntry>() * index
}
/// Bytes before the first frame slot.
const CONTROL_LEN: usize = 4096;
/// Data bytes of a reader table: the whole [`ReaderTable`], for any `max_readers`.
const TABLE_LEN: usize = size_of::<ReaderTable>();
/// Slots of more than this many bytes are reused warm-first (module docs, **Warm slots**):
/// the same bound above which the default slot count is not raised.
pub const WARM_SLOT_MIN_STRIDE: usize = SMALL_FRAME_SLOTS_BYTES / SMALL_FRAME_SLOTS;
/// Slots start on page boundaries (4096 is the smallest page size we run on).
const SLOT_ALIGN: usize = 4096;
/// `pin` value meaning "no slot" (a pin stores slot + 1, so that all-zero bytes, what a
/// truncated and regrown table holds, pin nothing).
const NO_SLOT: u32 = 0;
/// Longest a reader sleeps in the kernel before it looks at `latest` again, woken or not: a
/// reader that scribbles the table's `parked` count to 0 stops the writer's wake-ups, and
/// this bounds the delay it causes (Windows caps each kernel wait the same way anyway).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Bits of the `latest` word that hold the slot.
const LATEST_SLOT: u32 = 63;
/// Shift of the sequence number in the `latest` word.
const LATEST_SEQ_SHIFT: u32 = 7;
/// Bit of the `latest` word set when the writer has dropped (see "The writer going away").
const LATEST_CLOSED: u32 = 1 << 6;
/// Slot field of `latest` before the first frame.
const LATEST_NONE: u32 = 63;
/// Slot field of `latest` while the writer rewrites the metadata next to it.
const LATEST_BUSY: u32 = 62;

/// The `latest` word for frame `seq` in `slot`.
fn latest_word(slot: u32, seq: u64) -> u32 {
    ((seq as u32) << LATEST_SEQ_SHIFT) | slot
}
const MAGIC: [u8; 8] = *b"mmfchan1";
/// How often the writer looks for dead readers while publishing.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Tries [`FrameReader::latest`] makes before [`Error::WouldBlock`] (a few milliseconds).
const MAX_PIN_ATTEMPTS: u32 = 100_000;
/// Default spin of [`FrameReader::wait_next`] before sleeping.
const DEFAULT_SPIN: Duration = Duration::from_micros(20);

// Claim word of a reader entry: generation in bits 2.., state in bits 0..2.
/// Nobody owns the entry (zero-initialised memory is a free entry).
const CLAIM_FREE: u32 = 0;
/// An opener is filling in its identity, or a sweeper is releasing a dead owner's entry.
const CLAIM_BUSY: u32 = 1;
/// A reader owns the entry; its pid and start time are valid.
const CLAIM_OWNED: u32 = 2;
const CLAIM_STATE: u32 = 3;
const CLAIM_GEN_ONE: u32 = 4;

#[repr(C, align(64))]
struct ReaderEntry {
    claim: AtomicU32,
    pid: AtomicU32,
    start: [AtomicU32; 2],
    /// The slot this reader has pinned plus 1, or [`NO_SLOT`].
    pin: AtomicU32,
    /// 1 while this reader is counted in `parked`.
    parked: AtomicU32,
    /// 1 if the owner holds the kernel lock on this entry's first byte (see "Liveness").
    held: AtomicU32,
    _reserved: [AtomicU32; 9],
}

/// The newest frame's metadata (valid only as described for `latest` in the module docs).
#[repr(C)]
struct FrameDesc {
    seq: [AtomicU32; 2],
    timestamp: [AtomicU32; 2],
    len: [AtomicU32; 2],
    width: AtomicU32,
    height: AtomicU32,
    pixel_format: AtomicU32,
    tag: [AtomicU32; 2],
}

#[repr(C, align(64))]
struct Control {
    magic: [AtomicU32; 2],
    version: AtomicU32,
    slot_count: AtomicU32,
    max_readers: AtomicU32,
    _reserved0: AtomicU32,
    max_frame_len: [AtomicU32; 2],
    slot_stride: [AtomicU32; 2],
    writer_pid: AtomicU32,
    writer_start: [AtomicU32; 2],
    /// 1 if the writer holds the kernel lock on [`WRITER_BYTE`] (see "Liveness").
    writer_held: AtomicU32,
    _reserved1: [AtomicU32; 2],
    latest: AtomicU32,
    desc: FrameDesc,
    _reserved2: [AtomicU32; 36],
    /// Per slot: the sequence number of the frame in it or being written into it, stored
    /// before the writer touches the slot (see [`Frame::verify`]).
    stamps: [[AtomicU32; 2]; MAX_SLOTS],
    _reserved3: [AtomicU32; (CONTROL_LEN - 256 - 8 * MAX_SLOTS) / 4],
}

/// The reader table: the data region of the second object, `<name>+readers`, which every
/// reader maps read-write (module docs, "Reader table layout"). All-zero bytes are a valid
/// table: every entry free, no pin, nobody parked.
#[repr(C, align(64))]
struct ReaderTable {
    /// Readers sleeping in `wait_next`.
    parked: AtomicU32,
    _reserved0: [AtomicU32; 15],
    readers: [ReaderEntry; MAX_READERS],
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

fn load64(pair: &[AtomicU32; 2]) -> u64 {
    // Relaxed: 64-bit fields are only read where something else (the pin protocol or the
    // magic's Acquire) already orders them after their writes.
    u64::from(pair[0].load(Relaxed)) | (u64::from(pair[1].load(Relaxed)) << 32)
}

fn store64(pair: &[AtomicU32; 2], value: u64) {
    // Relaxed: published by a later Release/SeqCst store (magic, or `latest`).
    pair[0].store(value as u32, Relaxed);
    pair[1].store((value >> 32) as u32, Relaxed);
}

fn magic_words() -> [u32; 2] {
    let [a, b, c, d, e, f, g, h] = MAGIC;
    [
        u32::from_ne_bytes([a, b, c, d]),
        u32::from_ne_bytes([e, f, g, h]),
    ]
}

/// Parameters of a new channel, for [`FrameWriter::create`].
///
/// ```
/// # use mmf::FrameSpec;
/// let spec = FrameSpec { max_frame_len: 1920 * 1080 * 3, max_readers: 3, ..FrameSpec::default() };
/// assert_eq!(spec, FrameSpec::new(1920 * 1080 * 3).max_readers(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    /// Largest frame in bytes (at least 1; the default 0 must be overridden).
    pub max_frame_len: usize,
    /// Readers that may be open at once (1 to [`MAX_READERS`], default 4).
    pub max_readers: usize,
    /// Frame slots of `max_frame_len` bytes each: `max_readers + 2` to [`MAX_SLOTS`], or 0
    /// (the default) for `max_readers + 2` raised to [`SMALL_FRAME_SLOTS`] when those fit in
    /// [`SMALL_FRAME_SLOTS_BYTES`]. More slots cost memory and make small frames faster (see
    /// the [module docs](self)); they never change what readers see.
    pub slots: usize,
    /// Who may open the channel as a reader, as Unix permission bits (default `0o600`):
    /// `0o600` this user only, `0o640` also the group, `0o644` everyone. Read bits are
    /// what count: the frames are created without group or other write (or execute) bits,
    /// whatever is asked, because readers never get write access to them; the reader table
    /// gets write access for every class that may read (module docs, "Trust"). On Windows
    /// the bits are translated into the objects' security descriptors. Readers in another
    /// user account open with [`FrameReader::open_trusting`].
    pub mode: u32,
}

impl Default for FrameSpec {
    fn default() -> Self {
        FrameSpec {
            max_frame_len: 0,
            max_readers: 4,
            slots: 0,
            mode: 0o600,
        }
    }
}

impl FrameSpec {
    /// A spec for frames of up to `max_frame_len` bytes, with the defaults otherwise.
    pub fn new(max_frame_len: usize) -> Self {
        FrameSpec {
            max_frame_len,
            ..FrameSpec::default()
        }
    }

    /// Sets [`max_readers`](Self::max_readers).
    pub fn max_readers(mut self, max_readers: usize) -> Self {
        self.max_readers = max_readers;
        self
    }

    /// Sets the number of [`slots`](Self::slots) (0: the default).
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = slots;
        self
    }

    /// Sets who may read, as permission bits (see [`mode`](Self::mode)).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Permission bits of the channel object (frames and control block): the owner reads
    /// and writes, the classes `mode` lets read may only read.
    fn channel_mode(&self) -> u32 {
        0o600 | (self.mode & 0o044)
    }

    /// Permission bits of the reader table: every class that may read the frames may also
    /// write here (a reader claims an entry and pins through it).
    fn table_mode(&self) -> u32 {
        let read = self.mode & 0o044;
        0o600 | read | (read >> 1)
    }
}

/// User fields published with a frame; the channel does not interpret them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// Width in pixels (or anything).
    pub width: u32,
    /// Height in pixels (or anything).
    pub height: u32,
    /// Pixel format, e.g. a FourCC code.
    pub pixel_format: u32,
    /// Free for the application (a capture timestamp, an exposure id, ...).
    pub tag: u64,
}

/// Channel geometry, read once at open and validated; from then on only this copy is used.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    slots: u32,
    max_readers: u32,
    max_frame_len: usize,
    stride: usize,
}

impl Geometry {
    fn for_spec(spec: &FrameSpec) -> Result<(Geometry, usize)> {
        if spec.max_frame_len == 0 {
            return Err(Error::InvalidSize {
                size: 0,
                reason: "a frame channel needs max_frame_len of at least 1 byte",
            });
        }
        if spec.max_readers == 0 || spec.max_readers > MAX_READERS {
            return Err(Error::InvalidSize {
                size: spec.max_readers as u64,
                reason: "max_readers must be between 1 and 32",
            });
        }
        let least = spec.max_readers + 2;
        if spec.slots != 0 && !(least..=MAX_SLOTS).contains(&spec.slots) {
            return Err(Error::InvalidSize {
                size: spec.slots as u64,
                reason: "slots must be 0 (the default) or between max_readers + 2 and 62",
            });
        }
        let stride = spec.max_frame_len.checked_next_multiple_of(SLOT_ALIGN);
        let slots = match (spec.slots, stride) {
            (0, Some(stride)) if stride <= SMALL_FRAME_SLOTS_BYTES / SMALL_FRAME_SLOTS => {
                least.max(SMALL_FRAME_SLOTS)
            }
            (0, _) => least,
            (slots, _) => slots,
        };
        let total = stride
            .and_then(|stride| stride.checked_mul(slots))
            .and_then(|s| s.checked_add(CONTROL_LEN))
            // Half the address space: the segment adds its header, and no mapping gets near.
            .filter(|&t| t <= isize::MAX as usize / 2)
            .ok_or(Error::InvalidSize {
                size: spec.max_frame_len as u64,
                reason: "max_frame_len times the slot count is larger than this platform can map",
            })?;
        let stride = (total - CONTROL_LEN) / slots;
        Ok((
            Geometry {
                slots: slots as u32,
                max_readers: spec.max_readers as u32,
                max_frame_len: spec.max_frame_len,
                stride,
            },
            total,
        ))
    }

    /// Reads and checks the geometry a creator wrote, against the real data length.
    fn read(control: &Control, data_len: usize) -> Result<Geometry> {
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
        let expected_stride = max_frame_len.checked_next_multiple_of(SLOT_ALIGN as u64);
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
                })
            }
            _ => Err(Error::corrupt(format!(
                "channel claims {slots} slots of {max_frame_len} bytes (stride {stride}) \
                 but its data region holds {data_len} bytes"
            ))),
        }
    }
}

/// The channel object and the reader table, plus the validated geometry: what writer and
/// reader have in common. The writer maps `mmf` read-write, readers read-only; both map
/// `table` read-write.
struct Channel {
    mmf: Mmf,
    table: Mmf,
    geometry: Geometry,
}

/// The control block at the start of a channel object's data region.
fn control_of(mmf: &Mmf) -> &Control {
    // SAFETY: the data region is page aligned, at least CONTROL_LEN long (checked at create
    // and open, before this is called) and lives as long as `mmf`; Control is only atomics,
    // valid for every bit pattern and safe to share across processes. On a reader's
    // read-only mapping it is only ever loaded from, never stored to.
    unsafe { &*mmf.data_ptr().cast::<Control>() }
}

impl Channel {
    fn control(&self) -> &Control {
        control_of(&self.mmf)
    }

    fn table(&self) -> &ReaderTable {
        // SAFETY: the table's data region is page aligned, at least TABLE_LEN long (checked
        // at create and open, before a Channel exists) and lives as long as `self.table`;
        // ReaderTable is only atomics, valid for every bit pattern (a peer may write any),
        // and its mapping is patchable (MmfOptions::companion): if another process
        // truncates the object, the pages turn into private zero pages instead of faulting.
        unsafe { &*self.table.data_ptr().cast::<ReaderTable>() }
    }

    /// Who wakes whom: the reader table's waiter, whose OS state (Windows: the semaphore's
    /// sleeper count in its header) readers may write, unlike the channel's. Readers sleep
    /// on `latest` in the channel object all the same.
    fn waiter(&self) -> crate::lock::Waiter<'_> {
        self.table.waiter()
    }

    /// Whether the writer has dropped (always checked: one load of a line that changes only
    /// then) or, with `check_process`, whether its process has died (reads `/proc` or asks
    /// the OS, so only where a wait has run out or at open).
    fn writer_gone(&self, check_process: bool) -> bool {
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
    fn slot_ptr(&self, slot: u32) -> *mut u8 {
        debug_assert!(slot < self.geometry.slots);
        let offset = CONTROL_LEN + slot as usize * self.geometry.stride;
        // SAFETY: slot < slots, and CONTROL_LEN + slots * stride <= data_len was checked when
        // the geometry was made, so the offset stays inside the data region.
        unsafe { self.mmf.data_ptr().add(offset) }
    }

    fn readers(&self) -> &[ReaderEntry] {
        &self.table().readers[..self.geometry.max_readers as usize]
    }

    /// Releases the entries of readers whose process has died; returns how many.
    fn reclaim_dead_readers(&self) -> usize {
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

/// The writing end of a frame channel: creates the channel and owns its name.
///
/// There is exactly one writer per channel (the creator); the channel's name is removed when
/// it drops, and open readers keep working with the frames already published.
pub struct FrameWriter {
    channel: Channel,
    seq: u64,
    latest: u32,
    next: u32,
    /// Slots known to be free (bit per slot): neither latest nor pinned when the pins were
    /// last scanned, and not published into since (see `take_free_slot`).
    free: u64,
    /// Whether slots are reused warm-first (module docs, **Warm slots**).
    warm: bool,
    /// Sequence number of the last frame published into each slot (0: none yet).
    written: [u64; MAX_SLOTS],
    meta: FrameMeta,
    /// Whether frames carry their publish time (see `set_timestamps`).
    timestamps: bool,
    last_sweep: Instant,
    since_sweep: u32,
}

impl FrameWriter {
    /// Creates channel `name` for frames of up to `spec.max_frame_len` bytes and
    /// `spec.max_readers` readers. Every slot is faulted in now, so the first frames cost
    /// what later ones do.
    ///
    /// Two objects are created: the channel `name` (mode [`FrameSpec::mode`] without any
    /// group or other write bit) and its reader table `name+readers` (see the module docs).
    ///
    /// Errors: [`Error::InvalidSize`] for a zero or unmappable `max_frame_len` or a
    /// `max_readers` outside 1..=[`MAX_READERS`]; everything [`Mmf::create`] can return.
    pub fn create(name: &str, spec: FrameSpec) -> Result<FrameWriter> {
        let (geometry, total) = Geometry::for_spec(&spec)?;
        // Not the segment's prefault, which would populate every page before the header is
        // even published: the loop at the end does it, after readers can attach.
        let mmf = MmfOptions::new(name)
            .kind(KIND_FRAME_CHANNEL)
            .mode(spec.channel_mode())
            .create(total)?;
        // Before the magic: a reader that sees the magic finds the table. A failure drops
        // `mmf`, which removes the channel's name again.
        let table = Self::create_table(name, &spec)?;
        let channel = Channel {
            mmf,
            table,
            geometry,
        };
        let control = channel.control();
        // Both objects are zero-filled: every entry is free and unpinned, nobody is parked,
        // no slot is stamped (frames count from 1); `latest` needs LATEST_NONE.
        control.version.store(CHANNEL_VERSION, Relaxed);
        control.slot_count.store(geometry.slots, Relaxed);
        control.max_readers.store(geometry.max_readers, Relaxed);
        store64(&control.max_frame_len, geometry.max_frame_len as u64);
        store64(&control.slot_stride, geometry.stride as u64);
        let me = Process::current();
        control.writer_pid.store(me.pid, Relaxed);
        store64(&control.writer_start, me.start);
        // Held until the writer's handle closes: drop, exit, kill or exec. A fresh object has
        // no other holder, so `Busy` cannot happen; it would only mean "ask by pid".
        let held = channel.mmf.hold_data_byte(WRITER_BYTE) == Hold::Held;
        control.writer_held.store(u32::from(held), Relaxed);
        control.latest.store(LATEST_NONE, Relaxed);
        // The magic goes before the prefault below, which takes about a second per GiB of
        // slots: readers may open meanwhile instead of waiting for it (and timing out on a
        // large channel). The control block is complete here, and a reader touches no slot
        // before `latest` names one, which only a publish does, after this function returns.
        let [m0, m1] = magic_words();
        control.magic[1].store(m1, Relaxed);
        // Release: publishes every field above; pairs with the Acquire load of magic[0] in
        // FrameReaderOptions::open, which waits for it.
        control.magic[0].store(m0, Release);
        // Write-fault every page of every slot: mapping with populate may leave pages
        // read-only or unmapped on some systems, and a first write costs ~10x a warm one.
        for slot in 0..geometry.slots {
            let base = channel.slot_ptr(slot);
            for offset in (0..geometry.stride).step_by(SLOT_ALIGN) {
                // SAFETY: offset < stride, so the byte lies inside slot `slot`, inside our
                // read-write mapping.
                let byte = unsafe { base.add(offset) };
                // Readers may be open (the magic is out) but read no slot until a publish
                // names it in `latest`, and that SeqCst store orders these writes before
                // their reads; the zero written is what the fresh object holds anyway.
                // SAFETY: as above, the byte is mapped writable; no reader reads it yet.
                unsafe { std::ptr::write_volatile(byte, 0) };
            }
        }
        Ok(FrameWriter {
            channel,
            seq: 0,
            latest: NO_SLOT,
            next: 0,
            free: 0,
            warm: geometry.stride > WARM_SLOT_MIN_STRIDE,
            written: [0; MAX_SLOTS],
            meta: FrameMeta::default(),
            timestamps: true,
            last_sweep: Instant::now(),
            since_sweep: 0,
        })
    }

    /// Creates the reader table of channel `name`, whose name the caller has just created
    /// exclusively: a table already under the table's name is a leftover of an earlier
    /// channel (a writer that crashed, whose channel name was removed on its own), removed
    /// and replaced once.
    fn create_table(name: &str, spec: &FrameSpec) -> Result<Mmf> {
        let options = MmfOptions::new(reader_table_name(name))
            .kind(KIND_FRAME_READERS)
            .companion()
            .mode(spec.table_mode());
        match options.create(TABLE_LEN) {
            Err(Error::AlreadyExists { .. }) => {
                <crate::sys::Segment as crate::sys::OsSegment>::remove(
                    &reader_table_name(name),
                    crate::sys::Namespace::Local,
                )?;
                options.create(TABLE_LEN)
            }
            other => other,
        }
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        self.channel.mmf.name()
    }

    /// Largest frame in bytes.
    pub fn max_frame_len(&self) -> usize {
        self.channel.geometry.max_frame_len
    }

    /// Readers the channel was created for.
    pub fn max_readers(&self) -> usize {
        self.channel.geometry.max_readers as usize
    }

    /// Whether the reader table was truncated by another process and the writer now works
    /// on private zero pages in its place: it publishes on, but sees no reader's pin and
    /// wakes no sleeping reader any more (readers get typed errors; see the module docs,
    /// "Trust"). Recreate the channel to serve readers again.
    pub fn reader_table_lost(&self) -> bool {
        self.channel.table.mapping_lost()
    }

    /// Sequence number of the last frame published (0 before the first; frames count from 1).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Sets the user fields published with every following frame.
    pub fn set_meta(&mut self, meta: FrameMeta) {
        self.meta = meta;
    }

    /// Whether following frames carry their publish time ([`Frame::timestamp_ns`]; on by
    /// default). Off, they carry 0 and each publish saves one read of the monotonic clock,
    /// which is a measurable part of a small frame's cost (`cargo bench -p mmf --bench
    /// channel -- small` shows both). A camera that stamps frames itself (e.g. with the
    /// sensor's capture time, in [`FrameMeta::tag`]) needs no second clock read.
    pub fn set_timestamps(&mut self, on: bool) {
        self.timestamps = on;
    }

    /// Copies `frame` into a free slot and publishes it; returns its sequence number.
    ///
    /// [`Error::FrameTooLarge`] if `frame` is longer than `max_frame_len`.
    pub fn publish(&mut self, frame: &[u8]) -> Result<u64> {
        if frame.len() > self.max_frame_len() {
            return Err(Error::FrameTooLarge {
                len: frame.len() as u64,
                max: self.max_frame_len() as u64,
            });
        }
        self.publish_with(|buf| {
            buf[..frame.len()].copy_from_slice(frame);
            frame.len()
        })
    }

    /// Lets `fill` write a frame in place into a free slot (`max_frame_len` bytes; contents
    /// are whatever an earlier frame left there), then publishes the first `n` bytes, where
    /// `n` is what `fill` returns. Never waits for readers. Returns the sequence number.
    ///
    /// [`Error::FrameTooLarge`] (and nothing published) if `n > max_frame_len`.
    pub fn publish_with(&mut self, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<u64> {
        let slot = self.take_free_slot()?;
        let max = self.max_frame_len();
        let seq = self.seq + 1;
        // Stamp the slot before writing into it, seqlock-writer style: Relaxed stores, then a
        // Release fence that orders them before every write `fill` makes; pairs with the
        // Acquire fence in `Frame::verify`, so a reader that read any byte of this frame
        // (through a pin some other process cleared) sees the new stamp.
        store64(&self.channel.control().stamps[slot as usize], seq);
        fence(Release);
        // SAFETY: slot < slots, so its max_frame_len bytes lie in our read-write mapping; no
        // reader reads it (neither `latest` nor pinned: take_free_slot, module docs), and
        // `&mut self` makes this the only borrow in this process.
        let buf = unsafe { std::slice::from_raw_parts_mut(self.channel.slot_ptr(slot), max) };
        let len = fill(buf);
        if len > max {
            // Nothing was published, so the slot is still free.
            self.free |= 1 << slot;
            return Err(Error::FrameTooLarge {
                len: len as u64,
                max: max as u64,
            });
        }
        let control = self.channel.control();
        // Seqlock write: mark the metadata as changing, then rewrite it. Relaxed + Release
        // fence: the busy value is ordered before the metadata stores below; pairs with the
        // reader's Acquire fence in `pin` (a reader that saw any new metadata sees busy or
        // later on its re-check).
        control
            .latest
            .store(latest_word(LATEST_BUSY, self.seq), Relaxed);
        fence(Release);
        let desc = &control.desc;
        store64(&desc.seq, seq);
        let timestamp = if self.timestamps { monotonic_ns() } else { 0 };
        store64(&desc.timestamp, timestamp);
        store64(&desc.len, len as u64);
        desc.width.store(self.meta.width, Relaxed);
        desc.height.store(self.meta.height, Relaxed);
        desc.pixel_format.store(self.meta.pixel_format, Relaxed);
        store64(&desc.tag, self.meta.tag);
        // SeqCst (also Release): publishes the frame bytes and metadata to a reader whose
        // load sees this value; takes part in the store-latest / load-pins versus
        // store-pin / load-latest order that keeps pinned slots safe (module docs); and pairs
        // with the reader's SeqCst increment of `parked` then load of `latest` in wait_next
        // against our load of `parked` below: either it sees this value, or we see its count.
        control.latest.store(latest_word(slot, seq), SeqCst);
        // Whatever a peer scribbled here costs at most a needless wake-up call, or (a zero)
        // a sleeping reader's wait until MAX_SLEEP.
        if self.channel.table().parked.load(SeqCst) != 0 {
            self.channel.waiter().wake_all(&control.latest);
        }
        self.seq = seq;
        self.latest = slot;
        self.written[slot as usize] = seq;
        self.next = (slot + 1) % self.channel.geometry.slots;
        self.since_sweep += 1;
        if self.since_sweep >= 16 {
            self.since_sweep = 0;
            if self.last_sweep.elapsed() >= SWEEP_INTERVAL {
                self.last_sweep = Instant::now();
                self.channel.reclaim_dead_readers();
            }
        }
        Ok(seq)
    }

    /// Releases the reader entries of processes that died while reading; returns how many.
    /// The writer also does this on its own while publishing (see the module docs).
    pub fn reclaim_dead_readers(&mut self) -> usize {
        self.channel.reclaim_dead_readers()
    }

    /// Takes a slot that no reader reads or can start to read: one found free by the last
    /// scan of the readers' pins and not published into since. Scans again only when none
    /// is left, so most publishes read none of the cache lines readers write when they pin
    /// (each scan finds up to `slots - 1` free slots).
    ///
    /// Why a slot stays free after the scan without another look: a reader reads a slot
    /// only after storing its pin and then seeing `latest` still name it, both SeqCst. A pin
    /// the scan missed was stored after the scan's SeqCst loads, so that reader's re-check
    /// sees the `latest` of that moment, which is the one at the scan (excluded) or a slot
    /// published since (taken out of the free set). Its re-check fails and it retries
    /// (`latest` also carries 25 bits of the sequence number, so an old value of the same
    /// slot does not match).
    fn take_free_slot(&mut self) -> Result<u32> {
        let slots = self.channel.geometry.slots;
        if self.warm {
            // A fresh scan every time (module docs, **Warm slots**); the same argument as
            // above keeps the slot free until we publish into it.
            let free = self.scan_free_slots();
            return (0..slots)
                .filter(|&slot| free & (1 << slot) != 0)
                // Most recently written first; among never-written slots, the lowest.
                .max_by_key(|&slot| (self.written[slot as usize], std::cmp::Reverse(slot)))
                .ok_or_else(|| Error::corrupt("no free frame slot"));
        }
        if self.free == 0 {
            self.free = self.scan_free_slots();
        }
        let slot = (0..slots)
            .map(|k| (self.next + k) % slots)
            .find(|&slot| self.free & (1 << slot) != 0)
            // Unreachable by counting (module docs): every entry names at most one slot.
            .ok_or_else(|| Error::corrupt("no free frame slot"))?;
        self.free &= !(1 << slot);
        Ok(slot)
    }

    /// The slots that are neither the latest frame nor pinned by any reader, as a bit set.
    fn scan_free_slots(&self) -> u64 {
        let slots = self.channel.geometry.slots;
        let mut taken: u64 = 0;
        if self.latest < slots {
            taken |= 1 << self.latest;
        }
        for entry in self.channel.readers() {
            // SeqCst: see take_free_slot and the store of `latest` in publish_with; also
            // Acquire, pairing with the reader's Release unpin, so its reads of the slot end
            // before we write it.
            // A pin stores slot + 1: NO_SLOT (0) wraps to u32::MAX, and garbage >= slots
            // excludes nothing.
            let pinned = entry.pin.load(SeqCst).wrapping_sub(1);
            if pinned < slots {
                taken |= 1 << pinned;
            }
        }
        // slots <= MAX_SLOTS = 62, so the shift cannot overflow.
        ((1u64 << slots) - 1) & !taken
    }
}

impl Drop for FrameWriter {
    fn drop(&mut self) {
        let control = self.channel.control();
        // The flag lives in the `latest` word that sleeping readers wait on, so a reader about
        // to sleep cannot miss it: the kernel compares the word before sleeping. SeqCst (also
        // Release): pairs with the load in Channel::writer_gone; every frame published before
        // is visible to a reader that sees the flag.
        control.latest.fetch_or(LATEST_CLOSED, SeqCst);
        self.channel.waiter().wake_all(&control.latest);
    }
}

impl std::fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameWriter")
            .field("name", &self.name())
            .field("max_frame_len", &self.max_frame_len())
            .field("max_readers", &self.max_readers())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// A reading end of a frame channel.
///
/// Holds one entry of the channel's reader table from [`open`](Self::open) until drop, and
/// at most one pinned frame at a time (a [`Frame`] borrows the reader mutably).
pub struct FrameReader {
    channel: Channel,
    entry: usize,
    generation: u32,
    /// Set once this reader found its entry taken (or its table mapping lost): from then on
    /// it never touches the entry again, which may be another reader's now.
    evicted: AtomicBool,
    last_seq: Option<u64>,
    received: u64,
    skipped: u64,
    spin: Duration,
    /// Whether the next wait spins first (see `wait_pin`).
    spin_now: bool,
}

/// What a successful pin found; turned into a [`Frame`] by the caller.
struct Pinned {
    slot: u32,
    info: FrameInfo,
}

/// Options for opening a frame channel, for readers that need other than the defaults of
/// [`FrameReader::open`].
///
/// ```no_run
/// use std::time::Duration;
/// use mmf::FrameReaderOptions;
///
/// # fn main() -> mmf::Result<()> {
/// // A writer creating a 4 GiB channel needs a few seconds before readers can attach.
/// let reader = FrameReaderOptions::new("cam0")
///     .open_timeout(Duration::from_secs(10))
///     .open()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FrameReaderOptions {
    name: String,
    open_timeout: Duration,
    trusted: TrustedOwners,
}

impl FrameReaderOptions {
    /// Options for channel `name` with the defaults (a 1 s open timeout).
    pub fn new(name: impl Into<String>) -> Self {
        FrameReaderOptions {
            name: name.into(),
            open_timeout: crate::segment::DEFAULT_OPEN_TIMEOUT,
            trusted: TrustedOwners::new(),
        }
    }

    /// Also accept a channel created by one of `owners` (Unix; by default only this
    /// process's user and root): see [`MmfOptions::trusted_owners`].
    pub fn trusted_owners(mut self, owners: TrustedOwners) -> Self {
        self.trusted = owners;
        self
    }

    /// How long [`open`](Self::open) waits, in all, for a writer that is still creating the
    /// channel (default 1 s, [`DEFAULT_OPEN_TIMEOUT`](crate::DEFAULT_OPEN_TIMEOUT)) before
    /// failing with [`Error::NotReady`]. A writer allocates and maps the whole channel before
    /// readers can attach, a fraction of a second per GiB of slots (its prefault of every
    /// slot comes after, and does not delay readers): raise this for very large channels, or
    /// for readers started together with their writer on a loaded machine.
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// Opens the channel (see [`FrameReader::open`] for the errors).
    pub fn open(&self) -> Result<FrameReader> {
        FrameReader::open_with(self)
    }
}

impl FrameReader {
    /// Opens channel `name`, waiting up to 1 s for a creator that is still initialising it
    /// (longer: [`FrameReaderOptions::open_timeout`]).
    ///
    /// Errors: [`Error::WrongKind`] if `name` is a plain segment; [`Error::WriterGone`] if the
    /// channel's writer has dropped or its process has died (wait for a new writer, then open
    /// again); [`Error::ChannelFull`] if `max_readers` live readers are open;
    /// [`Error::Corrupt`] for an inconsistent control block; [`Error::NotReady`] if the
    /// writer did not finish creating the channel within the timeout; everything
    /// [`Mmf::open`] can return, such as [`Error::UntrustedOwner`] for a channel created by a
    /// user other than this process's (or root): see [`open_trusting`](Self::open_trusting).
    pub fn open(name: &str) -> Result<FrameReader> {
        FrameReaderOptions::new(name).open()
    }

    /// Opens channel `name` as [`open`](Self::open) does, also accepting a channel created
    /// by one of `owners` (Unix; e.g. a camera service running as its own user). Without
    /// them, a channel whose owner is neither this process's user nor root is refused with
    /// [`Error::UntrustedOwner`] before anything is mapped. The same as
    /// [`FrameReaderOptions::trusted_owners`].
    pub fn open_trusting(name: &str, owners: TrustedOwners) -> Result<FrameReader> {
        FrameReaderOptions::new(name).trusted_owners(owners).open()
    }

    fn open_with(options: &FrameReaderOptions) -> Result<FrameReader> {
        let (name, open_timeout) = (options.name.as_str(), options.open_timeout);
        // One timeout for all three waits: the segment's header, the channel's magic, the
        // table's header.
        let start = Instant::now();
        // Read-only, always: a reader never stores into the frames or the control block,
        // and cannot (module docs, "Trust").
        let mmf = MmfOptions::new(name)
            .kind(KIND_FRAME_CHANNEL)
            .prefault(true)
            .open_timeout(open_timeout)
            .trusted_owners(options.trusted.clone())
            .open_read_only()?;
        if mmf.len() < CONTROL_LEN {
            return Err(Error::corrupt(format!(
                "frame channel data region of {} bytes cannot hold its control block",
                mmf.len()
            )));
        }
        loop {
            let control = control_of(&mmf);
            // Acquire: pairs with the creator's Release store of magic[0] after every other
            // control field (and after creating the reader table).
            let m0 = control.magic[0].load(Acquire);
            let m1 = control.magic[1].load(Relaxed);
            if [m0, m1] == magic_words() {
                break;
            }
            if m0 != 0 {
                return Err(Error::corrupt(
                    "frame channel control block has a bad magic",
                ));
            }
            let waited = start.elapsed();
            if waited >= open_timeout {
                return Err(Error::NotReady {
                    name: name.to_owned(),
                    waited,
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let geometry = Geometry::read(control_of(&mmf), mmf.len())?;
        let table = MmfOptions::new(reader_table_name(name))
            .kind(KIND_FRAME_READERS)
            .companion()
            .open_timeout(open_timeout.saturating_sub(start.elapsed()))
            .trusted_owners(options.trusted.clone())
            .open();
        let table = match table {
            Ok(table) if table.len() >= TABLE_LEN => table,
            Ok(table) => {
                return Err(Error::corrupt(format!(
                    "frame channel reader table of {} bytes cannot hold {TABLE_LEN}",
                    table.len()
                )))
            }
            // The writer dropped (removing both names) since we opened the channel.
            // SeqCst (also Acquire): as in `Channel::writer_gone`, pairs with the writer's
            // SeqCst fetch_or in its Drop, which comes before it removes the table's name.
            Err(Error::NotFound { .. })
                if control_of(&mmf).latest.load(SeqCst) & LATEST_CLOSED != 0 =>
            {
                return Err(Error::WriterGone {
                    name: name.to_owned(),
                })
            }
            Err(e) => return Err(e),
        };
        let channel = Channel {
            mmf,
            table,
            geometry,
        };
        if channel.writer_gone(true) {
            return Err(Error::WriterGone {
                name: name.to_owned(),
            });
        }
        let (entry, generation) = match Self::claim(&channel) {
            Some(claimed) => claimed,
            None => {
                channel.reclaim_dead_readers();
                Self::claim(&channel).ok_or_else(|| Error::ChannelFull {
                    name: name.to_owned(),
                    max_readers: channel.geometry.max_readers,
                })?
            }
        };
        Ok(FrameReader {
            channel,
            entry,
            generation,
            evicted: AtomicBool::new(false),
            last_seq: None,
            received: 0,
            skipped: 0,
            spin: DEFAULT_SPIN,
            spin_now: true,
        })
    }

    /// Takes a free reader entry: returns its index and claim generation.
    fn claim(channel: &Channel) -> Option<(usize, u32)> {
        let me = Process::current();
        for (index, entry) in channel.readers().iter().enumerate() {
            let claim = entry.claim.load(Relaxed);
            if claim & CLAIM_STATE != CLAIM_FREE {
                continue;
            }
            let generation = claim & !CLAIM_STATE;
            // Acquire: pairs with the Release that freed the entry, so our stores below
            // come after the releaser's.
            if entry
                .claim
                .compare_exchange(claim, generation | CLAIM_BUSY, Acquire, Relaxed)
                .is_err()
            {
                continue;
            }
            // The byte before the entry turns owned (see `reclaim_dead_readers`). Busy: the
            // previous owner freed the entry but has not released its byte yet; give the
            // entry back (nobody else touches a busy entry) and try the next.
            let held = match channel.table.hold_data_byte(reader_byte(index)) {
                Hold::Held => 1,
                Hold::Unsupported => 0,
                Hold::Busy => {
                    // Release: as when the entry was freed.
                    entry.claim.store(claim, Release);
                    continue;
                }
            };
            entry.held.store(held, Relaxed);
            entry.pid.store(me.pid, Relaxed);
            store64(&entry.start, me.start);
            entry.parked.store(0, Relaxed);
            // Relaxed: a stale pin is harmless (it only excludes a slot); NO_SLOT is the
            // entry's resting value.
            entry.pin.store(NO_SLOT, Relaxed);
            // Release: a sweeper's Acquire load of OWNED sees our identity.
            entry.claim.store(generation | CLAIM_OWNED, Release);
            return Some((index, generation));
        }
        None
    }

    fn entry(&self) -> &ReaderEntry {
        // In bounds: `entry` came from enumerating `readers()` at open.
        &self.channel.readers()[self.entry]
    }

    /// Whether the entry is still this reader's: its claim word unchanged since `claim`, and
    /// the table still the shared one. A peer with write access to the table can break
    /// both (module docs, "Trust"); once broken, stays broken.
    fn entry_is_ours(&self) -> bool {
        // Relaxed: process-local flag.
        if self.evicted.load(Relaxed) {
            return false;
        }
        // Relaxed: only compared; a claim that changes right after is caught by the next
        // check, or by `Frame::verify`.
        let ours = self.entry().claim.load(Relaxed) == (self.generation | CLAIM_OWNED)
            && !self.channel.table.mapping_lost();
        if !ours {
            // Relaxed: process-local flag.
            self.evicted.store(true, Relaxed);
        }
        ours
    }

    /// [`Error::ReaderEvicted`] unless the entry is still ours (see `entry_is_ours`).
    fn check_entry(&self) -> Result<()> {
        if self.entry_is_ours() {
            Ok(())
        } else {
            Err(self.evicted_error())
        }
    }

    fn evicted_error(&self) -> Error {
        Error::ReaderEvicted {
            name: self.name().to_owned(),
        }
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        self.channel.mmf.name()
    }

    /// Largest frame in bytes.
    pub fn max_frame_len(&self) -> usize {
        self.channel.geometry.max_frame_len
    }

    /// Readers the channel was created for.
    pub fn max_readers(&self) -> usize {
        self.channel.geometry.max_readers as usize
    }

    /// Frames this reader has taken with a newer sequence number than the one before.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Frames published but never seen by this reader, between the first and the last it saw.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Sequence number of the newest frame this reader has seen.
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// How long [`wait_next`](Self::wait_next) spins before sleeping in the kernel
    /// (default 20 µs). Spinning wakes in well under a microsecond but burns CPU; zero
    /// sleeps at once.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
        self.spin_now = true;
    }

    /// The newest complete frame, or `None` before the first publish. O(1): pins the slot,
    /// copies nothing. May return the same frame as last time.
    ///
    /// [`Error::WouldBlock`] if the newest frame's metadata stays mid-update for milliseconds
    /// (a writer killed while publishing); [`Error::Corrupt`] for garbage in the channel;
    /// [`Error::ReaderEvicted`], from then on, once another process has taken this reader's
    /// entry or truncated the reader table (module docs, "Trust"; the same for every method
    /// that takes a frame).
    pub fn latest(&mut self) -> Result<Option<Frame<'_>>> {
        self.check_entry()?;
        match self.pin()? {
            Some(pinned) => Ok(Some(self.frame(pinned))),
            None => Ok(None),
        }
    }

    /// The newest frame if it is newer than the last one this reader saw, without waiting.
    ///
    /// [`Error::WriterGone`] once the writer has dropped and this reader has taken its last
    /// frame. (A writer *process* that died is not noticed here, to keep polling cheap: see
    /// [`writer_alive`](Self::writer_alive).)
    pub fn try_next(&mut self) -> Result<Option<Frame<'_>>> {
        self.check_entry()?;
        let pinned = match self.pin_newer()? {
            Some(pinned) => Some(pinned),
            None => self.last_frame_if_writer_gone(false)?,
        };
        Ok(pinned.map(|pinned| self.frame(pinned)))
    }

    /// Whether the channel's writer is still there: it has not dropped, and its process has
    /// not died (asks the OS, so it costs a system call or two; not for every frame).
    pub fn writer_alive(&self) -> bool {
        !self.channel.writer_gone(true)
    }

    /// For a reader that found no newer frame: `Ok(None)` while the writer is there; once it
    /// is gone, a frame it published just before going if this reader has not taken it yet,
    /// else [`Error::WriterGone`].
    fn last_frame_if_writer_gone(&mut self, check_process: bool) -> Result<Option<Pinned>> {
        if !self.channel.writer_gone(check_process) {
            return Ok(None);
        }
        // Look again: the flag is set after the last publish, and our load of it ordered that
        // publish before this look.
        match self.pin_newer()? {
            Some(pinned) => Ok(Some(pinned)),
            None => Err(Error::WriterGone {
                name: self.name().to_owned(),
            }),
        }
    }

    /// Waits up to `timeout` for a frame newer than the last one this reader saw and returns
    /// the newest (the first call returns the current frame at once, if there is one).
    ///
    /// Spins for up to [`set_spin`](Self::set_spin), then sleeps in the kernel until the
    /// writer publishes. The spin adapts: it is skipped while frames arrive more slowly than
    /// the spin window (the last wait had to sleep), and resumes once one arrives within it.
    /// [`Error::Timeout`] if nothing newer arrived in time; [`Error::WriterGone`] instead
    /// when the writer dropped (at once) or its process died (noticed when the time runs
    /// out), after this reader has taken the last frame it published.
    pub fn wait_next(&mut self, timeout: Duration) -> Result<Frame<'_>> {
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        let pinned = self.wait_pin(start, deadline)?;
        Ok(self.frame(pinned))
    }

    fn wait_pin(&mut self, start: Instant, deadline: Option<Instant>) -> Result<Pinned> {
        let result = self.wait_pin_inner(start, deadline);
        // Adapt: spin next time only if this frame came within the spin window. When frames
        // come slower, spinning only burns CPU, and (measured on a VM) a thread that spun
        // before sleeping wakes about twice as slowly as one that went straight to sleep.
        self.spin_now = result.is_ok() && start.elapsed() <= self.spin;
        result
    }

    fn wait_pin_inner(&mut self, start: Instant, deadline: Option<Instant>) -> Result<Pinned> {
        let mut spinning = self.spin_now && !self.spin.is_zero();
        let mut spins: u32 = 0;
        // Once here and after every sleep (not per spin): an evicted reader is told at once,
        // not only when a frame arrives.
        self.check_entry()?;
        loop {
            // Relaxed: only a hint whether pinning is worth trying; `pin` orders properly.
            let seen = self.channel.control().latest.load(Relaxed);
            if self.may_be_newer(seen) {
                match self.pin_newer() {
                    Ok(Some(pinned)) => return Ok(pinned),
                    // Still being rewritten: wait on, as for no frame.
                    Ok(None) | Err(Error::WouldBlock) => {}
                    Err(e) => return Err(e),
                }
            }
            if spinning {
                spins = spins.wrapping_add(1);
                if spins % 64 == 0
                    && (start.elapsed() >= self.spin
                        || deadline.is_some_and(|d| Instant::now() >= d))
                {
                    spinning = false;
                }
                hint::spin_loop();
                continue;
            }
            let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
            if let Some(pinned) = self.last_frame_if_writer_gone(timed_out)? {
                return Ok(pinned);
            }
            if timed_out {
                return Err(Error::Timeout {
                    waited: start.elapsed(),
                });
            }
            self.sleep_while_latest_is(seen, deadline);
            self.check_entry()?;
        }
    }

    /// Sleeps while `latest` still reads `seen`, counted in `parked` so the writer wakes us,
    /// for at most [`MAX_SLEEP`] (the caller loops).
    fn sleep_while_latest_is(&self, seen: u32, deadline: Option<Instant>) {
        let control = self.channel.control();
        let table = self.channel.table();
        // Capped: a peer that zeroes `parked` stops our wake-ups, and costs us at most this.
        let cap = Instant::now().checked_add(MAX_SLEEP);
        let deadline = match (deadline, cap) {
            (Some(d), Some(c)) => Some(d.min(c)),
            (d, c) => d.or(c),
        };
        // Our flag only while the entry is ours: after an eviction it may be another's.
        let flag = self.entry_is_ours().then(|| self.entry());
        // Count first, flag second (and the reverse on the way out): a reader that dies in
        // between leaves the count one too high (the writer makes needless wake calls), never
        // too low (a missed wake-up).
        // SeqCst: pairs with the writer's SeqCst store of `latest` then load of `parked`.
        table.parked.fetch_add(1, SeqCst);
        if let Some(entry) = flag {
            entry.parked.store(1, Relaxed);
        }
        // SeqCst: see above.
        if control.latest.load(SeqCst) == seen {
            self.channel.waiter().wait(&control.latest, seen, deadline);
        }
        // A sweeper only touches entries of dead processes, so our flag is still ours
        // (unless a misbehaving peer took the entry: then this store is no worse than its).
        if let Some(entry) = flag {
            entry.parked.store(0, Relaxed);
        }
        // Relaxed: the count only decides whether the writer calls wake; saturating in case a
        // corrupt peer zeroed it.
        let _ = table
            .parked
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    /// Whether `latest` word `word` may name a frame newer than the last one seen: the
    /// cheap test that keeps polling readers off the shared cache lines they would write.
    fn may_be_newer(&self, word: u32) -> bool {
        match word & LATEST_SLOT {
            LATEST_NONE => false,
            // Being rewritten: a newer frame is on its way.
            LATEST_BUSY => true,
            _ => self.last_seq.map_or(true, |last| {
                latest_word(0, last) >> LATEST_SEQ_SHIFT != word >> LATEST_SEQ_SHIFT
            }),
        }
    }

    /// Pins the latest frame if it is newer than the last one seen.
    fn pin_newer(&mut self) -> Result<Option<Pinned>> {
        // Relaxed: a hint only (see may_be_newer); `pin` does the ordered reads.
        if !self.may_be_newer(self.channel.control().latest.load(Relaxed)) {
            return Ok(None);
        }
        let Some(pinned) = self.pin()? else {
            return Ok(None);
        };
        if self.last_seq.is_some_and(|last| pinned.info.seq <= last) {
            self.unpin();
            return Ok(None);
        }
        Ok(Some(pinned))
    }

    /// Pins the slot `latest` names and reads the metadata beside it (`frame` does the
    /// counting).
    fn pin(&mut self) -> Result<Option<Pinned>> {
        let geometry = self.channel.geometry;
        let control = self.channel.control();
        let entry = self.entry();
        let desc = &control.desc;
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            if attempts % 64 == 0 {
                // A writer publishing faster than we can pin: let it breathe.
                std::thread::yield_now();
            }
            if attempts > MAX_PIN_ATTEMPTS {
                // `latest` stayed busy (a writer killed mid-publish) or changed on every
                // look (a runaway peer): give up rather than spin forever.
                self.unpin();
                if self.channel.writer_gone(true) {
                    return Err(Error::WriterGone {
                        name: self.name().to_owned(),
                    });
                }
                return Err(Error::WouldBlock);
            }
            // SeqCst: pairs with the writer's SeqCst store of `latest`; its Acquire part makes
            // the frame it names visible.
            let word = control.latest.load(SeqCst);
            let slot = word & LATEST_SLOT;
            match slot {
                LATEST_NONE => {
                    self.unpin();
                    return Ok(None);
                }
                LATEST_BUSY => {
                    hint::spin_loop();
                    continue;
                }
                _ if slot >= geometry.slots => {
                    self.unpin();
                    return Err(Error::corrupt(format!(
                        "latest frame slot {slot} of {}",
                        geometry.slots
                    )));
                }
                _ => {}
            }
            // Unit tests run the writer here, in the window the re-check below closes.
            #[cfg(test)]
            tests::between_look_and_pin();
            // A pin through an entry that is no longer ours would protect nothing (and
            // might clear its new owner's pin later). One load of the line we store to next.
            if !self.entry_is_ours() {
                return Err(self.evicted_error());
            }
            // SeqCst: our pin must be ordered before the re-check below against the writer's
            // store of `latest` and its load of pins (module docs).
            entry.pin.store(slot + 1, SeqCst);
            let info = FrameInfo {
                seq: load64(&desc.seq),
                timestamp_ns: load64(&desc.timestamp),
                len: 0,
                skipped: 0,
                meta: FrameMeta {
                    width: desc.width.load(Relaxed),
                    height: desc.height.load(Relaxed),
                    pixel_format: desc.pixel_format.load(Relaxed),
                    tag: load64(&desc.tag),
                },
            };
            let len = load64(&desc.len);
            // Acquire fence: orders the metadata loads before the re-check; pairs with the
            // writer's Release fence after it marks `latest` busy.
            fence(Acquire);
            // SeqCst: see the pin store. Unchanged => the slot is still latest (the writer
            // will see our pin before it could choose it again) and the metadata is its own.
            if control.latest.load(SeqCst) != word {
                continue;
            }
            if len > geometry.max_frame_len as u64
                || latest_word(slot, info.seq) != word & !LATEST_CLOSED
            {
                self.unpin();
                return Err(Error::corrupt(format!(
                    "frame {} of {len} bytes in slot {slot} does not match the channel \
                     (at most {} bytes, latest word {word:#x})",
                    info.seq, geometry.max_frame_len
                )));
            }
            return Ok(Some(Pinned {
                slot,
                // Cannot truncate: len <= max_frame_len, a usize.
                info: FrameInfo {
                    len: len as usize,
                    ..info
                },
            }));
        }
    }

    fn unpin(&self) {
        if !self.entry_is_ours() {
            return;
        }
        // Release: our reads of the slot happen before the writer's SeqCst load that sees
        // this value and lets it reuse the slot.
        self.entry().pin.store(NO_SLOT, Release);
    }

    fn frame(&mut self, mut pinned: Pinned) -> Frame<'_> {
        // Count the frame if it is newer than the last one seen (a frame seen again through
        // latest() counts nothing; a garbage sequence number only skews the counts).
        let seq = pinned.info.seq;
        if self.last_seq.map_or(true, |last| seq > last) {
            if let Some(last) = self.last_seq {
                pinned.info.skipped = seq - last - 1;
            }
            self.last_seq = Some(seq);
            self.received += 1;
            self.skipped = self.skipped.saturating_add(pinned.info.skipped);
        }
        let this: &FrameReader = self;
        // SAFETY: slot < slots and len <= max_frame_len (checked in pin): in the mapping, which
        // lives as long as `this`. Pinned while `latest`, the slot is not written until the
        // Frame (the reader's only pin, borrowing it mutably) drops and unpins (module docs).
        let data = unsafe {
            std::slice::from_raw_parts(this.channel.slot_ptr(pinned.slot), pinned.info.len)
        };
        Frame {
            reader: this,
            data,
            slot: pinned.slot,
            info: pinned.info,
        }
    }
}

impl Drop for FrameReader {
    fn drop(&mut self) {
        if !self.entry_is_ours() {
            // Another's now, or a private page: nothing of ours to free. Our byte lock goes
            // when the table handle closes its descriptor.
            return;
        }
        self.unpin();
        let entry = self.entry();
        let owned = self.generation | CLAIM_OWNED;
        // Bounded: a sweeper holds CLAIM_BUSY only while it checks a process's liveness.
        for _ in 0..10_000 {
            // Release: our last reads of any slot happen before the next claimer's Acquire.
            match entry.claim.compare_exchange(
                owned,
                self.generation.wrapping_add(CLAIM_GEN_ONE) | CLAIM_FREE,
                Release,
                Relaxed,
            ) {
                Ok(_) => {
                    // Only now, after the entry is free: an owned entry's byte must be held
                    // for as long as its owner runs. (Releasing a byte we do not hold, where
                    // the kernel lock was unsupported, does nothing.)
                    self.channel
                        .table
                        .release_data_byte(reader_byte(self.entry));
                    return;
                }
                Err(now)
                    if now & CLAIM_STATE == CLAIM_BUSY && now & !CLAIM_STATE == self.generation =>
                {
                    std::thread::yield_now()
                }
                // Someone else's now (it can only have been reclaimed): nothing to release.
                Err(_) => return,
            }
        }
        // Still busy: leave the entry owned by us; once we exit, a sweep reclaims it.
    }
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("name", &self.name())
            .field("entry", &self.entry)
            .field("last_seq", &self.last_seq)
            .field("received", &self.received)
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

/// Metadata of a frame, as the writer published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Sequence number: 1 for the first frame, +1 per publish.
    pub seq: u64,
    /// Publish time on [`monotonic_ns`]'s clock (comparable across processes).
    pub timestamp_ns: u64,
    /// Length in bytes.
    pub len: usize,
    /// Frames published between the previous frame this reader saw and this one.
    pub skipped: u64,
    /// The writer's user fields.
    pub meta: FrameMeta,
}

/// A pinned frame: derefs to its bytes, in shared memory, without a copy. The writer keeps
/// off its slot until the guard drops.
#[must_use = "if unused the frame is released at once"]
pub struct Frame<'a> {
    reader: &'a FrameReader,
    data: &'a [u8],
    slot: u32,
    info: FrameInfo,
}

impl Frame<'_> {
    /// Checks that the writer has not started to overwrite this frame: call it after
    /// consuming the frame (copying, decoding) when not every reader of the channel is
    /// trusted, and discard what was read if it fails with [`Error::FrameOverwritten`].
    ///
    /// The pin that keeps the writer off a frame lives in the reader table, which every
    /// reader may write, so a misbehaving reader can clear it (module docs, "Trust"); the
    /// writer stamps a slot with the new frame's sequence number before it writes a byte
    /// there, in the control block no reader can write, and this compares that stamp with
    /// the frame's. Never needed while no process writes the table behind the crate's back:
    /// a pinned frame then stays unchanged until the guard drops.
    pub fn verify(&self) -> Result<()> {
        // Acquire fence: orders every read of the frame's bytes made before this call before
        // the stamp load; pairs with the writer's Release fence after it stamps a slot, so
        // if any byte we read was written for a newer frame, we see that frame's stamp.
        fence(Acquire);
        let control = self.reader.channel.control();
        // In bounds: slot < slots <= MAX_SLOTS, checked when the frame was pinned.
        let stamp = load64(&control.stamps[self.slot as usize]);
        if stamp == self.info.seq {
            Ok(())
        } else {
            Err(Error::FrameOverwritten { seq: self.info.seq })
        }
    }

    /// All metadata at once.
    pub fn info(&self) -> &FrameInfo {
        &self.info
    }
    /// Sequence number (1 for the first frame).
    pub fn seq(&self) -> u64 {
        self.info.seq
    }
    /// Publish time on [`monotonic_ns`]'s clock, or 0 if the writer turned timestamps off
    /// ([`FrameWriter::set_timestamps`]).
    pub fn timestamp_ns(&self) -> u64 {
        self.info.timestamp_ns
    }
    /// Frames skipped between the previous frame this reader saw and this one.
    pub fn skipped(&self) -> u64 {
        self.info.skipped
    }
    /// The writer's user fields.
    pub fn meta(&self) -> FrameMeta {
        self.info.meta
    }
    /// Width user field.
    pub fn width(&self) -> u32 {
        self.info.meta.width
    }
    /// Height user field.
    pub fn height(&self) -> u32 {
        self.info.meta.height
    }
    /// Pixel format user field.
    pub fn pixel_format(&self) -> u32 {
        self.info.meta.pixel_format
    }
    /// Free user tag.
    pub fn tag(&self) -> u64 {
        self.info.meta.tag
    }
}

impl Deref for Frame<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.data
    }
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        self.reader.unpin();
    }
}

impl std::fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame").field("info", &self.info).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    thread_local! {
        /// Run once by the next `pin` on this thread between its look at `latest` and its pin
        /// store. A hook rather than a race: a reader preempted in that window (a few
        /// instructions) is too rare to catch its bugs in a run of any sensible length.
        static BETWEEN_LOOK_AND_PIN: RefCell<Option<Box<dyn FnOnce()>>> =
            const { RefCell::new(None) };
    }

    pub(super) fn between_look_and_pin() {
        // Taken before it runs, so a hook that pins (through another reader) does not recurse.
        if let Some(hook) = BETWEEN_LOOK_AND_PIN.with(|h| h.borrow_mut().take()) {
            hook();
        }
    }

    fn set_between_look_and_pin(hook: impl FnOnce() + 'static) {
        BETWEEN_LOOK_AND_PIN.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
    }

    fn hook_has_run() -> bool {
        BETWEEN_LOOK_AND_PIN.with(|h| h.borrow().is_none())
    }

    /// The bytes of frame `seq`: its length and every byte follow from `seq`, so a frame
    /// that changed under its pin, or metadata paired with another frame's bytes, shows.
    fn frame_bytes(seq: u64) -> Vec<u8> {
        let len = 8 + (seq % 57) as usize; // 8..=64: at most FRAME_MAX
        let mut bytes = seq.to_le_bytes().to_vec();
        bytes.extend((8..len).map(|i| (seq.wrapping_mul(31) as usize ^ i.wrapping_mul(7)) as u8));
        bytes
    }
    const FRAME_MAX: usize = 64;

    fn publish_next(writer: &mut FrameWriter) -> u64 {
        let seq = writer.seq() + 1;
        assert_eq!(writer.publish(&frame_bytes(seq)).unwrap(), seq);
        seq
    }

    /// The race the re-check in `pin` closes, forced through the hook: between the reader's
    /// look at `latest` (frame 1, slot 0) and its pin, the writer publishes `k` frames: it
    /// moves on from slot 0, and for `k >= 3` its scan finds slot 0 unpinned and puts frame 4
    /// there. The reader must notice, retry, and return the newest frame, complete, which
    /// then stays unchanged while the writer runs on. (Without the re-check the reader here
    /// pairs slot 0 with a newer frame's metadata and fails with `Corrupt`; in a real race
    /// it can also return half-rewritten metadata or, where loads may pass its pin store, a
    /// frame being rewritten.)
    #[test]
    fn frames_are_never_torn_when_the_writer_publishes_between_a_readers_look_and_its_pin() {
        for k in 1..=4 {
            let name = name("overtaken");
            // The fewest slots one reader allows: the looked-at slot is reused soonest.
            let spec = FrameSpec::new(FRAME_MAX).max_readers(1).slots(3);
            let writer = Rc::new(RefCell::new(FrameWriter::create(&name, spec).unwrap()));
            publish_next(&mut writer.borrow_mut()); // frame 1, in slot 0
            let mut reader = FrameReader::open(&name).unwrap();
            let in_hook = writer.clone();
            set_between_look_and_pin(move || {
                for _ in 0..k {
                    publish_next(&mut in_hook.borrow_mut());
                }
            });
            let newest = 1 + k as u64;
            let frame = reader
                .latest()
                .unwrap_or_else(|e| panic!("{k} publishes in the window: {e}"))
                .expect("a frame");
            assert!(hook_has_run(), "the hook must have run inside pin");
            assert_eq!(frame.seq(), newest, "{k} publishes in the window");
            assert_eq!(
                &frame[..],
                frame_bytes(newest),
                "{k} publishes in the window"
            );
            // Held: the writer keeps off its slot however far it runs on.
            for _ in 0..10 {
                publish_next(&mut writer.borrow_mut());
            }
            assert_eq!(
                &frame[..],
                frame_bytes(newest),
                "frame changed under its pin"
            );
        }
    }

    /// What a reader's pinned slot holds now (a copy; the pin is the caller's to hold).
    fn slot_bytes(channel: &Channel, slot: u32, len: usize) -> Vec<u8> {
        assert!(slot < channel.geometry.slots && len <= channel.geometry.max_frame_len);
        // SAFETY: slot < slots and len <= max_frame_len (asserted): inside the mapping, which
        // `channel` keeps alive. Single-threaded test: no publish runs during the copy.
        unsafe { std::slice::from_raw_parts(channel.slot_ptr(slot), len) }.to_vec()
    }

    /// The writer never hands `fill` the latest slot or a pinned one, and never writes a
    /// slot while it is pinned, over a random schedule of publishes, pins, unpins and pins
    /// taken while the writer fills (after its scan, the case the `latest` exclusion in the
    /// scan is for): every fill checks its slot, and every held frame is compared byte for
    /// byte with what it held when pinned, after every step.
    #[test]
    fn the_writer_never_writes_the_latest_or_a_pinned_slot() {
        const READERS: usize = 3;
        for slots in [READERS + 2, READERS + 3, 16] {
            let name = name("pins");
            let spec = FrameSpec::new(FRAME_MAX).max_readers(READERS).slots(slots);
            let mut writer = FrameWriter::create(&name, spec).unwrap();
            let mut readers: Vec<FrameReader> = (0..READERS)
                .map(|_| FrameReader::open(&name).unwrap())
                .collect();
            // Per reader: the slot it pins and the frame it read there.
            let mut held: Vec<Option<(u32, u64)>> = vec![None; READERS];
            let base = writer.channel.slot_ptr(0) as usize;
            let stride = writer.channel.geometry.stride;
            let mut state = slots as u64;
            let mut next = move |n: u64| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 33) % n
            };
            let (mut fills, mut pins_while_filling) = (0, 0);
            let steps = if cfg!(miri) { 50 } else { 5000 };
            for _ in 0..steps {
                let who = next(READERS as u64) as usize;
                match next(4) {
                    0 | 1 => {
                        let latest = writer.latest;
                        let seq = writer.seq() + 1;
                        let pin_now = next(2) == 0 && held[who].is_none();
                        let (readers, held) = (&mut readers, &mut held);
                        let pins_while_filling = &mut pins_while_filling;
                        writer
                            .publish_with(|buf| {
                                let slot = ((buf.as_ptr() as usize - base) / stride) as u32;
                                assert_ne!(slot, latest, "frame {seq} written over the latest");
                                for (r, pin) in held.iter().enumerate() {
                                    assert_ne!(
                                        pin.map(|(s, _)| s),
                                        Some(slot),
                                        "frame {seq} written over reader {r}'s pin"
                                    );
                                }
                                if pin_now {
                                    // A reader pins the current latest after the scan.
                                    if let Some(p) = readers[who].pin().unwrap() {
                                        held[who] = Some((p.slot, p.info.seq));
                                        *pins_while_filling += 1;
                                    }
                                }
                                let bytes = frame_bytes(seq);
                                buf[..bytes.len()].copy_from_slice(&bytes);
                                bytes.len()
                            })
                            .unwrap();
                        fills += 1;
                    }
                    2 if held[who].is_none() => {
                        if let Some(p) = readers[who].pin().unwrap() {
                            held[who] = Some((p.slot, p.info.seq));
                        }
                    }
                    _ => {
                        readers[who].unpin();
                        held[who] = None;
                    }
                }
                for (r, pin) in held.iter().enumerate() {
                    if let Some((slot, seq)) = *pin {
                        let expected = frame_bytes(seq);
                        assert!(
                            slot_bytes(&readers[r].channel, slot, expected.len()) == expected,
                            "frame {seq} pinned by reader {r} in slot {slot} changed \
                             ({slots} slots, writer at {})",
                            writer.seq()
                        );
                    }
                }
            }
            eprintln!("{slots} slots: {fills} publishes, {pins_while_filling} pins while filling");
            assert!(fills > steps / 4 && pins_while_filling > steps / 20);
        }
    }

    /// A pin cleared behind the reader's back (any reader may write the table) lets the
    /// writer reuse the slot of a frame the reader still holds: `verify` says so, with the
    /// frame's sequence number, while it said nothing before the writer got there.
    #[test]
    fn verify_reports_a_frame_overwritten_after_its_pin_was_cleared() {
        let name = name("verify");
        let spec = FrameSpec::new(FRAME_MAX).max_readers(1).slots(3);
        let mut writer = FrameWriter::create(&name, spec).unwrap();
        let first = publish_next(&mut writer);
        let mut reader = FrameReader::open(&name).unwrap();
        let frame = reader.latest().unwrap().unwrap();
        assert_eq!(frame.seq(), first);
        // Held: the writer keeps off it however far it runs.
        for _ in 0..6 {
            publish_next(&mut writer);
        }
        assert_eq!(&frame[..], frame_bytes(first));
        assert!(
            frame.verify().is_ok(),
            "a pinned frame is never overwritten"
        );
        // Another process clears the pin; the writer rescans and reuses the slot.
        let entry = &writer.channel.readers()[frame.reader.entry];
        entry.pin.store(NO_SLOT, Relaxed);
        for _ in 0..6 {
            publish_next(&mut writer);
        }
        assert_ne!(&frame[..], frame_bytes(first), "the slot was reused");
        assert!(matches!(
            frame.verify(),
            Err(Error::FrameOverwritten { seq }) if seq == first
        ));
    }

    /// An evicted reader waiting for a frame that does not come is told at once, not when
    /// its wait runs out (nor never, were it to sleep on).
    #[test]
    fn an_evicted_reader_waiting_for_frames_is_told_at_once() {
        let name = name("evicted");
        let mut writer = FrameWriter::create(&name, FrameSpec::new(64).max_readers(1)).unwrap();
        publish_next(&mut writer);
        let mut reader = FrameReader::open(&name).unwrap();
        drop(reader.wait_next(Duration::from_secs(10)).unwrap());
        // Another process frees the entry behind the reader's back.
        writer.channel.readers()[reader.entry]
            .claim
            .store(0, Relaxed);
        let start = Instant::now();
        assert!(matches!(
            reader.wait_next(Duration::from_secs(10)),
            Err(Error::ReaderEvicted { .. })
        ));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn types_have_the_thread_bounds_we_document() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<FrameWriter>();
        send_sync::<FrameReader>();
        send_sync::<Frame<'static>>();
    }

    fn name(tag: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        format!(
            "mmfu-chan-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Relaxed)
        )
    }

    #[test]
    fn garbage_in_the_control_block_is_a_typed_error() {
        let name = name("garbage");
        let mut writer =
            FrameWriter::create(&name, FrameSpec::new(100).max_readers(2).slots(4)).unwrap();
        writer.publish(&[1; 10]).unwrap();
        let mut reader = FrameReader::open(&name).unwrap();
        // A third mapping of the same segment to scribble on, as another process of the
        // writer's user would (readers map it read-only).
        let view = MmfOptions::new(&name)
            .kind(KIND_FRAME_CHANNEL)
            .open()
            .unwrap();
        let control = control_of(&view);
        let good = control.latest.load(Relaxed);
        control.latest.store(latest_word(7, 1), Relaxed);
        assert!(matches!(reader.latest(), Err(Error::Corrupt { .. })));
        control.latest.store(good, Relaxed);
        store64(&control.desc.len, 101);
        assert!(matches!(reader.latest(), Err(Error::Corrupt { .. })));
        store64(&control.desc.len, 10);
        store64(&control.desc.seq, 5);
        assert!(matches!(reader.latest(), Err(Error::Corrupt { .. })));
        store64(&control.desc.seq, 1);
        assert_eq!(reader.latest().unwrap().unwrap().len(), 10);
        // A writer killed between marking the metadata busy and publishing: readers give up
        // instead of spinning forever.
        control.latest.store(latest_word(LATEST_BUSY, 1), Relaxed);
        assert!(matches!(reader.latest(), Err(Error::WouldBlock)));
        assert!(matches!(
            reader.wait_next(Duration::from_millis(30)),
            Err(Error::Timeout { .. })
        ));
        control.latest.store(good, Relaxed);
        assert_eq!(reader.latest().unwrap().unwrap().len(), 10);
        assert_eq!(
            reader.entry().pin.load(Relaxed),
            NO_SLOT,
            "errors and dropped frames leave no pin behind"
        );

        // Pins naming every slot at once cannot stop the writer: it reads only max_readers
        // entries, and each names at most one slot. (The reader table is writable by every
        // reader; its own tests are in `a_scribbled_reader_table_...` below.)
        for (i, entry) in writer.channel.table().readers.iter().enumerate() {
            entry.pin.store(i as u32 % 4 + 1, Relaxed);
        }
        for _ in 0..10 {
            writer.publish(&[2; 10]).unwrap();
        }
        // A claim word changed under the reader (another reader freed its entry): the
        // reader is evicted, as a typed error, and its later calls say so too.
        writer.channel.readers()[reader.entry]
            .claim
            .store(0, Relaxed);
        assert!(matches!(reader.latest(), Err(Error::ReaderEvicted { .. })));
        assert!(matches!(
            reader.try_next(),
            Err(Error::ReaderEvicted { .. })
        ));

        // An opener checks the geometry against the real mapping.
        control.slot_count.store(99, Relaxed);
        assert!(matches!(
            FrameReader::open(&name),
            Err(Error::Corrupt { .. })
        ));
        control.slot_count.store(4, Relaxed);
        store64(&control.max_frame_len, 1 << 40);
        assert!(matches!(
            FrameReader::open(&name),
            Err(Error::Corrupt { .. })
        ));
    }

    /// Random words anywhere in the control block and the reader table: reader and writer
    /// return values or typed errors, never panic, never read outside the mapping. An
    /// evicted reader opens again (when the scribbled table lets it).
    #[test]
    fn random_control_and_table_words_never_panic() {
        let name = name("random");
        let mut writer = FrameWriter::create(&name, FrameSpec::new(256).max_readers(2)).unwrap();
        let mut reader = Some(FrameReader::open(&name).unwrap());
        // Globals, the latest line and the stamps; the table's count and two live entries.
        let control_words = (256 + 8 * writer.channel.geometry.slots as usize) / 4;
        let table_words = (64 + 64 * 2) / 4;
        let mut state = 0x1234_5678_9abc_def0_u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u32
        };
        let iterations = if cfg!(miri) { 20 } else { 3000 };
        let (mut evictions, mut frames) = (0, 0);
        for _ in 0..iterations {
            let in_table = next() % 2 == 0;
            let value = match next() % 4 {
                0 => 0,
                1 => u32::MAX,
                2 => next() % 64,
                _ => next(),
            };
            let (base, index) = if in_table {
                let base: *const ReaderTable = writer.channel.table();
                (base.cast::<AtomicU32>(), next() as usize % table_words)
            } else {
                let base: *const Control = writer.channel.control();
                (base.cast::<AtomicU32>(), next() as usize % control_words)
            };
            // Skip the magic and geometry: they are checked at open (test above), and
            // changing them afterwards is outside what a running reader re-reads.
            if !in_table && index < 16 {
                continue;
            }
            // wrapping_add: computing the address needs no unsafe; the index bounds above
            // keep it inside the control block (4096 bytes) or the table (2112 bytes).
            let word = base.wrapping_add(index);
            // SAFETY: both blocks are made only of AtomicU32s, so every 4-aligned word inside
            // them is a valid AtomicU32, alive as long as the writer.
            let word = unsafe { &*word };
            word.store(value, Relaxed);
            let _ = writer.publish(&[3; 200]);
            let Some(r) = reader.as_mut() else {
                reader = FrameReader::open(&name).ok();
                continue;
            };
            let evicted = match r.try_next() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= 256);
                    frames += 1;
                    false
                }
                Err(Error::ReaderEvicted { .. }) => true,
                _ => false,
            };
            if evicted {
                evictions += 1;
                reader = None;
                continue;
            }
            if let Ok(Some(frame)) = r.latest() {
                assert!(frame.len() <= 256);
            }
            let _ = r.wait_next(Duration::ZERO);
        }
        eprintln!("{frames} frames, {evictions} evictions");
        if !cfg!(miri) {
            assert!(
                frames > 100 && evictions > 10,
                "{frames} frames, {evictions} evictions"
            );
        }
    }

    #[test]
    fn spec_validation_gives_typed_errors() {
        for spec in [
            FrameSpec::new(0),
            FrameSpec::new(64).max_readers(0),
            FrameSpec::new(64).max_readers(MAX_READERS + 1),
            FrameSpec::new(usize::MAX),
            FrameSpec::new(usize::MAX / 4),
        ] {
            assert!(
                matches!(Geometry::for_spec(&spec), Err(Error::InvalidSize { .. })),
                "{spec:?}"
            );
        }
        for spec in [
            FrameSpec::new(64).max_readers(3).slots(4),
            FrameSpec::new(64).max_readers(1).slots(MAX_SLOTS + 1),
            FrameSpec::new(64)
                .max_readers(MAX_READERS)
                .slots(MAX_READERS + 1),
        ] {
            assert!(
                matches!(Geometry::for_spec(&spec), Err(Error::InvalidSize { .. })),
                "{spec:?}"
            );
        }
        let slots_of = |spec: FrameSpec| Geometry::for_spec(&spec).unwrap().0.slots;
        // Explicit counts are kept, from max_readers + 2 up to MAX_SLOTS.
        assert_eq!(slots_of(FrameSpec::new(5000).max_readers(3).slots(5)), 5);
        assert_eq!(slots_of(FrameSpec::new(64).max_readers(1).slots(62)), 62);
        // The default: small frames get 16 slots while 16 fit in 1 MiB; larger ones R + 2.
        assert_eq!(slots_of(FrameSpec::new(64).max_readers(1)), 16);
        assert_eq!(slots_of(FrameSpec::new(64 * 1024).max_readers(3)), 16);
        assert_eq!(slots_of(FrameSpec::new(64 * 1024 + 1).max_readers(3)), 5);
        assert_eq!(slots_of(FrameSpec::new(64).max_readers(20)), 22);
        assert_eq!(slots_of(FrameSpec::new(1920 * 1080 * 3).max_readers(3)), 5);
        let (g, total) = Geometry::for_spec(&FrameSpec::new(5000).max_readers(3)).unwrap();
        assert_eq!((g.slots, g.stride), (16, 8192));
        assert_eq!(total, CONTROL_LEN + 16 * 8192);
    }
}
