//! kiln's CPU backend: a graph at concrete shapes is scheduled by the kernel layer
//! ([`kiln_kernel`]: kernels, loop fusion, one planned arena), the kernels are compiled to
//! machine code with Cranelift ([`lower`]) and run on a persistent worker pool
//! ([`runtime`]).
//! [`CompiledModel`] ties these together and caches one specialization per set of input
//! shapes.
//!
//! ```
//! use kiln_cpu::{CompiledModel, Options};
//! use kiln_ir::{parse, Tensor};
//! let g = parse(
//!     "graph @g(%x: f32[n]) -> f32[n] {
//!         %y = exp %x
//!         return %y
//!     }",
//! )
//! .unwrap();
//! let model = CompiledModel::new(g, &Options::default()).unwrap();
//! let x = Tensor::from_vec(vec![0.0f32, 1.0, 2.0], &[3]).unwrap();
//! let y = model.run(&[x]).unwrap();
//! assert!((y[0].to_f64_vec()[1] - std::f64::consts::E).abs() < 1e-6);
//! ```
#![warn(missing_docs)]

mod exec;
pub mod lower;
use kiln_kernel::{fuse_loops, kernel, plan, schedule, stages};
/// The runtime (its own crate, so ahead-of-time artifacts link it without the compiler).
pub use kiln_rt as runtime;

pub use exec::{
    kernel_extents, lay_out, lay_out_with, lower_error, symbolic, CompileError, CompiledModel,
    KernelTime, Layout, Options, RunError, Specialized,
};

/// Whether `graph` has data-dependent output sizes (NonZero), so that it runs as stages
/// around those ops (see `stages.rs`) and cannot be laid out at one binding of its symbols.
pub fn needs_stages(graph: &kiln_ir::Graph) -> bool {
    stages::split(graph).is_some()
}
