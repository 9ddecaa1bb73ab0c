//! The public segment type, its builder and its lock guards.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{fence, AtomicU32};
use std::time::{Duration, Instant};

use crate::error::{Error, LockError, LockResult, PoisonError, Result};
use crate::header::{Header, HEADER_LEN};
use crate::lock::{
    Acquired, Context, Hold, Holder, Liveness, NotAcquired, Presence, RawRwLock, SharedRwLock,
    Waiter, LOCK_AREA_WORDS, UNTRACKED,
};
use crate::name;
use crate::sys::{self, Access, Namespace, OsOptions, OsProcess, OsSegment, OsWaiter};
use crate::trust::TrustedOwners;

/// Default time [`MmfOptions::open`] waits for a creator to finish initialising.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(1);

/// Default [`MmfOptions::recovery_interval`]: a process that dies holding the lock blocks
/// the others for at most about this long after its death.
pub const DEFAULT_RECOVERY_INTERVAL: Duration = Duration::from_millis(50);

/// A named shared-memory segment with a reader/writer lock inside it.
///
/// The segment is a header (which holds the lock) followed by the data region of
/// [`len`](Self::len) bytes. Every process that maps the same name sees the same bytes and
/// the same lock. Access the data through the lock, either by copying
/// ([`read_at`](Self::read_at), [`write_at`](Self::write_at),
/// [`read_to_vec`](Self::read_to_vec)) or in place through guards ([`read`](Self::read),
/// [`write`](Self::write) and their `try_`/`_timeout` forms).
///
/// ```no_run
/// use mmf::Mmf;
///
/// # fn main() -> mmf::Result<()> {
/// let writer = Mmf::create("camera-0", 1 << 20)?; // 1 MiB, removed when `writer` drops
/// writer.write_at(0, b"hello")?;
///
/// let reader = Mmf::open("camera-0")?; // typically in another process
/// assert_eq!(reader.read_to_vec(0, 5)?, b"hello");
/// {
///     let mut frame = writer.write()?; // exclusive, zero-copy
///     frame[..5].copy_from_slice(b"HELLO");
/// }
/// assert_eq!(&reader.read()?[..5], b"HELLO");
/// # Ok(()) }
/// ```
///
/// # Data region
///
/// The data region starts [`HEADER_LEN`](crate::header::HEADER_LEN) (4096) bytes into a
/// mapping that the OS places on a page boundary (at least 4096-aligned on every
/// platform: `mmap` returns page-aligned addresses, `MapViewOfFile` allocation-granularity
/// ones, 64 KiB), so it is 4096-aligned in every process that maps it, whatever the address.
/// Anything of alignment up to 4096 can sit at its start: typed views
/// ([`view`](Self::view), [`view_mut`](Self::view_mut), [`view_slice`](Self::view_slice))
/// check it anyway and say [`Error::TypeMismatch`] rather than assume it.
///
/// # Names
///
/// One rule on every platform: 1 to 200 characters from `A-Z a-z 0-9 . _ -`, not starting
/// with `.`. Anything else is [`Error::InvalidName`]. On Linux the object is `/dev/shm/<name>`;
/// on Windows it is `Local\<name>` (or `Global\<name>`).
///
/// # Lifetime
///
/// | event                              | Linux (POSIX shm)                                   | Windows (pagefile section)                 |
/// |------------------------------------|-----------------------------------------------------|--------------------------------------------|
/// | creator's handle dropped           | name removed (unless [`MmfOptions::persist`]); open handles keep working | name lives while any handle is open |
/// | every handle dropped               | data stays under the name only with `persist(true)` | section and name are gone                  |
/// | [`Mmf::remove`]                    | name removed now; open handles keep working          | no effect; `NotFound` if no such section   |
/// | process crashes                    | like a drop, except the name is never removed       | handles are closed by the OS: like a drop  |
///
/// A closed handle cannot be used: guards borrow their `Mmf`, so nothing reads or writes
/// through a handle after it is dropped (checked by the compiler, not at run time):
///
/// ```compile_fail,E0505
/// let segment = mmf::Mmf::create("lifetime-doc", 64)?;
/// let guard = segment.read()?;
/// drop(segment); // error[E0505]: cannot move out of `segment` because it is borrowed
/// let _first = guard[0];
/// # Ok::<(), mmf::Error>(())
/// ```
///
/// # Shared-memory contract
///
/// Other processes can change the data region at any moment unless they respect the lock;
/// `mmf` guarantees exclusion between all handles that use it. A process that writes the
/// region without the lock (or a foreign program mapping the same name) can make a reader
/// see changing bytes, so treat data read from a segment as untrusted input.
/// Everything `mmf` itself reads from the header is validated and bounds-checked.
///
/// # Truncation
///
/// On Linux any process that may open a segment read-write can shrink it with `ftruncate`;
/// touching the vanished pages raises `SIGBUS`, which kills a process by default. `mmf`
/// protects its own accesses:
///
/// | access | after another process shrank the segment (Linux x86_64 / i686) |
/// |--------|------------------------------------------------------------------|
/// | [`read_at`](Self::read_at), [`write_at`](Self::write_at), [`read_to_vec`](Self::read_to_vec), read-only handles' copies | [`Error::Truncated`] if the copy touches a lost page; copies of surviving pages still work. If the header itself was lost, every later copy through this handle is `Truncated` |
/// | the lock and header words `mmf` reads and writes | survive: a lost header page is replaced by a private zero page, and the handle stops copying |
/// | `open` | [`Error::Corrupt`] ("claims … but the segment holds only …") or [`Error::Truncated`] |
/// | **direct access through [`ReadGuard`] / [`WriteGuard`] slices** | **not protected: `SIGBUS`** (your code does the access, there is no `mmf` code to resume) |
///
/// How: copies run through a small routine whose faulting instruction is known, and a
/// process-wide `SIGBUS` handler, installed on the first `create`/`open`, resumes a fault there
/// at an error return (the kernel's exception-table technique). Faults anywhere else are passed
/// to the handler that was installed before (or to the default action), so genuine crashes
/// still crash and an application's own `SIGBUS` handler still runs; an application that
/// installs a `SIGBUS` handler *after* opening a segment must chain to the previous one for this
/// protection to remain. Other Unix systems and architectures check the size with `fstat`
/// before each copy, which catches a shrink that happened before the copy but not one that
/// races with it. On Windows a pagefile-backed section cannot be shrunk, so nothing can vanish.
///
/// To be safe with guards too, do not let untrusted processes open a segment read-write:
/// keep the default [`MmfOptions::mode`] `0o600` (owner only), or grant others read access
/// only (`0o640`/`0o644`), since `ftruncate` needs a read-write descriptor.
///
/// # Threads
///
/// `Mmf` is `Send` and `Sync`: the mapping belongs to the process, not to a thread, and all
/// shared state is reached through atomics or under the in-region lock, which excludes
/// threads of one process exactly as it excludes processes. Guards are `Send` too: the
/// default lock does not record which thread holds it.
pub struct Mmf<L: RawRwLock = SharedRwLock> {
    // Declared (so dropped) before `segment`: the SIGBUS handler must forget the mapping
    // before it is unmapped and its addresses can be reused.
    fault: sys::fault::Registration,
    segment: sys::Segment,
    waiter: sys::Waiter,
    name: String,
    namespace: Namespace,
    data_len: usize,
    access: Access,
    remove_on_drop: bool,
    lock_timeout: Option<Duration>,
    /// This handle's token from `L::attach` ([`UNTRACKED`] for read-only handles).
    token: u32,
    recovery_interval: Duration,
    _lock: PhantomData<fn() -> L>,
}

