//! `bitcast`: reinterprets each element's bytes as another dtype of the same width.
//! (`cast` itself is `Tensor::cast`, which already follows ONNX.)

use super::{op_err, Result};
use crate::{DType, Op, Tensor};

/// Reinterprets the little-endian bytes of every element as `to`.
pub(crate) fn bitcast(op: &Op, x: &Tensor, to: DType) -> Result<Tensor> {
    if x.dtype().size_bytes() != to.size_bytes() {
        return Err(op_err(
            op,
            format!("cannot bitcast {} to {to}: widths differ", x.dtype()),
        ));
    }
    Tensor::from_le_bytes(to, x.shape(), &x.to_le_bytes()).map_err(|e| op_err(op, e.to_string()))
}

#[cfg(test)]
mod tests {
    use crate::interp::eval_op;
    use crate::{Bindings, DType, Op, Tensor};

    #[test]
    fn bitcast_round_trips_and_checks_width() {
        let x = Tensor::from_vec(vec![1.0f32, -2.0], &[2]).unwrap();
        let i = eval_op(
            &Op::Bitcast { to: DType::U32 },
            std::slice::from_ref(&x),
            &Bindings::new(),
        )
        .unwrap()
        .remove(0);
        assert_eq!(i.to_i64_vec(), vec![0x3f80_0000, 0xc000_0000]);
        let back = eval_op(&Op::Bitcast { to: DType::F32 }, &[i], &Bindings::new())
            .unwrap()
            .remove(0);
        assert_eq!(back, x);
        assert!(eval_op(&Op::Bitcast { to: DType::I64 }, &[x], &Bindings::new()).is_err());
    }

    #[test]
    fn cast_truncates_toward_zero() {
        let x = Tensor::from_vec(vec![-1.5f32, 2.7, 0.0], &[3]).unwrap();
        let y = eval_op(
            &Op::Cast { to: DType::I32 },
            std::slice::from_ref(&x),
            &Bindings::new(),
        )
        .unwrap()
        .remove(0);
        assert_eq!(y.to_i64_vec(), vec![-1, 2, 0]);
        let b = eval_op(&Op::Cast { to: DType::Bool }, &[x], &Bindings::new())
            .unwrap()
            .remove(0);
        assert_eq!(b.to_i64_vec(), vec![1, 1, 0]);
    }
}
