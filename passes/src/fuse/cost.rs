//! The cost model extraction minimizes: memory traffic, arithmetic and kernel launches, in
//! one unit (bytes moved), estimated per e-node from the types the analysis inferred.
//!
//! A kernel reads each operand once and writes each result once, so its traffic is the
//! bytes of its operand and result types; GEMM-like ops add their arithmetic at
//! [`FLOPS_PER_BYTE`]; every kernel adds [`LAUNCH`]. Reshapes (an alias), constants and
//! shape values run nothing and cost nothing. Symbolic dims count as [`NOMINAL_DIM`]
//! elements: costs only rank alternatives of one graph, whose dims scale together.

use super::egraph::{EGraph, ENode, Term};
use egg::Id;
use kiln_ir::{Bindings, Op, TensorType};

/// The cost of running a kernel at all (dispatch to the thread pool, loop set-up),
/// counted as the bytes a core streams in about that time.
pub const LAUNCH: u64 = 16 << 10;

/// Floating-point operations per byte of traffic they cost: a core does about ten
/// flops in the time it streams one byte from memory.
pub const FLOPS_PER_BYTE: u64 = 10;

/// The size every symbolic dim is assumed to have.
pub const NOMINAL_DIM: i64 = 64;

/// The cost of e-node `enode` itself, without its operands' own costs. Zero exactly for
/// what runs no kernel: graph inputs, tuple reads, constants, shape values, reshapes.
/// `class` is the class of `enode`, whose types are its results'.
pub fn own(eg: &EGraph, class: Id, enode: &ENode) -> u64 {
    let op = match eg.analysis.term(enode.op) {
        Term::Input(_) | Term::Get(_) => return 0,
        Term::Op(op) if is_free(op) => return 0,
        Term::Op(op) => op,
    };
    let args: Vec<&[TensorType]> = enode
        .args
        .iter()
        .map(|a| eg[*a].data.types.as_slice())
        .collect();
    let outs = eg[class].data.types.as_slice();
    let traffic: u64 = args
        .iter()
        .copied()
        .chain([outs])
        .flatten()
        .map(bytes)
        .fold(0u64, u64::saturating_add);
    // Saturating: a huge value (refused later against the memory limit) must not overflow.
    LAUNCH
        .saturating_add(traffic)
        .saturating_add(flops(op, &args, outs) / FLOPS_PER_BYTE)
}

/// Whether `op` runs no kernel: constants, shape values and reshapes (an alias).
pub fn is_free(op: &Op) -> bool {
    matches!(
        op,
        Op::Const(_) | Op::ShapeValue { .. } | Op::Reshape { .. }
    )
}

/// The arithmetic of the ops whose arithmetic dominates their traffic: products over a
/// contracted axis (matmul, linear, attention's two products, convolution).
fn flops(op: &Op, args: &[&[TensorType]], outs: &[TensorType]) -> u64 {
    let dim = |types: &[TensorType], axis_from_end: usize| -> u64 {
        let shape = types
            .first()
            .map(|t| t.shape.as_slice())
            .unwrap_or_default();
        shape
            .len()
            .checked_sub(axis_from_end)
            .map_or(1, |i| elements(&shape[i..=i]))
    };
    let out = outs.first().map_or(0, |t| elements(&t.shape));
    match op {
        // 2·M·N·K: every output element is a dot product over x's last axis.
        Op::MatMul | Op::Linear(_) | Op::QuantLinear(_) => {
            (2 * out).saturating_mul(args.first().map_or(1, |a| dim(a, 1)))
        }
        // q·kᵀ and p·v: each output element of both products is over the keys, Sk.
        Op::Attention(_) => (4 * out).saturating_mul(args.get(1).map_or(1, |k| dim(k, 2))),
        // Every output element is a dot product over one filter: [Cout, Cin/g, k…].
        Op::Conv(_) => {
            let filter = args.get(1).and_then(|w| w.first());
            (2 * out)
                .saturating_mul(filter.map_or(1, |w| elements(&w.shape[1.min(w.shape.len())..])))
        }
        _ => 0,
    }
}

/// The bytes of a value of type `t`.
fn bytes(t: &TensorType) -> u64 {
    elements(&t.shape).saturating_mul(t.dtype.size_bytes() as u64)
}

/// The elements of `shape`, symbols at [`NOMINAL_DIM`].
fn elements(shape: &[kiln_ir::Dim]) -> u64 {
    let nominal: Bindings = shape
        .iter()
        .flat_map(|d| d.symbols())
        .map(|s| (s, NOMINAL_DIM))
        .collect();
    shape
        .iter()
        .map(|d| d.eval(&nominal).map_or(1, |n| n.max(0) as u64))
        .fold(1u64, |acc, n| acc.saturating_mul(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::egraph::lower;

    fn costs(text: &str) -> Vec<(String, u64)> {
        let g = kiln_ir::parse(text).unwrap();
        let lowered = lower(&g);
        let eg = &lowered.egraph;
        g.nodes
            .iter()
            .map(|n| {
                let class = eg.find(lowered.values[n.outputs[0].index()]);
                let enode = &eg[class].nodes[0];
                (n.op.name(), own(eg, class, enode))
            })
            .collect()
    }

    #[test]
    fn a_matmul_costs_its_traffic_arithmetic_and_launch() {
        let got = costs(
            "graph @g(%x: f32[64, 32], %w: f32[32, 16]) -> f32[64, 16] {
                %y = matmul %x, %w
                return %y
            }",
        );
        let traffic = 4 * (64 * 32 + 32 * 16 + 64 * 16);
        let flops = 2 * 64 * 16 * 32;
        assert_eq!(got, [("matmul".into(), LAUNCH + traffic + flops / 10)]);
    }

    #[test]
    fn symbols_count_as_the_nominal_dim_and_reshapes_are_free() {
        let got = costs(
            "graph @g(%x: f32[n, 8]) -> f32[8, n] {
                %r = reshape %x {shape=[8, n]}
                %y = relu %r
                return %y
            }",
        );
        let traffic = 2 * 4 * 8 * NOMINAL_DIM as u64;
        assert_eq!(
            got,
            [("reshape".into(), 0), ("relu".into(), LAUNCH + traffic)]
        );
    }
}
