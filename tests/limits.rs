//! Sizes are checked before allocation: models whose values would not fit in memory (a
//! Tile, ConstantOfShape, Expand, Range, Pad, OneHot or ConvTranspose with a huge output, a
//! huge graph input, shape arithmetic that overflows) fail with exit code 1 and one stderr
//! line naming the node and the limit, on the interpreter and on the cpu backend; never an
//! abort (134), a segfault (139) or a panic (101). `--max-memory` lowers the limit.

mod common;

use common::{
    assert_refused, floats, ints, ints_attr, kiln, value_info, vendored, Onnx, FLOAT, INT64,
};
use kiln::frontend::proto::{NodeProto, TensorProto, ValueInfoProto};
use std::path::Path;

/// `kiln run` on both backends refuses the model with a message containing `needles`.
fn assert_refused_on_both(model: &str, extra: &[&str], needles: &[&str]) {
    for backend in ["cpu", "interp"] {
        let mut args = vec!["run", model, "--backend", backend];
        args.extend_from_slice(extra);
        let line = assert_refused(&args, needles);
        eprintln!("{backend}: {line}");
    }
}

fn node(
    name: &str,
    op: &str,
    inputs: &[&str],
    attribute: Vec<kiln::frontend::proto::AttributeProto>,
) -> NodeProto {
    common::node_with(name, op, inputs, attribute)
}

/// One node producing `y` (f32 unless `out_elem` says otherwise, shape not declared), over
/// the graph inputs and initializers given.
fn model(
    dir: &Path,
    file: &str,
    node: NodeProto,
    inputs: Vec<ValueInfoProto>,
    initializer: Vec<TensorProto>,
    out_elem: i32,
) -> String {
    Onnx::new(vec![node], inputs, out_elem)
        .with(initializer)
        .write(dir, file)
}

fn x(shape: &[i64]) -> Vec<ValueInfoProto> {
    vec![value_info("x", FLOAT, Some(shape))]
}

const LIMIT: &str = "over the limit of";

#[test]
fn tile_with_huge_repeats_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        dir.path(),
        "tile.onnx",
        node("tile", "Tile", &["x", "r"], vec![]),
        x(&[2, 2]),
        vec![ints("r", &[2], &[1 << 30, 1 << 30])],
        FLOAT,
    );
    assert_refused_on_both(&m, &[], &["node `tile", "f32[", "16 EiB", LIMIT]);
}

#[test]
fn tile_whose_output_dims_overflow_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        dir.path(),
        "tile.onnx",
        node("tile", "Tile", &["x", "r"], vec![]),
        x(&[2, 2]),
        vec![ints("r", &[2], &[1 << 62, 4])],
        FLOAT,
    );
    assert_refused_on_both(&m, &[], &["tile", "overflow"]);
}

#[test]
fn constant_of_shape_with_a_huge_shape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        dir.path(),
        "cos.onnx",
        node("fill", "ConstantOfShape", &["s"], vec![]),
        vec![],
        vec![ints("s", &[2], &[1 << 20, 1 << 20])],
        FLOAT,
    );
    assert_refused_on_both(&m, &[], &["node `fill", "4 TiB"]);
}

#[test]
fn expand_to_a_huge_shape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        dir.path(),
        "expand.onnx",
        node("grow", "Expand", &["x", "s"], vec![]),
        x(&[1]),
        vec![ints("s", &[2], &[1 << 20, 1 << 20])],
        FLOAT,
    );
    assert_refused_on_both(&m, &[], &["node `grow", "4398046511104 bytes", LIMIT]);
}

#[test]
fn a_huge_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        dir.path(),
        "range.onnx",
        node("count", "Range", &["a", "b", "c"], vec![]),
        vec![],
        vec![
            ints("a", &[], &[0]),
            ints("b", &[], &[1 << 43]),
            ints("c", &[], &[1]),
        ],
        INT64,
    );
    assert_refused_on_both(&m, &[], &["node `count", "i64[8796093022208]", LIMIT]);
}

#[test]
fn a_huge_graph_input_is_refused_before_it_is_generated() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        dir.path(),
        "input.onnx",
        node("same", "Identity", &["x"], vec![]),
        x(&[1 << 20, 1 << 20]),
        vec![],
        FLOAT,
    );
    assert_refused_on_both(&m, &[], &["input `x`", "f32[1048576, 1048576]", LIMIT]);
}

