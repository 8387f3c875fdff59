//! Import rules for quantized files: the node patterns onnxruntime's quantizers write
//! around a linear layer, recognized on the ONNX graph before lowering and imported as one
//! `quant_linear`, so that the layer runs on the integer kernels instead of as its
//! decomposition (an i32 matmul in core ops, or an f32 matmul by a weight dequantized at
//! import).
//!
//! - [`Rule::IntegerMatMul`] (`quantize_dynamic`): `MatMulInteger(a, w, a_zp, w_zp)` →
//!   `Cast(float)` → `Mul(·, Mul(a_scale, w_scale))` is a product by the weight less its
//!   zero point: the same integer product, cast and scale multiplies in the same order,
//!   so it is exact. When `a`, `a_zp` and `a_scale` are one `DynamicQuantizeLinear(x)`'s,
//!   the layer takes `x` and quantizes it as that op does ([`ActQuant::DynamicU8`]); else
//!   it takes `a` ([`ActQuant::Quantized`]).
//! - [`Rule::DequantizedMatMul`] (QDQ): `MatMul(x, DequantizeLinear(w, w_scale, w_zp))`
//!   with a constant `w`. When `x` is itself `DequantizeLinear(q, scale, zp)` with a
//!   constant per-tensor scale and zero point, the product takes `q`'s integers: `q`
//!   itself ([`ActQuant::Quantized`]), or, when `q` is `QuantizeLinear(x', scale, zp)` by
//!   the same constants, `x'` quantized in the layer as that op does
//!   ([`ActQuant::PerTensor`]). The integer product is exact, and the two dequantizing
//!   multiplies round once, as `scale · w_scale`, where the definition rounds each
//!   dequantized operand and each of its f32 products (`tests/quant_import.rs` bounds the
//!   difference). Otherwise the layer is weight-only ([`ActQuant::None`]), exact:
//!   `f32(w - zp) · scale` is the definition's dequantized weight.
//!
//! The rules run on the ONNX graph rather than in the e-graph because the frontend folds a
//! constant `DequantizeLinear` into its f32 values as it imports: the integer weight is
//! visible only here. A pattern whose constants do not fit a kernel format (weights that
//! span more than int8 once their zero point is taken away, per-row weight scales, other
//! element types) is not matched, and its nodes import as their definitions. A pattern's
//! inner nodes are not lowered when every user of theirs is a recognized layer.

use crate::cx::{Cx, Val, R};
use crate::proto::{GraphProto, NodeProto};
use kiln_ir::shape_eval::Known;
use kiln_ir::{ActQuant, Block, DType, Dim, Epilogue, Op, QuantAttrs, Tensor, WeightQuant};
use std::collections::{HashMap, HashSet};

/// A recognized layer, by the ONNX names of its operands.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Rule {
    /// `Mul(Cast(MatMulInteger(a, w, a_zp, w_zp)), Mul(a_scale, w_scale))`; `a` is
    /// [`Activations::Quantized`], or [`Activations::Dynamic`] when all three come from one
    /// `DynamicQuantizeLinear`.
    IntegerMatMul {
        /// The activations.
        a: Activations,
        /// The constant weight.
        w: Weight,
    },
    /// `MatMul(x, DequantizeLinear(w, ...))`.
    DequantizedMatMul {
        /// The activations.
        x: Activations,
        /// The constant weight.
        w: Weight,
    },
}

/// A constant weight `[K, N]` with its scale and zero point, as the rule found them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Weight {
    pub(crate) values: Tensor,
    pub(crate) scale: Tensor,
    pub(crate) zero_point: Option<Tensor>,
    /// `DequantizeLinear`'s `block_size` (0: per tensor or per column).
    pub(crate) block: usize,
}

/// How a recognized layer's activations enter it, by ONNX names.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Activations {
    /// Any f32 value: the layer is weight-only ([`ActQuant::None`]).
    Float(String),
    /// Integers with a per-tensor zero point (absent: 0) and scale: the product takes them
    /// ([`ActQuant::Quantized`]).
    Quantized {
        q: String,
        scale: String,
        zero_point: Option<String>,
    },
    /// `QuantizeLinear(x, scale, zero_point)` of an f32 `x`, dequantized by the same
    /// constants: the layer quantizes `x` itself ([`ActQuant::PerTensor`]).
    PerTensor {
        x: String,
        scale: String,
        zero_point: Option<String>,
    },
    /// `DynamicQuantizeLinear(x)`: the layer quantizes `x` itself ([`ActQuant::DynamicU8`]).
    Dynamic(String),
}

