//! `test parse`: parse, print, compare with the expected block; the printed text must parse
//! back to the same graph.

use super::expect;
use super::file::Case;
use super::Ctx;

/// Runs `test parse` on one case.
pub fn subtest(ctx: &mut Ctx<'_>, index: usize, case: &Case) {
    let Some((g, _)) = ctx.parse_case(case) else {
        return;
    };
    let printed = kiln_ir::print(&g);
    match kiln_ir::parse(&printed) {
        Ok(back) if back == g => {}
        Ok(_) => ctx.fail(
            case.first_line,
            format!("the printed graph parses to a different graph:\n{printed}"),
        ),
        Err(e) => ctx.fail(
            case.first_line,
            format!("the printed graph does not parse ({e}):\n{printed}"),
        ),
    }
    expect::precise(ctx, index, case, &printed);
}
