//! `kiln build`: compile a model ahead of time into an executable, object, static library
//! or C header.

use super::timing::Timer;
use clap::{Args, ValueEnum};
use kiln::build::{Emit, Model, WeightsMode};
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) const EXAMPLE: &str = "Examples:
  kiln build tests/models/bert_tiny.onnx --dim batch=1 --dim seq=16 -o bert
  ./bert                                   # runs on stored sample inputs, prints summaries
  ./bert --inputs in.npz -o out.npz --threads 2
  kiln build model.onnx --dim batch=1..3 --dim seq=1..16 --emit obj -o model.o
  kiln build model.onnx --dim batch=1..3 --dim seq=1..16 --emit header -o model.h
  cc app.c model.o libkiln_runtime.a -lpthread -lm -ldl   # libkiln_runtime.a: next to kiln
  kiln build model.onnx --dim seq=16 --emit obj --target aarch64-unknown-linux-gnu -o model.o
  kiln build model.onnx --device cuda -o model-gpu   # needs only the NVIDIA driver to run
  ./model-gpu --inputs in.npz -o out.npz
  kiln build tests/models/gpt2_kv.onnx --tokenizer tests/models/gpt2_kv.tokenizer.json -o gpt2
  ./gpt2 --prompt \"w5 w6 w7\" --max-new-tokens 16   # a decoder generates, as kiln generate