impl Activations {
    /// The scheme.
    fn scheme(&self) -> ActQuant {
        match self {
            Activations::Float(_) => ActQuant::None,
            Activations::Quantized { .. } => ActQuant::Quantized,
            Activations::PerTensor { .. } => ActQuant::PerTensor,
            Activations::Dynamic(_) => ActQuant::DynamicU8,
        }
    }
}

/// The rules that apply to a graph.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// By the index of the node whose output the layer produces (the pattern's last).
    rules: HashMap<usize, (Rule, Vec<usize>)>,
    /// Nodes whose every output feeds only recognized layers: not lowered.
    absorbed: HashSet<usize>,
}

impl Plan {
    /// The rule whose layer node `idx` produces, and the pattern's other nodes.
    pub(crate) fn rule(&self, idx: usize) -> Option<&(Rule, Vec<usize>)> {
        self.rules.get(&idx)
    }

    /// Whether node `idx` is part of recognized layers only.
    pub(crate) fn absorbed(&self, idx: usize) -> bool {
        self.absorbed.contains(&idx)
    }
}

/// What the rules look at: producers, consumers and constants by ONNX name.
struct Index<'g> {
    nodes: &'g [NodeProto],
    producer: HashMap<&'g str, (usize, usize)>,
    consumers: HashMap<&'g str, Vec<usize>>,
    outputs: HashSet<&'g str>,
    constants: &'g HashMap<String, Val>,
}

impl<'g> Index<'g> {
    fn new(graph: &'g GraphProto, constants: &'g HashMap<String, Val>) -> Index<'g> {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for (o, name) in n.output.iter().enumerate() {
                producer.insert(name.as_str(), (i, o));
            }
            for name in &n.input {
                consumers.entry(name.as_str()).or_default().push(i);
            }
        }
        Index {
            nodes: &graph.node,
            producer,
            consumers,
            outputs: graph.output.iter().map(|o| o.name()).collect(),
            constants,
        }
    }

    /// The node that produces `name` as output `output`, if it is of type `op`.
    fn made_by(&self, name: &str, op: &str, output: usize) -> Option<(usize, &'g NodeProto)> {
        let &(i, o) = self.producer.get(name)?;
        let n = &self.nodes[i];
        (n.op_type() == op && n.domain().is_empty() && o == output).then_some((i, n))
    }

    /// The constant tensor called `name` (an initializer).
    fn constant(&self, name: &str) -> Option<&'g Tensor> {
        match self.constants.get(name)? {
            Val::Known(Known::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    /// An optional input that must be constant when present: `Some(None)` when absent,
    /// `None` when it is computed (no rule applies).
    fn optional_constant(&self, name: Option<&str>) -> Option<Option<&'g Tensor>> {
        match name {
            Some(n) => self.constant(n).map(Some),
            None => Some(None),
        }
    }

    /// Whether `name` is a value the graph computes (not a constant).
    fn computed(&self, name: &str) -> bool {
        !name.is_empty() && self.constant(name).is_none()
    }

    /// Node `n`'s input `i`, if present.
    fn input(n: &NodeProto, i: usize) -> Option<&str> {
        n.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
    }

    /// Whether every output of node `i` is used only by nodes in `users` (and is not a
    /// graph output).
    fn feeds_only(&self, i: usize, users: &HashSet<usize>) -> bool {
        self.nodes[i].output.iter().all(|o| {
            !self.outputs.contains(o.as_str())
                && (self.consumers.get(o.as_str()))
                    .is_none_or(|c| c.iter().all(|u| users.contains(u)))
        })
    }
}

/// Finds the layers the rules recognize in `graph`, whose initializers are `constants`.
pub(crate) fn plan(graph: &GraphProto, constants: &HashMap<String, Val>) -> Plan {
    let ix = Index::new(graph, constants);
    let mut found: Vec<(usize, Rule, Vec<usize>)> = Vec::new();
    for (i, n) in graph.node.iter().enumerate() {
        if !n.domain().is_empty() {
            continue;
        }
        let hit = match n.op_type() {
            "Mul" => integer_matmul(&ix, n),
            "MatMul" => dequantized_matmul(&ix, n),
            _ => None,
        };
        if let Some((rule, inner)) = hit {
            found.push((i, rule, inner));
        }
    }
    // An inner node is skipped when each of its users is a recognized layer or a skipped
    // node (a shared activation dequantize feeds several layers, and its quantize feeds
    // it): start from every inner node, and drop those with another user until none has.
    let tails: HashSet<usize> = found.iter().map(|f| f.0).collect();
    let mut absorbed: HashSet<usize> = found.iter().flat_map(|f| f.2.iter().copied()).collect();
    loop {
        let keep: HashSet<usize> = tails.union(&absorbed).copied().collect();
        let before = absorbed.len();
        absorbed.retain(|&j| ix.feeds_only(j, &keep));
        if absorbed.len() == before {
            break;
        }
    }
    let mut plan = Plan {
        absorbed,
        ..Plan::default()
    };
    for (tail, rule, inner) in found {
        plan.rules.insert(tail, (rule, inner));
    }
    plan
}

