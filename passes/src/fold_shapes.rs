//! `fold-shapes`: replaces shape computations by `shape_value` or `const` nodes.

mod eval;

use crate::{Pass, PassError, PassReport};
use eval::Content;
use kiln_ir::{infer, Graph, Op};

/// Shape folding. `shape_of` of a typed value becomes its dims; integer arithmetic,
/// gathers, slices, concatenations, casts and reshapes over such dims are evaluated on the
/// symbolic [`kiln_ir::Dim`]s; the result is a `shape_value` node, or a `const` once every
/// dim is a constant. A `shape_value` with constant dims becomes a `const`.
pub struct FoldShapes;

impl Pass for FoldShapes {
    fn name(&self) -> &'static str {
        "fold-shapes"
    }

    fn run(&self, g: &mut Graph) -> Result<PassReport, PassError> {
        let mut known: Vec<Option<Content>> = vec![None; g.values.len()];
        let mut changes = 0;
        for i in 0..g.nodes.len() {
            let n = &g.nodes[i];
            let content = match &n.op {
                Op::Const(t) => Some(Content::Tensor(t.clone())),
                Op::ShapeValue { dims, scalar } => Some(Content::dims(dims.clone(), *scalar)),
                op if n.outputs.len() == 1 => {
                    let args: Vec<eval::Arg> = n
                        .inputs
                        .iter()
                        .map(|v| eval::Arg {
                            content: known[v.index()].as_ref(),
                            ty: g.value_type(*v),
                        })
                        .collect();
                    eval::eval(op, &args)
                }
                _ => None,
            };
            let Some(content) = content else { continue };
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
        Ok(PassReport { changes })
    }
}
