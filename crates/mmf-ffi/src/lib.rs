//! The C ABI of `mmf`: named shared memory segments and frame channels behind opaque handles.
//!
//! Conventions, for every function:
//! - The return value is an `int32_t` status: `MMF_OK` (0) or a negative `MMF_ERR_*` code that
//!   names the error class. Results come back through out-pointers, which are written only on
//!   `MMF_OK`.
//! - After a failure, `mmf_last_error_message()` on the same thread says what went wrong and
//!   what to do, in the words of the Rust error.
//! - A null handle, null out-pointer or null name is `MMF_ERR_INVALID_ARGUMENT`, never a crash;
//!   so is a pointer to a handle of another kind. A handle that was already closed is the
//!   caller's bug (use after free): it cannot be detected and is undefined behaviour.
//! - A Rust panic never unwinds into C: it is caught and reported as `MMF_ERR_PANIC`.
//! - Handles are not thread-safe: use one handle from one thread at a time (the segment and
//!   frame channel themselves are safe to share between processes and threads, through
//!   separate handles).
//!
//! The header `include/mmf.h` is generated from this file by cbindgen (`cargo xtask test
//! --only ffi` checks that it is current).

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::time::Duration;

use mmf::{
    Error, Frame, FrameMeta, FrameReader, FrameSpec, FrameWriter, LockError, Mmf, PendingFrame,
    ReadGuard, WriteGuard,
};

/// Success.
pub const MMF_OK: i32 = 0;
/// A null or foreign pointer, a name that is not UTF-8 or breaks the naming rule, a size or an
/// offset that cannot be used.
pub const MMF_ERR_INVALID_ARGUMENT: i32 = -1;
/// No segment or frame channel of this name exists.
pub const MMF_ERR_NOT_FOUND: i32 = -2;
/// A segment or frame channel of this name exists already.
pub const MMF_ERR_ALREADY_EXISTS: i32 = -3;
/// A timed wait ran out.
pub const MMF_ERR_TIMEOUT: i32 = -4;
/// The operation would have to wait; for `try_next` and `latest`: no new frame yet.
pub const MMF_ERR_WOULD_BLOCK: i32 = -5;
/// A process died holding the segment's write lock; repair the data and clear the poison.
pub const MMF_ERR_POISONED: i32 = -6;
/// The frame channel's writer is gone.
pub const MMF_ERR_WRITER_GONE: i32 = -7;
/// A frame is longer than the channel's maximum frame length.
pub const MMF_ERR_TOO_LARGE: i32 = -8;
/// Any other failure (permissions, OS errors, corrupt or foreign segments ...).
pub const MMF_ERR_OTHER: i32 = -9;
/// A bug in mmf: a Rust panic was caught at the boundary. The handle may be unusable.
pub const MMF_ERR_PANIC: i32 = -10;

/// Pass as `timeout_ms` to any function that waits (`mmf_segment_wait_for_write`, the lock
/// calls, `mmf_frame_reader_wait_next`, `mmf_frame_reader_open_wait`) to wait without a time
/// limit.
pub const MMF_WAIT_FOREVER: u32 = u32::MAX;

/// A `timeout_ms` argument for the frame calls, whose Rust side takes a `Duration` and treats
/// one too long for the clock as no limit.
fn wait_arg(timeout_ms: u32) -> Duration {
    if timeout_ms == MMF_WAIT_FOREVER {
        Duration::MAX
    } else {
        Duration::from_millis(timeout_ms.into())
    }
}

/// The version of this ABI: the functions, their arguments and the structs' layouts. Raised
/// with every change a program built against an older header could misread; compare it with
/// `mmf_abi_version()` to catch a mismatched library at start-up.
pub const MMF_ABI_VERSION: u32 = 1;

/// The ABI version of the library loaded (`MMF_ABI_VERSION` when it was built). A program
/// should refuse to go on when it differs from the `MMF_ABI_VERSION` it was compiled with.
#[no_mangle]
pub extern "C" fn mmf_abi_version() -> u32 {
    MMF_ABI_VERSION
}

thread_local! {
    /// The message of the last failure on this thread; `mmf_last_error_message` lends it out.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// A failed call: the status to return and the message to keep for the thread.
struct Failure {
    status: i32,
    message: String,
}

impl Failure {
    fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            status: MMF_ERR_INVALID_ARGUMENT,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            status: status_of(&error),
            message: error.to_string(),
        }
    }
}

/// The error class of a Rust error, as C sees it.
fn status_of(error: &Error) -> i32 {
    match error {
        Error::InvalidName { .. } | Error::InvalidSize { .. } | Error::OutOfBounds { .. } => {
            MMF_ERR_INVALID_ARGUMENT
        }
        Error::NotFound { .. } => MMF_ERR_NOT_FOUND,
        Error::AlreadyExists { .. } => MMF_ERR_ALREADY_EXISTS,
        Error::Timeout { .. } => MMF_ERR_TIMEOUT,
        Error::WouldBlock => MMF_ERR_WOULD_BLOCK,
        Error::Poisoned => MMF_ERR_POISONED,
        Error::WriterGone { .. } => MMF_ERR_WRITER_GONE,
        Error::FrameTooLarge { .. } => MMF_ERR_TOO_LARGE,
        _ => MMF_ERR_OTHER,
    }
}

fn set_last_error(message: &str) {
    // An interior NUL would cut the C string short; a message is worth more than fidelity.
    let bytes: Vec<u8> = message.bytes().filter(|&b| b != 0).collect();
    let message = CString::new(bytes).unwrap_or_default();
    // `try_with`: during thread teardown the slot may be gone; losing the message then is
    // better than a panic, which cannot unwind out of an `extern "C"` function.
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = message);
}

/// Runs one function body: maps its failure to a status and the thread's message, and keeps
/// a panic from unwinding into C (which would be undefined behaviour).
fn call(body: impl FnOnce() -> Result<(), Failure>) -> i32 {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => MMF_OK,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            set_last_error(&format!(
                "internal error in mmf (a bug; please report): {what}"
            ));
            MMF_ERR_PANIC
        }
    }
}

