//! ONNX `ScatterElements` and `ScatterND`: a copy of `data` with updates written (or
//! combined by a reduction) at indexed positions, applied in index order.

use super::indexing::{element_offsets, tuple_offsets};
use super::num::{flat, indices, same, tensor};
use super::{op_err, Result};
use crate::{dispatch, Elem, Op, ScatterReduction, Tensor};

/// How an update combines with the existing value; add and mul wrap for integers, max and
/// min propagate NaN.
#[allow(clippy::eq_op)]
fn combine<T: Elem>(r: ScatterReduction, old: T, new: T) -> T {
    let float = T::DTYPE.is_float();
    match r {
        ScatterReduction::None => new,
        ScatterReduction::Add if float => T::from_f64(old.to_f64() + new.to_f64()),
        ScatterReduction::Add => T::from_i128(old.to_i128().wrapping_add(new.to_i128())),
        ScatterReduction::Mul if float => T::from_f64(old.to_f64() * new.to_f64()),
        ScatterReduction::Mul => T::from_i128(old.to_i128().wrapping_mul(new.to_i128())),
        ScatterReduction::Max | ScatterReduction::Min if old != old => old,
        ScatterReduction::Max | ScatterReduction::Min if new != new => new,
        ScatterReduction::Max => {
            if new > old {
                new
            } else {
                old
            }
        }
        ScatterReduction::Min => {
            if new < old {
                new
            } else {
                old
            }
        }
    }
}

/// `out[p with p[axis] = indices[p]] ⊕= updates[p]`.
pub(crate) fn scatter_elements(
    op: &Op,
    data: &Tensor,
    idx: &Tensor,
    upd: &Tensor,
    axis: usize,
    r: ScatterReduction,
) -> Result<Tensor> {
    let (ds, is) = (data.shape(), idx.shape());
    if axis >= ds.len() || is.len() != ds.len() || upd.shape() != is {
        return Err(op_err(
            op,
            format!(
                "data {ds:?}, indices {is:?} and updates {:?} do not fit axis {axis}",
                upd.shape()
            ),
        ));
    }
    let offsets = element_offsets(op, ds, is, &indices(op, idx)?, axis)?;
    dispatch!(data, a => {
        let mut out = flat(a);
        for (&o, &u) in offsets.iter().zip(same(op, upd)?.iter()) {
            out[o] = combine(r, out[o], u);
        }
        tensor(op, out, ds)
    })
}

/// Each index tuple in the last axis of `indices` addresses a sub-tensor of `data`, which
/// the matching slice of `updates` replaces or combines with.
pub(crate) fn scatter_nd(
    op: &Op,
    data: &Tensor,
    idx: &Tensor,
    upd: &Tensor,
    r: ScatterReduction,
) -> Result<Tensor> {
    let (ds, is) = (data.shape(), idx.shape());
    let (offsets, chunk) = tuple_offsets(op, ds, is, &indices(op, idx)?, 0)?;
    let mut want = is[..is.len() - 1].to_vec();
    want.extend(&ds[is[is.len() - 1]..]);
    if upd.shape() != want.as_slice() {
        return Err(op_err(
            op,
            format!("updates have shape {:?}, expected {want:?}", upd.shape()),
        ));
    }
    dispatch!(data, a => {
        let mut out = flat(a);
        let u = flat(&same(op, upd)?);
        for (n, &o) in offsets.iter().enumerate() {
            for c in 0..chunk {
                out[o + c] = combine(r, out[o + c], u[n * chunk + c]);
            }
        }
        tensor(op, out, ds)
    })
}

#[cfg(test)]
mod tests {
    use crate::interp::eval_op;
    use crate::interp::test_util::ints as t;
    use crate::{Bindings, Op, ScatterReduction};

    #[test]
    fn scatter_elements_with_reductions() {
        let data = t(vec![1, 2, 3, 4, 5], &[1, 5]);
        let idx = t(vec![1, -2, 1], &[1, 3]);
        let upd = t(vec![10, 20, 30], &[1, 3]);
        let run = |reduction| {
            let op = Op::ScatterElements { axis: 1, reduction };
            eval_op(
                &op,
                &[data.clone(), idx.clone(), upd.clone()],
                &Bindings::new(),
            )
            .unwrap()
            .remove(0)
            .to_i64_vec()
        };
        assert_eq!(run(ScatterReduction::None), vec![1, 30, 3, 20, 5]);
        assert_eq!(run(ScatterReduction::Add), vec![1, 42, 3, 24, 5]);
        assert_eq!(run(ScatterReduction::Mul), vec![1, 600, 3, 80, 5]);
        assert_eq!(run(ScatterReduction::Min), vec![1, 2, 3, 4, 5]);
        assert_eq!(run(ScatterReduction::Max), vec![1, 30, 3, 20, 5]);
        let bad = t(vec![5, 0, 0], &[1, 3]);
        let op = Op::ScatterElements {
            axis: 1,
            reduction: ScatterReduction::None,
        };
        assert!(eval_op(&op, &[data, bad, upd], &Bindings::new()).is_err());
    }

    #[test]
    fn scatter_nd_rows() {
        let data = t((0..6).collect(), &[3, 2]);
        let idx = t(vec![2, 0], &[2, 1]);
        let upd = t(vec![10, 11, 20, 21], &[2, 2]);
        let op = Op::ScatterNd {
            reduction: ScatterReduction::Add,
        };
        let out = eval_op(&op, &[data.clone(), idx.clone(), upd], &Bindings::new()).unwrap();
        assert_eq!(out[0].to_i64_vec(), vec![20, 22, 2, 3, 14, 16]);
        let op = Op::ScatterNd {
            reduction: ScatterReduction::None,
        };
        assert!(eval_op(&op, &[data, idx, t(vec![1, 2], &[2])], &Bindings::new()).is_err());
    }
}
