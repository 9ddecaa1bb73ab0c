//! `mmf.FrameReader` and `mmf.Frame`: the reading end of frame channels, with frames that
//! Python sees in place (memoryview, numpy) while they are pinned.

use std::ffi::c_int;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mmf::FrameInfo;
use numpy::npyffi;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyMemoryView, PyTuple};

use crate::buffer::{self, to_intp};
use crate::segment::still_exported;
use crate::{duration, invalid, lock, py_err, released};

/// A reader and the one frame it has pinned, shared by the Python `FrameReader` and every
/// `Frame` it handed out (an `Arc`), so that whichever Python object dies last, the reader
/// outlives the frame.
struct ReaderState {
    /// The pinned frame, borrowing `*reader` for a `'static` that is a lie kept honest here:
    /// it is dropped before `reader` is freed (`close`, `Drop`) and before the reader is
    /// borrowed again for another take (`take`).
    frame: Option<mmf::Frame<'static>>,
    /// From `Box::into_raw`, so that the frame's borrow never conflicts with a `Box`'s claim
    /// to unique access; `None` once closed (freed then).
    reader: Option<NonNull<mmf::FrameReader>>,
    /// Id of the `Frame` object whose frame is pinned (0: none): a `Frame` whose id is not
    /// this one is released.
    pinned: u64,
    /// Ids handed out so far.
    last_id: u64,
    /// Buffers of the pinned frame exported to Python and not yet released: while not 0,
    /// the frame stays pinned (its bytes must not change or be unmapped).
    exports: usize,
    /// The mapping's address range, for the tests' zero-copy check.
    mapping: (usize, usize),
}

// SAFETY: `reader` is owned (from Box::into_raw) and only used under the state's Mutex;
// `mmf::FrameReader` is Send, and `frame` borrows only it (so it may move with it).
unsafe impl Send for ReaderState {}

impl ReaderState {
    fn unpin(&mut self) {
        self.frame = None;
        self.pinned = 0;
    }

    /// Frees the reader (the frame first, which borrows it).
    fn close(&mut self) {
        self.unpin();
        if let Some(reader) = self.reader.take() {
            // SAFETY: `reader` came from `Box::into_raw` in `FrameReader::wrap`, is taken out
            // of the state here so it is freed once, and the only borrow of it (`frame`) was
            // dropped just above.
            drop(unsafe { Box::from_raw(reader.as_ptr()) });
        }
    }
}

impl Drop for ReaderState {
    fn drop(&mut self) {
        self.close();
    }
}

impl buffer::Exports for Mutex<ReaderState> {
    fn add(&self, py: Python<'_>, id: u64) -> PyResult<()> {
        let mut state = lock(py, self);
        if state.pinned != id {
            return Err(released(py, "frame was released"));
        }
        state.exports += 1;
        Ok(())
    }

    fn remove(&self, py: Python<'_>) {
        let mut state = lock(py, self);
        state.exports = state.exports.saturating_sub(1);
    }
}

#[derive(Clone, Copy)]
enum Take {
    Wait(Duration),
    Next,
    Latest,
}

/// A reading end of a frame channel. Holds at most one frame at a time: each ``wait_next``,
/// ``try_next`` or ``latest`` releases the frame taken before (``BufferError`` if Python
/// still holds a view of it). Usable as a context manager (``close`` on exit).
#[pyclass(module = "mmf", frozen)]
pub(crate) struct FrameReader {
    state: Arc<Mutex<ReaderState>>,
    name: String,
}

impl FrameReader {
    fn wrap(reader: mmf::FrameReader) -> FrameReader {
        let name = reader.name().to_owned();
        let mapping = reader.mapping_range_for_tests();
        FrameReader {
            state: Arc::new(Mutex::new(ReaderState {
                frame: None,
                reader: Some(NonNull::from(Box::leak(Box::new(reader)))),
                pinned: 0,
                last_id: 0,
                exports: 0,
                mapping,
            })),
            name,
        }
    }

