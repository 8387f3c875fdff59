//! The attention fusion: `softmax(q·kᵀ·scale ⊕ mask)·v` → [`Op::Attention`].
//!
//! Exporters spell scaled dot-product attention many ways; the searcher walks back from
//! each `matmul(p, v)` and accepts, at each step, every spelling seen so far:
//! - `p` is `softmax(s)` over the last axis, or `where(isnan(p), 0, p)` around it
//!   (PyTorch's NaN-safe softmax);
//! - `s` is the scaled product, plus an additive mask (either operand order), or
//!   `where(mask, product, -∞)` with a bool mask;
//! - the scale is any mix of scalar factors on `q`, on `kᵀ` (TorchScript splits √scale
//!   over both) and on the product, or a division of the product;
//! - `kᵀ` is a transpose whose last two axes swap those of `k` (`k` itself may be a
//!   transpose: the composed permutation is added);
//! - `k` and `v` may be grouped-query heads repeated by `reshape(expand(reshape(·)))`,
//!   which the fused op reads directly.

use super::egraph::{add_op, EGraph, Term};
use super::rules::{nodes, pairs, subst, var, Fusion};
use egg::{Id, Subst, Var};
use kiln_ir::{
    AttentionAttrs, AttentionMask, DType, Dim, MaskedRows, Op, ReduceKind, TensorType, UnaryOp,
};

/// The attention fusion (rule `attention`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Attention;

/// Variables a match binds. `?q ?kt ?v` always; `?add` or `?keep` with a mask; `?nan` when
/// NaN probabilities become zero, `?closed` when rows the additive mask closes do;
/// `?sq ?sk ?ss` scalar factors on q, kᵀ and the product, `?sd` a scalar divisor of it.
const VARS: [&str; 11] = [
    "?q", "?kt", "?v", "?add", "?keep", "?nan", "?closed", "?sq", "?sk", "?ss", "?sd",
];

/// The guard around the softmax, if any.
#[derive(Clone, Copy, Debug)]
enum Guard {
    /// `where(isnan(p), 0, p)`, in this class.
    ZeroNan(Id),
    /// `where(max(mask) == -∞, 0, p)` over the last axis of this mask (the ONNX body).
    ZeroMasked(Id),
}

impl Fusion for Attention {
    fn find(self, eg: &EGraph, class: Id) -> Vec<Subst> {
        let mut found = Vec::new();
        for mm in nodes(eg, class, "matmul") {
            let (probs, v) = (mm[0], mm[1]);
            for (p, guard) in softmax_input(eg, probs) {
                let Some(mut bindings) = scores(eg, p) else {
                    continue;
                };
                bindings.push(("?v", v));
                match guard {
                    None => {}
                    Some(Guard::ZeroNan(w)) => bindings.push(("?nan", w)),
                    Some(Guard::ZeroMasked(mask)) => {
                        // The guard must read the very mask that is added to the scores.
                        let added = bindings.iter().find(|(name, _)| *name == "?add");
                        if added.is_none_or(|(_, m)| eg.find(*m) != eg.find(mask)) {
                            continue;
                        }
                        bindings.push(("?closed", mask));
                    }
                }
                found.push(subst(&bindings));
                // One spelling per product is enough: the others add the same op.
                break;
            }
        }
        found
    }

    fn vars(self) -> Vec<Var> {
        VARS.iter().map(|v| var(v)).collect()
    }

