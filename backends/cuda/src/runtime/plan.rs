//! A launch plan: everything the host side needs to run a module, as data. A
//! [`Session`](super::Session) builds one from the graph and program it is given; an
//! ahead-of-time artifact (`kiln build --emit ptx`, and the executables
//! `--emit exe --device cuda` writes) stores it as JSON beside the module and the
//! constants' bytes, so running needs neither the graph's ops nor the scheduler.

use crate::{launch_conditions, Launch};
use kiln_ir::{Assumption, DType, Dim, Graph, TensorType};
use kiln_kernel::kernel::{BufferKind, Program};
use kiln_kernel::plan::{lifetimes, Lifetimes, ALIGN};
use serde::{Deserialize, Serialize};

/// How to run a module.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// The graph's inputs, by name, with their (symbolic) types: runs bind the symbols
    /// from the shapes given for them.
    pub inputs: Vec<(String, TensorType)>,
    /// The graph's output names.
    pub output_names: Vec<String>,
    /// The symbols, in the order entries take their values.
    pub symbols: Vec<String>,
    /// Every buffer.
    pub buffers: Vec<PlanBuffer>,
    /// The buffer of each output, and its shape.
    pub outputs: Vec<(usize, Vec<Dim>)>,
    /// One launch per kernel, in order.
    pub launches: Vec<Launch>,
    /// Each kernel's label and graph node, for errors.
    pub kernels: Vec<(String, usize)>,
    /// When each temporary lives, for the arena's placement at a binding.
    pub lifetimes: Lifetimes,
    /// What a binding must satisfy before any launch.
    pub conditions: Vec<Assumption>,
}

/// One buffer of a [`Plan`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanBuffer {
    /// Element type.
    pub dtype: DType,
    /// Elements.
    pub len: Dim,
    /// Where its memory is.
    pub kind: PlanBufferKind,
}

/// Where a [`PlanBuffer`]'s memory is.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanBufferKind {
    /// The caller's input `k`.
    Input(usize),
    /// At this byte offset of the constants block.
    Const(usize),
    /// In the arena.
    Temp,
    /// An index sequence, computed where it is read (no memory).
    Iota,
}

impl Plan {
    /// The plan of a module's `launches`, written for `program` (scheduled from
    /// `graph`), and the constants block its offsets point into.
    pub fn new(graph: &Graph, program: &Program, launches: &[Launch]) -> (Plan, Vec<u8>) {
        let (offsets, weights) = constant_layout(program);
        let buffers = (program.buffers.iter().zip(&offsets))
            .map(|(b, offset)| PlanBuffer {
                dtype: b.dtype,
                len: b.len.clone(),
                kind: match (&b.kind, offset) {
                    (BufferKind::Input(k), _) => PlanBufferKind::Input(*k),
                    (BufferKind::Const(_), Some(o)) => PlanBufferKind::Const(*o),
                    (BufferKind::Iota, _) => PlanBufferKind::Iota,
                    (BufferKind::Const(_) | BufferKind::Temp, _) => PlanBufferKind::Temp,
                },
            })
            .collect();
        let inputs = (graph.inputs.iter())
            .map(|(n, v)| (n.clone(), graph.value_type(*v).clone()))
            .collect();
        let kernels = (program.kernels.iter().zip(&program.kernel_nodes))
            .map(|(k, &n)| (k.label(), n))
            .collect();
        let plan = Plan {
            inputs,
            output_names: graph.outputs.iter().map(|(n, _)| n.clone()).collect(),
            symbols: program.symbols.clone(),
            buffers,
            outputs: (program.outputs.iter().copied())
                .zip(program.output_shapes.iter().cloned())
                .collect(),
            launches: launches.to_vec(),
            kernels,
            lifetimes: lifetimes(program),
            conditions: launch_conditions(graph, program),
        };
        (plan, weights)
    }

    /// A graph with only the plan's inputs, for binding their symbols.
    pub(crate) fn input_graph(&self) -> Graph {
        let mut g = Graph::new("inputs");
        for (name, ty) in &self.inputs {
            g.add_input(name.clone(), ty.clone());
        }
        g
    }

    /// Each buffer's bytes at `bindings`; `None` when a size is unbound, negative or
    /// overflows.
    pub(crate) fn buffer_bytes(&self, bindings: &kiln_ir::Bindings) -> Option<Vec<usize>> {
        (self.buffers.iter())
            .map(|b| {
                let n = usize::try_from(b.len.eval(bindings)?).ok()?;
                n.checked_mul(b.dtype.size_bytes())
            })
            .collect()
    }
}

/// Where each constant buffer sits in one weights block (64-byte aligned offsets), and
/// the block's bytes; `None` for every other buffer.
pub fn constant_layout(program: &Program) -> (Vec<Option<usize>>, Vec<u8>) {
    let mut weights = Vec::new();
    let offsets = (program.buffers.iter())
        .map(|b| match &b.kind {
            BufferKind::Const(t) => {
                weights.resize(weights.len().next_multiple_of(ALIGN), 0);
                let offset = weights.len();
                weights.extend_from_slice(&t.to_le_bytes());
                Some(offset)
            }
            _ => None,
        })
        .collect();
    (offsets, weights)
}
