//! The one public error type.
//!
//! Every variant carries the context needed to act on it (the name, the sizes involved, the
//! operation that failed), and its message says what to do. OS failures keep the operation and
//! the OS error code rather than being folded into a catch-all, so nothing is lost on the way up.

use std::io;
use std::time::Duration;

/// Result alias used throughout `mmf`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when creating, opening, locking or accessing a segment.
///
/// The enum is `#[non_exhaustive]`: new failure modes (for instance from a new platform) may be
/// added without a breaking release, so match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The segment name breaks the portable naming rule (see [`crate::Mmf`]'s "Names" section).
    #[error("invalid segment name {name:?}: {reason}; names are 1 to 200 characters of A-Z a-z 0-9 . _ - and do not start with '.'")]
    InvalidName {
        /// The rejected name (lossily converted if it was not UTF-8).
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A size that cannot be used for a segment: zero, or more than this platform can map.
    #[error("invalid segment size {size}: {reason}")]
    InvalidSize {
        /// The requested data size in bytes.
        size: u64,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// An access (`offset`, `len`) that does not fit inside the data region.
    #[error("access of {len} bytes at offset {offset} is out of bounds for a data region of {data_len} bytes")]
    OutOfBounds {
        /// Requested start offset in the data region.
        offset: u64,
        /// Requested length in bytes.
        len: u64,
        /// Length of the data region.
        data_len: u64,
    },

    /// No segment of this name exists.
    #[error("no shared memory segment named {name:?} exists; create it first or check the name")]
    NotFound {
        /// The name that was looked up.
        name: String,
    },

    /// `create` found a segment of this name already; its contents were left untouched.
    #[error("a shared memory segment named {name:?} already exists (it was left untouched); open it, or remove it first")]
    AlreadyExists {
        /// The name that is taken.
        name: String,
    },

    /// The OS refused access to the segment (permissions, or a missing privilege).
    #[error("permission denied for {op} on segment {name:?}: {hint}")]
    PermissionDenied {
        /// The segment name.
        name: String,
        /// The operation that was refused.
        op: &'static str,
        /// What is probably missing.
        hint: &'static str,
    },

    /// `open_or_create` found an existing segment whose size differs from the one asked for.
    #[error("segment {name:?} exists with {found} data bytes, not the {expected} asked for; open it without a size, or remove it first")]
    SizeMismatch {
        /// The segment name.
        name: String,
        /// Data size asked for.
        expected: u64,
        /// Data size of the existing segment.
        found: u64,
    },

    /// A write (or a write lock) was requested through a read-only handle.
    #[error("{op} needs write access, but this segment was opened read-only")]
    ReadOnly {
        /// The refused operation.
        op: &'static str,
    },

    /// The segment exists, but its creator did not finish initialising it in time.
    #[error("segment {name:?} was not initialised by its creator within {waited:?}; the creator may have crashed or may still be starting (raise MmfOptions::open_timeout, or FrameReaderOptions::open_timeout for a frame channel)")]
    NotReady {
        /// The segment name.
        name: String,
        /// How long `open` waited.
        waited: Duration,
    },

    /// The named object exists but does not start with an `mmf` header: it was made by something else.
    #[error("segment {name:?} is not an mmf segment (bad magic); it was probably created by another program")]
    NotMmf {
        /// The segment name.
        name: String,
    },

    /// Something other than a shared-memory object sits under the name: a FIFO, a symbolic
    /// link, a directory, a socket… (Linux: `/dev/shm/<name>`). `mmf` never creates these, so
    /// another program (or another user) put it there; opening it could block forever (a
    /// FIFO) or reach an object elsewhere (a symbolic link), so it is refused unopened.
    #[error("segment {name:?} is a {kind}, not a shared memory object; mmf never creates one, so another program or user put it there: find out who, remove it, and create the segment again")]
    NotRegularFile {
        /// The segment name.
        name: String,
        /// What was found instead (`"FIFO"`, `"symbolic link"`, `"directory"`, …).
        kind: &'static str,
    },

    /// The segment belongs to a user this process does not trust (see
    /// [`TrustedOwners`](crate::TrustedOwners)): anyone can create a name first, so a
    /// stranger's object may be a trap (forged data, reads of what this process writes,
    /// truncation under it). Nothing was mapped.
    #[error("segment {name:?} is owned by {owner}, which this process does not trust; if that owner is meant to provide it, accept it with {remedy}, otherwise {removal} and create the segment again", remedy = owner.remedy(), removal = owner.removal())]
    UntrustedOwner {
        /// The segment name; on Windows, `<name>#mmf-wake` when it is the segment's wake
        /// semaphore whose owner was refused.
        name: String,
        /// Who owns the object.
        owner: Owner,
    },

    /// A SID named with [`TrustedOwners::sid`](crate::TrustedOwners::sid) that Windows does
    /// not parse (checked on every create and open on Windows; never on Unix).
    #[error("{sid:?} is not a valid Windows SID; name trusted owners by their SID in string form, e.g. \"S-1-5-21-1004336348-1177238915-682003330-512\" (`whoami /user` shows yours)")]
    InvalidSid {
        /// The text as given.
        sid: String,
    },

    /// The segment was made by an `mmf` with a layout this version cannot read.
    #[error("segment layout version {found} is not supported (this build reads version {supported}); use matching mmf versions in all processes")]
    IncompatibleVersion {
        /// Layout version found in the header.
        found: u32,
        /// Layout version this build understands.
        supported: u32,
    },

    /// The segment's lock is not the lock type this handle was opened with.
    #[error("segment uses lock kind {found:#010x} but it was opened with lock kind {expected:#010x}; open it with the same lock type it was created with")]
    LockMismatch {
        /// Lock kind requested by the opener.
        expected: u32,
        /// Lock kind recorded in the header.
        found: u32,
    },

    /// The header is inconsistent with itself or with the real size of the mapping.
    #[error("segment header is corrupt: {reason}")]
    Corrupt {
        /// What was inconsistent.
        reason: String,
    },

    /// The segment exists but is of another kind: a frame channel opened as a plain segment,
    /// or a plain segment opened as a frame channel (see [`crate::header::KIND_FRAME_CHANNEL`]).
    #[error("segment {name:?} is a {found}, not a {expected}; open it with the matching type (Mmf or FrameReader)")]
    WrongKind {
        /// The segment name.
        name: String,
        /// The kind the opener asked for.
        expected: &'static str,
        /// The kind recorded in the header.
        found: &'static str,
    },

    /// Every reader slot of a frame channel is taken by a live reader.
    #[error("frame channel {name:?} already has its maximum of {max_readers} readers; close one, or create the channel with a larger FrameSpec::max_readers")]
    ChannelFull {
        /// The channel name.
        name: String,
        /// Readers the channel was created for.
        max_readers: u32,
    },

    /// A frame longer than the channel's `max_frame_len`; nothing was published.
    #[error("frame of {len} bytes exceeds the channel's max_frame_len of {max} bytes; nothing was published")]
    FrameTooLarge {
        /// The frame length given (or returned by the `publish_with` closure).
        len: u64,
        /// The channel's maximum frame length.
        max: u64,
    },

    /// Another process shrank the segment (`ftruncate` on Linux) below what this handle
    /// mapped: the bytes past the new end are gone. Reported by the copy methods instead of
    /// the `SIGBUS` that touching them would raise (see [`crate::Mmf`]'s "Truncation" section).
    #[error("segment {name:?} was truncated by another process: it now has {found} bytes but this handle needs {needed}; its data is lost, recreate the segment and restrict who may open it read-write (MmfOptions::mode)")]
    Truncated {
        /// The segment name.
        name: String,
        /// Size of the shared-memory object when the loss was noticed (header included).
        found: u64,
        /// Size this handle mapped and needs (header included).
        needed: u64,
    },

    /// The writer of a frame channel has dropped it, or its process has died: no new frames
    /// will come. Frames already published stay readable through
    /// [`FrameReader::latest`](crate::FrameReader::latest) while the reader is open.
    #[error("the writer of frame channel {name:?} has closed it or exited, so no new frames will come; open the channel again once a new writer has created it")]
    WriterGone {
        /// The channel's name.
        name: String,
    },

    /// Another process took this reader's entry in the channel's reader table (a reader
    /// with write access to the table that does not follow the protocol, or that truncated
    /// the table): the reader can no longer pin frames safely. Drop it and open the channel
    /// again. See [`channel`](crate::channel), "Trust".
    #[error("frame reader of channel {name:?} lost its entry in the reader table to another process (a misbehaving reader); drop it and open the channel again")]
    ReaderEvicted {
        /// The channel's name.
        name: String,
    },

    /// The frame was overwritten by the writer while this reader held it: another process
    /// cleared the reader's pin (see [`Frame::verify`](crate::Frame::verify)). What was read
    /// from the frame may be torn; discard it.
    #[error("frame {seq} was overwritten while it was being read (another reader cleared this reader's pin); discard what was read from it")]
    FrameOverwritten {
        /// The frame's sequence number.
        seq: u64,
    },

    /// A typed view or cast ([`Mmf::view`](crate::Mmf::view), [`Frame::cast`](crate::Frame::cast)
    /// …) asked for a type that does not fit the bytes: larger than them, or more strictly
    /// aligned than their start, or a slice of zero-sized elements. Nothing was locked.
    #[error("{count} x {type_name} (size {size}, align {align}) does not fit {len} bytes starting at an address aligned to {start_align}: {reason}")]
    TypeMismatch {
        /// The element type, as `std::any::type_name` spells it.
        type_name: &'static str,
        /// Its size in bytes.
        size: u64,
        /// Its alignment in bytes.
        align: u64,
        /// Elements asked for (1 for a single value).
        count: u64,
        /// Bytes available (the data region, the frame or the user header).
        len: u64,
        /// The largest power of two, up to 4096, that the bytes' start is aligned to.
        start_align: u64,
        /// What did not fit.
        reason: &'static str,
    },

    /// A `try_` operation could not proceed without waiting.
    #[error("the operation would have to wait (the lock is held elsewhere, or a frame is being published); try again later")]
    WouldBlock,

    /// A writer died holding the lock, so the data may be half-written; nothing was read or
    /// written. The lock guards hand over access anyway through [`LockError::Poisoned`];
    /// repair the data under a write guard, then call
    /// [`Mmf::clear_poison`](crate::Mmf::clear_poison).
    #[error("a process died while holding the write lock, so the data may be inconsistent; repair it under a write guard (LockError::Poisoned hands one over) and call Mmf::clear_poison")]
    Poisoned,

    /// Another process judged this handle gone and took back its place in the lock (only
    /// possible where liveness rests on process ids, or after a peer corrupted the lock
    /// area: see [`mmf::lock`](crate::lock), "Releasing only what is still yours"). The
    /// handle takes no more locks; anything it wrote since may have interleaved with another
    /// writer, which the lock reports as poisoned. Drop the handle and open the segment
    /// again.
    #[error("another process judged this handle dead and took back its place in the segment's lock; drop the handle and open the segment again")]
    Revoked,

    /// A timed wait ran out.
    #[error("timed out after {waited:?} waiting for the lock, for a new frame, or for a frame channel with a live writer")]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
    },

    /// The requested feature is not available on this platform or with this configuration.
    #[error("not supported: {what}")]
    Unsupported {
        /// What is missing, and where it would be available.
        what: &'static str,
    },

    /// Any other OS failure, with the operation and the OS error code.
    #[error("{op} failed: {source}")]
    Os {
        /// The OS call or step that failed.
        op: &'static str,
        /// The OS error (its `raw_os_error()` is the errno or Win32 code).
        #[source]
        source: io::Error,
    },
}

