//! The printer: a graph as text, one node per line, with typed attributes.

use super::cursor::{name_text, quote};
use super::literal::print_tensor;
use crate::{Dim, Graph, Op, PoolKind, TensorType, ValueId};
use std::collections::HashMap;
use std::fmt::Write;

/// Prints a graph; see [`crate::parse`] for the grammar.
pub(super) fn print_graph(g: &Graph) -> String {
    let names: HashMap<ValueId, String> = g
        .inputs
        .iter()
        .map(|(n, v)| (*v, format!("%{}", name_text(n))))
        .collect();
    let val = |v: ValueId| {
        names
            .get(&v)
            .cloned()
            .unwrap_or_else(|| format!("%{}", v.0))
    };
    let ty = |v: ValueId| {
        g.values
            .get(v.index())
            .map_or_else(|| "?".to_string(), TensorType::to_string)
    };
    let params: Vec<String> = g
        .inputs
        .iter()
        .map(|(_, v)| format!("{}: {}", val(*v), ty(*v)))
        .collect();
    let results: Vec<String> = g
        .outputs
        .iter()
        .map(|(n, v)| format!("%{}: {}", name_text(n), ty(*v)))
        .collect();
    let mut out = format!(
        "graph @{}({}) -> ({}) {{\n",
        name_text(&g.name),
        params.join(", "),
        results.join(", ")
    );
    for n in &g.nodes {
        let defs: Vec<String> = n.outputs.iter().map(|v| val(*v)).collect();
        let mut line = format!("    {} = {}", defs.join(", "), n.op.name());
        let uses: Vec<String> = n.inputs.iter().map(|v| val(*v)).collect();
        if !uses.is_empty() {
            let _ = write!(line, " {}", uses.join(", "));
        }
        let out_types: Vec<TensorType> = n
            .outputs
            .iter()
            .map(|v| g.values[v.index()].clone())
            .collect();
        let implied = match &n.op {
            Op::Const(t) => {
                let _ = write!(line, " {}", print_tensor(t));
                vec![TensorType::fixed(t.dtype(), t.shape())]
            }
            op => {
                let a = attrs(op);
                if !a.is_empty() {
                    let _ = write!(line, " {{{}}}", a.join(", "));
                }
                Vec::new()
            }
        };
        if out_types != implied {
            let ts: Vec<String> = out_types.iter().map(TensorType::to_string).collect();
            let _ = write!(line, " : {}", ts.join(", "));
        }
        if !n.name.is_empty() {
            let _ = write!(line, "  {}", quote(&n.name));
        }
        out.push_str(&line);
        out.push('\n');
    }
    let rets: Vec<String> = g.outputs.iter().map(|(_, v)| val(*v)).collect();
    if rets.is_empty() {
        out.push_str("    return\n");
    } else {
        let _ = writeln!(out, "    return {}", rets.join(", "));
    }
    out.push_str("}\n");
    out
}

fn list<T: ToString>(xs: &[T]) -> String {
    let items: Vec<String> = xs.iter().map(T::to_string).collect();
    format!("[{}]", items.join(", "))
}

fn pairs<T: std::fmt::Display>(xs: &[(T, T)]) -> String {
    let items: Vec<String> = xs.iter().map(|(a, b)| format!("({a}, {b})")).collect();
    format!("[{}]", items.join(", "))
}

fn dims(ds: &[Dim]) -> String {
    list(ds)
}

fn epilogue(e: &crate::Epilogue) -> Vec<String> {
    vec![
        kv("bias", e.bias),
        kv("activation", e.activation.map_or("none", |a| a.name())),
        kv("residual", e.residual.map_or("none", |r| r.name())),
    ]
}

fn kv(k: &str, v: impl ToString) -> String {
    format!("{k}={}", v.to_string())
}

