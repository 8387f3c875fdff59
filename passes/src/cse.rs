//! `cse`: merges nodes that apply the same op to the same inputs.

use crate::rewrite::{reroute, retain_nodes};
use crate::{Pass, PassError, PassReport};
use kiln_ir::{dispatch, Elem, Graph, Op, ValueId};
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
        Ok(PassReport::changes(retain_nodes(g, &keep)))
    }
}

/// A hash of a constant's dtype, shape and its first and last [`SAMPLES`] elements (the
/// first only, when they are not contiguous) (FNV-1a); 0 for other ops. Equal keys are then
/// compared in full, so sampling cannot merge different constants; hashing every byte of a
/// model's weights would only cost time. The samples sit at the ends, not spread: a weight
/// still mapped from its file faults in a page or two here, not every page it has.
fn fingerprint(op: &Op) -> u64 {
    let Op::Const(t) = op else { return 0 };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    t.dtype().name().bytes().for_each(|b| eat(u64::from(b)));
    t.shape().iter().for_each(|&d| eat(d as u64));
    dispatch!(t, a => match a.as_slice() {
        Some(s) => {
            // The tail starts after the head, so a short constant is hashed once.
            let head = s.len().min(SAMPLES);
            let tail = s.len().saturating_sub(SAMPLES).max(head);
            s[..head].iter().chain(&s[tail..]).for_each(|x| eat(x.bits()))
        }
        None => a.iter().take(SAMPLES).for_each(|x| eat(x.bits())),
    });
    h
}

/// How many elements from each end of a constant [`fingerprint`] hashes.
const SAMPLES: usize = 32;