/// Builder for creating or opening a segment with non-default options.
///
/// ```no_run
/// use std::time::Duration;
/// use mmf::MmfOptions;
///
/// # fn main() -> mmf::Result<()> {
/// let frames = MmfOptions::new("frames")
///     .mode(0o640)              // owner read-write, group read
///     .prefault(true)           // fault pages in now, not on the first frame
///     .persist(true)            // keep the name after this handle drops
///     .open_timeout(Duration::from_millis(200))
///     .create(8 << 20)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MmfOptions<L: RawRwLock = SharedRwLock> {
    // The first five are also read by the headerless layout's builder (`crate::winmmf`).
    pub(crate) name: String,
    pub(crate) os: OsOptions,
    pub(crate) persist: bool,
    pub(crate) open_timeout: Duration,
    pub(crate) lock_timeout: Option<Duration>,
    recovery_interval: Duration,
    /// Segment kind written to / required in the header's `flags` word.
    kind: u32,
    /// An internal companion object (see [`MmfOptions::companion`]).
    companion: bool,
    _lock: PhantomData<fn() -> L>,
}

impl MmfOptions {
    /// Options for segment `name` with the defaults: mode 0600, no prefault, removed when
    /// the creator drops it, 1 s open timeout, blocking copies, local namespace, default lock.
    pub fn new(name: impl Into<String>) -> Self {
        MmfOptions {
            name: name.into(),
            os: OsOptions {
                mode: 0o600,
                prefault: false,
                namespace: Namespace::Local,
                large_pages: false,
                trusted: TrustedOwners::new(),
            },
            persist: false,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            lock_timeout: None,
            recovery_interval: DEFAULT_RECOVERY_INTERVAL,
            kind: crate::header::KIND_PLAIN,
            companion: false,
            _lock: PhantomData,
        }
    }

    /// Creates / requires a segment of `kind` (see [`crate::header::KIND_FRAME_CHANNEL`]).
    pub(crate) fn kind(mut self, kind: u32) -> Self {
        self.kind = kind;
        self
    }

    /// Makes this an internal companion object of a user-named segment, such as a frame
    /// channel's reader table (`<name>+readers`), which peers with fewer rights than the
    /// creator's user may write, truncate and scribble on:
    ///
    /// - its name is `<base>+<suffix>`, with `<base>` a valid user name and `<suffix>` lower-case
    ///   letters: the `+` lies outside the user alphabet, so no user name can collide;
    /// - the handle takes no slot in the header's lock (nobody locks a companion), so nothing
    ///   a peer writes into the header is ever acted on beyond the open-time validation;
    /// - its whole mapping is registered as patchable with the `SIGBUS` handler
    ///   (`sys::fault`): a truncation, whatever instruction touches the lost pages, turns the
    ///   mapping into private zero pages and [`Mmf::mapping_lost`] reports it.
    pub(crate) fn companion(mut self) -> Self {
        self.companion = true;
        self
    }
}

impl<L: RawRwLock> fmt::Debug for MmfOptions<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmfOptions")
            .field("name", &self.name)
            .field("os", &self.os)
            .field("persist", &self.persist)
            .field("open_timeout", &self.open_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("recovery_interval", &self.recovery_interval)
            .field("lock_kind", &L::KIND)
            .finish()
    }
}

impl<L: RawRwLock> MmfOptions<L> {
    /// The name check for this builder: the user rule, or the companion rule.
    fn validate_name(&self) -> Result<()> {
        if self.companion {
            name::validate_companion(&self.name)
        } else {
            name::validate(&self.name)
        }
    }

    /// The fault registration for a mapping made by this builder (see `sys::fault`).
    fn register(&self, segment: &sys::Segment) -> sys::fault::Registration {
        if self.companion {
            sys::fault::Registration::patchable(segment.as_ptr(), segment.len())
        } else {
            sys::fault::Registration::new(segment.as_ptr(), segment.len())
        }
    }

    /// Unix permission bits for a new segment (default `0o600`, owner only). Applied exactly,
    /// regardless of the umask.
    ///
    /// Windows: the bits become the DACL of the section and of the segment's wake semaphore
    /// (a protected DACL, no inherited entries; the object's owner is the creating token's
    /// user). The owner class maps to the creating user, who always gets full control; the
    /// group class to the token's primary group; the other class to Everyone (`S-1-1-0`). `r`
    /// grants mapping the section for reading (`SECTION_MAP_READ | SECTION_QUERY`) and waiting
    /// on the semaphore (`SYNCHRONIZE`), both with `READ_CONTROL` so that the opener can check
    /// the owner; `w` grants those and also `SECTION_MAP_WRITE` and `SEMAPHORE_MODIFY_STATE`
    /// (Windows cannot map write-only pages); `x` grants nothing. A class whose bits are all
    /// clear gets no entry: `0o600` lets only the creating user in, `0o644` lets everyone map
    /// it read-only.
    pub fn mode(mut self, mode: u32) -> Self {
        self.os.mode = mode & 0o777;
        self
    }

