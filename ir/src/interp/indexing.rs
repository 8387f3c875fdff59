//! Index-driven ops: gather, gather_elements, gather_nd, one_hot, nonzero and trilu.
//! Negative indices count from the end; an index still out of range is an error.

use super::num::{flat, indices, norm_index, strides, tensor};
use super::{check_alloc, op_err, Result};
use crate::{dispatch, ArcArrayD, Elem, Op, Tensor};
use ndarray::ArrayViewD;
use ndarray::{indices as nd_indices, Axis, Dimension, IxDyn};

/// Checks every index of an indexing op's `indices` operand against the shape of its data
/// (gather, gather_elements, gather_nd, scatter_elements, scatter_nd; other ops pass), as
/// the op itself does when it runs, with the same error. Code generators call it on a
/// constant `indices` so that an index out of range is rejected at compile time.
pub fn check_indices(op: &Op, data_shape: &[usize], idx: &Tensor) -> Result<()> {
    let ix = || indices(op, idx);
    match op {
        Op::Gather { axis } => {
            let n = *data_shape.get(*axis).ok_or_else(|| {
                op_err(
                    op,
                    format!("axis {axis} is out of range for rank {}", data_shape.len()),
                )
            })?;
            ix()?
                .into_iter()
                .try_for_each(|i| norm_index(op, i, n).map(drop))
        }
        Op::GatherElements { axis } | Op::ScatterElements { axis, .. } => {
            element_offsets(op, data_shape, idx.shape(), &ix()?, *axis).map(drop)
        }
        Op::GatherNd { batch_dims } => {
            tuple_offsets(op, data_shape, idx.shape(), &ix()?, *batch_dims).map(drop)
        }
        Op::ScatterNd { .. } => tuple_offsets(op, data_shape, idx.shape(), &ix()?, 0).map(drop),
        _ => Ok(()),
    }
}

/// `gather(data, indices)` along `axis`: output shape `data[:axis] + indices + data[axis+1:]`.
pub(crate) fn gather(op: &Op, data: &Tensor, idx: &Tensor, axis: usize) -> Result<Tensor> {
    if axis >= data.rank() {
        return Err(op_err(
            op,
            format!("axis {axis} is out of range for rank {}", data.rank()),
        ));
    }
    let n = data.shape()[axis];
    let ix = indices(op, idx)?
        .into_iter()
        .map(|i| norm_index(op, i, n))
        .collect::<Result<Vec<usize>>>()?;
    let mut shape = data.shape()[..axis].to_vec();
    shape.extend(idx.shape());
    shape.extend(&data.shape()[axis + 1..]);
    check_alloc(op, &shape)?;
    let picked = dispatch!(data, a => Elem::wrap(a.select(Axis(axis), &ix).into_shared()));
    picked
        .reshape(&shape)
        .map_err(|e| op_err(op, e.to_string()))
}

/// ONNX `GatherElements`: `out[p] = data[p with p[axis] = indices[p]]`.
pub(crate) fn gather_elements(op: &Op, data: &Tensor, idx: &Tensor, axis: usize) -> Result<Tensor> {
    let (ds, is) = (data.shape(), idx.shape());
    if axis >= ds.len() || is.len() != ds.len() {
        return Err(op_err(
            op,
            format!("indices {is:?} and data {ds:?} need the same rank above axis {axis}"),
        ));
    }
    let ix = indices(op, idx)?;
    let offsets = element_offsets(op, ds, is, &ix, axis)?;
    dispatch!(data, a => {
        let d = flat(a);
        tensor(op, offsets.iter().map(|&o| d[o]).collect(), is)
    })
}

/// Flat offsets into `data` (shape `ds`) addressed by each position of an indices tensor of
/// shape `is`, whose value replaces the coordinate on `axis` (GatherElements, ScatterElements).
pub(crate) fn element_offsets(
    op: &Op,
    ds: &[usize],
    is: &[usize],
    ix: &[i64],
    axis: usize,
) -> Result<Vec<usize>> {
    if is
        .iter()
        .zip(ds)
        .enumerate()
        .any(|(i, (&a, &b))| i != axis && a > b)
    {
        return Err(op_err(
            op,
            format!("indices shape {is:?} exceeds data shape {ds:?}"),
        ));
    }
    let st = strides(ds);
    nd_indices(IxDyn(is))
        .into_iter()
        .zip(ix)
        .map(|(p, &i)| {
            let mut off = 0;
            for (j, &c) in p.slice().iter().enumerate() {
                let c = if j == axis {
                    norm_index(op, i, ds[axis])?
                } else {
                    c
                };
                off += c * st[j];
            }
            Ok(off)
        })
        .collect()
}

