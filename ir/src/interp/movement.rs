//! Data movement: shapes as values, reshape, transpose, slice, concat, pad and expand.
//! None of these look at element values, so all work on every dtype.

use super::elementwise::broadcast_shapes;
use super::num::same;
use super::{check_alloc, eval_signed, eval_size, op_err, Result};
use crate::{dispatch, Bindings, Dim, Elem, Op, PadMode, SliceAxis, Tensor};
use ndarray::ArrayViewD;
use ndarray::{ArrayD, Axis, IxDyn, Slice};

/// `shape_value`: the dims under the bindings, as `i64[n]` (or a scalar).
pub(crate) fn shape_value(op: &Op, dims: &[Dim], scalar: bool, b: &Bindings) -> Result<Tensor> {
    let v = dims
        .iter()
        .map(|d| eval_signed(op, d, b))
        .collect::<Result<Vec<i64>>>()?;
    if scalar {
        if v.len() != 1 {
            return Err(op_err(
                op,
                format!("a scalar shape value needs one dim, got {}", v.len()),
            ));
        }
        return Ok(Tensor::scalar(v[0]));
    }
    let n = v.len();
    Ok(Tensor::from_vec(v, &[n]).expect("1-D"))
}

/// `shape_of`: the input's shape as `i64[rank]`.
pub(crate) fn shape_of(x: &Tensor) -> Result<Tensor> {
    let v: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
    let n = v.len();
    Ok(Tensor::from_vec(v, &[n]).expect("1-D"))
}

fn sizes(op: &Op, dims: &[Dim], b: &Bindings) -> Result<Vec<usize>> {
    dims.iter().map(|d| eval_size(op, d, b)).collect()
}

/// Same data under a new shape.
pub(crate) fn reshape(op: &Op, x: &Tensor, shape: &[Dim], b: &Bindings) -> Result<Tensor> {
    let s = sizes(op, shape, b)?;
    x.reshape(&s)
        .map_err(|e| op_err(op, format!("cannot reshape {:?} to {s:?}: {e}", x.shape())))
}

/// Output axis `i` is input axis `perm[i]`.
pub(crate) fn transpose(op: &Op, x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let mut seen = vec![false; x.rank()];
    let valid = perm.len() == x.rank()
        && perm
            .iter()
            .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return Err(op_err(
            op,
            format!("{perm:?} is not a permutation of {} axes", x.rank()),
        ));
    }
    Ok(dispatch!(x, a => Elem::wrap(a.to_shared().permuted_axes(IxDyn(perm)))))
}

/// The ndarray slice taking `start, start+step, …` up to (not including) `end`, with
/// bounds clamped as ONNX does.
fn axis_slice(start: i64, end: i64, step: i64, dim: usize) -> Slice {
    let n = dim as i64;
    if step > 0 {
        let s = start.clamp(0, n);
        let e = end.clamp(s, n);
        Slice::new(s as isize, Some(e as isize), step as isize)
    } else {
        let s = start.clamp(-1, n - 1);
        let e = end.clamp(-1, s);
        // ndarray walks a negative step from the end of [e+1, s+1).
        Slice::new((e + 1) as isize, Some((s + 1) as isize), step as isize)
    }
}

/// Strided slice; unsliced axes are kept whole.
pub(crate) fn slice(op: &Op, x: &Tensor, axes: &[SliceAxis], b: &Bindings) -> Result<Tensor> {
    let mut spec: Vec<Option<Slice>> = vec![None; x.rank()];
    for a in axes {
        if a.axis >= x.rank() || a.step == 0 || spec[a.axis].is_some() {
            return Err(op_err(
                op,
                format!(
                    "bad slice of axis {} (step {}) for rank {}",
                    a.axis,
                    a.step,
                    x.rank()
                ),
            ));
        }
        let (s, e) = (eval_signed(op, &a.start, b)?, eval_signed(op, &a.end, b)?);
        spec[a.axis] = Some(axis_slice(s, e, a.step, x.shape()[a.axis]));
    }
    Ok(dispatch!(x, a => {
        let mut v = a.clone();
        v.slice_each_axis_inplace(|d| spec[d.axis.index()].unwrap_or(Slice::from(..)));
        Elem::wrap(v.to_shared())
    }))
}

