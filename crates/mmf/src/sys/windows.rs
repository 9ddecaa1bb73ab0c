//! Windows backend: pagefile-backed named sections (`CreateFileMappingW` with
//! `INVALID_HANDLE_VALUE`), waiting on a named semaphore per segment.
//!
//! Lifetime is the kernel's: a section and its name live exactly as long as some handle to it
//! is open (a mapped view counts as a reference too), so there is nothing to remove and a
//! crashed process leaks nothing.
//!
//! Object names are `Local\<name>` or `Global\<name>`; the semaphore of segment `<name>` is
//! `…\<name>#mmf-wake`. Segment names never contain `#` (see `name.rs`), so the two kinds of
//! object can never collide in the one kernel namespace they share.
//!
//! Both objects are created with an explicit security descriptor built from the segment's
//! Unix mode, and every open checks the object's owner before using it: see
//! `windows_security.rs` for the mapping table and `trust.rs` for whom an opener trusts.

use std::ffi::c_void;
use std::mem::size_of;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr::{self, NonNull};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{fence, AtomicU32};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use windows_sys::core::PCWSTR;
use windows_sys::Win32::Foundation::{
    GetLastError, SetLastError, ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_BAD_PATHNAME,
    ERROR_COMMITMENT_LIMIT, ERROR_DISK_FULL, ERROR_FILENAME_EXCED_RANGE, ERROR_FILE_NOT_FOUND,
    ERROR_INVALID_HANDLE, ERROR_INVALID_NAME, ERROR_INVALID_PARAMETER, ERROR_NOT_ALL_ASSIGNED,
    ERROR_NOT_ENOUGH_MEMORY, ERROR_NO_SYSTEM_RESOURCES, ERROR_OUTOFMEMORY,
    ERROR_PRIVILEGE_NOT_HELD, FALSE, FILETIME, HANDLE, INVALID_HANDLE_VALUE, LUID, STILL_ACTIVE,
    WAIT_OBJECT_0, WAIT_TIMEOUT, WIN32_ERROR,
};
use windows_sys::Win32::Security::{
    AdjustTokenPrivileges, LookupPrivilegeValueW, LUID_AND_ATTRIBUTES, SE_LOCK_MEMORY_NAME,
    SE_PRIVILEGE_ENABLED, TOKEN_ADJUST_PRIVILEGES, TOKEN_PRIVILEGES, TOKEN_QUERY,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, GetLargePageMinimum, MapViewOfFile, OpenFileMappingW, UnmapViewOfFile,
    VirtualQuery, FILE_MAP, FILE_MAP_LARGE_PAGES, FILE_MAP_READ, FILE_MAP_WRITE,
    MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS, PAGE_READWRITE, SEC_COMMIT,
    SEC_LARGE_PAGES,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};
use windows_sys::Win32::System::Threading::{
    CreateSemaphoreExW, GetCurrentProcess, GetExitCodeProcess, GetProcessTimes, OpenProcess,
    OpenProcessToken, OpenSemaphoreW, ReleaseSemaphore, WaitForSingleObject, INFINITE,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE, SEMAPHORE_MODIFY_STATE,
    SYNCHRONIZATION_SYNCHRONIZE,
};

use super::{
    Access, Hold, Liveness, Namespace, OsOptions, OsProcess, OsSegment, OsWaiter, ProcessId,
};
use crate::error::{Error, Result};

/// Security descriptors from the Unix mode, and owner checks.
#[path = "windows_security.rs"]
mod security;
use security::{Descriptor, READ_CONTROL};

/// The calling thread's last Win32 error.
fn last_error() -> WIN32_ERROR {
    // SAFETY: GetLastError has no preconditions; it reads thread-local state.
    unsafe { GetLastError() }
}

/// Clears the thread's last error, for calls that report "already existed" only by setting it
/// on success (and may leave a stale value otherwise).
fn clear_last_error() {
    // SAFETY: SetLastError has no preconditions; it writes thread-local state.
    unsafe { SetLastError(0) }
}

/// A Win32 error code as an `io::Error` (its `raw_os_error()` is the code).
fn io_error(code: WIN32_ERROR) -> std::io::Error {
    // Win32 error codes are below 2^16, so the cast is lossless.
    std::io::Error::from_raw_os_error(code as i32)
}

/// Takes ownership of a handle a successful Win32 call just returned, or `None` for the
/// null handle those calls return on failure.
fn own(handle: HANDLE) -> Option<OwnedHandle> {
    if handle.is_null() {
        return None;
    }
    // SAFETY: `handle` is non-null and was just returned to us by a Create*/Open* call, so it
    // is a valid open handle that nothing else owns or will close.
    Some(unsafe { OwnedHandle::from_raw_handle(handle) })
}

