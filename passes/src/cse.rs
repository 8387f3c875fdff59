//! `cse`: merges nodes that apply the same op to the same inputs.

use crate::rewrite::{reroute, retain_nodes};
use crate::{Pass, PassError, PassReport};
use kiln_ir::{Graph, Op, ValueId};
use std::collections::BTreeMap;

/// Common subexpression elimination. Two nodes are the same when their ops are equal
/// (constants compared by value, bitwise) and their inputs are the same values after
/// earlier merges. The first node in graph order is kept; its name stays.
pub struct Cse;

/// What candidates are bucketed by; equal keys are then compared op by op.
type Key = (String, Vec<ValueId>, u64);

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn run(&self, g: &mut Graph) -> Result<PassReport, PassError> {
        let mut map: Vec<ValueId> = (0..g.values.len() as u32).map(ValueId).collect();
        let mut seen: BTreeMap<Key, Vec<usize>> = BTreeMap::new();
        let mut keep = Vec::with_capacity(g.nodes.len());
        for i in 0..g.nodes.len() {
            let inputs: Vec<ValueId> = g.nodes[i].inputs.iter().map(|v| map[v.index()]).collect();
            g.nodes[i].inputs.clone_from(&inputs);
            let key = (g.nodes[i].op.name(), inputs, fingerprint(&g.nodes[i].op));
            let bucket = seen.entry(key).or_default();
            match bucket.iter().find(|&&j| g.nodes[j].op == g.nodes[i].op) {
                Some(&j) => {
                    for (o, kept) in g.nodes[i].outputs.iter().zip(&g.nodes[j].outputs) {
                        map[o.index()] = *kept;
                    }
                    keep.push(false);
                }
                None => {
                    bucket.push(i);
                    keep.push(true);
                }
            }
        }
        reroute(g, &map);
        Ok(PassReport {
            changes: retain_nodes(g, &keep),
        })
    }
}

/// A hash of a constant's dtype, shape and bytes (FNV-1a), so that equal-looking constants
/// are compared in full only when they probably match; 0 for other ops.
fn fingerprint(op: &Op) -> u64 {
    let Op::Const(t) = op else { return 0 };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    t.dtype().name().bytes().for_each(&mut eat);
    t.shape()
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .for_each(&mut eat);
    t.to_le_bytes().into_iter().for_each(&mut eat);
    h
}
