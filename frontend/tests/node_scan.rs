//! Dev tool: imports every ONNX node-test case listed in CORE.txt and reports import
//! failures grouped by reason. Run with `cargo test -p kiln-frontend --test node_scan -- --ignored --nocapture`.

use kiln_frontend::{load_model, ImportOptions};
use std::collections::BTreeMap;
use std::path::Path;

const CASES: &str = "/work/shared/onnx-node-tests";

/// The reason part of an error message: without file and node names.
fn reason(msg: &str) -> String {
    let after_node = msg.split("): ").nth(1).unwrap_or(msg);
    let op = msg.split(" (").nth(1).and_then(|s| s.split(',').next()).unwrap_or("");
    format!("{op}: {}", after_node.chars().take(90).collect::<String>())
}

#[test]
#[ignore = "dev tool over /work/shared data, prints a report instead of asserting"]
fn scan_core_cases() {
    let list = std::fs::read_to_string(Path::new(CASES).join("CORE.txt")).expect("CORE.txt");
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ok = 0;
    for case in list.lines().filter(|l| !l.is_empty()) {
        let path = Path::new(CASES).join(case).join("model.onnx");
        match load_model(&path, &ImportOptions::default()) {
            Ok(_) => ok += 1,
            Err(e) => failures.entry(reason(&e.to_string())).or_default().push(case.to_string()),
        }
    }
    let mut groups: Vec<_> = failures.into_iter().collect();
    groups.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for (r, cases) in &groups {
        println!("{:4} {r}  e.g. {}", cases.len(), cases[0]);
    }
    println!("imported {ok} of {}", list.lines().filter(|l| !l.is_empty()).count());
}
