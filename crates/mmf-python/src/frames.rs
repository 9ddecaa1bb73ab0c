//! `mmf.FrameWriter`, `mmf.FrameReader` and `mmf.Frame`: frame channels, with frames that
//! Python sees in place (memoryview, numpy) while they are pinned.

use std::ffi::c_int;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mmf::{FrameInfo, FrameMeta, FrameSpec};
use numpy::{npyffi, PY_ARRAY_API};
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyMemoryView, PyTuple};

use crate::segment::still_exported;
use crate::{buffer, duration, invalid, lock, py_err, released};

/// The writing end of a frame channel (one per channel): ``FrameWriter.create(name,
/// max_frame_len)``, then ``publish(data, ...)`` per frame. ``close`` (or the end of a
/// ``with`` block) tells readers the writer is gone and removes the name.
#[pyclass(module = "mmf", frozen)]
pub(crate) struct FrameWriter {
    inner: Mutex<Option<mmf::FrameWriter>>,
}

#[pymethods]
impl FrameWriter {
    /// Creates the frame channel ``name`` for frames of up to ``max_frame_len`` bytes, for up
    /// to ``max_readers`` readers at once, with ``slots`` frame slots (``None``: the default,
    /// at least ``max_readers + 2``). ``AlreadyExists`` if a live channel has the name.
    #[staticmethod]
    #[pyo3(signature = (name, max_frame_len, max_readers=4, slots=None))]
    fn create(
        py: Python<'_>,
        name: &str,
        max_frame_len: usize,
        max_readers: usize,
        slots: Option<usize>,
    ) -> PyResult<FrameWriter> {
        let spec = FrameSpec::new(max_frame_len)
            .max_readers(max_readers)
            .slots(slots.unwrap_or(0));
        let writer = py
            .detach(|| mmf::FrameWriter::create(name, spec))
            .map_err(py_err)?;
        Ok(FrameWriter {
            inner: Mutex::new(Some(writer)),
        })
    }

    /// Publishes ``data`` (bytes, bytearray, memoryview, numpy array: any C-contiguous buffer,
    /// read in place: its one copy is the one into shared memory) as the next frame, with the
    /// given metadata; returns its sequence number (1 for the first frame). ``TooLarge`` if
    /// it exceeds ``max_frame_len``.
    #[pyo3(signature = (data, width=0, height=0, pixel_format=0, tag=0))]
    fn publish(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        width: u32,
        height: u32,
        pixel_format: u32,
        tag: u64,
    ) -> PyResult<u64> {
        let data = buffer::Contiguous::get(data)?;
        let mut inner = lock(py, &self.inner);
        let writer = inner
            .as_mut()
            .ok_or_else(|| released(py, "frame writer is closed"))?;
        writer.set_meta(FrameMeta {
            width,
            height,
            pixel_format,
            tag,
        });
        // With the GIL held: a bytearray or numpy array could change under the copy otherwise.
        // Publishing never waits for readers, so this is one memcpy.
        writer.publish(data.as_slice()).map_err(py_err)
    }

    /// The channel's name.
    #[getter]
    fn name(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |w| w.name().to_owned())
    }

    /// The largest frame in bytes.
    #[getter]
    fn max_frame_len(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |w| w.max_frame_len())
    }

    /// Sequence number of the last frame published (0 before the first).
    #[getter]
    fn seq(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |w| w.seq())
    }

    /// Closes the channel: readers get ``WriterGone`` after the last frame, and the name is
    /// removed. Idempotent.
    fn close(&self, py: Python<'_>) {
        let writer = lock(py, &self.inner).take();
        py.detach(|| drop(writer));
    }

    /// Returns the writer itself.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the writer.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }
}

