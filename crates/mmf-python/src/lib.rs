//! The Python binding of `mmf` (module `mmf._mmf`, re-exported by the pure-Python package
//! `mmf`): segments with lock context managers, and frame channels whose frames reach Python
//! as zero-copy buffers (memoryview, numpy).
//!
//! Memory rule, the one thing this crate exists to get right: Python code can keep a
//! memoryview or a numpy array of shared memory alive for as long as it likes, in any GC
//! order. So nothing that Python can still see is ever unmapped, unpinned or unlocked:
//! - every object that exports a buffer (`Frame`, `PendingFrame`, `SegmentLock`, and the
//!   user-header views of frames) counts its exports
//!   (`__getbuffer__`/`__releasebuffer__`), and refuses with `BufferError` to give up the pin
//!   or the lock (or commit or abandon a pending frame) while the count is not zero;
//! - each export holds a reference to its exporter (`PyBuffer_FillInfo` sets `view.obj`), and
//!   the exporter holds an `Arc` to the state that owns the mapping, so closing the reader or
//!   segment first only drops the Python handle's share.
//!
//! Waits (locks, frames, writes) release the GIL (`Python::detach`).

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;
use pyo3::sync::{MutexExt, PyOnceLock};
use pyo3::types::{PyDict, PyTuple, PyType};

mod buffer;
mod frames;
mod segment;
mod writer;

/// The exception classes, built at import (module `mmf`): `Error` and one subclass per error
/// kind, each also deriving from the closest built-in exception, so that `except
/// TimeoutError` catches `mmf.Timeout`.
struct Errors {
    error: Py<PyType>,
    invalid_argument: Py<PyType>,
    not_found: Py<PyType>,
    already_exists: Py<PyType>,
    permission_denied: Py<PyType>,
    read_only: Py<PyType>,
    timeout: Py<PyType>,
    would_block: Py<PyType>,
    poisoned: Py<PyType>,
    writer_gone: Py<PyType>,
    too_large: Py<PyType>,
    released: Py<PyType>,
}

static ERRORS: PyOnceLock<Errors> = PyOnceLock::new();

fn errors(py: Python<'_>) -> &Errors {
    // Initialised in the module's init, before any function can run.
    ERRORS
        .get(py)
        .expect("mmf._mmf: exception classes not initialised")
}

/// Which class a Rust error becomes in Python.
fn class_of<'e>(errors: &'e Errors, error: &mmf::Error) -> &'e Py<PyType> {
    use mmf::Error as E;
    match error {
        E::InvalidName { .. }
        | E::InvalidSize { .. }
        | E::OutOfBounds { .. }
        | E::SizeMismatch { .. } => &errors.invalid_argument,
        E::NotFound { .. } => &errors.not_found,
        E::AlreadyExists { .. } => &errors.already_exists,
        E::PermissionDenied { .. } | E::UntrustedOwner { .. } => &errors.permission_denied,
        E::ReadOnly { .. } => &errors.read_only,
        E::Timeout { .. } => &errors.timeout,
        E::WouldBlock => &errors.would_block,
        E::Poisoned => &errors.poisoned,
        E::WriterGone { .. } => &errors.writer_gone,
        E::FrameTooLarge { .. } => &errors.too_large,
        _ => &errors.error,
    }
}

/// A Rust error as the matching `mmf` exception, with the Rust error's message.
fn py_err(error: mmf::Error) -> PyErr {
    Python::attach(|py| {
        let class = class_of(errors(py), &error).bind(py).clone();
        PyErr::from_type(class, error.to_string())
    })
}

/// `mmf.ReleasedError`: a frame or lock buffer used after its release.
fn released(py: Python<'_>, what: &str) -> PyErr {
    let class = errors(py).released.bind(py).clone();
    PyErr::from_type(class, what.to_string())
}

/// `mmf.InvalidArgument`, for arguments the Python layer rejects itself.
fn invalid(py: Python<'_>, what: String) -> PyErr {
    let class = errors(py).invalid_argument.bind(py).clone();
    PyErr::from_type(class, what)
}

/// Locks one of this crate's state mutexes without deadlocking against the GIL (the holder
/// may be waiting detached and need the GIL back to finish). A panic while it was held leaves
/// state that is still memory-safe (every field is updated in one step), so poison is ignored.
fn lock<'a, T>(py: Python<'_>, mutex: &'a Mutex<T>) -> MutexGuard<'a, T> {
    mutex
        .lock_py_attached(py)
        .unwrap_or_else(PoisonError::into_inner)
}