/// Who owns a shared-memory object, as [`Error::UntrustedOwner`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Owner {
    /// A POSIX shared-memory object's owner and group.
    Unix {
        /// The owner's user id.
        user: u32,
        /// The object's group id.
        group: u32,
    },
    /// A Windows kernel object's owner, as a SID in string form (`S-1-5-21-…`), or
    /// `"(no owner)"` for a descriptor without one.
    Sid(String),
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Unix { user, group } => write!(f, "user {user} (group {group})"),
            Owner::Sid(sid) => write!(f, "SID {sid}"),
        }
    }
}

impl Owner {
    /// The option that accepts this owner, for the error message.
    fn remedy(&self) -> String {
        match self {
            Owner::Unix { user, group } => format!(
                "MmfOptions::trust_owner({user}) or trust_group({group}) (TrustedOwners for FrameReader::open_trusting)"
            ),
            Owner::Sid(sid) => format!(
                "MmfOptions::trust_sid({sid:?}) (TrustedOwners::sid for FrameReader::open_trusting)"
            ),
        }
    }

    /// How to get rid of the stranger's object, for the error message.
    fn removal(&self) -> &'static str {
        match self {
            Owner::Unix { .. } => "remove it",
            // A Windows object lives exactly as long as its handles; nothing can delete it.
            Owner::Sid(_) => {
                "end the processes holding it (a Windows object lives as long as its handles)"
            }
        }
    }
}

