//! Batched matrix product with numpy batch broadcasting.

use super::elementwise::broadcast_shapes;
use super::num::{num_match, same, Num};
use super::{check_alloc, op_err, Result};
use crate::{ArcArrayD, Op, Tensor};
use ndarray::ArrayViewD;
use ndarray::{Array3, Axis, Ix2, IxDyn};

/// `a[..., m, k] × b[..., k, n]`; floats go through ndarray's `dot`, integers wrap.
pub(crate) fn matmul(op: &Op, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    num_match!(op, a, x => Ok(crate::Elem::wrap(matmul_typed(op, x, &same(op, b)?)?)))
}

fn matmul_typed<T: Num>(
    op: &Op,
    a: &ArrayViewD<'_, T>,
    b: &ArrayViewD<'_, T>,
) -> Result<ArcArrayD<T>> {
    let (ra, rb) = (a.ndim(), b.ndim());
    if ra < 2 || rb < 2 {
        return Err(op_err(
            op,
            format!("inputs need rank >= 2, got {ra} and {rb}"),
        ));
    }
    let (m, k) = (a.shape()[ra - 2], a.shape()[ra - 1]);
    let (k2, n) = (b.shape()[rb - 2], b.shape()[rb - 1]);
    if k != k2 {
        return Err(op_err(op, format!("contraction dims differ ({k} vs {k2})")));
    }
    let batch =
        broadcast_shapes(&[&a.shape()[..ra - 2], &b.shape()[..rb - 2]]).ok_or_else(|| {
            op_err(
                op,
                format!(
                    "batch dims of {:?} and {:?} do not broadcast",
                    a.shape(),
                    b.shape()
                ),
            )
        })?;
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    check_alloc(op, &out_shape)?;
    let n_batch: usize = batch.iter().product();
    let lhs = batched(a, &batch, m, k);
    let rhs = batched(b, &batch, k, n);
    let mut out = Array3::from_elem((n_batch, m, n), T::default());
    for i in 0..n_batch {
        let (l, r) = (lhs.index_axis(Axis(0), i), rhs.index_axis(Axis(0), i));
        let l = l.into_dimensionality::<Ix2>().expect("rank 2");
        let r = r.into_dimensionality::<Ix2>().expect("rank 2");
        out.index_axis_mut(Axis(0), i).assign(&T::matmul2(l, r));
    }
    Ok(out
        .into_shape_with_order(IxDyn(&out_shape))
        .expect("element count")
        .into_shared())
}

/// `x` broadcast to `batch + [r, c]` and flattened to `[Πbatch, r, c]`.
fn batched<T: Num>(x: &ArrayViewD<'_, T>, batch: &[usize], r: usize, c: usize) -> Array3<T> {
    let mut full = batch.to_vec();
    full.extend([r, c]);
    let n: usize = batch.iter().product();
    let b = x.broadcast(IxDyn(&full)).expect("batch dims broadcast");
    let owned = b.as_standard_layout().into_owned();
    owned
        .into_shape_with_order((n, r, c))
        .expect("element count")
}

#[cfg(test)]
mod tests {
    use crate::interp::eval_op;
    use crate::{Bindings, Op, Tensor};

    fn mm(a: Tensor, b: Tensor) -> Tensor {
        eval_op(&Op::MatMul, &[a, b], &Bindings::new())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn two_by_two() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let b = Tensor::from_vec(vec![5.0f32, 6.0, 7.0, 8.0], &[2, 2]).unwrap();
        assert_eq!(mm(a, b).to_f64_vec(), vec![19.0, 22.0, 43.0, 50.0]);
    }

    #[test]
    fn broadcast_batches() {
        let a = Tensor::from_vec((0..12).map(|v| v as f64).collect(), &[2, 1, 2, 3]).unwrap();
        let b = Tensor::from_vec(
            vec![
                1.0f64, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 0.0, 0.0, 2.0, 2.0, 2.0,
            ],
            &[2, 3, 2],
        )
        .unwrap();
        let c = mm(a, b);
        assert_eq!(c.shape(), &[2, 2, 2, 2]);
        // batch (0, 0): [[0,1,2],[3,4,5]] x [[1,0],[0,1],[1,1]]
        assert_eq!(c.to_f64_vec()[..4], [2.0, 3.0, 8.0, 9.0]);
        // batch (1, 1): [[6,7,8],[9,10,11]] x 2*[[1,0],[0,1],[1,1]]
        assert_eq!(c.to_f64_vec()[12..], [28.0, 30.0, 40.0, 42.0]);
    }

    #[test]
    fn integers_wrap_and_empty_k() {
        let a = Tensor::from_vec(vec![100i8, 100], &[1, 2]).unwrap();
        let b = Tensor::from_vec(vec![1i8, 1], &[2, 1]).unwrap();
        assert_eq!(mm(a, b).to_i64_vec(), vec![-56]);
        let a = Tensor::from_vec(Vec::<f32>::new(), &[2, 0]).unwrap();
        let b = Tensor::from_vec(Vec::<f32>::new(), &[0, 3]).unwrap();
        assert_eq!(mm(a, b).to_f64_vec(), vec![0.0; 6]);
    }

    #[test]
    fn mismatched_k_is_an_error() {
        let a = Tensor::zeros(crate::DType::F32, &[2, 3]).unwrap();
        let e = eval_op(&Op::MatMul, &[a.clone(), a], &Bindings::new()).unwrap_err();
        assert_eq!(e.to_string(), "matmul: contraction dims differ (3 vs 2)");
    }

    #[test]
    fn bert_sized_product() {
        let a = Tensor::full(crate::DType::F32, &[128, 384], 1.0).unwrap();
        let b = Tensor::full(crate::DType::F32, &[384, 384], 0.5).unwrap();
        let c = mm(a, b);
        assert_eq!(c.to_f64_vec()[0], 192.0);
    }
}
