//! What a graph assumes of its symbols: conditions its types, and the kernels compiled from
//! them, hold under but that could not be proved for every binding. Compiled code trusts
//! the types to size its loops, so it checks these at each binding before it runs, and
//! refuses a binding that breaks one (as the interpreter rejects a value that breaks its
//! type):
//! - a slice `x[.., 0..seq]` of an axis of 256 has type `[.., seq]` only while `seq <= 256`
//!   (the op's bounds are normalized: `0 <= start <= end <= dim`);
//! - inference unifies a symbol with a constant it meets (`matmul [n, k] × [64, m]` takes
//!   `k = 64`, a concat's other axes, a reshape whose counts it cannot compare): the node's
//!   types hold where inference at the binding's concrete shapes gives them again;
//! - a kernel reads a symbolic axis as never broadcasting, so an access must stay inside
//!   its buffer at the binding (a symbol bound to 1 where inference took it as 64).

use crate::{infer, Bindings, Dim, Graph, Op, TensorType};
use std::fmt;

/// A condition node `node` needs at a binding.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Assumption {
    /// The node's source name.
    pub node: String,
    /// Its op.
    pub op: String,
    /// What must hold.
    pub cond: Condition,
}

/// What an [`Assumption`] needs of a binding.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Condition {
    /// `at_most <= bound`.
    AtMost {
        /// The smaller side.
        at_most: Dim,
        /// The larger side.
        bound: Dim,
    },
    /// Inference of `op` at the inputs' concrete types gives the outputs' types.
    Infers {
        /// The op, its dims still symbolic.
        op: Op,
        /// Its inputs' types.
        inputs: Vec<TensorType>,
        /// Its outputs' types.
        outputs: Vec<TensorType>,
    },
    /// A kernel's access over a loop nest of `extents` reaches elements `low..=high` of a
    /// buffer of `len` elements: unless an extent is 0, `0 <= low` and `high < len`.
    InBounds {
        /// The loop extents.
        extents: Vec<Dim>,
        /// The lowest element reached.
        low: Dim,
        /// The highest element reached.
        high: Dim,
        /// The buffer's elements.
        len: Dim,
    },
}

/// The conditions of `g`'s nodes that do not hold for every binding of the symbols (each
/// symbol a size, at least 0): slice bounds, and the types of nodes whose inference may
/// have unified a symbol with something else.
pub fn assumptions(g: &Graph) -> Vec<Assumption> {
    let mut out = Vec::new();
    for node in &g.nodes {
        let assume = |cond| Assumption {
            node: node.name.clone(),
            op: node.op.name(),
            cond,
        };
        if let Op::Slice { axes } = &node.op {
            let Some(x) = node.inputs.first().map(|v| g.value_type(*v)) else {
                continue;
            };
            out.extend(slice_bounds(axes, &x.shape).into_iter().map(assume));
            continue;
        }
        let inputs: Vec<TensorType> = (node.inputs.iter())
            .map(|v| g.value_type(*v).clone())
            .collect();
        let outputs: Vec<TensorType> = (node.outputs.iter())
            .map(|v| g.value_type(*v).clone())
            .collect();
        if may_unify(&node.op, &inputs, &outputs) {
            out.push(assume(Condition::Infers {
                op: node.op.clone(),
                inputs,
                outputs,
            }));
        }
    }
    out
}

/// The bounds of a slice of an axis of `shape` that are not known to hold.
fn slice_bounds(axes: &[crate::SliceAxis], shape: &[Dim]) -> Vec<Condition> {
    let mut out = Vec::new();
    for s in axes {
        let Some(dim) = shape.get(s.axis) else {
            continue;
        };
        let pairs = if s.step > 0 {
            [
                (Dim::from(0i64), s.start.clone()),
                (s.start.clone(), s.end.clone()),
                (s.end.clone(), dim.clone()),
            ]
        } else {
            [
                (Dim::from(-1i64), s.end.clone()),
                (s.end.clone(), s.start.clone()),
                (s.start.clone(), dim.clone() - Dim::from(1i64)),
            ]
        };
        for (at_most, bound) in pairs {
            if !(bound.clone() - at_most.clone()).known_nonnegative() {
                out.push(Condition::AtMost { at_most, bound });
            }
        }
    }
    out
}

