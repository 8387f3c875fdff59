//! Inference for contractions, windows and fused norms: matmul, einsum, convolution,
//! pooling, layer_norm, rms_norm, linear.

use super::{
    broadcast_dim, broadcast_shapes, expect_dtype, is_numeric, one, same_dtype, unify_or, Res,
};
use crate::{
    AttentionAttrs, AttentionMask, ConvAttrs, ConvTransposeAttrs, DType, Dim, EinsumSpec,
    MaskedRows, PoolAttrs, TensorType,
};
use std::collections::BTreeMap;

/// `[..., m, k] × [..., k, n] → [..., m, n]`, batch dims broadcast.
pub(super) fn matmul(a: &TensorType, b: &TensorType) -> Res<Vec<TensorType>> {
    same_dtype(a, b, "input")?;
    expect_dtype(a, "input", is_numeric, "a numeric")?;
    if a.rank() < 2 || b.rank() < 2 {
        return Err(format!("inputs must have rank >= 2, got {a} and {b}"));
    }
    let (ra, rb) = (a.rank(), b.rank());
    unify_or(&a.shape[ra - 1], &b.shape[rb - 2], "contraction dims")?;
    let mut shape = broadcast_shapes(&a.shape[..ra - 2], &b.shape[..rb - 2])?;
    shape.push(a.shape[ra - 2].clone());
    shape.push(b.shape[rb - 1].clone());
    one(TensorType::new(a.dtype, shape))
}

/// Checks that every per-spatial-dim attribute list has `n` entries.
fn check_lens(n: usize, lists: &[(&str, usize)]) -> Res<()> {
    for (name, len) in lists {
        if *len != n {
            return Err(format!("{name} has {len} entries for {n} spatial dims"));
        }
    }
    Ok(())
}

/// Fails if any entry is zero.
fn positive(name: &str, v: &[usize]) -> Res<()> {
    if v.contains(&0) {
        return Err(format!("{name} must be positive, got {v:?}"));
    }
    Ok(())
}

/// The rank checks shared by conv and conv-transpose: `x[n, c, ...]`, `w` of the same rank.
fn conv_ranks(x: &TensorType, w: &TensorType, groups: usize) -> Res<usize> {
    same_dtype(x, w, "input and weight")?;
    if x.rank() < 3 || w.rank() != x.rank() {
        return Err(format!(
            "expects x[n, c, ...] and a weight of the same rank, got {x} and {w}"
        ));
    }
    if groups == 0 {
        return Err("groups must be positive".into());
    }
    Ok(x.rank() - 2)
}

/// Fails if `d` is a constant that `groups` does not divide.
fn divisible(d: &Dim, groups: usize, what: &str) -> Res<()> {
    match d.as_const() {
        Some(c) if c % groups as i64 != 0 => {
            Err(format!("{what} ({c}) not divisible by groups ({groups})"))
        }
        _ => Ok(()),
    }
}

/// `dilation * (k - 1) + 1`: the extent of a dilated window.
fn window(k: &Dim, dilation: usize) -> Dim {
    (k.clone() - Dim::from(1i64)) * Dim::from(dilation) + Dim::from(1i64)
}

/// Fails if the output size of spatial dim `i` is a constant below one.
fn positive_size(d: Dim, i: usize) -> Res<Dim> {
    match d.as_const() {
        Some(c) if c < 1 => Err(format!(
            "spatial dim {i} has output size {c} (window larger than padded input)"
        )),
        _ => Ok(d),
    }
}

