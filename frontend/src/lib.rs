//! ONNX to kiln IR.

/// The ONNX protobuf types, generated from the vendored `onnx.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}
