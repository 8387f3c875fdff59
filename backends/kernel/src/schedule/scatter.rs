//! ScatterElements, ScatterND and GatherND as loop nests with indirect addressing.
//!
//! A scatter is a copy `out = data` followed by one serial loop nest over `updates` whose
//! store address adds one [`Indirect`] term per indexed axis (the index read from the
//! indices tensor times the axis stride). Reductions read the current value with a
//! [`ExprNode::Gather`] through the same terms and combine it with the update, so repeated
//! indices apply in order as ONNX specifies. GatherND loads through the same kind of terms.
//! Negative indices count from the end; an index still out of range stops the kernel with
//! an error naming it (as the interpreter does), so no access leaves its buffer.

use super::{contiguous_strides, ScheduleError, Scheduler, View};
use crate::axes::at_most;
use crate::kernel::*;
use kiln_ir::{BinaryOp, DType, Dim, Node, ScatterReduction, UnaryOp};

impl Scheduler<'_> {
    /// The three inputs of a scatter, after checking that the indices are integers.
    fn operands<const N: usize>(&self, node: &Node) -> Result<[View; N], ScheduleError> {
        let views: [View; N] = std::array::from_fn(|i| self.view(node.inputs[i]).clone());
        if !views[1].dtype.is_int() {
            return Err(self.bad_shapes(node, format!("indices of dtype {}", views[1].dtype)));
        }
        Ok(views)
    }

    fn bad_shapes(&self, node: &Node, reason: String) -> ScheduleError {
        ScheduleError::Unsupported {
            node: self.current,
            name: node.name.clone(),
            op: node.op.name(),
            reason,
        }
    }

    /// `out = data; out[p with p[axis] = indices[p]] ⊕= updates[p]` in index order.
    pub(super) fn scatter_elements(
        &mut self,
        node: &Node,
        axis: usize,
        reduction: ScatterReduction,
    ) -> Result<(), ScheduleError> {
        let [data, idx, upd] = self.operands(node)?;
        let (ds, is) = (&data.shape, &idx.shape);
        let fits = axis < ds.len()
            && upd.dtype == data.dtype
            && is.len() == ds.len()
            && upd.shape == *is
            && (0..ds.len()).all(|d| d == axis || at_most(&is[d], &ds[d]));
        if !fits {
            let reason = format!("data {ds:?}, indices {is:?}, updates {:?}", upd.shape);
            return Err(self.bad_shapes(node, reason));
        }
        let strides = contiguous_strides(ds);
        let mut out_strides = strides.clone();
        out_strides[axis] = Dim::from(0i64);
        let mut expr = Expr::default();
        let index = expr.push(ExprNode::Load(Access::contiguous(idx.buf, is)), idx.dtype);
        let terms = vec![Indirect {
            index,
            stride: strides[axis].clone(),
            len: ds[axis].clone(),
        }];
        self.scatter(node, &data, upd, out_strides, terms, expr, reduction)
    }

    /// `out = data; out[indices[i..]][..] ⊕= updates[i..][..]` in index order, where each
    /// tuple in the last axis of `indices` addresses a sub-tensor of `data`.
    pub(super) fn scatter_nd(
        &mut self,
        node: &Node,
        reduction: ScatterReduction,
    ) -> Result<(), ScheduleError> {
        let [data, idx, upd] = self.operands(node)?;
        let (ds, is) = (&data.shape, &idx.shape);
        let q = match is.last() {
            Some(q) => self.known(q, node.inputs[1])?,
            None => 0,
        };
        let lead = is.len().saturating_sub(1);
        let fits = !is.is_empty()
            && upd.dtype == data.dtype
            && q <= ds.len()
            && upd.shape.len() == lead + ds.len() - q
            && upd.shape[..lead] == is[..lead]
            && upd.shape[lead..] == ds[q..];
        if !fits {
            let reason = format!("data {ds:?}, indices {is:?}, updates {:?}", upd.shape);
            return Err(self.bad_shapes(node, reason));
        }
        let strides = contiguous_strides(ds);
        let mut out_strides = vec![Dim::from(0i64); lead];
        out_strides.extend(strides[q..].iter().cloned());
        let mut expr = Expr::default();
        let terms = tuple_terms(&mut expr, &idx, q, upd.shape.len(), &strides, ds, 0);
        self.scatter(node, &data, upd, out_strides, terms, expr, reduction)
    }

    /// The copy `out = data`, then the serial scatter loop over `upd` (its shape is the
    /// iteration space): `out[out_strides·i + terms] = combine(old, upd[i])`. `expr` holds
    /// the index loads the terms use.
    #[allow(clippy::too_many_arguments)]
    fn scatter(
        &mut self,
        node: &Node,
        data: &View,
        upd: View,
        out_strides: Vec<Dim>,
        terms: Vec<Indirect>,
        mut expr: Expr,
        reduction: ScatterReduction,
    ) -> Result<(), ScheduleError> {
        self.copy(node, |shape| Access::contiguous(data.buf, shape))?;
        if upd.shape.iter().product::<Dim>().is_zero() {
            return Ok(());
        }
        if terms.iter().any(|t| t.len.is_zero()) {
            return Err(self.bad_shapes(node, "indices into an empty axis".into()));
        }
        let out = self.view(node.outputs[0]).clone();
        let access = Access {
            buf: out.buf,
            offset: Dim::from(0i64),
            strides: out_strides,
        };
        let new = expr.push(
            ExprNode::Load(Access::contiguous(upd.buf, &upd.shape)),
            out.dtype,
        );
        if reduction != ScatterReduction::None {
            let old = expr.push(
                ExprNode::Gather {
                    access: access.clone(),
                    indices: terms.clone(),
                },
                out.dtype,
            );
            combine(&mut expr, reduction, old, new, out.dtype);
        }
        self.push(Kernel::Loop(LoopNest {
            shape: upd.shape,
            out: access,
            expr,
            scatter: terms,
            serial: true,
        }));
        Ok(())
    }

    /// ONNX `GatherND`: `out[b.., i.., r..] = data[b.., indices[b.., i..][..], r..]` with
    /// `batch_dims` leading shared dims `b`.
    pub(super) fn gather_nd(
        &mut self,
        node: &Node,
        batch_dims: usize,
    ) -> Result<(), ScheduleError> {
        let [data, idx] = self.operands(node)?;
        let (ds, is) = (&data.shape, &idx.shape);
        let q = match is.last() {
            Some(q) => self.known(q, node.inputs[1])?,
            None => 0,
        };
        let fits = is.len() > batch_dims
            && ds.len() >= batch_dims + q
            && is[..batch_dims] == ds[..batch_dims];
        if !fits {
            let reason = format!("data {ds:?}, indices {is:?}, batch_dims {batch_dims}");
            return Err(self.bad_shapes(node, reason));
        }
        let out = self.temp(node.outputs[0])?;
        let lead = is.len() - 1;
        let strides = contiguous_strides(ds);
        let mut data_strides = strides[..batch_dims].to_vec();
        data_strides.resize(lead, Dim::from(0i64));
        data_strides.extend(strides[batch_dims + q..].iter().cloned());
        let mut expr = Expr::default();
        let rank = out.shape.len();
        let terms = tuple_terms(&mut expr, &idx, q, rank, &strides, ds, batch_dims);
        if out.shape.iter().product::<Dim>().is_zero() {
            return Ok(());
        }
        if terms.iter().any(|t| t.len.is_zero()) {
            return Err(self.bad_shapes(node, "indices into an empty axis".into()));
        }
        let access = Access {
            buf: data.buf,
            offset: Dim::from(0i64),
            strides: data_strides,
        };
        expr.push(
            ExprNode::Gather {
                access,
                indices: terms,
            },
            out.dtype,
        );
        self.push(Kernel::Loop(LoopNest::new(
            out.shape.clone(),
            Access::contiguous(out.buf, &out.shape),
            expr,
        )));
        Ok(())
    }
}