/// The message of the last failed call on this thread, as a NUL-terminated UTF-8 string; ""
/// if no call has failed on this thread yet. Owned by the library: valid until the next
/// failing call on this thread. Never null.
#[no_mangle]
pub extern "C" fn mmf_last_error_message() -> *const c_char {
    // The CString lives in the thread-local until the next failure replaces it, which the
    // documentation tells the caller. During thread teardown the slot may be gone: a static
    // empty string then, since a panic cannot unwind out of an `extern "C"` function.
    LAST_ERROR
        .try_with(|last| last.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// Reads a C string argument as a segment or channel name.
///
/// # Safety
/// `name` is null or points to a NUL-terminated string that stays valid during the call.
unsafe fn name_arg<'a>(name: *const c_char) -> Result<&'a str, Failure> {
    if name.is_null() {
        return Err(Failure::invalid("name is null"));
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string valid for the call.
    let name = unsafe { CStr::from_ptr(name) };
    name.to_str()
        .map_err(|_| Failure::invalid("name is not valid UTF-8"))
}

/// Writes a result through an out-pointer, after checking it for null.
///
/// # Safety
/// `out` is null or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, value: T) -> Result<(), Failure> {
    let Some(out) = NonNull::new(out) else {
        return Err(Failure::invalid("out-pointer is null"));
    };
    // SAFETY: non-null, and the caller promises it is valid for a write of T.
    unsafe { out.as_ptr().write(value) };
    Ok(())
}

/// Writes a result through an out-pointer the caller may leave null if not interested.
///
/// # Safety
/// `out` is null or valid for a write of `T`.
unsafe fn put_optional<T>(out: *mut T, value: T) -> Result<(), Failure> {
    if out.is_null() {
        return Ok(());
    }
    // SAFETY: non-null, and valid for a write per the caller.
    unsafe { put(out, value) }
}

/// Rejects a null out-pointer before any work is done, so that a created segment or channel
/// is not leaked behind a late failure.
fn need_out<T>(out: *mut T) -> Result<(), Failure> {
    if out.is_null() {
        Err(Failure::invalid("out-pointer is null"))
    } else {
        Ok(())
    }
}

/// A byte slice from C: a null pointer is allowed only with length 0.
///
/// # Safety
/// `data` is null or valid for reads of `len` bytes during the call.
unsafe fn bytes_arg<'a>(data: *const u8, len: usize) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(Failure::invalid("data is null but len is not 0"));
    }
    // SAFETY: non-null, and the caller promises `len` readable bytes for the call.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// As [`bytes_arg`], writable.
///
/// # Safety
/// `data` is null or valid for writes of `len` bytes during the call, and not aliased.
unsafe fn bytes_mut_arg<'a>(data: *mut u8, len: usize) -> Result<&'a mut [u8], Failure> {
    if len == 0 {
        return Ok(&mut []);
    }
    if data.is_null() {
        return Err(Failure::invalid("buf is null but len is not 0"));
    }
    // SAFETY: non-null, and the caller promises `len` writable, unaliased bytes for the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(data, len) })
}

/// Tags at the start of every handle: they turn a handle of the wrong kind (or a stray
/// pointer to live memory) into `MMF_ERR_INVALID_ARGUMENT` instead of type confusion.
const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"mmfSEGMT");
const WRITER_MAGIC: u64 = u64::from_le_bytes(*b"mmfFWRTR");
const READER_MAGIC: u64 = u64::from_le_bytes(*b"mmfFRDER");

/// Implemented by the handle types, to check and borrow a handle from C.
trait Handle {
    const MAGIC: u64;
    const KIND: &'static str;
    fn magic(&self) -> u64;
}

/// Borrows a handle.
///
/// # Safety
/// `handle` is null or a live handle from this library (of any kind), not in use by another
/// thread.
unsafe fn handle<'a, H: Handle>(handle: *mut H) -> Result<&'a mut H, Failure> {
    let Some(mut handle) = NonNull::new(handle) else {
        return Err(Failure::invalid(format!("{} handle is null", H::KIND)));
    };
    // SAFETY: every handle kind starts with its `u64` magic (repr(C)), and the caller promises
    // a live handle of ours, so the first 8 bytes are readable whichever kind it is.
    let magic = unsafe { handle.cast::<u64>().as_ptr().read() };
    if magic != H::MAGIC {
        return Err(Failure::invalid(format!(
            "not a {} handle (a handle of another kind?)",
            H::KIND
        )));
    }
    // SAFETY: the magic says it is an `H` we boxed, live and unshared per the caller.
    Ok(unsafe { handle.as_mut() })
}

