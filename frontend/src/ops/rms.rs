//! `RMSNormalization` (opset 23): `x / √(mean(x²) + eps) · scale` over the axes from `axis`
//! on, computed in `stash_type`; nodes named `"{node}.mean"`, `"{node}.rsqrt"`, … for fusion.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use crate::tensor::dtype_of;
use kiln_ir::{BinaryOp as B, DType, Op, ReduceKind, UnaryOp};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("RMSNormalization", 23, rms_norm);
}

fn rms_norm(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let axis = n.ctx.axis(n.int("axis", -1), cx.rank(x))?;
    let stash = dtype_of(n.int("stash_type", 1) as i32).map_err(|m| n.ctx.unsupported(m))?;
    let eps = n.float("epsilon", 1e-5) as f64;
    Ok(vec![rms_of(cx, x, n.input(1)?, axis, stash, eps)?])
}

/// `x / √(mean(x²) + eps) · scale` over the axes from `axis` on, computed in `stash`.
pub(super) fn rms_of(
    cx: &mut Cx,
    x0: &Val,
    scale: &Val,
    axis: usize,
    stash: DType,
    eps: f64,
) -> R<Val> {
    let rank = cx.rank(x0);
    let dtype = cx.dtype(x0);
    let x = cx.cast("cast_in", x0, stash)?;
    let sq = cx.binary("sq", B::Mul, &x, &x)?;
    let reduce = Op::Reduce {
        kind: ReduceKind::Mean,
        axes: (axis..rank).collect(),
        keep_dims: true,
    };
    let ms = cx.emit1("mean", reduce, &[&sq])?;
    let eps = cx.scalar(stash, eps);
    let mse = cx.binary("add_eps", B::Add, &ms, &eps)?;
    let rstd = cx.unary("rsqrt", UnaryOp::Rsqrt, &mse)?;
    let normed = cx.binary("norm", B::Mul, &x, &rstd)?;
    let normed = cx.cast("cast_out", &normed, dtype)?;
    cx.binary("", B::Mul, &normed, scale)
}
