//! The entries for [`LoopNest`], [`Reduce`] and [`Row`] kernels: a grid-stride loop over
//! the kernel's independent items (output elements, outputs of a reduction, rows), each
//! item's index unflattened from the loop counter by the extents as the symbols give them.
//!
//! One thread per item is the simplest mapping that is right for every shape; reductions
//! and rows run their inner loops serially in the interpreter's order.

use crate::cx::Cx;
use crate::expr::{self, class, Env, Val};
use crate::ptx::{Class, Opnd, Reg};
use crate::EmitError;
use kiln_ir::{BinaryOp, DType, Dim};
use kiln_kernel::axes::normalize;
use kiln_kernel::kernel::{combine_identity, Combine, ExprNode, LoopNest, Reduce, Row};

/// `for t in thread's items of 0..total { body(t) }`, striding by the grid's size.
fn grid_loop(
    cx: &mut Cx,
    total: &Dim,
    body: impl FnOnce(&mut Cx, Reg) -> Result<(), EmitError>,
) -> Result<(), EmitError> {
    let total = cx.dim(total)?;
    let e = &mut cx.e;
    let [tid, ntid, ctaid, nctaid] = [0; 4].map(|_| e.reg(Class::B32));
    e.op(format!("mov.u32 {tid}, %tid.x"));
    e.op(format!("mov.u32 {ntid}, %ntid.x"));
    e.op(format!("mov.u32 {ctaid}, %ctaid.x"));
    e.op(format!("mov.u32 {nctaid}, %nctaid.x"));
    let [first, local, t, step] = [0; 4].map(|_| e.reg(Class::B64));
    e.op(format!("mul.wide.u32 {first}, {ctaid}, {ntid}"));
    e.op(format!("cvt.u64.u32 {local}, {tid}"));
    e.op(format!("add.s64 {t}, {first}, {local}"));
    e.op(format!("mul.wide.u32 {step}, {nctaid}, {ntid}"));
    let (top, end) = (e.label(), e.label());
    e.place(&top);
    let done = e.reg(Class::Pred);
    e.op(format!("setp.ge.s64 {done}, {t}, {total}"));
    e.op(format!("@{done} bra {end}"));
    body(cx, t)?;
    cx.e.op(format!("add.s64 {t}, {t}, {step}"));
    cx.e.op(format!("bra.uni {top}"));
    cx.e.place(&end);
    Ok(())
}

/// `for j in 0..n { body(j) }` inside one thread.
fn count_loop(
    cx: &mut Cx,
    n: Opnd,
    mut body: impl FnMut(&mut Cx, Reg) -> Result<(), EmitError>,
) -> Result<(), EmitError> {
    let e = &mut cx.e;
    let j = e.reg(Class::B64);
    e.op(format!("mov.s64 {j}, 0"));
    let (top, end, done) = (e.label(), e.label(), e.reg(Class::Pred));
    e.place(&top);
    e.op(format!("setp.ge.s64 {done}, {j}, {n}"));
    e.op(format!("@{done} bra {end}"));
    body(cx, j)?;
    cx.e.op(format!("add.s64 {j}, {j}, 1"));
    cx.e.op(format!("bra.uni {top}"));
    cx.e.place(&end);
    Ok(())
}

/// The index along each axis of `shape` of the row-major position `t`.
fn unflatten(cx: &mut Cx, t: Reg, shape: &[Dim]) -> Result<Vec<Reg>, EmitError> {
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

/// Emits a reduction: one thread per output, the reduced axes in row-major order.
pub(crate) fn reduce(cx: &mut Cx, r: &Reduce) -> Result<(), EmitError> {
    grid_loop(cx, &product(&r.shape), |cx, t| {
        let out_index = unflatten(cx, t, &r.shape)?;
        let acc = identity(cx, r.combine, r.value.dtype())?;
        let count = cx.dim(&product(&r.reduced))?;
        count_loop(cx, count, |cx, j| {
            let mut index = out_index.clone();
            index.extend(unflatten(cx, j, &r.reduced)?);
            let env = Env {
                index: &index,
                acc: None,
                stats: &[],
            };
            let v = expr::emit(cx, &r.value, &env)?;
            combine_into(cx, r.combine, acc, v)
        })?;
        let env = Env {
            index: &out_index,
            acc: Some(acc),
            stats: &[],
        };
        let v = expr::emit(cx, &r.post, &env)?;
        let element = cx.element(&r.out, &out_index)?;
        expr::store(cx, r.out.buf, element, v)
    })
}

/// Emits a row kernel: per row, each statistic over the row in order, then the map.
pub(crate) fn row(cx: &mut Cx, r: &Row) -> Result<(), EmitError> {
    grid_loop(cx, &product(&r.shape), |cx, t| {
        let row_index = unflatten(cx, t, &r.shape)?;
        let len = cx.dim(&r.len)?;
        let mut stats: Vec<Val> = Vec::new();
        for stat in &r.stats {
            let acc = identity(cx, stat.combine, stat.value.dtype())?;
            count_loop(cx, len, |cx, j| {
                let index: Vec<Reg> = row_index.iter().copied().chain([j]).collect();
                let env = Env {
                    index: &index,
                    acc: None,
                    stats: &stats,
                };
                let v = expr::emit(cx, &stat.value, &env)?;
                combine_into(cx, stat.combine, acc, v)
            })?;
            let env = Env {
                index: &row_index,
                acc: Some(acc),
                stats: &stats,
            };
            let s = expr::emit(cx, &stat.post, &env)?;
            stats.push(s);
        }
        count_loop(cx, len, |cx, j| {
            let index: Vec<Reg> = row_index.iter().copied().chain([j]).collect();
            let env = Env {
                index: &index,
                acc: None,
                stats: &stats,
            };
            let v = expr::emit(cx, &r.map, &env)?;
            let element = cx.element(&r.out, &index)?;
            expr::store(cx, r.out.buf, element, v)
        })
    })
}

/// A fresh accumulator holding the combination's identity.
fn identity(cx: &mut Cx, c: Combine, dtype: DType) -> Result<Val, EmitError> {
    let init = expr::constant_val(cx, combine_identity(c, dtype), dtype)?;
    let reg = cx.e.reg(class(dtype)?);
    mov(cx, reg, init.reg);
    Ok(Val { reg, dtype })
}

/// `acc = acc ⊕ v`, in place, as the interpreter's binary op of the combination.
fn combine_into(cx: &mut Cx, c: Combine, acc: Val, v: Val) -> Result<(), EmitError> {
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
        Class::B32 => "b32",
        Class::B64 => "b64",
        Class::F32 => "f32",
        Class::F64 => "f64",
    };
    cx.e.op(format!("mov.{ty} {to}, {from}"));
}
