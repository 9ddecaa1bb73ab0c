//! `mmf.FrameWriter` and `mmf.PendingFrame`: the writing end of frame channels, publishing
//! copies of Python buffers or frames written in place (numpy, memoryview) into the slot.

use std::ffi::c_int;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use mmf::{FrameMeta, FrameSpec};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyMemoryView, PyTuple};

use crate::buffer::{self, to_intp};
use crate::segment::still_exported;
use crate::{errors, invalid, lock, py_err, released};

/// A writer and the one frame it may have pending, shared by the Python `FrameWriter` and
/// every `PendingFrame` it handed out (an `Arc`), so that whichever Python object dies
/// last, the writer outlives the pending frame.
struct WriterState {
    /// The frame being written in place, borrowing `*writer` mutably for a `'static` that is
    /// a lie kept honest here: it is committed or dropped (abandoned) before the writer is
    /// freed (`close`) and before the writer is used any other way (`idle` refuses while it
    /// is here; `seq` asks it instead).
    pending: Option<mmf::PendingFrame<'static>>,
    /// From `Box::into_raw`, so that the pending frame's borrow never conflicts with a
    /// `Box`'s claim to unique access; `None` once closed (freed then).
    writer: Option<NonNull<mmf::FrameWriter>>,
    /// Id of the `PendingFrame` object whose frame is pending (0: none): a `PendingFrame`
    /// whose id is not this one was committed or abandoned.
    pending_id: u64,
    /// Ids handed out so far.
    last_id: u64,
    /// Buffers of the pending frame exported to Python and not yet released: while not 0,
    /// the frame stays pending (its slot must stay ours and mapped: Python may write it).
    exports: usize,
    /// The metadata the pending frame will be published with.
    meta: FrameMeta,
}

// SAFETY: `writer` is owned (from Box::into_raw) and only used under the shared Mutex;
// `mmf::FrameWriter` is Send, and `pending` borrows only it (so it may move with it).
unsafe impl Send for WriterState {}

impl WriterState {
    /// The writer, when nothing is pending: `ReleasedError` once closed, `WouldBlock` while
    /// a frame is pending (it borrows the writer until committed or abandoned).
    fn idle(&self, py: Python<'_>) -> PyResult<NonNull<mmf::FrameWriter>> {
        let writer = self
            .writer
            .ok_or_else(|| released(py, "frame writer is closed"))?;
        if self.pending.is_some() {
            let class = errors(py).would_block.bind(py).clone();
            return Err(PyErr::from_type(
                class,
                "a frame from begin() is pending on this writer: commit() or abandon() it first",
            ));
        }
        Ok(writer)
    }

    fn abandon(&mut self) {
        // Dropping the PendingFrame gives its slot back; nothing was published.
        self.pending = None;
        self.pending_id = 0;
    }

    /// Sequence number of the last frame published.
    fn seq(&self, py: Python<'_>) -> PyResult<u64> {
        if let Some(pending) = &self.pending {
            return Ok(pending.seq() - 1);
        }
        let writer = self.idle(py)?;
        // SAFETY: live until `close` (which needs the shared lock, held by our caller), and
        // nothing borrows it: no frame is pending (`idle`).
        Ok(unsafe { writer.as_ref() }.seq())
    }

    /// Abandons the pending frame and takes the writer out, to be freed (`None` if closed).
    fn close(&mut self) -> Option<Box<mmf::FrameWriter>> {
        self.abandon();
        let writer = self.writer.take()?;
        // SAFETY: `writer` came from `Box::into_raw` in `FrameWriter::create`, is taken out
        // of the state here so it is freed once, and the only borrow of it (`pending`) was
        // dropped just above.
        Some(unsafe { Box::from_raw(writer.as_ptr()) })
    }
}

impl Drop for WriterState {
    fn drop(&mut self) {
        drop(self.close());
    }
}

/// The state and, outside its lock, the id of a pending frame whose Python object died
/// while the state was locked (so it could not abandon its frame itself).
struct WriterShared {
    state: Mutex<WriterState>,
    orphan: AtomicU64,
}

impl WriterShared {
    /// Locks the state, first abandoning a frame whose `PendingFrame` died meanwhile.
    fn lock(&self, py: Python<'_>) -> MutexGuard<'_, WriterState> {
        let mut state = lock(py, &self.state);
        // Relaxed, pairing with the store in `PendingFrame::drop`: the id is the whole
        // message; the state it names is behind the mutex, which orders it.
        let orphan = self.orphan.swap(0, Relaxed);
        // No export can be alive: each one references the dead PendingFrame.
        if orphan != 0 && state.pending_id == orphan {
            state.abandon();
        }
        state
    }
}

impl buffer::Exports for WriterShared {
    fn add(&self, py: Python<'_>, id: u64) -> PyResult<()> {
        let mut state = self.lock(py);
        if state.pending_id != id {
            return Err(released(py, "frame was committed or abandoned"));
        }
        state.exports += 1;
        Ok(())
    }

