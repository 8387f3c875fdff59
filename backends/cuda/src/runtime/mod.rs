//! Running a module: the host side of the GPU backend, over any [`Gpu`].
//!
//! A [`Session`] holds one compiled model on one device: the module loaded, every
//! constant uploaded once into a single weights block (each at a 64-byte aligned
//! offset), and a status word. Each [`Session::run`] binds the symbols from the inputs'
//! shapes, refuses a binding that breaks a launch condition (the kernels check only
//! their data-dependent indices, so this is what keeps every access inside its buffer),
//! places the temporaries by the kernel layer's memory plan in one arena (grown when a
//! larger shape needs it, never per run otherwise), uploads the inputs, launches every
//! entry in order on the device's one stream, reads the status word and downloads the
//! outputs.
//!
//! The device is a trait so the same host code runs on the CUDA driver ([`driver`]) and,
//! in the backend's tests, on the PTX interpreter: everything here but the driver calls
//! themselves is exercised on machines without a GPU.

pub mod driver;
pub mod plan;
pub mod staged;

pub use plan::{constant_layout, Plan};

use crate::Module;
use kiln_ir::{interp, Bindings, Graph, Tensor, TensorType};
use kiln_kernel::kernel::Program;
use kiln_kernel::plan::ALIGN;

/// A kernel argument: the entry's parameters are `.u64` addresses and `.s64` symbols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// A device address.
    U64(u64),
    /// A symbol's value.
    S64(i64),
}

/// What a [`Session`] needs of a device: memory at device addresses, one loaded module,
/// and launches in issue order (each sees the effects of the ones before).
pub trait Gpu {
    /// The device's error, shown to the user.
    type Error: std::fmt::Display;

    /// Loads `ptx`; its entries are then launched by name.
    fn load(&mut self, ptx: &str) -> Result<(), Self::Error>;

    /// A new allocation of `bytes` (contents unspecified); its device address.
    fn alloc(&mut self, bytes: usize) -> Result<u64, Self::Error>;

    /// Frees the allocation at `at` (an address [`Gpu::alloc`] returned).
    fn free(&mut self, at: u64) -> Result<(), Self::Error>;

    /// Copies `data` to device address `at`.
    fn write(&mut self, at: u64, data: &[u8]) -> Result<(), Self::Error>;

    /// Copies `len` bytes from device address `at`, after every launch before it.
    fn read(&mut self, at: u64, len: usize) -> Result<Vec<u8>, Self::Error>;

    /// Launches `entry` on `grid` blocks of `block` threads.
    fn launch(
        &mut self,
        entry: &str,
        grid: [u32; 3],
        block: [u32; 3],
        args: &[Arg],
    ) -> Result<(), Self::Error>;
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The inputs do not fit the graph's input types.
    #[error("{0}")]
    Inputs(String),
    /// The binding breaks a condition the kernels rely on.
    #[error("inputs refused: {0}")]
    Condition(String),
    /// A size mentions an unbound symbol or overflows.
    #[error("a buffer size cannot be computed for this binding")]
    Size,
    /// A gather or scatter index was out of range.
    #[error("kernel {kernel} ({label}, from node {node}): an index is out of range")]
    Index {
        /// The kernel.
        kernel: usize,
        /// Its label.
        label: String,
        /// Its graph node.
        node: usize,
    },
    /// The device failed.
    #[error("GPU: {0}")]
    Device(String),
}

/// One model loaded on one device.
pub struct Session<G: Gpu> {
    gpu: G,
    model: Loaded,
}

/// A program's state on a device whose module holds its entries: its plan, its
/// constants uploaded, its status word, and its arena and input blocks (grown as shapes
/// need).
pub(crate) struct Loaded {
    plan: Plan,
    /// The plan's inputs as a graph, to bind symbols from shapes.
    inputs_graph: Graph,
    /// Device address of each buffer that has a fixed one (constants), else 0.
    constants: Vec<u64>,
    status: u64,
    arena: Block,
    inputs: Block,
}

/// A grow-only device allocation.
#[derive(Default)]
pub(crate) struct Block {
    pub at: u64,
    pub bytes: usize,
}

/// A device error as a run error.
pub(crate) fn dev<E: std::fmt::Display>(e: E) -> RunError {
    RunError::Device(e.to_string())
}

