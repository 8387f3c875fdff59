//! Drawings of a graph for people: Graphviz DOT text, and a self-contained SVG (or an HTML
//! page around it) laid out by kiln itself in layers, so no Graphviz is needed to open one.
//! Constants are left out; each fused node is highlighted and lists, on hover, the source
//! (ONNX) nodes it came from.
//!
//! ```
//! use std::collections::BTreeMap;
//! let g = kiln::ir::parse("graph @g(%x: f32[4]) -> f32[4] {\n  %y = relu %x\n  return %y\n}").unwrap();
//! let dot = kiln::draw::dot(&g, &BTreeMap::new());
//! assert!(dot.starts_with("digraph \"g\" {") && dot.contains("Relu"));
//! assert!(kiln::draw::svg(&g, &BTreeMap::new()).starts_with("<svg"));
//! ```

use kiln_ir::{Graph, Op};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Source node names of each fused node, by the fused node's name.
pub type Provenance = BTreeMap<String, Vec<String>>;

/// One box of a drawing.
struct Item {
    label: String,
    tooltip: Option<String>,
    input: bool,
    fused: bool,
}

/// The drawable items (graph inputs, then non-constant nodes) and edges between them.
fn items(g: &Graph, prov: &Provenance) -> (Vec<Item>, Vec<(usize, usize)>) {
    let mut items = Vec::new();
    let mut producer: BTreeMap<usize, usize> = BTreeMap::new();
    for (name, v) in &g.inputs {
        producer.insert(v.index(), items.len());
        let label = format!("{name}\n{}", g.value_type(*v));
        items.push(Item {
            label,
            tooltip: None,
            input: true,
            fused: false,
        });
    }
    let mut edges = Vec::new();
    for node in &g.nodes {
        if matches!(node.op, Op::Const(_)) {
            continue;
        }
        let me = items.len();
        for input in &node.inputs {
            if let Some(&from) = producer.get(&input.index()) {
                edges.push((from, me));
            }
        }
        for out in &node.outputs {
            producer.insert(out.index(), me);
        }
        let ty = node
            .outputs
            .first()
            .map(|v| g.value_type(*v).to_string())
            .unwrap_or_default();
        let tooltip = prov
            .get(&node.name)
            .map(|s| format!("{} from: {}", node.name, s.join(", ")));
        items.push(Item {
            label: format!("{}\n{ty}", node.op.kind_name()),
            tooltip: tooltip.or_else(|| (!node.name.is_empty()).then(|| node.name.clone())),
            input: false,
            fused: prov.contains_key(&node.name),
        });
    }
    edges.sort();
    edges.dedup();
    (items, edges)
}

/// The graph in Graphviz DOT.
pub fn dot(g: &Graph, prov: &Provenance) -> String {
    let (items, edges) = items(g, prov);
    let mut out = format!(
        "digraph {:?} {{\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n",
        g.name
    );
    for (i, it) in items.iter().enumerate() {
        let mut attrs = vec![format!("label={:?}", it.label)];
        if it.input {
            attrs.push("shape=ellipse".into());
        }
        if it.fused {
            attrs.push("style=filled, fillcolor=\"#ffd27f\"".into());
        }
        if let Some(t) = &it.tooltip {
            attrs.push(format!("tooltip={t:?}"));
        }
        let _ = writeln!(out, "  n{i} [{}];", attrs.join(", "));
    }
    for (a, b) in edges {
        let _ = writeln!(out, "  n{a} -> n{b};");
    }
    out.push_str("}\n");
    out
}

const BOX_W: f64 = 170.0;
const BOX_H: f64 = 38.0;
const GAP_X: f64 = 24.0;
const GAP_Y: f64 = 34.0;

/// Layers: each item one below the deepest item it reads.
fn layers(n: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut layer = vec![0usize; n];
    // Edges go from earlier to later items (graph order is topological).
    for &(a, b) in edges {
        layer[b] = layer[b].max(layer[a] + 1);
    }
    layer
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The graph as a self-contained SVG document.
pub fn svg(g: &Graph, prov: &Provenance) -> String {
    let (items, edges) = items(g, prov);
    let layer = layers(items.len(), &edges);
    let mut column = vec![0usize; items.len()];
    let mut used: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, l) in layer.iter().enumerate() {
        let c = used.entry(*l).or_insert(0);
        column[i] = *c;
        *c += 1;
    }
    let width = used.values().max().copied().unwrap_or(1) as f64 * (BOX_W + GAP_X) + GAP_X;
    let height = used.len() as f64 * (BOX_H + GAP_Y) + GAP_Y;
    let pos = |i: usize| {
        (
            GAP_X + column[i] as f64 * (BOX_W + GAP_X),
            GAP_Y + layer[i] as f64 * (BOX_H + GAP_Y),
        )
    };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 8 8\" refX=\"8\" refY=\"4\" markerWidth=\"6\" \
         markerHeight=\"6\" orient=\"auto\"><path d=\"M0,0 L8,4 L0,8 z\" fill=\"#555\"/></marker></defs>\n"
    );
    for &(a, b) in &edges {
        let ((ax, ay), (bx, by)) = (pos(a), pos(b));
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{by:.1}\" stroke=\"#999\" marker-end=\"url(#arrow)\"/>",
            ax + BOX_W / 2.0,
            ay + BOX_H,
            bx + BOX_W / 2.0
        );
    }
    for (i, it) in items.iter().enumerate() {
        let (x, y) = pos(i);
        let fill = match (it.input, it.fused) {
            (true, _) => "#dfefff",
            (_, true) => "#ffd27f",
            _ => "#f4f4f4",
        };
        let mut lines = it.label.lines();
        let (head, ty) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
        let title = it
            .tooltip
            .as_deref()
            .map(|t| format!("<title>{}</title>", escape(t)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<g>{title}<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"5\" \
             fill=\"{fill}\" stroke=\"#666\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
             font-weight=\"bold\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
             fill=\"#444\">{}</text></g>",
            x + BOX_W / 2.0,
            y + 15.0,
            escape(head),
            x + BOX_W / 2.0,
            y + 30.0,
            escape(ty)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// A self-contained HTML page: the SVG drawing and a table of the fused kernels.
pub fn html(g: &Graph, prov: &Provenance) -> String {
    let mut rows = String::new();
    for (name, sources) in prov {
        let op = g
            .nodes
            .iter()
            .find(|n| &n.name == name)
            .map(|n| n.op.kind_name())
            .unwrap_or_default();
        let _ = writeln!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&op),
            escape(name),
            escape(&sources.join(", "))
        );
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{name}</title><style>\
         body{{font-family:Helvetica,Arial,sans-serif;margin:1em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:3px 6px;font-size:12px;text-align:left}}</style></head>\n\
         <body><h1>{name}</h1><p>{nodes} nodes; {fused} fused kernels (highlighted; hover a box for \
         its source nodes).</p>\n<table><tr><th>op</th><th>node</th><th>source nodes</th></tr>\n\
         {rows}</table>\n<div>{svg}</div></body></html>\n",
        name = escape(&g.name),
        nodes = g.nodes.len(),
        fused = prov.len(),
        svg = svg(g, prov)
    )
}
