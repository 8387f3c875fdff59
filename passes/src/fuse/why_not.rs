//! Why an expected fusion did not happen: each candidate (a mean of a square for the norms;
//! an `erf`, `tanh` or `sigmoid` for the activations; a softmax for attention) is followed up through the
//! canonicalized e-graph, step by step along its pattern, and the first step that does not
//! hold is reported with the source node where the match stopped.

use super::attention;
use super::egraph::{EGraph, ENode, Lowered, Term};
use super::rules::{
    is_mean_last, is_tanh_argument, is_x_over_root2, nodes, pairs, scalar_near, three_factors,
};
use egg::{Id, Language};
use kiln_ir::{infer, Op, ReduceKind, TensorType};
use std::collections::HashMap;

/// A fusion a user expects (`kiln inspect --why-not NAME`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// `layer_norm`.
    LayerNorm,
    /// `rms_norm`.
    RmsNorm,
    /// `gelu` (erf form).
    Gelu,
    /// `gelu_tanh`.
    GeluTanh,
    /// `silu`.
    Silu,
    /// `attention`.
    Attention,
}

impl Expected {
    /// The names `from_name` accepts.
    pub const NAMES: &'static [&'static str] = &[
        "layernorm",
        "rmsnorm",
        "gelu",
        "gelu_tanh",
        "silu",
        "attention",
    ];

    /// Parses a name, ignoring case and underscores (`LayerNorm`, `layer_norm`).
    ///
    /// ```
    /// use kiln_passes::Expected;
    /// assert_eq!(Expected::from_name("Layer_Norm"), Some(Expected::LayerNorm));
    /// assert_eq!(Expected::from_name("Attention"), Some(Expected::Attention));
    /// assert_eq!(Expected::from_name("conv"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Expected> {
        let key: String = name
            .chars()
            .filter(|c| *c != '_')
            .collect::<String>()
            .to_lowercase();
        Some(match key.as_str() {
            "layernorm" => Expected::LayerNorm,
            "rmsnorm" => Expected::RmsNorm,
            "gelu" => Expected::Gelu,
            "gelutanh" => Expected::GeluTanh,
            "silu" => Expected::Silu,
            "attention" => Expected::Attention,
            _ => return None,
        })
    }
}

/// A candidate that did not fuse, and the first pattern step that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Miss {
    /// The source node of the candidate (the mean, or the erf/tanh/sigmoid).
    pub node: String,
    /// What does not hold.
    pub reason: String,
}

/// The e-nodes that use each class, as (user class, e-node).
struct Users<'a> {
    eg: &'a EGraph,
    by_class: HashMap<Id, Vec<(Id, &'a ENode)>>,
}

