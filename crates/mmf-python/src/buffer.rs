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
