//! Data movement: transpose, concat, slice, split, pad, tile, gathers and scatters,
//! depth/space rearrangements, triangles, cumulative sums, top-k, one-hot, nonzero.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use kiln_ir::{Dim, Op, PadMode, ScanKind, ScatterReduction, SliceAxis};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("Transpose", 1, transpose);
    reg.add("Concat", 4, concat);
    reg.add_range("Slice", 1, Some(9), slice);
    reg.add("Slice", 10, slice);
    reg.add("Split", 2, split);
    reg.add("Pad", 2, pad);
    reg.add("Tile", 6, tile);
    reg.add("Gather", 1, |cx, n| {
        let axis = n.ctx.axis(n.int("axis", 0), cx.rank(n.input(0)?))?;
        Ok(vec![cx.emit1(
            "",
            Op::Gather { axis },
            &[n.input(0)?, n.input(1)?],
        )?])
    });
    reg.add("GatherElements", 11, |cx, n| {
        let axis = n.ctx.axis(n.int("axis", 0), cx.rank(n.input(0)?))?;
        Ok(vec![cx.emit1(
            "",
            Op::GatherElements { axis },
            &[n.input(0)?, n.input(1)?],
        )?])
    });
    reg.add("GatherND", 11, |cx, n| {
        let batch_dims = n.int("batch_dims", 0) as usize;
        Ok(vec![cx.emit1(
            "",
            Op::GatherNd { batch_dims },
            &[n.input(0)?, n.input(1)?],
        )?])
    });
    reg.add_range("Scatter", 9, Some(10), scatter_elements);
    reg.add("ScatterElements", 11, scatter_elements);
    reg.add("ScatterND", 11, |cx, n| {
        let reduction = reduction(n)?;
        Ok(vec![cx.emit1(
            "",
            Op::ScatterNd { reduction },
            &[n.input(0)?, n.input(1)?, n.input(2)?],
        )?])
    });
    reg.add("DepthToSpace", 1, depth_to_space);
    reg.add("SpaceToDepth", 1, space_to_depth);
    reg.add("Trilu", 14, |cx, n| {
        let k = match n.opt(1) {
            Some(v) => {
                let k = cx.ints(v, "k")?;
                cx.first(k, "k")?
            }
            None => 0,
        };
        Ok(vec![cx.emit1(
            "",
            Op::Trilu {
                upper: n.int("upper", 1) != 0,
                k,
            },
            &[n.input(0)?],
        )?])
    });
    reg.add("EyeLike", 9, eye_like);
    reg.add("CumSum", 11, |cx, n| cumulative(cx, n, ScanKind::Sum));
    reg.add("CumProd", 26, |cx, n| cumulative(cx, n, ScanKind::Prod));
    reg.add("TopK", 1, top_k);
    reg.add("OneHot", 9, one_hot);
    reg.add("NonZero", 9, |cx, n| {
        let count = cx.fresh_symbol("nonzero");
        Ok(vec![cx.emit1("", Op::NonZero { count }, &[n.input(0)?])?])
    });
}

fn transpose(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let r = cx.rank(x);
    let perm: Vec<usize> = match n.ints("perm") {
        Some(p) => p.iter().map(|&a| n.ctx.axis(a, r)).collect::<R<_>>()?,
        None => (0..r).rev().collect(),
    };
    Ok(vec![cx.emit1("", Op::Transpose { perm }, &[x])?])
}

fn concat(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let xs = n.all_inputs();
    let first = xs
        .first()
        .ok_or_else(|| cx.err("needs at least one input"))?;
    let axis = n.ctx.axis(n.req_int("axis")?, cx.rank(first))?;
    Ok(vec![cx.emit1("", Op::Concat { axis }, &xs)?])
}

/// A slice bound normalized against `dim`: negative counts from the end, then clamped to
/// `[lo, dim + hi]`. Symbolic bounds, and small constant bounds on symbolic dims, are
/// assumed to be in range (exporters slice `[:seq]`, not past the end).
fn bound(v: &Dim, dim: &Dim, lo: i64, hi: i64) -> Dim {
    let Some(v) = v.as_const() else {
        return v.clone();
    };
    match dim.as_const() {
        Some(d) => Dim::from((if v < 0 { v + d } else { v }).clamp(lo, d + hi)),
        None if v >= i32::MAX as i64 => dim.clone() + Dim::from(hi),
        None if v <= i32::MIN as i64 => Dim::from(lo),
        None if v < 0 => dim.clone() + Dim::from(v),
        None => Dim::from(v),
    }
}

