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
//! | Linux | x86_64, i686 | POSIX shm (`/dev/shm`) | bounded spin, then shared futex on the lock word | until removed (creator removes on drop by default) | full suite, native and 32-bit |
//! | Windows | x86_64, i686 | pagefile-backed section | bounded spin, then a named semaphore per segment | until the last handle closes | full suite under wine (x86_64); i686 built |
//! | macOS, FreeBSD | x86_64 | POSIX shm | bounded spin, then 0.5 ms sleeps re-checking the word | until removed | compiled (`cargo check`) only |
//!
//! See [`Mmf`] for names, lifetime and the shared-memory contract, [`header`] for the byte
//! layout of the region, and [`lock`] for the lock and how to bring your own.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod error;
#[allow(unsafe_code)]
pub mod header;
#[allow(unsafe_code)]
pub mod lock;
mod name;
#[allow(unsafe_code)]
mod segment;
#[allow(unsafe_code)]
// TEMPORARY: process identity is used by the robust lock (issue 4) once it lands.
#[allow(dead_code, unused_imports)]
mod sys;

pub use error::{Error, Result};
pub use lock::{LockArea, RawRwLock, SharedRwLock, Waiter};
pub use name::MAX_NAME_LEN;
pub use segment::{Mmf, MmfOptions, ReadGuard, WriteGuard, DEFAULT_OPEN_TIMEOUT};
pub use sys::Namespace;
