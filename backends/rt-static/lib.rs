//! `libkiln_runtime.a`: kiln-rt and everything it needs in one archive, for linking
//! ahead-of-time artifacts from C or with `cc`. The C ABI (`kiln_rt_*`), the executables'
//! entry (`kiln_rt_main`) and the functions generated code imports (`kiln_sin_f32`, …) are
//! kiln-rt's unmangled exports; this crate only packages them.

pub use kiln_rt;
