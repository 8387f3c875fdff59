//! `Attention` (opsets 23–25) decomposed into core ops the way the ONNX function body does
//! it: heads split out of 3-D inputs, the KV cache concatenated, kv heads repeated for
//! grouped-query attention, `Q·√s @ (K·√s)ᵀ`, softcap, an additive bias (mask, causal
//! frontier, sliding window, kv padding), softmax with a zero guard for fully masked rows,
//! and `@ V`. Nodes are named `"{node}.qk"`, `"{node}.softmax"`, … for fusion.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use crate::tensor::dtype_of;
use kiln_ir::{BinaryOp as B, DType, Dim, Op, ReduceKind, Tensor, UnaryOp as U};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("Attention", 23, attention);
}

/// `x[b, s, h·d]` → `x[b, h, s, d]`.
fn split_heads(cx: &mut Cx, suffix: &str, x: &Val, heads: i64) -> R<Val> {
    let s = cx.ty(x).shape;
    if s.len() != 3 || heads <= 0 {
        return Err(cx.err("3-D inputs need positive q_num_heads and kv_num_heads"));
    }
    let d = s[2].div_floor(heads);
    let shape = vec![s[0].clone(), s[1].clone(), Dim::from(heads), d];
    let r = cx.reshape(&format!("{suffix}_split"), x, shape)?;
    let perm = vec![0, 2, 1, 3];
    cx.emit1(suffix, Op::Transpose { perm }, &[&r])
}

/// `y[b, h, s, d]` → `y[b, s, h·d]`.
pub(super) fn merge_heads(cx: &mut Cx, y: &Val) -> R<Val> {
    let t = cx.emit1(
        "y_t",
        Op::Transpose {
            perm: vec![0, 2, 1, 3],
        },
        &[y],
    )?;
    let s = cx.ty(&t).shape;
    let shape = vec![s[0].clone(), s[1].clone(), s[2].clone() * s[3].clone()];
    cx.reshape("", &t, shape)
}

/// `x[b, kvh, s, d]` → `x[b, kvh·rep, s, d]`, each kv head repeated `rep` times in place.
fn repeat_heads(cx: &mut Cx, suffix: &str, x: &Val, q_heads: &Dim) -> R<Val> {
    let s = cx.ty(x).shape;
    if &s[1] == q_heads {
        return Ok(x.clone());
    }
    let (Some(qh), Some(kvh)) = (q_heads.as_const(), s[1].as_const()) else {
        return Err(cx
            .ctx
            .unsupported("symbolic head counts in grouped-query attention"));
    };
    if kvh <= 0 || qh % kvh != 0 {
        return Err(cx.err(format!("q heads {qh} are not a multiple of kv heads {kvh}")));
    }
    let one = Dim::from(1i64);
    let mut five = s.clone();
    five.insert(2, one);
    let u = cx.reshape(&format!("{suffix}_unsqueeze"), x, five.clone())?;
    five[2] = Dim::from(qh / kvh);
    let e = cx.emit1(
        &format!("{suffix}_expand"),
        Op::Expand { shape: five },
        &[&u],
    )?;
    let shape = vec![s[0].clone(), q_heads.clone(), s[2].clone(), s[3].clone()];
    cx.reshape(suffix, &e, shape)
}

/// `[0, 1, …, len-1]` as i64.
pub(super) fn arange(cx: &mut Cx, suffix: &str, len: Dim) -> R<Val> {
    let zero = cx.scalar(DType::I64, 0.0);
    let one = cx.scalar(DType::I64, 1.0);
    cx.emit1(suffix, Op::Range { len }, &[&zero, &one])
}

