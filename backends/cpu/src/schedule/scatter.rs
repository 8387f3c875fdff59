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
use crate::kernel::*;
use kiln_ir::{BinaryOp, DType, Node, ScatterReduction, UnaryOp};

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
            && (0..ds.len()).all(|d| d == axis || is[d] <= ds[d]);
        if !fits {
            let reason = format!("data {ds:?}, indices {is:?}, updates {:?}", upd.shape);
            return Err(self.bad_shapes(node, reason));
        }
        let strides = contiguous_strides(ds);
        let mut out_strides = strides.clone();
        out_strides[axis] = 0;
        let mut expr = Expr::default();
        let index = expr.push(ExprNode::Load(Access::contiguous(idx.buf, is)), idx.dtype);
        let terms = vec![Indirect {
            index,
            stride: strides[axis],
            len: ds[axis],
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
        let q = is.last().copied().unwrap_or(0);
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
        let mut out_strides = vec![0isize; lead];
        out_strides.extend(&strides[q..]);
        let mut expr = Expr::default();
        let terms = tuple_terms(&mut expr, &idx, upd.shape.len(), &strides, ds, 0);
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
        out_strides: Vec<isize>,
        terms: Vec<Indirect>,
        mut expr: Expr,
        reduction: ScatterReduction,
    ) -> Result<(), ScheduleError> {
        self.copy(node, |shape| Access::contiguous(data.buf, shape))?;
        if upd.shape.iter().product::<usize>() == 0 {
            return Ok(());
        }
        if terms.iter().any(|t| t.len == 0) {
            return Err(self.bad_shapes(node, "indices into an empty axis".into()));
        }
        let out = self.view(node.outputs[0]).clone();
        let access = Access {
            buf: out.buf,
            offset: 0,
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
        let q = is.last().copied().unwrap_or(0);
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
        data_strides.resize(lead, 0);
        data_strides.extend(&strides[batch_dims + q..]);
        let mut expr = Expr::default();
        let terms = tuple_terms(&mut expr, &idx, out.shape.len(), &strides, ds, batch_dims);
        if out.shape.iter().product::<usize>() == 0 {
            return Ok(());
        }
        if terms.iter().any(|t| t.len == 0) {
            return Err(self.bad_shapes(node, "indices into an empty axis".into()));
        }
        let access = Access {
            buf: data.buf,
            offset: 0,
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

/// Pushes one load per component of the index tuples in the last axis of `idx` (iterated
/// over the leading axes of a `rank`-axis loop) and returns the terms addressing axes
/// `batch_dims..` of data (shape `ds`, row-major `strides`).
fn tuple_terms(
    expr: &mut Expr,
    idx: &View,
    rank: usize,
    strides: &[isize],
    ds: &[usize],
    batch_dims: usize,
) -> Vec<Indirect> {
    let is = &idx.shape;
    let lead = is.len() - 1;
    let mut idx_strides = contiguous_strides(is)[..lead].to_vec();
    idx_strides.resize(rank, 0);
    (0..is[lead])
        .map(|j| {
            let index = expr.push(
                ExprNode::Load(Access {
                    buf: idx.buf,
                    offset: j as isize,
                    strides: idx_strides.clone(),
                }),
                idx.dtype,
            );
            Indirect {
                index,
                stride: strides[batch_dims + j],
                len: ds[batch_dims + j],
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

#[cfg(test)]
pub(super) mod tests {
    //! The JIT against the interpreter on random inputs: every reduction, negative and
    //! repeated indices, every axis, odd shapes, both index dtypes, and batch dims.

    use crate::kernel::{Call, Kernel};
    use crate::{CompiledModel, Options};
    use kiln_ir::{interp, DType, Graph, Op, ScatterReduction, Tensor, TensorType};

    const REDUCTIONS: [ScatterReduction; 5] = [
        ScatterReduction::None,
        ScatterReduction::Add,
        ScatterReduction::Mul,
        ScatterReduction::Max,
        ScatterReduction::Min,
    ];

    /// A small xorshift generator (tests stay dependency-free and reproducible).
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }

        /// Small integer-valued numbers (some NaN for float dtypes) cast to `dtype`.
        pub(crate) fn tensor(&mut self, dtype: DType, shape: &[usize]) -> Tensor {
            let n = shape.iter().product();
            let v: Vec<f64> = (0..n)
                .map(|_| match self.below(16) {
                    0 if dtype.is_float() => f64::NAN,
                    k => k as f64 - 7.0,
                })
                .collect();
            Tensor::from_vec(v, shape).unwrap().cast(dtype)
        }

        /// Indices in `-len..len` (negative ones count from the end).
        fn indices(&mut self, dtype: DType, shape: &[usize], len: usize) -> Tensor {
            let n = shape.iter().product();
            let v: Vec<i64> = (0..n)
                .map(|_| self.below(2 * len) as i64 - len as i64)
                .collect();
            Tensor::from_vec(v, shape).unwrap().cast(dtype)
        }
    }

    /// Runs `op` on `inputs` with the JIT (on `threads` threads) and the interpreter and
    /// checks the results are bitwise equal.
    pub(crate) fn check(op: Op, inputs: &[Tensor], threads: usize) {
        let mut g = Graph::new("t");
        let ids: Vec<_> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| g.add_input(format!("x{i}"), TensorType::fixed(t.dtype(), t.shape())))
            .collect();
        let out = g.add_node("n", op.clone(), &ids).unwrap()[0];
        g.add_output("y", out);
        let want = interp::run(&g, inputs).unwrap();
        let model = CompiledModel::new(
            g,
            &Options {
                threads,
                ..Options::default()
            },
        )
        .unwrap();
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let spec = model.specialize(&shapes).unwrap();
        let runtime = |k: &Kernel| matches!(k, Kernel::Call(Call::Op(_)));
        assert!(
            !spec.program.kernels.iter().any(runtime),
            "{op:?} runs natively"
        );
        let got = model.run(inputs).unwrap();
        assert_eq!(got, want, "{op:?} on {inputs:?}");
    }

    #[test]
    fn scatter_elements_matches_the_interpreter() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let shapes: [&[usize]; 5] = [&[5], &[3, 4], &[2, 3, 5], &[4, 1, 3], &[1, 7]];
        let dtypes = [DType::F32, DType::I32, DType::I64, DType::F64, DType::U8];
        for (s, shape) in shapes.iter().enumerate() {
            for axis in 0..shape.len() {
                for (r, &reduction) in REDUCTIONS.iter().enumerate() {
                    let dtype = dtypes[(s + axis + r) % dtypes.len()];
                    let ity = [DType::I64, DType::I32][r % 2];
                    let is: Vec<usize> = shape
                        .iter()
                        .enumerate()
                        .map(|(d, &n)| {
                            if d == axis {
                                1 + rng.below(2 * n)
                            } else {
                                1 + rng.below(n)
                            }
                        })
                        .collect();
                    let inputs = [
                        rng.tensor(dtype, shape),
                        rng.indices(ity, &is, shape[axis]),
                        rng.tensor(dtype, &is),
                    ];
                    check(Op::ScatterElements { axis, reduction }, &inputs, 1);
                }
            }
        }
    }

    #[test]
    fn scatter_nd_matches_the_interpreter() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let data: [&[usize]; 3] = [&[6], &[4, 3, 2], &[3, 5]];
        let leads: [&[usize]; 3] = [&[1], &[5], &[2, 3]];
        for shape in data {
            for q in 1..=shape.len() {
                for lead in leads {
                    for &reduction in &REDUCTIONS {
                        let dtype = if q % 2 == 0 { DType::F32 } else { DType::I32 };
                        let mut is = lead.to_vec();
                        is.push(q);
                        let n: usize = is.iter().product();
                        let ix: Vec<i64> = (0..n)
                            .map(|k| {
                                let len = shape[k % q];
                                rng.below(2 * len) as i64 - len as i64
                            })
                            .collect();
                        let mut us = lead.to_vec();
                        us.extend(&shape[q..]);
                        let inputs = [
                            rng.tensor(dtype, shape),
                            Tensor::from_vec(ix, &is).unwrap(),
                            rng.tensor(dtype, &us),
                        ];
                        check(Op::ScatterNd { reduction }, &inputs, 1);
                    }
                }
            }
        }
    }

    #[test]
    fn gather_nd_matches_the_interpreter() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let data: [&[usize]; 3] = [&[2, 3, 4], &[3, 5], &[2, 2, 3, 2]];
        for shape in data {
            for batch_dims in 0..shape.len() {
                for q in 1..=shape.len() - batch_dims {
                    for extra in [&[][..], &[3][..], &[2, 1][..]] {
                        let mut is = shape[..batch_dims].to_vec();
                        is.extend(extra);
                        is.push(q);
                        let n: usize = is.iter().product();
                        let ix: Vec<i64> = (0..n)
                            .map(|k| {
                                let len = shape[batch_dims + k % q];
                                rng.below(2 * len) as i64 - len as i64
                            })
                            .collect();
                        let ix = Tensor::from_vec(ix, &is).unwrap();
                        let ix = ix.cast([DType::I64, DType::I32][n % 2]);
                        let inputs = [rng.tensor(DType::F32, shape), ix];
                        check(Op::GatherNd { batch_dims }, &inputs, 1);
                    }
                }
            }
        }
    }

    #[test]
    fn large_scatters_with_repeated_indices_stay_in_order_on_many_threads() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for &reduction in &REDUCTIONS {
            let inputs = [
                rng.tensor(DType::F32, &[3, 7]),
                rng.indices(DType::I64, &[3, 40_000], 7),
                rng.tensor(DType::F32, &[3, 40_000]),
            ];
            check(Op::ScatterElements { axis: 1, reduction }, &inputs, 4);
        }
    }
}
