//! Normalizations decomposed into core ops, named `"{node}.mean"`, `"{node}.rsqrt"`, …
//! so that fusion can recover them with their provenance.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use kiln_ir::{BinaryOp as B, DType, Dim, Op, PoolAttrs, PoolKind, ReduceKind, UnaryOp};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("LayerNormalization", 17, layer_norm);
    reg.add("BatchNormalization", 1, batch_norm);
    reg.add("InstanceNormalization", 1, instance_norm);
    reg.add("GroupNormalization", 18, group_norm);
    reg.add("LpNormalization", 1, lp_norm);
    reg.add("MeanVarianceNormalization", 9, mvn);
    reg.add("LRN", 1, lrn);
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

/// `p` reshaped to `[c, 1, …]` so that it broadcasts along axis 1 of a rank-`rank` tensor.
fn per_channel(cx: &mut Cx, suffix: &str, p: &Val, rank: usize) -> R<Val> {
    let mut shape = vec![Dim::from(1i64); rank - 1];
    shape[0] = cx.ty(p).shape.first().cloned().unwrap_or(Dim::from(1i64));
    cx.reshape(suffix, p, shape)
}

/// The dtype statistics are computed in: f32 for narrower floats.
fn wide(dtype: DType) -> DType {
    if matches!(dtype, DType::F16 | DType::BF16) {
        DType::F32
    } else {
        dtype
    }
}

/// `x · scale + bias` with per-channel parameters.
fn affine(cx: &mut Cx, x: &Val, scale: &Val, bias: &Val, rank: usize) -> R<Val> {
    let s = per_channel(cx, "scale_shape", scale, rank)?;
    let b = per_channel(cx, "bias_shape", bias, rank)?;
    let y = cx.binary("scale", B::Mul, x, &s)?;
    cx.binary("", B::Add, &y, &b)
}

/// `(x - mean) · rsqrt(mean((x - mean)²) + eps)` over `axes`; returns it with the mean and
/// the variance.
fn standardize(cx: &mut Cx, x: &Val, axes: &[usize], eps: f64) -> R<(Val, Val, Val)> {
    let mu = mean(cx, "mean", x, axes)?;
    let d = cx.binary("sub", B::Sub, x, &mu)?;
    let sq = cx.binary("sq", B::Mul, &d, &d)?;
    let var = mean(cx, "var", &sq, axes)?;
    let e = cx.scalar(cx.dtype(x), eps);
    let ve = cx.binary("add_eps", B::Add, &var, &e)?;
    let rstd = cx.unary("rsqrt", UnaryOp::Rsqrt, &ve)?;
    Ok((cx.binary("norm", B::Mul, &d, &rstd)?, mu, var))
}

fn check_rank(cx: &Cx, x: &Val) -> R<usize> {
    let rank = cx.rank(x);
    if rank < 2 {
        return Err(cx.err("expects an input of rank >= 2"));
    }
    Ok(rank)
}

/// Inference: `(x - mean) · rsqrt(var + eps) · scale + bias` with the given statistics.
/// Training: batch statistics, and the running statistics updated with `momentum`.
fn batch_norm(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let rank = check_rank(cx, x)?;
    let eps = n.float("epsilon", 1e-5) as f64;
    let (scale, bias) = (n.input(1)?, n.input(2)?);
    if n.int("training_mode", 0) != 0 {
        return batch_norm_training(cx, n, eps);
    }
    if n.ctx.opset < 9 && n.int("spatial", 1) == 0 {
        return Err(n.ctx.unsupported("spatial = 0"));
    }
    let mu = per_channel(cx, "mean_shape", n.input(3)?, rank)?;
    let var = per_channel(cx, "var_shape", n.input(4)?, rank)?;
    let e = cx.scalar(cx.dtype(&var), eps);
    let ve = cx.binary("add_eps", B::Add, &var, &e)?;
    let rstd = cx.unary("rsqrt", UnaryOp::Rsqrt, &ve)?;
    let rstd = cx.cast("cast_rstd", &rstd, cx.dtype(x))?;
    let mu = cx.cast("cast_mean", &mu, cx.dtype(x))?;
    let d = cx.binary("sub", B::Sub, x, &mu)?;
    let normed = cx.binary("norm", B::Mul, &d, &rstd)?;
    Ok(vec![affine(cx, &normed, scale, bias, rank)?])
}