    fn remove(&self, py: Python<'_>) {
        let mut state = self.lock(py);
        state.exports = state.exports.saturating_sub(1);
    }
}

/// The writing end of a frame channel (one per channel): ``FrameWriter.create(name,
/// max_frame_len)``, then per frame either ``publish(data, ...)`` (one copy) or
/// ``with writer.begin() as f:`` ... ``f.commit()`` (written in place). ``close`` (or the
/// end of a ``with`` block) tells readers the writer is gone and removes the name.
#[pyclass(module = "mmf", frozen)]
pub(crate) struct FrameWriter {
    shared: Arc<WriterShared>,
    name: String,
    max_frame_len: usize,
    user_header_len: usize,
}

#[pymethods]
impl FrameWriter {
    /// Creates the frame channel ``name`` for frames of up to ``max_frame_len`` bytes, for up
    /// to ``max_readers`` readers at once, with ``slots`` frame slots (``None``: the default,
    /// at least ``max_readers + 2``) and a user header of ``user_header_len`` bytes per frame
    /// (0: none). ``AlreadyExists`` if a live channel has the name.
    #[staticmethod]
    #[pyo3(signature = (name, max_frame_len, max_readers=4, slots=None, user_header_len=0))]
    fn create(
        py: Python<'_>,
        name: &str,
        max_frame_len: usize,
        max_readers: usize,
        slots: Option<usize>,
        user_header_len: usize,
    ) -> PyResult<FrameWriter> {
        let spec = FrameSpec::new(max_frame_len)
            .max_readers(max_readers)
            .slots(slots.unwrap_or(0))
            .user_header_len(user_header_len);
        let writer = py
            .detach(|| mmf::FrameWriter::create(name, spec))
            .map_err(py_err)?;
        Ok(FrameWriter {
            name: writer.name().to_owned(),
            max_frame_len: writer.max_frame_len(),
            user_header_len: writer.user_header_len(),
            shared: Arc::new(WriterShared {
                state: Mutex::new(WriterState {
                    pending: None,
                    writer: Some(NonNull::from(Box::leak(Box::new(writer)))),
                    pending_id: 0,
                    last_id: 0,
                    exports: 0,
                    meta: FrameMeta::default(),
                }),
                orphan: AtomicU64::new(0),
            }),
        })
    }

    /// Publishes ``data`` (bytes, bytearray, memoryview, numpy array: any C-contiguous buffer,
    /// read in place: its one copy is the one into shared memory) as the next frame, with the
    /// given metadata and user ``header`` (a buffer of up to ``user_header_len`` bytes, the
    /// rest zeroed; ``None``: all zero); returns its sequence number (1 for the first frame).
    /// ``TooLarge`` if it exceeds ``max_frame_len``; ``WouldBlock`` while a frame from
    /// ``begin`` is pending.
    #[pyo3(signature = (data, width=0, height=0, pixel_format=0, tag=0, header=None))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn publish(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        width: u32,
        height: u32,
        pixel_format: u32,
        tag: u64,
        header: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let data = buffer::Contiguous::get(data)?;
        let header = header.map(buffer::Contiguous::get).transpose()?;
        let (data, header) = (data.as_slice(), header.as_ref().map(|h| h.as_slice()));
        if data.len() > self.max_frame_len {
            return Err(self.too_large(data.len()));
        }
        if let Some(h) = header.filter(|h| h.len() > self.user_header_len) {
            return Err(invalid(
                py,
                format!(
                    "header of {} bytes, but the channel's user_header_len is {}",
                    h.len(),
                    self.user_header_len
                ),
            ));
        }
        let state = self.shared.lock(py);
        let writer = state.idle(py)?;
        // SAFETY: live until `close` (which needs the shared lock, held here), and nothing
        // else borrows it: no frame is pending (`idle`).
        let writer = unsafe { &mut *writer.as_ptr() };
        writer.set_meta(FrameMeta {
            width,
            height,
            pixel_format,
            tag,
        });
        // With the GIL held: a bytearray or numpy array could change under the copy otherwise.
        // Publishing never waits for readers, so this is one memcpy (two with a header).
        match header {
            None => writer.publish(data),
            Some(header) => writer.publish_with_header(|slot_header, frame| {
                slot_header[..header.len()].copy_from_slice(header);
                slot_header[header.len()..].fill(0);
                frame[..data.len()].copy_from_slice(data);
                data.len()
            }),
        }
        .map_err(py_err)
    }

