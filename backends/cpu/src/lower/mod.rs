//! Lowering of kernels to Cranelift IR.

pub mod math;
