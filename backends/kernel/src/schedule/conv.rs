//! Convolution as a runtime call ([`Call::Conv`]): im2col into a planned scratch buffer
//! and a GEMM per batch image and group (see `runtime::conv`). The scratch comes from the
//! arena, so nothing is allocated at run time.

use super::{ScheduleError, Scheduler};
use crate::kernel::*;
use kiln_ir::{ConvAttrs, DType, Dim, Node};

/// True when the input already is the im2col matrix: a 1×1 kernel read at every position
/// (unit strides, no padding).
fn is_pointwise(a: &ConvAttrs, w_shape: &[Dim]) -> bool {
    w_shape[2..].iter().all(Dim::is_one)
        && a.strides.iter().all(|&s| s == 1)
        && a.pads.iter().all(|&p| p == (0, 0))
}

impl Scheduler<'_> {
    pub(super) fn conv(&mut self, node: &Node, a: &ConvAttrs) -> Result<(), ScheduleError> {
        let x = self.view(node.inputs[0]).clone();
        let w = self.view(node.inputs[1]).clone();
        let y = self.temp(node.outputs[0])?;
        let cols = if is_pointwise(a, &w.shape) {
            None
        } else {
            let rows = &x.shape[1] * &w.shape[2..].iter().product::<Dim>();
            let len = rows * y.shape[2..].iter().product::<Dim>();
            Some(self.scratch(DType::F32, vec![len], node.outputs[0]).buf)
        };
        self.push(Kernel::Call(Call::Conv(Conv {
            x: x.buf,
            w: w.buf,
            y: y.buf,
            cols,
            x_shape: x.shape,
            w_shape: w.shape,
            y_shape: y.shape,
            attrs: a.clone(),
        })));
        Ok(())
    }
}
