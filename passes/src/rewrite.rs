//! Small graph edits shared by the passes: rerouting uses and dropping nodes.

use kiln_ir::{Graph, ValueId};

/// Redirects every use (node inputs and graph outputs) of a value `v` to `map[v]`.
pub(crate) fn reroute(g: &mut Graph, map: &[ValueId]) {
    for n in &mut g.nodes {
        n.inputs.iter_mut().for_each(|v| *v = map[v.index()]);
    }
    for (_, v) in &mut g.outputs {
        *v = map[v.index()];
    }
}

/// Keeps the nodes whose `keep` flag is set, then renumbers values. Returns how many
/// nodes were dropped. The dropped nodes' outputs must have no uses left.
pub(crate) fn retain_nodes(g: &mut Graph, keep: &[bool]) -> usize {
    let before = g.nodes.len();
    let mut i = 0;
    g.nodes.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    let removed = before - g.nodes.len();
    if removed > 0 {
        g.compact();
    }
    removed
}
