//! Loop nests: normalizing the iteration space and emitting the loops of [`LoopNest`] and
//! [`Reduce`] kernels, with an f32x4 innermost loop (plus a scalar tail) when every access
//! is contiguous or invariant along it. A scatter's store adds its indirect terms to the
//! output address (and is never vectorized).

use super::expr::{vectorizable, Operands, LANES};
use super::ops::clif_type;
use super::{FnCx, LowerError};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::Variable;
use kiln_ir::{DType, Dim};
use kiln_kernel::axes::normalize;
use kiln_kernel::kernel::{combine_identity, Access, Combine, Expr, ExprNode, LoopNest, Reduce};

/// The accesses of an expression (loads and gathers) in node order, and which node uses which.
pub(super) fn expr_accesses(e: &Expr) -> (Vec<Access>, Vec<Option<usize>>) {
    let mut accs = Vec::new();
    let node_acc = e
        .nodes
        .iter()
        .map(|n| match n {
            ExprNode::Load(a) | ExprNode::Gather { access: a, .. } => {
                accs.push(a.clone());
                Some(accs.len() - 1)
            }
            _ => None,
        })
        .collect();
    (accs, node_acc)
}

/// The body of the innermost loop level: given the bounds of the last axis and each
/// walk's offset at its start.
pub(super) type InnerFn<'f, 'a, 'b> =
    dyn FnMut(&mut FnCx<'a, 'b>, Value, Value, &[Value]) -> Result<(), LowerError> + 'f;

/// One element (or four, in vector mode) at loop index `i`, with what was hoisted out of
/// the loop.
pub(super) type ElementFn<'f, 'a, 'b> =
    dyn FnMut(&mut FnCx<'a, 'b>, Value, bool, &Hoisted) -> Result<(), LowerError> + 'f;

/// Per node of `e`: for a load strided along axis `last` (neither invariant nor
/// contiguous), the byte step between vector lanes.
fn lane_steps(
    e: &Expr,
    node_acc: &[Option<usize>],
    walks: &[Walk],
    last: usize,
    first_walk: usize,
) -> Vec<Option<i64>> {
    e.nodes
        .iter()
        .zip(node_acc)
        .zip(&e.dtypes)
        .map(|((n, a), d)| match (n, a) {
            (ExprNode::Load(_), Some(a)) => match walks[a + first_walk].strides[last] {
                Step::Const(step) => (step != 0 && step != d.size_bytes() as i64).then_some(step),
                // Vector loops only walk constant inner strides (see `constant_inner`).
                Step::Value(_) => None,
            },
            _ => None,
        })
        .collect()
}

/// What an innermost loop reads from before the loop, per expression node: loop-invariant
/// values (splat to all lanes in vector mode), and in scalar mode the checked byte offsets
/// of gathers whose indices are loop-invariant, so an embedding lookup checks each index
/// once per row rather than once per element.
#[derive(Default)]
pub(super) struct Hoisted {
    pub values: Vec<Option<Value>>,
    pub offsets: Vec<Option<Value>>,
    /// In vector mode, per load node that is strided along the loop: the byte step between
    /// its lanes, which are then read one by one.
    pub lanes: Vec<Option<i64>>,
}

impl Hoisted {
    /// Operands for one evaluation at `addrs`, reading the hoisted values.
    pub(super) fn operands<'v>(
        &'v self,
        addrs: &'v [Option<Value>],
        acc: Option<Value>,
        stats: &'v [Value],
        vector: bool,
    ) -> Operands<'v> {
        Operands {
            addrs,
            splats: &self.values,
            offsets: &self.offsets,
            lanes: &self.lanes,
            only: None,
            acc,
            stats,
            vector,
        }
    }
}

/// The reduced loops of a reduction: their extents, walks (byte steps per reduced axis),
/// which access each value node reads, and whether the innermost strides are constants.
#[derive(Clone, Copy)]
pub(super) struct Levels<'l> {
    pub shape: &'l [Dim],
    pub walks: &'l [Walk],
    pub node_acc: &'l [Option<usize>],
    pub constant_inner: bool,
}

/// What one reduction combines: a [`Reduce`]'s value, or a row statistic's (which may
/// read the row's earlier statistics: as scalars, and splat for the vector loop).
pub(super) struct Reduction<'e> {
    pub value: &'e Expr,
    pub combine: Combine,
    pub stats: &'e [Value],
    pub vstats: &'e [Value],
}

