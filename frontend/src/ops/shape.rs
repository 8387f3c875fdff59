//! Shape ops: `Shape`, `Size`, `Reshape`, `Flatten`, `Squeeze`, `Unsqueeze`, `Expand`,
//! `ConstantOfShape`, `Range`, `Constant`. Shapes are known at import, so `Shape` and
//! `Size` always fold into known dims.

use crate::cx::{Cx, Val, R};
use crate::import::node_tensor;
use crate::node::N;
use crate::registry::Registry;
use kiln_ir::shape_eval::Known;
use kiln_ir::{Dim, Op, Tensor};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("Shape", 1, shape);
    reg.add("Size", 1, |cx, n| {
        let total = product(&cx.ty(n.input(0)?).shape);
        Ok(vec![Val::Known(Known::dims(vec![total], true))])
    });
    reg.add("Reshape", 5, reshape);
    reg.add("Flatten", 1, flatten);
    reg.add("Squeeze", 1, squeeze);
    reg.add("Unsqueeze", 1, unsqueeze);
    reg.add("Expand", 8, expand);
    reg.add("ConstantOfShape", 9, constant_of_shape);
    reg.add("Range", 11, range);
    reg.add("Constant", 1, constant);
}

/// The product of dims.
pub(crate) fn product(dims: &[Dim]) -> Dim {
    dims.iter().fold(Dim::from(1i64), |a, d| a * d.clone())
}

fn shape(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let s = cx.ty(n.input(0)?).shape;
    let r = s.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let (start, end) = (clamp(n.int("start", 0)), clamp(n.int("end", r)));
    let dims = s.get(start..end.max(start)).unwrap_or(&[]).to_vec();
    Ok(vec![Val::Known(Known::dims(dims, false))])
}

/// `numerator / (product of known factors)`, cancelling equal symbolic factors.
pub(crate) fn divide_out(total: &[Dim], factors: &[Dim]) -> Option<Dim> {
    let mut rest: Vec<Dim> = total.to_vec();
    let mut divisor = 1i64;
    for f in factors {
        if let Some(i) = rest.iter().position(|d| d == f) {
            rest.remove(i);
        } else {
            divisor = divisor.checked_mul(f.as_const()?)?;
        }
    }
    if divisor <= 0 {
        return None;
    }
    Some(product(&rest).div_floor(divisor))
}

/// The target of a Reshape: `0` copies the input dim (unless `allow_zero`), `-1` is
/// inferred from the element count.
pub(crate) fn resolve_shape(
    cx: &Cx,
    input: &[Dim],
    target: &[Dim],
    allow_zero: bool,
) -> R<Vec<Dim>> {
    let mut out: Vec<Dim> = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, d) in target.iter().enumerate() {
        match d.as_const() {
            Some(0) if !allow_zero => {
                out.push(input.get(i).cloned().ok_or_else(|| {
                    cx.err(format!("shape[{i}] = 0 copies a dim the input lacks"))
                })?)
            }
            Some(-1) if infer_at.is_none() => {
                infer_at = Some(i);
                out.push(Dim::from(1i64));
            }
            Some(c) if c < 0 => return Err(cx.err(format!("invalid target dim {c}"))),
            _ => out.push(d.clone()),
        }
    }
    if let Some(i) = infer_at {
        let known: Vec<Dim> = out
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, d)| d.clone())
            .collect();
        out[i] = divide_out(input, &known).ok_or_else(|| {
            cx.err(format!(
                "cannot infer -1 in {target:?} from input {input:?}"
            ))
        })?;
    }
    Ok(out)
}

fn reshape(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let target = cx.dims(n.input(1)?, "shape")?;
    let shape = resolve_shape(cx, &cx.ty(x).shape, &target, n.int("allowzero", 0) != 0)?;
    Ok(vec![cx.reshape("", x, shape)?])
}

fn flatten(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let s = cx.ty(x).shape;
    let axis = n.int("axis", 1);
    let axis = if axis == s.len() as i64 {
        s.len()
    } else {
        n.ctx.axis(axis, s.len().max(1))?
    };
    let axis = axis.min(s.len());
    let shape = vec![product(&s[..axis]), product(&s[axis..])];
    Ok(vec![cx.reshape("", x, shape)?])
}

/// Axes from the `axes` attribute (old opsets) or the second input (new ones).
pub(crate) fn axes_operand(cx: &Cx, n: &N, input: usize) -> R<Option<Vec<i64>>> {
    match (n.ints("axes"), n.opt(input)) {
        (Some(a), _) => Ok(Some(a)),
        (None, Some(v)) => Ok(Some(cx.ints(v, "axes")?)),
        (None, None) => Ok(None),
    }
}

fn squeeze(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let s = cx.ty(x).shape;
    let axes: Vec<usize> = match axes_operand(cx, n, 1)? {
        Some(a) => a
            .iter()
            .map(|&a| n.ctx.axis(a, s.len()))
            .collect::<R<_>>()?,
        None => (0..s.len())
            .filter(|&i| s[i].as_const() == Some(1))
            .collect(),
    };
    let shape = s
        .iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, d)| d.clone())
        .collect();
    Ok(vec![cx.reshape("", x, shape)?])
}

