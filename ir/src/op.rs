//! The closed set of core ops, with typed attributes.
//!
//! This is not ONNX: the frontend lowers every ONNX op into these, and fused ops appear only
//! as the output of passes. Every variant documents its inputs, outputs and formula; the
//! reference interpreter (`crate::interp`) is the definition of its semantics.
//!
//! Conventions shared by every op:
//! - axes are non-negative and already normalized against the input rank;
//! - shape-like attributes are [`Dim`]s, so they may be symbolic;
//! - elementwise ops broadcast their inputs numpy-style.

use crate::{DType, Dim, Epilogue, QuantAttrs, Tensor};
use serde::{Deserialize, Serialize};

/// A core op. See the module docs for the conventions.
///
/// ```
/// use kiln_ir::{Op, UnaryOp, BinaryOp};
/// let relu = Op::Unary(UnaryOp::Relu);
/// assert_eq!(relu.name(), "relu");
/// assert_eq!(Op::Binary(BinaryOp::Add).num_outputs(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// No inputs; one output holding the tensor.
    Const(Tensor),
    /// No inputs; an `i64[n]` tensor whose elements are dims, evaluated from the symbol
    /// bindings at run time (what remains of a shape computation that depends on symbols).
    /// A rank-0 result is written with `scalar = true`.
    ShapeValue {
        /// The dims, one per element.
        dims: Vec<Dim>,
        /// True for a rank-0 output (then `dims` has one element).
        scalar: bool,
    },
    /// `i64[rank]`: the shape of the input.
    ShapeOf,
    /// Elementwise unary op on one input.
    Unary(UnaryOp),
    /// Elementwise binary op with broadcasting; both inputs share a dtype.
    Binary(BinaryOp),
    /// `where(cond: bool, a, b)`, broadcasting all three.
    Where,
    /// Converts elements to `to` with ONNX `Cast` semantics. Where ONNX leaves a float
    /// outside an integer type's range undefined, kiln saturates to the range (NaN is 0),
    /// as Rust's `as` does, in every backend; `QuantizeLinear` relies on it.
    Cast {
        /// Target dtype.
        to: DType,
    },
    /// Reinterprets the bytes of each element as `to`, which has the same width.
    Bitcast {
        /// Target dtype.
        to: DType,
    },
    /// Reduces over `axes` (sorted, unique; empty means identity).
    Reduce {
        /// The reduction.
        kind: ReduceKind,
        /// Axes to reduce.
        axes: Vec<usize>,
        /// Keep reduced axes as size 1.
        keep_dims: bool,
    },
    /// Index (`i64`) of the max or min along `axis`.
    ArgReduce {
        /// Max or min.
        kind: ArgKind,
        /// The axis.
        axis: usize,
        /// Keep the axis as size 1.
        keep_dims: bool,
        /// On ties, take the last index rather than the first.
        select_last: bool,
    },
    /// `exp(x - max) / sum(exp(x - max))` along `axis`, or its log when `log` is set.
    Softmax {
        /// The axis.
        axis: usize,
        /// Log-softmax.
        log: bool,
    },
    /// Batched matrix product `a[..., m, k] × b[..., k, n]`, batch dims broadcast. Both
    /// inputs have rank ≥ 2 and the same dtype (integers accumulate in their own type).
    MatMul,
    /// N-d convolution `x[n, c, ...] ⋆ w[m, c/groups, ...]` (no bias; bias is an add).
    Conv(ConvAttrs),
    /// N-d transposed convolution `x[n, c, ...]`, `w[c, m/groups, ...]` (no bias).
    ConvTranspose(ConvTransposeAttrs),
    /// N-d pooling over the trailing spatial dims of `x[n, c, ...]`.
    Pool(PoolAttrs),
    /// Same data, new shape (same element count).
    Reshape {
        /// The output shape.
        shape: Vec<Dim>,
    },
    /// Permutes axes: output axis `i` is input axis `perm[i]`.
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// Strided slice along some axes; other axes are kept whole.
    Slice {
        /// One entry per sliced axis, axes unique.
        axes: Vec<SliceAxis>,
    },
    /// Concatenates all inputs (same dtype, same rank) along `axis`.
    Concat {
        /// The axis.
        axis: usize,
    },
    /// Pads (or crops, with negative amounts) `x`; the second input is the rank-0 fill value.
    Pad {
        /// `(before, after)` per axis.
        pads: Vec<(i64, i64)>,
        /// How new elements are filled.
        mode: PadMode,
    },
    /// Broadcasts `x` to `shape` (numpy rules, output rank = `shape.len()`).
    Expand {
        /// The output shape.
        shape: Vec<Dim>,
    },
    /// `gather(data, indices)` along `axis`; negative indices count from the end.
    Gather {
        /// The axis of `data`.
        axis: usize,
    },
    /// `out[i][j][k] = data[i][idx[i][j][k]][k]` (for axis 1): ONNX `GatherElements`.
    GatherElements {
        /// The axis.
        axis: usize,
    },
    /// ONNX `GatherND`.
    GatherNd {
        /// Leading batch dims shared by data and indices.
        batch_dims: usize,
    },
    /// ONNX `ScatterElements`: inputs data, indices, updates.
    ScatterElements {
        /// The axis.
        axis: usize,
        /// How updates combine with existing values.
        reduction: ScatterReduction,
    },
    /// ONNX `ScatterND`: inputs data, indices, updates.
    ScatterNd {
        /// How updates combine with existing values.
        reduction: ScatterReduction,
    },
    /// `start + i * delta` for `i` in `0..len`; inputs are the rank-0 `start` and `delta`.
    Range {
        /// Number of elements.
        len: Dim,
    },
    /// Keeps the upper (or lower) triangle of the last two dims, offset by `k` diagonals.
    Trilu {
        /// Upper triangle if true.
        upper: bool,
        /// Diagonal offset.
        k: i64,
    },
    /// Running sum or product along `axis`.
    Scan {
        /// Sum or product.
        kind: ScanKind,
        /// The axis.
        axis: usize,
        /// Exclude the current element.
        exclusive: bool,
        /// Run from the end.
        reverse: bool,
    },
    /// Two outputs: the `k` largest (or smallest) values along `axis` and their `i64` indices.
    TopK {
        /// The axis.
        axis: usize,
        /// How many.
        k: usize,
        /// Largest if true.
        largest: bool,
        /// Sorted output if true (kiln always sorts; kept for fidelity).
        sorted: bool,
    },
    /// One-hot encoding: inputs `indices` and `values = [off, on]`; a new axis of `depth`.
    OneHot {
        /// Where the new axis goes in the output.
        axis: usize,
        /// Size of the new axis.
        depth: usize,
    },
    /// `i64[rank, count]`: coordinates of the non-zero elements, in row-major order.
    NonZero {
        /// Name of the fresh symbol bound to the data-dependent count.
        count: String,
    },
    /// Einstein summation over the inputs.
    Einsum(EinsumSpec),
    /// Fused layer normalization over the last axis. Inputs `x`, `scale`, `bias` (the last
    /// two broadcast against `x`, which keeps its shape); with means over the last axis,
    /// `d = x - mean(x)`, `y = d · rsqrt(mean(d·d) + epsilon) · scale + bias`. Passes create
    /// it; the interpreter evaluates exactly this decomposition.
    LayerNorm {
        /// Added to the variance.
        epsilon: f32,
    },
    /// Fused RMS normalization over the last axis. Inputs `x`, `scale` (broadcast against
    /// `x`); `y = x · rsqrt(mean(x·x) + epsilon) · scale`. Like [`Op::LayerNorm`], a pass
    /// output defined by its decomposition.
    RmsNorm {
        /// Added to the mean square.
        epsilon: f32,
    },
    /// Fused linear layer. Inputs `x[..., K]` (rank ≥ 2), `w[K, N]`, then `bias[N]` when
    /// the epilogue has one, then `r` of the output's shape when it has a residual;
    /// `y = act(x·w + bias) ⊕ r` of shape `[..., N]`, each step a core op (`matmul`, `add`,
    /// the activation's unary op, `add`/`mul`), which the interpreter evaluates in turn.
    /// Passes create it.
    Linear(Epilogue),
    /// Fused quantized linear layer. Inputs `x[..., K]` f32 (rank ≥ 2), `w[K, N]` (i8, or u8
    /// for int4 with zero points), `scale` (`[N]` f32 for int8, `[⌈K/block⌉, N]` f32 or f16
    /// for int4), the zero points when the weight format has them, then the epilogue's bias
    /// and residual as for [`Op::Linear`]; output f32 `[..., N]`. The interpreter evaluates
    /// the definitions of [`WeightQuant`](crate::WeightQuant) and
    /// [`ActQuant`](crate::ActQuant) literally, so integer kernels can be checked bit for
    /// bit. Passes create it.
    QuantLinear(QuantAttrs),
    /// Fused scaled dot-product attention. Inputs `q[.., H, Sq, D]`, `k[.., G, Sk, D]`,
    /// `v[.., G, Sk, Dv]` (equal leading dims; `H` a multiple of `G`: query head `h` reads
    /// key/value head `h / (H/G)`, grouped-query attention), then the mask when
    /// [`AttentionAttrs::mask`] says so, broadcast to the scores `[.., H, Sq, Sk]`.
    /// `s = q·kᵀ·scale`, masked (see [`AttentionMask`]), `p = softmax(s)` over the last
    /// axis, rows guarded as [`MaskedRows`] says, and the output `p·v[.., H, Sq, Dv]`.
    /// A pass output defined by this decomposition, like [`Op::LayerNorm`].
    Attention(AttentionAttrs),
    /// Fused rotary position embedding, half-rotation form (GPT-NeoX, Llama). Inputs `x`
    /// (last axis of even size `2h`), `cos` and `sin` (broadcast to `x`, which keeps its
    /// shape); `y = x·cos + rotate_half(x)·sin` with
    /// `rotate_half(x) = concat(-x[.., h..], x[.., ..h])`. A pass output defined by this
    /// decomposition, like [`Op::LayerNorm`].
    Rotary,
}

