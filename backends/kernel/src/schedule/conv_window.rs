//! Convolutions as one windowed [`Reduce`] each, over a zero-filled copy of the input, as
//! pooling is (`pool.rs`): convolution of the dtypes the GEMM call does not take
//! (integers, f64, halves), and transposed convolution of every dtype.
//!
//! The output is read as `y[n, g, m, o..]` (the channel axis split into its group and the
//! channel within it, the same memory), so every operand is affine in the loop index:
//!
//! - convolution: `y[n, g, m, o..] = Σ_{c, k..} x'[n, g·C/G + c, o·s + k·d ..] ·
//!   w[g·M/G + m, c, k..]`, with `x'` the input padded by the pads;
//! - transposed convolution: `y[o] = Σ_{i, k: i·s + k·d - pb = o} x[i] · w[k]`. Spread the
//!   input by its strides into `z[P + i·s] = x[i]` (zeros between), `P = d·(K - 1)`;
//!   then `y[o] = Σ_k z[o + pb + d·k] · w[K - 1 - k]`: a convolution with unit stride
//!   over `z`, the kernel read backwards.
//!
//! Halves multiply and accumulate in f32 and round once, as the interpreter computes them
//! (`halves_as_f32`); integers wrap in their own type, as the interpreter's do.

use super::pool::Axis;
use super::{contiguous_strides, ScheduleError, Scheduler, View};
use crate::kernel::*;
use kiln_ir::{BinaryOp, ConvAttrs, ConvTransposeAttrs, DType, Dim, Node};

/// How a windowed convolution reads its (padded or spread) input and its weights.
struct Window {
    /// Per spatial axis: the input step of one output position, of one kernel position,
    /// and the input offset of output 0, kernel position 0.
    steps: Vec<(usize, usize, usize)>,
    /// The weight's element offset and strides over `[g, m, c, k..]`.
    w_offset: Dim,
    w_strides: Vec<Dim>,
}

/// The spatial sizes, channel counts and groups a windowed convolution needs known.
struct Sizes {
    /// Input channels per group.
    cg: usize,
    /// Output channels per group.
    mg: usize,
    groups: usize,
    /// Kernel lengths.
    kernel: Vec<usize>,
}

