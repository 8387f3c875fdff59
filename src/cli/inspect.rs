//! `kiln inspect`: print a model's graph.

use super::pipeline::{load, optimize};
use super::timing::Timer;
use clap::{Args, ValueEnum};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) const EXAMPLE: &str = "Examples:
  kiln inspect tests/models/bert_tiny.onnx
  kiln inspect tests/models/bert_tiny.onnx --after fold-shapes
  kiln inspect tests/models/bert_tiny.onnx --after import --format json";

#[derive(Args)]
pub(crate) struct InspectArgs {
    /// The model: an ONNX file or kiln text IR (.kir).
    model: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Stop the default pipeline after this pass (`import` = before any pass).
    #[arg(long, value_name = "PASS")]
    after: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// kiln's text IR.
    Text,
    /// The graph as JSON.
    Json,
}

pub(crate) fn inspect(args: InspectArgs, timer: &Timer) -> anyhow::Result<ExitCode> {
    let mut model = load(&args.model, &BTreeMap::new(), &BTreeMap::new(), timer)?;
    if args.after.as_deref() != Some("import") {
        model = optimize(&model, args.after, timer)?;
    }
    match args.format {
        Format::Text => super::emit(&kiln::ir::print(model.graph()))?,
        Format::Json => super::emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(model.graph())?
        ))?,
    }
    Ok(ExitCode::SUCCESS)
}
