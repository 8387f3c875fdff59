//! Graph passes and the pass manager.
//!
//! A [`Pass`] rewrites a [`kiln_ir::Graph`] in place; the [`PassManager`] runs a named list
//! of them with timing, verification after each pass and `KILN_PASS_BISECT`. Passes:
//! `fold-constants`, `fold-shapes`, `cse`, `dce`, `fuse`, `merge-linears`, `quantize`
//! (not in the default pipeline: it changes what the model computes, so the user asks for it).

mod cse;
mod dce;
mod fold_constants;
mod fold_shapes;
mod fuse;
mod manager;
mod merge_linears;
mod quantize;
mod rewrite;
#[cfg(test)]
mod tests;

pub use cse::Cse;
pub use dce::Dce;
pub use fold_constants::{FoldConstants, MAX_FOLDED_ELEMENTS};
pub use fold_shapes::FoldShapes;
pub use fuse::{Budget, Expected, Fuse, FusedKernel, Miss};
pub use manager::{
    pass_by_name, Pass, PassError, PassManager, PassReport, PassRun, PipelineReport, RunOptions,
};
pub use merge_linears::MergeLinears;
pub use quantize::{Quantize, Scheme};
