//! `TopK`: a warp per lane of the axis, choosing the `k` results one after another. Round
//! `t` finds the first element, in the interpreter's order, of those the order places
//! after result `t - 1`: each thread over its share of the lane, then a butterfly over
//! the warp, so every thread ends with the same pair. The order is the interpreter's
//! stable sort: by value, NaN above every number (descending for the largest, ascending
//! for the smallest), then by index. That is `k` rounds of `n / 32` comparisons per
//! thread and nothing stored between rounds: quick for the small `k` of sampling and
//! beam search; a `k` near `n` would want a sort.

use crate::cx::Cx;
use crate::expr::{self, Val};
use crate::half;
use crate::kernels::{count_loop, shuffle_xor, Team};
use crate::ptx::{Class, Reg};
use crate::EmitError;
use kiln_ir::{DType, Dim};
use kiln_kernel::kernel::Operand;

/// A candidate: a value and its index along the axis (-1 for none yet).
#[derive(Clone, Copy)]
struct Pick {
    v: Reg,
    i: Reg,
}

/// Emits the top `k` of `x` along `axis` into `values` and `indices`; returns the
/// launch's item count (lanes of the axis, a warp each).
pub(crate) fn topk(
    cx: &mut Cx,
    x: &Operand,
    out: (&Operand, &Operand),
    axis: usize,
    k: usize,
    largest: bool,
) -> Result<Dim, EmitError> {
    let (values, indices) = out;
    if axis >= x.shape.len() || x.dtype == DType::Bool || values.dtype != x.dtype {
        return Err(EmitError::Unsupported(format!(
            "topk of {} along axis {axis}",
            x.dtype
        )));
    }
    let outer: Dim = x.shape[..axis].iter().product();
    let inner: Dim = x.shape[axis + 1..].iter().product();
    let items: Dim = [outer, inner.clone()].iter().product();
    let (n, inner) = (cx.dim(&x.shape[axis])?, cx.dim(&inner)?);
    let warp = Team::Warp;
    warp.items(cx, &items, |cx, t, lane| {
        let e = &mut cx.e;
        let [o, i, base, out_base, step] = [0; 5].map(|_| e.reg(Class::B64));
        e.op(format!("div.s64 {o}, {t}, {inner}"));
        e.op(format!("rem.s64 {i}, {t}, {inner}"));
        e.op(format!("mul.lo.s64 {step}, {n}, {inner}"));
        e.op(format!("mad.lo.s64 {base}, {o}, {step}, {i}"));
        e.op(format!("mul.lo.s64 {step}, {o}, {}", k));
        e.op(format!("mad.lo.s64 {out_base}, {step}, {inner}, {i}"));
        let prev = fresh(cx, x.dtype)?;
        count_loop(cx, crate::ptx::Opnd::Imm(k as i64), |cx, slot| {
            let best = fresh(cx, x.dtype)?;
            warp.over(cx, lane, n, |cx, j| {
                let el = cx.e.reg(Class::B64);
                cx.e.op(format!("mad.lo.s64 {el}, {j}, {inner}, {base}"));
                let v = half::widen(expr::load(cx, x.buf, el, x.dtype)?);
                let here = Pick { v: v.reg, i: j };
                // Eligible: after the previous result (always, in the first round).
                let first = none(cx, prev);
                let after = before(cx, x.dtype, largest, prev, here);
                let eligible = or(cx, first, after);
                let better = earlier(cx, x.dtype, largest, here, best);
                let take = cx.e.reg(Class::Pred);
                cx.e.op(format!("and.pred {take}, {eligible}, {better}"));
                assign_if(cx, take, best, here);
                Ok(())
            })?;
            for offset in [16, 8, 4, 2, 1] {
                let other = Pick {
                    v: shuffle_xor(&mut cx.e, best.v, offset),
                    i: shuffle_xor(&mut cx.e, best.i, offset),
                };
                let missing = none(cx, other);
                let better = earlier(cx, x.dtype, largest, other, best);
                let take = cx.e.reg(Class::Pred);
                let present = not(cx, missing);
                cx.e.op(format!("and.pred {take}, {better}, {present}"));
                assign_if(cx, take, best, other);
            }
            // Fewer than k elements: the interpreter refuses; the kernel reports it.
            let short = none(cx, best);
            cx.exit_if(short);
            warp.lead(cx, lane, |cx| {
                let el = cx.e.reg(Class::B64);
                cx.e.op(format!("mad.lo.s64 {el}, {slot}, {inner}, {out_base}"));
                let v = Val {
                    reg: best.v,
                    dtype: x.dtype,
                };
                expr::store(cx, values.buf, el, v)?;
                let i = Val {
                    reg: best.i,
                    dtype: DType::I64,
                };
                expr::store(cx, indices.buf, el, i)
            })?;
            let ty = bits(ty_of_class(prev.v.class));
            cx.e.op(format!("mov.{ty} {}, {}", prev.v, best.v));
            cx.e.op(format!("mov.b64 {}, {}", prev.i, best.i));
            Ok(())
        })
    })?;
    Ok(items)
}

