//! kiln: a model compiler. ONNX (or kiln's text IR) in, a typed graph with symbolic shapes,
//! optimized by passes, run by the reference interpreter (native backends to come).
//!
//! This crate is the facade: [`Model`] loads, optimizes and runs a model; [`npz`] moves
//! tensors through numpy files; [`onnx_suite`] runs ONNX backend test cases. It is the only
//! kiln crate that knows about files the user hands in and the terminal's needs.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! let model = kiln::Model::load("tests/models/bert_tiny.onnx")?.optimize()?;
//! let inputs: BTreeMap<_, _> = kiln::npz::read_npz("tests/models/bert_tiny.inputs.npz".as_ref())?
//!     .into_iter()
//!     .collect();
//! for (name, tensor) in model.run(&inputs)? {
//!     println!("{name}: {:?}", tensor.shape());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
// The errors carry node names and step context by value; boxing them is still to do.
#![allow(clippy::result_large_err)]

pub mod accuracy;
mod bind;
pub mod build;
pub mod compare;
mod compiled;
pub mod decode;
pub mod draw;
mod error;
pub mod generate;
pub mod gpu;
mod model;
/// `.npy`/`.npz` files (the runtime's reader and writer, shared with compiled executables).
pub use kiln_rt::npz;
pub mod onnx_suite;
/// One-line output summaries (shared with compiled executables).
pub use kiln_rt::summary;

pub use compiled::{Backend, Compiled, Options};
pub use error::Error;
pub use kiln_cpu as cpu;
pub use kiln_cuda as cuda;
pub use kiln_frontend as frontend;
pub use kiln_ir as ir;
pub use kiln_kernel as kernel;
pub use kiln_passes as passes;
pub use model::{Model, ModelFormat};
