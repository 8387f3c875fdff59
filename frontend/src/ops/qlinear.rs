//! Integer and quantized linear ops (`ConvInteger`, `QLinearConv`, `QLinearMatMul`): operands
//! cast to i32 less their zero points, the integer conv or matmul, then (for `QLinear*`)
//! requantized as `saturate(round_half_even(acc · (sa · sb / sy)) + zy)`.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::ops::conv::{add_bias, conv_attrs};
use crate::ops::linalg::matmul;
use crate::ops::quant::saturate;
use crate::registry::Registry;
use kiln_ir::{BinaryOp as B, DType, Dim, Op, UnaryOp as U};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("ConvInteger", 10, conv_integer);
    reg.add("QLinearConv", 10, qlinear_conv);
    reg.add("QLinearMatMul", 10, qlinear_matmul);
}

/// `x` as i32 less its zero point `zp`; a per-channel `zp[m]` applies along axis `axis`.
fn centered(cx: &mut Cx, name: &str, x: &Val, zp: Option<&Val>, axis: usize) -> R<Val> {
    let xi = cx.cast(&format!("cast_{name}"), x, DType::I32)?;
    let Some(z) = zp else {
        return Ok(xi);
    };
    let z = cx.cast(&format!("cast_{name}_zero_point"), z, DType::I32)?;
    let zs = cx.ty(&z).shape;
    let rank = cx.rank(&xi);
    let z = if zs.len() == 1 && zs[0].as_const() != Some(1) && axis + 1 < rank {
        let mut shape = vec![Dim::from(1i64); rank - axis];
        shape[0] = zs[0].clone();
        cx.reshape(&format!("{name}_zero_point"), &z, shape)?
    } else {
        z
    };
    cx.binary(&format!("sub_{name}"), B::Sub, &xi, &z)
}

/// The integer convolution of the centered operands.
fn int_conv(cx: &mut Cx, n: &N, x: (&Val, Option<&Val>), w: (&Val, Option<&Val>)) -> R<Val> {
    let attrs = conv_attrs(cx, n, x.0, w.0)?;
    let xi = centered(cx, "x", x.0, x.1, 1)?;
    let wi = centered(cx, "w", w.0, w.1, 0)?;
    cx.emit1("conv", Op::Conv(attrs), &[&xi, &wi])
}

fn conv_integer(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let (x, w) = (n.input(0)?, n.input(1)?);
    Ok(vec![int_conv(cx, n, (x, n.opt(2)), (w, n.opt(3)))?])
}

/// `saturate(round(acc · (sa · sb / sy)) + zy)` into `zy`'s type (or `fallback`); the scale
/// ratio is formed in the scales' type, the rest in f64. A per-channel `sb[m]` applies along
/// axis `axis` of `acc`.
fn requantize(
    cx: &mut Cx,
    acc: &Val,
    scales: (&Val, &Val, &Val),
    zy: Option<&Val>,
    axis: usize,
    fallback: DType,
) -> R<Val> {
    let (sa, sb, sy) = scales;
    let rank = cx.rank(acc);
    let sbs = cx.ty(sb).shape;
    let sb = if sbs.len() == 1 && sbs[0].as_const() != Some(1) && axis + 1 < rank {
        let mut shape = vec![Dim::from(1i64); rank - axis];
        shape[0] = sbs[0].clone();
        cx.reshape("b_scale", sb, shape)?
    } else {
        sb.clone()
    };
    let st = cx.dtype(sa);
    let sb = cx.cast("cast_b_scale", &sb, st)?;
    let sy = cx.cast("cast_y_scale", sy, st)?;
    let s = cx.binary("scale_ab", B::Mul, sa, &sb)?;
    let s = cx.binary("scale", B::Div, &s, &sy)?;
    let s = cx.cast("scale_f64", &s, DType::F64)?;
    let accf = cx.cast("acc_f64", acc, DType::F64)?;
    let mut y = cx.binary("rescale", B::Mul, &accf, &s)?;
    let to = match zy {
        Some(z) => {
            let zf = cx.cast("cast_y_zero_point", z, DType::F64)?;
            y = cx.binary("add_zero_point", B::Add, &y, &zf)?;
            cx.dtype(z)
        }
        None => fallback,
    };
    let r = cx.unary("round", U::Round, &y)?;
    saturate(cx, &r, to)
}

fn qlinear_conv(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let (x, w) = (n.input(0)?, n.input(3)?);
    let mut acc = int_conv(cx, n, (x, n.opt(2)), (w, n.opt(5)))?;
    if let Some(b) = n.opt(8) {
        let b = cx.cast("cast_bias", b, DType::I32)?;
        acc = add_bias(cx, "bias", &acc, &b)?;
    }
    let scales = (n.input(1)?, n.input(4)?, n.input(6)?);
    let fallback = cx.dtype(x);
    Ok(vec![requantize(cx, &acc, scales, n.opt(7), 1, fallback)?])
}

fn qlinear_matmul(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let (a, b) = (n.input(0)?, n.input(3)?);
    let ra = cx.rank(a);
    let rb = cx.rank(b);
    let ai = centered(cx, "a", a, n.opt(2), ra.saturating_sub(2))?;
    let bi = centered(cx, "b", b, n.opt(5), rb.saturating_sub(1))?;
    let acc = matmul(cx, "matmul", &ai, &bi)?;
    let scales = (n.input(1)?, n.input(4)?, n.input(6)?);
    let rank = cx.rank(&acc);
    let fallback = cx.dtype(a);
    Ok(vec![requantize(
        cx,
        &acc,
        scales,
        n.opt(7),
        rank - 1,
        fallback,
    )?])
}
