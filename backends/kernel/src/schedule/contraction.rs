//! Einsum, and matrix products outside the f32 GEMM, as one [`Reduce`] kernel: the output
//! axes are the loop, every other axis (label) is reduced, and the value is the product of
//! one element of each operand. An operand reads each axis at the sum of its strides along
//! the dims with that label (a repeated label walks the diagonal) and a size-1 dim at
//! stride 0 (it broadcasts). Half types compute in f32 and round once, as the interpreter
//! does; integers wrap.

use super::{contiguous_strides, ScheduleError, Scheduler, View};
use crate::kernel::*;
use kiln_ir::{BinaryOp, DType, Dim, EinsumSpec, Node};

/// One operand: its view and the axis each of its dims is.
struct Operand {
    view: View,
    axes: Vec<usize>,
}

impl Scheduler<'_> {
    /// `Einsum`: output labels are axes `0..`, then the summed labels in order.
    pub(super) fn einsum(&mut self, node: &Node, spec: &EinsumSpec) -> Result<(), ScheduleError> {
        let mut labels = spec.output.clone();
        for l in spec.inputs.iter().flatten() {
            if !labels.contains(l) {
                labels.push(*l);
            }
        }
        let axis = |l: &char| labels.iter().position(|x| x == l).unwrap_or(0);
        let operands: Vec<Operand> = node
            .inputs
            .iter()
            .zip(&spec.inputs)
            .map(|(v, ls)| Operand {
                view: self.view(*v).clone(),
                axes: ls.iter().map(axis).collect(),
            })
            .collect();
        self.contract(node, operands, labels.len())
    }

    /// `MatMul` of a dtype the GEMM does not take: `a[.., m, k] × b[.., k, n]`, batch dims
    /// broadcast (aligned right), as the contraction over `k`.
    pub(super) fn matmul_contraction(&mut self, node: &Node) -> Result<(), ScheduleError> {
        let out_rank = self.g.value_type(node.outputs[0]).shape.len();
        let batch = out_rank - 2;
        let (m, n, k) = (batch, batch + 1, batch + 2);
        let operand = |s: &Self, v, inner: [usize; 2]| {
            let view: View = s.view(v).clone();
            let own_batch = view.shape.len() - 2;
            let mut axes: Vec<usize> = (batch - own_batch..batch).collect();
            axes.extend(inner);
            Operand { view, axes }
        };
        let operands = vec![
            operand(self, node.inputs[0], [m, k]),
            operand(self, node.inputs[1], [k, n]),
        ];
        self.contract(node, operands, out_rank + 1)
    }

    /// `out[i] = Σ_j Π_operands x[i, j]` over `axes` axes, the first `out.rank` of them
    /// the output's.
    fn contract(
        &mut self,
        node: &Node,
        operands: Vec<Operand>,
        axes: usize,
    ) -> Result<(), ScheduleError> {
        let out = self.temp(node.outputs[0])?;
        let sizes = axis_sizes(&out.shape, &operands, axes);
        let t = out.dtype;
        let compute = if matches!(t, DType::F16 | DType::BF16) {
            DType::F32
        } else {
            t
        };
        let mut value = Expr::default();
        let mut product = None;
        for op in &operands {
            let access = Access {
                buf: op.view.buf,
                offset: Dim::from(0i64),
                strides: axis_strides(op, axes),
            };
            let mut x = value.push(ExprNode::Load(access), op.view.dtype);
            if op.view.dtype != compute {
                x = value.push(ExprNode::Cast(x), compute);
            }
            product = Some(match product {
                None => x,
                Some(p) => value.push(ExprNode::Binary(BinaryOp::Mul, p, x), compute),
            });
        }
        let out_access = Access::contiguous(out.buf, &out.shape);
        let rank = out.shape.len();
        if axes == rank {
            // Nothing is summed: a loop nest (a transpose, a diagonal, a product).
            if compute != t {
                let r = value.root();
                value.push(ExprNode::Cast(r), t);
            }
            self.push(Kernel::Loop(LoopNest {
                out: out_access,
                shape: out.shape,
                expr: value,
                scatter: Vec::new(),
                serial: false,
            }));
            return Ok(());
        }
        let mut post = Expr::default();
        let acc = post.push(ExprNode::Acc, compute);
        if compute != t {
            post.push(ExprNode::Cast(acc), t);
        }
        self.push(Kernel::Reduce(Reduce {
            shape: out.shape,
            reduced: sizes[rank..].to_vec(),
            out: out_access,
            value,
            combine: Combine::Sum,
            post,
        }));
        Ok(())
    }
}

/// Each axis's size: the output's for its own axes, else the operands' dim that is not 1
/// (shape inference has checked they agree).
fn axis_sizes(out: &[Dim], operands: &[Operand], axes: usize) -> Vec<Dim> {
    (0..axes)
        .map(|a| {
            if a < out.len() {
                return out[a].clone();
            }
            let dims = operands.iter().flat_map(|op| {
                op.axes
                    .iter()
                    .zip(&op.view.shape)
                    .filter(move |(x, _)| **x == a)
                    .map(|(_, d)| d.clone())
            });
            let dims: Vec<Dim> = dims.collect();
            dims.iter()
                .find(|d| !d.is_one())
                .or(dims.first())
                .cloned()
                .unwrap_or_else(|| Dim::from(1i64))
        })
        .collect()
}

/// An operand's element stride along each axis: the sum over its dims on that axis, with
/// size-1 dims (which broadcast) contributing nothing.
fn axis_strides(op: &Operand, axes: usize) -> Vec<Dim> {
    let own = contiguous_strides(&op.view.shape);
    (0..axes)
        .map(|a| {
            op.axes
                .iter()
                .zip(&op.view.shape)
                .zip(&own)
                .filter(|((x, d), _)| **x == a && !d.is_one())
                .fold(Dim::from(0i64), |acc, (_, s)| &acc + s)
        })
        .collect()
}
