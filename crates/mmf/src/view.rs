//! Typed views: a segment's data region (or a frame, or a frame's user header) read as a
//! `T` or a `[T]` instead of bytes, for any `T: bytemuck::Pod`.
//!
//! Why `bytemuck` and not `zerocopy`: both prove "every bit pattern is a valid `T`, and `T`
//! has no padding", which is what makes bytes another process wrote safe to read as a `T`.
//! `bytemuck` has `Pod` for every primitive and array out of the box, one small trait pair
//! (`Pod`, `Zeroable`) that a `#[repr(C)]` struct implements with a derive or one
//! `unsafe impl`, no proc-macro dependency unless asked for, and it is the one most crates
//! in the graphics and camera world (`wgpu`, `glam`, `image`) already speak; zerocopy's
//! finer-grained traits (`FromBytes`, `IntoBytes`, `KnownLayout`, `Immutable`) buy
//! unaligned and prefix-splitting casts that a page-aligned region does not need. The crate
//! re-exports it ([`crate::bytemuck`]) so that users need no version of their own.
//!
//! Every view checks, once when it is made, that the type fits: its size within the bytes,
//! the bytes' start aligned for it. A type that does not fit is [`Error::TypeMismatch`],
//! never a panic.

use std::marker::PhantomData;
use std::mem::{align_of, size_of, size_of_val};
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;

use crate::error::{Error, Result};
use crate::error::{LockError, LockResult, PoisonError};
use crate::lock::{RawRwLock, SharedRwLock};
use crate::segment::{Mmf, ReadGuard, WriteGuard};

/// What a view can show: a single `T: Pod`, or a slice `[T]` of them. Sealed: the crate
/// implements it for exactly those two shapes.
pub trait Viewable: sealed::Sealed {
    /// Bytes the view covers for `count` elements (1 for a single value).
    #[doc(hidden)]
    fn bytes_for(count: usize) -> Option<usize>;
    /// `bytes` (exactly `bytes_for(count)` long, aligned: checked by [`check`]) as `Self`.
    #[doc(hidden)]
    fn from_checked(bytes: &[u8]) -> &Self;
    /// As `from_checked`, mutably.
    #[doc(hidden)]
    fn from_checked_mut(bytes: &mut [u8]) -> &mut Self;
    /// The element type's name, size and alignment, for errors.
    #[doc(hidden)]
    fn element() -> (&'static str, usize, usize);
}

mod sealed {
    pub trait Sealed {}
    impl<T: bytemuck::Pod> Sealed for T {}
    impl<T: bytemuck::Pod> Sealed for [T] {}
}

impl<T: Pod> Viewable for T {
    fn bytes_for(_count: usize) -> Option<usize> {
        Some(size_of::<T>())
    }
    fn from_checked(bytes: &[u8]) -> &T {
        // Cannot panic: `check` made sure of the length and the alignment it asserts.
        bytemuck::from_bytes(bytes)
    }
    fn from_checked_mut(bytes: &mut [u8]) -> &mut T {
        // Cannot panic: as above.
        bytemuck::from_bytes_mut(bytes)
    }
    fn element() -> (&'static str, usize, usize) {
        (std::any::type_name::<T>(), size_of::<T>(), align_of::<T>())
    }
}

impl<T: Pod> Viewable for [T] {
    fn bytes_for(count: usize) -> Option<usize> {
        // Zero-sized elements would make any count fit no bytes; bytemuck refuses to cast
        // to them, and so do we (`check`).
        size_of::<T>()
            .checked_mul(count)
            .filter(|_| size_of::<T>() > 0)
    }
    fn from_checked(bytes: &[u8]) -> &[T] {
        // Cannot panic: `check` made sure the length is a multiple of a non-zero size and
        // the start aligned.
        bytemuck::cast_slice(bytes)
    }
    fn from_checked_mut(bytes: &mut [u8]) -> &mut [T] {
        // Cannot panic: as above.
        bytemuck::cast_slice_mut(bytes)
    }
    fn element() -> (&'static str, usize, usize) {
        (std::any::type_name::<T>(), size_of::<T>(), align_of::<T>())
    }
}

/// The largest power of two (up to 4096) that divides `addr`: how the bytes are aligned.
fn alignment_of(addr: usize) -> usize {
    if addr == 0 {
        4096
    } else {
        (1usize << addr.trailing_zeros()).min(4096)
    }
}

/// Checks that `count` elements of `V` fit the `len` bytes at `addr`; returns how many bytes
/// they take.
pub(crate) fn check<V: Viewable + ?Sized>(addr: usize, len: usize, count: usize) -> Result<usize> {
    let (type_name, size, align) = V::element();
    let mismatch = |reason: &'static str| Error::TypeMismatch {
        type_name,
        size: size as u64,
        align: align as u64,
        count: count as u64,
        len: len as u64,
        start_align: alignment_of(addr) as u64,
        reason,
    };
    let Some(needed) = V::bytes_for(count) else {
        return Err(mismatch(if size == 0 {
            "a slice of zero-sized elements"
        } else {
            "the count overflows"
        }));
    };
    if needed > len {
        return Err(mismatch("larger than the bytes"));
    }
    if addr % align != 0 {
        return Err(mismatch("the bytes' start is not aligned for it"));
    }
    Ok(needed)
}