/// Frees a handle: null is a no-op, as with `free`.
///
/// # Safety
/// As for [`handle`]; the handle is not used again.
unsafe fn close<H: Handle>(ptr: *mut H) -> Result<(), Failure> {
    if ptr.is_null() {
        return Ok(());
    }
    // SAFETY: as promised by the caller.
    let h = unsafe { handle(ptr) }?;
    debug_assert_eq!(h.magic(), H::MAGIC);
    // SAFETY: the handle came from `Box::into_raw` (its magic says so), and the caller gives
    // it up; clearing nothing afterwards, since the memory is freed.
    drop(unsafe { Box::from_raw(ptr) });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Segments
// ---------------------------------------------------------------------------------------------

/// A lock a segment handle holds across calls. The guards are never read: they are held for
/// their `Drop`, which unlocks.
#[allow(dead_code)]
enum Held {
    /// From `mmf_segment_lock_write`.
    Write(WriteGuard<'static>),
    /// From `mmf_segment_lock_read`.
    Read(ReadGuard<'static>),
}

/// An open segment (opaque), with the lock while `mmf_segment_lock_write` or
/// `mmf_segment_lock_read` holds it. Free with `mmf_segment_close`.
#[repr(C)]
pub struct MmfSegment {
    magic: u64,
    /// The lock held across calls, borrowing `*mmf`. Its `'static` is a lie this type
    /// keeps honest: the guard is dropped before `mmf` is freed (see `Drop`).
    guard: Option<Held>,
    /// From `Box::into_raw`, so that borrowing the handle mutably never claims unique access
    /// to the segment the guard borrows; freed in `Drop`.
    mmf: NonNull<Mmf>,
}

impl MmfSegment {
    fn mmf(&self) -> &Mmf {
        // SAFETY: `mmf` came from `Box::into_raw` and is freed only in `Drop`, and it is only
        // ever borrowed shared (here and by the guard).
        unsafe { self.mmf.as_ref() }
    }

    /// Refuses calls that take the lock themselves while this handle holds it: they would
    /// wait for it forever (a writer behind our read lock, or anything behind our write lock).
    fn unlocked(&self) -> Result<&Mmf, Failure> {
        match self.guard {
            None => Ok(self.mmf()),
            Some(Held::Write(_)) => Err(Failure::invalid(
                "this handle holds the write lock (mmf_segment_lock_write): \
                 call mmf_segment_unlock_write first",
            )),
            Some(Held::Read(_)) => Err(Failure::invalid(
                "this handle holds the read lock (mmf_segment_lock_read): \
                 call mmf_segment_unlock_read first",
            )),
        }
    }

    /// The segment for a lock taken now and kept in `self.guard` until unlock or close.
    fn for_guard(&mut self) -> Result<&'static Mmf, Failure> {
        self.unlocked()?;
        // SAFETY: `mmf` is live until the handle drops, and the guard borrowing it for
        // "'static" is stored in `self.guard`, which `Drop` clears before freeing it.
        Ok(unsafe { &*self.mmf.as_ptr() })
    }
}

impl Drop for MmfSegment {
    fn drop(&mut self) {
        // The guard borrows the segment: unlock before the segment goes.
        self.guard = None;
        // SAFETY: `mmf` came from `Box::into_raw` in `boxed_segment`, and no borrow of it
        // outlives this point (the guard was dropped above).
        drop(unsafe { Box::from_raw(self.mmf.as_ptr()) });
    }
}

impl Handle for MmfSegment {
    const MAGIC: u64 = SEGMENT_MAGIC;
    const KIND: &'static str = "segment";
    fn magic(&self) -> u64 {
        self.magic
    }
}

fn boxed_segment(mmf: Mmf) -> *mut MmfSegment {
    Box::into_raw(Box::new(MmfSegment {
        magic: SEGMENT_MAGIC,
        guard: None,
        mmf: NonNull::from(Box::leak(Box::new(mmf))),
    }))
}

/// Creates the segment `name` with `size` data bytes (zeroed) and stores its handle in `*out`.
/// `MMF_ERR_ALREADY_EXISTS` if the name is taken. The creator owns the name: closing its
/// handle removes it (on Linux; on Windows the segment lives as long as any handle), so
/// `mmf_segment_remove` is for names a crashed creator left behind.
///
/// # Safety
/// `name` is null or a NUL-terminated string; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_create(
    name: *const c_char,
    size: usize,
    out: *mut *mut MmfSegment,
) -> i32 {
    call(|| {
        need_out(out)?;
        // SAFETY: per this function's contract.
        let name = unsafe { name_arg(name) }?;
        let seg = Mmf::create(name, size)?;
        // SAFETY: `out` checked non-null above; writable per this function's contract.
        unsafe { put(out, boxed_segment(seg)) }
    })
}

/// Opens the existing segment `name` for reading and writing; stores its handle in `*out`.
///
/// # Safety
/// `name` is null or a NUL-terminated string; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_open(name: *const c_char, out: *mut *mut MmfSegment) -> i32 {
    call(|| {
        need_out(out)?;
        // SAFETY: per this function's contract.
        let name = unsafe { name_arg(name) }?;
        let seg = Mmf::open(name)?;
        // SAFETY: `out` checked non-null above; writable per this function's contract.
        unsafe { put(out, boxed_segment(seg)) }
    })
}

/// Opens the existing segment `name` for reading only; writes through the handle fail.
///
/// # Safety
/// `name` is null or a NUL-terminated string; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_open_read_only(
    name: *const c_char,
    out: *mut *mut MmfSegment,
) -> i32 {
    call(|| {
        need_out(out)?;
        // SAFETY: per this function's contract.
        let name = unsafe { name_arg(name) }?;
        let seg = Mmf::open_read_only(name)?;
        // SAFETY: `out` checked non-null above; writable per this function's contract.
        unsafe { put(out, boxed_segment(seg)) }
    })
}

/// Removes the name `name`; handles that are open keep their mapping.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_remove(name: *const c_char) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let name = unsafe { name_arg(name) }?;
        Ok(Mmf::remove(name)?)
    })
}

/// Closes a segment handle; null is a no-op. The handle must not be used afterwards.
///
/// # Safety
/// `seg` is null or a live handle from this library.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_close(seg: *mut MmfSegment) -> i32 {
    // SAFETY: per this function's contract.
    call(|| unsafe { close(seg) })
}

/// Stores the segment's data length in bytes in `*out_len`.
///
/// # Safety
/// `seg` is null or a live handle; `out_len` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_len(seg: *mut MmfSegment, out_len: *mut usize) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let seg = unsafe { handle(seg) }?;
        // SAFETY: per this function's contract.
        unsafe { put(out_len, seg.mmf().len()) }
    })
}

/// Copies `len` bytes at `offset` of the data region into `buf`, under the read lock.
///
/// # Safety
/// `seg` is null or a live handle; `buf` is null (with `len` 0) or writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_read_at(
    seg: *mut MmfSegment,
    offset: usize,
    buf: *mut u8,
    len: usize,
) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let seg = unsafe { handle(seg) }?;
        // SAFETY: per this function's contract.
        let buf = unsafe { bytes_mut_arg(buf, len) }?;
        Ok(seg.unlocked()?.read_at(offset, buf)?)
    })
}

/// Copies `len` bytes from `data` to `offset` of the data region, under the write lock.
///
/// # Safety
/// `seg` is null or a live handle; `data` is null (with `len` 0) or readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_write_at(
    seg: *mut MmfSegment,
    offset: usize,
    data: *const u8,
    len: usize,
) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let seg = unsafe { handle(seg) }?;
        // SAFETY: per this function's contract.
        let data = unsafe { bytes_arg(data, len) }?;
        Ok(seg.unlocked()?.write_at(offset, data)?)
    })
}

/// Stores the segment's write sequence number (bumped by every write lock release) in
/// `*out_seq`.
///
/// # Safety
/// `seg` is null or a live handle; `out_seq` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_write_seq(seg: *mut MmfSegment, out_seq: *mut u32) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let seg = unsafe { handle(seg) }?;
        // SAFETY: per this function's contract.
        unsafe { put(out_seq, seg.mmf().write_seq()) }
    })
}

