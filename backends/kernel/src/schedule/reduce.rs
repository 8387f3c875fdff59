//! Reductions and softmax as [`Reduce`] kernels: the IR's reduction kinds become a pre-map
//! in the value expression, a combination, and a post-map on the accumulator.

use super::{contiguous_strides, ScheduleError, Scheduler, View};
use crate::kernel::*;
use kiln_ir::{BinaryOp, DType, Dim, Node, ReduceKind, UnaryOp};

/// The iteration space of reducing `shape` over `axes`: kept axes then reduced axes, with
/// the input's strides in that order.
struct Space {
    kept: Vec<Dim>,
    reduced: Vec<Dim>,
    /// Input strides over `kept ++ reduced`.
    strides: Vec<Dim>,
    /// Input strides over `kept ++ [zeros for reduced]` (reading a kept-shape tensor that
    /// broadcasts over the reduced axes, in the input's layout).
    kept_strides: Vec<Dim>,
}

impl Space {
    fn new(shape: &[Dim], axes: &[usize]) -> Space {
        let own = contiguous_strides(shape);
        let keep: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).collect();
        let kept: Vec<Dim> = keep.iter().map(|&d| shape[d].clone()).collect();
        let mut strides: Vec<Dim> = keep.iter().map(|&d| own[d].clone()).collect();
        strides.extend(axes.iter().map(|&d| own[d].clone()));
        Space {
            reduced: axes.iter().map(|&d| shape[d].clone()).collect(),
            kept_strides: contiguous_strides(&kept),
            kept,
            strides,
        }
    }

    fn count(&self) -> Dim {
        self.reduced.iter().product()
    }

    /// Loads the input over `kept ++ reduced`.
    fn load_input(&self, src: &View) -> ExprNode {
        ExprNode::Load(Access {
            buf: src.buf,
            offset: Dim::from(0i64),
            strides: self.strides.clone(),
        })
    }

    /// Loads a kept-shape buffer over `kept ++ reduced` (broadcast over the reduced axes).
    fn load_kept_wide(&self, buf: BufId) -> ExprNode {
        let mut strides = self.kept_strides.clone();
        strides.extend(self.reduced.iter().map(|_| Dim::from(0i64)));
        ExprNode::Load(Access {
            buf,
            offset: Dim::from(0i64),
            strides,
        })
    }

    /// Loads a kept-shape buffer over `kept`.
    fn load_kept(&self, buf: BufId) -> ExprNode {
        ExprNode::Load(Access {
            buf,
            offset: Dim::from(0i64),
            strides: self.kept_strides.clone(),
        })
    }

    fn reduce(&self, out: BufId, value: Expr, combine: Combine, post: Expr) -> Kernel {
        Kernel::Reduce(Reduce {
            shape: self.kept.clone(),
            reduced: self.reduced.clone(),
            out: Access {
                buf: out,
                offset: Dim::from(0i64),
                strides: self.kept_strides.clone(),
            },
            value,
            combine,
            post,
        })
    }
}

/// The dtype a reduction of `t` accumulates in: `t` itself, except for integers (and bool)
/// where the interpreter's result is not the same computed in `t` with wrapping: a mean
/// (the interpreter sums in i128; i64 holds any narrower sum exactly) and the kinds with a
/// float result (`l2`, `log_sum`, `log_sum_exp`: computed in f64, then cast back). Bool
/// sums count in i64, since a byte would wrap to `false` at 256 `true`s.
/// Halves accumulate in f32 and round once at the end (the interpreter computes in f64;
/// the two agree but for a sum's last-place rounding).
fn accumulator(kind: ReduceKind, t: DType) -> DType {
    if matches!(t, DType::F16 | DType::BF16) {
        return DType::F32;
    }
    if t.is_float() {
        return t;
    }
    match kind {
        ReduceKind::Sum | ReduceKind::L1 | ReduceKind::SumSquare if t == DType::Bool => DType::I64,
        ReduceKind::L2 | ReduceKind::LogSum | ReduceKind::LogSumExp => DType::F64,
        // i64 and u64 means still wrap where the interpreter's i128 sum does not.
        ReduceKind::Mean => DType::I64,
        ReduceKind::Sum
        | ReduceKind::Max
        | ReduceKind::Min
        | ReduceKind::Prod
        | ReduceKind::L1
        | ReduceKind::SumSquare => t,
    }
}

