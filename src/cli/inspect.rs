//! `kiln inspect`: print a model's graph.

use super::pipeline::{load, optimize};
use super::timing::Timer;
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) const EXAMPLE: &str = "Examples:
  kiln inspect tests/models/bert_tiny.onnx
  kiln inspect tests/models/bert_tiny.onnx --optimized --stats
  kiln inspect tests/models/gpt2_tiny_ts.onnx --explain
  kiln inspect tests/models/gpt2_kv.onnx --explain    # the fused kernels and the KV caches
  kiln inspect tests/models/gpt2_tiny_ts.onnx --format html > gpt2.html
  kiln inspect tests/models/gpt2_tiny_ts.onnx --format onnx > gpt2.kiln.onnx
  kiln inspect tests/models/bert_tiny.onnx --after fold-shapes
  kiln inspect tests/models/bert_tiny.onnx --after import --format json
  kiln inspect tests/models/bert_tiny.onnx --memory --dim batch=1 --dim seq=128";

#[derive(Args)]
pub(crate) struct InspectArgs {
    /// The model: an ONNX file or kiln text IR (.kir).
    model: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Print the graph after the whole default pipeline, fusion included (the default).
    #[arg(long, conflicts_with = "after")]
    optimized: bool,
    /// Stop the default pipeline after this pass (`import` = before any pass).
    #[arg(long, value_name = "PASS")]
    after: Option<String>,
    /// Print one JSON object instead of the graph: `{"ops": {"LayerNorm": 13, …}, "nodes":
    /// N, "inputs": N, "outputs": N}`, op names in CamelCase (see `kiln ops`).
    #[arg(long, conflicts_with = "memory")]
    stats: bool,
    /// List each fused kernel instead of the graph: its op, its node, the rule that built it
    /// and the source nodes it replaces; then the KV caches a decoder appends in place
    /// (each past input, the concat that no longer copies it, and its present output).
    #[arg(long, conflicts_with_all = ["memory", "stats", "after"])]
    explain: bool,
    /// Explain where an expected fusion failed: each candidate that stayed unfused and the
    /// first step of the pattern that does not hold (layernorm, rmsnorm, gelu, gelu_tanh,
    /// silu, attention).
    #[arg(long, value_name = "FUSION", value_parser = parse_expected, conflicts_with_all = ["memory", "stats", "after", "explain"])]
    why_not: Option<kiln::passes::Expected>,
    /// Print the cpu backend's memory plan instead: the peak arena size and each buffer's
    /// offset, size and live range (kernel indices), at the sizes given by --dim.
    #[arg(long)]
    memory: bool,
    /// Size of a symbolic dim for --memory, e.g. `--dim seq=128` (repeatable).
    #[arg(long = "dim", value_name = "NAME=N", value_parser = super::pipeline::parse_dim)]
    dims: Vec<(String, i64)>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// kiln's text IR.
    Text,
    /// The graph as JSON.
    Json,
    /// Graphviz DOT (constants left out; fused nodes highlighted, their sources as tooltips).
    Dot,
    /// A self-contained SVG drawing (no Graphviz needed); hover a fused node for its sources.
    Svg,
    /// A self-contained HTML page: the SVG drawing and a table of the fused kernels.
    Html,
    /// ONNX (binary, to stdout: redirect it to a file) with `ai.kiln` ops, for Netron.
    Onnx,
}