    /// Takes a free slot for a frame written in place and returns it as a ``PendingFrame``
    /// (a context manager): write ``array`` (numpy, shaped ``shape`` if given, else 1-D of
    /// ``max_frame_len`` bytes), ``data`` or ``user_header``, then ``commit()``; leaving the
    /// ``with`` block uncommitted abandons it (nothing is published). A 2- or 3-D ``shape``
    /// ``(height, width[, channels])`` also sets the frame's width and height (see
    /// ``set_meta``). ``TooLarge`` if ``shape`` holds more than ``max_frame_len`` bytes;
    /// ``WouldBlock`` while another frame is pending. Never waits for readers.
    #[pyo3(signature = (shape=None))]
    fn begin(&self, py: Python<'_>, shape: Option<Vec<usize>>) -> PyResult<PendingFrame> {
        let mut meta = FrameMeta::default();
        let bytes = match &shape {
            None => self.max_frame_len,
            Some(dims) => {
                if dims.is_empty() || dims.len() > 32 {
                    return Err(invalid(py, "shape has 1 to 32 dimensions".into()));
                }
                let bytes = dims
                    .iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(d))
                    .ok_or_else(|| self.too_large(usize::MAX))?;
                if bytes > self.max_frame_len {
                    return Err(self.too_large(bytes));
                }
                if let [h, w] | [h, w, _] = dims[..] {
                    let to_u32 = |n: usize| {
                        u32::try_from(n).map_err(|_| invalid(py, format!("{n} is over 32 bits")))
                    };
                    meta.height = to_u32(h)?;
                    meta.width = to_u32(w)?;
                }
                bytes
            }
        };
        let mut guard = self.shared.lock(py);
        let state = &mut *guard;
        let writer = state.idle(py)?;
        // `writer` is live until `close`, which needs the shared lock, held here; the pending
        // frame borrowing it is kept in `state.pending` (`idle` and `close` check it).
        // SAFETY: the "'static" borrow never outlives the writer or overlaps another, since
        // the pending frame is committed or dropped before the writer is freed or used.
        let writer: &'static mut mmf::FrameWriter = unsafe { &mut *writer.as_ptr() };
        let mut pending = writer.begin().map_err(py_err)?;
        pending.set_meta(meta);
        // Only the addresses outlive this: Python writes through them (exports), which is
        // sound while the slot is pending (see `__getbuffer__`).
        let (header, frame) = pending.parts_mut();
        let (header_ptr, header_len) = (header.as_mut_ptr() as usize, header.len());
        let (ptr, len) = (frame.as_mut_ptr() as usize, frame.len());
        let seq = pending.seq();
        state.last_id += 1;
        let id = state.last_id;
        state.pending = Some(pending);
        state.pending_id = id;
        state.meta = meta;
        Ok(PendingFrame {
            shared: Arc::clone(&self.shared),
            id,
            seq,
            ptr,
            len,
            header_ptr,
            header_len,
            shape,
            shape_bytes: bytes,
        })
    }

    /// The channel's name.
    #[getter]
    fn name(&self, py: Python<'_>) -> PyResult<String> {
        self.check_open(py).map(|()| self.name.clone())
    }

    /// The largest frame in bytes.
    #[getter]
    fn max_frame_len(&self, py: Python<'_>) -> PyResult<usize> {
        self.check_open(py).map(|()| self.max_frame_len)
    }

    /// Bytes of user header each frame carries (0: none).
    #[getter]
    fn user_header_len(&self, py: Python<'_>) -> PyResult<usize> {
        self.check_open(py).map(|()| self.user_header_len)
    }

    /// Sequence number of the last frame published (0 before the first).
    #[getter]
    fn seq(&self, py: Python<'_>) -> PyResult<u64> {
        self.shared.lock(py).seq(py)
    }

    /// Closes the channel, abandoning a pending frame (``BufferError`` while a view of that
    /// frame is alive): readers get ``WriterGone`` after the last frame, and the name is
    /// removed. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let mut state = self.shared.lock(py);
        if state.exports > 0 {
            return Err(still_exported(
                "pending frame (closing the writer abandons it)",
            ));
        }
        let writer = state.close();
        drop(state);
        py.detach(|| drop(writer));
        Ok(())
    }

    /// Returns the writer itself.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Closes the writer (``BufferError`` while a view of a pending frame is alive).
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }
}

