//! [`Compiled`]: a model compiled to native code by the CPU backend.

use crate::bind::order_inputs;
use crate::{Error, Model};
use kiln_ir::{MemoryLimit, Tensor};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Where a model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// The reference interpreter (the oracle).
    Interp,
    /// Native code from the Cranelift CPU backend.
    #[default]
    Cpu,
    /// PTX for an NVIDIA GPU through the CUDA driver (see [`crate::gpu`]: the runtime is
    /// not built yet, so runs stop with an error that says so).
    Cuda,
}

/// How [`Model::compile`] compiles.
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads, including the caller's (default: every core).
    pub threads: usize,
    /// Run the default pass pipeline first (default: true).
    pub optimize: bool,
    /// The most bytes any tensor, constant or the arena may take, checked before each is
    /// allocated (default: [`MemoryLimit::default`], 80% of the machine's memory).
    pub max_memory: MemoryLimit,
    /// Quantize the linear layers after optimizing (default: none, f32 as written).
    pub quantize: Option<kiln_passes::Scheme>,
    /// Layers left in f32 when quantizing: those whose node name contains any of these.
    pub quantize_skip: Vec<String>,
    /// Append a decoder's KV caches in place (default: false): each past input that only
    /// a `concat` along the sequence reads, into a present output otherwise read only by
    /// attention, becomes a cache buffer ([`Compiled::run_cached`]).
    pub kv_cache: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            threads: kiln_cpu::Options::default().threads,
            optimize: true,
            max_memory: MemoryLimit::default(),
            quantize: None,
            quantize_skip: Vec::new(),
            kv_cache: false,
        }
    }
}

/// A model compiled for the CPU. It is `Send + Sync`: share it between threads and call
/// [`Compiled::run`] from any of them.
///
/// ```no_run
/// use std::collections::BTreeMap;
/// let model = kiln::Model::load("tests/models/bert_tiny.onnx")?.compile(&kiln::Options::default())?;
/// let inputs: BTreeMap<_, _> = kiln::npz::read_npz("tests/models/bert_tiny.inputs.npz".as_ref())?
///     .into_iter()
///     .collect();
/// for (name, tensor) in model.run(&inputs)? {
///     println!("{name}: {:?}", tensor.shape());
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Compiled {
    model: kiln_cpu::CompiledModel,
    bound_at_import: BTreeSet<String>,
}

impl Model {
    /// Optimizes (unless `opts.optimize` is false) and compiles the model for the CPU.
    /// Unsupported ops are reported now, and the code is generated now: one program for
    /// every binding of the symbols, laid out for each new shape at its first run.
    pub fn compile(&self, opts: &Options) -> Result<Compiled, Error> {
        self.clone().into_compiled(opts)
    }

    /// [`Model::compile`], consuming the model: its weights move into the compiled model,
    /// which releases each unpacked weight once it is packed, so they are held once (with
    /// [`Model::compile`], the model keeps its own copy alive).
    pub fn into_compiled(self, opts: &Options) -> Result<Compiled, Error> {
        // The unoptimized model goes before packing: its tensors would keep every weight
        // resident beside the packed copies (Llama-style f32: a 524 MB peak, not 336).
        let mut model = match opts.optimize {
            true => {
                let optimized = self.optimize()?;
                drop(self);
                optimized
            }
            false => self,
        };
        if let Some(scheme) = opts.quantize {
            let pass = kiln_passes::Quantize {
                skip: opts.quantize_skip.clone(),
                ..kiln_passes::Quantize::new(scheme)
            };
            model = model.into_quantized_with(pass)?.0;
        }
        let cpu = kiln_cpu::Options {
            threads: opts.threads.max(1),
            max_memory: opts.max_memory,
            kv_cache: opts.kv_cache,
        };
        let (graph, bound_at_import) = model.into_parts();
        Ok(Compiled {
            model: kiln_cpu::CompiledModel::new(graph, &cpu)?,
            bound_at_import,
        })
    }
}