/// NUL-terminated UTF-16 kernel object name: `Local\<name><suffix>` or `Global\<name><suffix>`.
fn object_name(name: &str, namespace: Namespace, suffix: &str) -> Vec<u16> {
    let prefix = match namespace {
        Namespace::Local => "Local\\",
        Namespace::Global => "Global\\",
    };
    prefix
        .encode_utf16()
        .chain(name.encode_utf16())
        .chain(suffix.encode_utf16())
        .chain(std::iter::once(0))
        .collect()
}

/// What `PermissionDenied` says for each step that can be refused.
const HINT_CREATE_GLOBAL: &str = "creating a Global\\ name needs SeCreateGlobalPrivilege \
     (administrators and services hold it; or the name exists and this user may not open it); \
     use Namespace::Local";
const HINT_OPEN: &str = "the object's security descriptor does not grant this user the access \
     asked for; try open_read_only";
const HINT_LARGE_PAGES: &str = "large pages need SeLockMemoryPrivilege (grant \"Lock pages in \
     memory\" to the user in the local security policy, then log in again)";

/// Maps a Win32 error from step `op` on segment `name` to the matching typed error; the same
/// variants as the POSIX backend where the meaning is the same.
fn error(op: &'static str, name: &str, namespace: Namespace, code: WIN32_ERROR) -> Error {
    match code {
        ERROR_FILE_NOT_FOUND => Error::NotFound {
            name: name.to_owned(),
        },
        ERROR_ALREADY_EXISTS => Error::AlreadyExists {
            name: name.to_owned(),
        },
        ERROR_ACCESS_DENIED => Error::PermissionDenied {
            name: name.to_owned(),
            op,
            // Creating a Global\ object is refused only for the missing privilege; any other
            // refusal is the object's security descriptor.
            hint: if namespace == Namespace::Global && op.starts_with("Create") {
                HINT_CREATE_GLOBAL
            } else {
                HINT_OPEN
            },
        },
        ERROR_PRIVILEGE_NOT_HELD if op.starts_with("Create") => Error::PermissionDenied {
            name: name.to_owned(),
            op,
            hint: HINT_CREATE_GLOBAL,
        },
        ERROR_INVALID_NAME | ERROR_BAD_PATHNAME | ERROR_FILENAME_EXCED_RANGE => {
            Error::InvalidName {
                name: name.to_owned(),
                reason: "Windows rejects it as an object name",
            }
        }
        other => Error::os(op, io_error(other)),
    }
}

/// Whether `code` means the system could not provide the memory asked for.
fn is_out_of_memory(code: WIN32_ERROR) -> bool {
    matches!(
        code,
        ERROR_COMMITMENT_LIMIT
            | ERROR_NOT_ENOUGH_MEMORY
            | ERROR_OUTOFMEMORY
            | ERROR_DISK_FULL
            | ERROR_NO_SYSTEM_RESOURCES
    )
}

/// The system page size (the granularity of protection and of `VirtualQuery`).
pub(crate) fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        let mut info = SYSTEM_INFO::default();
        // SAFETY: `info` is a valid, writable SYSTEM_INFO; GetSystemInfo cannot fail.
        unsafe { GetSystemInfo(&mut info) };
        // 4096 is every Windows page size there is; only a broken answer falls back to it.
        usize::try_from(info.dwPageSize)
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096)
    })
}

