//! The entries for [`LoopNest`], [`Reduce`] and [`Row`] kernels: a grid-stride loop over
//! the kernel's independent items (output elements, outputs of a reduction, rows), each
//! item's index unflattened from the loop counter by the extents as the symbols give them.
//!
//! A loop nest's item is one element, one thread each. A reduction's output and a row are
//! each one warp's: the 32 lanes stride over the reduced elements (so consecutive lanes
//! read consecutive addresses), then combine their partial results by butterfly shuffles,
//! so every lane holds the result; a row's map is strided the same way. Reductions too
//! short to feed a warp (a constant extent below 32), and float accumulations that end in
//! an integer (whose truncation depends on the order of the sums), keep one thread per
//! output, looping in the interpreter's order. Warp results are combined in a tree, not in the
//! interpreter's order: floats differ by rounding, within the backend's tolerance.

use crate::cx::Cx;
use crate::expr::{self, class, Env, Val};
use crate::ptx::{Class, Opnd, Reg};
use crate::EmitError;
use kiln_ir::{BinaryOp, DType, Dim};
use kiln_kernel::axes::normalize;
use kiln_kernel::kernel::{combine_identity, Combine, ExprNode, LoopNest, Reduce, Row};

/// `for j in (from..to).step_by(step) { body(j) }`, the one loop every entry is built of.
pub(crate) fn strided(
    cx: &mut Cx,
    from: Opnd,
    to: Opnd,
    step: Opnd,
    body: impl FnOnce(&mut Cx, Reg) -> Result<(), EmitError>,
) -> Result<(), EmitError> {
    let e = &mut cx.e;
    let j = e.reg(Class::B64);
    e.op(format!("mov.s64 {j}, {from}"));
    let (top, end, done) = (e.label(), e.label(), e.reg(Class::Pred));
    e.place(&top);
    e.op(format!("setp.ge.s64 {done}, {j}, {to}"));
    e.op(format!("@{done} bra {end}"));
    body(cx, j)?;
    cx.e.op(format!("add.s64 {j}, {j}, {step}"));
    cx.e.op(format!("bra.uni {top}"));
    cx.e.place(&end);
    Ok(())
}

/// `for t in thread's items of 0..total { body(t) }`, striding by the grid's size.
fn grid_loop(
    cx: &mut Cx,
    total: &Dim,
    body: impl FnOnce(&mut Cx, Reg) -> Result<(), EmitError>,
) -> Result<(), EmitError> {
    let total = cx.dim(total)?;
    let (t, threads, _) = thread_ids(cx);
    strided(cx, Opnd::Reg(t), total, Opnd::Reg(threads), body)
}

/// `for j in 0..n { body(j) }` inside one thread.
pub(crate) fn count_loop(
    cx: &mut Cx,
    n: Opnd,
    body: impl FnOnce(&mut Cx, Reg) -> Result<(), EmitError>,
) -> Result<(), EmitError> {
    strided(cx, Opnd::Imm(0), n, Opnd::Imm(1), body)
}

/// This thread's index in the grid, the grid's thread count, and its lane in its warp.
fn thread_ids(cx: &mut Cx) -> (Reg, Reg, Reg) {
    let e = &mut cx.e;
    let [tid, ntid, ctaid, nctaid, lane32] = [0; 5].map(|_| e.reg(Class::B32));
    e.op(format!("mov.u32 {tid}, %tid.x"));
    e.op(format!("mov.u32 {ntid}, %ntid.x"));
    e.op(format!("mov.u32 {ctaid}, %ctaid.x"));
    e.op(format!("mov.u32 {nctaid}, %nctaid.x"));
    e.op(format!("and.b32 {lane32}, {tid}, {}", WARP - 1));
    let [first, local, t, threads, lane] = [0; 5].map(|_| e.reg(Class::B64));
    e.op(format!("mul.wide.u32 {first}, {ctaid}, {ntid}"));
    e.op(format!("cvt.u64.u32 {local}, {tid}"));
    e.op(format!("add.s64 {t}, {first}, {local}"));
    e.op(format!("mul.wide.u32 {threads}, {nctaid}, {ntid}"));
    e.op(format!("cvt.u64.u32 {lane}, {lane32}"));
    (t, threads, lane)
}

/// Threads of one warp, the unit that cooperates on a reduction's output or a row.
pub(crate) const WARP: u32 = 32;

/// Whether a reduction over `n` elements gets a warp per output (see the module docs).
fn uses_warps(n: &Dim) -> bool {
    n.as_const().is_none_or(|n| n >= i64::from(WARP))
}