/// A timeout argument in seconds (`None`: no limit) as a `Duration`.
fn duration(py: Python<'_>, seconds: Option<f64>) -> PyResult<Option<std::time::Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) => std::time::Duration::try_from_secs_f64(s)
            .map(Some)
            .map_err(|_| invalid(py, format!("timeout must be >= 0 seconds, not {s}"))),
    }
}

fn new_class<'py>(
    module: &Bound<'py, PyModule>,
    name: &str,
    bases: &[&Bound<'py, PyAny>],
    doc: &str,
) -> PyResult<Py<PyType>> {
    let py = module.py();
    let dict = PyDict::new(py);
    dict.set_item("__doc__", doc)?;
    dict.set_item("__module__", "mmf")?;
    let bases = PyTuple::new(py, bases)?;
    let class = py
        .get_type::<PyType>()
        .call1((name, bases, dict))?
        .cast_into::<PyType>()?;
    module.add(name, &class)?;
    Ok(class.unbind())
}

fn init_errors(module: &Bound<'_, PyModule>) -> PyResult<()> {
    use pyo3::exceptions as x;
    let py = module.py();
    let error = new_class(
        module,
        "Error",
        &[&py.get_type::<x::PyException>()],
        "Base class of every error mmf raises.",
    )?;
    let base = error.bind(py).clone().into_any();
    let sub = |name: &str, builtin: Option<Bound<'_, PyType>>, doc: &str| {
        let mut bases = vec![&base];
        let builtin = builtin.map(Bound::into_any);
        if let Some(b) = &builtin {
            bases.push(b);
        }
        new_class(module, name, &bases, doc)
    };
    let errors = Errors {
        invalid_argument: sub(
            "InvalidArgument",
            Some(py.get_type::<x::PyValueError>()),
            "A bad name, size, offset or length (also a ValueError).",
        )?,
        not_found: sub(
            "NotFound",
            Some(py.get_type::<x::PyFileNotFoundError>()),
            "No segment or frame channel of this name exists (also a FileNotFoundError).",
        )?,
        already_exists: sub(
            "AlreadyExists",
            Some(py.get_type::<x::PyFileExistsError>()),
            "A segment or frame channel of this name exists already (also a FileExistsError).",
        )?,
        permission_denied: sub(
            "PermissionDenied",
            Some(py.get_type::<x::PyPermissionError>()),
            "The OS refused access, or the segment's owner is not trusted (also a PermissionError).",
        )?,
        read_only: sub(
            "ReadOnly",
            None,
            "A write through a handle opened read-only.",
        )?,
        timeout: sub(
            "Timeout",
            Some(py.get_type::<x::PyTimeoutError>()),
            "A timed wait ran out (also a TimeoutError).",
        )?,
        would_block: sub(
            "WouldBlock",
            None,
            "The operation would have to wait (a frame stays mid-publish, or a frame from \
             FrameWriter.begin() is still pending).",
        )?,
        poisoned: sub(
            "Poisoned",
            None,
            "A process died holding the segment's write lock: repair the data, then clear_poison().",
        )?,
        writer_gone: sub(
            "WriterGone",
            None,
            "The frame channel's writer closed it or exited; no new frames will come.",
        )?,
        too_large: sub(
            "TooLarge",
            Some(py.get_type::<x::PyValueError>()),
            "A frame longer than the channel's max_frame_len (also a ValueError).",
        )?,
        released: sub(
            "ReleasedError",
            Some(py.get_type::<x::PyValueError>()),
            "A frame, lock buffer, reader, writer or segment used after release()/close() \
             (also a ValueError, as for a released memoryview).",
        )?,
        error,
    };
    let _ = ERRORS.set(py, errors);
    Ok(())
}

/// The native part of the `mmf` package; import `mmf` instead.
#[pymodule]
fn _mmf(module: &Bound<'_, PyModule>) -> PyResult<()> {
    init_errors(module)?;
    module.add_class::<segment::Segment>()?;
    module.add_class::<segment::SegmentLock>()?;
    module.add_class::<writer::FrameWriter>()?;
    module.add_class::<writer::PendingFrame>()?;
    module.add_class::<frames::FrameReader>()?;
    module.add_class::<frames::Frame>()?;
    Ok(())
}
