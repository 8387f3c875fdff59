//! Elementwise ops (unary, binary, where, casts) become one loop nest over the output.

use super::{broadcast_strides, ScheduleError, Scheduler, View};
use crate::kernel::*;
use kiln_ir::{Dim, Node, Op, Tensor, ValueId};

impl Scheduler<'_> {
    pub(super) fn elementwise(&mut self, node: &Node) -> Result<(), ScheduleError> {
        let out = self.temp(node.outputs[0])?;
        let mut expr = Expr::default();
        let args: Vec<usize> = node
            .inputs
            .iter()
            .map(|v| self.operand(&mut expr, *v, &out.shape))
            .collect();
        let dtype = out.dtype;
        let body = match &node.op {
            Op::Unary(u) => ExprNode::Unary(*u, args[0]),
            Op::Binary(b) => ExprNode::Binary(*b, args[0], args[1]),
            Op::Where => ExprNode::Where(args[0], args[1], args[2]),
            Op::Cast { .. } => ExprNode::Cast(args[0]),
            Op::Bitcast { .. } => ExprNode::Bitcast(args[0]),
            _ => unreachable!("elementwise() is only called for elementwise ops"),
        };
        expr.push(body, dtype);
        self.push(Kernel::Loop(LoopNest {
            out: Access::contiguous(out.buf, &out.shape),
            shape: out.shape,
            expr,
            scatter: Vec::new(),
            serial: false,
        }));
        Ok(())
    }

    /// Reads value `v` broadcast to `shape`: a scalar constant becomes an inline constant,
    /// anything else a load.
    pub(crate) fn operand(&self, expr: &mut Expr, v: ValueId, shape: &[Dim]) -> usize {
        let view = self.view(v).clone();
        if let Some(c) = self.scalar_const(&view) {
            return expr.push(ExprNode::Const(c), view.dtype);
        }
        expr.push(ExprNode::Load(broadcast_access(&view, shape)), view.dtype)
    }

    /// The value of a one-element constant buffer.
    pub(crate) fn scalar_const(&self, view: &View) -> Option<Scalar> {
        let BufferKind::Const(t) = &self.program.buffers[view.buf].kind else {
            return None;
        };
        if t.len() != 1 {
            return None;
        }
        Some(scalar_of(t))
    }
}

/// The first element of `t`, widened.
pub(crate) fn scalar_of(t: &Tensor) -> Scalar {
    if t.dtype().is_float() {
        Scalar::Float(t.to_f64_vec()[0])
    } else if t.dtype() == kiln_ir::DType::U64 {
        Scalar::Int(
            t.as_array::<u64>()
                .and_then(|a| a.iter().next().copied())
                .unwrap_or(0) as i64,
        )
    } else {
        Scalar::Int(t.to_i64_vec()[0])
    }
}

/// An access reading `view` broadcast to `shape`.
pub(crate) fn broadcast_access(view: &View, shape: &[Dim]) -> Access {
    Access {
        buf: view.buf,
        offset: Dim::from(0i64),
        strides: broadcast_strides(&view.shape, shape),
    }
}

impl Access {
    /// Row-major access of a whole buffer of `shape`.
    pub fn contiguous(buf: BufId, shape: &[Dim]) -> Access {
        Access {
            buf,
            offset: Dim::from(0i64),
            strides: super::contiguous_strides(shape),
        }
    }
}