/// A typed view of a segment's data region under a shared lock: derefs to `T` (or `[T]`).
/// Made by [`Mmf::view`](crate::Mmf::view) and [`Mmf::view_slice`](crate::Mmf::view_slice);
/// the lock is released when it drops. The same contract as [`ReadGuard`].
#[must_use = "if unused the lock will immediately unlock"]
pub struct View<'a, T: Viewable + ?Sized, L: RawRwLock = SharedRwLock> {
    guard: ReadGuard<'a, L>,
    len: usize,
    _type: PhantomData<fn() -> &'a T>,
}

impl<'a, T: Viewable + ?Sized, L: RawRwLock> View<'a, T, L> {
    /// `len` bytes from the start of `guard`'s region, checked by [`check`] for `T`.
    pub(crate) fn new(guard: ReadGuard<'a, L>, len: usize) -> Self {
        View {
            guard,
            len,
            _type: PhantomData,
        }
    }

    /// The byte guard underneath, still holding the lock.
    pub fn into_guard(self) -> ReadGuard<'a, L> {
        self.guard
    }
}

impl<T: Viewable + ?Sized, L: RawRwLock> Deref for View<'_, T, L> {
    type Target = T;
    fn deref(&self) -> &T {
        T::from_checked(&self.guard[..self.len])
    }
}

impl<T: Viewable + ?Sized + std::fmt::Debug, L: RawRwLock> std::fmt::Debug for View<'_, T, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// A typed view of a segment's data region under the exclusive lock: derefs to `T` (or
/// `[T]`) mutably. Made by [`Mmf::view_mut`](crate::Mmf::view_mut) and
/// [`Mmf::view_slice_mut`](crate::Mmf::view_slice_mut); the lock is released when it drops.
#[must_use = "if unused the lock will immediately unlock"]
pub struct ViewMut<'a, T: Viewable + ?Sized, L: RawRwLock = SharedRwLock> {
    guard: WriteGuard<'a, L>,
    len: usize,
    _type: PhantomData<fn() -> &'a mut T>,
}

impl<'a, T: Viewable + ?Sized, L: RawRwLock> ViewMut<'a, T, L> {
    /// As [`View::new`].
    pub(crate) fn new(guard: WriteGuard<'a, L>, len: usize) -> Self {
        ViewMut {
            guard,
            len,
            _type: PhantomData,
        }
    }

    /// The byte guard underneath, still holding the lock.
    pub fn into_guard(self) -> WriteGuard<'a, L> {
        self.guard
    }
}

impl<T: Viewable + ?Sized, L: RawRwLock> Deref for ViewMut<'_, T, L> {
    type Target = T;
    fn deref(&self) -> &T {
        T::from_checked(&self.guard[..self.len])
    }
}

impl<T: Viewable + ?Sized, L: RawRwLock> DerefMut for ViewMut<'_, T, L> {
    fn deref_mut(&mut self) -> &mut T {
        T::from_checked_mut(&mut self.guard[..self.len])
    }
}

impl<T: Viewable + ?Sized + std::fmt::Debug, L: RawRwLock> std::fmt::Debug for ViewMut<'_, T, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// `bytes` as a `V` of `count` elements, checked (frames and user headers).
pub(crate) fn cast<V: Viewable + ?Sized>(bytes: &[u8], count: usize) -> Result<&V> {
    let len = check::<V>(bytes.as_ptr() as usize, bytes.len(), count)?;
    Ok(V::from_checked(&bytes[..len]))
}

/// All of `bytes` as a `[T]`: their length must be a whole number of `T`s (frames).
pub(crate) fn cast_whole<T: Pod>(bytes: &[u8]) -> Result<&[T]> {
    let count = bytes.len().checked_div(size_of::<T>()).unwrap_or(1);
    let slice = cast::<[T]>(bytes, count)?;
    if size_of_val(slice) == bytes.len() {
        Ok(slice)
    } else {
        Err(Error::TypeMismatch {
            type_name: std::any::type_name::<T>(),
            size: size_of::<T>() as u64,
            align: align_of::<T>() as u64,
            count: count as u64,
            len: bytes.len() as u64,
            start_align: alignment_of(bytes.as_ptr() as usize) as u64,
            reason: "the length is not a whole number of elements",
        })
    }
}

