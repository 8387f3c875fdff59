//! What the integration tests share: running the `kiln` binary and judging how it failed,
//! the runtime library that built executables link, and small builders of ONNX models.
//! Each test binary uses a part of it.
#![allow(dead_code)]

use kiln::frontend::proto::{
    attribute_proto, tensor_shape_proto, type_proto, AttributeProto, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A model vendored in `tests/models`.
pub fn vendored(name: &str) -> String {
    root().join("tests/models").join(name).display().to_string()
}

/// How a process ended: its exit code (`None` when a signal killed it) and its non-empty
/// stderr lines.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub lines: Vec<String>,
    pub stdout: String,
}

/// Runs `program` with `args`.
pub fn run(program: &Path, args: &[&str]) -> Outcome {
    outcome(Command::new(program).args(args))
}

/// Runs a prepared command.
pub fn outcome(command: &mut Command) -> Outcome {
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    Outcome {
        code: out.status.code(),
        lines: (stderr.lines())
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    }
}

/// Runs the `kiln` binary.
pub fn kiln(args: &[&str]) -> Outcome {
    run(Path::new(env!("CARGO_BIN_EXE_kiln")), args)
}

/// Asserts a refusal: exit code 1 (never 0, a panic's 101, an abort's 134 or a signal) and
/// one stderr line holding every needle; returns the line. `what` names the run.
pub fn assert_refusal(what: &str, out: &Outcome, needles: &[&str]) -> String {
    assert_eq!(
        out.code,
        Some(1),
        "{what} exited {:?}; stderr: {:?}",
        out.code,
        out.lines
    );
    assert_eq!(
        out.lines.len(),
        1,
        "{what}: expected one line, got {:?}",
        out.lines
    );
    for needle in needles {
        assert!(
            out.lines[0].contains(needle),
            "{what}: `{needle}` missing from: {}",
            out.lines[0]
        );
    }
    out.lines[0].clone()
}

/// `kiln ARGS` is refused (see [`assert_refusal`]).
pub fn assert_refused(args: &[&str], needles: &[&str]) -> String {
    assert_refusal(&format!("kiln {args:?}"), &kiln(args), needles)
}

/// `libkiln_runtime.a`, built once per test binary into `target/kiln-rt` (release, so the
/// executables the tests build run at their real speed).
pub fn runtime_library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| static_library("kiln-rt-static", "libkiln_runtime.a"))
}

/// `libkiln_cuda_runtime.a`, which `--device cuda` executables link, built as
/// [`runtime_library`] is.
#[allow(dead_code)]
pub fn cuda_runtime_library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| static_library("kiln-cuda-rt-static", "libkiln_cuda_runtime.a"))
}

/// Builds `package` (release) into `target/kiln-rt`; the path of its archive `file`.
fn static_library(package: &str, file: &str) -> PathBuf {
    let target = root().join("target/kiln-rt");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", package, "--target-dir"])
        .arg(&target)
        .current_dir(root())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {file} failed");
    target.join("release").join(file)
}

// ONNX builders.

