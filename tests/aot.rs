//! Ahead-of-time artifacts (`kiln build`): executables for every vendored model, run from
//! a temporary folder with a cleared environment, against onnxruntime's references and
//! bit for bit against the JIT; an object + header linked into a C program; one artifact
//! over ranges of dims; errors on bad input; an AArch64 object.
//!
//! Executables link the runtime library, which `cargo test` does not build (kiln-rt-static
//! is built by `cargo build`), so the first test to need it builds `libkiln_runtime.a`
//! (release) into `target/kiln-rt` with the Cargo that runs the tests.

mod common;

use common::{dims_of, root, runtime_library as runtime};
use kiln::build::{Emit, Model as Build, WeightsMode};
use kiln::compare::{compare, Tolerance};
use kiln::ir::Tensor;
use kiln::npz::{read_npz, write_npz};
use kiln::{Model, Options};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn models() -> PathBuf {
    root().join("tests/models")
}

/// The JIT's outputs at 2 threads.
fn jit(model: &Path, inputs: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    let opts = Options {
        threads: 2,
        ..Options::default()
    };
    let compiled = Model::load(model).unwrap().compile(&opts).unwrap();
    let map: BTreeMap<String, Tensor> = inputs.iter().cloned().collect();
    compiled.run(&map).unwrap()
}

/// Runs an executable from `dir` with a cleared environment.
fn run_exe(exe: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .env_clear()
        .current_dir(dir)
        .output()
        .expect("the executable starts")
}

fn bits(t: &Tensor) -> Vec<u8> {
    t.to_le_bytes()
}

