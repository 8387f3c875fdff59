//! `fuse`: the e-graph optimizer. The graph becomes an e-graph ([`egraph`]); rule phases
//! saturate it under explicit budgets ([`rules`]); extraction picks the cheapest program
//! and rebuilds a graph ([`extract`]), which the pass manager verifies.
//!
//! Phases: canonicalization first (exporter spellings to one form), then fusion. Each phase
//! is a fresh egg `Runner` over the same e-graph with its own limits, because egg checks
//! node and time limits only between iterations.

mod egraph;
mod extract;
mod rules;

use crate::{Pass, PassError, PassReport};
use egg::{BackoffScheduler, Runner, StopReason};
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
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            iterations: 8,
            nodes: 200_000,
            time: Duration::from_secs(2),
            match_limit: 10_000,
        }
    }
}

/// The fusion pass (`fuse`): norms today; see the module docs.
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

impl Pass for Fuse {
    fn name(&self) -> &'static str {
        "fuse"
    }

    fn run(&self, g: &mut Graph) -> Result<PassReport, PassError> {
        let mut lowered = egraph::lower(g);
        for phase in [rules::canonical(), rules::fusions()] {
            let runner = Runner::default()
                .with_egraph(lowered.egraph)
                .with_iter_limit(self.budget.iterations)
                .with_node_limit(self.budget.nodes)
                .with_time_limit(self.budget.time)
                .with_scheduler(
                    BackoffScheduler::default().with_initial_match_limit(self.budget.match_limit),
                )
                .run(&phase);
            if let Some(StopReason::Other(e)) = runner.stop_reason {
                return Err(PassError::Failed {
                    pass: "fuse".into(),
                    message: e,
                });
            }
            lowered.egraph = runner.egraph;
        }
        let fused = extract::extract(g, &lowered).map_err(|e| PassError::Failed {
            pass: "fuse".into(),
            message: format!("the extracted graph does not type-check: {e}"),
        })?;
        // New fused kernels count as changes; a graph that only lost dead or duplicate nodes
        // in the round trip is kept as it was (dce and cse own those rewrites).
        let changes = count_fused(&fused).saturating_sub(count_fused(g));
        if changes > 0 {
            *g = fused;
        }
        Ok(PassReport { changes })
    }
}

/// The fused ops in `g`.
fn count_fused(g: &Graph) -> usize {
    use kiln_ir::UnaryOp::{Gelu, GeluTanh, Silu};
    g.nodes
        .iter()
        .filter(|n| {
            matches!(
                n.op,
                Op::LayerNorm { .. } | Op::RmsNorm { .. } | Op::Unary(Gelu | GeluTanh | Silu)
            )
        })
        .count()
}
#[cfg(test)]
mod tests;