/// A tensor value: `shape` `None` leaves the shape undeclared.
pub fn value_info(name: &str, elem: i32, shape: Option<&[i64]>) -> ValueInfoProto {
    let shape = shape.map(|s| TensorShapeProto {
        dim: s
            .iter()
            .map(|&d| tensor_shape_proto::Dimension {
                value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                ..Default::default()
            })
            .collect(),
    });
    let tensor = type_proto::Tensor {
        elem_type: Some(elem),
        shape,
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An f32 value of a declared shape.
pub fn f32_value(name: &str, shape: &[i64]) -> ValueInfoProto {
    value_info(name, FLOAT, Some(shape))
}

/// A value whose every dim is the symbol of that name.
pub fn symbolic_value(name: &str, elem: i32, dims: &[&str]) -> ValueInfoProto {
    let mut v = value_info(name, elem, Some(&vec![1; dims.len()]));
    if let Some(type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        for (d, p) in t.shape.as_mut().unwrap().dim.iter_mut().zip(dims) {
            d.value = Some(tensor_shape_proto::dimension::Value::DimParam(
                p.to_string(),
            ));
        }
    }
    v
}

/// An i64 value of a declared shape.
pub fn i64_value(name: &str, shape: &[i64]) -> ValueInfoProto {
    value_info(name, INT64, Some(shape))
}

/// An i64 initializer.
pub fn ints(name: &str, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(INT64),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// An f32 initializer.
pub fn floats(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(FLOAT),
        float_data: values.to_vec(),
        ..Default::default()
    }
}

/// An ints attribute.
pub fn ints_attr(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(attribute_proto::AttributeType::Ints as i32),
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// A node with named outputs.
pub fn node_to(name: &str, op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A node whose one output is `y`.
pub fn node(name: &str, op: &str, inputs: &[&str]) -> NodeProto {
    node_to(name, op, inputs, &["y"])
}

/// A node whose one output is `y`, with attributes.
pub fn node_with(name: &str, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        attribute: attrs,
        ..node(name, op, inputs)
    }
}

/// A model of the default domain at `opset`.
pub struct Onnx {
    pub opset: i64,
    pub nodes: Vec<NodeProto>,
    pub inputs: Vec<ValueInfoProto>,
    pub initializers: Vec<TensorProto>,
    pub outputs: Vec<ValueInfoProto>,
}

impl Onnx {
    /// Opset 18, `nodes` over `inputs`, one output `y` of element type `out_elem` whose
    /// shape is not declared.
    pub fn new(nodes: Vec<NodeProto>, inputs: Vec<ValueInfoProto>, out_elem: i32) -> Onnx {
        Onnx {
            opset: 18,
            nodes,
            inputs,
            initializers: Vec::new(),
            outputs: vec![value_info("y", out_elem, None)],
        }
    }

    /// The same model with initializers.
    pub fn with(mut self, initializers: Vec<TensorProto>) -> Onnx {
        self.initializers = initializers;
        self
    }

    /// The serialized model.
    pub fn bytes(self) -> Vec<u8> {
        let graph = GraphProto {
            name: Some("g".into()),
            node: self.nodes,
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        };
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(self.opset),
            }],
            graph: Some(graph),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// Writes the model to `dir/file`; returns its path.
    pub fn write(self, dir: &Path, file: &str) -> String {
        let path = dir.join(file);
        std::fs::write(&path, self.bytes()).unwrap();
        path.display().to_string()
    }
}

/// The dims of `model` at the shapes of `inputs` (for building it at a fixed shape).
pub fn dims_of(model: &Path, inputs: &[(String, kiln::ir::Tensor)]) -> Vec<(String, i64)> {
    let m = kiln::Model::load(model).unwrap();
    let g = m.graph();
    let types: Vec<kiln::ir::TensorType> = (g.inputs.iter())
        .map(|(name, _)| {
            let t = &inputs.iter().find(|(n, _)| n == name).unwrap().1;
            kiln::ir::TensorType::fixed(t.dtype(), t.shape())
        })
        .collect();
    kiln::ir::interp::bind_input_types(g, &types)
        .unwrap()
        .into_iter()
        .collect()
}

/// The vendored models in `tests/models`; `_qdyn` is onnxruntime's `quantize_dynamic` file,
/// `_int4` its `MatMulNBits` quantizer's, the others are f32.
pub const MODELS: [&str; 12] = [
    "bert_tiny",
    "bert_tiny_int4",
    "bert_tiny_ts",
    "bert_tiny_ts_qdq",
    "bert_tiny_ts_qdyn",
    "gpt2_tiny",
    "gpt2_tiny_ts",
    "llama_tiny",
    "llama_tiny_int4",
    "llama_tiny_ts",
    "vit_tiny",
    "vit_tiny_ts",
];
