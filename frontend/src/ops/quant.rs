//! Linear quantization: `QuantizeLinear`, `DequantizeLinear`, `DynamicQuantizeLinear` and
//! `MatMulInteger`, as integer/float core ops (the quantize pass recovers fused forms).

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use crate::tensor::{four_bit, storage_of};
use kiln_ir::{BinaryOp as B, DType, Dim, Op, ReduceKind, UnaryOp as U};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("DequantizeLinear", 10, dequantize);
    reg.add("QuantizeLinear", 10, quantize);
    reg.add("DynamicQuantizeLinear", 11, dynamic_quantize);
    reg.add("MatMulInteger", 10, matmul_integer);
}

/// A quantization parameter made to broadcast against `x`: a scalar as it is, a per-axis
/// vector reshaped along `axis`, and a blocked one (opset 21, `block_size > 0`, the same
/// rank as `x`) repeated `block_size` times along `axis`, the last block cut to `x`'s
/// extent.
fn along_axis(cx: &mut Cx, suffix: &str, p: &Val, x: &Val, n: &N) -> R<Val> {
    let rank = cx.rank(x);
    let axis = n.int("axis", 1);
    let block = n.int("block_size", 0);
    if block < 0 {
        return Err(n.ctx.err(format!("block_size {block} is negative")));
    }
    if block > 0 {
        return blocked(
            cx,
            suffix,
            p,
            x,
            (n.ctx.axis(axis, rank)?, block as usize),
            n,
        );
    }
    let shape = cx.ty(p).shape;
    if shape.len() != 1 || shape[0].as_const() == Some(1) {
        return Ok(p.clone());
    }
    let axis = n.ctx.axis(axis, rank)?;
    let mut s = vec![Dim::from(1i64); rank];
    s[axis] = shape[0].clone();
    cx.reshape(suffix, p, s)
}

/// A blocked parameter `p` (`x`'s shape with `⌈d / block⌉` in place of `d` along `axis`)
/// gathered so that element `i` along `axis` takes block `i / block`.
fn blocked(cx: &mut Cx, suffix: &str, p: &Val, x: &Val, at: (usize, usize), n: &N) -> R<Val> {
    let (axis, block) = at;
    let (xs, ps) = (cx.ty(x).shape, cx.ty(p).shape);
    let extent = |d: &Dim, what: &str| {
        d.as_const().ok_or_else(|| {
            n.ctx
                .unsupported(format!("blocked quantization along a symbolic {what}"))
        })
    };
    let d = extent(&xs[axis], "input dimension")?;
    if ps.len() != xs.len()
        || extent(&ps[axis], "parameter dimension")? != (d + block as i64 - 1) / block as i64
    {
        return Err(n.ctx.err(format!(
            "blocked parameter of shape {ps:?} does not match input {xs:?} in blocks of {block} along axis {axis}"
        )));
    }
    let idx: Vec<i64> = (0..d).map(|i| i / block as i64).collect();
    let idx = Val::tensor(
        kiln_ir::Tensor::from_vec(idx, &[d as usize]).map_err(|e| n.ctx.err(e.to_string()))?,
    );
    cx.emit1(suffix, Op::Gather { axis }, &[p, &idx])
}

/// `(x - zero_point) · scale`.
fn dequantize(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let scale = along_axis(cx, "scale", n.input(1)?, x, n)?;
    let ft = cx.dtype(&scale);
    let xf = cx.cast("cast", x, ft)?;
    let centered = match n.opt(2) {
        Some(zp) => {
            let zp = along_axis(cx, "zero_point", zp, x, n)?;
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
    let scale = along_axis(cx, "scale", n.input(1)?, x, n)?;
    let zp = match n.opt(2) {
        Some(z) => Some(along_axis(cx, "zero_point", z, x, n)?),
        None => None,
    };
    // Opset 21 names the type in `output_dtype` when there is no zero point.
    let code = n.int("output_dtype", 0) as i32;
    let to = match (&zp, code) {
        (Some(z), _) => cx.dtype(z),
        (None, 0) => DType::U8,
        (None, code) => storage_of(code).map_err(|m| n.ctx.unsupported(m))?,
    };
    // A 4-bit zero point (or output type) saturates to 4 bits; the result is 4-bit too.
    let zp_name = n.proto.input.get(2).filter(|s| !s.is_empty());
    let narrow = match zp_name {
        Some(z) => cx.four_bit.contains(z),
        None => four_bit(code).is_some(),
    };
    if narrow {
        if let Some(out) = n.proto.output.first() {
            cx.four_bit.insert(out.clone());
        }
        let (lo, hi) = if to == DType::I8 {
            (-8.0, 7.0)
        } else {
            (0.0, 15.0)
        };
        let r = shifted_round(cx, x, &scale, zp.as_ref())?;
        return Ok(vec![clamp_cast(cx, &r, (lo, hi), to)?]);
    }
    let r = shifted_round(cx, x, &scale, zp.as_ref())?;
    Ok(vec![saturate(cx, &r, to)?])
}

/// `round(x / scale) + zero_point`, in `x`'s type.
fn shifted_round(cx: &mut Cx, x: &Val, scale: &Val, zp: Option<&Val>) -> R<Val> {
    let ft = cx.dtype(x);
    let q = cx.binary("div", B::Div, x, scale)?;
    let mut r = cx.unary("round", U::Round, &q)?;
    if let Some(z) = zp {
        let zf = cx.cast("cast_zero_point", z, ft)?;
        r = cx.binary("add", B::Add, &r, &zf)?;
    }
    Ok(r)
}

/// Casts to `to`, clamping to its range: kiln's float-to-integer `Cast` saturates (NaN
/// is 0), so the cast alone is the clamp, and an elementwise kernel keeps a
/// quantize-dequantize round trip in vector lanes.
pub(crate) fn saturate(cx: &mut Cx, x: &Val, to: DType) -> R<Val> {
    match to {
        DType::U8 | DType::I8 | DType::U16 | DType::I16 | DType::I32 | DType::U32 => {
            cx.cast("", x, to)
        }
        d => Err(cx.ctx.unsupported(format!("quantization to {d}"))),
    }
}

/// Clamps to `lo..=hi` and casts to `to`.
fn clamp_cast(cx: &mut Cx, x: &Val, (lo, hi): (f64, f64), to: DType) -> R<Val> {
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
