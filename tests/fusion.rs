//! Fusion counts on every vendored model, from both exporters: the default pipeline must
//! fuse the same kernels whichever exporter wrote the model (the point of matching by
//! meaning rather than by node order).

use kiln::Model;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Op counts (CamelCase, as `kiln inspect --stats` prints them) after the default pipeline.
fn optimized_ops(name: &str) -> BTreeMap<String, usize> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/models/{name}.onnx"));
    let model = Model::load(path)
        .and_then(|m| m.optimize())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut counts = BTreeMap::new();
    for node in &model.graph().nodes {
        *counts.entry(node.op.kind_name()).or_insert(0) += 1;
    }
    counts
}

/// Asserts `name`'s fused norms: `norm` ops of kind `kind`, and no mean left over.
fn assert_norms(name: &str, kind: &str, norms: usize) {
    let ops = optimized_ops(name);
    let count = |k: &str| ops.get(k).copied().unwrap_or(0);
    assert_eq!(count(kind), norms, "{name}: {kind} count in {ops:?}");
    assert_eq!(count("ReduceMean"), 0, "{name}: unfused means in {ops:?}");
    let other = if kind == "LayerNorm" {
        "RmsNorm"
    } else {
        "LayerNorm"
    };
    assert_eq!(count(other), 0, "{name}: {other} in {ops:?}");
}

// Each tiny model has an embedding (or final) norm plus two per layer, two layers.
macro_rules! norm_tests {
    ($($test:ident: $model:literal => $kind:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                assert_norms($model, $kind, 5);
            }
        )*
    };
}

norm_tests! {
    bert_norms: "bert_tiny" => "LayerNorm",
    bert_ts_norms: "bert_tiny_ts" => "LayerNorm",
    gpt2_norms: "gpt2_tiny" => "LayerNorm",
    gpt2_ts_norms: "gpt2_tiny_ts" => "LayerNorm",
    llama_norms: "llama_tiny" => "RmsNorm",
    llama_ts_norms: "llama_tiny_ts" => "RmsNorm",
    vit_norms: "vit_tiny" => "LayerNorm",
    vit_ts_norms: "vit_tiny_ts" => "LayerNorm",
}
