//! `test optimize [precise-output] [report]`: run the `pipeline` (verifying before and after
//! each pass), then compare the printed, compacted graph with the expected block and match the
//! `; check:` / `; not:` lines against it (and, with `report`, against the report lines).

use super::check;
use super::expect;
use super::file::{Case, Command};
use super::Ctx;
use kiln_passes::{PassManager, PipelineReport, RunOptions};

/// Runs the file's pipeline on a parsed graph; failures are recorded against the case.
pub fn run_pipeline(
    ctx: &mut Ctx<'_>,
    case: &Case,
    g: &mut kiln_ir::Graph,
) -> Option<PipelineReport> {
    let Some(names) = &ctx.file.pipeline else {
        ctx.fail(1, "this command needs a `pipeline` line");
        return None;
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let pm = match PassManager::from_names(&names) {
        Ok(pm) => pm,
        Err(e) => {
            ctx.fail(1, e.to_string());
            return None;
        }
    };
    let opts = RunOptions {
        verify: true,
        ..RunOptions::default()
    };
    match pm.run(g, &opts) {
        Ok(report) => {
            g.compact();
            Some(report)
        }
        Err(e) => {
            ctx.fail(case.first_line, format!("pipeline failed: {e}"));
            None
        }
    }
}

/// The report as deterministic lines (no timings): `fired: <pass> ×<changes>` for each pass
/// that changed the graph, summed over rounds, in pipeline order, then `rounds: <n>`.
pub fn report_lines(report: &PipelineReport) -> String {
    let mut fired: Vec<(&str, usize)> = Vec::new();
    for run in &report.passes {
        match fired.iter_mut().find(|(name, _)| *name == run.name) {
            Some((_, n)) => *n += run.report.changes,
            None => fired.push((run.name, run.report.changes)),
        }
    }
    let mut out = String::new();
    for (name, n) in fired.iter().filter(|(_, n)| *n > 0) {
        out.push_str(&format!("fired: {name} ×{n}\n"));
    }
    let rounds = report.passes.iter().map(|r| r.round).max().unwrap_or(0);
    out.push_str(&format!("rounds: {rounds}\n"));
    if let Some(n) = report.bisect_limit {
        out.push_str(&format!("stop: bisect {n}\n"));
    }
    out
}

/// Runs `test optimize` on one case.
pub fn subtest(ctx: &mut Ctx<'_>, index: usize, case: &Case, cmd: &Command) {
    let known = ["precise-output", "report"];
    if let Some(o) = cmd.options.iter().find(|o| !known.contains(&o.as_str())) {
        ctx.fail(1, format!("`test optimize` option `{o}` is not supported"));
        return;
    }
    let Some((mut g, _)) = ctx.parse_case(case) else {
        return;
    };
    let Some(report) = run_pipeline(ctx, case, &mut g) else {
        return;
    };
    let printed = kiln_ir::print(&g);
    if cmd.options.iter().any(|o| o == "precise-output") {
        expect::precise(ctx, index, case, &printed);
    }
    let mut checked = printed;
    if cmd.options.iter().any(|o| o == "report") {
        checked.push_str(&report_lines(&report));
    }
    check::run(ctx, case, &checked);
}
