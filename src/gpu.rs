//! Running on an NVIDIA GPU (`Backend::Cuda`): finding the device, and a model loaded on
//! it ([`GpuModel`]): the PTX module (`kiln_cuda::emit_with`) run by the backend's runtime
//! session over the CUDA driver. Without a driver or a device, every entry point fails
//! with a one-line error.

use crate::{Error, Model};
use kiln_cuda::device::{first_device, Device};
use kiln_cuda::runtime::{driver::Driver, staged::StagedSession, Gpu, Session};
use kiln_cuda::{Options, Precision, Target};
use kiln_ir::Tensor;
use std::collections::BTreeMap;

/// The device a CUDA run would use; one-line errors without a driver or a device.
pub fn device() -> Result<Device, Error> {
    Ok(first_device()?)
}

/// A model loaded on a GPU (the CUDA driver's first device unless another [`Gpu`] is
/// given): compiled once with every symbol free, weights uploaded once; each run binds
/// the symbols from its inputs' shapes. A graph with data-dependent sizes (`NonZero`)
/// runs as stages (`kiln_cuda::staged`).
pub struct GpuModel<G: Gpu = Driver> {
    model: Model,
    session: Loaded<G>,
}

/// One module, or a module of stages.
enum Loaded<G: Gpu> {
    Whole(Box<Session<G>>),
    Staged(StagedSession<G>),
}

impl<G: Gpu> GpuModel<G> {
    /// Compiles `model` to PTX for `options` and loads it on `gpu`.
    pub fn with_gpu(model: &Model, options: Options, gpu: G) -> Result<GpuModel<G>, Error> {
        let cuda = |e: String| Error::Cuda(e);
        let graph = model.graph();
        let session = match kiln_cuda::staged::staged_module(graph, options) {
            Some(module) => {
                let module = module.map_err(|e| cuda(e.to_string()))?;
                let staged = StagedSession::new(gpu, graph, module);
                Loaded::Staged(staged.map_err(|e| cuda(e.to_string()))?)
            }
            None => {
                let program = kiln_cuda::program(graph, &kiln_ir::Bindings::new())
                    .map_err(|e| cuda(e.to_string()))?;
                let module =
                    kiln_cuda::emit_with(&program, options).map_err(|e| cuda(e.to_string()))?;
                let whole = Session::new(gpu, graph, program, module);
                Loaded::Whole(Box::new(whole.map_err(|e| cuda(e.to_string()))?))
            }
        };
        Ok(GpuModel {
            model: model.clone(),
            session,
        })
    }

    /// The device.
    pub fn gpu(&self) -> &G {
        match &self.session {
            Loaded::Whole(s) => s.gpu(),
            Loaded::Staged(s) => s.gpu(),
        }
    }

    /// Runs it, as [`Model::run`] does on the interpreter.
    pub fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Vec<(String, Tensor)>, Error> {
        let ordered = self.model.ordered_inputs(inputs)?;
        let outputs = match &mut self.session {
            Loaded::Whole(s) => s.run(&ordered),
            Loaded::Staged(s) => s.run(&ordered),
        };
        let outputs = outputs.map_err(|e| Error::Cuda(e.to_string()))?;
        let names = self.model.graph().outputs.iter().map(|(n, _)| n.clone());
        Ok(names.zip(outputs).collect())
    }
}

impl GpuModel<Driver> {
    /// Compiles `model` to PTX (matrix products in `precision`) and loads it on the
    /// first device.
    pub fn new(model: &Model, precision: Precision) -> Result<GpuModel, Error> {
        let cuda = |e: String| Error::Cuda(e);
        let driver = Driver::new().map_err(|e| cuda(e.to_string()))?;
        let target = match driver.device.capability {
            (major, _) if major >= 9 => Target::Sm90,
            (8, _) => Target::Sm80,
            (major, minor) => {
                return Err(cuda(format!(
                    "{} is sm_{major}{minor}; kiln's PTX needs sm_80 or newer",
                    driver.device.name
                )))
            }
        };
        GpuModel::with_gpu(model, Options { target, precision }, driver)
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.gpu().device
    }
}

/// Runs `model` once on the GPU (compile, load, run), matrix products in the default
/// precision.
pub fn run(
    model: &Model,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>, Error> {
    GpuModel::new(model, Precision::default())?.run(inputs)
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
/// as `options` say. Fails, naming the kernel and node, when the model holds an operation
/// the PTX backend does not lower yet (quantized linear layers, reference-kernel ops).
pub fn ptx_artifact(
    model: &Model,
    fixed: &kiln_ir::Bindings,
    options: Options,
) -> Result<PtxArtifact, Error> {
    let target = options.target;
    use kiln_kernel::kernel::BufferKind;
    use serde_json::json;
    let program =
        kiln_cuda::program(model.graph(), fixed).map_err(|e| Error::Cuda(e.to_string()))?;
    let module = kiln_cuda::emit_with(&program, options).map_err(|e| Error::Cuda(e.to_string()))?;
    let (offsets, weights) = kiln_cuda::runtime::constant_layout(&program);
    let buffers: Vec<serde_json::Value> = (program.buffers.iter().enumerate())
        .map(|(id, b)| {
            let kind = match &b.kind {
                BufferKind::Input(k) => json!({"input": k}),
                BufferKind::Const(t) => {
                    let offset = offsets[id].unwrap_or(0);
                    json!({"const": {"offset": offset, "bytes": t.len() * b.dtype.size_bytes()}})
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
        "precision": options.precision.name(),
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