/// Concatenation along `axis`.
pub(crate) fn concat(op: &Op, inputs: &[Tensor], axis: usize) -> Result<Tensor> {
    let first = inputs
        .first()
        .ok_or_else(|| op_err(op, "needs at least one input"))?;
    if axis >= first.rank() {
        return Err(op_err(
            op,
            format!("axis {axis} is out of range for rank {}", first.rank()),
        ));
    }
    dispatch!(first, a => {
        let mut views = vec![a.view()];
        for t in &inputs[1..] {
            views.push(same(op, t)?);
        }
        let mut shape = a.shape().to_vec();
        shape[axis] = views.iter().map(|v| v.shape().get(axis).copied().unwrap_or(0)).sum();
        check_alloc(op, &shape)?;
        let out = ndarray::concatenate(Axis(axis), &views)
            .map_err(|_| op_err(op, format!("shapes {:?} do not concatenate on axis {axis}", inputs.iter().map(Tensor::shape).collect::<Vec<_>>())))?;
        Ok(Elem::wrap(out.into_shared()))
    })
}

/// Pads (or crops, for negative amounts) each axis. Cropping happens first, so the fill
/// modes see the cropped data.
pub(crate) fn pad(
    op: &Op,
    x: &Tensor,
    value: &Tensor,
    pads: &[(i64, i64)],
    mode: PadMode,
) -> Result<Tensor> {
    if pads.len() != x.rank() {
        return Err(op_err(
            op,
            format!("{} pad pairs for rank {}", pads.len(), x.rank()),
        ));
    }
    if value.len() != 1 {
        return Err(op_err(
            op,
            format!(
                "the fill value must have one element, got shape {:?}",
                value.shape()
            ),
        ));
    }
    dispatch!(x, a => {
        let fill = same(op, value)?.iter().next().copied().expect("one element");
        let cropped = crop(op, a, pads)?;
        let grow: Vec<(usize, usize)> = pads.iter().map(|&(b, e)| (b.max(0) as usize, e.max(0) as usize)).collect();
        let shape: Vec<usize> = cropped.shape().iter().zip(&grow).map(|(&n, &(b, e))| n + b + e).collect();
        check_alloc(op, &shape)?;
        let out = match mode {
            PadMode::Constant => pad_constant(&cropped, &grow, &shape, fill),
            PadMode::Reflect | PadMode::Edge | PadMode::Wrap => pad_indexed(op, cropped, &grow, mode)?,
        };
        Ok(Elem::wrap(out.into_shared()))
    })
}

fn crop<'a, T: Elem>(
    op: &Op,
    a: &ArrayViewD<'a, T>,
    pads: &[(i64, i64)],
) -> Result<ArrayViewD<'a, T>> {
    let mut v = a.clone();
    for (i, &(b, e)) in pads.iter().enumerate() {
        let (cb, ce) = ((-b).max(0) as usize, (-e).max(0) as usize);
        let n = v.shape()[i];
        if cb + ce > n {
            return Err(op_err(
                op,
                format!("cannot crop {} from axis {i} of size {n}", cb + ce),
            ));
        }
        v.slice_axis_inplace(Axis(i), Slice::from(cb..n - ce));
    }
    Ok(v)
}

fn pad_constant<T: Elem>(
    a: &ArrayViewD<'_, T>,
    grow: &[(usize, usize)],
    shape: &[usize],
    fill: T,
) -> ArrayD<T> {
    let mut out = ArrayD::from_elem(IxDyn(shape), fill);
    out.slice_each_axis_mut(|d| {
        let (b, n) = (grow[d.axis.index()].0, a.shape()[d.axis.index()]);
        Slice::from(b..b + n)
    })
    .assign(a);
    out
}

fn pad_indexed<T: Elem>(
    op: &Op,
    a: ArrayViewD<'_, T>,
    grow: &[(usize, usize)],
    mode: PadMode,
) -> Result<ArrayD<T>> {
    let mut cur = a.to_owned();
    for (i, &(b, e)) in grow.iter().enumerate() {
        if b == 0 && e == 0 {
            continue;
        }
        let n = cur.shape()[i] as i64;
        if n == 0 {
            return Err(op_err(
                op,
                format!("cannot pad an empty axis {i} in {mode:?} mode"),
            ));
        }
        let idx: Vec<usize> = (-(b as i64)..n + e as i64)
            .map(|c| source_index(c, n, mode))
            .collect();
        cur = cur.select(Axis(i), &idx);
    }
    Ok(cur)
}

