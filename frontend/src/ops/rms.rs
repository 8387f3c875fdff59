//! `RMSNormalization` (opset 23): `x / √(mean(x²) + eps) · scale` over the axes from `axis`
//! on, computed in `stash_type`; nodes named `"{node}.mean"`, `"{node}.rsqrt"`, … for fusion.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use crate::tensor::dtype_of;
use kiln_ir::{BinaryOp as B, Op, ReduceKind, UnaryOp};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("RMSNormalization", 23, rms_norm);
}

fn rms_norm(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x0 = n.input(0)?;
    let rank = cx.rank(x0);
    let axis = n.ctx.axis(n.int("axis", -1), rank)?;
    let dtype = cx.dtype(x0);
    let stash = dtype_of(n.int("stash_type", 1) as i32).map_err(|m| n.ctx.unsupported(m))?;
    let x = cx.cast("cast_in", x0, stash)?;
    let sq = cx.binary("sq", B::Mul, &x, &x)?;
    let reduce = Op::Reduce {
        kind: ReduceKind::Mean,
        axes: (axis..rank).collect(),
        keep_dims: true,
    };
    let ms = cx.emit1("mean", reduce, &[&sq])?;
    let eps = cx.scalar(stash, n.float("epsilon", 1e-5) as f64);
    let mse = cx.binary("add_eps", B::Add, &ms, &eps)?;
    let rstd = cx.unary("rsqrt", UnaryOp::Rsqrt, &mse)?;
    let normed = cx.binary("norm", B::Mul, &x, &rstd)?;
    let normed = cx.cast("cast_out", &normed, dtype)?;
    Ok(vec![cx.binary("", B::Mul, &normed, n.input(1)?)?])
}