#[test]
fn huge_pad_one_hot_and_conv_transpose_outputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pad = model(
        dir.path(),
        "pad.onnx",
        node("pad", "Pad", &["x", "p"], vec![]),
        x(&[2, 2]),
        vec![ints("p", &[4], &[0, 0, 1 << 20, 1 << 20])],
        FLOAT,
    );
    assert_refused_on_both(&pad, &[], &["node `pad", LIMIT]);
    let one_hot = model(
        dir.path(),
        "one_hot.onnx",
        node("hot", "OneHot", &["i", "d", "v"], vec![]),
        vec![value_info("i", INT64, Some(&[4]))],
        vec![ints("d", &[], &[1 << 40]), floats("v", &[2], &[0.0, 1.0])],
        FLOAT,
    );
    assert_refused_on_both(
        &one_hot,
        &[],
        &["node `hot", "f32[4, 1099511627776]", LIMIT],
    );
    let strides = ints_attr("strides", &[1 << 31, 1 << 31]);
    let conv = model(
        dir.path(),
        "conv_t.onnx",
        node("up", "ConvTranspose", &["x", "w"], vec![strides]),
        x(&[1, 1, 2, 2]),
        vec![floats("w", &[1, 1, 1, 1], &[1.0])],
        FLOAT,
    );
    assert_refused_on_both(&conv, &[], &["node `up", LIMIT]);
}

#[test]
fn max_memory_refuses_a_normal_model_that_the_default_runs() {
    let bert = vendored("bert_tiny.onnx");
    for backend in ["cpu", "interp"] {
        let dims = ["--dim", "batch=1", "--dim", "seq=8"];
        let mut args = vec!["run", &bert, "--backend", backend, "--max-memory", "4K"];
        args.extend(dims);
        assert_refused(&args, &["over the limit of 4 KiB"]);
        let mut args = vec!["run", &bert, "--backend", backend];
        args.extend(dims);
        let out = kiln(&args);
        assert_eq!(out.code, Some(0), "{backend}: {:?}", out.lines);
    }
    let out = kiln(&[
        "run",
        &bert,
        "--max-memory",
        "64M",
        "--dim",
        "batch=1",
        "--dim",
        "seq=8",
    ]);
    assert_eq!(out.code, Some(0), "{:?}", out.lines);
    // A bad size is a usage error (clap's exit code 2), naming the value.
    let out = kiln(&["run", &bert, "--max-memory", "lots"]);
    assert_eq!(out.code, Some(2), "{:?}", out.lines);
    assert!(
        out.lines
            .iter()
            .any(|l| l.contains("bad memory size `lots`")),
        "{:?}",
        out.lines
    );
}

#[test]
fn build_checks_the_limit_too() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        dir.path(),
        "expand.onnx",
        node("grow", "Expand", &["x", "s"], vec![]),
        x(&[1]),
        vec![ints("s", &[2], &[1 << 20, 1 << 20])],
        FLOAT,
    );
    let out = dir.path().join("m.o").display().to_string();
    assert_refused(
        &["build", &m, "--emit", "obj", "-o", &out],
        &["node `grow", LIMIT],
    );
}

#[test]
fn oversized_npz_headers_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let m = model(
        dir.path(),
        "id.onnx",
        node("same", "Identity", &["x"], vec![]),
        vec![value_info("x", FLOAT, None)],
        vec![],
        FLOAT,
    );
    // An .npz whose only array's header claims [2^20, 2^20] f32 but holds 16 bytes.
    let npz = dir.path().join("in.npz");
    let t = kiln::ir::Tensor::from_vec(vec![0f32; 4], &[4]).unwrap();
    kiln::npz::write_npz(&npz, &[("x".into(), t)]).unwrap();
    let mut bytes = std::fs::read(&npz).unwrap();
    let header = b"'shape': (4,)";
    let at = bytes
        .windows(header.len())
        .position(|w| w == header)
        .expect("the header is stored uncompressed");
    let huge = b"'shape': (1048576, 1048576)";
    // Same length keeps the zip offsets valid: pad the original header's spaces.
    let mut replaced = bytes[..at].to_vec();
    replaced.extend_from_slice(huge);
    let rest = &bytes[at + header.len()..];
    let spaces = huge.len() - header.len();
    let trimmed = rest.iter().position(|&b| b == b'\n').unwrap();
    assert!(rest[..trimmed]
        .iter()
        .rev()
        .take(spaces)
        .all(|&b| b == b' '));
    replaced.extend_from_slice(&rest[..trimmed - spaces]);
    replaced.extend_from_slice(&rest[trimmed..]);
    bytes = replaced;
    std::fs::write(&npz, &bytes).unwrap();
    let npz = npz.display().to_string();
    assert_refused(
        &["run", &m, "--inputs", &npz],
        &["array `x`", "[1048576, 1048576]", "holds"],
    );
}
