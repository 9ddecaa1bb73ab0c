//! The headerless layout of the `winmmf` crate (0.6): a mapping that `winmmf` can open and
//! that `mmf` opens when `winmmf` made it.
//!
//! `winmmf` puts no header in its mappings: a [`WinMmfLock`] word at offset 0, the data right
//! after it. [`MmfOptions::winmmf_compatible`] builds a [`WinMmf`] in that layout:
//!
//! ```no_run
//! use mmf::{lock::WinMmfLock, MmfOptions};
//!
//! # fn main() -> mmf::Result<()> {
//! // Windows: `Local\sensor`, as winmmf's `MemoryMappedFile::new(size, "sensor", Namespace::LOCAL, ..)`.
//! let sensor = MmfOptions::new("sensor").lock::<WinMmfLock>().winmmf_compatible().create(1000)?;
//! assert_eq!(sensor.len(), 4092); // the page, less the lock word, as winmmf's `size()`
//! sensor.write_at(0, b"hello")?;
//! # Ok(()) }
//! ```
//!
//! # Layout (version: winmmf 0.6.2, `src/mmf.rs` and `src/states.rs`)
//!
//! | offset       | bytes | content                                                                |
//! |-------------:|------:|------------------------------------------------------------------------|
//! | 0            | 4     | the lock word, little-endian (every Windows target is): see [`WinMmfLock`] |
//! | 4            | `len` | data                                                                   |
//! | 4 + `len`    |       | end of the object: `4 + len` is the size asked for plus 4, rounded up to the page size |
//!
//! - **Name.** On Windows the section is `Local\<name>` (or `Global\<name>` with
//!   [`MmfOptions::namespace`]), which is what winmmf's `Namespace::LOCAL` / `GLOBAL` make of
//!   its name. `mmf`'s name rule still applies (1 to 200 of `A-Z a-z 0-9 . _ -`), and winmmf
//!   keeps names (namespace included) under 64 bytes, so share names that fit both. On Linux
//!   the object is `/dev/shm/<name>`: there is no winmmf there, and the layout is the
//!   contract.
//! - **Size.** winmmf maps the size asked for plus 4, rounded up to the page (4096 bytes),
//!   and reports all of it but the word as its `size()`; so does [`WinMmf::len`], on both
//!   sides. winmmf switches to large pages for 2 MiB and more when the process may lock
//!   memory (`SeLockMemoryPrivilege`), rounding to the large page; `mmf` never does here, so
//!   keep such mappings below 2 MiB or give winmmf `Some(false)` for large pages.
//! - **Initialisation.** winmmf's creator zeroes the data, stores `0xFF00_0000` in the word
//!   ("uninitialised") and then changes it to `0`. A new section or shared-memory object is
//!   zero-filled by the kernel, and `0` is that initialised, unlocked word, so `mmf`'s creator
//!   writes nothing: its object is ready the moment it exists, without winmmf's window in
//!   which a racing opener's lock is overwritten. An opener that finds the top byte `0xFF`
//!   waits (up to [`MmfOptions::open_timeout`]) for the creator to finish.
//!
//! # What it gives up, against an `mmf` segment
//!
//! A separate handle type rather than a mode of [`Mmf`](crate::Mmf), so that what the layout
//! cannot do is absent at compile time instead of an error at run time:
//!
//! - **No header, so no checks on open.** Nothing says that the object is a winmmf mapping
//!   (no magic), which layout version made it, or which lock it uses: any object under the
//!   name is taken as one. Its size comes from the object itself (Windows: the section; Unix:
//!   `fstat`, which a process with write access can change).
//! - **No recovery and no poison** (see [`WinMmfLock`]): a process that dies holding the
//!   lock wedges it until the mapping is recreated; waits then end only at their timeout.
//! - **No sleeping**: waiters spin and yield.
//! - **No write sequence**, so no [`Mmf::write_seq`](crate::Mmf::write_seq) or
//!   [`Mmf::wait_for_write`](crate::Mmf::wait_for_write), and no read-only handles: a reader
//!   takes the lock, which writes the word (winmmf's readers map read-write too).
//! - **Data aligned to 4 bytes only** (offset 4 of a page-aligned mapping), not to the page.
//! - **No frame channels** on this layout.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lock::winmmf::{self as word, is_initialised, Busy};
use crate::lock::WinMmfLock;
use crate::name;
use crate::segment::{check_size, fault_checked_copy, truncated};
use crate::sys::{self, Access, Namespace, OsSegment};
use crate::MmfOptions;

