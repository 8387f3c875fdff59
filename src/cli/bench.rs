//! `kiln bench`: compile a model and time repeated runs; prints one JSON line.

use super::pipeline::{generate, load, optimize, parse_dim};
use super::timing::Timer;
use clap::Args;
use kiln::npz::read_npz_with;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

pub(crate) const EXAMPLE: &str = "Examples:
  kiln bench tests/models/bert_tiny.onnx
  kiln bench model.onnx --inputs in.npz --threads 2 --runs 50 --warmup 5
  kiln bench model.onnx --dim batch=1 --dim seq=128

Output (one line of JSON on stdout):
  {\"model\":\"model.onnx\",\"backend\":\"cpu\",\"threads\":2,\"compile_ms\":210.5,
   \"median_ms\":4.1,\"p10_ms\":3.9,\"p90_ms\":4.6,\"runs\":50}
compile_ms covers load, optimization and code generation for the benchmarked shapes.";

#[derive(Args)]
pub(crate) struct BenchArgs {
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
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Untimed runs first (warms caches and the worker pool).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Where to run.
    #[arg(long, value_enum, default_value_t)]
    backend: super::Backend,
    /// How `--backend cuda` computes f32 matrix products.
    #[arg(long, value_enum, default_value_t)]
    precision: super::PrecisionArg,
    /// Also print where the time goes (cpu backend): time per op and the slowest kernels,
    /// summed over the timed runs, on stderr.
    #[arg(long)]
    profile: bool,
    /// The most bytes any tensor, constant or arena may take, checked before each is
    /// allocated: bytes or a size such as 512M, 8G (default: 80% of the machine's memory).
    #[arg(long, value_name = "BYTES")]
    max_memory: Option<kiln::ir::MemoryLimit>,
    #[command(flatten)]
    quantize: super::pipeline::QuantizeArgs,
}

pub(crate) fn bench(args: BenchArgs, timer: &Timer) -> anyhow::Result<ExitCode> {
    let dims: BTreeMap<String, i64> = args.dims.iter().cloned().collect();
    let limit = args.max_memory.unwrap_or_default();
    let given = match &args.inputs {
        Some(path) => read_npz_with(path, limit)?.into_iter().collect(),
        None => BTreeMap::new(),
    };
    let start = Instant::now();
    let model = optimize(&load(&args.model, &dims, &given, timer)?, None, timer)?;
    let inputs = if args.inputs.is_some() {
        given
    } else {
        generate(&args.model, &model, &dims, 0, limit)?
    };
    let model = super::pipeline::quantize(model, &args.quantize, &inputs, args.threads, timer)?;
    let run: Box<dyn Fn() -> Result<(), kiln::Error>> = match args.backend {
        super::Backend::Cpu => {
            let compiled = super::pipeline::compile(model, args.threads, limit, timer)?;
            timer.time("compile for input shapes", || compiled.prepare(&inputs))?;
            if args.profile {
                print_profile(&compiled, &inputs, args.runs.max(1))?;
            }
            Box::new(move || compiled.run(&inputs).map(drop))
        }
        super::Backend::Interp => Box::new(move || model.run_with_limit(&inputs, limit).map(drop)),
        super::Backend::Cuda => {
            let gpu = kiln::gpu::GpuModel::new(&model, args.precision.into())?;
            let gpu = std::cell::RefCell::new(gpu);
            Box::new(move || gpu.borrow_mut().run(&inputs).map(drop))
        }
    };
    let compile_ms = ms(start.elapsed());
    for _ in 0..args.warmup {
        run()?;
    }
    let mut times = Vec::with_capacity(args.runs);
    for _ in 0..args.runs.max(1) {
        let t = Instant::now();
        run()?;
        times.push(ms(t.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    // Written by hand to keep the documented key order.
    let backend = match args.backend {
        super::Backend::Cpu => "cpu",
        super::Backend::Interp => "interp",
        super::Backend::Cuda => "cuda",
    };
    let json = format!(
        "{{\"model\":{},\"backend\":\"{backend}\",\"threads\":{},\"compile_ms\":{},\"median_ms\":{},\"p10_ms\":{},\"p90_ms\":{},\"runs\":{}}}",
        serde_json::Value::from(args.model.display().to_string()),
        args.threads,
        round(compile_ms),
        round(percentile(&times, 0.5)),
        round(percentile(&times, 0.1)),
        round(percentile(&times, 0.9)),
        times.len(),
    );
    super::emit(&format!("{json}\n"))?;
    Ok(ExitCode::SUCCESS)
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn round(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// The nearest-rank percentile of sorted `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Prints time per op kind and the ten slowest kernels, summed over `runs` profiled runs.
fn print_profile(
    compiled: &kiln::Compiled,
    inputs: &BTreeMap<String, kiln::ir::Tensor>,
    runs: usize,
) -> anyhow::Result<()> {
    let mut per_kernel: Vec<(String, f64)> = Vec::new();
    for _ in 0..runs {
        for (k, t) in compiled.profile(inputs)?.into_iter().enumerate() {
            if per_kernel.len() <= k {
                per_kernel.push((format!("{} \"{}\" ({})", t.kernel, t.name, t.op), 0.0));
            }
            per_kernel[k].1 += ms(t.time) / runs as f64;
        }
    }
    let total: f64 = per_kernel.iter().map(|(_, t)| t).sum();
    let mut by_op: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (label, t) in &per_kernel {
        let op = label
            .rsplit('(')
            .next()
            .unwrap_or("")
            .trim_end_matches(')')
            .to_string();
        let e = by_op.entry(op).or_default();
        e.0 += t;
        e.1 += 1;
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    eprintln!(
        "profile: {total:.3} ms per run in {} kernels",
        per_kernel.len()
    );
    for (op, (t, n)) in ops {
        eprintln!("{:>9.3} ms {:>5.1}%  {n:>4} x {op}", t, 100.0 * t / total);
    }
    per_kernel.sort_by(|a, b| b.1.total_cmp(&a.1));
    eprintln!("slowest kernels:");
    for (label, t) in per_kernel.iter().take(10) {
        eprintln!("{t:>9.3} ms  {label}");
    }
    Ok(())
}