    /// Fault every page in when mapping (Linux: `MAP_POPULATE`; Windows and other systems:
    /// one read of every page, which on Windows allocates and zeroes a fresh section page,
    /// the costly part of its first touch). The first touch of a fresh
    /// shared page costs about ten times a warm copy; prefaulting moves that cost to
    /// creation/opening.
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.os.prefault = prefault;
        self
    }

    /// Keep the name after the creator drops its handle (Linux; on Windows a section always
    /// lives exactly as long as its handles). Default `false`. Use [`Mmf::remove`] later.
    pub fn persist(mut self, persist: bool) -> Self {
        self.persist = persist;
        self
    }

    /// How long `open` waits for a creator that is still initialising (default 1 s) before
    /// failing with [`Error::NotReady`].
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// How long the copy methods ([`Mmf::read_at`], [`Mmf::write_at`]) and the plain
    /// [`Mmf::read`]/[`Mmf::write`] wait for the lock; `None` (the default) waits forever.
    pub fn lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How often a process waiting for the lock checks whether the holders it waits for are
    /// still alive (default [`DEFAULT_RECOVERY_INTERVAL`], 50 ms). A holder that dies (killed,
    /// crashed) therefore blocks the others for at most about one interval after its death;
    /// a writer's death [poisons](Mmf::is_poisoned) the lock. Each check reads one small file
    /// per holder (Linux `/proc/<pid>/stat`) or opens a process handle (Windows), so intervals
    /// far below a millisecond cost CPU while waiting. See [`crate::lock`] for the details.
    pub fn recovery_interval(mut self, interval: Duration) -> Self {
        self.recovery_interval = interval;
        self
    }

    /// Kernel namespace of the name (Windows `Local\` or `Global\`; no effect on Unix).
    pub fn namespace(mut self, namespace: Namespace) -> Self {
        self.os.namespace = namespace;
        self
    }

    /// Back the segment with large pages: Windows `SEC_LARGE_PAGES` (needs
    /// `SeLockMemoryPrivilege`), Linux transparent huge pages for shmem (needs
    /// `shmem_enabled` set to `advise`, `within_size` or `always`). If unavailable, creation
    /// fails with a typed error rather than silently using small pages.
    pub fn large_pages(mut self, large_pages: bool) -> Self {
        self.os.large_pages = large_pages;
        self
    }

    /// Also accept existing segments owned by user `uid` (Unix; see [`TrustedOwners`]). By
    /// default `open`, `open_read_only` and `open_or_create` accept only segments owned by
    /// this process's effective user or by root, and refuse others with
    /// [`Error::UntrustedOwner`]: anyone can create a name before its real creator does.
    /// Ignored on Windows, which names owners by SID ([`trust_sid`](Self::trust_sid)).
    pub fn trust_owner(mut self, uid: u32) -> Self {
        self.os.trusted = std::mem::take(&mut self.os.trusted).user(uid);
        self
    }

    /// Also accept existing segments whose group is `gid`, whoever owns them, i.e. made by
    /// any member of that group (Unix; see [`TrustedOwners`]). Ignored on Windows.
    pub fn trust_group(mut self, gid: u32) -> Self {
        self.os.trusted = std::mem::take(&mut self.os.trusted).group(gid);
        self
    }

    /// Also accept existing segments owned by Windows SID `sid`, in string form
    /// (`"S-1-5-21-…"`; see [`TrustedOwners::sid`]). By default only the calling user,
    /// LocalSystem and `BUILTIN\Administrators` are trusted. Ignored on Unix.
    pub fn trust_sid(mut self, sid: impl Into<String>) -> Self {
        self.os.trusted = std::mem::take(&mut self.os.trusted).sid(sid);
        self
    }

    /// Replaces the set of trusted owners (see [`trust_owner`](Self::trust_owner)).
    pub fn trusted_owners(mut self, owners: TrustedOwners) -> Self {
        self.os.trusted = owners;
        self
    }

    /// Use lock type `L2` instead of the default [`SharedRwLock`]. Every process must open
    /// the segment with the same lock type ([`Error::LockMismatch`] otherwise).
    pub fn lock<L2: RawRwLock>(self) -> MmfOptions<L2> {
        MmfOptions {
            name: self.name,
            os: self.os,
            persist: self.persist,
            open_timeout: self.open_timeout,
            lock_timeout: self.lock_timeout,
            recovery_interval: self.recovery_interval,
            kind: self.kind,
            companion: self.companion,
            _lock: PhantomData,
        }
    }

    /// Creates the segment with a data region of `size` bytes, zero-filled.
    ///
    /// Fails with [`Error::AlreadyExists`] if the name is taken; the existing segment is left
    /// untouched.
    pub fn create(&self, size: usize) -> Result<Mmf<L>> {
        self.validate_name()?;
        let total = total_len(size)?;
        let segment = sys::Segment::create(&self.name, total, &self.os).map_err(|e| match e {
            // The OS layer speaks of the whole object; the caller asked for `size`.
            Error::InvalidSize { reason, .. } => Error::InvalidSize {
                size: size as u64,
                reason,
            },
            other => other,
        })?;
        // Built before the header is published, so that a failure here leaves nothing behind
        // (the Mmf's drop removes the name).
        let waiter = sys::Waiter::new(&self.name, &self.os, true, Access::ReadWrite);
        let mut mmf = Mmf {
            fault: self.register(&segment),
            segment,
            waiter: match waiter {
                Ok(w) => w,
                Err(e) => {
                    let _ = sys::Segment::remove(&self.name, self.os.namespace);
                    return Err(e);
                }
            },
            name: self.name.clone(),
            namespace: self.os.namespace,
            data_len: size,
            access: Access::ReadWrite,
            remove_on_drop: !self.persist,
            lock_timeout: self.lock_timeout,
            token: UNTRACKED,
            recovery_interval: self.recovery_interval,
            _lock: PhantomData,
        };
        mmf.header()
            .initialise_with_kind(size as u64, L::KIND, self.kind, L::init);
        if !self.companion {
            mmf.attach();
        }
        Ok(mmf)
    }

    /// Opens an existing segment read-write; its size comes from its header.
    ///
    /// Maps exactly the header and the data length the header states, however large the
    /// object has grown since (another process can enlarge it with `ftruncate`), so nobody
    /// can make an opener map or prefault more than the segment's real size.
    ///
    /// Refuses, before mapping anything: a segment whose owner is not trusted
    /// ([`Error::UntrustedOwner`]; see [`trust_owner`](Self::trust_owner)), and something
    /// other than a shared-memory object under the name, such as a FIFO or a symbolic link
    /// ([`Error::NotRegularFile`], returned at once rather than blocking). These checks apply
    /// to [`open_read_only`](Self::open_read_only) and
    /// [`open_or_create`](Self::open_or_create) too.
    pub fn open(&self) -> Result<Mmf<L>> {
        self.open_with(Access::ReadWrite)
    }

    /// Opens an existing segment read-only: the pages are mapped without write permission,
    /// so a stray write cannot corrupt the segment. Works with read permission alone.
    ///
    /// A read-only handle cannot take the lock (the lock word lives in memory it may not
    /// write): [`Mmf::read_at`] and [`Mmf::read_to_vec`] still return consistent snapshots by
    /// retrying until no writer was active during the copy; the guard methods return
    /// [`Error::ReadOnly`].
    pub fn open_read_only(&self) -> Result<Mmf<L>> {
        self.open_with(Access::ReadOnly)
    }

    /// Opens the segment if it exists, or creates it with `size` data bytes.
    ///
    /// An existing segment of another size is [`Error::SizeMismatch`]; one owned by an
    /// untrusted user is [`Error::UntrustedOwner`] (see [`open`](Self::open)).
    pub fn open_or_create(&self, size: usize) -> Result<Mmf<L>> {
        self.validate_name()?;
        total_len(size)?;
        // Bounded: each round loses a race against another process creating or removing
        // the same name, which cannot go on forever in a healthy system.
        let mut last = None;
        for _ in 0..8 {
            match self.create(size) {
                Err(Error::AlreadyExists { .. }) => {}
                other => return other,
            }
            match self.open() {
                Ok(mmf) if mmf.len() == size => return Ok(mmf),
                Ok(mmf) => {
                    return Err(Error::SizeMismatch {
                        name: self.name.clone(),
                        expected: size as u64,
                        found: mmf.len() as u64,
                    })
                }
                Err(e @ Error::NotFound { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::NotFound {
            name: self.name.clone(),
        }))
    }

    fn open_with(&self, access: Access) -> Result<Mmf<L>> {
        self.validate_name()?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        // The registration (first, so dropped first) lets the SIGBUS handler survive a
        // truncation that races with validation below.
        let mut mapped: Option<(sys::fault::Registration, sys::Segment)> = None;
        loop {
            if mapped.is_none() {
                mapped = sys::Segment::open(&self.name, access, &self.os)?.map(|segment| {
                    let fault = self.register(&segment);
                    (fault, segment)
                });
            }
            if let Some((fault, segment)) = &mapped {
                if segment.len() < HEADER_LEN {
                    return Err(Error::NotMmf {
                        name: self.name.clone(),
                    });
                }
                // Only the header is mapped yet: the data length it states is checked
                // against the object's size, and that length (not the size, which another
                // process may have raised) is what gets mapped below.
                let object_len = usize::try_from(segment.object_len()?).unwrap_or(usize::MAX);
                // SAFETY: the mapping is page aligned and at least HEADER_LEN bytes long
                // (checked above); the reference does not outlive this iteration.
                let header = unsafe { Header::from_ptr(segment.as_ptr()) };
                let validated = header.validate(object_len, &self.name);
                if fault.header_lost() {
                    // Validation read a private zero page standing in for a vanished header.
                    return Err(truncated(&self.name, segment, HEADER_LEN));
                }
                if let Some(layout) = validated? {
                    if layout.flags != self.kind {
                        return Err(Error::WrongKind {
                            name: self.name.clone(),
                            expected: crate::header::kind_name(self.kind),
                            found: crate::header::kind_name(layout.flags),
                        });
                    }
                    if layout.lock_kind != L::KIND {
                        return Err(Error::LockMismatch {
                            expected: L::KIND,
                            found: layout.lock_kind,
                        });
                    }
                    let (header_fault, mut segment) = mapped.take().expect("checked Some above");
                    // The SIGBUS handler must forget the header mapping before it goes (a
                    // registration that does nothing where faults are not caught).
                    #[allow(clippy::drop_non_drop)]
                    drop(header_fault);
                    let total = HEADER_LEN + layout.data_len;
                    segment.remap(total, access, &self.os, &self.name)?;
                    let fault = self.register(&segment);
                    // The object may have shrunk since validation (the header's pages being
                    // intact says nothing about the data's).
                    check_size(&self.name, &segment, total)?;
                    let mut mmf = Mmf {
                        fault,
                        segment,
                        waiter: sys::Waiter::new(&self.name, &self.os, false, access)?,
                        name: self.name.clone(),
                        namespace: self.os.namespace,
                        data_len: layout.data_len,
                        access,
                        remove_on_drop: false,
                        lock_timeout: self.lock_timeout,
                        token: UNTRACKED,
                        recovery_interval: self.recovery_interval,
                        _lock: PhantomData,
                    };
                    if access == Access::ReadWrite && !self.companion {
                        mmf.attach();
                    }
                    return Ok(mmf);
                }
            }
            let waited = start.elapsed();
            if waited >= self.open_timeout {
                return Err(Error::NotReady {
                    name: self.name.clone(),
                    waited,
                });
            }
            std::thread::sleep(pause.min(self.open_timeout - waited));
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
}

/// The error for a segment found shorter than the `needed` bytes this handle mapped, with the
/// object's size now.
/// [`Error::ReadOnly`], out of line: it is built only on the rare path of inlined calls.
#[cold]
#[inline(never)]
fn read_only(op: &'static str) -> Error {
    Error::ReadOnly { op }
}

pub(crate) fn truncated(name: &str, segment: &sys::Segment, needed: usize) -> Error {
    #[cfg(unix)]
    let found = match segment.current_len() {
        Ok(found) => found,
        Err(e) => return e,
    };
    // Unreachable in practice: a Windows section cannot shrink, so nothing reports a fault.
    #[cfg(not(unix))]
    let found = {
        let _ = segment;
        needed as u64
    };
    Error::Truncated {
        name: name.to_owned(),
        found,
        needed: needed as u64,
    }
}

/// Copies through the fault-catching routine, so that a mapping shrunk by another process
/// is [`Error::Truncated`] (for an object of `needed` bytes) rather than a fatal `SIGBUS`;
/// where faults cannot be caught, the size is checked first. Shared by [`Mmf`] and the
/// headerless winmmf handle.
///
/// # Safety
/// `fault` registers `segment`'s mapping; one of `dst`/`src` lies in that mapping, the other
/// in a caller's buffer; both are valid for `len` bytes (apart from pages truncated away) and
/// do not overlap.
pub(crate) unsafe fn fault_checked_copy(
    name: &str,
    segment: &sys::Segment,
    fault: &sys::fault::Registration,
    needed: usize,
    dst: *mut u8,
    src: *const u8,
    len: usize,
) -> Result<()> {
    if !sys::fault::CATCHES_FAULTS {
        check_size(name, segment, needed)?;
    }
    // SAFETY: guaranteed by the caller; pages of the registered mapping that vanish are
    // reported as a fault.
    let copied = unsafe { sys::fault::copy(dst, src, len) };
    // A lost header means the lock we copied under was private, so even a copy that did not
    // fault (the object grew back) was not excluded from writers elsewhere.
    if copied.is_err() || fault.header_lost() {
        return Err(truncated(name, segment, needed));
    }
    Ok(())
}

/// [`Error::Truncated`] if the object is now shorter than `needed` bytes (`fstat`; Unix). A
/// Windows section cannot be shrunk, so there it always passes.
pub(crate) fn check_size(name: &str, segment: &sys::Segment, needed: usize) -> Result<()> {
    #[cfg(unix)]
    if segment.current_len()? < needed as u64 {
        return Err(truncated(name, segment, needed));
    }
    let _ = (name, segment, needed);
    Ok(())
}

/// Total object length for a data region of `size` bytes, or a typed error.
fn total_len(size: usize) -> Result<usize> {
    if size == 0 {
        return Err(Error::InvalidSize {
            size: 0,
            reason: "a segment needs at least one data byte",
        });
    }
    size.checked_add(HEADER_LEN)
        .filter(|&total| total <= isize::MAX as usize)
        .ok_or(Error::InvalidSize {
            size: size as u64,
            reason: "it is larger than this platform can map",
        })
}

impl Mmf {
    /// Creates segment `name` with `size` data bytes and default options
    /// (see [`MmfOptions::create`]).
    pub fn create(name: &str, size: usize) -> Result<Self> {
        MmfOptions::new(name).create(size)
    }

    /// Opens existing segment `name` read-write (see [`MmfOptions::open`]).
    pub fn open(name: &str) -> Result<Self> {
        MmfOptions::new(name).open()
    }

    /// Opens existing segment `name` read-only (see [`MmfOptions::open_read_only`]).
    pub fn open_read_only(name: &str) -> Result<Self> {
        MmfOptions::new(name).open_read_only()
    }

    /// Opens `name`, or creates it with `size` data bytes (see [`MmfOptions::open_or_create`]).
    pub fn open_or_create(name: &str, size: usize) -> Result<Self> {
        MmfOptions::new(name).open_or_create(size)
    }

    /// Removes the name `name` (see the lifetime table above): later opens fail with
    /// [`Error::NotFound`] and a later create starts with fresh memory; open handles keep
    /// working. A frame channel's reader table (`<name>+readers`, see
    /// [`channel`](crate::channel)) goes with it, so that a new writer can create the
    /// channel again after one that crashed.
    pub fn remove(name: &str) -> Result<()> {
        name::validate(name)?;
        let removed = sys::Segment::remove(name, Namespace::Local);
        // Only a channel has one; a missing table (plain segments, Windows) is no error, and
        // a table we may not remove is reported only if the name itself was removed.
        match sys::Segment::remove(&name::reader_table_name(name), Namespace::Local) {
            Ok(()) | Err(Error::NotFound { .. }) => removed,
            Err(e) => removed.and(Err(e)),
        }
    }
}

impl<L: RawRwLock> Mmf<L> {
    /// Length of the data region in bytes.
    pub fn len(&self) -> usize {
        self.data_len
    }

    /// Always `false`: a segment has at least one data byte.
    pub fn is_empty(&self) -> bool {
        self.data_len == 0
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this handle was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.access == Access::ReadOnly
    }

    /// Whether the SIGBUS handler replaced this handle's mapping (a companion's whole
    /// mapping, a segment's header page) by private zero pages after another process
    /// truncated the object: what it reads and writes no longer reaches anyone else.
    #[inline]
    pub(crate) fn mapping_lost(&self) -> bool {
        self.fault.header_lost()
    }

    /// Start of the whole mapping (header included). Not API: only for platform tests that
    /// ask the OS how the pages are mapped (e.g. that a read-only view is really read-only).
    #[doc(hidden)]
    pub fn mapping_ptr_for_tests(&self) -> *const u8 {
        self.segment.as_ptr()
    }

    /// Length of the whole mapping (header included). Not API: for tests that check an
    /// opener maps what the header says, not what the object's size says.
    #[doc(hidden)]
    pub fn mapping_len_for_tests(&self) -> usize {
        self.segment.len()
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: every Mmf maps at least HEADER_LEN bytes (checked at create/open), page
        // aligned, alive as long as `self`.
        unsafe { Header::from_ptr(self.segment.as_ptr()) }
    }

    #[inline]
    pub(crate) fn data_ptr(&self) -> *mut u8 {
        // SAFETY: HEADER_LEN + data_len <= mapping length (validated), so this stays inside
        // the mapping.
        unsafe { self.segment.as_ptr().add(HEADER_LEN) }
    }

    #[inline]
    pub(crate) fn waiter(&self) -> Waiter<'_> {
        Waiter::new(&self.waiter, &self.header().os_waiters)
    }

    #[inline]
    fn require_writable(&self, op: &'static str) -> Result<()> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(read_only(op)),
        }
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

    #[inline]
    fn deadline(&self) -> Option<Instant> {
        self.lock_timeout.map(|t| Instant::now() + t)
    }

    /// What the lock needs on every call: waiter, this handle's token, recovery interval and
    /// the OS's liveness answers (this handle: see its [`Presence`] impl).
    #[inline]
    fn ctx(&self) -> Context<'_> {
        Context::new(self.waiter(), self.token, self.recovery_interval, self)
            .with_release_word(&self.header().write_seq)
    }

    /// Takes this handle's kernel lock on the byte at `offset` of the data region (a frame
    /// channel's writer and reader entries; see [`Presence`]).
    pub(crate) fn hold_data_byte(&self, offset: usize) -> Hold {
        self.segment.hold_byte((HEADER_LEN + offset) as u64)
    }

    /// Removes the name if it still names this handle's object (not one created under the
    /// same name since): a frame writer taking over a dead writer's channel. No effect on
    /// Windows, where a section goes with its last handle.
    pub(crate) fn remove_name_if_same(&self) -> Result<()> {
        self.segment.remove_if_same(&self.name, self.namespace)
    }

    /// Releases what [`hold_data_byte`](Self::hold_data_byte) took.
    pub(crate) fn release_data_byte(&self, offset: usize) {
        self.segment.release_byte((HEADER_LEN + offset) as u64);
    }

    /// Whether the holder of the byte at `offset` of the data region (or, without one, the
    /// process `id`) can still touch the segment. Never ask about a byte this handle holds.
    pub(crate) fn data_holder_liveness(
        &self,
        id: sys::ProcessId,
        offset: Option<usize>,
    ) -> Liveness {
        match offset {
            Some(offset) => self.segment.byte_liveness((HEADER_LEN + offset) as u64),
            None => <sys::Process as OsProcess>::liveness(id),
        }
    }

    /// Registers this read-write handle with the lock (a slot in its owner table).
    fn attach(&mut self) {
        let token = L::attach(
            &self.header().lock,
            &self.ctx(),
            <sys::Process as OsProcess>::current(),
        );
        self.token = token;
    }

    /// Takes a shared lock, waiting up to the handle's lock timeout (forever by default).
    ///
    /// # Poisoning
    ///
    /// If a writer died holding the lock (see [`is_poisoned`](Self::is_poisoned)), every lock
    /// method still takes the lock but returns it inside [`LockError::Poisoned`], like
    /// `std::sync::RwLock`: `?` turns that into [`Error::Poisoned`] (releasing the lock),
    /// while code that can repair the data takes the guard with
    /// [`PoisonError::into_inner`], fixes the data, and calls
    /// [`clear_poison`](Self::clear_poison). An error rather than a flag on the guard, so
    /// that nobody reads half-written data without saying so. A reader that died poisons
    /// nothing.
    ///
    /// ```no_run
    /// use mmf::{LockError, Mmf};
    ///
    /// # fn main() -> mmf::Result<()> {
    /// let segment = Mmf::open_or_create("camera-0", 4096)?;
    /// let mut frame = match segment.write() {
    ///     Ok(guard) => guard,
    ///     Err(LockError::Poisoned(poisoned)) => {
    ///         let mut guard = poisoned.into_inner();
    ///         guard.fill(0); // the producer that died left a torn frame
    ///         segment.clear_poison()?;
    ///         guard
    ///     }
    ///     Err(other) => return Err(other.into()),
    /// };
    /// frame[..5].copy_from_slice(b"HELLO");
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn read(&self) -> LockResult<ReadGuard<'_, L>> {
        self.lock_shared(self.deadline())
    }

    /// Takes a shared lock if that is possible now, or [`Error::WouldBlock`]. Poisoning as
    /// for [`read`](Self::read).
    #[inline]
    pub fn try_read(&self) -> LockResult<ReadGuard<'_, L>> {
        self.require_writable("read lock")?;
        match L::try_lock_shared(&self.header().lock, &self.ctx()) {
            Ok(acquired) => self.shared_guard(acquired),
            Err(not) => Err(LockError::Failed(
                self.not_acquired(not, || Error::WouldBlock),
            )),
        }
    }

    /// Takes a shared lock, waiting at most `timeout` ([`Error::Timeout`] after that).
    /// Poisoning as for [`read`](Self::read).
    pub fn read_timeout(&self, timeout: Duration) -> LockResult<ReadGuard<'_, L>> {
        self.lock_shared(Some(Instant::now() + timeout))
    }

    /// Takes the exclusive lock, waiting up to the handle's lock timeout (forever by default).
    /// Poisoning as for [`read`](Self::read).
    #[inline]
    pub fn write(&self) -> LockResult<WriteGuard<'_, L>> {
        self.lock_exclusive(self.deadline())
    }

    /// Takes the exclusive lock if that is possible now, or [`Error::WouldBlock`].
    /// Poisoning as for [`read`](Self::read).
    #[inline]
    pub fn try_write(&self) -> LockResult<WriteGuard<'_, L>> {
        self.require_writable("write lock")?;
        match L::try_lock_exclusive(&self.header().lock, &self.ctx()) {
            Ok(acquired) => self.exclusive_guard(acquired),
            Err(not) => Err(LockError::Failed(
                self.not_acquired(not, || Error::WouldBlock),
            )),
        }
    }

    /// Takes the exclusive lock, waiting at most `timeout` ([`Error::Timeout`] after that).
    /// Poisoning as for [`read`](Self::read).
    pub fn write_timeout(&self, timeout: Duration) -> LockResult<WriteGuard<'_, L>> {
        self.lock_exclusive(Some(Instant::now() + timeout))
    }

    /// Whether a writer died holding the lock since the segment was created or the poison
    /// was last cleared. Works on read-only handles too.
    pub fn is_poisoned(&self) -> bool {
        L::is_poisoned(&self.header().lock)
    }

    /// Declares the data repaired after a writer died holding the lock: later acquisitions
    /// are clean again. Usually called under a write guard taken from
    /// [`LockError::Poisoned`]. [`Error::ReadOnly`] on a read-only handle.
    pub fn clear_poison(&self) -> Result<()> {
        self.require_writable("clear_poison")?;
        L::clear_poison(&self.header().lock);
        Ok(())
    }

    /// Turns a shared lock just acquired into a guard, or releases it and reports
    /// [`Error::Truncated`] if the header page vanished: the lock was then taken on the
    /// private zero page that stands in for it (see `sys::fault`), which excludes nobody. A
    /// tracked handle is refused there anyway (its slot is not its own on a zero page), but an
    /// untracked one finds the lock free. One relaxed load: it surely sees a loss that this
    /// thread's own lock access ran into (the handler ran on this thread); a loss patched by
    /// another thread a moment earlier may show only on the next call, no different from a
    /// header that vanishes just after the check (and every copy checks again).
    ///
    /// Inline, with the rare outcomes out of line (`shared_guard_rare`): the uncontended
    /// `read()` is then one load and one branch more than the lock itself (see
    /// docs/benchmarks.md, issue 12).
    #[inline]
    fn shared_guard(&self, acquired: Acquired) -> LockResult<ReadGuard<'_, L>> {
        let guard = ReadGuard { mmf: self };
        if self.fault.header_lost() || acquired != Acquired::Clean {
            return self.shared_guard_rare(guard);
        }
        Ok(guard)
    }

    /// The header vanished or the lock is poisoned: see [`shared_guard`](Self::shared_guard).
    #[cold]
    #[inline(never)]
    fn shared_guard_rare<'a>(&'a self, guard: ReadGuard<'a, L>) -> LockResult<ReadGuard<'a, L>> {
        if let Err(truncated) = self.check_header_intact() {
            // Dropping the guard releases the lock, on the private page.
            drop(guard);
            return Err(LockError::Failed(truncated));
        }
        // Only a poisoned acquisition comes here with the header intact.
        self.repair_write_seq();
        Err(LockError::Poisoned(PoisonError::new(guard)))
    }

    /// As [`shared_guard`](Self::shared_guard), for the exclusive lock.
    #[inline]
    fn exclusive_guard(&self, acquired: Acquired) -> LockResult<WriteGuard<'_, L>> {
        if self.fault.header_lost() || acquired != Acquired::Clean {
            return self.exclusive_guard_rare(acquired);
        }
        Ok(WriteGuard::begin(self))
    }

    /// The header vanished or the lock is poisoned: see [`exclusive_guard`](Self::exclusive_guard).
    #[cold]
    #[inline(never)]
    fn exclusive_guard_rare(&self, acquired: Acquired) -> LockResult<WriteGuard<'_, L>> {
        if let Err(truncated) = self.check_header_intact() {
            // Released before `WriteGuard::begin`: nothing was written, so the write sequence
            // is left alone.
            // SAFETY: the caller has just acquired the exclusive lock and hands it to us; it
            // is released exactly once, here, and no guard for it exists.
            unsafe { L::unlock_exclusive(&self.header().lock, &self.ctx()) };
            return Err(LockError::Failed(truncated));
        }
        let guard = WriteGuard::begin(self);
        match acquired {
            Acquired::Clean => Ok(guard),
            Acquired::Poisoned => Err(LockError::Poisoned(PoisonError::new(guard))),
        }
    }

    /// A writer that died left `write_seq` odd, which would make read-only handles retry
    /// until their timeout. Under a shared lock no writer is active, so an odd value can
    /// only be such a leftover; make it even. A compare-exchange, so that several readers
    /// doing this at once advance it only once. (A write guard's `begin` repairs it anyway.)
    fn repair_write_seq(&self) {
        let seq = &self.header().write_seq;
        let value = seq.load(Relaxed);
        if value & 1 == 1 {
            // Release: pairs with the Acquire load in read_at_optimistic, like the store
            // that ends a write; the data was last changed by the dead writer.
            let _ = seq.compare_exchange(value, value.wrapping_add(1), Release, Relaxed);
        }
    }

    #[inline]
    fn lock_shared(&self, deadline: Option<Instant>) -> LockResult<ReadGuard<'_, L>> {
        // The lock word is written even by readers, which a read-only mapping forbids.
        self.require_writable("read lock")?;
        // The clock only for timed waits: reading it would double the cost of an
        // uncontended lock + unlock (see benches/lock.rs).
        let start = deadline.map(|_| Instant::now());
        // The data's first line travels while we take the lock (whose atomic read-modify-write
        // would otherwise hold back the caller's first read until it is done): a reader
        // woken by a write in another process gets the two transfers overlapped.
        crate::sys::prefetch(self.data_ptr());
        match L::lock_shared(&self.header().lock, &self.ctx(), deadline) {
            Ok(acquired) => self.shared_guard(acquired),
            Err(not) => Err(LockError::Failed(self.not_acquired(not, || {
                Error::Timeout {
                    waited: start.map_or(Duration::ZERO, |s| s.elapsed()),
                }
            }))),
        }
    }

    #[inline]
    fn lock_exclusive(&self, deadline: Option<Instant>) -> LockResult<WriteGuard<'_, L>> {
        self.require_writable("write lock")?;
        // As in lock_shared: no clock read unless the wait is timed.
        let start = deadline.map(|_| Instant::now());
        match L::lock_exclusive(&self.header().lock, &self.ctx(), deadline) {
            Ok(acquired) => self.exclusive_guard(acquired),
            Err(not) => Err(LockError::Failed(self.not_acquired(not, || {
                Error::Timeout {
                    waited: start.map_or(Duration::ZERO, |s| s.elapsed()),
                }
            }))),
        }
    }

    /// The segment's write sequence: it advances by 2 each time a write guard is released
    /// (a [`write`](Self::write) guard, [`write_at`](Self::write_at)) by any process, and
    /// wraps at 2^32, so `now.wrapping_sub(seen) / 2` writes completed in between. A write
    /// still in progress is not counted. One load, no lock; works on read-only handles too.
    ///
    /// With [`wait_for_write`](Self::wait_for_write) it lets a consumer sleep until the next
    /// write without polling and without holding a guard:
    ///
    /// ```no_run
    /// # fn main() -> mmf::Result<()> {
    /// let segment = mmf::Mmf::open("camera-0")?;
    /// let mut seen = segment.write_seq();
    /// loop {
    ///     // Look at the data first: a write that came before we read `seen` is in it.
    ///     let frame = segment.read()?;
    ///     if frame[0] == b'Q' {
    ///         break;
    ///     }
    ///     drop(frame);
    ///     seen = segment.wait_for_write(seen, None)?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// Read `seen` *before* looking at the data, as above: a write that lands between the
    /// two is then either in what you looked at or makes the wait return at once.
    #[inline]
    pub fn write_seq(&self) -> u32 {
        // Acquire: pairs with the Release store that ends a write (WriteGuard::drop), so a
        // caller that sees the new sequence also sees that write's data. The low bit is set
        // only while a write is in progress.
        self.header().write_seq.load(Acquire) & !1
    }

    /// Sleeps until the [write sequence](Self::write_seq) differs from `seen`, that is until
    /// a write completes (or has completed since `seen` was read), and returns the new
    /// sequence; waits at most `timeout` ([`Error::Timeout`] after that), forever with
    /// `None`.
    ///
    /// A read-write handle sleeps in the kernel (a futex on Linux, the segment's semaphore on
    /// Windows) and is woken by the release of the write guard; writers pay for that wake-up
    /// only while someone sleeps. A read-only handle cannot announce itself to writers (its
    /// mapping is read-only), so it polls: it sleeps 20 us, doubling to at most 1 ms, between
    /// looks.
    ///
    /// A writer that dies in the middle of a write never completes it: like the lock's own
    /// waiters, a sleeper wakes once per [recovery
    /// interval](MmfOptions::recovery_interval) and asks whether the writer still lives, and
    /// returns [`Error::Poisoned`] if not (the next lock acquisition then recovers the lock
    /// and reports the poisoning). [`Error::Truncated`] if the header has vanished.
    pub fn wait_for_write(&self, seen: u32, timeout: Option<Duration>) -> Result<u32> {
        let start = Instant::now();
        // A timeout or interval too long to add to a clock reading is as good as none.
        let deadline = timeout.and_then(|t| start.checked_add(t));
        let seq = &self.header().write_seq;
        let mut next_check = start.checked_add(self.recovery_interval);
        let mut pause = Duration::from_micros(20);
        // First a short bounded spin, as the lock's own waiters do (2 + 4 + ... + 64
        // `spin_loop` hints, a few microseconds): a write that lands that soon then costs
        // neither side a system call (the writer finds no PARKED to wake). The pingpong
        // example's round trip: 5.3 us median without it.
        for round in 1..=6 {
            let now = self.write_seq();
            if now != seen {
                self.check_header_intact()?;
                return Ok(now);
            }
            for _ in 0..1 << round {
                std::hint::spin_loop();
            }
        }
        loop {
            self.check_header_intact()?;
            // Relaxed: the raw word, which the sleep below compares; what is returned is
            // read by `write_seq` (Acquire).
            let raw = seq.load(Relaxed);
            let now = self.write_seq();
            if now != seen {
                return Ok(now);
            }
            let moment = Instant::now();
            if deadline.is_some_and(|d| moment >= d) {
                return Err(Error::Timeout {
                    waited: start.elapsed(),
                });
            }
            if next_check.is_some_and(|c| moment >= c) {
                // Relaxed: a look; a write in progress shows as an odd sequence.
                if seq.load(Relaxed) & 1 == 1 && L::writer_is_gone(&self.header().lock, &self.ctx())
                {
                    return Err(Error::Poisoned);
                }
                next_check = moment.checked_add(self.recovery_interval);
            }
            let wake_by = match (deadline, next_check) {
                (Some(d), Some(c)) => Some(d.min(c)),
                (d, c) => d.or(c),
            };
            if self.is_read_only() {
                let left = wake_by.map_or(pause, |w| w.saturating_duration_since(moment));
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(1));
            } else {
                L::wait_for_release(&self.header().lock, &self.ctx(), seq, raw, wake_by);
            }
        }
    }

    /// Copies `buf.len()` bytes from the data region at `offset` into `buf`, under the lock.
    ///
    /// On a [poisoned](Self::is_poisoned) lock this copies nothing and returns
    /// [`Error::Poisoned`] (on every handle, read-only ones included): the copy API cannot
    /// hand over a guard, and silently returning half-written data would hide the crash.
    /// Repair through [`write`](Self::write) and [`clear_poison`](Self::clear_poison).
    ///
    /// On a read-only handle the copy is retried until no write was in progress during it,
    /// so the result is still a consistent snapshot. If the writer dies in the middle of a
    /// write, a read-only handle (which cannot recover the lock) notices it at most one
    /// [recovery interval](MmfOptions::recovery_interval) later and returns
    /// [`Error::Poisoned`], rather than waiting for a write that will never finish (where
    /// the writer cannot be identified, an untracked handle's, it waits until its lock
    /// timeout).
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        // SAFETY: `buf` is the caller's distinct buffer, valid for writes of its length.
        unsafe { self.read_into(offset, buf.as_mut_ptr(), buf.len()) }
    }

    /// Reads `len` bytes at `offset` into a new `Vec` (see [`read_at`](Self::read_at)).
    pub fn read_to_vec(&self, offset: usize, len: usize) -> Result<Vec<u8>> {
        self.check_range(offset, len)?;
        // Not `vec![0; len]`: zeroing bytes about to be overwritten cost a third of the time
        // (docs/benchmarks.md, issue 12).
        let mut buf = Vec::with_capacity(len);
        // SAFETY: a fresh allocation of at least `len` bytes, valid for writes, distinct
        // from the mapping.
        unsafe { self.read_into(offset, buf.as_mut_ptr(), len) }?;
        // SAFETY: read_into returned Ok, so it wrote all `len` bytes (u8: any bytes are valid).
        unsafe { buf.set_len(len) };
        Ok(buf)
    }

    /// [`read_at`](Self::read_at) into raw memory, which need not be initialised.
    ///
    /// # Safety
    /// `check_range(offset, len)` passed; `dst` is valid for writes of `len` bytes and does
    /// not overlap the mapping.
    unsafe fn read_into(&self, offset: usize, dst: *mut u8, len: usize) -> Result<()> {
        self.check_header_intact()?;
        if self.is_read_only() {
            // SAFETY: passed on from the caller.
            return unsafe { self.read_at_optimistic(offset, dst, len) };
        }
        let guard = self.read()?;
        // SAFETY: check_range put offset..offset+len inside the data region.
        let src = unsafe { self.data_ptr().add(offset) };
        // SAFETY: src..src+len lies in our data region, under the shared lock `guard` holds;
        // `dst` is the caller's distinct buffer of that length.
        let copied = unsafe { self.copy_data(dst, src, len) };
        drop(guard);
        copied
    }

    /// Copies `buf` into the data region at `offset`, under the exclusive lock.
    ///
    /// On a [poisoned](Self::is_poisoned) lock this writes nothing and returns
    /// [`Error::Poisoned`]: a partial overwrite would not repair what the dead writer left.
    pub fn write_at(&self, offset: usize, buf: &[u8]) -> Result<()> {
        self.require_writable("write_at")?;
        self.check_range(offset, buf.len())?;
        self.check_header_intact()?;
        let guard = self.write()?;
        // SAFETY: check_range put offset..offset+len inside the data region.
        let dst = unsafe { self.data_ptr().add(offset) };
        // SAFETY: dst..dst+len lies in our read-write data region, under the exclusive lock
        // `guard` holds; `buf` is the caller's distinct buffer of that length.
        let copied = unsafe { self.copy_data(dst, buf.as_ptr(), buf.len()) };
        drop(guard);
        copied
    }

    /// [`Error::Truncated`] once this handle's header page has vanished (see
    /// `sys::fault`): its lock then lives on a private page and no longer excludes anyone.
    #[inline]
    fn check_header_intact(&self) -> Result<()> {
        // Called on every lock acquisition: one relaxed load here, the error out of line.
        if self.fault.header_lost() {
            return Err(self.header_lost_error());
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn header_lost_error(&self) -> Error {
        truncated(&self.name, &self.segment, HEADER_LEN + self.data_len)
    }

    /// Copies between the data region and a caller's buffer through the fault-catching
    /// routine, so that a segment shrunk by another process is [`Error::Truncated`] rather
    /// than a fatal `SIGBUS` (where faults cannot be caught, the size is checked first).
    ///
    /// # Safety
    /// One of `dst`/`src` lies in this handle's data region, the other in a caller's buffer;
    /// both are valid for `len` bytes (apart from pages truncated away) and do not overlap.
    unsafe fn copy_data(&self, dst: *mut u8, src: *const u8, len: usize) -> Result<()> {
        let needed = HEADER_LEN + self.data_len;
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

    /// The error for an acquisition that did not take the lock: `unavailable` (would block,
    /// or timed out) or [`Error::Revoked`]; [`Error::Truncated`] if the header page has
    /// vanished meanwhile (the lock then read a private zero page, on which no slot is ours).
    #[cold]
    fn not_acquired(&self, not: NotAcquired, unavailable: impl FnOnce() -> Error) -> Error {
        if let Err(truncated) = self.check_header_intact() {
            return truncated;
        }
        match not {
            NotAcquired::Unavailable => unavailable(),
            NotAcquired::Revoked => Error::Revoked,
        }
    }

    /// Seqlock-style copy for handles that cannot take the lock: copy, then check that the
    /// write sequence was even (no writer) and unchanged across the copy.
    ///
    /// # Safety
    /// As for `read_into`.
    unsafe fn read_at_optimistic(&self, offset: usize, dst: *mut u8, len: usize) -> Result<()> {
        let seq = &self.header().write_seq;
        let start = Instant::now();
        let deadline = self.deadline();
        let mut pause = Duration::from_micros(20);
        // When to next ask whether the writer of a write in progress is still alive.
        let mut next_writer_check: Option<Instant> = None;
        loop {
            if L::is_poisoned(&self.header().lock) {
                return Err(Error::Poisoned);
            }
            // Acquire: pairs with the Release store that ends a write (WriteGuard::drop),
            // so the data we copy is at least as new as that write.
            let before = seq.load(Acquire);
            if before & 1 == 1 {
                // A write is in progress, or its writer died in the middle of it and nobody
                // with write access has recovered the lock yet. We cannot recover it, but we
                // can stop waiting: once per recovery interval, as the lock's own waiters do,
                // ask whether the writer can still finish.
                let now = Instant::now();
                match next_writer_check {
                    None => next_writer_check = Some(now + self.recovery_interval),
                    Some(due) if now >= due => {
                        if L::writer_is_gone(&self.header().lock, &self.ctx()) {
                            return Err(Error::Poisoned);
                        }
                        next_writer_check = Some(now + self.recovery_interval);
                    }
                    Some(_) => {}
                }
            } else {
                // SAFETY: check_range put offset..offset+len inside the data region.
                let src = unsafe { self.data_ptr().add(offset) };
                // SAFETY: src..src+len is in our data region, readable while `self` lives;
                // `dst` is the caller's distinct buffer. A writer changing the bytes meanwhile
                // is caught by the sequence check below, which discards the copy.
                unsafe { self.copy_data(dst, src, len) }?;
                // Acquire fence: orders the copy's loads before the re-check; pairs with the
                // Release fence a writer issues after making the sequence odd.
                fence(Acquire);
                if seq.load(Relaxed) == before {
                    return Ok(());
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout {
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }
}

/// The lock's liveness questions, answered for this handle: its kernel locks are taken on
/// its own descriptor (its own open file description), on bytes of the header's lock area;
/// holders without a byte are asked about by process identity.
impl<L: RawRwLock> Presence for Mmf<L> {
    fn hold(&self, byte: u32) -> Hold {
        match lock_byte_offset(byte) {
            Some(offset) => self.segment.hold_byte(offset),
            None => Hold::Unsupported,
        }
    }

    fn release(&self, byte: u32) {
        if let Some(offset) = lock_byte_offset(byte) {
            self.segment.release_byte(offset);
        }
    }

    fn liveness(&self, holder: Holder) -> Liveness {
        match holder.byte {
            // A byte outside the area is garbage from the region: we cannot tell.
            Some(byte) => lock_byte_offset(byte).map_or(Liveness::Unknown, |offset| {
                self.segment.byte_liveness(offset)
            }),
            None => <sys::Process as OsProcess>::liveness(holder.id),
        }
    }
}

/// Offset in the segment's object of byte `byte` of the lock area, if it lies in the area.
fn lock_byte_offset(byte: u32) -> Option<u64> {
    ((byte as usize) < 4 * LOCK_AREA_WORDS)
        .then(|| (std::mem::offset_of!(Header, lock) + byte as usize) as u64)
}

impl<L: RawRwLock> fmt::Debug for Mmf<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mmf")
            .field("name", &self.name)
            .field("len", &self.data_len)
            .field("read_only", &self.is_read_only())
            .field("remove_on_drop", &self.remove_on_drop)
            .finish_non_exhaustive()
    }
}

impl<L: RawRwLock> Drop for Mmf<L> {
    fn drop(&mut self) {
        if self.access == Access::ReadWrite {
            // Frees this handle's slot; guards borrow the handle, so none is left.
            L::detach(&self.header().lock, &self.ctx());
        }
        if self.remove_on_drop {
            // Ignored: the name may already have been removed by someone else (that is fine),
            // and a drop has no way to report anything.
            let _ = self.segment.remove_if_same(&self.name, self.namespace);
        }
    }
}

/// A shared lock on the data region; derefs to `&[u8]`. Released on drop.
#[must_use = "if unused the lock will immediately unlock"]
pub struct ReadGuard<'a, L: RawRwLock = SharedRwLock> {
    mmf: &'a Mmf<L>,
}

impl<L: RawRwLock> Deref for ReadGuard<'_, L> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the data region lies inside the live mapping (validated at open) and the
        // shared lock excludes every writer that follows the lock (see the contract on Mmf).
        unsafe { std::slice::from_raw_parts(self.mmf.data_ptr(), self.mmf.data_len) }
    }
}

impl<L: RawRwLock> Drop for ReadGuard<'_, L> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this guard's existence proves a shared lock is held, released only here.
        unsafe { L::unlock_shared(&self.mmf.header().lock, &self.mmf.ctx()) };
    }
}