/// The `SliceAxis` for ONNX `start:end:step` on a dim.
pub(crate) fn slice_axis(axis: usize, dim: &Dim, start: &Dim, end: &Dim, step: i64) -> SliceAxis {
    let (lo, hi) = if step > 0 { (0, 0) } else { (-1, -1) };
    let s = bound(start, dim, 0, hi);
    let e = bound(end, dim, lo, hi);
    let e = match (s.as_const(), e.as_const()) {
        (Some(a), Some(b)) if step > 0 => Dim::from(a.max(b)),
        (Some(a), Some(b)) => Dim::from(b.min(a)),
        _ => e,
    };
    SliceAxis {
        axis,
        start: s,
        end: e,
        step,
    }
}

fn slice(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let shape = cx.ty(x).shape;
    let get = |attr: &str, i: usize| -> R<Option<Vec<Dim>>> {
        match (n.ints(attr), n.opt(i)) {
            (Some(a), _) => Ok(Some(a.into_iter().map(Dim::from).collect())),
            (None, Some(v)) => Ok(Some(cx.dims(v, attr)?)),
            (None, None) => Ok(None),
        }
    };
    let starts = get("starts", 1)?.ok_or_else(|| cx.err("starts are required"))?;
    let ends = get("ends", 2)?.ok_or_else(|| cx.err("ends are required"))?;
    let axes = match get("axes", 3)? {
        Some(a) => a
            .iter()
            .map(|d| d.as_const().ok_or_else(|| cx.err("symbolic axes")))
            .collect::<R<Vec<_>>>()?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match get("steps", 4)? {
        Some(a) => a
            .iter()
            .map(|d| d.as_const().ok_or_else(|| cx.err("symbolic steps")))
            .collect::<R<Vec<_>>>()?,
        None => vec![1; starts.len()],
    };
    if [ends.len(), axes.len(), steps.len()]
        .iter()
        .any(|&l| l != starts.len())
    {
        return Err(cx.err("starts, ends, axes and steps differ in length"));
    }
    let mut out = Vec::new();
    for i in 0..starts.len() {
        let axis = n.ctx.axis(axes[i], shape.len())?;
        if steps[i] == 0 {
            return Err(cx.err("step is zero"));
        }
        out.push(slice_axis(
            axis,
            &shape[axis],
            &starts[i],
            &ends[i],
            steps[i],
        ));
    }
    Ok(vec![cx.emit1("", Op::Slice { axes: out }, &[x])?])
}

fn split(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let shape = cx.ty(x).shape;
    let axis = n.ctx.axis(n.int("axis", 0), shape.len())?;
    let dim = shape[axis].clone();
    let sizes: Vec<Dim> = match (n.ints("split"), n.opt(1)) {
        (Some(s), _) => s.into_iter().map(Dim::from).collect(),
        (None, Some(v)) => cx.dims(v, "split")?,
        (None, None) => {
            let parts = n.int("num_outputs", n.n_outputs() as i64);
            if parts != n.n_outputs() as i64 || parts < 1 {
                return Err(cx.err(format!(
                    "num_outputs is {parts} but the node has {} outputs",
                    n.n_outputs()
                )));
            }
            let each = dim.div_ceil(parts);
            let mut v = vec![each.clone(); parts as usize - 1];
            v.push(dim.clone() - each * Dim::from(parts - 1));
            v
        }
    };
    let mut outs = Vec::new();
    let mut at = Dim::from(0i64);
    for (i, s) in sizes.iter().enumerate() {
        let end = at.clone() + s.clone();
        let ax = SliceAxis {
            axis,
            start: at.clone(),
            end: end.clone(),
            step: 1,
        };
        let suffix = if i == 0 {
            String::new()
        } else {
            format!("part{i}")
        };
        outs.push(cx.emit1(&suffix, Op::Slice { axes: vec![ax] }, &[x])?);
        at = end;
    }
    Ok(outs)
}

fn pad(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let rank = cx.rank(x);
    let amounts = match n.ints("pads") {
        Some(p) => p,
        None => cx.ints(n.input(1)?, "pads")?,
    };
    let axes: Vec<usize> = match n.opt(3) {
        Some(a) => cx
            .ints(a, "axes")?
            .into_iter()
            .map(|a| n.ctx.axis(a, rank))
            .collect::<R<_>>()?,
        None => (0..rank).collect(),
    };
    if amounts.len() != 2 * axes.len() {
        return Err(cx.err(format!("{} pads for {} axes", amounts.len(), axes.len())));
    }
    let mut pads = vec![(0i64, 0i64); rank];
    for (i, &a) in axes.iter().enumerate() {
        pads[a] = (amounts[i], amounts[i + axes.len()]);
    }
    let mode = match n.string("mode", "constant").as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        m => return Err(n.ctx.unsupported(format!("mode `{m}`"))),
    };
    let dtype = cx.dtype(x);
    let fill = match n.opt(2) {
        Some(v) => cx.reshape("value", v, vec![])?,
        None => cx.scalar(dtype, n.float("value", 0.0) as f64),
    };
    Ok(vec![cx.emit1("", Op::Pad { pads, mode }, &[x, &fill])?])
}