/// Attributes of [`Op::Attention`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionAttrs {
    /// Multiplies the scores `q·kᵀ`.
    pub scale: f32,
    /// Whether a fourth input masks the scores, and how.
    pub mask: AttentionMask,
    /// What becomes of rows whose scores are all masked out.
    pub rows: MaskedRows,
}

/// How [`Op::Attention`] guards rows whose scores are all masked out (their softmax is
/// `0/0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskedRows {
    /// No guard: such rows are NaN, as softmax gives.
    Nan,
    /// `p = where(isnan(p), 0, p)` (PyTorch's exports): NaN probabilities become 0.
    ZeroNan,
    /// `p = where(max(mask) == -∞, 0, p)` with the max over each row of the additive mask
    /// (the ONNX `Attention` function body): rows the mask closes entirely become 0.
    ZeroMasked,
}

/// How [`Op::Attention`]'s mask input applies to the scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionMask {
    /// No mask input.
    None,
    /// A float mask (the scores' dtype) added to the scores.
    Add,
    /// A bool mask: scores where it is false become -∞.
    Keep,
}

/// Elementwise unary ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnaryOp {
    /// `|x|`.
    Abs,
    /// `-x`.
    Neg,
    /// `-1, 0, 1` by sign (NaN stays NaN).
    Sign,
    /// Round toward -∞.
    Floor,
    /// Round toward +∞.
    Ceil,
    /// Round half to even.
    Round,
    /// `eˣ`.
    Exp,
    /// Natural log.
    Log,
    /// `√x`.
    Sqrt,
    /// `1/√x`.
    Rsqrt,
    /// `1/x`.
    Reciprocal,
    /// sine.
    Sin,
    /// cosine.
    Cos,
    /// tangent.
    Tan,
    /// arcsine.
    Asin,
    /// arccosine.
    Acos,
    /// arctangent.
    Atan,
    /// hyperbolic sine.
    Sinh,
    /// hyperbolic cosine.
    Cosh,
    /// hyperbolic tangent.
    Tanh,
    /// inverse hyperbolic sine.
    Asinh,
    /// inverse hyperbolic cosine.
    Acosh,
    /// inverse hyperbolic tangent.
    Atanh,
    /// Gauss error function.
    Erf,
    /// `1 / (1 + e⁻ˣ)`.
    Sigmoid,
    /// `max(x, 0)`.
    Relu,
    /// Fused GELU, erf form: `x · (erf(x / √2) + 1) · 0.5`, products left to right. Passes
    /// create it; the interpreter evaluates this formula step by step.
    Gelu,
    /// Fused GELU, tanh form: `x · 0.5 · (tanh(√(2/π) · (x + 0.044715 · x³)) + 1)`.
    GeluTanh,
    /// Fused SiLU (swish): `x · sigmoid(x)`.
    Silu,
    /// Logical not (bool).
    Not,
    /// Bitwise not (integers).
    BitNot,
    /// `x != x` (float in, bool out).
    IsNan,
    /// `x == ±∞` (bool out).
    IsInf,
    /// `x == +∞` (bool out).
    IsPosInf,
    /// `x == -∞` (bool out).
    IsNegInf,
}