fn acc_only(dtype: DType) -> Expr {
    let mut e = Expr::default();
    e.push(ExprNode::Acc, dtype);
    e
}

impl Scheduler<'_> {
    pub(super) fn reduce(
        &mut self,
        node: &Node,
        kind: ReduceKind,
        axes: &[usize],
    ) -> Result<(), ScheduleError> {
        let src = self.view(node.inputs[0]).clone();
        let out = self.temp(node.outputs[0])?;
        let space = Space::new(&src.shape, axes);
        let t = src.dtype;
        let mut max = None;
        if kind == ReduceKind::LogSumExp {
            let m = self.scratch(t, space.kept.clone(), node.outputs[0]);
            let mut value = Expr::default();
            value.push(space.load_input(&src), t);
            self.push(space.reduce(m.buf, value, Combine::Max, acc_only(t)));
            max = Some(m.buf);
        }
        // The accumulator's dtype: the input's, except where the interpreter computes an
        // integer reduction in a wider type (mean in i128, the float-valued kinds in f64).
        let a = accumulator(kind, t);
        let mut value = Expr::default();
        let mut x = value.push(space.load_input(&src), t);
        if a != t {
            x = value.push(ExprNode::Cast(x), a);
        }
        match kind {
            ReduceKind::L1 => {
                value.push(ExprNode::Unary(UnaryOp::Abs, x), a);
            }
            ReduceKind::L2 | ReduceKind::SumSquare => {
                value.push(ExprNode::Binary(BinaryOp::Mul, x, x), a);
            }
            ReduceKind::LogSumExp => {
                let mut m = value.push(space.load_kept_wide(max.expect("set above")), t);
                if a != t {
                    m = value.push(ExprNode::Cast(m), a);
                }
                // exp(-inf - -inf) is NaN; a lane of -inf contributes exp(-inf) = 0.
                let d = value.push(ExprNode::Binary(BinaryOp::Sub, x, m), a);
                value.push(ExprNode::Unary(UnaryOp::Exp, d), a);
            }
            _ => {}
        }
        let mut post = acc_only(a);
        let acc = 0;
        match kind {
            ReduceKind::Mean => {
                let n = post.push_size(&space.count(), a);
                post.push(ExprNode::Binary(BinaryOp::Div, acc, n), a);
            }
            ReduceKind::L2 => {
                post.push(ExprNode::Unary(UnaryOp::Sqrt, acc), a);
            }
            ReduceKind::LogSum => {
                post.push(ExprNode::Unary(UnaryOp::Log, acc), a);
            }
            ReduceKind::LogSumExp => {
                let l = post.push(ExprNode::Unary(UnaryOp::Log, acc), a);
                let mut m = post.push(space.load_kept(max.expect("set above")), t);
                if a != t {
                    m = post.push(ExprNode::Cast(m), a);
                }
                let r = post.push(ExprNode::Binary(BinaryOp::Add, l, m), a);
                // An infinite max is the result (the interpreter's rule): `exp(∞ - ∞)`
                // would make it NaN.
                let inf = post.push(ExprNode::Unary(UnaryOp::IsInf, m), DType::Bool);
                post.push(ExprNode::Where(inf, m, r), a);
            }
            _ => {}
        }
        if a != t {
            let r = post.root();
            post.push(ExprNode::Cast(r), t);
        }
        self.push(space.reduce(out.buf, value, combine_of(kind), post));
        Ok(())
    }

    /// Softmax: the lane's max, then `exp(x - max)` written to the output, its sum, and the
    /// output divided by the sum in place (so `exp` runs once per element). Log-softmax,
    /// and softmax of halves (computed in f32 and rounded once, so the exponentials are
    /// not stored in the output): the max, the sum of `exp(x - max)`, then
    /// `x - max - log(sum)` or `exp(x - max) / sum`.
    pub(super) fn softmax(
        &mut self,
        node: &Node,
        axis: usize,
        log: bool,
    ) -> Result<(), ScheduleError> {
        let src = self.view(node.inputs[0]).clone();
        let out = self.temp(node.outputs[0])?;
        let space = Space::new(&src.shape, &[axis]);
        let t = src.dtype;
        let half = matches!(t, DType::F16 | DType::BF16);
        let a = if half { DType::F32 } else { t };
        let m = self.scratch(t, space.kept.clone(), node.outputs[0]);
        let z = self.scratch(a, space.kept.clone(), node.outputs[0]);
        let mut value = Expr::default();
        value.push(space.load_input(&src), t);
        self.push(space.reduce(m.buf, value, Combine::Max, acc_only(t)));

        let widened = |e: &mut Expr, node: ExprNode| {
            let x = e.push(node, t);
            if half {
                e.push(ExprNode::Cast(x), a)
            } else {
                x
            }
        };
        let shifted = |e: &mut Expr| {
            let x = widened(e, space.load_input(&src));
            let mx = widened(e, space.load_kept_wide(m.buf));
            e.push(ExprNode::Binary(BinaryOp::Sub, x, mx), a)
        };
        let mut shape = space.kept.clone();
        shape.extend(space.reduced.iter().cloned());
        // Every pass over the lane iterates `kept ++ [axis]` in the input's layout.
        let out_access = Access {
            buf: out.buf,
            offset: Dim::from(0i64),
            strides: space.strides.clone(),
        };
        let out_view = View {
            buf: out.buf,
            ..src.clone()
        };
        if !log && !half {
            let mut expr = Expr::default();
            let d = shifted(&mut expr);
            expr.push(ExprNode::Unary(UnaryOp::Exp, d), t);
            self.push(Kernel::Loop(LoopNest::new(
                shape.clone(),
                out_access.clone(),
                expr,
            )));
            let mut value = Expr::default();
            value.push(space.load_input(&out_view), t);
            self.push(space.reduce(z.buf, value, Combine::Sum, acc_only(t)));
            let mut expr = Expr::default();
            let e = expr.push(space.load_input(&out_view), t);
            let s = expr.push(space.load_kept_wide(z.buf), t);
            expr.push(ExprNode::Binary(BinaryOp::Div, e, s), t);
            self.push(Kernel::Loop(LoopNest::new(shape, out_access, expr)));
            return Ok(());
        }
        let mut value = Expr::default();
        let d = shifted(&mut value);
        value.push(ExprNode::Unary(UnaryOp::Exp, d), a);
        self.push(space.reduce(z.buf, value, Combine::Sum, acc_only(a)));

        let mut expr = Expr::default();
        let d = shifted(&mut expr);
        let s = expr.push(space.load_kept_wide(z.buf), a);
        if log {
            let l = expr.push(ExprNode::Unary(UnaryOp::Log, s), a);
            expr.push(ExprNode::Binary(BinaryOp::Sub, d, l), a);
        } else {
            let e = expr.push(ExprNode::Unary(UnaryOp::Exp, d), a);
            expr.push(ExprNode::Binary(BinaryOp::Div, e, s), a);
        }
        if half {
            let r = expr.root();
            expr.push(ExprNode::Cast(r), t);
        }
        self.push(Kernel::Loop(LoopNest {
            out: out_access,
            shape,
            expr,
            scatter: Vec::new(),
            serial: false,
        }));
        Ok(())
    }
}
