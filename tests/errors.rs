//! Error paths of the `kiln` binary: bad files, unsupported ops and opsets, escaping external
//! data, and bad inputs each exit non-zero without panicking, with one line on stderr that
//! names what is wrong.

mod common;

use common::{f32_value, node, Onnx, FLOAT};
use kiln::frontend::proto::{tensor_proto, NodeProto, StringStringEntryProto, TensorProto};
use kiln::ir::{DType, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;

fn vendored(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(name)
}

/// Runs kiln and checks the failure is clean: non-zero, not a panic (101), one stderr line
/// containing every `needle`.
fn assert_clean_error(args: &[&str], needles: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        code.is_some_and(|c| c != 0 && c != 101),
        "kiln {args:?} exited {code:?}; stderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "kiln {args:?}: expected one stderr line, got:\n{stderr}"
    );
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "kiln {args:?}: `{needle}` missing from: {}",
            lines[0]
        );
    }
}

/// A one-node model `y = op(x[, w])` over f32[4] at the given default-domain opset.
fn one_node_model(opset: i64, node: NodeProto, initializers: Vec<TensorProto>) -> Vec<u8> {
    Onnx {
        opset,
        nodes: vec![node],
        inputs: vec![f32_value("x", &[4])],
        initializers,
        outputs: vec![f32_value("y", &[4])],
    }
    .bytes()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn truncated_model_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(vendored("bert_tiny_ts.onnx")).unwrap();
    let path = write(dir.path(), "truncated.onnx", &bytes[..bytes.len() / 2]);
    assert_clean_error(&["run", &path], &["truncated.onnx"]);
}

#[test]
fn random_bytes_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let path = write(dir.path(), "random.onnx", &bytes);
    assert_clean_error(&["run", &path], &["random.onnx"]);
}

#[test]
fn unknown_op_names_the_node_and_op() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "unknown_op.onnx",
        &one_node_model(18, node("mystery_node", "FooBar", &["x"]), vec![]),
    );
    assert_clean_error(
        &["run", &path],
        &["unknown_op.onnx", "mystery_node", "FooBar"],
    );
}

#[test]
fn op_below_its_first_opset_names_the_op_and_opset() {
    let ops = kiln::frontend::supported_ops();
    let first_since = |name: &str| ops.iter().filter(|o| o.name == name).map(|o| o.since).min();
    let (name, since) = ops
        .iter()
        .filter_map(|o| {
            first_since(&o.name)
                .filter(|&s| s > 1)
                .map(|s| (o.name.to_string(), s))
        })
        .min()
        .expect("some supported op starts after opset 1");
    let dir = tempfile::tempdir().unwrap();
    let model = one_node_model(since - 1, node("too_old", &name, &["x"]), vec![]);
    let path = write(dir.path(), "old_opset.onnx", &model);
    assert_clean_error(
        &["run", &path],
        &["old_opset.onnx", &name, &(since - 1).to_string()],
    );
}

#[test]
fn external_data_outside_the_model_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("model");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(dir.path().join("outside"), [0u8; 16]).unwrap();
    let entry = |k: &str, v: &str| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    let w = TensorProto {
        name: Some("w".into()),
        dims: vec![4],
        data_type: Some(FLOAT),
        data_location: Some(tensor_proto::DataLocation::External as i32),
        external_data: vec![
            entry("location", "../outside"),
            entry("offset", "0"),
            entry("length", "16"),
        ],
        ..Default::default()
    };
    let model = one_node_model(18, node("add", "Add", &["x", "w"]), vec![w]);
    let path = write(&sub, "escape.onnx", &model);
    assert_clean_error(&["run", &path], &["escape.onnx", "../outside"]);
}

/// bert_tiny's inputs with one replaced (or removed, for `None`), written to an npz.
fn bert_inputs_with(dir: &Path, name: &str, replacement: Option<Tensor>) -> String {
    let mut inputs = kiln::npz::read_npz(&vendored("bert_tiny.inputs.npz")).unwrap();
    match replacement {
        Some(t) => inputs
            .iter_mut()
            .filter(|(n, _)| n == name)
            .for_each(|(_, v)| *v = t.clone()),
        None => inputs.retain(|(n, _)| n != name),
    }
    let path = dir.join("inputs.npz");
    kiln::npz::write_npz(&path, &inputs).unwrap();
    path.display().to_string()
}

#[test]
fn bad_inputs_name_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = vendored("bert_tiny.onnx").display().to_string();
    let cases = [
        (
            "input_ids",
            Some(Tensor::zeros(DType::F32, &[2, 16]).unwrap()),
        ),
        ("input_ids", Some(Tensor::zeros(DType::I64, &[32]).unwrap())),
        ("attention_mask", None),
    ];
    for (name, replacement) in cases {
        let inputs = bert_inputs_with(dir.path(), name, replacement);
        assert_clean_error(&["run", &model, "--inputs", &inputs], &[name]);
    }
}

#[test]
fn unreadable_inputs_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = write(dir.path(), "junk.npz", b"not a zip archive");
    let model = vendored("bert_tiny.onnx").display().to_string();
    assert_clean_error(&["run", &model, "--inputs", &inputs], &["junk.npz"]);
}

#[test]
fn build_with_a_dim_the_model_lacks_names_the_dims_it_has() {
    let model = vendored("bert_tiny.onnx");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bert");
    let out = out.to_str().unwrap();
    assert_clean_error(
        &[
            "build",
            model.to_str().unwrap(),
            "--dim",
            "tokens=1",
            "-o",
            out,
        ],
        &["no symbolic dim `tokens`", "batch", "seq"],
    );
    assert_clean_error(
        &[
            "build",
            model.to_str().unwrap(),
            "--dim",
            "sequence=4",
            "-o",
            out,
        ],
        &["no symbolic dim `sequence`", "batch, seq"],
    );
    assert_clean_error(
        &[
            "build",
            model.to_str().unwrap(),
            "--dim",
            "batch=1",
            "--dim",
            "seq=8",
            "--target",
            "riscv64gc-unknown-linux-gnu",
            "--emit",
            "obj",
            "-o",
            out,
        ],
        &["riscv64"],
    );
    assert!(
        !std::path::Path::new(out).exists(),
        "a failed build wrote {out}"
    );
}

/// A file's parse error carries its cause in its own message; the line says it once.
#[test]
fn a_text_ir_parse_error_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "broken.kir",
        b"graph g(x: f32[2]) {\n  y = frobnicate(x)\n}\n",
    );
    assert_clean_error(&["run", &path], &["broken.kir"]);
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["run", &path])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let cause = line.rsplit(": ").next().unwrap_or_default();
    assert!(
        !cause.is_empty() && line.matches(cause).count() == 1,
        "the cause is repeated: {line}"
    );
}