fn batch_norm_training(cx: &mut Cx, n: &N, eps: f64) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let rank = cx.rank(x);
    let axes: Vec<usize> = std::iter::once(0).chain(2..rank).collect();
    let (normed, mu, var) = standardize(cx, x, &axes, eps)?;
    let y = affine(cx, &normed, n.input(1)?, n.input(2)?, rank)?;
    let momentum = n.float("momentum", 0.9) as f64;
    let c = cx.ty(n.input(3)?).shape;
    let mut outs = vec![y];
    for (i, (stat, running)) in [(mu, n.input(3)?), (var, n.input(4)?)]
        .into_iter()
        .enumerate()
    {
        let t = cx.dtype(running);
        let stat = cx.reshape("stat_shape", &stat, c.clone())?;
        let stat = cx.cast("cast_stat", &stat, t)?;
        let m = cx.scalar(t, momentum);
        let m1 = cx.scalar(t, 1.0 - momentum);
        let a = cx.binary("momentum", B::Mul, running, &m)?;
        let b = cx.binary("update", B::Mul, &stat, &m1)?;
        let suffix = if i == 0 {
            "running_mean"
        } else {
            "running_var"
        };
        outs.push(cx.binary(suffix, B::Add, &a, &b)?);
    }
    Ok(outs)
}

/// Standardizes over the spatial axes of each instance and channel.
fn instance_norm(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x0 = n.input(0)?;
    let rank = check_rank(cx, x0)?;
    let dtype = cx.dtype(x0);
    let x = cx.cast("cast_in", x0, wide(dtype))?;
    let axes: Vec<usize> = (2..rank).collect();
    let (normed, _, _) = standardize(cx, &x, &axes, n.float("epsilon", 1e-5) as f64)?;
    let normed = cx.cast("cast_out", &normed, dtype)?;
    Ok(vec![affine(cx, &normed, n.input(1)?, n.input(2)?, rank)?])
}

/// Standardizes over `[n, groups, rest]`; opset 18 scales per group, 21 per channel.
fn group_norm(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x0 = n.input(0)?;
    let rank = check_rank(cx, x0)?;
    let shape = cx.ty(x0).shape;
    let groups = n.req_int("num_groups")?;
    let dtype = cx.dtype(x0);
    let stash = if n.int("stash_type", 1) == 1 {
        wide(dtype)
    } else {
        dtype
    };
    let x = cx.cast("cast_in", x0, stash)?;
    let g = Dim::from(groups);
    if groups < 1 {
        return Err(cx.err(format!("num_groups = {groups} must be positive")));
    }
    let rest = shape[1..]
        .iter()
        .fold(Dim::from(1i64), |a, d| a * d.clone());
    let grouped = vec![shape[0].clone(), g.clone(), rest.div_floor(groups)];
    let xg = cx.reshape("group", &x, grouped)?;
    let (normed, _, _) = standardize(cx, &xg, &[2], n.float("epsilon", 1e-5) as f64)?;
    let normed = cx.cast("cast_out", &normed, dtype)?;
    if n.ctx.opset < 21 {
        let s = cx.reshape("scale_shape", n.input(1)?, vec![g.clone(), Dim::from(1i64)])?;
        let b = cx.reshape("bias_shape", n.input(2)?, vec![g, Dim::from(1i64)])?;
        let y = cx.binary("scale", B::Mul, &normed, &s)?;
        let y = cx.binary("bias", B::Add, &y, &b)?;
        return Ok(vec![cx.reshape("", &y, shape)?]);
    }
    let y = cx.reshape("ungroup", &normed, shape)?;
    Ok(vec![affine(cx, &y, n.input(1)?, n.input(2)?, rank)?])
}