/// Enables privilege `privilege` in this process's token. `Ok(false)` means the token does
/// not hold it at all (it can be granted, not enabled, by the program).
fn enable_privilege(privilege: PCWSTR) -> Result<bool> {
    // SAFETY: no preconditions; returns a pseudo handle that needs no closing.
    let process = unsafe { GetCurrentProcess() };
    let mut raw_token: HANDLE = ptr::null_mut();
    // SAFETY: `process` is the current-process pseudo handle; `raw_token` is a valid out
    // pointer for the new token handle.
    let ok = unsafe {
        OpenProcessToken(
            process,
            TOKEN_ADJUST_PRIVILEGES | TOKEN_QUERY,
            &mut raw_token,
        )
    };
    if ok == FALSE {
        return Err(Error::os("OpenProcessToken", io_error(last_error())));
    }
    let token = own(raw_token).ok_or_else(|| Error::corrupt("OpenProcessToken returned null"))?;
    let mut luid = LUID::default();
    // SAFETY: a null system name means the local system; `privilege` is a NUL-terminated
    // constant from windows-sys; `luid` is a valid out pointer.
    let ok = unsafe { LookupPrivilegeValueW(ptr::null(), privilege, &mut luid) };
    if ok == FALSE {
        return Err(Error::os("LookupPrivilegeValueW", io_error(last_error())));
    }
    let state = TOKEN_PRIVILEGES {
        PrivilegeCount: 1,
        Privileges: [LUID_AND_ATTRIBUTES {
            Luid: luid,
            Attributes: SE_PRIVILEGE_ENABLED,
        }],
    };
    // AdjustTokenPrivileges "succeeds" even when it could not enable the privilege and says
    // so only through the last error, which it does not always reset.
    clear_last_error();
    // SAFETY: `token` was opened with TOKEN_ADJUST_PRIVILEGES; `state` is a valid
    // TOKEN_PRIVILEGES with one entry; no previous state is asked for (null, length 0).
    let ok = unsafe {
        AdjustTokenPrivileges(
            token.as_raw_handle(),
            FALSE,
            &state,
            0,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    let code = last_error();
    if ok == FALSE {
        return Err(Error::os("AdjustTokenPrivileges", io_error(code)));
    }
    Ok(code != ERROR_NOT_ALL_ASSIGNED)
}

/// A mapped view of a pagefile-backed section.
pub(crate) struct Segment {
    /// Start of the view, from a successful `MapViewOfFile`; unmapped in `drop`.
    view: NonNull<u8>,
    /// Length of the view (the section's size rounded up to whole pages).
    len: usize,
    /// Keeps the section (and so its name) alive; closed after the view is unmapped.
    _section: OwnedHandle,
}

// SAFETY: a view and a section handle belong to the process, not to the thread that made
// them; the raw pointer is only dereferenced by callers that synchronise through the
// in-region lock or atomics, which work across threads as across processes.
unsafe impl Send for Segment {}
// SAFETY: `&Segment` only exposes the pointer and length (no interior mutability of its own).
unsafe impl Sync for Segment {}

impl Segment {
    /// Maps the whole of `section` with `access` (never `FILE_MAP_EXECUTE`).
    fn map(
        section: OwnedHandle,
        access: FILE_MAP,
        opts: &OsOptions,
        name: &str,
    ) -> Result<Segment> {
        // SAFETY: `section` is a valid section handle opened (or created) with at least
        // `access`; offset 0 and length 0 map the whole section at a system-chosen address,
        // which cannot alias any Rust object.
        let view = unsafe { MapViewOfFile(section.as_raw_handle(), access, 0, 0, 0) };
        let Some(ptr) = NonNull::new(view.Value.cast::<u8>()) else {
            return Err(error("MapViewOfFile", name, opts.namespace, last_error()));
        };
        // From here on `drop` unmaps the view, whatever fails below.
        let mut segment = Segment {
            view: ptr,
            len: 0,
            _section: section,
        };
        segment.len = segment.query_len()?;
        if opts.prefault {
            segment.touch_pages();
        }
        Ok(segment)
    }

    /// Length of the view, from `VirtualQuery`: the section's size is not recorded anywhere
    /// else an opener can read it. Every page of a `SEC_COMMIT` view has the same state and
    /// protection, so the region that starts at the view is the whole view.
    fn query_len(&self) -> Result<usize> {
        let mut info = MEMORY_BASIC_INFORMATION::default();
        // SAFETY: `info` is a valid, writable MEMORY_BASIC_INFORMATION of the size passed;
        // VirtualQuery only reads the process's address-space bookkeeping for `view`.
        let written = unsafe {
            VirtualQuery(
                self.view.as_ptr().cast::<c_void>().cast_const(),
                &mut info,
                size_of::<MEMORY_BASIC_INFORMATION>(),
            )
        };
        if written == 0 {
            return Err(Error::os("VirtualQuery", io_error(last_error())));
        }
        if info.BaseAddress != self.view.as_ptr().cast::<c_void>() || info.RegionSize == 0 {
            return Err(Error::corrupt(
                "VirtualQuery does not describe the view just mapped",
            ));
        }
        Ok(info.RegionSize)
    }

    /// Faults every page in by reading one byte of each.
    ///
    /// A read is enough, for the creator too: the pages of a pagefile-backed section are
    /// demand-zero pages owned by the section, so the first touch of either kind allocates
    /// and zeroes the page in the section (the costly part) and maps it with the view's
    /// protection. Unlike private copy-on-write memory there is no second copy for a later
    /// write to make; at most a cheap soft fault to mark the page dirty. Writing instead
    /// would race with other processes' data (an opener's view is live) for no gain.
    /// Reasoned from the Windows memory manager's design, not measured: under wine the
    /// mapping is a Linux `mmap`, so a timing there would describe Linux.
    fn touch_pages(&self) {
        for offset in (0..self.len).step_by(page_size()) {
            // SAFETY: offset < len, so the pointer stays inside our view.
            let byte = unsafe { self.view.as_ptr().add(offset) };
            // SAFETY: the byte lies inside our live view, which is at least readable.
            unsafe { ptr::read_volatile(byte) };
        }
    }
}

impl OsSegment for Segment {
    fn create(name: &str, len: usize, opts: &OsOptions) -> Result<Self> {
        let mut size = len;
        let mut protect = PAGE_READWRITE | SEC_COMMIT;
        let mut access = FILE_MAP_READ | FILE_MAP_WRITE;
        if opts.large_pages {
            if !enable_privilege(SE_LOCK_MEMORY_NAME)? {
                return Err(Error::PermissionDenied {
                    name: name.to_owned(),
                    op: "CreateFileMappingW(SEC_LARGE_PAGES)",
                    hint: HINT_LARGE_PAGES,
                });
            }
            // SAFETY: no preconditions.
            let large = unsafe { GetLargePageMinimum() };
            if large == 0 {
                return Err(Error::Unsupported {
                    what: "this processor or Windows version has no large pages",
                });
            }
            // SEC_LARGE_PAGES sections (and their views) must be whole large pages.
            size = len
                .checked_next_multiple_of(large)
                .ok_or(Error::InvalidSize {
                    size: len as u64,
                    reason: "it is larger than this platform can map",
                })?;
            protect |= SEC_LARGE_PAGES;
            access |= FILE_MAP_LARGE_PAGES;
        }
        let os = object_name(name, opts.namespace, "");
        let size = size as u64;
        // A typo in a trusted SID fails every create and open alike, not only the open that
        // meets a stranger's object.
        security::trusted_sids(&opts.trusted)?;
        let descriptor = Descriptor::new(opts.mode, security::SECTION)?;
        let attributes = descriptor.attributes();
        // CreateFileMappingW reports "it already existed" only through the last error of a
        // successful call; clear it so a stale value cannot be mistaken for that.
        clear_last_error();
        // SAFETY: INVALID_HANDLE_VALUE asks for a pagefile-backed section; `attributes` points
        // to `descriptor`, alive until after the call; `os` is a NUL-terminated UTF-16 string
        // that outlives the call. Never executable: PAGE_READWRITE.
        let raw = unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                &attributes,
                protect,
                (size >> 32) as u32,
                size as u32,
                os.as_ptr(),
            )
        };
        let code = last_error();
        let Some(section) = own(raw) else {
            return Err(match code {
                // The name belongs to a kernel object of another type (event, mutex…).
                ERROR_INVALID_HANDLE => Error::AlreadyExists {
                    name: name.to_owned(),
                },
                ERROR_PRIVILEGE_NOT_HELD if opts.large_pages => Error::PermissionDenied {
                    name: name.to_owned(),
                    op: "CreateFileMappingW(SEC_LARGE_PAGES)",
                    hint: HINT_LARGE_PAGES,
                },
                c if is_out_of_memory(c) => Error::InvalidSize {
                    size: len as u64,
                    reason: "the system cannot commit this much memory (pagefile or RAM)",
                },
                c => error("CreateFileMappingW", name, opts.namespace, c),
            });
        };
        if code == ERROR_ALREADY_EXISTS {
            // We hold a handle to somebody else's section: close it without mapping it, so
            // its data is untouched.
            drop(section);
            return Err(Error::AlreadyExists {
                name: name.to_owned(),
            });
        }
        Segment::map(section, access, opts, name).map_err(|e| match e.os_code() {
            // No room in this process's address space for a view this large.
            Some(code) if is_out_of_memory(code as WIN32_ERROR) => Error::InvalidSize {
                size: len as u64,
                reason: "it is larger than this process can map",
            },
            _ => e,
        })
    }

    fn open(name: &str, access: Access, opts: &OsOptions) -> Result<Option<Self>> {
        // The section's access and the view's are the same: a read-only open has no handle
        // that could map the pages writable.
        let access = match access {
            Access::ReadWrite => FILE_MAP_READ | FILE_MAP_WRITE,
            Access::ReadOnly => FILE_MAP_READ,
        };
        let os = object_name(name, opts.namespace, "");
        // READ_CONTROL too, to read the owner below: every descriptor this crate makes grants
        // it with read access, and default descriptors grant it to their owner.
        // SAFETY: `os` is a NUL-terminated UTF-16 string that outlives the call; the handle is
        // not inheritable.
        let raw = unsafe { OpenFileMappingW(access | READ_CONTROL, FALSE, os.as_ptr()) };
        let Some(section) = own(raw) else {
            return Err(match last_error() {
                // The name belongs to a kernel object of another type.
                ERROR_INVALID_HANDLE => Error::NotMmf {
                    name: name.to_owned(),
                },
                code => error("OpenFileMappingW", name, opts.namespace, code),
            });
        };
        // Before mapping anything: a stranger's section may be a trap (see trust.rs).
        security::check_owner(section.as_raw_handle(), name, &opts.trusted, |op, code| {
            error(op, name, opts.namespace, code)
        })?;
        // A section gets its size when it is created, so unlike POSIX shm there is no window
        // in which it exists without one: never `Ok(None)`.
        Segment::map(section, access, opts, name).map(Some)
    }

    /// The view already covers the whole section, which validation found at least `len`
    /// bytes long, and was prefaulted in `open`. A section's size is fixed at creation, so no
    /// peer can enlarge it after the creator chose it; mapping the whole of it maps what
    /// the creator made.
    fn remap(&mut self, len: usize, _access: Access, _opts: &OsOptions, _name: &str) -> Result<()> {
        if len > self.len {
            return Err(Error::corrupt(format!(
                "the header claims {len} bytes but the section holds only {}",
                self.len
            )));
        }
        Ok(())
    }

    fn object_len(&self) -> Result<u64> {
        Ok(self.len as u64)
    }

    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn as_ptr(&self) -> *mut u8 {
        self.view.as_ptr()
    }

    fn remove(name: &str, namespace: Namespace) -> Result<()> {
        // Nothing can remove a section but closing its last handle; report whether it exists.
        let os = object_name(name, namespace, "");
        // SAFETY: `os` is a NUL-terminated UTF-16 string that outlives the call.
        let raw = unsafe { OpenFileMappingW(FILE_MAP_READ, FALSE, os.as_ptr()) };
        if own(raw).is_some() {
            return Ok(());
        }
        match last_error() {
            // Refused access proves that the section exists.
            ERROR_ACCESS_DENIED => Ok(()),
            // The name belongs to a kernel object of another type: no segment of that name.
            ERROR_INVALID_HANDLE => Err(Error::NotFound {
                name: name.to_owned(),
            }),
            code => Err(error("OpenFileMappingW", name, namespace, code)),
        }
    }

    fn remove_if_same(&self, _name: &str, _namespace: Namespace) -> Result<()> {
        // The section goes away with its last handle; this handle's share is dropped with it.
        Ok(())
    }

    /// A pagefile-backed section has no file to lock a byte of (`LockFileEx` needs a file
    /// handle): holders are identified by process handle and creation time instead (see
    /// [`Process`] and the lock module, "Owner death").
    fn hold_byte(&self, _offset: u64) -> Hold {
        Hold::Unsupported
    }

    fn release_byte(&self, _offset: u64) {}

    fn byte_liveness(&self, _offset: u64) -> Liveness {
        Liveness::Unknown
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let view = MEMORY_MAPPED_VIEW_ADDRESS {
            Value: self.view.as_ptr().cast::<c_void>(),
        };
        // SAFETY: `view` is the base address MapViewOfFile returned in `map`, unmapped only
        // here; every borrow of its memory is tied to a borrow of the owning `Mmf`, which has
        // ended. The section handle closes after this, when the fields drop.
        let ok = unsafe { UnmapViewOfFile(view) };
        // Unmapping a view we mapped can only fail on a bug; nothing useful to do in drop.
        debug_assert!(ok != FALSE, "UnmapViewOfFile failed: {}", last_error());
    }
}

