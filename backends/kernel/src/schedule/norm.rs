//! Layer and RMS normalization over the last axis as one [`Row`] kernel per node: the
//! row's statistics (mean, then the inverse standard deviation of the centered row; or the
//! inverse root mean square) are reductions over the row, and the normalized, scaled row
//! is the map. Each row is read from memory once; the later passes find it in cache.

use super::{ScheduleError, Scheduler};
use crate::kernel::*;
use kiln_ir::Dim;
use kiln_ir::{BinaryOp, Node, UnaryOp};

/// Which normalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Norm {
    /// `(x - mean) · rsqrt(var + eps) · scale + bias`.
    Layer,
    /// `x · rsqrt(mean(x²) + eps) · scale`.
    Rms,
}

impl Scheduler<'_> {
    pub(super) fn norm(
        &mut self,
        node: &Node,
        norm: Norm,
        epsilon: f32,
    ) -> Result<(), ScheduleError> {
        let x = self.view(node.inputs[0]).clone();
        let unsupported = |reason: &str| ScheduleError::Unsupported {
            node: self.current,
            name: node.name.clone(),
            op: node.op.name(),
            reason: reason.into(),
        };
        let Some((len, rows)) = x.shape.split_last() else {
            return Err(unsupported("the input must have rank at least 1"));
        };
        for p in &node.inputs[1..] {
            if !broadcasts_to(&self.view(*p).shape, &x.shape) {
                return Err(unsupported("a parameter does not broadcast to the input"));
            }
        }
        let out = self.temp(node.outputs[0])?;
        if out.shape.iter().any(Dim::is_zero) {
            // Nothing to write (and an empty row's mean would divide by zero).
            return Ok(());
        }
        let t = x.dtype;
        let load_x = |e: &mut Expr| e.push(ExprNode::Load(Access::contiguous(x.buf, &x.shape)), t);
        // `rsqrt(acc / count + eps)`: the inverse root of a mean over the row.
        let inverse_root = || {
            let mut post = Expr::default();
            let acc = post.push(ExprNode::Acc, t);
            let n = post.push_size(len, t);
            let mean = post.push(ExprNode::Binary(BinaryOp::Div, acc, n), t);
            let eps = post.push(ExprNode::Const(Scalar::Float(epsilon as f64)), t);
            let shifted = post.push(ExprNode::Binary(BinaryOp::Add, mean, eps), t);
            post.push(ExprNode::Unary(UnaryOp::Rsqrt, shifted), t);
            post
        };
        let mut stats = Vec::new();
        let mut map = Expr::default();
        let xm = load_x(&mut map);
        let normalized = match norm {
            Norm::Layer => {
                // Stat 0: the mean.
                let mut value = Expr::default();
                load_x(&mut value);
                let mut post = Expr::default();
                let acc = post.push(ExprNode::Acc, t);
                let n = post.push_size(len, t);
                post.push(ExprNode::Binary(BinaryOp::Div, acc, n), t);
                stats.push(RowStat {
                    value,
                    combine: Combine::Sum,
                    post,
                });
                // Stat 1: rsqrt of the centered row's mean square, plus epsilon.
                let mut value = Expr::default();
                let xv = load_x(&mut value);
                let mean = value.push(ExprNode::Stat(0), t);
                let d = value.push(ExprNode::Binary(BinaryOp::Sub, xv, mean), t);
                value.push(ExprNode::Binary(BinaryOp::Mul, d, d), t);
                stats.push(RowStat {
                    value,
                    combine: Combine::Sum,
                    post: inverse_root(),
                });
                let mean = map.push(ExprNode::Stat(0), t);
                let d = map.push(ExprNode::Binary(BinaryOp::Sub, xm, mean), t);
                let r = map.push(ExprNode::Stat(1), t);
                map.push(ExprNode::Binary(BinaryOp::Mul, d, r), t)
            }
            Norm::Rms => {
                let mut value = Expr::default();
                let xv = load_x(&mut value);
                value.push(ExprNode::Binary(BinaryOp::Mul, xv, xv), t);
                stats.push(RowStat {
                    value,
                    combine: Combine::Sum,
                    post: inverse_root(),
                });
                let r = map.push(ExprNode::Stat(0), t);
                map.push(ExprNode::Binary(BinaryOp::Mul, xm, r), t)
            }
        };
        // The same order of operations as the interpreter's decomposition.
        let scale = self.operand(&mut map, node.inputs[1], &x.shape);
        let scaled = map.push(ExprNode::Binary(BinaryOp::Mul, normalized, scale), t);
        if norm == Norm::Layer {
            let bias = self.operand(&mut map, node.inputs[2], &x.shape);
            map.push(ExprNode::Binary(BinaryOp::Add, scaled, bias), t);
        }
        self.push(Kernel::Row(Row {
            shape: rows.to_vec(),
            len: len.clone(),
            stats,
            out: Access::contiguous(out.buf, &out.shape),
            map,
        }));
        Ok(())
    }
}

/// True if a tensor of `shape` broadcasts to `to` without changing it (numpy rules).
fn broadcasts_to(shape: &[Dim], to: &[Dim]) -> bool {
    shape.len() <= to.len()
        && shape
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(p, x)| p.is_one() || p == x)
}