/// The `key=value` attributes of an op (those its name does not already say).
pub(super) fn attrs(op: &Op) -> Vec<String> {
    match op {
        Op::Const(_)
        | Op::ShapeOf
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Where
        | Op::MatMul
        | Op::Rotary => {
            vec![]
        }
        Op::ShapeValue { dims: ds, scalar } => vec![kv("dims", dims(ds)), kv("scalar", scalar)],
        Op::Cast { to } | Op::Bitcast { to } => vec![kv("to", to)],
        Op::Reduce {
            kind: _,
            axes,
            keep_dims,
        } => vec![kv("axes", list(axes)), kv("keep_dims", keep_dims)],
        Op::ArgReduce {
            kind: _,
            axis,
            keep_dims,
            select_last,
        } => vec![
            kv("axis", axis),
            kv("keep_dims", keep_dims),
            kv("select_last", select_last),
        ],
        Op::Softmax { axis, log: _ } => vec![kv("axis", axis)],
        // `{:?}` is the shortest text that parses back to the same f32.
        Op::LayerNorm { epsilon } | Op::RmsNorm { epsilon } => {
            vec![kv("epsilon", format!("{epsilon:?}"))]
        }
        Op::Attention(a) => vec![
            kv("scale", format!("{:?}", a.scale)),
            kv("mask", a.mask.name()),
            kv("rows", a.rows.name()),
        ],
        // Every part is written, `none` for a missing one, so the inputs can be read off.
        Op::Linear(e) => epilogue(e),
        Op::QuantLinear(q) => {
            let mut v = vec![kv("weights", q.weights.name())];
            if let crate::WeightQuant::Int4 { block, zero_points } = q.weights {
                v.push(kv("block", block.rows()));
                v.push(kv("zero_points", zero_points));
            }
            v.push(kv("activations", q.activations.name()));
            v.extend(epilogue(&q.epilogue));
            v
        }
        Op::Conv(c) => vec![
            kv("strides", list(&c.strides)),
            kv("dilations", list(&c.dilations)),
            kv("pads", pairs(&c.pads)),
            kv("groups", c.groups),
        ],
        Op::ConvTranspose(c) => vec![
            kv("strides", list(&c.strides)),
            kv("dilations", list(&c.dilations)),
            kv("pads", pairs(&c.pads)),
            kv("output_padding", list(&c.output_padding)),
            kv("groups", c.groups),
        ],
        Op::Pool(p) => {
            let mut a = vec![
                kv("kernel", list(&p.kernel)),
                kv("strides", list(&p.strides)),
                kv("dilations", list(&p.dilations)),
                kv("pads", pairs(&p.pads)),
                kv("ceil_mode", p.ceil_mode),
            ];
            match p.kind {
                PoolKind::Max => {}
                PoolKind::Avg { count_include_pad } => {
                    a.push(kv("count_include_pad", count_include_pad))
                }
                PoolKind::Lp { p } => a.push(kv("p", p)),
            }
            a
        }
        Op::Reshape { shape } | Op::Expand { shape } => vec![kv("shape", dims(shape))],
        Op::Transpose { perm } => vec![kv("perm", list(perm))],
        Op::Slice { axes } => vec![
            kv(
                "axes",
                list(&axes.iter().map(|a| a.axis).collect::<Vec<_>>()),
            ),
            kv(
                "starts",
                dims(&axes.iter().map(|a| a.start.clone()).collect::<Vec<_>>()),
            ),
            kv(
                "ends",
                dims(&axes.iter().map(|a| a.end.clone()).collect::<Vec<_>>()),
            ),
            kv(
                "steps",
                list(&axes.iter().map(|a| a.step).collect::<Vec<_>>()),
            ),
        ],
        Op::Concat { axis } | Op::Gather { axis } | Op::GatherElements { axis } => {
            vec![kv("axis", axis)]
        }
        Op::Pad { pads: p, mode } => vec![kv("pads", pairs(p)), kv("mode", mode.name())],
        Op::GatherNd { batch_dims } => vec![kv("batch_dims", batch_dims)],
        Op::ScatterElements { axis, reduction } => {
            vec![kv("axis", axis), kv("reduction", reduction.name())]
        }
        Op::ScatterNd { reduction } => vec![kv("reduction", reduction.name())],
        Op::Range { len } => vec![kv("len", len)],
        Op::Trilu { upper, k } => vec![kv("upper", upper), kv("k", k)],
        Op::Scan {
            kind: _,
            axis,
            exclusive,
            reverse,
        } => vec![
            kv("axis", axis),
            kv("exclusive", exclusive),
            kv("reverse", reverse),
        ],
        Op::TopK {
            axis,
            k,
            largest,
            sorted,
        } => vec![
            kv("axis", axis),
            kv("k", k),
            kv("largest", largest),
            kv("sorted", sorted),
        ],
        Op::OneHot { axis, depth } => vec![kv("axis", axis), kv("depth", depth)],
        Op::NonZero { count } => vec![kv("count", name_text(count))],
        Op::Einsum(spec) => {
            let ins: Vec<String> = spec.inputs.iter().map(|l| l.iter().collect()).collect();
            let eq = format!(
                "{}->{}",
                ins.join(","),
                spec.output.iter().collect::<String>()
            );
            vec![kv("equation", quote(&eq))]
        }
    }
}