/// `x[n, c, ...] ⋆ w[m, c/groups, k...] → [n, m, ...]`.
pub(super) fn conv(a: &ConvAttrs, x: &TensorType, w: &TensorType) -> Res<Vec<TensorType>> {
    let s = conv_ranks(x, w, a.groups)?;
    check_lens(
        s,
        &[
            ("strides", a.strides.len()),
            ("dilations", a.dilations.len()),
            ("pads", a.pads.len()),
        ],
    )?;
    positive("strides", &a.strides)?;
    positive("dilations", &a.dilations)?;
    let weight_c = w.shape[1].clone() * Dim::from(a.groups);
    unify_or(
        &x.shape[1],
        &weight_c,
        "input channels and weight channels × groups",
    )?;
    divisible(&w.shape[0], a.groups, "output channels")?;
    let mut shape = vec![x.shape[0].clone(), w.shape[0].clone()];
    for i in 0..s {
        let (pb, pe) = a.pads[i];
        let span =
            x.shape[i + 2].clone() + Dim::from(pb + pe) - window(&w.shape[i + 2], a.dilations[i]);
        shape.push(positive_size(
            span.div_floor(a.strides[i] as i64) + Dim::from(1i64),
            i,
        )?);
    }
    one(TensorType::new(x.dtype, shape))
}

/// `x[n, c, ...]`, `w[c, m/groups, k...] → [n, m, ...]`.
pub(super) fn conv_transpose(
    a: &ConvTransposeAttrs,
    x: &TensorType,
    w: &TensorType,
) -> Res<Vec<TensorType>> {
    let s = conv_ranks(x, w, a.groups)?;
    check_lens(
        s,
        &[
            ("strides", a.strides.len()),
            ("dilations", a.dilations.len()),
            ("pads", a.pads.len()),
            ("output_padding", a.output_padding.len()),
        ],
    )?;
    positive("strides", &a.strides)?;
    positive("dilations", &a.dilations)?;
    unify_or(&x.shape[1], &w.shape[0], "input channels and weight dim 0")?;
    divisible(&x.shape[1], a.groups, "input channels")?;
    let channels = (w.shape[1].checked_mul(&Dim::from(a.groups)))
        .ok_or_else(|| "output channels overflow i64".to_string())?;
    let mut shape = vec![x.shape[0].clone(), channels];
    for i in 0..s {
        let (pb, pe) = a.pads[i];
        let c = |v: i64| Dim::from(v);
        let u = |v: usize| Dim::from(v);
        let w_extent = (w.shape[i + 2].checked_sub(&c(1)))
            .and_then(|k| k.checked_mul(&u(a.dilations[i])))
            .and_then(|k| k.checked_add(&c(1)));
        let full = (x.shape[i + 2].checked_sub(&c(1)))
            .and_then(|n| n.checked_mul(&u(a.strides[i])))
            .and_then(|n| n.checked_add(&w_extent?))
            .and_then(|n| n.checked_add(&u(a.output_padding[i])))
            .and_then(|n| n.checked_sub(&Dim::from(pb.checked_add(pe)?)))
            .ok_or_else(|| format!("spatial axis {i} of the output overflows i64"))?;
        shape.push(positive_size(full, i)?);
    }
    one(TensorType::new(x.dtype, shape))
}

/// Pooling over the trailing spatial dims of `x[n, c, ...]`.
pub(super) fn pool(a: &PoolAttrs, x: &TensorType) -> Res<Vec<TensorType>> {
    if x.rank() < 3 {
        return Err(format!("expects x[n, c, ...], got {x}"));
    }
    let s = x.rank() - 2;
    check_lens(
        s,
        &[
            ("kernel", a.kernel.len()),
            ("strides", a.strides.len()),
            ("dilations", a.dilations.len()),
            ("pads", a.pads.len()),
        ],
    )?;
    positive("kernel", &a.kernel)?;
    positive("strides", &a.strides)?;
    positive("dilations", &a.dilations)?;
    let mut shape = x.shape[..2].to_vec();
    for i in 0..s {
        shape.push(positive_size(pool_len(a, i, &x.shape[i + 2]), i)?);
    }
    one(TensorType::new(x.dtype, shape))
}

