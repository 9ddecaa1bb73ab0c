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
use crate::header::{Header, HEADER_LEN};
use crate::liveness::Holder;
use crate::lock::{RawRwLock, SharedRwLock};
use crate::sys::{self, Access, OsOptions, OsProcess, OsSegment};
use crate::trust::TrustedOwners;

pub(crate) mod report;

pub use report::*;

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
    // The registration above turns a truncated header into zero pages, and the mapping is
    // read-only, so only loads are made through it.
    // SAFETY: page aligned, at least HEADER_LEN bytes long (checked above), and it outlives
    // `header` (both are locals; `header` is not returned).
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
