//! [`Model`]: a loaded graph plus where it came from.

use crate::bind::order_inputs;
use crate::Error;
use kiln_frontend::{FrontendError, ImportOptions, LoadStats};
use kiln_ir::{Graph, Tensor};
use kiln_passes::{PassManager, PipelineReport, RunOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The file formats [`Model::load`] reads, chosen by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// An ONNX protobuf (`.onnx`).
    Onnx,
    /// kiln's text IR (`.kir`).
    Text,
}

impl ModelFormat {
    /// The format a path's extension names, if any.
    pub fn from_path(path: &Path) -> Option<ModelFormat> {
        match path.extension()?.to_str()? {
            "onnx" => Some(ModelFormat::Onnx),
            "kir" => Some(ModelFormat::Text),
            _ => None,
        }
    }
}

/// A model: a graph in kiln's IR, ready to optimize or run.
#[derive(Clone, Debug)]
pub struct Model {
    graph: Graph,
    path: PathBuf,
    /// Inputs whose values were bound at import (shape operands); [`Model::run`] accepts
    /// and ignores them.
    bound_at_import: BTreeSet<String>,
    /// How long loading took, by stage (zero for graphs built in memory).
    load_stats: LoadStats,
}

impl Model {
    /// Loads an ONNX (`.onnx`) or text IR (`.kir`) file.
    pub fn load(path: impl AsRef<Path>) -> Result<Model, Error> {
        Model::load_with(path, &ImportOptions::default())
    }

    /// Loads a model, passing import options (known input values, symbol sizes) to the ONNX
    /// frontend; a `.kir` file ignores them.
    pub fn load_with(path: impl AsRef<Path>, opts: &ImportOptions) -> Result<Model, Error> {
        let path = path.as_ref();
        let (graph, load_stats) = match ModelFormat::from_path(path) {
            Some(ModelFormat::Onnx) => kiln_frontend::load_model_with_stats(path, opts)?,
            Some(ModelFormat::Text) => {
                let start = std::time::Instant::now();
                let graph = load_text(path)?;
                let import = start.elapsed();
                (
                    graph,
                    LoadStats {
                        import,
                        ..LoadStats::default()
                    },
                )
            }
            None => {
                return Err(Error::UnknownFormat {
                    path: path.to_path_buf(),
                })
            }
        };
        let bound_at_import = opts.known_inputs.keys().cloned().collect();
        Ok(Model {
            graph,
            path: path.to_path_buf(),
            bound_at_import,
            load_stats,
        })
    }