impl<G: Gpu> Session<G> {
    /// Loads `module` (written for `program`, scheduled from `graph`) on `gpu` and
    /// uploads its constants.
    pub fn new(gpu: G, graph: &Graph, program: Program, module: Module) -> Result<Self, RunError> {
        let (plan, weights) = Plan::new(graph, &program, &module.launches);
        Session::from_plan(gpu, &module.ptx, plan, &weights)
    }

    /// Loads a module from its parts as an artifact stores them: the PTX, its [`Plan`]
    /// and the constants block the plan's offsets point into.
    pub fn from_plan(mut gpu: G, ptx: &str, plan: Plan, weights: &[u8]) -> Result<Self, RunError> {
        gpu.load(ptx).map_err(dev)?;
        let model = Loaded::new(&mut gpu, plan, weights)?;
        Ok(Session { gpu, model })
    }

    /// The device.
    pub fn gpu(&self) -> &G {
        &self.gpu
    }

    /// The plan it runs.
    pub fn plan(&self) -> &Plan {
        &self.model.plan
    }

    /// Runs the model on `inputs` (in the graph's input order).
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        self.model.run(&mut self.gpu, inputs)
    }
}

impl Loaded {
    /// `plan`'s state on `gpu`, whose loaded module holds its entries, with `weights`
    /// (the constants block) uploaded.
    pub(crate) fn new<G: Gpu>(gpu: &mut G, plan: Plan, weights: &[u8]) -> Result<Loaded, RunError> {
        // A plan read from a file is checked before anything is placed by it.
        let end = |b: &plan::PlanBuffer, o: usize| {
            let n = usize::try_from(b.len.as_const()?).ok()?;
            o.checked_add(n.checked_mul(b.dtype.size_bytes())?)
        };
        for b in &plan.buffers {
            if let plan::PlanBufferKind::Const(o) = b.kind {
                if end(b, o).is_none_or(|e| e > weights.len()) {
                    return Err(RunError::Inputs(
                        "the plan names a constant outside the weights".into(),
                    ));
                }
            }
        }
        let base = gpu.alloc(weights.len().max(1)).map_err(dev)?;
        gpu.write(base, weights).map_err(dev)?;
        let constants = (plan.buffers.iter())
            .map(|b| match b.kind {
                plan::PlanBufferKind::Const(o) => base + o as u64,
                _ => 0,
            })
            .collect();
        let status = gpu.alloc(4).map_err(dev)?;
        Ok(Loaded {
            inputs_graph: plan.input_graph(),
            plan,
            constants,
            status,
            arena: Block::default(),
            inputs: Block::default(),
        })
    }

    /// Runs the program on `inputs` (in the graph's input order).
    pub(crate) fn run<G: Gpu>(
        &mut self,
        gpu: &mut G,
        inputs: &[Tensor],
    ) -> Result<Vec<Tensor>, RunError> {
        let types: Vec<TensorType> = (inputs.iter())
            .map(|t| TensorType::fixed(t.dtype(), t.shape()))
            .collect();
        let bindings = interp::bind_input_types(&self.inputs_graph, &types)
            .map_err(|e| RunError::Inputs(e.to_string()))?;
        for c in &self.plan.conditions {
            c.check(&bindings).map_err(RunError::Condition)?;
        }
        let bytes = self.plan.buffer_bytes(&bindings).ok_or(RunError::Size)?;
        let addrs = self.place(gpu, inputs, &bytes)?;
        self.launch_all(gpu, &addrs, &bindings)?;
        self.outputs(gpu, &addrs, &bytes, &bindings)
    }