/// Output length of spatial dim `i`. With `ceil_mode`, a last window that would start in
/// the end padding is dropped (ONNX and PyTorch agree on this).
fn pool_len(a: &PoolAttrs, i: usize, input: &Dim) -> Dim {
    let (pb, pe) = a.pads[i];
    let stride = a.strides[i];
    let extent = (a.kernel[i] - 1) * a.dilations[i] + 1;
    let span = input.clone() + Dim::from(pb + pe) - Dim::from(extent);
    if !a.ceil_mode {
        return span.div_floor(stride as i64) + Dim::from(1i64);
    }
    let out = span.div_ceil(stride as i64) + Dim::from(1i64);
    if pe + stride <= extent {
        // The last window always starts inside the input or the begin padding.
        return out;
    }
    // Drop it when (out - 1) * stride >= input + pb: subtract min(max(gap + 1, 0), 1).
    let gap = (out.clone() - Dim::from(1i64)) * Dim::from(stride) - input.clone() - Dim::from(pb);
    let one = Dim::from(1i64);
    out - (gap + one.clone())
        .max_with(&Dim::from(0i64))
        .min_with(&one)
}

/// Label sizes come from the inputs (size-1 broadcasts); the output takes its labels' sizes.
pub(super) fn einsum(spec: &EinsumSpec, xs: &[&TensorType]) -> Res<Vec<TensorType>> {
    if xs.is_empty() {
        return Err("needs at least one input".into());
    }
    let mut sizes: BTreeMap<char, Dim> = BTreeMap::new();
    for (i, (x, labels)) in xs.iter().zip(&spec.inputs).enumerate() {
        same_dtype(xs[0], x, "input")?;
        if x.rank() != labels.len() {
            let l: String = labels.iter().collect();
            return Err(format!(
                "input {i} has rank {} but {} labels `{l}`",
                x.rank(),
                labels.len()
            ));
        }
        for (&c, d) in labels.iter().zip(&x.shape) {
            let merged = match sizes.get(&c) {
                Some(prev) => broadcast_dim(prev, d)
                    .map_err(|_| format!("label `{c}` has sizes {prev} and {d}"))?,
                None => d.clone(),
            };
            sizes.insert(c, merged);
        }
    }
    let mut shape = Vec::with_capacity(spec.output.len());
    for (j, c) in spec.output.iter().enumerate() {
        if spec.output[..j].contains(c) {
            return Err(format!("output label `{c}` repeated"));
        }
        shape.push(
            sizes
                .get(c)
                .cloned()
                .ok_or_else(|| format!("output label `{c}` is in no input"))?,
        );
    }
    one(TensorType::new(xs[0].dtype, shape))
}

/// A fused norm (`layer_norm`, `rms_norm`): a float `x` of rank ≥ 1, and parameters of its
/// dtype that broadcast to `x`'s shape without changing it.
pub(super) fn norm(x: &[&TensorType]) -> Res<Vec<TensorType>> {
    let input = x[0];
    expect_dtype(input, "input", DType::is_float, "a float")?;
    if input.rank() == 0 {
        return Err("input must have rank at least 1".into());
    }
    for p in &x[1..] {
        same_dtype(input, p, "input and parameter")?;
        if broadcast_shapes(&input.shape, &p.shape)? != input.shape {
            return Err(format!(
                "parameter shape {p} does not broadcast to the input's {input}"
            ));
        }
    }
    one(input.clone())
}

/// A fused linear layer (see [`crate::Op::Linear`]): float `x[..., K]` of rank ≥ 2,
/// `w[K, N]`, a bias of shape exactly `[N]` and a residual of exactly the output's shape,
/// all of `x`'s dtype. The parameters must not broadcast the result to a larger shape, so
/// the kernel can apply them to each output element in place.
pub(super) fn linear(e: crate::Epilogue, x: &[&TensorType]) -> Res<Vec<TensorType>> {
    let (input, w) = (x[0], x[1]);
    expect_dtype(input, "input", DType::is_float, "a float")?;
    if w.rank() != 2 {
        return Err(format!("weight must have rank 2, got {w}"));
    }
    let y = matmul(input, w)?.remove(0);
    let n = &w.shape[1];
    let mut rest = x[2..].iter();
    if e.bias {
        let bias = rest.next().ok_or("missing bias")?;
        same_dtype(input, bias, "input and bias")?;
        if bias.rank() != 1 || bias.shape[0] != *n {
            return Err(format!("bias must have shape [{n}], got {bias}"));
        }
    }
    if e.residual.is_some() {
        let r = rest.next().ok_or("missing residual")?;
        same_dtype(input, r, "input and residual")?;
        if r.shape != y.shape {
            return Err(format!(
                "residual must have the output's shape {y}, got {r}"
            ));
        }
    }
    one(y)
}

