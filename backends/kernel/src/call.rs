//! What a runtime call does, as data: the scheduler describes each [`Call`] with buffer
//! indices and sizes, which are [`Dim`]s over the model's symbols. The runtime
//! (`kiln_rt::call`) resolves a description at a run's binding of the symbols into the
//! concrete call it carries out. The descriptions serialize, so an ahead-of-time artifact
//! carries them as they are.

use kiln_ir::{ConvAttrs, DType, Dim, Op, QuantAttrs};
use serde::{Deserialize, Serialize};

/// Index of a buffer of a program (the scheduler's numbering).
pub type BufId = usize;

/// A call into a precompiled runtime routine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Call {
    /// Batched `f32` matrix product (or f16/bf16, for a code generator with
    /// `Capabilities::half_matmul`: one dtype throughout, no epilogue). Each operand is
    /// one matrix per index of the batch shape, addressed by batch strides (zero for a
    /// broadcast operand) and row/column strides, in elements.
    MatMul(Box<MatMul>),
    /// An `f32` convolution, as im2col into a scratch buffer and one GEMM per batch image
    /// and group (a plain GEMM for 1×1 kernels with unit strides and no padding).
    Conv(Conv),
    /// Fused `f32` attention, tile by tile with an online softmax, so the scores are never
    /// materialized beyond one tile per thread.
    Attention(Box<Attention>),
    /// A quantized linear layer: integer GEMM with per-token int8 activations, or, for
    /// weight-only layers, the f32 GEMM over the weight dequantized once.
    QuantLinear(QuantLinear),
    /// An op run by its runtime implementation on whole tensors. Only ops listed by
    /// [`crate::schedule::support`] (and in ARCHITECTURE.md) take this path.
    Op(OpCall),
}

/// Operands of [`Call::MatMul`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MatMul {
    /// The batch shape: one matrix product per index.
    pub batch: Vec<Dim>,
    /// Rows of `a` and `c`.
    pub m: Dim,
    /// Columns of `a`, rows of `b`.
    pub k: Dim,
    /// Columns of `b` and `c`.
    pub n: Dim,
    /// Left operand.
    pub a: MatOperand,
    /// Right operand.
    pub b: MatOperand,
    /// Result.
    pub c: MatOperand,
    /// Applied to each block of `c` after its last depth block (a fused linear layer's
    /// bias, activation and residual); empty for a plain product.
    pub epilogue: GemmEpilogue,
}

/// The epilogue of a [`MatMul`]: `c = act(c + bias) ⊕ residual`, element by element.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GemmEpilogue {
    /// `n` floats, added to every row.
    pub bias: Option<BufId>,
    /// Applied after the bias.
    pub activation: Option<kiln_ir::Activation>,
    /// Combined last, addressed like `c` (same strides and batch offsets).
    pub residual: Option<(kiln_ir::Residual, BufId)>,
}

impl GemmEpilogue {
    /// The buffers the epilogue reads.
    pub fn reads(&self) -> impl Iterator<Item = BufId> + '_ {
        self.bias
            .iter()
            .copied()
            .chain(self.residual.map(|(_, b)| b))
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.bias.is_none() && self.activation.is_none() && self.residual.is_none()
    }
}

/// Operands of [`Call::QuantLinear`] (see `kiln_ir::Op::QuantLinear`): contiguous f32
/// `x[M, K]` and `c[M, N]`, the stored weight `w[K, N]` (i8, u8 for int4 with zero
/// points, f16 or bf16), its scales (f32, or f16 for int4) and its zero points, as the
/// format gives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QuantLinear {
    /// Rows of `x` and `c` (the leading dims flattened).
    pub m: Dim,
    /// Columns of `x`, rows of `w`.
    pub k: Dim,
    /// Columns of `w` and `c`.
    pub n: Dim,
    /// The activations.
    pub x: BufId,
    /// The stored weight.
    pub w: BufId,
    /// The scales (none for the half formats).
    pub scale: Option<BufId>,
    /// Whether the scales are f16.
    pub scale_f16: bool,
    /// The zero points, when the format has them.
    pub zero_points: Option<BufId>,
    /// For activations that arrive quantized: their type, zero point and scale.
    pub quantized: Option<QuantizedInput>,
    /// The result.
    pub c: BufId,
    /// The weight format and activation scheme (the epilogue is [`Self::epilogue`]).
    pub attrs: QuantAttrs,
    /// As for [`MatMul`], with `c` contiguous.
    pub epilogue: GemmEpilogue,
}

impl QuantLinear {
    /// The buffers the call reads.
    pub fn reads(&self) -> impl Iterator<Item = BufId> + '_ {
        let quantized = self.quantized.iter().flat_map(|q| [q.zero_point, q.scale]);
        [self.x, self.w]
            .into_iter()
            .chain(self.scale)
            .chain(self.zero_points)
            .chain(quantized)
            .chain(self.epilogue.reads())
    }
}

/// The zero point and scale of activations that arrive quantized
/// (`kiln_ir::ActQuant::Quantized`: `x` holds bytes) or are quantized per tensor by them
/// (`PerTensor`: `x` is f32).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct QuantizedInput {
    /// Whether the zero point (and `x`, when it holds bytes) is i8 (else u8).
    pub signed: bool,
    /// The zero point, one byte.
    pub zero_point: BufId,
    /// The scale, one f32.
    pub scale: BufId,
}

