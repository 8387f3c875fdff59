//! Graphs with data-dependent sizes (`NonZero`) as one module of stages. The kernel
//! layer cuts such a graph around each op that defines a new symbol
//! (`kiln_kernel::stages`); every other stage is an ordinary graph, scheduled with its
//! symbols free like any model and written as entries named `kiln_s{stage}_k{i}`. A
//! `NonZero` stage is the two entries of `nonzero.rs` (`kiln_s{stage}_count` and
//! `_write`), between which the runtime reads the count. All stages share one module, so
//! a device loads it once (`runtime::staged` runs it).

use crate::{emit_entries, header, nonzero, EmitError, Launch, Options};
use kiln_ir::{Graph, Op};
use kiln_kernel::kernel::Program;
use kiln_kernel::schedule::ScheduleError;
use kiln_kernel::stages::{split, Stage};

/// How one stage runs.
pub enum StageCode {
    /// Ordinary kernels: the stage graph's program and one launch per kernel.
    Kernels {
        /// The program.
        program: Box<Program>,
        /// Its launches (entries `kiln_s{stage}_k{i}`).
        launches: Vec<Launch>,
    },
    /// A `NonZero`: the entries that count and that write the coordinates.
    NonZero {
        /// The count entry's name.
        count: String,
        /// The write entry's name.
        write: String,
    },
}

/// A module of stages.
pub struct StagedModule {
    /// The module's text.
    pub ptx: String,
    /// The stages in order, each with its code.
    pub stages: Vec<(Stage, StageCode)>,
}

/// Why a staged graph cannot be written as PTX.
#[derive(Debug, thiserror::Error)]
pub enum StagedError {
    /// A stage failed to schedule.
    #[error("stage {stage}: {source}")]
    Schedule {
        /// The stage.
        stage: usize,
        /// Why.
        source: ScheduleError,
    },
    /// A stage's program has no PTX.
    #[error("stage {stage}: {source}")]
    Emit {
        /// The stage.
        stage: usize,
        /// Why.
        source: EmitError,
    },
}

/// The stages of `graph` as one module, or `None` when its sizes follow from its input
/// shapes alone (then [`crate::program`] and [`crate::emit_with`] apply).
pub fn staged_module(graph: &Graph, options: Options) -> Option<Result<StagedModule, StagedError>> {
    let stages = split(graph)?;
    Some(write(stages, options))
}

fn write(stages: Vec<Stage>, options: Options) -> Result<StagedModule, StagedError> {
    let mut ptx = header(options.target);
    let mut out = Vec::with_capacity(stages.len());
    for (s, stage) in stages.into_iter().enumerate() {
        let prefix = format!("kiln_s{s}_");
        let code = match &stage.runtime {
            Some(Op::NonZero { .. }) => {
                let x = stage.graph.inputs.first().map(|(_, v)| *v);
                let dtype = x.map_or(kiln_ir::DType::F32, |v| stage.graph.value_type(v).dtype);
                ptx.push_str(&nonzero::entries(&prefix, dtype));
                ptx.push('\n');
                StageCode::NonZero {
                    count: format!("{prefix}count"),
                    write: format!("{prefix}write"),
                }
            }
            Some(op) => {
                let source = EmitError::Unsupported(format!("runtime call {}", op.name()));
                return Err(StagedError::Emit { stage: s, source });
            }
            None => {
                let program = crate::program(&stage.graph, &kiln_ir::Bindings::new())
                    .map_err(|source| StagedError::Schedule { stage: s, source })?;
                let (text, launches) = emit_entries(&program, options.precision, &prefix)
                    .map_err(|source| StagedError::Emit { stage: s, source })?;
                ptx.push_str(&text);
                StageCode::Kernels {
                    program: Box::new(program),
                    launches,
                }
            }
        };
        out.push((stage, code));
    }
    Ok(StagedModule { ptx, stages: out })
}
