//! The reading end: [`FrameReaderOptions`], [`FrameReader`], and the [`Frame`] guard, which
//! borrows the reader that pinned it and unpins through it when dropped.

use std::hint;

use bytemuck::Pod;
use std::ops::Deref;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{fence, AtomicBool};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::header::{KIND_FRAME_CHANNEL, KIND_FRAME_READERS};
use crate::liveness::Hold;
use crate::name::reader_table_name;
use crate::segment::MmfOptions;
use crate::sys::{prefetch, OsProcess, Process};
use crate::trust::TrustedOwners;

use super::common::{control_of, Channel};
use super::frame::{FrameInfo, FrameMeta, ReaderStats};
use super::layout::{
    latest_word, load64, magic_words, reader_byte, store64, Geometry, ReaderEntry, CLAIM_BUSY,
    CLAIM_FREE, CLAIM_GEN_ONE, CLAIM_OWNED, CLAIM_STATE, CONTROL_LEN, DEFAULT_SPIN, LATEST_BUSY,
    LATEST_CLOSED, LATEST_NONE, LATEST_SEQ_SHIFT, LATEST_SLOT, MAX_PIN_ATTEMPTS, MAX_SLEEP,
    NO_SLOT, OPEN_WAIT_MAX_PAUSE, TABLE_LEN,
};

/// A reading end of a frame channel.
///
/// Holds one entry of the channel's reader table from [`open`](Self::open) until drop, and
/// at most one pinned frame at a time (a [`Frame`] borrows the reader mutably).
pub struct FrameReader {
    pub(super) channel: Channel,
    pub(super) entry: usize,
    pub(super) generation: u32,
    /// Set once this reader found its entry taken (or its table mapping lost): from then on
    /// it never touches the entry again, which may be another reader's now.
    pub(super) evicted: AtomicBool,
    pub(super) last_seq: Option<u64>,
    pub(super) received: u64,
    pub(super) skipped: u64,
    pub(super) spin: Duration,
    /// Whether the next wait spins first (see `wait_pin`).
    pub(super) spin_now: bool,
}

/// What a successful pin found; turned into a [`Frame`] by the caller.
pub(super) struct Pinned {
    pub(super) slot: u32,
    pub(super) info: FrameInfo,
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
    pub(super) name: String,
    pub(super) open_timeout: Duration,
    pub(super) trusted: TrustedOwners,
    /// How long to wait for the channel to appear (or for a live writer), if at all.
    pub(super) wait: Option<Duration>,
}

impl FrameReaderOptions {
    /// Options for channel `name` with the defaults (a 1 s open timeout).
    pub fn new(name: impl Into<String>) -> Self {
        FrameReaderOptions {
            name: name.into(),
            open_timeout: crate::segment::DEFAULT_OPEN_TIMEOUT,
            trusted: TrustedOwners::new(),
            wait: None,
        }
    }

