//! The ONNX node-test ratchet: every case in tests/onnx/passing.txt (vendored under
//! tests/onnx/cases/) must pass with the interpreter, optimized and as imported, and
//! compiled by the CPU backend.
//! `scripts/update-onnx-ratchet.sh` grows the list; it never shrinks.

use kiln::onnx_suite::{list_names, run_case, Case, Outcome, SuiteOptions};
use kiln::Backend;
use std::path::PathBuf;

fn onnx_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/onnx")
}

fn listed_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(onnx_dir().join("passing.txt")).unwrap();
    list_names(&text)
        .into_iter()
        .map(|name| Case {
            dir: onnx_dir().join("cases").join(&name),
            name,
        })
        .collect()
}

fn regressions(optimize: bool, backend: Backend) -> Vec<String> {
    let opts = SuiteOptions {
        optimize,
        backend,
        threads: 2,
        ..SuiteOptions::default()
    };
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let failures = listed_cases()
        .iter()
        .filter_map(|case| match run_case(case, opts) {
            Outcome::Pass => None,
            Outcome::Fail(reason) => Some(format!("FAIL {}: {reason}", case.name)),
            Outcome::Panic(message) => Some(format!("PANIC {}: {message}", case.name)),
        })
        .collect();
    std::panic::set_hook(default_hook);
    failures
}

#[test]
fn every_listed_case_is_vendored() {
    let cases = listed_cases();
    assert!(!cases.is_empty(), "tests/onnx/passing.txt lists no cases");
    let missing: Vec<&str> = cases
        .iter()
        .filter(|c| !c.dir.join("model.onnx").is_file())
        .map(|c| c.name.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "listed but not vendored under tests/onnx/cases: {missing:?}"
    );
}

#[test]
fn listed_cases_pass_optimized() {
    let failures = regressions(true, Backend::Interp);
    assert!(
        failures.is_empty(),
        "{} regressed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn listed_cases_pass_as_imported() {
    let failures = regressions(false, Backend::Interp);
    assert!(
        failures.is_empty(),
        "{} regressed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn listed_cases_pass_compiled_for_cpu() {
    let failures = regressions(true, Backend::Cpu);
    assert!(
        failures.is_empty(),
        "{} regressed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// On a GPU (skipped, saying why, without one): every listed case passes with
/// `Backend::Cuda`, except the ones refused for an op with no PTX lowering, which are
/// counted.
#[test]
fn listed_cases_pass_on_the_gpu_when_present() {
    if let Err(e) = kiln::gpu::device() {
        eprintln!("SKIPPED listed_cases_pass_on_the_gpu_when_present: {e}");
        return;
    }
    let failures = regressions(true, Backend::Cuda);
    let (unlowered, real): (Vec<_>, Vec<_>) =
        failures.iter().partition(|f| f.contains("no PTX lowering"));
    eprintln!(
        "{} cases, {} refused for an op without PTX",
        listed_cases().len(),
        unlowered.len()
    );
    assert!(
        real.is_empty(),
        "{} regressions on the GPU:\n{}",
        real.len(),
        real.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
