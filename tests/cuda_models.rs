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
    for name in common::VENDORED_F32_MODELS {
        let given = read_npz(&path(&format!("{name}.inputs.npz"))).unwrap();
        let input = |n: &str, _: &kiln::ir::TensorType| {
            let found = given.iter().find(|(k, _)| k == n);
            found.map(|(_, t)| t.clone()).unwrap()
        };
        let file = path(&format!("{name}.onnx"));
        // The default and the f32 baseline must be within tolerance; plain tf32 and
        // bf16 are measured, as the reason neither is the default.
        for (precision, strict) in [
            (Precision::default(), true),
            (Precision::F32, true),
            (Precision::Tf32, false),
            (Precision::Bf16, false),
        ] {
            let (kernels, used) = check(&file, precision, strict, input);
            let p = precision.name();
            eprintln!("{name} ({p}): {kernels} kernels, {used:.3} of the tolerance used");
        }
    }
}

/// The runtime (`kiln::cuda::runtime::Session`, the code `--backend cuda` runs) on the
/// interpreter as its device: the vendored BERT and GPT-2 through one session each, at
/// their own inputs and then at a shorter sequence, so the arena is planned for two
/// shapes and every temporary shares it as the memory plan says (in place included).
#[test]
fn vendored_models_run_through_the_runtime_session() {
    use kiln::cuda::runtime::Session;
    for name in ["bert_tiny", "gpt2_tiny"] {
        let model = Model::load(path(&format!("{name}.onnx")))
            .unwrap()
            .optimize()
            .unwrap();
        let g = model.graph();
        let program = kiln::cuda::program(g, &Bindings::new()).unwrap();
        let module = kiln::cuda::emit(&program, kiln::cuda::Target::Sm80).unwrap();
        let mut session = Session::new(common::EmuGpu::default(), g, program, module).unwrap();
        let given = read_npz(&path(&format!("{name}.inputs.npz"))).unwrap();
        let full: Vec<Tensor> = (g.inputs.iter())
            .map(|(n, _)| given.iter().find(|(k, _)| k == n).unwrap().1.clone())
            .collect();
        // The same inputs cut to their first 3 positions along the last axis.
        let short: Vec<Tensor> = (full.iter())
            .map(|t| {
                let s = t.shape().to_vec();
                let (rows, len) = (s[..s.len() - 1].iter().product::<usize>(), s[s.len() - 1]);
                let v = t.to_f64_vec();
                let cut: Vec<f64> = (0..rows)
                    .flat_map(|r| v[r * len..r * len + 3].to_vec())
                    .collect();
                let mut shape = s.clone();
                *shape.last_mut().unwrap() = 3;
                Tensor::from_vec(cut, &shape).unwrap().cast(t.dtype())
            })
            .collect();
        for xs in [&full, &short, &full] {
            let want = interp::run(g, xs).unwrap();
            let got = session.run(xs).unwrap_or_else(|e| panic!("{name}: {e}"));
            for (i, (got, want)) in got.iter().zip(&want).enumerate() {
                common::close(got, want).unwrap_or_else(|e| panic!("{name}, output {i}: {e}"));
            }
        }
        eprintln!(
            "{name}: {} launches through the session",
            session.gpu().launches
        );
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

/// The ONNX ratchet through the GPU path with the interpreter as the device: every
/// listed case (the ones the CPU backend passes) runs as PTX and matches ONNX's expected
/// outputs, except those refused because an op has no PTX lowering yet, which are
/// counted by what they lack. Where ptxas is present, every module run is also assembled
/// for sm_80 and sm_90 (and one ptxas rejects fails its case).
#[test]
fn ratchet_cases_run_as_ptx_through_the_runtime() {
    use kiln::onnx_suite::{list_names, run_case_with, Case, Outcome, SuiteOptions};
    use std::collections::BTreeMap;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/onnx");
    let text = std::fs::read_to_string(dir.join("passing.txt")).unwrap();
    let names = list_names(&text);
    let ptxas = match common::ptxas() {
        Ok(p) => Some(p),
        Err(why) => {
            eprintln!("ratchet modules are not assembled: no ptxas ({why})");
            None
        }
    };
    let mut run = |model: &Model, feed: &BTreeMap<String, Tensor>| {
        let target = kiln::cuda::Target::Sm80;
        let options = kiln::cuda::Options {
            target,
            precision: Precision::default(),
        };
        let gpu = common::EmuGpu::assembling(ptxas.clone());
        kiln::gpu::GpuModel::with_gpu(model, options, gpu)?.run(feed)
    };
    let mut lacking = BTreeMap::<String, Vec<&str>>::new();
    let (mut passed, mut failed) = (0, Vec::new());
    for name in &names {
        let case = Case {
            dir: dir.join("cases").join(name),
            name: name.clone(),
        };
        match run_case_with(&case, SuiteOptions::default(), &mut run) {
            Outcome::Pass => passed += 1,
            Outcome::Fail(why) if why.contains("no PTX lowering for") => {
                let what = why.split("no PTX lowering for ").nth(1).unwrap_or("?");
                let what = what.trim_start_matches("runtime call ");
                let what = what.split([' ', '[']).next().unwrap_or("?");
                lacking.entry(what.to_string()).or_default().push(name);
            }
            Outcome::Fail(why) | Outcome::Panic(why) => failed.push(format!("{name}: {why}")),
        }
    }
    eprintln!(
        "{} cases: {passed} pass as PTX{}, {} lack a lowering: {lacking:#?}",
        names.len(),
        if ptxas.is_some() {
            " (assembled for sm_80 and sm_90)"
        } else {
            ""
        },
        lacking.values().map(Vec::len).sum::<usize>()
    );
    assert!(
        failed.is_empty(),
        "{} fail:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// What `kiln build --emit ptx` writes is enough to run: the plan, through JSON as the
/// file holds it, with the module and the weights, runs BERT-tiny on the interpreter as
/// the device (`Session::from_plan`, what `--emit exe --device cuda` executables do),
/// within tolerance of the reference interpreter. A plan naming a constant outside the
/// weights is refused before anything runs.
#[test]
fn a_ptx_artifact_runs_from_its_files() {
    use kiln::cuda::runtime::{Plan, Session};
    let name = "bert_tiny";
    let model = Model::load(path(&format!("{name}.onnx")))
        .unwrap()
        .optimize()
        .unwrap();
    let options = kiln::cuda::Options {
        target: kiln::cuda::Target::Sm80,
        precision: Precision::default(),
    };
    let art = kiln::gpu::ptx_artifact(&model, &Bindings::new(), options).unwrap();
    let text = serde_json::to_string(&art.plan).unwrap();
    let plan: Plan = serde_json::from_str(&text).unwrap();
    let given = read_npz(&path(&format!("{name}.inputs.npz"))).unwrap();
    let g = model.graph();
    let inputs: Vec<Tensor> = (g.inputs.iter())
        .map(|(n, _)| given.iter().find(|(k, _)| k == n).unwrap().1.clone())
        .collect();
    let want = interp::run(g, &inputs).unwrap();
    let mut session = Session::from_plan(
        common::EmuGpu::default(),
        &art.ptx,
        plan.clone(),
        &art.weights,
    )
    .unwrap();
    let got = session.run(&inputs).unwrap();
    assert_eq!(session.plan().output_names.len(), want.len());
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        common::close(got, want).unwrap_or_else(|e| panic!("output {i}: {e}"));
    }
    let short = &art.weights[..art.weights.len() / 2];
    let refused = Session::from_plan(common::EmuGpu::default(), &art.ptx, plan, short);
    let err = refused.err().expect("refused").to_string();
    assert!(err.contains("outside the weights"), "{err}");
}