    /// Waits up to `timeout` for the channel: while no channel of that name exists yet
    /// ([`Error::NotFound`]), its writer is still creating it ([`Error::NotReady`]), or its
    /// writer has gone ([`Error::WriterGone`]: a new writer takes such a channel over, see
    /// [`FrameWriter::create`](super::FrameWriter::create)), [`open`](Self::open) tries
    /// again, sleeping between tries (1 ms, doubling up to 50 ms, so a waiting consumer costs
    /// next to no CPU and attaches within 50 ms of the writer). [`Error::Timeout`] when the
    /// time runs out; every other error at once. The same as [`FrameReader::open_wait`].
    pub fn wait(mut self, timeout: Duration) -> Self {
        self.wait = Some(timeout);
        self
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

    /// Opens the channel (see [`FrameReader::open`] for the errors), waiting for it if
    /// [`wait`](Self::wait) says so.
    pub fn open(&self) -> Result<FrameReader> {
        let Some(wait) = self.wait else {
            return FrameReader::open_with(self);
        };
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let left = wait.saturating_sub(start.elapsed());
            let attempt = FrameReaderOptions {
                open_timeout: self.open_timeout.min(left),
                wait: None,
                ..self.clone()
            };
            match FrameReader::open_with(&attempt) {
                Err(Error::NotFound { .. } | Error::NotReady { .. } | Error::WriterGone { .. })
                    if !left.is_zero() =>
                {
                    std::thread::sleep(pause.min(wait.saturating_sub(start.elapsed())));
                    pause = (pause * 2).min(OPEN_WAIT_MAX_PAUSE);
                }
                Err(Error::NotFound { .. } | Error::NotReady { .. } | Error::WriterGone { .. }) => {
                    return Err(Error::Timeout {
                        waited: start.elapsed(),
                    })
                }
                other => return other,
            }
        }
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
    /// [`Mmf::open`](crate::Mmf::open) can return, such as [`Error::UntrustedOwner`] for a
    /// channel created by a user other than this process's (or root): see
    /// [`open_trusting`](Self::open_trusting).
    pub fn open(name: &str) -> Result<FrameReader> {
        FrameReaderOptions::new(name).open()
    }

    /// Opens channel `name`, waiting up to `timeout` for it to appear, for its writer to
    /// finish creating it, or for a new writer to replace one that has gone: a consumer may
    /// start before its camera, and follow it through a restart (on [`Error::WriterGone`],
    /// drop the reader and call this again). [`Error::Timeout`] if no live channel came in
    /// time; the other errors of [`open`](Self::open) at once. The same as
    /// [`FrameReaderOptions::wait`]. Drop the old reader before reopening: on Windows a
    /// channel's name lives as long as any handle to it, so an old reader kept open keeps
    /// the new writer from taking the name over.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use mmf::{Error, FrameReader};
    ///
    /// # fn main() -> mmf::Result<()> {
    /// let mut reader = FrameReader::open_wait("cam0", Duration::from_secs(30))?;
    /// loop {
    ///     // The frame borrows the reader: reopen after the match, not inside it.
    ///     let gone = match reader.wait_next(Duration::from_secs(1)) {
    ///         Ok(frame) => {
    ///             println!("frame {}", frame.seq());
    ///             false
    ///         }
    ///         Err(Error::Timeout { .. }) => false,
    ///         // The camera stopped or crashed: follow the next one.
    ///         Err(Error::WriterGone { .. }) => true,
    ///         Err(e) => return Err(e),
    ///     };
    ///     if gone {
    ///         // Closed first: on Windows the old channel's name lives while a handle does.
    ///         drop(reader);
    ///         reader = FrameReader::open_wait("cam0", Duration::from_secs(30))?;
    ///     }
    /// }
    /// # }
    /// ```
    pub fn open_wait(name: &str, timeout: Duration) -> Result<FrameReader> {
        FrameReaderOptions::new(name).wait(timeout).open()
    }

    /// Opens channel `name` as [`open`](Self::open) does, also accepting a channel created
    /// by one of `owners` (Unix; e.g. a camera service running as its own user). Without
    /// them, a channel whose owner is neither this process's user nor root is refused with
    /// [`Error::UntrustedOwner`] before anything is mapped. The same as
    /// [`FrameReaderOptions::trusted_owners`].
    pub fn open_trusting(name: &str, owners: TrustedOwners) -> Result<FrameReader> {
        FrameReaderOptions::new(name).trusted_owners(owners).open()
    }

    pub(super) fn open_with(options: &FrameReaderOptions) -> Result<FrameReader> {
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
    pub(super) fn claim(channel: &Channel) -> Option<(usize, u32)> {
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

    pub(super) fn entry(&self) -> &ReaderEntry {
        // In bounds: `entry` came from enumerating `readers()` at open.
        &self.channel.readers()[self.entry]
    }

    /// Whether the entry is still this reader's: its claim word unchanged since `claim`, and
    /// the table still the shared one. A peer with write access to the table can break
    /// both (module docs, "Trust"); once broken, stays broken.
    pub(super) fn entry_is_ours(&self) -> bool {
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
    pub(super) fn check_entry(&self) -> Result<()> {
        if self.entry_is_ours() {
            Ok(())
        } else {
            Err(self.evicted_error())
        }
    }

    pub(super) fn evicted_error(&self) -> Error {
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

    /// [`received`](Self::received), [`skipped`](Self::skipped) and
    /// [`last_seq`](Self::last_seq) at once; while a [`Frame`] is held, the same through
    /// [`Frame::reader_stats`].
    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            received: self.received,
            skipped: self.skipped,
            last_seq: self.last_seq,
        }
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

    /// Start address and length of the channel's frame mapping in this process. Not API:
    /// for bindings' tests that check a frame is a view of shared memory, not a copy.
    #[doc(hidden)]
    pub fn mapping_range_for_tests(&self) -> (usize, usize) {
        (
            self.channel.mmf.mapping_ptr_for_tests() as usize,
            self.channel.mmf.mapping_len_for_tests(),
        )
    }

    /// Whether the channel's writer is still there: it has not dropped, and its process has
    /// not died (asks the OS, so it costs a system call or two; not for every frame).
    pub fn writer_alive(&self) -> bool {
        !self.channel.writer_gone(true)
    }

    /// For a reader that found no newer frame: `Ok(None)` while the writer is there; once it
    /// is gone, a frame it published just before going if this reader has not taken it yet,
    /// else [`Error::WriterGone`].
    pub(super) fn last_frame_if_writer_gone(
        &mut self,
        check_process: bool,
    ) -> Result<Option<Pinned>> {
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

    pub(super) fn wait_pin(&mut self, start: Instant, deadline: Option<Instant>) -> Result<Pinned> {
        let result = self.wait_pin_inner(start, deadline);
        // Adapt: spin next time only if this frame came within the spin window. When frames
        // come slower, spinning only burns CPU, and (measured on a VM) a thread that spun
        // before sleeping wakes about twice as slowly as one that went straight to sleep.
        self.spin_now = result.is_ok() && start.elapsed() <= self.spin;
        result
    }

    pub(super) fn wait_pin_inner(
        &mut self,
        start: Instant,
        deadline: Option<Instant>,
    ) -> Result<Pinned> {
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
    pub(super) fn sleep_while_latest_is(&self, seen: u32, deadline: Option<Instant>) {
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
    pub(super) fn may_be_newer(&self, word: u32) -> bool {
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
    pub(super) fn pin_newer(&mut self) -> Result<Option<Pinned>> {
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
    pub(super) fn pin(&mut self) -> Result<Option<Pinned>> {
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
            super::tests::between_look_and_pin();
            // Start fetching the frame's first line now: its transfer from the writer's CPU
            // then overlaps our pin and re-check instead of following them (a SeqCst store
            // holds back every later load), which shortens a small frame's hand-over.
            prefetch(self.channel.slot_ptr(slot));
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

    pub(super) fn unpin(&self) {
        if !self.entry_is_ours() {
            return;
        }
        // Release: our reads of the slot happen before the writer's SeqCst load that sees
        // this value and lets it reuse the slot.
        self.entry().pin.store(NO_SLOT, Release);
    }

    pub(super) fn frame(&mut self, mut pinned: Pinned) -> Frame<'_> {
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
        // SAFETY: as for `data`: the header's user_header_len bytes lie in the same pinned
        // slot (Geometry::user_header_offset, validated at open).
        let user_header = unsafe {
            std::slice::from_raw_parts(
                this.channel.user_header_ptr(pinned.slot),
                this.channel.geometry.user_header_len,
            )
        };
        Frame {
            reader: this,
            data,
            user_header,
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

/// A pinned frame: derefs to its bytes, in shared memory, without a copy. The writer keeps
/// off its slot until the guard drops.
#[must_use = "if unused the frame is released at once"]
pub struct Frame<'a> {
    pub(super) reader: &'a FrameReader,
    pub(super) data: &'a [u8],
    pub(super) user_header: &'a [u8],
    pub(super) slot: u32,
    pub(super) info: FrameInfo,
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

    /// The frame's first `size_of::<T>()` bytes as a `T`, for any `T: bytemuck::Pod`
    /// (see [`Mmf::view`](crate::Mmf::view)). Slots start on page boundaries, so every
    /// alignment up to 4096 is met; [`Error::TypeMismatch`] if the frame is shorter than a
    /// `T`.
    ///
    /// ```
    /// # use mmf::{FrameReader, FrameSpec, FrameWriter};
    /// # fn main() -> mmf::Result<()> {
    /// # let name = format!("cast-doc-{}", std::process::id());
    /// let mut camera = FrameWriter::create(&name, FrameSpec::new(64))?;
    /// let mut reader = FrameReader::open(&name)?;
    /// camera.publish(mmf::bytemuck::bytes_of(&[1.5f32, 2.5, 4.0]))?;
    /// let frame = reader.latest()?.unwrap();
    /// assert_eq!(frame.cast::<[f32; 3]>()?, &[1.5, 2.5, 4.0]);
    /// assert_eq!(frame.as_slice_of::<f32>()?.len(), 3);
    /// assert!(frame.cast::<[f32; 4]>().is_err(), "longer than the frame");
    /// # Ok(()) }
    /// ```
    pub fn cast<T: Pod>(&self) -> Result<&T> {
        crate::view::cast::<T>(self.data, 1)
    }

    /// The whole frame as a `[T]`; [`Error::TypeMismatch`] unless its length is a whole
    /// number of `T`s (see [`cast`](Self::cast)).
    pub fn as_slice_of<T: Pod>(&self) -> Result<&[T]> {
        crate::view::cast_whole::<T>(self.data)
    }

    /// The user header the writer published with this frame
    /// ([`FrameWriter::publish_with_header`](super::FrameWriter::publish_with_header)):
    /// always [`FrameSpec::user_header_len`](super::FrameSpec::user_header_len) bytes
    /// (empty without one), in the frame's slot, so it belongs to this frame and is
    /// protected as its bytes are (and covered by [`verify`](Self::verify)).
    pub fn user_header(&self) -> &[u8] {
        self.user_header
    }

    /// The user header's first bytes as a `T` (page aligned, so any alignment up to 4096
    /// fits); [`Error::TypeMismatch`] if the header is shorter than a `T`.
    pub fn user_header_as<T: Pod>(&self) -> Result<&T> {
        crate::view::cast::<T>(self.user_header, 1)
    }

    /// All metadata at once.
    pub fn info(&self) -> &FrameInfo {
        &self.info
    }
    /// Sequence number (1 for the first frame).
    pub fn seq(&self) -> u64 {
        self.info.seq
    }
    /// Publish time on [`monotonic_ns`](super::monotonic_ns)'s clock, or 0 if the writer
    /// turned timestamps off ([`FrameWriter::set_timestamps`](super::FrameWriter::set_timestamps)).
    pub fn timestamp_ns(&self) -> u64 {
        self.info.timestamp_ns
    }
    /// Frames skipped between the previous frame this reader saw and this one.
    pub fn skipped(&self) -> u64 {
        self.info.skipped
    }
    /// The counts of the reader this frame came from, this frame included: what
    /// [`FrameReader::stats`] says, reachable while the frame borrows the reader.
    pub fn reader_stats(&self) -> ReaderStats {
        self.reader.stats()
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
