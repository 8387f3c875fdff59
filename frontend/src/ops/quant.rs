//! Linear quantization: `QuantizeLinear`, `DequantizeLinear`, `DynamicQuantizeLinear` and
//! `MatMulInteger`, as integer/float core ops (the quantize pass recovers fused forms).

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use kiln_ir::{BinaryOp as B, DType, Dim, Op, ReduceKind, UnaryOp as U};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("DequantizeLinear", 10, dequantize);
    reg.add("QuantizeLinear", 10, quantize);
    reg.add("DynamicQuantizeLinear", 11, dynamic_quantize);
    reg.add("MatMulInteger", 10, matmul_integer);
}

/// A per-axis parameter reshaped to broadcast along `axis` of a rank-`rank` tensor.
fn along_axis(cx: &mut Cx, suffix: &str, p: &Val, axis: i64, rank: usize, n: &N) -> R<Val> {
    let shape = cx.ty(p).shape;
    if shape.len() != 1 || shape[0].as_const() == Some(1) {
        return Ok(p.clone());
    }
    let axis = n.ctx.axis(axis, rank)?;
    let mut s = vec![Dim::from(1i64); rank];
    s[axis] = shape[0].clone();
    cx.reshape(suffix, p, s)
}

/// `(x - zero_point) · scale`.
fn dequantize(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let rank = cx.rank(x);
    let axis = n.int("axis", 1);
    let scale = along_axis(cx, "scale", n.input(1)?, axis, rank, n)?;
    let ft = cx.dtype(&scale);
    let xf = cx.cast("cast", x, ft)?;
    let centered = match n.opt(2) {
        Some(zp) => {
            let zp = along_axis(cx, "zero_point", zp, axis, rank, n)?;
            let zf = cx.cast("cast_zero_point", &zp, ft)?;
            cx.binary("sub", B::Sub, &xf, &zf)?
        }
        None => xf,
    };
    Ok(vec![cx.binary("", B::Mul, &centered, &scale)?])
}

/// `saturate(round(x / scale) + zero_point)` into the zero point's type (u8 by default).
fn quantize(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let rank = cx.rank(x);
    let axis = n.int("axis", 1);
    let scale = along_axis(cx, "scale", n.input(1)?, axis, rank, n)?;
    let zp = match n.opt(2) {
        Some(z) => Some(along_axis(cx, "zero_point", z, axis, rank, n)?),
        None => None,
    };
    let to = zp.as_ref().map_or(DType::U8, |z| cx.dtype(z));
    let ft = cx.dtype(x);
    let q = cx.binary("div", B::Div, x, &scale)?;
    let mut r = cx.unary("round", U::Round, &q)?;
    if let Some(z) = &zp {
        let zf = cx.cast("cast_zero_point", z, ft)?;
        r = cx.binary("add", B::Add, &r, &zf)?;
    }
    Ok(vec![saturate(cx, &r, to)?])
}

/// Clamps to the range of `to` and casts.
pub(crate) fn saturate(cx: &mut Cx, x: &Val, to: DType) -> R<Val> {
    let (lo, hi) = match to {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::U16 => (0.0, 65535.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::I32 => (i32::MIN as f64, i32::MAX as f64),
        DType::U32 => (0.0, u32::MAX as f64),
        d => return Err(cx.ctx.unsupported(format!("quantization to {d}"))),
    };
    let t = cx.dtype(x);
    let (l, h) = (cx.scalar(t, lo), cx.scalar(t, hi));
    let a = cx.binary("clip_lo", B::Max, x, &l)?;
    let b = cx.binary("clip_hi", B::Min, &a, &h)?;
    cx.cast("", &b, to)
}

/// `scale = (max(x, 0) - min(x, 0)) / 255`, `zp = saturate(round(-min / scale))`,
/// `y = saturate(round(x / scale) + zp)`, all to u8.
fn dynamic_quantize(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let t = cx.dtype(x);
    let axes: Vec<usize> = (0..cx.rank(x)).collect();
    let zero = cx.scalar(t, 0.0);
    let red = |kind| Op::Reduce {
        kind,
        axes: axes.clone(),
        keep_dims: false,
    };
    let mx = cx.emit1("max", red(ReduceKind::Max), &[x])?;
    let mn = cx.emit1("min", red(ReduceKind::Min), &[x])?;
    let mx = cx.binary("max0", B::Max, &mx, &zero)?;
    let mn = cx.binary("min0", B::Min, &mn, &zero)?;
    let range = cx.binary("range", B::Sub, &mx, &mn)?;
    let q = cx.scalar(t, 255.0);
    let scale = cx.binary("scale", B::Div, &range, &q)?;
    let neg = cx.unary("neg_min", U::Neg, &mn)?;
    let zq = cx.binary("zp_div", B::Div, &neg, &scale)?;
    let zr = cx.unary("zp_round", U::Round, &zq)?;
    let zp = saturate(cx, &zr, DType::U8)?;
    let xq = cx.binary("div", B::Div, x, &scale)?;
    let xr = cx.unary("round", U::Round, &xq)?;
    let zf = cx.cast("zp_float", &zp, t)?;
    let xz = cx.binary("add_zp", B::Add, &xr, &zf)?;
    let y = saturate(cx, &xz, DType::U8)?;
    Ok(vec![y, scale, zp])
}

/// `(a - a_zp) @ (b - b_zp)` in i32.
fn matmul_integer(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let (a, b) = (n.input(0)?, n.input(1)?);
    Ok(vec![int_matmul(cx, a, b, n.opt(2), n.opt(3))?])
}

/// `(a - a_zp) @ (b - b_zp)` in i32; `a_zp` may be per row, `b_zp` per column.
fn int_matmul(cx: &mut Cx, a: &Val, b: &Val, a_zp: Option<&Val>, b_zp: Option<&Val>) -> R<Val> {
    let a = cx.cast("cast_a", a, DType::I32)?;
    let b = cx.cast("cast_b", b, DType::I32)?;
    let a = match a_zp {
        Some(z) => {
            let z = cx.cast("cast_a_zero_point", z, DType::I32)?;
            let zs = cx.ty(&z).shape;
            let z = if zs.len() == 1 && zs[0].as_const() != Some(1) {
                cx.reshape("a_zero_point", &z, vec![zs[0].clone(), Dim::from(1i64)])?
            } else {
                z
            };
            cx.binary("sub_a", B::Sub, &a, &z)?
        }
        None => a,
    };
    let b = match b_zp {
        Some(z) => {
            let z = cx.cast("cast_b_zero_point", z, DType::I32)?;
            cx.binary("sub_b", B::Sub, &b, &z)?
        }
        None => b,
    };
    crate::ops::linalg::matmul(cx, "", &a, &b)
}
