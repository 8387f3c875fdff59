//! ArgMax/ArgMin as two reductions: the extreme along the axis (NaN propagates), then the
//! first (or, with `select_last`, the last) index holding it. The index comes from an
//! iota buffer `0..len` read along the reduced axis (see `schedule/iota.rs`).

use super::{contiguous_strides, ScheduleError, Scheduler};
use crate::kernel::*;
use kiln_ir::{ArgKind, BinaryOp, DType, Dim, Node, UnaryOp};

impl Scheduler<'_> {
    /// `out[p] = argmax/argmin of x[p with axis = j] over j`, with the interpreter's ties
    /// (first index, or last with `select_last`) and NaNs (the first NaN wins, or the last).
    pub(super) fn arg_reduce(
        &mut self,
        node: &Node,
        kind: ArgKind,
        axis: usize,
        select_last: bool,
    ) -> Result<(), ScheduleError> {
        let x = self.view(node.inputs[0]).clone();
        let out = self.temp(node.outputs[0])?;
        let len_dim = x.shape.get(axis).cloned().unwrap_or(Dim::from(0i64));
        let mut kept_shape = x.shape.clone();
        kept_shape.remove(axis);
        if kept_shape.iter().product::<Dim>().is_zero() {
            return Ok(());
        }
        if len_dim.is_zero() {
            return Err(ScheduleError::Unsupported {
                node: self.current,
                name: node.name.clone(),
                op: node.op.name(),
                reason: "the arg-extreme of an empty axis".into(),
            });
        }
        // Iteration space: kept axes, then the reduced axis.
        let own = contiguous_strides(&x.shape);
        let mut x_strides: Vec<Dim> = (0..x.shape.len())
            .filter(|&d| d != axis)
            .map(|d| own[d].clone())
            .collect();
        x_strides.push(own[axis].clone());
        let kept = contiguous_strides(&kept_shape);
        let mut kept_wide = kept.clone();
        kept_wide.push(Dim::from(0i64));
        let load_x = ExprNode::Load(Access {
            buf: x.buf,
            offset: Dim::from(0i64),
            strides: x_strides,
        });
        let combine = match kind {
            ArgKind::Max => Combine::Max,
            ArgKind::Min => Combine::Min,
        };
        let pick = if select_last {
            Combine::Max
        } else {
            Combine::Min
        };
        // Pass 1: the extreme (fmax/fmin propagate NaN, so it is NaN if any element is).
        let best = self.scratch(x.dtype, kept_shape.clone(), node.outputs[0]);
        let mut value = Expr::default();
        value.push(load_x.clone(), x.dtype);
        self.push(Kernel::Reduce(Reduce {
            shape: kept_shape.clone(),
            reduced: vec![len_dim.clone()],
            out: Access {
                buf: best.buf,
                offset: Dim::from(0i64),
                strides: kept.clone(),
            },
            value,
            combine,
            post: acc(x.dtype),
        }));
        // Pass 2: the first (last) index whose element equals the extreme, NaN matching NaN.
        let iota = self.iota(&len_dim, node.outputs[0]);
        let mut v = Expr::default();
        let xv = v.push(load_x, x.dtype);
        let bv = v.push(
            ExprNode::Load(Access {
                buf: best.buf,
                offset: Dim::from(0i64),
                strides: kept_wide,
            }),
            x.dtype,
        );
        let mut iota_strides = vec![Dim::from(0i64); kept_shape.len()];
        iota_strides.push(Dim::from(1i64));
        let j = v.push(
            ExprNode::Load(Access {
                buf: iota,
                offset: Dim::from(0i64),
                strides: iota_strides,
            }),
            DType::I64,
        );
        let mut hit = v.push(ExprNode::Binary(BinaryOp::Equal, xv, bv), DType::Bool);
        if x.dtype.is_float() {
            let x_nan = v.push(ExprNode::Unary(UnaryOp::IsNan, xv), DType::Bool);
            let b_nan = v.push(ExprNode::Unary(UnaryOp::IsNan, bv), DType::Bool);
            hit = v.push(ExprNode::Where(x_nan, b_nan, hit), DType::Bool);
        }
        let miss = match pick {
            Combine::Max => v.push(ExprNode::Const(Scalar::Int(-1)), DType::I64),
            _ => v.push_size(&len_dim, DType::I64),
        };
        v.push(ExprNode::Where(hit, j, miss), DType::I64);
        self.push(Kernel::Reduce(Reduce {
            shape: kept_shape,
            reduced: vec![len_dim],
            out: Access {
                buf: out.buf,
                offset: Dim::from(0i64),
                strides: kept,
            },
            value: v,
            combine: pick,
            post: acc(DType::I64),
        }));
        Ok(())
    }
}

/// The post expression that stores the accumulator as is.
fn acc(dtype: DType) -> Expr {
    let mut e = Expr::default();
    e.push(ExprNode::Acc, dtype);
    e
}