/// Flat offsets of the sub-tensors of `data` (shape `ds`) that the index tuples in the last
/// axis of `ix` (shape `is`) address after `batch_dims` shared leading dims; also returns
/// the size of each sub-tensor (GatherND, ScatterND).
pub(crate) fn tuple_offsets(
    op: &Op,
    ds: &[usize],
    is: &[usize],
    ix: &[i64],
    batch_dims: usize,
) -> Result<(Vec<usize>, usize)> {
    let q = *is
        .last()
        .ok_or_else(|| op_err(op, "indices need rank >= 1"))?;
    if is.len() <= batch_dims || ds.len() < batch_dims + q || is[..batch_dims] != ds[..batch_dims] {
        return Err(op_err(
            op,
            format!("indices {is:?} do not address data {ds:?} with {batch_dims} batch dims"),
        ));
    }
    let st = strides(ds);
    let chunk: usize = ds[batch_dims + q..].iter().product();
    let n_batch: usize = ds[..batch_dims].iter().product();
    let per_batch: usize = is[batch_dims..is.len() - 1].iter().product();
    let batch_stride: usize = ds[batch_dims..].iter().product();
    let mut out = Vec::with_capacity(n_batch * per_batch);
    for b in 0..n_batch {
        for t in 0..per_batch {
            let tuple = &ix[(b * per_batch + t) * q..][..q];
            let mut off = b * batch_stride;
            for (j, &i) in tuple.iter().enumerate() {
                off += norm_index(op, i, ds[batch_dims + j])? * st[batch_dims + j];
            }
            out.push(off);
        }
    }
    Ok((out, chunk))
}

/// ONNX `GatherND` with `batch_dims` leading shared dims.
pub(crate) fn gather_nd(op: &Op, data: &Tensor, idx: &Tensor, batch_dims: usize) -> Result<Tensor> {
    let (ds, is) = (data.shape(), idx.shape());
    let ix = indices(op, idx)?;
    let (offsets, chunk) = tuple_offsets(op, ds, is, &ix, batch_dims)?;
    let q = is[is.len() - 1];
    let mut shape = is[..is.len() - 1].to_vec();
    shape.extend(&ds[batch_dims + q..]);
    check_alloc(op, &shape)?;
    dispatch!(data, a => {
        let d = flat(a);
        tensor(op, offsets.iter().flat_map(|&o| d[o..o + chunk].iter().copied()).collect(), &shape)
    })
}

/// Keeps the upper (`j - i >= k`) or lower (`j - i <= k`) triangle of the last two dims.
pub(crate) fn trilu(op: &Op, x: &Tensor, upper: bool, k: i64) -> Result<Tensor> {
    if x.rank() < 2 {
        return Err(op_err(op, format!("needs rank >= 2, got {}", x.rank())));
    }
    Ok(dispatch!(x, a => Elem::wrap(trilu_typed(a, upper, k))))
}

fn trilu_typed<T: Elem>(a: &ArrayViewD<'_, T>, upper: bool, k: i64) -> ArcArrayD<T> {
    let mut out = a.to_owned();
    let r = out.ndim();
    for (p, v) in out.indexed_iter_mut() {
        let d = p[r - 1] as i64 - p[r - 2] as i64;
        if (upper && d < k) || (!upper && d > k) {
            *v = T::default();
        }
    }
    out.into_shared()
}

/// One-hot encoding: a new axis of `depth` at `axis`, `on` where it equals the index
/// (negative indices count from `depth`), `off` elsewhere and for out-of-range indices.
pub(crate) fn one_hot(
    op: &Op,
    idx: &Tensor,
    values: &Tensor,
    axis: usize,
    depth: usize,
) -> Result<Tensor> {
    if axis > idx.rank() || values.len() != 2 {
        return Err(op_err(
            op,
            format!(
                "axis {axis} for rank {} and {} values (need [off, on])",
                idx.rank(),
                values.len()
            ),
        ));
    }
    if idx.dtype() == crate::DType::Bool {
        return Err(super::bad_dtype(op, idx.dtype()));
    }
    // Float indices convert as `Cast` does (saturating), as generated code does.
    let ix = idx.cast(crate::DType::I64).to_i64_vec();
    let mut shape = idx.shape().to_vec();
    shape.insert(axis, depth);
    check_alloc(op, &shape)?;
    let outer: usize = idx.shape()[..axis].iter().product();
    let inner: usize = idx.shape()[axis..].iter().product();
    let d = depth as i64;
    dispatch!(values, v => {
        let (off, on) = (v.iter().next().copied().expect("two"), v.iter().nth(1).copied().expect("two"));
        let mut out = Vec::with_capacity(outer * depth * inner);
        for o in 0..outer {
            for pos in 0..d {
                out.extend(ix[o * inner..(o + 1) * inner].iter().map(|&i| if (if i < 0 { i + d } else { i }) == pos { on } else { off }));
            }
        }
        tensor(op, out, &shape)
    })
}

/// `i64[rank, count]`: coordinates of the non-zero elements, row-major.
pub(crate) fn non_zero(op: &Op, x: &Tensor) -> Result<Tensor> {
    let coords: Vec<Vec<usize>> = dispatch!(x, a => a
        .indexed_iter()
        .filter(|(_, v)| Elem::to_f64(**v) != 0.0)
        .map(|(p, _)| p.slice().to_vec())
        .collect());
    let (rank, count) = (x.rank(), coords.len());
    let data: Vec<i64> = (0..rank)
        .flat_map(|r| coords.iter().map(move |c| c[r] as i64))
        .collect();
    tensor(op, data, &[rank, count])
}