    fn build(self, eg: &mut EGraph, _class: Id, s: &Subst) -> Option<(Op, Vec<Id>)> {
        let get = |name: &str| s.get(var(name)).copied();
        let scalar = |eg: &EGraph, name: &str| get(name).map(|c| eg[c].data.scalar);
        let mut scale = 1.0f64;
        for factor in ["?sq", "?sk", "?ss"] {
            scale *= scalar(eg, factor).unwrap_or(Some(1.0))?;
        }
        scale /= scalar(eg, "?sd").unwrap_or(Some(1.0))?;
        let k = untranspose(eg, get("?kt")?)?;
        let heads = eg[get("?q")?].data.ty()?.shape.iter().rev().nth(2)?.clone();
        let k = ungrouped(eg, k, &heads);
        let v = ungrouped(eg, get("?v")?, &heads);
        let mut args = vec![get("?q")?, k, v];
        let mask = match (get("?add"), get("?keep")) {
            (Some(m), _) => {
                args.push(m);
                AttentionMask::Add
            }
            (None, Some(m)) => {
                args.push(m);
                AttentionMask::Keep
            }
            (None, None) => AttentionMask::None,
        };
        let attrs = AttentionAttrs {
            scale: scale as f32,
            mask,
            rows: match (get("?nan"), get("?closed")) {
                (Some(_), _) => MaskedRows::ZeroNan,
                (None, Some(_)) => MaskedRows::ZeroMasked,
                (None, None) => MaskedRows::Nan,
            },
        };
        Some((Op::Attention(attrs), args))
    }
}

/// The softmax inputs `s` for which `class` holds `softmax(s)` over the last axis, or
/// such a softmax `p` behind a guard that zeroes masked rows.
fn softmax_input(eg: &EGraph, class: Id) -> Vec<(Id, Option<Guard>)> {
    let mut out: Vec<(Id, Option<Guard>)> = softmax_of(eg, class).map(|s| (s, None)).collect();
    for w in nodes(eg, class, "where") {
        let (cond, zero, p) = (w[0], w[1], w[2]);
        if eg[zero].data.scalar != Some(0.0) {
            continue;
        }
        let is_nan_of_p = eg[cond].nodes.iter().any(|n| {
            eg.analysis.term(n.op) == &Term::Op(Op::Unary(UnaryOp::IsNan))
                && eg.find(n.args[0]) == eg.find(p)
        });
        let guard = if is_nan_of_p {
            Guard::ZeroNan(class)
        } else if let Some(mask) = closed_rows_of(eg, cond) {
            Guard::ZeroMasked(mask)
        } else {
            continue;
        };
        out.extend(softmax_of(eg, p).map(|s| (s, Some(guard))));
    }
    out
}

/// The mask `m` when `class` is `max(m) == -∞`, the max over `m`'s last axis, kept.
fn closed_rows_of(eg: &EGraph, class: Id) -> Option<Id> {
    pairs(eg, class, "equal")
        .into_iter()
        .find_map(|(max, ninf)| {
            if eg[ninf].data.scalar != Some(f64::NEG_INFINITY) {
                return None;
            }
            eg[max]
                .nodes
                .iter()
                .find_map(|n| match eg.analysis.term(n.op) {
                    Term::Op(Op::Reduce {
                        kind: ReduceKind::Max,
                        axes,
                        keep_dims: true,
                    }) => {
                        let rank = eg[n.args[0]].data.ty()?.rank();
                        (rank > 0 && axes[..] == [rank - 1]).then_some(n.args[0])
                    }
                    _ => None,
                })
        })
}

/// The `s` of every `softmax(s)` in `class` over the last axis.
fn softmax_of(eg: &EGraph, class: Id) -> impl Iterator<Item = Id> + '_ {
    let rank = eg[class].data.ty().map_or(0, TensorType::rank);
    eg[class]
        .nodes
        .iter()
        .filter_map(move |n| match eg.analysis.term(n.op) {
            Term::Op(Op::Softmax { axis, log: false }) if rank > 0 && *axis == rank - 1 => {
                Some(n.args[0])
            }
            _ => None,
        })
}

