//! Attention, a warp per query row (`leading.., head, query`). With a constant value
//! depth (up to 256) it is one pass over the keys with an online softmax ([`online`]);
//! otherwise it is the definition: the scores `scale · q·kᵀ` (+ an additive mask, or -∞
//! where a keep-mask is false), their maximum and the sum of `exp(s - max)` by warp
//! reductions over the keys, then for each value feature `Σ_j p_j · v[j]` with
//! `p_j = exp(s_j - max) / sum`, guarded as the call's `MaskedRows` says, the scores
//! recomputed in each pass. Neither stores a score, so nothing grows with the sequence.
//!
//! Half operands are widened exactly and computed in f32, rounded to the half type where
//! the interpreter rounds: after `q·kᵀ`, the scale and the mask, each probability, and
//! the output (the products with the values accumulate in f32). That needs each
//! probability before its value is read, so halves take the three-pass definition:
//! rounding the online kernel's output alone was two half ulps off ONNX's expected
//! outputs (`test_attention_4d_gqa_with_past_and_present_fp16`).
//!
//! f64 operands take the definition in f64 (`exp` from the math library).
//!
//! Both are checked against the reference interpreter; neither is yet the tiled,
//! tensor-core flash attention.

use crate::cx::Cx;
use crate::expr::Val;
use crate::half;
use crate::kernels::{combine_into, count_loop, identity, unflatten, Team};
use crate::ptx::{f32_imm, f64_imm, Class, Opnd, Reg};
use crate::EmitError;
use kiln_ir::{DType, Dim, MaskedRows};
use kiln_kernel::kernel::{Attention, AttentionOperand, Combine};

/// Where one query row's operands start (element offsets), for its batch item and head.
struct RowBases {
    q: Reg,
    k: Reg,
    v: Reg,
    out: Reg,
    /// The mask's element offset of key 0 for this row, if there is a mask.
    mask: Option<Reg>,
}

/// Emits the attention call `a`: one warp per `(leading.., head, query)` row.
pub(crate) fn attention(cx: &mut Cx, a: &Attention) -> Result<(), EmitError> {
    let t = cx.program.buffers[a.q.buf].dtype;
    for op in [&a.q, &a.k, &a.v, &a.out] {
        let d = cx.program.buffers[op.buf].dtype;
        if d != t || !matches!(d, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
            return Err(EmitError::Unsupported(format!("attention on {d}")));
        }
    }
    let d = &a.dims;
    let rows: Vec<Dim> = (d.leading.iter().cloned())
        .chain([d.heads.clone(), d.q_len.clone()])
        .collect();
    let items: Dim = rows.iter().product();
    // Halves take the definition: it knows each probability before it multiplies a
    // value, so it can round it, as the interpreter does.
    if let Some(chunks) = online_chunks(a).filter(|_| t == DType::F32) {
        return online(cx, a, &rows, &items, chunks);
    }
    let warp = Team::Warp;
    warp.items(cx, &items, |cx, t, lane| {
        let index = unflatten(cx, t, &rows)?;
        let bases = row_bases(cx, a, &index)?;
        let (kv_len, depth, v_depth) = (cx.dim(&d.kv_len)?, cx.dim(&d.depth)?, cx.dim(&d.v_depth)?);
        let n = Num::of(cx, a);
        let max = identity(cx, Combine::Max, n.dtype)?;
        let open = pred(cx, false);
        warp.over(cx, lane, kv_len, |cx, j| {
            let (s, kept) = score(cx, a, &bases, j, depth)?;
            let s = Val {
                reg: s,
                dtype: n.dtype,
            };
            combine_into(cx, Combine::Max, max, s)?;
            cx.e.op(format!("or.pred {open}, {open}, {kept}"));
            Ok(())
        })?;
        warp.combine(cx, Combine::Max, max)?;
        let open = warp_any(cx, open)?;
        let sum = identity(cx, Combine::Sum, n.dtype)?;
        warp.over(cx, lane, kv_len, |cx, j| {
            let (s, _) = score(cx, a, &bases, j, depth)?;
            let e = exp_shifted(cx, n, s, max.reg)?;
            cx.e.op(format!("add.rn.{} {}, {}, {e}", n.ty, sum.reg, sum.reg));
            Ok(())
        })?;
        warp.combine(cx, Combine::Sum, sum)?;
        count_loop(cx, v_depth, |cx, f| {
            let acc = identity(cx, Combine::Sum, n.dtype)?;
            warp.over(cx, lane, kv_len, |cx, j| {
                let (s, _) = score(cx, a, &bases, j, depth)?;
                let e = exp_shifted(cx, n, s, max.reg)?;
                let p = cx.e.reg(n.class);
                cx.e.op(format!("div.rn.{} {p}, {e}, {}", n.ty, sum.reg));
                let p = guard(cx, n, a.rows, p, open);
                let p = rounded(cx, a, p);
                let v = load_at(cx, &a.v, bases.v, j, f)?;
                let pv = cx.e.reg(n.class);
                cx.e.op(format!("mul.rn.{} {pv}, {p}, {v}", n.ty));
                cx.e.op(format!("add.rn.{} {}, {}, {pv}", n.ty, acc.reg, acc.reg));
                Ok(())
            })?;
            warp.combine(cx, Combine::Sum, acc)?;
            let i = index[index.len() - 1];
            warp.lead(cx, lane, |cx| {
                store_at(cx, &a.out, bases.out, i, f, acc.reg)
            })
        })
    })
}