/// Waits until the write sequence number differs from `seen`, at most `timeout_ms`
/// milliseconds (`MMF_WAIT_FOREVER`: no limit), and stores the new one in `*out_seq`.
/// `MMF_ERR_TIMEOUT` if it did not change in time.
///
/// # Safety
/// `seg` is null or a live handle; `out_seq` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_wait_for_write(
    seg: *mut MmfSegment,
    seen: u32,
    timeout_ms: u32,
    out_seq: *mut u32,
) -> i32 {
    call(|| {
        need_out(out_seq)?;
        // SAFETY: per this function's contract.
        let seg = unsafe { handle(seg) }?;
        let timeout =
            (timeout_ms != MMF_WAIT_FOREVER).then(|| Duration::from_millis(timeout_ms.into()));
        let seq = seg.unlocked()?.wait_for_write(seen, timeout)?;
        // SAFETY: per this function's contract.
        unsafe { put(out_seq, seq) }
    })
}

/// Stores in `*out` whether a process died holding the write lock.
///
/// # Safety
/// `seg` is null or a live handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_is_poisoned(seg: *mut MmfSegment, out: *mut bool) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let seg = unsafe { handle(seg) }?;
        // SAFETY: per this function's contract.
        unsafe { put(out, seg.mmf().is_poisoned()) }
    })
}

/// Declares the data repaired after a poisoning, so that reads and writes succeed again.
///
/// # Safety
/// `seg` is null or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_clear_poison(seg: *mut MmfSegment) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let seg = unsafe { handle(seg) }?;
        Ok(seg.mmf().clear_poison()?)
    })
}

/// Takes the segment's write lock, waiting at most `timeout_ms` milliseconds
/// (`MMF_WAIT_FOREVER`: no limit), and keeps it in the handle until
/// `mmf_segment_unlock_write` (or `mmf_segment_close`). `*out_data` and `*out_len` get the
/// data region, writable (and readable) in place until then; other processes' readers and
/// writers wait meanwhile. While the handle holds the lock, its `read_at`, `write_at`,
/// `wait_for_write`, `lock_read` and a second `lock_write` fail with
/// `MMF_ERR_INVALID_ARGUMENT` instead of waiting for themselves.
///
/// `MMF_ERR_POISONED`: a process died holding the lock, and this call holds it now anyway,
/// with `*out_data` and `*out_len` set: repair the data, call `mmf_segment_clear_poison`, then
/// unlock. `MMF_ERR_TIMEOUT`: the lock was not free in time.
///
/// # Safety
/// `seg` is null or a live handle; `out_data` and `out_len` are null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_lock_write(
    seg: *mut MmfSegment,
    timeout_ms: u32,
    out_data: *mut *mut u8,
    out_len: *mut usize,
) -> i32 {
    call(|| {
        need_out(out_data)?;
        need_out(out_len)?;
        // SAFETY: per this function's contract.
        let seg = unsafe { handle(seg) }?;
        let mmf = seg.for_guard()?;
        let (mut guard, poisoned) = held(if timeout_ms == MMF_WAIT_FOREVER {
            mmf.write()
        } else {
            mmf.write_timeout(Duration::from_millis(timeout_ms.into()))
        })?;
        let (data, len) = (guard.as_mut_ptr(), guard.len());
        seg.guard = Some(Held::Write(guard));
        // SAFETY: both checked non-null above; writable per this function's contract.
        unsafe { lend(out_data, data, out_len, len) }?;
        unless_poisoned(poisoned)
    })
}

/// A lock taken for C: the guard, and whether a process died holding the lock (C gets the
/// lock anyway, with `MMF_ERR_POISONED`, to repair the data).
fn held<G>(taken: mmf::LockResult<G>) -> Result<(G, bool), Failure> {
    match taken {
        Ok(guard) => Ok((guard, false)),
        Err(LockError::Poisoned(poison)) => Ok((poison.into_inner(), true)),
        Err(LockError::Failed(error)) => Err(error.into()),
    }
}

/// Lends a region of shared memory to C: its address through `out_data`, its length through
/// `out_len` (a locked data region, a begun frame, its user header).
///
/// # Safety
/// `out_data` and `out_len` are non-null and writable.
unsafe fn lend<P>(
    out_data: *mut P,
    data: P,
    out_len: *mut usize,
    len: usize,
) -> Result<(), Failure> {
    // SAFETY: per this function's contract.
    unsafe { put(out_data, data) }?;
    // SAFETY: as above.
    unsafe { put(out_len, len) }
}

/// `MMF_ERR_POISONED` after a poisoned lock was taken and lent all the same.
fn unless_poisoned(poisoned: bool) -> Result<(), Failure> {
    if poisoned {
        return Err(Error::Poisoned.into());
    }
    Ok(())
}

/// Releases the write lock taken by `mmf_segment_lock_write`; the data pointer it gave
/// must not be used afterwards. `MMF_ERR_INVALID_ARGUMENT` if the handle does not hold it.
///
/// # Safety
/// `seg` is null or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_unlock_write(seg: *mut MmfSegment) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let seg = unsafe { handle(seg) }?;
        match seg.guard {
            Some(Held::Write(_)) => {
                seg.guard = None;
                Ok(())
            }
            _ => Err(Failure::invalid(
                "this handle does not hold the write lock (no mmf_segment_lock_write)",
            )),
        }
    })
}

/// Takes a shared read lock on the segment, waiting at most `timeout_ms` milliseconds
/// (`MMF_WAIT_FOREVER`: no limit), and keeps it in the handle until `mmf_segment_unlock_read`
/// (or `mmf_segment_close`). `*out_data` and `*out_len` get the data region, readable in
/// place (not writable) until then; other readers may hold the lock too, writers wait. While
/// the handle holds it, the handle's own lock-taking calls (`read_at`, `write_at`,
/// `wait_for_write`, `lock_write`, a second `lock_read`) fail with
/// `MMF_ERR_INVALID_ARGUMENT` instead of waiting for themselves. Needs a read-write handle
/// (readers take part in the lock word); a read-only handle gets an error.
///
/// `MMF_ERR_POISONED`: a process died holding the write lock, so the data may be half
/// written; this call holds the read lock anyway, with `*out_data` and `*out_len` set.
/// `MMF_ERR_TIMEOUT`: a writer held the lock for longer than `timeout_ms`.
///
/// # Safety
/// `seg` is null or a live handle; `out_data` and `out_len` are null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_lock_read(
    seg: *mut MmfSegment,
    timeout_ms: u32,
    out_data: *mut *const u8,
    out_len: *mut usize,
) -> i32 {
    call(|| {
        need_out(out_data)?;
        need_out(out_len)?;
        // SAFETY: per this function's contract.
        let seg = unsafe { handle(seg) }?;
        let mmf = seg.for_guard()?;
        let (guard, poisoned) = held(if timeout_ms == MMF_WAIT_FOREVER {
            mmf.read()
        } else {
            mmf.read_timeout(Duration::from_millis(timeout_ms.into()))
        })?;
        let (data, len) = (guard.as_ptr(), guard.len());
        seg.guard = Some(Held::Read(guard));
        // SAFETY: both checked non-null above; writable per this function's contract.
        unsafe { lend(out_data, data, out_len, len) }?;
        unless_poisoned(poisoned)
    })
}

