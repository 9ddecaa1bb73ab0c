//! Named shared memory with the lock inside the shared region.
//!
//! Processes on one machine share large blocks of memory by name — camera frames, sensor
//! buffers, model outputs. A reader/writer lock stored in the region itself means every
//! process that maps it sees and respects the same lock, with no broker and no server.
//!
//! ```no_run
//! use mmf::Mmf;
//!
//! # fn main() -> mmf::Result<()> {
//! // Process A
//! let segment = Mmf::create("sensor-7", 4096)?;
//! segment.write_at(0, &42u64.to_le_bytes())?;
//!
//! // Process B
//! let segment = Mmf::open("sensor-7")?;
//! let mut value = [0u8; 8];
//! segment.read_at(0, &mut value)?;
//! assert_eq!(u64::from_le_bytes(value), 42);
//! # Ok(()) }
//! ```
//!
//! Typed access: [`Mmf::view`], [`Mmf::view_mut`] and [`Mmf::view_slice`] give the data
//! region as any `T: bytemuck::Pod` (or `[T]`) under the lock, checked for size and alignment
//! with [`Error::TypeMismatch`] ([`view`] says why `bytemuck`). For many readers of one
//! producer's frames, see [`channel`]: consumers may start before their camera
//! ([`FrameReader::open_wait`]), a crashed camera's successor takes its channel over
//! ([`FrameWriter::create`]), and each frame can carry a user header
//! ([`FrameSpec::user_header_len`]).
//!
//! # Platforms
//!
//! | OS | architectures | backing object | how a blocked process waits | lifetime | tested how |
//! |----|---------------|----------------|-----------------------------|----------|------------|
//! | Linux | x86_64, i686, aarch64 | POSIX shm (`/dev/shm`) | bounded spin, then shared futex on the lock word | until removed (creator removes on drop by default) | x86_64 and i686: unit tests, every integration suite but `windows`, doc tests; x86_64 also Miri and loom on the lock and header; aarch64 under qemu-user (children started through the emulator): unit tests (but the 4 lock wake-up tests that find a sleeping thread by its system call in `/proc`, where qemu shows its own), every integration suite but `windows`, `truncation`, `scribble` and `sigbus_install`, doc tests (qemu on x86_64 keeps x86's memory order, so this checks the Arm build, not Arm's weaker ordering; on aarch64 a copy that races with a truncation is not caught and raises `SIGBUS`) |
//! | Windows | x86_64, i686 | pagefile-backed section (`Local\` or `Global\` name) | bounded spin, then a named semaphore per segment (`<name>#mmf-wake`), signalled only when the header's sleeper count is non-zero; each kernel wait capped at 1 s | until the last handle closes | x86_64 under wine 8: unit tests, the `channel`, `multiprocess`, `robust`, `segment_api`, `winmmf_layout` and `windows` suites, doc tests (not `hostile`, `hostile_reader`, `linux_shm`, `namespaces`, `scribble`, `sigbus_install`, `truncation`: they forge, truncate or squat `/dev/shm` objects, test Linux's PID namespaces, or interpose `sigaction`); i686 built, not run |
//! | macOS, FreeBSD | x86_64 | POSIX shm | bounded spin, then 0.5 ms sleeps re-checking the word | until removed | compiled (`cargo check`) only |
//!
//! # Trust model
//!
//! Shared memory lives in a namespace every local user can write to (`/dev/shm`, `Local\` and
//! `Global\`), and every process that maps a region can change all of it. What `mmf` promises, to
//! whom, and what each promise rests on:
//!
//! | who | trusted for | what protects you from the others |
//! |---|---|---|
//! | your processes, using `mmf` with write access | to follow the lock | the lock itself; a holder that dies is recovered, a holder wrongly taken for dead cannot release someone else's lock (`Error::Revoked`, poisoning) |
//! | read-only handles (`open_read_only`) | nothing: they cannot write | the kernel (a read-only mapping); they copy optimistically and never block a writer |
//! | frame-channel readers (whoever the channel's mode lets read) | nothing but their own reads | the frames and the writer's control block are mapped read-only (the channel is created without group or other write bits), so readers cannot crash, block or corrupt the writer or change a frame; what they write (entries, pins, the sleeper count) is a separate reader table, `<name>+readers`, where garbage is only compared and a truncation is patched over with private zero pages (Linux). A reader can still evict or unpin other readers (they get `Error::ReaderEvicted`, or `Error::FrameOverwritten` from [`Frame::verify`]), fill the table, or delay their wake-ups by up to 1 s; on macOS and FreeBSD one that truncates the table kills the writer |
//! | other users | nothing | on Linux, opening refuses an object owned by another user unless you name it ([`MmfOptions::trust_owner`], [`trust_group`](MmfOptions::trust_group); root is trusted) and refuses anything that is not a regular file (FIFO, symlink, directory: `Error::NotRegularFile`), with `O_NOFOLLOW` and `O_NONBLOCK`; new objects are created with mode 0600 by default. On Windows, the section and the segment's wake semaphore get a protected DACL built from the mode (owner bits: the creating user, always full control; group bits: the token's primary group; other bits: Everyone; `r` lets map and wait, `w` also write and wake) and are owned by the creating user; every open, and a create that finds the semaphore's name taken, reads the object's owner SID and refuses a stranger (`Error::UntrustedOwner`) unless named ([`MmfOptions::trust_sid`]; the user itself, LocalSystem and Administrators are trusted). Wine 8, the test platform, honours all of this, including DACL checks on sections; it cannot show a second user (the rights others get are checked in the DACL read back), and it gives objects made with the default descriptor no owner, so there they are refused |
//! | other PID namespaces (containers sharing `/dev/shm`) | as much as processes of your own namespace | liveness is the kernel's byte lock, which means the same in every namespace (Linux); the pid fallback (macOS, FreeBSD) must not be shared across namespaces |
//! | a peer that truncates or scribbles the region | nothing | every header field is validated and bounds-checked; the mapping length comes from the validated header, never from the file's size; copies catch `SIGBUS` and report `Error::Truncated`; header garbage gives typed errors |
//!
//! **The guards' soundness contract.** `ReadGuard`, `WriteGuard` and `Frame` (and the typed
//! views over them) hand out `&[u8]` and `&mut [u8]`, which Rust assumes nobody else changes
//! while they live. That holds exactly as long as every process with write access to the region follows the lock, which is the contract of
//! [`Mmf`] ("Shared-memory contract"). It is the same contract memmap2
//! states for files (`MmapMut` is unsound if another process modifies the file) and the one
//! `shared_memory`, `iceoryx2` and Boost.Interprocess rely on: the guards stay safe functions, and
//! the contract is stated on them, rather than making every access `unsafe`. A process that
//! breaks it (writes without the lock) can make your process read bytes that change under a
//! shared borrow, which the optimiser may assume cannot happen; with untrusted peers use the copy
//! API (`read_at`, `read_to_vec`, `write_at`), which copies with the fault-catching routine and
//! never hands out a borrow of shared memory, and validate what you read. For a `Frame` the
//! only process with write access to the frames is the writer, but a reader that clears another
//! reader's pin makes the writer reuse that reader's slot while its `Frame` lives: with untrusted
//! readers, copy out of the frame and trust the copy only after [`Frame::verify`] passes.
//!
//! See [`Mmf`] for names, lifetime and the shared-memory contract, [`header`] for the byte
//! layout of the region, [`lock`] for the lock and how to bring your own (with a second lock,
//! [`WinMmfLock`], the `winmmf` crate's), and [`winmmf`] for that crate's headerless layout,
//! which `mmf` opens and creates.