/// `x / ‖x‖ₚ` along `axis` (p is 1 or 2), 0 where the norm is 0.
fn lp_norm(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let axis = n.ctx.axis(n.int("axis", -1), cx.rank(x))?;
    let kind = match n.int("p", 2) {
        1 => ReduceKind::L1,
        2 => ReduceKind::L2,
        p => return Err(n.ctx.err(format!("p = {p} must be 1 or 2"))),
    };
    let op = Op::Reduce {
        kind,
        axes: vec![axis],
        keep_dims: true,
    };
    let norm = cx.emit1("norm", op, &[x])?;
    let q = cx.binary("div", B::Div, x, &norm)?;
    let zero = cx.scalar(cx.dtype(x), 0.0);
    let is_zero = cx.binary("is_zero", B::Equal, &norm, &zero)?;
    Ok(vec![cx.emit1("", Op::Where, &[&is_zero, &zero, &q])?])
}

/// `(x - E[x]) / (√(E[x²] - E[x]²) + 1e-9)` over `axes` (default `[0, 2, 3]`).
fn mvn(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let rank = cx.rank(x);
    let mut axes = n
        .ints("axes")
        .unwrap_or_else(|| vec![0, 2, 3])
        .iter()
        .map(|&a| n.ctx.axis(a, rank))
        .collect::<R<Vec<_>>>()?;
    axes.sort_unstable();
    axes.dedup();
    let mu = mean(cx, "mean", x, &axes)?;
    let sq = cx.binary("sq", B::Mul, x, x)?;
    let msq = mean(cx, "mean_sq", &sq, &axes)?;
    let mu2 = cx.binary("mean2", B::Mul, &mu, &mu)?;
    let var = cx.binary("var", B::Sub, &msq, &mu2)?;
    let std = cx.unary("std", UnaryOp::Sqrt, &var)?;
    let e = cx.scalar(cx.dtype(x), 1e-9);
    let den = cx.binary("add_eps", B::Add, &std, &e)?;
    let d = cx.binary("sub", B::Sub, x, &mu)?;
    Ok(vec![cx.binary("", B::Div, &d, &den)?])
}

/// `x / (bias + alpha · mean_window(x²))^beta`, the window spanning `size` channels, as an
/// average pool (padding counted) over `x²` viewed as `[n, 1, c, rest]`.
fn lrn(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let rank = check_rank(cx, x)?;
    let shape = cx.ty(x).shape;
    let size = n.req_int("size")?;
    if size < 1 {
        return Err(cx.err(format!("size = {size} must be positive")));
    }
    let size = size as usize;
    let rest = shape[2..rank]
        .iter()
        .fold(Dim::from(1i64), |a, d| a * d.clone());
    let view = vec![shape[0].clone(), Dim::from(1i64), shape[1].clone(), rest];
    let sq = cx.binary("sq", B::Mul, x, x)?;
    let sq = cx.reshape("view", &sq, view)?;
    let attrs = PoolAttrs {
        kind: PoolKind::Avg {
            count_include_pad: true,
        },
        kernel: vec![size, 1],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![((size - 1) / 2, size / 2), (0, 0)],
        ceil_mode: false,
    };
    let avg = cx.emit1("window", Op::Pool(attrs), &[&sq])?;
    let avg = cx.reshape("unview", &avg, shape)?;
    let t = cx.dtype(x);
    let alpha = cx.scalar(t, n.float("alpha", 1e-4) as f64);
    let bias = cx.scalar(t, n.float("bias", 1.0) as f64);
    let beta = cx.scalar(t, n.float("beta", 0.75) as f64);
    let a = cx.binary("alpha", B::Mul, &avg, &alpha)?;
    let b = cx.binary("bias", B::Add, &a, &bias)?;
    let p = cx.binary("pow", B::Pow, &b, &beta)?;
    Ok(vec![cx.binary("", B::Div, x, &p)?])
}
