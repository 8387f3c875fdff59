//! Random graphs with symbols left free: some sizes of a generated case's inputs become
//! symbols (`n`, `m`), so the JIT compiles code whose loops, strides and buffer sizes are
//! expressions over them, and runs it at several bindings: the original sizes, every symbol
//! at 1 (where broadcasting and inference's guesses break), and a third set.
//!
//! At a binding where inference at the concrete shapes gives the symbolic graph's types
//! again, the compiled code must match the interpreter; where it does not, the compiled
//! code must refuse the binding (it may not run code sized for types that do not hold).

use super::data::random_tensor;
use super::gen::Case;
use super::rng::Rng;
use kiln_ir::{Bindings, Dim, Graph, Op, Tensor, TensorType, ValueId};

/// A case's graph with some input sizes renamed to symbols.
pub struct SymCase {
    /// The graph, its inputs typed with symbols.
    pub graph: Graph,
    /// Each symbol and the size it replaced.
    pub symbols: Vec<(String, usize)>,
    /// The original inputs, then the constants that became inputs.
    pub inputs: Vec<Tensor>,
}

/// `t` with every dim in `renamed` replaced by its symbol.
fn rename(t: &TensorType, renamed: &[(String, usize)]) -> TensorType {
    let shape = (t.shape.iter())
        .map(|d| {
            let hit = renamed
                .iter()
                .find(|(_, n)| d.as_const() == Some(*n as i64));
            hit.map_or_else(|| d.clone(), |(s, _)| Dim::sym(s.clone()))
        })
        .collect();
    TensorType::new(t.dtype, shape)
}

/// `case` with one or two of its input sizes (other than 1) made symbols; `None` when it
/// has none, or when the renamed graph does not type (inference cannot unify two symbols).
/// Constants with a renamed size become inputs, so their size follows the binding.
pub fn symbolize(case: &Case, rng: &mut Rng) -> Option<SymCase> {
    let g = &case.graph;
    let mut sizes: Vec<usize> = (g.inputs.iter())
        .flat_map(|(_, v)| g.value_type(*v).shape.iter().filter_map(|d| d.as_const()))
        .filter(|&n| n > 1)
        .map(|n| n as usize)
        .collect();
    sizes.sort();
    sizes.dedup();
    if sizes.is_empty() {
        return None;
    }
    let mut symbols = Vec::new();
    for name in ["n", "m"].iter().take(1 + rng.below(2)) {
        if sizes.is_empty() {
            break;
        }
        let n = sizes.remove(rng.below(sizes.len()));
        symbols.push((name.to_string(), n));
    }
    let mut out = Graph::new(format!("{}_symbolic", g.name));
    let mut map: Vec<Option<ValueId>> = vec![None; g.values.len()];
    for (name, v) in &g.inputs {
        map[v.index()] = Some(out.add_input(name, rename(g.value_type(*v), &symbols)));
    }
    let mut inputs = case.inputs.clone();
    for (i, node) in g.nodes.iter().enumerate() {
        if let Op::Const(t) = &node.op {
            let ty = rename(g.value_type(node.outputs[0]), &symbols);
            if ty.shape.iter().any(|d| !d.is_const()) {
                map[node.outputs[0].index()] = Some(out.add_input(format!("c{i}"), ty));
                inputs.push(t.clone());
                continue;
            }
        }
        let ins: Vec<ValueId> = node
            .inputs
            .iter()
            .map(|v| map[v.index()])
            .collect::<Option<_>>()?;
        let outs = out.add_node(format!("n{i}"), node.op.clone(), &ins).ok()?;
        for (o, n) in node.outputs.iter().zip(outs) {
            map[o.index()] = Some(n);
        }
    }
    for (name, v) in &g.outputs {
        out.add_output(name, map[v.index()]?);
    }
    Some(SymCase {
        graph: out,
        symbols,
        inputs,
    })
}

/// The concrete shape of input type `t` at `b`.
fn shape_at(t: &TensorType, b: &Bindings) -> Vec<usize> {
    (t.shape.iter())
        .map(|d| d.eval(b).expect("inputs mention only the symbols") as usize)
        .collect()
}

/// Inputs for `case` at `b`: its own at the original sizes, random ones otherwise.
pub fn inputs_at(case: &SymCase, b: &Bindings, rng: &mut Rng) -> Vec<Tensor> {
    let original = case.symbols.iter().all(|(s, n)| b[s] == *n as i64);
    if original {
        return case.inputs.clone();
    }
    (case.graph.inputs.iter())
        .map(|(_, v)| {
            let t = case.graph.value_type(*v);
            random_tensor(rng, t.dtype, &shape_at(t, b), false)
        })
        .collect()
}

/// Whether `g`'s types hold at `b`: every node, re-inferred from the inputs' concrete
/// types, gets the types of `g` evaluated at `b`.
pub fn holds_at(g: &Graph, b: &Bindings) -> bool {
    let at = |t: &TensorType| -> Option<TensorType> {
        let shape = (t.shape.iter())
            .map(|d| d.eval(b).map(Dim::from))
            .collect::<Option<_>>()?;
        Some(TensorType::new(t.dtype, shape))
    };
    let mut c = Graph::new("concrete");
    let mut map: Vec<Option<ValueId>> = vec![None; g.values.len()];
    for (name, v) in &g.inputs {
        let Some(t) = at(g.value_type(*v)) else {
            return false;
        };
        map[v.index()] = Some(c.add_input(name, t));
    }
    for node in &g.nodes {
        let Some(ins) = node
            .inputs
            .iter()
            .map(|v| map[v.index()])
            .collect::<Option<Vec<_>>>()
        else {
            return false;
        };
        let Ok(outs) = c.add_node("", node.op.substitute(b), &ins) else {
            return false;
        };
        for (o, n) in node.outputs.iter().zip(outs) {
            if at(g.value_type(*o)).as_ref() != Some(c.value_type(n)) {
                return false;
            }
            map[o.index()] = Some(n);
        }
    }
    true
}

/// The bindings a case runs at: the original sizes, every symbol at 1, and one more.
pub fn bindings(case: &SymCase, rng: &mut Rng) -> Vec<Bindings> {
    let all = |f: &mut dyn FnMut(usize) -> usize| -> Bindings {
        (case.symbols.iter())
            .map(|(s, n)| (s.clone(), f(*n) as i64))
            .collect()
    };
    let third = all(&mut |n| {
        let others: Vec<usize> = [2, 3, 5, 9].into_iter().filter(|&m| m != n).collect();
        rng.pick(&others)
    });
    vec![all(&mut |n| n), all(&mut |_| 1), third]
}