/// The value features each lane accumulates in the one-pass kernel (`⌈v_depth / 32⌉`),
/// when the value depth is a constant of at most 256; `None` keeps the three-pass
/// definition.
fn online_chunks(a: &Attention) -> Option<usize> {
    let dv = a.dims.v_depth.as_const()?;
    (1..=256).contains(&dv).then(|| (dv as usize).div_ceil(32))
}

/// One pass over the keys with an online softmax: per key, the lanes split the score's
/// dot product (a butterfly sum gives every lane the score), then every lane updates
/// the running maximum `m` and sum `l` and rescales its accumulators, the value features
/// `lane + 32c`: `acc = acc·e^(m_old - m) + e^(s - m)·v`. The output is `acc / l`.
///
/// A row whose maximum is not finite (every key masked, or an infinite or NaN score)
/// has, by the definition, probabilities that are all NaN or 0: its output is NaN, or 0
/// under `ZeroNan`, and under `ZeroMasked` 0 when no key is open (NaN otherwise). While
/// the running maximum is still -∞ the shift is 0, so masked keys add exact zeros.
fn online(
    cx: &mut Cx,
    a: &Attention,
    rows: &[Dim],
    items: &Dim,
    chunks: usize,
) -> Result<(), EmitError> {
    let d = &a.dims;
    let warp = Team::Warp;
    let dv = d.v_depth.as_const().unwrap_or(0);
    warp.items(cx, items, |cx, t, lane| {
        let index = unflatten(cx, t, rows)?;
        let bases = row_bases(cx, a, &index)?;
        let (kv_len, depth) = (cx.dim(&d.kv_len)?, cx.dim(&d.depth)?);
        let e = &mut cx.e;
        let [m, l] = [0; 2].map(|_| e.reg(Class::F32));
        e.op(format!("mov.f32 {m}, {}", f32_imm(f32::NEG_INFINITY)));
        e.op(format!("mov.f32 {l}, {}", f32_imm(0.0)));
        let acc: Vec<Reg> = (0..chunks).map(|_| e.reg(Class::F32)).collect();
        for r in &acc {
            e.op(format!("mov.f32 {r}, {}", f32_imm(0.0)));
        }
        let open = pred(cx, false);
        // Each lane's features `lane + 32c`, and whether they exist.
        let features: Vec<(Reg, Reg)> = (0..chunks)
            .map(|c| {
                let (f, ok) = (cx.e.reg(Class::B64), cx.e.reg(Class::Pred));
                cx.e.op(format!("add.s64 {f}, {lane}, {}", 32 * c));
                cx.e.op(format!("setp.lt.s64 {ok}, {f}, {dv}"));
                (f, ok)
            })
            .collect();
        count_loop(cx, kv_len, |cx, j| {
            let dot = identity(cx, Combine::Sum, DType::F32)?;
            warp.over(cx, lane, depth, |cx, f| {
                dot_step(cx, a, &bases, j, f, dot.reg)
            })?;
            warp.combine(cx, Combine::Sum, dot)?;
            let (s, kept) = masked(cx, a, &bases, j, dot.reg)?;
            let e = &mut cx.e;
            let [next, shift] = [0; 2].map(|_| e.reg(Class::F32));
            let none = e.reg(Class::Pred);
            e.op(format!("max.NaN.f32 {next}, {m}, {s}"));
            e.op(format!(
                "setp.eq.f32 {none}, {next}, {}",
                f32_imm(f32::NEG_INFINITY)
            ));
            e.op(format!(
                "selp.f32 {shift}, {}, {next}, {none}",
                f32_imm(0.0)
            ));
            let f32 = Num::of(cx, a);
            let rescale = exp_shifted(cx, f32, m, shift)?;
            let p = exp_shifted(cx, f32, s, shift)?;
            let e = &mut cx.e;
            e.op(format!("fma.rn.f32 {l}, {l}, {rescale}, {p}"));
            e.op(format!("mov.f32 {m}, {next}"));
            e.op(format!("or.pred {open}, {open}, {kept}"));
            for (&r, &(f, ok)) in acc.iter().zip(&features) {
                let skip = cx.e.label();
                cx.e.op(format!("@!{ok} bra {skip}"));
                let v = load_at(cx, &a.v, bases.v, j, f)?;
                let e = &mut cx.e;
                let pv = e.reg(Class::F32);
                e.op(format!("mul.rn.f32 {pv}, {p}, {v}"));
                e.op(format!("fma.rn.f32 {r}, {r}, {rescale}, {pv}"));
                e.place(&skip);
            }
            Ok(())
        })?;
        let e = &mut cx.e;
        let (am, finite) = (e.reg(Class::F32), e.reg(Class::Pred));
        e.op(format!("abs.f32 {am}, {m}"));
        e.op(format!(
            "setp.lt.f32 {finite}, {am}, {}",
            f32_imm(f32::INFINITY)
        ));
        let special = e.reg(Class::F32);
        let (nan, zero) = (f32_imm(f32::NAN), f32_imm(0.0));
        match a.rows {
            MaskedRows::Nan => e.op(format!("mov.f32 {special}, {nan}")),
            MaskedRows::ZeroNan => e.op(format!("mov.f32 {special}, {zero}")),
            MaskedRows::ZeroMasked => e.op(format!("selp.f32 {special}, {nan}, {zero}, {open}")),
        }
        let i = index[index.len() - 1];
        for (&r, &(f, ok)) in acc.iter().zip(&features) {
            let skip = cx.e.label();
            cx.e.op(format!("@!{ok} bra {skip}"));
            let e = &mut cx.e;
            let (q, y) = (e.reg(Class::F32), e.reg(Class::F32));
            e.op(format!("div.rn.f32 {q}, {r}, {l}"));
            e.op(format!("selp.f32 {y}, {q}, {special}, {finite}"));
            store_at(cx, &a.out, bases.out, i, f, y)?;
            cx.e.place(&skip);
        }
        Ok(())
    })
}

