//! The graph's structure, checked before any node is lowered: every name has one producer,
//! every input a node reads is produced somewhere, and the nodes form no cycle. The nodes
//! come back in an order where each follows its producers: the file's own order when it is
//! already one (as ONNX requires), else a topological sort of the dataflow graph.

use crate::proto::{tensor_shape_proto::dimension, type_proto, GraphProto, ValueInfoProto};
use crate::tensor::storage_of;
use crate::FrontendError;
use kiln_ir::TensorType;
use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use std::collections::HashMap;

/// What produces a name in the graph.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Producer {
    Initializer,
    Input,
    Node(usize),
}

/// The nodes of `graph` in dataflow order, or the first structural fault found. `label(i)`
/// is node `i`'s name as errors print it.
pub(crate) fn node_order(
    graph: &GraphProto,
    file: &str,
    opset: i64,
    label: &dyn Fn(usize) -> String,
) -> Result<Vec<usize>, FrontendError> {
    let node_err = |i: usize, message: String| FrontendError::Node {
        file: file.to_string(),
        node: label(i),
        op: graph.node[i].op_type().to_string(),
        opset,
        message,
    };
    let producers = producers(graph, file, label, &node_err)?;
    let mut dataflow: DiGraph<usize, ()> = DiGraph::new();
    let ids: Vec<NodeIndex> = (0..graph.node.len())
        .map(|i| dataflow.add_node(i))
        .collect();
    for (i, node) in graph.node.iter().enumerate() {
        for name in node.input.iter().filter(|n| !n.is_empty()) {
            match producers.get(name.as_str()) {
                Some(Producer::Node(p)) => {
                    dataflow.add_edge(ids[*p], ids[i], ());
                }
                Some(_) => {}
                None => return Err(node_err(i, format!("input `{name}` is never defined"))),
            }
        }
    }
    if in_order(&dataflow) {
        return Ok((0..graph.node.len()).collect());
    }
    match toposort(&dataflow, None) {
        Ok(order) => Ok(order.into_iter().map(|n| dataflow[n]).collect()),
        Err(cycle) => {
            let at = dataflow[cycle.node_id()];
            Err(node_err(
                at,
                format!(
                    "is on a cycle through nodes {}",
                    cycle_members(&dataflow, at, label)
                ),
            ))
        }
    }
}

/// One producer per name: initializers, graph inputs and node outputs. A graph input may
/// share its name with an initializer (the initializer is its default), nothing else may.
fn producers<'g>(
    graph: &'g GraphProto,
    file: &str,
    label: &dyn Fn(usize) -> String,
    node_err: &dyn Fn(usize, String) -> FrontendError,
) -> Result<HashMap<&'g str, Producer>, FrontendError> {
    let model_err = |message: String| FrontendError::Model {
        file: file.to_string(),
        message,
    };
    let mut producers: HashMap<&str, Producer> = HashMap::new();
    for t in &graph.initializer {
        if producers.insert(t.name(), Producer::Initializer).is_some() {
            return Err(model_err(format!(
                "two initializers are named `{}`",
                t.name()
            )));
        }
    }
    for vi in &graph.input {
        match producers.insert(vi.name(), Producer::Input) {
            Some(Producer::Input) => {
                return Err(model_err(format!(
                    "two graph inputs are named `{}`",
                    vi.name()
                )))
            }
            Some(_) => {
                producers.insert(vi.name(), Producer::Initializer);
            }
            None => {}
        }
    }
    for (i, node) in graph.node.iter().enumerate() {
        for name in node.output.iter().filter(|n| !n.is_empty()) {
            if let Some(before) = producers.insert(name, Producer::Node(i)) {
                let other = match before {
                    Producer::Initializer => "an initializer".to_string(),
                    Producer::Input => "a graph input".to_string(),
                    Producer::Node(j) if j == i => "this node's other output".to_string(),
                    Producer::Node(j) => format!("node `{}`", label(j)),
                };
                return Err(node_err(
                    i,
                    format!("output `{name}` is also produced by {other}"),
                ));
            }
        }
    }
    Ok(producers)
}

/// Whether every edge goes from an earlier node to a later one (the file's order works).
fn in_order(dataflow: &DiGraph<usize, ()>) -> bool {
    dataflow
        .edge_indices()
        .filter_map(|e| dataflow.edge_endpoints(e))
        .all(|(from, to)| dataflow[from] < dataflow[to])
}

/// The nodes of the strongly connected component holding `at`, in file order.
fn cycle_members(
    dataflow: &DiGraph<usize, ()>,
    at: usize,
    label: &dyn Fn(usize) -> String,
) -> String {
    let mut members: Vec<usize> = tarjan_scc(dataflow)
        .into_iter()
        .find(|c| c.iter().any(|n| dataflow[*n] == at))
        .map(|c| c.iter().map(|n| dataflow[*n]).collect())
        .unwrap_or_else(|| vec![at]);
    members.sort_unstable();
    let names: Vec<String> = members.iter().map(|&i| format!("`{}`", label(i))).collect();
    names.join(", ")
}

/// Whether the type a graph output declares agrees with the type inferred for it: the same
/// element type and rank, and the same size wherever both give a number. Parts left out of
/// the declaration (no element type, no or an empty shape, a named or empty dim) agree with
/// anything.
pub(crate) fn check_declared_output(
    vi: &ValueInfoProto,
    inferred: &TensorType,
) -> Result<(), String> {
    let Some(type_proto::Value::TensorType(declared)) =
        vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Ok(());
    };
    let mismatch = || {
        format!(
            "declared as {}, but the graph computes {inferred}",
            describe(declared)
        )
    };
    if declared.elem_type() != 0 && storage_of(declared.elem_type()) != Ok(inferred.dtype) {
        return Err(mismatch());
    }
    // An empty shape is a scalar by the letter of ONNX, but writers also use it for "not
    // given" (as kiln's own tests did), so only a shape with dims is held to its rank.
    let Some(shape) = declared.shape.as_ref().filter(|s| !s.dim.is_empty()) else {
        return Ok(());
    };
    if shape.dim.len() != inferred.shape.len() {
        return Err(mismatch());
    }
    for (d, dim) in shape.dim.iter().zip(&inferred.shape) {
        if let (Some(dimension::Value::DimValue(want)), Some(got)) = (&d.value, dim.as_const()) {
            if *want != got {
                return Err(mismatch());
            }
        }
    }
    Ok(())
}

/// A declared tensor type as kiln prints types: `f32[2, seq]`.
fn describe(t: &type_proto::Tensor) -> String {
    let dtype = storage_of(t.elem_type())
        .map_or_else(|_| format!("type {}", t.elem_type()), |d| d.to_string());
    let Some(shape) = &t.shape else {
        return dtype;
    };
    let dims: Vec<String> = shape
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(dimension::Value::DimValue(v)) => v.to_string(),
            Some(dimension::Value::DimParam(p)) if !p.is_empty() => p.clone(),
            _ => "?".into(),
        })
        .collect();
    format!("{dtype}[{}]", dims.join(", "))
}
