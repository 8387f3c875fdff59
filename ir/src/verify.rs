//! The verifier: checks a graph's invariants.
//!
//! Invariants checked, in this order:
//! 1. Graph input names are unique, and so are graph output names.
//! 2. Values are numbered in order of definition: the graph inputs are `%0..%n` in order,
//!    then each node's outputs take the next ids in order. Hence every value is defined
//!    exactly once (SSA).
//! 3. Each node has `Op::num_outputs` outputs and as many inputs as `input_arity` allows
//!    (Const 0, Unary 1, Binary 2, Where 3, Concat at least 1, Einsum one per label list…).
//! 4. Every node input is defined before the node (graph input or earlier node output), so
//!    the nodes are in topological order.
//! 5. Every node's recorded output types equal `infer` of its input types; for `Const` this
//!    means the tensor matches its declared type.
//! 6. `values` holds exactly the defined values: none is left without a definition.
//! 7. Graph outputs refer to defined values.
//!
//! Not checked yet: that symbols introduced by `NonZero` are fresh (not used by inputs or
//! another `NonZero`); that symbols in attributes (`Reshape`, `ShapeValue`…) are bound by
//! the graph inputs or by a `NonZero`; runtime facts such as index ranges.
//!
//! Errors name the node by its first output value, its provenance name and its op:
//! `node %12 "/layer.0/MatMul" (matmul): contraction dims differ (3 vs 4)`.

use crate::{infer, input_arity, Graph, Node, TensorType};
use std::collections::BTreeSet;

/// A broken invariant, naming the node.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct VerifyError {
    /// Index of the offending node, if one.
    pub node: Option<usize>,
    /// What is wrong, naming the node.
    pub message: String,
}

/// Checks the graph's invariants (listed in the module docs).
pub fn verify(g: &Graph) -> Result<(), VerifyError> {
    unique_names(&g.inputs, "input")?;
    unique_names(&g.outputs, "output")?;
    let mut next: u32 = 0;
    for (name, v) in &g.inputs {
        if v.0 != next {
            return Err(graph_err(format!(
                "graph input `{name}` is %{}, expected %{next} (values are numbered in definition order)",
                v.0
            )));
        }
        next += 1;
    }
    for (i, n) in g.nodes.iter().enumerate() {
        verify_node(g, n, &mut next).map_err(|message| VerifyError {
            node: Some(i),
            message: format!("{}: {message}", describe(i, n)),
        })?;
    }
    if next as usize != g.values.len() {
        return Err(graph_err(format!(
            "graph has {} values but defines {next}: values %{next}.. have no definition",
            g.values.len()
        )));
    }
    for (name, v) in &g.outputs {
        if v.0 >= next {
            return Err(graph_err(format!(
                "graph output `{name}` refers to undefined value %{}",
                v.0
            )));
        }
    }
    Ok(())
}

/// `node %12 "name" (matmul)`, or `node #3 (matmul)` for a node without outputs.
fn describe(index: usize, n: &Node) -> String {
    let id = match n.outputs.first() {
        Some(v) => format!("%{}", v.0),
        None => format!("#{index}"),
    };
    if n.name.is_empty() {
        format!("node {id} ({})", n.op.name())
    } else {
        format!("node {id} {:?} ({})", n.name, n.op.name())
    }
}

fn graph_err(message: String) -> VerifyError {
    VerifyError {
        node: None,
        message,
    }
}

fn unique_names(list: &[(String, crate::ValueId)], what: &str) -> Result<(), VerifyError> {
    let mut seen = BTreeSet::new();
    for (name, _) in list {
        if !seen.insert(name.as_str()) {
            return Err(graph_err(format!(
                "graph {what} name `{name}` is used twice"
            )));
        }
    }
    Ok(())
}

