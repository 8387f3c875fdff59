//! Shape and type inference: the output types of an op from its input types.
//!
//! Every [`Op`] variant is handled by one exhaustive match in [`infer`]; the rules follow
//! each variant's doc in `op.rs`. Dims are symbolic: two dims agree when they are equal
//! [`Dim`]s, or when one is a constant and the other symbolic (the constant wins and the
//! runtime checks it). Broadcasting also accepts a constant 1 on either side.

mod elementwise;
mod index;
mod nn;
mod shape;
#[cfg(test)]
mod tests;

use crate::{DType, Dim, Op, TensorType};
use std::fmt;

/// Why an op cannot take the given input types.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{op}: {message}")]
pub struct InferError {
    /// The op's text-format name.
    pub op: String,
    /// What is wrong.
    pub message: String,
}

/// How many inputs an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exactly(usize),
    /// This many or more.
    AtLeast(usize),
}

impl Arity {
    /// True if `n` inputs are acceptable.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }
}

impl fmt::Display for Arity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arity::Exactly(k) => write!(f, "{k}"),
            Arity::AtLeast(k) => write!(f, "at least {k}"),
        }
    }
}

/// The number of inputs `op` takes.
pub fn input_arity(op: &Op) -> Arity {
    use Arity::{AtLeast, Exactly};
    match op {
        Op::Const(_) | Op::ShapeValue { .. } => Exactly(0),
        Op::ShapeOf
        | Op::Unary(_)
        | Op::Cast { .. }
        | Op::Bitcast { .. }
        | Op::Reduce { .. }
        | Op::ArgReduce { .. }
        | Op::Softmax { .. }
        | Op::Pool(_)
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Expand { .. }
        | Op::Trilu { .. }
        | Op::Scan { .. }
        | Op::TopK { .. }
        | Op::NonZero { .. } => Exactly(1),
        Op::Binary(_)
        | Op::MatMul
        | Op::Conv(_)
        | Op::ConvTranspose(_)
        | Op::Pad { .. }
        | Op::Gather { .. }
        | Op::GatherElements { .. }
        | Op::GatherNd { .. }
        | Op::Range { .. }
        | Op::OneHot { .. } => Exactly(2),
        Op::Where | Op::ScatterElements { .. } | Op::ScatterNd { .. } | Op::LayerNorm { .. } => {
            Exactly(3)
        }
        Op::RmsNorm { .. } => Exactly(2),
        Op::Rotary => Exactly(3),
        Op::Attention(a) => match a.mask {
            crate::AttentionMask::None => Exactly(3),
            _ => Exactly(4),
        },
        Op::Linear(e) => Exactly(e.inputs()),
        Op::QuantLinear(q) => Exactly(q.inputs()),
        Op::Concat { .. } => AtLeast(1),
        Op::Einsum(spec) => Exactly(spec.inputs.len()),
    }
}

/// The output types of `op` applied to inputs of the given types.
///
/// ```
/// use kiln_ir::{infer, DType, Dim, Op, TensorType};
/// let a = TensorType::new(DType::F32, vec![Dim::sym("b"), Dim::from(3i64)]);
/// let w = TensorType::fixed(DType::F32, &[4, 5]);
/// let err = infer(&Op::MatMul, &[&a, &w]).unwrap_err();
/// assert_eq!(err.to_string(), "matmul: contraction dims differ (3 vs 4)");
/// ```
pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, InferError> {
    let arity = input_arity(op);
    let result = if arity.accepts(inputs.len()) {
        infer_checked(op, inputs)
    } else {
        Err(format!("expects {arity} inputs, got {}", inputs.len()))
    };
    result.map_err(|message| InferError {
        op: op.name(),
        message,
    })
}

/// Result of the per-op rules: the message becomes an [`InferError`].
type Res<T> = Result<T, String>;

fn one(t: TensorType) -> Res<Vec<TensorType>> {
    Ok(vec![t])
}

