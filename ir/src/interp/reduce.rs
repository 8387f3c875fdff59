//! Reductions, arg-reductions and softmax.
//!
//! Float reductions accumulate in f64 and round once; integer reductions accumulate in i128
//! and wrap back. Reducing an empty set gives the identity: 0 for sums, 1 for products,
//! -∞ (or the type's minimum) for max, +∞ (or its maximum) for min, -∞ for log-sums. An empty
//! axis list reduces each element on its own (ONNX's `noop_with_empty_axes`), so
//! `sum_square` still squares.

use super::{bad_dtype, op_err, Result};
use crate::{dispatch, ArgKind, Elem, Op, ReduceKind, Tensor};
use ndarray::ArrayViewD;
use ndarray::{ArrayD, Axis, IxDyn};

fn check_axes(op: &Op, rank: usize, axes: &[usize]) -> Result<()> {
    let sorted = axes.windows(2).all(|w| w[0] < w[1]);
    if !sorted || axes.iter().any(|&a| a >= rank) {
        return Err(op_err(
            op,
            format!("axes {axes:?} must be sorted, unique and below rank {rank}"),
        ));
    }
    Ok(())
}

/// Reduces `x` over `axes`.
pub(crate) fn reduce(
    op: &Op,
    kind: ReduceKind,
    x: &Tensor,
    axes: &[usize],
    keep_dims: bool,
) -> Result<Tensor> {
    check_axes(op, x.rank(), axes)?;
    dispatch!(x, a => reduce_typed(kind, a, axes, keep_dims))
}

