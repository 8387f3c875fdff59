//! The rewrite rules, each a named item. Canonicalization rules are egg patterns that bring
//! the spellings exporters use to one form (`pow(x, 2)` → `x·x`, `a / sqrt(b)` →
//! `a · rsqrt(b)`, …); fusion rules are searchers over that form that add the fused op to
//! the matched class. Rules only add equivalent terms; extraction decides what is kept.

use super::egraph::{add_op, EGraph, ENode, Term, Types};
use super::identities::uniformly;
use egg::{rewrite, Applier, Id, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};
use kiln_ir::{infer, Op, ReduceKind, TensorType, UnaryOp};
use std::sync::Arc;

/// A rule and the phase it runs in.
pub type Rule = Rewrite<ENode, Types>;

fn scalar_is(var: &'static str, value: f64) -> impl Fn(&mut EGraph, Id, &Subst) -> bool {
    let v: Var = var.parse().expect("a pattern variable");
    move |eg, _, subst| eg[subst[v]].data.scalar == Some(value)
}

/// Rules that bring exporter spellings to one canonical form.
pub fn canonical() -> Vec<Rule> {
    let rules = vec![
        rewrite!("pow2-to-mul"; "(pow ?x ?c)" => "(mul ?x ?x)" if scalar_is("?c", 2.0)),
        rewrite!("div-sqrt-to-mul-rsqrt"; "(div ?a (sqrt ?b))" => "(mul ?a (rsqrt ?b))"),
        rewrite!("reciprocal-sqrt-to-rsqrt"; "(reciprocal (sqrt ?b))" => "(rsqrt ?b)"),
        rewrite!("one-over-to-reciprocal"; "(div ?c ?b)" => "(reciprocal ?b)" if one_over("?c", "?b")),
        rewrite!("where-false"; "(where ?c ?a ?b)" => "?b" if uniformly("?c", 0.0, "?b")),
        rewrite!("where-true"; "(where ?c ?a ?b)" => "?a" if uniformly("?c", 1.0, "?a")),
        rewrite!("add-zero"; "(add ?x ?c)" => "?x" if uniformly("?c", 0.0, "?x")),
        rewrite!("zero-add"; "(add ?c ?x)" => "?x" if uniformly("?c", 0.0, "?x")),
        rewrite!("sub-zero"; "(sub ?x ?c)" => "?x" if uniformly("?c", 0.0, "?x")),
        rewrite!("mul-one"; "(mul ?x ?c)" => "?x" if uniformly("?c", 1.0, "?x")),
        rewrite!("one-mul"; "(mul ?c ?x)" => "?x" if uniformly("?c", 1.0, "?x")),
        rewrite!("div-one"; "(div ?x ?c)" => "?x" if uniformly("?c", 1.0, "?x")),
    ];
    let rules = rules.into_iter().chain(super::canon::rules());
    let mut rules: Vec<Rule> = rules.map(recorded).collect();
    let layout = super::layout::TransposeThroughReshape;
    rules.push(fusion("transpose-through-reshape", layout));
    rules
}

/// `rule`, with every class it rewrites recorded in [`Types::rewritten`] (for `--explain`).
fn recorded(mut rule: Rule) -> Rule {
    rule.applier = Arc::new(Recorded(rule.applier.clone()));
    rule
}

/// An applier that records where it applied, then defers to the rule's own.
struct Recorded(Arc<dyn Applier<ENode, Types> + Sync + Send>);

impl Applier<ENode, Types> for Recorded {
    fn apply_matches(
        &self,
        eg: &mut EGraph,
        matches: &[SearchMatches<ENode>],
        rule: Symbol,
    ) -> Vec<Id> {
        // One match at a time, so that only classes the rule really rewrote (its condition
        // held) are recorded.
        let mut changed = Vec::new();
        for m in matches {
            let ids = self.0.apply_matches(eg, std::slice::from_ref(m), rule);
            if !ids.is_empty() {
                eg.analysis.rewritten.push((m.eclass, rule));
            }
            changed.extend(ids);
        }
        changed
    }

