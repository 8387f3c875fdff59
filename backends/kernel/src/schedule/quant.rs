//! A quantized linear layer ([`kiln_ir::Op::QuantLinear`]) as one runtime call: the leading
//! axes of `x[..., K]` flatten into the rows of one `M × K` product, as for a linear. The
//! constant weight is packed once into the integer GEMM's panels ([`crate::exec`]).

use super::{ScheduleError, Scheduler};
use crate::kernel::*;
use kiln_ir::{ActQuant, DType, Node, QuantAttrs};

impl Scheduler<'_> {
    pub(super) fn quant_linear(&mut self, node: &Node, q: QuantAttrs) -> Result<(), ScheduleError> {
        let [x, w] = [0, 1].map(|i| self.view(node.inputs[i]).clone());
        let mut rest = node.inputs[2..].iter().map(|v| self.view(*v).clone());
        let scale = if q.weights.params() > 0 {
            rest.next()
        } else {
            None
        };
        let mut rest = rest.map(|v| v.buf);
        let zero_points = if q.weights.zero_points() {
            rest.next()
        } else {
            None
        };
        // Inference checked that the scheme's operands are there.
        let quantized = match q.activations {
            ActQuant::Quantized | ActQuant::PerTensor => {
                let at = 2 + q.weights.params();
                Some(QuantizedInput {
                    signed: self.view(node.inputs[at]).dtype == DType::I8,
                    zero_point: rest.next().expect("an inferred zero point"),
                    scale: rest.next().expect("an inferred scale"),
                })
            }
            ActQuant::None | ActQuant::DynamicInt8 | ActQuant::DynamicU8 => None,
        };
        let bias = if q.epilogue.bias { rest.next() } else { None };
        let residual = q.epilogue.residual.zip(rest.next());
        let c = self.temp(node.outputs[0])?;
        self.push(Kernel::Call(Call::QuantLinear(QuantLinear {
            m: x.shape[..x.shape.len() - 1].iter().product(),
            k: w.shape[0].clone(),
            n: w.shape[1].clone(),
            x: x.buf,
            w: w.buf,
            scale_f16: scale.as_ref().is_some_and(|s| s.dtype == DType::F16),
            scale: scale.map(|s| s.buf),
            zero_points,
            quantized,
            c: c.buf,
            attrs: q,
            epilogue: GemmEpilogue {
                bias,
                activation: q.epilogue.activation,
                residual,
            },
        })));
        Ok(())
    }
}
