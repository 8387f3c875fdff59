//! `quantize`: linear layers whose weight is a constant f32 `[K, N]` (fused `linear`s, and
//! plain `matmul`s by such a weight) become quantized linears ([`Op::QuantLinear`]) in the
//! chosen [`Scheme`]. The weights are quantized here, once, at compile time: int8
//! symmetric per output column, int4 asymmetric (with zero points and f16 scales) per block
//! of 32 rows, or rounded to f16/bf16 (mixed precision: half storage, f32 arithmetic).
//!
//! Embedding tables (a `gather` along axis 0 of a constant f32 `[V, D]` of at least
//! [`MIN_TABLE`] elements) are stored smaller too: int8 per row with an f32 scale per row
//! for int8 (`gather` of both, then `cast` and `mul`), int4 per block of 32 with f32 scales
//! for int4 (the same, and a `reshape`; int8 rows when D is not a multiple of 32), or in
//! f16/bf16 (`gather`, then `cast`). They hold most of a small encoder's weights (MiniLM:
//! 11.7M of 22.7M).
//!
//! It runs after `fuse` and `merge-linears`, so the epilogues are already fused and Q, K
//! and V share one quantized product.

use crate::{Pass, PassError, PassReport};
use kiln_ir::half::f16;
use kiln_ir::{
    round_half_even, ActQuant, Block, DType, Epilogue, Graph, Node, Op, QuantAttrs, Tensor,
    ValueId, WeightQuant,
};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// What `--quantize` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// int8 weights per output column and dynamic int8 activations per token.
    Int8,
    /// int8 weights per output column; activations stay f32 (weight-only).
    Int8Weights,
    /// int4 weights in blocks of 32 with zero points, dynamic int8 activations per token.
    Int4,
    /// f16 weights, f32 arithmetic (mixed precision).
    F16,
    /// bf16 weights, f32 arithmetic (mixed precision).
    BF16,
}

impl Scheme {
    /// Every scheme.
    pub const ALL: [Scheme; 5] = [
        Scheme::Int8,
        Scheme::Int8Weights,
        Scheme::Int4,
        Scheme::F16,
        Scheme::BF16,
    ];

    /// The name on the command line: `int8`, `int8-weights`, `int4`, `f16`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Int8 => "int8",
            Scheme::Int8Weights => "int8-weights",
            Scheme::Int4 => "int4",
            Scheme::F16 => "f16",
            Scheme::BF16 => "bf16",
        }
    }

    /// The scheme called `s`.
    pub fn from_name(s: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|q| q.name() == s)
    }

    /// The layer attributes this scheme gives a linear with epilogue `epilogue`.
    pub fn attrs(self, epilogue: Epilogue) -> QuantAttrs {
        let (weights, activations) = match self {
            Scheme::Int8 => (WeightQuant::Int8, ActQuant::DynamicInt8),
            Scheme::Int8Weights => (WeightQuant::Int8, ActQuant::None),
            Scheme::Int4 => (
                WeightQuant::Int4 {
                    block: Block::B32,
                    zero_points: true,
                },
                ActQuant::DynamicInt8,
            ),
            Scheme::F16 => (WeightQuant::F16, ActQuant::None),
            Scheme::BF16 => (WeightQuant::BF16, ActQuant::None),
        };
        QuantAttrs {
            weights,
            activations,
            epilogue,
        }
    }
}

/// The quantize pass; see the module docs.
#[derive(Clone, Debug)]
///
/// ```
/// use kiln_passes::{Pass, Quantize, Scheme};
/// let mut g = kiln_ir::parse(
///     "graph @proj(%x: f32[2, 3]) -> f32[2, 2] {
///         %w = const f32[3, 2] [[1.0, -2.0], [0.5, 0.25], [-1.0, 4.0]]
///         %y = matmul %x, %w
///         return %y
///     }",
/// )
/// .unwrap();
/// let report = Quantize::new(Scheme::Int8).run(&mut g).unwrap();
/// assert_eq!(report.changes, 1);
/// assert!(g.nodes.iter().any(|n| n.op.name() == "quant_linear"));
/// ```
pub struct Quantize {
    /// The scheme.
    pub scheme: Scheme,
    /// Layers left in f32: a node whose name contains any of these.
    pub skip: Vec<String>,
    /// Layers, by exact node name, given another scheme than `scheme` (`None`: left in
    /// f32), as the accuracy search chooses.
    pub layers: BTreeMap<String, Option<Scheme>>,
}

