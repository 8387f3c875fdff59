//! Replays every saved fuzz input through its target's harness, without libFuzzer: the
//! seed corpus (`fuzz/corpus/<target>/`) and every crash ever found
//! (`fuzz/regressions/<target>/`). A panic names the file; `scripts/fuzz.sh` reproduces it
//! under libFuzzer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = (entries.flatten())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut failures = Vec::new();
    let mut count = 0;
    for dir in ["corpus", "regressions"] {
        for file in files(&root.join(dir).join(target)) {
            let data = std::fs::read(&file).unwrap();
            count += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
                let text = (panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                failures.push(format!("{}: {text}", file.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {count} inputs panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{target}: replayed {count} inputs");
}

#[test]
fn onnx() {
    replay("onnx", kiln_fuzz::onnx::run);
}

#[test]
fn graph() {
    replay("graph", kiln_fuzz::graph::run);
}

#[test]
fn parse() {
    replay("parse", kiln_fuzz::parse::run);
}

#[test]
fn npz() {
    replay("npz", kiln_fuzz::npz::run);
}

#[test]
fn capi() {
    replay("capi", kiln_fuzz::capi::run);
}

/// Every target has a test above and a seed corpus.
#[test]
fn every_target_is_replayed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (target, _) in kiln_fuzz::TARGETS {
        assert!(
            !files(&root.join("corpus").join(target)).is_empty(),
            "fuzz/corpus/{target}/ has no seeds"
        );
        assert!(
            root.join("fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file(),
            "no fuzz/fuzz_targets/{target}.rs"
        );
    }
}