/// The input index that fills padded position `c` (relative to the data's start).
fn source_index(c: i64, n: i64, mode: PadMode) -> usize {
    let i = match mode {
        PadMode::Edge | PadMode::Constant => c.clamp(0, n - 1),
        PadMode::Wrap => c.rem_euclid(n),
        PadMode::Reflect if n == 1 => 0,
        PadMode::Reflect => {
            let period = 2 * (n - 1);
            let r = c.rem_euclid(period);
            if r < n {
                r
            } else {
                period - r
            }
        }
    };
    i as usize
}

/// Broadcasts `x` against `shape` (numpy rules).
pub(crate) fn expand(op: &Op, x: &Tensor, shape: &[Dim], b: &Bindings) -> Result<Tensor> {
    let target = sizes(op, shape, b)?;
    let out = broadcast_shapes(&[x.shape(), &target]).ok_or_else(|| {
        op_err(
            op,
            format!("{:?} does not broadcast to {target:?}", x.shape()),
        )
    })?;
    check_alloc(op, &out)?;
    Ok(
        dispatch!(x, a => Elem::wrap(a.broadcast(IxDyn(&out)).expect("checked").to_owned().into_shared())),
    )
}

#[cfg(test)]
mod tests {
    use crate::interp::eval_op;
    use crate::interp::test_util::iota;
    use crate::{Bindings, Dim, Op, PadMode, SliceAxis, Tensor};

    fn ev(op: Op, inputs: &[Tensor]) -> Tensor {
        eval_op(
            &op,
            inputs,
            &[("s".to_string(), 3)].into_iter().collect::<Bindings>(),
        )
        .unwrap()
        .remove(0)
    }

    #[test]
    fn reshape_with_symbols() {
        let r = ev(
            Op::Reshape {
                shape: vec![Dim::sym("s"), Dim::from(2i64)],
            },
            &[iota(&[2, 3])],
        );
        assert_eq!(r.shape(), &[3, 2]);
        let bad = Op::Reshape {
            shape: vec![Dim::sym("t")],
        };
        assert!(eval_op(&bad, &[iota(&[2])], &Bindings::new()).is_err());
        assert!(eval_op(
            &Op::Reshape {
                shape: vec![Dim::from(5i64)]
            },
            &[iota(&[2])],
            &Bindings::new()
        )
        .is_err());
    }

    #[test]
    fn transpose_then_bytes_are_row_major() {
        let t = ev(Op::Transpose { perm: vec![1, 0] }, &[iota(&[2, 3])]);
        assert_eq!(t.shape(), &[3, 2]);
        assert_eq!(t.to_i64_vec(), vec![0, 3, 1, 4, 2, 5]);
        assert!(eval_op(
            &Op::Transpose { perm: vec![0, 0] },
            &[iota(&[2, 3])],
            &Bindings::new()
        )
        .is_err());
    }

    fn sl(axis: usize, start: i64, end: i64, step: i64) -> SliceAxis {
        SliceAxis {
            axis,
            start: Dim::from(start),
            end: Dim::from(end),
            step,
        }
    }

    #[test]
    fn slices_forward_backward_and_empty() {
        let x = iota(&[2, 5]);
        let s = ev(
            Op::Slice {
                axes: vec![sl(1, 1, 5, 2)],
            },
            std::slice::from_ref(&x),
        );
        assert_eq!(s.to_i64_vec(), vec![1, 3, 6, 8]);
        let s = ev(
            Op::Slice {
                axes: vec![sl(1, 4, -1, -1), sl(0, 1, 2, 1)],
            },
            std::slice::from_ref(&x),
        );
        assert_eq!(s.to_i64_vec(), vec![9, 8, 7, 6, 5]);
        let s = ev(
            Op::Slice {
                axes: vec![sl(1, 3, 0, -2)],
            },
            std::slice::from_ref(&x),
        );
        assert_eq!(s.to_i64_vec(), vec![3, 1, 8, 6]);
        let s = ev(
            Op::Slice {
                axes: vec![sl(1, 3, 3, 1)],
            },
            std::slice::from_ref(&x),
        );
        assert_eq!(s.shape(), &[2, 0]);
        let sym = SliceAxis {
            axis: 1,
            start: Dim::from(0i64),
            end: Dim::sym("s"),
            step: 1,
        };
        assert_eq!(ev(Op::Slice { axes: vec![sym] }, &[x]).shape(), &[2, 3]);
    }