impl Error {
    pub(crate) fn os(op: &'static str, source: io::Error) -> Self {
        Error::Os { op, source }
    }

    pub(crate) fn corrupt(reason: impl Into<String>) -> Self {
        Error::Corrupt {
            reason: reason.into(),
        }
    }

    /// The OS error code (errno on Unix, Win32 error on Windows) if this error came from the OS.
    pub fn os_code(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        use io::ErrorKind as K;
        let kind = match &err {
            Error::InvalidName { .. } | Error::InvalidSize { .. } | Error::OutOfBounds { .. } => {
                K::InvalidInput
            }
            Error::NotFound { .. } => K::NotFound,
            Error::Truncated { .. } => K::UnexpectedEof,
            Error::FrameTooLarge { .. } => K::InvalidInput,
            // ResourceBusy would fit but needs Rust 1.83 (MSRV is 1.80).
            Error::ChannelFull { .. } => K::Other,
            Error::WriterGone { .. } => K::BrokenPipe,
            Error::ReaderEvicted { .. } => K::Other,
            Error::FrameOverwritten { .. } => K::InvalidData,
            Error::WrongKind { .. } => K::InvalidData,
            Error::SizeMismatch { .. } | Error::TypeMismatch { .. } => K::InvalidInput,
            Error::AlreadyExists { .. } => K::AlreadyExists,
            Error::PermissionDenied { .. } | Error::ReadOnly { .. } => K::PermissionDenied,
            Error::NotReady { .. } | Error::Timeout { .. } => K::TimedOut,
            Error::WouldBlock => K::WouldBlock,
            Error::Poisoned | Error::Revoked => K::Other,
            Error::UntrustedOwner { .. } => K::PermissionDenied,
            Error::InvalidSid { .. } => K::InvalidInput,
            Error::NotRegularFile { .. } => K::InvalidData,
            Error::NotMmf { .. }
            | Error::IncompatibleVersion { .. }
            | Error::LockMismatch { .. }
            | Error::Corrupt { .. } => K::InvalidData,
            Error::Unsupported { .. } => K::Unsupported,
            Error::Os { source, .. } => source.kind(),
        };
        io::Error::new(kind, err)
    }
}