impl Scheduler<'_> {
    /// A convolution of a dtype other than f32.
    pub(super) fn conv_window(&mut self, node: &Node, a: &ConvAttrs) -> Result<(), ScheduleError> {
        let x = self.view(node.inputs[0]).clone();
        let w = self.view(node.inputs[1]).clone();
        let y = self.temp(node.outputs[0])?;
        let sizes = self.sizes(node, &w, a.groups, false)?;
        let input = self.known_spatial(&x, node.inputs[0])?;
        let output = self.known_spatial(&y, node.outputs[0])?;
        let dims: Vec<Axis> = (0..input.len())
            .map(|i| Axis {
                n: input[i],
                out: output[i],
                k: sizes.kernel[i],
                stride: a.strides[i],
                dilation: a.dilations[i],
                pad_begin: a.pads[i].0,
                pad_end: a.pads[i].1,
            })
            .collect();
        let data = self.pool_input(&x, &dims, Combine::Sum, node);
        let ws = contiguous_strides(&w.shape);
        let mut w_strides = vec![&Dim::from(sizes.mg) * &ws[0], ws[0].clone(), ws[1].clone()];
        w_strides.extend(ws[2..].iter().cloned());
        let window = Window {
            steps: dims.iter().map(|d| (d.stride, d.dilation, 0)).collect(),
            w_offset: Dim::from(0i64),
            w_strides,
        };
        self.windowed(&data, &w, &y, &sizes, &window);
        Ok(())
    }

    /// A transposed convolution.
    pub(super) fn conv_transpose(
        &mut self,
        node: &Node,
        a: &ConvTransposeAttrs,
    ) -> Result<(), ScheduleError> {
        let x = self.view(node.inputs[0]).clone();
        let w = self.view(node.inputs[1]).clone();
        let y = self.temp(node.outputs[0])?;
        let sizes = self.sizes(node, &w, a.groups, true)?;
        let input = self.known_spatial(&x, node.inputs[0])?;
        let output = self.known_spatial(&y, node.outputs[0])?;
        let spread = self.spread(node, &x, a, &sizes.kernel, &input, &output);
        let ws = contiguous_strides(&w.shape);
        // w[g·C/G + c, m, K - 1 - k..]: the kernel axes run backwards from their ends.
        let mut w_offset = Dim::from(0i64);
        for (k, s) in sizes.kernel.iter().zip(&ws[2..]) {
            w_offset = &w_offset + &(&Dim::from(k.saturating_sub(1)) * s);
        }
        let mut w_strides = vec![&Dim::from(sizes.cg) * &ws[0], ws[1].clone(), ws[0].clone()];
        w_strides.extend(ws[2..].iter().map(|s| &Dim::from(-1i64) * s));
        let window = Window {
            steps: (0..input.len())
                .map(|i| (1, a.dilations[i], a.pads[i].0))
                .collect(),
            w_offset,
            w_strides,
        };
        self.windowed(&spread, &w, &y, &sizes, &window);
        Ok(())
    }

    fn known_spatial(
        &self,
        v: &View,
        value: kiln_ir::ValueId,
    ) -> Result<Vec<usize>, ScheduleError> {
        v.shape[2..].iter().map(|d| self.known(d, value)).collect()
    }

    /// The channel counts from the weight `w` (`[M, C/G, K..]`, or `[C, M/G, K..]`
    /// when `transposed`).
    fn sizes(
        &self,
        node: &Node,
        w: &View,
        groups: usize,
        transposed: bool,
    ) -> Result<Sizes, ScheduleError> {
        let value = node.inputs[1];
        let (w0, w1) = (
            self.known(&w.shape[0], value)?,
            self.known(&w.shape[1], value)?,
        );
        let groups = groups.max(1);
        let (cg, mg) = if transposed {
            (w0 / groups, w1)
        } else {
            (w1, w0 / groups)
        };
        let kernel = self.known_spatial(w, value)?;
        Ok(Sizes {
            cg,
            mg,
            groups,
            kernel,
        })
    }

    /// The input of a transposed convolution spread by its strides into a zero-filled
    /// scratch `z[n, c, P + i·s..] = x[n, c, i..]` (`P = d·(K - 1)`), as long as the
    /// output needs (`O + pb + P`); input positions past that end are left out.
    fn spread(
        &mut self,
        node: &Node,
        x: &View,
        a: &ConvTransposeAttrs,
        kernel: &[usize],
        input: &[usize],
        output: &[usize],
    ) -> View {
        let reach: Vec<usize> = (0..input.len())
            .map(|i| a.dilations[i] * kernel[i].saturating_sub(1))
            .collect();
        let mut shape = x.shape[..2].to_vec();
        shape.extend((0..input.len()).map(|i| Dim::from(output[i] + a.pads[i].0 + reach[i])));
        let z = self.scratch(x.dtype, shape, node.outputs[0]);
        let mut fill = Expr::default();
        fill.push(
            ExprNode::Const(combine_identity(Combine::Sum, x.dtype)),
            x.dtype,
        );
        self.push(Kernel::Loop(LoopNest::new(
            z.shape.clone(),
            Access::contiguous(z.buf, &z.shape),
            fill,
        )));
        let zs = contiguous_strides(&z.shape);
        let mut copied = x.shape[..2].to_vec();
        let mut offset = Dim::from(0i64);
        let mut strides = zs[..2].to_vec();
        for i in 0..input.len() {
            let (s, room) = (a.strides[i].max(1), output[i] + a.pads[i].0);
            copied.push(Dim::from(input[i].min(room.div_ceil(s))));
            offset = &offset + &(&Dim::from(reach[i]) * &zs[i + 2]);
            strides.push(&Dim::from(s) * &zs[i + 2]);
        }
        if !copied.iter().product::<Dim>().is_zero() {
            let mut copy = Expr::default();
            let load = Access {
                buf: x.buf,
                offset: Dim::from(0i64),
                strides: contiguous_strides(&x.shape),
            };
            copy.push(ExprNode::Load(load), x.dtype);
            let out = Access {
                buf: z.buf,
                offset,
                strides,
            };
            self.push(Kernel::Loop(LoopNest::new(copied, out, copy)));
        }
        z
    }

    /// `y[n, g, m, o..] = Σ_{c, k..} data[n, g·cg + c, window(o, k)..] · w[window's
    /// access of (g, m, c, k..)]`, one [`Reduce`].
    fn windowed(&mut self, data: &View, w: &View, y: &View, sizes: &Sizes, window: &Window) {
        let spatial = window.steps.len();
        let mut shape = vec![
            y.shape[0].clone(),
            Dim::from(sizes.groups),
            Dim::from(sizes.mg),
        ];
        shape.extend(y.shape[2..].iter().cloned());
        let mut reduced = vec![Dim::from(sizes.cg)];
        reduced.extend(sizes.kernel.iter().map(|&k| Dim::from(k)));
        if shape.iter().product::<Dim>().is_zero() {
            return;
        }
        let zero = || Dim::from(0i64);
        let ds = contiguous_strides(&data.shape);
        // Loop axes: [n, g, m, o.., c, k..].
        let mut d_strides = vec![ds[0].clone(), &Dim::from(sizes.cg) * &ds[1], zero()];
        let mut d_offset = zero();
        for (i, &(step, _, at)) in window.steps.iter().enumerate() {
            d_strides.push(&Dim::from(step) * &ds[i + 2]);
            d_offset = &d_offset + &(&Dim::from(at) * &ds[i + 2]);
        }
        d_strides.push(ds[1].clone());
        for (i, &(_, dilation, _)) in window.steps.iter().enumerate() {
            d_strides.push(&Dim::from(dilation) * &ds[i + 2]);
        }
        let ws = &window.w_strides;
        let mut w_strides = vec![zero(), ws[0].clone(), ws[1].clone()];
        w_strides.extend((0..spatial).map(|_| zero()));
        w_strides.push(ws[2].clone());
        w_strides.extend(ws[3..].iter().cloned());
        let t = y.dtype;
        let a = if matches!(t, DType::F16 | DType::BF16) {
            DType::F32
        } else {
            t
        };
        let mut value = Expr::default();
        let widened = |e: &mut Expr, access: Access| {
            let v = e.push(ExprNode::Load(access), t);
            if a == t {
                v
            } else {
                e.push(ExprNode::Cast(v), a)
            }
        };
        let xv = widened(
            &mut value,
            Access {
                buf: data.buf,
                offset: d_offset,
                strides: d_strides,
            },
        );
        let wv = widened(
            &mut value,
            Access {
                buf: w.buf,
                offset: window.w_offset.clone(),
                strides: w_strides,
            },
        );
        value.push(ExprNode::Binary(BinaryOp::Mul, xv, wv), a);
        let mut post = Expr::default();
        let acc = post.push(ExprNode::Acc, a);
        if a != t {
            post.push(ExprNode::Cast(acc), t);
        }
        self.push(Kernel::Reduce(Reduce {
            out: Access::contiguous(y.buf, &shape),
            shape,
            reduced,
            value,
            combine: Combine::Sum,
            post,
        }));
    }
}