/// Elementwise binary ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    /// `a + b` (integers wrap).
    Add,
    /// `a - b` (integers wrap).
    Sub,
    /// `a * b` (integers wrap).
    Mul,
    /// `a / b`; integers truncate toward zero (division by zero gives 0).
    Div,
    /// `aᵇ`.
    Pow,
    /// Remainder with the sign of the divisor (Python `%`).
    Mod,
    /// Remainder with the sign of the dividend (C `fmod`).
    Fmod,
    /// Elementwise minimum (NaN propagates).
    Min,
    /// Elementwise maximum (NaN propagates).
    Max,
    /// `a == b` (bool out).
    Equal,
    /// `a < b` (bool out).
    Less,
    /// `a <= b` (bool out).
    LessOrEqual,
    /// `a > b` (bool out).
    Greater,
    /// `a >= b` (bool out).
    GreaterOrEqual,
    /// Logical and (bool).
    And,
    /// Logical or (bool).
    Or,
    /// Logical xor (bool).
    Xor,
    /// Bitwise and (integers).
    BitAnd,
    /// Bitwise or (integers).
    BitOr,
    /// Bitwise xor (integers).
    BitXor,
    /// `a << b` (unsigned integers).
    ShiftLeft,
    /// `a >> b` (unsigned integers).
    ShiftRight,
}

/// Reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceKind {
    /// `Σx`.
    Sum,
    /// `Σx / n`.
    Mean,
    /// `max x`.
    Max,
    /// `min x`.
    Min,
    /// `Πx`.
    Prod,
    /// `Σ|x|`.
    L1,
    /// `√Σx²`.
    L2,
    /// `log Σx`.
    LogSum,
    /// `log Σeˣ`, computed stably.
    LogSumExp,
    /// `Σx²`.
    SumSquare,
}

/// Which extreme [`Op::ArgReduce`] finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArgKind {
    /// Index of the maximum.
    Max,
    /// Index of the minimum.
    Min,
}

/// Running sum or product for [`Op::Scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanKind {
    /// Cumulative sum.
    Sum,
    /// Cumulative product.
    Prod,
}

/// How scattered updates combine with the existing value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScatterReduction {
    /// Replace.
    None,
    /// Add.
    Add,
    /// Multiply.
    Mul,
    /// Keep the max.
    Max,
    /// Keep the min.
    Min,
}

/// Fill mode of [`Op::Pad`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    /// The fill value.
    Constant,
    /// Mirror without repeating the edge.
    Reflect,
    /// Repeat the edge.
    Edge,
    /// Wrap around.
    Wrap,
}

/// One sliced axis of [`Op::Slice`]. Bounds are normalized: for `step > 0`,
/// `0 <= start <= end <= dim`; for `step < 0`, `-1 <= end <= start <= dim - 1`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SliceAxis {
    /// The axis.
    pub axis: usize,
    /// First index taken.
    pub start: Dim,
    /// One past the last index (exclusive bound in the direction of `step`).
    pub end: Dim,
    /// Stride, never zero.
    pub step: i64,
}

