//! The pass manager: named passes, per-pass timing, verification and bisection.

use crate::{Cse, Dce, FoldConstants, FoldShapes};
use kiln_ir::{verify, Graph, VerifyError};
use std::fmt;
use std::time::{Duration, Instant};

/// A graph-to-graph transformation.
pub trait Pass {
    /// The pass's name in pipelines and on the command line (`fold-shapes`).
    fn name(&self) -> &'static str;
    /// Rewrites the graph in place.
    fn run(&self, g: &mut Graph) -> Result<PassReport, PassError>;
}

/// What one pass run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Number of rewrites (nodes folded, merged or removed); 0 means the graph is unchanged.
    pub changes: usize,
    /// What a user should know about the run: a budget the pass ran out of, and what it
    /// did instead (the CLI prints these as warnings).
    pub notes: Vec<String>,
}

impl PassReport {
    /// A report of `changes` rewrites and nothing else to say.
    pub fn changes(changes: usize) -> PassReport {
        PassReport {
            changes,
            notes: Vec::new(),
        }
    }
}

/// Why a pipeline could not be built or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PassError {
    /// A pass name that no pass has.
    #[error("unknown pass `{name}`; valid passes: {}", valid_names().join(", "))]
    UnknownPass {
        /// The name asked for.
        name: String,
    },
    /// `stop_after` names a pass that the pipeline does not run.
    #[error("cannot stop after `{name}`: the pipeline runs {}", pipeline.join(", "))]
    StopAfterNotInPipeline {
        /// The name asked for.
        name: String,
        /// The pipeline's passes.
        pipeline: Vec<String>,
    },
    /// `KILN_PASS_BISECT` is not a number.
    #[error("KILN_PASS_BISECT must be a number of passes, got `{0}`")]
    BadBisect(String),
    /// The graph failed verification before any pass ran.
    #[error("before passes: {0}")]
    InvalidInput(VerifyError),
    /// A pass left a graph that fails verification.
    #[error("after pass {pass}: {error}")]
    Verify {
        /// The pass that ran last.
        pass: String,
        /// The broken invariant.
        error: VerifyError,
    },
    /// A pass failed.
    #[error("pass {pass}: {message}")]
    Failed {
        /// The pass.
        pass: String,
        /// What went wrong.
        message: String,
    },
}

/// Options for [`PassManager::run`].
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop right after the first run of this pass (for `--after PASS` dumps).
    pub stop_after: Option<String>,
    /// Verify the graph before the pipeline and after every pass.
    pub verify: bool,
}

/// One pass run in a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct PassRun {
    /// The pass.
    pub name: &'static str,
    /// Which round of the pipeline (from 1).
    pub round: usize,
    /// What it did.
    pub report: PassReport,
    /// Wall time, verification excluded.
    pub time: Duration,
}

/// What a pipeline did, pass by pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PipelineReport {
    /// Every pass run, in order.
    pub passes: Vec<PassRun>,
    /// Set when `KILN_PASS_BISECT` stopped the pipeline: the limit.
    pub bisect_limit: Option<usize>,
}

impl fmt::Display for PipelineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.passes {
            let ms = r.time.as_secs_f64() * 1e3;
            writeln!(
                f,
                "{:<16} round {}  {:>5} changes  {ms:>9.3} ms",
                r.name, r.round, r.report.changes
            )?;
        }
        if let Some(n) = self.bisect_limit {
            writeln!(f, "stopped by KILN_PASS_BISECT={n}")?;
        }
        Ok(())
    }
}

/// Every pass, by name.
fn all_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(FoldConstants),
        Box::new(FoldShapes),
        Box::new(Cse),
        Box::new(Dce),
        Box::new(crate::Fuse::default()),
        Box::new(crate::MergeLinears),
    ]
}

fn valid_names() -> Vec<&'static str> {
    all_passes().iter().map(|p| p.name()).collect()
}

/// The pass with this name; `quantize=SCHEME` (e.g. `quantize=int8`) is the quantize pass
/// with that scheme, for pipelines written as text (filetests).
pub fn pass_by_name(name: &str) -> Result<Box<dyn Pass>, PassError> {
    if let Some(scheme) = name.strip_prefix("quantize=") {
        return crate::Scheme::from_name(scheme)
            .map(|s| Box::new(crate::Quantize::new(s)) as Box<dyn Pass>)
            .ok_or_else(|| PassError::UnknownPass {
                name: name.to_string(),
            });
    }
    all_passes()
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| PassError::UnknownPass {
            name: name.to_string(),
        })
}

