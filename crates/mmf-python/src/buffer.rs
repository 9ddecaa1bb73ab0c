//! The buffer protocol in both directions: borrowing the bytes of any C-contiguous Python
//! buffer (bytes, bytearray, memoryview, numpy array) without a copy, and exporting shared
//! memory as a buffer.

use std::ffi::c_int;
use std::mem::MaybeUninit;

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

/// The bytes of a Python object's C-contiguous buffer, held (and the exporter's memory pinned)
/// until drop. The GIL must stay held while the bytes are read: a bytearray or numpy array can
/// be written by another thread once it is released.
pub(crate) struct Contiguous<'py> {
    view: Box<ffi::Py_buffer>,
    _py: Python<'py>,
}

impl<'py> Contiguous<'py> {
    /// Asks `obj` for a read-only C-contiguous buffer: a non-contiguous numpy array or an
    /// object without the buffer protocol raises `BufferError`/`TypeError`, and nothing is
    /// copied.
    pub(crate) fn get(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let mut view = Box::new(MaybeUninit::<ffi::Py_buffer>::uninit());
        // SAFETY: `obj` is a live object (a Bound) and `view` points to writable memory the
        // size of a Py_buffer; PyObject_GetBuffer fills it completely on success.
        let rc = unsafe {
            ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_C_CONTIGUOUS)
        };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: PyObject_GetBuffer returned 0, so it initialised the Py_buffer.
        let view = unsafe { Box::from_raw(Box::into_raw(view).cast::<ffi::Py_buffer>()) };
        Ok(Contiguous {
            view,
            _py: obj.py(),
        })
    }

    /// The bytes, borrowed from the exporter.
    pub(crate) fn as_slice(&self) -> &[u8] {
        let len = usize::try_from(self.view.len).unwrap_or(0);
        if len == 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY: a successful PyBUF_C_CONTIGUOUS request gives `len` contiguous bytes at
        // `buf`, valid until PyBuffer_Release (in Drop, which needs `&mut self`); the GIL held
        // for 'py keeps Python code from writing them meanwhile (see the type's docs).
        unsafe { std::slice::from_raw_parts(self.view.buf.cast::<u8>(), len) }
    }
}

impl Drop for Contiguous<'_> {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful PyObject_GetBuffer and is released once;
        // `_py` proves the GIL is held.
        unsafe { ffi::PyBuffer_Release(&mut *self.view) };
    }
}

/// Fills `view` in a `__getbuffer__` with `len` bytes at `ptr`, exported by `owner`
/// (`view.obj` keeps a reference to it until the consumer releases the buffer).
/// `BufferError` if the consumer asks for a writable buffer of read-only memory.
///
/// # Safety
/// `view` is the Py_buffer pointer Python passed to `__getbuffer__`; `ptr..ptr+len` stays
/// valid (and, if `!readonly`, writable) until `owner`'s `__releasebuffer__` for this view.
pub(crate) unsafe fn fill(
    view: *mut ffi::Py_buffer,
    owner: &Bound<'_, PyAny>,
    ptr: *mut u8,
    len: usize,
    readonly: bool,
    flags: c_int,
) -> PyResult<()> {
    if view.is_null() {
        return Err(PyBufferError::new_err("null Py_buffer"));
    }
    let len =
        ffi::Py_ssize_t::try_from(len).map_err(|_| PyBufferError::new_err("buffer too large"))?;
    // SAFETY: `view` is non-null and Python's to fill; `owner` is live; the memory contract
    // is the caller's. PyBuffer_FillInfo takes its own reference to `owner`.
    let rc = unsafe {
        ffi::PyBuffer_FillInfo(
            view,
            owner.as_ptr(),
            ptr.cast(),
            len,
            c_int::from(readonly),
            flags,
        )
    };
    if rc != 0 {
        return Err(PyErr::fetch(owner.py()));
    }
    Ok(())
}

