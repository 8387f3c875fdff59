//! Concrete tensors: one ndarray per element type, shared by reference counting.

use crate::DType;
use half::{bf16, f16};
use ndarray::{ArcArray, ArrayD, IxDyn};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

mod store;
pub use store::{StableBytes, Store};

/// A dynamic-rank, reference-counted ndarray.
pub type ArcArrayD<T> = ArcArray<T, IxDyn>;

/// A tensor with a concrete shape and data.
///
/// Cloning is cheap: the data is shared. Equality is bitwise, so a tensor holding NaN equals
/// itself, which is what a round trip through the text format needs.
///
/// ```
/// use kiln_ir::{DType, Tensor};
/// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
/// assert_eq!(t.dtype(), DType::F32);
/// assert_eq!(t.cast(DType::I64).to_i64_vec(), vec![1, 2, 3]);
/// ```
#[derive(Clone)]
pub enum Tensor {
    /// f32 data.
    F32(Store<f32>),
    /// f16 data.
    F16(Store<f16>),
    /// bf16 data.
    BF16(Store<bf16>),
    /// f64 data.
    F64(Store<f64>),
    /// i8 data.
    I8(Store<i8>),
    /// u8 data.
    U8(Store<u8>),
    /// i16 data.
    I16(Store<i16>),
    /// u16 data.
    U16(Store<u16>),
    /// i32 data.
    I32(Store<i32>),
    /// u32 data.
    U32(Store<u32>),
    /// i64 data.
    I64(Store<i64>),
    /// u64 data.
    U64(Store<u64>),
    /// bool data.
    Bool(Store<bool>),
}

/// Applies `$body` to a view of the elements of any tensor variant, bound as `$a` (an
/// `&ArrayViewD<T>`).
#[macro_export]
macro_rules! dispatch {
    ($t:expr, $a:ident => $body:expr) => {
        $crate::dispatch_store!($t, s => {
            let $a = &s.view();
            $body
        })
    };
}

/// Applies `$body` to the [`Store`] inside any tensor variant, bound as `$a` (by reference, or
/// by mutable reference when `$t` is one).
#[macro_export]
macro_rules! dispatch_store {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $body,
            $crate::Tensor::F16($a) => $body,
            $crate::Tensor::BF16($a) => $body,
            $crate::Tensor::F64($a) => $body,
            $crate::Tensor::I8($a) => $body,
            $crate::Tensor::U8($a) => $body,
            $crate::Tensor::I16($a) => $body,
            $crate::Tensor::U16($a) => $body,
            $crate::Tensor::I32($a) => $body,
            $crate::Tensor::U32($a) => $body,
            $crate::Tensor::I64($a) => $body,
            $crate::Tensor::U64($a) => $body,
            $crate::Tensor::Bool($a) => $body,
        }
    };
}

/// An element type that a [`Tensor`] can hold.
pub trait Elem:
    Copy + Default + PartialEq + PartialOrd + fmt::Debug + Send + Sync + 'static
{
    /// The matching dtype.
    const DTYPE: DType;
    /// Converts to f64 (bool: 0 or 1).
    fn to_f64(self) -> f64;
    /// Converts from f64, saturating for integers (NaN becomes 0).
    fn from_f64(v: f64) -> Self;
    /// Converts to i128, truncating floats toward zero.
    fn to_i128(self) -> i128;
    /// Converts from i128, wrapping for integers.
    fn from_i128(v: i128) -> Self;
    /// Wraps an array into a tensor.
    fn wrap(a: ArcArrayD<Self>) -> Tensor;
    /// The elements, if the tensor holds this element type.
    fn store(t: &Tensor) -> Option<&Store<Self>>;
    /// Little-endian bytes of one element.
    fn write_le(self, out: &mut Vec<u8>);
    /// Reads one element from little-endian bytes of the right length.
    fn read_le(b: &[u8]) -> Self;
    /// The element's bit pattern, for bitwise comparison.
    fn bits(self) -> u64;
}

