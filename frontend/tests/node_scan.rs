//! Dev tool: imports every ONNX node-test case listed in CORE.txt and reports import
//! failures grouped by reason. Run with `cargo test -p kiln-frontend --test node_scan -- --ignored --nocapture`.

use kiln_frontend::{load_model, read_tensor_pb, FrontendError, ImportOptions};
use std::collections::BTreeMap;
use std::path::Path;

const CASES: &str = "/work/shared/onnx-node-tests";

/// The reason part of an error message: without file and node names.
fn reason(msg: &str) -> String {
    let after_node = msg.split("): ").nth(1).unwrap_or(msg);
    let op = msg
        .split(" (")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("");
    format!("{op}: {}", after_node.chars().take(90).collect::<String>())
}

/// Imports a case, retrying with every input known when a shape operand needs one (what
/// `kiln test-onnx` does).
fn import_case(path: &Path) -> Result<kiln_ir::Graph, FrontendError> {
    match load_model(path, &ImportOptions::default()) {
        Err(FrontendError::NeedsKnownInput { .. }) => {
            let names = input_names(path);
            let mut opts = ImportOptions::default();
            for (i, name) in names.into_iter().enumerate() {
                let pb = path
                    .with_file_name("test_data_set_0")
                    .join(format!("input_{i}.pb"));
                let (_, t) = read_tensor_pb(&pb)?;
                opts.known_inputs.insert(name, t);
            }
            load_model(path, &opts)
        }
        r => r,
    }
}

/// Graph input names, in order, read from the model.
fn input_names(path: &Path) -> Vec<String> {
    use prost::Message;
    let bytes = std::fs::read(path).unwrap_or_default();
    let m = kiln_frontend::proto::ModelProto::decode(bytes.as_slice()).unwrap_or_default();
    let g = m.graph.unwrap_or_default();
    let inits: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
    g.input
        .iter()
        .map(|i| i.name().to_string())
        .filter(|n| !inits.contains(&n.as_str()))
        .collect()
}

#[test]
#[ignore = "dev tool over /work/shared data, prints a report instead of asserting"]
fn scan_core_cases() {
    let list = std::fs::read_to_string(Path::new(CASES).join("CORE.txt")).expect("CORE.txt");
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ok = 0;
    for case in list.lines().filter(|l| !l.is_empty()) {
        let path = Path::new(CASES).join(case).join("model.onnx");
        match import_case(&path) {
            Ok(_) => ok += 1,
            Err(e) => failures
                .entry(reason(&e.to_string()))
                .or_default()
                .push(case.to_string()),
        }
    }
    let mut groups: Vec<_> = failures.into_iter().collect();
    groups.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for (r, cases) in &groups {
        println!("{:4} {r}  e.g. {}", cases.len(), cases[0]);
    }
    println!(
        "imported {ok} of {}",
        list.lines().filter(|l| !l.is_empty()).count()
    );
}