/// Releases the read lock taken by `mmf_segment_lock_read`; the data pointer it gave must
/// not be used afterwards. `MMF_ERR_INVALID_ARGUMENT` if the handle does not hold it (also
/// when it holds the write lock instead).
///
/// # Safety
/// `seg` is null or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmf_segment_unlock_read(seg: *mut MmfSegment) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let seg = unsafe { handle(seg) }?;
        match seg.guard {
            Some(Held::Read(_)) => {
                seg.guard = None;
                Ok(())
            }
            _ => Err(Failure::invalid(
                "this handle does not hold the read lock (no mmf_segment_lock_read)",
            )),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Frame channels
// ---------------------------------------------------------------------------------------------

/// The writer of a frame channel (opaque), with the frame it is writing in place between
/// `mmf_frame_writer_begin` and `mmf_frame_writer_commit`. Free with
/// `mmf_frame_writer_close`, which removes the channel's name.
#[repr(C)]
pub struct MmfFrameWriter {
    magic: u64,
    /// The frame begun in place, borrowing `*writer`. Its `'static` is a lie this type keeps
    /// honest: it is dropped (abandoned) before `writer` is freed (see `Drop`), and while it
    /// lives, `writer` is reached only through it (`idle` refuses).
    pending: Option<PendingFrame<'static>>,
    /// From `Box::into_raw`, so that borrowing the handle mutably never claims unique access
    /// to the writer the pending frame borrows; freed in `Drop`.
    writer: NonNull<FrameWriter>,
}

impl MmfFrameWriter {
    /// The writer, for a call that publishes (or otherwise needs it whole): refused while a
    /// frame is begun, whose slot the writer must not hand out again.
    fn idle(&mut self) -> Result<&mut FrameWriter, Failure> {
        if self.pending.is_some() {
            return Err(Failure::invalid(
                "this writer has a frame begun in place (mmf_frame_writer_begin): \
                 commit or abandon it first",
            ));
        }
        // SAFETY: `writer` is live until the handle drops, and no pending frame borrows it
        // (checked above); `&mut self` makes this the only borrow.
        Ok(unsafe { self.writer.as_mut() })
    }
}

impl Drop for MmfFrameWriter {
    fn drop(&mut self) {
        // The pending frame borrows the writer: abandon it before the writer goes.
        self.pending = None;
        // SAFETY: `writer` came from `Box::into_raw` in `boxed_writer`, and no borrow of it
        // outlives this point (the pending frame was dropped above).
        drop(unsafe { Box::from_raw(self.writer.as_ptr()) });
    }
}

fn boxed_writer(writer: FrameWriter) -> *mut MmfFrameWriter {
    Box::into_raw(Box::new(MmfFrameWriter {
        magic: WRITER_MAGIC,
        pending: None,
        writer: NonNull::from(Box::leak(Box::new(writer))),
    }))
}

impl Handle for MmfFrameWriter {
    const MAGIC: u64 = WRITER_MAGIC;
    const KIND: &'static str = "frame writer";
    fn magic(&self) -> u64 {
        self.magic
    }
}

/// A reader of a frame channel (opaque), with the one frame it holds pinned. Free with
/// `mmf_frame_reader_close`.
#[repr(C)]
pub struct MmfFrameReader {
    magic: u64,
    /// The pinned frame, borrowing `*reader`. Its `'static` is a lie this type keeps
    /// honest: the frame is dropped before `reader` is freed (see `Drop`) and before the
    /// reader takes another.
    frame: Option<Frame<'static>>,
    /// From `Box::into_raw`, so that borrowing it for the frame never conflicts with a
    /// `Box`'s claim to unique access; freed in `Drop`.
    reader: NonNull<FrameReader>,
}

impl Handle for MmfFrameReader {
    const MAGIC: u64 = READER_MAGIC;
    const KIND: &'static str = "frame reader";
    fn magic(&self) -> u64 {
        self.magic
    }
}

impl Drop for MmfFrameReader {
    fn drop(&mut self) {
        // The frame borrows the reader: unpin before the reader goes.
        self.frame = None;
        // SAFETY: `reader` came from `Box::into_raw` in `mmf_frame_reader_open`, and no borrow
        // of it outlives this point (the frame was dropped above).
        drop(unsafe { Box::from_raw(self.reader.as_ptr()) });
    }
}

/// A frame as C sees it: the bytes stay in shared memory, valid (and unchanged by the writer)
/// until `mmf_frame_reader_release`, the next take on the same reader, or
/// `mmf_frame_reader_close`, whichever comes first.
///
/// Layout: the 8-byte fields first, then the pointer-sized ones, then the 4-byte ones and a
/// reserved word, so that every field sits at the same offset whether the compiler aligns
/// `uint64_t` to 4 (32-bit x86 Linux) or to 8 (everywhere else), with no padding: bindings
/// that declare it field by field (C#, ctypes) need no packing rules. 72 bytes on 64-bit
/// targets, 56 on 32-bit ones.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MmfFrame {
    /// Sequence number: 1 for the first frame, +1 per publish.
    pub seq: u64,
    /// Publish time in nanoseconds on a monotonic clock comparable across processes.
    pub timestamp_ns: u64,
    /// The writer's user fields (`mmf_frame_writer_set_meta`), like `width` below.
    pub tag: u64,
    /// The frame's bytes (owned by the reader handle; do not free).
    pub data: *const u8,
    /// Length of `data` in bytes.
    pub len: usize,
    /// The frame's user header, `user_header_len` bytes written by the writer with the frame
    /// (`mmf_frame_writer_publish_with_header`; zeros from the other publishes). Lives as long
    /// as `data`. Not null even when `user_header_len` is 0.
    pub user_header: *const u8,
    /// Length of `user_header`: the channel's `MmfFrameSpec::user_header_len`.
    pub user_header_len: usize,
    /// The writer's user fields (`mmf_frame_writer_set_meta`).
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// See `width`.
    pub pixel_format: u32,
    /// Always 0 for now; keeps the size a multiple of 8 on 32-bit targets.
    pub reserved: u32,
}