impl Quantize {
    /// Quantizes every eligible layer with `scheme`.
    pub fn new(scheme: Scheme) -> Quantize {
        Quantize {
            scheme,
            skip: Vec::new(),
            layers: BTreeMap::new(),
        }
    }

    /// The names of the layers of `g` the pass can quantize, in graph order, each once
    /// (layers that share a name share their scheme), before `skip` applies.
    pub fn eligible(g: &Graph) -> Vec<String> {
        let producers = g.producers();
        let mut seen = std::collections::BTreeSet::new();
        (g.nodes.iter())
            .filter(|n| is_layer(g, &producers, n))
            .filter(|n| seen.insert(n.name.clone()))
            .map(|n| n.name.clone())
            .collect()
    }

    /// Names every layer the pass could quantize that has no name `OP#INDEX` (its node's
    /// index), so that the accuracy search, `--quantize-skip` and the reports tell unnamed
    /// layers apart: the fusion leaves a layer unnamed when its e-class has no source
    /// node (GPT-2's output projections), and unnamed layers shared one scheme. Returns
    /// how many it named.
    pub fn name_layers(g: &mut Graph) -> usize {
        let producers = g.producers();
        let unnamed: Vec<usize> = (0..g.nodes.len())
            .filter(|&i| g.nodes[i].name.is_empty() && is_layer(g, &producers, &g.nodes[i]))
            .collect();
        for &i in &unnamed {
            g.nodes[i].name = format!("{}#{i}", g.nodes[i].op.name());
        }
        unnamed.len()
    }

    /// The scheme layer `name` gets, if any.
    fn scheme_of(&self, name: &str) -> Option<Scheme> {
        if self.skip.iter().any(|s| name.contains(s.as_str())) {
            return None;
        }
        self.layers.get(name).copied().unwrap_or(Some(self.scheme))
    }
}

impl Pass for Quantize {
    fn name(&self) -> &'static str {
        "quantize"
    }

    fn run(&self, g: &mut Graph) -> Result<PassReport, PassError> {
        let producers = g.producers();
        let uses = g.use_counts();
        let old = std::mem::take(&mut g.nodes);
        let plan: Vec<Option<Layer>> = (old.iter())
            .map(|node| self.plan(g, &old, &producers, node))
            .collect();
        // A constant that only layers being quantized read is left out of the new graph
        // and dropped after its last reader, so the f32 weights are not all resident beside
        // their quantized copies (a mapped weight's pages are handed back as it drops).
        let mut pending = vec![0; uses.len()];
        for layer in plan.iter().flatten() {
            pending[layer.weight.index()] += 1;
        }
        let replaced: Vec<bool> = (pending.iter().zip(&uses))
            .map(|(&p, &u)| p > 0 && p == u)
            .collect();
        let mut old: Vec<Option<Node>> = old.into_iter().map(Some).collect();
        let mut changes = 0;
        for (i, layer) in plan.into_iter().enumerate() {
            let Some(node) = old[i].take() else { continue };
            let Some(layer) = layer else {
                let dropped = matches!(node.op, Op::Const(_))
                    && node.outputs.iter().all(|v| replaced[v.index()]);
                match dropped {
                    true => old[i] = Some(node),
                    false => g.nodes.push(node),
                }
                continue;
            };
            match layer.kind {
                LayerKind::Table(t) => embedding(g, &node, &t, layer.scheme),
                LayerKind::Linear(epilogue, w) => {
                    let q = layer.scheme.attrs(epilogue);
                    quantized(g, &node, q, &w).map(|n| g.nodes.push(n))
                }
            }
            .map_err(|m| failed(&node, m))?;
            changes += 1;
            let w = layer.weight.index();
            pending[w] -= 1;
            if pending[w] == 0 {
                // The weight's last reader is quantized: its constant goes now.
                if let Some(p) = producers[w] {
                    old[p] = None;
                }
            }
        }
        g.compact();
        Ok(PassReport::changes(changes))
    }
}

/// A layer the pass quantizes, and how.
struct Layer {
    kind: LayerKind,
    /// The f32 weight it replaces.
    weight: ValueId,
    scheme: Scheme,
}

enum LayerKind {
    /// An embedding lookup in this table.
    Table(Tensor),
    /// A linear layer with this epilogue and weight.
    Linear(Epilogue, Tensor),
}