/// Element offsets of the row's query, key head, value head, output and mask.
fn row_bases(cx: &mut Cx, a: &Attention, index: &[Reg]) -> Result<RowBases, EmitError> {
    let d = &a.dims;
    let lead = d.leading.len();
    let (h, i) = (index[lead], index[lead + 1]);
    // The flattened leading index, which the operands' `batch` strides walk.
    let mut l = cx.e.reg(Class::B64);
    cx.e.op(format!("mov.s64 {l}, 0"));
    for (axis, ext) in index[..lead].iter().zip(&d.leading) {
        let ext = cx.dim(ext)?;
        let next = cx.e.reg(Class::B64);
        cx.e.op(format!("mad.lo.s64 {next}, {l}, {ext}, {axis}"));
        l = next;
    }
    // Query head h reads key/value head h / (heads / kv_heads).
    let (heads, kv_heads) = (cx.dim(&d.heads)?, cx.dim(&d.kv_heads)?);
    let (group, g) = (cx.e.reg(Class::B64), cx.e.reg(Class::B64));
    cx.e.op(format!("div.s64 {group}, {heads}, {kv_heads}"));
    cx.e.op(format!("div.s64 {g}, {h}, {group}"));
    let q = base(cx, &a.q, l, h, Some(i))?;
    let k = base(cx, &a.k, l, g, None)?;
    let v = base(cx, &a.v, l, g, None)?;
    let out = base(cx, &a.out, l, h, None)?;
    let mask = match &a.mask {
        None => None,
        Some(m) => {
            let mut at = cx.e.reg(Class::B64);
            cx.e.op(format!("mov.s64 {at}, 0"));
            let terms = index[..lead].iter().zip(&m.batch_strides);
            for (&axis, stride) in terms.chain([(&h, &m.strides[0]), (&i, &m.strides[1])]) {
                let s = cx.dim(stride)?;
                let next = cx.e.reg(Class::B64);
                cx.e.op(format!("mad.lo.s64 {next}, {axis}, {s}, {at}"));
                at = next;
            }
            Some(at)
        }
    };
    Ok(RowBases { q, k, v, out, mask })
}