/// The boolean "query may attend key" conditions from `is_causal`, the sliding window and
/// `nonpad_kv_seqlen`, combined; `None` when there are none.
fn allowed(cx: &mut Cx, n: &N, sq: &Dim, st: &Dim, past: &Dim) -> R<Option<Val>> {
    let causal = n.int("is_causal", 0) != 0;
    let (left, right) = (
        n.int("left_window_size", -1),
        n.int("right_window_size", -1),
    );
    let nonpad = n.opt(6).cloned();
    if !causal && left < 0 && right < 0 && nonpad.is_none() {
        return Ok(None);
    }
    let rows = arange(cx, "rows", sq.clone())?;
    let rows = cx.reshape("rows2d", &rows, vec![sq.clone(), Dim::from(1i64)])?;
    let cols = arange(cx, "cols", st.clone())?;
    let cols = cx.reshape("cols2d", &cols, vec![Dim::from(1i64), st.clone()])?;
    // The absolute position of each query: past length, or nonpad - sq per batch.
    let pos = match (&nonpad, n.opt(4)) {
        (Some(np), None) => {
            let b = cx.ty(np).shape[0].clone();
            let one = Dim::from(1i64);
            let np = cx.cast("nonpad_i64", np, DType::I64)?;
            let sqv = Val::Known(kiln_ir::shape_eval::Known::Dims {
                dims: vec![sq.clone()],
                scalar: true,
            });
            let off = cx.binary("offset", B::Sub, &np, &sqv)?;
            let off = cx.reshape("offset4d", &off, vec![b, one.clone(), one.clone(), one])?;
            cx.binary("pos", B::Add, &rows, &off)?
        }
        _ if past.as_const() == Some(0) => rows,
        _ => {
            let p = Val::Known(kiln_ir::shape_eval::Known::Dims {
                dims: vec![past.clone()],
                scalar: true,
            });
            cx.binary("pos", B::Add, &rows, &p)?
        }
    };
    let mut conds = Vec::new();
    if causal {
        conds.push(cx.binary("causal", B::LessOrEqual, &cols, &pos)?);
    }
    let diff = cx.binary("win_diff", B::Sub, &pos, &cols)?;
    if left >= 0 {
        let l = cx.scalar(DType::I64, left as f64);
        conds.push(cx.binary("win_left", B::LessOrEqual, &diff, &l)?);
    }
    if right >= 0 {
        let r = cx.scalar(DType::I64, -right as f64);
        conds.push(cx.binary("win_right", B::GreaterOrEqual, &diff, &r)?);
    }
    if let Some(np) = &nonpad {
        let b = cx.ty(np).shape[0].clone();
        let one = Dim::from(1i64);
        let np = cx.cast("nonpad_i64", np, DType::I64)?;
        let np = cx.reshape("nonpad4d", &np, vec![b, one.clone(), one.clone(), one])?;
        conds.push(cx.binary("nonpad", B::Less, &cols, &np)?);
    }
    let mut acc = conds.remove(0);
    for c in &conds {
        acc = cx.binary("allowed", B::And, &acc, c)?;
    }
    Ok(Some(acc))
}

/// The additive bias in `dtype` (`-inf` where masked), or `None` when nothing is masked.
fn bias(cx: &mut Cx, n: &N, dtype: DType, sq: &Dim, st: &Dim, past: &Dim) -> R<Option<Val>> {
    let zero = cx.scalar(dtype, 0.0);
    let ninf = cx.scalar(dtype, f64::NEG_INFINITY);
    let mask = match n.opt(3) {
        None => None,
        Some(m) if cx.dtype(m) == DType::Bool => {
            Some(cx.emit1("mask_bias", Op::Where, &[m, &zero, &ninf])?)
        }
        Some(m) => Some(cx.cast("mask_cast", m, dtype)?),
    };
    let mask = match mask {
        Some(m) => Some(pad_mask(cx, &m, st, &ninf)?),
        None => None,
    };
    let structural = match allowed(cx, n, sq, st, past)? {
        Some(ok) => Some(cx.emit1("struct_bias", Op::Where, &[&ok, &zero, &ninf])?),
        None => None,
    };
    match (mask, structural) {
        (Some(m), Some(s)) => Ok(Some(cx.binary("bias", B::Add, &m, &s)?)),
        (m, s) => Ok(m.or(s)),
    }
}