/// Bytes before the data: the lock word.
pub const LOCK_WORD_LEN: usize = 4;

impl MmfOptions<WinMmfLock> {
    /// The headerless layout of the `winmmf` crate (0.6) instead of an `mmf` header: see
    /// [`crate::winmmf`]. Only with [`WinMmfLock`], the lock that layout holds. Of the
    /// options, the name, namespace, mode, trusted owners, prefault, persist, open timeout
    /// and lock timeout apply; large pages are refused.
    pub fn winmmf_compatible(self) -> WinMmfOptions {
        WinMmfOptions { options: self }
    }
}

/// Builder of a [`WinMmf`], from [`MmfOptions::winmmf_compatible`].
#[derive(Debug, Clone)]
pub struct WinMmfOptions {
    options: MmfOptions<WinMmfLock>,
}

/// Object length for `size` data bytes, as winmmf 0.6 sizes it: `size + 4` rounded up to
/// the page.
fn object_len(size: usize, page: usize) -> Result<usize> {
    if size == 0 {
        return Err(Error::InvalidSize {
            size: 0,
            reason: "a segment needs at least one data byte",
        });
    }
    size.checked_add(LOCK_WORD_LEN)
        .and_then(|len| len.checked_next_multiple_of(page))
        .filter(|&len| len <= isize::MAX as usize)
        .ok_or(Error::InvalidSize {
            size: size as u64,
            reason: "it is larger than this platform can map",
        })
}

impl WinMmfOptions {
    /// Creates the mapping with at least `size` data bytes (`size + 4` rounded up to the page:
    /// [`WinMmf::len`] is all of it but the lock word), zero-filled and unlocked.
    /// [`Error::AlreadyExists`] if the name is taken.
    pub fn create(&self, size: usize) -> Result<WinMmf> {
        let o = &self.options;
        name::validate(&o.name)?;
        refuse_large_pages(o)?;
        let total = object_len(size, sys::page_size())?;
        let segment = sys::Segment::create(&o.name, total, &o.os)?;
        // Nothing to initialise: the kernel zero-fills the object, and a zero word is
        // winmmf's initialised, unlocked state (see the module docs).
        Ok(WinMmf::new(o, segment, total, !o.persist))
    }

