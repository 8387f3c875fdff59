//! Ops that need the loop index as a value: range, trilu and one-hot. The index is read
//! from an [`BufferKind::Iota`] buffer `0..n` with stride 1 along the axis it numbers and 0
//! elsewhere, so the kernel description needs no index node, and loop fusion and axis
//! merging treat it as any load.

use super::{contiguous_strides, ScheduleError, Scheduler};
use crate::kernel::*;
use kiln_ir::{BinaryOp, DType, Dim, Node, ValueId};

impl Scheduler<'_> {
    /// A buffer holding `0..len` as i64 (made for value `value`, for reports).
    pub(super) fn iota(&mut self, len: &Dim, value: ValueId) -> BufId {
        let buf = self.program.buffers.len();
        self.program.buffers.push(Buffer {
            dtype: DType::I64,
            len: len.clone(),
            kind: BufferKind::Iota,
            value: value.0,
        });
        buf
    }

    /// Pushes a load of an iota numbering `axis` of a `rank`-axis loop.
    pub(super) fn index_along(
        &mut self,
        e: &mut Expr,
        rank: usize,
        axis: usize,
        len: &Dim,
        v: ValueId,
    ) -> Result<usize, ScheduleError> {
        let buf = self.iota(len, v);
        let mut strides = vec![Dim::from(0i64); rank];
        strides[axis] = Dim::from(1i64);
        Ok(e.push(
            ExprNode::Load(Access {
                buf,
                offset: Dim::from(0i64),
                strides,
            }),
            DType::I64,
        ))
    }

    /// `out[i] = start + i * delta`: in f64 then rounded for floats (as the interpreter
    /// computes), wrapping in the output type for integers.
    pub(super) fn range(&mut self, node: &Node) -> Result<(), ScheduleError> {
        let out = self.temp(node.outputs[0])?;
        let n = out.shape.iter().product::<Dim>();
        if n.is_zero() {
            return Ok(());
        }
        let scalar = |v: &super::View| {
            ExprNode::Load(Access {
                buf: v.buf,
                offset: Dim::from(0i64),
                strides: vec![Dim::from(0i64)],
            })
        };
        let (start, delta) = (
            self.view(node.inputs[0]).clone(),
            self.view(node.inputs[1]).clone(),
        );
        let mut e = Expr::default();
        let i = self.index_along(&mut e, 1, 0, &n, node.outputs[0])?;
        let s = e.push(scalar(&start), out.dtype);
        let d = e.push(scalar(&delta), out.dtype);
        let work = if out.dtype.is_float() {
            DType::F64
        } else {
            out.dtype
        };
        let widen = |e: &mut Expr, x: usize, from: DType| {
            if from == work {
                x
            } else {
                e.push(ExprNode::Cast(x), work)
            }
        };
        let (i, s, d) = (
            widen(&mut e, i, DType::I64),
            widen(&mut e, s, out.dtype),
            widen(&mut e, d, out.dtype),
        );
        let step = e.push(ExprNode::Binary(BinaryOp::Mul, i, d), work);
        let v = e.push(ExprNode::Binary(BinaryOp::Add, s, step), work);
        if work != out.dtype {
            e.push(ExprNode::Cast(v), out.dtype);
        }
        self.push(Kernel::Loop(LoopNest::new(
            out.shape.clone(),
            Access::contiguous(out.buf, &out.shape),
            e,
        )));
        Ok(())
    }

    /// Keeps `x` where `j - i >= k` (upper) or `j - i <= k` (lower) over the last two dims
    /// `(i, j)`, zero elsewhere.
    pub(super) fn trilu(&mut self, node: &Node, upper: bool, k: i64) -> Result<(), ScheduleError> {
        let x = self.view(node.inputs[0]).clone();
        let out = self.temp(node.outputs[0])?;
        let r = x.shape.len();
        if r < 2 {
            return Err(ScheduleError::Unsupported {
                node: self.current,
                name: node.name.clone(),
                op: node.op.name(),
                reason: format!("trilu needs rank >= 2, got {r}"),
            });
        }
        if out.shape.iter().product::<Dim>().is_zero() {
            return Ok(());
        }
        let mut e = Expr::default();
        let row = self.index_along(&mut e, r, r - 2, &x.shape[r - 2], node.outputs[0])?;
        let col = self.index_along(&mut e, r, r - 1, &x.shape[r - 1], node.outputs[0])?;
        let diag = e.push(ExprNode::Binary(BinaryOp::Sub, col, row), DType::I64);
        let k = e.push(ExprNode::Const(Scalar::Int(k)), DType::I64);
        let cmp = if upper {
            BinaryOp::GreaterOrEqual
        } else {
            BinaryOp::LessOrEqual
        };
        let keep = e.push(ExprNode::Binary(cmp, diag, k), DType::Bool);
        let v = e.push(ExprNode::Load(Access::contiguous(x.buf, &x.shape)), x.dtype);
        let zero = e.push(ExprNode::Const(Scalar::Int(0)), x.dtype);
        e.push(ExprNode::Where(keep, v, zero), x.dtype);
        self.push(Kernel::Loop(LoopNest::new(
            out.shape.clone(),
            Access::contiguous(out.buf, &out.shape),
            e,
        )));
        Ok(())
    }

    /// `out[.., p, ..] = values[1]` where the index (negative counts from `depth`) equals
    /// `p` on the new axis, `values[0]` elsewhere.
    pub(super) fn one_hot(
        &mut self,
        node: &Node,
        axis: usize,
        depth: usize,
    ) -> Result<(), ScheduleError> {
        let idx = self.view(node.inputs[0]).clone();
        let values = self.view(node.inputs[1]).clone();
        let out = self.temp(node.outputs[0])?;
        if out.shape.iter().product::<Dim>().is_zero() {
            return Ok(());
        }
        let rank = out.shape.len();
        let mut idx_strides = contiguous_strides(&idx.shape);
        idx_strides.insert(axis, Dim::from(0i64));
        let mut e = Expr::default();
        let pos = self.index_along(&mut e, rank, axis, &Dim::from(depth), node.outputs[0])?;
        let mut i = e.push(
            ExprNode::Load(Access {
                buf: idx.buf,
                offset: Dim::from(0i64),
                strides: idx_strides,
            }),
            idx.dtype,
        );
        if idx.dtype != DType::I64 {
            i = e.push(ExprNode::Cast(i), DType::I64);
        }
        let zero = e.push(ExprNode::Const(Scalar::Int(0)), DType::I64);
        let d = e.push(ExprNode::Const(Scalar::Int(depth as i64)), DType::I64);
        let neg = e.push(ExprNode::Binary(BinaryOp::Less, i, zero), DType::Bool);
        let wrapped = e.push(ExprNode::Binary(BinaryOp::Add, i, d), DType::I64);
        let i = e.push(ExprNode::Where(neg, wrapped, i), DType::I64);
        let hit = e.push(ExprNode::Binary(BinaryOp::Equal, i, pos), DType::Bool);
        let value = |offset: i64| {
            ExprNode::Load(Access {
                buf: values.buf,
                offset: Dim::from(offset),
                strides: vec![Dim::from(0i64); rank],
            })
        };
        let on = e.push(value(1), values.dtype);
        let off = e.push(value(0), values.dtype);
        e.push(ExprNode::Where(hit, on, off), values.dtype);
        self.push(Kernel::Loop(LoopNest::new(
            out.shape.clone(),
            Access::contiguous(out.buf, &out.shape),
            e,
        )));
        Ok(())
    }
}
