//! Fusion counts on every vendored model, from both exporters: the default pipeline must
//! fuse the same kernels whichever exporter wrote the model (the point of matching by
//! meaning rather than by node order).

use kiln::Model;
use kiln_ir::{Epilogue, Op};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Op counts (CamelCase, as `kiln inspect --stats` prints them) after the default pipeline,
/// with the activations inside Linear epilogues counted as `Linear+Gelu` and so on.
fn optimized_ops(name: &str) -> BTreeMap<String, usize> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/models/{name}.onnx"));
    let model = Model::load(path)
        .and_then(|m| m.optimize())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut counts = BTreeMap::new();
    for node in &model.graph().nodes {
        *counts.entry(node.op.kind_name()).or_insert(0) += 1;
        if let Op::Linear(Epilogue {
            activation: Some(a),
            ..
        }) = node.op
        {
            let act = Op::Unary(a.unary()).kind_name();
            *counts.entry(format!("Linear+{act}")).or_insert(0) += 1;
        }
    }
    counts
}

/// Asserts `name`'s fused kernels: 5 norms of kind `norm` (one per sublayer of the two
/// layers, plus the embedding or final one), `linears` linear layers, and 2 activations of
/// kind `act` (one per layer), each in a linear's epilogue, with no trace of their
/// decompositions and no standalone activation left.
fn assert_fused(name: &str, norm: &str, act: &str, linears: usize) {
    let ops = optimized_ops(name);
    let count = |k: &str| ops.get(k).copied().unwrap_or(0);
    assert_eq!(count(norm), 5, "{name}: {norm} count in {ops:?}");
    assert_eq!(count("Linear"), linears, "{name}: Linear count in {ops:?}");
    assert_eq!(
        count(&format!("Linear+{act}")),
        2,
        "{name}: {act} in linears in {ops:?}"
    );
    for standalone in ["Gelu", "GeluTanh", "Silu"] {
        assert_eq!(
            count(standalone),
            0,
            "{name}: standalone {standalone} in {ops:?}"
        );
    }
    for leftover in [
        "ReduceMean",
        "Erf",
        "Tanh",
        "Sigmoid",
        "Pow",
        "Sqrt",
        "Rsqrt",
    ] {
        assert_eq!(count(leftover), 0, "{name}: unfused {leftover} in {ops:?}");
    }
}

macro_rules! fusion_tests {
    ($($test:ident: $model:literal => $norm:literal, $act:literal, $linears:literal;)*) => {
        $(
            #[test]
            fn $test() {
                assert_fused($model, $norm, $act, $linears);
            }
        )*
    };
}

// Linears per model: BERT and ViT 4 per layer (Q, K and V merged into one by
// `merge-linears`, output, two FFN); GPT-2 (TorchScript)
// 4 per layer (fused QKV, output, two FFN); Llama 4 per layer (gate with SiLU, up times
// gate, output and down with residuals; Q, K and V have no epilogue and stay a matmul,
// merged into one).
// GPT-2 (dynamo) carries no bias adds, so only the FFN's two fuse per layer: its attention output
// reads `reshape(transpose(..))`, whose flattening also merges the heads, so no `[..., K]`
// input is left to carry the residual's shape.
fusion_tests! {
    bert: "bert_tiny" => "LayerNorm", "Gelu", 8;
    bert_ts: "bert_tiny_ts" => "LayerNorm", "Gelu", 8;
    gpt2: "gpt2_tiny" => "LayerNorm", "GeluTanh", 4;
    gpt2_ts: "gpt2_tiny_ts" => "LayerNorm", "GeluTanh", 8;
    llama: "llama_tiny" => "RmsNorm", "Silu", 8;
    llama_ts: "llama_tiny_ts" => "RmsNorm", "Silu", 8;
    vit: "vit_tiny" => "LayerNorm", "Gelu", 8;
    vit_ts: "vit_tiny_ts" => "LayerNorm", "Gelu", 8;
}