fn unsqueeze(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let s = cx.ty(x).shape;
    let axes = axes_operand(cx, n, 1)?.ok_or_else(|| cx.err("axes are required"))?;
    let rank = s.len() + axes.len();
    let axes: Vec<usize> = axes
        .iter()
        .map(|&a| n.ctx.axis(a, rank))
        .collect::<R<_>>()?;
    let mut src = s.into_iter();
    let shape = (0..rank)
        .map(|i| {
            if axes.contains(&i) {
                Some(Dim::from(1i64))
            } else {
                src.next()
            }
        })
        .collect::<Option<Vec<_>>>();
    let shape = shape.ok_or_else(|| cx.err("repeated axes"))?;
    Ok(vec![cx.reshape("", x, shape)?])
}

/// Numpy broadcast of two shapes (a dim of 1 yields to the other).
pub(crate) fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Vec<Dim> {
    let r = a.len().max(b.len());
    let one = Dim::from(1i64);
    (0..r)
        .map(|i| {
            let x = if i + a.len() >= r {
                &a[i + a.len() - r]
            } else {
                &one
            };
            let y = if i + b.len() >= r {
                &b[i + b.len() - r]
            } else {
                &one
            };
            if *x == one {
                y.clone()
            } else {
                x.clone()
            }
        })
        .collect()
}

fn expand(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let target = cx.dims(n.input(1)?, "shape")?;
    let shape = broadcast_shapes(&cx.ty(x).shape, &target);
    if shape == cx.ty(x).shape {
        return Ok(vec![x.clone()]);
    }
    Ok(vec![cx.emit1("", Op::Expand { shape }, &[x])?])
}

fn constant_of_shape(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let shape = cx.dims(n.input(0)?, "shape")?;
    let value = match n.tensor("value") {
        Some(t) => node_tensor(cx, t)?,
        None => Tensor::scalar(0f32),
    };
    let value = value
        .reshape(&[])
        .map_err(|e| cx.err(format!("value: {e}")))?;
    fill(cx, value, shape)
}

/// A tensor of `shape` filled with the scalar `value`: a constant when the shape is.
pub(crate) fn fill(cx: &mut Cx, value: Tensor, shape: Vec<Dim>) -> R<Vec<Val>> {
    let fixed: Option<Vec<usize>> = shape
        .iter()
        .map(|d| d.as_const().and_then(|c| usize::try_from(c).ok()))
        .collect();
    if let Some(s) = fixed {
        let t = Tensor::full(value.dtype(), &s, value.to_f64_vec()[0])
            .map_err(|e| cx.err(e.to_string()))?;
        return Ok(vec![Val::tensor(t)]);
    }
    Ok(vec![cx.emit1(
        "",
        Op::Expand { shape },
        &[&Val::tensor(value)],
    )?])
}

fn range(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let (start, limit, delta) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let dtype = cx.dtype(start);
    let len = if dtype.is_float() {
        let s = cx.known_tensor(start, "start")?.to_f64_vec();
        let s = cx.first(s, "start")?;
        let l = cx.known_tensor(limit, "limit")?.to_f64_vec();
        let l = cx.first(l, "limit")?;
        let d = cx.known_tensor(delta, "delta")?.to_f64_vec();
        let d = cx.first(d, "delta")?;
        Dim::from(float_range_len(s, l, d).map_err(|m| cx.err(m))?)
    } else {
        let s = cx.dims(start, "start")?;
        let s = cx.first(s, "start")?;
        let l = cx.dims(limit, "limit")?;
        let l = cx.first(l, "limit")?;
        let d = cx.ints(delta, "delta")?;
        let d = cx.first(d, "delta")?;
        let span = match d {
            0 => return Err(cx.err("delta is zero")),
            d if d > 0 => l.checked_sub(&s),
            _ => s.checked_sub(&l),
        };
        let span = span.ok_or_else(|| cx.err("the range's length overflows i64"))?;
        span.div_ceil(
            d.checked_abs()
                .ok_or_else(|| cx.err("delta overflows i64"))?,
        )
    };
    let len = match len.as_const() {
        Some(c) if c < 0 => Dim::from(0i64),
        _ => len,
    };
    Ok(vec![cx.emit1("", Op::Range { len }, &[start, delta])?])
}

/// The element count of a float `Range`: `max(ceil((limit - start) / delta), 0)`, refused
/// for NaN or infinite operands and counts past i64 (which `as` would quietly saturate).
fn float_range_len(start: f64, limit: f64, delta: f64) -> Result<i64, String> {
    for (name, v) in [("start", start), ("limit", limit), ("delta", delta)] {
        if !v.is_finite() {
            return Err(format!(
                "{name} is {v}; a range needs finite bounds and step"
            ));
        }
    }
    if delta == 0.0 {
        return Err("delta is zero".into());
    }
    let len = ((limit - start) / delta).ceil().max(0.0);
    if len >= i64::MAX as f64 {
        return Err(format!(
            "the range has {len:e} elements, more than i64 can count"
        ));
    }
    Ok(len as i64)
}

fn constant(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let t = if let Some(t) = n.tensor("value") {
        node_tensor(cx, t)?
    } else if let Some(a) = n.attr("value_float") {
        Tensor::scalar(a.f.unwrap_or(0.0))
    } else if let Some(a) = n.attr("value_int") {
        Tensor::scalar(a.i.unwrap_or(0))
    } else if let Some(v) = n.floats("value_floats") {
        Tensor::from_vec(v.clone(), &[v.len()]).map_err(|e| cx.err(e.to_string()))?
    } else if let Some(v) = n.ints("value_ints") {
        Tensor::from_vec(v.clone(), &[v.len()]).map_err(|e| cx.err(e.to_string()))?
    } else {
        return Err(n.ctx.unsupported("constant kind (sparse or string)"));
    };
    Ok(vec![Val::tensor(t)])
}