macro_rules! int_elem {
    ($t:ty, $v:ident, $d:ident) => {
        impl Elem for $t {
            const DTYPE: DType = DType::$d;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_i128(self) -> i128 {
                self as i128
            }
            fn from_i128(v: i128) -> Self {
                v as $t
            }
            fn wrap(a: ArcArrayD<Self>) -> Tensor {
                Tensor::$v(Store::Owned(a))
            }
            fn store(t: &Tensor) -> Option<&Store<Self>> {
                match t {
                    Tensor::$v(a) => Some(a),
                    _ => None,
                }
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("element width"))
            }
            fn bits(self) -> u64 {
                self as u64
            }
        }
    };
}

int_elem!(i8, I8, I8);
int_elem!(u8, U8, U8);
int_elem!(i16, I16, I16);
int_elem!(u16, U16, U16);
int_elem!(i32, I32, I32);
int_elem!(u32, U32, U32);
int_elem!(i64, I64, I64);
int_elem!(u64, U64, U64);

macro_rules! float_elem {
    ($t:ty, $v:ident, $to:expr, $from:expr) => {
        impl Elem for $t {
            const DTYPE: DType = DType::$v;
            fn to_f64(self) -> f64 {
                $to(self)
            }
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
            fn to_i128(self) -> i128 {
                $to(self) as i128
            }
            fn from_i128(v: i128) -> Self {
                $from(v as f64)
            }
            fn wrap(a: ArcArrayD<Self>) -> Tensor {
                Tensor::$v(Store::Owned(a))
            }
            fn store(t: &Tensor) -> Option<&Store<Self>> {
                match t {
                    Tensor::$v(a) => Some(a),
                    _ => None,
                }
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("element width"))
            }
            fn bits(self) -> u64 {
                self.to_bits() as u64
            }
        }
    };
}

float_elem!(f32, F32, |x: f32| x as f64, |v: f64| v as f32);
float_elem!(f64, F64, |x: f64| x, |v: f64| v);
float_elem!(f16, F16, |x: f16| x.to_f64(), f16_from_f64);
float_elem!(bf16, BF16, |x: bf16| x.to_f64(), bf16_from_f64);

/// `v` rounded once to f16 (to nearest, ties to even), as ONNX and numpy cast.
/// `half::f16::from_f64` drops the f64's low 32 bits before rounding, so a value just past
/// a halfway point would round as the tie.
pub fn f16_from_f64(v: f64) -> f16 {
    f16::from_f32(f32_rounded_to_odd(v))
}

/// `v` rounded once to bf16 (to nearest, ties to even); see [`f16_from_f64`].
pub fn bf16_from_f64(v: f64) -> bf16 {
    bf16::from_f32(f32_rounded_to_odd(v))
}

/// `v` as an f32 rounded *to odd*: truncated, with the last bit set when that was inexact.
/// Rounding that to a type with at least two bits less precision gives the same result
/// as rounding `v` directly, so f64 → f32 → half rounds once.
fn f32_rounded_to_odd(v: f64) -> f32 {
    let near = v as f32;
    if v.is_nan() || f64::from(near) == v {
        return near;
    }
    let toward_zero = if f64::from(near).abs() > v.abs() {
        f32::from_bits(near.to_bits() - 1)
    } else {
        near
    };
    f32::from_bits(toward_zero.to_bits() | 1)
}

