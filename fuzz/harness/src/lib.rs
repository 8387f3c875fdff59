//! The logic of kiln's fuzz targets: one `run(data: &[u8])` per target, which returns
//! normally for any input kiln handles (an error included) and panics on a kiln bug.
//!
//! The libFuzzer binaries in `fuzz/fuzz_targets/` are one line each around these functions,
//! and `tests/replay.rs` runs every saved input (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`) through them on a plain `cargo test`, so CI replays every
//! crash ever found without libFuzzer.
#![allow(clippy::result_large_err, clippy::type_complexity)]

pub mod capi;
pub mod graph;
pub mod npz;
pub mod onnx;
pub mod parse;

/// Every target: its name (the folder names under `fuzz/corpus/`) and its entry point.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("onnx", onnx::run),
    ("graph", graph::run),
    ("parse", parse::run),
    ("npz", npz::run),
    ("capi", capi::run),
];