    /// Opens an existing mapping read-write; its size comes from the object. Waits up to the
    /// open timeout for a winmmf creator still initialising the word ([`Error::NotReady`]).
    pub fn open(&self) -> Result<WinMmf> {
        let o = &self.options;
        name::validate(&o.name)?;
        refuse_large_pages(o)?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        let mut opened = None;
        loop {
            if opened.is_none() {
                opened = sys::Segment::open(&o.name, Access::ReadWrite, &o.os)?
                    .map(|segment| open_whole(o, segment))
                    .transpose()?;
            }
            if let Some(mmf) = &opened {
                // Relaxed: a look; every acquisition reads the word again with Acquire.
                if is_initialised(mmf.word().load(Relaxed)) {
                    return Ok(opened.expect("checked Some above"));
                }
            }
            let waited = start.elapsed();
            if waited >= o.open_timeout {
                return Err(Error::NotReady {
                    name: o.name.clone(),
                    waited,
                });
            }
            std::thread::sleep(pause.min(o.open_timeout - waited));
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
}

fn refuse_large_pages(o: &MmfOptions<WinMmfLock>) -> Result<()> {
    if o.os.large_pages {
        return Err(Error::Unsupported {
            what: "large pages in the winmmf-compatible layout (its size rounding is the small page's)",
        });
    }
    Ok(())
}

/// Maps the whole object that `segment` opened (which maps only its first page or so).
fn open_whole(o: &MmfOptions<WinMmfLock>, mut segment: sys::Segment) -> Result<WinMmf> {
    let found = segment.object_len()?;
    let total = usize::try_from(found)
        .ok()
        .filter(|&len| len > LOCK_WORD_LEN && len <= isize::MAX as usize)
        .ok_or_else(|| Error::Corrupt {
            reason: format!(
                "{:?} holds {found} bytes, not a winmmf lock word and at least one data byte",
                o.name
            ),
        })?;
    segment.remap(total, Access::ReadWrite, &o.os, &o.name)?;
    // The object may have shrunk since it was measured.
    check_size(&o.name, &segment, total)?;
    Ok(WinMmf::new(o, segment, total, false))
}

/// A mapping in the headerless layout of the `winmmf` crate: a [`WinMmfLock`] word at offset
/// 0, the data after it (see [`crate::winmmf`] for the layout and what it gives up).
///
/// Access the data under the lock by copying ([`read_at`](Self::read_at),
/// [`write_at`](Self::write_at)) or in place through guards ([`read`](Self::read),
/// [`write`](Self::write) and their `try_`/`_timeout` forms), as with [`Mmf`](crate::Mmf).
/// The same shared-memory contract holds: other processes can change the data at any moment
/// unless they respect the lock, so treat what you read as untrusted.
pub struct WinMmf {
    // Declared (so dropped) before `segment`: the SIGBUS handler must forget the mapping
    // before it is unmapped.
    fault: sys::fault::Registration,
    segment: sys::Segment,
    name: String,
    namespace: Namespace,
    /// Object length less the lock word.
    data_len: usize,
    remove_on_drop: bool,
    lock_timeout: Option<Duration>,
}

impl WinMmf {
    fn new(
        o: &MmfOptions<WinMmfLock>,
        segment: sys::Segment,
        total: usize,
        remove_on_drop: bool,
    ) -> Self {
        WinMmf {
            fault: sys::fault::Registration::new(segment.as_ptr(), segment.len()),
            segment,
            name: o.name.clone(),
            namespace: o.os.namespace,
            data_len: total - LOCK_WORD_LEN,
            remove_on_drop,
            lock_timeout: o.lock_timeout,
        }
    }

    /// Length of the data: the object less the lock word (winmmf's `size()`).
    pub fn len(&self) -> usize {
        self.data_len
    }

    /// Always `false`: a mapping has at least one data byte.
    pub fn is_empty(&self) -> bool {
        self.data_len == 0
    }

    /// The mapping's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lock word, at offset 0.
    #[inline]
    fn word(&self) -> &AtomicU32 {
        // SAFETY: the mapping is page aligned (so 4-byte aligned), longer than 4 bytes (checked
        // at create and open) and lives as long as `self`; the word is only ever accessed
        // atomically, by us and by winmmf.
        unsafe { &*self.segment.as_ptr().cast::<AtomicU32>() }
    }

    #[inline]
    fn data_ptr(&self) -> *mut u8 {
        // SAFETY: LOCK_WORD_LEN + data_len == the mapping's length, so this stays inside it.
        unsafe { self.segment.as_ptr().add(LOCK_WORD_LEN) }
    }

    /// Takes a shared lock, waiting up to the lock timeout (forever by default).
    pub fn read(&self) -> Result<WinMmfReadGuard<'_>> {
        self.lock(self.deadline(), Kind::Shared)?;
        Ok(WinMmfReadGuard { mmf: self })
    }

    /// Takes a shared lock if that is possible now, or [`Error::WouldBlock`].
    pub fn try_read(&self) -> Result<WinMmfReadGuard<'_>> {
        self.try_lock(Kind::Shared)?;
        Ok(WinMmfReadGuard { mmf: self })
    }

