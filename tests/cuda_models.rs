//! The vendored f32 models (BERT, GPT-2, the Llama-style decoder and ViT, from both
//! exporters) run as PTX through the PTX interpreter, with their symbols free in the
//! module, against the reference interpreter on the same optimized graph: within 1e-3
//! relative / 1e-5 absolute. The quantized ones must be refused by name (`quant_linear`
//! has no PTX lowering yet). `KILN_FULLSIZE_PTX=DIR` also runs DIR's full-size MiniLM and
//! Llama-style exports (`bench/export_fullsize.py`) at batch 1 / sequence 16.

#[path = "../backends/cuda/tests/common/mod.rs"]
mod common;

use kiln::cuda::Precision;
use kiln::ir::{interp, Bindings, Tensor};
use kiln::npz::read_npz;
use kiln::Model;
use std::path::{Path, PathBuf};

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(name)
}

/// Runs `file` as PTX through the interpreter on the inputs `input` makes for each graph
/// input (by name and type) and compares with the reference interpreter; returns the
/// number of kernels and the largest share of the tolerance an output element used.
/// With `strict`, every output must be within the tolerance.
fn check(
    file: &Path,
    precision: Precision,
    strict: bool,
    input: impl Fn(&str, &kiln::ir::TensorType) -> Tensor,
) -> (usize, f64) {
    let name = file.display();
    let model = Model::load(file).unwrap().optimize().unwrap();
    let g = model.graph();
    let program = kiln::cuda::program(g, &Bindings::new()).unwrap();
    assert!(!program.symbols.is_empty(), "{name}: symbols stay free");
    let target = kiln::cuda::Target::Sm80;
    let options = kiln::cuda::Options { target, precision };
    let module = kiln::cuda::emit_with(&program, options).unwrap_or_else(|e| panic!("{name}: {e}"));
    let inputs: Vec<Tensor> = (g.inputs.iter())
        .map(|(n, v)| input(n, g.value_type(*v)))
        .collect();
    let types: Vec<_> = (inputs.iter())
        .map(|t| kiln::ir::TensorType::fixed(t.dtype(), t.shape()))
        .collect();
    let bindings = interp::bind_input_types(g, &types).unwrap();
    for c in kiln::cuda::launch_conditions(g, &program) {
        c.check(&bindings).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let want = interp::run(g, &inputs).unwrap();
    let shapes: Vec<Vec<usize>> = want.iter().map(|t| t.shape().to_vec()).collect();
    let (got, status) = common::run(&module, &program, &bindings, &inputs, &shapes)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(status, 0, "{name}: a kernel reported a bad index");
    let mut used = 0f64;
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        used = used.max(common::tolerance_used(got, want));
        if strict {
            common::close(got, want).unwrap_or_else(|e| panic!("{name}, output {i}: {e}"));
        }
    }
    (module.launches.len(), used)
}

#[test]
fn vendored_models_run_as_ptx_through_the_interpreter() {
    for name in [
        "bert_tiny",
        "bert_tiny_ts",
        "gpt2_tiny",
        "gpt2_tiny_ts",
        "llama_tiny",
        "llama_tiny_ts",
        "vit_tiny",
        "vit_tiny_ts",
    ] {
        let given = read_npz(&path(&format!("{name}.inputs.npz"))).unwrap();
        let input = |n: &str, _: &kiln::ir::TensorType| {
            let found = given.iter().find(|(k, _)| k == n);
            found.map(|(_, t)| t.clone()).unwrap()
        };
        let file = path(&format!("{name}.onnx"));
        // The default and the f32 baseline must be within tolerance; plain tf32 is
        // measured, as the reason it is not the default.
        for (precision, strict) in [
            (Precision::default(), true),
            (Precision::F32, true),
            (Precision::Tf32, false),
        ] {
            let (kernels, used) = check(&file, precision, strict, input);
            let p = precision.name();
            eprintln!("{name} ({p}): {kernels} kernels, {used:.3} of the tolerance used");
        }
    }
}

#[test]
fn fullsize_models_at_batch_1_sequence_16_when_given() {
    let Some(dir) = std::env::var_os("KILN_FULLSIZE_PTX") else {
        eprintln!(
            "SKIPPED: KILN_FULLSIZE_PTX unset (a folder of bench/export_fullsize.py exports)"
        );
        return;
    };
    for name in ["minilm", "llama"] {
        let file = PathBuf::from(&dir).join(format!("{name}.onnx"));
        // Token ids within every vocabulary, an all-ones mask, zero token types.
        let input = |n: &str, _: &kiln::ir::TensorType| {
            let values: Vec<i64> = match n {
                "input_ids" => (0..16).map(|i| (i * 37 + 11) % 1000).collect(),
                "attention_mask" => vec![1; 16],
                _ => vec![0; 16],
            };
            Tensor::from_vec(values, &[1, 16]).unwrap()
        };
        let start = std::time::Instant::now();
        let (kernels, used) = check(&file, Precision::default(), true, input);
        eprintln!(
            "{name}: {kernels} kernels, {used:.3} of the tolerance used ({:.0?})",
            start.elapsed()
        );
    }
}

#[test]
fn models_with_calls_the_backend_lacks_are_refused_by_name() {
    for (name, call) in [
        ("bert_tiny_int4", "quant_linear"),
        ("llama_tiny_int4", "quant_linear"),
    ] {
        let model = Model::load(path(&format!("{name}.onnx")))
            .unwrap()
            .optimize()
            .unwrap();
        let program = kiln::cuda::program(model.graph(), &Bindings::new()).unwrap();
        let err = kiln::cuda::emit(&program, kiln::cuda::Target::Sm80)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(call) && err.contains("no PTX lowering"),
            "{name}: {err}"
        );
    }
}
