//! `fold-shapes`: replaces shape computations by `shape_value` or `const` nodes.
//!
//! The evaluation itself is [`kiln_ir::shape_eval`], the same one the frontend folds with at
//! import, so a shape subgraph folds the same way whether it came from ONNX or from text.

use crate::{Pass, PassError, PassReport};
use kiln_ir::shape_eval::{self, Arg, Known};
use kiln_ir::{infer, Graph, Node, Op};

/// Shape folding. `shape_of` of a typed value becomes its dims; integer arithmetic,
/// gathers, slices, concatenations, casts and reshapes over such dims are evaluated on the
/// symbolic [`kiln_ir::Dim`]s; the result is a `shape_value` node, or a `const` once every
/// dim is a constant. A `shape_value` with constant dims becomes a `const`. Work whose
/// operands are all concrete tensors is left to `fold-constants`.
pub struct FoldShapes;

impl Pass for FoldShapes {
    fn name(&self) -> &'static str {
        "fold-shapes"
    }

    fn run(&self, g: &mut Graph) -> Result<PassReport, PassError> {
        let mut known: Vec<Option<Known>> = vec![None; g.values.len()];
        let mut changes = 0;
        for i in 0..g.nodes.len() {
            let Some(content) = evaluate(g, &g.nodes[i], &known) else {
                continue;
            };
            let out = g.nodes[i].outputs[0];
            let op = content.to_op();
            let fits = infer(&op, &[]).is_ok_and(|t| t[0] == *g.value_type(out));
            if fits && op != g.nodes[i].op {
                g.nodes[i].op = op;
                g.nodes[i].inputs.clear();
                changes += 1;
            }
            known[out.index()] = Some(content);
        }
        Ok(PassReport::changes(changes))
    }
}

/// The content of a single-output node's value, when it is known: constants and shape
/// values as they are, `shape_of` always, other ops only over at least one symbolic operand.
fn evaluate(g: &Graph, n: &Node, known: &[Option<Known>]) -> Option<Known> {
    match &n.op {
        Op::Const(t) => return Some(Known::Tensor(t.clone())),
        Op::ShapeValue { dims, scalar } => return Some(Known::dims(dims.clone(), *scalar)),
        _ if n.outputs.len() != 1 => return None,
        Op::ShapeOf => {}
        _ => {
            let symbolic = n
                .inputs
                .iter()
                .any(|v| matches!(known[v.index()], Some(Known::Dims { .. })));
            if !symbolic {
                return None;
            }
        }
    }
    let args: Vec<Arg<'_>> = n
        .inputs
        .iter()
        .map(|v| match &known[v.index()] {
            Some(k) => Arg::Known(k),
            None => Arg::Type(g.value_type(*v)),
        })
        .collect();
    shape_eval::eval(&n.op, &args)?.into_iter().next()
}
