//! Pooling: `MaxPool`, `AveragePool`, `LpPool` as the core `pool`, and the global pools as
//! reductions over the spatial axes.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::ops::conv::conv_pads;
use crate::registry::Registry;
use kiln_ir::{Op, PoolAttrs, PoolKind, ReduceKind};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("MaxPool", 1, |cx, n| {
        if n.wants_output(1) {
            return Err(n.ctx.unsupported("the Indices output of MaxPool"));
        }
        if n.int("storage_order", 0) != 0 {
            return Err(n.ctx.unsupported("storage_order = 1"));
        }
        pool(cx, n, PoolKind::Max)
    });
    reg.add("AveragePool", 1, |cx, n| {
        let count_include_pad = n.int("count_include_pad", 0) != 0;
        pool(cx, n, PoolKind::Avg { count_include_pad })
    });
    reg.add("LpPool", 1, |cx, n| {
        let p = n.int("p", 2);
        if p < 1 {
            return Err(n.ctx.err(format!("p = {p} must be positive")));
        }
        pool(cx, n, PoolKind::Lp { p: p as u32 })
    });
    reg.add("GlobalAveragePool", 1, |cx, n| {
        global(cx, n, ReduceKind::Mean)
    });
    reg.add("GlobalMaxPool", 1, |cx, n| global(cx, n, ReduceKind::Max));
    reg.add("GlobalLpPool", 2, |cx, n| match n.int("p", 2) {
        1 => global(cx, n, ReduceKind::L1),
        2 => global(cx, n, ReduceKind::L2),
        p => Err(n.ctx.unsupported(format!("GlobalLpPool with p = {p}"))),
    });
}

/// Reads a per-spatial-dim list attribute, defaulting to ones.
fn per_dim(n: &N, name: &str, k: usize) -> R<Vec<usize>> {
    match n.ints(name) {
        None => Ok(vec![1; k]),
        Some(v) if v.len() == k && v.iter().all(|&d| d >= 1) => {
            Ok(v.iter().map(|&d| d as usize).collect())
        }
        Some(v) => Err(n
            .ctx
            .err(format!("{name} {v:?} do not fit {k} spatial dims"))),
    }
}

fn pool(cx: &mut Cx, n: &N, kind: PoolKind) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let xs = cx.ty(x).shape;
    if xs.len() < 3 {
        return Err(cx.err("expects an input of rank >= 3"));
    }
    let kernel = n
        .ints("kernel_shape")
        .ok_or_else(|| cx.err("attribute `kernel_shape` is required"))?;
    let k = xs.len() - 2;
    if kernel.len() != k || kernel.iter().any(|&d| d < 1) {
        return Err(cx.err(format!(
            "kernel_shape {kernel:?} does not fit {k} spatial dims"
        )));
    }
    let kernel: Vec<usize> = kernel.iter().map(|&d| d as usize).collect();
    let strides = per_dim(n, "strides", k)?;
    let dilations = per_dim(n, "dilations", k)?;
    let pads = conv_pads(cx, n, &xs[2..], &kernel, &strides, &dilations)?;
    let attrs = PoolAttrs {
        kind,
        kernel,
        strides,
        dilations,
        pads,
        ceil_mode: n.int("ceil_mode", 0) != 0,
    };
    Ok(vec![cx.emit1("", Op::Pool(attrs), &[x])?])
}

/// A reduction over every axis after the channel axis, keeping them as size 1.
fn global(cx: &mut Cx, n: &N, kind: ReduceKind) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let rank = cx.rank(x);
    if rank < 2 {
        return Err(cx.err("expects an input of rank >= 2"));
    }
    let op = Op::Reduce {
        kind,
        axes: (2..rank).collect(),
        keep_dims: true,
    };
    Ok(vec![cx.emit1("", op, &[x])?])
}
