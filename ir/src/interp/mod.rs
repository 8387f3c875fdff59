//! The reference interpreter: the definition of every op's semantics.
//!
//! Each op family lives in its own file as plain ndarray code, written to be obviously
//! correct rather than fast (though nothing is quadratic where the op is not: 2-D float
//! blocks of matmul and convolution go through ndarray's `dot`). Semantics follow the ONNX
//! op each core op comes from. Half-precision inputs (f16, bf16) are computed in f32 and
//! rounded back once per output element. Integer arithmetic wraps.
//!
//! [`eval_op`] evaluates one op on concrete tensors; [`run`] evaluates a whole graph,
//! checking the inputs against the graph's types and binding its symbols.

mod cast;
mod conv;
mod einsum;
mod elementwise;
mod fused;
mod indexing;
mod matmul;
mod movement;
mod num;
mod pool;
mod quant;
mod reduce;
mod run;
mod scan;
mod scatter;
#[cfg(test)]
mod test_util;
mod topk;

pub use elementwise::int_pow;
pub use indexing::check_indices;
pub use run::{bind_input_types, run, run_with, RunOptions};

use crate::{Bindings, DType, Dim, Op, Tensor};

/// Why an op or a graph could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpError {
    /// The op cannot take these inputs (wrong dtype, incompatible shapes, an index out of
    /// range): the graph or its input data is at fault.
    #[error("{op}: {message}")]
    Op {
        /// The op's text-format name.
        op: String,
        /// What is wrong.
        message: String,
    },
    /// An op failed inside a graph; wraps the op's error with the node that raised it. The
    /// inner error is printed here and is not also the `source`, so that printers of error
    /// chains say it once.
    #[error("node `{name}` {}", at_node(.error))]
    Node {
        /// Index of the node in the graph.
        index: usize,
        /// The node's name (its provenance).
        name: String,
        /// The op's error.
        error: Box<InterpError>,
    },
    /// The caller passed the wrong number of graph inputs.
    #[error("the graph takes {expected} inputs but {got} were given")]
    InputCount {
        /// Inputs the graph declares.
        expected: usize,
        /// Inputs given.
        got: usize,
    },
    /// A graph input does not match its declared type: the caller is at fault.
    #[error("input `{name}`: {message}")]
    Input {
        /// The input's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A node produced a value that disagrees with the type the graph records for it: a bug
    /// in shape inference, a pass, or this interpreter.
    #[error(
        "node {index} `{name}` ({op}): output {output} is {got}, but the graph says {expected}"
    )]
    OutputType {
        /// Index of the node.
        index: usize,
        /// The node's name.
        name: String,
        /// The op's name.
        op: String,
        /// Which output.
        output: usize,
        /// The recorded type.
        expected: String,
        /// What the interpreter produced.
        got: String,
    },
    /// A node's output would not fit under the memory limit, or its shape has a negative or
    /// overflowing dim; checked before the node runs.
    #[error(transparent)]
    Size(#[from] crate::SizeError),
}

/// An op's error as it reads after a node's name: `(gather): index 7 is out of range`.
fn at_node(error: &InterpError) -> String {
    match error {
        InterpError::Op { op, message } => format!("({op}): {message}"),
        other => format!(": {other}"),
    }
}

/// Result type of the interpreter.
pub type Result<T> = std::result::Result<T, InterpError>;

/// The largest number of elements any op may allocate.
pub(crate) const MAX_ELEMENTS: usize = 1 << 31;

/// An [`InterpError::Op`] for `op`.
pub(crate) fn op_err(op: &Op, message: impl Into<String>) -> InterpError {
    InterpError::Op {
        op: op.name(),
        message: message.into(),
    }
}

/// The error for an input dtype the op does not accept.
pub(crate) fn bad_dtype(op: &Op, d: DType) -> InterpError {
    op_err(op, format!("unsupported dtype {d}"))
}

/// Checks that a shape about to be allocated is not overlarge, and that its strides fit
/// (ndarray's rule, which a zero dim beside huge ones breaks); returns its element count.
pub(crate) fn check_alloc(op: &Op, shape: &[usize]) -> Result<usize> {
    if !crate::limit::addressable(shape) {
        return Err(op_err(
            op,
            format!("output shape {shape:?}: its non-zero dims multiply past 2^63 - 1"),
        ));
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            op_err(
                op,
                format!("output shape {shape:?} has more than 2^31 elements"),
            )
        })
}

