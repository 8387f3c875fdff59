//! Filetests: every `tests/filetests/**/*.kir` file is one libtest trial, so
//! `cargo test --test filetests -- verify/` selects by path. The file format and commands are
//! style.md §9; `KILN_BLESS=1` rewrites expected blocks.

#[path = "filetests/runner/mod.rs"]
mod runner;

use std::path::Path;

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests");
    let trials = runner::collect(&root)
        .into_iter()
        .map(|path| {
            let name = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .with_extension("")
                .display()
                .to_string();
            libtest_mimic::Trial::test(name, move || runner::run_file(&path).map_err(Into::into))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
