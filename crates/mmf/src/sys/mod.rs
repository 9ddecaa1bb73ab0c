//! The OS layer: one module per platform behind one small internal interface.
//!
//! Each platform module defines a `Segment` (a named, mapped shared-memory object) and a
//! `Waiter` (sleep on a 32-bit word of a segment and wake sleepers in other processes), and
//! implements [`OsSegment`] and [`OsWaiter`] for them, so the compiler checks that every
//! platform is complete. Nothing above this layer sees a file descriptor or a HANDLE.

use std::sync::atomic::AtomicU32;
use std::time::Instant;

use crate::error::Result;

#[cfg_attr(unix, path = "unix.rs")]
#[cfg_attr(windows, path = "windows.rs")]
mod os;

/// Surviving truncation: the fault-catching copy and the SIGBUS handler (issue 4).
pub(crate) mod fault;

pub(crate) use os::{page_size, Process, Segment, Waiter, WAKES_BY_WORD};

/// Which kernel namespace a name lives in (meaningful on Windows only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Namespace {
    /// Visible to the current login session (`Local\` on Windows). The default.
    #[default]
    Local,
    /// Visible to every session (`Global\` on Windows; needs `SeCreateGlobalPrivilege` to
    /// create). On Unix there is one namespace and this is the same as `Local`.
    Global,
}

/// How to map a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadWrite,
    ReadOnly,
}

/// Options the OS layer needs; the public builder translates into this.
#[derive(Debug, Clone)]
pub(crate) struct OsOptions {
    /// Unix permission bits for a new segment (Windows: translated into its DACL, see
    /// `windows_security.rs`).
    pub mode: u32,
    /// Fault every page in at map time.
    pub prefault: bool,
    pub namespace: Namespace,
    /// Back the segment with large (huge) pages.
    pub large_pages: bool,
    /// Whose existing objects `open` accepts.
    pub trusted: crate::trust::TrustedOwners,
}

/// A named shared-memory object, mapped into this process.
pub(crate) trait OsSegment: Sized + Send + Sync {
    /// Creates `name` exclusively, `len` bytes long, zero-filled, mapped read-write.
    /// Fails with `AlreadyExists` (touching nothing) if the name is taken.
    fn create(name: &str, len: usize, opts: &OsOptions) -> Result<Self>;

    /// Opens an existing object and maps at least its first `HEADER_LEN` bytes, or all of it
    /// if it is shorter, so that the caller can validate the header before mapping the rest
    /// with [`remap`](Self::remap): how much to map comes from the header, never from the
    /// object's size, which any process with write access can raise (on POSIX a sparse
    /// `ftruncate` costs nothing until the pages are touched, and prefaulting touches them).
    /// Refuses objects that are not shared memory ([`Error::NotRegularFile`]) or whose owner
    /// `opts.trusted` does not accept ([`Error::UntrustedOwner`]).
    ///
    /// `Ok(None)` means it exists but has no size yet (its creator is between creating and
    /// sizing it); the caller retries.
    ///
    /// [`Error::NotRegularFile`]: crate::Error::NotRegularFile
    /// [`Error::UntrustedOwner`]: crate::Error::UntrustedOwner
    fn open(name: &str, access: Access, opts: &OsOptions) -> Result<Option<Self>>;

    /// Replaces the mapping made by [`open`](Self::open) by one of exactly `len` bytes (on
    /// Windows: at least `len`, the whole section) with `access`, prefaulted and with large
    /// pages as `opts` asks. Pointers into the old mapping are invalid afterwards.
    fn remap(&mut self, len: usize, access: Access, opts: &OsOptions, name: &str) -> Result<()>;

    /// The object's size now (Unix: `fstat`, which another process may change at any time;
    /// Windows: the section's size, fixed at its creation).
    fn object_len(&self) -> Result<u64>;

    /// Length of the mapping in bytes.
    fn len(&self) -> usize;

    /// Start of the mapping (page aligned, valid for `len()` bytes while `self` lives).
    fn as_ptr(&self) -> *mut u8;

    /// Removes `name` so that later opens fail and a later create starts afresh; mappings
    /// stay valid. On Windows, where a name lives exactly as long as its handles, this only
    /// checks that the name exists.
    fn remove(name: &str, namespace: Namespace) -> Result<()>;

