//! Data-dependent shapes: a graph whose ops define new symbols at run time (`nonzero`'s
//! count) is cut around each such op into stages. The op itself is a stage of its own, run
//! by its runtime implementation (its output size is only known once it has run); every
//! other stage is an ordinary graph whose inputs are the values it needs from earlier
//! stages, so its shapes are known when it is specialized: it is compiled once the stages
//! before it have run, and cached per shape like any model.

use kiln_ir::{Graph, TensorType, ValueId};
use std::collections::{BTreeSet, HashMap};

/// One stage: its graph and how its inputs and outputs map to the whole graph's values.
pub struct Stage {
    /// The stage's graph: its inputs are the values it needs from earlier stages.
    pub graph: Graph,
    /// Set for a stage that is one data-dependent op, run by its runtime implementation.
    pub runtime: Option<kiln_ir::Op>,
    /// Whole-graph value of each stage input, in order.
    pub inputs: Vec<ValueId>,
    /// Whole-graph value of each stage output, in order.
    pub outputs: Vec<ValueId>,
}

/// The data-dependent nodes: those whose outputs mention a symbol that no earlier value has.
fn cut_points(g: &Graph) -> Vec<usize> {
    let symbols =
        |ty: &TensorType| -> Vec<String> { ty.shape.iter().flat_map(|d| d.symbols()).collect() };
    let mut known: BTreeSet<String> = g.input_symbols().into_iter().collect();
    let mut cuts = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let fresh: Vec<String> = node
            .outputs
            .iter()
            .flat_map(|v| symbols(g.value_type(*v)))
            .filter(|s| !known.contains(s))
            .collect();
        if !fresh.is_empty() {
            known.extend(fresh);
            cuts.push(i);
        }
    }
    cuts
}

/// The stages of `g`, or `None` when its shapes follow from its input shapes alone.
pub fn split(g: &Graph) -> Option<Vec<Stage>> {
    let cuts = cut_points(g);
    if cuts.is_empty() {
        return None;
    }
    let producers = g.producers();
    let mut bounds = vec![0];
    for &c in &cuts {
        bounds.extend([c, c + 1]);
    }
    bounds.push(g.nodes.len());
    bounds.dedup();
    let stage_of_node = |n: usize| bounds.windows(2).position(|w| n >= w[0] && n < w[1]);
    // A value is needed outside its stage if a later stage or the graph output uses it.
    let mut used_later: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); g.values.len()];
    for (i, node) in g.nodes.iter().enumerate() {
        let s = stage_of_node(i).expect("every node is in a stage");
        for v in &node.inputs {
            used_later[v.index()].insert(s);
        }
    }
    let last = bounds.len() - 2;
    for (_, v) in &g.outputs {
        used_later[v.index()].insert(last + 1);
    }
    let home = |v: ValueId| producers[v.index()].and_then(stage_of_node);
    let stages = bounds
        .windows(2)
        .enumerate()
        .map(|(s, w)| {
            let mut stage = build_stage(g, s, w[0]..w[1], &home, &used_later);
            if cuts.contains(&w[0]) {
                // The runtime implementation returns every output of the op.
                stage.runtime = Some(g.nodes[w[0]].op.clone());
                stage.outputs = g.nodes[w[0]].outputs.clone();
            }
            stage
        })
        .collect();
    Some(stages)
}

fn build_stage(
    g: &Graph,
    s: usize,
    nodes: std::ops::Range<usize>,
    home: &dyn Fn(ValueId) -> Option<usize>,
    used: &[BTreeSet<usize>],
) -> Stage {
    let mut sub = Graph::new(format!("{}.stage{s}", g.name));
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    let mut inputs = Vec::new();
    for node in &g.nodes[nodes.clone()] {
        for v in &node.inputs {
            if home(*v) != Some(s) && !map.contains_key(v) {
                let id = sub.add_input(format!("v{}", v.0), g.value_type(*v).clone());
                map.insert(*v, id);
                inputs.push(*v);
            }
        }
        let ins: Vec<ValueId> = node.inputs.iter().map(|v| map[v]).collect();
        let tys: Vec<TensorType> = node
            .outputs
            .iter()
            .map(|v| g.value_type(*v).clone())
            .collect();
        let outs = sub.push_node(node.name.clone(), node.op.clone(), ins, tys);
        for (o, n) in node.outputs.iter().zip(outs) {
            map.insert(*o, n);
        }
    }
    let mut outputs = Vec::new();
    for node in &g.nodes[nodes] {
        for o in &node.outputs {
            if used[o.index()].iter().any(|&t| t > s) {
                sub.add_output(format!("v{}", o.0), map[o]);
                outputs.push(*o);
            }
        }
    }
    Stage {
        graph: sub,
        runtime: None,
        inputs,
        outputs,
    }
}
