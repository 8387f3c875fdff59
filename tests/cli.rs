//! The `kiln` binary's happy paths: run prints summaries, inspect emits parseable JSON, and
//! every command's help carries an example.

use std::path::PathBuf;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout_of(args: &[&str]) -> String {
    let out = kiln(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kiln {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn model(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn run_with_generated_inputs_prints_a_summary_per_output() {
    let out = stdout_of(&[
        "run",
        &model("bert_tiny.onnx"),
        "--dim",
        "batch=2",
        "--dim",
        "seq=5",
    ]);
    let line = out
        .lines()
        .find(|l| l.starts_with("last_hidden_state"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("f32[2, 5, 64]") && line.contains("min") && line.contains("mean"),
        "{line}"
    );
}

#[test]
fn run_with_inputs_writes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.npz");
    let inputs = model("gpt2_tiny.inputs.npz");
    let out = out_path.display().to_string();
    let printed = stdout_of(&[
        "run",
        &model("gpt2_tiny.onnx"),
        "--inputs",
        &inputs,
        "-o",
        &out,
    ]);
    assert!(printed.contains("f32[2, 16, 64]"), "{printed}");
    let written = kiln::npz::read_npz(&out_path).unwrap();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].1.shape(), &[2, 16, 64]);
}

#[test]
fn inspect_json_parses_as_a_graph() {
    let out = stdout_of(&["inspect", &model("bert_tiny_ts.onnx"), "--format", "json"]);
    let graph: kiln::ir::Graph = serde_json::from_str(&out).unwrap();
    assert_eq!(graph.inputs.len(), 3);
    assert!(!graph.nodes.is_empty());
}

#[test]
fn inspect_text_parses_back() {
    let out = stdout_of(&["inspect", &model("vit_tiny_ts.onnx")]);
    let graph = kiln::ir::parse(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(graph.outputs.len(), 1);
}

#[test]
fn every_help_has_an_example() {
    for cmd in [
        vec![],
        vec!["run"],
        vec!["inspect"],
        vec!["test-onnx"],
        vec!["bench"],
        vec!["build"],
        vec!["quantize-report"],
        vec!["ops"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let out = stdout_of(&args);
        assert!(
            out.contains("Example"),
            "kiln {args:?} has no example:\n{out}"
        );
    }
}

#[test]
fn ops_lists_supported_ops() {
    let out = stdout_of(&["ops"]);
    assert!(out.lines().any(|l| l.starts_with("MatMul")), "{out}");
}

#[test]
fn verbose_run_times_each_stage() {
    let out = kiln(&["run", "-v", &model("bert_tiny.onnx")]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for stage in [
        "read",
        "decode",
        "import",
        "pass fold-shapes",
        "pass dce",
        "run",
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(" ms  ") && l.contains(stage)),
            "no `{stage}` timing in:\n{stderr}"
        );
    }
}

/// A bare file name resolves external data against the working directory.
#[test]
fn run_from_the_model_folder_with_a_bare_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", "bert_tiny.onnx"])
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kiln run bert_tiny.onnx failed: {stderr}"
    );
}

/// `kiln inspect m.onnx | head` must not panic when the reader goes away.
#[test]
fn inspect_into_a_closed_pipe_exits_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["inspect", &model("bert_tiny.onnx")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}: {stderr}",
        out.status.code()
    );
}

#[test]
fn bench_prints_one_json_line_with_the_documented_keys() {
    let out = stdout_of(&[
        "bench",
        &model("gpt2_tiny.onnx"),
        "--runs",
        "3",
        "--warmup",
        "1",
        "--threads",
        "2",
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["threads"], 2);
    for key in ["compile_ms", "median_ms", "p10_ms", "p90_ms"] {
        assert!(v[key].as_f64().is_some_and(|x| x >= 0.0), "{key} in {out}");
    }
    assert!(v["p10_ms"].as_f64() <= v["median_ms"].as_f64());
    assert!(v["median_ms"].as_f64() <= v["p90_ms"].as_f64());
}

#[test]
fn inspect_memory_reports_the_peak_and_every_buffer() {
    let out = stdout_of(&[
        "inspect",
        &model("bert_tiny.onnx"),
        "--memory",
        "--dim",
        "batch=1",
        "--dim",
        "seq=16",
    ]);
    let first = out.lines().next().unwrap();
    let peak: usize = first
        .strip_prefix("arena: ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak in {first:?}"));
    assert!(peak > 0 && peak.is_multiple_of(64), "{first}");
    let offsets: Vec<usize> = out
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(5)?.parse().ok())
        .collect();
    assert!(!offsets.is_empty(), "{out}");
    assert!(offsets.iter().all(|&o| o < peak), "{out}");
}