/// `offset + l·batch + h·head (+ row·row)` of an operand.
fn base(
    cx: &mut Cx,
    op: &AttentionOperand,
    l: Reg,
    h: Reg,
    row: Option<Reg>,
) -> Result<Reg, EmitError> {
    let (offset, batch, head, rs) = (
        cx.dim(&op.offset)?,
        cx.dim(&op.batch)?,
        cx.dim(&op.head)?,
        cx.dim(&op.row)?,
    );
    let e = &mut cx.e;
    let [b0, b1, b2] = [0; 3].map(|_| e.reg(Class::B64));
    e.op(format!("mov.s64 {b0}, {offset}"));
    e.op(format!("mad.lo.s64 {b1}, {l}, {batch}, {b0}"));
    e.op(format!("mad.lo.s64 {b2}, {h}, {head}, {b1}"));
    Ok(match row {
        Some(r) => {
            let b3 = e.reg(Class::B64);
            e.op(format!("mad.lo.s64 {b3}, {r}, {rs}, {b2}"));
            b3
        }
        None => b2,
    })
}

/// The address of element `(row, f)` of an operand, from its head's base.
fn element_address(
    cx: &mut Cx,
    op: &AttentionOperand,
    base: Reg,
    row: Reg,
    f: Reg,
) -> Result<Reg, EmitError> {
    let rs = cx.dim(&op.row)?;
    let (at, el) = (cx.e.reg(Class::B64), cx.e.reg(Class::B64));
    cx.e.op(format!("mad.lo.s64 {at}, {row}, {rs}, {base}"));
    cx.e.op(format!("add.s64 {el}, {at}, {f}"));
    Ok(cx.address(op.buf, el))
}

/// Element `(row, f)` of an operand from its head's base, loaded.
fn load_at(
    cx: &mut Cx,
    op: &AttentionOperand,
    base: Reg,
    row: Reg,
    f: Reg,
) -> Result<Reg, EmitError> {
    let addr = element_address(cx, op, base, row, f)?;
    Ok(load_value(cx, op.buf, addr))
}

/// The value of the element at `addr` of buffer `buf`, in its compute type (a half
/// widened exactly to f32).
fn load_value(cx: &mut Cx, buf: usize, addr: Reg) -> Reg {
    let d = cx.program.buffers[buf].dtype;
    if half::is_half(d) {
        return half::load(cx, addr, d);
    }
    let n = Num::for_dtype(d);
    let v = cx.e.reg(n.class);
    cx.e.op(format!("ld.global.{} {v}, [{addr}]", n.ty));
    v
}

