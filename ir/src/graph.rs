//! The graph: values with types, nodes in topological order, named inputs and outputs.

use crate::{infer, DType, Dim, InferError, Op};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The type of a value: element type and (possibly symbolic) shape.
///
/// ```
/// use kiln_ir::{DType, Dim, TensorType};
/// let t = TensorType::new(DType::F32, vec![Dim::sym("batch"), Dim::from(768i64)]);
/// assert_eq!(t.to_string(), "f32[batch, 768]");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Shape, one dim per axis.
    pub shape: Vec<Dim>,
}

impl TensorType {
    /// A type from parts.
    pub fn new(dtype: DType, shape: Vec<Dim>) -> TensorType {
        TensorType { dtype, shape }
    }

    /// A type with a fully constant shape.
    pub fn fixed(dtype: DType, shape: &[usize]) -> TensorType {
        TensorType::new(dtype, shape.iter().map(|&d| Dim::from(d)).collect())
    }

    /// The rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The shape as integers, if every dim is constant.
    pub fn const_shape(&self) -> Option<Vec<usize>> {
        self.shape
            .iter()
            .map(|d| d.as_const().and_then(|c| usize::try_from(c).ok()))
            .collect()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// An index into [`Graph::values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ValueId(pub u32);

impl ValueId {
    /// The index as usize.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One operation: an op, its input values and the values it defines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Provenance: the source (ONNX) node name, or empty.
    pub name: String,
    /// The op.
    pub op: Op,
    /// Input values.
    pub inputs: Vec<ValueId>,
    /// Output values, defined by this node.
    pub outputs: Vec<ValueId>,
}

/// A graph in SSA form.
///
/// Invariants (checked by [`crate::verify`]): nodes are in topological order; every value is
/// defined once, by a graph input or a node output, and values are numbered in that order of
/// definition; every type matches what inference gives.
///
/// ```
/// use kiln_ir::{BinaryOp, DType, Graph, Op, TensorType};
/// let mut g = Graph::new("double");
/// let x = g.add_input("x", TensorType::fixed(DType::F32, &[3]));
/// let y = g.add_node("", Op::Binary(BinaryOp::Add), &[x, x]).unwrap()[0];
/// g.add_output("y", y);
/// assert_eq!(g.value_type(y).to_string(), "f32[3]");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// The graph's name.
    pub name: String,
    /// The type of each value, indexed by [`ValueId`].
    pub values: Vec<TensorType>,
    /// Nodes in topological order.
    pub nodes: Vec<Node>,
    /// Named graph inputs.
    pub inputs: Vec<(String, ValueId)>,
    /// Named graph outputs.
    pub outputs: Vec<(String, ValueId)>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            values: Vec::new(),
            nodes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Declares a graph input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let v = self.new_value(ty);
        self.inputs.push((name.into(), v));
        v
    }

    /// Appends a node, inferring the types of its outputs.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[ValueId],
    ) -> Result<Vec<ValueId>, InferError> {
        let types: Vec<&TensorType> = inputs.iter().map(|v| &self.values[v.index()]).collect();
        let out_types = infer(&op, &types)?;
        Ok(self.push_node(name.into(), op, inputs.to_vec(), out_types))
    }

    /// Appends a node whose output types are already known (the parser's path; the
    /// verifier checks them against inference).
    pub fn push_node(
        &mut self,
        name: String,
        op: Op,
        inputs: Vec<ValueId>,
        out_types: Vec<TensorType>,
    ) -> Vec<ValueId> {
        let outputs: Vec<ValueId> = out_types.into_iter().map(|t| self.new_value(t)).collect();
        self.nodes.push(Node {
            name,
            op,
            inputs,
            outputs: outputs.clone(),
        });
        outputs
    }

    /// Declares a graph output.
    pub fn add_output(&mut self, name: impl Into<String>, v: ValueId) {
        self.outputs.push((name.into(), v));
    }

    /// The type of a value.
    pub fn value_type(&self, v: ValueId) -> &TensorType {
        &self.values[v.index()]
    }

    fn new_value(&mut self, ty: TensorType) -> ValueId {
        let id = ValueId(u32::try_from(self.values.len()).expect("fewer than 2^32 values"));
        self.values.push(ty);
        id
    }

    /// All symbols that occur in the input types, sorted.
    pub fn input_symbols(&self) -> Vec<String> {
        let mut s: Vec<String> = self
            .inputs
            .iter()
            .flat_map(|(_, v)| {
                self.values[v.index()]
                    .shape
                    .iter()
                    .flat_map(|d| d.symbols())
            })
            .collect();
        s.sort();
        s.dedup();
        s
    }

    /// For each value, the node index that defines it (`None` for graph inputs).
    pub fn producers(&self) -> Vec<Option<usize>> {
        let mut p = vec![None; self.values.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for o in &n.outputs {
                p[o.index()] = Some(i);
            }
        }
        p
    }

    /// For each value, how many node inputs and graph outputs use it.
    pub fn use_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.values.len()];
        for n in &self.nodes {
            for i in &n.inputs {
                c[i.index()] += 1;
            }
        }
        for (_, o) in &self.outputs {
            c[o.index()] += 1;
        }
        c
    }

    /// Renumbers values in order of definition and drops values that nothing defines.
    /// Passes call this after removing or reordering nodes, so that equal graphs compare
    /// equal and print identically.
    pub fn compact(&mut self) {
        let mut map: Vec<Option<ValueId>> = vec![None; self.values.len()];
        let mut values = Vec::with_capacity(self.values.len());
        let mut def = |v: ValueId, values: &mut Vec<TensorType>| {
            let id = ValueId(values.len() as u32);
            values.push(self.values[v.index()].clone());
            map[v.index()] = Some(id);
        };
        for (_, v) in &self.inputs {
            def(*v, &mut values);
        }
        for n in &self.nodes {
            for o in &n.outputs {
                def(*o, &mut values);
            }
        }
        let remap = |v: &mut ValueId| *v = map[v.index()].expect("value defined before use");
        for (_, v) in &mut self.inputs {
            remap(v);
        }
        for n in &mut self.nodes {
            n.inputs.iter_mut().for_each(remap);
            n.outputs.iter_mut().for_each(remap);
        }
        for (_, v) in &mut self.outputs {
            remap(v);
        }
        self.values = values;
    }
}
