//! The compiled model: one program for every shape, laid out per shape; a pool of arenas,
//! and the worker pool that runs the kernels.
//!
//! A graph is scheduled with its symbols free and compiled once ([`Shared`]): the kernels
//! read the symbols' values at run time. The first run at a new set of input shapes binds
//! the symbols and lays the program out for them (buffer sizes, the arena's offsets, the
//! runtime calls' sizes: microseconds, no code generation), kept in a small bounded cache.
//! A graph whose kernels need a dim's value at compile time (a pooling window over a
//! symbolic image, an index table as long as a symbolic axis) compiles one program per
//! shape instead, in the same bounded cache, and says why ([`CompiledModel::per_shape`]).
//! Graphs with data-dependent shapes run as stages ([`crate::stages`]), each compiled the
//! same way.

use crate::fuse_loops::fuse_loops;
use crate::kernel::{BufId, BufferKind, Kernel, Program};
use crate::lower::{self, Compiled, LowerError};
use crate::plan::{lifetimes, MemoryPlan};
use crate::runtime::call::{Call as RtCall, ResolveError};
use crate::runtime::exec::{self as rt, Arena, RunPlan, SlotMemory, StepError, StepNode};
use crate::runtime::kv::{KvBuffer, Placement};
use crate::runtime::layout::{
    constant_weight_call, BindError, Bound, Recent, Symbolic, SymbolicStep,
};
use crate::runtime::{self, pool::ThreadPool, CallError, Packed};
use crate::schedule::{schedule_with, ScheduleError};
use crate::stages::{split, Stage};
use kiln_ir::{check_bytes, check_graph, interp, Bindings, Dim, Graph, MemoryLimit, SizeError};
use kiln_ir::{Tensor, TensorType, Unwritten};
use kiln_kernel::cache::KvCache;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How many shapes' layouts (or, for per-shape models, programs) a model keeps.
pub const SHAPE_CACHE: usize = 32;

/// How to compile.
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads, including the caller's (default: every core).
    pub threads: usize,
    /// The most bytes any value, constant or the arena may take; checked when code is laid
    /// out for a set of input shapes, before anything is allocated (default:
    /// [`MemoryLimit::default`], from the machine's memory).
    pub max_memory: MemoryLimit,
    /// Append the decoder's KV caches in place ([`kiln_kernel::cache`]): runs then pass
    /// them as [`KvBuffer`]s ([`CompiledModel::run_cached`]).
    pub kv_cache: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_memory: MemoryLimit::default(),
            kv_cache: false,
        }
    }
}

