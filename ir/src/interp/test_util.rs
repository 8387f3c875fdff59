//! Tensor constructors shared by the interpreter's unit tests.

use crate::Tensor;

/// An `i64` tensor from row-major values.
pub(crate) fn ints(v: Vec<i64>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(v, shape).unwrap()
}

/// An `i64` tensor holding `0, 1, 2, …` in row-major order.
pub(crate) fn iota(shape: &[usize]) -> Tensor {
    ints((0..shape.iter().product::<usize>() as i64).collect(), shape)
}