#[cfg(test)]
mod tests {
    use crate::interp::eval_op;
    use crate::interp::test_util::{ints as t, iota};
    use crate::{Bindings, Op, Tensor};

    fn ev(op: Op, inputs: &[Tensor]) -> Tensor {
        eval_op(&op, inputs, &Bindings::new()).unwrap().remove(0)
    }

    #[test]
    fn gather_with_negative_indices() {
        let g = ev(
            Op::Gather { axis: 1 },
            &[iota(&[2, 3]), t(vec![-1, 0, 1, 2], &[2, 2])],
        );
        assert_eq!(g.shape(), &[2, 2, 2]);
        assert_eq!(g.to_i64_vec(), vec![2, 0, 1, 2, 5, 3, 4, 5]);
        let s = ev(Op::Gather { axis: 0 }, &[iota(&[3]), Tensor::scalar(1i32)]);
        assert_eq!((s.rank(), s.to_i64_vec()), (0, vec![1]));
        let e = eval_op(
            &Op::Gather { axis: 0 },
            &[iota(&[3]), t(vec![3], &[1])],
            &Bindings::new(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "gather: index 3 is out of range for a dim of size 3"
        );
    }

    #[test]
    fn gather_elements_along_axis() {
        let d = t(vec![1, 2, 3, 4], &[2, 2]);
        let g = ev(
            Op::GatherElements { axis: 1 },
            &[d.clone(), t(vec![0, 0, 1, 0], &[2, 2])],
        );
        assert_eq!(g.to_i64_vec(), vec![1, 1, 4, 3]);
        let g = ev(
            Op::GatherElements { axis: 0 },
            &[d, t(vec![1, -2], &[1, 2])],
        );
        assert_eq!(g.to_i64_vec(), vec![3, 2]);
    }

    #[test]
    fn gather_nd_with_batch_dims() {
        let d = iota(&[2, 2]);
        assert_eq!(
            ev(
                Op::GatherNd { batch_dims: 0 },
                &[d.clone(), t(vec![0, 0, 1, 1], &[2, 2])]
            )
            .to_i64_vec(),
            vec![0, 3]
        );
        let rows = ev(Op::GatherNd { batch_dims: 0 }, &[d, t(vec![1, 0], &[2, 1])]);
        assert_eq!(
            (rows.shape(), rows.to_i64_vec()),
            (&[2, 2][..], vec![2, 3, 0, 1])
        );
        let d = iota(&[2, 2, 2]);
        let b = ev(Op::GatherNd { batch_dims: 1 }, &[d, t(vec![1, 0], &[2, 1])]);
        assert_eq!((b.shape(), b.to_i64_vec()), (&[2, 2][..], vec![2, 3, 4, 5]));
    }

    #[test]
    fn trilu_upper_lower() {
        let x = iota(&[3, 3]);
        assert_eq!(
            ev(Op::Trilu { upper: true, k: 0 }, std::slice::from_ref(&x)).to_i64_vec(),
            vec![0, 1, 2, 0, 4, 5, 0, 0, 8]
        );
        assert_eq!(
            ev(
                Op::Trilu {
                    upper: false,
                    k: -1
                },
                std::slice::from_ref(&x)
            )
            .to_i64_vec(),
            vec![0, 0, 0, 3, 0, 0, 6, 7, 0]
        );
        assert_eq!(
            ev(Op::Trilu { upper: true, k: 5 }, &[x]).to_i64_vec(),
            vec![0; 9]
        );
    }

    #[test]
    fn one_hot_negative_and_out_of_range() {
        let vals = Tensor::from_vec(vec![0.0f32, 1.0], &[2]).unwrap();
        let o = ev(
            Op::OneHot { axis: 1, depth: 3 },
            &[t(vec![0, -1, 3], &[3]), vals.clone()],
        );
        assert_eq!(o.shape(), &[3, 3]);
        assert_eq!(
            o.to_f64_vec(),
            vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
        );
        let o = ev(
            Op::OneHot { axis: 0, depth: 2 },
            &[t(vec![1, 0], &[2]), vals],
        );
        assert_eq!(o.to_f64_vec(), vec![0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn non_zero_coordinates() {
        let x = Tensor::from_vec(vec![1.0f32, 0.0, f32::NAN, 2.0], &[2, 2]).unwrap();
        let n = ev(Op::NonZero { count: "n".into() }, &[x]);
        assert_eq!(
            (n.shape(), n.to_i64_vec()),
            (&[2, 3][..], vec![0, 1, 1, 0, 0, 1])
        );
        let e = ev(
            Op::NonZero { count: "n".into() },
            &[Tensor::from_vec(Vec::<bool>::new(), &[0]).unwrap()],
        );
        assert_eq!(e.shape(), &[1, 0]);
    }
}