/// A quantized linear layer (see [`crate::Op::QuantLinear`]): f32 `x[..., K]`, the stored
/// weight `w[K, N]` of the format's integer type, its scales and zero points of the
/// format's shapes, then the epilogue's operands as for [`linear`].
pub(super) fn quant_linear(q: crate::QuantAttrs, x: &[&TensorType]) -> Res<Vec<TensorType>> {
    use crate::WeightQuant;
    let (input, w) = (x[0], x[1]);
    if q.activations == crate::ActQuant::Quantized {
        quantized_activations(q, x)?;
    } else {
        expect_dtype(input, "input", |d| d == DType::F32, "f32")?;
    }
    let stored = q.weights.stored();
    if w.dtype != stored || w.rank() != 2 {
        return Err(format!(
            "{} weight must be {stored}[K, N], got {w}",
            q.weights.name()
        ));
    }
    let (k, n) = (&w.shape[0], &w.shape[1]);
    if q.weights == WeightQuant::Int8 && k.as_const().is_none_or(|k| k > crate::quant::MAX_INT8_K) {
        return Err(format!(
            "an int8 weight's K must be a number up to {} (an i32 product), got {k}",
            crate::quant::MAX_INT8_K
        ));
    }
    let params = match q.weights.block() {
        None => vec![n.clone()],
        Some(rows) => vec![k.div_ceil(rows as i64), n.clone()],
    };
    let scale_types: &[DType] = match q.weights {
        WeightQuant::Int8 => &[DType::F32],
        WeightQuant::Int4 { .. } => &[DType::F32, DType::F16],
        WeightQuant::F16 | WeightQuant::BF16 => &[],
    };
    if scale_types.is_empty() && q.activations != crate::ActQuant::None {
        return Err(format!(
            "{} weights are weight-only: activations must be `none`, not `{}`",
            q.weights.name(),
            q.activations.name()
        ));
    }
    let scale = x.get(2).filter(|_| !scale_types.is_empty());
    if let Some(scale) = scale.filter(|s| !scale_types.contains(&s.dtype) || s.shape != params) {
        return Err(format!(
            "{} scale must be {}{params:?}, got {scale}",
            q.weights.name(),
            scale_types
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(" or "),
        ));
    }
    if q.weights.zero_points() {
        let zp = x[3];
        if zp.dtype != DType::U8 || zp.shape != params {
            return Err(format!("zero point must be u8{params:?}, got {zp}"));
        }
    }
    // The epilogue's operands follow, typed as for a float linear over `[K, N]`.
    let plain = TensorType::new(DType::F32, w.shape.clone());
    let skip = 2 + q.params();
    let float_input = TensorType::new(DType::F32, input.shape.clone());
    let rest: Vec<&TensorType> = [&float_input, &plain]
        .into_iter()
        .chain(x[skip..].iter().copied())
        .collect();
    linear(q.epilogue, &rest)
}

/// The operands of the schemes with a zero point: int8 weights of K up to
/// [`crate::MAX_QUANTIZED_K`]; for [`crate::ActQuant::Quantized`] `x` u8 or i8, else f32;
/// for it and [`crate::ActQuant::PerTensor`], `x`'s zero point (a u8 or i8 scalar, of
/// `x`'s type when `x` is an integer) and scale (an f32 scalar) after the weight's scales.
fn quantized_activations(q: crate::QuantAttrs, x: &[&TensorType]) -> Res<()> {
    use crate::ActQuant;
    let input = x[0];
    let bytes = |d: DType| matches!(d, DType::U8 | DType::I8);
    match q.activations {
        ActQuant::Quantized => expect_dtype(input, "input", bytes, "u8 or i8")?,
        _ => expect_dtype(input, "input", |d| d == DType::F32, "f32")?,
    }
    if q.weights != crate::WeightQuant::Int8 {
        return Err(format!(
            "{} activations need int8 weights, not {}",
            q.activations.name(),
            q.weights.name()
        ));
    }
    let k = &x[1].shape.first();
    if k.and_then(|k| k.as_const())
        .is_none_or(|k| k > crate::MAX_QUANTIZED_K)
    {
        return Err(format!(
            "with {} activations K must be a number up to {} (an i32 product), got {k:?}",
            q.activations.name(),
            crate::MAX_QUANTIZED_K
        ));
    }
    if q.activations.params() == 0 {
        return Ok(());
    }
    let at = 2 + q.weights.params();
    let (zp, scale) = (x[at], x[at + 1]);
    let (zp_fits, want) = match q.activations {
        ActQuant::Quantized => (zp.dtype == input.dtype, input.dtype.to_string()),
        _ => (bytes(zp.dtype), "u8 or i8".to_string()),
    };
    if !zp_fits || zp.rank() != 0 {
        return Err(format!("x zero point must be a {want} scalar, got {zp}"));
    }
    if scale.dtype != DType::F32 || scale.rank() != 0 {
        return Err(format!("x scale must be an f32 scalar, got {scale}"));
    }
    Ok(())
}

