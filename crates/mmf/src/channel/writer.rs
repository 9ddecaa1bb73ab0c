//! The writing end: [`FrameSpec`] (what a channel is created with) and [`FrameWriter`], which
//! creates the channel, publishes frames and sweeps dead readers.

use std::sync::atomic::fence;
use std::sync::atomic::Ordering::Acquire;
use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::header::{KIND_FRAME_CHANNEL, KIND_FRAME_READERS};
use crate::liveness::{Hold, Liveness, ProcessId};
use crate::name::reader_table_name;
use crate::segment::{Mmf, MmfOptions};
use crate::sys::{OsProcess, Process};
use crate::view;

use super::clock::monotonic_ns;
use super::common::{control_of, Channel};
use super::frame::FrameMeta;
use super::layout::{
    latest_word, load64, magic_words, slot_stride, store64, Control, Geometry, CHANNEL_VERSION,
    CONTROL_LEN, LATEST_BUSY, LATEST_CLOSED, LATEST_NONE, MAX_READERS, MAX_SLOTS,
    MAX_USER_HEADER_LEN, NO_SLOT, SLOT_ALIGN, SMALL_FRAME_SLOTS, SMALL_FRAME_SLOTS_BYTES,
    SWEEP_INTERVAL, TABLE_LEN, TAKEOVER_WAIT, WARM_SLOT_MIN_STRIDE, WRITER_BYTE,
};

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
    /// (the default) for as many as fit in [`SMALL_FRAME_SLOTS_BYTES`], at most
    /// [`SMALL_FRAME_SLOTS`] and at least `max_readers + 2`. More slots cost memory and make
    /// small frames faster, up to the point where they no longer fit in a cache (see
    /// the [module docs](crate::channel)); they never change what readers see.
    pub slots: usize,
    /// Who may open the channel as a reader, as Unix permission bits (default `0o600`):
    /// `0o600` this user only, `0o640` also the group, `0o644` everyone. Read bits are
    /// what count: the frames are created without group or other write (or execute) bits,
    /// whatever is asked, because readers never get write access to them; the reader table
    /// gets write access for every class that may read (module docs, "Trust"). On Windows
    /// the bits are translated into the objects' security descriptors. Readers in another
    /// user account open with [`FrameReader::open_trusting`](super::FrameReader::open_trusting).
    pub mode: u32,
    /// Bytes of the user header each frame carries beside its payload (0, the default, to
    /// [`MAX_USER_HEADER_LEN`]): the writer fills it in
    /// [`FrameWriter::publish_with_header`], readers get it with
    /// [`Frame::user_header`](super::Frame::user_header). It lives in the frame's slot, so
    /// it is never torn from its frame. Costs one page per slot.
    pub user_header_len: usize,
}

