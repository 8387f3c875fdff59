//! Identities with uniform constants, as rule conditions: `where(c, a, b)` with a constant
//! condition false (true) everywhere is `b` (`a`); `x + 0`, `0 + x`, `x - 0`, `x · 1`,
//! `1 · x` and `x / 1` are `x` — each only when `x` already has the result's type, so a
//! constant that broadcasts `x` to a larger shape is kept. Guards computed from a constant
//! mask (the ONNX `Attention` body zeroes rows its causal bias closes; a causal bias closes
//! none) and zero biases (TorchScript keeps `+ 0` where dynamo drops it) fold away, so
//! both exporters reach the same form.

use super::egraph::{EGraph, Term};
use egg::{Id, Subst, Var};
use kiln_ir::{Op, Tensor};

/// A rule condition: `?c` is a constant whose elements all equal `value` (bools as 0 and
/// 1), and `?x` has the type of the matched class.
pub(super) fn uniformly(
    c: &'static str,
    value: f64,
    x: &'static str,
) -> impl Fn(&mut EGraph, Id, &Subst) -> bool {
    let (c, x): (Var, Var) = (c.parse().expect("var"), x.parse().expect("var"));
    move |eg, id, subst| {
        is_uniform(eg, subst[c], value) && eg[subst[x]].data.ty() == eg[id].data.ty()
    }
}

/// Whether `class` holds a constant whose elements all equal `value`.
pub(super) fn is_uniform(eg: &EGraph, class: Id, value: f64) -> bool {
    eg[class]
        .nodes
        .iter()
        .any(|n| match eg.analysis.term(n.op) {
            Term::Op(Op::Const(t)) => uniform(t) == Some(value),
            _ => false,
        })
}

/// Constants larger than this are not scanned (weights are never uniform; a check per
/// match would read them whole).
const MAX_SCANNED: usize = 1 << 16;

/// The value every element of `t` has, if they agree (bools as 0 and 1).
fn uniform(t: &Tensor) -> Option<f64> {
    if t.len() > MAX_SCANNED {
        return None;
    }
    let values = t.to_f64_vec();
    let first = *values.first()?;
    values.iter().all(|v| *v == first).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uniform_constants_decide() {
        let t = |v: Vec<bool>| Tensor::from_vec(v, &[2]).unwrap();
        assert_eq!(uniform(&t(vec![false, false])), Some(0.0));
        assert_eq!(uniform(&t(vec![true, true])), Some(1.0));
        assert_eq!(uniform(&t(vec![true, false])), None);
        let z = Tensor::from_vec(vec![0.0f32, -0.0], &[2]).unwrap();
        assert_eq!(uniform(&z), Some(0.0));
        assert_eq!(
            uniform(&Tensor::from_vec(vec![0.0f32, 1e-9], &[2]).unwrap()),
            None
        );
    }
}