/// Whether inference of `op` may have taken a symbol for something it is not at every
/// binding: ops whose rules only copy or drop dims cannot, nor can any op whose types are
/// all constant (inference checked them exactly) or whose inputs all have the output's
/// shape.
fn may_unify(op: &Op, inputs: &[TensorType], outputs: &[TensorType]) -> bool {
    let symbolic = |t: &TensorType| t.shape.iter().any(|d| !d.is_const());
    if !inputs.iter().chain(outputs).any(symbolic) {
        return false;
    }
    match op {
        Op::Const(_)
        | Op::ShapeOf
        | Op::Unary(_)
        | Op::Cast { .. }
        | Op::Bitcast { .. }
        | Op::Reduce { .. }
        | Op::ArgReduce { .. }
        | Op::Softmax { .. }
        | Op::Transpose { .. }
        | Op::Trilu { .. }
        | Op::Scan { .. }
        | Op::NonZero { .. } => false,
        Op::Binary(_) | Op::Where => {
            let shape = &outputs[0].shape;
            !inputs.iter().all(|t| &t.shape == shape)
        }
        _ => true,
    }
}

impl Assumption {
    /// `Ok` when it holds at `b`, else why not (with the values at `b`).
    pub fn check(&self, b: &Bindings) -> Result<(), String> {
        self.cond.check(b)
    }

    /// Whether it holds at `b`; `None` when a symbol is unbound.
    pub fn holds(&self, b: &Bindings) -> Option<bool> {
        self.cond.holds(b)
    }

    /// The largest value of `symbol` it allows, when it bounds that symbol alone by a
    /// constant (`seq <= 256`, `seq + 1 <= 256`).
    pub fn bounds(&self, symbol: &str) -> Option<i64> {
        let Condition::AtMost { at_most: a, bound } = &self.cond else {
            return None;
        };
        let bound = bound.as_const()?;
        if a.symbols() != [symbol] {
            return None;
        }
        // `a` is affine in the symbol: `c·symbol + k` with c > 0.
        let at = |v| a.eval(&[(symbol.to_string(), v)].into_iter().collect());
        let (k, one, two) = (at(0)?, at(1)?, at(2)?);
        let c = one - k;
        (c > 0 && two == k + 2 * c).then(|| (bound - k).div_euclid(c))
    }
}

impl fmt::Display for Assumption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node `{}` ({}) needs {}", self.node, self.op, self.cond)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::AtMost { at_most, bound } => write!(f, "{at_most} <= {bound}"),
            Condition::Infers {
                inputs, outputs, ..
            } => write!(f, "{} -> {}", types(inputs), types(outputs)),
            Condition::InBounds { low, high, len, .. } => {
                write!(f, "0 <= {low} and {high} < {len} (a kernel's reads)")
            }
        }
    }
}

/// Types separated by commas, in parentheses.
fn types(ts: &[TensorType]) -> String {
    let s: Vec<String> = ts.iter().map(|t| t.to_string()).collect();
    format!("({})", s.join(", "))
}

/// `t` at `b`; `None` when a dim has no value there.
fn concrete(t: &TensorType, b: &Bindings) -> Option<TensorType> {
    let shape = (t.shape.iter())
        .map(|d| d.eval(b).map(Dim::from))
        .collect::<Option<_>>()?;
    Some(TensorType::new(t.dtype, shape))
}

impl Condition {
    /// Every dim it mentions: its types' and its op's dim attributes.
    fn dims(&self) -> Vec<&Dim> {
        match self {
            Condition::AtMost { at_most, bound } => vec![at_most, bound],
            Condition::Infers {
                op,
                inputs,
                outputs,
            } => (inputs.iter().chain(outputs))
                .flat_map(|t| &t.shape)
                .chain(op.dim_attributes())
                .collect(),
            Condition::InBounds {
                extents,
                low,
                high,
                len,
            } => extents.iter().chain([low, high, len]).collect(),
        }
    }

