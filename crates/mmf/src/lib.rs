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
//! # Platforms
//!
//! | OS | architectures | backing object | how a blocked process waits | lifetime | tested how |
//! |----|---------------|----------------|-----------------------------|----------|------------|
//! | Linux | x86_64, i686, aarch64 | POSIX shm (`/dev/shm`) | bounded spin, then shared futex on the lock word | until removed (creator removes on drop by default) | x86_64 and i686: unit tests, every integration suite but `windows`, doc tests; x86_64 also Miri and loom on the lock and header; aarch64 under qemu-user (children started through the emulator): unit tests (but the 4 lock wake-up tests that find a sleeping thread by its system call in `/proc`, where qemu shows its own), every integration suite but `windows`, `truncation` and `scribble`, doc tests (qemu on x86_64 keeps x86's memory order, so this checks the Arm build, not Arm's weaker ordering; on aarch64 a copy that races with a truncation is not caught and raises `SIGBUS`) |
//! | Windows | x86_64, i686 | pagefile-backed section (`Local\` or `Global\` name) | bounded spin, then a named semaphore per segment (`<name>#mmf-wake`), signalled only when the header's sleeper count is non-zero; each kernel wait capped at 1 s | until the last handle closes | x86_64 under wine 8: unit tests, the `channel`, `multiprocess`, `robust`, `segment_api` and `windows` suites, doc tests (not `hostile`, `linux_shm`, `scribble`, `truncation`: they forge or truncate `/dev/shm` objects); i686 built, not run |
//! | macOS, FreeBSD | x86_64 | POSIX shm | bounded spin, then 0.5 ms sleeps re-checking the word | until removed | compiled (`cargo check`) only |
//!
//! See [`Mmf`] for names, lifetime and the shared-memory contract, [`header`] for the byte
//! layout of the region, and [`lock`] for the lock and how to bring your own.

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
pub use channel::{Frame, FrameInfo, FrameMeta, FrameReader, FrameSpec, FrameWriter};
pub use error::{Error, LockError, LockResult, PoisonError, Result};
pub use lock::{Acquired, Context, LockArea, NotAcquired, RawRwLock, SharedRwLock, Waiter};
pub use name::MAX_NAME_LEN;
#[cfg(not(loom))]
pub use segment::{
    Mmf, MmfOptions, ReadGuard, WriteGuard, DEFAULT_OPEN_TIMEOUT, DEFAULT_RECOVERY_INTERVAL,
};
#[cfg(not(loom))]
pub use sys::Namespace;
#[cfg(not(loom))]
pub use trust::TrustedOwners;