/// An ordered list of passes, run up to `max_rounds` times while any of them changes the
/// graph.
pub struct PassManager {
    pub(crate) passes: Vec<Box<dyn Pass>>,
    pub(crate) max_rounds: usize,
}

impl PassManager {
    /// A pipeline of these passes, run once (for passes that take parameters, such as
    /// [`crate::Quantize`], which no name selects).
    pub fn once(passes: Vec<Box<dyn Pass>>) -> PassManager {
        PassManager {
            passes,
            max_rounds: 1,
        }
    }

    /// A pipeline from pass names, run once.
    ///
    /// ```
    /// use kiln_passes::PassManager;
    /// let err = PassManager::from_names(&["cse", "fold"]).err().unwrap();
    /// assert_eq!(err.to_string(), "unknown pass `fold`; valid passes: fold-constants, fold-shapes, cse, dce, fuse, merge-linears");
    /// ```
    pub fn from_names(names: &[&str]) -> Result<PassManager, PassError> {
        let passes = names
            .iter()
            .map(|n| pass_by_name(n))
            .collect::<Result<_, _>>()?;
        Ok(PassManager {
            passes,
            max_rounds: 1,
        })
    }

    /// fold-shapes, fold-constants, cse, fuse, merge-linears, dce, repeated until nothing
    /// changes (at most 4 rounds).
    pub fn default_pipeline() -> PassManager {
        let passes: Vec<Box<dyn Pass>> = vec![
            Box::new(FoldShapes),
            Box::new(FoldConstants),
            Box::new(Cse),
            Box::new(crate::Fuse::default()),
            Box::new(crate::MergeLinears),
            Box::new(Dce),
        ];
        PassManager {
            passes,
            max_rounds: 4,
        }
    }

    /// Sets how many rounds the pipeline may run while it still changes the graph.
    pub fn with_max_rounds(mut self, rounds: usize) -> PassManager {
        self.max_rounds = rounds.max(1);
        self
    }

    /// The pass names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.passes.iter().map(|p| p.name()).collect()
    }

    /// Runs the pipeline. `KILN_PASS_BISECT=N` runs only the first `N` passes.
    pub fn run(&self, g: &mut Graph, opts: &RunOptions) -> Result<PipelineReport, PassError> {
        self.run_limited(g, opts, bisect_limit()?)
    }

    /// Runs at most `limit` passes (all when `None`): [`PassManager::run`] without the
    /// environment.
    pub fn run_limited(
        &self,
        g: &mut Graph,
        opts: &RunOptions,
        limit: Option<usize>,
    ) -> Result<PipelineReport, PassError> {
        if let Some(name) = &opts.stop_after {
            if !self.names().contains(&name.as_str()) {
                let pipeline = self.names().iter().map(|s| s.to_string()).collect();
                return Err(PassError::StopAfterNotInPipeline {
                    name: name.clone(),
                    pipeline,
                });
            }
        }
        if opts.verify {
            verify(g).map_err(PassError::InvalidInput)?;
        }
        let mut report = PipelineReport::default();
        for round in 1..=self.max_rounds {
            let mut changed = false;
            for pass in &self.passes {
                if limit.is_some_and(|n| report.passes.len() >= n) {
                    report.bisect_limit = limit;
                    return Ok(report);
                }
                let run = run_one(pass.as_ref(), g, opts, round)?;
                changed |= run.report.changes > 0;
                report.passes.push(run);
                if opts.stop_after.as_deref() == Some(pass.name()) {
                    return Ok(report);
                }
            }
            if !changed {
                break;
            }
        }
        Ok(report)
    }
}

/// Runs one pass, timed, then verifies if asked.
fn run_one(
    pass: &dyn Pass,
    g: &mut Graph,
    opts: &RunOptions,
    round: usize,
) -> Result<PassRun, PassError> {
    let start = Instant::now();
    let report = pass.run(g)?;
    let time = start.elapsed();
    if opts.verify {
        verify(g).map_err(|error| PassError::Verify {
            pass: pass.name().to_string(),
            error,
        })?;
    }
    Ok(PassRun {
        name: pass.name(),
        round,
        report,
        time,
    })
}

/// `KILN_PASS_BISECT`, if set.
fn bisect_limit() -> Result<Option<usize>, PassError> {
    match std::env::var("KILN_PASS_BISECT") {
        Ok(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| PassError::BadBisect(s)),
        Err(_) => Ok(None),
    }
}