/// `q[.., H, Sq, D]`, `k[.., G, Sk, D]`, `v[.., G, Sk, Dv]` and the mask, if any →
/// `[.., H, Sq, Dv]` (see [`crate::Op::Attention`]).
pub(super) fn attention(a: &AttentionAttrs, x: &[&TensorType]) -> Res<Vec<TensorType>> {
    let (q, k, v) = (x[0], x[1], x[2]);
    expect_dtype(q, "query", DType::is_float, "a float")?;
    same_dtype(q, k, "query and key")?;
    same_dtype(q, v, "query and value")?;
    let r = q.rank();
    if r < 3 || k.rank() != r || v.rank() != r {
        return Err(format!(
            "query, key and value must have one rank of at least 3, not {q}, {k}, {v}"
        ));
    }
    let heads = r - 3;
    if q.shape[..heads] != k.shape[..heads] || k.shape[..heads] != v.shape[..heads] {
        return Err(format!("leading dims of {q}, {k}, {v} differ"));
    }
    let (h, g) = (&q.shape[heads], &k.shape[heads]);
    let grouped = match (h.as_const(), g.as_const()) {
        _ if h == g => true,
        (Some(h), Some(g)) => g > 0 && h % g == 0,
        _ => false,
    };
    if !grouped || v.shape[heads] != *g {
        return Err(format!(
            "query heads {h} must be a multiple of key/value heads {g} (value has {})",
            v.shape[heads]
        ));
    }
    if q.shape[r - 1] != k.shape[r - 1] || k.shape[r - 2] != v.shape[r - 2] {
        return Err(format!("query {q}, key {k} and value {v} do not line up"));
    }
    if a.rows == MaskedRows::ZeroMasked && a.mask != AttentionMask::Add {
        return Err("rows=zero_masked needs an additive mask".into());
    }
    if let Some(m) = x.get(3) {
        match a.mask {
            AttentionMask::Keep if m.dtype != DType::Bool => {
                return Err(format!("a keep mask must be bool, not {m}"))
            }
            AttentionMask::Keep => {}
            _ => same_dtype(q, m, "query and mask")?,
        }
        let mut scores = q.shape[..r - 1].to_vec();
        scores.push(k.shape[r - 2].clone());
        if broadcast_shapes(&scores, &m.shape)? != scores {
            return Err(format!("mask {m} does not broadcast to the scores"));
        }
    }
    let mut out = q.shape.clone();
    out[r - 1] = v.shape[r - 1].clone();
    one(TensorType::new(q.dtype, out))
}

/// `x[.., 2h]` with `cos` and `sin` broadcast to it → `x`'s type (see
/// [`crate::Op::Rotary`]).
pub(super) fn rotary(x: &[&TensorType]) -> Res<Vec<TensorType>> {
    let even = x[0]
        .shape
        .last()
        .and_then(Dim::as_const)
        .is_some_and(|d| d % 2 == 0);
    if !even {
        return Err(format!(
            "rotary needs a last axis of known even size, not {}",
            x[0]
        ));
    }
    norm(x)
}