/// One matrix operand of a [`MatMul`]: the matrix at batch index `i` starts at
/// `offset + Σ i[d] · batch_strides[d]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MatOperand {
    /// The buffer.
    pub buf: BufId,
    /// Element offset of the first matrix.
    pub offset: Dim,
    /// One stride per axis of the batch shape, in elements (0 where it broadcasts).
    pub batch_strides: Vec<Dim>,
    /// Row stride, in elements.
    pub row_stride: Dim,
    /// Column stride, in elements.
    pub col_stride: Dim,
}

/// Operands of [`Call::Conv`]:
/// `y[n, m, o..] = Σ_{c, k..} x[n, g·C/G + c, o·s - pb + k·d ..] · w[m, c, k..]` where
/// `g` is the group of output channel `m`. All three are contiguous `f32` tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Conv {
    /// The input `x[N, C, S..]`.
    pub x: BufId,
    /// The weights `w[M, C/G, K..]`.
    pub w: BufId,
    /// The output `y[N, M, O..]`.
    pub y: BufId,
    /// The im2col matrix of one batch image (`C·ΠK` rows of `ΠO` columns, group after
    /// group), or `None` when the input already is that matrix (1×1 kernel, unit strides,
    /// no padding).
    pub cols: Option<BufId>,
    /// Shape of `x`.
    pub x_shape: Vec<Dim>,
    /// Shape of `w`.
    pub w_shape: Vec<Dim>,
    /// Shape of `y`.
    pub y_shape: Vec<Dim>,
    /// Strides, dilations, pads and groups.
    pub attrs: ConvAttrs,
}

/// Operands of [`Call::Attention`] (see `kiln_ir::Op::Attention`): `f32` `q[B, H, Sq, D]`,
/// `k[B, G, Sk, D]`, `v[B, G, Sk, Dv]` and `out[B, H, Sq, Dv]`, each laid out as its
/// [`AttentionOperand`] says, where `B` is the product of the leading dims.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attention {
    /// Queries.
    pub q: AttentionOperand,
    /// Keys.
    pub k: AttentionOperand,
    /// Values.
    pub v: AttentionOperand,
    /// The result (its rows must not overlap).
    pub out: AttentionOperand,
    /// `[B, H, G, Sq, Sk, D, Dv]`.
    pub dims: AttentionDims,
    /// The mask, if any.
    pub mask: Option<AttentionMaskOperand>,
    /// Multiplies `q·kᵀ`.
    pub scale: f32,
    /// What becomes of rows whose scores are all masked out.
    pub rows: kiln_ir::MaskedRows,
}

/// Where an attention operand `[B, H, S, D]` lies in its buffer: element `(b, h, s, d)` is
/// float `offset + b·batch + h·head + s·row + d`, the feature axis contiguous. A contiguous
/// tensor is one layout; heads interleaved along the sequence (`[B, S, H, D]`, as linear
/// layers read and write them) are another, used in place instead of transposed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttentionOperand {
    /// The buffer.
    pub buf: BufId,
    /// Offset of element `(0, 0, 0, 0)`.
    pub offset: Dim,
    /// Stride of the flattened leading dims.
    pub batch: Dim,
    /// Stride of the head axis.
    pub head: Dim,
    /// Stride of the sequence axis.
    pub row: Dim,
}

impl AttentionOperand {
    /// A contiguous `[B, heads, len, depth]` tensor in `buf`.
    pub fn contiguous(buf: BufId, heads: &Dim, len: &Dim, depth: &Dim) -> AttentionOperand {
        AttentionOperand {
            buf,
            offset: Dim::from(0i64),
            batch: &(heads * len) * depth,
            head: len * depth,
            row: depth.clone(),
        }
    }
}

/// Sizes of an [`Attention`] call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttentionDims {
    /// The leading dims (their product is the batch the operands' `batch` strides walk).
    pub leading: Vec<Dim>,
    /// Query heads.
    pub heads: Dim,
    /// Key/value heads (query head `h` reads head `h / (heads / kv_heads)`).
    pub kv_heads: Dim,
    /// Query length.
    pub q_len: Dim,
    /// Key/value length.
    pub kv_len: Dim,
    /// Query/key feature size.
    pub depth: Dim,
    /// Value feature size.
    pub v_depth: Dim,
}

/// The mask of an [`Attention`] call, read with broadcast strides: element `[l.., h, i, j]`
/// of the scores (`l` an index of the leading dims) uses
/// `Σ l[d]·batch_strides[d] + h·strides[0] + i·strides[1] + j·strides[2]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttentionMaskOperand {
    /// The buffer (`f32` added to the scores, or bool: false masks out).
    pub buf: BufId,
    /// True for a bool keep-mask.
    pub keep: bool,
    /// One stride per leading dim.
    pub batch_strides: Vec<Dim>,
    /// Strides over heads, query rows and key columns.
    pub strides: [Dim; 3],
}

/// Operands of [`Call::Op`]: whole tensors, by buffer and shape. Dims in the op's
/// attributes are evaluated at the run's binding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpCall {
    /// The op.
    pub op: Op,
    /// Inputs.
    pub inputs: Vec<Operand>,
    /// Outputs.
    pub outputs: Vec<Operand>,
}

/// A whole tensor in a buffer, as [`OpCall`] reads and writes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Operand {
    /// The buffer.
    pub buf: BufId,
    /// Its element type.
    pub dtype: DType,
    /// Its shape.
    pub shape: Vec<Dim>,
}