// The layout promised above, checked for every target this crate is built for.
const _: () = {
    use std::mem::{offset_of, size_of};
    let word = size_of::<usize>();
    assert!(offset_of!(MmfFrame, data) == 24);
    assert!(offset_of!(MmfFrame, width) == 24 + 4 * word);
    assert!(size_of::<MmfFrame>() == 24 + 4 * word + 16);
};

/// Parameters of a new frame channel, for `mmf_frame_writer_create_with`. A 0 in any field
/// asks for its default.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MmfFrameSpec {
    /// Largest frame in bytes. Required: 0 is `MMF_ERR_INVALID_ARGUMENT`.
    pub max_frame_len: usize,
    /// Readers that may be open at once, 1 to 32 (0: 4).
    pub max_readers: usize,
    /// Frame slots, `max_readers + 2` to 62 (0: as many as fit in 32 MiB, at most 16 and at
    /// least `max_readers + 2`). More slots never change what readers see.
    pub slots: usize,
    /// Bytes of the user header each frame carries beside its payload, 0 to 4096 (0: none).
    /// Costs one page per slot.
    pub user_header_len: usize,
    /// Who may open the channel as a reader, as Unix permission bits (0: `0600`, this user
    /// only; `0640` also the group, `0644` everyone). On Windows translated into the objects'
    /// security descriptors.
    pub mode: u32,
}

impl MmfFrameSpec {
    fn to_spec(self) -> FrameSpec {
        let defaults = FrameSpec::default();
        let or = |value: usize, default: usize| if value == 0 { default } else { value };
        FrameSpec {
            max_frame_len: self.max_frame_len,
            max_readers: or(self.max_readers, defaults.max_readers),
            slots: self.slots,
            user_header_len: self.user_header_len,
            mode: if self.mode == 0 {
                defaults.mode
            } else {
                self.mode
            },
        }
    }
}

/// Creates the frame channel `name` for frames of up to `max_frame_len` bytes and up to
/// `max_readers` readers at once; stores the writer in `*out`.
///
/// # Safety
/// `name` is null or a NUL-terminated string; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_writer_create(
    name: *const c_char,
    max_frame_len: usize,
    max_readers: usize,
    out: *mut *mut MmfFrameWriter,
) -> i32 {
    call(|| {
        need_out(out)?;
        // SAFETY: per this function's contract.
        let name = unsafe { name_arg(name) }?;
        let spec = FrameSpec::new(max_frame_len).max_readers(max_readers);
        let writer = FrameWriter::create(name, spec)?;
        // SAFETY: per this function's contract.
        unsafe { put(out, boxed_writer(writer)) }
    })
}

/// Creates the frame channel `name` as `*spec` says (0 fields: defaults, see
/// `MmfFrameSpec`); stores the writer in `*out`. `spec` is read during the call only.
///
/// # Safety
/// `name` is null or a NUL-terminated string; `spec` is null or readable; `out` is null or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_writer_create_with(
    name: *const c_char,
    spec: *const MmfFrameSpec,
    out: *mut *mut MmfFrameWriter,
) -> i32 {
    call(|| {
        need_out(out)?;
        // SAFETY: per this function's contract.
        let name = unsafe { name_arg(name) }?;
        // SAFETY: null or readable, per this function's contract.
        let spec = unsafe { spec.as_ref() }.ok_or_else(|| Failure::invalid("spec is null"))?;
        let writer = FrameWriter::create(name, spec.to_spec())?;
        // SAFETY: per this function's contract.
        unsafe { put(out, boxed_writer(writer)) }
    })
}

/// Sets the user fields published with the following frames (including a frame begun
/// with `mmf_frame_writer_begin` and not yet committed).
///
/// # Safety
/// `w` is null or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_writer_set_meta(
    w: *mut MmfFrameWriter,
    width: u32,
    height: u32,
    pixel_format: u32,
    tag: u64,
) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let w = unsafe { handle(w) }?;
        let meta = FrameMeta {
            width,
            height,
            pixel_format,
            tag,
        };
        // The meta is read at commit, so a frame begun in place may still set its own.
        match &mut w.pending {
            Some(pending) => pending.set_meta(meta),
            None => w.idle()?.set_meta(meta),
        }
        Ok(())
    })
}

/// Publishes a copy of `len` bytes at `data` as the next frame and stores its sequence number
/// in `*out_seq` (which may be null if not wanted). `MMF_ERR_TOO_LARGE` if `len` exceeds the
/// channel's maximum frame length. `MMF_ERR_INVALID_ARGUMENT` while a frame is begun in
/// place (`mmf_frame_writer_begin`).
///
/// # Safety
/// `w` is null or a live handle; `data` is null (with `len` 0) or readable for `len` bytes;
/// `out_seq` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_writer_publish(
    w: *mut MmfFrameWriter,
    data: *const u8,
    len: usize,
    out_seq: *mut u64,
) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let w = unsafe { handle(w) }?;
        // SAFETY: per this function's contract.
        let data = unsafe { bytes_arg(data, len) }?;
        let seq = w.idle()?.publish(data)?;
        // SAFETY: per this function's contract.
        unsafe { put_optional(out_seq, seq) }
    })
}

/// As `mmf_frame_writer_publish`, with the frame's user header: `hdr_len` bytes at `hdr`
/// (at most the channel's `user_header_len`; the rest of the header is zeroed) travel with
/// the frame, and readers get them in `MmfFrame::user_header`. Both are copied during the
/// call. `MMF_ERR_INVALID_ARGUMENT` if `hdr_len` is more than the channel's
/// `user_header_len`, `MMF_ERR_TOO_LARGE` if `len` is more than its maximum frame length
/// (nothing is published either way).
///
/// # Safety
/// `w` is null or a live handle; `hdr` is null (with `hdr_len` 0) or readable for `hdr_len`
/// bytes; `data` is null (with `len` 0) or readable for `len` bytes; `out_seq` is null or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_writer_publish_with_header(
    w: *mut MmfFrameWriter,
    hdr: *const u8,
    hdr_len: usize,
    data: *const u8,
    len: usize,
    out_seq: *mut u64,
) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let w = unsafe { handle(w) }?;
        // SAFETY: per this function's contract.
        let hdr = unsafe { bytes_arg(hdr, hdr_len) }?;
        // SAFETY: per this function's contract.
        let data = unsafe { bytes_arg(data, len) }?;
        let writer = w.idle()?;
        if hdr.len() > writer.user_header_len() {
            return Err(Failure::invalid(format!(
                "hdr_len {} is more than the channel's user_header_len {}",
                hdr.len(),
                writer.user_header_len()
            )));
        }
        // Checked here because the closure below could not copy a longer frame.
        if data.len() > writer.max_frame_len() {
            return Err(Error::FrameTooLarge {
                len: data.len() as u64,
                max: writer.max_frame_len() as u64,
            }
            .into());
        }
        let seq = writer.publish_with_header(|header, frame| {
            let (given, rest) = header.split_at_mut(hdr.len());
            given.copy_from_slice(hdr);
            rest.fill(0);
            frame[..data.len()].copy_from_slice(data);
            data.len()
        })?;
        // SAFETY: per this function's contract.
        unsafe { put_optional(out_seq, seq) }
    })
}

