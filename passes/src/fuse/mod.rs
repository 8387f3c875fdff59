//! `fuse`: the e-graph optimizer. The graph becomes an e-graph ([`egraph`]); rule phases
//! saturate it under explicit budgets ([`rules`]); extraction picks a cheap program under a
//! cost model of memory traffic, arithmetic and kernel launches ([`cost`]), counting work
//! that several users share once ([`dag`]), and rebuilds a graph ([`extract`]), which the
//! pass manager verifies.
//!
//! Phases: canonicalization first (exporter spellings to one form), then fusion. Each phase
//! is a fresh egg `Runner` over the same e-graph with its own limits, because egg checks
//! node and time limits only between iterations.

mod attention;
mod canon;
mod cost;
mod dag;
mod egraph;
mod extract;
mod identities;
mod layout;
mod linear;
mod rotary;
mod rules;
mod why_not;

pub use why_not::{Expected, Miss};

use crate::{Pass, PassError, PassReport};
use egg::{BackoffScheduler, Id, Runner, StopReason};
use kiln_ir::{Graph, Op};
use std::time::Duration;

/// Limits for one phase of equality saturation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Iterations.
    pub iterations: usize,
    /// E-nodes in the whole e-graph.
    pub nodes: usize,
    /// Wall time.
    pub time: Duration,
    /// Matches a rule may apply per iteration before the scheduler backs it off.
    pub match_limit: usize,
    /// Evaluations per e-node (on average) the DAG-aware extraction may spend reaching its
    /// fixed point before the tree extractor takes over (usually two or three suffice).
    pub extraction: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            iterations: 8,
            nodes: 200_000,
            time: Duration::from_secs(2),
            match_limit: 10_000,
            extraction: 32,
        }
    }
}

/// The fusion pass (`fuse`): norms, activations, attention, rotary embeddings and linear
/// epilogues; see the module docs.
///
/// ```
/// use kiln_passes::{Fuse, Pass};
/// let mut g = kiln_ir::parse(
///     "graph @rms(%x: f32[2, 8], %w: f32[8]) -> f32[2, 8] {
///         %sq = mul %x, %x
///         %ms = reduce_mean %sq {axes=[1], keep_dims=true}
///         %eps = const f32[] 0.000001
///         %v = add %ms, %eps
///         %r = rsqrt %v
///         %n = mul %x, %r
///         %y = mul %n, %w
///         return %y
///     }",
/// )
/// .unwrap();
/// Fuse::default().run(&mut g).unwrap();
/// let ops: Vec<String> = g.nodes.iter().map(|n| n.op.name()).collect();
/// assert_eq!(ops, ["rms_norm"]);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Fuse {
    /// The budget of each phase.
    pub budget: Budget,
}

/// One fused kernel of an optimized graph and where it came from (`kiln inspect --explain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusedKernel {
    /// The fused op as statistics name it (`LayerNorm`, `Gelu`).
    pub op: String,
    /// The fused node's name: the source node whose value it computes.
    pub name: String,
    /// The rules that built it: the fusion rule, then (sorted) the rules that rewrote its
    /// source nodes first: canonicalization, or a fusion it builds on.
    pub rules: Vec<String>,
    /// The source nodes it replaces (constants left out), in graph order.
    pub sources: Vec<String>,
}

impl Pass for Fuse {
    fn name(&self) -> &'static str {
        "fuse"
    }

    fn run(&self, g: &mut Graph) -> Result<PassReport, PassError> {
        let (lowered, extracted) = self.fuse(g)?;
        let fused = new_kernels(&lowered, &extracted).count();
        let changes = fused.max(usize::from(smaller(g, &extracted)));
        let notes = (!extracted.dag).then(|| {
            "the DAG-aware extraction did not settle within its budget; the tree extractor \
             chose instead, which may not share work between users of a value"
                .to_string()
        });
        if changes > 0 {
            *g = extracted.graph;
        }
        Ok(PassReport {
            changes,
            notes: notes.into_iter().collect(),
        })
    }
}

