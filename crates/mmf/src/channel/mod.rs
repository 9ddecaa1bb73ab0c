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
//! A writer that cannot fill a frame inside one closure (a capture API that fills a buffer
//! asynchronously, a C caller) takes the slot with [`FrameWriter::begin`] and publishes it
//! with [`PendingFrame::commit`], or drops it unpublished.
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
//! [`MAX_READERS`]) has at least `R + 2` slots: by default as many as fit in
//! [`SMALL_FRAME_SLOTS_BYTES`] (64 KiB of slots, whole pages each), at most
//! [`SMALL_FRAME_SLOTS`] (16) and at least `R + 2`: 16 for frames up to 4 KiB, 8 for 8 KiB,
//! `R + 2` from 32 KiB on; or any count from `R + 2` to [`MAX_SLOTS`] set with
//! [`FrameSpec::slots`]. Slots beyond `R + 2` do not change the guarantees; they let the
//! writer look at the readers' pins less often (see **Never torn**), which is what makes
//! small frames fast: in `cargo bench -p mmf --bench channel`, a 64 B frame crosses between
//! processes in about 2.7x the time of a bare cache-line ping-pong with 16 slots, against
//! 3.7x to 4x with the 3 slots of `R + 2` for one reader. The 64 KiB bound keeps the slots
//! a writer rotates through in its first-level cache: with 16 slots of 8 KiB, an 8 KiB
//! frame's hand-over was about 10% slower than with 8 or 4 (`cargo xtask bench-peers`). Each reader owns one entry in a reader table
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
//! channel again once a new writer has created it: [`FrameReader::open_wait`] waits for
//! that (and for a channel that does not exist yet, so consumers may start before their
//! camera), sleeping between tries.
//!
//! **Restart.** A writer process that dies leaves the channel's name behind (Linux; on
//! Windows the section lives while readers hold it). [`FrameWriter::create`] under that
//! name takes it over when the recorded writer is gone, and never otherwise: it opens the
//! old channel read-write, and on Linux takes the kernel lock on the old writer's byte
//! (byte 40, see Liveness) itself. Getting it proves the old writer dead (a live writer
//! holds it until its handle closes) and keeps every other would-be taker out until this
//! one's handle closes; without kernel locks (macOS, FreeBSD, Windows) the recorded
//! process's liveness decides. The taker then sets the old channel's closed bit and wakes
//! its sleepers (its readers get [`Error::WriterGone`] at once, and keep their mapping and
//! its frames: nothing in the old object is reused), removes the name only if it still
//! names the old object, and creates a new channel and reader table exclusively (`O_EXCL`).
//! So of several writers racing to take over one dead channel exactly one creates the
//! new one, the others get [`Error::AlreadyExists`]; no taker removes a name that a live
//! writer's channel holds, because only the holder of the dead object's byte removes, and
//! only that object. On Windows the name frees itself once the old readers close their
//! handles (they learn of the takeover within a second), so `create` keeps trying for up
//! to 3 s. Not taken over: a channel whose writer lives, one of another layout version or
//! user, one whose creator has not published its control block yet (a writer killed in
//! that window, microseconds after creating the object, leaves a name to remove by hand
//! with [`Mmf::remove`](crate::Mmf::remove)), and anything that is not a channel.
//!
//! **User header.** [`FrameSpec::user_header_len`] gives every frame up to
//! [`MAX_USER_HEADER_LEN`] bytes of the application's own (exposure, camera id, the
//! sensor's timestamps), written with [`FrameWriter::publish_with_header`] (typed:
//! [`publish_with_header_as`](FrameWriter::publish_with_header_as)) and read with
//! [`Frame::user_header`] ([`user_header_as`](Frame::user_header_as)). It sits in the
//! frame's own slot, after the frame's pages, so what protects a frame protects its header:
//! a reader never sees one frame's header with another's bytes, and [`Frame::verify`]
//! covers both. Frames and headers start on page boundaries: [`Frame::cast`] and
//! `user_header_as` meet any alignment up to 4096.
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
//! # Control block layout (version 5, at the start of the channel's data region)
//!
//! Version 5 (this one) added the per-frame user header (`user_header_len`, and its pages
//! at the end of every slot). Version 4 moved everything readers write (entries, pins,
//! `parked`) to the reader table, which readers map read-write while the channel is read-only for them, and
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
//! | 20 | 4 | `user_header_len` | bytes of each frame's user header, 0..=[`MAX_USER_HEADER_LEN`] (readers refuse more, or a `slot_stride` that does not match it) |
//! | 24 | 8 | `max_frame_len` | bytes per frame, at least 1 |
//! | 32 | 8 | `slot_stride` | `max_frame_len` rounded up to 4096, plus `user_header_len` rounded up to 4096 |
//! | 40 | 12 | writer pid, start time | who the writer is; byte 40 is the writer's kernel-lock byte (see Liveness), and a new writer taking the channel over holds it too (see Restart) |
//! | 52 | 4 | `writer_held` | 1 if the writer holds the lock on byte 40: readers ask the kernel, not the pid |
//! | 64 | 4 | `latest` | bits 0..6: slot of the newest frame (63: none yet, 62: metadata being rewritten); bit 6: the writer has dropped; bits 7..32: its sequence number mod 2^25. Also the futex word readers sleep on |
//! | 68 | 44 | newest frame's metadata | seq, timestamp, len (2 words each), width, height, pixel format, tag (2 words) |
//! | 256 | 8 × [`MAX_SLOTS`] | slot stamps | per slot, the sequence number of the frame in it or being written into it (0: none yet), stored before its first byte (see [`Frame::verify`]) |
//! | 4096 | `slot_stride` × `slot_count` | frame slots | page aligned; each holds the frame's bytes from its start, then its user header from the next page boundary after `max_frame_len` (so the header is written and protected with its frame, and both start page aligned) |
//!
//! # Reader table layout (version 5, unchanged since 4; the data region of `name+readers`)
//!
//! 2112 data bytes whatever `max_readers` (entries past it are unused). All-zero bytes
//! mean: every entry free, no pin, nobody parked; which is what a table truncated and
//! regrown by a reader holds, and what a fresh one does.
//!
//! | offset | size | field | meaning |
//! |-------:|-----:|-------|---------|
//! | 0 | 4 | `parked` | readers sleeping in `wait_next` (the writer wakes them only when non-zero) |
//! | 64 + 64i | 64 | reader entry `i` | claim word (bits 0..2: 0 free, 1 busy, 2 owned; bits 2..: generation; its first byte is the owner's kernel-lock byte), pid, start time (2 words), pin (slot + 1, 0: none), parked flag, `held` (as `writer_held`, for the entry's byte) |
//!
//! [`Error::AlreadyExists`]: crate::Error::AlreadyExists
//! [`Error::ChannelFull`]: crate::Error::ChannelFull
//! [`Error::Corrupt`]: crate::Error::Corrupt
//! [`Error::FrameOverwritten`]: crate::Error::FrameOverwritten
//! [`Error::IncompatibleVersion`]: crate::Error::IncompatibleVersion
//! [`Error::ReaderEvicted`]: crate::Error::ReaderEvicted
//! [`Error::Timeout`]: crate::Error::Timeout
//! [`Error::WriterGone`]: crate::Error::WriterGone
//! [`Error::WrongKind`]: crate::Error::WrongKind
//! [`KIND_FRAME_CHANNEL`]: crate::header::KIND_FRAME_CHANNEL
//! [`KIND_FRAME_READERS`]: crate::header::KIND_FRAME_READERS

mod clock;
mod common;
mod frame;
// Read-only decoding for `crate::inspect` (`mmf info`, `mmf list`).
pub(crate) mod inspect;
mod layout;
mod pixel;
mod reader;
#[cfg(test)]
mod tests;
mod writer;

pub use crate::name::reader_table_name;
pub use clock::monotonic_ns;
pub use frame::{FrameInfo, FrameMeta, ReaderStats};
pub use layout::{
    CHANNEL_VERSION, MAX_READERS, MAX_SLOTS, MAX_USER_HEADER_LEN, SMALL_FRAME_SLOTS,
    SMALL_FRAME_SLOTS_BYTES, WARM_SLOT_MIN_STRIDE,
};
pub use pixel::{PixelFormat, UnknownPixelFormat};
pub use reader::{Frame, FrameReader, FrameReaderOptions};
pub use writer::{FrameSpec, FrameWriter, PendingFrame};