#![deny(unsafe_code)]
#![warn(missing_docs)]
// Under loom only the lock and its model are built, and much of the rest is then unused.
#![cfg_attr(loom, allow(dead_code))]

// Under loom (`RUSTFLAGS="--cfg loom"`, the lock's model checking) only the lock and what it
// needs are compiled: the header and the segment hold real atomics in real mappings.
#[cfg(not(loom))]
#[allow(unsafe_code)]
pub mod channel;
mod error;
#[cfg(not(loom))]
#[allow(unsafe_code)]
pub mod header;
#[cfg(not(loom))]
#[allow(unsafe_code)]
pub mod inspect;
mod liveness;
#[allow(unsafe_code)]
pub mod lock;
mod name;
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod segment;
mod sync;
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod sys;
#[cfg(not(loom))]
mod trust;
#[cfg(not(loom))]
pub mod view;
#[cfg(not(loom))]
#[allow(unsafe_code)]
pub mod winmmf;

/// The `bytemuck` this crate's typed views are built on ([`view`]), for `Pod`/`Zeroable`
/// impls without a dependency of one's own.
#[cfg(not(loom))]
pub use bytemuck;

#[cfg(not(loom))]
pub use channel::{
    Frame, FrameInfo, FrameMeta, FrameReader, FrameReaderOptions, FrameSpec, FrameWriter,
    PendingFrame, ReaderStats,
};
pub use error::{Error, LockError, LockResult, Owner, PoisonError, Result};
pub use lock::{
    Acquired, Context, LockArea, NotAcquired, RawRwLock, SharedRwLock, Waiter, WinMmfLock,
};
pub use name::MAX_NAME_LEN;
#[cfg(not(loom))]
pub use segment::{
    Mmf, MmfOptions, ReadGuard, WriteGuard, DEFAULT_OPEN_TIMEOUT, DEFAULT_RECOVERY_INTERVAL,
};
#[cfg(not(loom))]
pub use sys::Namespace;
#[cfg(not(loom))]
pub use trust::TrustedOwners;
#[cfg(not(loom))]
pub use view::{View, ViewMut};
