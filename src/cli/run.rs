//! `kiln run`: compile and run a model once.

use super::pipeline::{compile, generate, load, optimize, parse_dim};
use super::timing::Timer;
use super::Backend;
use clap::Args;
use kiln::npz::{read_npz_with, write_npz};
use kiln::summary::summarize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) const EXAMPLE: &str = "Examples:
  kiln run tests/models/bert_tiny.onnx
  kiln run tests/models/gpt2_tiny.onnx --dim batch=2 --dim seq=16 -o out.npz
  kiln run model.onnx --inputs in.npz -o out.npz -v";

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The model: an ONNX file or kiln text IR (.kir).
    model: PathBuf,
    /// Inputs by name, as an .npz file; without it, valid inputs are generated.
    #[arg(long)]
    inputs: Option<PathBuf>,
    /// Write the outputs, by name, to this .npz file.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Size of a symbolic dim for generated inputs, e.g. `--dim seq=128` (repeatable).
    #[arg(long = "dim", value_name = "NAME=N", value_parser = parse_dim)]
    dims: Vec<(String, i64)>,
    /// Where to run.
    #[arg(long, value_enum, default_value_t)]
    backend: Backend,
    /// How `--backend cuda` computes f32 matrix products.
    #[arg(long, value_enum, default_value_t)]
    precision: super::PrecisionArg,
    /// Threads for the cpu backend (default: every core).
    #[arg(long, default_value_t = super::default_threads())]
    threads: usize,
    /// Seed for generated inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Run the graph as imported, without the optimization pipeline.
    #[arg(long)]
    no_optimize: bool,
    /// The most bytes any tensor, constant or arena may take, checked before each is
    /// allocated: bytes or a size such as 512M, 8G (default: 80% of the machine's memory).
    #[arg(long, value_name = "BYTES")]
    max_memory: Option<kiln::ir::MemoryLimit>,
    #[command(flatten)]
    quantize: super::pipeline::QuantizeArgs,
}

pub(crate) fn run(args: RunArgs, timer: &Timer) -> anyhow::Result<ExitCode> {
    let dims: BTreeMap<String, i64> = args.dims.iter().cloned().collect();
    let limit = args.max_memory.unwrap_or_default();
    let given = match &args.inputs {
        Some(path) => read_npz_with(path, limit)?.into_iter().collect(),
        None => BTreeMap::new(),
    };
    let mut model = load(&args.model, &dims, &given, timer)?;
    if !args.no_optimize {
        model = optimize(&model, None, timer)?;
    }
    let inputs = if args.inputs.is_some() {
        given
    } else {
        generate(&args.model, &model, &dims, args.seed, limit)?
    };
    model = super::pipeline::quantize(model, &args.quantize, &inputs, args.threads, timer)?;
    let outputs = match args.backend {
        Backend::Cpu => {
            let c = compile(model, args.threads, limit, timer)?;
            timer.time("compile for input shapes", || c.prepare(&inputs))?;
            timer.time("run (cpu)", || c.run(&inputs))?
        }
        Backend::Interp => timer.time("run (interp)", || model.run_with_limit(&inputs, limit))?,
        Backend::Cuda => {
            let mut gpu = timer.time("compile and load (cuda)", || {
                kiln::gpu::GpuModel::new(&model, args.precision.into())
            })?;
            timer.time("run (cuda)", || gpu.run(&inputs))?
        }
    };
    for (name, t) in &outputs {
        super::emit(&format!("{}\n", summarize(name, t)))?;
    }
    if let Some(path) = &args.output {
        write_npz(path, &outputs)?;
    }
    Ok(ExitCode::SUCCESS)
}