    #[test]
    fn concat_and_mismatch() {
        let c = ev(
            Op::Concat { axis: 1 },
            &[iota(&[2, 1]), iota(&[2, 2]), iota(&[2, 0])],
        );
        assert_eq!(c.to_i64_vec(), vec![0, 0, 1, 1, 2, 3]);
        assert!(eval_op(
            &Op::Concat { axis: 1 },
            &[iota(&[2, 1]), iota(&[3, 1])],
            &Bindings::new()
        )
        .is_err());
    }

    #[test]
    fn pad_modes() {
        let x = iota(&[3]);
        let fill = Tensor::scalar(-1i64);
        let p = |pads: (i64, i64), mode| {
            ev(
                Op::Pad {
                    pads: vec![pads],
                    mode,
                },
                &[x.clone(), fill.clone()],
            )
            .to_i64_vec()
        };
        assert_eq!(p((2, 1), PadMode::Constant), vec![-1, -1, 0, 1, 2, -1]);
        assert_eq!(p((2, 1), PadMode::Edge), vec![0, 0, 0, 1, 2, 2]);
        assert_eq!(p((2, 2), PadMode::Reflect), vec![2, 1, 0, 1, 2, 1, 0]);
        assert_eq!(p((2, 4), PadMode::Wrap), vec![1, 2, 0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(p((-1, 1), PadMode::Constant), vec![1, 2, -1]);
        assert_eq!(p((-1, 2), PadMode::Wrap), vec![1, 2, 1, 2]);
        let e = eval_op(
            &Op::Pad {
                pads: vec![(-2, -2)],
                mode: PadMode::Constant,
            },
            &[x, fill],
            &Bindings::new(),
        );
        assert!(e.is_err());
    }

    #[test]
    fn pad_2d_reflect() {
        let x = iota(&[2, 3]);
        let op = Op::Pad {
            pads: vec![(1, 0), (0, 1)],
            mode: PadMode::Reflect,
        };
        let p = ev(op, &[x, Tensor::scalar(0i64)]);
        assert_eq!(p.shape(), &[3, 4]);
        assert_eq!(p.to_i64_vec(), vec![3, 4, 5, 4, 0, 1, 2, 1, 3, 4, 5, 4]);
    }

    #[test]
    fn expand_broadcasts_both_ways() {
        let e = ev(
            Op::Expand {
                shape: vec![Dim::from(2i64), Dim::from(1i64)],
            },
            &[iota(&[3])],
        );
        assert_eq!(e.shape(), &[2, 3]);
        assert_eq!(e.to_i64_vec(), vec![0, 1, 2, 0, 1, 2]);
        let big = Op::Expand {
            shape: vec![Dim::from(1i64 << 20), Dim::from(1i64 << 20)],
        };
        assert!(eval_op(&big, &[iota(&[1])], &Bindings::new()).is_err());
    }

    #[test]
    fn shapes_as_values() {
        let v = ev(
            Op::ShapeValue {
                dims: vec![Dim::sym("s") + Dim::from(1i64), Dim::from(7i64)],
                scalar: false,
            },
            &[],
        );
        assert_eq!(v.to_i64_vec(), vec![4, 7]);
        let s = ev(
            Op::ShapeValue {
                dims: vec![Dim::sym("s")],
                scalar: true,
            },
            &[],
        );
        assert_eq!(s.rank(), 0);
        assert_eq!(
            ev(Op::ShapeOf, &[iota(&[2, 0, 4])]).to_i64_vec(),
            vec![2, 0, 4]
        );
    }
}
