//! Generating valid inputs for a model from its declared input types, for `kiln run` without
//! `--inputs`.
//!
//! Random floats are fine for most inputs, but integer token ids must index the embedding
//! table and attention masks must not mask everything, so inputs are classed by name and,
//! for ids, by the graph: the id range is the row count of the constant table the ids gather
//! from.

use kiln_ir::{Bindings, DType, Graph, MemoryLimit, Op, Tensor, TensorType, ValueId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Generated inputs, and which symbols took a default size because none was given.
#[derive(Debug)]
pub struct Generated {
    /// The inputs in graph-input order.
    pub inputs: Vec<(String, Tensor)>,
    /// Symbols that were not given and took a default size.
    pub defaulted: Vec<(String, i64)>,
}

/// The size a symbol takes when the user gives none: 1 for batch-like names, else 8.
pub fn default_size(symbol: &str) -> i64 {
    if symbol.to_lowercase().contains("batch") {
        1
    } else {
        8
    }
}

/// Inputs for every graph input, with sizes from `dims` (defaults for the rest) and a
/// seeded generator, so the same call gives the same tensors. Each input's size is checked
/// against `max_memory` before it is allocated.
pub fn generate_inputs(
    g: &Graph,
    dims: &Bindings,
    seed: u64,
    max_memory: MemoryLimit,
) -> Result<Generated, String> {
    let mut bindings = dims.clone();
    let mut defaulted = Vec::new();
    for sym in g.input_symbols() {
        if let std::collections::btree_map::Entry::Vacant(slot) = bindings.entry(sym) {
            let size = default_size(slot.key());
            defaulted.push((slot.key().clone(), size));
            slot.insert(size);
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut inputs = Vec::with_capacity(g.inputs.len());
    for (name, v) in &g.inputs {
        let ty = g.value_type(*v);
        let shape = concrete_shape(ty, &bindings).map_err(|m| format!("input `{name}`: {m}"))?;
        kiln_ir::check_tensor(&format!("input `{name}`"), ty.dtype, &shape, max_memory)
            .map_err(|e| e.to_string())?;
        let t = generate_one(g, name, *v, ty.dtype, &shape, &mut rng)
            .map_err(|m| format!("input `{name}`: {m}"))?;
        inputs.push((name.clone(), t));
    }
    Ok(Generated { inputs, defaulted })
}

fn concrete_shape(ty: &TensorType, b: &Bindings) -> Result<Vec<usize>, String> {
    ty.shape
        .iter()
        .map(|d| {
            let n = d
                .eval(b)
                .ok_or_else(|| format!("cannot size {ty}: dim {d} has an unbound symbol"))?;
            usize::try_from(n).map_err(|_| format!("dim {d} evaluates to {n}"))
        })
        .collect()
}

/// What an input's name and users say about valid values.
#[derive(Debug, PartialEq)]
enum Kind {
    /// Indices into a table with this many rows.
    Ids(i64),
    /// All ones (attention masks).
    Ones,
    /// All zeros (token type ids).
    Zeros,
    /// Random values of the dtype.
    Random,
}

fn classify(g: &Graph, name: &str, v: ValueId, dtype: DType) -> Kind {
    let lower = name.to_lowercase();
    if lower.contains("mask") {
        return Kind::Ones;
    }
    if lower.contains("token_type") {
        return Kind::Zeros;
    }
    if dtype.is_int() {
        if let Some(rows) = gather_table_rows(g, v) {
            return Kind::Ids(rows);
        }
        if lower.contains("ids") {
            return Kind::Zeros;
        }
    }
    Kind::Random
}

/// Follows `v`'s users (breadth first, a few levels, so casts and index normalization are
/// looked through) to a gather that uses it as indices into a constant table, and returns
/// the table's size along the gathered axis.
fn gather_table_rows(g: &Graph, v: ValueId) -> Option<i64> {
    let producers = g.producers();
    let mut frontier = vec![v];
    for _depth in 0..4 {
        let mut next = Vec::new();
        for node in &g.nodes {
            let Some(pos) = node.inputs.iter().position(|i| frontier.contains(i)) else {
                continue;
            };
            if let (Op::Gather { axis }, 1) = (&node.op, pos) {
                let data = node.inputs[0];
                if let Some(Op::Const(table)) = producers[data.index()].map(|p| &g.nodes[p].op) {
                    return table.shape().get(*axis).map(|&n| n as i64);
                }
            }
            next.extend(node.outputs.iter().copied());
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    None
}

fn generate_one(
    g: &Graph,
    name: &str,
    v: ValueId,
    dtype: DType,
    shape: &[usize],
    rng: &mut StdRng,
) -> Result<Tensor, String> {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = match classify(g, name, v, dtype) {
        Kind::Ones => vec![1.0; n],
        Kind::Zeros => vec![0.0; n],
        Kind::Ids(rows) => (0..n)
            .map(|_| rng.random_range(0..rows.max(1)) as f64)
            .collect(),
        Kind::Random if dtype.is_float() => (0..n).map(|_| rng.random_range(-1.0..1.0)).collect(),
        Kind::Random if dtype == DType::Bool => {
            (0..n).map(|_| rng.random_range(0..2) as f64).collect()
        }
        Kind::Random => (0..n).map(|_| rng.random_range(0..10) as f64).collect(),
    };
    Ok(Tensor::from_vec(values, shape)
        .map_err(|e| e.to_string())?
        .cast(dtype))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{BinaryOp, Dim};

    /// ids -> cast -> gather(table[50, 4]); plus a mask, token types and a float input.
    fn graph() -> Graph {
        let mut g = Graph::new("emb");
        let bs = vec![Dim::sym("batch"), Dim::sym("seq")];
        let ids = g.add_input("input_ids", TensorType::new(DType::I64, bs.clone()));
        g.add_input("attention_mask", TensorType::new(DType::I64, bs.clone()));
        g.add_input("token_type_ids", TensorType::new(DType::I64, bs.clone()));
        let x = g.add_input(
            "x",
            TensorType::new(DType::F32, vec![Dim::sym("batch"), Dim::from(4i64)]),
        );
        let table = Tensor::zeros(DType::F32, &[50, 4]).unwrap();
        let t = g.push_node(
            "emb.w".into(),
            Op::Const(table),
            vec![],
            vec![TensorType::fixed(DType::F32, &[50, 4])],
        )[0];
        let c = g.push_node(
            "c".into(),
            Op::Cast { to: DType::I32 },
            vec![ids],
            vec![TensorType::new(DType::I32, bs.clone())],
        )[0];
        let mut out_shape = bs;
        out_shape.push(Dim::from(4i64));
        let e = g.push_node(
            "g".into(),
            Op::Gather { axis: 0 },
            vec![t, c],
            vec![TensorType::new(DType::F32, out_shape.clone())],
        )[0];
        let y = g.push_node(
            "a".into(),
            Op::Binary(BinaryOp::Add),
            vec![e, x],
            vec![TensorType::new(DType::F32, out_shape)],
        )[0];
        g.add_output("y", y);
        g
    }

    #[test]
    fn inputs_follow_names_and_the_embedding_table() {
        let dims: Bindings = [("seq".to_string(), 32)].into_iter().collect();
        let gen = generate_inputs(&graph(), &dims, 7, MemoryLimit::default()).unwrap();
        assert_eq!(gen.defaulted, vec![("batch".to_string(), 1)]);
        let by_name = |n: &str| gen.inputs.iter().find(|(k, _)| k == n).unwrap().1.clone();
        let ids = by_name("input_ids").to_i64_vec();
        assert_eq!(by_name("input_ids").shape(), &[1, 32]);
        assert!(
            ids.iter().all(|&i| (0..50).contains(&i)) && ids.iter().any(|&i| i > 0),
            "{ids:?}"
        );
        assert!(by_name("attention_mask")
            .to_i64_vec()
            .iter()
            .all(|&m| m == 1));
        assert!(by_name("token_type_ids")
            .to_i64_vec()
            .iter()
            .all(|&m| m == 0));
        let x = by_name("x");
        assert_eq!((x.dtype(), x.shape()), (DType::F32, &[1usize, 4][..]));
    }

    #[test]
    fn the_same_seed_gives_the_same_inputs() {
        let a = generate_inputs(&graph(), &Bindings::new(), 3, MemoryLimit::default()).unwrap();
        let b = generate_inputs(&graph(), &Bindings::new(), 3, MemoryLimit::default()).unwrap();
        assert_eq!(a.inputs, b.inputs);
        assert_eq!(gather_table_rows(&graph(), ValueId(0)), Some(50));
    }
}