/// Attributes of [`Op::Conv`]; one entry per spatial dim.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvAttrs {
    /// Strides.
    pub strides: Vec<usize>,
    /// Dilations.
    pub dilations: Vec<usize>,
    /// `(begin, end)` zero padding.
    pub pads: Vec<(usize, usize)>,
    /// Channel groups.
    pub groups: usize,
}

/// Attributes of [`Op::ConvTranspose`]; one entry per spatial dim.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConvTransposeAttrs {
    /// Strides.
    pub strides: Vec<usize>,
    /// Dilations.
    pub dilations: Vec<usize>,
    /// `(begin, end)` amounts removed from the full output.
    pub pads: Vec<(usize, usize)>,
    /// Extra size added at the end of each spatial dim.
    pub output_padding: Vec<usize>,
    /// Channel groups.
    pub groups: usize,
}

/// Attributes of [`Op::Pool`]; one entry per spatial dim.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolAttrs {
    /// Max, average or Lp.
    pub kind: PoolKind,
    /// Window size.
    pub kernel: Vec<usize>,
    /// Strides.
    pub strides: Vec<usize>,
    /// Dilations.
    pub dilations: Vec<usize>,
    /// `(begin, end)` padding (not counted as data for max).
    pub pads: Vec<(usize, usize)>,
    /// Round the output size up rather than down.
    pub ceil_mode: bool,
}

/// The window function of [`Op::Pool`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// Maximum.
    Max,
    /// Mean, dividing by the window size including padding if `count_include_pad`.
    Avg {
        /// Count padded elements in the divisor.
        count_include_pad: bool,
    },
    /// `(Σ|x|ᵖ)^(1/p)`.
    Lp {
        /// The norm's order.
        p: u32,
    },
}

/// A parsed einsum equation: one label list per input, and the output labels.
/// Labels are lowercase or uppercase ASCII letters; ellipses are expanded by the frontend.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EinsumSpec {
    /// Labels of each input, one per axis.
    pub inputs: Vec<Vec<char>>,
    /// Labels of the output.
    pub output: Vec<char>,
}

impl Op {
    /// Its dim attributes (reshape and expand shapes, slice bounds, range lengths, shape
    /// values): the ones [`Op::substitute`] replaces.
    pub fn dim_attributes(&self) -> Vec<&Dim> {
        match self {
            Op::ShapeValue { dims, .. }
            | Op::Reshape { shape: dims }
            | Op::Expand { shape: dims } => dims.iter().collect(),
            Op::Range { len } => vec![len],
            Op::Slice { axes } => axes.iter().flat_map(|s| [&s.start, &s.end]).collect(),
            _ => Vec::new(),
        }
    }