impl Quantize {
    /// How the pass quantizes `node`, if it does.
    fn plan(
        &self,
        g: &Graph,
        nodes: &[Node],
        producers: &[Option<usize>],
        node: &Node,
    ) -> Option<Layer> {
        let scheme = self.scheme_of(&node.name)?;
        if let Some(t) = table(nodes, producers, node) {
            let weight = node.inputs[0];
            return Some(Layer {
                kind: LayerKind::Table(t),
                weight,
                scheme,
            });
        }
        let (epilogue, w) = candidate(g, nodes, producers, node)?;
        let weight = node.inputs[1];
        Some(Layer {
            kind: LayerKind::Linear(epilogue, w),
            weight,
            scheme,
        })
    }
}

/// Whether the pass can quantize `node`: a linear layer or an embedding table.
fn is_layer(g: &Graph, producers: &[Option<usize>], node: &Node) -> bool {
    candidate(g, &g.nodes, producers, node).is_some() || table(&g.nodes, producers, node).is_some()
}

/// The epilogue and constant weight of a layer the pass can quantize: f32 `x` of rank ≥ 2
/// times a constant f32 `[K, N]`, with K within the int8 accumulator's reach.
fn candidate(
    g: &Graph,
    nodes: &[Node],
    producers: &[Option<usize>],
    node: &Node,
) -> Option<(Epilogue, Tensor)> {
    let epilogue = match node.op {
        Op::MatMul => Epilogue::default(),
        Op::Linear(e) => e,
        _ => return None,
    };
    let x = g.value_type(node.inputs[0]);
    let w = match producers[node.inputs[1].index()].map(|p| &nodes[p].op) {
        Some(Op::Const(t)) if t.dtype() == DType::F32 && t.rank() == 2 => t.clone(),
        _ => return None,
    };
    let k = w.shape()[0] as i64;
    let fits = x.dtype == DType::F32 && x.rank() >= 2 && (1..=kiln_ir::MAX_INT8_K).contains(&k);
    fits.then_some((epilogue, w))
}

/// The pass's error for `node`.
fn failed(node: &Node, message: String) -> PassError {
    PassError::Failed {
        pass: "quantize".into(),
        message: format!("node `{}`: {message}", node.name),
    }
}

/// The fewest elements an embedding table must have to be stored quantized.
pub const MIN_TABLE: usize = 1 << 14;

/// The constant table of an embedding lookup the pass can shrink: `gather` along axis 0
/// of a constant f32 `[V, D]` of at least [`MIN_TABLE`] elements.
fn table(nodes: &[Node], producers: &[Option<usize>], node: &Node) -> Option<Tensor> {
    if node.op != (Op::Gather { axis: 0 }) {
        return None;
    }
    match producers[node.inputs[0].index()].map(|p| &nodes[p].op) {
        Some(Op::Const(t)) if t.dtype() == DType::F32 && t.rank() == 2 && t.len() >= MIN_TABLE => {
            Some(t.clone())
        }
        _ => None,
    }
}

/// Replaces the lookup `node` in table `t` by one in the table stored as `scheme` says
/// (int8 rows with their scales, or half), writing `node`'s output.
fn embedding(g: &mut Graph, node: &Node, t: &Tensor, scheme: Scheme) -> Result<(), String> {
    let err = |e: kiln_ir::InferError| e.to_string();
    let (v, d) = (t.shape()[0], t.shape()[1]);
    let idx = node.inputs[1];
    let add = |g: &mut Graph, suffix: &str, op: Op, inputs: &[ValueId]| {
        g.add_node(format!("{}.{suffix}", node.name), op, inputs)
            .map(|o| o[0])
            .map_err(err)
    };
    let gather = Op::Gather { axis: 0 };
    let (op, inputs) = match scheme {
        Scheme::F16 | Scheme::BF16 => {
            let to = if scheme == Scheme::F16 {
                DType::F16
            } else {
                DType::BF16
            };
            let table = add(g, "table", Op::Const(t.cast(to)), &[])?;
            let rows = add(g, "rows", gather, &[table, idx])?;
            (Op::Cast { to: DType::F32 }, vec![rows])
        }
        Scheme::Int4 if d % TABLE_BLOCK == 0 => {
            let values = f32_values(t);
            let (q, scale) = int4_symmetric(&values, v * d / TABLE_BLOCK, |i| i / TABLE_BLOCK);
            int4_table(g, node, v, q, scale)?
        }
        Scheme::Int8 | Scheme::Int8Weights | Scheme::Int4 => {
            let values = f32_values(t);
            let (q, scale) = int8_symmetric(&values, v, |i| i / d.max(1));
            let table = Tensor::from_vec(q, &[v, d]).map_err(|e| e.to_string())?;
            let scale = Tensor::from_vec(scale, &[v, 1]).map_err(|e| e.to_string())?;
            let table = add(g, "table", Op::Const(table), &[])?;
            let scale = add(g, "row_scale", Op::Const(scale), &[])?;
            let rows = add(g, "rows", gather.clone(), &[table, idx])?;
            let scales = add(g, "row_scales", gather, &[scale, idx])?;
            let rows = add(g, "cast", Op::Cast { to: DType::F32 }, &[rows])?;
            (Op::Binary(kiln_ir::BinaryOp::Mul), vec![rows, scales])
        }
    };
    g.nodes.push(Node {
        name: node.name.clone(),
        op,
        inputs,
        outputs: node.outputs.clone(),
    });
    Ok(())
}

