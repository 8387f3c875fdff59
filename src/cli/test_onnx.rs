//! `kiln test-onnx`: run ONNX backend test-case folders and tally the results.

use super::Backend;
use anyhow::Context;
use clap::Args;
use kiln::onnx_suite::{
    cases_from_list, discover, list_names, run_case, Case, Outcome, SuiteOptions,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub(crate) const EXAMPLE: &str = "Examples:
  kiln test-onnx tests/onnx/cases
  kiln test-onnx /data/onnx-node-tests/test_abs /data/onnx-node-tests/test_add
  kiln test-onnx /data/onnx-node-tests --list /data/onnx-node-tests/CORE.txt --write-passing tests/onnx/passing.txt";

#[derive(Args)]
pub(crate) struct TestOnnxArgs {
    /// Case folders (holding model.onnx and test_data_set_*), or folders of them; with
    /// `--list`, the roots the listed names are relative to.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// A file of case names (one per line, `#` comments) to run under each DIR.
    #[arg(long, value_name = "FILE")]
    list: Option<PathBuf>,
    /// Add the names of passing cases to this list file (it keeps its entries: a ratchet).
    #[arg(long, value_name = "FILE")]
    write_passing: Option<PathBuf>,
    /// Where to run.
    #[arg(long, value_enum, default_value_t)]
    backend: Backend,
    /// Threads for the cpu backend.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Run the graph as imported, without the optimization pipeline.
    #[arg(long)]
    no_optimize: bool,
}

pub(crate) fn test_onnx(args: TestOnnxArgs) -> anyhow::Result<ExitCode> {
    if matches!(args.backend, Backend::Cuda) {
        // One line up front, rather than the same failure for every case.
        kiln::gpu::device()?;
    }
    let cases = collect_cases(&args)?;
    let opts = SuiteOptions {
        optimize: !args.no_optimize,
        backend: args.backend.into(),
        threads: args.threads.max(1),
        ..SuiteOptions::default()
    };
    let passing = run_all(&cases, opts)?;
    println!(
        "{} passed, {} failed",
        passing.len(),
        cases.len() - passing.len()
    );
    if let Some(path) = &args.write_passing {
        write_passing(path, &passing)?;
    }
    Ok(if passing.len() == cases.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn collect_cases(args: &TestOnnxArgs) -> anyhow::Result<Vec<Case>> {
    let mut cases = Vec::new();
    for dir in &args.dirs {
        match &args.list {
            Some(list) => cases.extend(cases_from_list(dir, list)?),
            None => cases.extend(discover(dir)?),
        }
    }
    Ok(cases)
}

/// Runs every case, printing each failure on one line; returns the passing names.
fn run_all(cases: &[Case], opts: SuiteOptions) -> anyhow::Result<Vec<String>> {
    let bar = super::progress::bar("{bar:40} {pos}/{len} {msg}");
    bar.set_length(cases.len() as u64);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut passing = Vec::new();
    // The first stdout error is kept and returned once the panic hook is restored.
    let mut written = Ok(());
    for case in cases {
        bar.set_message(case.name.clone());
        let line = match run_case(case, opts) {
            Outcome::Pass => {
                passing.push(case.name.clone());
                None
            }
            Outcome::Fail(reason) => Some(format!("FAIL {}: {reason}", case.name)),
            Outcome::Panic(message) => Some(format!("PANIC {}: {message}", case.name)),
        };
        if let (Some(line), Ok(())) = (line, &written) {
            written = bar.suspend(|| super::emit(&format!("{line}\n")));
        }
        bar.inc(1);
    }
    std::panic::set_hook(default_hook);
    bar.finish_and_clear();
    written.map(|()| passing)
}

/// Merges `passing` into the list file, keeping existing lines (annotations included).
fn write_passing(path: &Path, passing: &[String]) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let known = list_names(&existing);
    let mut lines: Vec<String> = existing
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("##"))
        .map(str::to_string)
        .collect();
    lines.extend(passing.iter().filter(|n| !known.contains(n)).cloned());
    lines.sort_by(|a, b| {
        a.trim_start_matches(['#', ' '])
            .cmp(b.trim_start_matches(['#', ' ']))
    });
    let header = "## ONNX node tests that must pass (a ratchet: the list only grows).\n\
                  ## Regenerate with: kiln test-onnx ROOT --list LIST --write-passing tests/onnx/passing.txt\n";
    std::fs::write(path, format!("{header}{}\n", lines.join("\n")))
        .with_context(|| format!("writing {}", path.display()))
}
