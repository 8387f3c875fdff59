//! The linear-layer fusions: a matmul by a rank-2 weight grows into one
//! [`Op::Linear`] with its epilogue, one step per rule, in the order the epilogue applies
//! them: `linear-bias` (`x·w + b`, either operand order), `linear-activation` (relu, gelu,
//! gelu_tanh or silu of it), `linear-residual` (`+ r`, or `· r` for a GLU's gate product).
//! `linear-reshape` looks through the reshapes TorchScript puts around a projection
//! (`reshape(reshape(x, [B·S, K])·w + b, [B, S, N])`), since a linear acts on `[..., K]`
//! directly. `linear-residual-reshape` adds a residual across a reshape of the output that
//! `linear-reshape` cannot undo (heads merged by the input's reshape):
//! `reshape(l, S) + r` is `reshape(linear(…, + reshape(r)), S)`. They run as a phase after
//! the activation fusions, so the epilogue sees `gelu`/`silu` nodes rather than their
//! decompositions. A `quant_linear` grows its epilogue by the same rules (its epilogue's
//! operands follow its weight's, as for a `linear`): an imported quantized layer is a bare
//! product whose bias, activation and residual the file spells out after it.

use super::egraph::{add_op, EGraph, Term};
use super::identities::is_uniform;
use super::rules::{fusion, nodes, pairs, subst, var, Fusion, Rule};
use egg::{Id, Subst, Var};
use kiln_ir::{infer, Activation, Epilogue, Op, QuantAttrs, Residual};

/// The linear-layer rules (a phase of their own, after the activation fusions).
pub fn rules() -> Vec<Rule> {
    vec![
        fusion("linear-bias", Linear::Bias),
        fusion("linear-activation", Linear::Activation),
        fusion("linear-residual", Linear::Residual),
        fusion("linear-reshape", Linear::Reshape),
        fusion("linear-residual-reshape", ResidualThroughReshape),
    ]
}

/// One step of growing a linear layer.
#[derive(Clone, Copy, Debug)]
enum Linear {
    /// `add(l, b)`, `l` a linear without epilogue (a matmul).
    Bias,
    /// `act(l)`, `l` a linear without activation or residual.
    Activation,
    /// `add(l, r)` or `mul(l, r)` with `r` of the result's shape, `l` without residual (and,
    /// for `mul`, without activation: the gate's activation belongs in the other factor).
    Residual,
    /// `reshape(l)` where `l`'s input is `reshape(x)` and `x` keeps `K` as its last axis.
    Reshape,
}

/// The most operands a linear has: x, w, a quantized weight's scales and zero points,
/// quantized activations' zero point and scale, bias, residual.
const MAX_ARGS: usize = 8;

/// The pattern variables of the operands.
const ARG_NAMES: [&str; MAX_ARGS] = ["?a0", "?a1", "?a2", "?a3", "?a4", "?a5", "?a6", "?a7"];

fn arg_var(i: usize) -> Var {
    var(ARG_NAMES[i])
}

/// Which op a linear layer is: an f32 `linear`, or a `quant_linear` with these weight and
/// activation schemes (its epilogue is the candidate's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Float,
    Quant(QuantAttrs),
}

impl Kind {
    /// The op of this kind with epilogue `e`.
    fn op(self, epilogue: Epilogue) -> Op {
        match self {
            Kind::Float => Op::Linear(epilogue),
            Kind::Quant(q) => Op::QuantLinear(QuantAttrs { epilogue, ..q }),
        }
    }
}

/// A linear layer in the e-graph: its kind, epilogue and operand classes.
type Candidate = (Kind, Epilogue, Vec<Id>);

