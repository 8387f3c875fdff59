//! Running a [`StagedModule`]: a graph with data-dependent sizes, stage by stage on one
//! device. Each kernel stage is a [`Loaded`] program (its constants uploaded once); the
//! values that cross a stage boundary pass through the host, as the CPU backend passes
//! them, so each stage binds its symbols from the shapes it is given. A `NonZero` stage
//! uploads its input, counts on the device, reads the count, then writes the
//! coordinates into an output of that size.

use super::{dev, grow, Arg, Block, Gpu, Loaded, RunError};
use crate::staged::{StageCode, StagedModule};
use kiln_ir::{DType, Graph, Tensor, ValueId};
use kiln_kernel::plan::ALIGN;
use std::collections::HashMap;

/// How one stage runs on the device.
enum Step {
    Kernels(Box<Loaded>),
    NonZero(NonZero),
}

/// A `NonZero` stage's entries and device memory.
struct NonZero {
    count: String,
    write: String,
    /// Input, dims, count and output, in one grow-only block.
    block: Block,
}

/// A graph of stages loaded on one device.
pub struct StagedSession<G: Gpu> {
    gpu: G,
    /// The whole graph's input and output values.
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
    stages: Vec<(kiln_kernel::stages::Stage, Step)>,
}

impl<G: Gpu> StagedSession<G> {
    /// Loads `module` (the stages of `graph`) on `gpu` and uploads each kernel stage's
    /// constants.
    pub fn new(mut gpu: G, graph: &Graph, module: StagedModule) -> Result<Self, RunError> {
        gpu.load(&module.ptx).map_err(dev)?;
        let mut stages = Vec::with_capacity(module.stages.len());
        for (stage, code) in module.stages {
            let step = match code {
                StageCode::Kernels { program, launches } => {
                    let (plan, weights) = super::Plan::new(&stage.graph, &program, &launches);
                    let loaded = Loaded::new(&mut gpu, plan, &weights)?;
                    Step::Kernels(Box::new(loaded))
                }
                StageCode::NonZero { count, write } => Step::NonZero(NonZero {
                    count,
                    write,
                    block: Block::default(),
                }),
            };
            stages.push((stage, step));
        }
        Ok(StagedSession {
            gpu,
            inputs: graph.inputs.iter().map(|(_, v)| *v).collect(),
            outputs: graph.outputs.iter().map(|(_, v)| *v).collect(),
            stages,
        })
    }

    /// The device.
    pub fn gpu(&self) -> &G {
        &self.gpu
    }

    /// Runs the stages in order on `inputs` (in the graph's input order).
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        if inputs.len() != self.inputs.len() {
            return Err(RunError::Inputs(format!(
                "{} inputs given, the graph takes {}",
                inputs.len(),
                self.inputs.len()
            )));
        }
        let mut values: HashMap<ValueId, Tensor> = self
            .inputs
            .iter()
            .copied()
            .zip(inputs.iter().cloned())
            .collect();
        for (stage, step) in &mut self.stages {
            let args: Vec<Tensor> = stage.inputs.iter().map(|v| values[v].clone()).collect();
            let outputs = match step {
                Step::Kernels(loaded) => loaded.run(&mut self.gpu, &args)?,
                Step::NonZero(nz) => vec![nz.run(&mut self.gpu, &args[0])?],
            };
            values.extend(stage.outputs.iter().copied().zip(outputs));
        }
        Ok(self.outputs.iter().map(|v| values[v].clone()).collect())
    }
}

impl NonZero {
    /// The `i64[rank, count]` coordinates of the non-zero elements of `x`.
    fn run<G: Gpu>(&mut self, gpu: &mut G, x: &Tensor) -> Result<Tensor, RunError> {
        let rank = x.rank();
        let n = x.len();
        let data = x.to_le_bytes();
        let dims: Vec<u8> = (x.shape().iter())
            .flat_map(|&d| (d as i64).to_le_bytes())
            .collect();
        // [x | dims | count | out], each at an aligned offset; the output may hold every
        // element's coordinates.
        let at = |bytes: usize| bytes.next_multiple_of(ALIGN);
        let out_bytes = n.checked_mul(rank * 8).ok_or(RunError::Size)?;
        let (dims_at, count_at) = (at(data.len()), at(data.len()) + at(dims.len()));
        let out_at = count_at + ALIGN;
        let total = out_at.checked_add(out_bytes).ok_or(RunError::Size)?;
        grow(gpu, &mut self.block, total).map_err(dev)?;
        let base = self.block.at;
        gpu.write(base, &data).map_err(dev)?;
        gpu.write(base + dims_at as u64, &dims).map_err(dev)?;
        let warp = ([1, 1, 1], [32, 1, 1]);
        let (xa, da, ca, oa) = (
            Arg::U64(base),
            Arg::U64(base + dims_at as u64),
            Arg::U64(base + count_at as u64),
            Arg::U64(base + out_at as u64),
        );
        let len = Arg::S64(n as i64);
        gpu.launch(&self.count, warp.0, warp.1, &[xa, len, ca])
            .map_err(dev)?;
        let word = gpu.read(base + count_at as u64, 8).map_err(dev)?;
        let count = u64::from_le_bytes(word.try_into().map_err(|_| RunError::Size)?) as usize;
        if count > n {
            return Err(RunError::Device(format!("nonzero counted {count} of {n}")));
        }
        let args = [
            xa,
            da,
            Arg::S64(rank as i64),
            len,
            Arg::S64(count as i64),
            oa,
        ];
        gpu.launch(&self.write, warp.0, warp.1, &args)
            .map_err(dev)?;
        let coords = gpu
            .read(base + out_at as u64, rank * count * 8)
            .map_err(dev)?;
        Tensor::from_le_bytes(DType::I64, &[rank, count], &coords).map_err(dev)
    }
}