    fn apply_one(
        &self,
        eg: &mut EGraph,
        eclass: Id,
        subst: &Subst,
        ast: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        self.0.apply_one(eg, eclass, subst, ast, rule)
    }

    fn vars(&self) -> Vec<Var> {
        self.0.vars()
    }
}

/// `?c` is the constant 1 and dividing it by `?b` does not broadcast to a larger shape.
fn one_over(c: &'static str, b: &'static str) -> impl Fn(&mut EGraph, Id, &Subst) -> bool {
    let (c, b): (Var, Var) = (c.parse().expect("var"), b.parse().expect("var"));
    move |eg, id, subst| {
        eg[subst[c]].data.scalar == Some(1.0) && eg[subst[b]].data.ty() == eg[id].data.ty()
    }
}

/// The fusion rules: RMSNorm from its decomposition, LayerNorm as RMSNorm of the centered
/// input plus a bias, and the activations GELU (erf and tanh forms) and SiLU.
pub fn fusions() -> Vec<Rule> {
    vec![
        fusion("rms-norm", Norm::Rms),
        fusion("layer-norm", Norm::Layer),
        fusion("gelu-erf", Activation::Gelu),
        fusion("gelu-tanh", Activation::GeluTanh),
        fusion("silu", Activation::Silu),
        fusion("attention", super::attention::Attention),
        fusion("rotary", super::rotary::Rotary),
    ]
}

/// A fusion: where its pattern holds, and the fused op it adds there.
pub(super) trait Fusion: Copy + Send + Sync + 'static {
    /// The matches in `class`.
    fn find(self, eg: &EGraph, class: Id) -> Vec<Subst>;
    /// The variables `find` binds.
    fn vars(self) -> Vec<Var>;
    /// The fused op and its operands for one match (`None`: nothing to add).
    /// May add the operands it needs (a transpose) to the e-graph.
    fn build(self, eg: &mut EGraph, class: Id, subst: &Subst) -> Option<(Op, Vec<Id>)>;
}

/// A [`Fusion`] as an egg searcher and applier.
#[derive(Clone, Copy)]
struct FusionRule<F>(F);

pub(super) fn fusion<F: Fusion>(name: &str, f: F) -> Rule {
    Rewrite::new(name, FusionRule(f), FusionRule(f)).expect("a valid rule")
}