    /// Every symbol it mentions, sorted: whether it holds depends on their values only.
    pub fn symbols(&self) -> Vec<String> {
        let mut out: Vec<String> = self.dims().iter().flat_map(|d| d.symbols()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Whether it holds at `b`; `None` when a symbol is unbound.
    pub fn holds(&self, b: &Bindings) -> Option<bool> {
        match self.check(b) {
            Ok(()) => Some(true),
            Err(_) if self.unbound(b) => None,
            Err(_) => Some(false),
        }
    }

    fn unbound(&self, b: &Bindings) -> bool {
        self.dims().iter().any(|d| d.eval(b).is_none())
    }

    /// `Ok` when it holds at `b`, else why not.
    pub fn check(&self, b: &Bindings) -> Result<(), String> {
        let eval = |d: &Dim| d.eval(b).ok_or_else(|| format!("`{d}` has no value"));
        match self {
            Condition::AtMost { at_most, bound } => {
                let (x, y) = (eval(at_most)?, eval(bound)?);
                match x <= y {
                    true => Ok(()),
                    false => Err(format!("{at_most} <= {bound}, but {x} > {y}")),
                }
            }
            Condition::Infers {
                op,
                inputs,
                outputs,
            } => {
                let at = |ts: &[TensorType]| {
                    (ts.iter())
                        .map(|t| concrete(t, b))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| "a dim of its types has no value".to_string())
                };
                let (ins, outs) = (at(inputs)?, at(outputs)?);
                let refs: Vec<&TensorType> = ins.iter().collect();
                let got = infer(&op.substitute(b), &refs)
                    .map_err(|e| format!("at inputs {}: {e}", types(&ins)))?;
                match got == outs {
                    true => Ok(()),
                    false => Err(format!(
                        "inputs {} give {}, not the {} it was compiled for",
                        types(&ins),
                        types(&got),
                        types(&outs)
                    )),
                }
            }
            Condition::InBounds {
                extents,
                low,
                high,
                len,
            } => {
                for e in extents {
                    if eval(e)? == 0 {
                        return Ok(());
                    }
                }
                let (lo, hi, n) = (eval(low)?, eval(high)?, eval(len)?);
                match 0 <= lo && hi < n {
                    true => Ok(()),
                    false => Err(format!(
                        "a kernel would reach elements {lo}..={hi} of a buffer of {n}"
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    #[test]
    fn a_slice_of_a_table_bounds_its_symbol() {
        let g = parse(
            "graph @g(%x: f32[seq]) -> i64[1, seq] {
                %t = const i64[1, 4] [0, 1, 2, 3]
                %s = slice %t {axes=[1], starts=[0], ends=[seq], steps=[1]}
                return %s
            }",
        )
        .unwrap();
        let a = assumptions(&g);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].bounds("seq"), Some(4));
        let at = |n| [("seq".to_string(), n)].into_iter().collect();
        assert_eq!(a[0].holds(&at(4)), Some(true));
        assert_eq!(a[0].holds(&at(5)), Some(false));
    }

    #[test]
    fn a_symbol_unified_with_a_constant_holds_only_at_that_value() {
        let g = parse(
            "graph @g(%x: f32[2, k], %w: f32[4, 3]) -> f32[2, 3] {
                %y = matmul %x, %w
                return %y
            }",
        )
        .unwrap();
        let a = assumptions(&g);
        assert_eq!(a.len(), 1, "{a:?}");
        let at = |n| [("k".to_string(), n)].into_iter().collect();
        assert_eq!(a[0].holds(&at(4)), Some(true));
        let why = a[0].check(&at(5)).unwrap_err();
        assert!(why.contains("contraction dims differ (5 vs 4)"), "{why}");
        assert_eq!(a[0].holds(&Bindings::new()), None);
    }
}
