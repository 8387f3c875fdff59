//! The import context: the graph being built, and for each ONNX value either an IR value
//! or its known content (a constant tensor or symbolic dims, see `kiln_ir::shape_eval`).
//!
//! Every op goes through [`Cx::emit`], which folds it when its operands are known, so shape
//! subgraphs never reach the IR; known content becomes a `const` or `shape_value` node only
//! when a real op consumes it as data.

use crate::node::Ctx;
use crate::tensor::DataSource;
use crate::{FrontendError, ImportOptions};
use kiln_ir::shape_eval::{self, Arg, Known};
use kiln_ir::{BinaryOp, DType, Dim, Graph, Op, Tensor, TensorType, UnaryOp, ValueId};

/// Results of the frontend.
pub(crate) type R<T> = Result<T, FrontendError>;

/// An ONNX value during import.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    /// A value of the IR graph.
    Ir(ValueId),
    /// Content known at import.
    Known(Known),
}

impl Val {
    /// A known constant tensor.
    pub(crate) fn tensor(t: Tensor) -> Val {
        Val::Known(Known::Tensor(t))
    }
}

/// The most elements a folded constant (each input and each output) may have.
const FOLD_LIMIT: usize = 1 << 20;

/// Evaluates `op` with the interpreter when every operand is a concrete tensor and the
/// inferred outputs have constant shapes of at most [`FOLD_LIMIT`] elements. `None` leaves
/// the op to the graph (where an error, if the op is malformed, is reported by inference).
fn fold_constant(op: &Op, args: &[&Val]) -> Option<Vec<Tensor>> {
    let tensors: Vec<Tensor> = args
        .iter()
        .map(|a| match a {
            Val::Known(Known::Tensor(t)) if t.len() <= FOLD_LIMIT => Some(t.clone()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let types: Vec<TensorType> = tensors
        .iter()
        .map(|t| TensorType::fixed(t.dtype(), t.shape()))
        .collect();
    let outs = kiln_ir::infer(op, &types.iter().collect::<Vec<_>>()).ok()?;
    let small = |t: &TensorType| {
        t.const_shape().is_some_and(|s| {
            s.iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .is_some_and(|n| n <= FOLD_LIMIT)
        })
    };
    if !outs.iter().all(small) {
        return None;
    }
    let got = kiln_ir::interp::eval_op(op, &tensors, &kiln_ir::Bindings::new()).ok()?;
    let agree = got.len() == outs.len()
        && got
            .iter()
            .zip(&outs)
            .all(|(t, ty)| t.dtype() == ty.dtype && ty.const_shape().as_deref() == Some(t.shape()));
    agree.then_some(got)
}

/// The import context.
pub(crate) struct Cx<'o> {
    pub(crate) g: Graph,
    pub(crate) ctx: Ctx,
    pub(crate) opts: &'o ImportOptions,
    pub(crate) ext: DataSource,
    /// The ONNX names of 4-bit values (held in bytes, see `tensor::four_bit`).
    pub(crate) four_bit: std::collections::HashSet<String>,
    n_fresh: usize,
}

impl<'o> Cx<'o> {
    /// A context for a new graph.
    pub(crate) fn new(g: Graph, ctx: Ctx, opts: &'o ImportOptions, ext: DataSource) -> Cx<'o> {
        Cx {
            g,
            ctx,
            opts,
            ext,
            four_bit: Default::default(),
            n_fresh: 0,
        }
    }

    /// A new symbol name not used before in this import.
    pub(crate) fn fresh_symbol(&mut self, hint: &str) -> String {
        self.n_fresh += 1;
        format!("{hint}{}", self.n_fresh)
    }

    /// A malformed-node error for the current node.
    pub(crate) fn err(&self, message: impl Into<String>) -> FrontendError {
        self.ctx.err(message)
    }

    /// The one value of a scalar operand (ONNX writes them as shape `[]` or `[1]`), or an
    /// error naming it when it holds none.
    pub(crate) fn first<T>(&self, values: Vec<T>, what: &str) -> R<T> {
        (values.into_iter().next())
            .ok_or_else(|| self.err(format!("{what} is empty; expected one value")))
    }

    fn node_name(&self, suffix: &str) -> String {
        if suffix.is_empty() {
            self.ctx.node.clone()
        } else {
            format!("{}.{suffix}", self.ctx.node)
        }
    }

    /// The type of a value.
    pub(crate) fn ty(&self, v: &Val) -> TensorType {
        match v {
            Val::Ir(id) => self.g.value_type(*id).clone(),
            Val::Known(k) => k.ty(),
        }
    }

    /// The rank of a value.
    pub(crate) fn rank(&self, v: &Val) -> usize {
        self.ty(v).rank()
    }

    /// The element type of a value.
    pub(crate) fn dtype(&self, v: &Val) -> DType {
        self.ty(v).dtype
    }

    /// The value as an IR value, materializing known content.
    pub(crate) fn ir(&mut self, v: &Val) -> R<ValueId> {
        match v {
            Val::Ir(id) => Ok(*id),
            Val::Known(k) => {
                let name = self.node_name("");
                let out = self
                    .g
                    .add_node(name, k.to_op(), &[])
                    .map_err(|e| self.err(e.to_string()))?;
                Ok(out[0])
            }
        }
    }

    /// Applies `op`, folding it when its operands are known; the node is named after the
    /// ONNX node, with `.suffix` for the parts of a decomposition.
    pub(crate) fn emit(&mut self, suffix: &str, op: Op, args: &[&Val]) -> R<Vec<Val>> {
        let eval_args: Vec<Arg> = args
            .iter()
            .map(|a| match a {
                Val::Known(k) => Arg::Known(k),
                Val::Ir(id) => Arg::Type(self.g.value_type(*id)),
            })
            .collect();
        if let Some(out) = shape_eval::eval(&op, &eval_args) {
            return Ok(out.into_iter().map(Val::Known).collect());
        }
        if let Some(out) = fold_constant(&op, args) {
            return Ok(out.into_iter().map(Val::tensor).collect());
        }
        let ids = args.iter().map(|a| self.ir(a)).collect::<R<Vec<_>>>()?;
        let name = self.node_name(suffix);
        let outs = self
            .g
            .add_node(name, op, &ids)
            .map_err(|e| self.err(e.to_string()))?;
        Ok(outs.into_iter().map(Val::Ir).collect())
    }

    /// [`Cx::emit`] for single-output ops.
    pub(crate) fn emit1(&mut self, suffix: &str, op: Op, args: &[&Val]) -> R<Val> {
        Ok(self.emit(suffix, op, args)?.remove(0))
    }

    /// `op(x)`.
    pub(crate) fn unary(&mut self, suffix: &str, op: UnaryOp, x: &Val) -> R<Val> {
        self.emit1(suffix, Op::Unary(op), &[x])
    }

    /// `op(a, b)`.
    pub(crate) fn binary(&mut self, suffix: &str, op: BinaryOp, a: &Val, b: &Val) -> R<Val> {
        self.emit1(suffix, Op::Binary(op), &[a, b])
    }

    /// A rank-0 constant of `dtype`.
    pub(crate) fn scalar(&self, dtype: DType, v: f64) -> Val {
        Val::tensor(Tensor::full(dtype, &[], v).expect("a scalar fits"))
    }

    /// `x` cast to `to` (no node when it already has that type).
    pub(crate) fn cast(&mut self, suffix: &str, x: &Val, to: DType) -> R<Val> {
        if self.dtype(x) == to {
            return Ok(x.clone());
        }
        self.emit1(suffix, Op::Cast { to }, &[x])
    }

    /// `x` reshaped to `shape`.
    pub(crate) fn reshape(&mut self, suffix: &str, x: &Val, shape: Vec<Dim>) -> R<Val> {
        if self.ty(x).shape == shape {
            return Ok(x.clone());
        }
        self.emit1(suffix, Op::Reshape { shape }, &[x])
    }

    /// The graph input that `id` depends on, if any.
    fn input_behind(&self, id: ValueId) -> Option<String> {
        let producers = self.g.producers();
        let mut stack = vec![id];
        let mut seen = vec![false; self.g.values.len()];
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut seen[v.index()], true) {
                continue;
            }
            match producers[v.index()] {
                Some(n) => stack.extend(self.g.nodes[n].inputs.iter().copied()),
                None => {
                    if let Some((name, _)) = self.g.inputs.iter().find(|(_, i)| *i == v) {
                        return Some(name.clone());
                    }
                }
            }
        }
        None
    }

    /// The error for a shape operand whose content is not known.
    fn not_known(&self, v: &Val, what: &str) -> FrontendError {
        match v {
            Val::Ir(id) => match self.input_behind(*id) {
                Some(input) => FrontendError::NeedsKnownInput {
                    input,
                    node: self.ctx.node.clone(),
                    op: self.ctx.op.clone(),
                },
                None => self
                    .ctx
                    .unsupported(format!("{what}: it must be known at import")),
            },
            Val::Known(_) => self.err(format!("{what} must be a constant integer vector")),
        }
    }

    /// A shape operand as dims (an integer vector or scalar known at import).
    pub(crate) fn dims(&self, v: &Val, what: &str) -> R<Vec<Dim>> {
        match v {
            Val::Known(k) => k
                .as_dims()
                .map(|(d, _)| d)
                .ok_or_else(|| self.not_known(v, what)),
            Val::Ir(_) => Err(self.not_known(v, what)),
        }
    }

    /// A shape operand as constant integers.
    pub(crate) fn ints(&self, v: &Val, what: &str) -> R<Vec<i64>> {
        let dims = self.dims(v, what)?;
        dims.iter()
            .map(|d| d.as_const())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                self.ctx.unsupported(format!(
                    "{what}: symbolic value {dims:?} where a constant is needed"
                ))
            })
    }

    /// A known tensor operand (for example a scalar fill value).
    pub(crate) fn known_tensor(&self, v: &Val, what: &str) -> R<Tensor> {
        match v {
            Val::Known(Known::Tensor(t)) => Ok(t.clone()),
            _ => Err(self.not_known(v, what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_constants_fold_through_the_interpreter() {
        let a = Val::tensor(Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap());
        let b = Val::tensor(Tensor::scalar(0.5f32));
        let out = fold_constant(&Op::Binary(BinaryOp::Mul), &[&a, &b]).unwrap();
        assert_eq!(
            out,
            vec![Tensor::from_vec(vec![0.5f32, 1.0, 1.5, 2.0], &[2, 2]).unwrap()]
        );
    }

    #[test]
    fn oversized_or_malformed_folds_are_left_to_the_graph() {
        let big = Val::tensor(Tensor::zeros(DType::U8, &[FOLD_LIMIT + 1]).unwrap());
        assert!(fold_constant(&Op::Unary(UnaryOp::Neg), &[&big]).is_none());
        let one = Val::tensor(Tensor::scalar(1u8));
        let huge = Op::Expand {
            shape: vec![Dim::from(FOLD_LIMIT as i64), Dim::from(2i64)],
        };
        assert!(fold_constant(&huge, &[&one]).is_none());
        let f = Val::tensor(Tensor::scalar(1.0f32));
        let i = Val::tensor(Tensor::scalar(1i64));
        assert!(fold_constant(&Op::Binary(BinaryOp::Add), &[&f, &i]).is_none());
    }
}