/// Why compilation failed.
#[derive(Debug, Error)]
pub enum CompileError {
    /// A value or the arena would exceed the memory limit, or a shape has a negative or
    /// overflowing dim.
    #[error(transparent)]
    Size(#[from] SizeError),
    /// Scheduling failed (an unsupported op, or an unknown dim).
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// A runtime call's size has no value at this binding of the symbols (negative, or
    /// overflowing).
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Code generation failed for a kernel.
    #[error("node {node} \"{name}\" ({op}): {source}")]
    Lower {
        /// Node index.
        node: usize,
        /// Source node name.
        name: String,
        /// Op name.
        op: String,
        /// The failure.
        source: LowerError,
    },
}

/// Why a run failed.
#[derive(Debug, Error)]
pub enum RunError {
    /// The inputs do not match the model (count, dtype or shape); names the input.
    #[error("{0}")]
    Input(String),
    /// Compiling for these input shapes failed.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// A step of the program failed (a runtime call, or an index out of range); names the
    /// node.
    #[error(transparent)]
    Step(#[from] StepError),
    /// The arena could not be allocated.
    #[error(transparent)]
    Arena(#[from] rt::ArenaError),
    /// An output could not be allocated.
    #[error("allocating an output: {0}")]
    Output(kiln_ir::TensorError),
    /// A runtime op between compiled stages failed.
    #[error("node {node} \"{name}\": {source}")]
    Call {
        /// Node index.
        node: usize,
        /// Source node name.
        name: String,
        /// The failure.
        source: CallError,
    },
}

/// A graph compiled for the CPU: `Send + Sync`, runs at any input shape its symbols allow.
pub struct CompiledModel {
    graph: Graph,
    pool: Arc<ThreadPool>,
    /// The program compiled once for every shape, why each shape gets its own, or the
    /// stages of a graph with data-dependent shapes.
    mode: Mode,
    cache: Mutex<Recent<Vec<Vec<usize>>, Arc<Specialized>>>,
    /// Programs compiled so far (one for a shared program; one per shape otherwise).
    compiled: AtomicUsize,
    /// Constant weights packed for their calls, shared by every program.
    packed: Mutex<HashMap<PackKey, Arc<Packed>>>,
    arenas: Mutex<Vec<Arena>>,
    max_memory: MemoryLimit,
    /// The KV caches its program appends in place.
    caches: Vec<KvCache>,
}

/// How a model gets code for a shape.
enum Mode {
    /// One program for every shape, laid out per shape.
    Shared(Arc<Shared>),
    /// A program per shape, because a kernel needs this dim's value at compile time.
    PerShape(String),
    /// The graph has data-dependent shapes: it runs as these stages, each its own model
    /// (none for a stage that is one runtime op).
    Stages(Vec<(Stage, Option<CompiledModel>)>),
}

/// What a packed weight was made from: the call's kind (0 for a matmul, 1 + the
/// activation scheme for a quantized layer), the weight's address and view offset (the
/// scale's address for a quantized layer), its strides, and k × n.
type PackKey = (u8, usize, usize, isize, isize, usize, usize);

/// A compiled program: its kernels, its code, and how to lay it out per shape.
struct Shared {
    program: Arc<Program>,
    layout: Symbolic,
    code: Arc<Compiled>,
    consts: Arc<Vec<usize>>,
    packed: Arc<Vec<Option<Arc<Packed>>>>,
    compile_time: Duration,
}

/// Everything needed to run at one set of input shapes.
pub struct Specialized {
    /// The kernels (shared by every shape when the model has one program).
    pub program: Arc<Program>,
    /// The arena layout at these shapes.
    pub plan: MemoryPlan,
    /// The symbols' values at these shapes.
    pub bindings: Bindings,
    /// Buffer and shape of each graph output at these shapes.
    outputs: Vec<(BufId, Vec<usize>)>,
    code: Arc<Compiled>,
    /// What the runtime's executor runs: the steps and where each buffer lives.
    run: RunPlan,
    /// Addresses of the constants, in slot order after the inputs.
    consts: Arc<Vec<usize>>,
    /// The pre-packed constant weight of each call kernel that has one.
    packed: Arc<Vec<Option<Arc<Packed>>>>,
    /// How long scheduling, planning and code generation of its program took (once, for
    /// a shared program).
    pub compile_time: Duration,
    /// How long laying the program out for these shapes took.
    pub layout_time: Duration,
}

impl CompiledModel {
    /// Compiles `graph`: its one program for every shape now, when its kernels allow it
    /// (laid out now too when its input shapes are static), else one per shape at the
    /// first run at each.
    pub fn new(graph: Graph, opts: &Options) -> Result<CompiledModel, CompileError> {
        let pool = Arc::new(ThreadPool::new(opts.threads));
        let caches = match opts.kv_cache && split(&graph).is_none() {
            true => kiln_kernel::cache::find(&graph),
            false => Vec::new(),
        };
        CompiledModel::with_pool(graph, pool, opts.max_memory, caches)
    }

    fn with_pool(
        graph: Graph,
        pool: Arc<ThreadPool>,
        max_memory: MemoryLimit,
        caches: Vec<KvCache>,
    ) -> Result<CompiledModel, CompileError> {
        let stages = match split(&graph) {
            Some(stages) => Some(
                stages
                    .into_iter()
                    .map(|st| {
                        let model = match st.runtime {
                            Some(_) => None,
                            None => Some(CompiledModel::with_pool(
                                st.graph.clone(),
                                pool.clone(),
                                max_memory,
                                Vec::new(),
                            )?),
                        };
                        Ok((st, model))
                    })
                    .collect::<Result<Vec<_>, CompileError>>()?,
            ),
            None => None,
        };
        let is_staged = stages.is_some();
        let mut model = CompiledModel {
            graph,
            pool,
            // Stages, or, until the compile below sets the mode, no program yet.
            mode: stages.map_or(Mode::PerShape(String::new()), Mode::Stages),
            cache: Mutex::new(Recent::new(SHAPE_CACHE)),
            compiled: AtomicUsize::new(0),
            packed: Mutex::new(HashMap::new()),
            arenas: Mutex::new(Vec::new()),
            max_memory,
            caches,
        };
        if is_staged {
            return Ok(model);
        }
        model.mode = match model.compile_shared() {
            Ok(shared) => Mode::Shared(Arc::new(shared)),
            Err(CompileError::Schedule(e @ ScheduleError::NeedsDim { .. })) => {
                Mode::PerShape(e.to_string())
            }
            Err(e) => return Err(e),
        };
        let static_shapes: Option<Vec<Vec<usize>>> = model
            .graph
            .inputs
            .iter()
            .map(|(_, v)| model.graph.value_type(*v).const_shape())
            .collect();
        if let Some(shapes) = static_shapes {
            model.specialize(&shapes).map_err(|e| match e {
                RunError::Compile(c) => c,
                other => CompileError::Schedule(ScheduleError::Unsupported {
                    node: 0,
                    name: String::new(),
                    op: String::new(),
                    reason: other.to_string(),
                }),
            })?;
        }
        Ok(model)
    }

    /// The graph this model runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Number of threads kernels use.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// How many programs have been compiled: 1 for a model with one program for every
    /// shape, one per shape run so far otherwise (stages count their own).
    pub fn programs_compiled(&self) -> usize {
        let own = self.compiled.load(Ordering::Relaxed);
        let Mode::Stages(stages) = &self.mode else {
            return own;
        };
        own + stages
            .iter()
            .filter_map(|(_, m)| m.as_ref())
            .map(CompiledModel::programs_compiled)
            .sum::<usize>()
    }

    /// Why this model compiles a program per shape (the dim a kernel needs at compile
    /// time), or `None` when one program serves every shape.
    pub fn per_shape(&self) -> Option<&str> {
        match &self.mode {
            Mode::PerShape(why) => Some(why),
            Mode::Shared(_) | Mode::Stages(_) => None,
        }
    }

    /// Schedules the graph with its symbols free and compiles that one program. Each
    /// weight it packs is released from the graph and the program as soon as it is packed
    /// (see [`CompiledModel::graph`]), so the model's weights are never held twice.
    fn compile_shared(&mut self) -> Result<Shared, CompileError> {
        let mut graph = std::mem::replace(&mut self.graph, Graph::new(""));
        let shared = self.compile_with(&Bindings::new(), Some(&mut graph));
        self.graph = graph;
        shared
    }

    /// Schedules the graph with the symbols in `bindings` substituted (the others free)
    /// and compiles it.
    fn compile_at(&self, bindings: &Bindings) -> Result<Shared, CompileError> {
        self.compile_with(bindings, None)
    }

    /// Compiles `self.graph` (or `release`, the same graph taken out of `self`, whose
    /// packed weights are then released) at `bindings`.
    fn compile_with(
        &self,
        bindings: &Bindings,
        mut release: Option<&mut Graph>,
    ) -> Result<Shared, CompileError> {
        let start = Instant::now();
        let graph = match &release {
            Some(g) => &**g,
            None => &self.graph,
        };
        let mut layout = lay_out_with(graph, bindings, self.max_memory, &self.caches)?;
        // Packing first: the weights are released before code generation's own memory
        // peaks.
        let packed = self.prepack_weights(&mut layout, release.as_deref_mut());
        let graph = match &release {
            Some(g) => &**g,
            None => &self.graph,
        };
        let code = lower::compile(&layout.program, &layout.slots)
            .map_err(|(kernel, source)| lower_error(graph, &layout.program, kernel, source))?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let description = symbolic(graph, &layout, &kernel_extents(&code));
        Ok(Shared {
            layout: description,
            program: Arc::new(layout.program),
            code: Arc::new(code),
            consts: Arc::new(layout.consts),
            packed: Arc::new(packed),
            compile_time: start.elapsed(),
        })
    }

    /// The code for these input shapes (laid out, or compiled, on first use, then cached).
    pub fn specialize(&self, shapes: &[Vec<usize>]) -> Result<Arc<Specialized>, RunError> {
        self.specialize_cached(shapes, 0)
    }

    /// [`CompiledModel::specialize`] with the caches' capacity.
    fn specialize_cached(
        &self,
        shapes: &[Vec<usize>],
        capacity: usize,
    ) -> Result<Arc<Specialized>, RunError> {
        let mut key = shapes.to_vec();
        if !self.caches.is_empty() {
            key.push(vec![capacity]);
        }
        if let Some(s) = self.cache.lock().expect("cache lock").get(&key) {
            return Ok(s);
        }
        let types: Vec<TensorType> = self
            .graph
            .inputs
            .iter()
            .zip(shapes)
            .map(|((_, v), s)| TensorType::fixed(self.graph.value_type(*v).dtype, s))
            .collect();
        let mut bindings = interp::bind_input_types(&self.graph, &types)
            .map_err(|e| RunError::Input(e.to_string()))?;
        if !self.caches.is_empty() {
            let c =
                i64::try_from(capacity).map_err(|_| RunError::Input("KV cache capacity".into()))?;
            bindings.insert(kiln_kernel::cache::CAPACITY.to_string(), c);
        }
        let spec = Arc::new(match &self.mode {
            Mode::Shared(shared) => {
                check_graph(&self.graph, &bindings, self.max_memory).map_err(CompileError::from)?;
                self.bind(shared, bindings)?
            }
            // `lay_out` checks the sizes at these bindings.
            Mode::PerShape(_) | Mode::Stages(_) => {
                let own = self.compile_at(&bindings)?;
                self.bind(&own, bindings)?
            }
        });
        self.cache
            .lock()
            .expect("cache lock")
            .insert(key, spec.clone());
        Ok(spec)
    }

    /// `shared` laid out at `bindings`, whose values' sizes the caller checked: the arena
    /// placed and checked against the memory limit, the calls resolved.
    fn bind(&self, shared: &Shared, bindings: Bindings) -> Result<Specialized, RunError> {
        let start = Instant::now();
        let Bound { run, plan, outputs } = shared.layout.bind(&bindings).map_err(|e| match e {
            BindError::Assumption { .. } => RunError::Input(e.to_string()),
            BindError::Resolve(r) => RunError::Compile(CompileError::Resolve(r)),
        })?;
        let arena = || "the arena (the temporaries live at once)".to_string();
        check_bytes(arena, Some(plan.arena_bytes as u128), self.max_memory)
            .map_err(CompileError::from)?;
        Ok(Specialized {
            program: shared.program.clone(),
            plan,
            bindings,
            outputs,
            code: shared.code.clone(),
            run,
            consts: shared.consts.clone(),
            packed: shared.packed.clone(),
            compile_time: shared.compile_time,
            layout_time: start.elapsed(),
        })
    }

    /// Packs the constant weight of every call once per model (weights are reused by every
    /// program), so that no run packs a weight again. Only calls whose weight operand has
    /// constant sizes are packed: the packing then holds at every shape. With `release`
    /// (the graph being compiled), a weight that no other kernel reads is released from
    /// the program and the graph as soon as it is packed: the packed copy is then the only
    /// one, and peak memory holds one weight twice at most.
    fn prepack_weights(
        &self,
        layout: &mut Layout,
        mut release: Option<&mut Graph>,
    ) -> Vec<Option<Arc<Packed>>> {
        let mut readers = vec![0usize; layout.program.buffers.len()];
        for k in &layout.program.kernels {
            for b in k.reads() {
                readers[b] += 1;
            }
        }
        for &b in &layout.program.outputs {
            readers[b] += 1;
        }
        let mut out = Vec::with_capacity(layout.program.kernels.len());
        for k in 0..layout.program.kernels.len() {
            let Some((packed, weight)) = self.pack(&layout.program, k) else {
                out.push(None);
                continue;
            };
            if let Some(g) = release.as_deref_mut() {
                if readers[weight] == 1 {
                    release_weight(layout, g, weight);
                }
            }
            out.push(Some(packed));
        }
        out
    }

    /// The packed weight of kernel `k` of `program` and the weight's buffer, when it is a
    /// call with a constant weight of constant sizes.
    fn pack(&self, program: &Program, k: usize) -> Option<(Arc<Packed>, BufId)> {
        let constant = |buf: BufId| match &program.buffers.get(buf)?.kind {
            BufferKind::Const(t) => Some(kiln_ir::dispatch!(t, a => a.as_ptr().cast::<u8>())),
            _ => None,
        };
        let Kernel::Call(call) = &program.kernels[k] else {
            return None;
        };
        let call = constant_weight_call(call, &program.symbols)?;
        let (key, weight) = match &call {
            RtCall::MatMul(mm) => (
                (
                    0,
                    constant(mm.b.buf)? as usize,
                    *mm.b.batch_offsets.first()?,
                    mm.b.row_stride,
                    mm.b.col_stride,
                    mm.k,
                    mm.n,
                ),
                mm.b.buf,
            ),
            RtCall::QuantLinear(q) => (
                (
                    1 + q.attrs.activations as u8,
                    constant(q.w)? as usize,
                    match q.scale {
                        Some(s) => constant(s)? as usize,
                        None => 0,
                    },
                    0,
                    0,
                    q.k,
                    q.n,
                ),
                q.w,
            ),
            _ => return None,
        };
        if let Some(p) = self.packed.lock().expect("pack lock").get(&key) {
            return Some((p.clone(), weight));
        }
        // SAFETY: each constant's data is what the schedule sized for the call.
        let p = Arc::new(unsafe { runtime::prepack(&call, &constant) }?);
        self.packed
            .lock()
            .expect("pack lock")
            .insert(key, p.clone());
        Some((p, weight))
    }

    /// Runs the model on `inputs` (in graph-input order). Dtypes and shapes are checked
    /// against the graph before any generated code runs. A model with KV caches copies
    /// each past into a cache buffer first (see [`CompiledModel::run_cached`], which
    /// does not).
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        let types: Vec<TensorType> = inputs
            .iter()
            .map(|t| TensorType::fixed(t.dtype(), t.shape()))
            .collect();
        let bindings = interp::bind_input_types(&self.graph, &types)
            .map_err(|e| RunError::Input(e.to_string()))?;
        if let Mode::Stages(stages) = &self.mode {
            return self.run_stages(stages, inputs);
        }
        if !self.caches.is_empty() {
            return self.run_through_caches(inputs, &bindings);
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let spec = self.specialize(&shapes)?;
        let inputs: Vec<Tensor> = inputs.iter().map(rt::contiguous).collect();
        let ptrs = input_pointers(&inputs);
        let mut arena = self.take_arena(spec.plan.arena_bytes)?;
        let result = self.execute(&spec, &ptrs, &mut arena, None);
        self.arenas.lock().expect("arena lock").push(arena);
        result
    }

    /// The KV caches the program appends in place: empty unless compiled with
    /// [`Options::kv_cache`] and the graph has them ([`kiln_kernel::cache::find`]).
    pub fn caches(&self) -> &[KvCache] {
        &self.caches
    }

    /// Runs with the KV caches in `caches`, one per [`CompiledModel::caches`] and in that
    /// order, all of one capacity: `inputs` are the other graph inputs, in graph order.
    /// Each cache's new rows are written after its valid ones, in place, and its length
    /// grows by them; the outputs are the graph outputs other than the caches' presents,
    /// in graph order. A run whose new rows would pass the capacity is refused before
    /// anything runs.
    pub fn run_cached(
        &self,
        inputs: &[Tensor],
        caches: &mut [KvBuffer],
    ) -> Result<Vec<Tensor>, RunError> {
        let place = self.placement();
        let (shapes, capacity) = place.shapes(inputs, caches).map_err(RunError::Input)?;
        // The given inputs' own dtypes, and a cache's (f32), checked against the graph.
        let mut given = inputs.iter();
        let types: Vec<TensorType> = (shapes.iter().enumerate())
            .map(|(i, s)| match self.caches.iter().any(|c| c.input == i) {
                true => TensorType::fixed(kiln_ir::DType::F32, s),
                false => TensorType::fixed(given.next().expect("counted").dtype(), s),
            })
            .collect();
        interp::bind_input_types(&self.graph, &types)
            .map_err(|e| RunError::Input(e.to_string()))?;
        let spec = self.specialize_cached(&shapes, capacity)?;
        let inputs: Vec<Tensor> = inputs.iter().map(rt::contiguous).collect();
        let ptrs = place.pointers(&inputs, caches);
        let mut arena = self.take_arena(spec.plan.arena_bytes)?;
        let result = self.execute(&spec, &ptrs, &mut arena, None);
        self.arenas.lock().expect("arena lock").push(arena);
        let outputs = result?;
        place.grow(caches, |i| &spec.outputs[i].1);
        Ok(place.others(outputs))
    }

    /// Where the caches sit among the graph's inputs and outputs.
    fn placement(&self) -> Placement<'_> {
        Placement {
            caches: &self.caches,
            inputs: self.graph.inputs.len(),
            outputs: self.graph.outputs.len(),
        }
    }

    /// [`CompiledModel::run`] of a model with caches: each past copied into a cache
    /// buffer just large enough, and each present read back out of it.
    fn run_through_caches(
        &self,
        inputs: &[Tensor],
        bindings: &Bindings,
    ) -> Result<Vec<Tensor>, RunError> {
        let axis = kiln_kernel::cache::SEQ_AXIS;
        let grown = |c: &KvCache| {
            let v = self.graph.outputs[c.output].1;
            let d = &self.graph.value_type(v).shape[axis];
            d.eval(bindings).and_then(|n| usize::try_from(n).ok())
        };
        let capacity = self.caches.iter().filter_map(grown).max().unwrap_or(0);
        (self.placement()).run_through(inputs, capacity, RunError::Input, |others, buffers| {
            self.run_cached(others, buffers)
        })
    }

    /// Runs the model once, timing every kernel (for `kiln bench --profile`). Graphs with
    /// data-dependent shapes are not profiled per kernel.
    pub fn profile(&self, inputs: &[Tensor]) -> Result<Vec<KernelTime>, RunError> {
        if let Mode::Stages(_) = self.mode {
            return Ok(Vec::new());
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        if !self.caches.is_empty() {
            return Err(RunError::Input(
                "a model with in-place KV caches is not profiled per kernel".into(),
            ));
        }
        let spec = self.specialize(&shapes)?;
        let inputs: Vec<Tensor> = inputs.iter().map(rt::contiguous).collect();
        let ptrs = input_pointers(&inputs);
        let mut arena = self.take_arena(spec.plan.arena_bytes)?;
        let mut times = Vec::new();
        let result = self.execute(&spec, &ptrs, &mut arena, Some(&mut times));
        self.arenas.lock().expect("arena lock").push(arena);
        result?;
        Ok(times
            .into_iter()
            .enumerate()
            .map(|(k, time)| {
                let node = spec.program.kernel_nodes[k];
                KernelTime {
                    kernel: spec.program.kernels[k].label_at(&spec.bindings),
                    node,
                    name: self.graph.nodes[node].name.clone(),
                    op: self.graph.nodes[node].op.name(),
                    time,
                }
            })
            .collect())
    }

    /// Runs the stages in order, passing the values that cross stage boundaries.
    fn run_stages(
        &self,
        stages: &[(Stage, Option<CompiledModel>)],
        inputs: &[Tensor],
    ) -> Result<Vec<Tensor>, RunError> {
        let mut values: HashMap<kiln_ir::ValueId, Tensor> = HashMap::new();
        for ((_, v), t) in self.graph.inputs.iter().zip(inputs) {
            values.insert(*v, t.clone());
        }
        for (stage, model) in stages {
            let args: Vec<Tensor> = stage.inputs.iter().map(|v| values[v].clone()).collect();
            let outputs = match (model, &stage.runtime) {
                (Some(model), _) => model.run(&args)?,
                (None, Some(op)) => {
                    interp::eval_op(op, &args, &Bindings::new()).map_err(|e| RunError::Call {
                        node: 0,
                        name: stage.graph.nodes[0].name.clone(),
                        source: CallError {
                            op: op.name(),
                            message: e.to_string(),
                        },
                    })?
                }
                (None, None) => unreachable!("a stage is compiled unless it is a runtime op"),
            };
            for (v, t) in stage.outputs.iter().zip(outputs) {
                values.insert(*v, t);
            }
        }
        Ok(self
            .graph
            .outputs
            .iter()
            .map(|(_, v)| values[v].clone())
            .collect())
    }

    /// Runs `spec` on the inputs at `inputs` (one address per graph input: tensors of
    /// the shapes it was specialized for, or cache buffers of its capacity).
    fn execute(
        &self,
        spec: &Specialized,
        inputs: &[*mut u8],
        arena: &mut Arena,
        profile: Option<&mut Vec<Duration>>,
    ) -> Result<Vec<Tensor>, RunError> {
        let mut first: Vec<*mut u8> = Vec::with_capacity(1 + inputs.len() + spec.consts.len());
        first.push(arena.ptr());
        first.extend_from_slice(inputs);
        first.extend(spec.consts.iter().map(|&a| a as *mut u8));
        let mut ptrs = spec.run.table(&first);
        let mut unwritten = own_outputs(spec)?;
        for (b, t) in &mut unwritten {
            ptrs[spec.run.slots[*b].0 as usize] = t.as_mut_ptr();
        }
        let fns: Vec<Option<rt::KernelFn>> = (spec.code.kernels.iter())
            .map(|k| k.as_ref().map(|(f, _)| *f))
            .collect();
        let packed: Vec<Option<&Packed>> = spec.packed.iter().map(|p| p.as_deref()).collect();
        // SAFETY: the slot table holds the arena (sized by the plan), the inputs (checked
        // against the graph) and the constants the kernels were compiled against.
        let code = rt::Code {
            kernels: &fns,
            packed: &packed,
            op_call: Some(runtime::kiln_rt_op_call),
        };
        unsafe { rt::run(&spec.run, &code, &ptrs, &self.pool, profile) }?;
        let own: Vec<(BufId, Tensor)> = (unwritten.into_iter())
            // SAFETY: the run wrote every output buffer in full, as its readers below
            // also rely on.
            .map(|(b, t)| (b, unsafe { t.assume_written() }))
            .collect();
        let mem = SlotMemory {
            ptrs: &ptrs,
            slots: &spec.run.slots,
        };
        Ok(spec
            .outputs
            .iter()
            .map(|(b, shape)| match own.iter().find(|(o, _)| o == b) {
                Some((_, t)) => t.clone(),
                // A cache's present is its buffer, which the caller holds.
                None if spec
                    .program
                    .caches
                    .iter()
                    .any(|c| spec.program.outputs[c.output] == *b) =>
                {
                    Tensor::zeros(spec.program.buffers[*b].dtype, &[0]).expect("empty")
                }
                None => {
                    let dtype = spec.program.buffers[*b].dtype;
                    // SAFETY: the run wrote every output buffer, sized by the plan.
                    unsafe { mem.read(*b, dtype, shape) }.expect("planned size matches the shape")
                }
            })
            .collect())
    }

    fn take_arena(&self, bytes: usize) -> Result<Arena, rt::ArenaError> {
        let mut arenas = self.arenas.lock().expect("arena lock");
        let mut arena = arenas.pop().unwrap_or_default();
        if let Err(e) = arena.reserve(bytes) {
            arenas.push(arena);
            return Err(e);
        }
        Ok(arena)
    }
}

/// The address of each input's first element.
fn input_pointers(inputs: &[Tensor]) -> Vec<*mut u8> {
    (inputs.iter())
        .map(|t| kiln_ir::dispatch!(t, a => a.as_ptr() as *mut u8))
        .collect()
}

/// A tensor of its own for each output that the plan holds in the arena, which the run
/// writes straight into (its slot points there): a large output, such as a decoder's
/// logits, is then neither copied out of the arena nor held twice.
fn own_outputs(spec: &Specialized) -> Result<Vec<(BufId, Unwritten)>, RunError> {
    let mut own: Vec<(BufId, Unwritten)> = Vec::new();
    for (b, shape) in &spec.outputs {
        let buffer = &spec.program.buffers[*b];
        let whole_slot = spec.run.slots[*b].1 == 0;
        // A buffer that holds two outputs (one a reshape of the other) is read out.
        let shared = spec.outputs.iter().filter(|(o, _)| o == b).count() > 1;
        if !matches!(buffer.kind, BufferKind::Temp) || !whole_slot || shared {
            continue;
        }
        let t = Unwritten::new(buffer.dtype, shape).map_err(RunError::Output)?;
        own.push((*b, t));
    }
    Ok(own)
}

/// How long one kernel took in [`CompiledModel::profile`].
#[derive(Clone, Debug)]
pub struct KernelTime {
    /// The kernel's label (`loop[..]`, `matmul ..`, …).
    pub kernel: String,
    /// The graph node it comes from.
    pub node: usize,
    /// The node's source name.
    pub name: String,
    /// The node's op.
    pub op: String,
    /// Wall time.
    pub time: Duration,
}

/// The element operations of `k`, which decide whether it is split over threads.
fn work(k: &Kernel) -> Dim {
    let n = |dims: &[Dim]| dims.iter().product::<Dim>();
    let nodes = |count: usize| Dim::from(count);
    match k {
        Kernel::Loop(l) => &n(&l.shape) * &nodes(l.expr.nodes.len()),
        Kernel::Reduce(r) => &(&n(&r.shape) * &n(&r.reduced)) * &nodes(r.value.nodes.len()),
        Kernel::Row(r) => {
            let per_element =
                r.map.nodes.len() + r.stats.iter().map(|s| s.value.nodes.len()).sum::<usize>();
            &(&n(&r.shape) * &r.len) * &nodes(per_element)
        }
        Kernel::Call(_) => Dim::from(0i64),
    }
}

/// The outer-loop extent of each kernel's code (`None` for calls).
pub fn kernel_extents(code: &Compiled) -> Vec<Option<Dim>> {
    code.kernels
        .iter()
        .map(|k| k.as_ref().map(|(_, e)| e.clone()))
        .collect()
}

/// Drops constant buffer `buf` of `layout` (its data now lives packed) from the program,
/// the slot table and `graph`, whose constant node holding the same data keeps its type
/// but holds an empty tensor. Nothing reads the buffer after this: its one reader is the
/// packed call, which reads only the packed copy (`run_call`).
fn release_weight(layout: &mut Layout, graph: &mut Graph, buf: BufId) {
    let buffer = &mut layout.program.buffers[buf];
    let BufferKind::Const(t) = &buffer.kind else {
        return;
    };
    let empty = Tensor::zeros(t.dtype(), &[0]).expect("an empty tensor allocates nothing");
    let addr = kiln_ir::dispatch!(t, a => a.as_ptr() as usize);
    buffer.kind = BufferKind::Const(empty.clone());
    for c in layout.consts.iter_mut().filter(|c| **c == addr) {
        *c = 0;
    }
    for node in &mut graph.nodes {
        if let kiln_ir::Op::Const(t) = &node.op {
            if kiln_ir::dispatch!(t, a => a.as_ptr() as usize) == addr {
                node.op = kiln_ir::Op::Const(empty.clone());
            }
        }
    }
}

/// A graph scheduled and fused, with its slot table: everything but the code, which the
/// JIT compiles in memory and `kiln build` into an object.
pub struct Layout {
    /// The kernels.
    pub program: Program,
    /// Slot and byte offset of each buffer: slot 0 the arena, then the inputs, the
    /// constants and one slot per temporary (pointing into the arena at its offset for the
    /// run's shape); every offset is 0.
    pub slots: Vec<(u32, usize)>,
    /// The constants' data addresses, in slot order after the inputs.
    pub consts: Vec<usize>,
    /// The temporaries, in slot order after the constants.
    pub temps: Vec<BufId>,
}

/// Schedules `graph` with the symbols in `bindings` substituted (the others stay free)
/// and fuses its loop nests: the steps both the JIT and ahead-of-time compilation take
/// before generating code. Every size already known is checked against `max_memory` first
/// (so scheduling multiplies only dims whose product fits); the others are checked at
/// each binding.
pub fn lay_out(
    graph: &Graph,
    bindings: &Bindings,
    max_memory: MemoryLimit,
) -> Result<Layout, CompileError> {
    lay_out_with(graph, bindings, max_memory, &[])
}

/// [`lay_out`] with `caches` appended in place.
pub fn lay_out_with(
    graph: &Graph,
    bindings: &Bindings,
    max_memory: MemoryLimit,
    caches: &[KvCache],
) -> Result<Layout, CompileError> {
    check_graph(graph, bindings, max_memory)?;
    let caps = kiln_kernel::schedule::Capabilities::default();
    let mut program = schedule_with(graph, bindings, caps, caches)?;
    fuse_loops(&mut program);
    let inputs = graph.inputs.len();
    let consts: Vec<usize> = (program.buffers.iter())
        .filter_map(|b| match &b.kind {
            BufferKind::Const(t) => Some(kiln_ir::dispatch!(t, a => a.as_ptr() as usize)),
            _ => None,
        })
        .collect();
    let (mut c, mut temps) = (0, Vec::new());
    let slots = (program.buffers.iter().enumerate())
        .map(|(i, b)| match &b.kind {
            BufferKind::Input(k) => (1 + *k as u32, 0),
            BufferKind::Const(_) => {
                c += 1;
                ((inputs + c) as u32, 0)
            }
            BufferKind::Temp => {
                temps.push(i);
                ((inputs + consts.len() + temps.len()) as u32, 0)
            }
            BufferKind::Iota => (0, 0),
        })
        .collect();
    Ok(Layout {
        program,
        slots,
        consts,
        temps,
    })
}

/// What the executor needs of a laid-out program to run it at any binding: one step per
/// kernel (`extents[i]` is the outer-loop extent of kernel `i`'s code, `None` for calls)
/// labelled with the node of `graph` it comes from, the buffers' sizes and lifetimes, and
/// the slot table.
pub fn symbolic(graph: &Graph, layout: &Layout, extents: &[Option<Dim>]) -> Symbolic {
    let p = &layout.program;
    let steps = (p.kernels.iter().zip(extents))
        .map(|(k, extent)| match k {
            Kernel::Call(c) => SymbolicStep::Call(c.clone()),
            k => SymbolicStep::Kernel {
                extent: extent.clone().unwrap_or(Dim::from(0i64)),
                work: work(k),
                serial: k.serial(),
            },
        })
        .collect();
    let nodes = (p.kernel_nodes.iter())
        .map(|&n| StepNode {
            name: graph.nodes[n].name.clone(),
            op: graph.nodes[n].op.name(),
        })
        .collect();
    Symbolic {
        symbols: p.symbols.clone(),
        bytes: p.buffers.iter().map(|b| b.bytes()).collect(),
        lifetimes: lifetimes(p),
        steps,
        slots: layout.slots.clone(),
        temps: layout.temps.clone(),
        first_temp_slot: (1 + graph.inputs.len() + layout.consts.len()) as u32,
        nodes,
        outputs: p
            .outputs
            .iter()
            .copied()
            .zip(p.output_shapes.clone())
            .collect(),
        assumptions: (kiln_ir::assumptions(graph).into_iter())
            .chain(kiln_kernel::bounds::access_assumptions(graph, p))
            .collect(),
        held: Default::default(),
    }
}

/// A lowering failure of kernel `kernel`, named by its graph node.
pub fn lower_error(
    graph: &Graph,
    program: &Program,
    kernel: usize,
    source: LowerError,
) -> CompileError {
    let index = program.kernel_nodes[kernel];
    let node = &graph.nodes[index];
    CompileError::Lower {
        node: index,
        name: node.name.clone(),
        op: node.op.name(),
        source,
    }
}
