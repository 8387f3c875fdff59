//! Running on an NVIDIA GPU (`Backend::Cuda`): finding the device, and what the backend
//! can do so far. The PTX emitter (`kiln_cuda::emit`) translates the kernel layer's own
//! kernels; the runtime that uploads weights and launches them through the driver is not
//! written yet, so a run stops here with a message that says so, after the device checks
//! a user needs first.

use crate::{Error, Model};
use kiln_cuda::device::{first_device, Device};
use kiln_ir::Tensor;
use std::collections::BTreeMap;

/// The device a CUDA run would use; one-line errors without a driver or a device.
pub fn device() -> Result<Device, Error> {
    Ok(first_device()?)
}

/// Runs `model` on the GPU, as [`Model::run`] does on the interpreter. Today it checks
/// the device, then the PTX backend's coverage of the model's kernels at free symbols,
/// and always ends in an error: why the model cannot run there, or that the runtime that
/// launches the kernels is the part not yet built.
pub fn run(
    model: &Model,
    _inputs: &BTreeMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>, Error> {
    let device = device()?;
    let program = kiln_cuda::program(model.graph(), &kiln_ir::Bindings::new())
        .map_err(|e| Error::Cuda(e.to_string()))?;
    kiln_cuda::emit(&program, kiln_cuda::Target::Sm80).map_err(|e| Error::Cuda(e.to_string()))?;
    Err(Error::Cuda(format!(
        "{} (sm_{}{}): the model's kernels compile to PTX, but the GPU runtime that launches \
         them is not built yet",
        device.name, device.capability.0, device.capability.1
    )))
}

/// A PTX artifact (`kiln build --emit ptx`): the module, a launch plan (JSON) saying how
/// to run it, and the constants' bytes the plan's offsets point into.
pub struct PtxArtifact {
    /// The module's text.
    pub ptx: String,
    /// The launch plan.
    pub plan: serde_json::Value,
    /// Every constant buffer's bytes, each at a 64-byte aligned offset the plan names.
    pub weights: Vec<u8>,
}

/// Schedules `model` (symbols in `fixed` bound, the rest left free) and writes it as PTX
/// for `target`. Fails, naming the kernel and node, when the model holds an operation the
/// PTX backend does not lower yet (the runtime calls: matmul, attention, convolution).
pub fn ptx_artifact(
    model: &Model,
    fixed: &kiln_ir::Bindings,
    target: kiln_cuda::Target,
) -> Result<PtxArtifact, Error> {
    use kiln_kernel::kernel::BufferKind;
    use serde_json::json;
    let program =
        kiln_cuda::program(model.graph(), fixed).map_err(|e| Error::Cuda(e.to_string()))?;
    let module = kiln_cuda::emit(&program, target).map_err(|e| Error::Cuda(e.to_string()))?;
    let mut weights = Vec::new();
    let buffers: Vec<serde_json::Value> = (program.buffers.iter().enumerate())
        .map(|(id, b)| {
            let kind = match &b.kind {
                BufferKind::Input(k) => json!({"input": k}),
                BufferKind::Const(t) => {
                    weights.resize(weights.len().next_multiple_of(64), 0);
                    let offset = weights.len();
                    weights.extend_from_slice(&t.to_le_bytes());
                    json!({"const": {"offset": offset, "bytes": weights.len() - offset}})
                }
                BufferKind::Temp => json!("temp"),
                BufferKind::Iota => json!("iota"),
            };
            json!({"id": id, "dtype": b.dtype.to_string(), "len": b.len.to_string(), "kind": kind})
        })
        .collect();
    let launches: Vec<serde_json::Value> = (module.launches.iter())
        .map(|l| {
            json!({
                "entry": l.entry, "kernel": l.kernel, "buffers": l.buffers, "status": l.status,
                "items": l.items.to_string(), "lanes": l.lanes, "serial": l.serial,
                "block": l.block,
            })
        })
        .collect();
    let conditions: Vec<String> = kiln_cuda::launch_conditions(model.graph(), &program)
        .iter()
        .map(|c| c.to_string())
        .collect();
    let plan = json!({
        "target": target.name(),
        "symbols": program.symbols,
        "parameters": "per entry: the listed buffers' device addresses (u64), then every symbol (s64), then the status word's address when status is true",
        "buffers": buffers,
        "outputs": program.outputs,
        "launches": launches,
        "conditions": conditions,
    });
    Ok(PtxArtifact {
        ptx: module.ptx,
        plan,
        weights,
    })
}
