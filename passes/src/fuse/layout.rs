//! Layout canonicalization that needs shape reasoning egg patterns cannot express.
//!
//! `transpose-through-reshape`: exporters that batch heads for a rank-3 matmul write
//! `reshape(transpose(reshape(x, [L₁·…·Lₚ, T…]), [0, P…]), [L₁, …, Lₚ, T'…])`: merge the
//! leading dims, permute the trailing ones, split the leading dims again. That is one
//! transpose of `x` that leaves its leading dims in place, which is the form the attention
//! fusion (and any later layout rule) reads.

use super::egraph::{EGraph, Term};
use super::rules::{subst, var, Fusion};
use egg::{Id, Subst, Var};
use kiln_ir::{Dim, Op};

/// The rule `transpose-through-reshape` (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(super) struct TransposeThroughReshape;

/// The one-input nodes of `class` with their op.
fn unary_nodes(eg: &EGraph, class: Id) -> impl Iterator<Item = (&Op, Id)> + '_ {
    eg[class]
        .nodes
        .iter()
        .filter_map(|n| match eg.analysis.term(n.op) {
            Term::Op(op) if n.args.len() == 1 => Some((op, n.args[0])),
            _ => None,
        })
}

impl TransposeThroughReshape {
    /// `(x, perm)` for each way `class` is such a chain.
    fn chains(eg: &EGraph, class: Id) -> Vec<(Id, Vec<usize>)> {
        let shape = |c: Id| eg[c].data.ty().map(|t| t.shape.clone());
        let mut out = Vec::new();
        let Some(result) = shape(class) else {
            return out;
        };
        for (op, t) in unary_nodes(eg, class) {
            let Op::Reshape { .. } = op else { continue };
            for (op, u) in unary_nodes(eg, t) {
                let Op::Transpose { perm } = op else { continue };
                for (op, x) in unary_nodes(eg, u) {
                    let Op::Reshape { .. } = op else { continue };
                    let (Some(t_shape), Some(x_shape)) = (shape(t), shape(x)) else {
                        continue;
                    };
                    if let Some(p) = composed(&x_shape, perm, &t_shape, &result) {
                        out.push((x, p));
                    }
                }
            }
        }
        out
    }
}

/// The permutation of `x` that the chain computes, if `x`'s leading dims merge into the
/// transposed tensor's first axis (shape `t` = `x` permuted after the merge), `perm` keeps
/// that axis first, and `result` splits it back into the same leading dims.
fn composed(x: &[Dim], perm: &[usize], t: &[Dim], result: &[Dim]) -> Option<Vec<usize>> {
    let trailing = perm.len().checked_sub(1)?;
    let lead = x.len().checked_sub(trailing)?;
    if perm.first() != Some(&0) || lead == 0 || result.len() != x.len() {
        return None;
    }
    let merged = x[..lead]
        .iter()
        .cloned()
        .fold(Dim::from(1i64), |a, b| a * b);
    let permuted: Vec<&Dim> = perm[1..].iter().map(|&p| &x[lead + p - 1]).collect();
    let fits = t[0] == merged
        && t[1..].iter().eq(permuted.iter().copied())
        && result[..lead] == x[..lead]
        && result[lead..] == t[1..];
    fits.then(|| {
        (0..lead)
            .chain(perm[1..].iter().map(|&p| lead + p - 1))
            .collect()
    })
}

impl Fusion for TransposeThroughReshape {
    fn find(self, eg: &EGraph, class: Id) -> Vec<Subst> {
        Self::chains(eg, class)
            .into_iter()
            .map(|(x, _)| subst(&[("?x", x)]))
            .collect()
    }

    fn vars(self) -> Vec<Var> {
        vec![var("?x")]
    }

    fn build(self, eg: &mut EGraph, class: Id, s: &Subst) -> Option<(Op, Vec<Id>)> {
        let x = s[var("?x")];
        let (_, perm) = Self::chains(eg, class)
            .into_iter()
            .find(|(c, _)| eg.find(*c) == eg.find(x))?;
        Some((Op::Transpose { perm }, vec![x]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(text: &[&str]) -> Vec<Dim> {
        text.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn heads_batched_for_a_rank_3_transpose() {
        let x = dims(&["b", "4", "s", "16"]);
        let t = dims(&["4*b", "16", "s"]);
        let result = dims(&["b", "4", "16", "s"]);
        assert_eq!(
            composed(&x, &[0, 2, 1], &t, &result),
            Some(vec![0, 1, 3, 2])
        );
    }

    #[test]
    fn chains_that_move_the_merged_axis_or_split_differently_do_not_compose() {
        let x = dims(&["b", "4", "s", "16"]);
        let t = dims(&["4*b", "16", "s"]);
        // The split gives other leading dims.
        let other = dims(&["4", "b", "16", "s"]);
        assert_eq!(composed(&x, &[0, 2, 1], &t, &other), None);
        // The merged axis does not stay first.
        let moved = dims(&["16", "4*b", "s"]);
        assert_eq!(
            composed(&x, &[1, 0, 2], &moved, &dims(&["16", "b", "4", "s"])),
            None
        );
    }
}