/// Suffix of the name of a segment's wake semaphore (`<name>#mmf-wake`).
const WAKE_SUFFIX: &str = "#mmf-wake";

/// Longest single kernel wait. Normally a sleeper is woken by a token long before this; the
/// cap bounds the delay (rather than leaving a process asleep for ever) if a wake-up is lost
/// anyway, which takes one of two rare events: another process corrupted `os_waiters`, or a
/// sleeper took a token released for another word of the same segment (the lock sleeps on
/// more than one). The latter needs a narrow race: a release satisfies every thread already
/// blocked on the semaphore at once, so a token can only be taken by the wrong sleeper while
/// the right one is between its re-check of the word and its `WaitForSingleObject`.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Waiting on a word of a segment, across processes.
///
/// `WaitOnAddress` wakes only threads of its own process, so sleepers block on a named
/// semaphore shared by every handle of the segment, and the header's `os_waiters` counts them
/// so that a release signals only when someone sleeps:
///
/// - wait: increment the count, re-check the word, block on the semaphore, decrement;
/// - wake: after changing the word, release as many tokens as the count says.
///
/// Tokens are not tied to sleepers: a sleeper that timed out, or that re-checked and did not
/// block, leaves its token behind for a later sleeper, which then wakes spuriously. That is
/// harmless: the lock re-checks its word after every wake-up and sleeps again; each stale
/// token causes at most one spurious wake-up.
pub(crate) struct Waiter {
    semaphore: OwnedHandle,
}