/// Evaluates a dim attribute under the bindings as a non-negative size.
pub(crate) fn eval_size(op: &Op, d: &Dim, b: &Bindings) -> Result<usize> {
    let v = eval_signed(op, d, b)?;
    usize::try_from(v).map_err(|_| op_err(op, format!("dim `{d}` evaluates to negative {v}")))
}

/// Evaluates a dim attribute under the bindings.
pub(crate) fn eval_signed(op: &Op, d: &Dim, b: &Bindings) -> Result<i64> {
    d.eval(b)
        .ok_or_else(|| op_err(op, format!("dim `{d}` has an unbound symbol or overflows")))
}

/// Checks the number of inputs.
fn arity(op: &Op, inputs: &[Tensor], n: usize) -> Result<()> {
    if inputs.len() == n {
        Ok(())
    } else {
        Err(op_err(
            op,
            format!("takes {n} inputs, got {}", inputs.len()),
        ))
    }
}

/// Evaluates one op on concrete inputs. `bindings` give the values of the symbols that the
/// op's `Dim` attributes mention.
///
/// ```
/// use kiln_ir::{interp::eval_op, BinaryOp, Bindings, Op, Tensor};
/// let a = Tensor::from_vec(vec![1i64, 2, 3], &[3]).unwrap();
/// let b = Tensor::scalar(10i64);
/// let out = eval_op(&Op::Binary(BinaryOp::Add), &[a, b], &Bindings::new()).unwrap();
/// assert_eq!(out[0].to_i64_vec(), vec![11, 12, 13]);
/// ```
pub fn eval_op(op: &Op, inputs: &[Tensor], bindings: &Bindings) -> Result<Vec<Tensor>> {
    let one = |t: Result<Tensor>| t.map(|t| vec![t]);
    match op {
        Op::Const(t) => arity(op, inputs, 0).map(|_| vec![t.clone()]),
        Op::ShapeValue { dims, scalar } => arity(op, inputs, 0)
            .and_then(|_| one(movement::shape_value(op, dims, *scalar, bindings))),
        Op::ShapeOf => arity(op, inputs, 1).and_then(|_| one(movement::shape_of(&inputs[0]))),
        Op::Unary(u) => arity(op, inputs, 1)
            .and_then(|_| num::halves_as_f32(inputs, |x| one(elementwise::unary(op, *u, &x[0])))),
        Op::Binary(b) => arity(op, inputs, 2).and_then(|_| {
            num::halves_as_f32(inputs, |x| one(elementwise::binary(op, *b, &x[0], &x[1])))
        }),
        Op::Where => arity(op, inputs, 3)
            .and_then(|_| one(elementwise::where_(op, &inputs[0], &inputs[1], &inputs[2]))),
        Op::Cast { to } => arity(op, inputs, 1).map(|_| vec![inputs[0].cast(*to)]),
        Op::Bitcast { to } => {
            arity(op, inputs, 1).and_then(|_| one(cast::bitcast(op, &inputs[0], *to)))
        }
        Op::Reduce {
            kind,
            axes,
            keep_dims,
        } => arity(op, inputs, 1)
            .and_then(|_| one(reduce::reduce(op, *kind, &inputs[0], axes, *keep_dims))),
        Op::ArgReduce {
            kind,
            axis,
            keep_dims,
            select_last,
        } => arity(op, inputs, 1).and_then(|_| {
            one(reduce::arg_reduce(
                op,
                *kind,
                &inputs[0],
                *axis,
                *keep_dims,
                *select_last,
            ))
        }),
        Op::Softmax { axis, log } => {
            arity(op, inputs, 1).and_then(|_| one(reduce::softmax(op, &inputs[0], *axis, *log)))
        }
        Op::MatMul => arity(op, inputs, 2)
            .and_then(|_| num::halves_as_f32(inputs, |x| one(matmul::matmul(op, &x[0], &x[1])))),
        Op::Conv(a) => arity(op, inputs, 2)
            .and_then(|_| num::halves_as_f32(inputs, |x| one(conv::conv(op, a, &x[0], &x[1])))),
        Op::ConvTranspose(a) => arity(op, inputs, 2).and_then(|_| {
            num::halves_as_f32(inputs, |x| one(conv::conv_transpose(op, a, &x[0], &x[1])))
        }),
        Op::Pool(a) => arity(op, inputs, 1).and_then(|_| one(pool::pool(op, a, &inputs[0]))),
        Op::Reshape { shape } => arity(op, inputs, 1)
            .and_then(|_| one(movement::reshape(op, &inputs[0], shape, bindings))),
        Op::Transpose { perm } => {
            arity(op, inputs, 1).and_then(|_| one(movement::transpose(op, &inputs[0], perm)))
        }
        Op::Slice { axes } => {
            arity(op, inputs, 1).and_then(|_| one(movement::slice(op, &inputs[0], axes, bindings)))
        }
        Op::Concat { axis } => one(movement::concat(op, inputs, *axis)),
        Op::Pad { pads, mode } => arity(op, inputs, 2)
            .and_then(|_| one(movement::pad(op, &inputs[0], &inputs[1], pads, *mode))),
        Op::Expand { shape } => arity(op, inputs, 1)
            .and_then(|_| one(movement::expand(op, &inputs[0], shape, bindings))),
        Op::Gather { axis } => arity(op, inputs, 2)
            .and_then(|_| one(indexing::gather(op, &inputs[0], &inputs[1], *axis))),
        Op::GatherElements { axis } => arity(op, inputs, 2)
            .and_then(|_| one(indexing::gather_elements(op, &inputs[0], &inputs[1], *axis))),
        Op::GatherNd { batch_dims } => arity(op, inputs, 2)
            .and_then(|_| one(indexing::gather_nd(op, &inputs[0], &inputs[1], *batch_dims))),
        Op::ScatterElements { axis, reduction } => arity(op, inputs, 3).and_then(|_| {
            num::halves_as_f32(inputs, |x| {
                one(scatter::scatter_elements(
                    op, &x[0], &x[1], &x[2], *axis, *reduction,
                ))
            })
        }),
        Op::ScatterNd { reduction } => arity(op, inputs, 3).and_then(|_| {
            num::halves_as_f32(inputs, |x| {
                one(scatter::scatter_nd(op, &x[0], &x[1], &x[2], *reduction))
            })
        }),
        Op::Range { len } => arity(op, inputs, 2)
            .and_then(|_| one(scan::range(op, &inputs[0], &inputs[1], len, bindings))),
        Op::Trilu { upper, k } => {
            arity(op, inputs, 1).and_then(|_| one(indexing::trilu(op, &inputs[0], *upper, *k)))
        }
        Op::Scan {
            kind,
            axis,
            exclusive,
            reverse,
        } => arity(op, inputs, 1).and_then(|_| {
            one(scan::scan(
                op, &inputs[0], *kind, *axis, *exclusive, *reverse,
            ))
        }),
        Op::TopK {
            axis,
            k,
            largest,
            sorted: _,
        } => arity(op, inputs, 1).and_then(|_| topk::topk(op, &inputs[0], *axis, *k, *largest)),
        Op::OneHot { axis, depth } => arity(op, inputs, 2)
            .and_then(|_| one(indexing::one_hot(op, &inputs[0], &inputs[1], *axis, *depth))),
        Op::NonZero { count: _ } => {
            arity(op, inputs, 1).and_then(|_| one(indexing::non_zero(op, &inputs[0])))
        }
        Op::Einsum(spec) => num::halves_as_f32(inputs, |x| one(einsum::einsum(op, spec, x))),
        Op::LayerNorm { epsilon } => arity(op, inputs, 3).and_then(|_| {
            one(fused::layer_norm(
                op, &inputs[0], &inputs[1], &inputs[2], *epsilon,
            ))
        }),
        Op::RmsNorm { epsilon } => arity(op, inputs, 2)
            .and_then(|_| one(fused::rms_norm(op, &inputs[0], &inputs[1], *epsilon))),
        Op::Rotary => arity(op, inputs, 3)
            .and_then(|_| one(fused::rotary(op, &inputs[0], &inputs[1], &inputs[2]))),
        Op::Attention(a) => {
            let n = if a.mask == crate::AttentionMask::None {
                3
            } else {
                4
            };
            arity(op, inputs, n).and_then(|_| one(fused::attention(op, a, inputs)))
        }
        Op::Linear(e) => arity(op, inputs, e.inputs()).and_then(|_| one(fused::linear(*e, inputs))),
        Op::QuantLinear(q) => {
            arity(op, inputs, q.inputs()).and_then(|_| one(quant::quant_linear(op, *q, inputs)))
        }
    }
}
