//! `kiln quantize-report`: what quantizing a model costs in accuracy and buys in speed and
//! size, measured on given or generated inputs.

use super::pipeline::{compile, generate, load, optimize, parse_dim, QuantizeArgs};
use super::timing::Timer;
use anyhow::Context;
use clap::Args;
use kiln::compare::agreement;
use kiln::ir::{Op, Tensor};
use kiln::npz::read_npz_with;
use kiln::Model;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

pub(crate) const EXAMPLE: &str = "Examples:
  kiln quantize-report tests/models/bert_tiny.onnx --quantize int8
  kiln quantize-report model.onnx --quantize int4 --inputs in.npz --onnx model.int4.onnx
  kiln quantize-report model.onnx --quantize int8 --quantize-accuracy 0.999 --inputs in.npz

Per float output: cosine, relative L2 and max absolute error against the f32 model, and
top-1 agreement over the last axis for outputs named `logits`; then the latency and the
weight bytes of both versions, and each layer's sensitivity (the lowest output cosine with
that layer alone quantized), most sensitive first.";

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// The model: an ONNX file or kiln text IR (.kir).
    model: PathBuf,
    /// Inputs by name, as an .npz file; without it, inputs are generated.
    #[arg(long)]
    inputs: Option<PathBuf>,
    /// Size of a symbolic dim for generated inputs, e.g. `--dim seq=128` (repeatable).
    #[arg(long = "dim", value_name = "NAME=N", value_parser = parse_dim)]
    dims: Vec<(String, i64)>,
    /// Threads (default: every core).
    #[arg(long, default_value_t = super::default_threads())]
    threads: usize,
    /// Timed runs of each version.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Skip the per-layer sensitivity table (one compile and run per layer).
    #[arg(long)]
    no_sensitivity: bool,
    /// Also write the quantized graph as ONNX (ai.kiln ops), for Netron.
    #[arg(long, value_name = "PATH")]
    onnx: Option<PathBuf>,
    #[command(flatten)]
    quantize: QuantizeArgs,
}

pub(crate) fn report(args: ReportArgs, timer: &Timer) -> anyhow::Result<ExitCode> {
    let Some(scheme) = args.quantize.quantize else {
        anyhow::bail!(
            "quantize-report needs --quantize SCHEME (int8, int8-weights, int4, f16, bf16)"
        );
    };
    let dims: BTreeMap<String, i64> = args.dims.iter().cloned().collect();
    let limit = kiln::ir::MemoryLimit::default();
    let given = match &args.inputs {
        Some(path) => read_npz_with(path, limit)?.into_iter().collect(),
        None => BTreeMap::new(),
    };
    let f32_model = optimize(&load(&args.model, &dims, &given, timer)?, None, timer)?;
    let inputs = match args.inputs {
        Some(_) => given,
        None => generate(&args.model, &f32_model, &dims, 0, limit)?,
    };
    let quantized = super::pipeline::quantize(
        f32_model.clone(),
        &args.quantize,
        &inputs,
        args.threads,
        timer,
    )?;
    let (reference, f32_ms) = measure(&f32_model, &inputs, &args, limit, timer)?;
    let (outputs, q_ms) = measure(&quantized, &inputs, &args, limit, timer)?;
    let mut out = String::new();
    let layers = count(&quantized, |op| matches!(op, Op::QuantLinear(_)));
    writeln!(
        out,
        "{}: --quantize {}, {layers} layers quantized",
        args.model.display(),
        scheme.name()
    )?;
    writeln!(
        out,
        "output                          cosine      rel_l2     max_abs   top-1"
    )?;
    for ((name, got), (_, want)) in outputs.iter().zip(&reference) {
        if !want.dtype().is_float() {
            continue;
        }
        let a = agreement(got, want).map_err(|e| anyhow::anyhow!("output `{name}`: {e}"))?;
        let top1 = match name.contains("logits") {
            true => format!("{:.4}", top1(got, want)),
            false => "-".into(),
        };
        writeln!(
            out,
            "{name:30} {:9.6} {:11.3e} {:11.3e}   {top1}",
            a.cosine, a.rel_l2, a.max_abs
        )?;
    }
    let (wf, wq) = (weight_bytes(&f32_model), weight_bytes(&quantized));
    writeln!(
        out,
        "latency (median of {}): f32 {f32_ms:.3} ms, {} {q_ms:.3} ms ({:.3}x)",
        args.runs,
        scheme.name(),
        q_ms / f32_ms
    )?;
    writeln!(
        out,
        "constant bytes: f32 {:.2} MB, {} {:.2} MB ({:.3}x)",
        wf as f64 / 1e6,
        scheme.name(),
        wq as f64 / 1e6,
        wq as f64 / wf.max(1) as f64
    )?;
    if !args.no_sensitivity {
        let pass = kiln::passes::Quantize {
            skip: args.quantize.skip.clone(),
            ..kiln::passes::Quantize::new(scheme)
        };
        let bar = super::progress::bar("{msg} {bar:30} {pos}/{len}");
        let table = f32_model
            .layer_sensitivity(&pass, &inputs, args.threads, &mut |stage, done, total| {
                bar.set_message(stage.to_string());
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })
            .context("measuring layer sensitivity")?;
        bar.finish_and_clear();
        writeln!(
            out,
            "layer sensitivity (lowest output cosine with that layer alone {}):",
            scheme.name()
        )?;
        for (layer, cosine) in table {
            let layer = if layer.is_empty() {
                "(unnamed)"
            } else {
                &layer
            };
            writeln!(out, "  {cosine:.6}  {layer}")?;
        }
    }
    super::emit(&out)?;
    if let Some(path) = &args.onnx {
        std::fs::write(path, kiln::frontend::export_onnx(quantized.graph()))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The outputs of `model` and its median latency over `args.runs` runs.
fn measure(
    model: &Model,
    inputs: &BTreeMap<String, Tensor>,
    args: &ReportArgs,
    limit: kiln::ir::MemoryLimit,
    timer: &Timer,
) -> anyhow::Result<(Vec<(String, Tensor)>, f64)> {
    let compiled = compile(model.clone(), args.threads, limit, timer)?;
    let outputs = compiled.run(inputs)?;
    let mut times = Vec::with_capacity(args.runs.max(1));
    for _ in 0..args.runs.max(1) {
        let t = Instant::now();
        compiled.run(inputs)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((outputs, times[times.len() / 2]))
}

/// How many nodes have an op `is` accepts.
fn count(model: &Model, is: impl Fn(&Op) -> bool) -> usize {
    model.graph().nodes.iter().filter(|n| is(&n.op)).count()
}

/// Bytes of every constant of the graph (weights, and what else the graph holds).
fn weight_bytes(model: &Model) -> usize {
    (model.graph().nodes.iter())
        .filter_map(|n| match &n.op {
            Op::Const(t) => Some(t.len() * t.dtype().size_bytes()),
            _ => None,
        })
        .sum()
}

/// The fraction of positions whose argmax over the last axis agrees.
fn top1(got: &Tensor, want: &Tensor) -> f64 {
    let last = want.shape().last().copied().unwrap_or(1).max(1);
    let argmax = |v: &[f64]| -> Vec<usize> {
        v.chunks(last)
            .map(|row| (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best }))
            .collect()
    };
    let (a, b) = (argmax(&got.to_f64_vec()), argmax(&want.to_f64_vec()));
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}