impl<F: Fusion> Searcher<ENode, Types> for FusionRule<F> {
    fn search_eclass_with_limit(
        &self,
        eg: &EGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, ENode>> {
        let mut substs = self.0.find(eg, eclass);
        substs.truncate(limit);
        (!substs.is_empty()).then_some(SearchMatches {
            eclass,
            substs,
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        self.0.vars()
    }
}

impl<F: Fusion> Applier<ENode, Types> for FusionRule<F> {
    /// Adds the fused op to the matched class when it type-checks (parameters broadcast
    /// without growing the result), recording the rule for `--explain`.
    fn apply_one(
        &self,
        eg: &mut EGraph,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<ENode>>,
        rule: Symbol,
    ) -> Vec<Id> {
        let Some((op, args)) = self.0.build(eg, eclass, subst) else {
            return vec![];
        };
        if !well_typed(eg, &op, &args) {
            return vec![];
        }
        let id = add_op(eg, op, args);
        eg.analysis.made_by.push((id, rule));
        if eg.union(id, eclass) {
            vec![id]
        } else {
            vec![]
        }
    }
}

/// The pattern variable `name` (`?x`).
pub(super) fn var(name: &str) -> Var {
    name.parse().expect("a pattern variable")
}

/// The e-nodes of `class` whose op is the attribute-free op `name`, as operand lists.
pub(super) fn nodes<'a>(
    eg: &'a EGraph,
    class: Id,
    name: &'a str,
) -> impl Iterator<Item = &'a [Id]> + 'a {
    let sym = Symbol::from(name);
    eg[class]
        .nodes
        .iter()
        .filter(move |n| n.op == sym)
        .map(|n| n.args.as_slice())
}

/// Operand pairs of the commutative binary op `name` in `class`, in both orders.
pub(super) fn pairs<'a>(eg: &'a EGraph, class: Id, name: &'a str) -> Vec<(Id, Id)> {
    nodes(eg, class, name)
        .flat_map(|a| [(a[0], a[1]), (a[1], a[0])])
        .collect()
}

/// Whether `class` holds `reduce_mean(of)` over the last axis with the axis kept.
pub(super) fn is_mean_last(eg: &EGraph, class: Id, of: Id) -> bool {
    let Some(rank) = eg[of].data.ty().map(TensorType::rank) else {
        return false;
    };
    eg[class]
        .nodes
        .iter()
        .any(|n| match eg.analysis.term(n.op) {
            Term::Op(Op::Reduce {
                kind: ReduceKind::Mean,
                axes,
                keep_dims: true,
            }) => rank > 0 && axes[..] == [rank - 1] && eg.find(n.args[0]) == eg.find(of),
            _ => false,
        })
}

/// Whether `class` holds `x · x`.
pub(super) fn is_square_of(eg: &EGraph, class: Id, x: Id) -> bool {
    nodes(eg, class, "mul").any(|m| eg.find(m[0]) == eg.find(x) && eg.find(m[1]) == eg.find(x))
}

/// The epsilon classes `eps` for which `class` holds `rsqrt(mean(x·x) + eps)`, the mean
/// over the last axis and `eps` a scalar constant.
fn inverse_rms(eg: &EGraph, class: Id, x: Id) -> Vec<Id> {
    let mut found = Vec::new();
    for r in nodes(eg, class, "rsqrt") {
        for (mean, eps) in pairs(eg, r[0], "add") {
            if eg[eps].data.scalar.is_none() {
                continue;
            }
            let squares = eg[mean].nodes.iter().map(|n| n.args.first().copied());
            let ok = squares
                .flatten()
                .any(|sq| is_square_of(eg, sq, x) && is_mean_last(eg, mean, sq));
            if ok {
                found.push(eps);
            }
        }
    }
    found
}

/// The norm fusions.
#[derive(Clone, Copy, Debug)]
enum Norm {
    /// `x · rsqrt(mean(x·x) + eps) · scale` (either product order) → `?x ?scale ?eps`.
    Rms,
    /// `rms_norm(x - mean(x), scale) + bias` → `?x ?scale ?bias`, and `?rms`, the class
    /// whose rms_norm carries the epsilon.
    Layer,
}

impl Fusion for Norm {
    fn find(self, eg: &EGraph, class: Id) -> Vec<Subst> {
        let mut found = Vec::new();
        match self {
            Norm::Rms => {
                for (normalized, scale) in pairs(eg, class, "mul") {
                    for (x, inv) in pairs(eg, normalized, "mul") {
                        for eps in inverse_rms(eg, inv, x) {
                            found.push(subst(&[("?x", x), ("?scale", scale), ("?eps", eps)]));
                        }
                    }
                }
            }
            Norm::Layer => {
                for (rms, bias) in pairs(eg, class, "add") {
                    for n in &eg[rms].nodes {
                        let Term::Op(Op::RmsNorm { .. }) = eg.analysis.term(n.op) else {
                            continue;
                        };
                        let (centered, scale) = (n.args[0], n.args[1]);
                        for d in nodes(eg, centered, "sub") {
                            if is_mean_last(eg, d[1], d[0]) {
                                let bindings = [
                                    ("?x", d[0]),
                                    ("?scale", scale),
                                    ("?bias", bias),
                                    ("?rms", rms),
                                ];
                                found.push(subst(&bindings));
                            }
                        }
                    }
                }
            }
        }
        found
    }