impl Fuse {
    /// Runs the pass and describes each fused kernel it created.
    pub fn explain(&self, g: &mut Graph) -> Result<Vec<FusedKernel>, PassError> {
        let (lowered, extracted) = self.fuse(g)?;
        let kernels = describe(g, &lowered, &extracted);
        if !kernels.is_empty() || smaller(g, &extracted) {
            *g = extracted.graph;
        }
        Ok(kernels)
    }

    /// Saturates `g`'s e-graph with every phase and extracts the best graph.
    fn fuse(&self, g: &Graph) -> Result<(egraph::Lowered, extract::Extracted), PassError> {
        let mut lowered = egraph::lower(g);
        for phase in [rules::canonical(), rules::fusions(), linear::rules()] {
            lowered.egraph = self.saturate(lowered.egraph, &phase)?;
        }
        let extracted =
            extract::extract(g, &lowered, self.budget.extraction).map_err(|message| {
                PassError::Failed {
                    pass: "fuse".into(),
                    message,
                }
            })?;
        Ok((lowered, extracted))
    }
}

impl Fuse {
    /// Runs one phase of rules over `egraph` within the budget.
    fn saturate(
        &self,
        egraph: egraph::EGraph,
        phase: &[rules::Rule],
    ) -> Result<egraph::EGraph, PassError> {
        let runner = Runner::default()
            .with_egraph(egraph)
            .with_iter_limit(self.budget.iterations)
            .with_node_limit(self.budget.nodes)
            .with_time_limit(self.budget.time)
            .with_scheduler(
                BackoffScheduler::default().with_initial_match_limit(self.budget.match_limit),
            )
            .run(phase);
        if let Some(StopReason::Other(e)) = runner.stop_reason {
            return Err(PassError::Failed {
                pass: "fuse".into(),
                message: e,
            });
        }
        Ok(runner.egraph)
    }

    /// Where an expected fusion of `kind` failed: for each candidate in `g` (a mean of a
    /// square for norms; an erf, tanh or sigmoid for activations) that `fuse` leaves
    /// unfused, the first step of the pattern that does not hold.
    pub fn why_not(&self, g: &Graph, kind: Expected) -> Result<Vec<Miss>, PassError> {
        // Fusion only adds to the canonicalized e-graph, so the candidates are followed up
        // in the same e-graph the kernels came from.
        let (lowered, extracted) = self.fuse(g)?;
        let covered: std::collections::BTreeSet<String> = describe(g, &lowered, &extracted)
            .into_iter()
            .flat_map(|k| k.sources)
            .collect();
        Ok(why_not::misses(&lowered, kind)
            .into_iter()
            .filter(|m| !covered.contains(&m.node))
            .collect())
    }
}

/// Whether canonicalization made the program smaller: fewer kernels, or as many and fewer
/// nodes (constants aside). A graph that merely lost dead or duplicate constants in the
/// round trip does not count, as dce and cse own those rewrites; and since the size
/// strictly drops whenever this holds, the pipeline's rounds still reach a fixed point.
fn smaller(g: &Graph, extracted: &extract::Extracted) -> bool {
    extract::size(&extracted.graph) < extract::size(g)
}