/// Dispatch once the arity is known to be right.
fn infer_checked(op: &Op, x: &[&TensorType]) -> Res<Vec<TensorType>> {
    match op {
        Op::Const(t) => one(TensorType::fixed(t.dtype(), t.shape())),
        Op::ShapeValue { dims, scalar } => shape::shape_value(dims, *scalar),
        Op::ShapeOf => one(TensorType::fixed(DType::I64, &[x[0].rank()])),
        Op::Unary(u) => elementwise::unary(*u, x[0]),
        Op::Binary(b) => elementwise::binary(*b, x[0], x[1]),
        Op::Where => elementwise::where_(x[0], x[1], x[2]),
        Op::Cast { to } => one(TensorType::new(*to, x[0].shape.clone())),
        Op::Bitcast { to } => elementwise::bitcast(*to, x[0]),
        Op::Reduce {
            axes, keep_dims, ..
        } => shape::reduce(x[0], axes, *keep_dims),
        Op::ArgReduce {
            axis, keep_dims, ..
        } => shape::arg_reduce(x[0], *axis, *keep_dims),
        Op::Softmax { axis, .. } => {
            check_axis(*axis, x[0].rank())?;
            expect_dtype(x[0], "input", DType::is_float, "a float")?;
            one(x[0].clone())
        }
        Op::MatMul => nn::matmul(x[0], x[1]),
        Op::Conv(a) => nn::conv(a, x[0], x[1]),
        Op::ConvTranspose(a) => nn::conv_transpose(a, x[0], x[1]),
        Op::Pool(a) => nn::pool(a, x[0]),
        Op::Reshape { shape } => shape::reshape(x[0], shape),
        Op::Transpose { perm } => shape::transpose(x[0], perm),
        Op::Slice { axes } => shape::slice(x[0], axes),
        Op::Concat { axis } => shape::concat(x, *axis),
        Op::Pad { pads, .. } => shape::pad(x[0], x[1], pads),
        Op::Expand { shape } => shape::expand(x[0], shape),
        Op::Gather { axis } => index::gather(x[0], x[1], *axis),
        Op::GatherElements { axis } => index::gather_elements(x[0], x[1], *axis),
        Op::GatherNd { batch_dims } => index::gather_nd(x[0], x[1], *batch_dims),
        Op::ScatterElements { axis, .. } => index::scatter_elements(x[0], x[1], x[2], *axis),
        Op::ScatterNd { .. } => index::scatter_nd(x[0], x[1], x[2]),
        Op::Range { len } => shape::range(x[0], x[1], len),
        Op::Trilu { .. } => {
            if x[0].rank() < 2 {
                return Err(format!("input must have rank >= 2, got {}", x[0]));
            }
            one(x[0].clone())
        }
        Op::Scan { axis, .. } => {
            check_axis(*axis, x[0].rank())?;
            expect_dtype(x[0], "input", is_numeric, "a numeric")?;
            one(x[0].clone())
        }
        Op::TopK { axis, k, .. } => index::top_k(x[0], *axis, *k),
        Op::OneHot { axis, depth } => index::one_hot(x[0], x[1], *axis, *depth),
        Op::NonZero { count } => one(TensorType::new(
            DType::I64,
            vec![Dim::from(x[0].rank()), Dim::sym(count.clone())],
        )),
        Op::Einsum(spec) => nn::einsum(spec, x),
        Op::LayerNorm { .. } | Op::RmsNorm { .. } => nn::norm(x),
        Op::Attention(a) => nn::attention(a, x),
        Op::Rotary => nn::rotary(x),
        Op::Linear(e) => nn::linear(*e, x),
        Op::QuantLinear(q) => nn::quant_linear(*q, x),
    }
}

/// True for every dtype but bool.
fn is_numeric(d: DType) -> bool {
    d != DType::Bool
}

/// Fails unless `axis < rank`.
fn check_axis(axis: usize, rank: usize) -> Res<()> {
    if axis < rank {
        Ok(())
    } else {
        Err(format!("axis {axis} out of range for rank {rank}"))
    }
}

/// Fails unless the input's dtype satisfies `ok`; `kind` reads "a float", "an integer"….
fn expect_dtype(t: &TensorType, what: &str, ok: fn(DType) -> bool, kind: &str) -> Res<()> {
    if ok(t.dtype) {
        Ok(())
    } else {
        Err(format!("{what} must be {kind} type, got {}", t.dtype))
    }
}

/// Fails unless both inputs share a dtype.
fn same_dtype(a: &TensorType, b: &TensorType, what: &str) -> Res<()> {
    if a.dtype == b.dtype {
        Ok(())
    } else {
        Err(format!("{what} dtypes differ ({} vs {})", a.dtype, b.dtype))
    }
}

/// Two dims that must be the same size: equal, or constant against symbolic (the constant
/// wins). `None` when they certainly or irreconcilably differ.
pub(crate) fn unify(a: &Dim, b: &Dim) -> Option<Dim> {
    if a == b {
        return Some(a.clone());
    }
    match (a.is_const(), b.is_const()) {
        (true, false) => Some(a.clone()),
        (false, true) => Some(b.clone()),
        _ => None,
    }
}

/// [`unify`] with a message naming what differs.
fn unify_or(a: &Dim, b: &Dim, what: &str) -> Res<Dim> {
    unify(a, b).ok_or_else(|| format!("{what} differ ({a} vs {b})"))
}

/// Numpy broadcasting of one pair of dims.
pub(crate) fn broadcast_dim(a: &Dim, b: &Dim) -> Res<Dim> {
    if a == b || b.as_const() == Some(1) {
        return Ok(a.clone());
    }
    if a.as_const() == Some(1) {
        return Ok(b.clone());
    }
    unify(a, b).ok_or_else(|| format!("cannot broadcast {a} with {b}"))
}

/// Numpy broadcasting of two shapes, aligned at the right.
pub(crate) fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Res<Vec<Dim>> {
    let rank = a.len().max(b.len());
    let one = Dim::from(1i64);
    let at = |s: &[Dim], i: usize| {
        let pad = rank - s.len();
        if i < pad {
            one.clone()
        } else {
            s[i - pad].clone()
        }
    };
    (0..rank)
        .map(|i| broadcast_dim(&at(a, i), &at(b, i)))
        .collect::<Res<Vec<Dim>>>()
        .map_err(|e| format!("{e} (shapes [{}] and [{}])", join(a), join(b)))
}

/// Dims separated by commas, for messages.
pub(crate) fn join(dims: &[Dim]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fails if `d` is a negative constant; `what` names it.
fn non_negative(d: Dim, what: &str) -> Res<Dim> {
    match d.as_const() {
        Some(c) if c < 0 => Err(format!("{what} is negative ({c})")),
        _ => Ok(d),
    }
}