/// A byte step of a walk: a constant, or a symbolic size computed before the loops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Step {
    Const(i64),
    Value(Value),
}

impl Step {
    pub(super) fn is_zero(self) -> bool {
        self == Step::Const(0)
    }
}

/// One access, ready for code: buffer, byte offset and byte strides per loop axis.
pub(super) struct Walk {
    pub buf: usize,
    pub offset: Step,
    pub strides: Vec<Step>,
}

/// Whether every stride along `axis` is a constant (vector loops need constant steps).
pub(super) fn constant_inner(strides: &[Vec<Dim>], axis: usize) -> bool {
    strides.iter().all(|s| s[axis].is_const())
}

impl<'a, 'b> FnCx<'a, 'b> {
    /// The walks of `accs` with `strides` (in elements, one row per access), as byte steps;
    /// call before the loops, so that symbolic steps are computed once.
    pub(super) fn walks(&mut self, accs: &[Access], strides: &[Vec<Dim>]) -> Vec<Walk> {
        accs.iter()
            .zip(strides)
            .map(|(a, s)| {
                let size = Dim::from(self.dtype_of(a.buf).size_bytes());
                Walk {
                    buf: a.buf,
                    offset: self.step(&(&a.offset * &size)),
                    strides: s.iter().map(|x| self.step(&(x * &size))).collect(),
                }
            })
            .collect()
    }

    /// `d` as a step: its value when constant, else code computing it here.
    pub(super) fn step(&mut self, d: &Dim) -> Step {
        match d.as_const() {
            Some(c) => Step::Const(c),
            None => Step::Value(self.size(d)),
        }
    }

