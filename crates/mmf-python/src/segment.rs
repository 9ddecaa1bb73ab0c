//! `mmf.Segment` and its lock buffers (`mmf.SegmentLock`).

use std::ffi::c_int;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

use mmf::{LockError, Mmf, ReadGuard, WriteGuard};
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView};

use crate::{buffer, duration, invalid, lock, py_err, released};

/// A named shared memory segment with a reader/writer lock inside it.
///
/// ``Segment.create`` makes a new one (its data zeroed; the creator's ``close`` removes the
/// name on Linux), ``Segment.open`` / ``Segment.open_read_only`` attach to an existing one.
/// ``read``/``write`` copy under the lock; ``write_lock()``/``read_lock()`` hand out the data
/// region in place, as a memoryview, inside a ``with`` block. Usable as a context manager
/// (``close`` on exit).
#[pyclass(module = "mmf", frozen)]
pub(crate) struct Segment {
    /// `None` once closed. An `Arc`, because lock buffers share the mapping: closing the
    /// segment while one is alive leaves the mapping to it.
    mmf: Mutex<Option<Arc<Mmf>>>,
    name: String,
    /// Threads holding a lock of this handle (one entry per SegmentLock not yet released):
    /// their own lock-taking calls on it would wait for themselves forever, so they fail.
    holders: Arc<Mutex<Vec<ThreadId>>>,
}

impl Segment {
    fn wrap(mmf: Mmf) -> Segment {
        Segment {
            name: mmf.name().to_owned(),
            mmf: Mutex::new(Some(Arc::new(mmf))),
            holders: Arc::default(),
        }
    }

    /// As `get`, for calls that take the segment's lock: refused while this thread holds a
    /// lock of this handle (`write_lock`/`read_lock`), which they would wait for forever.
    fn get_unlocked(&self, py: Python<'_>) -> PyResult<Arc<Mmf>> {
        let me = std::thread::current().id();
        if lock(py, &self.holders).contains(&me) {
            return Err(invalid(
                py,
                "this thread holds a lock of this segment (write_lock/read_lock): use the \
                 buffer it gave, or release it first"
                    .into(),
            ));
        }
        self.get(py)
    }

    fn get(&self, py: Python<'_>) -> PyResult<Arc<Mmf>> {
        lock(py, &self.mmf)
            .clone()
            .ok_or_else(|| released(py, "segment is closed"))
    }

    fn take_lock(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        write: bool,
    ) -> PyResult<SegmentLock> {
        let mmf = self.get_unlocked(py)?;
        let timeout = duration(py, timeout)?;
        // SAFETY: the guard borrows `*mmf`, which lives in an `Arc` that the SegmentLock
        // holds next to the guard; `LockState`'s Drop drops the guard before that `Arc`, so
        // the borrow never outlives the segment despite the 'static.
        let shared: &'static Mmf = unsafe { &*Arc::as_ptr(&mmf) };
        let guard = py.detach(move || -> Result<Lock, mmf::Error> {
            Ok(if write {
                Lock::Write(
                    match timeout {
                        None => shared.write(),
                        Some(t) => shared.write_timeout(t),
                    }
                    .map_err(unpoison)?,
                )
            } else {
                Lock::Read(
                    match timeout {
                        None => shared.read(),
                        Some(t) => shared.read_timeout(t),
                    }
                    .map_err(unpoison)?,
                )
            })
        });
        let guard = guard.map_err(py_err)?;
        let me = std::thread::current().id();
        lock(py, &self.holders).push(me);
        let mark = Mark {
            holders: Arc::clone(&self.holders),
            thread: me,
        };
        Ok(SegmentLock {
            state: Mutex::new(LockState {
                guard: Some(Held {
                    lock: guard,
                    _mark: mark,
                }),
                exports: 0,
                view: None,
                _mmf: mmf,
            }),
        })
    }
}

#[pymethods]
impl Segment {
    /// Creates the segment ``name`` with ``size`` data bytes, zeroed.
    /// Raises ``AlreadyExists`` if the name is taken, ``InvalidArgument`` for a bad name or size.
    #[staticmethod]
    fn create(py: Python<'_>, name: &str, size: usize) -> PyResult<Segment> {
        let mmf = py.detach(|| Mmf::create(name, size)).map_err(py_err)?;
        Ok(Segment::wrap(mmf))
    }

    /// Opens the existing segment ``name`` for reading and writing (``NotFound`` if none).
    #[staticmethod]
    fn open(py: Python<'_>, name: &str) -> PyResult<Segment> {
        let mmf = py.detach(|| Mmf::open(name)).map_err(py_err)?;
        Ok(Segment::wrap(mmf))
    }

    /// Opens the existing segment ``name`` for reading only; writes raise ``ReadOnly``.
    #[staticmethod]
    fn open_read_only(py: Python<'_>, name: &str) -> PyResult<Segment> {
        let mmf = py.detach(|| Mmf::open_read_only(name)).map_err(py_err)?;
        Ok(Segment::wrap(mmf))
    }