    /// Every buffer's device address for this run, the inputs uploaded.
    fn place<G: Gpu>(
        &mut self,
        gpu: &mut G,
        inputs: &[Tensor],
        bytes: &[usize],
    ) -> Result<Vec<u64>, RunError> {
        let plan = self.plan.lifetimes.place(bytes);
        grow(gpu, &mut self.arena, plan.arena_bytes).map_err(dev)?;
        let mut input_at = Vec::with_capacity(inputs.len());
        let mut total = 0usize;
        for t in inputs {
            input_at.push(total);
            let n = t
                .len()
                .checked_mul(t.dtype().size_bytes())
                .ok_or(RunError::Size)?;
            total = total
                .checked_add(n.next_multiple_of(ALIGN))
                .ok_or(RunError::Size)?;
        }
        grow(gpu, &mut self.inputs, total).map_err(dev)?;
        for (t, &off) in inputs.iter().zip(&input_at) {
            let at = self.inputs.at + off as u64;
            gpu.write(at, &t.to_le_bytes()).map_err(dev)?;
        }
        let addr = |(b, buf): (usize, &plan::PlanBuffer)| match buf.kind {
            plan::PlanBufferKind::Input(k) => input_at.get(k).map(|&o| self.inputs.at + o as u64),
            plan::PlanBufferKind::Const(_) => Some(self.constants[b]),
            plan::PlanBufferKind::Iota => Some(0),
            plan::PlanBufferKind::Temp => Some(self.arena.at + plan.offsets[b].unwrap_or(0) as u64),
        };
        let addrs: Option<Vec<u64>> = self.plan.buffers.iter().enumerate().map(addr).collect();
        addrs.ok_or_else(|| RunError::Inputs("the plan names an input the graph lacks".into()))
    }

    fn launch_all<G: Gpu>(
        &mut self,
        gpu: &mut G,
        addrs: &[u64],
        bindings: &Bindings,
    ) -> Result<(), RunError> {
        let symbols: Option<Vec<i64>> = (self.plan.symbols.iter())
            .map(|s| bindings.get(s).copied())
            .collect();
        let symbols = symbols.ok_or(RunError::Size)?;
        gpu.write(self.status, &[0; 4]).map_err(dev)?;
        for l in &self.plan.launches {
            let bad = || RunError::Inputs("the plan names a buffer it lacks".into());
            if l.buffers.iter().any(|&b| b >= addrs.len()) {
                return Err(bad());
            }
            let mut args: Vec<Arg> = l.buffers.iter().map(|&b| Arg::U64(addrs[b])).collect();
            args.extend(symbols.iter().map(|&s| Arg::S64(s)));
            if l.status {
                args.push(Arg::U64(self.status));
            }
            let (grid, block) = l.geometry(bindings).ok_or(RunError::Size)?;
            gpu.launch(&l.entry, grid, block, &args).map_err(dev)?;
        }
        let word = gpu.read(self.status, 4).map_err(dev)?;
        let word = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        match word.checked_sub(1) {
            None => Ok(()),
            Some(k) => {
                let kernel = k as usize;
                let (label, node) = (self.plan.kernels.get(kernel).cloned())
                    .unwrap_or_else(|| ("?".into(), usize::MAX));
                Err(RunError::Index {
                    kernel,
                    label,
                    node,
                })
            }
        }
    }

    fn outputs<G: Gpu>(
        &mut self,
        gpu: &mut G,
        addrs: &[u64],
        bytes: &[usize],
        bindings: &Bindings,
    ) -> Result<Vec<Tensor>, RunError> {
        let mut out = Vec::with_capacity(self.plan.outputs.len());
        for (b, shape) in &self.plan.outputs {
            let b = *b;
            let buf = self.plan.buffers.get(b).ok_or(RunError::Size)?;
            if matches!(buf.kind, plan::PlanBufferKind::Iota) {
                // The scheduler materializes index sequences that are outputs; one
                // reaching here has no memory to read.
                return Err(RunError::Device("an index sequence as an output".into()));
            }
            let shape: Option<Vec<usize>> = (shape.iter())
                .map(|d| d.eval(bindings).and_then(|v| usize::try_from(v).ok()))
                .collect();
            let shape = shape.ok_or(RunError::Size)?;
            let data = gpu.read(addrs[b], bytes[b]).map_err(dev)?;
            let t = Tensor::from_le_bytes(buf.dtype, &shape, &data).map_err(dev)?;
            out.push(t);
        }
        Ok(out)
    }
}

/// Grows `block` to at least `bytes`: the old allocation is freed and a new one made.
pub(crate) fn grow<G: Gpu>(gpu: &mut G, block: &mut Block, bytes: usize) -> Result<(), G::Error> {
    if block.at != 0 && block.bytes >= bytes {
        return Ok(());
    }
    if block.at != 0 {
        gpu.free(block.at)?;
    }
    *block = Block {
        at: gpu.alloc(bytes.max(1))?,
        bytes,
    };
    Ok(())
}
