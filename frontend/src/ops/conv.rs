//! Convolution: `Conv` and `ConvTranspose` as the core ops plus a broadcast bias add.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use kiln_ir::{BinaryOp, ConvAttrs, ConvTransposeAttrs, Dim, Op};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("Conv", 1, conv);
    reg.add("ConvTranspose", 1, conv_transpose);
}

/// Explicit `(begin, end)` pads from `pads` or `auto_pad` (which needs constant dims);
/// shared with pooling.
pub(crate) fn conv_pads(
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

/// Kernel, strides and dilations of a conv-like node whose weight has shape `ws`.
fn window(cx: &Cx, n: &N, ws: &[Dim]) -> R<(Vec<usize>, Vec<usize>, Vec<usize>)> {
    let k = ws.len() - 2;
    let kernel: Vec<usize> = match n.ints("kernel_shape") {
        Some(v) => v.iter().map(|&d| d as usize).collect(),
        None => ws[2..]
            .iter()
            .map(|d| d.as_const().map(|c| c as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| cx.err("symbolic kernel"))?,
    };
    let list = |name: &str| -> R<Vec<usize>> {
        match n.ints(name) {
            None => Ok(vec![1; k]),
            Some(v) if v.len() == k && v.iter().all(|&d| d >= 1) => {
                Ok(v.iter().map(|&d| d as usize).collect())
            }
            Some(v) => Err(cx.err(format!("{name} {v:?} do not fit {k} spatial dims"))),
        }
    };
    if kernel.len() != k {
        return Err(cx.err(format!(
            "kernel_shape {kernel:?} does not fit {k} spatial dims"
        )));
    }
    Ok((kernel, list("strides")?, list("dilations")?))
}

/// The core attributes of a `Conv`-like node on `x` and `w`.
pub(crate) fn conv_attrs(cx: &Cx, n: &N, x: &Val, w: &Val) -> R<ConvAttrs> {
    let ws = cx.ty(w).shape;
    let xs = cx.ty(x).shape;
    if ws.len() < 3 || xs.len() != ws.len() {
        return Err(cx.err("expects x and w of equal rank >= 3"));
    }
    let (kernel, strides, dilations) = window(cx, n, &ws)?;
    let pads = conv_pads(cx, n, &xs[2..], &kernel, &strides, &dilations)?;
    Ok(ConvAttrs {
        strides,
        dilations,
        pads,
        groups: n.int("group", 1) as usize,
    })
}

/// Adds a per-output-channel bias `b[m]` to `y[n, m, ...]`.
pub(crate) fn add_bias(cx: &mut Cx, suffix: &str, y: &Val, b: &Val) -> R<Val> {
    let rank = cx.rank(y);
    let mut shape = vec![Dim::from(1i64); rank - 1];
    shape[0] = cx.ty(b).shape.first().cloned().unwrap_or(Dim::from(1i64));
    let b = cx.reshape("bias_shape", b, shape)?;
    cx.binary(suffix, BinaryOp::Add, y, &b)
}

fn conv(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let (x, w) = (n.input(0)?, n.input(1)?);
    let attrs = conv_attrs(cx, n, x, w)?;
    let Some(b) = n.opt(2) else {
        return Ok(vec![cx.emit1("", Op::Conv(attrs), &[x, w])?]);
    };
    let y = cx.emit1("conv", Op::Conv(attrs), &[x, w])?;
    Ok(vec![add_bias(cx, "", &y, b)?])
}

/// `ConvTranspose`: explicit pads, or pads derived from `output_shape` / `auto_pad`.
fn conv_transpose(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let (x, w) = (n.input(0)?, n.input(1)?);
    let ws = cx.ty(w).shape;
    let xs = cx.ty(x).shape;
    if ws.len() < 3 || xs.len() != ws.len() {
        return Err(cx.err("expects x and w of equal rank >= 3"));
    }
    let k = ws.len() - 2;
    let (kernel, strides, dilations) = window(cx, n, &ws)?;
    let mut output_padding = match n.ints("output_padding") {
        None => vec![0; k],
        Some(v) if v.len() == k && v.iter().all(|&d| d >= 0) => {
            v.iter().map(|&d| d as usize).collect()
        }
        Some(v) => return Err(cx.err(format!("output_padding {v:?} does not fit"))),
    };
    let auto = n.string("auto_pad", "NOTSET");
    let target: Option<Vec<i64>> = match (n.ints("output_shape"), auto.as_str()) {
        (Some(s), _) => Some(s[s.len().saturating_sub(k)..].to_vec()),
        (None, "SAME_UPPER" | "SAME_LOWER") => Some(
            (0..k)
                .map(|i| {
                    xs[2 + i]
                        .as_const()
                        .map(|d| d * strides[i] as i64)
                        .ok_or_else(|| cx.ctx.unsupported("auto_pad over a symbolic dim"))
                })
                .collect::<R<_>>()?,
        ),
        _ => None,
    };
    let pads = match target {
        None => match auto.as_str() {
            "VALID" => vec![(0, 0); k],
            _ => conv_pads(cx, n, &xs[2..], &kernel, &strides, &dilations)?,
        },
        Some(t) if t.len() == k => (0..k)
            .map(|i| {
                let d = xs[2 + i]
                    .as_const()
                    .ok_or_else(|| cx.ctx.unsupported("output_shape over a symbolic dim"))?;
                let full = strides[i] as i64 * (d - 1)
                    + output_padding[i] as i64
                    + ((kernel[i] - 1) * dilations[i] + 1) as i64;
                let total = full - t[i];
                if total < 0 {
                    output_padding[i] += (-total) as usize;
                    return Ok((0, 0));
                }
                let total = total as usize;
                Ok(if auto == "SAME_UPPER" {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                })
            })
            .collect::<R<_>>()?,
        Some(t) => return Err(cx.err(format!("output_shape {t:?} does not fit"))),
    };
    let attrs = ConvTransposeAttrs {
        strides,
        dilations,
        pads,
        output_padding,
        groups: n.int("group", 1) as usize,
    };
    let Some(b) = n.opt(2) else {
        return Ok(vec![cx.emit1("", Op::ConvTranspose(attrs), &[x, w])?]);
    };
    let y = cx.emit1("conv_transpose", Op::ConvTranspose(attrs), &[x, w])?;
    Ok(vec![add_bias(cx, "", &y, b)?])
}
