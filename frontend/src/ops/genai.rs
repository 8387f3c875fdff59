//! The `com.microsoft` ops onnxruntime-genai's model builder writes around its
//! `MatMulNBits` layers (`nbits.rs`), decomposed into core ops as their contrib-op
//! definitions compute them, so the fuser finds attention, rotary embeddings and RMS norms
//! in them as in any other export:
//!
//! - `GroupQueryAttention`: the query (or Q, K and V packed along the features), the past
//!   keys and values, rotary embedding of Q and K from the cos/sin caches at positions
//!   `past + i`, the present as `concat(past, new)` along the sequence (so the KV cache is
//!   appended in place like any other, `kiln_kernel::cache`), attention with the kv heads
//!   repeated, a causal mask offset by the past and each row's valid length
//!   `seqlens_k + 1`;
//! - `SkipSimplifiedLayerNormalization`: `rms_norm(input + skip (+ bias)) · gamma`, and the
//!   sum for the next layer's residual;
//! - `SimplifiedLayerNormalization` (registered in the default domain by onnxruntime):
//!   `RMSNormalization`.

use super::attention::{arange, attend, merge_heads};
use super::rms::rms_of;
use super::rotary::rotate;
use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use kiln_ir::shape_eval::Known;
use kiln_ir::{BinaryOp as B, DType, Dim, Op, SliceAxis};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("com.microsoft.GroupQueryAttention", 1, gqa);
    reg.add(
        "com.microsoft.SkipSimplifiedLayerNormalization",
        1,
        skip_rms,
    );
    reg.add("SimplifiedLayerNormalization", 1, simplified_rms);
}

/// `x[..., start..end]` on the last axis.
fn features(cx: &mut Cx, suffix: &str, x: &Val, start: &Dim, end: &Dim) -> R<Val> {
    let sa = SliceAxis {
        axis: cx.rank(x) - 1,
        start: start.clone(),
        end: end.clone(),
        step: 1,
    };
    cx.emit1(suffix, Op::Slice { axes: vec![sa] }, &[x])
}

/// `x[b, s, heads·d]` as `[b, s, heads, d]`.
fn heads_of(cx: &mut Cx, suffix: &str, x: &Val, heads: i64, depth: &Dim) -> R<Val> {
    let s = cx.ty(x).shape;
    cx.reshape(
        suffix,
        x,
        vec![s[0].clone(), s[1].clone(), Dim::from(heads), depth.clone()],
    )
}

fn gqa(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let (heads, kv_heads) = (n.req_int("num_heads")?, n.req_int("kv_num_heads")?);
    if heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 {
        return Err(cx.err(format!(
            "{heads} heads do not group over {kv_heads} kv heads"
        )));
    }
    if n.int("local_window_size", -1) >= 0 {
        return Err(n.ctx.unsupported("a sliding window (local_window_size)"));
    }
    if n.opt(10).is_some() || n.opt(11).is_some() {
        return Err(n.ctx.unsupported("position_ids and attention_bias inputs"));
    }
    let query = n.input(0)?;
    let qs = cx.ty(query).shape;
    if qs.len() != 3 {
        return Err(cx.err("the query must be [batch, seq, features]"));
    }
    let (q, k, v) = match (n.opt(1), n.opt(2)) {
        (None, None) => {
            let depth = qs[2].div_floor(heads + 2 * kv_heads);
            let at = |h: i64| &depth * &Dim::from(h);
            (
                features(cx, "q_packed", query, &Dim::from(0i64), &at(heads))?,
                features(cx, "k_packed", query, &at(heads), &at(heads + kv_heads))?,
                features(
                    cx,
                    "v_packed",
                    query,
                    &at(heads + kv_heads),
                    &at(heads + 2 * kv_heads),
                )?,
            )
        }
        (Some(k), Some(v)) => (query.clone(), k.clone(), v.clone()),
        _ => return Err(cx.err("key and value must be given together")),
    };
    let depth = cx.ty(&q).shape[2].div_floor(heads);
    let (mut q, mut k) = (
        heads_of(cx, "q_heads", &q, heads, &depth)?,
        heads_of(cx, "k_heads", &k, kv_heads, &depth)?,
    );
    let v = heads_of(cx, "v_heads", &v, kv_heads, &depth)?;
    let (past_k, past_v) = (n.input(3)?, n.input(4)?);
    let past = cx.ty(past_k).shape[2].clone();
    let seq = qs[1].clone();
    if n.int("do_rotary", 0) != 0 {
        let (cos, sin) = (
            caches(cx, n, 7, "cos", &past, &seq)?,
            caches(cx, n, 8, "sin", &past, &seq)?,
        );
        let rot = 2 * cx.ty(&cos).shape[3].as_const().unwrap_or(0);
        let interleaved = n.int("rotary_interleaved", 0) != 0;
        q = rotate(cx, "q_", &q, [&cos, &sin], rot, interleaved)?;
        k = rotate(cx, "k_", &k, [&cos, &sin], rot, interleaved)?;
    }
    let bshd = |cx: &mut Cx, suffix: &str, x: &Val| {
        cx.emit1(
            suffix,
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[x],
        )
    };
    let (q, k, v) = (bshd(cx, "q", &q)?, bshd(cx, "k", &k)?, bshd(cx, "v", &v)?);
    let present_k = cx.emit1("present_key", Op::Concat { axis: 2 }, &[past_k, &k])?;
    let present_v = cx.emit1("present_value", Op::Concat { axis: 2 }, &[past_v, &v])?;
    let total = cx.ty(&present_k).shape[2].clone();
    let bias = mask(cx, n, &seq, &total, &past)?;
    let y = attend(cx, n, &q, &present_k, &present_v, Some(&bias), "pv")?.y;
    Ok(vec![merge_heads(cx, &y)?, present_k, present_v])
}

