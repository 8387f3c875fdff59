//! A runtime call at one binding of the model's symbols: the kernel layer's description
//! ([`kiln_kernel::call`], sizes over the symbols) resolved by [`Call::resolve`] into
//! concrete sizes and offsets, which [`crate::run_call`] carries out at a run's addresses.

use kiln_ir::{Bindings, ConvAttrs, DType, Dim, Op, QuantAttrs};
use kiln_kernel::call as desc;
pub use kiln_kernel::call::{BufId, GemmEpilogue, QuantizedInput};
use serde::{Deserialize, Serialize};

/// A call into a precompiled runtime routine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Call {
    /// Batched `f32` matrix product. Each operand is `batch` matrices addressed by batch
    /// strides (zero for a broadcast operand) and row/column strides, in elements.
    MatMul(MatMul),
    /// An `f32` convolution, as im2col into a scratch buffer and one GEMM per batch image
    /// and group (a plain GEMM for 1×1 kernels with unit strides and no padding).
    Conv(Conv),
    /// Fused `f32` attention, tile by tile with an online softmax, so the scores are never
    /// materialized beyond one tile per thread.
    Attention(Attention),
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
    /// Number of matrices.
    pub batch: usize,
    /// Rows of `a` and `c`.
    pub m: usize,
    /// Columns of `a`, rows of `b`.
    pub k: usize,
    /// Columns of `b` and `c`.
    pub n: usize,
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

/// Operands of [`Call::QuantLinear`] (see `kiln_ir::Op::QuantLinear`): contiguous f32
/// `x[M, K]` and `c[M, N]`, the stored weight `w[K, N]` (i8, u8 for int4 with zero
/// points, f16 or bf16), its scales (f32, or f16 for int4) and its zero points, as the
/// format gives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QuantLinear {
    /// Rows of `x` and `c` (the leading dims flattened).
    pub m: usize,
    /// Columns of `x`, rows of `w`.
    pub k: usize,
    /// Columns of `w` and `c`.
    pub n: usize,
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

/// One matrix operand of a [`MatMul`]: matrix `i` of the batch starts at
/// `offset + batch_offsets[i]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MatOperand {
    /// The buffer.
    pub buf: BufId,
    /// Element offset of each matrix of the batch.
    pub batch_offsets: Vec<usize>,
    /// Row stride, in elements.
    pub row_stride: isize,
    /// Column stride, in elements.
    pub col_stride: isize,
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
    pub x_shape: Vec<usize>,
    /// Shape of `w`.
    pub w_shape: Vec<usize>,
    /// Shape of `y`.
    pub y_shape: Vec<usize>,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttentionOperand {
    /// The buffer.
    pub buf: BufId,
    /// Offset of element `(0, 0, 0, 0)`.
    pub offset: usize,
    /// Stride of the flattened leading dims.
    pub batch: usize,
    /// Stride of the head axis.
    pub head: usize,
    /// Stride of the sequence axis.
    pub row: usize,
}

impl AttentionOperand {
    /// A contiguous `[B, heads, len, depth]` tensor in `buf`.
    pub fn contiguous(buf: BufId, heads: usize, len: usize, depth: usize) -> AttentionOperand {
        AttentionOperand {
            buf,
            offset: 0,
            batch: heads * len * depth,
            head: len * depth,
            row: depth,
        }
    }

    /// One past the last float it reads for `batch × heads × len × depth` elements (0 when
    /// it reads none), which must not pass the buffer's length.
    pub fn end(&self, [batch, heads, len, depth]: [usize; 4]) -> usize {
        if batch == 0 || heads == 0 || len == 0 || depth == 0 {
            return 0;
        }
        self.offset
            + (batch - 1) * self.batch
            + (heads - 1) * self.head
            + (len - 1) * self.row
            + depth
    }
}