    fn take(&self, py: Python<'_>, how: Take) -> PyResult<Option<Frame>> {
        let mut guard = lock(py, &self.state);
        let state = &mut *guard;
        let reader = state
            .reader
            .ok_or_else(|| released(py, "frame reader is closed"))?;
        if state.exports > 0 {
            return Err(still_exported(
                "previous frame (taking a new one releases it)",
            ));
        }
        // The reader holds one pin at a time: unpin the old frame before taking a new one.
        state.unpin();
        // `reader` is live until `close`, which needs this state's lock, held here; the frame
        // borrowing it is kept in `state.frame`, dropped above and in `close`.
        // SAFETY: the "'static" borrow never outlives the reader or overlaps another, since
        // the frame holding it is dropped before the reader is freed or borrowed again.
        let reader: &'static mut mmf::FrameReader = unsafe { &mut *reader.as_ptr() };
        let taken = match how {
            Take::Wait(timeout) => py.detach(|| reader.wait_next(timeout).map(Some)),
            Take::Next => reader.try_next(),
            Take::Latest => reader.latest(),
        }
        .map_err(py_err)?;
        let Some(frame) = taken else {
            return Ok(None);
        };
        state.last_id += 1;
        let id = state.last_id;
        let view = Frame {
            state: Arc::clone(&self.state),
            id,
            ptr: frame.as_ptr() as usize,
            len: frame.len(),
            info: *frame.info(),
            header_ptr: frame.user_header().as_ptr() as usize,
            header_len: frame.user_header().len(),
        };
        state.frame = Some(frame);
        state.pinned = id;
        Ok(Some(view))
    }
}

#[pymethods]
impl FrameReader {
    /// Opens a reader on the frame channel ``name`` (``NotFound`` if there is none).
    #[staticmethod]
    fn open(py: Python<'_>, name: &str) -> PyResult<FrameReader> {
        let reader = py.detach(|| mmf::FrameReader::open(name)).map_err(py_err)?;
        Ok(FrameReader::wrap(reader))
    }

    /// Opens a reader on ``name``, waiting up to ``timeout`` seconds for a live writer to
    /// create the channel (GIL released); ``Timeout`` if none did.
    #[staticmethod]
    fn open_wait(py: Python<'_>, name: &str, timeout: f64) -> PyResult<FrameReader> {
        let timeout = duration(py, Some(timeout))?.unwrap_or_default();
        let reader = py
            .detach(|| mmf::FrameReader::open_wait(name, timeout))
            .map_err(py_err)?;
        Ok(FrameReader::wrap(reader))
    }

    /// Waits up to ``timeout`` seconds (GIL released) for a frame newer than the last one
    /// this reader took and returns the newest. ``Timeout`` if none came; ``WriterGone`` once
    /// the writer closed and its last frame was taken.
    fn wait_next(&self, py: Python<'_>, timeout: f64) -> PyResult<Frame> {
        let timeout = duration(py, Some(timeout))?.unwrap_or_default();
        let frame = self.take(py, Take::Wait(timeout))?;
        frame.ok_or_else(|| invalid(py, "wait_next returned no frame".into()))
    }

    /// The next frame if one newer than the last taken is there, else ``None``; never waits.
    fn try_next(&self, py: Python<'_>) -> PyResult<Option<Frame>> {
        self.take(py, Take::Next)
    }

    /// The newest frame (possibly the same as last time), or ``None`` before the first publish.
    fn latest(&self, py: Python<'_>) -> PyResult<Option<Frame>> {
        self.take(py, Take::Latest)
    }

    /// Whether the channel's writer is still there (asks the OS; not for every frame).
    #[getter]
    fn writer_alive(&self, py: Python<'_>) -> PyResult<bool> {
        let state = lock(py, &self.state);
        let reader = state
            .reader
            .ok_or_else(|| released(py, "frame reader is closed"))?;
        // SAFETY: live while the state's lock is held (see `take`); only a shared borrow, and
        // the pinned frame's borrow is shared too.
        Ok(unsafe { reader.as_ref() }.writer_alive())
    }

    /// The channel's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Address range ``(start, end)`` of the channel's mapping in this process. Not API:
    /// for tests that check frames are views of shared memory.
    fn _mapping_range(&self, py: Python<'_>) -> (usize, usize) {
        let (start, len) = lock(py, &self.state).mapping;
        (start, start + len)
    }

    /// Closes the reader, releasing its frame (``BufferError`` while a view of that frame is
    /// alive). Idempotent. Frames taken from it raise ``ReleasedError`` afterwards.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut state = lock(py, &self.state);
        if state.exports > 0 {
            return Err(still_exported("frame reader's current frame"));
        }
        state.close();
        Ok(())
    }

    /// Returns the reader itself.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the reader (``BufferError`` while a view of its frame is alive).
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

