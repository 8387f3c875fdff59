//! `; check:` / `; not:` directives: each check's text must appear, in order, after the
//! previous check's match; each `not` text must be absent between the surrounding checks'
//! matches (or the start and end of the output). Matching is by substring, per line.

use super::file::{Case, Directive};
use super::Ctx;

/// Matches the case's `check`/`not` directives against `output`, recording failures.
pub fn run(ctx: &mut Ctx<'_>, case: &Case, output: &str) {
    let lines: Vec<&str> = output.lines().collect();
    let mut pos = 0; // the first line a later check may match
    let mut pending_not: Vec<&Directive> = Vec::new();
    for d in &case.directives {
        match d.name.as_str() {
            "check" => {
                let Some(found) = (pos..lines.len()).find(|&i| lines[i].contains(&d.text)) else {
                    let msg = format!("check `{}` not found after output line {pos}", d.text);
                    ctx.fail(d.line, format!("{msg}; the output is:\n{output}"));
                    return;
                };
                not_between(ctx, &pending_not, &lines[pos..found], output);
                pending_not.clear();
                pos = found + 1;
            }
            "not" => pending_not.push(d),
            _ => {}
        }
    }
    not_between(ctx, &pending_not, &lines[pos..], output);
}

fn not_between(ctx: &mut Ctx<'_>, nots: &[&Directive], region: &[&str], output: &str) {
    for d in nots {
        if let Some(hit) = region.iter().find(|l| l.contains(&d.text)) {
            ctx.fail(
                d.line,
                format!(
                    "`not: {}` matches `{hit}`; the output is:\n{output}",
                    d.text
                ),
            );
        }
    }
}