/// Sizes of an [`Attention`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttentionDims {
    /// Product of the leading dims.
    pub batch: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (query head `h` reads head `h / (heads / kv_heads)`).
    pub kv_heads: usize,
    /// Query length.
    pub q_len: usize,
    /// Key/value length.
    pub kv_len: usize,
    /// Query/key feature size.
    pub depth: usize,
    /// Value feature size.
    pub v_depth: usize,
}

/// The mask of an [`Attention`] call, read with broadcast strides: element `[b, h, i, j]`
/// of the scores uses `batch_offsets[b] + h·strides[0] + i·strides[1] + j·strides[2]`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttentionMaskOperand {
    /// The buffer (`f32` added to the scores, or bool: false masks out).
    pub buf: BufId,
    /// True for a bool keep-mask.
    pub keep: bool,
    /// Offset of each leading index.
    pub batch_offsets: Vec<usize>,
    /// Strides over heads, query rows and key columns.
    pub strides: [isize; 3],
}

/// Operands of [`Call::Op`]: whole tensors, by buffer and shape.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpCall {
    /// The op.
    pub op: Op,
    /// Inputs.
    pub inputs: Vec<Operand>,
    /// Outputs.
    pub outputs: Vec<Operand>,
    /// Bindings of symbols the op's attributes mention.
    pub bindings: kiln_ir::Bindings,
}

/// A whole tensor in a buffer, as [`OpCall`] reads and writes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Operand {
    /// The buffer.
    pub buf: BufId,
    /// Its element type.
    pub dtype: DType,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// A size of a call description could not be evaluated at a run's binding.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("size `{dim}` of a runtime call is {why} at this binding of the symbols")]
pub struct ResolveError {
    /// The size.
    pub dim: String,
    /// What is wrong with its value.
    pub why: &'static str,
}

/// `d` at `b`, as a size: an error names it when it is unbound, overflows or is negative.
pub fn size(d: &Dim, b: &Bindings) -> Result<usize, ResolveError> {
    At(b).size(d)
}

/// Evaluates description sizes at one binding.
struct At<'b>(&'b Bindings);

impl At<'_> {
    fn signed(&self, d: &Dim) -> Result<isize, ResolveError> {
        let fail = |why| ResolveError {
            dim: d.to_string(),
            why,
        };
        let v = d
            .eval(self.0)
            .ok_or_else(|| fail("unbound or overflowing"))?;
        isize::try_from(v).map_err(|_| fail("out of range"))
    }

    fn size(&self, d: &Dim) -> Result<usize, ResolveError> {
        usize::try_from(self.signed(d)?).map_err(|_| ResolveError {
            dim: d.to_string(),
            why: "negative",
        })
    }

    fn sizes(&self, ds: &[Dim]) -> Result<Vec<usize>, ResolveError> {
        ds.iter().map(|d| self.size(d)).collect()
    }

    /// `offset + Σ i[d]·strides[d]` for every index `i` of `shape`, in row-major order.
    fn offsets(
        &self,
        offset: &Dim,
        shape: &[Dim],
        strides: &[Dim],
    ) -> Result<Vec<usize>, ResolveError> {
        let mut out = vec![self.signed(offset)?];
        for (n, s) in shape.iter().zip(strides) {
            let (n, s) = (self.size(n)?, self.signed(s)?);
            out = out
                .iter()
                .flat_map(|&o| (0..n as isize).map(move |i| o.wrapping_add(i.wrapping_mul(s))))
                .collect();
        }
        out.into_iter()
            .map(|o| {
                usize::try_from(o).map_err(|_| ResolveError {
                    dim: offset.to_string(),
                    why: "a negative offset",
                })
            })
            .collect()
    }

    fn mat(&self, o: &desc::MatOperand, batch: &[Dim]) -> Result<MatOperand, ResolveError> {
        Ok(MatOperand {
            buf: o.buf,
            batch_offsets: self.offsets(&o.offset, batch, &o.batch_strides)?,
            row_stride: self.signed(&o.row_stride)?,
            col_stride: self.signed(&o.col_stride)?,
        })
    }

    fn attention_operand(
        &self,
        o: &desc::AttentionOperand,
    ) -> Result<AttentionOperand, ResolveError> {
        Ok(AttentionOperand {
            buf: o.buf,
            offset: self.size(&o.offset)?,
            batch: self.size(&o.batch)?,
            head: self.size(&o.head)?,
            row: self.size(&o.row)?,
        })
    }

    fn operand(&self, o: &desc::Operand) -> Result<Operand, ResolveError> {
        Ok(Operand {
            buf: o.buf,
            dtype: o.dtype,
            shape: self.sizes(&o.shape)?,
        })
    }
}