impl Waiter {
    /// A process-local (unnamed) semaphore, for lock tests on a heap region.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        // SAFETY: null attributes and a null name make a private semaphore; 0 initial tokens,
        // at most i32::MAX; no flags; the access is what `wait` and `wake_all` use.
        let raw = unsafe {
            CreateSemaphoreExW(
                ptr::null(),
                0,
                i32::MAX,
                ptr::null(),
                0,
                SEMAPHORE_MODIFY_STATE | SYNCHRONIZATION_SYNCHRONIZE,
            )
        };
        Waiter {
            semaphore: own(raw).expect("CreateSemaphoreExW for tests"),
        }
    }
}

/// Whether a wake-up names the word it wakes: not here, one semaphore per segment wakes
/// every sleeper whatever word it sleeps on, so a release that must wake sleepers on two
/// words signals it once (twice would leave stale tokens: spurious wake-ups).
pub(crate) const WAKES_BY_WORD: bool = false;

impl OsWaiter for Waiter {
    fn new(name: &str, opts: &OsOptions, create: bool, access: Access) -> Result<Self> {
        let namespace = opts.namespace;
        let os = object_name(name, namespace, WAKE_SUFFIX);
        let object = format!("{name}{WAKE_SUFFIX}");
        // Only what is used: waiting (SYNCHRONIZE), waking (MODIFY_STATE) for a handle that
        // can take the lock, and READ_CONTROL for the owner check. The creator asks for the
        // same, so that finding the name taken by a semaphore whose DACL grants that much is
        // reported by its owner, not by the rights it lacks.
        let rights = match access {
            Access::ReadWrite => {
                SEMAPHORE_MODIFY_STATE | SYNCHRONIZATION_SYNCHRONIZE | READ_CONTROL
            }
            Access::ReadOnly => SYNCHRONIZATION_SYNCHRONIZE | READ_CONTROL,
        };
        if !create {
            // SAFETY: `os` is a NUL-terminated UTF-16 string that outlives the call; the
            // handle is not inheritable.
            let raw = unsafe { OpenSemaphoreW(rights, FALSE, os.as_ptr()) };
            match own(raw) {
                Some(semaphore) => {
                    security::check_owner(
                        semaphore.as_raw_handle(),
                        &object,
                        &opts.trusted,
                        |op, code| error(op, name, namespace, code),
                    )?;
                    return Ok(Waiter { semaphore });
                }
                // The creator may have closed everything, semaphore included, while the
                // section lives on through other handles (ours among them): make it anew,
                // as the creator would have, but with this opener's mode and as its owner.
                None if last_error() == ERROR_FILE_NOT_FOUND => {}
                None => return Err(error("OpenSemaphoreW", name, namespace, last_error())),
            }
        }
        let descriptor = Descriptor::new(opts.mode, security::SEMAPHORE)?;
        let attributes = descriptor.attributes();
        // "It already existed" comes only through the last error of a successful call.
        clear_last_error();
        // SAFETY: `attributes` points to `descriptor`, alive until after the call; 0 initial
        // tokens, at most i32::MAX; `os` is a NUL-terminated UTF-16 string that outlives the
        // call; no flags (the parameter is reserved).
        let raw = unsafe { CreateSemaphoreExW(&attributes, 0, i32::MAX, os.as_ptr(), 0, rights) };
        let code = last_error();
        let Some(semaphore) = own(raw) else {
            return Err(match code {
                // The name belongs to a kernel object of another type.
                ERROR_INVALID_HANDLE => Error::AlreadyExists { name: object },
                // It exists and its DACL refuses us what we need: a stranger's is reported as
                // such (if we may read its owner), a trusted owner's as the refusal it is.
                ERROR_ACCESS_DENIED => match untrusted_semaphore(&os, &object, opts) {
                    Some(untrusted) => untrusted,
                    None => error("CreateSemaphoreExW", name, namespace, code),
                },
                code => error("CreateSemaphoreExW", name, namespace, code),
            });
        };
        if code == ERROR_ALREADY_EXISTS {
            // Somebody made it first, and our descriptor was not applied. A leftover of an
            // earlier segment of the same name (its last user still closing) only carries
            // stale tokens, which are harmless; a squatter's could be signalled or drained
            // at will, or lock us out later by its DACL: keep it only if its owner is trusted.
            security::check_owner(
                semaphore.as_raw_handle(),
                &object,
                &opts.trusted,
                |op, code| error(op, name, namespace, code),
            )?;
        }
        Ok(Waiter { semaphore })
    }