/// One frame, pinned in shared memory (the writer keeps off it) until ``release()``, the end
/// of its ``with`` block, or the next take on its reader. ``data`` (memoryview) and ``array``
/// (numpy) view it without a copy and are read-only. After release every accessor raises
/// ``ReleasedError``; releasing while a view is alive raises ``BufferError`` and keeps the
/// frame pinned (``del`` the view, or keep a ``.copy()``). ``numpy.asarray(frame)`` and
/// ``numpy.frombuffer(frame, numpy.uint8)`` count as views too; ``numpy.ndarray(shape,
/// buffer=frame)`` does not: it drops its buffer export at once (old buffer semantics), so
/// nothing stops a release under it. Use ``frame.array`` or ``numpy.asarray(frame)``.
#[pyclass(module = "mmf", frozen)]
pub(crate) struct Frame {
    state: Arc<Mutex<ReaderState>>,
    id: u64,
    /// Address and length of the bytes, valid while `state.pinned == id`.
    ptr: usize,
    len: usize,
    info: FrameInfo,
    /// Address and length of its user header, valid as `ptr`.
    header_ptr: usize,
    header_len: usize,
}

impl Frame {
    /// Fails with `ReleasedError` unless this frame is still pinned.
    fn check(&self, py: Python<'_>) -> PyResult<()> {
        if lock(py, &self.state).pinned == self.id {
            Ok(())
        } else {
            Err(released(py, "frame was released"))
        }
    }

    fn checked<T>(&self, py: Python<'_>, value: T) -> PyResult<T> {
        self.check(py).map(|()| value)
    }
}

#[pymethods]
impl Frame {
    /// Sequence number (1 for the first frame the channel published).
    #[getter]
    fn seq(&self, py: Python<'_>) -> PyResult<u64> {
        self.checked(py, self.info.seq)
    }

    /// Publish time in ns on a monotonic clock shared by the processes (0 if turned off).
    #[getter]
    fn timestamp_ns(&self, py: Python<'_>) -> PyResult<u64> {
        self.checked(py, self.info.timestamp_ns)
    }

    /// Frames skipped between this reader's previous frame and this one.
    #[getter]
    fn skipped(&self, py: Python<'_>) -> PyResult<u64> {
        self.checked(py, self.info.skipped)
    }

    /// Width the writer published (user field).
    #[getter]
    fn width(&self, py: Python<'_>) -> PyResult<u32> {
        self.checked(py, self.info.meta.width)
    }

    /// Height the writer published (user field).
    #[getter]
    fn height(&self, py: Python<'_>) -> PyResult<u32> {
        self.checked(py, self.info.meta.height)
    }

    /// Pixel format the writer published (user field; FourCC, e.g. ``mmf.fourcc("RGB3")``).
    #[getter]
    fn pixel_format(&self, py: Python<'_>) -> PyResult<u32> {
        self.checked(py, self.info.meta.pixel_format)
    }

    /// Free tag the writer published (user field).
    #[getter]
    fn tag(&self, py: Python<'_>) -> PyResult<u64> {
        self.checked(py, self.info.meta.tag)
    }

    /// Length of the frame in bytes.
    #[getter(len)]
    fn get_len(&self, py: Python<'_>) -> PyResult<usize> {
        self.checked(py, self.len)
    }