/// Begins a frame written in place: takes a free slot of the channel and stores its address in
/// `*data` and its size (the channel's maximum frame length) in `*capacity`. Write the frame
/// there, then `mmf_frame_writer_commit` publishes it, or `mmf_frame_writer_abandon` drops it
/// (readers never see it and the slot is free again). The slot's old contents are whatever an
/// earlier frame left; its user header is zeroed (`mmf_frame_writer_begun_user_header` lends
/// it). `*data` is owned by the writer and dies at
/// the commit, the abandon, or `mmf_frame_writer_close` (which abandons). Meanwhile
/// `mmf_frame_writer_publish*` and a second `begin` fail with `MMF_ERR_INVALID_ARGUMENT`;
/// `mmf_frame_writer_set_meta` sets the begun frame's metadata.
///
/// # Safety
/// `w` is null or a live handle; `data` and `capacity` are null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_writer_begin(
    w: *mut MmfFrameWriter,
    data: *mut *mut u8,
    capacity: *mut usize,
) -> i32 {
    call(|| {
        need_out(data)?;
        need_out(capacity)?;
        // SAFETY: per this function's contract.
        let w = unsafe { handle(w) }?;
        w.idle()?;
        // SAFETY: `writer` is live until the handle drops, and the pending frame borrowing it
        // for "'static" is stored in `w.pending`, which `Drop` clears before freeing it; while
        // it is there, `idle` keeps every other borrow of the writer out.
        let writer: &'static mut FrameWriter = unsafe { &mut *w.writer.as_ptr() };
        let mut pending = writer.begin()?;
        let (ptr, len) = (pending.as_mut_ptr(), pending.len());
        w.pending = Some(pending);
        // SAFETY: both checked non-null above; writable per this function's contract.
        unsafe { lend(data, ptr, capacity, len) }
    })
}

/// Stores in `*header` and `*header_len` the user header of the frame begun with
/// `mmf_frame_writer_begin` (`MmfFrameSpec::user_header_len` bytes, zeroed by the begin; length
/// 0 on a channel without user headers), writable in place and published with the frame.
/// Owned by the writer; dies with the begin's data pointer. `MMF_ERR_INVALID_ARGUMENT` if no
/// frame is begun.
///
/// # Safety
/// `w` is null or a live handle; `header` and `header_len` are null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_writer_begun_user_header(
    w: *mut MmfFrameWriter,
    header: *mut *mut u8,
    header_len: *mut usize,
) -> i32 {
    call(|| {
        need_out(header)?;
        need_out(header_len)?;
        // SAFETY: per this function's contract.
        let w = unsafe { handle(w) }?;
        let pending = w.pending.as_mut().ok_or_else(not_begun)?;
        // Disjoint from the frame's bytes that C may be writing through the begin's pointer.
        let bytes = pending.user_header_mut();
        let (ptr, len) = (bytes.as_mut_ptr(), bytes.len());
        // SAFETY: both checked non-null above; writable per this function's contract.
        unsafe { lend(header, ptr, header_len, len) }
    })
}

/// Publishes the first `len` bytes of the frame begun with `mmf_frame_writer_begin` and stores
/// its sequence number in `*out_seq` (which may be null if not wanted); the begin's data
/// pointer dies. `MMF_ERR_TOO_LARGE` if `len` is more than the capacity: nothing is published
/// and the frame is abandoned. `MMF_ERR_INVALID_ARGUMENT` if no frame is begun.
///
/// # Safety
/// `w` is null or a live handle; `out_seq` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_writer_commit(
    w: *mut MmfFrameWriter,
    len: usize,
    out_seq: *mut u64,
) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let w = unsafe { handle(w) }?;
        let pending = w.pending.take().ok_or_else(not_begun)?;
        let seq = pending.commit(len)?;
        // SAFETY: per this function's contract.
        unsafe { put_optional(out_seq, seq) }
    })
}

/// Drops the frame begun with `mmf_frame_writer_begin` unpublished: readers never see it, the
/// slot is free again, no sequence number is used, and the begin's data pointer dies.
/// `MMF_ERR_INVALID_ARGUMENT` if no frame is begun.
///
/// # Safety
/// `w` is null or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_writer_abandon(w: *mut MmfFrameWriter) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let w = unsafe { handle(w) }?;
        w.pending.take().map(drop).ok_or_else(not_begun)
    })
}

fn not_begun() -> Failure {
    Failure::invalid("this writer has no frame begun in place (no mmf_frame_writer_begin)")
}

/// Closes the writer, abandoning a frame begun in place: readers see `MMF_ERR_WRITER_GONE`,
/// and the name is removed. Null is a no-op. The handle must not be used afterwards.
///
/// # Safety
/// `w` is null or a live handle from this library.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_writer_close(w: *mut MmfFrameWriter) -> i32 {
    // SAFETY: per this function's contract.
    call(|| unsafe { close(w) })
}

/// Opens a reader on the frame channel `name`; stores it in `*out`.
///
/// # Safety
/// `name` is null or a NUL-terminated string; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_reader_open(
    name: *const c_char,
    out: *mut *mut MmfFrameReader,
) -> i32 {
    call(|| {
        need_out(out)?;
        // SAFETY: per this function's contract.
        let name = unsafe { name_arg(name) }?;
        let reader = FrameReader::open(name)?;
        // SAFETY: per this function's contract.
        unsafe { put(out, boxed_reader(reader)) }
    })
}

