//! `dce`: removes nodes none of whose outputs are used.

use crate::rewrite::retain_nodes;
use crate::{Pass, PassError, PassReport};
use kiln_ir::Graph;

/// Dead code elimination: a node is live if a graph output or a live node uses one of its
/// outputs. Graph inputs are kept even when unused (they are the graph's signature).
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, g: &mut Graph) -> Result<PassReport, PassError> {
        let mut live = vec![false; g.values.len()];
        for (_, v) in &g.outputs {
            live[v.index()] = true;
        }
        let mut keep = vec![false; g.nodes.len()];
        for (i, n) in g.nodes.iter().enumerate().rev() {
            if n.outputs.iter().any(|o| live[o.index()]) {
                keep[i] = true;
                n.inputs.iter().for_each(|v| live[v.index()] = true);
            }
        }
        Ok(PassReport::changes(retain_nodes(g, &keep)))
    }
}