/// Bindings for the scores `class`: the mask, then the scaled product.
fn scores(eg: &EGraph, class: Id) -> Option<Vec<(&'static str, Id)>> {
    let ty = eg[class].data.ty()?;
    for (product, mask) in pairs(eg, class, "add") {
        let fits = eg[mask].data.ty().is_some_and(|m| m.dtype == ty.dtype);
        if let (true, Some(mut b)) = (fits, scaled_product(eg, product, ty)) {
            b.push(("?add", mask));
            return Some(b);
        }
    }
    for w in nodes(eg, class, "where") {
        let (mask, product, fill) = (w[0], w[1], w[2]);
        let is_bool = eg[mask].data.ty().is_some_and(|m| m.dtype == DType::Bool);
        let minus_inf = eg[fill].data.scalar == Some(f64::NEG_INFINITY);
        if let (true, true, Some(mut b)) = (is_bool, minus_inf, scaled_product(eg, product, ty)) {
            b.push(("?keep", mask));
            return Some(b);
        }
    }
    scaled_product(eg, class, ty)
}

/// Bindings for `class` as `q·kᵀ` times or divided by a scalar, with the scores' type
/// `ty` (a mask must not have broadcast the product to a larger shape).
fn scaled_product(eg: &EGraph, class: Id, ty: &TensorType) -> Option<Vec<(&'static str, Id)>> {
    if eg[class].data.ty() != Some(ty) {
        return None;
    }
    for (inner, c) in pairs(eg, class, "mul") {
        if let (Some(_), Some(mut b)) = (eg[c].data.scalar, product(eg, inner, ty)) {
            b.push(("?ss", c));
            return Some(b);
        }
    }
    for d in nodes(eg, class, "div") {
        if let (Some(_), Some(mut b)) = (eg[d[1]].data.scalar, product(eg, d[0], ty)) {
            b.push(("?sd", d[1]));
            return Some(b);
        }
    }
    product(eg, class, ty)
}

/// Bindings for `class` as `matmul(q, kᵀ)`, each operand possibly times a scalar, and
/// `kᵀ` a transpose of the last two axes.
fn product(eg: &EGraph, class: Id, ty: &TensorType) -> Option<Vec<(&'static str, Id)>> {
    if eg[class].data.ty() != Some(ty) || ty.rank() < 3 {
        return None;
    }
    for mm in nodes(eg, class, "matmul") {
        let (q, sq) = unscaled(eg, mm[0]);
        let (kt, sk) = unscaled(eg, mm[1]);
        if !swaps_last_two(eg, kt) {
            continue;
        }
        let mut b = vec![("?q", q), ("?kt", kt)];
        b.extend(sq.map(|c| ("?sq", c)));
        b.extend(sk.map(|c| ("?sk", c)));
        return Some(b);
    }
    None
}

/// `class` as `x · c` with `c` a scalar constant and `x` of the same type, or as itself.
fn unscaled(eg: &EGraph, class: Id) -> (Id, Option<Id>) {
    pairs(eg, class, "mul")
        .into_iter()
        .find(|(x, c)| eg[*c].data.scalar.is_some() && eg[*x].data.ty() == eg[class].data.ty())
        .map_or((class, None), |(x, c)| (x, Some(c)))
}

/// The permutation of each transpose in `class` whose last two axes come from its input's
/// last two, swapped (so that undoing the swap leaves the input's last axis last).
fn transposes(eg: &EGraph, class: Id) -> impl Iterator<Item = (Id, Vec<usize>)> + '_ {
    eg[class]
        .nodes
        .iter()
        .filter_map(|n| match eg.analysis.term(n.op) {
            Term::Op(Op::Transpose { perm }) if perm.len() >= 2 => {
                let mut undone = perm.clone();
                let r = perm.len();
                undone.swap(r - 2, r - 1);
                Some((n.args[0], undone))
            }
            _ => None,
        })
}

/// Whether `class` holds a transpose that swaps its result's last two axes relative to
/// some layout of its input.
fn swaps_last_two(eg: &EGraph, class: Id) -> bool {
    transposes(eg, class).next().is_some()
}

