//! The rotary fusion (rule `rotary`): `x·cos + rotate_half(x)·sin` → [`Op::Rotary`], with
//! `rotate_half(x) = concat(-x[.., h..], x[.., ..h])` over the last axis. Both products
//! and the sum are matched in either operand order; `cos` and `sin` are any tensors that
//! broadcast to `x` (the type check rejects the rest).
//!
//! The ONNX `RotaryEmbedding` body spells it with half-width tables as a complex product,
//! `concat(x₁·c - x₂·s, x₁·s + x₂·c)` for the halves `x₁`, `x₂`; that is the same op with
//! `cos = concat(c, c)` and `sin = concat(s, s)`, which the rule adds.

use super::egraph::{add_op, EGraph, Term};
use super::rules::{nodes, pairs, subst, var, Fusion};
use egg::{Id, Subst, Var};
use kiln_ir::{Dim, Op};

/// The rotary fusion.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rotary;

impl Fusion for Rotary {
    fn find(self, eg: &EGraph, class: Id) -> Vec<Subst> {
        let mut found = Vec::new();
        found.extend(complex_product(eg, class));
        for (straight, rotated) in pairs(eg, class, "add") {
            for (x, cos) in pairs(eg, straight, "mul") {
                for (r, sin) in pairs(eg, rotated, "mul") {
                    if rotates_half(eg, r, x) {
                        found.push(subst(&[("?x", x), ("?cos", cos), ("?sin", sin)]));
                    }
                }
            }
        }
        found
    }

    fn vars(self) -> Vec<Var> {
        ["?x", "?cos", "?sin", "?half"]
            .iter()
            .map(|v| var(v))
            .collect()
    }

    fn build(self, eg: &mut EGraph, class: Id, s: &Subst) -> Option<(Op, Vec<Id>)> {
        let x = s[var("?x")];
        // The products may broadcast x against larger tables; the fused op cannot.
        if eg[x].data.ty() != eg[class].data.ty() {
            return None;
        }
        let (mut cos, mut sin) = (s[var("?cos")], s[var("?sin")]);
        if s.get(var("?half")).is_some() {
            // Half-width tables: repeat them over the full width.
            let axis = eg[cos].data.ty()?.rank().checked_sub(1)?;
            let twice = |eg: &mut EGraph, t: Id| add_op(eg, Op::Concat { axis }, vec![t, t]);
            cos = twice(eg, cos);
            sin = twice(eg, sin);
        }
        Some((Op::Rotary, vec![x, cos, sin]))
    }
}

/// Whether `class` is `concat(-x[.., h..], x[.., ..h])` over `x`'s last axis of size `2h`.
fn rotates_half(eg: &EGraph, class: Id, x: Id) -> bool {
    let Some(ty) = eg[x].data.ty() else {
        return false;
    };
    let rank = ty.rank();
    let Some(d) = ty.shape.last().and_then(Dim::as_const) else {
        return false;
    };
    if rank == 0 || d % 2 != 0 {
        return false;
    }
    let h = d / 2;
    eg[class].nodes.iter().any(|n| {
        let Term::Op(Op::Concat { axis }) = eg.analysis.term(n.op) else {
            return false;
        };
        let [neg, low] = n.args[..] else {
            return false;
        };
        *axis == rank - 1
            && is_half(eg, low, x, 0, h)
            && nodes(eg, neg, "neg").any(|m| is_half(eg, m[0], x, h, d))
    })
}

/// Whether `class` holds `x[.., start..end]` (a unit-step slice of the last axis).
fn is_half(eg: &EGraph, class: Id, x: Id, start: i64, end: i64) -> bool {
    let rank = eg[x].data.ty().map_or(0, |t| t.rank());
    eg[class]
        .nodes
        .iter()
        .any(|n| match eg.analysis.term(n.op) {
            Term::Op(Op::Slice { axes }) => {
                let [a] = &axes[..] else { return false };
                eg.find(n.args[0]) == eg.find(x)
                    && a.axis + 1 == rank
                    && a.step == 1
                    && a.start == Dim::from(start)
                    && a.end == Dim::from(end)
            }
            _ => false,
        })
}

/// Matches of `concat(x₁·c - x₂·s, x₁·s + x₂·c)` in `class` (ONNX's spelling), each product
/// in either order, with `x₁`, `x₂` the halves of one `x` and `c`, `s` half-width tables
/// of one rank.
fn complex_product(eg: &EGraph, class: Id) -> Vec<Subst> {
    let mut found = Vec::new();
    for n in &eg[class].nodes {
        let Term::Op(Op::Concat { .. }) = eg.analysis.term(n.op) else {
            continue;
        };
        let [real, imag] = n.args[..] else { continue };
        for d in nodes(eg, real, "sub") {
            for (x1, c) in pairs(eg, d[0], "mul") {
                for (x2, s) in pairs(eg, d[1], "mul") {
                    let Some(x) = halves_of(eg, x1, x2) else {
                        continue;
                    };
                    let same_rank =
                        eg[c].data.ty().map(|t| t.rank()) == eg[s].data.ty().map(|t| t.rank());
                    let imag_ok = pairs(eg, imag, "add")
                        .into_iter()
                        .any(|(a, b)| is_product(eg, a, x1, s) && is_product(eg, b, x2, c));
                    if same_rank && imag_ok && rotates_concat(eg, n.op, x) {
                        let b = [("?x", x), ("?cos", c), ("?sin", s), ("?half", x)];
                        found.push(subst(&b));
                    }
                }
            }
        }
    }
    found
}

/// The `x` whose last-axis halves `lo` and `hi` are.
fn halves_of(eg: &EGraph, lo: Id, hi: Id) -> Option<Id> {
    eg[lo].nodes.iter().find_map(|n| {
        let Term::Op(Op::Slice { .. }) = eg.analysis.term(n.op) else {
            return None;
        };
        let x = n.args[0];
        let d = eg[x].data.ty()?.shape.last()?.as_const()?;
        (d % 2 == 0 && is_half(eg, lo, x, 0, d / 2) && is_half(eg, hi, x, d / 2, d)).then_some(x)
    })
}

/// Whether `class` holds `a·b` in either order.
fn is_product(eg: &EGraph, class: Id, a: Id, b: Id) -> bool {
    let same = |p: Id, q: Id| eg.find(p) == eg.find(q);
    pairs(eg, class, "mul")
        .into_iter()
        .any(|(p, q)| same(p, a) && same(q, b))
}

/// Whether the concat symbol joins `x`'s last axis.
fn rotates_concat(eg: &EGraph, op: egg::Symbol, x: Id) -> bool {
    let rank = eg[x].data.ty().map_or(0, |t| t.rank());
    matches!(eg.analysis.term(op), Term::Op(Op::Concat { axis }) if *axis + 1 == rank)
}