fn reduce_typed<T: Elem>(
    kind: ReduceKind,
    a: &ArrayViewD<'_, T>,
    axes: &[usize],
    keep_dims: bool,
) -> Result<Tensor> {
    let shape = a.shape();
    let kept: Vec<usize> = (0..shape.len()).filter(|i| !axes.contains(i)).collect();
    let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let data: Vec<T> = a
        .view()
        .permuted_axes(IxDyn(&perm))
        .iter()
        .copied()
        .collect();
    let outer: usize = kept.iter().map(|&i| shape[i]).product();
    let inner: usize = axes.iter().map(|&i| shape[i]).product();
    let lane = |o: usize| &data[o * inner..(o + 1) * inner];
    let out: Vec<T> = if T::DTYPE.is_float() {
        (0..outer)
            .map(|o| T::from_f64(float_lane(kind, lane(o))))
            .collect()
    } else {
        (0..outer).map(|o| int_lane(kind, lane(o))).collect()
    };
    let out_shape: Vec<usize> = (0..shape.len())
        .filter_map(|i| match (axes.contains(&i), keep_dims) {
            (false, _) => Some(shape[i]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    Ok(Tensor::from_vec(out, &out_shape).expect("element count of a reduction"))
}

/// `max` that propagates NaN.
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

fn nan_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn float_lane<T: Elem>(kind: ReduceKind, xs: &[T]) -> f64 {
    let v = || xs.iter().map(|x| x.to_f64());
    match kind {
        ReduceKind::Sum => v().sum(),
        ReduceKind::Mean => v().sum::<f64>() / xs.len() as f64,
        ReduceKind::Max => v().fold(f64::NEG_INFINITY, nan_max),
        ReduceKind::Min => v().fold(f64::INFINITY, nan_min),
        ReduceKind::Prod => v().product(),
        ReduceKind::L1 => v().map(f64::abs).sum(),
        ReduceKind::L2 => v().map(|x| x * x).sum::<f64>().sqrt(),
        ReduceKind::LogSum => v().sum::<f64>().ln(),
        ReduceKind::LogSumExp => log_sum_exp(v()),
        ReduceKind::SumSquare => v().map(|x| x * x).sum(),
    }
}

/// `log Σ eˣ`, shifted by the maximum so no term overflows.
fn log_sum_exp(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = xs.clone().fold(f64::NEG_INFINITY, nan_max);
    if m.is_infinite() {
        return m;
    }
    m + xs.map(|x| (x - m).exp()).sum::<f64>().ln()
}

fn int_lane<T: Elem>(kind: ReduceKind, xs: &[T]) -> T {
    let v = || xs.iter().map(|x| x.to_i128());
    let sum = |it: &mut dyn Iterator<Item = i128>| it.fold(0i128, i128::wrapping_add);
    let via_float = |x: f64| T::from_f64(x);
    match kind {
        ReduceKind::Sum => T::from_i128(sum(&mut v())),
        ReduceKind::Mean if xs.is_empty() => T::from_i128(0),
        ReduceKind::Mean => T::from_i128(sum(&mut v()) / xs.len() as i128),
        ReduceKind::Max => v()
            .max()
            .map_or_else(|| T::from_f64(f64::NEG_INFINITY), T::from_i128),
        ReduceKind::Min => v()
            .min()
            .map_or_else(|| T::from_f64(f64::INFINITY), T::from_i128),
        ReduceKind::Prod => T::from_i128(v().fold(1i128, i128::wrapping_mul)),
        ReduceKind::L1 => T::from_i128(sum(&mut v().map(i128::wrapping_abs))),
        ReduceKind::SumSquare => T::from_i128(sum(&mut v().map(|x| x.wrapping_mul(x)))),
        ReduceKind::L2 => via_float(
            xs.iter()
                .map(|x| x.to_f64() * x.to_f64())
                .sum::<f64>()
                .sqrt(),
        ),
        ReduceKind::LogSum => via_float(xs.iter().map(|x| x.to_f64()).sum::<f64>().ln()),
        ReduceKind::LogSumExp => via_float(log_sum_exp(xs.iter().map(|x| x.to_f64()))),
    }
}

/// Index of the max or min along `axis`. NaN counts as the extreme for both.
pub(crate) fn arg_reduce(
    op: &Op,
    kind: ArgKind,
    x: &Tensor,
    axis: usize,
    keep_dims: bool,
    last: bool,
) -> Result<Tensor> {
    if axis >= x.rank() {
        return Err(op_err(
            op,
            format!("axis {axis} is out of range for rank {}", x.rank()),
        ));
    }
    let others: usize = x
        .shape()
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != axis)
        .map(|(_, &d)| d)
        .product();
    if x.shape()[axis] == 0 && others > 0 {
        return Err(op_err(op, "cannot take the arg-extreme of an empty axis"));
    }
    let out: ArrayD<i64> = dispatch!(x, a => a.map_axis(Axis(axis), |lane| {
        let mut best = 0usize;
        for (i, &v) in lane.iter().enumerate().skip(1) {
            if better(kind, v, lane[best], last) {
                best = i;
            }
        }
        best as i64
    }));
    let out = if keep_dims {
        out.insert_axis(Axis(axis))
    } else {
        out
    };
    Ok(Tensor::from_array(out))
}

/// True if `v` should replace the current best `b`.
#[allow(clippy::eq_op)]
fn better<T: Elem>(kind: ArgKind, v: T, b: T, last: bool) -> bool {
    let (v_nan, b_nan) = (v != v, b != b);
    if b_nan {
        return last && v_nan;
    }
    if v_nan {
        return true;
    }
    match kind {
        ArgKind::Max => v > b || (last && v == b),
        ArgKind::Min => v < b || (last && v == b),
    }
}

/// Softmax or log-softmax along `axis`, computed in f64 after subtracting the maximum.
pub(crate) fn softmax(op: &Op, x: &Tensor, axis: usize, log: bool) -> Result<Tensor> {
    if axis >= x.rank() {
        return Err(op_err(
            op,
            format!("axis {axis} is out of range for rank {}", x.rank()),
        ));
    }
    if !x.dtype().is_float() {
        return Err(bad_dtype(op, x.dtype()));
    }
    Ok(dispatch!(x, a => softmax_typed(a, axis, log)))
}

fn softmax_typed<T: Elem>(a: &ArrayViewD<'_, T>, axis: usize, log: bool) -> Tensor {
    let mut v = a.map(|x| x.to_f64());
    for mut lane in v.lanes_mut(Axis(axis)) {
        let m = lane.iter().copied().fold(f64::NEG_INFINITY, nan_max);
        lane.mapv_inplace(|x| x - m);
        let s: f64 = lane.iter().map(|x| x.exp()).sum();
        if log {
            lane.mapv_inplace(|x| x - s.ln());
        } else {
            lane.mapv_inplace(|x| x.exp() / s);
        }
    }
    T::wrap(v.mapv(T::from_f64).into_shared())
}

#[cfg(test)]
mod tests {
    use crate::interp::eval_op;
    use crate::{ArgKind, Bindings, Op, ReduceKind, Tensor};

    fn red(kind: ReduceKind, x: &Tensor, axes: &[usize], keep_dims: bool) -> Tensor {
        let op = Op::Reduce {
            kind,
            axes: axes.to_vec(),
            keep_dims,
        };
        eval_op(&op, std::slice::from_ref(x), &Bindings::new())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn reduce_over_axes() {
        let x = Tensor::from_vec((1..=6).map(|v| v as f32).collect(), &[2, 3]).unwrap();
        let s = red(ReduceKind::Sum, &x, &[1], false);
        assert_eq!((s.shape(), s.to_f64_vec()), (&[2][..], vec![6.0, 15.0]));
        let s = red(ReduceKind::Mean, &x, &[0], true);
        assert_eq!(
            (s.shape(), s.to_f64_vec()),
            (&[1, 3][..], vec![2.5, 3.5, 4.5])
        );
        assert_eq!(
            red(ReduceKind::Prod, &x, &[0, 1], false).to_f64_vec(),
            vec![720.0]
        );
        assert_eq!(
            red(ReduceKind::L2, &x, &[0], false).to_f64_vec()[0],
            17f64.sqrt() as f32 as f64
        );
        let lse = red(
            ReduceKind::LogSumExp,
            &Tensor::from_vec(vec![1000.0f32, 1000.0], &[2]).unwrap(),
            &[0],
            false,
        );
        assert!((lse.to_f64_vec()[0] - (1000.0 + 2f64.ln())).abs() < 1e-3);
    }

    #[test]
    fn empty_axes_reduce_each_element() {
        let x = Tensor::from_vec(vec![-2i32, 3], &[2]).unwrap();
        assert_eq!(
            red(ReduceKind::SumSquare, &x, &[], false).to_i64_vec(),
            vec![4, 9]
        );
        assert_eq!(
            red(ReduceKind::Max, &x, &[], false).to_i64_vec(),
            vec![-2, 3]
        );
    }

    #[test]
    fn empty_sets_give_identities() {
        let x = Tensor::from_vec(Vec::<f32>::new(), &[2, 0]).unwrap();
        assert_eq!(
            red(ReduceKind::Sum, &x, &[1], false).to_f64_vec(),
            vec![0.0, 0.0]
        );
        assert_eq!(
            red(ReduceKind::Prod, &x, &[1], false).to_f64_vec(),
            vec![1.0, 1.0]
        );
        assert_eq!(
            red(ReduceKind::Max, &x, &[1], true).to_f64_vec(),
            vec![f64::NEG_INFINITY; 2]
        );
        assert_eq!(
            red(ReduceKind::Min, &x, &[1], true).to_f64_vec(),
            vec![f64::INFINITY; 2]
        );
        assert_eq!(
            red(ReduceKind::LogSum, &x, &[1], true).to_f64_vec(),
            vec![f64::NEG_INFINITY; 2]
        );
        let i = Tensor::from_vec(Vec::<i32>::new(), &[0]).unwrap();
        assert_eq!(
            red(ReduceKind::Max, &i, &[0], false).to_i64_vec(),
            vec![i32::MIN as i64]
        );
        assert_eq!(
            red(ReduceKind::Min, &i, &[0], false).to_i64_vec(),
            vec![i32::MAX as i64]
        );
    }

    #[test]
    fn integer_reductions_wrap() {
        let x = Tensor::from_vec(vec![100i8, 100], &[2]).unwrap();
        assert_eq!(
            red(ReduceKind::Sum, &x, &[0], false).to_i64_vec(),
            vec![-56]
        );
        assert_eq!(
            red(
                ReduceKind::Mean,
                &Tensor::from_vec(vec![-3i64, 0], &[2]).unwrap(),
                &[0],
                false
            )
            .to_i64_vec(),
            vec![-1]
        );
    }

    #[test]
    fn max_propagates_nan() {
        let x = Tensor::from_vec(vec![1.0f64, f64::NAN, 3.0], &[3]).unwrap();
        assert!(red(ReduceKind::Max, &x, &[0], false).to_f64_vec()[0].is_nan());
    }

    #[test]
    fn arg_reduce_ties_and_keep_dims() {
        let x = Tensor::from_vec(vec![1i32, 5, 5, 0, 0, 2], &[2, 3]).unwrap();
        let arg = |kind, keep_dims, select_last| {
            let op = Op::ArgReduce {
                kind,
                axis: 1,
                keep_dims,
                select_last,
            };
            eval_op(&op, std::slice::from_ref(&x), &Bindings::new())
                .unwrap()
                .remove(0)
        };
        assert_eq!(arg(ArgKind::Max, false, false).to_i64_vec(), vec![1, 2]);
        assert_eq!(arg(ArgKind::Max, false, true).to_i64_vec(), vec![2, 2]);
        assert_eq!(arg(ArgKind::Min, true, false).to_i64_vec(), vec![0, 0]);
        assert_eq!(arg(ArgKind::Min, true, true).shape(), &[2, 1]);
        assert_eq!(arg(ArgKind::Min, true, true).to_i64_vec(), vec![0, 1]);
        let e = Tensor::from_vec(Vec::<f32>::new(), &[2, 0]).unwrap();
        let op = Op::ArgReduce {
            kind: ArgKind::Max,
            axis: 1,
            keep_dims: false,
            select_last: false,
        };
        assert!(eval_op(&op, &[e], &Bindings::new()).is_err());
    }

    #[test]
    fn softmax_is_stable() {
        let x = Tensor::from_vec(vec![1000.0f32, 1000.0, 0.0, 2f32.ln()], &[2, 2]).unwrap();
        let s = eval_op(
            &Op::Softmax {
                axis: 1,
                log: false,
            },
            std::slice::from_ref(&x),
            &Bindings::new(),
        )
        .unwrap();
        let v = s[0].to_f64_vec();
        assert_eq!(v[..2], [0.5, 0.5]);
        assert!((v[2] - 1.0 / 3.0).abs() < 1e-6 && (v[3] - 2.0 / 3.0).abs() < 1e-6);
        let l = eval_op(&Op::Softmax { axis: 0, log: true }, &[x], &Bindings::new()).unwrap();
        assert!((l[0].to_f64_vec()[0]).abs() < 1e-6);
    }
}