/// Pushes one load per component of the `q`-tuples in the last axis of `idx` (iterated
/// over the leading axes of a `rank`-axis loop) and returns the terms addressing axes
/// `batch_dims..` of data (shape `ds`, row-major `strides`).
fn tuple_terms(
    expr: &mut Expr,
    idx: &View,
    q: usize,
    rank: usize,
    strides: &[Dim],
    ds: &[Dim],
    batch_dims: usize,
) -> Vec<Indirect> {
    let is = &idx.shape;
    let lead = is.len() - 1;
    let mut idx_strides = contiguous_strides(is)[..lead].to_vec();
    idx_strides.resize(rank, Dim::from(0i64));
    (0..q)
        .map(|j| {
            let index = expr.push(
                ExprNode::Load(Access {
                    buf: idx.buf,
                    offset: Dim::from(j),
                    strides: idx_strides.clone(),
                }),
                idx.dtype,
            );
            Indirect {
                index,
                stride: strides[batch_dims + j].clone(),
                len: ds[batch_dims + j].clone(),
            }
        })
        .collect()
}

/// Appends `old ⊕ new` with the interpreter's semantics: add and mul wrap for integers;
/// max and min keep a NaN operand (the old one first) and otherwise keep the old value
/// unless the new one is strictly greater (smaller).
fn combine(e: &mut Expr, r: ScatterReduction, old: usize, new: usize, dtype: DType) {
    let compare = match r {
        ScatterReduction::None => return,
        ScatterReduction::Add => {
            e.push(ExprNode::Binary(BinaryOp::Add, old, new), dtype);
            return;
        }
        ScatterReduction::Mul => {
            e.push(ExprNode::Binary(BinaryOp::Mul, old, new), dtype);
            return;
        }
        ScatterReduction::Max => BinaryOp::Greater,
        ScatterReduction::Min => BinaryOp::Less,
    };
    let better = e.push(ExprNode::Binary(compare, new, old), DType::Bool);
    let mut v = e.push(ExprNode::Where(better, new, old), dtype);
    if dtype.is_float() {
        let new_nan = e.push(ExprNode::Unary(UnaryOp::IsNan, new), DType::Bool);
        v = e.push(ExprNode::Where(new_nan, new, v), dtype);
        let old_nan = e.push(ExprNode::Unary(UnaryOp::IsNan, old), DType::Bool);
        e.push(ExprNode::Where(old_nan, old, v), dtype);
    }
}
