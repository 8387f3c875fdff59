//! The filetest runner: splits a `.kir` file, dispatches each `test` command, collects
//! failures with file and line, and rewrites expected blocks under `KILN_BLESS=1`.

mod check;
mod equiv;
mod expect;
mod file;
mod interpret;
mod optimize;
mod parse;
mod ptx;
mod verify;

use file::{Case, TestFile};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What one file's run has found so far.
pub struct Ctx<'a> {
    pub path: &'a Path,
    pub file: &'a TestFile,
    pub bless: bool,
    failures: Vec<String>,
    /// Case index to its new expected text, when blessing.
    blessed: BTreeMap<usize, String>,
}

impl Ctx<'_> {
    /// Records a failure at a 1-based line of the file.
    pub fn fail(&mut self, line: usize, message: impl AsRef<str>) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let shown = self.path.strip_prefix(root).unwrap_or(self.path);
        self.failures
            .push(format!("{}:{line}: {}", shown.display(), message.as_ref()));
    }

    /// Parses a case's graph, recording a failure with the file line if it does not parse.
    pub fn parse_case(&mut self, case: &Case) -> Option<(kiln_ir::Graph, Vec<usize>)> {
        match kiln_ir::parse_with_lines(&case.text) {
            Ok(p) => Some(p),
            Err(e) => {
                self.fail(
                    case.first_line + e.line - 1,
                    format!("parse error: {}", e.message),
                );
                None
            }
        }
    }
}

/// Every `.kir` file under `root`, sorted.
pub fn collect(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for p in entries.flatten().map(|e| e.path()) {
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "kir") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs every command of one file over every graph in it.
pub fn run_file(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = TestFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut ctx = Ctx {
        path,
        file: &file,
        bless: std::env::var("KILN_BLESS").is_ok_and(|v| v == "1"),
        failures: Vec::new(),
        blessed: BTreeMap::new(),
    };
    for (i, case) in file.cases.iter().enumerate() {
        expect::expected_block_parses(&mut ctx, case);
        for cmd in &file.commands {
            match cmd.name.as_str() {
                "parse" => parse::subtest(&mut ctx, i, case),
                "verify" => verify::subtest(&mut ctx, case),
                "optimize" => optimize::subtest(&mut ctx, i, case, cmd),
                "interpret" => interpret::subtest(&mut ctx, case),
                "equiv" => equiv::subtest(&mut ctx, case),
                "ptx" => ptx::subtest(&mut ctx, i, case, cmd),
                other => ctx.fail(1, format!("unknown test command `{other}`")),
            }
        }
    }
    if ctx.bless && !ctx.blessed.is_empty() {
        let new = expect::rewrite(&file, &ctx.blessed);
        std::fs::write(path, new).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if ctx.failures.is_empty() {
        Ok(())
    } else {
        Err(ctx.failures.join("\n\n"))
    }
}
