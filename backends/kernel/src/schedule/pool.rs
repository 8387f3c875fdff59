//! Pooling as native kernels. When a window can reach past the data (explicit padding, or
//! a last `ceil_mode` window), the input is first copied into a scratch buffer padded with
//! the combination's identity (-inf or the type's minimum for max, 0 for average and Lp).
//! Then one [`Reduce`] walks every window with affine strides (output axis `o` steps
//! `stride` rows, window axis `k` steps `dilation` rows) and a post map finishes: average
//! divides by the window's count (a constant, or a per-position constant buffer when the
//! count varies: partial `ceil_mode` windows, or padding left out of the count), Lp takes
//! the root of `Σ|x|ᵖ`. The padding never changes a result: it is the combination's
//! identity, and the divisor counts exactly the cells the reference counts.

use super::{contiguous_strides, ScheduleError, Scheduler, Support, View};
use crate::kernel::*;
use kiln_ir::{BinaryOp, DType, Dim, Node, PoolAttrs, PoolKind, Tensor, UnaryOp};

/// Whether pooling of `dtype` runs natively: max on every numeric type, average and Lp on
/// f32/f64 (the reference accumulates integers in f64 and rounds once, which integer
/// arithmetic cannot reproduce).
pub(super) fn support(a: &PoolAttrs, dtype: DType) -> Support {
    match (a.kind, dtype) {
        (_, DType::F16 | DType::BF16) => Support::Runtime("f16/bf16 pooling"),
        (_, DType::Bool) => Support::Runtime("bool pooling (rejected by the reference)"),
        (PoolKind::Lp { p: 0 }, _) => Support::Runtime("Lp pooling with p = 0"),
        (PoolKind::Max, _) | (_, DType::F32 | DType::F64) => Support::Native,
        _ => Support::Runtime("integer average/Lp pooling (accumulated in f64)"),
    }
}

/// One spatial dim of a window (a pooling's, or a convolution's).
pub(super) struct Axis {
    /// Input length.
    pub n: usize,
    /// Output length.
    pub out: usize,
    /// Window length.
    pub k: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_begin: usize,
    pub pad_end: usize,
}

impl Axis {
    /// Padded input coordinate of window cell `k` of output `o`.
    fn at(&self, o: usize, k: usize) -> usize {
        o * self.stride + k * self.dilation
    }

    /// One past the last padded coordinate any window touches.
    fn reach(&self) -> usize {
        if self.out == 0 || self.k == 0 {
            return 0;
        }
        self.at(self.out - 1, self.k - 1) + 1
    }

    /// The length of the padded scratch along this dim.
    fn padded(&self) -> usize {
        (self.pad_begin + self.n).max(self.reach())
    }

    /// How many cells of the window of output `o` count in an average: data cells, plus
    /// explicit padding with `include_pad` (never cells past the padded end).
    fn count(&self, o: usize, include_pad: bool) -> usize {
        (0..self.k)
            .filter(|&k| {
                let c = self.at(o, k);
                let data = c >= self.pad_begin && c < self.pad_begin + self.n;
                data || (include_pad && c < self.pad_begin + self.n + self.pad_end)
            })
            .count()
    }
}

/// The spatial axes; `input` and `output` are the spatial sizes (after batch and channel).
fn axes(a: &PoolAttrs, input: &[usize], output: &[usize]) -> Vec<Axis> {
    (0..a.kernel.len())
        .map(|i| Axis {
            n: input[i],
            out: output[i],
            k: a.kernel[i],
            stride: a.strides[i],
            dilation: a.dilations[i],
            pad_begin: a.pads[i].0,
            pad_end: a.pads[i].1,
        })
        .collect()
}

/// Average divisors over the output's spatial positions (row-major), one per position.
fn divisors(dims: &[Axis], include_pad: bool) -> Vec<usize> {
    let mut all = vec![1usize];
    for d in dims {
        let per: Vec<usize> = (0..d.out).map(|o| d.count(o, include_pad)).collect();
        all = all
            .iter()
            .flat_map(|&a| per.iter().map(move |&c| a * c))
            .collect();
    }
    all
}

