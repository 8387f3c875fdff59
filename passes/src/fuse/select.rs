//! `where-false` / `where-true`: `where(c, a, b)` with a constant condition that is false
//! everywhere is `b`, true everywhere is `a` (when that operand already has the result's
//! type). Guards that a frontend computed from a constant mask (the ONNX `Attention` body
//! zeroes rows its causal bias closes; a causal bias closes none) fold away, so the
//! pattern behind them is plain again.

use super::egraph::{EGraph, Term};
use egg::{Id, Subst, Var};
use kiln_ir::{DType, Op, Tensor};

/// A rule condition: `?c` is a bool constant whose elements all equal `value`, and `?x`
/// has the type of the matched class.
pub(super) fn uniformly(
    c: &'static str,
    value: bool,
    x: &'static str,
) -> impl Fn(&mut EGraph, Id, &Subst) -> bool {
    let (c, x): (Var, Var) = (c.parse().expect("var"), x.parse().expect("var"));
    move |eg, id, subst| {
        let decided = eg[subst[c]]
            .nodes
            .iter()
            .any(|n| match eg.analysis.term(n.op) {
                Term::Op(Op::Const(t)) => uniform(t) == Some(value),
                _ => false,
            });
        decided && eg[subst[x]].data.ty() == eg[id].data.ty()
    }
}

/// The value every element of a bool tensor has, if they agree.
fn uniform(t: &Tensor) -> Option<bool> {
    if t.dtype() != DType::Bool || t.is_empty() {
        return None;
    }
    let values = t.to_f64_vec();
    let first = values[0] != 0.0;
    values.iter().all(|v| (*v != 0.0) == first).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uniform_bool_constants_decide() {
        let t = |v: Vec<bool>| Tensor::from_vec(v, &[2]).unwrap();
        assert_eq!(uniform(&t(vec![false, false])), Some(false));
        assert_eq!(uniform(&t(vec![true, true])), Some(true));
        assert_eq!(uniform(&t(vec![true, false])), None);
        assert_eq!(
            uniform(&Tensor::from_vec(vec![0.0f32], &[1]).unwrap()),
            None
        );
    }
}