    /// Length of the frame in bytes.
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.checked(py, self.len)
    }

    /// Whether the frame is still pinned (not released).
    #[getter]
    fn pinned(&self, py: Python<'_>) -> bool {
        self.check(py).is_ok()
    }

    /// The frame's bytes as a read-only memoryview of shared memory (no copy).
    #[getter]
    fn data<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyMemoryView>> {
        slf.get().check(slf.py())?;
        PyMemoryView::from(slf.as_any())
    }

    /// The frame as a read-only numpy ``uint8`` array over shared memory (no copy): shaped
    /// ``(height, width, channels)`` when ``width * height`` divides the length (``channels
    /// = len // (width * height)``), else 1-D. Counted as a view of the frame for as long as
    /// it lives, as ``numpy.asarray(frame)`` and ``numpy.frombuffer(frame, numpy.uint8)``
    /// are; ``numpy.ndarray(shape, buffer=frame)`` is not (it gives its buffer back at once,
    /// so nothing would stop a release under it): use one of the others.
    #[getter]
    fn array<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        this.check(slf.py())?;
        let (w, h) = (
            this.info.meta.width as usize,
            this.info.meta.height as usize,
        );
        let mut shaped: [npyffi::npy_intp; 3];
        let mut flat: [npyffi::npy_intp; 1];
        let dims: &mut [npyffi::npy_intp] = match w.checked_mul(h) {
            Some(pixels) if pixels > 0 && this.len > 0 && this.len % pixels == 0 => {
                shaped = [to_intp(h)?, to_intp(w)?, to_intp(this.len / pixels)?];
                &mut shaped
            }
            _ => {
                flat = [to_intp(this.len)?];
                &mut flat
            }
        };
        // SAFETY: `ptr` starts this frame's buffer of `len` bytes (the product of `dims`),
        // valid while an export of it is alive (see `__getbuffer__`). No WRITEABLE flag:
        // frames are read-only.
        unsafe { buffer::array(slf.as_any(), this.ptr, dims, false) }
    }

    /// The frame's user header as a read-only memoryview of shared memory (no copy), the
    /// one the writer published with this frame; ``None`` if the channel has none. Counted
    /// as a view of the frame, like ``data``.
    #[getter]
    fn user_header<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyMemoryView>>> {
        let this = slf.get();
        this.check(slf.py())?;
        if this.header_len == 0 {
            return Ok(None);
        }
        let owner: Arc<dyn buffer::Exports> = this.state.clone();
        // SAFETY: the header's bytes lie in the pinned frame's slot, mapped while the state
        // lives and unchanged while the frame is pinned, which it stays while an export is
        // counted (`release`, `close` and the next take refuse then). Read-only.
        unsafe {
            buffer::View::memoryview(
                slf.as_any(),
                owner,
                this.id,
                this.header_ptr,
                this.header_len,
                true,
            )
        }
        .map(Some)
    }

    /// Releases the frame (lets the writer reuse its slot). Idempotent. ``BufferError`` (and
    /// the frame stays pinned) while a memoryview or numpy array of it is alive.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let mut state = lock(py, &self.state);
        if state.pinned != self.id {
            return Ok(());
        }
        if state.exports > 0 {
            return Err(still_exported("frame"));
        }
        state.unpin();
        Ok(())
    }

    /// Exports the frame's bytes, read-only; ``ReleasedError`` after release.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut state = lock(py, &this.state);
        if state.pinned != this.id {
            return Err(released(py, "frame was released"));
        }
        // A request for a writable buffer fails in `fill` (read-only), cheaply, in C: numpy
        // asks for one first every time.
        // `release`, `close` and the next take refuse while exports remain, and the state
        // (reader and mapping) lives as long as this Frame, which the export references.
        // SAFETY: the frame is pinned (checked above) and stays pinned, mapped and unchanged
        // until the export count drops to zero; exported read-only, as frames are.
        unsafe {
            buffer::fill(
                view,
                slf.as_any(),
                this.ptr as *mut u8,
                this.len,
                true,
                flags,
            )
        }?;
        state.exports += 1;
        Ok(())
    }

    unsafe fn __releasebuffer__(slf: Bound<'_, Self>, _view: *mut ffi::Py_buffer) {
        let mut state = lock(slf.py(), &slf.get().state);
        state.exports = state.exports.saturating_sub(1);
    }

    /// Returns the frame itself.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Releases the frame (``BufferError`` while a view of it is alive).
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.release(py)?;
        Ok(false)
    }

    /// What it is and whether it is still open.
    fn __repr__(&self, py: Python<'_>) -> String {
        let state = if self.check(py).is_ok() {
            "pinned"
        } else {
            "released"
        };
        format!(
            "<mmf.Frame seq={} len={} {}x{} {}>",
            self.info.seq, self.len, self.info.meta.width, self.info.meta.height, state
        )
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        // A frame object that dies while pinned unpins, so the writer gets the slot back
        // without waiting for the next take. No export can be alive (each one references
        // this object). `try_lock`: the GIL is held here, and a thread holding the state's
        // lock may be waiting for the GIL; the pin then simply waits for the next take.
        if let Ok(mut state) = self.state.try_lock() {
            if state.pinned == self.id && state.exports == 0 {
                state.unpin();
            }
        }
    }
}
