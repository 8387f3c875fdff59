//! The rotary embedding ([`kiln_ir::Op::Rotary`]) as two loop nests, one per half of the
//! last axis, each reading `x` at its own half and at the other one (the "rotated" half
//! is just another offset), so `rotate_half(x)` is never materialized:
//! `y[.., j] = x[.., j]·cos[.., j] - x[.., j+h]·sin[.., j]` for `j < h`, and
//! `y[.., j] = x[.., j]·cos[.., j] + x[.., j-h]·sin[.., j]` for `j ≥ h`.

use super::elementwise::broadcast_access;
use super::{ScheduleError, Scheduler};
use crate::kernel::*;
use kiln_ir::{BinaryOp, Dim, Node, UnaryOp};

impl Scheduler<'_> {
    pub(super) fn rotary(&mut self, node: &Node) -> Result<(), ScheduleError> {
        let x = self.view(node.inputs[0]).clone();
        let [cos, sin] = [1, 2].map(|i| self.view(node.inputs[i]).clone());
        let out = self.temp(node.outputs[0])?;
        let Some((d, _)) = x.shape.split_last() else {
            return Err(ScheduleError::Unsupported {
                node: self.current,
                name: node.name.clone(),
                op: node.op.name(),
                reason: "rotary needs rank at least 1".into(),
            });
        };
        let h = d.div_floor(2);
        if out.shape.iter().any(Dim::is_zero) {
            return Ok(());
        }
        let mut half_shape = x.shape.clone();
        *half_shape.last_mut().expect("rank ≥ 1") = h.clone();
        let t = x.dtype;
        // Offsets (in elements) of element [.., h] from element [.., 0] of each operand.
        let shifted = |mut a: Access, by: &Dim| {
            if let Some(s) = a.strides.last() {
                a.offset = &a.offset + &(by * s);
            }
            a
        };
        let x_access = broadcast_access(&x, &x.shape);
        let (cos_access, sin_access) = (
            broadcast_access(&cos, &x.shape),
            broadcast_access(&sin, &x.shape),
        );
        let zero = Dim::from(0i64);
        for (own, other, sign) in [(&zero, &h, true), (&h, &zero, false)] {
            let mut e = Expr::default();
            let xs = e.push(ExprNode::Load(shifted(x_access.clone(), own)), t);
            let c = e.push(ExprNode::Load(shifted(cos_access.clone(), own)), t);
            let xo = e.push(ExprNode::Load(shifted(x_access.clone(), other)), t);
            let s = e.push(ExprNode::Load(shifted(sin_access.clone(), own)), t);
            let xo = if sign {
                e.push(ExprNode::Unary(UnaryOp::Neg, xo), t)
            } else {
                xo
            };
            let a = e.push(ExprNode::Binary(BinaryOp::Mul, xs, c), t);
            let b = e.push(ExprNode::Binary(BinaryOp::Mul, xo, s), t);
            e.push(ExprNode::Binary(BinaryOp::Add, a, b), t);
            let dst = shifted(Access::contiguous(out.buf, &out.shape), own);
            self.push(Kernel::Loop(LoopNest {
                out: dst,
                shape: half_shape.clone(),
                expr: e,
                scatter: Vec::new(),
                serial: false,
            }));
        }
        Ok(())
    }
}
