//! The CPU runtime: the thread pool and the hand-written contraction kernels that compiled
//! code calls into (Cranelift vectors are 128 bits wide, so GEMM is native Rust).

pub mod gemm;
pub mod pool;
