//! A fused linear layer ([`kiln_ir::Op::Linear`]) as one GEMM call with an epilogue: the
//! leading axes of `x[..., K]` are flattened into the rows of one `M × K` product (the
//! buffers are contiguous), so a `[B, S, K]` activation is a single `B·S × K × N` GEMM
//! whose constant weight is packed once ([`crate::exec`]), and the bias, activation and
//! residual are applied to each block of the result while it is in cache.

use super::{ScheduleError, Scheduler};
use crate::kernel::*;
use kiln_ir::{Dim, Epilogue, Node};

impl Scheduler<'_> {
    pub(super) fn linear(&mut self, node: &Node, e: Epilogue) -> Result<(), ScheduleError> {
        let x = self.view(node.inputs[0]).clone();
        let w = self.view(node.inputs[1]).clone();
        let mut rest = node.inputs[2..].iter().map(|v| self.view(*v).buf);
        let bias = if e.bias { rest.next() } else { None };
        let residual = e.residual.zip(rest.next());
        let c = self.temp(node.outputs[0])?;
        let (k, n) = (w.shape[0].clone(), w.shape[1].clone());
        let m = x.shape[..x.shape.len() - 1].iter().product();
        let operand = |buf: BufId, cols: &Dim| MatOperand {
            buf,
            offset: Dim::from(0i64),
            batch_strides: Vec::new(),
            row_stride: cols.clone(),
            col_stride: Dim::from(1i64),
        };
        let mm = MatMul {
            batch: Vec::new(),
            a: operand(x.buf, &k),
            b: operand(w.buf, &n),
            c: operand(c.buf, &n),
            m,
            k,
            n,
            epilogue: GemmEpilogue {
                bias,
                activation: e.activation,
                residual,
            },
        };
        self.push(Kernel::Call(Call::MatMul(Box::new(mm))));
        Ok(())
    }
}