    /// Loads a model; when the ONNX import needs an input's value (it feeds a shape operand
    /// such as Reshape's shape), takes it from `inputs` and retries.
    pub fn load_binding(
        path: impl AsRef<Path>,
        opts: &ImportOptions,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Model, Error> {
        let mut opts = opts.clone();
        loop {
            match Model::load_with(path.as_ref(), &opts) {
                Err(Error::Frontend(FrontendError::NeedsKnownInput { input, .. }))
                    if inputs.contains_key(&input) && !opts.known_inputs.contains_key(&input) =>
                {
                    let value = inputs[&input].clone();
                    opts.known_inputs.insert(input, value);
                }
                result => return result,
            }
        }
    }

    /// Wraps a graph built in memory; `path` is only used in messages.
    pub fn from_graph(graph: Graph, path: impl Into<PathBuf>) -> Model {
        Model {
            graph,
            path: path.into(),
            bound_at_import: BTreeSet::new(),
            load_stats: LoadStats::default(),
        }
    }

    /// How long loading took: reading, decoding and importing the file.
    pub fn load_stats(&self) -> &LoadStats {
        &self.load_stats
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph and the inputs bound at import, the model consumed.
    pub(crate) fn into_parts(self) -> (Graph, BTreeSet<String>) {
        (self.graph, self.bound_at_import)
    }

    /// Inputs whose values were bound at import (accepted and ignored by `run`).
    pub fn bound_at_import(&self) -> &BTreeSet<String> {
        &self.bound_at_import
    }

    /// The file the model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model after kiln's default pass pipeline.
    pub fn optimize(&self) -> Result<Model, Error> {
        let opts = RunOptions {
            stop_after: None,
            verify: true,
        };
        Ok(self
            .optimize_with(&PassManager::default_pipeline(), &opts)?
            .0)
    }

    /// The model with its linear layers quantized by `scheme` (the `quantize` pass, then
    /// `dce` to drop the f32 weights it replaced), verified after each pass. Run it after
    /// [`Model::optimize`], so that epilogues are fused first; the count of layers it
    /// quantized is in the report.
    pub fn quantize(&self, scheme: kiln_passes::Scheme) -> Result<(Model, PipelineReport), Error> {
        self.quantize_with(kiln_passes::Quantize::new(scheme))
    }

    /// [`Model::quantize`] with a configured pass (layers skipped, or given other schemes).
    pub fn quantize_with(
        &self,
        pass: kiln_passes::Quantize,
    ) -> Result<(Model, PipelineReport), Error> {
        self.clone().into_quantized_with(pass)
    }

    /// [`Model::quantize_with`] on this model itself: each f32 weight goes as its layer is
    /// quantized, where a copy would keep them all beside the quantized ones.
    pub fn into_quantized_with(
        self,
        pass: kiln_passes::Quantize,
    ) -> Result<(Model, PipelineReport), Error> {
        let passes = PassManager::once(vec![Box::new(pass), Box::new(kiln_passes::Dce)]);
        let opts = RunOptions {
            stop_after: None,
            verify: true,
        };
        self.into_optimized_with(&passes, &opts)
    }

    /// The model after a given pipeline, with the pipeline's report (per-pass timings).
    /// Layers the quantize pass could take that are left unnamed get names of their own
    /// (`OP#INDEX`, see `Quantize::name_layers`).
    pub fn optimize_with(
        &self,
        passes: &PassManager,
        opts: &RunOptions,
    ) -> Result<(Model, PipelineReport), Error> {
        self.clone().into_optimized_with(passes, opts)
    }

    /// [`Model::optimize_with`] on this model itself.
    pub fn into_optimized_with(
        mut self,
        passes: &PassManager,
        opts: &RunOptions,
    ) -> Result<(Model, PipelineReport), Error> {
        let report = passes.run(&mut self.graph, opts)?;
        // Quantization, its accuracy search and --quantize-skip tell layers apart by name.
        kiln_passes::Quantize::name_layers(&mut self.graph);
        Ok((self, report))
    }

    /// Runs the model with the reference interpreter. Inputs are given by name; every graph
    /// input must be present with its declared dtype and rank, and no unknown name may appear
    /// (inputs bound at import are accepted and ignored). Returns the outputs by name, in the
    /// graph's output order.
    pub fn run(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, Error> {
        self.run_with_limit(inputs, kiln_ir::MemoryLimit::default())
    }

    /// `inputs` in the graph's input order; names bound at import and not declared are
    /// dropped (they were folded in), and a missing or unknown name is an error.
    pub(crate) fn ordered_inputs(
        &self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<Vec<Tensor>, Error> {
        let declared = |name: &String| self.graph.inputs.iter().any(|(n, _)| n == name);
        let runtime: BTreeMap<String, Tensor> = inputs
            .iter()
            .filter(|(name, _)| declared(name) || !self.bound_at_import.contains(*name))
            .map(|(name, t)| (name.clone(), t.clone()))
            .collect();
        order_inputs(&self.graph, &runtime)
    }

    /// [`Model::run`] with every value checked against `max_memory` before it is computed:
    /// an oversized value is an error naming its node.
    pub fn run_with_limit(
        &self,
        inputs: &BTreeMap<String, Tensor>,
        max_memory: kiln_ir::MemoryLimit,
    ) -> Result<Vec<(String, Tensor)>, Error> {
        let ordered = self.ordered_inputs(inputs)?;
        let opts = kiln_ir::interp::RunOptions { max_memory };
        let outputs = kiln_ir::interp::run_with(&self.graph, &ordered, &opts)?;
        Ok(self
            .graph
            .outputs
            .iter()
            .map(|(name, _)| name.clone())
            .zip(outputs)
            .collect())
    }
}

fn load_text(path: &Path) -> Result<Graph, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let graph = kiln_ir::parse(&text).map_err(|source| Error::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    kiln_ir::verify(&graph).map_err(|source| Error::Verify {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(graph)
}