/// The result of taking a lock guard: the guard, or why not (see [`LockError`]).
pub type LockResult<G> = std::result::Result<G, LockError<G>>;

/// Why a lock method did not simply return its guard.
///
/// Like `std::sync::TryLockError`: either the lock was taken but is
/// [poisoned](LockError::Poisoned) (a writer died holding it), and the guard comes with the
/// error, or it was not taken at all. `?` converts it into [`Error`], `std::io::Error` or
/// `Box<dyn std::error::Error>` (a poisoned guard is then released and the error is
/// [`Error::Poisoned`]), so most callers need no special handling; code that can repair the
/// data matches `Poisoned` and takes the guard with [`PoisonError::into_inner`]. With other
/// error types (e.g. `anyhow`) convert first: `.map_err(mmf::Error::from)?`.
///
/// It does not implement `std::error::Error` itself: it holds a guard that borrows the
/// segment, so it could never be boxed; the conversions above give an owned error instead.
pub enum LockError<G> {
    /// The lock is held by this guard, but a writer died holding it before.
    Poisoned(PoisonError<G>),
    /// The lock was not taken: [`Error::WouldBlock`], [`Error::Timeout`], [`Error::ReadOnly`]…
    Failed(Error),
}

impl<G> LockError<G> {
    /// The error as an [`Error`], releasing a poisoned guard: [`Error::Poisoned`] then.
    pub fn into_error(self) -> Error {
        match self {
            LockError::Poisoned(_) => Error::Poisoned,
            LockError::Failed(e) => e,
        }
    }

    /// The error, unless this is a poisoned acquisition.
    pub fn failed(&self) -> Option<&Error> {
        match self {
            LockError::Poisoned(_) => None,
            LockError::Failed(e) => Some(e),
        }
    }
}

