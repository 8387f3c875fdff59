//! Inference for ops that move data without arithmetic on it: shapes, reductions, slices.

use super::{
    broadcast_shapes, check_axis, expect_dtype, is_numeric, join, non_negative, one, same_dtype,
    unify_or, Res,
};
use crate::{DType, Dim, SliceAxis, TensorType};

/// `i64[n]`, or `i64[]` for a scalar.
pub(super) fn shape_value(dims: &[Dim], scalar: bool) -> Res<Vec<TensorType>> {
    if scalar {
        if dims.len() != 1 {
            return Err(format!(
                "a scalar shape value needs 1 dim, got {}",
                dims.len()
            ));
        }
        return one(TensorType::new(DType::I64, vec![]));
    }
    one(TensorType::fixed(DType::I64, &[dims.len()]))
}

/// Fails unless `axes` are strictly increasing and below `rank`.
fn check_axes_sorted(axes: &[usize], rank: usize) -> Res<()> {
    for w in axes.windows(2) {
        if w[0] >= w[1] {
            return Err(format!("axes must be sorted and unique, got {axes:?}"));
        }
    }
    axes.iter().try_for_each(|&a| check_axis(a, rank))
}

/// Drops the reduced axes, or keeps them as 1.
pub(super) fn reduce(x: &TensorType, axes: &[usize], keep_dims: bool) -> Res<Vec<TensorType>> {
    check_axes_sorted(axes, x.rank())?;
    let mut shape = Vec::with_capacity(x.rank());
    for (i, d) in x.shape.iter().enumerate() {
        if !axes.contains(&i) {
            shape.push(d.clone());
        } else if keep_dims {
            shape.push(Dim::from(1i64));
        }
    }
    one(TensorType::new(x.dtype, shape))
}

/// Like a one-axis reduction, with `i64` output.
pub(super) fn arg_reduce(x: &TensorType, axis: usize, keep_dims: bool) -> Res<Vec<TensorType>> {
    let t = reduce(x, &[axis], keep_dims)?.remove(0);
    one(TensorType::new(DType::I64, t.shape))
}

/// The product of the dims, or an error when it overflows i64.
pub(crate) fn numel(dims: &[Dim]) -> Res<Dim> {
    (dims.iter())
        .try_fold(Dim::from(1i64), |acc, d| acc.checked_mul(d))
        .ok_or_else(|| {
            format!(
                "the element count of [{}] overflows i64 (or has over {} symbolic terms)",
                join(dims),
                Dim::MAX_TERMS
            )
        })
}

/// The new shape; element counts must agree when that can be decided.
pub(super) fn reshape(x: &TensorType, shape: &[Dim]) -> Res<Vec<TensorType>> {
    for d in shape {
        non_negative(d.clone(), "a target dim")?;
    }
    let (from, to) = (numel(&x.shape)?, numel(shape)?);
    if from != to && from.is_const() && to.is_const() {
        return Err(format!(
            "element count differs ({from} vs {to}) reshaping [{}] to [{}]",
            join(&x.shape),
            join(shape)
        ));
    }
    one(TensorType::new(x.dtype, shape.to_vec()))
}

/// Output axis `i` is input axis `perm[i]`.
pub(super) fn transpose(x: &TensorType, perm: &[usize]) -> Res<Vec<TensorType>> {
    let mut seen = vec![false; x.rank()];
    if perm.len() != x.rank() {
        return Err(format!(
            "permutation {perm:?} has {} entries for rank {}",
            perm.len(),
            x.rank()
        ));
    }
    for &p in perm {
        if p >= x.rank() || std::mem::replace(&mut seen[p], true) {
            return Err(format!("{perm:?} is not a permutation of 0..{}", x.rank()));
        }
    }
    one(TensorType::new(
        x.dtype,
        perm.iter().map(|&p| x.shape[p].clone()).collect(),
    ))
}

/// Fails if `a <= b` is certainly false (their difference is a positive constant).
fn check_le(a: &Dim, b: &Dim, s: &SliceAxis) -> Res<()> {
    match (a.clone() - b.clone()).as_const() {
        Some(c) if c > 0 => Err(format!(
            "slice bounds out of range on axis {} ({a} > {b}; start {}, end {}, step {})",
            s.axis, s.start, s.end, s.step
        )),
        _ => Ok(()),
    }
}

