//! Shape and type inference: the output types of an op from its input types.

use crate::{Op, TensorType};

/// Why an op cannot take the given input types.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{op}: {message}")]
pub struct InferError {
    /// The op's text-format name.
    pub op: String,
    /// What is wrong.
    pub message: String,
}

/// The output types of `op` applied to inputs of the given types.
pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, InferError> {
    let _ = inputs;
    Err(InferError {
        op: op.name(),
        message: "inference not written yet".into(),
    })
}