impl Call {
    /// The call `desc` describes, at `bindings`.
    pub fn resolve(desc: &desc::Call, bindings: &Bindings) -> Result<Call, ResolveError> {
        let at = At(bindings);
        Ok(match desc {
            desc::Call::MatMul(m) => Call::MatMul(MatMul {
                batch: at.sizes(&m.batch)?.iter().product(),
                m: at.size(&m.m)?,
                k: at.size(&m.k)?,
                n: at.size(&m.n)?,
                a: at.mat(&m.a, &m.batch)?,
                b: at.mat(&m.b, &m.batch)?,
                c: at.mat(&m.c, &m.batch)?,
                epilogue: m.epilogue.clone(),
            }),
            desc::Call::Conv(c) => Call::Conv(Conv {
                x: c.x,
                w: c.w,
                y: c.y,
                cols: c.cols,
                x_shape: at.sizes(&c.x_shape)?,
                w_shape: at.sizes(&c.w_shape)?,
                y_shape: at.sizes(&c.y_shape)?,
                attrs: c.attrs.clone(),
            }),
            desc::Call::Attention(a) => {
                let d = &a.dims;
                let zero = Dim::from(0i64);
                let mask = match &a.mask {
                    Some(m) => Some(AttentionMaskOperand {
                        buf: m.buf,
                        keep: m.keep,
                        batch_offsets: at.offsets(&zero, &d.leading, &m.batch_strides)?,
                        strides: [
                            at.signed(&m.strides[0])?,
                            at.signed(&m.strides[1])?,
                            at.signed(&m.strides[2])?,
                        ],
                    }),
                    None => None,
                };
                Call::Attention(Attention {
                    q: at.attention_operand(&a.q)?,
                    k: at.attention_operand(&a.k)?,
                    v: at.attention_operand(&a.v)?,
                    out: at.attention_operand(&a.out)?,
                    dims: AttentionDims {
                        batch: at.sizes(&d.leading)?.iter().product(),
                        heads: at.size(&d.heads)?,
                        kv_heads: at.size(&d.kv_heads)?,
                        q_len: at.size(&d.q_len)?,
                        kv_len: at.size(&d.kv_len)?,
                        depth: at.size(&d.depth)?,
                        v_depth: at.size(&d.v_depth)?,
                    },
                    mask,
                    scale: a.scale,
                    rows: a.rows,
                })
            }
            desc::Call::QuantLinear(q) => Call::QuantLinear(QuantLinear {
                m: at.size(&q.m)?,
                k: at.size(&q.k)?,
                n: at.size(&q.n)?,
                x: q.x,
                w: q.w,
                scale: q.scale,
                scale_f16: q.scale_f16,
                zero_points: q.zero_points,
                quantized: q.quantized,
                c: q.c,
                attrs: q.attrs,
                epilogue: q.epilogue.clone(),
            }),
            desc::Call::Op(o) => Call::Op(OpCall {
                op: o.op.clone(),
                inputs: o
                    .inputs
                    .iter()
                    .map(|x| at.operand(x))
                    .collect::<Result<_, _>>()?,
                outputs: o
                    .outputs
                    .iter()
                    .map(|x| at.operand(x))
                    .collect::<Result<_, _>>()?,
                bindings: bindings.clone(),
            }),
        })
    }
}
