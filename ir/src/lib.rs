//! kiln's typed IR.
//!
//! A [`Graph`] holds values typed by [`TensorType`] (a [`DType`] and a shape of symbolic
//! [`Dim`]s) and [`Node`]s drawn from one closed op set, [`Op`]. The crate also owns what
//! every later stage relies on: shape and type inference ([`infer`]), the verifier
//! ([`verify()`]), the text format ([`print`], [`parse`]) and the reference interpreter
//! ([`interp`]), which defines what every op means.
#![warn(missing_docs)]

mod assume;
mod dim;
mod dtype;
mod epilogue;
mod graph;
mod infer;
pub mod interp;
mod limit;
mod op;
mod quant;
pub mod shape_eval;
mod tensor;
mod text;
mod verify;

pub use assume::{assumptions, Assumption, Condition};
pub use dim::{Atom, Bindings, Dim, DimParseError};
pub use dtype::{DType, UnknownDType};
pub use epilogue::{Activation, Epilogue, Residual};
pub use graph::{Graph, Node, TensorType, ValueId};
pub use half;
pub use infer::{infer, input_arity, Arity, InferError};
pub use limit::{
    check_bytes, check_graph, check_node, check_tensor, concrete_shape, human_bytes, tensor_bytes,
    BadMemorySize, MemoryLimit, SizeError,
};
pub use op::{
    ArgKind, AttentionAttrs, AttentionMask, BinaryOp, ConvAttrs, ConvTransposeAttrs, EinsumSpec,
    MaskedRows, Op, PadMode, PoolAttrs, PoolKind, ReduceKind, ScanKind, ScatterReduction,
    SliceAxis, UnaryOp,
};
pub use quant::{
    dynamic_u8, min_max, quantize_linear, round_half_even, ActQuant, Block, QuantAttrs,
    WeightQuant, MAX_INT8_K, MAX_QUANTIZED_K,
};
pub use tensor::{
    bf16_from_f64, f16_from_f64, ArcArrayD, Elem, StableBytes, Store, Tensor, TensorError,
    Unwritten,
};
pub use text::{
    op_attributes, parse, parse_tensor, parse_with_lines, print, print_tensor, ParseError,
};
pub use verify::{verify, VerifyError};