/// Pads the mask's last axis with `-inf` up to the total sequence length.
fn pad_mask(cx: &mut Cx, m: &Val, st: &Dim, ninf: &Val) -> R<Val> {
    let shape = cx.ty(m).shape;
    let last = shape.last().cloned().unwrap_or_else(|| Dim::from(1i64));
    if shape.is_empty() || &last == st || last.as_const() == Some(1) {
        return Ok(m.clone());
    }
    let Some(extra) = (st.clone() - last).as_const() else {
        return Err(cx
            .ctx
            .unsupported("a mask shorter than the keys by a symbolic amount"));
    };
    let mut pads = vec![(0, 0); shape.len()];
    pads[shape.len() - 1] = (0, extra);
    let mode = kiln_ir::PadMode::Constant;
    cx.emit1("mask_pad", Op::Pad { pads, mode }, &[m, ninf])
}

/// `√scale` as the function body computes it (in f32).
fn sqrt_scale(cx: &Cx, n: &N, head: &Dim) -> R<f32> {
    let scale = match n.attr("scale").and_then(|a| a.f) {
        Some(s) => s,
        None => {
            let d = head
                .as_const()
                .ok_or_else(|| cx.ctx.unsupported("a symbolic head size without `scale`"))?;
            1.0f32 / (d as f32).sqrt()
        }
    };
    Ok(scale.sqrt())
}

/// `softcap · tanh(x / softcap)`, or `x` when `softcap` is 0.
fn softcap(cx: &mut Cx, n: &N, x: &Val) -> R<Val> {
    let cap = n.float("softcap", 0.0);
    if cap == 0.0 {
        return Ok(x.clone());
    }
    let c = cx.scalar(cx.dtype(x), cap as f64);
    let d = cx.binary("softcap_div", B::Div, x, &c)?;
    let t = cx.unary("softcap_tanh", U::Tanh, &d)?;
    cx.binary("softcap", B::Mul, &t, &c)
}

/// Softmax over the keys in `softmax_precision`, zeroed on rows the bias masks entirely.
fn probs(cx: &mut Cx, n: &N, x: &Val, bias: Option<&Val>) -> R<Val> {
    let dtype = cx.dtype(x);
    let prec = match n.attr("softmax_precision").and_then(|a| a.i) {
        Some(code) => dtype_of(code as i32).map_err(|m| n.ctx.unsupported(m))?,
        None => dtype,
    };
    let xc = cx.cast("softmax_cast", x, prec)?;
    let p = cx.emit1(
        "softmax",
        Op::Softmax {
            axis: 3,
            log: false,
        },
        &[&xc],
    )?;
    let p = cx.cast("softmax_out", &p, dtype)?;
    let Some(b) = bias else { return Ok(p) };
    let rank = cx.rank(b);
    let reduce = Op::Reduce {
        kind: ReduceKind::Max,
        axes: vec![rank - 1],
        keep_dims: true,
    };
    let rmax = cx.emit1("row_max", reduce, &[b])?;
    let ninf = cx.scalar(cx.dtype(b), f64::NEG_INFINITY);
    let dead = cx.binary("row_masked", B::Equal, &rmax, &ninf)?;
    let zero = cx.scalar(dtype, 0.0);
    cx.emit1("probs", Op::Where, &[&dead, &zero, &p])
}

fn cache(cx: &mut Cx, n: &N, k: Val, v: Val) -> R<(Val, Val)> {
    match (n.opt(4), n.opt(5)) {
        (Some(pk), Some(pv)) => Ok((
            cx.emit1("present_key", Op::Concat { axis: 2 }, &[pk, &k])?,
            cx.emit1("present_value", Op::Concat { axis: 2 }, &[pv, &v])?,
        )),
        (None, None) => Ok((k, v)),
        _ => Err(cx.err("past_key and past_value must be given together")),
    }
}

