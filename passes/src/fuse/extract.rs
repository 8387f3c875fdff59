//! Extraction: one e-node per class, chosen DAG-aware under the cost model of
//! [`cost`](super::cost) ([`dag`](super::dag)), then the graph rebuilt from the graph
//! outputs down, so every chosen class becomes one node and values stay shared.

use super::cost;
use super::dag::{self, Choices};
use super::egraph::{EGraph, ENode, Lowered, Term};
use egg::{CostFunction, Extractor, Id, Language};
use kiln_ir::{Graph, Op, ValueId};
use std::collections::HashMap;

/// The tree extractor's cost: [`cost::own`] summed over the tree, then its op nodes.
/// Never smaller for a user than for its operands, so egg's extractor settles without cycles.
struct TreeCost<'a> {
    egraph: &'a EGraph,
}

impl CostFunction<ENode> for TreeCost<'_> {
    type Cost = (u64, usize);

    fn cost<C>(&mut self, enode: &ENode, mut costs: C) -> (u64, usize)
    where
        C: FnMut(Id) -> (u64, usize),
    {
        let eg = self.egraph;
        // Operands are canonical once the e-graph is rebuilt, so the e-node is found.
        let own = eg
            .lookup(enode.clone())
            .map_or(0, |c| cost::own(eg, c, enode));
        let op = matches!(eg.analysis.term(enode.op), Term::Op(_));
        enode.fold((own, usize::from(op)), |(c, n), id| {
            let (cc, cn) = costs(id);
            (c.saturating_add(cc), n.saturating_add(cn))
        })
    }
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
        .fold((0, 0), |(k, n), op| {
            (k + usize::from(!cost::is_free(op)), n + 1)
        })
}

/// A rebuilt graph and the class each of its nodes computes.
pub struct Extracted {
    /// The graph.
    pub graph: Graph,
    /// The class of each node's first output, by node index.
    pub classes: Vec<Id>,
    /// Whether the DAG-aware choice settled; if not, the tree extractor chose.
    pub dag: bool,
}

/// Rebuilds a graph with `g`'s name, inputs and outputs from the best e-nodes; the
/// DAG-aware choice may evaluate each e-node `evaluations` times on average.
pub fn extract(g: &Graph, lowered: &Lowered, evaluations: usize) -> Result<Extracted, String> {
    let egraph = &lowered.egraph;
    let roots: Vec<Id> = (g.inputs.iter().chain(&g.outputs))
        .map(|(_, v)| egraph.find(lowered.values[v.index()]))
        .collect();
    let (choices, dag) = match dag::choose(egraph, &roots, evaluations) {
        Some(choices) => (choices, true),
        None => (tree_choices(egraph, g, lowered), false),
    };
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
            egraph.analysis.term(choices[&class].op),
            Term::Input(i) if *i == k
        ));
        built.insert(class, vec![value]);
    }
    let mut builder = Builder {
        egraph,
        choices: &choices,
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
        dag,
    })
}

/// The tree extractor's choice for every class the graph's outputs reach.
fn tree_choices(egraph: &EGraph, g: &Graph, lowered: &Lowered) -> Choices {
    let extractor = Extractor::new(egraph, TreeCost { egraph });
    let mut choices = Choices::new();
    let mut stack: Vec<Id> = (g.inputs.iter().chain(&g.outputs))
        .map(|(_, v)| egraph.find(lowered.values[v.index()]))
        .collect();
    while let Some(id) = stack.pop() {
        if choices.contains_key(&id) {
            continue;
        }
        let node = extractor.find_best_node(id).clone();
        stack.extend(node.args.iter().map(|a| egraph.find(*a)));
        choices.insert(id, node);
    }
    choices
}

struct Builder<'e, 'x> {
    egraph: &'e EGraph,
    choices: &'x Choices,
    names: &'x HashMap<Id, &'e str>,
    built: HashMap<Id, Vec<ValueId>>,
    out: Graph,
    classes: Vec<Id>,
}

impl Builder<'_, '_> {
    /// The values of class `class`, adding the nodes of its chosen e-node and of everything
    /// it needs first. Iterative, so deep graphs cannot overflow the stack.
    fn build(&mut self, class: Id) -> Result<Vec<ValueId>, String> {
        let mut stack = vec![(class, false)];
        // The classes being built: the path from `class` down, in a depth-first walk.
        let mut path = std::collections::HashSet::new();
        while let Some((id, ready)) = stack.pop() {
            if self.built.contains_key(&id) {
                continue;
            }
            if !ready && !path.insert(id) {
                return Err(format!(
                    "the chosen e-nodes form a cycle through class {id}"
                ));
            }
            let node = &self.choices[&id];
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
                    let added = self.out.add_node(name, op.clone(), &inputs);
                    added.map_err(|e| format!("the extracted graph does not type-check: {e}"))?
                }
            };
            self.built.insert(id, values);
            path.remove(&id);
        }
        Ok(self.built[&class].clone())
    }
}