impl<'a> Users<'a> {
    fn new(eg: &'a EGraph) -> Users<'a> {
        let mut by_class: HashMap<Id, Vec<(Id, &ENode)>> = HashMap::new();
        for class in eg.classes() {
            for node in &class.nodes {
                for a in node.children() {
                    by_class
                        .entry(eg.find(*a))
                        .or_default()
                        .push((class.id, node));
                }
            }
        }
        Users { eg, by_class }
    }

    /// Classes holding the attribute-free op `name` applied to `class` (and, for binary
    /// ops, the other operand).
    fn of(&self, class: Id, name: &str) -> Vec<(Id, Option<Id>)> {
        let class = self.eg.find(class);
        let mut out = Vec::new();
        for (user, node) in self.by_class.get(&class).into_iter().flatten() {
            if node.op.as_str() != name {
                continue;
            }
            let other = node
                .args
                .iter()
                .map(|a| self.eg.find(*a))
                .find(|a| *a != class);
            out.push((*user, other.or((node.args.len() == 2).then_some(class))));
        }
        out
    }
}

/// The candidates of `kind` in the canonicalized e-graph and, for each, the first failing
/// step (candidates whose pattern matches entirely are listed with a note, since the caller
/// drops those that did fuse).
pub fn misses(lowered: &Lowered, kind: Expected) -> Vec<Miss> {
    let eg = &lowered.egraph;
    let users = Users::new(eg);
    let mut names: HashMap<Id, String> = HashMap::new();
    for (id, name) in &lowered.names {
        if !name.is_empty() {
            names.entry(eg.find(*id)).or_insert_with(|| name.clone());
        }
    }
    // Unnamed nodes and graph inputs go by their value number, as the text format prints it.
    for (v, id) in lowered.values.iter().enumerate() {
        names.entry(eg.find(*id)).or_insert_with(|| format!("%{v}"));
    }
    let name = |c: Id| names.get(&eg.find(c)).cloned().unwrap_or_default();
    let mut out = Vec::new();
    for class in eg.classes() {
        for node in &class.nodes {
            let reason = match (kind, eg.analysis.term(node.op)) {
                (
                    Expected::LayerNorm | Expected::RmsNorm,
                    Term::Op(Op::Reduce {
                        kind: ReduceKind::Mean,
                        ..
                    }),
                ) => {
                    if !is_mean_last(eg, class.id, node.args[0]) {
                        continue;
                    }
                    norm_step(
                        eg,
                        &users,
                        class.id,
                        node.args[0],
                        kind == Expected::LayerNorm,
                    )
                }
                (Expected::Gelu, Term::Op(Op::Unary(kiln_ir::UnaryOp::Erf))) => {
                    gelu_step(eg, &users, class.id, node.args[0], false)
                }
                (Expected::GeluTanh, Term::Op(Op::Unary(kiln_ir::UnaryOp::Tanh))) => {
                    gelu_step(eg, &users, class.id, node.args[0], true)
                }
                (Expected::Silu, Term::Op(Op::Unary(kiln_ir::UnaryOp::Sigmoid))) => {
                    let x = eg.find(node.args[0]);
                    if users.of(class.id, "mul").iter().any(|(_, o)| *o == Some(x)) {
                        "the pattern matches".to_string()
                    } else {
                        format!(
                            "the sigmoid of `{}` is not multiplied by that same value",
                            name(x)
                        )
                    }
                }
                (Expected::Attention, Term::Op(Op::Softmax { axis, log: false })) => {
                    attention_step(eg, &users, class.id, node.args[0], *axis)
                }
                _ => continue,
            };
            out.push(Miss {
                node: name(class.id),
                reason,
            });
        }
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out.dedup();
    out
}

/// Follows a mean of `square` over the last axis up through the norm pattern.
fn norm_step(eg: &EGraph, users: &Users, mean: Id, square: Id, layer: bool) -> String {
    let squared: Vec<Id> = nodes(eg, square, "mul")
        .filter(|m| eg.find(m[0]) == eg.find(m[1]))
        .map(|m| eg.find(m[0]))
        .collect();
    let Some(&x) = squared.first() else {
        return "the mean's input is not a square (x·x or pow(x, 2))".into();
    };
    if layer && !nodes(eg, x, "sub").any(|d| is_mean_last(eg, d[1], d[0])) {
        return "the squared value is not centered (x - mean(x) over the last axis)".into();
    }
    let adds = users.of(mean, "add");
    let Some(&(plus_eps, _)) = adds
        .iter()
        .find(|(_, e)| e.is_some_and(|e| eg[e].data.scalar.is_some()))
    else {
        return if adds.is_empty() {
            "nothing adds an epsilon to the mean square".into()
        } else {
            "the epsilon added to the mean square is not a scalar constant".into()
        };
    };
    let Some(&(inverse, _)) = users.of(plus_eps, "rsqrt").first() else {
        return "mean square + epsilon is not inverted by a square root (1/sqrt, rsqrt)".into();
    };
    let normalized: Vec<Id> = users
        .of(inverse, "mul")
        .into_iter()
        .filter(|(_, o)| *o == Some(x))
        .map(|(c, _)| c)
        .collect();
    let Some(&normalized) = normalized.first() else {
        return "the inverse root does not multiply the squared value".into();
    };
    let scaled = users.of(normalized, "mul");
    let typed = |c: Id, params: &[Id]| {
        let types: Option<Vec<&TensorType>> = std::iter::once(x)
            .chain(params.iter().copied())
            .map(|a| eg[a].data.ty())
            .collect();
        let op = if layer {
            Op::LayerNorm { epsilon: 0.0 }
        } else {
            Op::RmsNorm { epsilon: 0.0 }
        };
        types.is_some_and(|t| infer(&op, &t).is_ok()) && eg[c].data.ty() == eg[x].data.ty()
    };
    let Some(&(scaled, scale)) = scaled
        .iter()
        .find(|(c, s)| s.is_some() && (layer || typed(*c, &[s.unwrap()])))
    else {
        return if scaled.is_empty() {
            "no scale multiplies the normalized value".into()
        } else {
            "the scale broadcasts the result to a larger shape or another dtype".into()
        };
    };
    if layer {
        let biased = users.of(scaled, "add");
        let ok = biased
            .iter()
            .any(|(c, b)| b.is_some_and(|b| typed(*c, &[scale.unwrap_or(x), b])));
        if !ok {
            return "no bias of the input's width is added after the scale".into();
        }
    }
    "the pattern matches".into()
}

/// Follows an erf (or a tanh, for the tanh form) up through the GELU pattern.
fn gelu_step(eg: &EGraph, users: &Users, f: Id, arg: Id, tanh: bool) -> String {
    // Candidate x: the dividend or a factor of the argument (erf), or an addend of the sum
    // inside it (tanh).
    let mut xs: Vec<Id> = Vec::new();
    if tanh {
        for (sum, _) in pairs(eg, arg, "mul") {
            xs.extend(pairs(eg, sum, "add").into_iter().map(|(a, _)| a));
        }
        xs.retain(|x| is_tanh_argument(eg, arg, *x));
    } else {
        xs.extend(nodes(eg, arg, "div").map(|n| n[0]));
        xs.extend(pairs(eg, arg, "mul").into_iter().map(|(a, _)| a));
        xs.retain(|x| is_x_over_root2(eg, arg, *x));
    }
    let Some(&x) = xs.first() else {
        return if tanh {
            "tanh's argument is not √(2/π)·(x + 0.044715·x³)".into()
        } else {
            "erf's argument is not x/√2 (or x·(1/√2))".into()
        };
    };
    let plus_one: Vec<Id> = users
        .of(f, "add")
        .into_iter()
        .filter(|(_, o)| o.is_some_and(|o| scalar_near(eg, o, 1.0)))
        .map(|(c, _)| c)
        .collect();
    let Some(&s) = plus_one.first() else {
        return "1 is not added to it".into();
    };
    let mut products = Vec::new();
    for (p, _) in users.of(s, "mul") {
        products.push(p);
        products.extend(users.of(p, "mul").into_iter().map(|(q, _)| q));
    }
    let same = |a: Id, b: Id| eg.find(a) == eg.find(b);
    let done = products.iter().any(|p| {
        three_factors(eg, *p)
            .iter()
            .any(|[a, h, t]| same(*a, x) && scalar_near(eg, *h, 0.5) && same(*t, s))
    });
    if done {
        "the pattern matches".into()
    } else {
        "(1 + …) is not multiplied by x and 0.5".into()
    }
}

/// Follows a softmax down to the scaled product q·kᵀ and up to the product with v.
fn attention_step(eg: &EGraph, users: &Users, probs: Id, scores: Id, axis: usize) -> String {
    let rank = eg[probs].data.ty().map_or(0, TensorType::rank);
    if rank < 3 {
        return format!("the softmax input has rank {rank}, not [.., heads, queries, keys]");
    }
    if axis + 1 != rank {
        return format!("the softmax runs over axis {axis}, not the last (the keys)");
    }
    if let Err(why) = attention::why_not_scores(eg, scores) {
        return why;
    }
    // The probabilities, or where(isnan(p), 0, p) of them, times the values.
    let mut probs_classes = vec![probs];
    probs_classes.extend(users.of(probs, "where").into_iter().map(|(c, _)| c));
    let by_values = probs_classes.iter().any(|&p| {
        users
            .of(p, "matmul")
            .iter()
            .any(|(c, _)| nodes(eg, *c, "matmul").any(|m| eg.find(m[0]) == eg.find(p)))
    });
    if by_values {
        "the pattern matches".into()
    } else {
        "the probabilities are not multiplied by values (matmul(p, v))".into()
    }
}