/// An object whose memory Python may view: counts the exports of the memory of one of its
/// frames (`id`), and refuses new ones once that frame is gone, so that views of a
/// `Frame`'s user header or of a `PendingFrame` count against its release like the frame's
/// own buffer does.
pub(crate) trait Exports: Send + Sync {
    /// Counts one more export of frame `id`'s memory; `ReleasedError` if it is not current.
    fn add(&self, py: Python<'_>, id: u64) -> PyResult<()>;
    /// Ends one export counted by `add`.
    fn remove(&self, py: Python<'_>);
}

/// A second buffer of a frame (its user header), exported by a small object of its own
/// because a Python object exports one buffer. Not public API: Python sees only the
/// memoryview made of it.
#[pyclass(module = "mmf", frozen, name = "_View")]
pub(crate) struct View {
    /// The Python object of the frame: kept alive by a view of its header, so that it is
    /// still there to be released (or committed) once the view is gone.
    _frame: Py<PyAny>,
    owner: std::sync::Arc<dyn Exports>,
    id: u64,
    ptr: usize,
    len: usize,
    readonly: bool,
}

impl View {
    /// A memoryview of `len` bytes at `ptr`, belonging to frame `id` of `owner`, whose
    /// Python object is `frame`.
    ///
    /// # Safety
    /// `ptr..ptr+len` stays valid (and writable unless `readonly`) while `owner` counts an
    /// export of frame `id` (`Exports::add` succeeded and `remove` was not called since),
    /// and `owner` keeps the memory mapped for as long as it lives.
    pub(crate) unsafe fn memoryview<'py>(
        frame: &Bound<'py, PyAny>,
        owner: std::sync::Arc<dyn Exports>,
        id: u64,
        ptr: usize,
        len: usize,
        readonly: bool,
    ) -> PyResult<Bound<'py, pyo3::types::PyMemoryView>> {
        let view = Bound::new(
            frame.py(),
            View {
                _frame: frame.clone().unbind(),
                owner,
                id,
                ptr,
                len,
                readonly,
            },
        )?;
        pyo3::types::PyMemoryView::from(view.as_any())
    }
}

#[pymethods]
impl View {
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.owner.add(py, this.id)?;
        // SAFETY: the export was just counted, so the memory stays valid (the contract of
        // `View::memoryview`) until `__releasebuffer__` uncounts it; `view.obj` references
        // this object, which holds `owner`.
        let filled = unsafe {
            fill(
                view,
                slf.as_any(),
                this.ptr as *mut u8,
                this.len,
                this.readonly,
                flags,
            )
        };
        if filled.is_err() {
            this.owner.remove(py);
        }
        filled
    }

    unsafe fn __releasebuffer__(slf: Bound<'_, Self>, _view: *mut ffi::Py_buffer) {
        let this = slf.get();
        this.owner.remove(slf.py());
    }
}

/// A numpy `uint8` array of shape `dims` (C order) over `ptr`, whose base is a memoryview of
/// `exporter` (so the exporter counts the array as an export for as long as it lives).
/// Made with one `PyArray_NewFromDescr` call: several times cheaper than `numpy.frombuffer`
/// + `reshape` on cold caches.
///
/// # Safety
/// `ptr` is the start of `exporter`'s buffer, which holds at least the product of `dims`
/// bytes and stays valid (and writable if `writable`) while an export of it is alive.
pub(crate) unsafe fn array<'py>(
    exporter: &Bound<'py, PyAny>,
    ptr: usize,
    dims: &mut [numpy::npyffi::npy_intp],
    writable: bool,
) -> PyResult<Bound<'py, PyAny>> {
    use numpy::{npyffi, PY_ARRAY_API};
    let py = exporter.py();
    let nd = c_int::try_from(dims.len()).map_err(|_| PyBufferError::new_err("too many dims"))?;
    // The array's base: a memoryview of the exporter, which holds an export (so the memory
    // stays pinned while the array lives) and a reference to the exporter.
    let base = pyo3::types::PyMemoryView::from(exporter)?;
    // SAFETY: numpy's C API with the GIL held (`py`); returns the ndarray type object.
    let subtype = unsafe { npyffi::get_type_object(py, npyffi::NpyTypes::PyArray_Type) };
    // SAFETY: as above; returns a new reference to the uint8 descriptor (or null with an
    // error set, which PyArray_NewFromDescr reports in turn).
    let descr =
        unsafe { PY_ARRAY_API.PyArray_DescrFromType(py, npyffi::NPY_TYPES::NPY_UBYTE as c_int) };
    let flags = if writable {
        npyffi::NPY_ARRAY_CARRAY
    } else {
        npyffi::NPY_ARRAY_CARRAY_RO
    };
    // The arguments: `subtype` is ndarray, `descr` a new reference that this call steals,
    // `dims` has `nd` entries, null strides mean C order.
    // SAFETY: the GIL is held, and `ptr` with the product of `dims` bytes is exporter memory
    // (the caller's contract) that the array's base, the memoryview below, keeps valid.
    let array = unsafe {
        PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            subtype,
            descr,
            nd,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            ptr as *mut std::ffi::c_void,
            flags,
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

/// A length as numpy's index type.
pub(crate) fn to_intp(n: usize) -> PyResult<numpy::npyffi::npy_intp> {
    numpy::npyffi::npy_intp::try_from(n)
        .map_err(|_| PyBufferError::new_err("frame too large for numpy"))
}