/// As `mmf_frame_reader_open`, but waits up to `timeout_ms` milliseconds (`MMF_WAIT_FOREVER`:
/// no limit) for the channel to appear (a consumer started before its camera, or reopening after `MMF_ERR_WRITER_GONE`
/// while the camera restarts). `MMF_ERR_TIMEOUT` if it did not in time.
///
/// # Safety
/// `name` is null or a NUL-terminated string; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_reader_open_wait(
    name: *const c_char,
    timeout_ms: u32,
    out: *mut *mut MmfFrameReader,
) -> i32 {
    call(|| {
        need_out(out)?;
        // SAFETY: per this function's contract.
        let name = unsafe { name_arg(name) }?;
        let reader = FrameReader::open_wait(name, wait_arg(timeout_ms))?;
        // SAFETY: per this function's contract.
        unsafe { put(out, boxed_reader(reader)) }
    })
}

fn boxed_reader(reader: FrameReader) -> *mut MmfFrameReader {
    Box::into_raw(Box::new(MmfFrameReader {
        magic: READER_MAGIC,
        frame: None,
        reader: NonNull::from(Box::leak(Box::new(reader))),
    }))
}

/// Which frame a take asks for.
#[derive(Clone, Copy)]
enum Take {
    Wait(Duration),
    Next,
    Latest,
}

/// Releases the reader's pinned frame, takes another, pins it in the handle and describes it
/// in `*out`.
///
/// # Safety
/// `r` is null or a live handle; `out` is null or writable.
#[inline(always)]
unsafe fn take(r: *mut MmfFrameReader, how: Take, out: *mut MmfFrame) -> Result<(), Failure> {
    need_out(out)?;
    // SAFETY: per the caller's contract.
    let r = unsafe { handle(r) }?;
    // Unpin the old frame before taking a new one: the reader holds one pin at a time.
    r.frame = None;
    // SAFETY: `reader` is live until `r` drops, and the frame borrowing it for "'static" is
    // stored in `r.frame`, which is cleared before the reader is freed or borrowed again
    // (above, and in `Drop`), so the borrow never outlives the reader or overlaps another.
    let reader: &'static mut FrameReader = unsafe { &mut *r.reader.as_ptr() };
    let frame = match how {
        Take::Wait(timeout) => reader.wait_next(timeout)?,
        Take::Next => reader.try_next()?.ok_or_else(no_frame)?,
        Take::Latest => reader.latest()?.ok_or_else(no_frame)?,
    };
    let info = *frame.info();
    let header = frame.user_header();
    let view = MmfFrame {
        data: frame.as_ptr(),
        len: frame.len(),
        seq: info.seq,
        timestamp_ns: info.timestamp_ns,
        width: info.meta.width,
        height: info.meta.height,
        pixel_format: info.meta.pixel_format,
        tag: info.meta.tag,
        user_header: header.as_ptr(),
        user_header_len: header.len(),
        reserved: 0,
    };
    r.frame = Some(frame);
    // SAFETY: per the caller's contract.
    unsafe { put(out, view) }
}

fn no_frame() -> Failure {
    Failure {
        status: MMF_ERR_WOULD_BLOCK,
        message: "no new frame yet".to_string(),
    }
}

/// Waits up to `timeout_ms` milliseconds (`MMF_WAIT_FOREVER`: no limit) for the next frame
/// and describes it in `*frame` (see `MmfFrame` for how long it stays valid). Releases the frame held before, even on
/// failure. `MMF_ERR_TIMEOUT` if none came; `MMF_ERR_WRITER_GONE` if the writer closed.
///
/// # Safety
/// `r` is null or a live handle; `frame` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_reader_wait_next(
    r: *mut MmfFrameReader,
    timeout_ms: u32,
    frame: *mut MmfFrame,
) -> i32 {
    // SAFETY: per this function's contract.
    call(|| unsafe { take(r, Take::Wait(wait_arg(timeout_ms)), frame) })
}

/// Takes the next frame without waiting, as `mmf_frame_reader_wait_next`;
/// `MMF_ERR_WOULD_BLOCK` if there is no new one.
///
/// # Safety
/// `r` is null or a live handle; `frame` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_reader_try_next(
    r: *mut MmfFrameReader,
    frame: *mut MmfFrame,
) -> i32 {
    // SAFETY: per this function's contract.
    call(|| unsafe { take(r, Take::Next, frame) })
}

/// Takes the newest frame, skipping any in between, as `mmf_frame_reader_try_next`.
///
/// # Safety
/// `r` is null or a live handle; `frame` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_reader_latest(
    r: *mut MmfFrameReader,
    frame: *mut MmfFrame,
) -> i32 {
    // SAFETY: per this function's contract.
    call(|| unsafe { take(r, Take::Latest, frame) })
}

/// Whether the channel's writer is still there (`*out`): it has not closed the channel, and
/// its process has not died. Asks the OS, so it costs a system call or two: for a consumer
/// that polls with `mmf_frame_reader_latest` (which keeps giving the last frame and never
/// reports `MMF_ERR_WRITER_GONE`) now and then, not for every frame. Does not touch the frame
/// the reader holds.
///
/// # Safety
/// `r` is null or a live handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_reader_writer_alive(
    r: *mut MmfFrameReader,
    out: *mut bool,
) -> i32 {
    call(|| {
        need_out(out)?;
        // SAFETY: per this function's contract.
        let r = unsafe { handle(r) }?;
        // SAFETY: `reader` is live until the handle drops; a shared borrow for this call
        // does not conflict with the pinned frame's, which is shared as well.
        let alive = unsafe { r.reader.as_ref() }.writer_alive();
        // SAFETY: checked non-null above; writable per this function's contract.
        unsafe { put(out, alive) }
    })
}

/// Releases the frame the reader holds, letting the writer reuse its slot; its `MmfFrame`
/// must not be used afterwards. A no-op when no frame is held.
///
/// # Safety
/// `r` is null or a live handle.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_reader_release(r: *mut MmfFrameReader) -> i32 {
    call(|| {
        // SAFETY: per this function's contract.
        let r = unsafe { handle(r) }?;
        r.frame = None;
        Ok(())
    })
}

/// Closes the reader (releasing its frame); null is a no-op. The handle must not be used
/// afterwards.
///
/// # Safety
/// `r` is null or a live handle from this library.
#[no_mangle]
pub unsafe extern "C" fn mmf_frame_reader_close(r: *mut MmfFrameReader) -> i32 {
    // SAFETY: per this function's contract.
    call(|| unsafe { close(r) })
}

#[cfg(test)]
mod tests;
