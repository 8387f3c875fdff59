//! Loading and optimizing a model with per-stage timings, shared by `run` and `inspect`.

use super::timing::Timer;
use anyhow::Context;
use kiln::frontend::ImportOptions;
use kiln::ir::Tensor;
use kiln::passes::{PassManager, PipelineReport, Quantize, RunOptions, Scheme};
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

/// The quantization flags of `run`, `bench` and `build`.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct QuantizeArgs {
    /// Quantize the linear layers with constant weights after optimizing: `int8` (int8
    /// weights per output channel, activations quantized per token at run time),
    /// `int8-weights` (weight-only; activations stay f32), `int4` (int4 weights in blocks of
    /// 32 with zero points, int8 activations), or `f16` / `bf16` (weights stored in half
    /// precision, arithmetic in f32). The results move away from f32's.
    #[arg(long, value_name = "SCHEME", value_parser = parse_scheme)]
    pub quantize: Option<Scheme>,
    /// Leave the layers whose node name contains PATTERN in f32 (repeatable; names as
    /// `kiln inspect --optimized` prints them).
    #[arg(long = "quantize-skip", value_name = "PATTERN", requires = "quantize")]
    pub skip: Vec<String>,
    /// Keep the most sensitive layers in higher precision (int4 → int8 → f32) until every
    /// float output's cosine against the f32 model is at least COSINE, e.g. 0.999; measured
    /// on --calibration, or on the run's inputs. Prints which layers it kept and why.
    #[arg(long = "quantize-accuracy", value_name = "COSINE", requires = "quantize", value_parser = parse_cosine)]
    pub accuracy: Option<f64>,
    /// Inputs (.npz, by name) that --quantize-accuracy measures on.
    #[arg(long, value_name = "NPZ", requires = "accuracy")]
    pub calibration: Option<std::path::PathBuf>,
}

/// Parses `--quantize-accuracy`.
fn parse_cosine(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(c) if c > 0.0 && c <= 1.0 => Ok(c),
        _ => Err(format!(
            "expected a cosine in (0, 1], such as 0.999; got `{s}`"
        )),
    }
}

/// Quantizes `model` as the flags say, timed as `quantize`; `inputs` are what an accuracy
/// target is measured on when no --calibration file is given. Warns when no layer
/// qualified, since the user asked for something that did not happen.
pub(crate) fn quantize(
    model: Model,
    args: &QuantizeArgs,
    inputs: &BTreeMap<String, Tensor>,
    threads: usize,
    timer: &Timer,
) -> anyhow::Result<Model> {
    let Some(pass) = quantize_pass(&model, args, inputs, threads, timer)? else {
        return Ok(model);
    };
    let path = model.path().to_path_buf();
    let (quantized, report) = timer
        .time("quantize", || model.into_quantized_with(pass))
        .with_context(|| format!("quantizing {}", path.display()))?;
    if report.passes.first().is_none_or(|p| p.report.changes == 0) {
        eprintln!(
            "warning: --quantize {}: no linear layer has a constant f32 weight (or every one \
             was skipped); nothing was quantized",
            args.quantize.map_or("", Scheme::name)
        );
    }
    Ok(quantized)
}

/// The quantize pass the flags ask for (`None` without --quantize), with the layers an
/// accuracy target keeps in higher precision, after the search that finds them.
pub(crate) fn quantize_pass(
    model: &Model,
    args: &QuantizeArgs,
    inputs: &BTreeMap<String, Tensor>,
    threads: usize,
    timer: &Timer,
) -> anyhow::Result<Option<Quantize>> {
    let Some(scheme) = args.quantize else {
        return Ok(None);
    };
    let pass = Quantize {
        skip: args.skip.clone(),
        ..Quantize::new(scheme)
    };
    let Some(target) = args.accuracy else {
        return Ok(Some(pass));
    };
    let calibration;
    let inputs = match &args.calibration {
        Some(path) => {
            calibration = kiln::npz::read_npz(path)?.into_iter().collect();
            &calibration
        }
        None => inputs,
    };
    let bar = super::progress::bar("{msg} {bar:30} {pos}/{len}");
    let (_, report) = timer
        .time("quantize to accuracy", || {
            model.quantize_to_accuracy(&pass, target, inputs, threads, &mut |stage, done, total| {
                bar.set_message(stage.to_string());
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })
        })
        .with_context(|| format!("--quantize-accuracy on {}", model.path().display()))?;
    bar.finish_and_clear();
    eprint!("{}", accuracy_summary(&report));
    Ok(Some(Quantize {
        layers: report.kept.iter().cloned().collect(),
        ..pass
    }))
}

/// What the accuracy search found, for stderr.
pub(crate) fn accuracy_summary(r: &kiln::accuracy::AccuracyReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let scheme = r.scheme.name();
    let _ = writeln!(
        s,
        "quantize-accuracy: every layer {scheme}: lowest output cosine {:.6} (target {})",
        r.plain_cosine, r.target
    );
    if r.kept.is_empty() {
        let _ = writeln!(s, "quantize-accuracy: target met with every layer {scheme}");
        return s;
    }
    let alone: BTreeMap<&str, f64> = r
        .sensitivity
        .iter()
        .map(|(l, c)| (l.as_str(), *c))
        .collect();
    let _ = writeln!(
        s,
        "quantize-accuracy: kept {} of {} layers in higher precision (the most sensitive: \
         lowest output cosine with that layer alone {scheme}):",
        r.kept.len(),
        r.sensitivity.len()
    );
    for (layer, to) in &r.kept {
        let to = to.map_or("f32", Scheme::name);
        let _ = writeln!(
            s,
            "  {layer}: {to} (alone {scheme}: {:.6})",
            alone.get(layer.as_str()).copied().unwrap_or(f64::NAN)
        );
    }
    let verdict = if r.met() { "met" } else { "NOT met" };
    let _ = writeln!(
        s,
        "quantize-accuracy: lowest output cosine {:.6}, target {verdict} ({} models measured)",
        r.cosine, r.evaluations
    );
    s
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
    model: Model,
    threads: usize,
    max_memory: kiln::ir::MemoryLimit,
    timer: &Timer,
) -> anyhow::Result<kiln::Compiled> {
    let opts = kiln::Options {
        threads: threads.max(1),
        optimize: false,
        max_memory,
        quantize: None,
        quantize_skip: Vec::new(),
        kv_cache: false,
    };
    Ok(timer.time("compile", || model.into_compiled(&opts))?)
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
