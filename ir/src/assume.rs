//! What a graph assumes of its symbols: conditions its types hold under but that inference
//! could not prove for every binding. A slice `x[.., 0..seq]` of an axis of 256 has type
//! `[.., seq]` only while `seq <= 256` (the op's bounds are normalized: `0 <= start <= end
//! <= dim`); the interpreter checks each value against its type as it runs, and compiled
//! code, which trusts the types to size its loops, checks these conditions at each binding
//! before it runs.

use crate::{Dim, Graph, Op};

/// `at_most <= bound` must hold at a binding for node `node` to have its type there.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Assumption {
    /// The node's source name.
    pub node: String,
    /// Its op.
    pub op: String,
    /// The smaller side.
    pub at_most: Dim,
    /// The larger side.
    pub bound: Dim,
}

/// The conditions of `g`'s slices that do not hold for every binding of the symbols (each
/// symbol a size, at least 0).
pub fn assumptions(g: &Graph) -> Vec<Assumption> {
    let mut out = Vec::new();
    for node in &g.nodes {
        let Op::Slice { axes } = &node.op else {
            continue;
        };
        let Some(x) = node.inputs.first().map(|v| g.value_type(*v)) else {
            continue;
        };
        for s in axes {
            let Some(dim) = x.shape.get(s.axis) else {
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
            for (a, b) in pairs {
                if !(b.clone() - a.clone()).known_nonnegative() {
                    out.push(Assumption {
                        node: node.name.clone(),
                        op: node.op.name(),
                        at_most: a,
                        bound: b,
                    });
                }
            }
        }
    }
    out
}

impl Assumption {
    /// Whether it holds at `b`; `None` when a symbol is unbound.
    pub fn holds(&self, b: &crate::Bindings) -> Option<bool> {
        Some(self.at_most.eval(b)? <= self.bound.eval(b)?)
    }

    /// The largest value of `symbol` it allows, when it bounds that symbol alone by a
    /// constant (`seq <= 256`, `seq + 1 <= 256`).
    pub fn bounds(&self, symbol: &str) -> Option<i64> {
        let bound = self.bound.as_const()?;
        let a = &self.at_most;
        if a.symbols() != [symbol] {
            return None;
        }
        // `a` is affine in the symbol: `c·symbol + k` with c > 0.
        let k = a.eval(&[(symbol.to_string(), 0)].into_iter().collect())?;
        let c = a.eval(&[(symbol.to_string(), 1)].into_iter().collect())? - k;
        let two = a.eval(&[(symbol.to_string(), 2)].into_iter().collect())?;
        (c > 0 && two == k + 2 * c).then(|| (bound - k).div_euclid(c))
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
}
