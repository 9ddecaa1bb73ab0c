//! What inspecting a segment reports: plain data, filled in by `inspect` (the header and the
//! objects' files), `lock::inspect` (the lock words) and `channel::inspect` (the channel), which
//! all stand on this file rather than on each other.

use crate::error::{Error, Owner, Result};
use crate::header::{KIND_FRAME_CHANNEL, KIND_FRAME_READERS, KIND_PLAIN};
use crate::liveness::Liveness;

/// What kind of object a header says it heads (its `flags` word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A plain segment ([`Mmf`](crate::Mmf)).
    Plain,
    /// A frame channel ([`FrameWriter`](crate::FrameWriter)).
    FrameChannel,
    /// A frame channel's reader table (`<name>+readers`).
    ReaderTable,
    /// A `flags` value this build does not know.
    Unknown(u32),
}

impl Kind {
    pub(crate) fn from_flags(flags: u32) -> Kind {
        match flags {
            KIND_PLAIN => Kind::Plain,
            KIND_FRAME_CHANNEL => Kind::FrameChannel,
            KIND_FRAME_READERS => Kind::ReaderTable,
            other => Kind::Unknown(other),
        }
    }

    /// A short name: `segment`, `channel`, `reader-table` or `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Plain => "segment",
            Kind::FrameChannel => "channel",
            Kind::ReaderTable => "reader-table",
            Kind::Unknown(_) => "unknown",
        }
    }
}

/// A process recorded in a region, and whether it can still touch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its process id.
    pub pid: u32,
    /// The kernel's answer (Linux: the byte lock it holds, where it took one), or the
    /// process identity's.
    pub alive: Liveness,
}

/// The header's fields as they are in the region (see [`crate::header`] for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderInfo {
    /// Whether the 8 magic bytes are mmf's.
    pub magic_ok: bool,
    /// Whether `state` says the creator finished initialising.
    pub ready: bool,
    /// `layout_version`.
    pub layout_version: u32,
    /// `header_len`.
    pub header_len: u32,
    /// `lock_kind`: the lock's four-character code.
    pub lock_kind: u32,
    /// Data region length the header states.
    pub data_len: u64,
    /// `flags`: the object's kind.
    pub flags: u32,
    /// `creator_pid`.
    pub creator_pid: u32,
    /// `write_seq`: odd while a write guard is held.
    pub write_seq: u32,
    /// `os_waiters`.
    pub os_waiters: u32,
}

/// The state of a handle slot that is not free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// The claimer is writing its identity.
    Claiming,
    /// A handle owns it.
    Active,
    /// A recoverer is taking back a dead holder's share.
    Reclaiming,
}

/// One handle slot of the default lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotInfo {
    /// Slot index (the lock word's owner field names it).
    pub index: u32,
    /// Claim state.
    pub state: SlotState,
    /// Claim generation.
    pub generation: u32,
    /// Whether the holder took the kernel byte lock on its slot.
    pub held: bool,
    /// Read locks held through this handle.
    pub read_locks: u32,
    /// The holder.
    pub process: ProcessInfo,
}

/// The default lock's words, decoded (see [`crate::lock`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The lock word as read.
    pub word: u32,
    /// A writer owns the lock or waits for readers to leave.
    pub writer: bool,
    /// Someone sleeps in the kernel on the lock word.
    pub parked: bool,
    /// A writer died holding the lock; `mmf repair` clears it.
    pub poisoned: bool,
    /// The writer waits for readers to drain.
    pub draining: bool,
    /// The writer's slot (255: an untracked handle), while `writer`.
    pub owner_slot: Option<u32>,
    /// The drain word.
    pub drain: u32,
    /// High-water mark of claimed slots.
    pub slots_used: u32,
    /// Read locks held through untracked handles.
    pub overflow: u32,
    /// Slots that are not free.
    pub slots: Vec<SlotInfo>,
}

/// What a lock is doing, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Nobody holds it.
    Free,
    /// Held shared by this many read locks.
    ReadLocked(u32),
    /// Held exclusively by this process (`None`: an untracked handle, pid unknown).
    WriteLocked(Option<u32>),
    /// A writer died holding it and nobody has cleared the poison.
    Poisoned,
}

