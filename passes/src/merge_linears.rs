//! `merge-linears`: projections of the same input by constant weights (attention's Q, K and
//! V) become one product over the concatenated weights, followed by a slice per original
//! projection. One GEMM with a wider N reads `x` once and keeps the micro-kernels busier
//! than three narrow ones.
//!
//! It is a graph pass after `fuse` rather than an e-graph rule because `fuse`'s extraction
//! costs each class on its own, so it would never choose a merged product whose work three
//! classes share.

use crate::rewrite::reroute;
use crate::{Pass, PassError, PassReport};
use kiln_ir::{interp, Bindings, DType, Dim, Epilogue, Graph, Op, SliceAxis, Tensor, ValueId};
use std::collections::{BTreeMap, HashMap};

/// The merge pass; see the module docs.
///
/// ```
/// use kiln_passes::{MergeLinears, Pass};
/// let mut g = kiln_ir::parse(
///     "graph @qk(%x: f32[2, 3]) -> (f32[2, 1], f32[2, 2]) {
///         %wq = const f32[3, 1] [[1.0], [2.0], [3.0]]
///         %wk = const f32[3, 2] [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
///         %q = matmul %x, %wq
///         %k = matmul %x, %wk
///         return %q, %k
///     }",
/// )
/// .unwrap();
/// MergeLinears.run(&mut g).unwrap();
/// let ops: Vec<String> = g.nodes.iter().map(|n| n.op.name()).collect();
/// assert!(ops.iter().filter(|o| *o == "matmul").count() == 1, "{ops:?}");
/// assert_eq!(ops.iter().filter(|o| *o == "slice").count(), 2);
/// ```
pub struct MergeLinears;

/// A projection that can join a merge.
struct Projection {
    node: usize,
    weight: Tensor,
    bias: Option<Tensor>,
}

/// Projections merge when they read the same input with the same depth and apply the same
/// epilogue (`None`: a plain matmul).
type Key = (ValueId, usize, Option<Epilogue>);

impl Pass for MergeLinears {
    fn name(&self) -> &'static str {
        "merge-linears"
    }

    fn run(&self, g: &mut Graph) -> Result<PassReport, PassError> {
        let groups: Vec<Vec<Projection>> =
            groups(g).into_values().filter(|p| p.len() > 1).collect();
        if groups.is_empty() {
            return Ok(PassReport::changes(0));
        }
        let first: HashMap<usize, usize> = groups
            .iter()
            .enumerate()
            .map(|(i, p)| (p[0].node, i))
            .collect();
        let merged: Vec<usize> = groups.iter().flatten().map(|p| p.node).collect();
        let old = std::mem::take(&mut g.nodes);
        let mut renamed: Vec<(ValueId, ValueId)> = Vec::new();
        for (i, node) in old.iter().enumerate() {
            if let Some(&k) = first.get(&i) {
                renamed.extend(merge(g, &old, &groups[k])?);
            }
            if !merged.contains(&i) {
                g.nodes.push(node.clone());
            }
        }
        let mut map: Vec<ValueId> = (0..g.values.len() as u32).map(ValueId).collect();
        for (from, to) in renamed {
            map[from.index()] = to;
        }
        reroute(g, &map);
        g.compact();
        Ok(PassReport::changes(groups.len()))
    }
}

/// The mergeable projections of `g` by key, in graph order.
fn groups(g: &Graph) -> BTreeMap<Key, Vec<Projection>> {
    let producers = g.producers();
    let constant = |v: ValueId| match producers[v.index()].map(|n| &g.nodes[n].op) {
        Some(Op::Const(t)) if t.dtype() == DType::F32 => Some(t.clone()),
        _ => None,
    };
    let mut out: BTreeMap<Key, Vec<Projection>> = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let epilogue = match &n.op {
            Op::MatMul => None,
            // A residual is per output element, not per column: it cannot be split.
            Op::Linear(e) if e.residual.is_none() => Some(*e),
            _ => continue,
        };
        let x = n.inputs[0];
        let Some(weight) = constant(n.inputs[1]) else {
            continue;
        };
        if weight.shape().len() != 2 || g.value_type(x).rank() < 2 {
            continue;
        }
        let bias = match epilogue {
            Some(Epilogue { bias: true, .. }) => match constant(n.inputs[2]) {
                Some(b) => Some(b),
                None => continue,
            },
            _ => None,
        };
        let key = (x, weight.shape()[0], epilogue);
        out.entry(key).or_default().push(Projection {
            node: i,
            weight,
            bias,
        });
    }
    out
}

/// Adds the merged product and its slices for `group` to `g`; the (old, new) value pairs.
fn merge(
    g: &mut Graph,
    old: &[kiln_ir::Node],
    group: &[Projection],
) -> Result<Vec<(ValueId, ValueId)>, PassError> {
    let failed = |message: String| PassError::Failed {
        pass: "merge-linears".into(),
        message,
    };
    let concat = |ts: Vec<Tensor>, axis: usize| {
        let t = interp::eval_op(&Op::Concat { axis }, &ts, &Bindings::new());
        t.map(|mut t| t.remove(0))
            .map_err(|e| failed(e.to_string()))
    };
    let first = &old[group[0].node];
    let base = if first.name.is_empty() {
        "linear"
    } else {
        &first.name
    };
    let name = |suffix: &str| format!("{base}.merged{suffix}");
    let add = |g: &mut Graph, name: String, op: Op, inputs: &[ValueId]| {
        g.add_node(name, op, inputs)
            .map(|v| v[0])
            .map_err(|e| failed(e.to_string()))
    };
    let weight = concat(group.iter().map(|p| p.weight.clone()).collect(), 1)?;
    let w = add(g, name(".w"), Op::Const(weight), &[])?;
    let mut inputs = vec![first.inputs[0], w];
    let biases: Option<Vec<Tensor>> = group.iter().map(|p| p.bias.clone()).collect();
    if let Some(b) = biases.filter(|b| !b.is_empty()) {
        inputs.push(add(g, name(".b"), Op::Const(concat(b, 0)?), &[])?);
    }
    let y = add(g, name(""), first.op.clone(), &inputs)?;
    let axis = g.value_type(y).rank() - 1;
    let mut start = 0usize;
    let mut renamed = Vec::new();
    for p in group {
        let n = p.weight.shape()[1];
        let slice = Op::Slice {
            axes: vec![SliceAxis {
                axis,
                start: Dim::from(start),
                end: Dim::from(start + n),
                step: 1,
            }],
        };
        let node = &old[p.node];
        renamed.push((node.outputs[0], add(g, node.name.clone(), slice, &[y])?));
        start += n;
    }
    Ok(renamed)
}