/// The exclusive lock on the data region; derefs to `&mut [u8]`. Released on drop.
#[must_use = "if unused the lock will immediately unlock"]
pub struct WriteGuard<'a, L: RawRwLock = SharedRwLock> {
    mmf: &'a Mmf<L>,
    seq: u32,
}

impl<'a, L: RawRwLock> WriteGuard<'a, L> {
    /// Marks a write as in progress for read-only handles (see `read_at_optimistic`).
    #[inline]
    fn begin(mmf: &'a Mmf<L>) -> Self {
        let write_seq: &AtomicU32 = &mmf.header().write_seq;
        // Odd while writing. `| 1` keeps it odd even if a crashed writer left it odd, and the
        // value still changes, so a reader that began before us retries.
        let seq = write_seq.load(Relaxed).wrapping_add(1) | 1;
        write_seq.store(seq, Relaxed);
        // Release fence: the odd value becomes visible before any data store that follows;
        // pairs with the reader's Acquire fence in read_at_optimistic.
        fence(Release);
        WriteGuard { mmf, seq }
    }
}

impl<L: RawRwLock> Deref for WriteGuard<'_, L> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: as for ReadGuard; the exclusive lock is held.
        unsafe { std::slice::from_raw_parts(self.mmf.data_ptr(), self.mmf.data_len) }
    }
}

