//! Import errors on small models built with prost: malformed bytes, unknown ops, opsets,
//! external data that escapes the model's folder, and shape operands fed by inputs.

mod common;
use common::value_info;

use kiln_frontend::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto,
};
use kiln_frontend::{load_model, load_model_bytes, FrontendError, ImportOptions};
use kiln_ir::{Dim, Tensor};
use prost::Message;
use std::path::Path;

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        name: Some(format!("n_{op}")),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// `y = op(x, w)` with `x: f32[batch, 4]` and initializer `w`.
fn model(op: &str, opset: i64, w: TensorProto) -> ModelProto {
    let graph = GraphProto {
        name: Some("g".into()),
        node: vec![node(op, &["x", "w"], &["y"])],
        initializer: vec![w],
        input: vec![value_info("x", 1, &[Err("batch"), Ok(4)])],
        output: vec![value_info("y", 1, &[])],
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

fn inline_w() -> TensorProto {
    TensorProto {
        name: Some("w".into()),
        dims: vec![4],
        data_type: Some(1),
        float_data: vec![1.0, 2.0, 3.0, 4.0],
        ..Default::default()
    }
}

fn external_w(location: &str) -> TensorProto {
    let kv = |k: &str, v: &str| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    TensorProto {
        name: Some("w".into()),
        dims: vec![4],
        data_type: Some(1),
        data_location: Some(1),
        external_data: vec![
            kv("location", location),
            kv("offset", "0"),
            kv("length", "16"),
        ],
        ..Default::default()
    }
}

fn import(m: &ModelProto) -> Result<kiln_ir::Graph, FrontendError> {
    load_model_bytes(&m.encode_to_vec(), None, &ImportOptions::default())
}

/// Writes the model into `dir` and imports it from there.
fn import_in(dir: &Path, m: &ModelProto) -> Result<kiln_ir::Graph, FrontendError> {
    let path = dir.join("model.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    load_model(&path, &ImportOptions::default())
}

#[test]
fn a_small_model_imports_with_symbolic_batch() {
    let g = import(&model("Add", 17, inline_w())).unwrap();
    assert_eq!(g.value_type(g.outputs[0].1).to_string(), "f32[batch, 4]");
    let opts = ImportOptions {
        dims: [("batch".to_string(), 3)].into(),
        ..Default::default()
    };
    let g = load_model_bytes(&model("Add", 17, inline_w()).encode_to_vec(), None, &opts).unwrap();
    assert_eq!(
        g.value_type(g.outputs[0].1).shape,
        vec![Dim::from(3i64), Dim::from(4i64)]
    );
}

#[test]
fn truncated_and_random_bytes_are_errors() {
    let bytes = model("Add", 17, inline_w()).encode_to_vec();
    let err =
        load_model_bytes(&bytes[..bytes.len() / 2], None, &ImportOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("<model bytes>: not a valid ONNX model"),
        "{err}"
    );
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let err = load_model_bytes(&random, None, &ImportOptions::default()).unwrap_err();
    assert!(matches!(err, FrontendError::Model { .. }), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.onnx");
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let err = load_model(&path, &ImportOptions::default()).unwrap_err();
    assert!(err.to_string().contains("cut.onnx"), "{err}");
}

#[test]
fn unknown_op_names_node_op_and_opset() {
    let err = import(&model("FrobnicateX", 17, inline_w())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "<model bytes>: node `n_FrobnicateX` (FrobnicateX, opset 17): unsupported op"
    );
}

#[test]
fn op_below_its_supported_opset_is_an_error() {
    let err = import(&model("Add", 5, inline_w())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "<model bytes>: node `n_Add` (Add, opset 5): unsupported opset version (supported: 7+)"
    );
}

#[test]
fn external_data_inside_the_folder_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("w.bin"), bytes).unwrap();
    let g = import_in(dir.path(), &model("Add", 17, external_w("w.bin"))).unwrap();
    let c = g.nodes.iter().find_map(|n| match &n.op {
        kiln_ir::Op::Const(t) => Some(t.clone()),
        _ => None,
    });
    assert_eq!(
        c,
        Some(Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[4]).unwrap())
    );
}

/// `y = Gather(table, ids)` with `table: f32[rows, 4]` in external file `t.bin` at `offset`.
fn gather_external(rows: usize, offset: usize) -> ModelProto {
    let kv = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    let table = TensorProto {
        name: Some("table".into()),
        dims: vec![rows as i64, 4],
        data_type: Some(1),
        data_location: Some(1),
        external_data: vec![
            kv("location", "t.bin".into()),
            kv("offset", offset.to_string()),
            kv("length", (rows * 16).to_string()),
        ],
        ..Default::default()
    };
    let graph = GraphProto {
        name: Some("g".into()),
        node: vec![node("Gather", &["table", "ids"], &["y"])],
        initializer: vec![table],
        input: vec![value_info("ids", 7, &[Err("seq")])],
        output: vec![value_info("y", 1, &[])],
        ..Default::default()
    };
    ModelProto {
        graph: Some(graph),
        ..model("Add", 17, inline_w())
    }
}

#[test]
fn a_large_external_tensor_is_read_in_place_from_its_file_when_aligned() {
    let rows = 70_000; // 1.1 MB, over the size that is mapped rather than read
    let values: Vec<f32> = (0..rows * 4).map(|i| i as f32 * 0.5).collect();
    let expected = Tensor::from_vec(values.clone(), &[rows, 4]).unwrap();
    for (offset, borrowed) in [(0, true), (8, true), (2, false)] {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![0xAAu8; offset];
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        std::fs::write(dir.path().join("t.bin"), bytes).unwrap();
        let g = import_in(dir.path(), &gather_external(rows, offset)).unwrap();
        let table = g.nodes.iter().find_map(|n| match &n.op {
            kiln_ir::Op::Const(t) if t.len() > 4 => Some(t.clone()),
            _ => None,
        });
        let table = table.expect("the table is a constant");
        assert_eq!(table, expected, "offset {offset}");
        // Misaligned f32 elements cannot be read in place; they are copied instead.
        assert_eq!(table.is_borrowed(), borrowed, "offset {offset}");
    }
}

#[test]
fn a_large_inline_tensor_is_read_in_place_from_the_mapped_model_when_aligned() {
    let rows = 70_000;
    let values: Vec<f32> = (0..rows * 4).map(|i| i as f32 * 0.25).collect();
    let expected = Tensor::from_vec(values.clone(), &[rows, 4]).unwrap();
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut seen = [false; 2];
    // A doc string of 0..4 bytes moves the table's bytes across every alignment.
    for pad in 0..4 {
        let mut m = gather_external(rows, 0);
        m.doc_string = Some("d".repeat(pad));
        let table = &mut m.graph.as_mut().unwrap().initializer[0];
        table.data_location = None;
        table.external_data.clear();
        table.raw_data = Some(raw.clone().into());
        let bytes = m.encode_to_vec();
        let at = bytes.windows(64).position(|w| w == &raw[..64]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let g = import_in(dir.path(), &m).unwrap();
        let table = g.nodes.iter().find_map(|n| match &n.op {
            kiln_ir::Op::Const(t) if t.len() > 4 => Some(t.clone()),
            _ => None,
        });
        let table = table.expect("the table is a constant");
        assert_eq!(table, expected, "pad {pad}");
        // The map starts on a page, so the file offset decides the alignment.
        assert_eq!(table.is_borrowed(), at % 4 == 0, "pad {pad}, offset {at}");
        seen[usize::from(table.is_borrowed())] = true;
    }
    assert_eq!(
        seen,
        [true, true],
        "both an aligned and a misaligned layout were tried"
    );
}

#[test]
fn external_data_outside_the_folder_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let inner = root.path().join("model");
    std::fs::create_dir(&inner).unwrap();
    std::fs::write(root.path().join("outside"), [0u8; 16]).unwrap();
    let err = import_in(&inner, &model("Add", 17, external_w("../outside"))).unwrap_err();
    assert!(
        err.to_string()
            .contains("tensor `w`: external data location `../outside` escapes the model's folder"),
        "{err}"
    );
    let abs = root.path().join("outside").display().to_string();
    let err = import_in(&inner, &model("Add", 17, external_w(&abs))).unwrap_err();
    assert!(err.to_string().contains("is absolute"), "{err}");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.path().join("outside"), inner.join("link.bin")).unwrap();
        let err = import_in(&inner, &model("Add", 17, external_w("link.bin"))).unwrap_err();
        assert!(
            err.to_string()
                .contains("resolves outside the model's folder"),
            "{err}"
        );
    }
}

