//! `test verify`: a graph with no `; error:` comment must verify; otherwise the verifier (or
//! the parser) must fail on the line carrying the comment, with a message containing it.

use super::file::Case;
use super::Ctx;

/// `(1-based line within the graph, expected substring)` for each inline `; error:`.
fn expected_errors(case: &Case) -> Vec<(usize, String)> {
    case.text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (_, comment) = l.split_once(';')?;
            let msg = comment.trim().strip_prefix("error:")?;
            Some((i + 1, msg.trim().to_string()))
        })
        .collect()
}

/// Runs `test verify` on one case.
pub fn subtest(ctx: &mut Ctx<'_>, case: &Case) {
    let expected = expected_errors(case);
    let to_file = |line: usize| case.first_line + line - 1;
    // (line within the graph, if known; message)
    let actual: Option<(Option<usize>, String)> = match kiln_ir::parse_with_lines(&case.text) {
        Err(e) => Some((Some(e.line), format!("parse error: {}", e.message))),
        Ok((g, lines)) => match kiln_ir::verify(&g) {
            Ok(()) => None,
            Err(e) => Some((e.node.and_then(|n| lines.get(n).copied()), e.message)),
        },
    };
    match (expected.as_slice(), actual) {
        ([], None) => {}
        ([], Some((line, msg))) => ctx.fail(
            to_file(line.unwrap_or(1)),
            format!("unexpected error: {msg}"),
        ),
        ([(line, want), ..], None) => ctx.fail(
            to_file(*line),
            format!("expected an error containing `{want}`, but the graph verifies"),
        ),
        ([(line, want), ..], Some((got_line, msg))) => {
            if !msg.contains(want.as_str()) {
                ctx.fail(
                    to_file(*line),
                    format!("expected an error containing `{want}`, got: {msg}"),
                );
            } else if got_line.is_some_and(|l| l != *line) {
                let l = to_file(got_line.unwrap_or(*line));
                ctx.fail(
                    to_file(*line),
                    format!("the error is reported at line {l}, not here: {msg}"),
                );
            }
        }
    }
}
