//! `test optimize [precise-output]`: run the `pipeline` (verifying before and after each
//! pass), then compare the printed, compacted graph with the expected block.

use super::expect;
use super::file::{Case, Command};
use super::Ctx;
use kiln_passes::{PassManager, RunOptions};

/// Runs the file's pipeline on a parsed graph; failures are recorded against the case.
pub fn run_pipeline(ctx: &mut Ctx<'_>, case: &Case, g: &mut kiln_ir::Graph) -> bool {
    let Some(names) = &ctx.file.pipeline else {
        ctx.fail(1, "this command needs a `pipeline` line");
        return false;
    };
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let pm = match PassManager::from_names(&names) {
        Ok(pm) => pm,
        Err(e) => {
            ctx.fail(1, e.to_string());
            return false;
        }
    };
    let opts = RunOptions {
        verify: true,
        ..RunOptions::default()
    };
    if let Err(e) = pm.run(g, &opts) {
        ctx.fail(case.first_line, format!("pipeline failed: {e}"));
        return false;
    }
    g.compact();
    true
}

/// Runs `test optimize` on one case.
pub fn subtest(ctx: &mut Ctx<'_>, index: usize, case: &Case, cmd: &Command) {
    if let Some(o) = cmd.options.iter().find(|o| o.as_str() != "precise-output") {
        ctx.fail(1, format!("`test optimize` option `{o}` is not supported"));
        return;
    }
    let Some((mut g, _)) = ctx.parse_case(case) else {
        return;
    };
    if !run_pipeline(ctx, case, &mut g) {
        return;
    }
    if cmd.options.iter().any(|o| o == "precise-output") {
        expect::precise(ctx, index, case, &kiln_ir::print(&g));
    }
}
