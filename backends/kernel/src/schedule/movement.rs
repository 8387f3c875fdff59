//! Data movement (transpose, slice, concat, expand, pad, gathers) as loop nests whose loads
//! carry the index arithmetic, and matmul as a runtime GEMM call over strided operands.

use super::{contiguous_strides, ScheduleError, Scheduler};
use crate::kernel::*;
use kiln_ir::{Node, SliceAxis};

impl Scheduler<'_> {
    /// `out = load(access)` over the output's shape.
    pub(super) fn copy(
        &mut self,
        node: &Node,
        load: impl FnOnce(&[usize]) -> Access,
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
            offset: 0,
            strides: perm.iter().map(|&p| own[p]).collect(),
        })
    }

    pub(super) fn slice(&mut self, node: &Node, axes: &[SliceAxis]) -> Result<(), ScheduleError> {
        let src = self.view(node.inputs[0]).clone();
        let mut strides = contiguous_strides(&src.shape);
        let mut offset = 0isize;
        for a in axes {
            let start = a.start.eval(self.bindings).unwrap_or(0) as isize;
            offset += start * strides[a.axis];
            strides[a.axis] *= a.step as isize;
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
        let mut at = 0usize;
        for v in &node.inputs {
            let src = self.view(*v).clone();
            if src.shape.iter().product::<usize>() > 0 {
                let mut expr = Expr::default();
                expr.push(
                    ExprNode::Load(Access::contiguous(src.buf, &src.shape)),
                    src.dtype,
                );
                self.push(Kernel::Loop(LoopNest {
                    out: Access {
                        buf: out.buf,
                        offset: at as isize * ostrides[axis],
                        strides: ostrides.clone(),
                    },
                    shape: src.shape.clone(),
                    expr,
                    scatter: Vec::new(),
                    serial: false,
                }));
            }
            at += src.shape[axis];
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
        let (mut ioff, mut ooff) = (0isize, 0isize);
        let mut shape = Vec::with_capacity(pads.len());
        for (d, &(before, after)) in pads.iter().enumerate() {
            let skip_in = (-before).max(0) as usize;
            let drop_in = (-after).max(0) as usize;
            shape.push(src.shape[d].saturating_sub(skip_in + drop_in));
            ioff += skip_in as isize * istrides[d];
            ooff += before.max(0) as isize * ostrides[d];
        }
        if shape.iter().product::<usize>() > 0 {
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
        let mut idx_strides = vec![0isize; out.shape.len()];
        idx_strides[axis..axis + r].copy_from_slice(&is);
        let mut data_strides = vec![0isize; out.shape.len()];
        data_strides[..axis].copy_from_slice(&ds[..axis]);
        data_strides[axis + r..].copy_from_slice(&ds[axis + 1..]);
        self.push_gather(
            &out,
            &idx,
            idx_strides,
            data.buf,
            data_strides,
            ds[axis],
            data.shape[axis],
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
        let axis_stride = data_strides[axis];
        data_strides[axis] = 0;
        let idx_strides = contiguous_strides(&idx.shape);
        self.push_gather(
            &out,
            &idx,
            idx_strides,
            data.buf,
            data_strides,
            axis_stride,
            data.shape[axis],
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn push_gather(
        &mut self,
        out: &super::View,
        idx: &super::View,
        idx_strides: Vec<isize>,
        data: BufId,
        data_strides: Vec<isize>,
        axis_stride: isize,
        axis_len: usize,
    ) {
        let mut expr = Expr::default();
        let index = expr.push(
            ExprNode::Load(Access {
                buf: idx.buf,
                offset: 0,
                strides: idx_strides,
            }),
            idx.dtype,
        );
        expr.push(
            ExprNode::Gather {
                access: Access {
                    buf: data,
                    offset: 0,
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
        let (m, n) = (c.shape[rank - 2], c.shape[rank - 1]);
        let k = a.shape[a.shape.len() - 1];
        let batch_shape = &c.shape[..rank - 2];
        let offsets = |shape: &[usize]| -> Vec<usize> {
            let mat_shape: Vec<usize> = shape[..shape.len() - 2].to_vec();
            let strides = super::broadcast_strides(&mat_shape, batch_shape);
            let mat = shape[shape.len() - 2] * shape[shape.len() - 1];
            batch_offsets(batch_shape, &strides)
                .into_iter()
                .map(|o| o * mat)
                .collect()
        };
        let operand = |buf: BufId, batch_offsets: Vec<usize>, cols: usize| MatOperand {
            buf,
            batch_offsets,
            row_stride: cols as isize,
            col_stride: 1,
        };
        let mm = MatMul {
            batch: batch_shape.iter().product(),
            m,
            k,
            n,
            a: operand(a.buf, offsets(&a.shape), k),
            b: operand(b.buf, offsets(&b.shape), n),
            c: operand(c.buf, offsets(&c.shape), n),
            epilogue: GemmEpilogue::default(),
        };
        self.push(Kernel::Call(Call::MatMul(mm)));
        Ok(())
    }
}

/// The flat offset (Σ index·stride) of every index of `shape`, in row-major order.
pub(super) fn batch_offsets(shape: &[usize], strides: &[isize]) -> Vec<usize> {
    let mut out = vec![0isize];
    for (&d, &s) in shape.iter().zip(strides) {
        out = out
            .iter()
            .flat_map(|&o| (0..d as isize).map(move |i| o + i * s))
            .collect();
    }
    out.into_iter().map(|o| o as usize).collect()
}
