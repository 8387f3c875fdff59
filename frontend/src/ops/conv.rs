//! Convolution: `Conv` as the core `conv` plus a broadcast bias add.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use kiln_ir::{BinaryOp, ConvAttrs, Dim, Op};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("Conv", 1, conv);
}

/// Explicit `(begin, end)` pads from `pads` or `auto_pad` (which needs constant dims).
fn conv_pads(
    cx: &Cx,
    n: &N,
    spatial: &[Dim],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
) -> R<Vec<(usize, usize)>> {
    let k = kernel.len();
    let auto = n.string("auto_pad", "NOTSET");
    match auto.as_str() {
        "NOTSET" => {
            let p = n.ints("pads").unwrap_or_else(|| vec![0; 2 * k]);
            if p.len() != 2 * k || p.iter().any(|&v| v < 0) {
                return Err(cx.err(format!("pads {p:?} do not fit {k} spatial dims")));
            }
            Ok((0..k).map(|i| (p[i] as usize, p[i + k] as usize)).collect())
        }
        "VALID" => Ok(vec![(0, 0); k]),
        "SAME_UPPER" | "SAME_LOWER" => (0..k)
            .map(|i| {
                let d = spatial[i]
                    .as_const()
                    .ok_or_else(|| cx.ctx.unsupported("auto_pad over a symbolic spatial dim"))?
                    as usize;
                let out = d.div_ceil(strides[i]);
                let eff = (kernel[i] - 1) * dilations[i] + 1;
                let total = ((out - 1) * strides[i] + eff).saturating_sub(d);
                let small = total / 2;
                Ok(if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                })
            })
            .collect(),
        a => Err(n.ctx.unsupported(format!("auto_pad `{a}`"))),
    }
}

fn conv(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let (x, w) = (n.input(0)?, n.input(1)?);
    let ws = cx.ty(w).shape;
    let xs = cx.ty(x).shape;
    if ws.len() < 3 || xs.len() != ws.len() {
        return Err(cx.err("expects x and w of equal rank >= 3"));
    }
    let k = ws.len() - 2;
    let kernel: Vec<usize> = match n.ints("kernel_shape") {
        Some(v) => v.iter().map(|&d| d as usize).collect(),
        None => ws[2..]
            .iter()
            .map(|d| d.as_const().map(|c| c as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| cx.err("symbolic kernel"))?,
    };
    let ones = || vec![1usize; k];
    let strides = n
        .ints("strides")
        .map_or_else(ones, |v| v.iter().map(|&d| d as usize).collect());
    let dilations = n
        .ints("dilations")
        .map_or_else(ones, |v| v.iter().map(|&d| d as usize).collect());
    let pads = conv_pads(cx, n, &xs[2..], &kernel, &strides, &dilations)?;
    let attrs = ConvAttrs {
        strides,
        dilations,
        pads,
        groups: n.int("group", 1) as usize,
    };
    let Some(b) = n.opt(2) else {
        return Ok(vec![cx.emit1("", Op::Conv(attrs), &[x, w])?]);
    };
    let y = cx.emit1("conv", Op::Conv(attrs), &[x, w])?;
    let mut shape = vec![Dim::from(1i64); ws.len() - 1];
    shape[0] = ws[0].clone();
    let b = cx.reshape("bias_shape", b, shape)?;
    Ok(vec![cx.binary("", BinaryOp::Add, &y, &b)?])
}