/// [`Rule::IntegerMatMul`] ending at `mul`, and its inner nodes (MatMulInteger, Cast and
/// the scale multiply).
fn integer_matmul(ix: &Index, mul: &NodeProto) -> Option<(Rule, Vec<usize>)> {
    let [l, r] = [Index::input(mul, 0)?, Index::input(mul, 1)?];
    [(l, r), (r, l)].into_iter().find_map(|(cast, scales)| {
        let (ci, c) = ix.made_by(cast, "Cast", 0)?;
        let to = c
            .attribute
            .iter()
            .find(|a| a.name() == "to")
            .and_then(|a| a.i);
        if to != Some(1) {
            return None;
        }
        let (mi, mm) = ix.made_by(Index::input(c, 0)?, "MatMulInteger", 0)?;
        let (si, s) = ix.made_by(scales, "Mul", 0)?;
        let [s0, s1] = [Index::input(s, 0)?, Index::input(s, 1)?];
        let (a_scale, w_scale) = if ix.computed(s0) { (s0, s1) } else { (s1, s0) };
        let a = Index::input(mm, 0)?;
        let a_zp = Index::input(mm, 2);
        // The activations' zero point and scale must be scalars: a per-row zero point
        // has no kernel. `DynamicQuantizeLinear` makes both; constants are checked.
        let scalar_or_dql = |name: &str, output: usize| match ix.constant(name) {
            Some(t) => t.len() == 1,
            None => ix.made_by(name, "DynamicQuantizeLinear", output).is_some(),
        };
        let scalars = scalar_or_dql(a_scale, 1) && a_zp.is_none_or(|z| scalar_or_dql(z, 2));
        if !ix.computed(a) || !scalars {
            return None;
        }
        let w_zp = ix.optional_constant(Index::input(mm, 3))?;
        let w = int8_weight(
            ix.constant(Index::input(mm, 1)?)?,
            ix.constant(w_scale)?,
            w_zp,
        )?;
        let mut inner = vec![mi, ci, si];
        let a = match dynamic_source(ix, a, a_zp, a_scale) {
            Some((di, x)) => {
                inner.push(di);
                Activations::Dynamic(x.to_string())
            }
            None => Activations::Quantized {
                q: a.to_string(),
                scale: a_scale.to_string(),
                zero_point: a_zp.map(str::to_string),
            },
        };
        Some((Rule::IntegerMatMul { a, w }, inner))
    })
}

/// The `DynamicQuantizeLinear` node (and its f32 input) that makes all of `a`, `a_zp` and
/// `a_scale`, if one does.
fn dynamic_source<'g>(
    ix: &Index<'g>,
    a: &str,
    a_zp: Option<&str>,
    a_scale: &str,
) -> Option<(usize, &'g str)> {
    let (di, dql) = ix.made_by(a, "DynamicQuantizeLinear", 0)?;
    let same = |name: Option<&str>, output: usize| {
        name.is_some_and(|n| {
            ix.made_by(n, "DynamicQuantizeLinear", output).map(|d| d.0) == Some(di)
        })
    };
    (same(a_zp, 2) && same(Some(a_scale), 1)).then(|| Some((di, Index::input(dql, 0)?)))?
}

/// A constant weight of an integer format: int8 per tensor or per column (`[K, N]`, a
/// scalar or `[N]` f32 scale) whose values less their zero point lie in `-127..=127`.
fn int8_weight(w: &Tensor, scale: &Tensor, zp: Option<&Tensor>) -> Option<Weight> {
    let is_byte = |d: DType| matches!(d, DType::U8 | DType::I8);
    if w.rank() != 2 || !is_byte(w.dtype()) {
        return None;
    }
    let (k, n) = (w.shape()[0], w.shape()[1]);
    let per_column = |t: &Tensor| t.len() == 1 && t.rank() <= 1 || t.shape() == [n];
    let scale_fits = scale.dtype() == DType::F32 && per_column(scale);
    let zp_fits = zp.is_none_or(|z| z.dtype() == w.dtype() && per_column(z));
    let k_fits = (1..=kiln_ir::MAX_QUANTIZED_K).contains(&(k as i64)) && n > 0;
    if !scale_fits || !zp_fits || !k_fits {
        return None;
    }
    let zeros = zp.map(Tensor::to_i64_vec);
    let column = |v: &[i64], j: usize| if v.len() == 1 { v[0] } else { v[j] };
    let centered: Vec<i8> = (w.to_i64_vec().into_iter().enumerate())
        .map(|(i, v)| {
            let c = v - zeros.as_ref().map_or(0, |z| column(z, i % n));
            i8::try_from(c).ok().filter(|c| *c >= -127)
        })
        .collect::<Option<_>>()?;
    let scales = scale.to_f64_vec();
    let scale: Vec<f32> = (0..n).map(|j| column_f32(&scales, j)).collect();
    Some(Weight {
        values: Tensor::from_vec(centered, &[k, n]).ok()?,
        scale: Tensor::from_vec(scale, &[n]).ok()?,
        zero_point: None,
        block: 0,
    })
}