/// Values of an int4 table row that share a scale.
const TABLE_BLOCK: usize = 32;

/// The lookup `node` in a table `[V, D]` stored in int4 ([`int4_symmetric`]): `q` as
/// `[V, D / 32, 32]` with f32 `scale`s `[V, D / 32, 1]`, the gathered rows cast to f32 times
/// their gathered scales, reshaped to `node`'s output. As ggml stores token embeddings; an
/// int8 table was a third of an int4 MiniLM. (f16 scales would save a tenth of the table,
/// but the CPU backend casts f16 through the interpreter.)
fn int4_table(
    g: &mut Graph,
    node: &Node,
    rows: usize,
    q: Vec<i8>,
    scale: Vec<f32>,
) -> Result<(Op, Vec<ValueId>), String> {
    let blocks = scale.len() / rows.max(1);
    let e = |e: kiln_ir::TensorError| e.to_string();
    let table = Tensor::from_vec(q, &[rows, blocks, TABLE_BLOCK]).map_err(e)?;
    let scale = Tensor::from_vec(scale, &[rows, blocks, 1]).map_err(e)?;
    let idx = node.inputs[1];
    let mut add = |suffix: &str, op: Op, inputs: &[ValueId]| {
        g.add_node(format!("{}.{suffix}", node.name), op, inputs)
            .map(|o| o[0])
            .map_err(|e| e.to_string())
    };
    let gather = Op::Gather { axis: 0 };
    let table = add("table", Op::Const(table), &[])?;
    let scale = add("block_scale", Op::Const(scale), &[])?;
    let rows = add("rows", gather.clone(), &[table, idx])?;
    let rows = add("cast", Op::Cast { to: DType::F32 }, &[rows])?;
    let scales = add("block_scales", gather, &[scale, idx])?;
    let rows = add(
        "dequant",
        Op::Binary(kiln_ir::BinaryOp::Mul),
        &[rows, scales],
    )?;
    let shape = g.value_type(node.outputs[0]).shape.clone();
    Ok((Op::Reshape { shape }, vec![rows]))
}

/// Symmetric int4 over `groups` groups, element `i` in group `group(i)`, as ggml's `Q4_0`:
/// with `m` the group's value of largest magnitude, `scale = m / -8` and
/// `wq = round_half_even(w / scale)` in `-8..=7`, so the extreme value takes the level -8
/// and the group has all sixteen levels (0 for a group of zeros).
fn int4_symmetric(w: &[f32], groups: usize, group: impl Fn(usize) -> usize) -> (Vec<i8>, Vec<f32>) {
    let mut extreme = vec![0f32; groups];
    for (i, &v) in w.iter().enumerate() {
        let m = &mut extreme[group(i)];
        if v.abs() > m.abs() {
            *m = v;
        }
    }
    let scale: Vec<f32> = extreme.iter().map(|&m| m / -8.0).collect();
    (levels(w, &scale, group, -8.0, 7.0), scale)
}

/// `round_half_even(w / scale)` of each element's group, clamped to `lo..=hi` (0 where the
/// group's scale is 0).
fn levels(w: &[f32], scale: &[f32], group: impl Fn(usize) -> usize, lo: f32, hi: f32) -> Vec<i8> {
    (w.iter().enumerate())
        .map(|(i, &v)| match scale[group(i)] {
            0.0 => 0,
            s => round_half_even(v / s).clamp(lo, hi) as i8,
        })
        .collect()
}

