//! The facade's error: one enum over every stage, each message one line naming what is wrong.

use std::path::PathBuf;

/// Why loading, optimizing or running a model failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's extension names no format kiln reads; the user can rename or convert it.
    #[error("{}: unknown model format (expected a .onnx or .kir file)", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The ONNX model could not be imported (the message names file, node, op and opset).
    #[error(transparent)]
    Frontend(#[from] kiln_frontend::FrontendError),
    /// The text IR could not be parsed.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error with its line.
        source: kiln_ir::ParseError,
    },
    /// The graph breaks an IR invariant: the model file is inconsistent, or a kiln bug.
    #[error("{}: invalid graph: {source}", path.display())]
    Verify {
        /// The file.
        path: PathBuf,
        /// The broken invariant.
        source: kiln_ir::VerifyError,
    },
    /// A pass failed: a kiln bug unless the message says otherwise.
    #[error(transparent)]
    Pass(#[from] kiln_passes::PassError),
    /// The interpreter rejected the inputs or failed on an op.
    #[error(transparent)]
    Interp(#[from] kiln_ir::interp::InterpError),
    /// The CPU backend could not compile the graph (names the node and op).
    #[error(transparent)]
    Compile(#[from] kiln_cpu::CompileError),
    /// The compiled model rejected the inputs or failed in a runtime call.
    #[error(transparent)]
    Run(#[from] kiln_cpu::RunError),
    /// No GPU can be used (no driver, no device, or a driver error).
    #[error(transparent)]
    Device(#[from] kiln_cuda::device::DeviceError),
    /// The model cannot run on the GPU (yet): names the kernel, or what is missing.
    #[error("cuda backend: {0}")]
    Cuda(String),
    /// A numpy file could not be read or written.
    #[error(transparent)]
    Npy(#[from] crate::npz::NpyError),
    /// An input is missing, unknown, or of the wrong type; the caller can fix it.
    #[error("input `{name}`: {message}")]
    Input {
        /// The input's name.
        name: String,
        /// What is wrong with it.
        message: String,
    },
}