impl Default for FrameSpec {
    fn default() -> Self {
        FrameSpec {
            max_frame_len: 0,
            max_readers: 4,
            slots: 0,
            mode: 0o600,
            user_header_len: 0,
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

    /// Sets the per-frame [`user_header_len`](Self::user_header_len).
    pub fn user_header_len(mut self, len: usize) -> Self {
        self.user_header_len = len;
        self
    }

    /// Sets who may read, as permission bits (see [`mode`](Self::mode)).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Permission bits of the channel object (frames and control block): the owner reads
    /// and writes, the classes `mode` lets read may only read.
    pub(super) fn channel_mode(&self) -> u32 {
        0o600 | (self.mode & 0o044)
    }

    /// Permission bits of the reader table: every class that may read the frames may also
    /// write here (a reader claims an entry and pins through it).
    pub(super) fn table_mode(&self) -> u32 {
        let read = self.mode & 0o044;
        0o600 | read | (read >> 1)
    }
}

/// The writing end of a frame channel: creates the channel and owns its name.
///
/// There is exactly one writer per channel (the creator); the channel's name is removed when
/// it drops, and open readers keep working with the frames already published.
pub struct FrameWriter {
    pub(super) channel: Channel,
    pub(super) seq: u64,
    pub(super) latest: u32,
    pub(super) next: u32,
    /// Slots known to be free (bit per slot): neither latest nor pinned when the pins were
    /// last scanned, and not published into since (see `take_free_slot`).
    pub(super) free: u64,
    /// Whether slots are reused warm-first (module docs, **Warm slots**).
    pub(super) warm: bool,
    /// Sequence number of the last frame published into each slot (0: none yet).
    pub(super) written: [u64; MAX_SLOTS],
    pub(super) meta: FrameMeta,
    /// Whether frames carry their publish time (see `set_timestamps`).
    pub(super) timestamps: bool,
    pub(super) last_sweep: Instant,
    pub(super) since_sweep: u32,
}

impl FrameWriter {
    /// Creates channel `name` for frames of up to `spec.max_frame_len` bytes and
    /// `spec.max_readers` readers. Every slot is faulted in now, so the first frames cost
    /// what later ones do.
    ///
    /// Two objects are created: the channel `name` (mode [`FrameSpec::mode`] without any
    /// group or other write bit) and its reader table `name+readers` (see the module docs).
    ///
    /// **Restart.** If `name` is taken by a channel whose writer is gone (its process died,
    /// as a camera that crashed or was killed leaves it), `create` takes the name over:
    /// it marks the old channel closed and wakes its readers (they get
    /// [`Error::WriterGone`] at once, keep the old mapping and its frames, and can reopen,
    /// e.g. with [`FrameReader::open_wait`](super::FrameReader::open_wait)), removes the old
    /// names, and creates a new channel in their place (module docs, "Restart"). A channel
    /// whose writer lives is never taken over: [`Error::AlreadyExists`], as for anything
    /// else under the name (a plain segment, a channel of another version or of another
    /// user, one still being created).
    ///
    /// Errors: [`Error::InvalidSize`] for a zero or unmappable `max_frame_len` or a
    /// `max_readers` outside 1..=[`MAX_READERS`]; everything [`Mmf::create`] can return.
    pub fn create(name: &str, spec: FrameSpec) -> Result<FrameWriter> {
        let (geometry, total) = Geometry::for_spec(&spec)?;
        let deadline = Instant::now() + TAKEOVER_WAIT;
        loop {
            match Self::create_once(name, &spec, geometry, total) {
                Err(Error::AlreadyExists { name: taken, .. }) => {
                    // Only the old reader table's name left (Windows: old readers still hold
                    // it): wait for them without judging the channel's name, which openers
                    // may briefly hold on the half-made channel just dropped.
                    let table_only = taken != name;
                    if Instant::now() >= deadline || !(table_only || Self::take_over(name)?) {
                        return Err(Error::AlreadyExists { name: taken });
                    }
                    // Windows: the old readers still hold the section (or its table).
                    std::thread::sleep(Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    /// Clears the way for a new channel under `name` if what holds the name is a channel
    /// whose writer is gone; returns whether to try creating again (`false`: leave it, the
    /// name is someone's). See "Restart" in the module docs for why exactly one of several
    /// writers racing to take over a dead channel wins, and why a live one is never touched.
    fn take_over(name: &str) -> Result<bool> {
        // Read-write: to hold the writer's byte and mark the channel closed. Whatever is not
        // a readable, initialised channel of ours is left alone.
        let old = match MmfOptions::new(name)
            .kind(KIND_FRAME_CHANNEL)
            .open_timeout(Duration::from_millis(100))
            .open()
        {
            Ok(old) => old,
            // Gone since (a dropping writer removed it, or, on Windows, only the reader
            // table's name was left): create again.
            Err(Error::NotFound { .. }) => return Ok(true),
            Err(_) => return Ok(false),
        };
        if old.len() < CONTROL_LEN {
            return Ok(false);
        }
        let control = control_of(&old);
        // Acquire: pairs with the creator's Release store of magic[0]; the fields read
        // below are the ones it published. A channel without its magic is still being
        // created (or its creator died while creating it): not ours to take.
        // Relaxed (magic[1], version, writer_held below): ordered after the creator's stores
        // by the Acquire load of magic[0], as in FrameReaderOptions::open.
        let magic = [
            control.magic[0].load(Acquire),
            control.magic[1].load(Relaxed),
        ];
        if magic != magic_words() || control.version.load(Relaxed) != CHANNEL_VERSION {
            return Ok(false);
        }
        // SeqCst (also Acquire): pairs with the SeqCst fetch_or in FrameWriter's Drop.
        let closed = control.latest.load(SeqCst) & LATEST_CLOSED != 0;
        let dead = if control.writer_held.load(Relaxed) != 0 {
            // The kernel's answer, and a lock at once: holding the dead writer's byte keeps
            // every other taker out until our handle closes, after the name is removed.
            match old.hold_data_byte(WRITER_BYTE) {
                Hold::Held => true,
                // A live writer, or another taker: leave it. A writer that dropped is
                // removing the name itself: look again.
                Hold::Busy => return Ok(closed),
                Hold::Unsupported => Self::pid_dead(&old, control),
            }
        } else {
            closed || Self::pid_dead(&old, control)
        };
        if !dead {
            return Ok(false);
        }
        // Tell the old channel's readers now rather than when their waits run out: they
        // sleep on `latest`. SeqCst: as in Drop, pairs with the readers' loads of the flag.
        control.latest.fetch_or(LATEST_CLOSED, SeqCst);
        old.waiter().wake_all(&control.latest);
        if let Ok(table) = MmfOptions::new(reader_table_name(name))
            .kind(KIND_FRAME_READERS)
            .companion()
            .open_timeout(Duration::ZERO)
            .open()
        {
            // Windows: readers sleep on the table's semaphore.
            table.waiter().wake_all(&control.latest);
        }
        // Only if the name still names the dead channel: never a new writer's.
        match old.remove_name_if_same() {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Whether the process recorded as the writer has died (where no kernel lock answers).
    fn pid_dead(old: &Mmf, control: &Control) -> bool {
        // Relaxed: set before the magic, which the caller loaded with Acquire.
        let writer = ProcessId {
            pid: control.writer_pid.load(Relaxed),
            start: load64(&control.writer_start),
        };
        old.data_holder_liveness(writer, None) == Liveness::Dead
    }

    /// One attempt at creating channel `name`: [`Error::AlreadyExists`] if the name is taken.
    fn create_once(
        name: &str,
        spec: &FrameSpec,
        geometry: Geometry,
        total: usize,
    ) -> Result<FrameWriter> {
        let spec = *spec;
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
        // Cannot truncate: at most MAX_USER_HEADER_LEN (for_spec). Relaxed: published by
        // the Release store of the magic below, like every field here.
        control
            .user_header_len
            .store(geometry.user_header_len as u32, Relaxed);
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
    pub(super) fn create_table(name: &str, spec: &FrameSpec) -> Result<Mmf> {
        let options = MmfOptions::new(reader_table_name(name))
            .kind(KIND_FRAME_READERS)
            .companion()
            .mode(spec.table_mode());
        match options.create(TABLE_LEN) {
            Err(Error::AlreadyExists { .. }) => {
                // NotFound: gone meanwhile (its last handle closed, on Windows, where this
                // removes nothing and `create` retries while old readers hold the table).
                match <crate::sys::Segment as crate::sys::OsSegment>::remove(
                    &reader_table_name(name),
                    crate::sys::Namespace::Local,
                ) {
                    Ok(()) | Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
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

    /// Bytes of the user header every frame carries ([`FrameSpec::user_header_len`]).
    pub fn user_header_len(&self) -> usize {
        self.channel.geometry.user_header_len
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

    /// Whether following frames carry their publish time
    /// ([`Frame::timestamp_ns`](super::Frame::timestamp_ns); on by default). Off, they carry
    /// 0 and each publish saves one read of the monotonic clock, which is a measurable part
    /// of a small frame's cost (`cargo bench -p mmf --bench channel -- small` shows both). A
    /// camera that stamps frames itself (e.g. with the sensor's capture time, in
    /// [`FrameMeta::tag`]) needs no second clock read.
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
    ///
    /// A channel with a user header ([`FrameSpec::user_header_len`]) publishes it zeroed:
    /// fill it with [`publish_with_header`](Self::publish_with_header).
    pub fn publish_with(&mut self, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<u64> {
        self.publish_with_header(|header, frame| {
            header.fill(0);
            fill(frame)
        })
    }

    /// As [`publish_with`](Self::publish_with), with the frame's user header too:
    /// `fill(header, frame)` gets the slot's [`FrameSpec::user_header_len`] header bytes
    /// (page aligned; contents are what an earlier frame left there) and its
    /// `max_frame_len` frame bytes, writes both, and returns the frame's length. Readers
    /// get the header with [`Frame::user_header`](super::Frame::user_header), always the
    /// one written with the frame: both live in the same slot, under the same protection.
    ///
    /// ```
    /// use mmf::{FrameReader, FrameSpec, FrameWriter};
    ///
    /// #[derive(Clone, Copy)]
    /// #[repr(C)]
    /// struct Exposure { camera_id: u32, gain: f32, sensor_time_ns: u64 }
    /// // SAFETY: repr(C), Pod fields, no padding (4 + 4 + 8 bytes).
    /// unsafe impl mmf::bytemuck::Zeroable for Exposure {}
    /// // SAFETY: as above.
    /// unsafe impl mmf::bytemuck::Pod for Exposure {}
    ///
    /// # fn main() -> mmf::Result<()> {
    /// # let name = format!("header-doc-{}", std::process::id());
    /// let spec = FrameSpec::new(640 * 480).user_header_len(size_of::<Exposure>());
    /// let mut camera = FrameWriter::create(&name, spec)?;
    /// let mut reader = FrameReader::open(&name)?;
    /// camera.publish_with_header_as(|exposure: &mut Exposure, pixels| {
    ///     *exposure = Exposure { camera_id: 7, gain: 2.0, sensor_time_ns: 123 };
    ///     pixels[0] = 255;
    ///     640 * 480
    /// })?;
    /// let frame = reader.latest()?.unwrap();
    /// let exposure = frame.user_header_as::<Exposure>()?;
    /// assert_eq!((exposure.camera_id, exposure.sensor_time_ns, frame[0]), (7, 123, 255));
    /// # Ok(()) }
    /// ```
    pub fn publish_with_header(
        &mut self,
        fill: impl FnOnce(&mut [u8], &mut [u8]) -> usize,
    ) -> Result<u64> {
        let mut pending = self.begin_raw()?;
        let (header, frame) = pending.parts_mut();
        let len = fill(header, frame);
        pending.commit(len)
    }

    /// Takes a free slot for a frame written in place, for a caller that cannot hand a
    /// closure to [`publish_with`](Self::publish_with) (a C caller, a frame filled across
    /// several calls or by an asynchronous capture API). The [`PendingFrame`] derefs to the
    /// slot's `max_frame_len` bytes (contents are what an earlier frame left there; its user
    /// header, [`PendingFrame::user_header_mut`], is zeroed);
    /// [`commit`](PendingFrame::commit) publishes it, dropping it abandons it: nothing is
    /// published, readers never see its bytes, and the slot is free again. Never waits for
    /// readers.
    ///
    /// ```
    /// # use mmf::{FrameReader, FrameSpec, FrameWriter};
    /// # fn main() -> mmf::Result<()> {
    /// # let name = format!("begin-doc-{}", std::process::id());
    /// let mut camera = FrameWriter::create(&name, FrameSpec::new(640 * 480))?;
    /// let mut reader = FrameReader::open(&name)?;
    /// let mut frame = camera.begin()?;
    /// frame[..3].copy_from_slice(b"abc");
    /// assert_eq!(frame.commit(3)?, 1);
    /// drop(camera.begin()?); // abandoned: frame 2 is never published
    /// assert_eq!(&reader.latest()?.unwrap()[..], b"abc");
    /// # Ok(()) }
    /// ```
    pub fn begin(&mut self) -> Result<PendingFrame<'_>> {
        let mut pending = self.begin_raw()?;
        pending.user_header_mut().fill(0);
        Ok(pending)
    }

    /// [`begin`](Self::begin) without zeroing the user header: the first half of the publish
    /// protocol, shared by every way to publish.
    fn begin_raw(&mut self) -> Result<PendingFrame<'_>> {
        let slot = self.take_free_slot()?;
        let seq = self.seq + 1;
        // Stamp the slot before writing into it, seqlock-writer style: Relaxed stores, then a
        // Release fence that orders them before every write the caller makes; pairs with the
        // Acquire fence in `Frame::verify`, so a reader that read any byte of this frame
        // (through a pin some other process cleared) sees the new stamp. An abandoned frame
        // leaves its stamp: the slot's bytes may have changed, so that is the truth.
        store64(&self.channel.control().stamps[slot as usize], seq);
        fence(Release);
        Ok(PendingFrame {
            writer: self,
            slot,
            committed: false,
        })
    }

    /// The second half of the publish protocol: publishes the first `len` bytes of `slot`,
    /// which [`begin_raw`](Self::begin_raw) took and stamped.
    fn commit_slot(&mut self, slot: u32, len: usize) -> Result<u64> {
        let max = self.max_frame_len();
        if len > max {
            return Err(Error::FrameTooLarge {
                len: len as u64,
                max: max as u64,
            });
        }
        let seq = self.seq + 1;
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

    /// As [`publish_with_header`](Self::publish_with_header), with the header as an `H`
    /// (any `bytemuck::Pod`, see [`Mmf::view`](crate::Mmf::view)) at its start.
    /// [`Error::TypeMismatch`] (nothing published) if `H` is larger than
    /// [`FrameSpec::user_header_len`].
    pub fn publish_with_header_as<H: Pod>(
        &mut self,
        fill: impl FnOnce(&mut H, &mut [u8]) -> usize,
    ) -> Result<u64> {
        // The header of every slot starts on a page boundary: one check covers all of them.
        let header_len = self.channel.geometry.user_header_len;
        let needed = view::check::<H>(self.channel.user_header_ptr(0) as usize, header_len, 1)?;
        self.publish_with_header(|header, frame| {
            fill(bytemuck::from_bytes_mut(&mut header[..needed]), frame)
        })
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
    pub(super) fn take_free_slot(&mut self) -> Result<u32> {
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
    pub(super) fn scan_free_slots(&self) -> u64 {
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

/// A frame being written in place into a free slot, from [`FrameWriter::begin`]: derefs to
/// the slot's `max_frame_len` bytes. [`commit`](Self::commit) publishes it; dropping it
/// uncommitted abandons it (nothing published, the slot free again). It borrows the writer
/// mutably, so nothing else is published meanwhile.
#[must_use = "if unused the frame is abandoned at once"]
pub struct PendingFrame<'a> {
    writer: &'a mut FrameWriter,
    /// Taken from the free set by `begin_raw`, stamped, in no reader's view.
    slot: u32,
    /// Set by `commit` once the slot belongs to the published frames.
    committed: bool,
}

impl PendingFrame<'_> {
    /// Publishes the first `len` bytes as the next frame (with the writer's current
    /// [`FrameMeta`]); returns its sequence number. [`Error::FrameTooLarge`] if `len` is
    /// more than `max_frame_len`: then nothing is published and the frame is abandoned.
    pub fn commit(mut self, len: usize) -> Result<u64> {
        let seq = self.writer.commit_slot(self.slot, len)?;
        self.committed = true;
        Ok(seq)
    }

    /// The frame's user header ([`FrameSpec::user_header_len`] bytes, page aligned; empty
    /// without one), published with it.
    pub fn user_header_mut(&mut self) -> &mut [u8] {
        self.parts_mut().0
    }

    /// The user header and the frame's bytes at once.
    pub fn parts_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        let channel = &self.writer.channel;
        let header_len = channel.geometry.user_header_len;
        // No reader reads the slot: it is neither `latest` nor pinned (take_free_slot, module
        // docs) and is not published before `commit`.
        // SAFETY: slot < slots (take_free_slot), so its max_frame_len bytes lie in our
        // read-write mapping, and `&mut self` makes this the only borrow in this process.
        let frame = unsafe {
            std::slice::from_raw_parts_mut(
                channel.slot_ptr(self.slot),
                channel.geometry.max_frame_len,
            )
        };
        // SAFETY: as for `frame`: the header's bytes lie in the same free slot, after the
        // frame's pages (Geometry::user_header_offset), so the two slices do not overlap.
        let header = unsafe {
            std::slice::from_raw_parts_mut(channel.user_header_ptr(self.slot), header_len)
        };
        (header, frame)
    }

    /// Sets the writer's [`FrameMeta`] (as [`FrameWriter::set_meta`]), which this frame and
    /// the following ones are published with: for metadata known only once the frame is
    /// written (a checksum, the capture time).
    pub fn set_meta(&mut self, meta: FrameMeta) {
        self.writer.set_meta(meta);
    }

    /// The sequence number the frame gets if committed.
    pub fn seq(&self) -> u64 {
        self.writer.seq + 1
    }
}

impl std::ops::Deref for PendingFrame<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let channel = &self.writer.channel;
        // SAFETY: as in `parts_mut`; `&self` borrows the writer, so no `&mut` to the slot
        // exists meanwhile.
        unsafe {
            std::slice::from_raw_parts(channel.slot_ptr(self.slot), channel.geometry.max_frame_len)
        }
    }
}

impl std::ops::DerefMut for PendingFrame<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.parts_mut().1
    }
}

impl Drop for PendingFrame<'_> {
    fn drop(&mut self) {
        if !self.committed {
            // Never published, so the slot is still free.
            self.writer.free |= 1 << self.slot;
        }
    }
}

impl std::fmt::Debug for PendingFrame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingFrame")
            .field("seq", &self.seq())
            .field("max_frame_len", &self.writer.channel.geometry.max_frame_len)
            .finish_non_exhaustive()
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

impl Geometry {
    pub(super) fn for_spec(spec: &FrameSpec) -> Result<(Geometry, usize)> {
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
        if spec.user_header_len > MAX_USER_HEADER_LEN {
            return Err(Error::InvalidSize {
                size: spec.user_header_len as u64,
                reason: "user_header_len must be at most 4096 (MAX_USER_HEADER_LEN)",
            });
        }
        let least = spec.max_readers + 2;
        if spec.slots != 0 && !(least..=MAX_SLOTS).contains(&spec.slots) {
            return Err(Error::InvalidSize {
                size: spec.slots as u64,
                reason: "slots must be 0 (the default) or between max_readers + 2 and 62",
            });
        }
        let stride = slot_stride(spec.max_frame_len as u64, spec.user_header_len as u64)
            .and_then(|s| usize::try_from(s).ok());
        let slots = match (spec.slots, stride) {
            // stride >= SLOT_ALIGN, so no division by zero.
            (0, Some(stride)) => least.max(SMALL_FRAME_SLOTS.min(SMALL_FRAME_SLOTS_BYTES / stride)),
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
                user_header_len: spec.user_header_len,
            },
            total,
        ))
    }
}