pub(crate) fn inspect(args: InspectArgs, timer: &Timer) -> anyhow::Result<ExitCode> {
    let mut model = load(&args.model, &BTreeMap::new(), &BTreeMap::new(), timer)?;
    if let Some(kind) = args.why_not {
        super::emit(&why_not(&model, kind)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.explain {
        let (graph, kernels) = fuse_explained(&model)?;
        super::emit(&explain(&kernels))?;
        super::emit(&explain_caches(&graph))?;
        return Ok(ExitCode::SUCCESS);
    }
    let drawing = matches!(args.format, Format::Dot | Format::Svg | Format::Html);
    if drawing && args.after.is_none() && !args.memory && !args.stats {
        let (graph, kernels) = fuse_explained(&model)?;
        let prov: kiln::draw::Provenance =
            kernels.into_iter().map(|k| (k.name, k.sources)).collect();
        super::emit(&match args.format {
            Format::Dot => kiln::draw::dot(&graph, &prov),
            Format::Svg => kiln::draw::svg(&graph, &prov),
            _ => kiln::draw::html(&graph, &prov),
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.after.as_deref() != Some("import") {
        model = optimize(&model, args.after.clone(), timer)?;
    }
    if args.memory {
        return memory(&args, &model);
    }
    if args.stats {
        super::emit(&format!("{}\n", stats(model.graph())))?;
        return Ok(ExitCode::SUCCESS);
    }
    match args.format {
        Format::Text => super::emit(&kiln::ir::print(model.graph()))?,
        Format::Json => super::emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(model.graph())?
        ))?,
        Format::Dot => super::emit(&kiln::draw::dot(model.graph(), &BTreeMap::new()))?,
        Format::Svg => super::emit(&kiln::draw::svg(model.graph(), &BTreeMap::new()))?,
        Format::Html => super::emit(&kiln::draw::html(model.graph(), &BTreeMap::new()))?,
        Format::Onnx => write_binary(&kiln::frontend::export_onnx(model.graph()))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Run the whole pipeline, verifying after each pass.
const VERIFY: kiln::passes::RunOptions = kiln::passes::RunOptions {
    stop_after: None,
    verify: true,
};

/// `model` after the default pipeline's passes that come before `fuse`: what `fuse` sees.
fn simplified(model: &kiln::Model) -> anyhow::Result<kiln::ir::Graph> {
    let simplify =
        kiln::passes::PassManager::from_names(&["fold-shapes", "fold-constants", "cse"])?;
    Ok(model.optimize_with(&simplify, &VERIFY)?.0.graph().clone())
}

/// The optimized graph with the story of its fused kernels: the default pipeline's
/// simplification passes, `fuse` (explained), then the default pipeline to its fixpoint.
fn fuse_explained(
    model: &kiln::Model,
) -> anyhow::Result<(kiln::ir::Graph, Vec<kiln::passes::FusedKernel>)> {
    use kiln::passes::{Fuse, PassManager};
    let mut graph = simplified(model)?;
    let kernels = Fuse::default().explain(&mut graph)?;
    PassManager::default_pipeline().run(&mut graph, &VERIFY)?;
    Ok((graph, kernels))
}

/// Writes bytes to stdout (a closed pipe is not an error, as for text output).
fn write_binary(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn parse_expected(s: &str) -> Result<kiln::passes::Expected, String> {
    kiln::passes::Expected::from_name(s).ok_or_else(|| {
        format!(
            "unknown fusion `{s}`; expected one of: {}",
            kiln::passes::Expected::NAMES.join(", ")
        )
    })
}

/// The `--why-not` report: the candidates that stayed unfused, each with its first failing
/// step.
fn why_not(model: &kiln::Model, kind: kiln::passes::Expected) -> anyhow::Result<String> {
    let misses = kiln::passes::Fuse::default().why_not(&simplified(model)?, kind)?;
    let mut out = format!("{} {kind:?} candidates did not fuse\n", misses.len());
    for m in &misses {
        out += &format!("{:?}: {}\n", m.node, m.reason);
    }
    Ok(out)
}

/// The `--explain` report: one line per fused kernel.
fn explain(kernels: &[kiln::passes::FusedKernel]) -> String {
    let mut out = format!("{} fused kernels\n", kernels.len());
    for k in kernels {
        out += &format!(
            "{:<10} {:?}  rules {}  from {} nodes: {}\n",
            k.op,
            k.name,
            k.rules.join(", "),
            k.sources.len(),
            k.sources.join(", ")
        );
    }
    out
}

/// The `--explain` report's KV caches: each past input that `kiln generate` appends to in
/// place, with the concat that no longer copies it.
fn explain_caches(g: &kiln::ir::Graph) -> String {
    let caches = kiln::kernel::cache::find(g);
    if caches.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "{} KV caches appended in place (kiln generate; `{}` rows each)\n",
        caches.len(),
        kiln::kernel::cache::CAPACITY
    );
    for c in &caches {
        let node = &g.nodes[c.node];
        out += &format!(
            "kv-cache   {:?}  concat {:?} writes the new rows after the past's, in its buffer; {:?} is that buffer\n",
            g.inputs[c.input].0, node.name, g.outputs[c.output].0
        );
    }
    out
}

/// The `--stats` object, written by hand to keep the documented key order ("ops" first);
/// ops sorted by name.
fn stats(g: &kiln::ir::Graph) -> String {
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    for node in &g.nodes {
        *ops.entry(node.op.kind_name()).or_insert(0) += 1;
    }
    let ops = serde_json::to_string(&ops).unwrap_or_default();
    format!(
        "{{\"ops\":{ops},\"nodes\":{},\"inputs\":{},\"outputs\":{}}}",
        g.nodes.len(),
        g.inputs.len(),
        g.outputs.len()
    )
}

fn memory(args: &InspectArgs, model: &kiln::Model) -> anyhow::Result<ExitCode> {
    let dims: BTreeMap<String, i64> = args.dims.iter().cloned().collect();
    let limit = kiln::ir::MemoryLimit::default();
    let inputs = super::pipeline::generate(&args.model, model, &dims, 0, limit)?;
    let opts = kiln::Options {
        threads: 1,
        optimize: false,
        max_memory: limit,
        quantize: None,
        quantize_skip: Vec::new(),
        kv_cache: false,
    };
    let spec = model.compile(&opts)?.specialization(&inputs)?;
    let (p, plan) = (&spec.program, &spec.plan);
    let mut out = format!(
        "arena: {} bytes peak, {} kernels, {} buffers in the arena ({} in place)\n",
        plan.arena_bytes,
        p.kernels.len(),
        plan.offsets.iter().flatten().count(),
        plan.in_place
    );
    out += "buffer  value  dtype  elements       bytes      offset  live (kernels)\n";
    for (b, buf) in p.buffers.iter().enumerate() {
        let place = match (&buf.kind, plan.offsets[b]) {
            (kiln::kernel::kernel::BufferKind::Input(i), _) => format!("input {i}"),
            (kiln::kernel::kernel::BufferKind::Const(_), _) => "constant".to_string(),
            (kiln::kernel::kernel::BufferKind::Iota, _) => "iota".to_string(),
            (_, Some(off)) => off.to_string(),
            (_, None) => "unused".to_string(),
        };
        let live = plan.live[b].map_or(String::new(), |(a, z)| format!("{a}..={z}"));
        out += &format!(
            "{b:>6}  %{:<5} {:<6} {:>8} {:>11} {:>11}  {live}\n",
            buf.value,
            buf.dtype.to_string(),
            buf.len.substitute(&spec.bindings).to_string(),
            buf.bytes().substitute(&spec.bindings).to_string(),
            place
        );
    }
    super::emit(&out)?;
    Ok(ExitCode::SUCCESS)
}