/// The values of `t`, an f32 tensor, borrowed where it is contiguous. (Widening every
/// weight to f64 first took 295 MB at once for a 32000×768 embedding table: the peak of a
/// whole Llama-style generation.)
fn f32_values(t: &Tensor) -> Cow<'_, [f32]> {
    (t.values::<f32>()).unwrap_or_else(|| t.to_f64_vec().into_iter().map(|x| x as f32).collect())
}

/// `node` as a quantized linear: the quantized weight, its scales and zero points become
/// constants before it.
fn quantized(g: &mut Graph, node: &Node, q: QuantAttrs, w: &Tensor) -> Result<Node, String> {
    let (k, n) = (w.shape()[0], w.shape()[1]);
    let values = f32_values(w);
    let parts = match q.weights {
        WeightQuant::Int8 => int8_columns(&values, k, n),
        WeightQuant::Int4 { block, .. } => int4_blocks(&values, k, n, block.rows()),
        // Rounded to nearest even by the cast, as ONNX's Cast does.
        WeightQuant::F16 => Ok(half_weight(w, DType::F16)),
        WeightQuant::BF16 => Ok(half_weight(w, DType::BF16)),
    }
    .map_err(|e| e.to_string())?;
    let mut constant = |suffix: &str, t: Tensor| -> Result<ValueId, String> {
        let name = format!("{}.{suffix}", node.name);
        let v = g
            .add_node(name, Op::Const(t), &[])
            .map_err(|e| e.to_string())?;
        Ok(v[0])
    };
    let mut inputs = vec![node.inputs[0], constant("wq", parts.weight)?];
    if let Some(s) = parts.scale {
        inputs.push(constant("scale", s)?);
    }
    if let Some(z) = parts.zero_point {
        inputs.push(constant("zero_point", z)?);
    }
    inputs.extend_from_slice(&node.inputs[2..]);
    Ok(Node {
        name: node.name.clone(),
        op: Op::QuantLinear(q),
        inputs,
        outputs: node.outputs.clone(),
    })
}

/// A quantized weight: the stored values, the scales (integer formats) and the zero
/// points (int4).
struct Parts {
    weight: Tensor,
    scale: Option<Tensor>,
    zero_point: Option<Tensor>,
}

/// `w` stored in a half type.
fn half_weight(w: &Tensor, to: DType) -> Parts {
    Parts {
        weight: w.cast(to),
        scale: None,
        zero_point: None,
    }
}

/// Symmetric int8 per column: `scale[n] = max_k |w[k, n]| / 127`,
/// `wq = round_half_even(w / scale)` in `-127..=127` (0 for a column of zeros).
fn int8_columns(w: &[f32], k: usize, n: usize) -> Result<Parts, kiln_ir::TensorError> {
    let (q, scale) = int8_symmetric(w, n, |i| i % n);
    Ok(Parts {
        weight: Tensor::from_vec(q, &[k, n])?,
        scale: Some(Tensor::from_vec(scale, &[n])?),
        zero_point: None,
    })
}

/// Symmetric int8 over `groups` groups, element `i` in group `group(i)`:
/// `scale[g] = max |w| / 127` over the group, `wq = round_half_even(w / scale)` in
/// `-127..=127` (0 for a group of zeros).
fn int8_symmetric(w: &[f32], groups: usize, group: impl Fn(usize) -> usize) -> (Vec<i8>, Vec<f32>) {
    let mut scale = vec![0f32; groups];
    for (i, &v) in w.iter().enumerate() {
        scale[group(i)] = scale[group(i)].max(v.abs());
    }
    scale.iter_mut().for_each(|s| *s /= 127.0);
    (levels(w, &scale, group, -127.0, 127.0), scale)
}