impl<G> From<Error> for LockError<G> {
    fn from(err: Error) -> Self {
        LockError::Failed(err)
    }
}

impl<G> From<LockError<G>> for Error {
    fn from(err: LockError<G>) -> Self {
        err.into_error()
    }
}

impl<G> From<LockError<G>> for io::Error {
    fn from(err: LockError<G>) -> Self {
        err.into_error().into()
    }
}

impl<G> std::fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Poisoned(p) => f.debug_tuple("Poisoned").field(p).finish(),
            LockError::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
        }
    }
}

impl<G> std::fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Poisoned(p) => p.fmt(f),
            LockError::Failed(e) => e.fmt(f),
        }
    }
}

// Deliberately no `std::error::Error` impl: the guard borrows its segment, so a `LockError`
// is not `'static` and could never be boxed. Instead `?` converts it, releasing a poisoned
// guard, into these owned errors. (std's `PoisonError` implements `Error`, which is why `?`
// on a std lock fails to compile in functions returning `Box<dyn Error>`.)
impl<G> From<LockError<G>> for Box<dyn std::error::Error> {
    fn from(err: LockError<G>) -> Self {
        Box::new(err.into_error())
    }
}

impl<G> From<LockError<G>> for Box<dyn std::error::Error + Send + Sync> {
    fn from(err: LockError<G>) -> Self {
        Box::new(err.into_error())
    }
}

/// A lock was taken, but a writer died holding it before: the data may be half-written.
/// Holds the guard; take it with [`into_inner`](Self::into_inner) to repair the data, then
/// call [`Mmf::clear_poison`](crate::Mmf::clear_poison).
pub struct PoisonError<G> {
    guard: G,
}

impl<G> PoisonError<G> {
    pub(crate) fn new(guard: G) -> Self {
        PoisonError { guard }
    }

    /// The guard, which holds the lock.
    pub fn into_inner(self) -> G {
        self.guard
    }

    /// A reference to the guard.
    pub fn get_ref(&self) -> &G {
        &self.guard
    }

    /// A mutable reference to the guard.
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G> From<PoisonError<G>> for Error {
    fn from(_: PoisonError<G>) -> Self {
        Error::Poisoned
    }
}

impl<G> std::fmt::Debug for PoisonError<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoisonError").finish_non_exhaustive()
    }
}

impl<G> std::fmt::Display for PoisonError<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Error::Poisoned.fmt(f)
    }
}

impl<G> std::error::Error for PoisonError<G> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_conversion_keeps_kind_and_message() {
        let err: io::Error = Error::NotFound {
            name: "cam0".into(),
        }
        .into();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("cam0"), "{err}");

        let os = Error::os("shm_open", io::Error::from_raw_os_error(28));
        assert_eq!(os.os_code(), Some(28));
        let err: io::Error = os.into();
        assert_eq!(
            err.raw_os_error(),
            None,
            "wrapped, so the kind comes from the source"
        );
        assert_eq!(err.kind(), io::Error::from_raw_os_error(28).kind());
    }

    #[test]
    fn untrusted_owner_messages_name_the_option_that_accepts_the_owner() {
        let unix = Error::UntrustedOwner {
            name: "cam0".into(),
            owner: Owner::Unix {
                user: 65534,
                group: 44,
            },
        }
        .to_string();
        for part in [
            "user 65534 (group 44)",
            "trust_owner(65534)",
            "trust_group(44)",
            "remove it",
        ] {
            assert!(unix.contains(part), "{part:?} missing from: {unix}");
        }
        let sid = "S-1-5-21-1-2-3-1001";
        let windows = Error::UntrustedOwner {
            name: "cam0#mmf-wake".into(),
            owner: Owner::Sid(sid.into()),
        }
        .to_string();
        for part in [
            "\"cam0#mmf-wake\"",
            "SID S-1-5-21-1-2-3-1001",
            "trust_sid(\"S-1-5-21-1-2-3-1001\")",
            "TrustedOwners::sid",
        ] {
            assert!(windows.contains(part), "{part:?} missing from: {windows}");
        }
        assert!(!windows.contains("trust_owner"), "{windows}");
        let err: io::Error = Error::InvalidSid { sid: "S-x".into() }.into();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn error_is_send_sync_static() {
        fn assert_bounds<T: Send + Sync + 'static + std::error::Error>() {}
        assert_bounds::<Error>();
    }
}