impl Compiled {
    /// Runs the model. Inputs are given by name and checked (names, dtypes, shapes) before
    /// any generated code runs; returns the outputs by name, in graph order.
    pub fn run(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, Error> {
        let ordered = self.order(inputs)?;
        let outputs = self.model.run(&ordered)?;
        Ok(self
            .model
            .graph()
            .outputs
            .iter()
            .map(|(name, _)| name.clone())
            .zip(outputs)
            .collect())
    }

    /// The KV caches appended in place, each as its past input's and present output's
    /// names (empty unless compiled with [`Options::kv_cache`]).
    pub fn caches(&self) -> Vec<(String, String)> {
        let g = self.model.graph();
        (self.model.caches().iter())
            .map(|c| (g.inputs[c.input].0.clone(), g.outputs[c.output].0.clone()))
            .collect()
    }

    /// Runs with the KV caches in `caches`, one per [`Compiled::caches`] and in that
    /// order: `inputs` are the other inputs, by name. Each cache's new rows are appended
    /// in place; returns the other outputs by name, in graph order.
    pub fn run_cached(
        &self,
        inputs: &BTreeMap<String, Tensor>,
        caches: &mut [kiln_rt::kv::KvBuffer],
    ) -> Result<Vec<(String, Tensor)>, Error> {
        let g = self.model.graph();
        let cached = self.model.caches();
        let mut ordered = Vec::with_capacity(g.inputs.len());
        for (i, (name, _)) in g.inputs.iter().enumerate() {
            if cached.iter().any(|c| c.input == i) {
                continue;
            }
            let t = inputs.get(name).ok_or_else(|| Error::Input {
                name: name.clone(),
                message: "missing".into(),
            })?;
            ordered.push(t.clone());
        }
        let outputs = self.model.run_cached(&ordered, caches)?;
        let names = (g.outputs.iter().enumerate())
            .filter(|(i, _)| !cached.iter().any(|c| c.output == *i))
            .map(|(_, (name, _))| name.clone());
        Ok(names.zip(outputs).collect())
    }

    /// Prepares the shapes of `inputs` now (if not yet cached) and returns how long the
    /// program took to compile.
    pub fn prepare(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Duration, Error> {
        let ordered = self.order(inputs)?;
        let shapes: Vec<Vec<usize>> = ordered.iter().map(|t| t.shape().to_vec()).collect();
        Ok(self.model.specialize(&shapes)?.compile_time)
    }

    /// The code for the shapes of `inputs` (for reports: kernels, memory plan).
    pub fn specialization(
        &self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<std::sync::Arc<kiln_cpu::Specialized>, Error> {
        let ordered = self.order(inputs)?;
        let shapes: Vec<Vec<usize>> = ordered.iter().map(|t| t.shape().to_vec()).collect();
        Ok(self.model.specialize(&shapes)?)
    }

    /// Runs once and times every kernel.
    pub fn profile(
        &self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Vec<kiln_cpu::KernelTime>, Error> {
        let ordered = self.order(inputs)?;
        Ok(self.model.profile(&ordered)?)
    }

    /// How many programs have been compiled: 1 when one program serves every shape, one
    /// per shape run so far otherwise (see [`Compiled::per_shape`]).
    pub fn programs_compiled(&self) -> usize {
        self.model.programs_compiled()
    }

    /// Why the model compiles a program per shape (a kernel that needs a dim's value at
    /// compile time), or `None` when one program serves every shape.
    pub fn per_shape(&self) -> Option<&str> {
        self.model.per_shape()
    }

    /// Threads the kernels use.
    pub fn threads(&self) -> usize {
        self.model.threads()
    }

    /// The compiled graph. A weight that was packed for its one GEMM is
    /// released: its `Const` node keeps its type but holds an empty tensor,
    /// so the unpacked copy is not kept beside the packed one.
    pub fn graph(&self) -> &kiln_ir::Graph {
        self.model.graph()
    }

    fn order(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Vec<Tensor>, Error> {
        let g = self.model.graph();
        let declared = |name: &String| g.inputs.iter().any(|(n, _)| n == name);
        let runtime: BTreeMap<String, Tensor> = inputs
            .iter()
            .filter(|(name, _)| declared(name) || !self.bound_at_import.contains(*name))
            .map(|(name, t)| (name.clone(), t.clone()))
            .collect();
        order_inputs(g, &runtime)
    }
}
