//! ONNX to kiln IR.
//!
//! [`load_model`] decodes an ONNX model and lowers every node into kiln's core ops
//! (DESIGN decision 1), folding shape computations into symbolic dims on the way
//! (decision 2). One file per ONNX op family lives under `ops/`; each registers its ops
//! with the opset versions it supports. Errors are values that name the file, node, op
//! and opset; nothing outside the model's folder is ever read.
#![warn(missing_docs)]

mod cx;
mod dim_param;
mod error;
mod export;
mod import;
mod mapped;
mod node;
mod ops;
mod quant_rules;
mod registry;
mod tensor;
mod validate;

/// The ONNX protobuf types, generated from the vendored `onnx.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

pub use error::FrontendError;
pub use export::{export_onnx, KILN_DOMAIN};
pub use registry::{supported_ops, OpSupport};

use kiln_ir::{Graph, Tensor};
use prost::Message;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Options for importing a model.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Graph inputs whose values are fixed at import. They become constants and are not
    /// inputs of the imported graph (this is how a shape operand fed by an input is handled).
    pub known_inputs: BTreeMap<String, Tensor>,
    /// Values for symbolic dims (`dim_param` names, as written or sanitized).
    pub dims: BTreeMap<String, i64>,
}

/// Imports the ONNX model at `path`; external data is read relative to its folder.
pub fn load_model(path: &Path, opts: &ImportOptions) -> Result<Graph, FrontendError> {
    load_model_with_stats(path, opts).map(|(g, _)| g)
}

/// How long each stage of [`load_model_with_stats`] took.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoadStats {
    /// Opening the model file (mapping it, or reading it when small).
    pub read: Duration,
    /// Protobuf decoding.
    pub decode: Duration,
    /// Lowering to IR, including external data mapping and shape folding.
    pub import: Duration,
}

/// [`load_model`], also reporting how long reading, decoding and importing took.
pub fn load_model_with_stats(
    path: &Path,
    opts: &ImportOptions,
) -> Result<(Graph, LoadStats), FrontendError> {
    let file = path.display().to_string();
    let start = Instant::now();
    let (bytes, map) = mapped::open_model(path).map_err(|source| FrontendError::Io {
        path: file.clone(),
        source,
    })?;
    let read = start.elapsed();
    let start = Instant::now();
    let model = import::decode(bytes, &file)?;
    let decode = start.elapsed();
    let start = Instant::now();
    let source = tensor::DataSource::new(Some(model_folder(path))).with_model_map(map);
    let graph = import::import(&model, source, &file, opts)?;
    let stats = LoadStats {
        read,
        decode,
        import: start.elapsed(),
    };
    Ok((graph, stats))
}

/// The folder holding `path`: `.` for a bare file name, whose `parent()` is empty.
fn model_folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Imports a serialized ONNX model; external data, if any, is read relative to `base_dir`.
pub fn load_model_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Graph, FrontendError> {
    let model = import::decode(bytes, "<model bytes>")?;
    let source = tensor::DataSource::new(base_dir);
    import::import(&model, source, "<model bytes>", opts)
}

/// Reads a serialized `TensorProto` (as in ONNX test data), returning its name and value.
pub fn read_tensor_pb(path: &Path) -> Result<(String, Tensor), FrontendError> {
    let bytes = read(path)?;
    let file = path.display().to_string();
    let t = proto::TensorProto::decode(bytes.as_slice()).map_err(|e| FrontendError::Model {
        file: file.clone(),
        message: format!("not a valid TensorProto: {e}"),
    })?;
    let mut ext = tensor::DataSource::new(Some(model_folder(path)));
    let tensor =
        tensor::tensor_from_proto(&t, &mut ext).map_err(|message| FrontendError::Tensor {
            file,
            tensor: t.name().to_string(),
            message,
        })?;
    Ok((t.name().to_string(), tensor))
}

fn read(path: &Path) -> Result<Vec<u8>, FrontendError> {
    std::fs::read(path).map_err(|source| FrontendError::Io {
        path: path.display().to_string(),
        source,
    })
}
