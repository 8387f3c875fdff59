//! [`Model`]: a loaded graph plus where it came from.

use crate::bind::order_inputs;
use crate::Error;
use kiln_frontend::ImportOptions;
use kiln_ir::{Graph, Tensor};
use kiln_passes::{PassManager, PipelineReport, RunOptions};
use std::collections::BTreeMap;
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
        let graph = match ModelFormat::from_path(path) {
            Some(ModelFormat::Onnx) => kiln_frontend::load_model(path, opts)?,
            Some(ModelFormat::Text) => load_text(path)?,
            None => {
                return Err(Error::UnknownFormat {
                    path: path.to_path_buf(),
                })
            }
        };
        Ok(Model {
            graph,
            path: path.to_path_buf(),
        })
    }

    /// Wraps a graph built in memory; `path` is only used in messages.
    pub fn from_graph(graph: Graph, path: impl Into<PathBuf>) -> Model {
        Model {
            graph,
            path: path.into(),
        }
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
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

    /// The model after a given pipeline, with the pipeline's report (per-pass timings).
    pub fn optimize_with(
        &self,
        passes: &PassManager,
        opts: &RunOptions,
    ) -> Result<(Model, PipelineReport), Error> {
        let mut graph = self.graph.clone();
        let report = passes.run(&mut graph, opts)?;
        Ok((
            Model {
                graph,
                path: self.path.clone(),
            },
            report,
        ))
    }

    /// Runs the model with the reference interpreter. Inputs are given by name; every graph
    /// input must be present with its declared dtype and rank, and no unknown name may appear.
    /// Returns the outputs by name, in the graph's output order.
    pub fn run(&self, inputs: &BTreeMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, Error> {
        let ordered = order_inputs(&self.graph, inputs)?;
        let outputs = kiln_ir::interp::run(&self.graph, &ordered)?;
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