/// Column `j` of a per-tensor or per-column f32 parameter (exact through f64).
fn column_f32(v: &[f64], j: usize) -> f32 {
    (if v.len() == 1 { v[0] } else { v[j] }) as f32
}

/// [`Rule::DequantizedMatMul`] ending at `mm`, and its inner nodes (the weight's
/// dequantize, and the activations' when the product takes their integers).
fn dequantized_matmul(ix: &Index, mm: &NodeProto) -> Option<(Rule, Vec<usize>)> {
    let (x, b) = (Index::input(mm, 0)?, Index::input(mm, 1)?);
    let (wi, dq) = ix.made_by(b, "DequantizeLinear", 0)?;
    let w = ix.constant(Index::input(dq, 0)?)?;
    let scale = ix.constant(Index::input(dq, 1)?)?;
    let zp = ix.optional_constant(Index::input(dq, 2))?;
    let attr = |name: &str, default: i64| {
        (dq.attribute.iter().find(|a| a.name() == name))
            .and_then(|a| a.i)
            .unwrap_or(default)
    };
    let (axis, block) = (attr("axis", 1), attr("block_size", 0));
    let weight = match block {
        0 if axis == 1 || axis == -1 || scale.len() == 1 => int8_weight(w, scale, zp)?,
        b if axis == 0 => int4_weight(w, scale, zp, b)?,
        _ => return None,
    };
    let quantized = (weight.block == 0)
        .then(|| quantized_input(ix, x))
        .flatten();
    match quantized {
        Some((nodes, act)) => {
            let rule = Rule::DequantizedMatMul { x: act, w: weight };
            Some((rule, [vec![wi], nodes].concat()))
        }
        None => {
            let rule = Rule::DequantizedMatMul {
                x: Activations::Float(x.to_string()),
                w: weight,
            };
            Some((rule, vec![wi]))
        }
    }
}

/// `x` as `DequantizeLinear(q, scale, zp)` of a computed u8 or i8 `q` with constant
/// per-tensor f32 scale and zero point, and `q` as `QuantizeLinear(x')` by the same
/// constants when it is: the nodes and the activations.
fn quantized_input(ix: &Index, x: &str) -> Option<(Vec<usize>, Activations)> {
    let (xi, dq) = ix.made_by(x, "DequantizeLinear", 0)?;
    let q = Index::input(dq, 0)?;
    let scale = Index::input(dq, 1)?;
    let zp = Index::input(dq, 2);
    let zp_fits = zp.is_none_or(|z| {
        ix.constant(z)
            .is_some_and(|z| matches!(z.dtype(), DType::U8 | DType::I8) && z.len() == 1)
    });
    let scale_fits = ix
        .constant(scale)
        .is_some_and(|s| s.dtype() == DType::F32 && s.len() == 1);
    if !(ix.computed(q) && scale_fits && zp_fits) {
        return None;
    }
    let (scale, zero_point) = (scale.to_string(), zp.map(str::to_string));
    // `QuantizeLinear(x)` by the same constants: the layer can quantize `x` itself.
    let requantized = ix.made_by(q, "QuantizeLinear", 0).and_then(|(qi, qn)| {
        let same = |a: Option<&str>, b: Option<&str>| match (a, b) {
            (Some(a), Some(b)) => {
                a == b || ix.constant(a).is_some_and(|t| ix.constant(b) == Some(t))
            }
            (None, None) => true,
            _ => false,
        };
        let by_same = same(Index::input(qn, 1), Some(&scale))
            && same(Index::input(qn, 2), zero_point.as_deref());
        // Without a zero point, QuantizeLinear's type is its output_dtype (u8 by default).
        let typed = zero_point.is_some() || qn.attribute.iter().all(|a| a.name() != "output_dtype");
        (by_same && typed).then(|| Some((qi, Index::input(qn, 0)?)))?
    });
    let act = match requantized {
        Some((qi, x)) => {
            return Some((
                vec![xi, qi],
                Activations::PerTensor {
                    x: x.to_string(),
                    scale,
                    zero_point,
                },
            ))
        }
        None => Activations::Quantized {
            q: q.to_string(),
            scale,
            zero_point,
        },
    };
    Some((vec![xi], act))
}