/// The fused nodes of `extracted` that a rule added this run (fused nodes already in the
/// input were not), with their class and the rule.
fn new_kernels<'a>(
    lowered: &'a egraph::Lowered,
    extracted: &'a extract::Extracted,
) -> impl Iterator<Item = (&'a kiln_ir::Node, Id, String)> + 'a {
    let eg = &lowered.egraph;
    let nodes = extracted.graph.nodes.iter().zip(&extracted.classes);
    nodes
        .filter(|(node, _)| is_fused(&node.op))
        .filter_map(move |(node, class)| {
            let class = eg.find(*class);
            // A class can hold several fused e-nodes (a gelu, then the linear whose epilogue
            // took it in); the one extracted is the last built, by the latest rule.
            let made = eg.analysis.made_by.iter();
            let (_, rule) = made.rev().find(|(id, _)| eg.find(*id) == class)?;
            Some((node, class, rule.to_string()))
        })
}

/// The fused kernels the fusion rules added to `extracted`, with the rules that built them
/// and the source nodes they replace.
fn describe(
    g: &Graph,
    lowered: &egraph::Lowered,
    extracted: &extract::Extracted,
) -> Vec<FusedKernel> {
    let eg = &lowered.egraph;
    new_kernels(lowered, extracted)
        .map(|(node, class, rule)| {
            let operands = fused_operands(lowered, class, &node.op);
            let region = sources(g, lowered, class, &operands);
            // Rules that rewrote a value inside the region (canonicalization, or a fusion
            // this one builds on, as layer-norm on rms-norm) prepared this fusion.
            let classes: Vec<Id> = region
                .iter()
                .flat_map(|&n| &g.nodes[n].outputs)
                .map(|v| eg.find(lowered.values[v.index()]))
                .filter(|c| *c != class)
                .collect();
            let analysis = &eg.analysis;
            // So did the rules that built other fused e-nodes of this class, which the
            // kernel absorbed (the gelu in a linear's epilogue).
            let absorbed = analysis
                .made_by
                .iter()
                .filter(|(c, r)| eg.find(*c) == class && r.as_str() != rule);
            // And the canonicalizations that rewrote the class itself (identities such as
            // mul-one merge a norm's inner steps into its result's class).
            let own = (analysis.rewritten.iter()).filter(|(c, _)| eg.find(*c) == class);
            let mut prepared: Vec<String> = (analysis.rewritten.iter())
                .chain(&analysis.made_by)
                .filter(|(c, _)| classes.contains(&eg.find(*c)))
                .chain(absorbed)
                .chain(own)
                .map(|(_, r)| r.to_string())
                .collect();
            prepared.sort();
            prepared.dedup();
            FusedKernel {
                op: node.op.kind_name(),
                name: node.name.clone(),
                rules: std::iter::once(rule).chain(prepared).collect(),
                sources: region
                    .into_iter()
                    .filter(|&n| !matches!(g.nodes[n].op, Op::Const(_)))
                    .map(|n| g.nodes[n].name.clone())
                    .collect(),
            }
        })
        .collect()
}

/// Whether `op` is one the fusion rules create.
fn is_fused(op: &Op) -> bool {
    use kiln_ir::UnaryOp::{Gelu, GeluTanh, Silu};
    matches!(
        op,
        Op::LayerNorm { .. }
            | Op::RmsNorm { .. }
            | Op::Attention(_)
            | Op::Rotary
            | Op::Unary(Gelu | GeluTanh | Silu)
            | Op::Linear(_)
            | Op::QuantLinear(_)
    )
}

/// The operand classes of the e-node of `class` whose op is the extracted `op`.
fn fused_operands(lowered: &egraph::Lowered, class: Id, op: &Op) -> Vec<Id> {
    let eg = &lowered.egraph;
    eg[class]
        .nodes
        .iter()
        .find(|n| matches!(eg.analysis.term(n.op), egraph::Term::Op(o) if o == op))
        .map(|n| n.args.iter().map(|a| eg.find(*a)).collect())
        .unwrap_or_default()
}

/// The source nodes between a fused kernel's operands and its result (indices into `g`, in
/// graph order): every node reached backwards from the values of `class` without crossing
/// an operand class.
fn sources(g: &Graph, lowered: &egraph::Lowered, class: Id, operands: &[Id]) -> Vec<usize> {
    /// A bound on the walk, in case a rule's operands do not cut the graph.
    const MAX_NODES: usize = 256;
    let eg = &lowered.egraph;
    let class_of = |i: usize| eg.find(lowered.values[i]);
    let producers = g.producers();
    let mut stack: Vec<usize> = (0..g.values.len())
        .filter(|&v| class_of(v) == class)
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(v) = stack.pop() {
        let Some(n) = producers[v] else {
            continue;
        };
        if seen.len() >= MAX_NODES || !seen.insert(n) {
            continue;
        }
        let inner = g.nodes[n].inputs.iter().map(|i| i.index());
        stack.extend(inner.filter(|&i| !operands.contains(&class_of(i))));
    }
    seen.into_iter().collect()
}

#[cfg(test)]
mod tests;