impl Linear {
    /// The linears `class` is equal to by this rule.
    fn candidates(self, eg: &EGraph, class: Id) -> Vec<Candidate> {
        let mut out = Vec::new();
        match self {
            Linear::Bias => {
                for (l, b) in pairs(eg, class, "add") {
                    // A zero bias is no bias (`add-zero` drops it), so that exports that
                    // keep `+ 0` and exports that drop it fuse alike.
                    if is_uniform(eg, b, 0.0) {
                        continue;
                    }
                    for (k, e, mut args) in linears(eg, l) {
                        if e == Epilogue::default() {
                            args.push(b);
                            out.push((k, Epilogue { bias: true, ..e }, args));
                        }
                    }
                }
            }
            Linear::Activation => {
                for &a in Activation::ALL {
                    for n in nodes(eg, class, a.unary().name()) {
                        for (k, e, args) in linears(eg, n[0]) {
                            if e.activation.is_none() && e.residual.is_none() {
                                let activation = Some(a);
                                out.push((k, Epilogue { activation, ..e }, args));
                            }
                        }
                    }
                }
            }
            Linear::Residual => {
                for kind in [Residual::Add, Residual::Mul] {
                    for (l, r) in pairs(eg, class, kind.name()) {
                        for (k, e, mut args) in linears(eg, l) {
                            let gated = kind == Residual::Mul && e.activation.is_some();
                            if e.residual.is_none() && !gated && eg.find(r) != eg.find(l) {
                                args.push(r);
                                out.push((
                                    k,
                                    Epilogue {
                                        residual: Some(kind),
                                        ..e
                                    },
                                    args,
                                ));
                            }
                        }
                    }
                }
            }
            Linear::Reshape => {
                // An empty epilogue gains nothing: reshapes are free.
                let direct = direct_linears(eg, class);
                let lifted = linears(eg, class).into_iter();
                let lifted = lifted.filter(|c| c.1 != Epilogue::default() && !direct.contains(c));
                out.extend(lifted);
            }
        }
        // Only linears that type-check and compute exactly the class's type (a reshape's
        // input must keep K last and the leading axes must give the same result shape).
        for (_, _, args) in &mut out {
            args.iter_mut().for_each(|a| *a = eg.find(*a));
        }
        out.retain(|(k, e, args)| computes(eg, class, k.op(*e), args));
        out.sort();
        out.dedup();
        out
    }
}

/// The linears in `class`: its `linear` e-nodes, its matmuls by a rank-2 weight as
/// linears without epilogue, and those of a `reshape(l)` whose `l` reads `reshape(x)`, as
/// linears of `x` (exporters flatten `[B, S, K]` to `[B·S, K]` around a projection; the
/// caller's type check keeps only those where `x` has `K` last and the result's shape).
fn linears(eg: &EGraph, class: Id) -> Vec<Candidate> {
    let mut out = direct_linears(eg, class);
    for n in &eg[class].nodes {
        let Term::Op(Op::Reshape { .. }) = eg.analysis.term(n.op) else {
            continue;
        };
        for (k, e, args) in direct_linears(eg, n.args[0]) {
            if e.residual.is_some() {
                continue;
            }
            for inner in &eg[args[0]].nodes {
                if let Term::Op(Op::Reshape { .. }) = eg.analysis.term(inner.op) {
                    let mut moved = args.clone();
                    moved[0] = inner.args[0];
                    out.push((k, e, moved));
                }
            }
        }
    }
    out
}

/// The `linear` and `quant_linear` e-nodes of `class` and its matmuls by a rank-2 weight.
fn direct_linears(eg: &EGraph, class: Id) -> Vec<Candidate> {
    let rank = |c: Id| eg[c].data.ty().map(|t| t.rank());
    let mut out = Vec::new();
    for n in &eg[class].nodes {
        match eg.analysis.term(n.op) {
            Term::Op(Op::Linear(e)) => out.push((Kind::Float, *e, n.args.clone())),
            Term::Op(Op::QuantLinear(q)) => {
                let bare = QuantAttrs {
                    epilogue: Epilogue::default(),
                    ..*q
                };
                out.push((Kind::Quant(bare), q.epilogue, n.args.clone()))
            }
            Term::Op(Op::MatMul) if rank(n.args[1]) == Some(2) && rank(n.args[0]) >= Some(2) => {
                out.push((Kind::Float, Epilogue::default(), n.args.clone()))
            }
            _ => {}
        }
    }
    out
}

