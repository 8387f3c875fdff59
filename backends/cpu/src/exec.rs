//! The compiled model: per-shape specializations (schedule, memory plan, native code) kept
//! in a cache, a pool of arenas, and the worker pool that runs the kernels.
//!
//! Dynamic shapes are handled by specialization: the first run at a new set of input shapes
//! binds the symbols, schedules, plans and compiles for those shapes; later runs at the same
//! shapes reuse that code without compiling. Graphs with data-dependent shapes run as stages
//! ([`crate::stages`]), each specialized the same way.

use crate::fuse_loops::fuse_loops;
use crate::kernel::{BufId, BufferKind, Call, Kernel, Program};
use crate::lower::{self, Compiled, LowerError};
use crate::plan::{plan, MemoryPlan};
use crate::runtime::exec::{self as rt, Arena, RunPlan, SlotMemory, Step, StepError, StepNode};
use crate::runtime::{self, pool::ThreadPool, CallError, Packed};
use crate::schedule::{schedule, ScheduleError};
use crate::stages::{split, Stage};
use kiln_ir::{check_bytes, check_graph, interp, Bindings, Graph, MemoryLimit, SizeError};
use kiln_ir::{Tensor, TensorType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How to compile.
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads, including the caller's (default: every core).
    pub threads: usize,
    /// The most bytes any value, constant or the arena may take; checked when code is laid
    /// out for a set of input shapes, before anything is allocated (default:
    /// [`MemoryLimit::default`], from the machine's memory).
    pub max_memory: MemoryLimit,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_memory: MemoryLimit::default(),
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
    /// Set when the graph has data-dependent shapes: it then runs as these stages.
    stages: Option<Vec<(Stage, Option<CompiledModel>)>>,
    cache: Mutex<HashMap<Vec<Vec<usize>>, Arc<Specialized>>>,
    /// Constant weights packed for their calls, shared by every specialization.
    packed: Mutex<HashMap<PackKey, Arc<Packed>>>,
    arenas: Mutex<Vec<Arena>>,
    max_memory: MemoryLimit,
}

/// What a packed weight was made from: the call's kind (0 for a matmul, 1 + the
/// activation scheme for a quantized layer), the weight's address and view offset (the
/// scale's address for a quantized layer), its strides, and k × n.
type PackKey = (u8, usize, usize, isize, isize, usize, usize);

/// Everything compiled for one set of input shapes.
pub struct Specialized {
    /// The kernels.
    pub program: Program,
    /// The arena layout.
    pub plan: MemoryPlan,
    code: Compiled,
    /// What the runtime's executor runs: the steps and where each buffer lives.
    run: RunPlan,
    /// Addresses of the constants, in slot order after the inputs.
    consts: Vec<usize>,
    /// The pre-packed constant weight of each call kernel that has one.
    packed: Vec<Option<Arc<Packed>>>,
    /// How long scheduling, planning and code generation took.
    pub compile_time: Duration,
}

impl CompiledModel {
    /// Compiles `graph`. Every node is checked for support now; code is generated now when
    /// the input shapes are static, otherwise on the first run at each new shape.
    pub fn new(graph: Graph, opts: &Options) -> Result<CompiledModel, CompileError> {
        let pool = Arc::new(ThreadPool::new(opts.threads));
        CompiledModel::with_pool(graph, pool, opts.max_memory)
    }