impl FrameWriter {
    fn with<T>(&self, py: Python<'_>, f: impl FnOnce(&mmf::FrameWriter) -> T) -> PyResult<T> {
        let inner = lock(py, &self.inner);
        let writer = inner
            .as_ref()
            .ok_or_else(|| released(py, "frame writer is closed"))?;
        Ok(f(writer))
    }
}

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
        // SAFETY: `reader` is live until `close` (which needs this state's lock, held here),
        // and the frame borrowing it for "'static" is stored in `state.frame`, which is
        // dropped before the reader is freed or borrowed again (above, and in `close`), so
        // the borrow never outlives the reader or overlaps another.
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
/// frame pinned (``del`` the view, or keep a ``.copy()``).
#[pyclass(module = "mmf", frozen)]
pub(crate) struct Frame {
    state: Arc<Mutex<ReaderState>>,
    id: u64,
    /// Address and length of the bytes, valid while `state.pinned == id`.
    ptr: usize,
    len: usize,
    info: FrameInfo,
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
    /// = len // (width * height)``), else 1-D.
    #[getter]
    fn array<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check(py)?;
        let (w, h) = (
            this.info.meta.width as usize,
            this.info.meta.height as usize,
        );
        let mut dims: [npyffi::npy_intp; 3] = match w.checked_mul(h) {
            Some(pixels) if pixels > 0 && this.len > 0 && this.len % pixels == 0 => {
                [to_intp(h)?, to_intp(w)?, to_intp(this.len / pixels)?]
            }
            _ => [to_intp(this.len)?, 0, 0],
        };
        let nd: c_int = if dims[1] == 0 { 1 } else { 3 };
        // The array's base: a memoryview of this frame, which holds an export (so the frame
        // stays pinned while the array lives) and a reference to this frame.
        let base = PyMemoryView::from(slf.as_any())?;
        // SAFETY: numpy's C API with the GIL held (`py`); returns the ndarray type object.
        let subtype = unsafe { npyffi::get_type_object(py, npyffi::NpyTypes::PyArray_Type) };
        // SAFETY: as above; returns a new reference to the uint8 descriptor (or null with an
        // error set, which PyArray_NewFromDescr reports in turn).
        let descr = unsafe {
            PY_ARRAY_API.PyArray_DescrFromType(py, npyffi::NPY_TYPES::NPY_UBYTE as c_int)
        };
        // SAFETY: with the GIL held; `subtype` is ndarray, `descr` a new reference that this
        // call steals, `dims` has `nd` entries, null strides mean C order, and
        // `ptr..ptr+len` is the pinned frame, which the memoryview made the array's base below
        // keeps pinned and mapped for as long as the array lives. No WRITEABLE flag: frames
        // are read-only.
        let array = unsafe {
            PY_ARRAY_API.PyArray_NewFromDescr(
                py,
                subtype,
                descr,
                nd,
                dims.as_mut_ptr(),
                std::ptr::null_mut(),
                this.ptr as *mut std::ffi::c_void,
                npyffi::NPY_ARRAY_CARRAY_RO,
                std::ptr::null_mut(),
            )
        };
        if array.is_null() {
            return Err(PyErr::fetch(py));
        }
        // SAFETY: `array` is a new, non-null reference, owned from here on.
        let array = unsafe { Bound::from_owned_ptr(py, array) };
        // SAFETY: `array` is a fresh ndarray without a base; PyArray_SetBaseObject steals the
        // reference to `base` (even when it fails).
        let rc = unsafe {
            PY_ARRAY_API.PyArray_SetBaseObject(
                py,
                array.as_ptr().cast::<npyffi::PyArrayObject>(),
                base.into_ptr(),
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(array)
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
        // SAFETY: the frame is pinned (checked above) and stays pinned, its bytes unchanged
        // and mapped, until the export count drops to zero: `release`, `close` and the next
        // take refuse before then, and the state (reader and mapping) lives as long as this
        // Frame, which the export references. Read-only, as frames are.
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

fn to_intp(n: usize) -> PyResult<npyffi::npy_intp> {
    npyffi::npy_intp::try_from(n).map_err(|_| PyBufferError::new_err("frame too large for numpy"))
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