impl Elem for bool {
    const DTYPE: DType = DType::Bool;
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i128(self) -> i128 {
        self as i128
    }
    fn from_i128(v: i128) -> Self {
        v != 0
    }
    fn wrap(a: ArcArrayD<Self>) -> Tensor {
        Tensor::Bool(Store::Owned(a))
    }
    fn store(t: &Tensor) -> Option<&Store<Self>> {
        match t {
            Tensor::Bool(a) => Some(a),
            _ => None,
        }
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn read_le(b: &[u8]) -> Self {
        b[0] != 0
    }
    fn bits(self) -> u64 {
        self as u64
    }
}

/// Applies `$body` with `$T` bound to the Rust element type of a dtype.
#[macro_export]
macro_rules! with_dtype {
    ($d:expr, $T:ident => $body:expr) => {
        match $d {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F16 => {
                type $T = $crate::half::f16;
                $body
            }
            $crate::DType::BF16 => {
                type $T = $crate::half::bf16;
                $body
            }
            $crate::DType::F64 => {
                type $T = f64;
                $body
            }
            $crate::DType::I8 => {
                type $T = i8;
                $body
            }
            $crate::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::DType::I16 => {
                type $T = i16;
                $body
            }
            $crate::DType::U16 => {
                type $T = u16;
                $body
            }
            $crate::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::DType::U32 => {
                type $T = u32;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::DType::U64 => {
                type $T = u64;
                $body
            }
            $crate::DType::Bool => {
                type $T = bool;
                $body
            }
        }
    };
}

/// Errors building a tensor from raw parts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    /// The element count does not match the shape.
    #[error("shape {shape:?} holds {expected} elements but {got} were given")]
    Length {
        /// The requested shape.
        shape: Vec<usize>,
        /// Elements the shape holds.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// Raw data whose byte count does not match the shape and element type.
    #[error("shape {shape:?} of {dtype} takes {expected} bytes but {got} were given")]
    ByteLength {
        /// The requested shape.
        shape: Vec<usize>,
        /// The element type.
        dtype: DType,
        /// Bytes the shape takes.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// The shape's element count overflows.
    #[error("shape {0:?} is too large")]
    TooLarge(Vec<usize>),
    /// Reading the data failed.
    #[error("reading the data: {0}")]
    Read(String),
    /// The allocator could not provide the memory.
    #[error("cannot allocate {} for shape {shape:?}", crate::human_bytes(*bytes as u128))]
    Alloc {
        /// The requested shape.
        shape: Vec<usize>,
        /// Bytes requested.
        bytes: usize,
    },
}

/// A vector of `n` copies of `v`, allocated fallibly: a failed allocation is an error, not
/// an abort.
pub(crate) fn try_filled<T: Clone>(n: usize, v: T, shape: &[usize]) -> Result<Vec<T>, TensorError> {
    let mut out = try_with_capacity(n, shape)?;
    out.resize(n, v);
    Ok(out)
}

/// Element types whose all-zero bit pattern is the value zero (`false` for bool).
///
/// # Safety
/// Implementors must have no invalid bit patterns at zero and no padding.
unsafe trait ZeroBits: Sized {}
macro_rules! zero_bits {
    ($($t:ty),*) => { $(
        // SAFETY: a primitive number (or bool) whose zero bits are the value 0 (false).
        unsafe impl ZeroBits for $t {}
    )* };
}
zero_bits!(f32, f64, f16, bf16, i8, u8, i16, u16, i32, u32, i64, u64, bool);

/// Memory for `n` elements of `T` from the global allocator, zeroed or not, and its layout;
/// a failed allocation is an error, not an abort. No elements: a dangling, aligned pointer,
/// as an empty `Vec` holds, and nothing allocated.
fn try_alloc<T>(
    n: usize,
    zeroed: bool,
    shape: &[usize],
) -> Result<(*mut T, std::alloc::Layout), TensorError> {
    let layout =
        std::alloc::Layout::array::<T>(n).map_err(|_| TensorError::TooLarge(shape.to_vec()))?;
    if layout.size() == 0 {
        return Ok((std::ptr::NonNull::dangling().as_ptr(), layout));
    }
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe {
        match zeroed {
            true => std::alloc::alloc_zeroed(layout),
            false => std::alloc::alloc(layout),
        }
    };
    if ptr.is_null() {
        return Err(TensorError::Alloc {
            shape: shape.to_vec(),
            bytes: layout.size(),
        });
    }
    Ok((ptr.cast(), layout))
}

/// A vector of `n` zeros, allocated fallibly and already zeroed by the allocator: a large
/// buffer comes as fresh zero pages, so its zeros cost no pass over memory, and its pages are
/// first touched by whoever writes them (the kernels' threads, not this one).
fn try_zeroed<T: ZeroBits>(n: usize, shape: &[usize]) -> Result<Vec<T>, TensorError> {
    let (ptr, layout) = try_alloc::<T>(n, true, shape)?;
    if layout.size() == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: `ptr` came from the global allocator with the layout of `n` elements of `T`,
    // and zero bits are `n` valid elements (`ZeroBits`).
    Ok(unsafe { Vec::from_raw_parts(ptr, n, n) })
}

/// A tensor's memory, allocated but not yet written, for code that writes every element
/// (a compiled program's output): zeroing it first would be a pass over memory on the
/// calling thread, about 1% of a 1024³ GEMM, for bytes that are overwritten at once.
pub struct Unwritten {
    dtype: DType,
    shape: Vec<usize>,
    layout: std::alloc::Layout,
    ptr: *mut u8,
}

// SAFETY: it owns its allocation, as a `Vec` does, and hands out no references to it.
unsafe impl Send for Unwritten {}

impl Unwritten {
    /// Memory for a tensor of `dtype` and `shape`, allocated fallibly.
    pub fn new(dtype: DType, shape: &[usize]) -> Result<Unwritten, TensorError> {
        let n = element_count(shape)?;
        let (ptr, layout) = with_dtype!(dtype, T => {
            let (ptr, layout) = try_alloc::<T>(n, false, shape)?;
            (ptr.cast::<u8>(), layout)
        });
        Ok(Unwritten {
            dtype,
            shape: shape.to_vec(),
            layout,
            ptr,
        })
    }

    /// The first byte, for the code that writes the elements (dangling when there are
    /// none).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    /// The tensor, now that its elements are written.
    ///
    /// # Safety
    /// Every element must have been written with a valid value of the dtype.
    pub unsafe fn assume_written(mut self) -> Tensor {
        let shape = std::mem::take(&mut self.shape);
        // From here the allocation belongs to the tensor; `drop` frees nothing.
        let layout = std::mem::replace(&mut self.layout, std::alloc::Layout::new::<()>());
        let (ptr, n) = (self.ptr, layout.size() / self.dtype.size_bytes());
        with_dtype!(self.dtype, T => {
            let v: Vec<T> = if layout.size() == 0 {
                Vec::new()
            } else {
                // SAFETY: `ptr` came from the global allocator with the layout of `n`
                // elements of `T`, which the caller says are all written.
                unsafe { Vec::from_raw_parts(ptr.cast::<T>(), n, n) }
            };
            Tensor::from_vec(v, &shape).expect("the count was checked when allocated")
        })
    }
}

impl Drop for Unwritten {
    fn drop(&mut self) {
        if self.layout.size() != 0 {
            // SAFETY: allocated in `new` with this layout and not handed to a tensor.
            unsafe { std::alloc::dealloc(self.ptr, self.layout) }
        }
    }
}

/// An empty vector with room for `n` elements, allocated fallibly.
pub(crate) fn try_with_capacity<T>(n: usize, shape: &[usize]) -> Result<Vec<T>, TensorError> {
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| TensorError::Alloc {
        shape: shape.to_vec(),
        bytes: n.saturating_mul(std::mem::size_of::<T>()),
    })?;
    Ok(out)
}

/// The element count of `shape`, or `TooLarge` when ndarray could not hold it: the count, or
/// the product of the non-zero dims (which bounds the strides), is over `isize::MAX`.
fn element_count(shape: &[usize]) -> Result<usize, TensorError> {
    if !crate::limit::addressable(shape) {
        return Err(TensorError::TooLarge(shape.to_vec()));
    }
    Ok(shape.iter().product())
}

impl Tensor {
    /// A tensor from a flat vector in row-major order.
    pub fn from_vec<T: Elem>(data: Vec<T>, shape: &[usize]) -> Result<Tensor, TensorError> {
        let expected = element_count(shape)?;
        if expected != data.len() {
            return Err(TensorError::Length {
                shape: shape.to_vec(),
                expected,
                got: data.len(),
            });
        }
        let a = ArrayD::from_shape_vec(IxDyn(shape), data).expect("length checked");
        Ok(T::wrap(a.into_shared()))
    }

    /// A tensor from an owned ndarray.
    pub fn from_array<T: Elem>(a: ArrayD<T>) -> Tensor {
        T::wrap(a.into_shared())
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Elem>(v: T) -> Tensor {
        T::wrap(ArrayD::from_elem(IxDyn(&[]), v).into_shared())
    }

    /// A tensor of `dtype` filled with `v` (converted from f64).
    pub fn full(dtype: DType, shape: &[usize], v: f64) -> Result<Tensor, TensorError> {
        let n = element_count(shape)?;
        Ok(
            with_dtype!(dtype, T => Tensor::from_vec(try_filled(n, <T as Elem>::from_f64(v), shape)?, shape)?),
        )
    }

    /// A zero-filled tensor.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor, TensorError> {
        let n = element_count(shape)?;
        Ok(with_dtype!(dtype, T => Tensor::from_vec(try_zeroed::<T>(n, shape)?, shape)?))
    }

    /// A tensor from little-endian bytes.
    pub fn from_le_bytes(
        dtype: DType,
        shape: &[usize],
        bytes: &[u8],
    ) -> Result<Tensor, TensorError> {
        let n = element_count(shape)?;
        let w = dtype.size_bytes();
        let expected = n
            .checked_mul(w)
            .ok_or_else(|| TensorError::TooLarge(shape.to_vec()))?;
        if bytes.len() != expected {
            return Err(TensorError::ByteLength {
                shape: shape.to_vec(),
                dtype,
                expected,
                got: bytes.len(),
            });
        }
        Ok(with_dtype!(dtype, T => {
            let mut v: Vec<T> = try_with_capacity(n, shape)?;
            v.extend(bytes.chunks_exact(w).map(T::read_le));
            Tensor::from_vec(v, shape)?
        }))
    }

    /// A tensor of `dtype` and `shape` whose little-endian elements are `owner`'s bytes from
    /// `start` on (exactly as many as the shape holds), read in place (the tensor keeps
    /// `owner` alive) where they can be: on a little-endian host, aligned for the element
    /// type, and not bool (whose bytes must be checked). Otherwise they are copied.
    pub fn from_stable_bytes(
        dtype: DType,
        shape: &[usize],
        owner: Arc<dyn StableBytes>,
        start: usize,
    ) -> Result<Tensor, TensorError> {
        element_count(shape)?;
        macro_rules! borrow {
            ($($d:ident),*) => {
                match dtype {
                    $(DType::$d => store::borrowed(&owner, start, shape)?.map(Tensor::$d),)*
                    DType::Bool => None,
                }
            };
        }
        match borrow!(F32, F16, BF16, F64, I8, U8, I16, U16, I32, U32, I64, U64) {
            Some(t) => Ok(t),
            None => {
                Tensor::from_le_bytes(dtype, shape, owner.bytes().get(start..).unwrap_or_default())
            }
        }
    }

    /// A tensor from `expected` little-endian bytes that `read` delivers in order, a piece
    /// of at most 1 MiB per call (it fills the whole slice or fails): a weight streams from
    /// a file into its tensor without a second copy of it in memory.
    pub fn from_le_pieces(
        dtype: DType,
        shape: &[usize],
        bytes: usize,
        mut read: impl FnMut(&mut [u8]) -> std::io::Result<()>,
    ) -> Result<Tensor, TensorError> {
        let n = element_count(shape)?;
        let w = dtype.size_bytes();
        let expected = n
            .checked_mul(w)
            .ok_or_else(|| TensorError::TooLarge(shape.to_vec()))?;
        if bytes != expected {
            return Err(TensorError::ByteLength {
                shape: shape.to_vec(),
                dtype,
                expected,
                got: bytes,
            });
        }
        const PIECE: usize = 1 << 20;
        Ok(with_dtype!(dtype, T => {
            let mut v: Vec<T> = try_with_capacity(n, shape)?;
            let mut buf = vec![0u8; expected.min(PIECE / w * w)];
            while v.len() < n {
                let take = (n - v.len()).min(buf.len() / w) * w;
                read(&mut buf[..take]).map_err(|e| TensorError::Read(e.to_string()))?;
                v.extend(buf[..take].chunks_exact(w).map(T::read_le));
            }
            Tensor::from_vec(v, shape)?
        }))
    }

    /// The data as little-endian bytes, row-major.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() * self.dtype().size_bytes());
        dispatch!(self, a => for x in a.iter() { x.write_le(&mut out) });
        out
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        fn d<T: Elem>(_: &Store<T>) -> DType {
            T::DTYPE
        }
        dispatch_store!(self, s => d(s))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        dispatch_store!(self, s => s.shape())
    }

    /// The rank.
    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        dispatch!(self, a => a.len())
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A view of the typed elements, if the dtype matches.
    pub fn as_array<T: Elem>(&self) -> Option<ndarray::ArrayViewD<'_, T>> {
        T::store(self).map(Store::view)
    }