/// A constant weight in int4 blocks along K (opset 21 `block_size` 32, 64 or 128 on axis
/// 0): values in `-8..=7` without zero points, or u8 in `0..=15` with u8 zero points in
/// `0..=15`, and f32 scales `[⌈K/block⌉, N]`.
fn int4_weight(w: &Tensor, scale: &Tensor, zp: Option<&Tensor>, block: i64) -> Option<Weight> {
    let rows = Block::from_rows(usize::try_from(block).ok()?)?.rows();
    if w.rank() != 2 {
        return None;
    }
    let (k, n) = (w.shape()[0], w.shape()[1]);
    let params = [k.div_ceil(rows), n];
    if scale.dtype() != DType::F32 || scale.shape() != params {
        return None;
    }
    let values = w.to_i64_vec();
    let within = |v: &[i64], lo, hi| v.iter().all(|x| (lo..=hi).contains(x));
    match (w.dtype(), zp) {
        (DType::I8, None) if within(&values, -8, 7) => {}
        (DType::U8, Some(z))
            if z.dtype() == DType::U8
                && z.shape() == params
                && within(&values, 0, 15)
                && within(&z.to_i64_vec(), 0, 15) => {}
        _ => return None,
    }
    Some(Weight {
        values: w.clone(),
        scale: scale.clone(),
        zero_point: zp.cloned(),
        block: rows,
    })
}

/// Imports the layer `rule` describes as node `cx.ctx.node`'s output; `None` when its
/// run-time operands do not fit after all (then the pattern imports node by node).
pub(crate) fn lower(cx: &mut Cx, vals: &HashMap<String, Val>, rule: &Rule) -> R<Option<Val>> {
    let get = |name: &str| {
        vals.get(name)
            .cloned()
            .ok_or_else(|| cx.err(format!("input `{name}` is not defined before use")))
    };
    let (act, w) = match rule {
        Rule::IntegerMatMul { a, w } => (a, w),
        Rule::DequantizedMatMul { x, w } => (x, w),
    };
    let (x, params) = match act {
        Activations::Float(x) | Activations::Dynamic(x) => (get(x)?, None),
        Activations::Quantized {
            q: x,
            scale,
            zero_point,
        }
        | Activations::PerTensor {
            x,
            scale,
            zero_point,
        } => {
            let x = get(x)?;
            let zp = match zero_point {
                Some(z) => get(z)?,
                // QuantizeLinear's default type, and the integers' own.
                None if act.scheme() == ActQuant::PerTensor => cx.scalar(DType::U8, 0.0),
                None => cx.scalar(cx.dtype(&x), 0.0),
            };
            (x, Some((zp, get(scale)?)))
        }
    };
    let k = w.values.shape()[0] as i64;
    let rank = cx.rank(&x);
    let fits_x = rank >= 2 && cx.ty(&x).shape[rank - 1].as_const() == Some(k);
    let fits_type = match act.scheme() {
        ActQuant::Quantized => matches!(cx.dtype(&x), DType::U8 | DType::I8),
        _ => cx.dtype(&x) == DType::F32,
    };
    if !fits_x || !fits_type {
        return Ok(None);
    }
    let weights = match w.block {
        0 => WeightQuant::Int8,
        rows => WeightQuant::Int4 {
            block: Block::from_rows(rows).ok_or_else(|| cx.err("an int4 block size"))?,
            zero_points: w.zero_point.is_some(),
        },
    };
    let attrs = QuantAttrs {
        weights,
        activations: act.scheme(),
        epilogue: Epilogue::default(),
    };
    let mut args = vec![
        x,
        Val::tensor(w.values.clone()),
        Val::tensor(w.scale.clone()),
    ];
    args.extend(w.zero_point.clone().map(Val::tensor));
    if let Some((zp, scale)) = params {
        args.push(cx.reshape("zero_point", &zp, Vec::<Dim>::new())?);
        args.push(cx.reshape("scale", &scale, Vec::<Dim>::new())?);
    }
    let refs: Vec<&Val> = args.iter().collect();
    Ok(Some(cx.emit1("", Op::QuantLinear(attrs), &refs)?))
}
