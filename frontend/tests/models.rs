//! Every vendored model (tests/models at the repo root) imports.

use kiln_frontend::{load_model, ImportOptions};
use std::path::Path;

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/models");
const NAMES: [&str; 9] = [
    "bert_tiny",
    "bert_tiny_ts",
    "bert_tiny_ts_qdyn",
    "gpt2_tiny",
    "gpt2_tiny_ts",
    "llama_tiny",
    "llama_tiny_ts",
    "vit_tiny",
    "vit_tiny_ts",
];

#[test]
fn every_model_imports_with_symbolic_dims() {
    if !Path::new(MODELS).exists() {
        eprintln!("skipped: {MODELS} is not present");
        return;
    }
    for name in NAMES {
        let path = Path::new(MODELS).join(format!("{name}.onnx"));
        let g =
            load_model(&path, &ImportOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        kiln_ir::verify(&g).unwrap_or_else(|e| panic!("{name}: {e}"));
        let n_shape = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, kiln_ir::Op::ShapeOf))
            .count();
        assert_eq!(n_shape, 0, "{name}: shape computations were not folded");
        let out = g.value_type(g.outputs[0].1);
        assert!(
            out.shape.iter().any(|d| !d.is_const()),
            "{name}: output {out} lost its symbolic dims"
        );
        println!("{name}: {} nodes, output {out}", g.nodes.len());
    }
}