#[test]
fn every_model_builds_to_an_executable_that_matches_the_reference_and_the_jit() {
    let mut failures = Vec::new();
    for name in common::MODELS {
        let dir = tempfile::tempdir().unwrap();
        let model = models().join(format!("{name}.onnx"));
        let inputs = read_npz(&models().join(format!("{name}.inputs.npz"))).unwrap();
        let mut build = Build::new(&model).runtime_library(runtime());
        for (d, v) in dims_of(&model, &inputs) {
            build = build.dim(&d, v, v);
        }
        let exe = dir.path().join(name);
        build
            .emit(Emit::Exe, &exe)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = run_on(&exe, dir.path(), &format!("{name}.inputs.npz"));
        let want = read_npz(&models().join(format!("{name}.outputs.npz"))).unwrap();
        for (out_name, w) in &want {
            if let Err(m) = compare(&got[out_name], w, Tolerance::MODELS) {
                failures.push(format!("{name} `{out_name}` vs reference: {m}"));
            }
        }
        for (out_name, j) in jit(&model, &inputs) {
            if bits(&got[&out_name]) != bits(&j) {
                failures.push(format!("{name} `{out_name}`: not bit-identical to the JIT"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The outputs of executable `exe` (in `dir`) run on the vendored inputs `npz`.
fn run_on(exe: &Path, dir: &Path, npz: &str) -> BTreeMap<String, Tensor> {
    std::fs::copy(models().join(npz), dir.join("in.npz")).unwrap();
    let args = ["--inputs", "in.npz", "-o", "out.npz", "--threads", "2"];
    let out = run_exe(exe, dir, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", exe.display());
    read_npz(&dir.join("out.npz"))
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn a_decoder_executable_runs_a_step_through_its_caches_as_the_reference_does() {
    // An ordinary run of an artifact whose caches are appended in place (the C API's
    // and `--inputs`'): each past is copied into a cache buffer, each present read out.
    for name in ["gpt2_kv", "llama_kv_genai"] {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join(name);
        let build = Build::new(models().join(format!("{name}.onnx"))).runtime_library(runtime());
        build.emit(Emit::Exe, &exe).unwrap();
        // Two past lengths on the one program.
        for case in ["", ".alt"] {
            let got = run_on(&exe, dir.path(), &format!("{name}{case}.inputs.npz"));
            let want = read_npz(&models().join(format!("{name}{case}.outputs.npz"))).unwrap();
            assert!(want.iter().any(|(n, _)| n.starts_with("present")));
            for (out, w) in &want {
                compare(&got[out], w, Tolerance::MODELS)
                    .unwrap_or_else(|m| panic!("{name}{case} `{out}`: {m}"));
            }
        }
    }
}

/// bert_tiny built for batch 1..3 and seq 7..16 (one program) as an object and a header,
/// linked into the C program `tests/aot/{source}`.
fn build_c_app(dir: &Path, source: &str) -> PathBuf {
    let model = models().join("bert_tiny.onnx");
    let build = Build::new(&model)
        .name("bert")
        .dim("batch", 1, 3)
        .dim("seq", 7, 16)
        .runtime_library(runtime());
    let artifact = build.compile().unwrap();
    // One program, reading both dims at run time.
    assert_eq!(artifact.meta.program.symbols, ["batch", "seq"]);
    build.emit(Emit::Obj, &dir.join("bert.o")).unwrap();
    build.emit(Emit::Header, &dir.join("bert.h")).unwrap();
    let app = dir.join("app");
    let status = Command::new("cc")
        .arg(root().join("tests/aot").join(source))
        .arg("-I")
        .arg(dir)
        .arg(dir.join("bert.o"))
        .arg(runtime())
        .args(["-lpthread", "-lm", "-ldl", "-o"])
        .arg(&app)
        .status()
        .expect("cc runs");
    assert!(status.success(), "linking the C program failed");
    app
}

#[test]
fn a_c_program_links_the_object_and_header_and_runs_two_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let app = build_c_app(dir.path(), "app.c");
    let out = run_exe(&app, dir.path(), &[dir.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("seq 40 refused"));
    // Each shape's output is bit-identical to the JIT's on the same inputs.
    let model = models().join("bert_tiny.onnx");
    for (batch, seq) in [(1usize, 7usize), (3, 16)] {
        let n = batch * seq;
        let ids: Vec<i64> = (0..n).map(|i| ((i * 7 + 3) % 50) as i64).collect();
        let tensor = |v: Vec<i64>| Tensor::from_vec(v, &[batch, seq]).unwrap();
        let inputs = vec![
            ("input_ids".to_string(), tensor(ids)),
            ("attention_mask".to_string(), tensor(vec![1; n])),
            ("token_type_ids".to_string(), tensor(vec![0; n])),
        ];
        let want = &jit(&model, &inputs)[0].1;
        let got = std::fs::read(dir.path().join(format!("out_{batch}x{seq}.bin"))).unwrap();
        assert_eq!(got, bits(want), "batch {batch}, seq {seq}");
    }
}

/// Eight threads with a session each run the linked model 200 times at mixed shapes; every
/// output is bit-identical to the serial run (tests/aot/threads.c checks and counts).
#[test]
fn concurrent_runs_through_the_c_abi_match_serial_runs() {
    let dir = tempfile::tempdir().unwrap();
    let app = build_c_app(dir.path(), "threads.c");
    let out = run_exe(&app, dir.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1600 runs on 8 threads, 0 differed"),
        "{stdout}"
    );
}

/// `kiln build` is a function of its inputs: two builds of one model give the same bytes,
/// for every kind of artifact, both weights modes included.
#[test]
fn building_twice_gives_byte_identical_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let model = models().join("bert_tiny.onnx");
    let kinds = [
        (Emit::Exe, "exe"),
        (Emit::Obj, "o"),
        (Emit::Lib, "a"),
        (Emit::Header, "h"),
        (Emit::Rust, "rs"),
    ];
    for round in ["a", "b"] {
        let out = dir.path().join(round);
        std::fs::create_dir(&out).unwrap();
        for (emit, ext) in kinds {
            let build = || {
                Build::new(&model)
                    .name("bert")
                    .dim("batch", 1, 1)
                    .dim("seq", 1, 3)
                    .runtime_library(runtime())
            };
            build()
                .emit(emit, &out.join(format!("bert.{ext}")))
                .unwrap();
            let file = out.join(format!("bert_file.{ext}"));
            (build().weights(WeightsMode::File).emit(emit, &file)).unwrap();
        }
    }
    let mut names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    for name in names {
        let a = std::fs::read(dir.path().join("a").join(&name)).unwrap();
        let b = std::fs::read(dir.path().join("b").join(&name)).unwrap();
        assert!(a == b, "{name:?} differs between two builds");
    }
}

#[test]
fn bad_input_gives_an_error_and_a_message_never_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let model = models().join("bert_tiny.onnx");
    let exe = dir.path().join("bert");
    let written = Build::new(&model)
        .dim("batch", 1, 2)
        .dim("seq", 8, 16)
        .weights(WeightsMode::File)
        .runtime_library(runtime())
        .emit(Emit::Exe, &exe)
        .unwrap();
    assert_eq!(written.len(), 2, "the executable and its weights file");
    let ok = run_exe(&exe, dir.path(), &[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let fails = |args: &[&str], needle: &str| {
        let out = run_exe(&exe, dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: `{needle}` not in: {stderr}"
        );
    };
    // A dim out of the declared range (seq 40), and a wrong dtype.
    let long = Tensor::from_vec(vec![1i64; 40], &[1, 40]).unwrap();
    let inputs: Vec<(String, Tensor)> = ["input_ids", "attention_mask", "token_type_ids"]
        .iter()
        .map(|n| (n.to_string(), long.clone()))
        .collect();
    write_npz(&dir.path().join("long.npz"), &inputs).unwrap();
    fails(&["--inputs", "long.npz"], "seq in 8..=16");
    let mut floats = inputs.clone();
    floats[0].1 = Tensor::from_vec(vec![1.0f32; 40], &[1, 40]).unwrap();
    write_npz(&dir.path().join("floats.npz"), &floats).unwrap();
    fails(&["--inputs", "floats.npz"], "expected i64");
    // A malformed .npz.
    std::fs::write(dir.path().join("bad.npz"), b"PK\x03\x04 not a zip").unwrap();
    fails(&["--inputs", "bad.npz"], "bad.npz");
    // A truncated, then a missing weights file.
    let weights = &written[1];
    let full = std::fs::read(weights).unwrap();
    std::fs::write(weights, &full[..full.len() / 2]).unwrap();
    fails(&[], "truncated");
    std::fs::remove_file(weights).unwrap();
    fails(&[], "weights file");
}

/// An op the backend compiles no code for (top-k) runs through the interpreter, which
/// the executable then links; one whose ops all compiled (reflect padding) links none of
/// it, and is smaller by the interpreter's size.
#[test]
fn an_executable_links_the_interpreter_only_for_op_calls() {
    let dir = tempfile::tempdir().unwrap();
    let x = Tensor::from_vec((0..6).map(|v| v as f32).collect(), &[2, 3]).unwrap();
    write_npz(&dir.path().join("in.npz"), &[("x".to_string(), x.clone())]).unwrap();
    let mut sizes = Vec::new();
    let (topk, pad) = (
        "%v, %i = topk %x {axis=1, k=3, largest=true, sorted=true}\n    %y = concat %v, %v, %x {axis=1}",
        "%zero = const f32[] 0.0\n    %y = pad %x, %zero {pads=[(0, 0), (3, 3)], mode=reflect}",
    );
    for (mode, body, first_row) in [
        ("topk", topk, [2.0, 1.0, 0.0, 2.0, 1.0, 0.0, 0.0]),
        ("reflect", pad, [1.0, 2.0, 1.0, 0.0, 1.0, 2.0, 1.0]),
    ] {
        let model = dir.path().join(format!("{mode}.kir"));
        let text = format!(
            "graph @g(%x: f32[2, 3]) -> (%y: f32[2, 9]) {{\n    {body}\n    return %y\n}}\n"
        );
        std::fs::write(&model, text).unwrap();
        let exe = dir.path().join(mode);
        let build = Build::new(&model).runtime_library(runtime());
        build.emit(Emit::Exe, &exe).unwrap();
        let out = run_exe(&exe, dir.path(), &["--inputs", "in.npz", "-o", "out.npz"]);
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = read_npz(&dir.path().join("out.npz")).unwrap();
        let want = jit(&model, &[("x".to_string(), x.clone())]);
        assert_eq!(
            bits(&got[0].1),
            bits(&want[0].1),
            "{mode}: differs from the JIT"
        );
        assert_eq!(got[0].1.to_f64_vec()[..7], first_row, "{mode}");
        sizes.push(std::fs::metadata(&exe).unwrap().len());
    }
    assert!(
        sizes[0] > sizes[1] + (1 << 20),
        "with op calls {} bytes, without {} bytes: the interpreter stayed linked",
        sizes[0],
        sizes[1]
    );
}

#[test]
fn a_failed_build_keeps_the_existing_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.o");
    std::fs::write(&out, b"previous artifact").unwrap();
    // The model has no dim `tokens`: the build fails before writing anything.
    let err = Build::new(models().join("bert_tiny.onnx"))
        .dim("tokens", 1, 1)
        .emit(Emit::Obj, &out)
        .unwrap_err();
    assert!(
        err.to_string().contains("no symbolic dim `tokens`"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"previous artifact");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn an_aarch64_object_is_an_aarch64_elf() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.o");
    Build::new(models().join("bert_tiny.onnx"))
        .dim("batch", 1, 1)
        .dim("seq", 8, 8)
        .target("aarch64-unknown-linux-gnu")
        .emit(Emit::Obj, &out)
        .unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(bytes[4], 2, "64-bit");
    assert_eq!(u16::from_le_bytes([bytes[16], bytes[17]]), 1, "relocatable");
    assert_eq!(
        u16::from_le_bytes([bytes[18], bytes[19]]),
        183,
        "EM_AARCH64"
    );
    // Executables link this machine's runtime, so another target is refused clearly.
    let err = Build::new(models().join("bert_tiny.onnx"))
        .dim("batch", 1, 1)
        .dim("seq", 8, 8)
        .target("aarch64-unknown-linux-gnu")
        .emit(Emit::Exe, &dir.path().join("exe"))
        .unwrap_err();
    assert!(err.to_string().contains("emit obj"), "{err}");
}

/// `kiln build --device cuda` of BERT-tiny writes an executable that embeds the PTX
/// module, its plan and the weights, and links only the CUDA runtime archive. Run with
/// `env -i` from another folder: on a machine with a GPU its outputs match the reference
/// interpreter within 1e-3 / 1e-5; without a driver it exits 1 with the one-line message.
#[test]
fn a_cuda_executable_runs_or_says_there_is_no_driver() {
    let dir = tempfile::tempdir().unwrap();
    let model = Model::load(models().join("bert_tiny.onnx"))
        .unwrap()
        .optimize()
        .unwrap();
    let options = kiln::cuda::Options {
        target: kiln::cuda::Target::Sm80,
        precision: kiln::cuda::Precision::default(),
    };
    let art = kiln::gpu::ptx_artifact(&model, &Default::default(), options).unwrap();
    let plan = serde_json::to_vec(&art.plan).unwrap();
    let exe = dir.path().join("bert-gpu");
    let runtime = common::cuda_runtime_library();
    let blobs = [art.ptx.as_bytes(), &plan[..], &art.weights[..]];
    kiln::build::cuda_executable(blobs, "bert_tiny", &exe, Some(runtime)).unwrap();
    let inputs = models().join("bert_tiny.inputs.npz");
    let out = dir.path().join("out.npz");
    let args = [
        "--inputs",
        inputs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    let run = run_exe(&exe, dir.path(), &args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    match kiln::gpu::device() {
        Err(e) => {
            eprintln!("SKIPPED the device run: {e}");
            assert_eq!(run.status.code(), Some(1), "{stderr}");
            assert_eq!(stderr.trim(), format!("error: {e}"));
        }
        Ok(_) => {
            assert!(run.status.success(), "{stderr}");
            let given: BTreeMap<_, _> = read_npz(&inputs).unwrap().into_iter().collect();
            let want = model.run(&given).unwrap();
            let got = read_npz(&out).unwrap();
            for ((n, w), (_, g)) in want.iter().zip(&got) {
                let tolerance = Tolerance {
                    rtol: 1e-3,
                    atol: 1e-5,
                };
                compare(g, w, tolerance).unwrap_or_else(|e| panic!("{n}: {e}"));
            }
        }
    }
    let help = run_exe(&exe, dir.path(), &["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--inputs"));
}

/// The JSON line that ends a generation's output.
fn generation_ids(stdout: &[u8]) -> Vec<i64> {
    let text = String::from_utf8_lossy(stdout);
    let last = text.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {text}"));
    (v["ids"].as_array().unwrap().iter())
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[test]
fn a_decoder_executable_generates_the_generators_tokens_from_ids_and_text() {
    use kiln::decode::{Generator, Sampling};
    let dir = tempfile::tempdir().unwrap();
    let model = models().join("gpt2_kv.onnx");
    let exe = dir.path().join("gpt2");
    let build = (Build::new(&model).runtime_library(runtime()))
        .tokenizer(models().join("gpt2_kv.tokenizer.json"));
    let mut report = Vec::new();
    (build.emit_reporting(Emit::Exe, &exe, &mut |l| report.push(l.to_string()))).unwrap();
    // Both layers' keys and values are appended in place by the executable too.
    assert!(
        report
            .iter()
            .any(|l| l.starts_with("4 KV caches appended in place")),
        "{report:?}"
    );
    let generator = Generator::new(&Model::load(&model).unwrap(), &Options::default()).unwrap();
    let prompt = [90, 60, 65, 86, 55, 74, 80, 21];
    for sampling in [
        Sampling {
            max_new_tokens: 24,
            ..Sampling::default()
        },
        Sampling {
            max_new_tokens: 24,
            temperature: 0.9,
            top_k: 8,
            top_p: 0.9,
            seed: 5,
            eos: None,
        },
    ] {
        let want = generator.generate(&prompt, &sampling, |_| {}).unwrap().ids;
        let ids: Vec<String> = prompt.iter().map(|i| i.to_string()).collect();
        let (n, t, k, p, s) = (
            sampling.max_new_tokens.to_string(),
            sampling.temperature.to_string(),
            sampling.top_k.to_string(),
            sampling.top_p.to_string(),
            sampling.seed.to_string(),
        );
        let args = [
            "--prompt-ids",
            &ids.join(","),
            "--max-new-tokens",
            &n,
            "--temperature",
            &t,
            "--top-k",
            &k,
            "--top-p",
            &p,
            "--seed",
            &s,
            "--threads",
            "2",
        ];
        let out = run_exe(&exe, dir.path(), &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(generation_ids(&out.stdout), want, "{sampling:?}");
    }
    // Caches of a capacity the user chose: the same tokens, and a generation that could
    // pass it refused before it starts.
    let ids: Vec<String> = prompt.iter().map(|i| i.to_string()).collect();
    let greedy = |max_seq: &str| {
        let args = [
            "--prompt-ids",
            &ids.join(","),
            "--max-new-tokens",
            "24",
            "--max-seq",
            max_seq,
        ];
        run_exe(&exe, dir.path(), &args)
    };
    let out = greedy("100");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = generator.generate(
        &prompt,
        &Sampling {
            max_new_tokens: 24,
            ..Sampling::default()
        },
        |_| {},
    );
    assert_eq!(generation_ids(&out.stdout), want.unwrap().ids);
    let out = greedy("31");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass the cache's 31 (max-seq)"));
    // The embedded tokenizer: "w5 w6 w7" is ids 5, 6, 7, and the tokens print as words.
    let out = run_exe(
        &exe,
        dir.path(),
        &["--prompt", "w5 w6 w7", "--max-new-tokens", "6"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let greedy = Sampling {
        max_new_tokens: 6,
        ..Sampling::default()
    };
    let want = generator.generate(&[5, 6, 7], &greedy, |_| {}).unwrap().ids;
    assert_eq!(generation_ids(&out.stdout), want);
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(first.starts_with(&format!("w{}", want[0])), "{first}");
    // A model that is not a decoder says so.
    let bert = dir.path().join("bert");
    let build = Build::new(models().join("bert_tiny.onnx")).runtime_library(runtime());
    build
        .dim("batch", 1, 1)
        .dim("seq", 4, 4)
        .emit(Emit::Exe, &bert)
        .unwrap();
    let out = run_exe(&bert, dir.path(), &["--prompt-ids", "1,2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("need a decoder"));
}

#[test]
fn onnxruntime_genais_decoder_builds_to_an_executable_that_generates_its_greedy_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("llama");
    // The builder leaves the head size symbolic (`kv_cache_dim`): the build fixes it.
    let build = Build::new(models().join("llama_kv_genai.onnx")).runtime_library(runtime());
    build.emit(Emit::Exe, &exe).unwrap();
    let text = std::fs::read_to_string(models().join("llama_kv_genai.greedy.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |k: &str| -> Vec<i64> {
        (v[k].as_array().unwrap().iter())
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    let (prompt, want) = (ids("prompt"), ids("ids"));
    let prompt: Vec<String> = prompt.iter().map(|i| i.to_string()).collect();
    let n = want.len().to_string();
    let args = ["--prompt-ids", &prompt.join(","), "--max-new-tokens", &n];
    let out = run_exe(&exe, dir.path(), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(generation_ids(&out.stdout), want);
}