/// The length of one sliced axis of size `dim`.
fn slice_len(s: &SliceAxis, dim: &Dim) -> Res<Dim> {
    let (start, end) = (&s.start, &s.end);
    if s.step > 0 {
        check_le(&Dim::from(0i64), start, s)?;
        check_le(start, end, s)?;
        check_le(end, dim, s)?;
        Ok((end.clone() - start.clone()).div_ceil(s.step))
    } else if s.step < 0 {
        check_le(&Dim::from(-1i64), end, s)?;
        check_le(end, start, s)?;
        check_le(start, &(dim.clone() - Dim::from(1i64)), s)?;
        Ok((start.clone() - end.clone()).div_ceil(-s.step))
    } else {
        Err(format!("slice step on axis {} is zero", s.axis))
    }
}

/// Each sliced axis shrinks to its slice length.
pub(super) fn slice(x: &TensorType, axes: &[SliceAxis]) -> Res<Vec<TensorType>> {
    let mut shape = x.shape.clone();
    let mut seen = vec![false; x.rank()];
    for s in axes {
        check_axis(s.axis, x.rank())?;
        if std::mem::replace(&mut seen[s.axis], true) {
            return Err(format!("axis {} sliced twice", s.axis));
        }
        shape[s.axis] = slice_len(s, &x.shape[s.axis])?;
    }
    one(TensorType::new(x.dtype, shape))
}

/// Same dtype and rank; other dims agree; the axis sums.
pub(super) fn concat(xs: &[&TensorType], axis: usize) -> Res<Vec<TensorType>> {
    let first = xs[0];
    check_axis(axis, first.rank())?;
    let mut shape = first.shape.clone();
    for (i, x) in xs.iter().enumerate().skip(1) {
        same_dtype(first, x, "input")?;
        if x.rank() != first.rank() {
            return Err(format!(
                "input {i} has rank {}, input 0 has rank {}",
                x.rank(),
                first.rank()
            ));
        }
        for (j, d) in x.shape.iter().enumerate() {
            shape[j] = if j == axis {
                (shape[j].checked_add(d))
                    .ok_or_else(|| format!("the concatenated axis {axis} overflows i64"))?
            } else {
                unify_or(&shape[j], d, &format!("input {i}: dims on axis {j}"))?
            };
        }
    }
    one(TensorType::new(first.dtype, shape))
}

/// Each axis grows by its pads; the fill value is a scalar of the same dtype.
pub(super) fn pad(x: &TensorType, fill: &TensorType, pads: &[(i64, i64)]) -> Res<Vec<TensorType>> {
    same_dtype(x, fill, "data and fill value")?;
    if fill.rank() != 0 {
        return Err(format!("fill value must be a scalar, got {fill}"));
    }
    if pads.len() != x.rank() {
        return Err(format!("{} pads for rank {}", pads.len(), x.rank()));
    }
    let shape = x
        .shape
        .iter()
        .zip(pads)
        .enumerate()
        .map(|(i, (d, &(b, e)))| {
            let padded = (d.checked_add(&Dim::from(b)))
                .and_then(|p| p.checked_add(&Dim::from(e)))
                .ok_or_else(|| format!("padded axis {i} overflows i64"))?;
            non_negative(padded, &format!("padded axis {i}"))
        })
        .collect::<Res<Vec<Dim>>>()?;
    one(TensorType::new(x.dtype, shape))
}

/// Numpy broadcast of the input to `shape`.
pub(super) fn expand(x: &TensorType, shape: &[Dim]) -> Res<Vec<TensorType>> {
    if x.rank() > shape.len() {
        return Err(format!(
            "cannot expand rank {} to rank {}",
            x.rank(),
            shape.len()
        ));
    }
    one(TensorType::new(x.dtype, broadcast_shapes(&x.shape, shape)?))
}

/// `[len]` from scalar `start` and `delta` of one numeric dtype.
pub(super) fn range(start: &TensorType, delta: &TensorType, len: &Dim) -> Res<Vec<TensorType>> {
    same_dtype(start, delta, "start and delta")?;
    expect_dtype(start, "start", is_numeric, "a numeric")?;
    if start.rank() != 0 || delta.rank() != 0 {
        return Err(format!(
            "start and delta must be scalars, got {start} and {delta}"
        ));
    }
    let len = non_negative(len.clone(), "length")?;
    one(TensorType::new(start.dtype, vec![len]))
}