impl Scheduler<'_> {
    pub(super) fn pool(&mut self, node: &Node, a: &PoolAttrs) -> Result<(), ScheduleError> {
        let src = self.view(node.inputs[0]).clone();
        let out = self.temp(node.outputs[0])?;
        let known = |v: &View, value| -> Result<Vec<usize>, ScheduleError> {
            v.shape[2..].iter().map(|d| self.known(d, value)).collect()
        };
        let spatial_out = known(&out, node.outputs[0])?;
        let dims = axes(a, &known(&src, node.inputs[0])?, &spatial_out);
        let combine = match a.kind {
            PoolKind::Max => Combine::Max,
            PoolKind::Avg { .. } | PoolKind::Lp { .. } => Combine::Sum,
        };
        let data = self.pool_input(&src, &dims, combine, node);
        let value = window_value(&data, &dims, a.kind);
        let post = self.pool_post(&out, &spatial_out, &dims, a.kind);
        self.push(Kernel::Reduce(Reduce {
            shape: out.shape.clone(),
            reduced: dims.iter().map(|d| Dim::from(d.k)).collect(),
            out: Access::contiguous(out.buf, &out.shape),
            value,
            combine,
            post,
        }));
        Ok(())
    }

    /// The input itself when no window leaves the data, otherwise a scratch copy padded
    /// with the identity of `combine`.
    pub(super) fn pool_input(
        &mut self,
        src: &View,
        dims: &[Axis],
        combine: Combine,
        node: &Node,
    ) -> View {
        if dims.iter().all(|d| d.pad_begin == 0 && d.reach() <= d.n) {
            return src.clone();
        }
        let mut shape = src.shape[..2].to_vec();
        shape.extend(dims.iter().map(|d| Dim::from(d.padded())));
        let padded = self.scratch(src.dtype, shape, node.outputs[0]);
        let mut fill = Expr::default();
        fill.push(
            ExprNode::Const(combine_identity(combine, src.dtype)),
            src.dtype,
        );
        self.push(Kernel::Loop(LoopNest::new(
            padded.shape.clone(),
            Access::contiguous(padded.buf, &padded.shape),
            fill,
        )));
        let strides = contiguous_strides(&padded.shape);
        let offset = dims
            .iter()
            .zip(&strides[2..])
            .map(|(d, s)| &Dim::from(d.pad_begin) * s)
            .sum();
        let mut copy = Expr::default();
        copy.push(
            ExprNode::Load(Access::contiguous(src.buf, &src.shape)),
            src.dtype,
        );
        let out = Access {
            buf: padded.buf,
            offset,
            strides,
        };
        self.push(Kernel::Loop(LoopNest::new(src.shape.clone(), out, copy)));
        padded
    }

    /// The map applied to each window's accumulator.
    fn pool_post(&mut self, out: &View, spatial: &[usize], dims: &[Axis], kind: PoolKind) -> Expr {
        let t = out.dtype;
        let mut e = Expr::default();
        let acc = e.push(ExprNode::Acc, t);
        match kind {
            PoolKind::Max | PoolKind::Lp { p: 1 } => {}
            PoolKind::Lp { p: 2 } => {
                e.push(ExprNode::Unary(UnaryOp::Sqrt, acc), t);
            }
            PoolKind::Lp { p } => {
                let r = e.push(ExprNode::Const(Scalar::Float(1.0 / p as f64)), t);
                e.push(ExprNode::Binary(BinaryOp::Pow, acc, r), t);
            }
            PoolKind::Avg { count_include_pad } => {
                let counts = divisors(dims, count_include_pad);
                let n = if counts.iter().all(|&c| c == counts[0]) {
                    e.push(ExprNode::Const(Scalar::Float(counts[0] as f64)), t)
                } else {
                    let buf = self.divisor_buffer(t, &counts, spatial, out);
                    let mut strides = vec![Dim::from(0i64), Dim::from(0i64)];
                    strides.extend(contiguous_strides(&out.shape[2..]));
                    let load = Access {
                        buf,
                        offset: Dim::from(0i64),
                        strides,
                    };
                    e.push(ExprNode::Load(load), t)
                };
                e.push(ExprNode::Binary(BinaryOp::Div, acc, n), t);
            }
        }
        e
    }

    /// A constant buffer of float `dtype` holding `counts` (over the output's spatial dims).
    fn divisor_buffer(
        &mut self,
        dtype: DType,
        counts: &[usize],
        shape: &[usize],
        out: &View,
    ) -> BufId {
        let tensor = if dtype == DType::F64 {
            Tensor::from_vec(counts.iter().map(|&c| c as f64).collect(), shape)
        } else {
            Tensor::from_vec(counts.iter().map(|&c| c as f32).collect(), shape)
        }
        .expect("one count per output position");
        self.program.buffers.push(Buffer {
            dtype,
            len: Dim::from(counts.len()),
            kind: BufferKind::Const(tensor),
            value: self.view_value(out),
        });
        self.program.buffers.len() - 1
    }

    /// The IR value a view's buffer was made for.
    fn view_value(&self, v: &View) -> u32 {
        self.program.buffers[v.buf].value
    }
}

/// The combined value over `[N, C, O.., K..]`: each window cell of the (padded) input,
/// as `|x|ᵖ` for Lp.
fn window_value(data: &View, dims: &[Axis], kind: PoolKind) -> Expr {
    let ds = contiguous_strides(&data.shape);
    let mut strides = ds[..2].to_vec();
    strides.extend(
        dims.iter()
            .zip(&ds[2..])
            .map(|(d, s)| &Dim::from(d.stride) * s),
    );
    strides.extend(
        dims.iter()
            .zip(&ds[2..])
            .map(|(d, s)| &Dim::from(d.dilation) * s),
    );
    let t = data.dtype;
    let mut e = Expr::default();
    let x = e.push(
        ExprNode::Load(Access {
            buf: data.buf,
            offset: Dim::from(0i64),
            strides,
        }),
        t,
    );
    if let PoolKind::Lp { p } = kind {
        let a = e.push(ExprNode::Unary(UnaryOp::Abs, x), t);
        if p != 1 {
            let p = e.push(ExprNode::Const(Scalar::Float(p as f64)), t);
            e.push(ExprNode::Binary(BinaryOp::Pow, a, p), t);
        }
    }
    e
}
