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
/// the PTX backend does not lower yet (quantized linear layers), or data-dependent sizes.
/// The plan is [`kiln_cuda::runtime::Plan`] as JSON, with the target, the precision and
/// a note on the entries' parameters added.
pub fn ptx_artifact(
    model: &Model,
    fixed: &kiln_ir::Bindings,
    options: Options,
) -> Result<PtxArtifact, Error> {
    let cuda = |e: String| Error::Cuda(e);
    let g = model.graph();
    if kiln_cpu::needs_stages(g) {
        return Err(cuda(
            "ops with data-dependent output sizes (NonZero) cannot be compiled ahead of time \
             yet; use `kiln run --backend cuda`"
                .into(),
        ));
    }
    let program = kiln_cuda::program(g, fixed).map_err(|e| cuda(e.to_string()))?;
    let module = kiln_cuda::emit_with(&program, options).map_err(|e| cuda(e.to_string()))?;
    let (plan, weights) = kiln_cuda::runtime::Plan::new(g, &program, &module.launches);
    let mut plan = serde_json::to_value(&plan).map_err(|e| cuda(e.to_string()))?;
    if let Some(fields) = plan.as_object_mut() {
        fields.insert("target".into(), options.target.name().into());
        fields.insert("precision".into(), options.precision.name().into());
        fields.insert(
            "parameters".into(),
            "per entry: the listed buffers' device addresses (u64), then every symbol (s64), \
             then the status word's address when status is true"
                .into(),
        );
    }
    Ok(PtxArtifact {
        ptx: module.ptx,
        plan,
        weights,
    })
}