impl FrameWriter {
    /// `ReleasedError` once closed.
    fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        match self.shared.lock(py).writer {
            Some(_) => Ok(()),
            None => Err(released(py, "frame writer is closed")),
        }
    }

    fn too_large(&self, len: usize) -> PyErr {
        py_err(mmf::Error::FrameTooLarge {
            len: len as u64,
            max: self.max_frame_len as u64,
        })
    }
}

/// A frame being written in place, from ``FrameWriter.begin()``: ``array`` (numpy) and
/// ``data`` (memoryview) are writable views of its slot in shared memory (no copy), and
/// ``user_header`` of its user header. ``commit()`` publishes it; ``abandon()``, the end of
/// its ``with`` block without a commit, or dropping the object abandons it (nothing is
/// published). Committing or abandoning while a view is alive raises ``BufferError`` and
/// keeps the frame pending (``del`` the view first); afterwards every accessor raises
/// ``ReleasedError``. ``numpy.asarray(f)`` and ``numpy.frombuffer(f, numpy.uint8)`` count as
/// views; ``numpy.ndarray(shape, buffer=f)`` does not (it gives its buffer back at once), so
/// do not use it.
#[pyclass(module = "mmf", frozen)]
pub(crate) struct PendingFrame {
    shared: Arc<WriterShared>,
    id: u64,
    seq: u64,
    /// Address and length of the slot's frame bytes, writable while `pending_id == id`.
    ptr: usize,
    len: usize,
    /// Address and length of its user header, as `ptr`.
    header_ptr: usize,
    header_len: usize,
    /// The shape `array` has, and its byte count (`len` without a shape).
    shape: Option<Vec<usize>>,
    shape_bytes: usize,
}

impl PendingFrame {
    /// The state, locked, if this frame is still pending; `ReleasedError` otherwise.
    fn pending(&self, py: Python<'_>) -> PyResult<MutexGuard<'_, WriterState>> {
        let state = self.shared.lock(py);
        if state.pending_id == self.id {
            Ok(state)
        } else {
            Err(released(py, "frame was committed or abandoned"))
        }
    }
}

#[pymethods]
impl PendingFrame {
    /// The sequence number the frame gets if committed.
    #[getter]
    fn seq(&self, py: Python<'_>) -> PyResult<u64> {
        self.pending(py).map(|_| self.seq)
    }

    /// Whether the frame is still pending (neither committed nor abandoned).
    #[getter(pending)]
    fn is_pending(&self, py: Python<'_>) -> bool {
        self.pending(py).is_ok()
    }

    /// Bytes in the slot (the channel's ``max_frame_len``).
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.pending(py).map(|_| self.len)
    }

    /// The slot's ``max_frame_len`` bytes as a writable memoryview of shared memory (no
    /// copy). Its contents are what an earlier frame left there.
    #[getter]
    fn data<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyMemoryView>> {
        drop(slf.get().pending(slf.py())?);
        PyMemoryView::from(slf.as_any())
    }