    fn vars(self) -> Vec<Var> {
        match self {
            Norm::Rms => vec![var("?x"), var("?scale"), var("?eps")],
            Norm::Layer => vec![var("?x"), var("?scale"), var("?bias"), var("?rms")],
        }
    }

    fn build(self, eg: &mut EGraph, _class: Id, subst: &Subst) -> Option<(Op, Vec<Id>)> {
        let (x, scale) = (subst[var("?x")], subst[var("?scale")]);
        // Scale and bias are per-feature parameters: a tensor that varies along other axes
        // (a residual added after a norm whose zero bias folded away) is not one, and
        // fusing it would recompute the norm for each such sum.
        let params = [Some(scale), subst.get(var("?bias")).copied()];
        if !params.into_iter().flatten().all(|p| per_feature(eg, p)) {
            return None;
        }
        Some(match self {
            Norm::Rms => {
                let epsilon = eg[subst[var("?eps")]].data.scalar? as f32;
                (Op::RmsNorm { epsilon }, vec![x, scale])
            }
            Norm::Layer => {
                // The epsilon is the one of the rms_norm this builds on.
                let rms = &eg[subst[var("?rms")]].nodes;
                let epsilon = rms.iter().find_map(|n| match eg.analysis.term(n.op) {
                    Term::Op(Op::RmsNorm { epsilon }) => Some(*epsilon),
                    _ => None,
                })?;
                (
                    Op::LayerNorm { epsilon },
                    vec![x, scale, subst[var("?bias")]],
                )
            }
        })
    }
}

/// Whether `class` varies along the last axis only (every other dim is 1).
fn per_feature(eg: &EGraph, class: Id) -> bool {
    eg[class].data.ty().is_some_and(|t| {
        let lead = t.shape.len().saturating_sub(1);
        t.shape[..lead].iter().all(|d| d.as_const() == Some(1))
    })
}

pub(super) fn subst(bindings: &[(&str, Id)]) -> Subst {
    let mut s = Subst::with_capacity(bindings.len());
    for (name, id) in bindings {
        s.insert(var(name), *id);
    }
    s
}

/// Whether `op` applied to these classes infers (parameters broadcast without growing).
pub(super) fn well_typed(eg: &EGraph, op: &Op, args: &[Id]) -> bool {
    let types: Option<Vec<&TensorType>> = args.iter().map(|a| eg[*a].data.ty()).collect();
    types.is_some_and(|t| infer(op, &t).is_ok())
}

/// Whether `class` is a scalar constant within float rounding of `value` (exporters write
/// √2 or √(2/π) at different precisions).
pub(super) fn scalar_near(eg: &EGraph, class: Id, value: f64) -> bool {
    eg[class]
        .data
        .scalar
        .is_some_and(|v| (v - value).abs() <= 1e-6 * value.abs())
}

/// The ways `class` is a product of three factors, whatever the association (`(a·b)·c`
/// or `a·(b·c)`) and order: every permutation is listed.
pub(super) fn three_factors(eg: &EGraph, class: Id) -> Vec<[Id; 3]> {
    let mut out = Vec::new();
    for (left, right) in pairs(eg, class, "mul") {
        for (a, b) in pairs(eg, left, "mul") {
            out.extend([[a, b, right], [a, right, b], [right, a, b]]);
        }
    }
    out
}

/// Whether `class` is `one + f(inner)` (either order) for the unary op named `f`, giving
/// `inner`.
pub(super) fn one_plus<'a>(eg: &'a EGraph, class: Id, f: &'a str) -> Vec<Id> {
    let mut out = Vec::new();
    for (term, one) in pairs(eg, class, "add") {
        if scalar_near(eg, one, 1.0) {
            out.extend(nodes(eg, term, f).map(|n| n[0]));
        }
    }
    out
}