    /// `for i in lo..hi (step)`; `hi` is exclusive and must be reachable from `lo` by `step`.
    pub(super) fn for_range(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        body: &mut dyn FnMut(&mut Self, Value) -> Result<(), LowerError>,
    ) -> Result<(), LowerError> {
        let header = self.b.create_block();
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, types::I64);
        self.b.ins().jump(header, &[lo.into()]);
        self.b.switch_to_block(header);
        let i = self.b.block_params(header)[0];
        let more = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        self.b.ins().brif(more, inner, &[], exit, &[]);
        self.b.switch_to_block(inner);
        body(self, i)?;
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.ins().jump(header, &[next.into()]);
        self.b.switch_to_block(exit);
        Ok(())
    }

    /// `base + offset + i * stride` (skipping the multiply for invariant accesses).
    pub(super) fn advance(&mut self, off: Value, i: Value, stride: Step) -> Value {
        let step = match stride {
            Step::Const(0) => return off,
            Step::Const(c) => self.b.ins().imul_imm_s(i, c),
            Step::Value(v) => self.b.ins().imul(i, v),
        };
        self.b.ins().iadd(off, step)
    }

    /// `off + step`.
    pub(super) fn offset_by(&mut self, off: Value, step: Step) -> Value {
        match step {
            Step::Const(c) => self.b.ins().iadd_imm_s(off, c),
            Step::Value(v) => self.b.ins().iadd(off, v),
        }
    }

    /// Every walk's offset advanced by `i` steps along axis `axis`.
    pub(super) fn advance_all(
        &mut self,
        offs: &[Value],
        walks: &[Walk],
        i: Value,
        axis: usize,
    ) -> Vec<Value> {
        offs.iter()
            .zip(walks)
            .map(|(&o, w)| self.advance(o, i, w.strides[axis]))
            .collect()
    }

    /// Bounds of loop axis `d`: the function's `start..end` for the outermost axis.
    fn bounds(&mut self, d: usize, n: &Dim) -> (Value, Value) {
        if d == 0 {
            (self.start(), self.end())
        } else {
            let lo = self.b.ins().iconst(types::I64, 0);
            (lo, self.size(n))
        }
    }

    /// Emits loops over axes `d..rank-1` of `shape`, advancing each walk's offset, and calls
    /// `inner` with the bounds of the last axis and the offsets at its start.
    pub(super) fn levels(
        &mut self,
        shape: &[Dim],
        walks: &[Walk],
        d: usize,
        offs: Vec<Value>,
        inner: &mut InnerFn<'_, 'a, 'b>,
    ) -> Result<(), LowerError> {
        let (lo, hi) = self.bounds(d, &shape[d]);
        if d + 1 == shape.len() {
            return inner(self, lo, hi, &offs);
        }
        self.for_range(lo, hi, 1, &mut |cx, i| {
            let next: Vec<Value> = cx.advance_all(&offs, walks, i, d);
            cx.levels(shape, walks, d + 1, next, inner)
        })
    }

    pub(super) fn start_offsets(&mut self, walks: &[Walk]) -> Vec<Value> {
        walks
            .iter()
            .map(|w| {
                let base = self.base(w.buf);
                self.offset_by(base, w.offset)
            })
            .collect()
    }

    /// Lowers a loop nest; returns the extent of its outermost loop.
    pub(crate) fn loop_nest(&mut self, l: &LoopNest) -> Result<Dim, LowerError> {
        let (loads, node_acc) = expr_accesses(&l.expr);
        let mut accs = vec![l.out.clone()];
        accs.extend(loads);
        let mut strides: Vec<Vec<Dim>> = accs.iter().map(|a| a.strides.clone()).collect();
        let shape = normalize(&l.shape, &mut strides);
        self.load_bases(accs.iter().map(|a| a.buf));
        let walks = self.walks(&accs, &strides);
        let last = shape.len() - 1;
        // A strided f32 load is read lane by lane, which still pays when the expression
        // does more than copy (a transpose fused with a quantize-dequantize round trip).
        let strided_ok = |i: usize, a: usize| {
            let s = &strides[a + 1][last];
            s.is_zero()
                || s.is_one()
                || matches!(l.expr.nodes[i], ExprNode::Load(_)) && l.expr.dtypes[i] == DType::F32
        };
        let vector = l.scatter.is_empty()
            && vectorizable(&l.expr)
            && constant_inner(&strides, last)
            && strides[0][last].is_one()
            && node_acc
                .iter()
                .enumerate()
                .all(|(i, a)| a.is_none_or(|a| strided_ok(i, a)));
        clif_type(self.dtype_of(l.out.buf))?;
        let offs = self.start_offsets(&walks);
        let mut inner = |cx: &mut Self, lo: Value, hi: Value, offs: &[Value]| {
            let element = &mut |cx: &mut Self, i: Value, vector: bool, hoisted: &Hoisted| {
                let addrs: Vec<Value> = cx.advance_all(offs, &walks, i, last);
                let node_addrs: Vec<Option<Value>> =
                    node_acc.iter().map(|a| a.map(|a| addrs[a + 1])).collect();
                let ops = hoisted.operands(&node_addrs, None, &[], vector);
                let vals = cx.emit_values(&l.expr, &ops)?;
                let v = *vals
                    .last()
                    .ok_or_else(|| LowerError::Op("empty expression".into()))?;
                if vector && l.expr.dtype() == DType::Bool {
                    cx.store_mask(v, addrs[0]);
                } else {
                    let at = if l.scatter.is_empty() {
                        addrs[0]
                    } else {
                        let elem = cx.dtype_of(l.out.buf);
                        cx.indirect(addrs[0], &l.scatter, &vals, &l.expr.dtypes, elem)
                    };
                    cx.b.ins().store(MemFlagsData::trusted(), v, at, 0);
                }
                Ok(())
            };
            let extent = &shape[last];
            cx.innermost(
                lo, hi, extent, vector, &l.expr, &node_acc, offs, &walks, last, element,
            )
        };
        self.levels(&shape, &walks, 0, offs, &mut inner)?;
        Ok(shape[0].clone())
    }

    /// The innermost loop (`extent` iterations in all, `lo..hi` of them here): vector
    /// iterations then a scalar tail, or all scalar with the loop invariants hoisted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn innermost(
        &mut self,
        lo: Value,
        hi: Value,
        extent: &Dim,
        vector: bool,
        e: &Expr,
        node_acc: &[Option<usize>],
        offs: &[Value],
        walks: &[Walk],
        last: usize,
        element: &mut ElementFn<'_, 'a, 'b>,
    ) -> Result<(), LowerError> {
        let mut tail_lo = lo;
        if vector {
            // Loop-invariant loads are read once and splat.
            let splats = Hoisted {
                values: self.splats(e, node_acc, offs, walks, last, 1),
                offsets: Vec::new(),
                lanes: lane_steps(e, node_acc, walks, last, 1),
            };
            let n = self.b.ins().isub(hi, lo);
            let whole = self.b.ins().band_imm_s(n, !(LANES - 1));
            let vhi = self.b.ins().iadd(lo, whole);
            self.for_range(lo, vhi, LANES, &mut |cx, i| element(cx, i, true, &splats))?;
            tail_lo = vhi;
        }
        if vector || extent.is_zero() {
            let none = Hoisted::default();
            return self.for_range(tail_lo, hi, 1, &mut |cx, i| element(cx, i, false, &none));
        }
        self.when_nonempty(lo, hi, extent, &mut |cx| {
            let hoisted = cx.hoist(e, node_acc, offs, walks, last, 1)?;
            cx.for_range(tail_lo, hi, 1, &mut |cx, i| element(cx, i, false, &hoisted))
        })
    }

    /// Runs `body` where `lo < hi`: directly when `extent`, the loop's full extent, is a
    /// constant (the executor never hands out an empty range of a non-empty loop), behind
    /// a branch when it is symbolic (so hoisted loads never read past an empty axis).
    pub(super) fn when_nonempty(
        &mut self,
        lo: Value,
        hi: Value,
        extent: &Dim,
        body: &mut dyn FnMut(&mut Self) -> Result<(), LowerError>,
    ) -> Result<(), LowerError> {
        if extent.is_const() {
            return body(self);
        }
        let (run, done) = (self.b.create_block(), self.b.create_block());
        let some = self.b.ins().icmp(IntCC::SignedLessThan, lo, hi);
        self.b.ins().brif(some, run, &[], done, &[]);
        self.b.switch_to_block(run);
        body(self)?;
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
        Ok(())
    }

    /// Evaluates, before a scalar innermost loop, the nodes of `e` that do not change along
    /// it (loads with a zero stride on axis `last`, and what is computed from them), and
    /// the checked offsets of gathers whose indices are among them. Called only when the
    /// loop runs at least once, so the hoisted loads stay within their buffers and a bad
    /// index is reported exactly when the loop would have read through it.
    fn hoist(
        &mut self,
        e: &Expr,
        node_acc: &[Option<usize>],
        offs: &[Value],
        walks: &[Walk],
        last: usize,
        first_walk: usize,
    ) -> Result<Hoisted, LowerError> {
        let still =
            |a: &Option<usize>| a.is_some_and(|a| walks[a + first_walk].strides[last].is_zero());
        let mut inv = vec![false; e.nodes.len()];
        for (i, node) in e.nodes.iter().enumerate() {
            inv[i] = match node {
                ExprNode::Load(_) => still(&node_acc[i]),
                ExprNode::Const(_) | ExprNode::Size(_) => true,
                ExprNode::Unary(_, a) | ExprNode::Cast(a) | ExprNode::Bitcast(a) => inv[*a],
                ExprNode::Binary(_, a, b) => inv[*a] && inv[*b],
                ExprNode::Where(c, a, b) => inv[*c] && inv[*a] && inv[*b],
                ExprNode::Gather { indices, .. } => {
                    still(&node_acc[i]) && indices.iter().all(|t| inv[t.index])
                }
                ExprNode::Acc | ExprNode::Stat(_) => false,
            };
        }
        let reads = |i: usize| matches!(e.nodes[i], ExprNode::Load(_) | ExprNode::Gather { .. });
        let gathers: Vec<usize> = (0..e.nodes.len())
            .filter(|&i| match &e.nodes[i] {
                ExprNode::Gather { indices, .. } => !inv[i] && indices.iter().all(|t| inv[t.index]),
                _ => false,
            })
            .collect();
        if gathers.is_empty() && !(0..e.nodes.len()).any(|i| inv[i] && reads(i)) {
            return Ok(Hoisted::default());
        }
        let addrs: Vec<Option<Value>> = node_acc
            .iter()
            .map(|a| a.map(|a| offs[a + first_walk]))
            .collect();
        let ops = Operands {
            addrs: &addrs,
            splats: &[],
            offsets: &[],
            lanes: &[],
            only: Some(&inv),
            acc: None,
            stats: &[],
            vector: false,
        };
        let vals = self.emit_values(e, &ops)?;
        let mut offsets = vec![None; e.nodes.len()];
        for i in gathers {
            if let ExprNode::Gather { indices, .. } = &e.nodes[i] {
                let zero = self.b.ins().iconst(types::I64, 0);
                offsets[i] = Some(self.indirect(zero, indices, &vals, &e.dtypes, e.dtypes[i]));
            }
        }
        let values = (0..e.nodes.len())
            .map(|i| inv[i].then_some(vals[i]))
            .collect();
        Ok(Hoisted {
            values,
            offsets,
            lanes: Vec::new(),
        })
    }

    /// For each load node invariant along the last axis: its value splat to f32x4.
    fn splats(
        &mut self,
        e: &Expr,
        node_acc: &[Option<usize>],
        offs: &[Value],
        walks: &[Walk],
        last: usize,
        first_walk: usize,
    ) -> Vec<Option<Value>> {
        e.nodes
            .iter()
            .zip(node_acc)
            .map(|(n, a)| match (n, a) {
                (ExprNode::Load(_), Some(a)) if walks[a + first_walk].strides[last].is_zero() => {
                    let addr = offs[a + first_walk];
                    Some(match self.dtype_of(walks[a + first_walk].buf) {
                        DType::Bool => self.splat_mask(addr),
                        _ => {
                            let v = self.load(types::F32, addr);
                            self.b.ins().splat(types::F32X4, v)
                        }
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// Lowers a reduction; returns the extent of its outermost loop.
    pub(crate) fn reduce(&mut self, r: &Reduce) -> Result<Dim, LowerError> {
        let k = r.shape.len();
        let (vloads, vnode) = expr_accesses(&r.value);
        let (ploads, pnode) = expr_accesses(&r.post);
        // Kept axes: out, post loads, and the kept part of value loads, normalized together.
        let mut kept: Vec<Vec<Dim>> = std::iter::once(&r.out)
            .chain(&ploads)
            .map(|a| a.strides.clone())
            .chain(vloads.iter().map(|a| a.strides[..k].to_vec()))
            .collect();
        let kshape = normalize(&r.shape, &mut kept);
        let mut red: Vec<Vec<Dim>> = vloads.iter().map(|a| a.strides[k..].to_vec()).collect();
        let rshape = normalize(&r.reduced, &mut red);
        let all: Vec<Access> = std::iter::once(r.out.clone())
            .chain(ploads)
            .chain(vloads.clone())
            .collect();
        self.load_bases(all.iter().map(|a| a.buf));
        let kwalks = self.walks(&all, &kept);
        let nv = vloads.len();
        let first_v = all.len() - nv;
        let rwalks = self.walks(&vloads, &red);
        let inner_const = constant_inner(&red, rshape.len() - 1);
        let dtype = r.value.dtype();
        let ty = clif_type(dtype)?;
        let offs = self.start_offsets(&kwalks);
        let klast = kshape.len() - 1;
        let mut inner = |cx: &mut Self, lo: Value, hi: Value, offs: &[Value]| {
            cx.for_range(lo, hi, 1, &mut |cx, i| {
                let at: Vec<Value> = cx.advance_all(offs, &kwalks, i, klast);
                let acc = cx.b.declare_var(ty);
                let init = cx.constant(ty, combine_identity(r.combine, dtype));
                cx.b.def_var(acc, init);
                let voffs: Vec<Value> = at[first_v..].to_vec();
                let reduction = Reduction {
                    value: &r.value,
                    combine: r.combine,
                    stats: &[],
                    vstats: &[],
                };
                let levels = Levels {
                    shape: &rshape,
                    walks: &rwalks,
                    node_acc: &vnode,
                    constant_inner: inner_const,
                };
                cx.reduce_levels(&reduction, &levels, 0, voffs, acc)?;
                let a = cx.b.use_var(acc);
                let paddrs: Vec<Option<Value>> =
                    pnode.iter().map(|p| p.map(|p| at[p + 1])).collect();
                let none = Hoisted::default();
                let ops = none.operands(&paddrs, Some(a), &[], false);
                let v = cx.emit_expr(&r.post, &ops)?;
                cx.b.ins().store(MemFlagsData::trusted(), v, at[0], 0);
                Ok(())
            })
        };
        if kshape.len() == 1 {
            let (lo, hi) = self.bounds(0, &kshape[0]);
            inner(self, lo, hi, &offs)?;
        } else {
            self.levels(&kshape, &kwalks, 0, offs, &mut inner)?;
        }
        Ok(kshape[0].clone())
    }

    /// The loops over the reduced axes, accumulating into `acc`.
    pub(super) fn reduce_levels(
        &mut self,
        r: &Reduction<'_>,
        levels: &Levels<'_>,
        d: usize,
        offs: Vec<Value>,
        acc: Variable,
    ) -> Result<(), LowerError> {
        let Levels {
            shape,
            walks,
            node_acc,
            ..
        } = *levels;
        let lo = self.b.ins().iconst(types::I64, 0);
        let hi = self.size(&shape[d]);
        if d + 1 < shape.len() {
            return self.for_range(lo, hi, 1, &mut |cx, i| {
                let next: Vec<Value> = cx.advance_all(&offs, walks, i, d);
                cx.reduce_levels(r, levels, d + 1, next, acc)
            });
        }
        let vector = vectorizable(r.value)
            && levels.constant_inner
            && r.value.dtypes.iter().all(|&t| t == DType::F32)
            && walks
                .iter()
                .all(|w| w.strides[d].is_zero() || w.strides[d] == Step::Const(4));
        let element = |cx: &mut Self, i: Value, vector: bool, hoisted: &Hoisted, acc: Variable| {
            let addrs: Vec<Option<Value>> = node_acc
                .iter()
                .map(|a| a.map(|a| cx.advance(offs[a], i, walks[a].strides[d])))
                .collect();
            let stats = if vector { r.vstats } else { r.stats };
            let ops = hoisted.operands(&addrs, None, stats, vector);
            let v = cx.emit_expr(r.value, &ops)?;
            let cur = cx.b.use_var(acc);
            let next = cx.combine(r.combine, r.value.dtype(), cur, v);
            cx.b.def_var(acc, next);
            Ok(())
        };
        let mut tail_lo = lo;
        if vector {
            let splats = Hoisted {
                values: self.splats(r.value, node_acc, &offs, walks, d, 0),
                offsets: Vec::new(),
                lanes: Vec::new(),
            };
            let vacc = self.b.declare_var(types::F32X4);
            let init = self.constant(types::F32X4, combine_identity(r.combine, DType::F32));
            self.b.def_var(vacc, init);
            let vhi = self.b.ins().band_imm_s(hi, !(LANES - 1));
            self.for_range(lo, vhi, LANES, &mut |cx, i| {
                element(cx, i, true, &splats, vacc)
            })?;
            let v = self.b.use_var(vacc);
            let mut h = self.b.ins().extractlane(v, 0);
            for lane in 1..LANES as u8 {
                let x = self.b.ins().extractlane(v, lane);
                h = self.combine(r.combine, DType::F32, h, x);
            }
            let cur = self.b.use_var(acc);
            let merged = self.combine(r.combine, DType::F32, cur, h);
            self.b.def_var(acc, merged);
            tail_lo = vhi;
        }
        if vector || shape[d].is_zero() {
            let none = Hoisted::default();
            return self.for_range(tail_lo, hi, 1, &mut |cx, i| {
                element(cx, i, false, &none, acc)
            });
        }
        self.when_nonempty(lo, hi, &shape[d], &mut |cx| {
            let hoisted = cx.hoist(r.value, node_acc, &offs, walks, d, 0)?;
            cx.for_range(tail_lo, hi, 1, &mut |cx, i| {
                element(cx, i, false, &hoisted, acc)
            })
        })
    }

    pub(super) fn combine(&mut self, c: Combine, d: DType, a: Value, b: Value) -> Value {
        let unsigned = matches!(
            d,
            DType::U8 | DType::U16 | DType::U32 | DType::U64 | DType::Bool
        );
        let ins = self.b.ins();
        match (c, d.is_float()) {
            (Combine::Sum, true) => ins.fadd(a, b),
            (Combine::Sum, false) => ins.iadd(a, b),
            (Combine::Prod, true) => ins.fmul(a, b),
            (Combine::Prod, false) => ins.imul(a, b),
            (Combine::Max, true) => ins.fmax(a, b),
            (Combine::Min, true) => ins.fmin(a, b),
            (Combine::Max, false) if unsigned => ins.umax(a, b),
            (Combine::Max, false) => ins.smax(a, b),
            (Combine::Min, false) if unsigned => ins.umin(a, b),
            (Combine::Min, false) => ins.smin(a, b),
        }
    }
}