#[test]
fn missing_or_short_external_data_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = import_in(dir.path(), &model("Add", 17, external_w("nope.bin"))).unwrap_err();
    assert!(
        matches!(&err, FrontendError::Tensor { tensor, .. } if tensor == "w"),
        "{err}"
    );
    assert!(err.to_string().contains("nope.bin"), "{err}");
    std::fs::write(dir.path().join("short.bin"), [0u8; 8]).unwrap();
    let err = import_in(dir.path(), &model("Add", 17, external_w("short.bin"))).unwrap_err();
    assert!(err.to_string().contains("out of bounds"), "{err}");
    let err = import(&model("Add", 17, external_w("w.bin"))).unwrap_err();
    assert!(
        err.to_string().contains("needs the model's folder"),
        "{err}"
    );
}

#[test]
fn shape_operand_from_an_input_asks_for_its_value() {
    let mut m = model("Reshape", 17, inline_w());
    let g = m.graph.as_mut().unwrap();
    g.initializer.clear();
    g.input.push(value_info("w", 7, &[Ok(1)]));
    let err = import(&m).unwrap_err();
    assert!(
        matches!(&err, FrontendError::NeedsKnownInput { input, node, op } if input == "w" && node == "n_Reshape" && op == "Reshape"),
        "{err}"
    );
    let opts = ImportOptions {
        known_inputs: [(
            "w".to_string(),
            Tensor::from_vec(vec![-1i64], &[1]).unwrap(),
        )]
        .into(),
        ..Default::default()
    };
    let g = load_model_bytes(&m.encode_to_vec(), None, &opts).unwrap();
    assert_eq!(g.value_type(g.outputs[0].1).to_string(), "f32[4*batch]");
}

#[test]
fn bad_attribute_is_a_node_error() {
    let mut m = model("Softmax", 17, inline_w());
    let n = &mut m.graph.as_mut().unwrap().node[0];
    n.input.truncate(1);
    n.attribute.push(AttributeProto {
        name: Some("axis".into()),
        i: Some(5),
        r#type: Some(2),
        ..Default::default()
    });
    let err = import(&m).unwrap_err();
    assert_eq!(
        err.to_string(),
        "<model bytes>: node `n_Softmax` (Softmax, opset 17): axis 5 is out of range for rank 2"
    );
}