/// Invariants 2 to 5 for one node; `next` is the first value id the node must define.
fn verify_node(g: &Graph, n: &Node, next: &mut u32) -> Result<(), String> {
    let first = *next;
    if n.outputs.len() != n.op.num_outputs() {
        return Err(format!(
            "has {} outputs, expected {}",
            n.outputs.len(),
            n.op.num_outputs()
        ));
    }
    for o in &n.outputs {
        if o.0 != *next {
            return Err(format!(
                "output %{} is out of order, expected %{next} (values are numbered in definition order)",
                o.0
            ));
        }
        if o.index() >= g.values.len() {
            return Err(format!(
                "output %{} has no type (the graph has {} values)",
                o.0,
                g.values.len()
            ));
        }
        *next += 1;
    }
    let arity = input_arity(&n.op);
    if !arity.accepts(n.inputs.len()) {
        return Err(format!("expects {arity} inputs, got {}", n.inputs.len()));
    }
    if let Some(v) = n.inputs.iter().find(|v| v.0 >= first) {
        return Err(format!("input %{} is used before it is defined", v.0));
    }
    let types: Vec<&TensorType> = n.inputs.iter().map(|v| g.value_type(*v)).collect();
    let inferred = infer(&n.op, &types).map_err(|e| e.message)?;
    for (o, t) in n.outputs.iter().zip(&inferred) {
        let declared = g.value_type(*o);
        if declared != t {
            return Err(match n.op {
                crate::Op::Const(_) => format!("tensor is {t} but %{} is declared {declared}", o.0),
                _ => format!(
                    "output %{} is declared {declared} but inference gives {t}",
                    o.0
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BinaryOp, DType, Op, Tensor, UnaryOp, ValueId};

    /// `x: f32[2, 3]`, `w: f32[3, 4]`, `%2 = matmul`, `%3 = relu`, output `y = %3`.
    fn graph() -> Graph {
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[2, 3]));
        let w = g.add_input("w", TensorType::fixed(DType::F32, &[3, 4]));
        let m = g.add_node("/mm", Op::MatMul, &[x, w]).unwrap()[0];
        let r = g.add_node("", Op::Unary(UnaryOp::Relu), &[m]).unwrap()[0];
        g.add_output("y", r);
        g
    }

    fn err(g: &Graph) -> String {
        verify(g).unwrap_err().message
    }

    #[test]
    fn accepts_a_well_formed_graph() {
        assert_eq!(verify(&graph()), Ok(()));
    }

    #[test]
    fn type_errors_name_the_node() {
        let mut g = graph();
        g.values[1] = TensorType::fixed(DType::F32, &[4, 4]);
        assert_eq!(
            err(&g),
            r#"node %2 "/mm" (matmul): contraction dims differ (3 vs 4)"#
        );
        assert_eq!(verify(&g).unwrap_err().node, Some(0));
    }

    #[test]
    fn declared_types_must_match_inference() {
        let mut g = graph();
        g.values[3] = TensorType::fixed(DType::F32, &[2, 5]);
        assert_eq!(
            err(&g),
            "node %3 (relu): output %3 is declared f32[2, 5] but inference gives f32[2, 4]"
        );
    }

    #[test]
    fn const_tensors_match_their_type() {
        let mut g = Graph::new("c");
        let t = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
        g.push_node(
            "k".into(),
            Op::Const(t),
            vec![],
            vec![TensorType::fixed(DType::I64, &[3])],
        );
        assert_eq!(
            err(&g),
            r#"node %0 "k" (const): tensor is i64[2] but %0 is declared i64[3]"#
        );
    }

    #[test]
    fn inputs_must_be_defined_earlier() {
        let mut g = graph();
        g.nodes.swap(0, 1);
        // Node order swapped: relu (defining %3 first) now comes before matmul.
        assert_eq!(
            err(&g),
            "node %3 (relu): output %3 is out of order, expected %2 (values are numbered in definition order)"
        );
        let mut g = graph();
        g.nodes[0].inputs[1] = ValueId(3);
        assert_eq!(
            err(&g),
            r#"node %2 "/mm" (matmul): input %3 is used before it is defined"#
        );
    }

    #[test]
    fn arity_and_output_counts() {
        let mut g = graph();
        g.nodes[1].inputs.push(ValueId(0));
        assert_eq!(err(&g), "node %3 (relu): expects 1 inputs, got 2");
        let mut g = graph();
        g.nodes[1].op = Op::TopK {
            axis: 0,
            k: 1,
            largest: true,
            sorted: true,
        };
        assert_eq!(err(&g), "node %3 (topk): has 1 outputs, expected 2");
    }

    #[test]
    fn values_are_defined_once_and_in_order() {
        let mut g = graph();
        g.inputs[1].1 = ValueId(0);
        assert_eq!(
            err(&g),
            "graph input `w` is %0, expected %1 (values are numbered in definition order)"
        );
        let mut g = graph();
        g.nodes[1].outputs[0] = ValueId(2);
        assert_eq!(
            err(&g),
            "node %2 (relu): output %2 is out of order, expected %3 (values are numbered in definition order)"
        );
        let mut g = graph();
        g.values.push(TensorType::fixed(DType::F32, &[1]));
        assert_eq!(
            err(&g),
            "graph has 5 values but defines 4: values %4.. have no definition"
        );
    }

    #[test]
    fn graph_outputs_and_names() {
        let mut g = graph();
        g.add_output("z", ValueId(9));
        assert_eq!(err(&g), "graph output `z` refers to undefined value %9");
        let mut g = graph();
        g.add_output("y", ValueId(2));
        assert_eq!(err(&g), "graph output name `y` is used twice");
        let mut g = graph();
        g.add_node("add", Op::Binary(BinaryOp::Add), &[ValueId(0), ValueId(0)])
            .unwrap();
        assert_eq!(verify(&g), Ok(()));
    }
}