/// Asymmetric int4 per block of `rows` along K and column: over the block's range
/// `[lo, hi]` (widened to hold 0), `scale = (hi - lo) / 15` rounded to f16 ([`f16_scales`]),
/// `zero_point = round(-lo / scale)` in `0..=15`, `wq = round_half_even(w / scale) +
/// zero_point` in `0..=15`.
fn int4_blocks(w: &[f32], k: usize, n: usize, rows: usize) -> Result<Parts, kiln_ir::TensorError> {
    let blocks = k.div_ceil(rows);
    let (mut lo, mut hi) = (vec![0f32; blocks * n], vec![0f32; blocks * n]);
    // Row by row, so that an element's block is its row's (no division per weight).
    for (r, row) in w.chunks_exact(n.max(1)).enumerate() {
        let b = r / rows * n;
        for ((l, h), &v) in lo[b..b + n].iter_mut().zip(&mut hi[b..b + n]).zip(row) {
            *l = l.min(v);
            *h = h.max(v);
        }
    }
    let scale: Vec<f32> = lo.iter().zip(&hi).map(|(l, h)| (h - l) / 15.0).collect();
    let scale_tensor = f16_scales(Tensor::from_vec(scale, &[blocks, n])?);
    let scale: Vec<f32> = (scale_tensor.to_f64_vec().into_iter())
        .map(|s| s as f32)
        .collect();
    let zero: Vec<u8> = (lo.iter().zip(&scale))
        .map(|(&l, &s)| match s {
            0.0 => 0,
            s => round_half_even(-l / s).clamp(0.0, 15.0) as u8,
        })
        .collect();
    let mut q = Vec::with_capacity(w.len());
    for (r, row) in w.chunks_exact(n.max(1)).enumerate() {
        let b = r / rows * n;
        let levels = row.iter().zip(&scale[b..b + n]).zip(&zero[b..b + n]);
        q.extend(levels.map(|((&v, &s), &z)| match s {
            0.0 => z,
            s => (round_half_even(v / s) + f32::from(z)).clamp(0.0, 15.0) as u8,
        }));
    }
    Ok(Parts {
        weight: Tensor::from_vec(q, &[k, n])?,
        scale: Some(scale_tensor),
        zero_point: Some(Tensor::from_vec(zero, &[blocks, n])?),
    })
}