    fn wait(
        &self,
        sleepers: &AtomicU32,
        word: &AtomicU32,
        expected: u32,
        deadline: Option<Instant>,
    ) {
        let timeout = match super::remaining(deadline) {
            Some(r) if r.is_zero() => return,
            Some(r) => r.min(MAX_WAIT),
            None => MAX_WAIT,
        };
        // Whole milliseconds, rounded up so a short wait does not become a busy poll.
        let millis = u32::try_from(timeout.as_nanos().div_ceil(1_000_000))
            .unwrap_or(INFINITE - 1)
            .min(INFINITE - 1);
        // Relaxed increment + SeqCst fence, then the load of the word: pairs with the SeqCst
        // fence in `wake_all` between the waker's change of the word and its load of the
        // count. In the fences' single total order, either ours comes first, so the waker's
        // load sees our increment and releases a token for us, or theirs does, so our load
        // below sees the changed word and we do not block. Either way no wake-up is lost.
        sleepers.fetch_add(1, Relaxed);
        fence(SeqCst);
        if word.load(Relaxed) == expected {
            // SAFETY: the semaphore handle is valid while `self` lives.
            let result = unsafe { WaitForSingleObject(self.semaphore.as_raw_handle(), millis) };
            // WAIT_OBJECT_0: a token; WAIT_TIMEOUT: deadline or MAX_WAIT. Anything else
            // (WAIT_FAILED) would be a bug; the caller re-checks the word in every case.
            debug_assert!(
                result == WAIT_OBJECT_0 || result == WAIT_TIMEOUT,
                "WaitForSingleObject: {result:#x}, error {}",
                last_error()
            );
        }
        // Saturating, so that a count zeroed by a buggy process does not wrap to 2^32 - 1 and
        // flood the semaphore with tokens on the next wake. Relaxed: the count only sizes
        // future releases; an extra or missing token is covered as described on `Waiter`.
        let _ = sleepers.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }

    fn wake_all(&self, sleepers: &AtomicU32, _word: &AtomicU32) {
        // Pairs with the fence in `wait` (see there): the caller has just changed the word.
        fence(SeqCst);
        let count = sleepers.load(Relaxed);
        if count == 0 {
            return;
        }
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        let ok =
            // SAFETY: the semaphore handle is valid while `self` lives (opened with
            // SEMAPHORE_MODIFY_STATE); the previous count is not asked for (null).
            unsafe { ReleaseSemaphore(self.semaphore.as_raw_handle(), count, ptr::null_mut()) };
        // The only expected failure is ERROR_TOO_MANY_POSTS: the semaphore already holds
        // nearly i32::MAX tokens, which is more than enough for every sleeper.
        let _ = ok;
    }
}

/// [`Error::UntrustedOwner`] if the semaphore `os` (displayed as `object`) exists, lets us
/// read its owner, and `opts.trusted` refuses that owner; `None` otherwise.
fn untrusted_semaphore(os: &[u16], object: &str, opts: &OsOptions) -> Option<Error> {
    // SAFETY: `os` is a NUL-terminated UTF-16 string that outlives the call; the handle is
    // not inheritable.
    let semaphore = own(unsafe { OpenSemaphoreW(READ_CONTROL, FALSE, os.as_ptr()) })?;
    let checked = security::check_owner(
        semaphore.as_raw_handle(),
        object,
        &opts.trusted,
        |op, code| error(op, object, opts.namespace, code),
    );
    match checked {
        Err(e @ Error::UntrustedOwner { .. }) => Some(e),
        _ => None,
    }
}

/// Process identity and liveness: the pid plus the process's creation time, so a recycled
/// pid is not mistaken for the original process.
pub(crate) struct Process;

