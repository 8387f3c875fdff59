//! Arithmetic shared by the op families: the `Num` trait (wrapping integer and native float
//! arithmetic), dtype dispatch over numeric tensors, and the half-precision wrapper.

use super::{op_err, Result};
use crate::{DType, Elem, Op, Tensor};
use ndarray::ArrayViewD;
use ndarray::{Array2, ArrayView2};

/// Element types with ring arithmetic: floats natively, integers wrapping.
pub(crate) trait Num: Elem {
    /// The multiplicative identity.
    fn one() -> Self;
    /// `self + o`.
    fn add(self, o: Self) -> Self;
    /// `self * o`.
    fn mul(self, o: Self) -> Self;
    /// A 2-D matrix product; floats use ndarray's blocked `dot`.
    fn matmul2(a: ArrayView2<Self>, b: ArrayView2<Self>) -> Array2<Self> {
        let (m, k) = a.dim();
        let n = b.dim().1;
        let mut out = Array2::from_elem((m, n), Self::default());
        for i in 0..m {
            let mut row = out.row_mut(i);
            for kk in 0..k {
                let x = a[[i, kk]];
                for (o, &y) in row.iter_mut().zip(b.row(kk).iter()) {
                    *o = o.add(x.mul(y));
                }
            }
        }
        out
    }
}

macro_rules! int_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            fn one() -> Self { 1 }
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
        }
    )*};
}
int_num!(i8, u8, i16, u16, i32, u32, i64, u64);

macro_rules! float_num {
    ($($t:ty),*) => {$(
        impl Num for $t {
            fn one() -> Self { 1.0 }
            fn add(self, o: Self) -> Self { self + o }
            fn mul(self, o: Self) -> Self { self * o }
            fn matmul2(a: ArrayView2<Self>, b: ArrayView2<Self>) -> Array2<Self> { a.dot(&b) }
        }
    )*};
}
float_num!(f32, f64);

/// Matches a tensor holding f32, f64 or an integer type, binding its array as `$a`; other
/// dtypes (half types, bool) are an unsupported-dtype error for `$op`.
macro_rules! num_match {
    ($op:expr, $t:expr, $a:ident => $body:expr) => {
        $crate::interp::num::num_match!(@ $op, $t, $a => $body; F32 F64 I8 U8 I16 U16 I32 U32 I64 U64)
    };
    (@ $op:expr, $t:expr, $a:ident => $body:expr; $($v:ident)*) => {
        match $t {
            $($crate::Tensor::$v(s) => {
                let $a = &s.view();
                $body
            })*
            other => Err($crate::interp::bad_dtype($op, other.dtype())),
        }
    };
}
pub(crate) use num_match;

/// The array of `t`, which must have the same element type as the op's first input.
pub(crate) fn same<'a, T: Elem>(op: &Op, t: &'a Tensor) -> Result<ArrayViewD<'a, T>> {
    t.as_array::<T>().ok_or_else(|| {
        op_err(
            op,
            format!("inputs must share dtype {}, got {}", T::DTYPE, t.dtype()),
        )
    })
}

/// Runs `f` with every f16/bf16 input cast to f32, then rounds f32 outputs back to that
/// half type: half-precision ops compute in f32 and round once.
pub(crate) fn halves_as_f32(
    inputs: &[Tensor],
    f: impl FnOnce(&[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<Vec<Tensor>> {
    let half = inputs
        .iter()
        .map(Tensor::dtype)
        .find(|d| matches!(d, DType::F16 | DType::BF16));
    let Some(h) = half else { return f(inputs) };
    let widened: Vec<Tensor> = inputs
        .iter()
        .map(|t| {
            if t.dtype() == h {
                t.cast(DType::F32)
            } else {
                t.clone()
            }
        })
        .collect();
    let outs = f(&widened)?;
    Ok(outs
        .into_iter()
        .map(|t| {
            if t.dtype() == DType::F32 {
                t.cast(h)
            } else {
                t
            }
        })
        .collect())
}

/// Reads a tensor of any integer dtype as i64 indices.
pub(crate) fn indices(op: &Op, t: &Tensor) -> Result<Vec<i64>> {
    if !t.dtype().is_int() {
        return Err(op_err(
            op,
            format!("indices must be integers, got {}", t.dtype()),
        ));
    }
    Ok(t.to_i64_vec())
}

/// Normalizes a possibly negative index against `n`, or reports it out of range.
pub(crate) fn norm_index(op: &Op, i: i64, n: usize) -> Result<usize> {
    let n_i = n as i64;
    let j = if i < 0 { i + n_i } else { i };
    if (0..n_i).contains(&j) {
        Ok(j as usize)
    } else {
        Err(op_err(
            op,
            format!("index {i} is out of range for a dim of size {n}"),
        ))
    }
}

/// Row-major strides of a shape, in elements.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The elements of an array in row-major order.
pub(crate) fn flat<T: Elem>(a: &ArrayViewD<'_, T>) -> Vec<T> {
    a.iter().copied().collect()
}

/// A tensor from row-major data and a shape whose element count matches.
pub(crate) fn tensor<T: Elem>(op: &Op, data: Vec<T>, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(data, shape).map_err(|e| op_err(op, e.to_string()))
}