fn tile(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let shape = cx.ty(x).shape;
    let reps = cx.ints(n.input(1)?, "repeats")?;
    if reps.len() != shape.len() {
        return Err(cx.err("repeats length differs from the input rank"));
    }
    let one = Dim::from(1i64);
    let inter: Vec<Dim> = shape
        .iter()
        .flat_map(|d| [one.clone(), d.clone()])
        .collect();
    let big: Vec<Dim> = shape
        .iter()
        .zip(&reps)
        .flat_map(|(d, &r)| [Dim::from(r), d.clone()])
        .collect();
    let out: Vec<Dim> = shape
        .iter()
        .zip(&reps)
        .map(|(d, &r)| d.checked_mul(&Dim::from(r)))
        .collect::<Option<_>>()
        .ok_or_else(|| cx.err(format!("the output shape overflows i64 (repeats {reps:?})")))?;
    let a = cx.reshape("interleave", x, inter)?;
    let b = cx.emit1("expand", Op::Expand { shape: big }, &[&a])?;
    Ok(vec![cx.reshape("", &b, out)?])
}

fn scatter_elements(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let axis = n.ctx.axis(n.int("axis", 0), cx.rank(n.input(0)?))?;
    let reduction = reduction(n)?;
    Ok(vec![cx.emit1(
        "",
        Op::ScatterElements { axis, reduction },
        &[n.input(0)?, n.input(1)?, n.input(2)?],
    )?])
}

fn reduction(n: &N) -> R<ScatterReduction> {
    Ok(match n.string("reduction", "none").as_str() {
        "none" => ScatterReduction::None,
        "add" => ScatterReduction::Add,
        "mul" => ScatterReduction::Mul,
        "max" => ScatterReduction::Max,
        "min" => ScatterReduction::Min,
        r => return Err(n.ctx.unsupported(format!("reduction `{r}`"))),
    })
}

fn nchw(cx: &Cx, n: &N, x: &Val) -> R<[Dim; 4]> {
    let s = cx.ty(x).shape;
    let [a, b, c, d] = s.as_slice() else {
        return Err(cx.err("expects a rank-4 input"));
    };
    let _ = n;
    Ok([a.clone(), b.clone(), c.clone(), d.clone()])
}

/// DepthToSpace's and SpaceToDepth's block size: positive, and its square an i64.
fn blocksize(cx: &Cx, n: &N) -> R<i64> {
    let bs = n.req_int("blocksize")?;
    match bs.checked_mul(bs) {
        Some(_) if bs >= 1 => Ok(bs),
        _ => Err(cx.err(format!("blocksize {bs} is not a positive size"))),
    }
}

