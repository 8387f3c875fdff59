//! `range` and the running reductions of `scan` (cumsum, cumprod).
//! Floats accumulate in f64 and integers in wrapping i128, rounding each output once.

use super::num::same;
use super::{bad_dtype, check_alloc, eval_size, op_err, Result};
use crate::{dispatch, ArcArrayD, Bindings, Dim, Elem, Op, ScanKind, Tensor};
use ndarray::ArrayViewD;
use ndarray::Axis;

/// `start + i * delta` for `i` in `0..len`.
pub(crate) fn range(
    op: &Op,
    start: &Tensor,
    delta: &Tensor,
    len: &Dim,
    b: &Bindings,
) -> Result<Tensor> {
    if start.len() != 1 || delta.len() != 1 || start.dtype() == crate::DType::Bool {
        return Err(op_err(
            op,
            format!("start and delta must be numeric scalars, got {start:?} and {delta:?}"),
        ));
    }
    let n = eval_size(op, len, b)?;
    check_alloc(op, &[n])?;
    dispatch!(start, s => Ok(Elem::wrap(range_typed(op, s, delta, n)?)))
}

fn range_typed<T: Elem>(
    op: &Op,
    start: &ArrayViewD<'_, T>,
    delta: &Tensor,
    n: usize,
) -> Result<ArcArrayD<T>> {
    let s = start.iter().next().copied().expect("one element");
    let d = same::<T>(op, delta)?
        .iter()
        .next()
        .copied()
        .expect("one element");
    let v: Vec<T> = if T::DTYPE.is_float() {
        (0..n)
            .map(|i| T::from_f64(s.to_f64() + i as f64 * d.to_f64()))
            .collect()
    } else {
        (0..n)
            .map(|i| {
                T::from_i128(
                    s.to_i128()
                        .wrapping_add((i as i128).wrapping_mul(d.to_i128())),
                )
            })
            .collect()
    };
    Ok(ndarray::Array1::from(v).into_dyn().into_shared())
}

/// Running sum or product along `axis`; `exclusive` shifts by one (starting from the
/// identity), `reverse` runs from the end.
pub(crate) fn scan(
    op: &Op,
    x: &Tensor,
    kind: ScanKind,
    axis: usize,
    exclusive: bool,
    reverse: bool,
) -> Result<Tensor> {
    if axis >= x.rank() {
        return Err(op_err(
            op,
            format!("axis {axis} is out of range for rank {}", x.rank()),
        ));
    }
    if x.dtype() == crate::DType::Bool {
        return Err(bad_dtype(op, x.dtype()));
    }
    Ok(dispatch!(x, a => Elem::wrap(scan_typed(a, kind, axis, exclusive, reverse))))
}

fn scan_typed<T: Elem>(
    a: &ArrayViewD<'_, T>,
    kind: ScanKind,
    axis: usize,
    exclusive: bool,
    reverse: bool,
) -> ArcArrayD<T> {
    let mut out = a.to_owned();
    for mut lane in out.lanes_mut(Axis(axis)) {
        let n = lane.len();
        let order: Vec<usize> = if reverse {
            (0..n).rev().collect()
        } else {
            (0..n).collect()
        };
        if T::DTYPE.is_float() {
            let mut acc = if kind == ScanKind::Sum { 0.0 } else { 1.0 };
            for i in order {
                let next = if kind == ScanKind::Sum {
                    acc + lane[i].to_f64()
                } else {
                    acc * lane[i].to_f64()
                };
                lane[i] = T::from_f64(if exclusive { acc } else { next });
                acc = next;
            }
        } else {
            let mut acc: i128 = if kind == ScanKind::Sum { 0 } else { 1 };
            for i in order {
                let x = lane[i].to_i128();
                let next = if kind == ScanKind::Sum {
                    acc.wrapping_add(x)
                } else {
                    acc.wrapping_mul(x)
                };
                lane[i] = T::from_i128(if exclusive { acc } else { next });
                acc = T::from_i128(next).to_i128();
            }
        }
    }
    out.into_shared()
}

#[cfg(test)]
mod tests {
    use crate::interp::eval_op;
    use crate::{Bindings, Dim, Op, ScanKind, Tensor};

    fn scan(x: &Tensor, kind: ScanKind, exclusive: bool, reverse: bool) -> Vec<f64> {
        let op = Op::Scan {
            kind,
            axis: 0,
            exclusive,
            reverse,
        };
        eval_op(&op, std::slice::from_ref(x), &Bindings::new()).unwrap()[0].to_f64_vec()
    }

    #[test]
    fn cumsum_variants() {
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
        assert_eq!(scan(&x, ScanKind::Sum, false, false), vec![1.0, 3.0, 6.0]);
        assert_eq!(scan(&x, ScanKind::Sum, true, false), vec![0.0, 1.0, 3.0]);
        assert_eq!(scan(&x, ScanKind::Sum, false, true), vec![6.0, 5.0, 3.0]);
        assert_eq!(scan(&x, ScanKind::Sum, true, true), vec![5.0, 3.0, 0.0]);
        assert_eq!(scan(&x, ScanKind::Prod, true, false), vec![1.0, 1.0, 2.0]);
        let i = Tensor::from_vec(vec![100i8, 100, 1], &[3]).unwrap();
        assert_eq!(
            scan(&i, ScanKind::Sum, false, false),
            vec![100.0, -56.0, -55.0]
        );
    }

    #[test]
    fn cumsum_along_inner_axis() {
        let x = Tensor::from_vec(vec![1i64, 2, 3, 4], &[2, 2]).unwrap();
        let op = Op::Scan {
            kind: ScanKind::Sum,
            axis: 1,
            exclusive: false,
            reverse: false,
        };
        assert_eq!(
            eval_op(&op, &[x], &Bindings::new()).unwrap()[0].to_i64_vec(),
            vec![1, 3, 3, 7]
        );
    }

    #[test]
    fn ranges() {
        let b: Bindings = [("n".to_string(), 4)].into_iter().collect();
        let r = eval_op(
            &Op::Range { len: Dim::sym("n") },
            &[Tensor::scalar(10i64), Tensor::scalar(-3i64)],
            &b,
        )
        .unwrap();
        assert_eq!(r[0].to_i64_vec(), vec![10, 7, 4, 1]);
        let r = eval_op(
            &Op::Range {
                len: Dim::from(3i64),
            },
            &[Tensor::scalar(0.5f32), Tensor::scalar(0.25f32)],
            &b,
        )
        .unwrap();
        assert_eq!(r[0].to_f64_vec(), vec![0.5, 0.75, 1.0]);
        let r = eval_op(
            &Op::Range {
                len: Dim::from(0i64),
            },
            &[Tensor::scalar(0i32), Tensor::scalar(1i32)],
            &b,
        )
        .unwrap();
        assert_eq!(r[0].shape(), &[0]);
    }
}
