//! Fusion counts on every vendored model, from both exporters: the default pipeline must
//! fuse the same kernels whichever exporter wrote the model (the point of matching by
//! meaning rather than by node order).

use kiln::Model;
use kiln_ir::{Epilogue, Op};
use kiln_passes::{PassManager, RunOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Op counts (CamelCase, as `kiln inspect --stats` prints them) after the default pipeline,
/// with the activations inside Linear epilogues counted as `Linear+Gelu` and so on.
fn optimized_ops(name: &str) -> BTreeMap<String, usize> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/models/{name}.onnx"));
    let opts = RunOptions {
        stop_after: None,
        verify: true,
    };
    let (model, report) = Model::load(path)
        .and_then(|m| m.optimize_with(&PassManager::default_pipeline(), &opts))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // No budget ran out: the DAG-aware extraction settled in every round.
    for run in &report.passes {
        assert_eq!(
            run.report.notes,
            Vec::<String>::new(),
            "{name}: {}",
            run.name
        );
    }
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
/// layers, plus the embedding or final one), `projections` GEMMs (Linear kernels, and
/// matmuls left without an epilogue, as a bias-free Q/K/V projection; the attention
/// products are inside the Attention kernels), and 2 activations of kind `act` (one per
/// layer), each in a linear's epilogue, with no trace of their decompositions and no
/// standalone activation left. The projection count includes Q/K/V as one merged GEMM per
/// layer: 4 per layer (5 with a gated MLP), not 6 (7).
fn assert_fused(name: &str, norm: &str, act: &str, projections: usize) {
    let ops = optimized_ops(name);
    let count = |k: &str| ops.get(k).copied().unwrap_or(0);
    assert_eq!(count(norm), 5, "{name}: {norm} count in {ops:?}");
    let gemms = count("Linear") + count("MatMul");
    assert_eq!(
        gemms, projections,
        "{name}: Linear + MatMul count in {ops:?}"
    );
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
    assert_eq!(count("Attention"), 2, "{name}: Attention count in {ops:?}");
    // Llama-style models rotate q and k in each layer.
    let rotary = if norm == "RmsNorm" { 4 } else { 0 };
    assert_eq!(count("Rotary"), rotary, "{name}: Rotary count in {ops:?}");
    for leftover in [
        "Softmax",
        "IsNan",
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
    gpt2: "gpt2_tiny" => "LayerNorm", "GeluTanh", 8;
    gpt2_ts: "gpt2_tiny_ts" => "LayerNorm", "GeluTanh", 8;
    llama: "llama_tiny" => "RmsNorm", "Silu", 10;
    llama_ts: "llama_tiny_ts" => "RmsNorm", "Silu", 10;
    vit: "vit_tiny" => "LayerNorm", "Gelu", 8;
    vit_ts: "vit_tiny_ts" => "LayerNorm", "Gelu", 8;
}

/// The ONNX `Attention` op (opsets 23–24, from the vendored node tests): the frontend
/// lowers it to its function body, and fusion recovers one Attention kernel, whatever the
/// mask (additive, bool, causal, composed), grouped-query heads, 3-D inputs or a KV cache.
/// (Softcap and a softmax in another precision are not fused; see ARCHITECTURE.md.)
#[test]
fn onnx_attention_op_is_one_kernel() {
    for case in [
        "test_attention_3d",
        "test_attention_3d_gqa_causal",
        "test_attention_4d_attn_mask",
        "test_attention_4d_attn_mask_bool",
        "test_attention_4d_causal",
        "test_attention_4d_gqa_attn_mask",
        "test_attention_4d_diff_heads_with_past_and_present_mask4d",
        "test_attention_4d_causal_nonpad_attn_mask_composition",
    ] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/onnx/cases/{case}/model.onnx"));
        let model = Model::load(path)
            .and_then(|m| m.optimize())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let kinds: Vec<String> = model
            .graph()
            .nodes
            .iter()
            .map(|n| n.op.kind_name())
            .collect();
        let count = |k: &str| kinds.iter().filter(|n| *n == k).count();
        assert_eq!(count("Attention"), 1, "{case}: {kinds:?}");
        assert_eq!(count("Softmax"), 0, "{case}: {kinds:?}");
    }
}

/// The shape arithmetic left in `name`'s optimized graph, as `op: dtype` strings: any
/// `shape_of` or `shape_value` (a shape computed at run time), any `gather_nd`, and any
/// integer-valued arithmetic, concat, expand or where (index tensors built from shapes,
/// such as the padding mask's `range(batch)·seq + range(seq)`). Positions from `range`,
/// and their reshapes, slices and the embedding gathers they feed, are data the model
/// reads (position ids, causal masks), so they are allowed.
fn shape_arithmetic(name: &str) -> Vec<String> {
    use kiln_ir::Op;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/models/{name}.onnx"));
    let model = Model::load(path)
        .and_then(|m| m.optimize())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let g = model.graph();
    let mut found = Vec::new();
    for node in &g.nodes {
        let dtype = g.value_type(node.outputs[0]).dtype;
        let shape_op = matches!(
            node.op,
            Op::ShapeOf | Op::ShapeValue { .. } | Op::GatherNd { .. }
        );
        let index_op = matches!(
            node.op,
            Op::Binary(_) | Op::Concat { .. } | Op::Expand { .. } | Op::Where
        );
        if shape_op || (index_op && dtype.is_int()) {
            found.push(format!(
                "{}: {dtype:?} ({})",
                node.op.kind_name(),
                node.name
            ));
        }
    }
    found
}

macro_rules! no_shape_arithmetic_tests {
    ($($test:ident: $model:literal;)*) => {
        $(
            #[test]
            fn $test() {
                let found = shape_arithmetic($model);
                assert!(found.is_empty(), "{}: shape arithmetic left: {found:?}", $model);
            }
        )*
    };
}

no_shape_arithmetic_tests! {
    bert_no_shape_arithmetic: "bert_tiny";
    bert_ts_no_shape_arithmetic: "bert_tiny_ts";
    gpt2_no_shape_arithmetic: "gpt2_tiny";
    gpt2_ts_no_shape_arithmetic: "gpt2_tiny_ts";
    llama_no_shape_arithmetic: "llama_tiny";
    llama_ts_no_shape_arithmetic: "llama_tiny_ts";
    vit_no_shape_arithmetic: "vit_tiny";
    vit_ts_no_shape_arithmetic: "vit_tiny_ts";
}