/// A candidate holding nothing (index -1), in registers of `d`'s f32/f64/integer class.
fn fresh(cx: &mut Cx, d: DType) -> Result<Pick, EmitError> {
    let class = expr::class(half_free(d))?;
    let (v, i) = (cx.e.reg(class), cx.e.reg(Class::B64));
    let ty = ty(d);
    cx.e.op(format!("mov.{} {v}, 0", bits(ty)));
    cx.e.op(format!("mov.s64 {i}, -1"));
    Ok(Pick { v, i })
}

/// Whether `p` holds nothing.
fn none(cx: &mut Cx, p: Pick) -> Reg {
    let r = cx.e.reg(Class::Pred);
    cx.e.op(format!("setp.lt.s64 {r}, {}, 0", p.i));
    r
}

fn not(cx: &mut Cx, a: Reg) -> Reg {
    let r = cx.e.reg(Class::Pred);
    cx.e.op(format!("not.pred {r}, {a}"));
    r
}

fn or(cx: &mut Cx, a: Reg, b: Reg) -> Reg {
    let r = cx.e.reg(Class::Pred);
    cx.e.op(format!("or.pred {r}, {a}, {b}"));
    r
}

/// `to = from` where `c` holds.
fn assign_if(cx: &mut Cx, c: Reg, to: Pick, from: Pick) {
    let ty = bits(ty_of_class(to.v.class));
    cx.e.op(format!("@{c} mov.{ty} {}, {}", to.v, from.v));
    cx.e.op(format!("@{c} mov.b64 {}, {}", to.i, from.i));
}

/// Whether `a` comes before `b`, or `b` holds nothing.
fn earlier(cx: &mut Cx, d: DType, largest: bool, a: Pick, b: Pick) -> Reg {
    let empty = none(cx, b);
    let first = before(cx, d, largest, a, b);
    or(cx, empty, first)
}

/// Whether `a` comes before `b` in the order (both holding values).
fn before(cx: &mut Cx, d: DType, largest: bool, a: Pick, b: Pick) -> Reg {
    let t = ty(d);
    let e = &mut cx.e;
    let [ahead, same, lower, r] = [0; 4].map(|_| e.reg(Class::Pred));
    let cmp = if largest { "gt" } else { "lt" };
    e.op(format!("setp.{cmp}.{t} {ahead}, {}, {}", a.v, b.v));
    e.op(format!("setp.eq.{t} {same}, {}, {}", a.v, b.v));
    if d.is_float() {
        // NaN is above every number and equal to NaN.
        let [an, bn, both, nan_first] = [0; 4].map(|_| e.reg(Class::Pred));
        e.op(format!("setp.nan.{t} {an}, {}, {}", a.v, a.v));
        e.op(format!("setp.nan.{t} {bn}, {}, {}", b.v, b.v));
        e.op(format!("and.pred {both}, {an}, {bn}"));
        e.op(format!("or.pred {same}, {same}, {both}"));
        let (top, other) = if largest { (an, bn) } else { (bn, an) };
        let number = e.reg(Class::Pred);
        e.op(format!("not.pred {number}, {other}"));
        e.op(format!("and.pred {nan_first}, {top}, {number}"));
        e.op(format!("or.pred {ahead}, {ahead}, {nan_first}"));
    }
    e.op(format!("setp.lt.s64 {lower}, {}, {}", a.i, b.i));
    e.op(format!("and.pred {lower}, {lower}, {same}"));
    e.op(format!("or.pred {r}, {ahead}, {lower}"));
    r
}

/// Halves sit in f32 registers.
fn half_free(d: DType) -> DType {
    if half::is_half(d) {
        DType::F32
    } else {
        d
    }
}

/// The PTX type values of `d` compare as (integers are kept in 64 bits).
fn ty(d: DType) -> &'static str {
    match half_free(d) {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::U64 | DType::U32 | DType::U16 | DType::U8 => "u64",
        _ => "s64",
    }
}

fn ty_of_class(c: Class) -> &'static str {
    match c {
        Class::F32 => "f32",
        Class::F64 => "f64",
        _ => "s64",
    }
}

/// The untyped width of a comparison type, for moves.
fn bits(t: &str) -> &'static str {
    match t {
        "f32" => "b32",
        _ => "b64",
    }
}