/// Creation time of the process behind `process` (a FILETIME as one u64), or `None`.
fn creation_time(process: HANDLE) -> Option<u64> {
    let mut created = FILETIME::default();
    let mut exited = FILETIME::default();
    let mut kernel = FILETIME::default();
    let mut user = FILETIME::default();
    // SAFETY: `process` is a valid handle with PROCESS_QUERY_LIMITED_INFORMATION (or the
    // current-process pseudo handle); the four out pointers are valid FILETIMEs.
    let ok = unsafe { GetProcessTimes(process, &mut created, &mut exited, &mut kernel, &mut user) };
    (ok != FALSE)
        .then(|| (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
}

impl OsProcess for Process {
    fn current() -> ProcessId {
        // Windows has no fork, so this process's identity never changes.
        static CURRENT: OnceLock<ProcessId> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            // SAFETY: no preconditions; returns a pseudo handle that needs no closing.
            let me = unsafe { GetCurrentProcess() };
            ProcessId {
                pid: std::process::id(),
                start: creation_time(me).unwrap_or(0),
            }
        })
    }

    fn liveness(id: ProcessId) -> Liveness {
        // Pid 0 is the idle process: never a lock holder.
        if id.pid == 0 {
            return Liveness::Dead;
        }
        // SAFETY: plain call with a pid; the handle is not inheritable.
        let raw = unsafe {
            OpenProcess(
                PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_SYNCHRONIZE,
                FALSE,
                id.pid,
            )
        };
        let process = match own(raw) {
            Some(process) => process,
            // No such process (its object is gone: exited and every handle closed).
            None if last_error() == ERROR_INVALID_PARAMETER => return Liveness::Dead,
            None => {
                // Protected or another user's process may refuse SYNCHRONIZE; retry with
                // only the right that every user gets for every process.
                // SAFETY: as above.
                let raw = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, FALSE, id.pid) };
                match own(raw) {
                    Some(process) => process,
                    None if last_error() == ERROR_INVALID_PARAMETER => return Liveness::Dead,
                    None => return Liveness::Unknown,
                }
            }
        };
        let handle = process.as_raw_handle();
        if id.start != 0 {
            match creation_time(handle) {
                Some(start) if start != id.start => return Liveness::Dead,
                Some(_) => {}
                None => return Liveness::Unknown,
            }
        }
        // A process object outlives the process while handles to it are open (like a
        // zombie); it is signalled once the process has exited.
        // SAFETY: `handle` is a valid process handle; a zero timeout only polls.
        match unsafe { WaitForSingleObject(handle, 0) } {
            WAIT_OBJECT_0 => return Liveness::Dead,
            WAIT_TIMEOUT => return Liveness::Alive,
            _ => {} // no SYNCHRONIZE right: ask for the exit code instead
        }
        let mut code = 0u32;
        // SAFETY: `handle` has PROCESS_QUERY_LIMITED_INFORMATION; `code` is a valid out pointer.
        if unsafe { GetExitCodeProcess(handle, &mut code) } == FALSE {
            return Liveness::Unknown;
        }
        // A process that exited with code 259 looks alive here: the cost is only that its
        // lock is not recovered until the pid is reused, and only without SYNCHRONIZE.
        if code == STILL_ACTIVE as u32 {
            Liveness::Alive
        } else {
            Liveness::Dead
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exited_child_is_dead_while_its_handle_is_still_open() {
        // Runs this test binary again with a filter that matches no test: it exits at once.
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "no-such-test"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        child.wait().unwrap();
        // `child` still holds its process handle, so the process object (and pid) survive:
        // the exited-but-referenced case, the Windows analogue of a zombie.
        assert_eq!(
            Process::liveness(ProcessId { pid, start: 0 }),
            Liveness::Dead
        );
        drop(child);
        assert_eq!(
            Process::liveness(ProcessId { pid, start: 0 }),
            Liveness::Dead
        );
    }

    #[test]
    fn object_names_carry_the_namespace_and_suffix() {
        let to_string = |w: Vec<u16>| {
            assert_eq!(w.last(), Some(&0), "NUL-terminated");
            String::from_utf16(&w[..w.len() - 1]).unwrap()
        };
        assert_eq!(
            to_string(object_name("cam0", Namespace::Local, "")),
            "Local\\cam0"
        );
        assert_eq!(
            to_string(object_name("cam0", Namespace::Global, WAKE_SUFFIX)),
            "Global\\cam0#mmf-wake"
        );
    }

    #[test]
    fn win32_errors_map_to_the_portable_variants() {
        let map = |code| error("OpenFileMappingW", "x", Namespace::Local, code);
        assert!(matches!(map(ERROR_FILE_NOT_FOUND), Error::NotFound { .. }));
        assert!(matches!(
            map(ERROR_ALREADY_EXISTS),
            Error::AlreadyExists { .. }
        ));
        assert!(matches!(
            map(ERROR_ACCESS_DENIED),
            Error::PermissionDenied {
                hint: HINT_OPEN,
                ..
            }
        ));
        assert!(matches!(map(ERROR_INVALID_NAME), Error::InvalidName { .. }));
        let other = map(ERROR_NOT_ALL_ASSIGNED);
        assert_eq!(other.os_code(), Some(ERROR_NOT_ALL_ASSIGNED as i32));
        assert!(matches!(
            error(
                "CreateFileMappingW",
                "x",
                Namespace::Global,
                ERROR_ACCESS_DENIED
            ),
            Error::PermissionDenied {
                hint: HINT_CREATE_GLOBAL,
                ..
            }
        ));
    }

    #[test]
    fn a_token_wakes_a_sleeper_and_a_changed_word_prevents_the_sleep() {
        let waiter = std::sync::Arc::new(Waiter::for_tests());
        let sleepers = std::sync::Arc::new(AtomicU32::new(0));
        let word = std::sync::Arc::new(AtomicU32::new(1));
        // Word already differs: returns at once without consuming or needing a token.
        let start = Instant::now();
        waiter.wait(&sleepers, &word, 2, None);
        assert!(start.elapsed() < Duration::from_millis(500));
        assert_eq!(sleepers.load(SeqCst), 0);

        let t = {
            let (waiter, sleepers, word) = (waiter.clone(), sleepers.clone(), word.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                waiter.wait(&sleepers, &word, 1, None);
                start.elapsed()
            })
        };
        while sleepers.load(SeqCst) == 0 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(100));
        word.store(2, SeqCst);
        waiter.wake_all(&sleepers, &word);
        let slept = t.join().unwrap();
        assert!(slept >= Duration::from_millis(100), "{slept:?}");
        assert!(
            slept < MAX_WAIT,
            "woken by the token, not the cap: {slept:?}"
        );
        assert_eq!(sleepers.load(SeqCst), 0);
    }
}