/// Whether `class` is `x / √2` or `x · (1/√2)`.
pub(super) fn is_x_over_root2(eg: &EGraph, class: Id, x: Id) -> bool {
    let same = |a: Id| eg.find(a) == eg.find(x);
    let div = nodes(eg, class, "div")
        .any(|n| same(n[0]) && scalar_near(eg, n[1], std::f64::consts::SQRT_2));
    let mul = pairs(eg, class, "mul")
        .into_iter()
        .any(|(a, k)| same(a) && scalar_near(eg, k, std::f64::consts::FRAC_1_SQRT_2));
    div || mul
}

/// Whether `class` is `x³`, as `pow(x, 3)` or a product of three `x`.
fn is_cube(eg: &EGraph, class: Id, x: Id) -> bool {
    let same = |a: Id| eg.find(a) == eg.find(x);
    let pow = nodes(eg, class, "pow").any(|n| same(n[0]) && scalar_near(eg, n[1], 3.0));
    let product = three_factors(eg, class)
        .iter()
        .any(|f| f.iter().all(|a| same(*a)));
    pow || product
}

/// Whether `class` is `√(2/π) · (x + 0.044715 · x³)`, products in either order.
pub(super) fn is_tanh_argument(eg: &EGraph, class: Id, x: Id) -> bool {
    let same = |a: Id| eg.find(a) == eg.find(x);
    pairs(eg, class, "mul").into_iter().any(|(sum, k)| {
        scalar_near(eg, k, 0.7978845608028654)
            && pairs(eg, sum, "add").into_iter().any(|(a, term)| {
                same(a)
                    && pairs(eg, term, "mul")
                        .into_iter()
                        .any(|(cube, c)| scalar_near(eg, c, 0.044715) && is_cube(eg, cube, x))
            })
    })
}

/// The activation fusions.
#[derive(Clone, Copy, Debug)]
enum Activation {
    /// `x · 0.5 · (1 + erf(x / √2))`, any association and order → `?x`.
    Gelu,
    /// `x · 0.5 · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))` → `?x`.
    GeluTanh,
    /// `x · sigmoid(x)` → `?x`.
    Silu,
}

impl Activation {
    fn op(self) -> UnaryOp {
        match self {
            Activation::Gelu => UnaryOp::Gelu,
            Activation::GeluTanh => UnaryOp::GeluTanh,
            Activation::Silu => UnaryOp::Silu,
        }
    }

    fn matches(self, eg: &EGraph, class: Id) -> Vec<Subst> {
        let mut found: Vec<Id> = Vec::new();
        match self {
            Activation::Silu => {
                for (x, s) in pairs(eg, class, "mul") {
                    if nodes(eg, s, "sigmoid").any(|n| eg.find(n[0]) == eg.find(x)) {
                        found.push(x);
                    }
                }
            }
            Activation::Gelu | Activation::GeluTanh => {
                for [x, half, s] in three_factors(eg, class) {
                    if !scalar_near(eg, half, 0.5) {
                        continue;
                    }
                    let matched = match self {
                        Activation::Gelu => one_plus(eg, s, "erf")
                            .into_iter()
                            .any(|t| is_x_over_root2(eg, t, x)),
                        _ => one_plus(eg, s, "tanh")
                            .into_iter()
                            .any(|t| is_tanh_argument(eg, t, x)),
                    };
                    if matched {
                        found.push(x);
                    }
                }
            }
        }
        found.sort();
        found.dedup();
        found.into_iter().map(|x| subst(&[("?x", x)])).collect()
    }
}

impl Fusion for Activation {
    fn find(self, eg: &EGraph, class: Id) -> Vec<Subst> {
        self.matches(eg, class)
    }

    fn vars(self) -> Vec<Var> {
        vec![var("?x")]
    }

    fn build(self, eg: &mut EGraph, class: Id, subst: &Subst) -> Option<(Op, Vec<Id>)> {
        let x = subst[var("?x")];
        // The product may broadcast x against a larger constant; the activation cannot.
        (eg[x].data.ty() == eg[class].data.ty()).then(|| (Op::Unary(self.op()), vec![x]))
    }
}