/// Stores `y` (in the compute type, rounded once to a half output) as element `(row, f)`.
fn store_at(
    cx: &mut Cx,
    op: &AttentionOperand,
    base: Reg,
    row: Reg,
    f: Reg,
    y: Reg,
) -> Result<(), EmitError> {
    let addr = element_address(cx, op, base, row, f)?;
    let d = cx.program.buffers[op.buf].dtype;
    if half::is_half(d) {
        half::store(cx, addr, y, d);
    } else {
        cx.e.op(format!("st.global.{} [{addr}], {y}", Num::for_dtype(d).ty));
    }
    Ok(())
}

/// `x` rounded to the queries' type when it is a half type: the interpreter rounds the
/// product `q·kᵀ`, the scaled scores and the masked scores each once.
fn rounded(cx: &mut Cx, a: &Attention, x: Reg) -> Reg {
    let t = cx.program.buffers[a.q.buf].dtype;
    if half::is_half(t) {
        half::round(cx, x, t)
    } else {
        x
    }
}

/// Key `j`'s masked score for the row, and whether the mask leaves it open.
fn score(
    cx: &mut Cx,
    a: &Attention,
    b: &RowBases,
    j: Reg,
    depth: Opnd,
) -> Result<(Reg, Reg), EmitError> {
    let n = Num::of(cx, a);
    let dot = cx.e.reg(n.class);
    cx.e.op(format!("mov.{} {dot}, {}", n.ty, n.imm(0.0)));
    count_loop(cx, depth, |cx, f| dot_step(cx, a, b, j, f, dot))?;
    masked(cx, a, b, j, dot)
}

/// `dot += q[f] · k[j][f]`.
fn dot_step(
    cx: &mut Cx,
    a: &Attention,
    b: &RowBases,
    j: Reg,
    f: Reg,
    dot: Reg,
) -> Result<(), EmitError> {
    let zero = cx.e.reg(Class::B64);
    cx.e.op(format!("mov.s64 {zero}, 0"));
    let q = load_at(cx, &a.q, b.q, zero, f)?;
    let k = load_at(cx, &a.k, b.k, j, f)?;
    let n = Num::of(cx, a);
    let p = cx.e.reg(n.class);
    cx.e.op(format!("mul.rn.{} {p}, {q}, {k}", n.ty));
    cx.e.op(format!("add.rn.{} {dot}, {dot}, {p}", n.ty));
    Ok(())
}

/// The score `scale · dot` of key `j` with its mask applied, and whether the mask leaves
/// the key open.
fn masked(
    cx: &mut Cx,
    a: &Attention,
    b: &RowBases,
    j: Reg,
    dot: Reg,
) -> Result<(Reg, Reg), EmitError> {
    let t = cx.program.buffers[a.q.buf].dtype;
    let n = Num::of(cx, a);
    let scale = if half::is_half(t) {
        half::constant(f64::from(a.scale), t)
    } else {
        n.imm(f64::from(a.scale))
    };
    let dot = rounded(cx, a, dot);
    let s = cx.e.reg(n.class);
    cx.e.op(format!("mul.rn.{} {s}, {dot}, {scale}", n.ty));
    let s = rounded(cx, a, s);
    let (Some(m), Some(at)) = (&a.mask, b.mask) else {
        return Ok((s, pred(cx, true)));
    };
    let kept = cx.e.reg(Class::Pred);
    let s2 = cx.dim(&m.strides[2])?;
    let el = cx.e.reg(Class::B64);
    cx.e.op(format!("mad.lo.s64 {el}, {j}, {s2}, {at}"));
    let addr = cx.address(m.buf, el);
    let out = cx.e.reg(n.class);
    let minus_inf = n.imm(f64::NEG_INFINITY);
    if m.keep {
        let w = cx.e.reg(Class::B32);
        cx.e.op(format!("ld.global.u8 {w}, [{addr}]"));
        cx.e.op(format!("setp.ne.u32 {kept}, {w}, 0"));
        cx.e.op(format!("selp.{} {out}, {s}, {minus_inf}, {kept}", n.ty));
    } else {
        let v = load_value(cx, m.buf, addr);
        cx.e.op(format!("setp.ne.{} {kept}, {v}, {minus_inf}", n.ty));
        cx.e.op(format!("add.rn.{} {out}, {s}, {v}", n.ty));
        return Ok((rounded(cx, a, out), kept));
    }
    Ok((out, kept))
}