impl LockInfo {
    /// The lock's state: poisoned first (it outlives any holder), then writer, then readers.
    pub fn state(&self) -> LockState {
        if self.poisoned {
            return LockState::Poisoned;
        }
        if self.writer {
            let pid = self
                .owner_slot
                .and_then(|owner| self.slots.iter().find(|s| s.index == owner))
                .map(|s| s.process.pid);
            return LockState::WriteLocked(pid);
        }
        let readers = self.overflow + self.slots.iter().map(|s| s.read_locks).sum::<u32>();
        if readers > 0 {
            LockState::ReadLocked(readers)
        } else {
            LockState::Free
        }
    }
}

/// The newest frame of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewestFrame {
    /// Sequence number (1 for the first frame).
    pub seq: u64,
    /// Publish time on [`monotonic_ns`](crate::channel::monotonic_ns)'s clock (0: the writer
    /// does not stamp frames).
    pub timestamp_ns: u64,
    /// How long ago it was published, if stamped.
    pub age_ns: Option<u64>,
    /// Length in bytes.
    pub len: u64,
    /// [`FrameMeta::width`](crate::FrameMeta::width).
    pub width: u32,
    /// [`FrameMeta::height`](crate::FrameMeta::height).
    pub height: u32,
    /// [`FrameMeta::pixel_format`](crate::FrameMeta::pixel_format) (see
    /// [`PixelFormat`](crate::channel::PixelFormat)).
    pub pixel_format: u32,
}

/// One attached reader of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderInfo {
    /// Its entry in the reader table.
    pub index: u32,
    /// The reader's process.
    pub process: ProcessInfo,
    /// The slot it has pinned, if any.
    pub pinned_slot: Option<u32>,
    /// Whether it sleeps waiting for a frame.
    pub parked: bool,
}

/// A frame channel's control block and reader table.
#[derive(Debug)]
pub struct ChannelInfo {
    /// Control block layout version.
    pub version: u32,
    /// Frame slots.
    pub slot_count: u32,
    /// Most readers it was created for.
    pub max_readers: u32,
    /// Largest frame, in bytes.
    pub max_frame_len: u64,
    /// Bytes from one slot to the next.
    pub slot_stride: u64,
    /// The writer.
    pub writer: ProcessInfo,
    /// The writer dropped (closed the channel) normally.
    pub writer_closed: bool,
    /// The newest frame, if any was published.
    pub newest: Option<NewestFrame>,
    /// Readers sleeping for a frame, as the table counts them.
    pub parked: u32,
    /// Readers attached.
    pub readers: Vec<ReaderInfo>,
    /// Why the reader table could not be read (`readers` is then empty).
    pub reader_table_error: Option<Error>,
}

/// One object: its header, lock, creator and, for a channel, the channel's state.
#[derive(Debug)]
pub struct SegmentInfo {
    /// The name.
    pub name: String,
    /// The object's size now (header and data).
    pub object_len: u64,
    /// The header's fields as they are.
    pub header: HeaderInfo,
    /// Why the header is refused by openers (`None`: it is valid).
    pub problem: Option<Error>,
    /// The object's kind, from `flags`.
    pub kind: Kind,
    /// Owner (Unix: user and group).
    pub owner: Option<Owner>,
    /// Permission bits (Unix).
    pub mode: Option<u32>,
    /// The creator recorded in the header (the pid only: the fallback's answer).
    pub creator: ProcessInfo,
    /// The default lock's state, if the header is valid and uses it.
    pub lock: Option<LockInfo>,
    /// The channel's state, for a frame channel.
    pub channel: Option<ChannelInfo>,
    /// Why the channel's control block could not be read.
    pub channel_error: Option<Error>,
}

impl SegmentInfo {
    /// Whether any process recorded in the object may still use it: the creator, a lock
    /// slot's holder, a channel's writer or readers. `Unknown` counts as alive.
    pub fn in_use(&self) -> bool {
        let live = |p: &ProcessInfo| p.alive != Liveness::Dead;
        live(&self.creator)
            || self
                .lock
                .as_ref()
                .is_some_and(|l| l.slots.iter().any(|s| live(&s.process)))
            || self.channel.as_ref().is_some_and(|c| {
                (!c.writer_closed && live(&c.writer)) || c.readers.iter().any(|r| live(&r.process))
            })
    }
}

/// An object found by [`list`].
#[derive(Debug)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// What inspecting it found, or why it could not be inspected ([`Error::NotMmf`] for a
    /// file that is not an mmf object).
    pub info: Result<SegmentInfo>,
}