The artifact holds one program for every shape its dims allow: give a dim a range
(NAME=MIN..MAX) or one size (NAME=N, whose sizes then constant-fold); a dim given neither
ranges over 1..=4096 (a decoder's past length over 0..=4096), and the build says so. Runs
outside the ranges are refused.
Artifacts are written atomically: a failed build leaves any existing file untouched.";

#[derive(Args)]
pub(crate) struct BuildArgs {
    /// The model: an ONNX file or kiln text IR (.kir).
    model: PathBuf,
    /// The artifact to write.
    #[arg(short, long)]
    output: PathBuf,
    /// What to write.
    #[arg(long, value_enum, default_value_t = EmitArg::Exe)]
    emit: EmitArg,
    /// Where an executable (`--emit exe`) runs: this CPU, or an NVIDIA GPU (the
    /// executable embeds the PTX module and needs only the NVIDIA driver where it runs).
    #[arg(long, value_enum, default_value_t)]
    device: DeviceArg,
    /// With `--emit ptx` or `--device cuda`: how f32 matrix products are computed.
    #[arg(long, value_enum, default_value_t)]
    precision: super::PrecisionArg,
    /// A symbolic dim's size or range: `--dim seq=128` or `--dim seq=1..512` (repeatable).
    #[arg(long = "dim", value_name = "NAME=N|NAME=MIN..MAX", value_parser = parse_range)]
    dims: Vec<(String, i64, i64)>,
    /// Target triple (default: this machine): x86_64-* or aarch64-* (objects only).
    #[arg(long, value_name = "TRIPLE")]
    target: Option<String>,
    /// Weights in the artifact (embed) or in a side file `OUTPUT.weights` mapped at start.
    #[arg(long, value_enum, default_value_t = WeightsArg::Embed)]
    weights: WeightsArg,
    /// Symbol prefix of the C functions (`NAME_run`); default: the model file's stem.
    #[arg(long)]
    name: Option<String>,
    /// The most bytes any tensor, constant or arena may take, checked before each is
    /// allocated: bytes or a size such as 512M, 8G (default: 80% of the machine's memory).
    #[arg(long, value_name = "BYTES")]
    max_memory: Option<kiln::ir::MemoryLimit>,
    /// A decoder's Hugging Face `tokenizer.json`, embedded: the executable then takes
    /// `--prompt TEXT` and prints text (it also takes `--tokenizer FILE` at run time).
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
    #[command(flatten)]
    quantize: super::pipeline::QuantizeArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum EmitArg {
    /// A standalone executable.
    Exe,
    /// A relocatable object (link with libkiln_runtime.a).
    Obj,
    /// A static library: the object and the runtime.
    Lib,
    /// A C header for the object or library.
    Header,
    /// A Rust module with a typed wrapper (for build scripts, prefer kiln::build::Model).
    Rust,
    /// PTX for NVIDIA GPUs (sm_80): OUTPUT (the module), OUTPUT.plan.json (how to launch
    /// each entry) and OUTPUT.weights (the constants). Calls the PTX backend lacks
    /// (quantized linear layers, some f16/bf16 reference ops) are refused by name.
    Ptx,
}

#[derive(Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
enum DeviceArg {
    /// This machine's CPU (the default).
    #[default]
    Cpu,
    /// An NVIDIA GPU, sm_80 or newer (`--emit exe` only).
    Cuda,
}

#[derive(Clone, Copy, ValueEnum)]
enum WeightsArg {
    /// In the artifact.
    Embed,
    /// In OUTPUT.weights.
    File,
}

pub(crate) fn build(args: BuildArgs, timer: &Timer) -> anyhow::Result<ExitCode> {
    let mut model = Model::new(&args.model).max_memory(args.max_memory.unwrap_or_default());
    for (name, min, max) in &args.dims {
        model = model.dim(name, *min, *max);
    }
    if let Some(t) = &args.target {
        model = model.target(t);
    }
    if let Some(n) = &args.name {
        model = model.name(n);
    }
    if let Some(t) = &args.tokenizer {
        model = model.tokenizer(t);
    }
    if args.quantize.quantize.is_some() {
        model = model.quantize_with(build_quantize(&args, timer)?);
    }
    model = model.weights(match args.weights {
        WeightsArg::Embed => WeightsMode::Embed,
        WeightsArg::File => WeightsMode::File,
    });
    if matches!(args.emit, EmitArg::Ptx) {
        return build_ptx(&args, timer);
    }
    if args.device == DeviceArg::Cuda {
        if !matches!(args.emit, EmitArg::Exe) {
            anyhow::bail!("--device cuda writes an executable (--emit exe), or use --emit ptx");
        }
        return build_cuda_exe(&args, timer);
    }
    let emit = match args.emit {
        EmitArg::Exe => Emit::Exe,
        EmitArg::Obj => Emit::Obj,
        EmitArg::Lib => Emit::Lib,
        EmitArg::Header => Emit::Header,
        EmitArg::Rust => Emit::Rust,
        EmitArg::Ptx => unreachable!("handled above"),
    };
    let start = std::time::Instant::now();
    let written = model.emit_reporting(emit, &args.output, &mut |line| {
        eprintln!("{line}");
    })?;
    timer.report("build", start.elapsed());
    for path in written {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        eprintln!("wrote {} ({:.1} MB)", path.display(), size as f64 / 1e6);
    }
    Ok(ExitCode::SUCCESS)
}

/// The model as PTX for sm_80: fixed dims (`--dim NAME=N`) are bound; ranges stay free
/// symbols.
fn ptx_artifact(args: &BuildArgs, timer: &Timer) -> anyhow::Result<kiln::gpu::PtxArtifact> {
    if args.quantize.quantize.is_some() || args.target.is_some() {
        anyhow::bail!("PTX builds take neither --quantize nor --target yet");
    }
    let fixed: kiln::ir::Bindings = (args.dims.iter())
        .filter(|(_, lo, hi)| lo == hi)
        .map(|(name, n, _)| (name.clone(), *n))
        .collect();
    let model =
        super::pipeline::load(&args.model, &Default::default(), &Default::default(), timer)?;
    let model = super::pipeline::optimize(&model, None, timer)?;
    let options = kiln::cuda::Options {
        target: kiln::cuda::Target::Sm80,
        precision: args.precision.into(),
    };
    let start = std::time::Instant::now();
    let artifact = kiln::gpu::ptx_artifact(&model, &fixed, options)?;
    timer.report("ptx", start.elapsed());
    Ok(artifact)
}

/// `--emit exe --device cuda`: the PTX artifact embedded in an executable linked with
/// `libkiln_cuda_runtime.a`, written atomically.
fn build_cuda_exe(args: &BuildArgs, timer: &Timer) -> anyhow::Result<ExitCode> {
    let artifact = ptx_artifact(args, timer)?;
    let plan = serde_json::to_vec(&artifact.plan)?;
    let stem = args
        .model
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("model");
    let name = kiln::build::c_identifier(args.name.as_deref().unwrap_or(stem));
    let blobs = [artifact.ptx.as_bytes(), &plan[..], &artifact.weights[..]];
    let start = std::time::Instant::now();
    kiln::build::cuda_executable(blobs, &name, &args.output, None)?;
    timer.report("link", start.elapsed());
    let size = std::fs::metadata(&args.output)
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!(
        "wrote {} ({:.1} MB)",
        args.output.display(),
        size as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

/// `--emit ptx`: the module, its launch plan and its constants, each file written
/// atomically.
fn build_ptx(args: &BuildArgs, timer: &Timer) -> anyhow::Result<ExitCode> {
    let artifact = ptx_artifact(args, timer)?;
    let with = |ext: &str| {
        let mut s = args.output.clone().into_os_string();
        s.push(ext);
        PathBuf::from(s)
    };
    let plan = serde_json::to_string_pretty(&artifact.plan)?;
    for (path, bytes) in [
        (args.output.clone(), artifact.ptx.as_bytes()),
        (with(".plan.json"), plan.as_bytes()),
        (with(".weights"), &artifact.weights[..]),
    ] {
        let tmp = with(".tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        eprintln!(
            "wrote {} ({:.1} MB)",
            path.display(),
            bytes.len() as f64 / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The quantize pass for the artifact. An accuracy target is measured on --calibration,
/// whose shapes fix the dims for the measurement only.
fn build_quantize(args: &BuildArgs, timer: &Timer) -> anyhow::Result<kiln::passes::Quantize> {
    let q = &args.quantize;
    let calibration = match (&q.accuracy, &q.calibration) {
        (Some(_), None) => anyhow::bail!(
            "--quantize-accuracy needs --calibration in.npz with `kiln build` (the inputs to \
             measure the accuracy on)"
        ),
        (Some(_), Some(path)) => kiln::npz::read_npz(path)?.into_iter().collect(),
        (None, _) => Default::default(),
    };
    let mut pass = None;
    if q.accuracy.is_some() {
        let dims = Default::default();
        let model = super::pipeline::load(&args.model, &dims, &calibration, timer)?;
        let model = super::pipeline::optimize(&model, None, timer)?;
        let threads = super::default_threads();
        pass = super::pipeline::quantize_pass(&model, q, &calibration, threads, timer)?;
    }
    let scheme = q.quantize.expect("checked by the caller");
    Ok(pass.unwrap_or(kiln::passes::Quantize {
        skip: q.skip.clone(),
        ..kiln::passes::Quantize::new(scheme)
    }))
}

/// Parses `NAME=N` or `NAME=MIN..MAX`.
fn parse_range(s: &str) -> Result<(String, i64, i64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=N or NAME=MIN..MAX, got `{s}`"))?;
    let int = |v: &str| {
        v.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("`{v}` is not a size"))
    };
    let (min, max) = match value.split_once("..") {
        Some((a, b)) => (int(a)?, int(b.trim_start_matches('='))?),
        None => (int(value)?, int(value)?),
    };
    if min > max {
        return Err(format!("`{value}`: the range is empty"));
    }
    Ok((name.trim().to_string(), min, max))
}