    /// The address of the first element.
    pub fn as_ptr(&self) -> *const u8 {
        dispatch!(self, a => a.as_ptr().cast())
    }

    /// The address of the first element, for writing: the elements are made the tensor's
    /// own first (copied when borrowed or shared with another tensor).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        dispatch_store!(self, s => s.make_mut().as_mut_ptr().cast())
    }

    /// True when the elements are borrowed from a mapped file rather than owned.
    pub fn is_borrowed(&self) -> bool {
        dispatch_store!(self, s => s.is_borrowed())
    }

    /// Converts to another dtype with ONNX `Cast` semantics (floats truncate toward zero
    /// into integers, saturating to the type's range with NaN as 0; integers wrap;
    /// non-zero is `true`).
    pub fn cast(&self, to: DType) -> Tensor {
        if self.dtype() == to {
            return self.clone();
        }
        let via_float = self.dtype().is_float() || to.is_float();
        with_dtype!(to, T => dispatch!(self, a => T::wrap(a.map(|x| {
            if via_float { <T as Elem>::from_f64(x.to_f64()) } else { T::from_i128(x.to_i128()) }
        }).into_shared())))
    }

    /// The elements of dtype `T`, row-major: borrowed where they are contiguous (a weight
    /// read in place is then never copied), else collected. `None` for another dtype.
    /// Prefer it to the widening `to_f64_vec`/`to_i64_vec` for large tensors: those take
    /// eight bytes per element at once.
    pub fn values<T: Elem>(&self) -> Option<std::borrow::Cow<'_, [T]>> {
        let a = self.as_array::<T>()?;
        Some(match a.to_slice() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(a.iter().copied().collect()),
        })
    }

    /// The elements as f64, row-major.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        dispatch!(self, a => a.iter().map(|x| x.to_f64()).collect())
    }

    /// The elements as i64, row-major (floats truncate).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        dispatch!(self, a => a.iter().map(|x| x.to_i128() as i64).collect())
    }

    /// The same data under a new shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor, TensorError> {
        let expected = element_count(shape)?;
        if expected != self.len() {
            return Err(TensorError::Length {
                shape: shape.to_vec(),
                expected,
                got: self.len(),
            });
        }
        Ok(dispatch!(self, a => Elem::wrap(
            a.as_standard_layout().into_owned().into_shape_with_order(IxDyn(shape)).expect("count checked").into_shared()
        )))
    }
}