/// Rows `past..past + seq` of cache input `i` (`[positions, rot/2]`), as
/// `[1, seq, 1, rot/2]`.
fn caches(cx: &mut Cx, n: &N, i: usize, name: &str, past: &Dim, seq: &Dim) -> R<Val> {
    let table = n.input(i)?;
    let ts = cx.ty(table).shape;
    if ts.len() != 2 {
        return Err(cx.err(format!("the {name} cache must be [positions, rot/2]")));
    }
    let sa = SliceAxis {
        axis: 0,
        start: past.clone(),
        end: past + seq,
        step: 1,
    };
    let rows = cx.emit1(
        &format!("{name}_rows"),
        Op::Slice { axes: vec![sa] },
        &[table],
    )?;
    let one = Dim::from(1i64);
    cx.reshape(
        name,
        &rows,
        vec![one.clone(), seq.clone(), one, ts[1].clone()],
    )
}

/// The additive mask `[b, 1, seq, total]`: key `j` is seen by query `i` when
/// `j ≤ past + i` (causal) and `j ≤ seqlens_k[b]` (the row's valid length less one).
fn mask(cx: &mut Cx, n: &N, seq: &Dim, total: &Dim, past: &Dim) -> R<Val> {
    let one = Dim::from(1i64);
    let rows = arange(cx, "rows", seq.clone())?;
    let rows = cx.reshape("rows2d", &rows, vec![seq.clone(), one.clone()])?;
    let cols = arange(cx, "cols", total.clone())?;
    let cols = cx.reshape("cols2d", &cols, vec![one.clone(), total.clone()])?;
    let p = Val::Known(Known::Dims {
        dims: vec![past.clone()],
        scalar: true,
    });
    let pos = cx.binary("pos", B::Add, &rows, &p)?;
    let causal = cx.binary("causal", B::LessOrEqual, &cols, &pos)?;
    let lens = n.input(5)?;
    let b = cx
        .ty(lens)
        .shape
        .first()
        .cloned()
        .unwrap_or_else(|| one.clone());
    let lens = cx.cast("seqlens_i64", lens, DType::I64)?;
    let lens = cx.reshape("seqlens4d", &lens, vec![b, one.clone(), one.clone(), one])?;
    let valid = cx.binary("valid", B::LessOrEqual, &cols, &lens)?;
    let ok = cx.binary("allowed", B::And, &causal, &valid)?;
    let dtype = cx.dtype(n.input(0)?);
    let (zero, ninf) = (cx.scalar(dtype, 0.0), cx.scalar(dtype, f64::NEG_INFINITY));
    cx.emit1("bias", Op::Where, &[&ok, &zero, &ninf])
}

fn skip_rms(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    if n.wants_output(1) || n.wants_output(2) {
        return Err(n
            .ctx
            .unsupported("the mean and inverse standard deviation outputs"));
    }
    let mut sum = cx.binary("skip_sum", B::Add, n.input(0)?, n.input(1)?)?;
    if let Some(bias) = n.opt(3) {
        sum = cx.binary("bias_sum", B::Add, &sum, bias)?;
    }
    let eps = n.float("epsilon", 1e-5) as f64;
    let y = rms_of(cx, &sum, n.input(2)?, cx.rank(&sum) - 1, DType::F32, eps)?;
    Ok(vec![y.clone(), y.clone(), y, sum])
}

fn simplified_rms(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    if n.wants_output(1) || n.wants_output(2) {
        return Err(n
            .ctx
            .unsupported("the mean and inverse standard deviation outputs"));
    }
    let x = n.input(0)?;
    let axis = n.ctx.axis(n.int("axis", -1), cx.rank(x))?;
    let stash =
        crate::tensor::dtype_of(n.int("stash_type", 1) as i32).map_err(|m| n.ctx.unsupported(m))?;
    let y = rms_of(
        cx,
        x,
        n.input(1)?,
        axis,
        stash,
        n.float("epsilon", 1e-5) as f64,
    )?;
    Ok(vec![y.clone(), y.clone(), y])
}