fn depth_to_space(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let [b, c, h, w] = nchw(cx, n, x)?;
    let bs = blocksize(cx, n)?;
    let k = Dim::from(bs);
    let cc = c.div_floor(bs * bs);
    let (shape, perm) = if n.string("mode", "DCR") == "CRD" {
        (
            vec![
                b.clone(),
                cc.clone(),
                k.clone(),
                k.clone(),
                h.clone(),
                w.clone(),
            ],
            vec![0, 1, 4, 2, 5, 3],
        )
    } else {
        (
            vec![
                b.clone(),
                k.clone(),
                k.clone(),
                cc.clone(),
                h.clone(),
                w.clone(),
            ],
            vec![0, 3, 4, 1, 5, 2],
        )
    };
    let a = cx.reshape("split", x, shape)?;
    let t = cx.emit1("transpose", Op::Transpose { perm }, &[&a])?;
    Ok(vec![cx.reshape(
        "",
        &t,
        vec![b, cc, h * k.clone(), w * k],
    )?])
}

fn space_to_depth(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let [b, c, h, w] = nchw(cx, n, x)?;
    let bs = blocksize(cx, n)?;
    let k = Dim::from(bs);
    let (hh, ww) = (h.div_floor(bs), w.div_floor(bs));
    let a = cx.reshape(
        "split",
        x,
        vec![
            b.clone(),
            c.clone(),
            hh.clone(),
            k.clone(),
            ww.clone(),
            k.clone(),
        ],
    )?;
    // DCR (the default) puts the block offset before the channel, CRD after it.
    let perm = if n.string("mode", "DCR") == "CRD" {
        vec![0, 1, 3, 5, 2, 4]
    } else {
        vec![0, 3, 5, 1, 2, 4]
    };
    let t = cx.emit1("transpose", Op::Transpose { perm }, &[&a])?;
    Ok(vec![cx.reshape(
        "",
        &t,
        vec![b, c * k.clone() * k, hh, ww],
    )?])
}

fn cumulative(cx: &mut Cx, n: &N, kind: ScanKind) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let axis = cx.ints(n.input(1)?, "axis")?;
    let axis = n.ctx.axis(cx.first(axis, "axis")?, cx.rank(x))?;
    let op = Op::Scan {
        kind,
        axis,
        exclusive: n.int("exclusive", 0) != 0,
        reverse: n.int("reverse", 0) != 0,
    };
    Ok(vec![cx.emit1("", op, &[x])?])
}

fn top_k(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let axis = n.ctx.axis(n.int("axis", -1), cx.rank(x))?;
    let k = match n.opt(1) {
        Some(v) => {
            let k = cx.ints(v, "k")?;
            cx.first(k, "k")?
        }
        None => n.req_int("k")?,
    };
    let k = usize::try_from(k).map_err(|_| cx.err(format!("k = {k} is negative")))?;
    let op = Op::TopK {
        axis,
        k,
        largest: n.int("largest", 1) != 0,
        sorted: n.int("sorted", 1) != 0,
    };
    cx.emit("", op, &[x])
}

fn one_hot(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let idx = n.input(0)?;
    let depth = cx.known_tensor(n.input(1)?, "depth")?.to_f64_vec();
    let depth = cx.first(depth, "depth")? as i64;
    let depth = usize::try_from(depth).map_err(|_| cx.err("depth is negative"))?;
    let axis = n.ctx.axis(n.int("axis", -1), cx.rank(idx) + 1)?;
    let values = cx.reshape("values", n.input(2)?, vec![Dim::from(2i64)])?;
    Ok(vec![cx.emit1(
        "",
        Op::OneHot { axis, depth },
        &[idx, &values],
    )?])
}

/// Ones on diagonal `k` of a rank-2 tensor shaped like the input: a full tensor of ones
/// cut to one diagonal by an upper and a lower `trilu`.
fn eye_like(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let ty = cx.ty(x);
    if ty.rank() != 2 {
        return Err(n.ctx.err(format!("input has rank {}, not 2", ty.rank())));
    }
    let to = match n.attr("dtype").and_then(|a| a.i) {
        Some(code) => crate::tensor::dtype_of(code as i32).map_err(|m| n.ctx.unsupported(m))?,
        None => ty.dtype,
    };
    let k = n.int("k", 0);
    let one = cx.scalar(to, 1.0);
    let ones = cx.emit1("ones", Op::Expand { shape: ty.shape }, &[&one])?;
    let up = cx.emit1("upper", Op::Trilu { upper: true, k }, &[&ones])?;
    Ok(vec![cx.emit1("", Op::Trilu { upper: false, k }, &[&up])?])
}