impl PartialEq for Tensor {
    /// Bitwise equality, element by element: no copy, and it stops at the first difference,
    /// which matters for passes that compare constants holding a model's weights.
    fn eq(&self, other: &Tensor) -> bool {
        fn same<T: Elem>(a: &ndarray::ArrayViewD<'_, T>, other: &Tensor) -> bool {
            let b = other.as_array::<T>().expect("dtypes compared first");
            (a.as_ptr() == b.as_ptr() && a.strides() == b.strides())
                || a.iter().zip(b.iter()).all(|(x, y)| x.bits() == y.bits())
        }
        self.dtype() == other.dtype()
            && self.shape() == other.shape()
            && dispatch!(self, a => same(a, other))
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}{:?}>", self.dtype(), self.shape())?;
        if self.len() <= 16 {
            dispatch!(self, a => write!(f, "{:?}", a.iter().collect::<Vec<_>>()))?;
        }
        Ok(())
    }
}

/// The serialized form of a tensor: dtype, shape and base64 little-endian bytes.
#[derive(Serialize, Deserialize)]
struct TensorRepr {
    dtype: DType,
    shape: Vec<usize>,
    data: String,
}

impl Serialize for Tensor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        TensorRepr {
            dtype: self.dtype(),
            shape: self.shape().to_vec(),
            data: base64::engine::general_purpose::STANDARD.encode(self.to_le_bytes()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Tensor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Tensor, D::Error> {
        use base64::Engine;
        let r = TensorRepr::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(r.data)
            .map_err(serde::de::Error::custom)?;
        Tensor::from_le_bytes(r.dtype, &r.shape, &bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_borrowed_when_contiguous_and_row_major_always() {
        let t = Tensor::from_vec(vec![1u8, 2, 3, 4, 5, 6], &[2, 3]).unwrap();
        let v = t.values::<u8>().unwrap();
        assert!(matches!(v, std::borrow::Cow::Borrowed(_)));
        assert_eq!(*v, [1, 2, 3, 4, 5, 6]);
        let a = ndarray::ArrayD::from_shape_vec(vec![2, 3], vec![1u8, 2, 3, 4, 5, 6]).unwrap();
        let t = Tensor::from_array(a.reversed_axes());
        let v = t.values::<u8>().unwrap();
        assert!(matches!(v, std::borrow::Cow::Owned(_)));
        assert_eq!(*v, [1, 4, 2, 5, 3, 6]);
        assert!(t.values::<f32>().is_none());
    }

    #[test]
    fn bytes_round_trip_every_dtype() {
        for d in DType::ALL {
            let t = Tensor::full(d, &[2, 3], 1.0).unwrap();
            let back = Tensor::from_le_bytes(d, &[2, 3], &t.to_le_bytes()).unwrap();
            assert_eq!(t, back);
            assert_eq!(back.dtype(), d);
        }
    }

    #[test]
    fn halves_from_f64_round_once() {
        let past_tie = 1.0 + 2f64.powi(-8) + 2f64.powi(-30);
        assert_eq!(bf16_from_f64(past_tie).to_bits(), 0x3f81);
        assert_eq!(bf16_from_f64(-past_tie).to_bits(), 0xbf81);
        assert_eq!(bf16_from_f64(1.0 + 2f64.powi(-8)).to_bits(), 0x3f80);
        assert_eq!(
            f16_from_f64(1.0 + 2f64.powi(-11) + 2f64.powi(-30)).to_bits(),
            0x3c01
        );
        assert_eq!(f16_from_f64(1.0 + 2f64.powi(-11)).to_bits(), 0x3c00);
        assert_eq!(f16_from_f64(1e300), f16::INFINITY);
        assert_eq!(bf16_from_f64(-1e300), bf16::NEG_INFINITY);
        assert_eq!(f16_from_f64(1e-300).to_bits(), 0);
        assert_eq!(f16_from_f64(-1e-300).to_bits(), 0x8000);
        assert!(bf16_from_f64(f64::NAN).is_nan());
        let t = Tensor::from_vec(vec![past_tie], &[1])
            .unwrap()
            .cast(DType::BF16);
        assert_eq!(t.to_f64_vec(), vec![1.0078125]);
    }

    #[test]
    fn cast_follows_onnx() {
        let t = Tensor::from_vec(vec![-1.7f32, 0.0, 2.9], &[3]).unwrap();
        assert_eq!(t.cast(DType::I32).to_i64_vec(), vec![-1, 0, 2]);
        assert_eq!(t.cast(DType::Bool).to_i64_vec(), vec![1, 0, 1]);
        let big = Tensor::from_vec(vec![300i64], &[1]).unwrap();
        assert_eq!(big.cast(DType::U8).to_i64_vec(), vec![44]);
        let wide = Tensor::from_vec(vec![f32::NAN, -3.0, 300.0, f32::INFINITY], &[4]).unwrap();
        assert_eq!(wide.cast(DType::U8).to_i64_vec(), vec![0, 0, 255, 255]);
        assert_eq!(wide.cast(DType::I8).to_i64_vec(), vec![0, -3, 127, 127]);
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert!(Tensor::from_vec(vec![1.0f32; 5], &[2, 3]).is_err());
        assert!(Tensor::from_le_bytes(DType::F32, &[2], &[0; 7]).is_err());
        assert!(Tensor::zeros(DType::F32, &[usize::MAX, 4]).is_err());
    }

    #[test]
    fn equality_is_bitwise_and_by_value() {
        let a = Tensor::from_vec(vec![1.0f32, -0.0, 3.0], &[3]).unwrap();
        let b = Tensor::from_vec(vec![1.0f32, -0.0, 3.0], &[3]).unwrap();
        let c = Tensor::from_vec(vec![1.0f32, 0.0, 3.0], &[3]).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c, "-0.0 and 0.0 differ bitwise");
        assert_ne!(a, a.reshape(&[3, 1]).unwrap());
        assert_ne!(a, a.cast(DType::F64));
    }

    #[test]
    fn stable_bytes_are_read_in_place_when_aligned_and_copied_otherwise() {
        let values = [1.5f32, -2.0, 3.25, 4.0, 5.0, 6.5];
        let mut bytes = vec![0u8; 8];
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        let owner: Arc<dyn StableBytes> = Arc::new(bytes);
        let expected = Tensor::from_vec(values.to_vec(), &[2, 3]).unwrap();
        let at =
            |i: usize, align: usize| (owner.bytes()[i..].as_ptr() as usize).is_multiple_of(align);
        let f = Tensor::from_stable_bytes(DType::F32, &[2, 3], owner.clone(), 8).unwrap();
        assert_eq!(f.is_borrowed(), at(8, 4));
        assert_eq!(f, expected);
        if f.is_borrowed() {
            assert_eq!(f.as_ptr(), owner.bytes()[8..].as_ptr());
        }
        // One byte off, u16 elements are misaligned (whenever byte 8 is aligned): copied.
        let odd = Tensor::from_stable_bytes(DType::U16, &[12], owner.clone(), 7);
        assert!(odd.is_err(), "25 bytes are not 12 u16 elements");
        let short: Arc<dyn StableBytes> = Arc::new(owner.bytes()[..11].to_vec());
        let odd = Tensor::from_stable_bytes(DType::U16, &[2], short.clone(), 7).unwrap();
        let misaligned = !(short.bytes()[7..].as_ptr() as usize).is_multiple_of(2);
        assert_eq!(odd.is_borrowed(), !misaligned);
        let want = Tensor::from_le_bytes(DType::U16, &[2], &short.bytes()[7..]).unwrap();
        assert_eq!(odd, want);
        // Bool bytes must be checked, so they are always copied.
        let flags = Tensor::from_stable_bytes(DType::Bool, &[24], owner.clone(), 8).unwrap();
        assert!(!flags.is_borrowed());
        assert!(Tensor::from_stable_bytes(DType::Bool, &[4], owner.clone(), 8).is_err());
        // Too few bytes, too many, and a start past the end.
        assert!(Tensor::from_stable_bytes(DType::F32, &[2, 4], owner.clone(), 8).is_err());
        assert!(Tensor::from_stable_bytes(DType::F32, &[1], owner.clone(), 8).is_err());
        assert!(Tensor::from_stable_bytes(DType::F32, &[1], owner, 64).is_err());
    }

    #[test]
    fn writing_a_borrowed_tensor_copies_it_first() {
        let bytes: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let owner: Arc<dyn StableBytes> = Arc::new(bytes);
        let shared = Tensor::from_stable_bytes(DType::F32, &[2], owner.clone(), 0).unwrap();
        let mut mine = shared.clone();
        let p = mine.as_mut_ptr().cast::<f32>();
        // SAFETY: `mine` owns two f32 elements after `as_mut_ptr`.
        unsafe { *p = 9.0 };
        assert!(!mine.is_borrowed());
        assert_eq!(mine.to_f64_vec(), vec![9.0, 2.0]);
        assert_eq!(shared.to_f64_vec(), vec![1.0, 2.0]);
        assert_eq!(&owner.bytes()[..4], &1.0f32.to_le_bytes());
    }

    #[test]
    fn unwritten_memory_becomes_the_tensor_its_writer_filled() {
        let mut u = Unwritten::new(DType::F32, &[2, 3]).unwrap();
        let p = u.as_mut_ptr().cast::<f32>();
        for i in 0..6 {
            // SAFETY: six f32 elements were allocated.
            unsafe { p.add(i).write(i as f32) };
        }
        // SAFETY: every element was written above.
        let t = unsafe { u.assume_written() };
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.to_f64_vec(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        // SAFETY: no elements to write.
        let empty = unsafe {
            Unwritten::new(DType::I64, &[0, 4])
                .unwrap()
                .assume_written()
        };
        assert_eq!(empty.shape(), &[0, 4]);
        drop(Unwritten::new(DType::F64, &[8]).unwrap()); // freed unwritten, never read
        assert!(Unwritten::new(DType::F32, &[usize::MAX, 4]).is_err());
    }

    #[test]
    fn nan_equals_itself() {
        let t = Tensor::from_vec(vec![f32::NAN], &[1]).unwrap();
        assert_eq!(t, t.clone());
    }
}
