//! Normalizations decomposed into core ops, named `"{node}.mean"`, `"{node}.rsqrt"`, …
//! so that fusion can recover them with their provenance.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use kiln_ir::{BinaryOp as B, DType, Op, ReduceKind, UnaryOp};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("LayerNormalization", 17, layer_norm);
}

fn mean(cx: &mut Cx, suffix: &str, x: &Val, axes: &[usize]) -> R<Val> {
    cx.emit1(
        suffix,
        Op::Reduce {
            kind: ReduceKind::Mean,
            axes: axes.to_vec(),
            keep_dims: true,
        },
        &[x],
    )
}

/// `(x - mean) · rsqrt(var + eps) · scale + bias` over the axes from `axis` on; the
/// statistics are computed in f32 for narrower float inputs.
fn layer_norm(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x0 = n.input(0)?;
    let rank = cx.rank(x0);
    let axis = n.ctx.axis(n.int("axis", -1), rank)?;
    let axes: Vec<usize> = (axis..rank).collect();
    let dtype = cx.dtype(x0);
    let wide = if matches!(dtype, DType::F16 | DType::BF16) {
        DType::F32
    } else {
        dtype
    };
    let x = cx.cast("cast_in", x0, wide)?;
    let mu = mean(cx, "mean", &x, &axes)?;
    let d = cx.binary("sub", B::Sub, &x, &mu)?;
    let sq = cx.binary("sq", B::Mul, &d, &d)?;
    let var = mean(cx, "var", &sq, &axes)?;
    let eps = cx.scalar(wide, n.float("epsilon", 1e-5) as f64);
    let ve = cx.binary("add_eps", B::Add, &var, &eps)?;
    let rstd = cx.unary("rsqrt", UnaryOp::Rsqrt, &ve)?;
    let normed = cx.binary("norm", B::Mul, &d, &rstd)?;
    let normed = cx.cast("cast_out", &normed, dtype)?;
    let bias = n.opt(2);
    let scaled = cx.binary(
        if bias.is_some() { "scale" } else { "" },
        B::Mul,
        &normed,
        n.input(1)?,
    )?;
    let y = match bias {
        Some(b) => cx.binary("", B::Add, &scaled, b)?,
        None => scaled,
    };
    Ok(vec![y, mu, rstd])
}