    /// Takes a shared lock, waiting at most `timeout` ([`Error::Timeout`] after that).
    pub fn read_timeout(&self, timeout: Duration) -> Result<WinMmfReadGuard<'_>> {
        self.lock(Some(Instant::now() + timeout), Kind::Shared)?;
        Ok(WinMmfReadGuard { mmf: self })
    }

    /// Takes the exclusive lock, waiting up to the lock timeout (forever by default).
    pub fn write(&self) -> Result<WinMmfWriteGuard<'_>> {
        self.lock(self.deadline(), Kind::Exclusive)?;
        Ok(WinMmfWriteGuard { mmf: self })
    }

    /// Takes the exclusive lock if that is possible now, or [`Error::WouldBlock`].
    pub fn try_write(&self) -> Result<WinMmfWriteGuard<'_>> {
        self.try_lock(Kind::Exclusive)?;
        Ok(WinMmfWriteGuard { mmf: self })
    }

    /// Takes the exclusive lock, waiting at most `timeout` ([`Error::Timeout`] after that).
    pub fn write_timeout(&self, timeout: Duration) -> Result<WinMmfWriteGuard<'_>> {
        self.lock(Some(Instant::now() + timeout), Kind::Exclusive)?;
        Ok(WinMmfWriteGuard { mmf: self })
    }

    /// Copies `buf.len()` bytes from the data at `offset` into `buf`, under a shared lock.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        let guard = self.read()?;
        // SAFETY: check_range put offset..offset+len inside the data.
        let src = unsafe { self.data_ptr().add(offset) };
        // SAFETY: `src` is in the data, read under the shared lock `guard` holds; `buf` is
        // the caller's distinct buffer of that length.
        let copied = unsafe { self.copy(buf.as_mut_ptr(), src, buf.len()) };
        drop(guard);
        copied
    }

    /// Reads `len` bytes at `offset` into a new `Vec` (see [`read_at`](Self::read_at)).
    pub fn read_to_vec(&self, offset: usize, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.read_at(offset, &mut buf)?;
        Ok(buf)
    }

    /// Copies `buf` into the data at `offset`, under the exclusive lock.
    pub fn write_at(&self, offset: usize, buf: &[u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        let guard = self.write()?;
        // SAFETY: check_range put offset..offset+len inside the data.
        let dst = unsafe { self.data_ptr().add(offset) };
        // SAFETY: `dst` is in the data, written under the exclusive lock `guard` holds; `buf`
        // is the caller's distinct buffer of that length.
        let copied = unsafe { self.copy(dst, buf.as_ptr(), buf.len()) };
        drop(guard);
        copied
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.data_len => Ok(()),
            _ => Err(Error::OutOfBounds {
                offset: offset as u64,
                len: len as u64,
                data_len: self.data_len as u64,
            }),
        }
    }

    /// Copies through the fault-catching routine, so that an object shrunk by another
    /// process is [`Error::Truncated`] rather than a fatal `SIGBUS` (as `Mmf` does).
    ///
    /// # Safety
    /// One of `dst`/`src` lies in the data, the other in a caller's buffer; both are valid
    /// for `len` bytes (apart from pages truncated away) and do not overlap.
    unsafe fn copy(&self, dst: *mut u8, src: *const u8, len: usize) -> Result<()> {
        let needed = self.segment.len();
        // SAFETY: guaranteed by the caller; our mapping is registered as `self.fault`.
        unsafe {
            fault_checked_copy(
                &self.name,
                &self.segment,
                &self.fault,
                needed,
                dst,
                src,
                len,
            )
        }
    }

    #[inline]
    fn deadline(&self) -> Option<Instant> {
        self.lock_timeout.map(|t| Instant::now() + t)
    }

    fn try_lock(&self, kind: Kind) -> Result<()> {
        self.check_first_page()?;
        kind.attempt(self.word()).map_err(|_| Error::WouldBlock)?;
        self.check_first_page_after_lock(kind)
    }

    fn lock(&self, deadline: Option<Instant>, kind: Kind) -> Result<()> {
        self.check_first_page()?;
        let start = Instant::now();
        word::spin_until(deadline, || kind.attempt(self.word())).map_err(|_| Error::Timeout {
            waited: start.elapsed(),
        })?;
        self.check_first_page_after_lock(kind)
    }

    /// [`Error::Truncated`] once the first page (the lock word's) has vanished: the word is
    /// then a private zero page (see `sys::fault`), and locks taken on it exclude nobody.
    fn check_first_page(&self) -> Result<()> {
        if self.fault.header_lost() {
            return Err(truncated(&self.name, &self.segment, self.segment.len()));
        }
        Ok(())
    }

    /// As [`check_first_page`](Self::check_first_page), just after taking a `kind` lock,
    /// which is released again if the page was lost meanwhile.
    fn check_first_page_after_lock(&self, kind: Kind) -> Result<()> {
        if let Err(lost) = self.check_first_page() {
            kind.release(self.word());
            return Err(lost);
        }
        Ok(())
    }
}

