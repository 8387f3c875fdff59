//! Extraction: the cheapest e-node of every class under a kernel-count cost model, then the
//! graph rebuilt from the graph outputs down, so every chosen class becomes one node and
//! values stay shared (a DAG, not a tree).

use super::egraph::{EGraph, ENode, Lowered, Term};
use egg::{CostFunction, Extractor, Id, Language};
use kiln_ir::{Graph, InferError, Op, ValueId};
use std::collections::HashMap;

/// Cost of a choice: the kernels it runs. Inputs, constants, tuple reads and reshapes (an
/// alias) are free; every other op is one kernel, fused ones included, which is what makes
/// a fused op cheaper than the several kernels of its decomposition.
struct Kernels<'a> {
    egraph: &'a EGraph,
}

impl CostFunction<ENode> for Kernels<'_> {
    /// Kernels, then nodes: among choices with as many kernels, the one with fewer nodes
    /// (`reshape(x)` over `reshape(reshape(x))`).
    type Cost = (usize, usize);

    fn cost<C>(&mut self, enode: &ENode, mut costs: C) -> (usize, usize)
    where
        C: FnMut(Id) -> (usize, usize),
    {
        let own = match self.egraph.analysis.term(enode.op) {
            Term::Input(_) | Term::Get(_) => (0, 0),
            Term::Op(op) => (usize::from(!is_free(op)), 1),
        };
        enode.fold(own, |(k, n), id| {
            let (ck, cn) = costs(id);
            (k.saturating_add(ck), n.saturating_add(cn))
        })
    }
}

/// Whether `op` runs no kernel: constants, shape values and reshapes (an alias).
fn is_free(op: &Op) -> bool {
    matches!(
        op,
        Op::Const(_) | Op::ShapeValue { .. } | Op::Reshape { .. }
    )
}

/// The size of `g`'s live program: kernels, then nodes other than constants.
pub fn size(g: &Graph) -> (usize, usize) {
    let producers = g.producers();
    let mut stack: Vec<usize> = g.outputs.iter().map(|(_, v)| v.index()).collect();
    let mut live = vec![false; g.nodes.len()];
    while let Some(v) = stack.pop() {
        if let Some(n) = producers[v] {
            if !std::mem::replace(&mut live[n], true) {
                stack.extend(g.nodes[n].inputs.iter().map(|i| i.index()));
            }
        }
    }
    let live = g
        .nodes
        .iter()
        .zip(live)
        .filter(|(_, l)| *l)
        .map(|(n, _)| &n.op);
    live.filter(|op| !matches!(op, Op::Const(_)))
        .fold((0, 0), |(k, n), op| (k + usize::from(!is_free(op)), n + 1))
}

/// A rebuilt graph and the class each of its nodes computes.
pub struct Extracted {
    /// The graph.
    pub graph: Graph,
    /// The class of each node's first output, by node index.
    pub classes: Vec<Id>,
}

/// Rebuilds a graph with `g`'s name, inputs and outputs from the best e-nodes.
pub fn extract(g: &Graph, lowered: &Lowered) -> Result<Extracted, InferError> {
    let egraph = &lowered.egraph;
    let extractor = Extractor::new(egraph, Kernels { egraph });
    let mut names: HashMap<Id, &str> = HashMap::new();
    for (id, name) in &lowered.names {
        names.entry(egraph.find(*id)).or_insert(name);
    }
    let mut out = Graph::new(g.name.clone());
    let mut built: HashMap<Id, Vec<ValueId>> = HashMap::new();
    for (k, (name, v)) in g.inputs.iter().enumerate() {
        let value = out.add_input(name.clone(), g.value_type(*v).clone());
        let class = egraph.find(lowered.values[v.index()]);
        debug_assert!(matches!(
            egraph.analysis.term(extractor.find_best_node(class).op),
            Term::Input(i) if *i == k
        ));
        built.insert(class, vec![value]);
    }
    let mut builder = Builder {
        egraph,
        extractor: &extractor,
        names: &names,
        built,
        out,
        classes: Vec::new(),
    };
    for (name, v) in &g.outputs {
        let class = egraph.find(lowered.values[v.index()]);
        let value = builder.build(class)?[0];
        builder.out.add_output(name.clone(), value);
    }
    Ok(Extracted {
        graph: builder.out,
        classes: builder.classes,
    })
}

struct Builder<'e, 'x> {
    egraph: &'e EGraph,
    extractor: &'x Extractor<'e, Kernels<'e>, ENode, super::egraph::Types>,
    names: &'x HashMap<Id, &'e str>,
    built: HashMap<Id, Vec<ValueId>>,
    out: Graph,
    classes: Vec<Id>,
}

impl Builder<'_, '_> {
    /// The values of class `class`, adding the nodes of its best e-node and of everything it
    /// needs first. Iterative, so deep graphs cannot overflow the stack.
    fn build(&mut self, class: Id) -> Result<Vec<ValueId>, InferError> {
        let mut stack = vec![(class, false)];
        while let Some((id, ready)) = stack.pop() {
            if self.built.contains_key(&id) {
                continue;
            }
            let node = self.extractor.find_best_node(id);
            let args: Vec<Id> = node.args.iter().map(|a| self.egraph.find(*a)).collect();
            if !ready {
                stack.push((id, true));
                stack.extend(args.iter().map(|a| (*a, false)));
                continue;
            }
            let inputs: Vec<ValueId> = args.iter().map(|a| self.built[a][0]).collect();
            let values = match self.egraph.analysis.term(node.op) {
                Term::Input(_) => unreachable!("graph inputs are built first"),
                Term::Get(i) => vec![self.built[&args[0]].clone()[*i]],
                Term::Op(op) => {
                    let name = self.names.get(&id).copied().unwrap_or_default();
                    self.classes.push(id);
                    self.out.add_node(name, op.clone(), &inputs)?
                }
            };
            self.built.insert(id, values);
        }
        Ok(self.built[&class].clone())
    }
}