    fn with_pool(
        graph: Graph,
        pool: Arc<ThreadPool>,
        max_memory: MemoryLimit,
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
                            )?),
                        };
                        Ok((st, model))
                    })
                    .collect::<Result<Vec<_>, CompileError>>()?,
            ),
            None => None,
        };
        let model = CompiledModel {
            graph,
            pool,
            stages,
            cache: Mutex::new(HashMap::new()),
            packed: Mutex::new(HashMap::new()),
            arenas: Mutex::new(Vec::new()),
            max_memory,
        };
        if model.stages.is_some() {
            return Ok(model);
        }
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

    /// The code for these input shapes (compiled on first use, then cached).
    pub fn specialize(&self, shapes: &[Vec<usize>]) -> Result<Arc<Specialized>, RunError> {
        if let Some(s) = self.cache.lock().expect("cache lock").get(shapes) {
            return Ok(s.clone());
        }
        let types: Vec<TensorType> = self
            .graph
            .inputs
            .iter()
            .zip(shapes)
            .map(|((_, v), s)| TensorType::fixed(self.graph.value_type(*v).dtype, s))
            .collect();
        let bindings = interp::bind_input_types(&self.graph, &types)
            .map_err(|e| RunError::Input(e.to_string()))?;
        let spec = Arc::new(self.compile_for(&bindings)?);
        self.cache
            .lock()
            .expect("cache lock")
            .insert(shapes.to_vec(), spec.clone());
        Ok(spec)
    }

    fn compile_for(&self, bindings: &Bindings) -> Result<Specialized, CompileError> {
        let start = Instant::now();
        let Layout {
            program,
            plan,
            slots,
            consts,
        } = lay_out(&self.graph, bindings, self.max_memory)?;
        let code = lower::compile(&program, &slots)
            .map_err(|(kernel, source)| lower_error(&self.graph, &program, kernel, source))?;
        let packed = self.prepack_weights(&program);
        let extents: Vec<Option<u64>> = code.kernels.iter().map(|k| k.map(|(_, e)| e)).collect();
        let run = run_plan(&self.graph, &program, &plan, slots, &extents);
        Ok(Specialized {
            program,
            plan,
            code,
            run,
            consts,
            packed,
            compile_time: start.elapsed(),
        })
    }

    /// Packs the constant weight of every call once per model (weights are reused by every
    /// specialization), so that no run packs a weight again.
    fn prepack_weights(&self, program: &Program) -> Vec<Option<Arc<Packed>>> {
        let constant = |buf: BufId| match &program.buffers.get(buf)?.kind {
            BufferKind::Const(t) => Some(kiln_ir::dispatch!(t, a => a.as_ptr().cast::<u8>())),
            _ => None,
        };
        let packed = |k: &Kernel| {
            let Kernel::Call(call) = k else {
                return None;
            };
            let key = match call {
                Call::MatMul(mm) => (
                    0,
                    constant(mm.b.buf)? as usize,
                    *mm.b.batch_offsets.first()?,
                    mm.b.row_stride,
                    mm.b.col_stride,
                    mm.k,
                    mm.n,
                ),
                Call::QuantLinear(q) => (
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
                _ => return None,
            };
            if let Some(p) = self.packed.lock().expect("pack lock").get(&key) {
                return Some(p.clone());
            }
            // SAFETY: each constant's data is what the schedule sized for the call.
            let p = Arc::new(unsafe { runtime::prepack(call, &constant) }?);
            self.packed
                .lock()
                .expect("pack lock")
                .insert(key, p.clone());
            Some(p)
        };
        program.kernels.iter().map(packed).collect()
    }

    /// Runs the model on `inputs` (in graph-input order). Dtypes and shapes are checked
    /// against the graph before any generated code runs.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        let types: Vec<TensorType> = inputs
            .iter()
            .map(|t| TensorType::fixed(t.dtype(), t.shape()))
            .collect();
        interp::bind_input_types(&self.graph, &types)
            .map_err(|e| RunError::Input(e.to_string()))?;
        if let Some(stages) = &self.stages {
            return self.run_stages(stages, inputs);
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let spec = self.specialize(&shapes)?;
        let inputs: Vec<Tensor> = inputs.iter().map(rt::contiguous).collect();
        let mut arena = self.take_arena(spec.plan.arena_bytes)?;
        let result = self.execute(&spec, &inputs, &mut arena, None);
        self.arenas.lock().expect("arena lock").push(arena);
        result
    }

    /// Runs the model once, timing every kernel (for `kiln bench --profile`). Graphs with
    /// data-dependent shapes are not profiled per kernel.
    pub fn profile(&self, inputs: &[Tensor]) -> Result<Vec<KernelTime>, RunError> {
        if self.stages.is_some() {
            return Ok(Vec::new());
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let spec = self.specialize(&shapes)?;
        let inputs: Vec<Tensor> = inputs.iter().map(rt::contiguous).collect();
        let mut arena = self.take_arena(spec.plan.arena_bytes)?;
        let mut times = Vec::new();
        let result = self.execute(&spec, &inputs, &mut arena, Some(&mut times));
        self.arenas.lock().expect("arena lock").push(arena);
        result?;
        Ok(times
            .into_iter()
            .enumerate()
            .map(|(k, time)| {
                let node = spec.program.kernel_nodes[k];
                KernelTime {
                    kernel: spec.program.kernels[k].label(),
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

    fn execute(
        &self,
        spec: &Specialized,
        inputs: &[Tensor],
        arena: &mut Arena,
        profile: Option<&mut Vec<Duration>>,
    ) -> Result<Vec<Tensor>, RunError> {
        let mut ptrs: Vec<*mut u8> = Vec::with_capacity(1 + inputs.len() + spec.consts.len());
        ptrs.push(arena.ptr());
        ptrs.extend(
            inputs
                .iter()
                .map(|t| kiln_ir::dispatch!(t, a => a.as_ptr() as *mut u8)),
        );
        ptrs.extend(spec.consts.iter().map(|&a| a as *mut u8));
        let fns: Vec<Option<rt::KernelFn>> = (spec.code.kernels.iter())
            .map(|k| k.map(|(f, _)| f))
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
        let mem = SlotMemory {
            ptrs: &ptrs,
            slots: &spec.run.slots,
        };
        Ok(spec
            .program
            .outputs
            .iter()
            .zip(&spec.program.output_shapes)
            .map(|(&b, shape)| {
                let dtype = spec.program.buffers[b].dtype;
                // SAFETY: the run wrote every output buffer, sized by the plan.
                unsafe { mem.read(b, dtype, shape) }.expect("planned size matches the shape")
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

fn work(k: &Kernel) -> usize {
    match k {
        Kernel::Loop(l) => l.shape.iter().product::<usize>() * l.expr.nodes.len(),
        Kernel::Reduce(r) => {
            r.shape.iter().product::<usize>()
                * r.reduced.iter().product::<usize>()
                * r.value.nodes.len()
        }
        Kernel::Row(r) => {
            let per_element =
                r.map.nodes.len() + r.stats.iter().map(|s| s.value.nodes.len()).sum::<usize>();
            r.shape.iter().product::<usize>() * r.len * per_element
        }
        Kernel::Call(_) => 0,
    }
}

/// Slot and offset of every buffer, and the constants' addresses.
fn slot_table(p: &Program, plan: &MemoryPlan, inputs: usize) -> (Vec<(u32, usize)>, Vec<usize>) {
    let mut consts = Vec::new();
    let slots = p
        .buffers
        .iter()
        .enumerate()
        .map(|(i, b)| match &b.kind {
            BufferKind::Temp => (0, plan.offsets[i].unwrap_or(0)),
            BufferKind::Input(k) => (1 + *k as u32, 0),
            BufferKind::Const(t) => {
                consts.push(kiln_ir::dispatch!(t, a => a.as_ptr() as usize));
                ((inputs + consts.len()) as u32, 0)
            }
        })
        .collect();
    (slots, consts)
}

/// A graph scheduled, fused and planned at one binding of its symbols: everything but the
/// code, which the JIT compiles in memory and `kiln build` into an object.
pub struct Layout {
    /// The kernels.
    pub program: Program,
    /// The arena layout.
    pub plan: MemoryPlan,
    /// Slot and byte offset of each buffer (slot 0 the arena, then inputs, then constants).
    pub slots: Vec<(u32, usize)>,
    /// The constants' data addresses, in slot order after the inputs.
    pub consts: Vec<usize>,
}

/// Schedules `graph` at `bindings`, fuses loop nests and plans the arena: the steps both
/// the JIT and ahead-of-time compilation take before generating code. Every value's size
/// is checked against `max_memory` first (so scheduling multiplies only dims whose product
/// fits), and the arena's after planning.
pub fn lay_out(
    graph: &Graph,
    bindings: &Bindings,
    max_memory: MemoryLimit,
) -> Result<Layout, CompileError> {
    check_graph(graph, bindings, max_memory)?;
    let mut program = schedule(graph, bindings)?;
    fuse_loops(&mut program);
    let plan = plan(&program);
    let arena = || "the arena (the temporaries live at once)".to_string();
    check_bytes(arena, Some(plan.arena_bytes as u128), max_memory)?;
    let (slots, consts) = slot_table(&program, &plan, graph.inputs.len());
    Ok(Layout {
        program,
        plan,
        slots,
        consts,
    })
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

/// The executor's view of a scheduled program: one step per kernel, with the work measure
/// that decides whether a kernel is split across threads.
///
/// `extents[i]` is the outer-loop extent of kernel `i`'s code (`None` for calls); each
/// step is labelled with the node of `graph` it comes from, for errors.
pub fn run_plan(
    graph: &Graph,
    program: &Program,
    plan: &MemoryPlan,
    slots: Vec<(u32, usize)>,
    extents: &[Option<u64>],
) -> RunPlan {
    let steps = (program.kernels.iter().zip(extents))
        .map(|(k, extent)| match k {
            Kernel::Call(c) => Step::Call(Box::new(c.clone())),
            k => Step::Kernel {
                extent: extent.unwrap_or(0),
                work: work(k),
                serial: k.serial(),
            },
        })
        .collect();
    let nodes = (program.kernel_nodes.iter())
        .map(|&n| StepNode {
            name: graph.nodes[n].name.clone(),
            op: graph.nodes[n].op.name(),
        })
        .collect();
    RunPlan {
        steps,
        slots,
        arena_bytes: plan.arena_bytes,
        nodes,
    }
}
