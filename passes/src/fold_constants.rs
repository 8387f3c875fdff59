//! `fold-constants`: evaluates nodes whose inputs are all constants.

use crate::{Pass, PassError, PassReport};
use kiln_ir::interp::eval_op;
use kiln_ir::{Bindings, Graph, Node, Op, Tensor, TensorType};

/// Constant folding: a node whose inputs are all `const` nodes is run through the reference
/// interpreter and replaced by `const` nodes, one per output (same values, same names).
/// Skipped when evaluation fails (the error surfaces at run time instead), when a result
/// would hold more than [`MAX_FOLDED_ELEMENTS`] elements, or when it does not match the
/// recorded type. Nodes without inputs are never folded.
pub struct FoldConstants;

/// Results larger than this many elements stay computed at run time.
pub const MAX_FOLDED_ELEMENTS: usize = 16 << 20;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }

    fn run(&self, g: &mut Graph) -> Result<PassReport, PassError> {
        let mut consts: Vec<Option<Tensor>> = vec![None; g.values.len()];
        let mut nodes = Vec::with_capacity(g.nodes.len());
        let mut changes = 0;
        for n in std::mem::take(&mut g.nodes) {
            if let Op::Const(t) = &n.op {
                consts[n.outputs[0].index()] = Some(t.clone());
            }
            match fold(&n, &consts, &g.values) {
                Some(results) => {
                    changes += 1;
                    for (o, t) in n.outputs.iter().zip(results) {
                        consts[o.index()] = Some(t.clone());
                        nodes.push(Node {
                            name: n.name.clone(),
                            op: Op::Const(t),
                            inputs: vec![],
                            outputs: vec![*o],
                        });
                    }
                }
                None => nodes.push(n),
            }
        }
        g.nodes = nodes;
        Ok(PassReport::changes(changes))
    }
}

/// The node's results, if it can and should be folded.
fn fold(n: &Node, consts: &[Option<Tensor>], types: &[TensorType]) -> Option<Vec<Tensor>> {
    if n.inputs.is_empty() {
        return None;
    }
    let out_types: Vec<&TensorType> = n.outputs.iter().map(|o| &types[o.index()]).collect();
    let small = out_types.iter().all(|t| {
        t.const_shape()
            .is_some_and(|s| s.iter().product::<usize>() <= MAX_FOLDED_ELEMENTS)
    });
    if !small {
        return None;
    }
    let inputs: Vec<Tensor> = n
        .inputs
        .iter()
        .map(|v| consts[v.index()].clone())
        .collect::<Option<_>>()?;
    let results = eval_op(&n.op, &inputs, &Bindings::new()).ok()?;
    let fits = results.len() == out_types.len()
        && results
            .iter()
            .zip(&out_types)
            .all(|(t, ty)| TensorType::fixed(t.dtype(), t.shape()) == **ty);
    fits.then_some(results)
}
