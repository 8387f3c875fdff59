//! One ONNX node as handlers see it: its inputs as values, its attributes by name, and an
//! error context naming file, node, op and opset.

use crate::cx::{Val, R};
use crate::proto::{AttributeProto, NodeProto, TensorProto};
use crate::FrontendError;

/// Where an error happened: file, node, op and opset.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub(crate) file: String,
    pub(crate) node: String,
    pub(crate) op: String,
    pub(crate) opset: i64,
}

impl Ctx {
    /// A malformed-node error.
    pub(crate) fn err(&self, message: impl Into<String>) -> FrontendError {
        FrontendError::Node {
            file: self.file.clone(),
            node: self.node.clone(),
            op: self.op.clone(),
            opset: self.opset,
            message: message.into(),
        }
    }

    /// An unsupported-feature error.
    pub(crate) fn unsupported(&self, message: impl Into<String>) -> FrontendError {
        FrontendError::Unsupported {
            file: self.file.clone(),
            node: self.node.clone(),
            op: self.op.clone(),
            opset: self.opset,
            message: message.into(),
        }
    }

    /// Normalizes a possibly negative axis against `rank`.
    pub(crate) fn axis(&self, axis: i64, rank: usize) -> R<usize> {
        let r = rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if (0..r).contains(&a) {
            Ok(a as usize)
        } else {
            Err(self.err(format!("axis {axis} is out of range for rank {rank}")))
        }
    }
}

/// A node being imported.
pub(crate) struct N<'p> {
    pub(crate) proto: &'p NodeProto,
    pub(crate) ctx: Ctx,
    /// One entry per ONNX input; `None` for an omitted optional input.
    pub(crate) inputs: Vec<Option<Val>>,
}

impl<'p> N<'p> {
    /// A required input.
    pub(crate) fn input(&self, i: usize) -> R<&Val> {
        self.opt(i)
            .ok_or_else(|| self.ctx.err(format!("input {i} is missing")))
    }

    /// An optional input.
    pub(crate) fn opt(&self, i: usize) -> Option<&Val> {
        self.inputs.get(i).and_then(Option::as_ref)
    }

    /// All present inputs.
    pub(crate) fn all_inputs(&self) -> Vec<&Val> {
        self.inputs.iter().flatten().collect()
    }

    /// How many outputs the node declares (trailing empty names count).
    pub(crate) fn n_outputs(&self) -> usize {
        self.proto.output.len()
    }

    /// True if output `i` is named (used by the graph).
    pub(crate) fn wants_output(&self, i: usize) -> bool {
        self.proto.output.get(i).is_some_and(|s| !s.is_empty())
    }

    /// The attribute named `name`.
    pub(crate) fn attr(&self, name: &str) -> Option<&'p AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name() == name)
    }

    /// An integer attribute with a default.
    pub(crate) fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).and_then(|a| a.i).unwrap_or(default)
    }

    /// An integer attribute that must be present.
    pub(crate) fn req_int(&self, name: &str) -> R<i64> {
        self.attr(name)
            .and_then(|a| a.i)
            .ok_or_else(|| self.ctx.err(format!("attribute `{name}` is required")))
    }

    /// A float attribute with a default.
    pub(crate) fn float(&self, name: &str, default: f32) -> f32 {
        self.attr(name).and_then(|a| a.f).unwrap_or(default)
    }

    /// An integer-list attribute, if present.
    pub(crate) fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    /// A float-list attribute, if present.
    pub(crate) fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.attr(name).map(|a| a.floats.clone())
    }

    /// A string attribute with a default.
    pub(crate) fn string(&self, name: &str, default: &str) -> String {
        self.attr(name)
            .and_then(|a| a.s.as_ref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_else(|| default.to_string())
    }

    /// A tensor attribute, if present.
    pub(crate) fn tensor(&self, name: &str) -> Option<&'p TensorProto> {
        self.attr(name).and_then(|a| a.t.as_ref())
    }
}
