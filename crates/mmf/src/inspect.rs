//! Looking at segments and frame channels from outside, without changing them: what the
//! `mmf list` and `mmf info` commands print.
//!
//! Everything here maps read-only and only loads: inspecting a segment takes no lock, claims
//! no slot, pins no frame and wakes nobody, so it is safe to run against a live pipeline (and
//! against a stuck one, which is when it is needed). What it reports is a snapshot; other
//! processes may change any word a moment later. Bytes that do not form a valid header are
//! reported as they are ([`SegmentInfo::problem`] says why they are refused), a file that is
//! not an mmf object at all is [`Error::NotMmf`], and nothing read from the region can make
//! this module panic.

use std::time::Duration;

use crate::error::{Error, Owner, Result};
use crate::header::{Header, HEADER_LEN, KIND_FRAME_CHANNEL, KIND_FRAME_READERS, KIND_PLAIN};
use crate::liveness::{Holder, Liveness};
use crate::lock::{RawRwLock, SharedRwLock};
use crate::sys::{self, Access, OsOptions, OsProcess, OsSegment};
use crate::trust::TrustedOwners;

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
    fn from_flags(flags: u32) -> Kind {
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

/// How long inspection waits for a creator that is still initialising.
const OPEN_WAIT: Duration = Duration::from_millis(200);

/// Inspects `name`, trusting the owners an ordinary open trusts (this user and root).
pub fn segment(name: &str) -> Result<SegmentInfo> {
    segment_trusting(name, &TrustedOwners::new())
}

/// Inspects `name`, also accepting an object owned by one of `trusted`.
pub fn segment_trusting(name: &str, trusted: &TrustedOwners) -> Result<SegmentInfo> {
    crate::name::validate(name)?;
    let opts = OsOptions {
        mode: 0o600,
        prefault: false,
        namespace: sys::Namespace::Local,
        large_pages: false,
        trusted: trusted.clone(),
    };
    let deadline = std::time::Instant::now() + OPEN_WAIT;
    let segment = loop {
        match sys::Segment::open(name, Access::ReadOnly, &opts)? {
            Some(segment) => break segment,
            // Created but not sized yet: its creator is between two system calls.
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            None => {
                return Err(Error::NotReady {
                    name: name.to_owned(),
                    waited: OPEN_WAIT,
                })
            }
        }
    };
    // Registered first, so that a truncation racing with the loads below gives zero pages
    // (which read as "not ready") instead of killing this process with SIGBUS.
    let fault = sys::fault::Registration::patchable(segment.as_ptr(), segment.len());
    if segment.len() < HEADER_LEN {
        return Err(Error::NotMmf {
            name: name.to_owned(),
        });
    }
    let object_len = segment.object_len()?;
    // SAFETY: the mapping is page aligned and at least HEADER_LEN bytes long (checked above)
    // and outlives `header` (both are locals, `header` is not returned); the registration
    // above turns a truncated header into zero pages, and the mapping is read-only, so only
    // loads are made through it.
    let header = unsafe { Header::from_ptr(segment.as_ptr()) };
    let raw = header.raw();
    if !raw.magic_ok && raw.state != 0 {
        return Err(Error::NotMmf {
            name: name.to_owned(),
        });
    }
    let problem = match header.validate(usize::try_from(object_len).unwrap_or(usize::MAX), name) {
        Ok(Some(_)) => None,
        Ok(None) => Some(Error::NotReady {
            name: name.to_owned(),
            waited: Duration::ZERO,
        }),
        // Bytes that are not an mmf header at all are a foreign object, like a bad magic.
        Err(e @ Error::NotMmf { .. }) => return Err(e),
        Err(e) => Some(e),
    };
    let lock =
        (problem.is_none() && raw.lock_kind == <SharedRwLock as RawRwLock>::KIND).then(|| {
            crate::lock::inspect::decode(&header.lock, &|holder: Holder| match holder.byte {
                Some(byte) => segment
                    .byte_liveness((crate::header::LOCK_AREA_OFFSET as u64) + u64::from(byte)),
                None => <sys::Process as OsProcess>::liveness(holder.id),
            })
        });
    if fault.header_lost() {
        return Err(Error::Truncated {
            name: name.to_owned(),
            found: segment.object_len().unwrap_or(0),
            needed: HEADER_LEN as u64,
        });
    }
    let (owner, mode) = owner_and_mode(name);
    let kind = Kind::from_flags(raw.flags);
    let (channel, channel_error) = if problem.is_none() && kind == Kind::FrameChannel {
        match crate::channel::inspect::channel(name, trusted) {
            Ok(info) => (Some(info), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    Ok(SegmentInfo {
        name: name.to_owned(),
        object_len,
        header: HeaderInfo {
            magic_ok: raw.magic_ok,
            ready: raw.state == crate::header::STATE_READY,
            layout_version: raw.layout_version,
            header_len: raw.header_len,
            lock_kind: raw.lock_kind,
            data_len: raw.data_len,
            flags: raw.flags,
            creator_pid: raw.creator_pid,
            write_seq: raw.write_seq,
            os_waiters: raw.os_waiters,
        },
        problem,
        kind,
        owner,
        mode,
        creator: ProcessInfo {
            pid: raw.creator_pid,
            alive: <sys::Process as OsProcess>::liveness(crate::liveness::ProcessId {
                pid: raw.creator_pid,
                start: 0,
            }),
        },
        lock,
        channel,
        channel_error,
    })
}

#[cfg(target_os = "linux")]
fn owner_and_mode(name: &str) -> (Option<Owner>, Option<u32>) {
    use std::os::unix::fs::MetadataExt;
    // symlink_metadata: an object the open above accepted is a regular file; this only
    // reads its inode's owner and mode again.
    match std::fs::symlink_metadata(format!("/dev/shm/{name}")) {
        Ok(meta) => (
            Some(Owner::Unix {
                user: meta.uid(),
                group: meta.gid(),
            }),
            Some(meta.mode() & 0o7777),
        ),
        Err(_) => (None, None),
    }
}

#[cfg(not(target_os = "linux"))]
fn owner_and_mode(_name: &str) -> (Option<Owner>, Option<u32>) {
    (None, None)
}

/// Every mmf object on the machine that this platform can enumerate, sorted by name, with
/// foreign files and objects that could not be inspected included (with the reason). A
/// channel's reader table is part of its channel and not listed on its own.
///
/// Linux scans `/dev/shm`; elsewhere [`Error::Unsupported`] (Windows cannot enumerate named
/// sections, and macOS and FreeBSD have no directory of POSIX shm names).
pub fn list() -> Result<Vec<Entry>> {
    list_trusting(&TrustedOwners::new())
}

/// [`list`], also accepting objects owned by `trusted`.
#[cfg(target_os = "linux")]
pub fn list_trusting(trusted: &TrustedOwners) -> Result<Vec<Entry>> {
    let dir = std::fs::read_dir("/dev/shm").map_err(|source| Error::Os {
        op: "read_dir(/dev/shm)",
        source,
    })?;
    let mut entries = Vec::new();
    for dirent in dir.flatten() {
        let name = dirent.file_name().to_string_lossy().into_owned();
        // `<name>+readers` is listed (and removed) with its channel; user names have no `+`.
        if name.contains('+') {
            continue;
        }
        let info = segment_trusting(&name, trusted);
        entries.push(Entry { name, info });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// [`list`], also accepting objects owned by `trusted`.
#[cfg(not(target_os = "linux"))]
pub fn list_trusting(_trusted: &TrustedOwners) -> Result<Vec<Entry>> {
    Err(Error::Unsupported {
        what: "listing shared memory objects (Linux only: Windows cannot enumerate named sections)",
    })
}