    /// The op with the bound symbols of its dim attributes (reshape and expand shapes,
    /// slice bounds, range lengths, shape values) replaced by their values.
    pub fn substitute(&self, b: &crate::Bindings) -> Op {
        let dims = |ds: &[Dim]| ds.iter().map(|d| d.substitute(b)).collect();
        match self {
            Op::ShapeValue { dims: d, scalar } => Op::ShapeValue {
                dims: dims(d),
                scalar: *scalar,
            },
            Op::Reshape { shape } => Op::Reshape { shape: dims(shape) },
            Op::Expand { shape } => Op::Expand { shape: dims(shape) },
            Op::Range { len } => Op::Range {
                len: len.substitute(b),
            },
            Op::Slice { axes } => Op::Slice {
                axes: (axes.iter())
                    .map(|s| SliceAxis {
                        start: s.start.substitute(b),
                        end: s.end.substitute(b),
                        ..s.clone()
                    })
                    .collect(),
            },
            other => other.clone(),
        }
    }

    /// The op's name in statistics and reports: the text name in CamelCase, with the words
    /// of run-together names split (`LayerNorm`, `MatMul`, `ReduceMean`, `TopK`).
    ///
    /// ```
    /// use kiln_ir::Op;
    /// assert_eq!(Op::LayerNorm { epsilon: 1e-5 }.kind_name(), "LayerNorm");
    /// assert_eq!(Op::MatMul.kind_name(), "MatMul");
    /// ```
    pub fn kind_name(&self) -> String {
        let name = self.name();
        let spaced = match name.as_str() {
            "matmul" => "mat_mul",
            "argmax" => "arg_max",
            "argmin" => "arg_min",
            "topk" => "top_k",
            "nonzero" => "non_zero",
            other => other,
        };
        spaced
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The op's name in the text format (`add`, `matmul`, `reduce_sum`, …).
    pub fn name(&self) -> String {
        match self {
            Op::Const(_) => "const".into(),
            Op::ShapeValue { .. } => "shape_value".into(),
            Op::ShapeOf => "shape_of".into(),
            Op::Unary(u) => u.name().into(),
            Op::Binary(b) => b.name().into(),
            Op::Where => "where".into(),
            Op::Cast { .. } => "cast".into(),
            Op::Bitcast { .. } => "bitcast".into(),
            Op::Reduce { kind, .. } => format!("reduce_{}", kind.name()),
            Op::ArgReduce {
                kind: ArgKind::Max, ..
            } => "argmax".into(),
            Op::ArgReduce {
                kind: ArgKind::Min, ..
            } => "argmin".into(),
            Op::Softmax { log: false, .. } => "softmax".into(),
            Op::Softmax { log: true, .. } => "log_softmax".into(),
            Op::MatMul => "matmul".into(),
            Op::Conv(_) => "conv".into(),
            Op::ConvTranspose(_) => "conv_transpose".into(),
            Op::Pool(p) => match p.kind {
                PoolKind::Max => "max_pool".into(),
                PoolKind::Avg { .. } => "avg_pool".into(),
                PoolKind::Lp { .. } => "lp_pool".into(),
            },
            Op::Reshape { .. } => "reshape".into(),
            Op::Transpose { .. } => "transpose".into(),
            Op::Slice { .. } => "slice".into(),
            Op::Concat { .. } => "concat".into(),
            Op::Pad { .. } => "pad".into(),
            Op::Expand { .. } => "expand".into(),
            Op::Gather { .. } => "gather".into(),
            Op::GatherElements { .. } => "gather_elements".into(),
            Op::GatherNd { .. } => "gather_nd".into(),
            Op::ScatterElements { .. } => "scatter_elements".into(),
            Op::ScatterNd { .. } => "scatter_nd".into(),
            Op::Range { .. } => "range".into(),
            Op::Trilu { .. } => "trilu".into(),
            Op::Scan {
                kind: ScanKind::Sum,
                ..
            } => "cumsum".into(),
            Op::Scan {
                kind: ScanKind::Prod,
                ..
            } => "cumprod".into(),
            Op::TopK { .. } => "topk".into(),
            Op::OneHot { .. } => "one_hot".into(),
            Op::NonZero { .. } => "nonzero".into(),
            Op::Einsum(_) => "einsum".into(),
            Op::LayerNorm { .. } => "layer_norm".into(),
            Op::RmsNorm { .. } => "rms_norm".into(),
            Op::Attention(_) => "attention".into(),
            Op::Rotary => "rotary".into(),
            Op::Linear(_) => "linear".into(),
            Op::QuantLinear(_) => "quant_linear".into(),
        }
    }

    /// How many outputs the op produces.
    pub fn num_outputs(&self) -> usize {
        match self {
            Op::TopK { .. } => 2,
            _ => 1,
        }
    }
}

macro_rules! names {
    ($ty:ident { $($v:ident => $s:literal),* $(,)? }) => {
        impl $ty {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$v),*];
            /// The name used by the text format.
            pub fn name(self) -> &'static str {
                match self { $($ty::$v => $s),* }
            }
            /// The variant with this text-format name.
            pub fn from_name(s: &str) -> Option<$ty> {
                match s { $($s => Some($ty::$v),)* _ => None }
            }
        }
    };
}

