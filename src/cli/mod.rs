//! Argument parsing and dispatch; each command lives in its own module.
//!
//! Errors reach the user as one line on stderr (`error: …`) and exit code 1; anyhow lives
//! only here, at the edge.

mod bench;
mod build;
mod generate;
mod inspect;
mod ops;
mod pipeline;
mod progress;
mod report;
mod run;
mod test_onnx;
mod timing;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// kiln: a model compiler (ONNX in, typed IR with symbolic shapes, native code out).
#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about,
    after_help = "Example:\n  kiln run tests/models/bert_tiny.onnx --dim batch=2 --dim seq=16"
)]
struct Cli {
    /// Print per-stage timings (load, each pass, run) to stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile and run a model once, on given or generated inputs, and summarize the outputs.
    #[command(after_help = run::EXAMPLE)]
    Run(run::RunArgs),
    /// Print a model's graph after the default pipeline (or after one pass).
    #[command(after_help = inspect::EXAMPLE)]
    Inspect(inspect::InspectArgs),
    /// Run ONNX backend test-case folders; ends with `N passed, N failed`.
    #[command(name = "test-onnx", after_help = test_onnx::EXAMPLE)]
    TestOnnx(test_onnx::TestOnnxArgs),
    /// Compile a model ahead of time: an executable, object, static library or C header.
    #[command(after_help = build::EXAMPLE)]
    Build(build::BuildArgs),
    /// Compile a model and time repeated runs; prints one JSON line (median, p10, p90).
    #[command(after_help = bench::EXAMPLE)]
    Bench(bench::BenchArgs),
    /// Generate tokens with a KV-cache decoder export; streams ids, ends with one JSON line.
    #[command(after_help = generate::EXAMPLE)]
    Generate(generate::GenerateArgs),
    /// Quantize a model and report what it costs in accuracy and buys in speed and size.
    #[command(name = "quantize-report", after_help = report::EXAMPLE)]
    QuantizeReport(report::ReportArgs),
    /// List the ONNX ops and opset ranges the frontend supports.
    #[command(after_help = ops::EXAMPLE)]
    Ops,
}

/// Where a model runs.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub(crate) enum Backend {
    /// Native code from the Cranelift JIT (the default).
    #[default]
    Cpu,
    /// The reference interpreter (slow; the oracle every backend is checked against).
    Interp,
    /// An NVIDIA GPU (sm_80 or newer) through the CUDA driver: needs libcuda and a device.
    /// Quantized linear layers and some f16/bf16 reference-kernel ops have no PTX yet and
    /// are refused by name.
    Cuda,
}

/// How the GPU computes f32 matrix products (`--backend cuda`, `--emit ptx`).
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub(crate) enum PrecisionArg {
    /// Tensor cores with each operand split in two tf32 parts, three products each:
    /// about f32's accuracy (the default; keeps the vendored models within 1e-3).
    #[default]
    Tf32x3,
    /// Tensor cores with operands rounded to tf32 (10 mantissa bits): fastest, errors
    /// around 1e-3 relative per product.
    Tf32,
    /// Tensor cores with operands rounded to bf16 (8 significant bits, `mma.m16n8k16`):
    /// errors around 1e-2 relative per product.
    Bf16,
    /// The ordinary cores in f32: a warp's dot product per output (the slow baseline).
    F32,
}

impl From<PrecisionArg> for kiln::cuda::Precision {
    fn from(p: PrecisionArg) -> kiln::cuda::Precision {
        match p {
            PrecisionArg::Tf32x3 => kiln::cuda::Precision::Tf32x3,
            PrecisionArg::Tf32 => kiln::cuda::Precision::Tf32,
            PrecisionArg::Bf16 => kiln::cuda::Precision::Bf16,
            PrecisionArg::F32 => kiln::cuda::Precision::F32,
        }
    }
}

impl From<Backend> for kiln::Backend {
    fn from(b: Backend) -> kiln::Backend {
        match b {
            Backend::Cpu => kiln::Backend::Cpu,
            Backend::Interp => kiln::Backend::Interp,
            Backend::Cuda => kiln::Backend::Cuda,
        }
    }
}

/// The default for `--threads`: every core.
pub(crate) fn default_threads() -> usize {
    kiln::Options::default().threads
}

/// Parses the command line, runs the command, and turns an error into one line and exit 1.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let timer = timing::Timer::new(cli.verbose);
    let result = match cli.command {
        Command::Run(args) => run::run(args, &timer),
        Command::Inspect(args) => inspect::inspect(args, &timer),
        Command::TestOnnx(args) => test_onnx::test_onnx(args),
        Command::Bench(args) => bench::bench(args, &timer),
        Command::Generate(args) => generate::generate(args, &timer),
        Command::Build(args) => build::build(args, &timer),
        Command::QuantizeReport(args) => report::report(args, &timer),
        Command::Ops => ops::ops(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&chain(&e)));
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout. A closed pipe (`kiln inspect m.onnx | head`) ends the output quietly,
/// where `print!` would panic.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// The error and its causes joined by ": ", skipping a cause whose text the message already
/// holds: several errors (a file's I/O, parse and verify errors) print their source in their
/// own message, and `{e:#}` would repeat it.
fn chain(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