    /// Removes the name ``name`` (for names a crashed creator left behind); open handles
    /// keep their mapping.
    #[staticmethod]
    fn remove(name: &str) -> PyResult<()> {
        Mmf::remove(name).map_err(py_err)
    }

    /// The segment's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Length of the data region in bytes.
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.get(py)?.len())
    }

    /// Whether this handle was opened read-only.
    #[getter]
    fn read_only(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.get(py)?.is_read_only())
    }

    /// Copies ``length`` bytes at ``offset`` out of the data region under the shared lock.
    fn read<'py>(
        &self,
        py: Python<'py>,
        offset: usize,
        length: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mmf = self.get_unlocked(py)?;
        let data = py
            .detach(|| mmf.read_to_vec(offset, length))
            .map_err(py_err)?;
        Ok(PyBytes::new(py, &data))
    }

    /// Copies ``data`` (any C-contiguous buffer) into the data region at ``offset`` under
    /// the write lock.
    fn write(&self, py: Python<'_>, offset: usize, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let mmf = self.get_unlocked(py)?;
        // The lock may have to be waited for, so the GIL goes; the bytes must not change
        // meanwhile: immutable bytes are borrowed, anything else is copied first.
        if let Ok(bytes) = data.cast::<PyBytes>() {
            let bytes = bytes.as_bytes();
            return py.detach(|| mmf.write_at(offset, bytes)).map_err(py_err);
        }
        let owned = buffer::Contiguous::get(data)?.as_slice().to_vec();
        py.detach(|| mmf.write_at(offset, &owned)).map_err(py_err)
    }

    /// The segment's write sequence: changes with every write; pass it to
    /// ``wait_for_write``.
    #[getter]
    fn write_seq(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.get(py)?.write_seq())
    }

    /// Waits until the write sequence differs from ``seen`` (at most ``timeout`` seconds;
    /// ``None``: no limit) and returns the new one; ``Timeout`` if it did not change. The GIL
    /// is released while waiting.
    #[pyo3(signature = (seen, timeout=None))]
    fn wait_for_write(&self, py: Python<'_>, seen: u32, timeout: Option<f64>) -> PyResult<u32> {
        let mmf = self.get_unlocked(py)?;
        let timeout = duration(py, timeout)?;
        py.detach(|| mmf.wait_for_write(seen, timeout))
            .map_err(py_err)
    }

    /// Whether a process died holding the write lock.
    #[getter]
    fn is_poisoned(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.get(py)?.is_poisoned())
    }

    /// Declares the data repaired after a poisoning, so that locks succeed again.
    fn clear_poison(&self, py: Python<'_>) -> PyResult<()> {
        self.get(py)?.clear_poison().map_err(py_err)
    }

    /// Takes the write lock (waiting at most ``timeout`` seconds, GIL released) for a
    /// ``with`` block: ``with seg.write_lock() as buf:`` gives ``buf``, a writable memoryview
    /// of the data region (``numpy.frombuffer(buf, numpy.uint8)`` views it without a copy).
    /// The lock is released at the end of the block; ``BufferError`` there if a view of
    /// ``buf`` (a numpy array ...) is still alive: ``del`` it or ``.copy()`` it inside the
    /// block (the lock is then held until the last view dies).
    #[pyo3(signature = (timeout=None))]
    fn write_lock(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<SegmentLock> {
        self.take_lock(py, timeout, true)
    }

    /// Takes the shared (read) lock, as ``write_lock``; the memoryview is read-only.
    #[pyo3(signature = (timeout=None))]
    fn read_lock(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<SegmentLock> {
        self.take_lock(py, timeout, false)
    }

    /// Closes the handle (a creator's close removes the name on Linux). Idempotent. A lock
    /// buffer still alive keeps the mapping until it is released.
    fn close(&self, py: Python<'_>) {
        let mmf = lock(py, &self.mmf).take();
        py.detach(|| drop(mmf));
    }

    /// Returns the segment itself.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the handle.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    /// What it is and whether it is still open.
    fn __repr__(&self, py: Python<'_>) -> String {
        match lock(py, &self.mmf).as_ref() {
            Some(m) => format!("<mmf.Segment {:?} len={}>", self.name, m.len()),
            None => format!("<mmf.Segment {:?} closed>", self.name),
        }
    }
}

/// A poisoned lock as the `Poisoned` error; the lock is released when the `PoisonError`
/// (with its guard) drops here, so the caller must `clear_poison` and lock again.
fn unpoison<G>(error: LockError<G>) -> mmf::Error {
    match error {
        LockError::Poisoned(_) => mmf::Error::Poisoned,
        LockError::Failed(e) => e,
    }
}

enum Lock {
    Read(ReadGuard<'static>),
    Write(WriteGuard<'static>),
}

/// A held lock, and this thread's entry in its segment's `holders` until it is released.
struct Held {
    lock: Lock,
    _mark: Mark,
}

/// Removes a thread's entry from `Segment::holders` on drop.
struct Mark {
    holders: Arc<Mutex<Vec<ThreadId>>>,
    thread: ThreadId,
}

impl Drop for Mark {
    fn drop(&mut self) {
        // Never held across a wait or a call into Python, so a plain lock cannot deadlock.
        let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = holders.iter().position(|t| *t == self.thread) {
            holders.swap_remove(i);
        }
    }
}

struct LockState {
    /// Dropped (the lock released) first, in `Drop`.
    guard: Option<Held>,
    /// Buffers exported and not yet released.
    exports: usize,
    /// The memoryview `__enter__` handed out, released by `__exit__`.
    view: Option<Py<PyMemoryView>>,
    /// Keeps the mapping the guard borrows alive; dropped after the guard.
    _mmf: Arc<Mmf>,
}

impl Drop for LockState {
    fn drop(&mut self) {
        // The guard borrows `*_mmf`: unlock before the Arc's share goes.
        self.guard = None;
    }
}

/// A held segment lock, exporting the data region as a buffer; from
/// ``Segment.write_lock()`` / ``Segment.read_lock()``. Use it in a ``with`` block: the block
/// gets a memoryview of the data region, valid until the block ends.
#[pyclass(module = "mmf", frozen)]
pub(crate) struct SegmentLock {
    state: Mutex<LockState>,
}

impl SegmentLock {
    /// The locked region: pointer, length, read-only. The pointer of a write lock comes from
    /// the guard's `&mut [u8]`, so writes through it are allowed.
    fn region(state: &mut LockState) -> Option<(*mut u8, usize, bool)> {
        match &mut state.guard.as_mut()?.lock {
            Lock::Read(g) => Some((g.as_ptr().cast_mut(), g.len(), true)),
            Lock::Write(g) => Some((g.as_mut_ptr(), g.len(), false)),
        }
    }
}

#[pymethods]
impl SegmentLock {
    /// Exports the data region (writable under the write lock); ``ReleasedError`` after
    /// ``release``.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut state = lock(py, &this.state);
        let (ptr, len, readonly) = Self::region(&mut state)
            .ok_or_else(|| released(py, "the segment lock was released"))?;
        // `release` refuses while exports remain, and the guard and mapping live in `state`,
        // which the export's reference to `slf` keeps alive.
        // SAFETY: the region stays mapped and locked until the export count drops to zero;
        // a writable export is only made under the write lock (Lock::Write).
        unsafe { buffer::fill(view, slf.as_any(), ptr, len, readonly, flags) }?;
        state.exports += 1;
        Ok(())
    }

    unsafe fn __releasebuffer__(slf: Bound<'_, Self>, _view: *mut ffi::Py_buffer) {
        let mut state = lock(slf.py(), &slf.get().state);
        state.exports = state.exports.saturating_sub(1);
    }

    /// Releases the lock; ``BufferError`` while a memoryview or numpy array of the region is
    /// alive: the lock is then kept until the last such view is gone. Idempotent.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let view = lock(py, &self.state).view.take();
        if let Some(view) = view {
            // Our own memoryview is released first; it fails if numpy arrays (or other
            // views) made from it are alive. It is then not kept: holding it would make a
            // reference cycle (the view references this object) that keeps the lock forever,
            // whereas without it the lock goes when the last view dies and frees this object.
            if view.bind(py).call_method0("release").is_err() {
                return Err(still_exported("segment lock"));
            }
        }
        let mut state = lock(py, &self.state);
        if state.exports > 0 {
            return Err(still_exported("segment lock"));
        }
        state.guard = None;
        Ok(())
    }

    /// Whether the lock is still held.
    #[getter]
    fn held(&self, py: Python<'_>) -> bool {
        lock(py, &self.state).guard.is_some()
    }

    /// Length of the data region in bytes.
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        let mut state = lock(py, &self.state);
        Self::region(&mut state)
            .map(|(_, len, _)| len)
            .ok_or_else(|| released(py, "the segment lock was released"))
    }

    /// Returns a memoryview of the data region, valid until the ``with`` block ends.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, PyMemoryView>> {
        let py = slf.py();
        let view = PyMemoryView::from(slf.as_any())?;
        lock(py, &slf.get().state).view = Some(view.clone().unbind());
        Ok(view)
    }

    /// Releases the lock (``BufferError`` while a view of the region is alive).
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }
}

/// The `BufferError` for giving up memory that Python still sees.
pub(crate) fn still_exported(what: &str) -> PyErr {
    PyBufferError::new_err(format!(
        "cannot release the {what} while a memoryview or numpy array of its memory is alive; \
         `del` it (or keep a `.copy()` instead) first; the memory stays valid until then"
    ))
}
