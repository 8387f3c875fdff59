//! Row kernels ([`Row`]): one function whose outer loops walk the rows and whose body
//! runs each statistic's reduction over the row (f32x4 accumulators when the row is
//! contiguous, as for a [`crate::kernel::Reduce`]), then the map over the same row. The
//! row is read from memory by the first pass and from cache by the others.
//!
//! Per-row values (the row's addresses, each statistic and its splat) are *pinned*: stored
//! to a stack slot where they are computed. Cranelift's optimizer places pure values at
//! their uses and, for these sibling loops, does not hoist them back out, so without the
//! store each statistic's division and square root run again on every element of every
//! later loop over the row (measured: 2.4x slower). The store forces the value to be
//! computed once, before the loops, and every later use reuses it.

use super::expr::vectorizable;
use super::nest::{constant_inner, expr_accesses, Hoisted, Levels, Reduction};
use super::ops::clif_type;
use super::{FnCx, LowerError};
use crate::kernel::{combine_identity, Access, ExprNode, Row};
use cranelift_codegen::ir::{
    types, InstBuilder, MemFlagsData, StackSlot, StackSlotData, StackSlotKind, Value,
};
use kiln_ir::{DType, Dim};
use kiln_kernel::axes::normalize;

impl<'a, 'b> FnCx<'a, 'b> {
    /// Lowers a row kernel; returns the extent of its outermost loop.
    pub(crate) fn row(&mut self, r: &Row) -> Result<Dim, LowerError> {
        let memory_in_post = r.stats.iter().any(|s| {
            s.post
                .nodes
                .iter()
                .any(|n| matches!(n, ExprNode::Load(_) | ExprNode::Gather { .. }))
        });
        if memory_in_post {
            return Err(LowerError::Op(
                "a row statistic's post-map reads memory".into(),
            ));
        }
        let k = r.shape.len();
        // Walks in order: the output, the map's loads, then each statistic's loads, so the
        // output and map walks form one slice (the layout `innermost` expects).
        let (mloads, mnode) = expr_accesses(&r.map);
        let mut all: Vec<Access> = std::iter::once(r.out.clone()).chain(mloads).collect();
        let nmap = all.len();
        let mut stat_walks = Vec::with_capacity(r.stats.len());
        for s in &r.stats {
            let (loads, nodes) = expr_accesses(&s.value);
            let first = all.len();
            all.extend(loads);
            stat_walks.push((first..all.len(), nodes));
        }
        if all.iter().any(|a| a.strides.len() != k + 1) {
            return Err(LowerError::Op(
                "row access rank differs from the kernel's".into(),
            ));
        }
        let mut outer: Vec<Vec<Dim>> = all.iter().map(|a| a.strides[..k].to_vec()).collect();
        let oshape = normalize(&r.shape, &mut outer);
        let along: Vec<Vec<Dim>> = all.iter().map(|a| vec![a.strides[k].clone()]).collect();
        self.load_bases(all.iter().map(|a| a.buf));
        let owalks = self.walks(&all, &outer);
        let rwalks = self.walks(&all, &along);
        let out_dtype = self.dtype_of(r.out.buf);
        clif_type(out_dtype)?;
        let vector_map = vectorizable(&r.map)
            && along[0][0].is_one()
            && along[1..nmap]
                .iter()
                .all(|s| s[0].is_zero() || s[0].is_one());
        let inner_const = constant_inner(&along, 0);
        let row_len = std::slice::from_ref(&r.len);
        let offs = self.start_offsets(&owalks);
        let olast = oshape.len() - 1;
        let pins = all.len() + 2 * r.stats.len();
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (pins * PIN_BYTES) as u32,
            4,
        ));
        let mut inner = |cx: &mut Self, lo: Value, hi: Value, offs: &[Value]| {
            cx.for_range(lo, hi, 1, &mut |cx, i| {
                let at: Vec<Value> = cx.advance_all(offs, &owalks, i, olast);
                for (p, &v) in at.iter().enumerate() {
                    cx.pin(slot, p, v);
                }
                let mut stats: Vec<Value> = Vec::with_capacity(r.stats.len());
                let mut vstats: Vec<Value> = Vec::with_capacity(r.stats.len());
                for (s, (range, nodes)) in r.stats.iter().zip(&stat_walks) {
                    let dtype = s.value.dtype();
                    let ty = clif_type(dtype)?;
                    let acc = cx.b.declare_var(ty);
                    let init = cx.constant(ty, combine_identity(s.combine, dtype));
                    cx.b.def_var(acc, init);
                    let reduction = Reduction {
                        value: &s.value,
                        combine: s.combine,
                        stats: &stats,
                        vstats: &vstats,
                    };
                    let voffs = at[range.clone()].to_vec();
                    let levels = Levels {
                        shape: row_len,
                        walks: &rwalks[range.clone()],
                        node_acc: nodes,
                        constant_inner: inner_const,
                    };
                    cx.reduce_levels(&reduction, &levels, 0, voffs, acc)?;
                    let a = cx.b.use_var(acc);
                    let none = Hoisted::default();
                    let ops = none.operands(&[], Some(a), &stats, false);
                    let v = cx.emit_expr(&s.post, &ops)?;
                    let pin = all.len() + 2 * stats.len();
                    cx.pin(slot, pin, v);
                    if dtype == DType::F32 {
                        let splat = cx.b.ins().splat(types::F32X4, v);
                        cx.pin(slot, pin + 1, splat);
                        vstats.push(splat);
                    } else {
                        // Only f32 expressions vectorize; this pin stays unused.
                        vstats.push(v);
                    }
                    stats.push(v);
                }
                let stats = Stats {
                    scalar: &stats,
                    vector: &vstats,
                };
                cx.row_map(r, &stats, vector_map, &at[..nmap], &rwalks[..nmap], &mnode)
            })
        };
        self.levels(&oshape, &owalks, 0, offs, &mut inner)?;
        Ok(oshape[0].clone())
    }

    /// Stores `v` to pin slot `index` (see the module comment).
    fn pin(&mut self, slot: StackSlot, index: usize, v: Value) {
        // Addresses are i64 throughout the lowering (see `load_bases`).
        self.b
            .ins()
            .stack_store(types::I64, v, slot, (index * PIN_BYTES) as i32);
    }

    /// The map over one row: `out[j] = map(j)` for `j` in `0..len`, four lanes at a time
    /// when `vector`, then a scalar tail.
    #[allow(clippy::too_many_arguments)]
    fn row_map(
        &mut self,
        r: &Row,
        stats: &Stats<'_>,
        vector: bool,
        offs: &[Value],
        walks: &[super::nest::Walk],
        node_acc: &[Option<usize>],
    ) -> Result<(), LowerError> {
        let element = &mut |cx: &mut Self, i: Value, vector: bool, hoisted: &Hoisted| {
            let addrs: Vec<Value> = cx.advance_all(offs, walks, i, 0);
            let node_addrs: Vec<Option<Value>> =
                node_acc.iter().map(|a| a.map(|a| addrs[a + 1])).collect();
            let row_stats = if vector { stats.vector } else { stats.scalar };
            let ops = hoisted.operands(&node_addrs, None, row_stats, vector);
            let v = cx.emit_expr(&r.map, &ops)?;
            if vector && r.map.dtype() == DType::Bool {
                cx.store_mask(v, addrs[0]);
            } else {
                cx.b.ins().store(MemFlagsData::trusted(), v, addrs[0], 0);
            }
            Ok(())
        };
        let lo = self.b.ins().iconst(types::I64, 0);
        let hi = self.size(&r.len);
        self.innermost(
            lo, hi, &r.len, vector, &r.map, node_acc, offs, walks, 0, element,
        )
    }
}

/// Bytes per pinned value (the widest is an f32x4 splat).
const PIN_BYTES: usize = 16;

/// The current row's statistics, as scalars and splat to four lanes.
struct Stats<'v> {
    scalar: &'v [Value],
    vector: &'v [Value],
}
