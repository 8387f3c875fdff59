//! The vendored transformer models (tests/models) against onnxruntime's reference outputs, at
//! both sizes each was exported for: interpreted (optimized and as imported) and compiled by
//! the CPU backend (one compiled model runs both sizes).

use kiln::compare::{compare, Tolerance};
use kiln::ir::Tensor;
use kiln::npz::read_npz;
use kiln::{Error, Model, Options};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

/// Runs `model` on `{name}{size}.inputs.npz` and compares with `{name}{size}.outputs.npz`;
/// returns one line per mismatch.
type Outputs = Result<Vec<(String, Tensor)>, Error>;

fn check_size(
    run: &dyn Fn(&BTreeMap<String, Tensor>) -> Outputs,
    name: &str,
    size: &str,
) -> Vec<String> {
    let dir = models_dir();
    let inputs: BTreeMap<String, Tensor> = read_npz(&dir.join(format!("{name}{size}.inputs.npz")))
        .unwrap()
        .into_iter()
        .collect();
    let expected = read_npz(&dir.join(format!("{name}{size}.outputs.npz"))).unwrap();
    let actual: BTreeMap<String, Tensor> = match run(&inputs) {
        Ok(outputs) => outputs.into_iter().collect(),
        Err(e) => return vec![format!("{name}{size}: {e}")],
    };
    expected
        .iter()
        .filter_map(|(out, want)| match actual.get(out) {
            None => Some(format!("{name}{size}: no output `{out}`")),
            Some(got) => compare(got, want, Tolerance::MODELS)
                .err()
                .map(|m| format!("{name}{size}: `{out}`: {m}")),
        })
        .collect()
}

/// One way of running a model: the interpreter, or compiled code.
type Runner<'a> = &'a dyn Fn(&BTreeMap<String, Tensor>) -> Outputs;

fn check_model(name: &str) {
    let model =
        Model::load(models_dir().join(format!("{name}.onnx"))).unwrap_or_else(|e| panic!("{e}"));
    let optimized = model.optimize().unwrap_or_else(|e| panic!("{e}"));
    let opts = Options {
        threads: 2,
        optimize: false,

        ..Options::default()
    };
    let compiled = optimized.compile(&opts).unwrap_or_else(|e| panic!("{e}"));
    // A decoder's caches appended in place: each past is copied into a cache buffer
    // and each present read back out of it.
    let in_place = Options {
        kv_cache: true,
        ..opts.clone()
    };
    let cached = optimized
        .compile(&in_place)
        .unwrap_or_else(|e| panic!("{e}"));
    let decoder = name.contains("_kv");
    assert_eq!(
        !cached.caches().is_empty(),
        decoder,
        "{name}: KV caches found: {:?}",
        cached.caches()
    );
    let runs: [(&str, Runner); 4] = [
        ("interp, optimized", &|i| optimized.run(i)),
        ("interp, as imported", &|i| model.run(i)),
        ("cpu", &|i| compiled.run(i)),
        ("cpu, KV caches in place", &|i| cached.run(i)),
    ];
    let mut failures = Vec::new();
    for (label, run) in runs {
        for size in ["", ".alt"] {
            failures.extend(
                check_size(run, name, size)
                    .into_iter()
                    .map(|f| format!("{label}: {f}")),
            );
        }
    }
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
}

macro_rules! model_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_model(stringify!($name));
            }
        )*

        #[test]
        fn every_vendored_model_has_a_test() {
            let mut tested = vec![$(stringify!($name)),*];
            tested.sort();
            let mut vendored: Vec<String> = std::fs::read_dir(models_dir())
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".onnx").map(str::to_string))
                .collect();
            vendored.sort();
            assert_eq!(vendored, tested);
        }
    };
}

model_tests!(
    bert_tiny,
    bert_tiny_int4,
    bert_tiny_ts,
    bert_tiny_ts_qdq,
    bert_tiny_ts_qdyn,
    gpt2_kv,
    gpt2_kv_dynamo,
    gpt2_kv_ts,
    gpt2_tiny,
    gpt2_tiny_ts,
    llama_kv,
    llama_kv_dynamo,
    llama_kv_genai,
    llama_kv_ts,
    llama_tiny,
    llama_tiny_int4,
    llama_tiny_ts,
    vit_tiny,
    vit_tiny_ts,
);
