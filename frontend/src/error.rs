//! Import errors: every message is one line naming the file, and the node, op and opset
//! when a node is at fault.

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// A file could not be read; the user's environment is at fault.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a well-formed ONNX model; the model is at fault.
    #[error("{file}: {message}")]
    Model {
        /// The model file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor (initializer, constant, external data) is malformed or unreadable.
    #[error("{file}: tensor `{tensor}`: {message}")]
    Tensor {
        /// The model file.
        file: String,
        /// The tensor's name.
        tensor: String,
        /// What is wrong.
        message: String,
    },
    /// kiln does not support this op, or not at this opset.
    #[error("{file}: node `{node}` ({op}, opset {opset}): unsupported {message}")]
    Unsupported {
        /// The model file.
        file: String,
        /// The ONNX node name.
        node: String,
        /// The ONNX op type.
        op: String,
        /// The model's opset for the op's domain.
        opset: i64,
        /// What is unsupported.
        message: String,
    },
    /// A node is malformed (bad attribute, wrong input types); the model is at fault.
    #[error("{file}: node `{node}` ({op}, opset {opset}): {message}")]
    Node {
        /// The model file.
        file: String,
        /// The ONNX node name.
        node: String,
        /// The ONNX op type.
        op: String,
        /// The model's opset for the op's domain.
        opset: i64,
        /// What is wrong.
        message: String,
    },
    /// A shape operand (Reshape's shape, Slice's starts, TopK's k, …) comes from a graph
    /// input. Callers may retry with that input's value in `ImportOptions::known_inputs`.
    #[error("node `{node}` ({op}): shape operand depends on graph input `{input}`; its value must be known at import")]
    NeedsKnownInput {
        /// The graph input.
        input: String,
        /// The ONNX node name.
        node: String,
        /// The ONNX op type.
        op: String,
    },
}
