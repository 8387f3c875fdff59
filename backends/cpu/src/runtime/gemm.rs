//! Placeholder GEMM (replaced by the packed AVX2 kernel).

use super::pool::ThreadPool;

/// A read-only strided matrix.
#[derive(Clone, Copy)]
pub struct MatRef {
    /// First element.
    pub ptr: *const f32,
    /// Row stride, in elements.
    pub row_stride: isize,
    /// Column stride, in elements.
    pub col_stride: isize,
}

/// A writable strided matrix.
#[derive(Clone, Copy)]
pub struct MatMut {
    /// First element.
    pub ptr: *mut f32,
    /// Row stride, in elements.
    pub row_stride: isize,
    /// Column stride, in elements.
    pub col_stride: isize,
}

/// C = A·B (or C += A·B).
///
/// # Safety
/// The matrices must be valid for their shapes and strides.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    _pool: &ThreadPool,
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    b: MatRef,
    c: MatMut,
    accumulate: bool,
) {
    for i in 0..m as isize {
        for j in 0..n as isize {
            let mut s = 0f32;
            for p in 0..k as isize {
                s += *a.ptr.offset(i * a.row_stride + p * a.col_stride)
                    * *b.ptr.offset(p * b.row_stride + j * b.col_stride);
            }
            let o = c.ptr.offset(i * c.row_stride + j * c.col_stride);
            *o = if accumulate { *o + s } else { s };
        }
    }
}
