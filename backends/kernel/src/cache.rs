//! KV caches appended in place: a decoder step's `concat(past, new)` along the sequence
//! axis, whose result is a graph output (`present`) and otherwise only attention's keys or
//! values, writes just the new rows into the past's own buffer.
//!
//! A cache buffer holds `[B, H, C, D]` for a capacity `C` (the symbol [`CAPACITY`], bound
//! at run time), of which the first `P` rows per head are valid: the past input is that
//! prefix, read through the capacity's strides, and `present` is the prefix grown by the
//! new rows, the same memory. The step then moves only the new rows instead of copying the
//! whole past into a fresh `present` each token, and attention reads the valid rows in
//! place. A binding whose new rows would pass the capacity fails before anything runs (the
//! write's reach is a bounds assumption, [`crate::bounds`]).

use kiln_ir::{DType, Dim, Graph, Op, ValueId};

/// The symbol for the rows each cache buffer holds.
pub const CAPACITY: &str = "kv_capacity";

/// The sequence axis of a cache (`[batch, heads, seq, depth]`).
pub const SEQ_AXIS: usize = 2;

/// One cache: graph input `input` (the past), appended to by node `node` (the concat)
/// into graph output `output` (the present).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KvCache {
    /// The past's index among the graph inputs.
    pub input: usize,
    /// The present's index among the graph outputs.
    pub output: usize,
    /// The concat's node index.
    pub node: usize,
}

/// Every cache of `g`: a rank-4 f32 graph input whose one use is as the first of the two
/// operands of a `concat` along axis 2, whose result is exactly one graph output and is
/// otherwise read only as attention's keys or values. Anything else (a past read twice, a
/// present reshaped or reduced) stays a copy.
pub fn find(g: &Graph) -> Vec<KvCache> {
    let mut found = Vec::new();
    for (input, (_, past)) in g.inputs.iter().enumerate() {
        let ty = g.value_type(*past);
        if ty.dtype != DType::F32 || ty.rank() != 4 {
            continue;
        }
        let readers = uses(g, *past);
        let &[(node, 0)] = readers.as_slice() else {
            continue;
        };
        let n = &g.nodes[node];
        if n.op != (Op::Concat { axis: SEQ_AXIS }) || n.inputs.len() != 2 {
            continue;
        }
        let present = n.outputs[0];
        let outputs: Vec<usize> = (g.outputs.iter().enumerate())
            .filter(|(_, (_, v))| *v == present)
            .map(|(i, _)| i)
            .collect();
        let read_by_attention = uses(g, present).iter().all(|&(user, at)| {
            matches!(g.nodes[user].op, Op::Attention(_)) && (at == 1 || at == 2)
        });
        let past_is_output = g.outputs.iter().any(|(_, v)| v == past);
        if let ([output], true, false) = (outputs.as_slice(), read_by_attention, past_is_output) {
            found.push(KvCache {
                input,
                output: *output,
                node,
            });
        }
    }
    found
}

/// Every (node, operand position) reading `v`.
fn uses(g: &Graph, v: ValueId) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for (at, input) in n.inputs.iter().enumerate() {
            if *input == v {
                out.push((i, at));
            }
        }
    }
    out
}

/// The strides of a cache's `[B, H, rows, D]` prefix in its `[B, H, C, D]` buffer.
pub fn strides(shape: &[Dim]) -> Vec<Dim> {
    let capacity = Dim::sym(CAPACITY);
    let row = shape[3].clone();
    let head = &capacity * &row;
    let batch = &head * &shape[1];
    vec![batch, head, row, Dim::from(1i64)]
}

/// The elements of a cache buffer for the past's `shape`: `B · H · C · D`.
pub fn buffer_len(shape: &[Dim]) -> Dim {
    &(&shape[0] * &shape[1]) * &(&Dim::sym(CAPACITY) * &shape[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caches_of(body: &str, outputs: &str) -> Vec<KvCache> {
        let text = format!(
            "graph @g(%q: f32[1, 2, s, 4], %k: f32[1, 2, s, 4], %past: f32[1, 2, p, 4]) -> ({outputs}) {{\n{body}\n}}\n"
        );
        find(&kiln_ir::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}")))
    }

    #[test]
    fn a_past_read_only_by_its_concat_into_attention_and_an_output_is_a_cache() {
        let present = "%y: f32[1, 2, s, 4], %kv: f32[1, 2, p+s, 4]";
        let body = "    %kv = concat %past, %k {axis=2}\n    %y = attention %q, %kv, %kv {scale=0.5, mask=none, rows=nan}\n    return %y, %kv";
        assert_eq!(
            caches_of(body, present),
            [KvCache {
                input: 2,
                output: 1,
                node: 0
            }]
        );
        // The past read again, the present read as queries, or not an output: copies.
        let twice = "    %kv = concat %past, %k {axis=2}\n    %y = attention %q, %kv, %kv {scale=0.5, mask=none, rows=nan}\n    %z = concat %past, %q {axis=2}\n    return %y, %kv, %z";
        let queries = "    %kv = concat %past, %k {axis=2}\n    %y = attention %kv, %kv, %kv {scale=0.5, mask=none, rows=nan}\n    return %y, %kv";
        let hidden = "    %kv = concat %past, %k {axis=2}\n    %y = attention %q, %kv, %kv {scale=0.5, mask=none, rows=nan}\n    return %y";
        let other_axis = "    %kv = concat %past, %past {axis=2}\n    %y = attention %q, %kv, %kv {scale=0.5, mask=none, rows=nan}\n    return %y, %kv";
        let three = "%y: f32[1, 2, s, 4], %kv: f32[1, 2, p+s, 4], %z: f32[1, 2, p+s, 4]";
        assert!(caches_of(twice, three).is_empty());
        assert!(caches_of(queries, "%y: f32[1, 2, p+s, 4], %kv: f32[1, 2, p+s, 4]").is_empty());
        assert!(caches_of(hidden, "%y: f32[1, 2, s, 4]").is_empty());
        assert!(caches_of(other_axis, "%y: f32[1, 2, s, 4], %kv: f32[1, 2, 2*p, 4]").is_empty());
    }
}
