//! Data movement (transpose, slice, concat, expand, pad, gathers) as loop nests whose loads
//! carry the index arithmetic, and matmul as a runtime GEMM call over strided operands.

use super::{contiguous_strides, ScheduleError, Scheduler};
use crate::kernel::*;
use kiln_ir::{BinaryOp, DType, Dim, Node, PadMode, SliceAxis};

impl Scheduler<'_> {
    /// `out = load(access)` over the output's shape.
    pub(super) fn copy(
        &mut self,
        node: &Node,
        load: impl FnOnce(&[Dim]) -> Access,
    ) -> Result<(), ScheduleError> {
        let out = self.temp(node.outputs[0])?;
        let mut expr = Expr::default();
        expr.push(ExprNode::Load(load(&out.shape)), out.dtype);
        self.push(Kernel::Loop(LoopNest {
            out: Access::contiguous(out.buf, &out.shape),
            shape: out.shape,
            expr,
            scatter: Vec::new(),
            serial: false,
        }));
        Ok(())
    }

    pub(super) fn transpose(&mut self, node: &Node, perm: &[usize]) -> Result<(), ScheduleError> {
        let src = self.view(node.inputs[0]).clone();
        let own = contiguous_strides(&src.shape);
        self.copy(node, |_| Access {
            buf: src.buf,
            offset: Dim::from(0i64),
            strides: perm.iter().map(|&p| own[p].clone()).collect(),
        })
    }

    pub(super) fn slice(&mut self, node: &Node, axes: &[SliceAxis]) -> Result<(), ScheduleError> {
        let src = self.view(node.inputs[0]).clone();
        let mut strides = contiguous_strides(&src.shape);
        let mut offset = Dim::from(0i64);
        for a in axes {
            let start = a.start.substitute(self.bindings);
            offset = offset + &start * &strides[a.axis];
            strides[a.axis] = &strides[a.axis] * &Dim::from(a.step);
        }
        self.copy(node, |_| Access {
            buf: src.buf,
            offset,
            strides,
        })
    }

    pub(super) fn expand(&mut self, node: &Node) -> Result<(), ScheduleError> {
        let src = self.view(node.inputs[0]).clone();
        self.copy(node, |shape| {
            super::elementwise::broadcast_access(&src, shape)
        })
    }

    pub(super) fn concat(&mut self, node: &Node, axis: usize) -> Result<(), ScheduleError> {
        let out = self.temp(node.outputs[0])?;
        let ostrides = contiguous_strides(&out.shape);
        let mut at = Dim::from(0i64);
        for v in &node.inputs {
            let src = self.view(*v).clone();
            if !src.shape.iter().product::<Dim>().is_zero() {
                let mut expr = Expr::default();
                expr.push(
                    ExprNode::Load(Access::contiguous(src.buf, &src.shape)),
                    src.dtype,
                );
                self.push(Kernel::Loop(LoopNest {
                    out: Access {
                        buf: out.buf,
                        offset: &at * &ostrides[axis],
                        strides: ostrides.clone(),
                    },
                    shape: src.shape.clone(),
                    expr,
                    scatter: Vec::new(),
                    serial: false,
                }));
            }
            at = at + src.shape[axis].clone();
        }
        Ok(())
    }

    /// Constant padding: fill the output with the pad value, then copy the kept part of the
    /// input (negative pads crop) into its place.
    pub(super) fn pad(&mut self, node: &Node, pads: &[(i64, i64)]) -> Result<(), ScheduleError> {
        let src = self.view(node.inputs[0]).clone();
        let out = self.temp(node.outputs[0])?;
        if pads.iter().any(|&(b, a)| b > 0 || a > 0) {
            let mut fill = Expr::default();
            self.operand(&mut fill, node.inputs[1], &out.shape);
            self.push(Kernel::Loop(LoopNest {
                out: Access::contiguous(out.buf, &out.shape),
                shape: out.shape.clone(),
                expr: fill,
                scatter: Vec::new(),
                serial: false,
            }));
        }
        let (istrides, ostrides) = (
            contiguous_strides(&src.shape),
            contiguous_strides(&out.shape),
        );
        let (mut ioff, mut ooff) = (Dim::from(0i64), Dim::from(0i64));
        let mut shape = Vec::with_capacity(pads.len());
        for (d, &(before, after)) in pads.iter().enumerate() {
            let skip_in = (-before).max(0);
            let drop_in = (-after).max(0);
            let kept = &src.shape[d] - &Dim::from(skip_in + drop_in);
            shape.push(match kept.as_const() {
                Some(n) => Dim::from(n.max(0)),
                None if skip_in + drop_in == 0 => kept,
                None => kept.max_with(&Dim::from(0i64)),
            });
            ioff = ioff + &Dim::from(skip_in) * &istrides[d];
            ooff = ooff + &Dim::from(before.max(0)) * &ostrides[d];
        }
        if !shape.iter().product::<Dim>().is_zero() {
            let mut expr = Expr::default();
            expr.push(
                ExprNode::Load(Access {
                    buf: src.buf,
                    offset: ioff,
                    strides: istrides,
                }),
                src.dtype,
            );
            self.push(Kernel::Loop(LoopNest {
                out: Access {
                    buf: out.buf,
                    offset: ooff,
                    strides: ostrides,
                },
                shape,
                expr,
                scatter: Vec::new(),
                serial: false,
            }));
        }
        Ok(())
    }

    /// Edge, reflect and wrap padding: one loop nest over the output whose padded axes
    /// read the cropped input at an index computed from the output position (the
    /// interpreter's `source_index`), through a gather checked against the cropped
    /// length, so a padded axis cropped to nothing fails the run as the interpreter does.
    pub(super) fn pad_indexed(
        &mut self,
        node: &Node,
        pads: &[(i64, i64)],
        mode: PadMode,
    ) -> Result<(), ScheduleError> {
        let src = self.view(node.inputs[0]).clone();
        let out = self.temp(node.outputs[0])?;
        if out.shape.iter().product::<Dim>().is_zero() {
            return Ok(());
        }
        let rank = out.shape.len();
        let istrides = contiguous_strides(&src.shape);
        let mut e = Expr::default();
        let mut access = Access {
            buf: src.buf,
            offset: Dim::from(0i64),
            strides: vec![Dim::from(0i64); rank],
        };
        let mut indices = Vec::new();
        for (d, &(before, after)) in pads.iter().enumerate() {
            let skip = (-before).max(0);
            access.offset = &access.offset + &(&Dim::from(skip) * &istrides[d]);
            if before <= 0 && after <= 0 {
                access.strides[d] = istrides[d].clone();
                continue;
            }
            let n = &src.shape[d] - &Dim::from(skip + (-after).max(0));
            let pos = self.index_along(&mut e, rank, d, &out.shape[d], node.outputs[0])?;
            let index = source_index(&mut e, pos, before.max(0), &n, mode);
            indices.push(Indirect {
                index,
                stride: istrides[d].clone(),
                len: n,
            });
        }
        e.push(ExprNode::Gather { access, indices }, src.dtype);
        self.push(Kernel::Loop(LoopNest::new(
            out.shape.clone(),
            Access::contiguous(out.buf, &out.shape),
            e,
        )));
        Ok(())
    }

    /// `out[.., i.., ..] = data[.., indices[i..], ..]` along `axis`.
    pub(super) fn gather(&mut self, node: &Node, axis: usize) -> Result<(), ScheduleError> {
        let data = self.view(node.inputs[0]).clone();
        let idx = self.view(node.inputs[1]).clone();
        let out = self.temp(node.outputs[0])?;
        let (ds, is) = (
            contiguous_strides(&data.shape),
            contiguous_strides(&idx.shape),
        );
        let r = idx.shape.len();
        let mut idx_strides = vec![Dim::from(0i64); out.shape.len()];
        idx_strides[axis..axis + r].clone_from_slice(&is);
        let mut data_strides = vec![Dim::from(0i64); out.shape.len()];
        data_strides[..axis].clone_from_slice(&ds[..axis]);
        data_strides[axis + r..].clone_from_slice(&ds[axis + 1..]);
        self.push_gather(
            &out,
            &idx,
            idx_strides,
            data.buf,
            data_strides,
            ds[axis].clone(),
            data.shape[axis].clone(),
        );
        Ok(())
    }

    /// `out[i][j][k] = data[i][indices[i][j][k]][k]` (for axis 1).
    pub(super) fn gather_elements(
        &mut self,
        node: &Node,
        axis: usize,
    ) -> Result<(), ScheduleError> {
        let data = self.view(node.inputs[0]).clone();
        let idx = self.view(node.inputs[1]).clone();
        let out = self.temp(node.outputs[0])?;
        let mut data_strides = contiguous_strides(&data.shape);
        let axis_stride = std::mem::replace(&mut data_strides[axis], Dim::from(0i64));
        let idx_strides = contiguous_strides(&idx.shape);
        self.push_gather(
            &out,
            &idx,
            idx_strides,
            data.buf,
            data_strides,
            axis_stride,
            data.shape[axis].clone(),
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn push_gather(
        &mut self,
        out: &super::View,
        idx: &super::View,
        idx_strides: Vec<Dim>,
        data: BufId,
        data_strides: Vec<Dim>,
        axis_stride: Dim,
        axis_len: Dim,
    ) {
        let mut expr = Expr::default();
        let index = expr.push(
            ExprNode::Load(Access {
                buf: idx.buf,
                offset: Dim::from(0i64),
                strides: idx_strides,
            }),
            idx.dtype,
        );
        expr.push(
            ExprNode::Gather {
                access: Access {
                    buf: data,
                    offset: Dim::from(0i64),
                    strides: data_strides,
                },
                indices: vec![Indirect {
                    index,
                    stride: axis_stride,
                    len: axis_len,
                }],
            },
            out.dtype,
        );
        self.push(Kernel::Loop(LoopNest {
            out: Access::contiguous(out.buf, &out.shape),
            shape: out.shape.clone(),
            expr,
            scatter: Vec::new(),
            serial: false,
        }));
    }

    /// `a[.., m, k] × b[.., k, n]` with broadcast batch dims, as one batched GEMM call.
    pub(super) fn matmul(&mut self, node: &Node) -> Result<(), ScheduleError> {
        let a = self.view(node.inputs[0]).clone();
        let b = self.view(node.inputs[1]).clone();
        let c = self.temp(node.outputs[0])?;
        let rank = c.shape.len();
        let (m, n) = (c.shape[rank - 2].clone(), c.shape[rank - 1].clone());
        let k = a.shape[a.shape.len() - 1].clone();
        let batch = c.shape[..rank - 2].to_vec();
        let operand = |v: &super::View| {
            let (mat_shape, rows) = v.shape.split_at(v.shape.len() - 2);
            let mat = &rows[0] * &rows[1];
            MatOperand {
                buf: v.buf,
                offset: Dim::from(0i64),
                batch_strides: super::broadcast_strides(mat_shape, &batch)
                    .iter()
                    .map(|s| s * &mat)
                    .collect(),
                row_stride: rows[1].clone(),
                col_stride: Dim::from(1i64),
            }
        };
        let mm = MatMul {
            a: operand(&a),
            b: operand(&b),
            c: operand(&c),
            batch,
            m,
            k,
            n,
            epilogue: GemmEpilogue::default(),
        };
        self.push(Kernel::Call(Call::MatMul(Box::new(mm))));
        Ok(())
    }
}

/// The index into an axis of `n` elements (after cropping) that fills output position
/// `pos` of an axis padded by `before`, as an i64 node: edge clamps, wrap takes the
/// remainder, reflect folds with period `2(n - 1)` (at least 1, so `n = 1` reads 0).
fn source_index(e: &mut Expr, pos: usize, before: i64, n: &Dim, mode: PadMode) -> usize {
    let i64 = DType::I64;
    let before = e.push(ExprNode::Const(Scalar::Int(before)), i64);
    let c = e.push(ExprNode::Binary(BinaryOp::Sub, pos, before), i64);
    let len = e.push_size(n, i64);
    let bin = |e: &mut Expr, op, a, b| e.push(ExprNode::Binary(op, a, b), i64);
    match mode {
        PadMode::Edge | PadMode::Constant => {
            let one = e.push(ExprNode::Const(Scalar::Int(1)), i64);
            let zero = e.push(ExprNode::Const(Scalar::Int(0)), i64);
            let last = bin(e, BinaryOp::Sub, len, one);
            let low = bin(e, BinaryOp::Min, c, last);
            bin(e, BinaryOp::Max, low, zero)
        }
        PadMode::Wrap => bin(e, BinaryOp::Mod, c, len),
        PadMode::Reflect => {
            let one = e.push(ExprNode::Const(Scalar::Int(1)), i64);
            let two = e.push(ExprNode::Const(Scalar::Int(2)), i64);
            let last = bin(e, BinaryOp::Sub, len, one);
            let doubled = bin(e, BinaryOp::Mul, last, two);
            let period = bin(e, BinaryOp::Max, doubled, one);
            let r = bin(e, BinaryOp::Mod, c, period);
            let inside = e.push(ExprNode::Binary(BinaryOp::Less, r, len), DType::Bool);
            let folded = bin(e, BinaryOp::Sub, period, r);
            e.push(ExprNode::Where(inside, r, folded), i64)
        }
    }
}
