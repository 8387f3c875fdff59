//! `topk`: the k largest or smallest values along an axis and their indices. The sort is
//! stable (equal values keep the lower index first) and NaN sorts above every number.

use super::{check_alloc, op_err, Result};
use crate::{dispatch, Elem, Op, Tensor};
use ndarray::ArrayViewD;
use ndarray::{ArrayD, Axis, IxDyn, Zip};
use std::cmp::Ordering;

/// Orders values with NaN greatest.
#[allow(clippy::eq_op)]
fn nan_greatest<T: Elem>(a: T, b: T) -> Ordering {
    match (a != a, b != b) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// `[values, indices]` of the top `k` along `axis`.
pub(crate) fn topk(
    op: &Op,
    x: &Tensor,
    axis: usize,
    k: usize,
    largest: bool,
) -> Result<Vec<Tensor>> {
    if axis >= x.rank() || k > x.shape()[axis] {
        return Err(op_err(
            op,
            format!("k = {k} on axis {axis} of shape {:?}", x.shape()),
        ));
    }
    let mut shape = x.shape().to_vec();
    shape[axis] = k;
    check_alloc(op, &shape)?;
    Ok(dispatch!(x, a => {
        let (v, i) = topk_typed(a, axis, &shape, largest);
        vec![Elem::wrap(v.into_shared()), Tensor::from_array(i)]
    }))
}

fn topk_typed<T: Elem>(
    a: &ArrayViewD<'_, T>,
    axis: usize,
    shape: &[usize],
    largest: bool,
) -> (ArrayD<T>, ArrayD<i64>) {
    let mut vals = ArrayD::from_elem(IxDyn(shape), T::default());
    let mut idxs = ArrayD::from_elem(IxDyn(shape), 0i64);
    Zip::from(a.lanes(Axis(axis)))
        .and(vals.lanes_mut(Axis(axis)))
        .and(idxs.lanes_mut(Axis(axis)))
        .for_each(|lane, mut v, mut ix| {
            let mut order: Vec<usize> = (0..lane.len()).collect();
            if largest {
                order.sort_by(|&i, &j| nan_greatest(lane[j], lane[i]));
            } else {
                order.sort_by(|&i, &j| nan_greatest(lane[i], lane[j]));
            }
            for (slot, &i) in order.iter().take(v.len()).enumerate() {
                v[slot] = lane[i];
                ix[slot] = i as i64;
            }
        });
    (vals, idxs)
}

#[cfg(test)]
mod tests {
    use crate::interp::eval_op;
    use crate::{Bindings, Op, Tensor};

    #[test]
    fn largest_and_smallest_are_stable() {
        let x = Tensor::from_vec(vec![3.0f32, 1.0, 3.0, f32::NAN, 2.0, 2.0], &[2, 3]).unwrap();
        let top = |k, largest| {
            let op = Op::TopK {
                axis: 1,
                k,
                largest,
                sorted: true,
            };
            eval_op(&op, std::slice::from_ref(&x), &Bindings::new()).unwrap()
        };
        let l = top(2, true);
        assert_eq!(l[0].shape(), &[2, 2]);
        assert_eq!(l[1].to_i64_vec(), vec![0, 2, 0, 1]);
        assert!(l[0].to_f64_vec()[2].is_nan());
        let s = top(2, false);
        assert_eq!(s[0].to_f64_vec(), vec![1.0, 3.0, 2.0, 2.0]);
        assert_eq!(s[1].to_i64_vec(), vec![1, 0, 1, 2]);
        assert_eq!(top(0, true)[0].shape(), &[2, 0]);
        let op = Op::TopK {
            axis: 1,
            k: 4,
            largest: true,
            sorted: true,
        };
        assert!(eval_op(&op, &[x], &Bindings::new()).is_err());
    }
}
