//! Expected blocks: precise-output comparison with a unified diff, and blessing.

use super::file::{is_expectation, Case, TestFile};
use super::Ctx;
use std::collections::BTreeMap;

/// Compares `actual` with the case's expected block, or records it when blessing.
pub fn precise(ctx: &mut Ctx<'_>, index: usize, case: &Case, actual: &str) {
    if case.expected.as_deref() == Some(actual) {
        return;
    }
    if ctx.bless {
        ctx.blessed.insert(index, actual.to_string());
        return;
    }
    let line = case.after.start + 1;
    match &case.expected {
        None => ctx.fail(
            line,
            format!("no expected block after this graph; the output is:\n{actual}set KILN_BLESS=1 to write it"),
        ),
        Some(expected) => {
            let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
                .unified_diff()
                .header("expected", "actual")
                .to_string();
            ctx.fail(line, format!("output differs from the expected block:\n{diff}set KILN_BLESS=1 to update this expectation"));
        }
    }
}

/// Every expected block that is a graph must parse (style.md §9.2).
pub fn expected_block_parses(ctx: &mut Ctx<'_>, case: &Case) {
    let Some(expected) = &case.expected else {
        return;
    };
    if !expected.trim_start().starts_with("graph") {
        return;
    }
    if let Err(e) = kiln_ir::parse(expected) {
        let first = (case.after.start..case.after.end)
            .find(|&j| is_expectation(&ctx.file.lines[j]))
            .unwrap_or(case.after.start);
        ctx.fail(
            first + e.line,
            format!("the expected block does not parse: {}", e.message),
        );
    }
}

/// The file with each blessed case's expected block replaced; `;;` notes, directives and
/// blank lines stay where they were.
pub fn rewrite(file: &TestFile, blessed: &BTreeMap<usize, String>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut next = 0;
    for (i, case) in file.cases.iter().enumerate() {
        out.extend(file.lines[next..case.after.start].iter().cloned());
        next = case.after.end;
        let region = &file.lines[case.after.clone()];
        let Some(new) = blessed.get(&i) else {
            out.extend(region.iter().cloned());
            continue;
        };
        let block: Vec<String> = new
            .lines()
            .map(|l| {
                if l.is_empty() {
                    ";".to_string()
                } else {
                    format!("; {l}")
                }
            })
            .collect();
        let mut inserted = false;
        let mut kept = Vec::new();
        for line in region {
            if is_expectation(line) {
                if !inserted {
                    kept.extend(block.iter().cloned());
                    inserted = true;
                }
            } else {
                kept.push(line.clone());
            }
        }
        if !inserted {
            out.push(String::new());
            out.extend(block);
            if kept.first().is_some_and(|l| !l.trim().is_empty()) {
                out.push(String::new());
            }
        }
        out.extend(kept);
    }
    out.extend(file.lines[next..].iter().cloned());
    out.join("\n") + "\n"
}