/// Block scales in f16, as onnxruntime's `MatMulNBits` and ggml store them: half the bytes
/// of f32 (a sixth of an int4 layer's), and an f16 significand (11 bits) is far finer than
/// an int4 step. Each is rounded up, so that the block's range still spans at most 15
/// steps, and the weights are quantized with the rounded scales: storing them loses
/// nothing further. A layer with a scale that f16 cannot hold (overflow, or a nonzero one
/// below f16's normal range) keeps f32 scales.
fn f16_scales(scale: Tensor) -> Tensor {
    let values = scale.to_f64_vec();
    let up = |s: f64| {
        let h = f16::from_f64(s);
        match h.to_f64() < s {
            true => f16::from_bits(h.to_bits() + 1),
            false => h,
        }
    };
    let half: Vec<f16> = values.iter().map(|&s| up(s)).collect();
    // Subnormal f16 have fewer significant bits than an int4 step needs.
    let holds = (values.iter().zip(&half))
        .all(|(&s, h)| s == 0.0 || (h.is_finite() && *h >= f16::MIN_POSITIVE));
    match Tensor::from_vec(half, scale.shape()) {
        Ok(half) if holds => half,
        _ => scale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{interp, parse};

    /// A projection of `x[m, k]` by a pseudo-random weight `[k, n]`, run in f32 and after
    /// quantizing with `scheme`; the cosine of the two outputs.
    fn cosine_after(scheme: Scheme, m: usize, k: usize, n: usize) -> f64 {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        let w: Vec<String> = (0..k * n).map(|_| format!("{:?}", next() as f32)).collect();
        let rows: Vec<String> = w.chunks(n).map(|r| format!("[{}]", r.join(", "))).collect();
        let text = format!(
            "graph @p(%x: f32[{m}, {k}]) -> f32[{m}, {n}] {{
                %w = const f32[{k}, {n}] [{}]
                %y = matmul %x, %w
                return %y
            }}",
            rows.join(", ")
        );
        let f32_graph = parse(&text).unwrap();
        let mut q = f32_graph.clone();
        assert_eq!(Quantize::new(scheme).run(&mut q).unwrap().changes, 1);
        kiln_ir::verify(&q).unwrap();
        let x: Vec<f32> = (0..m * k).map(|_| next() as f32).collect();
        let x = Tensor::from_vec(x, &[m, k]).unwrap();
        let run = |g: &Graph| interp::run(g, std::slice::from_ref(&x)).unwrap()[0].to_f64_vec();
        let (a, b) = (run(&f32_graph), run(&q));
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        dot / (norm(&a) * norm(&b))
    }

    #[test]
    fn quantized_products_stay_close_to_f32() {
        // K = 70: a partial int4 block; N = 5: odd.
        assert!(cosine_after(Scheme::Int8Weights, 3, 70, 5) > 0.9999);
        assert!(cosine_after(Scheme::Int8, 3, 70, 5) > 0.999);
        assert!(cosine_after(Scheme::Int4, 3, 70, 5) > 0.99);
    }

    /// Two layers sharing one constant weight.
    const TWO_LAYERS: &str = "graph @two(%x: f32[2, 2]) -> f32[2, 2] {
        %w = const f32[2, 2] [[1.0, -2.0], [0.5, 0.25]]
        %a = matmul %x, %w
        %b = matmul %a, %w
        return %b
    }";

    #[test]
    fn unnamed_layers_get_names_of_their_own() {
        let mut g = parse(TWO_LAYERS).unwrap();
        assert_eq!(Quantize::eligible(&g), [""]);
        assert_eq!(Quantize::name_layers(&mut g), 2);
        assert_eq!(Quantize::eligible(&g), ["matmul#1", "matmul#2"]);
        // Named layers and other ops (the constant) keep their names.
        assert_eq!(Quantize::name_layers(&mut g), 0);
        assert_eq!(g.nodes[0].name, "");
    }

    /// The f32 weight goes with its last reader when every reader is quantized, and stays
    /// while a layer left in f32 reads it.
    #[test]
    fn a_weight_goes_with_its_last_quantized_reader() {
        let mut g = parse(TWO_LAYERS).unwrap();
        for (i, node) in g.nodes.iter_mut().enumerate() {
            node.name = format!("n{i}");
        }
        let f32_consts = |q: &Graph| {
            (q.nodes.iter())
                .filter(|n| matches!(&n.op, Op::Const(t) if t.dtype() == DType::F32))
                .count()
        };
        let mut all = g.clone();
        assert_eq!(Quantize::new(Scheme::F16).run(&mut all).unwrap().changes, 2);
        kiln_ir::verify(&all).unwrap();
        assert_eq!(f32_consts(&all), 0, "{}", kiln_ir::print(&all));
        let mut one = g.clone();
        let pass = Quantize {
            skip: vec!["n2".into()],
            ..Quantize::new(Scheme::F16)
        };
        assert_eq!(pass.run(&mut one).unwrap().changes, 1);
        kiln_ir::verify(&one).unwrap();
        assert_eq!(f32_consts(&one), 1, "{}", kiln_ir::print(&one));
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let run = |g: &Graph| interp::run(g, std::slice::from_ref(&x)).unwrap()[0].to_f64_vec();
        // The weights are exact in f16, so every variant computes the same.
        assert_eq!(run(&all), run(&g));
        assert_eq!(run(&one), run(&g));
    }

    #[test]
    fn layers_can_be_skipped_or_given_another_scheme() {
        let mut g = parse(TWO_LAYERS).unwrap();
        for (i, node) in g.nodes.iter_mut().enumerate() {
            node.name = format!("n{i}");
        }
        let names = Quantize::eligible(&g);
        assert_eq!(names, ["n1", "n2"]);
        let attrs = |pass: Quantize| -> Vec<Option<QuantAttrs>> {
            let mut q = g.clone();
            pass.run(&mut q).unwrap();
            let op = |name: &String| {
                let node = q.nodes.iter().find(|n| &n.name == name).unwrap();
                match node.op {
                    Op::QuantLinear(a) => Some(a),
                    _ => None,
                }
            };
            names.iter().map(op).collect()
        };
        let int4 = Scheme::Int4.attrs(Epilogue::default());
        let int8 = Scheme::Int8.attrs(Epilogue::default());
        let mut layers = BTreeMap::new();
        layers.insert(names[0].clone(), Some(Scheme::Int8));
        let promoted = Quantize {
            layers,
            ..Quantize::new(Scheme::Int4)
        };
        assert_eq!(attrs(promoted), [Some(int8), Some(int4)]);
        let skipped = Quantize {
            skip: vec![names[1].clone()],
            ..Quantize::new(Scheme::Int4)
        };
        assert_eq!(attrs(skipped), [Some(int4), None]);
    }

    /// An embedding lookup: int8 rows with a scale each, int4 blocks of 32 with a scale
    /// each, or a half table, close to f32; the table is stored in the small type.
    #[test]
    fn embedding_tables_are_stored_small() {
        let (v, d) = (300usize, 64usize);
        let rows: Vec<String> = (0..v)
            .map(|r| {
                let row: Vec<String> = (0..d)
                    .map(|c| format!("{:?}", ((r * 31 + c * 17) % 101) as f32 / 50.0 - 1.0))
                    .collect();
                format!("[{}]", row.join(", "))
            })
            .collect();
        let text = format!(
            "graph @emb(%i: i64[2, 3]) -> f32[2, 3, {d}] {{
                %t = const f32[{v}, {d}] [{}]
                %y = gather %i, %t {{axis=0}}
                return %y
            }}",
            rows.join(", ")
        );
        // `gather` takes the table first; the parser orders operands as written.
        let text = text.replace("gather %i, %t", "gather %t, %i");
        let f32_graph = parse(&text).unwrap();
        let idx = Tensor::from_vec(vec![0i64, 5, 299, 17, 5, 123], &[2, 3]).unwrap();
        let run = |g: &Graph| interp::run(g, std::slice::from_ref(&idx)).unwrap()[0].to_f64_vec();
        let want = run(&f32_graph);
        for (scheme, stored, tol) in [
            (Scheme::Int8, DType::I8, 1.0 / 127.0),
            // A step of a block whose extreme is at most 1 in magnitude (1/8): half a step
            // but at the end opposite the extreme, where level 8 is clamped to 7.
            (Scheme::Int4, DType::I8, 1.0 / 8.0 + 1e-6),
            (Scheme::F16, DType::F16, 1e-3),
        ] {
            let mut q = f32_graph.clone();
            assert_eq!(Quantize::new(scheme).run(&mut q).unwrap().changes, 1);
            kiln_ir::verify(&q).unwrap();
            let tables = q.nodes.iter().filter(
                |n| matches!(&n.op, Op::Const(t) if t.dtype() == stored && t.len() == v * d),
            );
            let tables: Vec<&Tensor> = (tables.map(|n| match &n.op {
                Op::Const(t) => t,
                _ => unreachable!("filtered"),
            }))
            .collect();
            assert_eq!(
                tables.len(),
                1,
                "{scheme:?}: the table is not stored as {stored}"
            );
            if scheme == Scheme::Int4 {
                assert_eq!(tables[0].shape(), [v, d / TABLE_BLOCK, TABLE_BLOCK]);
                let levels = tables[0].to_i64_vec();
                assert!(levels.iter().all(|l| (-8..=7).contains(l)));
                assert!(
                    levels.contains(&-8),
                    "the extreme of a block takes level -8"
                );
            }
            for (g, w) in run(&q).iter().zip(&want) {
                assert!((g - w).abs() <= tol, "{scheme:?}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn int4_blocks_round_trip_their_range() {
        let w = [-1.0f32, 0.5, 2.0, 0.0];
        let p = int4_blocks(&w, 4, 1, 32).unwrap();
        // lo -1, hi 2: scale 0.2 (in f16), zero point 5.
        let scale = p.scale.unwrap();
        assert_eq!(scale.dtype(), DType::F16);
        // 0.2 is between two f16 values: the scale is the one above.
        let above = f16::from_bits(f16::from_f32(0.2).to_bits() + 1);
        assert!(f16::from_f32(0.2).to_f32() < 0.2 && above.to_f32() > 0.2);
        assert_eq!(scale.to_f64_vec(), [above.to_f64()]);
        assert_eq!(p.zero_point.unwrap().to_i64_vec(), [5]);
        assert_eq!(p.weight.to_i64_vec(), [0, 7, 15, 5]);
    }

    #[test]
    fn scales_f16_cannot_hold_stay_f32() {
        // A block spanning 1.5e6 (scale 1e5 overflows f16), and one spanning 1.5e-9
        // (scale 1e-10 is below f16's normal range).
        for w in [[0.0f32, 1.5e6], [0.0, 1.5e-9]] {
            let p = int4_blocks(&w, 2, 1, 32).unwrap();
            let scale = p.scale.unwrap();
            assert_eq!(scale.dtype(), DType::F32, "{w:?}");
            let dequant = (p.weight.to_i64_vec()[1] - p.zero_point.unwrap().to_i64_vec()[0]) as f64
                * scale.to_f64_vec()[0];
            assert!(
                (dequant / w[1] as f64 - 1.0).abs() < 1e-6,
                "{w:?}: {dequant}"
            );
        }
    }
}
