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
    #[error("segment {name:?} was not initialised by its creator within {waited:?}; the creator may have crashed or may still be starting (raise MmfOptions::open_timeout)")]
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

    /// A `try_` operation could not proceed without waiting.
    #[error("the lock is held elsewhere; try again later")]
    WouldBlock,

    /// A timed wait ran out.
    #[error("timed out after {waited:?} waiting for the lock")]
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
            Error::SizeMismatch { .. } => K::InvalidInput,
            Error::AlreadyExists { .. } => K::AlreadyExists,
            Error::PermissionDenied { .. } | Error::ReadOnly { .. } => K::PermissionDenied,
            Error::NotReady { .. } | Error::Timeout { .. } => K::TimedOut,
            Error::WouldBlock => K::WouldBlock,
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
    fn error_is_send_sync_static() {
        fn assert_bounds<T: Send + Sync + 'static + std::error::Error>() {}
        assert_bounds::<Error>();
    }
}