/// Typed views of a segment's data region (here rather than in `segment.rs`, so that the
/// segment does not import its views and the views import the segment's guards).
impl<L: RawRwLock> Mmf<L> {
    /// The start of the data region as a `T`, under a shared lock (released when the view
    /// drops): `let v = seg.view::<Header>()?; v.field`, for any `T: bytemuck::Pod` (every
    /// primitive and array is; a `#[repr(C)]` struct of them implements it, see
    /// [`bytemuck`](crate::bytemuck)). The data region starts 4096-aligned (see "Data region"
    /// above), so every `T` of alignment up to 4096 and size up to [`len`](Self::len) fits.
    ///
    /// [`Error::TypeMismatch`] (nothing locked) if `T` is larger than the data region or
    /// its alignment is not met; otherwise as [`read`](Self::read), poisoning included: a
    /// poisoned view comes inside [`LockError::Poisoned`].
    ///
    /// ```
    /// use mmf::{bytemuck, Mmf};
    ///
    /// #[derive(Clone, Copy, Debug, PartialEq)]
    /// #[repr(C)]
    /// struct Stats { frames: u64, dropped: u32, temperature: f32 }
    /// // SAFETY: repr(C), fields are Pod, and there is no padding (8 + 4 + 4 bytes).
    /// unsafe impl bytemuck::Zeroable for Stats {}
    /// // SAFETY: as above.
    /// unsafe impl bytemuck::Pod for Stats {}
    ///
    /// # fn main() -> mmf::Result<()> {
    /// # let name = format!("view-doc-{}", std::process::id());
    /// let seg = Mmf::create(&name, 4096)?;
    /// seg.view_mut::<Stats>()?.frames += 3;
    /// let stats = seg.view::<Stats>()?;
    /// assert_eq!((stats.frames, stats.dropped), (3, 0));
    /// drop(stats);
    /// // Too large for the region: a typed error, not a panic.
    /// assert!(matches!(seg.view::<[u8; 8192]>(), Err(mmf::LockError::Failed(mmf::Error::TypeMismatch { .. }))));
    /// # Ok(()) }
    /// ```
    pub fn view<T: Pod>(&self) -> LockResult<View<'_, T, L>> {
        let len = self.check_view::<T>(1)?;
        map_lock(self.read(), |guard| View::new(guard, len))
    }

    /// The start of the data region as a `T`, under the exclusive lock; as
    /// [`view`](Self::view), with [`write`](Self::write)'s errors.
    pub fn view_mut<T: Pod>(&self) -> LockResult<ViewMut<'_, T, L>> {
        let len = self.check_view::<T>(1)?;
        map_lock(self.write(), |guard| ViewMut::new(guard, len))
    }

    /// The first `count` elements of the data region as a `[T]`, under a shared lock; as
    /// [`view`](Self::view) (the whole region: `count = seg.len() / size_of::<T>()`).
    ///
    /// ```
    /// # fn main() -> mmf::Result<()> {
    /// # let name = format!("view-slice-doc-{}", std::process::id());
    /// let seg = mmf::Mmf::create(&name, 4096)?;
    /// seg.view_slice_mut::<u32>(1024)?[1023] = 7;
    /// assert_eq!(seg.view_slice::<u32>(1024)?.iter().sum::<u32>(), 7);
    /// # Ok(()) }
    /// ```
    pub fn view_slice<T: Pod>(&self, count: usize) -> LockResult<View<'_, [T], L>> {
        let len = self.check_view::<[T]>(count)?;
        map_lock(self.read(), |guard| View::new(guard, len))
    }

    /// The first `count` elements of the data region as a `[T]`, under the exclusive lock;
    /// as [`view_slice`](Self::view_slice), with [`write`](Self::write)'s errors.
    pub fn view_slice_mut<T: Pod>(&self, count: usize) -> LockResult<ViewMut<'_, [T], L>> {
        let len = self.check_view::<[T]>(count)?;
        map_lock(self.write(), |guard| ViewMut::new(guard, len))
    }

    fn check_view<V: Viewable + ?Sized>(&self, count: usize) -> Result<usize> {
        check::<V>(self.data_ptr() as usize, self.len(), count)
    }
}

/// The guard of a lock result mapped by `f`, poisoned or not.
fn map_lock<G, H>(result: LockResult<G>, f: impl FnOnce(G) -> H) -> LockResult<H> {
    match result {
        Ok(guard) => Ok(f(guard)),
        Err(LockError::Poisoned(poisoned)) => Err(LockError::Poisoned(PoisonError::new(f(
            poisoned.into_inner(),
        )))),
        Err(LockError::Failed(e)) => Err(LockError::Failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_the_type_and_why() {
        let err = check::<u64>(4096, 4, 1).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TypeMismatch {
                    size: 8,
                    // 4 on i686.
                    align,
                    len: 4,
                    reason: "larger than the bytes",
                    ..
                } if align == align_of::<u64>() as u64
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("u64"), "{err}");
        let err = check::<u32>(4098, 64, 1).unwrap_err();
        assert!(
            matches!(err, Error::TypeMismatch { start_align: 2, .. }),
            "{err:?}"
        );
        assert!(matches!(
            check::<[()]>(4096, 64, 1),
            Err(Error::TypeMismatch { .. })
        ));
        assert!(matches!(
            check::<[u64]>(4096, 64, usize::MAX),
            Err(Error::TypeMismatch { .. })
        ));
        assert_eq!(check::<[u16]>(4096, 64, 32).unwrap(), 64);
        assert_eq!(check::<[u16]>(4096, 64, 0).unwrap(), 0);
        assert!(check::<[u16]>(4096, 64, 33).is_err());
    }
}
