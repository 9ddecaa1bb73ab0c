//! POSIX backend: `shm_open` + `ftruncate` + `mmap`, waiting on a shared futex (Linux) or by
//! a bounded spin-then-sleep where the platform has no cross-process futex we use.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use rustix::fs::{self, Mode};
use rustix::io::Errno;
use rustix::mm::{self, MapFlags, ProtFlags};
use rustix::shm;

use super::{
    Access, Hold, Liveness, Namespace, OsOptions, OsProcess, OsSegment, OsWaiter, ProcessId,
    HEADER_LEN,
};
use crate::error::{Error, Result};

/// A mapped POSIX shared-memory object.
pub(crate) struct Segment {
    /// Kept open for `fstat` (identity checks) and, on Linux, for the open-file-description
    /// locks that tell other processes this handle is alive (`hold_byte`). Every handle opens
    /// its own (`shm_open`), so every handle has its own open file description; rustix's
    /// `shm::open` sets `FD_CLOEXEC`, as POSIX requires of `shm_open` (and [`OPEN_FLAGS`]
    /// asks again), so an `exec` closes it and releases those locks. Closing it would not
    /// unmap anything.
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Segment` owns a process-wide mapping and a file descriptor, neither tied to the
// thread that made them; the raw pointer is only dereferenced by callers that synchronise
// through the in-region lock or atomics, which work across threads as across processes.
unsafe impl Send for Segment {}
// SAFETY: `&Segment` only exposes the pointer and length (no interior mutability of its own).
unsafe impl Sync for Segment {}

/// The OS name for a portable segment name: `/name`.
///
/// macOS limits POSIX shm names to 31 bytes (PSHMNAMLEN), so longer names are replaced there
/// by a fixed-length hash; every process computes the same one.
/// The system page size: what the headerless layout rounds its objects up to.
pub(crate) fn page_size() -> usize {
    rustix::param::page_size()
}

fn os_name(name: &str) -> String {
    if cfg!(target_os = "macos") && name.len() > 30 {
        // FNV-1a 64: stable across builds and processes, unlike std's RandomState.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("/mmf.{hash:016x}")
    } else {
        format!("/{name}")
    }
}

/// Maps an errno from operation `op` on segment `name` to the matching typed error.
fn error(op: &'static str, name: &str, errno: Errno) -> Error {
    match errno {
        Errno::EXIST => Error::AlreadyExists {
            name: name.to_owned(),
        },
        Errno::NOENT => Error::NotFound {
            name: name.to_owned(),
        },
        Errno::ACCESS | Errno::PERM => Error::PermissionDenied {
            name: name.to_owned(),
            op,
            hint: "the segment's owner or mode (see MmfOptions::mode) does not allow this user; try open_read_only",
        },
        Errno::NAMETOOLONG => Error::InvalidName {
            name: name.to_owned(),
            reason: "it is too long for this platform",
        },
        other => Error::os(op, other.into()),
    }
}

/// Flags added to every `shm_open`, which (opening `/dev/shm/<name>` on Linux) is an
/// `open(2)` of a path in a directory every user can write to:
///
/// - `O_NOFOLLOW`: a symbolic link planted under the name fails with `ELOOP` instead of
///   leading us to an object (or a file) elsewhere;
/// - `O_NONBLOCK`: a FIFO planted under the name opens at once instead of blocking until a
///   writer appears (forever, past any open timeout); `fstat` then refuses it. On a regular
///   file the flag changes nothing (tmpfs never blocks, and `mmap` ignores it), so it stays
///   set;
/// - `O_CLOEXEC`: see [`Segment::fd`];
/// - `O_NOCTTY`: a terminal device under the name must not become our controlling terminal.
///
/// A device node under the name is opened before `fstat` refuses it, and opening some devices
/// has effects of its own (a tape rewinds). We accept that rather than open with `O_PATH` and
/// reopen through `/proc/self/fd` (which needs `/proc`): creating a device node takes
/// `CAP_MKNOD` in the initial user namespace (a user namespace may not create one), so only
/// root can plant one, and root is trusted anyway (see [`TrustedOwners`](crate::TrustedOwners)).
///
/// glibc's `shm_open` adds `O_NOFOLLOW | O_CLOEXEC` itself (sysdeps/posix/shm_open.c), musl
/// and LLVM's libc add all three, but rustix's Linux backend makes the `open` system call
/// directly and adds only `O_CLOEXEC`; so we ask for them here. Linux and Android only: there
/// the name is a path; other systems keep shm objects out of the file system (FreeBSD's
/// `shm_open` refuses flags it does not know with `EINVAL`), and the `fstat` check below
/// still applies.
#[cfg(any(target_os = "linux", target_os = "android"))]
const OPEN_FLAGS: shm::OFlags = shm::OFlags::from_bits_retain(
    (libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY) as _,
);
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const OPEN_FLAGS: shm::OFlags = shm::OFlags::empty();

/// What a non-regular file under a segment name is, for [`Error::NotRegularFile`].
fn file_kind(file_type: fs::FileType) -> &'static str {
    match file_type {
        fs::FileType::RegularFile => "regular file",
        fs::FileType::Directory => "directory",
        fs::FileType::Symlink => "symbolic link",
        fs::FileType::Fifo => "FIFO (named pipe)",
        fs::FileType::Socket => "socket",
        fs::FileType::CharacterDevice => "character device",
        fs::FileType::BlockDevice => "block device",
        _ => "file of unknown type",
    }
}

fn not_regular(name: &str, kind: &'static str) -> Error {
    Error::NotRegularFile {
        name: name.to_owned(),
        kind,
    }
}

/// Opens the existing object `name` with `access` (`RDONLY` or `RDWR`) and returns it with
/// its `fstat`, refusing anything but a regular file (a shm object is one) with
/// [`Error::NotRegularFile`]. Every open of an existing name goes through here.
fn open_existing(name: &str, access: shm::OFlags) -> Result<(OwnedFd, fs::Stat)> {
    let fd = shm::open(os_name(name).as_str(), access | OPEN_FLAGS, Mode::empty()).map_err(
        |e| match e {
            // O_NOFOLLOW's answer for a symbolic link as the last component (open(2)).
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Errno::LOOP => not_regular(name, "symbolic link"),
            // A directory opened for writing (a read-only open succeeds; fstat catches it).
            Errno::ISDIR => not_regular(name, "directory"),
            // A socket, or a device file without a driver (open(2)).
            Errno::NXIO => not_regular(name, "socket or device file"),
            other => error("shm_open", name, other),
        },
    )?;
    let stat = fs::fstat(&fd).map_err(|e| error("fstat", name, e))?;
    match fs::FileType::from_raw_mode(stat.st_mode) {
        fs::FileType::RegularFile => Ok((fd, stat)),
        other => Err(not_regular(name, file_kind(other))),
    }
}

/// [`Error::UntrustedOwner`] unless `trusted` accepts the owner of the object `stat`
/// describes.
fn check_owner(name: &str, stat: &fs::Stat, trusted: &crate::trust::TrustedOwners) -> Result<()> {
    let me = rustix::process::geteuid().as_raw();
    #[allow(clippy::unnecessary_cast)]
    let (owner, group) = (stat.st_uid as u32, stat.st_gid as u32);
    if trusted.accepts(me, owner, group) {
        Ok(())
    } else {
        Err(Error::UntrustedOwner {
            name: name.to_owned(),
            owner: crate::error::Owner::Unix { user: owner, group },
        })
    }
}

/// `mmap` flags: always shared; populated up front if asked (Linux only; elsewhere the
/// pages are touched by `prefault`).
fn map_flags(prefault: bool) -> MapFlags {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if prefault {
        return MapFlags::SHARED | MapFlags::POPULATE;
    }
    let _ = prefault;
    MapFlags::SHARED
}

/// Maps the first `len` bytes of `fd` shared, with `access`, populated if `prefault`.
fn map_fd(
    fd: &OwnedFd,
    len: usize,
    access: Access,
    prefault: bool,
    name: &str,
) -> Result<NonNull<u8>> {
    let prot = match access {
        Access::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
        Access::ReadOnly => ProtFlags::READ,
    };
    // SAFETY: a fresh mapping at a kernel-chosen address (null hint) cannot alias any
    // existing Rust object; `fd` is a valid open descriptor and `len` is non-zero.
    let raw = unsafe { mm::mmap(std::ptr::null_mut(), len, prot, map_flags(prefault), fd, 0) }
        .map_err(|e| match e {
            Errno::NOMEM | Errno::OVERFLOW => Error::InvalidSize {
                size: len as u64,
                reason: "it is larger than this process can map",
            },
            other => error("mmap", name, other),
        })?;
    NonNull::new(raw.cast::<u8>()).ok_or_else(|| Error::corrupt("mmap returned null"))
}

impl Segment {
    fn map(fd: OwnedFd, len: usize, access: Access, opts: &OsOptions, name: &str) -> Result<Self> {
        let ptr = map_fd(&fd, len, access, opts.prefault, name)?;
        let segment = Segment { fd, ptr, len };
        segment.apply_options(opts)?;
        Ok(segment)
    }

    /// Large pages and, where `MAP_POPULATE` does not exist, prefaulting by hand.
    fn apply_options(&self, opts: &OsOptions) -> Result<()> {
        if opts.large_pages {
            self.advise_huge_pages()?;
        }
        if opts.prefault && !cfg!(any(target_os = "linux", target_os = "android")) {
            self.touch_pages();
        }
        Ok(())
    }

    /// Asks for transparent huge pages on this shmem mapping (Linux).
    fn advise_huge_pages(&self) -> Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            const SHMEM_THP: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";
            let policy = std::fs::read_to_string(SHMEM_THP).unwrap_or_default();
            if policy.contains("[never]") || policy.contains("[deny]") || policy.is_empty() {
                return Err(Error::Unsupported {
                    what: "huge pages for shared memory are disabled on this system \
                           (/sys/kernel/mm/transparent_hugepage/shmem_enabled must be advise, within_size or always)",
                });
            }
            // SAFETY: the range is exactly our own live mapping; MADV_HUGEPAGE is advisory and
            // never changes the mapping's contents.
            unsafe {
                mm::madvise(
                    self.ptr.as_ptr().cast(),
                    self.len,
                    mm::Advice::LinuxHugepage,
                )
            }
            .map_err(|e| Error::os("madvise(MADV_HUGEPAGE)", e.into()))
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Err(Error::Unsupported {
            what: "large pages for named shared memory are available on Linux and Windows only",
        })
    }

    /// Faults every page in by reading one byte of each.
    fn touch_pages(&self) {
        let page = rustix::param::page_size();
        for offset in (0..self.len).step_by(page) {
            // SAFETY: offset < len, so the pointer stays inside our mapping.
            let byte = unsafe { self.ptr.as_ptr().add(offset) };
            // SAFETY: the byte lies inside our live, readable mapping.
            unsafe { std::ptr::read_volatile(byte) };
        }
    }

    /// The object's size now (`fstat`), which another process may have changed with
    /// `ftruncate` since we mapped it.
    pub(crate) fn current_len(&self) -> Result<u64> {
        let stat = fs::fstat(&self.fd).map_err(|e| Error::os("fstat", e.into()))?;
        #[allow(clippy::unnecessary_cast)]
        Ok(stat.st_size.max(0) as u64)
    }

    /// `(device, inode)` of the object behind `fd`.
    fn identity(fd: &OwnedFd) -> Result<(u64, u64)> {
        let stat = fs::fstat(fd).map_err(|e| Error::os("fstat", e.into()))?;
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        Ok((stat.st_dev as u64, stat.st_ino as u64))
    }
}

impl OsSegment for Segment {
    fn create(name: &str, len: usize, opts: &OsOptions) -> Result<Self> {
        let os = os_name(name);
        let mode = Mode::from_bits_truncate(opts.mode as _);
        // No OPEN_FLAGS needed: with O_CREAT | O_EXCL, open(2) fails with EEXIST on anything
        // already under the name, a symbolic link (dangling or not) or a FIFO included, and
        // rustix adds O_CLOEXEC.
        let fd = shm::open(
            os.as_str(),
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            mode,
        )
        .map_err(|e| error("shm_open", name, e))?;
        // From here on the name is ours: remove it again if any later step fails.
        let result = (|| {
            // shm_open's mode is filtered by the umask; set the exact bits asked for.
            #[cfg(not(target_os = "macos"))]
            fs::fchmod(&fd, mode).map_err(|e| error("fchmod", name, e))?;
            fs::ftruncate(&fd, len as u64).map_err(|e| match e {
                Errno::FBIG | Errno::INVAL | Errno::NOSPC | Errno::NOMEM => Error::InvalidSize {
                    size: len as u64,
                    reason: "the system cannot provide a shared memory object this large",
                },
                other => error("ftruncate", name, other),
            })?;
            // Reserve the memory now: on tmpfs a later write to a page that cannot be
            // allocated raises SIGBUS; this turns that into an error at creation.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            match fs::fallocate(&fd, fs::FallocateFlags::empty(), 0, len as u64) {
                Ok(()) | Err(Errno::OPNOTSUPP) | Err(Errno::NOSYS) => {}
                Err(Errno::NOSPC) | Err(Errno::NOMEM) | Err(Errno::FBIG) => {
                    return Err(Error::InvalidSize {
                        size: len as u64,
                        reason: "not enough shared memory is free (/dev/shm is full or limited)",
                    })
                }
                Err(other) => return Err(error("fallocate", name, other)),
            }
            Segment::map(fd, len, Access::ReadWrite, opts, name)
        })();
        if result.is_err() {
            // Ignored: the original error is the one worth reporting.
            let _ = shm::unlink(os.as_str());
        }
        result
    }

    fn open(name: &str, access: Access, opts: &OsOptions) -> Result<Option<Self>> {
        let flags = match access {
            Access::ReadWrite => shm::OFlags::RDWR,
            Access::ReadOnly => shm::OFlags::RDONLY,
        };
        let (fd, stat) = open_existing(name, flags)?;
        // Before anything is mapped: a stranger's object is not even read.
        check_owner(name, &stat, &opts.trusted)?;
        if stat.st_size <= 0 {
            return Ok(None);
        }
        // The header page only, neither prefaulted nor on large pages: `remap` maps what the
        // validated header says, with the caller's options. A shorter object is mapped whole
        // (the caller refuses it as too short to hold a header).
        let len = usize::try_from(stat.st_size).map_or(HEADER_LEN, |size| size.min(HEADER_LEN));
        let ptr = map_fd(&fd, len, access, false, name)?;
        Ok(Some(Segment { fd, ptr, len }))
    }

    fn remap(&mut self, len: usize, access: Access, opts: &OsOptions, name: &str) -> Result<()> {
        // The new mapping first, so that a failure leaves `self` as it was. Mapping past the
        // object's end is allowed (touching those pages would fault, and MAP_POPULATE skips
        // them); the caller compares the object's size with `len` afterwards.
        let ptr = map_fd(&self.fd, len, access, opts.prefault, name)?;
        // SAFETY: ptr/len describe the mapping made by `open`, which the caller no longer
        // uses (its fault registration is gone, and nothing borrows its memory: no `Mmf`
        // exists yet); it is replaced below, so `drop` never unmaps it again.
        let result = unsafe { mm::munmap(self.ptr.as_ptr().cast(), self.len) };
        // munmap of a mapping we made can only fail on a bug; the new mapping is usable anyway.
        debug_assert!(result.is_ok(), "munmap failed: {result:?}");
        self.ptr = ptr;
        self.len = len;
        self.apply_options(opts)
    }

    fn object_len(&self) -> Result<u64> {
        self.current_len()
    }

    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn remove(name: &str, _namespace: Namespace) -> Result<()> {
        shm::unlink(os_name(name).as_str()).map_err(|e| error("shm_unlink", name, e))
    }

    fn hold_byte(&self, offset: u64) -> Hold {
        #[cfg(target_os = "linux")]
        match ofd_lock(
            &self.fd,
            F_OFD_SETLK,
            libc::F_WRLCK as libc::c_short,
            offset,
        ) {
            Ok(_) => Hold::Held,
            // Another open file description holds it (fcntl(2): EACCES or EAGAIN).
            Err(Errno::AGAIN) | Err(Errno::ACCESS) => Hold::Busy,
            // EINVAL: a kernel before 3.15; anything else: a sandbox. Fall back.
            Err(_) => Hold::Unsupported,
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = offset;
            Hold::Unsupported
        }
    }

    fn release_byte(&self, offset: u64) {
        #[cfg(target_os = "linux")]
        {
            // Cannot fail for a lock we hold on our own descriptor; if it did, closing the
            // descriptor releases it anyway.
            let result = ofd_lock(
                &self.fd,
                F_OFD_SETLK,
                libc::F_UNLCK as libc::c_short,
                offset,
            );
            debug_assert!(result.is_ok(), "F_OFD_SETLK(F_UNLCK) failed: {result:?}");
        }
        #[cfg(not(target_os = "linux"))]
        let _ = offset;
    }

    fn byte_liveness(&self, offset: u64) -> Liveness {
        // Probed as a read lock, which conflicts only with write locks: every holder takes
        // F_WRLCK (hold_byte), which needs a read-write descriptor, while a read lock can be
        // taken through a read-only one. So a peer that may only read the object (a frame
        // channel's reader) cannot make a dead holder look alive by read-locking its byte.
        #[cfg(target_os = "linux")]
        match ofd_lock(
            &self.fd,
            F_OFD_GETLK,
            libc::F_RDLCK as libc::c_short,
            offset,
        ) {
            // GETLK reports the first lock that would conflict with ours, or F_UNLCK if none.
            Ok(kind) if kind == libc::F_UNLCK as libc::c_short => Liveness::Dead,
            Ok(_) => Liveness::Alive,
            Err(_) => Liveness::Unknown,
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = offset;
            Liveness::Unknown
        }
    }

    fn remove_if_same(&self, name: &str, namespace: Namespace) -> Result<()> {
        // Hardened like every open: a FIFO planted under the name after ours was removed
        // would otherwise block this (the creator's drop) forever.
        let (current, _) = open_existing(name, shm::OFlags::RDONLY)?;
        if Self::identity(&current)? == Self::identity(&self.fd)? {
            Self::remove(name, namespace)
        } else {
            Ok(())
        }
    }
}

/// `fcntl` with an open-file-description lock command on one byte (Linux).
///
/// The raw system call, with `struct flock64`: on 32-bit Linux the `fcntl` system call
/// refuses `F_OFD_*` ("32-bit arches must use fcntl64()", fs/fcntl.c) and `fcntl64` reads a
/// `struct flock64`; on 64-bit there is only `fcntl`, whose `struct flock` has the same
/// layout. Calling the kernel directly relies on no C library's translation of the commands
/// (glibc before 2.28 passed a 32-bit `struct flock` through unchanged).
#[cfg(target_os = "linux")]
fn ofd_lock(
    fd: &OwnedFd,
    cmd: libc::c_int,
    kind: libc::c_short,
    offset: u64,
) -> Result<libc::c_short, Errno> {
    use std::os::fd::AsRawFd;
    #[cfg(target_pointer_width = "32")]
    const SYS_FCNTL: libc::c_long = libc::SYS_fcntl64;
    #[cfg(target_pointer_width = "64")]
    const SYS_FCNTL: libc::c_long = libc::SYS_fcntl;
    // SAFETY: flock64 is plain integers; all-zero is a valid value (l_pid must be 0 for
    // the OFD commands, fcntl(2)).
    let mut lock: libc::flock64 = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = offset as libc::off64_t;
    lock.l_len = 1;
    let (raw_fd, lock_ptr) = (fd.as_raw_fd(), std::ptr::addr_of_mut!(lock));
    // F_OFD_SETLK/F_OFD_GETLK read (and GETLK writes) a flock64 through the third argument
    // of this system call on this word size (see above).
    // SAFETY: `raw_fd` is our open descriptor; `lock_ptr` points to a valid, writable
    // flock64 that outlives the call.
    let ret = unsafe { libc::syscall(SYS_FCNTL, raw_fd, cmd, lock_ptr) };
    if ret == -1 {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL))
    } else {
        Ok(lock.l_type)
    }
}

/// `F_OFD_GETLK`, `F_OFD_SETLK` (fcntl(2); <linux/fcntl.h>, the same on every architecture).
#[cfg(target_os = "linux")]
const F_OFD_GETLK: libc::c_int = 36;
#[cfg(target_os = "linux")]
const F_OFD_SETLK: libc::c_int = 37;

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe the mapping made in `map`, unmapped only here; every
        // borrow of its memory is tied to a borrow of the owning `Mmf`, which has ended.
        let result = unsafe { mm::munmap(self.ptr.as_ptr().cast(), self.len) };
        // munmap of a mapping we made can only fail on a bug; nothing useful to do in drop.
        debug_assert!(result.is_ok(), "munmap failed: {result:?}");
    }
}

/// Waiting on a word of a segment.
///
/// Linux: `FUTEX_WAIT`/`FUTEX_WAKE` without `FUTEX_PRIVATE_FLAG`, so the kernel keys the
/// wait on the shared page rather than on this process's address space.
/// Elsewhere (macOS, FreeBSD, and under Miri): a bounded spin by the caller followed by short
/// sleeps here, re-checking the word between them.
pub(crate) struct Waiter(());

/// Sleep between checks where there is no shared futex.
#[cfg(any(miri, not(any(target_os = "linux", target_os = "android"))))]
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_micros(500);

impl Waiter {
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Waiter(())
    }
}

impl OsWaiter for Waiter {
    fn new(_name: &str, _opts: &OsOptions, _create: bool, _access: Access) -> Result<Self> {
        Ok(Waiter(()))
    }

    fn wait(
        &self,
        _sleepers: &AtomicU32,
        word: &AtomicU32,
        expected: u32,
        deadline: Option<Instant>,
    ) {
        let remaining = super::remaining(deadline);
        if remaining.is_some_and(|r| r.is_zero()) {
            return;
        }
        #[cfg(all(not(miri), any(target_os = "linux", target_os = "android")))]
        {
            use rustix::thread::futex;
            let timeout = remaining.map(|r| futex::Timespec {
                tv_sec: r.as_secs().try_into().unwrap_or(i64::MAX as _),
                tv_nsec: r.subsec_nanos().into(),
            });
            // Errors are all benign here: EAGAIN (the word already changed), EINTR (a
            // signal), ETIMEDOUT (deadline). The caller re-checks the word in every case.
            let _ = futex::wait(word, futex::Flags::empty(), expected, timeout.as_ref());
        }
        #[cfg(any(miri, not(any(target_os = "linux", target_os = "android"))))]
        {
            use std::sync::atomic::Ordering::Relaxed;
            if word.load(Relaxed) == expected {
                std::thread::sleep(remaining.map_or(POLL_INTERVAL, |r| r.min(POLL_INTERVAL)));
            }
        }
    }

    fn wake_all(&self, _sleepers: &AtomicU32, word: &AtomicU32) {
        #[cfg(all(not(miri), any(target_os = "linux", target_os = "android")))]
        {
            use rustix::thread::futex;
            // An error would mean the word is not mapped, which the caller's borrow rules out.
            // i32::MAX: the kernel reads the count as an int, and "all" is INT_MAX.
            let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
        }
        #[cfg(any(miri, not(any(target_os = "linux", target_os = "android"))))]
        let _ = word; // sleepers poll; nothing to signal
    }
}

/// Process identity and liveness: the fallback for holders without a kernel-locked byte
/// (see the lock module, "Owner death"; on Linux every handle normally has one, so this
/// answers only where `F_OFD_SETLK` is refused, and elsewhere always).
///
/// Linux: pid plus `starttime` (field 22 of `/proc/<pid>/stat`), so a recycled pid is not
/// mistaken for the original process; zombies count as dead (a killed process stays a zombie
/// until its parent reaps it, but it holds nothing any more; the price is that a zombie
/// *leader* whose other threads still run is taken for dead too). Its answers mean nothing
/// across PID namespaces. Elsewhere: the pid alone, probed with `kill(pid, 0)`.
pub(crate) struct Process;

/// `(state, starttime)` of `pid` from procfs, or `None` if there is no such process.
///
/// Read from `/proc/<pid>/task/<pid>/stat`, the thread-group leader's own entry: the kernel
/// gives it the same state and starttime as `/proc/<pid>/stat` (both describe the leader;
/// they differ only in the summed counters, which we do not read). The longer path is
/// there for qemu-user (e.g. arm64 containers on an x86_64 host): it answers a process's
/// reads of `/proc/self/stat` and `/proc/<own pid>/stat` itself, with a starttime taken when
/// the *calling thread* started (and, for the main thread, a few ticks off the kernel's),
/// so a process would record a start time that no other process sees, and be declared dead
/// while alive. It passes the task path through to the kernel, so every process, emulated
/// or not, reads the same value.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn proc_stat(pid: u32) -> Option<(u8, u64)> {
    let stat = std::fs::read(format!("/proc/{pid}/task/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and ')': parse after the last ')'.
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    // starttime is field 22; `state` was field 3, so it is 19 fields further.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl OsProcess for Process {
    fn current() -> ProcessId {
        use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
        // Cached as (pid << 32 | 1) and start; a fork gets a new pid and recomputes.
        static CACHED_PID: AtomicU32 = AtomicU32::new(0);
        static CACHED_START: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        if CACHED_PID.load(Relaxed) == pid {
            return ProcessId {
                pid,
                start: CACHED_START.load(Relaxed),
            };
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let start = proc_stat(pid).map_or(0, |(_, start)| start);
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let start = 0;
        // Relaxed: both values are derived from the pid alone, so a racing thread computes
        // the same ones; a torn pair can only cause a recomputation.
        CACHED_START.store(start, Relaxed);
        CACHED_PID.store(pid, Relaxed);
        ProcessId { pid, start }
    }

    fn liveness(id: ProcessId) -> Liveness {
        if id.pid == 0 || i32::try_from(id.pid).is_err() {
            return Liveness::Dead;
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            match proc_stat(id.pid) {
                // No stat file does not prove death: /proc mounted with hidepid hides other
                // users' live processes. Ask the kernel directly before declaring it dead.
                None => match kill_probe(id.pid) {
                    Liveness::Alive => Liveness::Unknown,
                    other => other,
                },
                Some((b'Z' | b'X', _)) => Liveness::Dead,
                Some((_, start)) if id.start != 0 && start != id.start => Liveness::Dead,
                Some(_) => Liveness::Alive,
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        kill_probe(id.pid)
    }
}

/// `kill(pid, 0)`: whether some process has this pid (it may be a reuse of the pid).
fn kill_probe(pid: u32) -> Liveness {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return Liveness::Dead;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => Liveness::Alive,
        Err(Errno::SRCH) => Liveness::Dead,
        // EPERM: it exists but belongs to someone else.
        Err(_) => Liveness::Unknown,
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn exited_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId {
            pid: child.id(),
            start: 0,
        };
        child.wait().unwrap();
        assert_eq!(Process::liveness(id), Liveness::Dead);
        assert_eq!(
            Process::liveness(ProcessId { pid: 0, start: 0 }),
            Liveness::Dead
        );
    }
}

/// Whether a wake-up names the word it wakes (a futex): then a release that must wake
/// sleepers on two words wakes each. Elsewhere here sleepers poll, and a wake is a no-op.
pub(crate) const WAKES_BY_WORD: bool = true;
