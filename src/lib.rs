//! kiln: a model compiler.
pub use kiln_frontend as frontend;
pub use kiln_ir as ir;
pub use kiln_passes as passes;
