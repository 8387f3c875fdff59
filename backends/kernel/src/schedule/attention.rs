//! Fused attention as one runtime call ([`Call::Attention`]): the operands are contiguous
//! buffers; leading dims flatten into one batch axis, and the mask is read through
//! broadcast strides over the scores, so a `[batch, 1, 1, seq]` padding mask is never
//! expanded.

use super::{broadcast_strides, ScheduleError, Scheduler};
use crate::kernel::*;
use kiln_ir::{AttentionAttrs, AttentionMask, Dim, Node};

impl Scheduler<'_> {
    pub(super) fn attention(
        &mut self,
        node: &Node,
        attrs: &AttentionAttrs,
    ) -> Result<(), ScheduleError> {
        let [q, k, v] = [0, 1, 2].map(|i| self.view(node.inputs[i]).clone());
        let out = self.temp(node.outputs[0])?;
        let r = q.shape.len();
        let heads = r - 3;
        let dims = AttentionDims {
            leading: q.shape[..heads].to_vec(),
            heads: q.shape[heads].clone(),
            kv_heads: k.shape[heads].clone(),
            q_len: q.shape[r - 2].clone(),
            kv_len: k.shape[r - 2].clone(),
            depth: q.shape[r - 1].clone(),
            v_depth: v.shape[r - 1].clone(),
        };
        let query_heads = self.known(&dims.heads, node.inputs[0])?;
        let kv_heads = self.known(&dims.kv_heads, node.inputs[1])?;
        if kv_heads == 0 || !query_heads.is_multiple_of(kv_heads) {
            return Err(ScheduleError::Unsupported {
                node: self.current,
                name: node.name.clone(),
                op: node.op.name(),
                reason: format!(
                    "{} query heads do not group over {} key/value heads",
                    dims.heads, dims.kv_heads
                ),
            });
        }
        let mask = (attrs.mask != AttentionMask::None).then(|| {
            let m = self.view(node.inputs[3]);
            let mut scores = q.shape[..r - 1].to_vec();
            scores.push(dims.kv_len.clone());
            let mut strides = broadcast_strides(&m.shape, &scores);
            let last: [Dim; 3] = [
                strides[heads].clone(),
                strides[r - 2].clone(),
                strides[r - 1].clone(),
            ];
            strides.truncate(heads);
            AttentionMaskOperand {
                buf: m.buf,
                keep: attrs.mask == AttentionMask::Keep,
                batch_strides: strides,
                strides: last,
            }
        });
        let d = &dims;
        // A cache's keys or values are read in place, through its capacity's strides.
        let operand = |i: usize, buf: BufId, depth: &Dim| match self.cache_strides(node.inputs[i]) {
            Some([batch, head, row, _]) => AttentionOperand {
                buf,
                offset: Dim::from(0i64),
                batch: batch.clone(),
                head: head.clone(),
                row: row.clone(),
            },
            _ => AttentionOperand::contiguous(buf, &d.kv_heads, &d.kv_len, depth),
        };
        let (k, v) = (operand(1, k.buf, &d.depth), operand(2, v.buf, &d.v_depth));
        self.push(Kernel::Call(Call::Attention(Box::new(Attention {
            q: AttentionOperand::contiguous(q.buf, &d.heads, &d.q_len, &d.depth),
            k,
            v,
            out: AttentionOperand::contiguous(out.buf, &d.heads, &d.q_len, &d.v_depth),
            dims,
            mask,
            scale: attrs.scale,
            rows: attrs.rows,
        }))));
        Ok(())
    }
}
