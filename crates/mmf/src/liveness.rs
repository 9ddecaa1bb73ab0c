//! Who a process is, and whether it can still touch a lock: the process identity that
//! survives pid reuse, the OS's liveness answers, and the kernel byte locks that back them.
//!
//! The ground floor that both the lock ([`crate::lock`], which records holders and asks
//! about them) and the OS layer (which answers) stand on. Under loom there is no OS layer,
//! and the lock's model answers with an oracle of its own (see [`Presence`]).
/// A process identity that survives pid reuse: the pid plus the time the process started
/// (Linux: clock ticks after boot from `/proc/<pid>/stat`; Windows: creation FILETIME).
/// `start == 0` means the platform could not tell; liveness then rests on the pid alone.
///
/// Public because [`RawRwLock`](crate::lock::RawRwLock) implementations receive and record
/// it. Defined here, below the OS layer and the lock, so the lock's loom model (which has no
/// OS layer) shares the very same types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// The OS process id.
    pub pid: u32,
    /// When the process started, in OS-specific units; 0 if unknown.
    pub start: u64,
}

/// What the OS says about a recorded [`Holder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The holder can still touch the lock: its kernel lock is held (Linux), or the very
    /// process (same pid and start time) is still running (the fallback).
    Alive,
    /// The holder can no longer touch the lock: its kernel lock was dropped (exit, kill,
    /// exec, or the handle closed), or, in the fallback, its process exited or its pid now
    /// belongs to another process.
    Dead,
    /// The OS would not say (e.g. no permission to inspect it): assume it may be alive.
    Unknown,
}

/// What a recoverer knows about the holder of a slot, to ask the OS whether it still lives
/// ([`Context::liveness`](crate::lock::Context::liveness)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// The process the holder's handle was created in (for diagnostics, and the fallback).
    pub id: ProcessId,
    /// The byte of the [`LockArea`](crate::lock::LockArea) on which the holder took a kernel
    /// lock with [`Context::hold`](crate::lock::Context::hold) (it answered [`Hold::Held`]),
    /// or `None` if it could not. With a byte, only the kernel lock decides; without one, the
    /// process identity does.
    pub byte: Option<u32>,
}

/// The answer of [`Context::hold`](crate::lock::Context::hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// This handle now holds a kernel lock on the byte; the kernel drops it exactly when no
    /// program can use the handle any more (see the module docs, "Owner death").
    Held,
    /// Another handle still holds the byte (typically the slot's previous owner, between
    /// freeing the slot and releasing its byte): choose another slot.
    Busy,
    /// This platform (or this system) has no such lock: record the process identity only.
    Unsupported,
}

/// The OS side of [`Context`](crate::lock::Context)'s liveness questions: the kernel lock a
/// handle holds on a byte of its lock area, and the answer for a recorded holder.
/// Implemented by the segment (one open file description per handle on Linux) and, in the
/// tests and the loom model, by an oracle.
pub(crate) trait Presence: Sync {
    /// Takes this handle's kernel lock on byte `byte` of the lock area.
    fn hold(&self, byte: u32) -> Hold;
    /// Releases what [`hold`](Self::hold) took.
    fn release(&self, byte: u32);
    /// Whether `holder` can still touch the lock.
    fn liveness(&self, holder: Holder) -> Liveness;
}

/// An oracle that answers by process identity alone and claims every byte (the unit tests
/// and the loom model, in which "processes" are pids whose death the test decides).
impl<F: Fn(ProcessId) -> Liveness + Sync> Presence for F {
    fn hold(&self, _byte: u32) -> Hold {
        Hold::Held
    }
    fn release(&self, _byte: u32) {}
    fn liveness(&self, holder: Holder) -> Liveness {
        self(holder.id)
    }
}