impl<L: RawRwLock> DerefMut for WriteGuard<'_, L> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: the region is inside the live read-write mapping (write guards exist only
        // on read-write handles); the exclusive lock excludes every other guard in every
        // process, and `&mut self` excludes other borrows of this guard.
        unsafe { std::slice::from_raw_parts_mut(self.mmf.data_ptr(), self.mmf.data_len) }
    }
}

impl<L: RawRwLock> Drop for WriteGuard<'_, L> {
    #[inline]
    fn drop(&mut self) {
        // Release: publishes the data stores before the even value; pairs with the Acquire
        // load of write_seq in read_at_optimistic.
        self.mmf
            .header()
            .write_seq
            .store(self.seq.wrapping_add(1), Release);
        // SAFETY: this guard's existence proves the exclusive lock is held, released only here.
        unsafe { L::unlock_exclusive(&self.mmf.header().lock, &self.mmf.ctx()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_guards_have_the_thread_bounds_we_document() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Mmf>();
        send_sync::<MmfOptions>();
        send_sync::<ReadGuard<'static>>();
        send_sync::<WriteGuard<'static>>();
    }

    #[test]
    fn total_len_rejects_zero_and_overflow() {
        assert!(matches!(
            total_len(0),
            Err(Error::InvalidSize { size: 0, .. })
        ));
        assert!(matches!(
            total_len(usize::MAX),
            Err(Error::InvalidSize { .. })
        ));
        assert!(matches!(
            total_len(isize::MAX as usize),
            Err(Error::InvalidSize { .. })
        ));
        assert_eq!(total_len(1).unwrap(), HEADER_LEN + 1);
    }
}

/// The kernel locks behind liveness (Linux): per handle, one byte each, seen by the others.
#[cfg(all(test, target_os = "linux", not(miri)))]
mod kernel_lock_tests {
    use super::*;
    use crate::sys::ProcessId;

    /// Whoever the process identity names is irrelevant when a byte is given.
    const ANYONE: ProcessId = ProcessId { pid: 0, start: 0 };

    #[test]
    fn a_handles_byte_lock_is_seen_by_other_handles_and_released_with_the_handle() {
        let name = format!("mmf-unit-ofd-{}", std::process::id());
        let a = Mmf::create(&name, 4096).unwrap();
        let b = Mmf::open(&name).unwrap();
        assert_eq!(a.hold_data_byte(100), Hold::Held);
        assert_eq!(b.hold_data_byte(100), Hold::Busy, "one holder per byte");
        assert_eq!(b.data_holder_liveness(ANYONE, Some(100)), Liveness::Alive);
        assert_eq!(
            b.data_holder_liveness(ANYONE, Some(101)),
            Liveness::Dead,
            "exactly one byte is locked"
        );
        assert_eq!(
            a.data_holder_liveness(ANYONE, Some(100)),
            Liveness::Dead,
            "a handle's own lock does not conflict with itself: why nobody asks about their own"
        );
        a.release_data_byte(100);
        assert_eq!(b.data_holder_liveness(ANYONE, Some(100)), Liveness::Dead);
        assert_eq!(b.hold_data_byte(100), Hold::Held);
        drop(b);
        assert_eq!(
            a.data_holder_liveness(ANYONE, Some(100)),
            Liveness::Dead,
            "closing the handle releases its locks"
        );
    }
}