#[test]
fn inspect_stats_is_one_json_object_with_fused_op_names() {
    let out = stdout_of(&[
        "inspect",
        &model("llama_tiny.onnx"),
        "--optimized",
        "--stats",
    ]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("{\"ops\":{"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ops"]["RmsNorm"], 5, "{out}");
    assert!(v["ops"].get("ReduceMean").is_none(), "{out}");
    let nodes: u64 = v["ops"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(v["nodes"], nodes, "{out}");
}

#[test]
fn inspect_explain_lists_each_fused_kernel_with_its_rule_and_sources() {
    let out = stdout_of(&["inspect", &model("gpt2_tiny_ts.onnx"), "--explain"]);
    let mut lines = out.lines();
    // 5 layer norms, and per layer 3 linears (the GELU sits in a linear's epilogue; the
    // Q/K/V projection, whose bias is zero, is a plain matmul) and one attention.
    assert_eq!(lines.next(), Some("13 fused kernels"), "{out}");
    let kernels: Vec<&str> = lines.collect();
    assert_eq!(kernels.len(), 13, "{out}");
    let norms = kernels
        .iter()
        .filter(|l| l.starts_with("LayerNorm"))
        .count();
    assert_eq!(norms, 5, "{out}");
    let first = kernels[0];
    // The norm's scale is ones and its bias zeros, so mul-one and add-zero merge its last
    // steps into one class, named by the first of them.
    assert!(
        first.starts_with("LayerNorm  \"/m/h.0/ln_1/")
            && first.contains(
                "rules layer-norm, add-zero, div-sqrt-to-mul-rsqrt, mul-one, pow2-to-mul, \
                 rms-norm  from 9 nodes: /m/h.0/ln_1/ReduceMean, "
            ),
        "{first}"
    );
    let attention = kernels.iter().find(|l| l.starts_with("Attention")).unwrap();
    assert!(
        attention.contains(
            "\"/m/h.0/attn/MatMul_1\"  rules attention, transpose-transpose  from 9 nodes:"
        ) && attention.contains("/m/h.0/attn/Softmax")
            && attention.contains("/m/h.0/attn/IsNaN"),
        "{attention}"
    );
    let gelu = kernels
        .iter()
        .find(|l| l.contains("/m/h.0/mlp/act/Tanh"))
        .unwrap();
    assert!(
        gelu.starts_with("Linear ")
            && gelu.contains("rules linear-activation, add-zero, gelu-tanh, ")
            && gelu.contains("/m/h.0/mlp/c_fc/Gemm.matmul"),
        "{gelu}"
    );
}

#[test]
fn inspect_draws_dot_svg_and_html_with_fused_nodes_marked() {
    let m = model("gpt2_tiny_ts.onnx");
    let dot = stdout_of(&["inspect", &m, "--format", "dot"]);
    assert!(
        dot.starts_with("digraph ") && dot.trim_end().ends_with('}'),
        "{dot}"
    );
    assert_eq!(dot.matches("fillcolor=\"#ffd27f\"").count(), 13, "{dot}");
    assert!(dot.contains(" from: /m/h.0/ln_1/ReduceMean, /m/h.0/ln_1/Sub,"));
    let svg = stdout_of(&["inspect", &m, "--format", "svg"]);
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert_eq!(svg.matches("<g>").count(), svg.matches("</g>").count());
    assert_eq!(svg.matches("fill=\"#ffd27f\"").count(), 13);
    let html = stdout_of(&["inspect", &m, "--format", "html"]);
    assert!(
        html.starts_with("<!doctype html>") && html.contains("<svg "),
        "{html}"
    );
    assert_eq!(html.matches("<tr><td>").count(), 13, "{html}");
    assert!(!html.contains("http-equiv") && !html.contains("<script src"));
}

#[test]
fn inspect_why_not_names_the_step_where_each_candidate_stopped() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/unfused.kir");
    let rms = stdout_of(&["inspect", fixture, "--why-not", "rmsnorm"]);
    assert!(
        rms.starts_with("2 RmsNorm candidates did not fuse\n"),
        "{rms}"
    );
    assert!(
        rms.contains("epsilon added to the mean square is not a scalar constant"),
        "{rms}"
    );
    assert!(
        rms.contains("\"mean_sq_2\": the scale broadcasts the result to a larger shape"),
        "{rms}"
    );
    let gelu = stdout_of(&["inspect", fixture, "--why-not", "gelu"]);
    assert!(
        gelu.contains("\"erf_of_half\": erf's argument is not x/√2"),
        "{gelu}"
    );
    let silu = stdout_of(&["inspect", fixture, "--why-not", "SiLU"]);
    assert!(
        silu.contains("\"sigmoid_of_scale\": the sigmoid of"),
        "{silu}"
    );
    // A model where everything fused has nothing to report.
    let clean = stdout_of(&[
        "inspect",
        &model("llama_tiny.onnx"),
        "--why-not",
        "rms_norm",
    ]);
    assert_eq!(clean, "0 RmsNorm candidates did not fuse\n");
    let attention = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/unfused_attention.kir"
    );
    let att = stdout_of(&["inspect", attention, "--why-not", "attention"]);
    assert_eq!(
        att,
        "2 Attention candidates did not fuse\n\
         \"softmax_of_untransposed\": the product's right operand is not a transpose of the keys\n\
         \"softmax_over_queries\": the softmax runs over axis 2, not the last (the keys)\n"
    );
    let clean = stdout_of(&[
        "inspect",
        &model("gpt2_tiny.onnx"),
        "--why-not",
        "attention",
    ]);
    assert_eq!(clean, "0 Attention candidates did not fuse\n");
    let bad = kiln(&["inspect", fixture, "--why-not", "conv"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("expected one of: layernorm, rmsnorm, gelu, gelu_tanh, silu, attention"),
        "{err}"
    );
}

#[test]
fn inspect_writes_the_optimized_graph_as_onnx_with_kiln_ops() {
    use prost::Message;
    let out = kiln(&["inspect", &model("llama_tiny.onnx"), "--format", "onnx"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = kiln::frontend::proto::ModelProto::decode(out.stdout.as_slice()).unwrap();
    let g = m.graph.unwrap();
    let count = |op: &str| {
        g.node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some(op))
            .count()
    };
    assert_eq!(count("RmsNorm"), 5);
    assert_eq!(count("Linear"), 8);
    assert!(g
        .node
        .iter()
        .all(|n| n.domain.as_deref() == Some("ai.kiln")));
    assert!(!g.initializer.is_empty());
    assert!(m
        .opset_import
        .iter()
        .any(|o| o.domain.as_deref() == Some("ai.kiln")));
    let names: Vec<&str> = g.input.iter().filter_map(|i| i.name.as_deref()).collect();
    assert_eq!(names, ["input_ids", "attention_mask"]);
}

#[test]
fn quantize_report_measures_outputs_latency_size_and_layers() {
    let dir = std::env::temp_dir().join(format!("kiln-qreport-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let onnx = dir.join("q.onnx").display().to_string();
    let out = stdout_of(&[
        "quantize-report",
        &model("bert_tiny.onnx"),
        "--quantize",
        "int8",
        "--inputs",
        &model("bert_tiny.inputs.npz"),
        "--runs",
        "2",
        "--onnx",
        &onnx,
    ]);
    let cosine: f64 = (out.lines())
        .find_map(|l| l.strip_prefix("last_hidden_state"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no cosine for the output:\n{out}"));
    assert!((0.999..=1.0).contains(&cosine), "{out}");
    assert!(out.contains("latency (median of 2): f32"), "{out}");
    assert!(out.contains("constant bytes: f32"), "{out}");
    let table = out
        .split("layer sensitivity")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(table.lines().count() > 1, "{out}");
    // The quantized graph reads back as ONNX with its quantized layers.
    let bytes = std::fs::read(&onnx).unwrap();
    assert!(bytes
        .windows(b"QuantLinear".len())
        .any(|w| w == b"QuantLinear"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `--backend cuda` without a usable GPU (this machine and CI have none) exits 1 with one
/// line naming what is missing, for run, bench and test-onnx alike; never a panic.
#[test]
fn cuda_backend_without_a_gpu_is_one_line_and_exit_1() {
    let bert = model("bert_tiny.onnx");
    for args in [
        vec!["run", bert.as_str(), "--backend", "cuda"],
        vec!["bench", bert.as_str(), "--backend", "cuda", "--runs", "1"],
        vec!["test-onnx", "--backend", "cuda", "tests/onnx"],
    ] {
        let out = kiln(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        let known = ["no CUDA driver found", "no CUDA device", "cuda backend:"];
        assert!(
            known.iter().any(|k| errors[0].contains(k)),
            "{args:?}: {stderr}"
        );
    }
}

/// `kiln build --emit ptx` writes the module, its launch plan and its constants, and
/// refuses a model with a call the GPU backend lacks (a quantized linear layer) by name;
/// `--device cuda` takes only `--emit exe`.
#[test]
fn build_emit_ptx_writes_module_plan_and_weights_or_names_what_is_missing() {
    let dir = std::env::temp_dir().join(format!("kiln-cli-ptx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kir = dir.join("ln.kir");
    std::fs::write(
        &kir,
        "graph @ln(%x: f32[b, d], %s: f32[d], %h: f32[d]) -> f32[b, d] {
            %c = const f32[] 0.5
            %y = layer_norm %x, %s, %h {epsilon=1e-5}
            %z = mul %y, %c
            return %z
        }",
    )
    .unwrap();
    let out = dir.join("ln.ptx");
    let (k, o) = (kir.display().to_string(), out.display().to_string());
    let run = kiln(&["build", &k, "--emit", "ptx", "-o", &o]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let ptx = std::fs::read_to_string(&out).unwrap();
    assert!(ptx.contains(".target sm_80") && ptx.contains(".visible .entry kiln_k0("));
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ln.ptx.plan.json")).unwrap())
            .unwrap();
    assert_eq!(plan["symbols"], serde_json::json!(["b", "d"]));
    assert!(!plan["launches"].as_array().unwrap().is_empty());
    assert!(std::fs::metadata(dir.join("ln.ptx.weights")).is_ok());
    let int4 = model("bert_tiny_int4.onnx");
    let refused = kiln(&["build", &int4, "--emit", "ptx", "-o", &o]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("quant_linear") && stderr.contains("runtime call"),
        "{stderr}"
    );
    // A GPU build writes executables only.
    let obj = kiln(&["build", &k, "--device", "cuda", "--emit", "obj", "-o", &o]);
    let stderr = String::from_utf8_lossy(&obj.stderr);
    assert_eq!(obj.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--device cuda writes an executable"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kiln generate` streams the ids on one line, then one JSON line with the documented
/// keys; greedy ids are onnxruntime's over the same file (`bench/export_decoders.py`).
/// With `--tokenizer`, a text prompt gives the same tokens, streamed as text.
#[test]
fn generate_streams_ids_then_one_json_line() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model("llama_kv.greedy.json")).unwrap())
            .unwrap();
    let ids = |k: &str| -> Vec<i64> {
        (reference[k].as_array().unwrap().iter())
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    let prompt: Vec<String> = ids("prompt").iter().map(|i| i.to_string()).collect();
    let llama = model("llama_kv.onnx");
    let (p, n) = (prompt.join(","), "20");
    let run = kiln(&[
        "generate",
        &llama,
        "--prompt-ids",
        &p,
        "--max-new-tokens",
        n,
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let streamed: Vec<i64> = lines[0].split(' ').map(|t| t.parse().unwrap()).collect();
    assert_eq!(streamed, ids("ids")[..20]);
    let json: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    for key in [
        "prompt_tokens",
        "ids",
        "prefill_ms",
        "ms_per_token",
        "p90_ms_per_token",
        "tokens_per_s",
        "peak_rss_mb",
    ] {
        assert!(json.get(key).is_some(), "no `{key}` in {json}");
    }
    assert_eq!(json["prompt_tokens"], 16);
    assert_eq!(json["ids"].as_array().unwrap().len(), 20);
    // With a tokenizer the prompt is text and so are the new tokens.
    let gpt2_ref: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model("gpt2_kv.greedy.json")).unwrap())
            .unwrap();
    let text: Vec<String> = (gpt2_ref["prompt"].as_array().unwrap().iter())
        .map(|i| format!("w{i}"))
        .collect();
    let (gpt2, tok) = (model("gpt2_kv.onnx"), model("gpt2_kv.tokenizer.json"));
    let args = [
        "generate",
        &gpt2,
        "--tokenizer",
        &tok,
        "--prompt",
        &text.join(" "),
    ];
    let run = kiln(&[&args[..], &["--max-new-tokens", "6"]].concat());
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let want: Vec<String> = gpt2_ref["ids"].as_array().unwrap()[..6]
        .iter()
        .map(|v| format!("w{v}"))
        .collect();
    assert_eq!(
        stdout.lines().next(),
        Some(want.join(" ").as_str()),
        "{stdout}"
    );
    let bad = kiln(&["generate", &model("bert_tiny.onnx"), "--prompt-ids", "1,2"]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("decoder"), "{stderr}");
}