    /// Removes `name` if it still refers to this very object (not one created after it
    /// was removed). Called by the creator's drop; failures are ignored there.
    fn remove_if_same(&self, name: &str, namespace: Namespace) -> Result<()>;

    /// Takes this mapping's kernel lock on the byte at `offset` of the object: released by
    /// the kernel when no program can use this mapping's descriptor any more (Linux: an
    /// open-file-description lock; see the lock module, "Owner death").
    /// [`Hold::Unsupported`] where there is no such lock.
    fn hold_byte(&self, offset: u64) -> Hold;

    /// Releases what [`hold_byte`](Self::hold_byte) took.
    fn release_byte(&self, offset: u64);

    /// Whether another mapping (another open file description) holds the byte at `offset`:
    /// [`Liveness::Alive`] if so, [`Liveness::Dead`] if not, [`Liveness::Unknown`] if the OS
    /// would not say.
    fn byte_liveness(&self, offset: u64) -> Liveness;
}

/// Sleeping on a word of a segment, across processes.
pub(crate) trait OsWaiter: Sized + Send + Sync {
    /// The waiter for segment `name`; `create` is true for the segment's creator, `access` is
    /// how the segment was mapped (a read-only handle never wakes anybody). Where the waiter
    /// is a kernel object of its own (Windows), it is created with `opts.mode` and its owner
    /// checked against `opts.trusted` like the segment's.
    fn new(name: &str, opts: &OsOptions, create: bool, access: Access) -> Result<Self>;

    /// Sleeps while `word == expected`, until woken or `deadline`; may return spuriously.
    /// `sleepers` is the header's count of sleeping processes, for platforms that need it.
    fn wait(
        &self,
        sleepers: &AtomicU32,
        word: &AtomicU32,
        expected: u32,
        deadline: Option<Instant>,
    );

    /// Wakes every sleeper on `word`.
    fn wake_all(&self, sleepers: &AtomicU32, word: &AtomicU32);
}

/// Bytes at the start of every mapping that hold the segment's header: what
/// [`OsSegment::open`] maps before the header is validated, and what a truncation fault
/// patches over (`fault.rs`). The OS layer knows only this length, not the header's fields;
/// the header's layout ([`crate::header::HEADER_LEN`]) asserts that it is this, so the arrow
/// runs from the header down to the OS layer and not back up.
pub(crate) const HEADER_LEN: usize = 4096;

/// The remaining time until `deadline`, or `None` for no deadline; zero once it has passed.
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<std::time::Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

pub use crate::liveness::{Hold, Liveness, ProcessId};

/// Who is this process, and is another one still alive.
pub(crate) trait OsProcess {
    /// This process's identity (cached; recomputed if the pid changed, e.g. after fork).
    fn current() -> ProcessId;
    /// Whether the process `id` still runs.
    fn liveness(id: ProcessId) -> Liveness;
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive_and_a_changed_start_time_is_not() {
        let me = Process::current();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(Process::liveness(me), Liveness::Alive);
        assert_eq!(
            Process::liveness(ProcessId { pid: 0, start: 0 }),
            Liveness::Dead
        );
        // Linux reads the start time from /proc, Windows from GetProcessTimes; the other
        // Unixes leave it 0 and rest on the pid alone.
        if cfg!(any(target_os = "linux", windows)) {
            assert_ne!(me.start, 0, "this platform must know its start time");
            let impostor = ProcessId {
                start: me.start + 1,
                ..me
            };
            assert_eq!(
                Process::liveness(impostor),
                Liveness::Dead,
                "pid reuse must not fool it"
            );
        }
    }
}

/// Starts moving the cache line at `ptr` towards this CPU. A hint, not a memory access: it
/// reads nothing the program sees, so it cannot race with a writer, and an address the CPU
/// cannot fetch is dropped, never faulted on. Where the target has no stable prefetch
/// instruction it does nothing.
#[inline(always)]
pub(crate) fn prefetch(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` accesses no memory (Intel SDM: a hint that cannot fault), and
    // SSE, which it needs, is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}
