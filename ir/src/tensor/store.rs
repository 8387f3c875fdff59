//! Where a tensor's elements live: memory the tensor owns, or bytes it borrows from a
//! mapped file, so a model's weights need not be read into memory before a kernel asks for
//! them (a vocabulary table behind a gather is touched one row per token).

use super::{Elem, TensorError};
use ndarray::{ArcArray, ArrayViewD, IxDyn};
use std::marker::PhantomData;
use std::sync::Arc;

/// Bytes that stay where they are: the same slice on every call, unchanged, for as long as
/// the value lives (a read-only file mapping; a `Vec` nobody else holds).
///
/// # Safety
/// `bytes` must return the same address and length on every call, and nothing may write to
/// them while the value lives, since tensors hand out views of them.
pub unsafe trait StableBytes: Send + Sync + 'static {
    /// The bytes.
    fn bytes(&self) -> &[u8];
}

// SAFETY: a `Vec` owned by the trait object is never resized or written through a shared
// reference, and its heap buffer does not move.
unsafe impl StableBytes for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// Element types for which every bit pattern is a value (all but bool), so borrowed bytes
/// can be read as elements without checking them.
///
/// # Safety
/// Implementors must have no invalid bit patterns and no padding.
pub(super) unsafe trait AnyBits {}
macro_rules! any_bits {
    ($($t:ty),*) => { $(
        // SAFETY: a primitive number; every bit pattern is a value.
        unsafe impl AnyBits for $t {}
    )* };
}
any_bits!(
    f32,
    f64,
    half::f16,
    half::bf16,
    i8,
    u8,
    i16,
    u16,
    i32,
    u32,
    i64,
    u64
);

/// A tensor's elements of type `T`: owned (shared between clones), or borrowed row-major
/// from [`StableBytes`] that the store keeps alive.
#[derive(Clone)]
pub enum Store<T> {
    /// Memory the tensor owns.
    Owned(ArcArray<T, IxDyn>),
    /// Bytes the tensor reads in place.
    Borrowed(Borrowed<T>),
}

/// Row-major little-endian elements that are `owner`'s bytes from `start` on, checked to
/// be exactly the shape's elements and aligned when made (by [`borrowed`], the only constructor: the fields are private, since
/// a view of them is only sound after those checks).
#[derive(Clone)]
pub struct Borrowed<T> {
    owner: Arc<dyn StableBytes>,
    start: usize,
    shape: IxDyn,
    elem: PhantomData<T>,
}

impl<T: Elem> Store<T> {
    /// A view of the elements.
    pub fn view(&self) -> ArrayViewD<'_, T> {
        match self {
            Store::Owned(a) => a.view(),
            Store::Borrowed(b) => {
                let ptr = b.owner.bytes()[b.start..].as_ptr().cast::<T>();
                // SAFETY: `borrowed` checked that the bytes are `shape`'s elements and are
                // aligned for `T`, that `T` has no invalid bit patterns and that the host is
                // little-endian; `StableBytes` keeps the bytes in place and unchanged for as
                // long as `owner`, which `self` holds, lives.
                unsafe { ArrayViewD::from_shape_ptr(b.shape.clone(), ptr) }
            }
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Store::Owned(a) => a.shape(),
            Store::Borrowed(b) => ndarray::Dimension::slice(&b.shape),
        }
    }

    /// The elements as a shared array: free when owned, a copy when borrowed.
    pub fn to_shared(&self) -> ArcArray<T, IxDyn> {
        match self {
            Store::Owned(a) => a.clone(),
            Store::Borrowed(_) => self.view().to_shared(),
        }
    }

    /// The owned array, made unique (copying borrowed or shared elements first), for a
    /// caller that writes the elements.
    pub fn make_mut(&mut self) -> &mut ArcArray<T, IxDyn> {
        if let Store::Borrowed(_) = self {
            *self = Store::Owned(self.to_shared());
        }
        match self {
            Store::Owned(a) => a,
            Store::Borrowed(_) => unreachable!("made owned above"),
        }
    }

    /// True when the elements are borrowed, not owned.
    pub fn is_borrowed(&self) -> bool {
        matches!(self, Store::Borrowed(_))
    }
}

/// Elements of `shape` borrowed from `owner`'s bytes from `start` to their end, which must
/// hold exactly those elements, when they can be read in place: `T` has no invalid bit
/// patterns, the host is little-endian and the first element is aligned. `Ok(None)` asks
/// the caller to copy instead.
pub(super) fn borrowed<T: Elem + AnyBits>(
    owner: &Arc<dyn StableBytes>,
    start: usize,
    shape: &[usize],
) -> Result<Option<Store<T>>, TensorError> {
    let bytes = owner.bytes().get(start..).unwrap_or_default();
    let size = (shape.iter())
        .try_fold(std::mem::size_of::<T>(), |n, &d| n.checked_mul(d))
        .ok_or_else(|| TensorError::TooLarge(shape.to_vec()))?;
    if bytes.len() != size {
        return Err(TensorError::ByteLength {
            shape: shape.to_vec(),
            dtype: T::DTYPE,
            expected: size,
            got: bytes.len(),
        });
    }
    let aligned = (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>());
    if cfg!(target_endian = "big") || !aligned {
        return Ok(None);
    }
    Ok(Some(Store::Borrowed(Borrowed {
        owner: owner.clone(),
        start,
        shape: IxDyn(shape),
        elem: PhantomData,
    })))
}