fn attention(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let (q0, k0, v0) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let three_d = cx.rank(q0) == 3;
    let (q, k, v) = if three_d {
        let (qh, kvh) = (n.req_int("q_num_heads")?, n.req_int("kv_num_heads")?);
        (
            split_heads(cx, "q_heads", q0, qh)?,
            split_heads(cx, "k_heads", k0, kvh)?,
            split_heads(cx, "v_heads", v0, kvh)?,
        )
    } else if cx.rank(q0) == 4 && cx.rank(k0) == 4 && cx.rank(v0) == 4 {
        (q0.clone(), k0.clone(), v0.clone())
    } else {
        return Err(cx.err("Q, K and V must all be 3-D or all be 4-D"));
    };
    let (k, v) = cache(cx, n, k, v)?;
    let past = match n.opt(4) {
        Some(pk) => cx.ty(pk).shape[2].clone(),
        None => Dim::from(0i64),
    };
    let dtype = cx.dtype(&q);
    let qs = cx.ty(&q).shape;
    let st = cx.ty(&k).shape[2].clone();
    let bias = bias(cx, n, dtype, &qs[2], &st, &past)?;
    let a = attend(
        cx,
        n,
        &q,
        &k,
        &v,
        bias.as_ref(),
        if three_d { "pv" } else { "" },
    )?;
    let y = if three_d { merge_heads(cx, &a.y)? } else { a.y };
    let qk_out = match n.int("qk_matmul_output_mode", 0) {
        0 => a.qk,
        1 => a.capped,
        2 => a.biased,
        3 => a.probs,
        m => return Err(cx.err(format!("qk_matmul_output_mode {m} is not 0..=3"))),
    };
    Ok(vec![y, k, v, qk_out])
}

/// The values [`attend`] computes on the way.
pub(super) struct Attended {
    /// `probs · v`, `[b, h, sq, dv]`, named `suffix`.
    pub y: Val,
    /// `q · kᵀ`, scaled.
    pub qk: Val,
    /// Soft-capped.
    pub capped: Val,
    /// With the bias added.
    pub biased: Val,
    /// The softmax.
    pub probs: Val,
}

/// `softmax(q·kᵀ·scale + bias) · v` on `[b, h, s, d]` operands, keys and values repeated
/// up to the query heads, as the ONNX function body computes it (`√scale` on each side;
/// `scale` and `softcap` read from `n`, as both `Attention` and `GroupQueryAttention` name
/// them).
pub(super) fn attend(
    cx: &mut Cx,
    n: &N,
    q: &Val,
    k: &Val,
    v: &Val,
    bias: Option<&Val>,
    suffix: &str,
) -> R<Attended> {
    let (dtype, qs) = (cx.dtype(q), cx.ty(q).shape);
    let kx = repeat_heads(cx, "k_rep", k, &qs[1])?;
    let vx = repeat_heads(cx, "v_rep", v, &qs[1])?;
    let s = Val::tensor(
        Tensor::full(dtype, &[], sqrt_scale(cx, n, &qs[3])? as f64)
            .map_err(|e| cx.err(e.to_string()))?,
    );
    let q_scaled = cx.binary("q_scaled", B::Mul, q, &s)?;
    let kt = cx.emit1(
        "k_t",
        Op::Transpose {
            perm: vec![0, 1, 3, 2],
        },
        &[&kx],
    )?;
    let k_scaled = cx.binary("k_scaled", B::Mul, &kt, &s)?;
    let qk = cx.emit1("qk", Op::MatMul, &[&q_scaled, &k_scaled])?;
    let capped = softcap(cx, n, &qk)?;
    let biased = match bias {
        Some(b) => cx.binary("add_bias", B::Add, &capped, b)?,
        None => capped.clone(),
    };
    let probs = probs(cx, n, &biased, bias)?;
    let y = cx.emit1(suffix, Op::MatMul, &[&probs, &vx])?;
    Ok(Attended {
        y,
        qk,
        capped,
        biased,
        probs,
    })
}
