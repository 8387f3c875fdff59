//! Loading and optimizing a model with per-stage timings, shared by `run` and `inspect`.

use super::timing::Timer;
use anyhow::Context;
use kiln::frontend::ImportOptions;
use kiln::ir::Tensor;
use kiln::passes::{PassManager, PipelineReport, RunOptions, Scheme};
use kiln::Model;
use std::collections::BTreeMap;
use std::path::Path;

/// Loads a model; `dims` fixes symbol sizes at import, and inputs the import needs as
/// constants (shape operands) come from `given`.
pub(crate) fn load(
    path: &Path,
    dims: &BTreeMap<String, i64>,
    given: &BTreeMap<String, Tensor>,
    timer: &Timer,
) -> anyhow::Result<Model> {
    let opts = ImportOptions {
        dims: dims.clone(),
        ..ImportOptions::default()
    };
    let model = Model::load_binding(path, &opts, given)?;
    let stats = model.load_stats();
    timer.report("read", stats.read);
    timer.report("decode", stats.decode);
    timer.report("import", stats.import);
    Ok(model)
}

/// Runs the default pipeline, stopping after `stop_after` when given, and reports each
/// pass's time.
pub(crate) fn optimize(
    model: &Model,
    stop_after: Option<String>,
    timer: &Timer,
) -> anyhow::Result<Model> {
    let opts = RunOptions {
        stop_after,
        verify: true,
    };
    let (optimized, report) = timer
        .memory("the passes", || {
            model.optimize_with(&PassManager::default_pipeline(), &opts)
        })
        .with_context(|| format!("optimizing {}", model.path().display()))?;
    report_passes(&report, timer);
    Ok(optimized)
}

fn report_passes(report: &PipelineReport, timer: &Timer) {
    for run in &report.passes {
        timer.report(
            &format!("pass {} (round {})", run.name, run.round),
            run.time,
        );
        for note in &run.report.notes {
            eprintln!("warning: pass {} (round {}): {note}", run.name, run.round);
        }
    }
}

/// Parses `--quantize`.
pub(crate) fn parse_scheme(s: &str) -> Result<Scheme, String> {
    Scheme::from_name(s).ok_or_else(|| {
        let valid: Vec<&str> = Scheme::ALL.iter().map(|q| q.name()).collect();
        format!("unknown scheme `{s}`; valid: {}", valid.join(", "))
    })
}

/// Quantizes `model` when a scheme is given, timed as `quantize`; warns when no layer
/// qualified, since the user asked for something that did not happen.
pub(crate) fn quantize(
    model: Model,
    scheme: Option<Scheme>,
    timer: &Timer,
) -> anyhow::Result<Model> {
    let Some(scheme) = scheme else {
        return Ok(model);
    };
    let (quantized, report) = timer
        .time("quantize", || model.quantize(scheme))
        .with_context(|| format!("quantizing {}", model.path().display()))?;
    if report.passes.first().is_none_or(|p| p.report.changes == 0) {
        eprintln!(
            "warning: --quantize {}: no linear layer has a constant f32 weight; nothing was quantized",
            scheme.name()
        );
    }
    Ok(quantized)
}

/// Parses `NAME=N` for `--dim`.
pub(crate) fn parse_dim(s: &str) -> Result<(String, i64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=N, got `{s}`"))?;
    let n: i64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not an integer"))?;
    if n < 0 {
        return Err(format!("dim `{name}` must be non-negative, got {n}"));
    }
    Ok((name.trim().to_string(), n))
}

/// Compiles an (already optimized) model for the CPU, timed as `compile`.
pub(crate) fn compile(
    model: &Model,
    threads: usize,
    max_memory: kiln::ir::MemoryLimit,
    timer: &Timer,
) -> anyhow::Result<kiln::Compiled> {
    let opts = kiln::Options {
        threads: threads.max(1),
        optimize: false,
        max_memory,
        quantize: None,
    };
    Ok(timer.time("compile", || model.compile(&opts))?)
}

/// Generated inputs for `model` (symbol sizes from `dims`, or defaults, which are noted on
/// stderr).
pub(crate) fn generate(
    path: &Path,
    model: &Model,
    dims: &BTreeMap<String, i64>,
    seed: u64,
    max_memory: kiln::ir::MemoryLimit,
) -> anyhow::Result<BTreeMap<String, Tensor>> {
    let generated = kiln::generate::generate_inputs(model.graph(), dims, seed, max_memory)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("generating inputs for {}", path.display()))?;
    if !generated.defaulted.is_empty() {
        let list: Vec<String> = generated
            .defaulted
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect();
        eprintln!(
            "note: using {} (set sizes with --dim NAME=N)",
            list.join(", ")
        );
    }
    Ok(generated.inputs.into_iter().collect())
}