/// Whether `r` gets a warp per output: a long enough extent, and not a float accumulation
/// that ends in an integer (an integer `reduce_log_sum`, say), whose truncated result
/// would depend on the order of the additions; those keep the interpreter's order.
fn reduce_uses_warps(r: &Reduce) -> bool {
    let exact_out = !r.post.dtype().is_float() && r.value.dtype().is_float();
    uses_warps(&product(&r.reduced)) && !exact_out
}

/// How many threads work on one item: a thread, or a warp whose lanes stride over the
/// item's elements and then combine.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Team {
    Thread,
    Warp,
}

impl Team {
    /// Threads per item.
    pub fn lanes(self) -> u32 {
        match self {
            Team::Thread => 1,
            Team::Warp => WARP,
        }
    }

    /// `for item in this team's items of 0..total { body(item, lane) }`. Warps of the grid
    /// take items in turn and all 32 lanes of a warp see the same item, so the loop's
    /// branches are warp-uniform and every lane reaches each shuffle. A thread's lane is 0.
    pub fn items(
        self,
        cx: &mut Cx,
        total: &Dim,
        body: impl FnOnce(&mut Cx, Reg, Opnd) -> Result<(), EmitError>,
    ) -> Result<(), EmitError> {
        if self == Team::Thread {
            return grid_loop(cx, total, |cx, t| body(cx, t, Opnd::Imm(0)));
        }
        let total = cx.dim(total)?;
        let (t, threads, lane) = thread_ids(cx);
        let (item, step) = (cx.e.reg(Class::B64), cx.e.reg(Class::B64));
        cx.e.op(format!("shr.u64 {item}, {t}, 5"));
        cx.e.op(format!("shr.u64 {step}, {threads}, 5"));
        let body = |cx: &mut Cx, item| body(cx, item, Opnd::Reg(lane));
        strided(cx, Opnd::Reg(item), total, Opnd::Reg(step), body)
    }

    /// `for j in (lane..n).step_by(lanes) { body(j) }`: the team's share of an item.
    pub fn over(
        self,
        cx: &mut Cx,
        lane: Opnd,
        n: Opnd,
        body: impl FnOnce(&mut Cx, Reg) -> Result<(), EmitError>,
    ) -> Result<(), EmitError> {
        strided(cx, lane, n, Opnd::Imm(i64::from(self.lanes())), body)
    }

    /// Combines the lanes' partial `acc` so every lane holds the whole (a thread's is).
    pub fn combine(self, cx: &mut Cx, c: Combine, acc: Val) -> Result<(), EmitError> {
        match self {
            Team::Thread => Ok(()),
            Team::Warp => warp_combine(cx, c, acc),
        }
    }

    /// Emits `body` for lane 0 only: one store of a result every lane holds.
    pub fn lead(
        self,
        cx: &mut Cx,
        lane: Opnd,
        body: impl FnOnce(&mut Cx) -> Result<(), EmitError>,
    ) -> Result<(), EmitError> {
        if self == Team::Thread {
            return body(cx);
        }
        let (skip, other) = (cx.e.label(), cx.e.reg(Class::Pred));
        cx.e.op(format!("setp.ne.s64 {other}, {lane}, 0"));
        cx.e.op(format!("@{other} bra {skip}"));
        body(cx)?;
        cx.e.place(&skip);
        Ok(())
    }
}

/// Combines `acc` over the warp's 32 lanes by butterfly shuffles (offsets 16, 8, 4, 2,
/// 1): afterwards every lane holds the combination of all of them.
fn warp_combine(cx: &mut Cx, c: Combine, acc: Val) -> Result<(), EmitError> {
    for offset in [16, 8, 4, 2, 1] {
        let other = Val {
            reg: shuffle_xor(&mut cx.e, acc.reg, offset),
            dtype: acc.dtype,
        };
        combine_into(cx, c, acc, other)?;
    }
    Ok(())
}

