//! `test ptx [precise-output]`: schedule the graph with its symbols free (as the GPU
//! backend does), fuse loops, emit PTX for sm_80, then compare the module with the
//! expected block and match the `; check:` / `; not:` lines against it.

use super::check;
use super::expect;
use super::file::{Case, Command};
use super::Ctx;
use kiln_ir::Bindings;

/// Runs `test ptx` on one case.
pub fn subtest(ctx: &mut Ctx<'_>, index: usize, case: &Case, cmd: &Command) {
    if let Some(o) = cmd.options.iter().find(|o| o.as_str() != "precise-output") {
        ctx.fail(1, format!("`test ptx` option `{o}` is not supported"));
        return;
    }
    let Some((g, _)) = ctx.parse_case(case) else {
        return;
    };
    let program = match kiln_cuda::program(&g, &Bindings::new()) {
        Ok(p) => p,
        Err(e) => return ctx.fail(case.first_line, format!("schedule failed: {e}")),
    };
    let ptx = match kiln_cuda::emit(&program, kiln_cuda::Target::Sm80) {
        Ok(m) => m.ptx,
        Err(e) => return ctx.fail(case.first_line, format!("emit failed: {e}")),
    };
    if cmd.options.iter().any(|o| o == "precise-output") {
        expect::precise(ctx, index, case, &ptx);
    }
    check::run(ctx, case, &ptx);
}
