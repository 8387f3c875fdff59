//! The CPU backend (Cranelift). Layout only: the CPU backend issue fills this crate.
pub mod runtime;