    /// The slot as a writable numpy ``uint8`` array over shared memory (no copy), shaped as
    /// ``begin(shape=...)`` asked (its first bytes), else 1-D of ``max_frame_len`` bytes.
    #[getter]
    fn array<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let this = slf.get();
        drop(this.pending(slf.py())?);
        let mut dims = match &this.shape {
            Some(shape) => shape
                .iter()
                .map(|&d| to_intp(d))
                .collect::<PyResult<Vec<_>>>()?,
            None => vec![to_intp(this.len)?],
        };
        // SAFETY: `ptr` starts this object's buffer of `len` bytes, at least the product of
        // `dims` (checked in `begin`), valid and writable while an export of it is alive
        // (see `__getbuffer__`).
        unsafe { buffer::array(slf.as_any(), this.ptr, &mut dims, true) }
    }

    /// The frame's user header as a writable memoryview (no copy), zeroed by ``begin``;
    /// ``None`` if the channel has none. Counted as a view of the frame.
    #[getter]
    fn user_header<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyMemoryView>>> {
        let this = slf.get();
        drop(this.pending(slf.py())?);
        if this.header_len == 0 {
            return Ok(None);
        }
        let owner: Arc<dyn buffer::Exports> = this.shared.clone();
        // SAFETY: the header lies in the pending frame's slot, which is ours (no reader sees
        // it) and mapped while it stays pending, which it does while an export is counted
        // (`commit`, `abandon` and the writer's `close` refuse then).
        unsafe {
            buffer::View::memoryview(
                slf.as_any(),
                owner,
                this.id,
                this.header_ptr,
                this.header_len,
                false,
            )
        }
        .map(Some)
    }

    /// Sets the metadata the frame is published with; ``None`` keeps a field's value (from
    /// ``begin``'s shape, else 0).
    #[pyo3(signature = (width=None, height=None, pixel_format=None, tag=None))]
    fn set_meta(
        &self,
        py: Python<'_>,
        width: Option<u32>,
        height: Option<u32>,
        pixel_format: Option<u32>,
        tag: Option<u64>,
    ) -> PyResult<()> {
        let mut guard = self.pending(py)?;
        let state = &mut *guard;
        let meta = &mut state.meta;
        meta.width = width.unwrap_or(meta.width);
        meta.height = height.unwrap_or(meta.height);
        meta.pixel_format = pixel_format.unwrap_or(meta.pixel_format);
        meta.tag = tag.unwrap_or(meta.tag);
        if let Some(pending) = &mut state.pending {
            pending.set_meta(*meta);
        }
        Ok(())
    }

    /// Publishes the first ``length`` bytes (``None``: the shape's byte count, or
    /// ``max_frame_len`` without a shape) as the next frame; returns its sequence number.
    /// ``BufferError`` while a view of it is alive and ``TooLarge`` if ``length`` exceeds
    /// ``max_frame_len``: the frame stays pending then.
    #[pyo3(signature = (length=None))]
    fn commit(&self, py: Python<'_>, length: Option<usize>) -> PyResult<u64> {
        let length = length.unwrap_or(self.shape_bytes);
        let mut state = self.pending(py)?;
        if state.exports > 0 {
            return Err(still_exported("pending frame (commit publishes it)"));
        }
        if length > self.len {
            return Err(py_err(mmf::Error::FrameTooLarge {
                len: length as u64,
                max: self.len as u64,
            }));
        }
        let pending = state.pending.take();
        state.pending_id = 0;
        pending
            .ok_or_else(|| released(py, "frame was committed or abandoned"))?
            .commit(length)
            .map_err(py_err)
    }

    /// Abandons the frame: nothing is published and the slot is free again. Idempotent (and
    /// nothing after a commit). ``BufferError`` (the frame stays pending) while a view of
    /// it is alive.
    fn abandon(&self, py: Python<'_>) -> PyResult<()> {
        let Ok(mut state) = self.pending(py) else {
            return Ok(());
        };
        if state.exports > 0 {
            return Err(still_exported(
                "pending frame (abandon gives its slot back)",
            ));
        }
        state.abandon();
        Ok(())
    }

    /// Exports the slot's bytes, writable; ``ReleasedError`` after commit or abandon.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let mut state = this.pending(py)?;
        // The PendingFrame borrows the writer mutably and no Rust code writes the slot
        // meanwhile; `commit`, `abandon` and `close` refuse while exports remain, and the
        // state lives as long as this object, which the export references.
        // SAFETY: the frame is pending (checked above): its slot is free of readers, ours
        // alone, and stays so, and mapped, until the export count drops to zero.
        unsafe {
            buffer::fill(
                view,
                slf.as_any(),
                this.ptr as *mut u8,
                this.len,
                false,
                flags,
            )
        }?;
        state.exports += 1;
        Ok(())
    }

    unsafe fn __releasebuffer__(slf: Bound<'_, Self>, _view: *mut ffi::Py_buffer) {
        let mut state = slf.get().shared.lock(slf.py());
        state.exports = state.exports.saturating_sub(1);
    }

    /// Returns the frame itself.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Abandons the frame unless it was committed (``BufferError`` while a view of it is
    /// alive).
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.abandon(py)?;
        Ok(false)
    }

    /// What it is and whether it is still pending.
    fn __repr__(&self, py: Python<'_>) -> String {
        let state = if self.pending(py).is_ok() {
            "pending"
        } else {
            "done"
        };
        format!(
            "<mmf.PendingFrame seq={} len={} {}>",
            self.seq, self.len, state
        )
    }
}

impl Drop for PendingFrame {
    fn drop(&mut self) {
        // A pending frame whose object dies is abandoned, so the writer can begin again. No
        // export can be alive (each one references this object). `try_lock`: the GIL is
        // held here, and this may run while this thread holds the lock (a Python object
        // dropped under it); then the next `WriterShared::lock` abandons it.
        let mut state = match self.shared.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                // Relaxed: pairs with the swap in `WriterShared::lock` (see there).
                self.shared.orphan.store(self.id, Relaxed);
                return;
            }
        };
        if state.pending_id == self.id && state.exports == 0 {
            state.abandon();
        }
    }
}