/// `k` for `kᵀ = class`: the transpose's input when the swap undoes it, else a transpose
/// of that input by the permutation with the swap undone (added to the e-graph).
fn untranspose(eg: &mut EGraph, class: Id) -> Option<Id> {
    let (input, perm) = transposes(eg, class).next()?;
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Some(input);
    }
    Some(add_op(eg, Op::Transpose { perm }, vec![input]))
}

/// The grouped key/value heads `x[.., G, S, D]` behind `class` when it repeats them to
/// `heads` as `reshape(expand(reshape(x, [.., G, 1, S, D]), [.., G, H/G, S, D]))`, else
/// `class` itself.
fn ungrouped(eg: &EGraph, class: Id, heads: &Dim) -> Id {
    let shape = |c: Id| eg[c].data.ty().map(|t| t.shape.clone());
    let Some(out) = shape(class) else {
        return class;
    };
    let r = out.len();
    if r < 3 || &out[r - 3] != heads {
        return class;
    }
    let is_reshape = |op: &Op| matches!(op, Op::Reshape { .. });
    for repeated in nodes_of(eg, class, is_reshape) {
        for unsqueezed in nodes_of(eg, repeated, |op| matches!(op, Op::Expand { .. })) {
            for x_class in nodes_of(eg, unsqueezed, is_reshape) {
                let (Some(e), Some(s), Some(x)) =
                    (shape(repeated), shape(unsqueezed), shape(x_class))
                else {
                    continue;
                };
                // x[.., G, S, D] → s[.., G, 1, S, D] → e[.., G, g, S, D] → out[.., G·g, S, D].
                let lead = &out[..r - 3];
                let ok = x.len() == r
                    && s.len() == r + 1
                    && e.len() == r + 1
                    && x[..r - 3] == *lead
                    && e[..r - 3] == *lead
                    && s[..r - 3] == *lead
                    && s[r - 3] == x[r - 3]
                    && s[r - 2] == Dim::from(1i64)
                    && s[r - 1..] == x[r - 2..]
                    && e[r - 3] == x[r - 3]
                    && e[r - 1..] == x[r - 2..]
                    && x[r - 3].clone() * e[r - 2].clone() == out[r - 3]
                    && out[r - 2..] == x[r - 2..];
                if ok {
                    return x_class;
                }
            }
        }
    }
    class
}

/// The operand of each one-input node of `class` whose op satisfies `pred`.
fn nodes_of(eg: &EGraph, class: Id, pred: impl Fn(&Op) -> bool) -> Vec<Id> {
    eg[class]
        .nodes
        .iter()
        .filter(|n| matches!(eg.analysis.term(n.op), Term::Op(op) if pred(op)))
        .map(|n| n.args[0])
        .collect()
}

/// Why `class` is not the scores of an attention (for `kiln inspect --why-not`).
pub(super) fn why_not_scores(eg: &EGraph, class: Id) -> Result<(), String> {
    if scores(eg, class).is_some() {
        return Ok(());
    }
    // The products within two steps (a mask, then a scale) of the scores.
    let mut near = vec![class];
    for _ in 0..2 {
        let next: Vec<Id> = near
            .iter()
            .flat_map(|&c| eg[c].nodes.iter().flat_map(|n| n.args.iter().copied()))
            .collect();
        near.extend(next);
    }
    let products: Vec<&[Id]> = near.iter().flat_map(|&c| nodes(eg, c, "matmul")).collect();
    if products.is_empty() {
        return Err("the softmax input is not a product q·kᵀ, scaled and masked".into());
    }
    if !products
        .iter()
        .any(|m| swaps_last_two(eg, unscaled(eg, m[1]).0))
    {
        return Err("the product's right operand is not a transpose of the keys".into());
    }
    Err(
        "the product is scaled by a non-scalar, or masked by neither an additive mask of \
         the scores' dtype nor a bool mask filled with -∞"
            .into(),
    )
}