/// Whether `op` (a linear) of `args` infers and gives `class`'s type.
fn computes(eg: &EGraph, class: Id, op: Op, args: &[Id]) -> bool {
    let types: Option<Vec<_>> = args.iter().map(|a| eg[*a].data.ty()).collect();
    let inferred = types.and_then(|t| infer(&op, &t).ok());
    matches!((inferred.as_deref(), eg[class].data.ty()), (Some([t]), Some(c)) if t == c)
}

impl Fusion for Linear {
    fn find(self, eg: &EGraph, class: Id) -> Vec<Subst> {
        let bind = |(_, _, args): Candidate| {
            subst(&ARG_NAMES.iter().copied().zip(args).collect::<Vec<_>>())
        };
        self.candidates(eg, class).into_iter().map(bind).collect()
    }

    fn vars(self) -> Vec<Var> {
        (0..MAX_ARGS).map(arg_var).collect()
    }

    fn build(self, eg: &mut EGraph, class: Id, s: &Subst) -> Option<(Op, Vec<Id>)> {
        // A subst holds only classes, so the epilogue is found again: the candidate with
        // these operands (any with the same operands computes the same value).
        let args: Vec<Id> = (0..MAX_ARGS)
            .map_while(|i| s.get(arg_var(i)).map(|a| eg.find(*a)))
            .collect();
        let found = self
            .candidates(eg, class)
            .into_iter()
            .find(|(_, _, a)| *a == args);
        found.map(|(k, e, args)| (k.op(e), args))
    }
}

/// `reshape(l, S) + r` (either order) for a linear `l` without residual and `r` of the
/// sum's type: the residual joins `l`'s epilogue, reshaped to `l`'s shape, and the sum is
/// a reshape of that linear (rule `linear-residual-reshape`).
#[derive(Clone, Copy, Debug)]
struct ResidualThroughReshape;

impl ResidualThroughReshape {
    /// `(l, r)` for each such sum in `class`.
    fn sums(eg: &EGraph, class: Id) -> Vec<(Id, Id)> {
        let mut out = Vec::new();
        for (reshaped, r) in pairs(eg, class, "add") {
            if eg[r].data.ty() != eg[class].data.ty() {
                continue;
            }
            for n in &eg[reshaped].nodes {
                let Term::Op(Op::Reshape { .. }) = eg.analysis.term(n.op) else {
                    continue;
                };
                let l = n.args[0];
                if direct_linears(eg, l)
                    .iter()
                    .any(|(_, e, _)| e.residual.is_none())
                {
                    out.push((l, r));
                }
            }
        }
        out
    }
}

impl Fusion for ResidualThroughReshape {
    fn find(self, eg: &EGraph, class: Id) -> Vec<Subst> {
        Self::sums(eg, class)
            .into_iter()
            .map(|(l, r)| subst(&[("?l", l), ("?r", r)]))
            .collect()
    }

    fn vars(self) -> Vec<Var> {
        vec![var("?l"), var("?r")]
    }

    fn build(self, eg: &mut EGraph, class: Id, s: &Subst) -> Option<(Op, Vec<Id>)> {
        let (l, r) = (s[var("?l")], s[var("?r")]);
        let (k, e, mut args) = direct_linears(eg, l)
            .into_iter()
            .find(|(_, e, _)| e.residual.is_none())?;
        let inner = eg[l].data.ty()?.shape.clone();
        let outer = eg[class].data.ty()?.shape.clone();
        args.push(add_op(eg, Op::Reshape { shape: inner }, vec![r]));
        let e = Epilogue {
            residual: Some(Residual::Add),
            ..e
        };
        if !computes(eg, l, k.op(e), &args) {
            return None;
        }
        let fused = add_op(eg, k.op(e), args);
        eg.analysis.made_by.push((fused, "linear-residual".into()));
        Some((Op::Reshape { shape: outer }, vec![fused]))
    }
}