names!(UnaryOp {
    Abs => "abs", Neg => "neg", Sign => "sign", Floor => "floor", Ceil => "ceil", Round => "round",
    Exp => "exp", Log => "log", Sqrt => "sqrt", Rsqrt => "rsqrt", Reciprocal => "reciprocal",
    Sin => "sin", Cos => "cos", Tan => "tan", Asin => "asin", Acos => "acos", Atan => "atan",
    Sinh => "sinh", Cosh => "cosh", Tanh => "tanh", Asinh => "asinh", Acosh => "acosh", Atanh => "atanh",
    Erf => "erf", Sigmoid => "sigmoid", Relu => "relu", Gelu => "gelu", GeluTanh => "gelu_tanh",
    Silu => "silu", Not => "not", BitNot => "bit_not",
    IsNan => "is_nan", IsInf => "is_inf", IsPosInf => "is_pos_inf", IsNegInf => "is_neg_inf",
});

names!(BinaryOp {
    Add => "add", Sub => "sub", Mul => "mul", Div => "div", Pow => "pow", Mod => "mod", Fmod => "fmod",
    Min => "min", Max => "max", Equal => "equal", Less => "less", LessOrEqual => "less_equal",
    Greater => "greater", GreaterOrEqual => "greater_equal", And => "and", Or => "or", Xor => "xor",
    BitAnd => "bit_and", BitOr => "bit_or", BitXor => "bit_xor", ShiftLeft => "shift_left",
    ShiftRight => "shift_right",
});

names!(ReduceKind {
    Sum => "sum", Mean => "mean", Max => "max", Min => "min", Prod => "prod", L1 => "l1", L2 => "l2",
    LogSum => "log_sum", LogSumExp => "log_sum_exp", SumSquare => "sum_square",
});

names!(ScatterReduction { None => "none", Add => "add", Mul => "mul", Max => "max", Min => "min" });

names!(AttentionMask { None => "none", Add => "add", Keep => "keep" });

names!(MaskedRows { Nan => "nan", ZeroNan => "zero_nan", ZeroMasked => "zero_masked" });

names!(PadMode { Constant => "constant", Reflect => "reflect", Edge => "edge", Wrap => "wrap" });

impl UnaryOp {
    /// True if the op maps to bool whatever its input.
    pub fn returns_bool(self) -> bool {
        matches!(
            self,
            UnaryOp::IsNan | UnaryOp::IsInf | UnaryOp::IsPosInf | UnaryOp::IsNegInf
        )
    }
}

impl BinaryOp {
    /// True for comparisons, whose output is bool.
    pub fn returns_bool(self) -> bool {
        matches!(
            self,
            BinaryOp::Equal
                | BinaryOp::Less
                | BinaryOp::LessOrEqual
                | BinaryOp::Greater
                | BinaryOp::GreaterOrEqual
                | BinaryOp::And
                | BinaryOp::Or
                | BinaryOp::Xor
        )
    }
}