/// `exp(s - max)`: through `ex2` in f32, by the math library's `exp` in f64.
fn exp_shifted(cx: &mut Cx, n: Num, s: Reg, max: Reg) -> Result<Reg, EmitError> {
    let d = cx.e.reg(n.class);
    cx.e.op(format!("sub.rn.{} {d}, {s}, {max}", n.ty));
    if n.dtype == DType::F64 {
        let d = Val {
            reg: d,
            dtype: DType::F64,
        };
        return crate::math::float_unary(cx, kiln_ir::UnaryOp::Exp, d);
    }
    let e = &mut cx.e;
    let [t, r] = [0; 2].map(|_| e.reg(Class::F32));
    e.op(format!(
        "mul.rn.f32 {t}, {d}, {}",
        f32_imm(std::f32::consts::LOG2_E)
    ));
    e.op(format!("ex2.approx.f32 {r}, {t}"));
    Ok(r)
}

/// A probability as the call's masked-rows rule leaves it.
fn guard(cx: &mut Cx, n: Num, rows: MaskedRows, p: Reg, open: Reg) -> Reg {
    let e = &mut cx.e;
    let (zero, ty) = (n.imm(0.0), n.ty);
    match rows {
        MaskedRows::Nan => p,
        MaskedRows::ZeroNan => {
            let (nan, r) = (e.reg(Class::Pred), e.reg(n.class));
            e.op(format!("setp.nan.{ty} {nan}, {p}, {p}"));
            e.op(format!("selp.{ty} {r}, {zero}, {p}, {nan}"));
            r
        }
        MaskedRows::ZeroMasked => {
            let r = e.reg(n.class);
            e.op(format!("selp.{ty} {r}, {p}, {zero}, {open}"));
            r
        }
    }
}

/// The type attention computes in: f64 for f64 operands, f32 for the others.
#[derive(Clone, Copy)]
struct Num {
    dtype: DType,
    ty: &'static str,
    class: Class,
}

impl Num {
    fn for_dtype(d: DType) -> Num {
        if d == DType::F64 {
            Num {
                dtype: d,
                ty: "f64",
                class: Class::F64,
            }
        } else {
            Num {
                dtype: DType::F32,
                ty: "f32",
                class: Class::F32,
            }
        }
    }

    fn of(cx: &Cx, a: &Attention) -> Num {
        Num::for_dtype(cx.program.buffers[a.q.buf].dtype)
    }

    fn imm(self, v: f64) -> String {
        if self.dtype == DType::F64 {
            f64_imm(v)
        } else {
            f32_imm(v as f32)
        }
    }
}

/// Whether `p` holds in any lane of the warp (in place: the bool "max" is an or).
fn warp_any(cx: &mut Cx, p: Reg) -> Result<Reg, EmitError> {
    let acc = Val {
        reg: p,
        dtype: DType::Bool,
    };
    Team::Warp.combine(cx, Combine::Max, acc)?;
    Ok(p)
}

/// A predicate holding `value`.
fn pred(cx: &mut Cx, value: bool) -> Reg {
    let (w, p) = (cx.e.reg(Class::B32), cx.e.reg(Class::Pred));
    cx.e.op(format!("mov.u32 {w}, {}", u32::from(value)));
    cx.e.op(format!("setp.ne.u32 {p}, {w}, 0"));
    p
}