/// Which lock a guard holds.
#[derive(Clone, Copy)]
enum Kind {
    Shared,
    Exclusive,
}

impl Kind {
    #[inline]
    fn attempt(self, lock: &AtomicU32) -> std::result::Result<(), Busy> {
        match self {
            Kind::Shared => word::try_read(lock),
            Kind::Exclusive => word::try_write(lock),
        }
    }

    #[inline]
    fn release(self, lock: &AtomicU32) {
        // `false` only for a word another process corrupted: nothing of ours to release.
        let _ = match self {
            Kind::Shared => word::unlock_read(lock),
            Kind::Exclusive => word::unlock_write(lock),
        };
    }
}

impl std::fmt::Debug for WinMmf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WinMmf")
            .field("name", &self.name)
            .field("len", &self.data_len)
            .field("remove_on_drop", &self.remove_on_drop)
            .finish_non_exhaustive()
    }
}

impl Drop for WinMmf {
    fn drop(&mut self) {
        if self.remove_on_drop {
            // Ignored: someone else may have removed the name already, and a drop cannot
            // report anything.
            let _ = self.segment.remove_if_same(&self.name, self.namespace);
        }
    }
}

/// A shared lock on a [`WinMmf`]'s data; derefs to `&[u8]`. Released on drop.
#[must_use = "if unused the lock will immediately unlock"]
pub struct WinMmfReadGuard<'a> {
    mmf: &'a WinMmf,
}

impl Deref for WinMmfReadGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the data lies inside the live mapping and the shared lock excludes every
        // writer that follows the lock (see the contract on WinMmf).
        unsafe { std::slice::from_raw_parts(self.mmf.data_ptr(), self.mmf.data_len) }
    }
}

impl Drop for WinMmfReadGuard<'_> {
    fn drop(&mut self) {
        Kind::Shared.release(self.mmf.word());
    }
}

/// The exclusive lock on a [`WinMmf`]'s data; derefs to `&mut [u8]`. Released on drop.
#[must_use = "if unused the lock will immediately unlock"]
pub struct WinMmfWriteGuard<'a> {
    mmf: &'a WinMmf,
}

impl Deref for WinMmfWriteGuard<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: as for WinMmfReadGuard; the exclusive lock is held.
        unsafe { std::slice::from_raw_parts(self.mmf.data_ptr(), self.mmf.data_len) }
    }
}

impl DerefMut for WinMmfWriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: the data is inside the live read-write mapping; the exclusive lock excludes
        // every other guard in every process that follows it, and `&mut self` excludes other
        // borrows of this guard.
        unsafe { std::slice::from_raw_parts_mut(self.mmf.data_ptr(), self.mmf.data_len) }
    }
}

impl Drop for WinMmfWriteGuard<'_> {
    fn drop(&mut self) {
        Kind::Exclusive.release(self.mmf.word());
    }
}
