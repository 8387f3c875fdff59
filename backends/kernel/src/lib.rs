//! kiln's kernel layer: an optimized graph becomes a backend-neutral description of
//! kernels that every code generator translates.
//!
//! - [`kernel`]: the description itself: buffers, loop nests, reductions, row kernels and
//!   runtime [`call`]s;
//! - [`schedule`]: one node becomes one or a few kernels;
//! - [`fuse_loops`]: a loop nest that feeds one kernel is inlined into it;
//! - [`plan`]: every temporary gets a place in one arena;
//! - [`stages`]: a graph with data-dependent sizes is cut around the ops that define them;
//! - [`cache`]: KV caches a decoder step appends to in place;
//! - [`axes`]: iteration spaces in canonical form;
//! - [`bounds`]: the reach of kernels' accesses that a binding must keep inside their buffers.
//!
//! Architecture invariant: this crate imports no code generator (Cranelift, PTX) and no
//! backend; backends import it (`tests/tidy.rs`).
#![warn(missing_docs)]

pub mod axes;
pub mod bounds;
pub mod cache;
pub mod call;
pub mod fuse_loops;
pub mod kernel;
pub mod plan;
pub mod schedule;
pub mod stages;