/// The value of `v` in lane `lane ^ offset`, for any register class (`shfl.sync` moves 32
/// bits, so 64-bit values go as two halves and predicates as 0 or 1).
pub(crate) fn shuffle_xor(e: &mut crate::ptx::Entry, v: Reg, offset: u32) -> Reg {
    let shfl = |e: &mut crate::ptx::Entry, w: Reg| {
        let r = e.reg(Class::B32);
        e.op(format!(
            "shfl.sync.bfly.b32 {r}, {w}, {offset}, 31, 0xffffffff"
        ));
        r
    };
    match v.class {
        Class::B32 => shfl(e, v),
        Class::F32 | Class::B16 => {
            let (widen, narrow) = match v.class {
                Class::F32 => ("mov.b32", "mov.b32"),
                _ => ("cvt.u32.u16", "cvt.u16.u32"),
            };
            let w = e.reg(Class::B32);
            e.op(format!("{widen} {w}, {v}"));
            let r = shfl(e, w);
            let back = e.reg(v.class);
            e.op(format!("{narrow} {back}, {r}"));
            back
        }
        Class::Pred => {
            let w = e.reg(Class::B32);
            e.op(format!("selp.u32 {w}, 1, 0, {v}"));
            let r = shfl(e, w);
            let p = e.reg(Class::Pred);
            e.op(format!("setp.ne.u32 {p}, {r}, 0"));
            p
        }
        Class::B64 | Class::F64 => {
            let bits = if v.class == Class::F64 {
                let b = e.reg(Class::B64);
                e.op(format!("mov.b64 {b}, {v}"));
                b
            } else {
                v
            };
            let (lo, hi, high) = (e.reg(Class::B32), e.reg(Class::B32), e.reg(Class::B64));
            e.op(format!("cvt.u32.u64 {lo}, {bits}"));
            e.op(format!("shr.u64 {high}, {bits}, 32"));
            e.op(format!("cvt.u32.u64 {hi}, {high}"));
            let (l, h) = (shfl(e, lo), shfl(e, hi));
            let [l64, h64, up, joined] = [0; 4].map(|_| e.reg(Class::B64));
            e.op(format!("cvt.u64.u32 {l64}, {l}"));
            e.op(format!("cvt.u64.u32 {h64}, {h}"));
            e.op(format!("shl.b64 {up}, {h64}, 32"));
            e.op(format!("or.b64 {joined}, {up}, {l64}"));
            if v.class == Class::F64 {
                let f = e.reg(Class::F64);
                e.op(format!("mov.b64 {f}, {joined}"));
                f
            } else {
                joined
            }
        }
    }
}

/// The index along each axis of `shape` of the row-major position `t`.
pub(crate) fn unflatten(cx: &mut Cx, t: Reg, shape: &[Dim]) -> Result<Vec<Reg>, EmitError> {
    let mut index = vec![t; shape.len()];
    let mut rest = t;
    for d in (1..shape.len()).rev() {
        let ext = cx.dim(&shape[d])?;
        let (i, q) = (cx.e.reg(Class::B64), cx.e.reg(Class::B64));
        cx.e.op(format!("rem.s64 {i}, {rest}, {ext}"));
        cx.e.op(format!("div.s64 {q}, {rest}, {ext}"));
        index[d] = i;
        rest = q;
    }
    if let Some(first) = index.first_mut() {
        *first = rest;
    }
    Ok(index)
}

fn product(shape: &[Dim]) -> Dim {
    shape.iter().product()
}

/// `l` with its iteration space in canonical form (unit axes dropped, axes that every
/// access walks contiguously merged), so an elementwise kernel over a contiguous tensor
/// unflattens no index at all: 64-bit division is dozens of instructions on a GPU.
fn normalized(l: &LoopNest) -> LoopNest {
    let mut l = l.clone();
    let mut strides = vec![l.out.strides.clone()];
    strides.extend(
        l.expr
            .nodes
            .iter_mut()
            .filter_map(access)
            .map(|a| a.strides.clone()),
    );
    l.shape = normalize(&l.shape, &mut strides);
    let mut rows = strides.into_iter();
    l.out.strides = rows.next().unwrap_or_default();
    for a in l.expr.nodes.iter_mut().filter_map(access) {
        a.strides = rows.next().unwrap_or_default();
    }
    l
}

/// The affine access of a load or gather node.
fn access(n: &mut ExprNode) -> Option<&mut kiln_kernel::kernel::Access> {
    match n {
        ExprNode::Load(a) | ExprNode::Gather { access: a, .. } => Some(a),
        _ => None,
    }
}

/// Emits a loop nest: `out[i] = expr(i)`, plus a scatter's indirect terms on the store.
pub(crate) fn loop_nest(cx: &mut Cx, l: &LoopNest) -> Result<(), EmitError> {
    let l = &normalized(l);
    grid_loop(cx, &product(&l.shape), |cx, t| {
        let index = unflatten(cx, t, &l.shape)?;
        let env = Env {
            index: &index,
            acc: None,
            stats: &[],
        };
        let vals = expr::emit_all(cx, &l.expr, &env)?;
        let mut element = cx.element(&l.out, &index)?;
        for term in &l.scatter {
            element = expr::indirect(cx, element, term, vals[term.index].reg)?;
        }
        let v = *vals
            .last()
            .ok_or_else(|| EmitError::Unsupported("an empty loop body".into()))?;
        expr::store(cx, l.out.buf, element, v)
    })
}

