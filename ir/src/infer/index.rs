//! Inference for ops driven by index tensors: gathers, scatters, top-k and one-hot.

use super::{check_axis, expect_dtype, is_numeric, join, one, same_dtype, unify_or, Res};
use crate::{DType, Dim, TensorType};

fn is_index(d: DType) -> bool {
    matches!(d, DType::I32 | DType::I64)
}

fn indices(t: &TensorType) -> Res<()> {
    expect_dtype(t, "indices", is_index, "an i32 or i64")
}

/// `data[:axis] + indices.shape + data[axis+1:]`.
pub(super) fn gather(data: &TensorType, idx: &TensorType, axis: usize) -> Res<Vec<TensorType>> {
    check_axis(axis, data.rank())?;
    indices(idx)?;
    let mut shape = data.shape[..axis].to_vec();
    shape.extend(idx.shape.iter().cloned());
    shape.extend(data.shape[axis + 1..].iter().cloned());
    one(TensorType::new(data.dtype, shape))
}

/// Indices of the data's rank; the output takes their shape.
pub(super) fn gather_elements(
    data: &TensorType,
    idx: &TensorType,
    axis: usize,
) -> Res<Vec<TensorType>> {
    check_axis(axis, data.rank())?;
    indices(idx)?;
    same_rank(data, idx)?;
    one(TensorType::new(data.dtype, idx.shape.clone()))
}

fn same_rank(data: &TensorType, idx: &TensorType) -> Res<()> {
    if data.rank() != idx.rank() {
        return Err(format!(
            "indices have rank {}, data has rank {}",
            idx.rank(),
            data.rank()
        ));
    }
    Ok(())
}

/// The constant last dim `k` of ND indices, with `batch + k <= rank(data)`.
fn nd_depth(data: &TensorType, idx: &TensorType, batch: usize) -> Res<usize> {
    indices(idx)?;
    let last = idx.shape.last().ok_or("indices must have rank >= 1")?;
    let k = last
        .as_const()
        .ok_or_else(|| format!("the last dim of indices must be a constant, got {last}"))?;
    let k = usize::try_from(k).map_err(|_| format!("negative index depth {k}"))?;
    if batch >= idx.rank() || batch >= data.rank() {
        return Err(format!(
            "batch_dims {batch} must be below both ranks ({} and {})",
            data.rank(),
            idx.rank()
        ));
    }
    if batch + k > data.rank() {
        return Err(format!(
            "indices address {k} dims after {batch} batch dims of rank-{} data",
            data.rank()
        ));
    }
    for i in 0..batch {
        unify_or(
            &data.shape[i],
            &idx.shape[i],
            &format!("batch dims on axis {i}"),
        )?;
    }
    Ok(k)
}

/// `indices.shape[:-1] + data.shape[batch + k:]`.
pub(super) fn gather_nd(data: &TensorType, idx: &TensorType, batch: usize) -> Res<Vec<TensorType>> {
    let k = nd_depth(data, idx, batch)?;
    let mut shape = idx.shape[..idx.rank() - 1].to_vec();
    shape.extend(data.shape[batch + k..].iter().cloned());
    one(TensorType::new(data.dtype, shape))
}

/// Fails unless `updates` has the dtype of `data` and exactly `shape`.
fn check_updates(data: &TensorType, upd: &TensorType, shape: &[Dim]) -> Res<()> {
    same_dtype(data, upd, "data and updates")?;
    if upd.rank() != shape.len() {
        return Err(format!(
            "updates have shape [{}], expected [{}]",
            join(&upd.shape),
            join(shape)
        ));
    }
    for (i, (u, s)) in upd.shape.iter().zip(shape).enumerate() {
        unify_or(u, s, &format!("updates dims on axis {i}"))?;
    }
    Ok(())
}

/// Indices of the data's rank, updates of the indices' shape; output is the data's type.
pub(super) fn scatter_elements(
    data: &TensorType,
    idx: &TensorType,
    upd: &TensorType,
    axis: usize,
) -> Res<Vec<TensorType>> {
    check_axis(axis, data.rank())?;
    indices(idx)?;
    same_rank(data, idx)?;
    check_updates(data, upd, &idx.shape)?;
    one(data.clone())
}

/// Updates of shape `indices.shape[:-1] + data.shape[k:]`; output is the data's type.
pub(super) fn scatter_nd(
    data: &TensorType,
    idx: &TensorType,
    upd: &TensorType,
) -> Res<Vec<TensorType>> {
    if data.rank() == 0 {
        return Err("data must have rank >= 1".into());
    }
    let k = nd_depth(data, idx, 0)?;
    let mut shape = idx.shape[..idx.rank() - 1].to_vec();
    shape.extend(data.shape[k..].iter().cloned());
    check_updates(data, upd, &shape)?;
    one(data.clone())
}

/// Values and `i64` indices with the axis shrunk to `k`.
pub(super) fn top_k(x: &TensorType, axis: usize, k: usize) -> Res<Vec<TensorType>> {
    check_axis(axis, x.rank())?;
    expect_dtype(x, "input", is_numeric, "a numeric")?;
    if let Some(n) = x.shape[axis].as_const() {
        if k as i64 > n {
            return Err(format!("k = {k} exceeds the axis size {n}"));
        }
    }
    let mut shape = x.shape.clone();
    shape[axis] = Dim::from(k);
    Ok(vec![
        TensorType::new(x.dtype, shape.clone()),
        TensorType::new(DType::I64, shape),
    ])
}

/// A new axis of `depth` inserted at `axis`; the dtype of `values = [off, on]`.
pub(super) fn one_hot(
    idx: &TensorType,
    values: &TensorType,
    axis: usize,
    depth: usize,
) -> Res<Vec<TensorType>> {
    expect_dtype(idx, "indices", is_numeric, "a numeric")?;
    if axis > idx.rank() {
        return Err(format!(
            "axis {axis} out of range for output rank {}",
            idx.rank() + 1
        ));
    }
    let two_values = values.rank() == 1 && values.shape[0].as_const().is_none_or(|n| n == 2);
    if !two_values {
        return Err(format!("values must be [off, on], got {values}"));
    }
    let mut shape = idx.shape.clone();
    shape.insert(axis, Dim::from(depth));
    one(TensorType::new(values.dtype, shape))
}