/// The team a reduction's output gets: a warp (see the module docs), or one thread
/// looping over a short reduced extent in row-major order.
pub(crate) fn reduce_team(r: &Reduce) -> Team {
    if reduce_uses_warps(r) {
        Team::Warp
    } else {
        Team::Thread
    }
}

/// The team a row gets: a warp, or one thread when rows are short.
pub(crate) fn row_team(r: &Row) -> Team {
    if uses_warps(&r.len) {
        Team::Warp
    } else {
        Team::Thread
    }
}

/// Emits a reduction: the team strides over the reduced elements, combines, and its lead
/// lane applies the post map and stores.
pub(crate) fn reduce(cx: &mut Cx, r: &Reduce) -> Result<(), EmitError> {
    let team = reduce_team(r);
    team.items(cx, &product(&r.shape), |cx, t, lane| {
        let out_index = unflatten(cx, t, &r.shape)?;
        let acc = identity(cx, r.combine, r.value.dtype())?;
        let n = cx.dim(&product(&r.reduced))?;
        team.over(cx, lane, n, |cx, j| {
            let mut index = out_index.clone();
            index.extend(unflatten(cx, j, &r.reduced)?);
            let v = expr::emit(cx, &r.value, &env(&index, None, &[]))?;
            combine_into(cx, r.combine, acc, v)
        })?;
        team.combine(cx, r.combine, acc)?;
        let v = expr::emit(cx, &r.post, &env(&out_index, Some(acc), &[]))?;
        team.lead(cx, lane, |cx| {
            let element = cx.element(&r.out, &out_index)?;
            expr::store(cx, r.out.buf, element, v)
        })
    })
}

fn env<'a>(index: &'a [Reg], acc: Option<Val>, stats: &'a [Val]) -> Env<'a> {
    Env { index, acc, stats }
}

/// Emits a row kernel: per row, each statistic over the row in order (the team's
/// partials combined), then the map, the team striding over the row.
pub(crate) fn row(cx: &mut Cx, r: &Row) -> Result<(), EmitError> {
    let team = row_team(r);
    team.items(cx, &product(&r.shape), |cx, t, lane| {
        let row_index = unflatten(cx, t, &r.shape)?;
        let len = cx.dim(&r.len)?;
        let at = |j: Reg| -> Vec<Reg> { row_index.iter().copied().chain([j]).collect() };
        let mut stats: Vec<Val> = Vec::new();
        for stat in &r.stats {
            let acc = identity(cx, stat.combine, stat.value.dtype())?;
            team.over(cx, lane, len, |cx, j| {
                let v = expr::emit(cx, &stat.value, &env(&at(j), None, &stats))?;
                combine_into(cx, stat.combine, acc, v)
            })?;
            team.combine(cx, stat.combine, acc)?;
            let s = expr::emit(cx, &stat.post, &env(&row_index, Some(acc), &stats))?;
            stats.push(s);
        }
        team.over(cx, lane, len, |cx, j| {
            let index = at(j);
            let v = expr::emit(cx, &r.map, &env(&index, None, &stats))?;
            let element = cx.element(&r.out, &index)?;
            expr::store(cx, r.out.buf, element, v)
        })
    })
}

/// A fresh accumulator holding the combination's identity.
pub(crate) fn identity(cx: &mut Cx, c: Combine, dtype: DType) -> Result<Val, EmitError> {
    let init = expr::constant_val(cx, combine_identity(c, dtype), dtype)?;
    let reg = cx.e.reg(class(dtype)?);
    mov(cx, reg, init.reg);
    Ok(Val { reg, dtype })
}

/// `acc = acc ⊕ v`, in place, as the interpreter's binary op of the combination.
pub(crate) fn combine_into(cx: &mut Cx, c: Combine, acc: Val, v: Val) -> Result<(), EmitError> {
    // Booleans combine as logic: a product is "all", a sum or maximum "any".
    let logic = acc.dtype == DType::Bool;
    let op = match c {
        Combine::Sum | Combine::Max if logic => BinaryOp::Or,
        Combine::Prod | Combine::Min if logic => BinaryOp::And,
        Combine::Sum => BinaryOp::Add,
        Combine::Prod => BinaryOp::Mul,
        Combine::Max => BinaryOp::Max,
        Combine::Min => BinaryOp::Min,
    };
    let next = expr::binary_val(cx, op, acc, v)?;
    mov(cx, acc.reg, next);
    Ok(())
}

fn mov(cx: &mut Cx, to: Reg, from: Reg) {
    let ty = match to.class {
        Class::Pred => "pred",
        Class::B16 => "b16",
        Class::B32 => "b32",
        Class::B64 => "b64",
        Class::F32 => "f32",
        Class::F64 => "f64",
    };
    cx.e.op(format!("mov.{ty} {to}, {from}"));
}
