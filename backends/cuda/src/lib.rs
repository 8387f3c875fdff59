//! kiln's GPU backend: the kernel layer's [`Program`] as a PTX module.
//!
//! Every loop nest, reduction and row kernel of the description becomes one `.entry`
//! (`kernels`) whose parameters are the global addresses of the buffers it touches, then
//! the values of all the program's symbols (`s0, s1, …` in [`Program::symbols`] order),
//! then, when it gathers or scatters, the address of a status word. Sizes inside the
//! kernel are computed from the symbols, so one module serves every binding, as the CPU
//! code does. A [`Launch`] says how to start each entry: which buffers to pass, and how
//! many items it has (one thread each, striding over the grid).
//!
//! A matrix product (with its epilogue) runs on tensor cores ([`Precision`]; or, as
//! `Precision::F32`, as a reduction over its depth, a warp per output), attention as a
//! warp per query row with an online softmax, and convolution as its definition, a warp
//! per output element, which an implicit GEMM will replace. [`runtime`] runs a module on
//! a device: the CUDA driver, or any other [`runtime::Gpu`]. Of the reference-kernel ops,
//! `Scan` and `TopK` have PTX lowerings (`scan`, `topk`), and a graph with `NonZero`
//! runs as stages around it ([`staged`], `runtime::staged`); quantized linear layers
//! have none yet: [`emit`] refuses a program that holds one, naming it, rather than
//! leaving it out.
//!
//! ```
//! use kiln_ir::{parse, Bindings};
//! let g = parse(
//!     "graph @g(%x: f32[n]) -> f32[n] {
//!         %y = exp %x
//!         return %y
//!     }",
//! )
//! .unwrap();
//! let program = kiln_cuda::program(&g, &Bindings::new()).unwrap();
//! let module = kiln_cuda::emit(&program, kiln_cuda::Target::Sm80).unwrap();
//! assert!(module.ptx.contains(".entry kiln_k0("));
//! assert!(module.ptx.contains("ex2.approx.f32"));
//! ```
#![warn(missing_docs)]

mod attention;
mod conv;
mod cx;
pub mod device;
mod expr;
mod gemm;
mod half;
mod kernels;
mod math;
mod matmul;
mod nonzero;
mod ptx;
pub mod runtime;
mod scan;
pub mod staged;
mod topk;

use kiln_ir::{Assumption, Bindings, Dim, Graph};
use kiln_kernel::kernel::{BufId, Call, Kernel, Program};
use std::fmt::Write as _;

pub use cx::BLOCK;

/// The GPU architecture a module is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Ampere (`sm_80`), the baseline: `min.NaN`/`max.NaN` and everything below need it.
    Sm80,
    /// Hopper (`sm_90`).
    Sm90,
}

impl Target {
    /// The name `.target` and ptxas use.
    pub fn name(self) -> &'static str {
        match self {
            Target::Sm80 => "sm_80",
            Target::Sm90 => "sm_90",
        }
    }
}

/// How an f32 matrix product is computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// In f32 on the ordinary cores: a warp's dot product per output, the baseline.
    F32,
    /// On tensor cores with each operand split into two tf32 parts, three products per
    /// pair (`aₕbₕ + aₕbₗ + aₗbₕ`): about f32's accuracy.
    #[default]
    Tf32x3,
    /// On tensor cores, each operand rounded to tf32 (10 mantissa bits).
    Tf32,
    /// On tensor cores, each operand rounded to bf16 (7 mantissa bits): `mma.m16n8k16`.
    Bf16,
}

impl Precision {
    /// The name `--precision` takes.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32x3 => "tf32x3",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The precision named `name`, if any.
    pub fn from_name(name: &str) -> Option<Precision> {
        [
            Precision::F32,
            Precision::Tf32x3,
            Precision::Tf32,
            Precision::Bf16,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }
}

/// What [`emit_with`] writes a module for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// The GPU architecture.
    pub target: Target,
    /// How matrix products are computed.
    pub precision: Precision,
}

/// Why a program cannot be written as PTX.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// An operation or type the backend has no PTX for.
    #[error("no PTX lowering for {0}")]
    Unsupported(String),
    /// A size names a symbol the program does not list (a scheduler bug).
    #[error("size mentions symbol `{0}`, which the program does not list")]
    UnknownSymbol(String),
    /// One kernel failed; names it and the graph node it comes from.
    #[error("kernel {kernel} ({label}, from node {node}): {source}")]
    Kernel {
        /// Index in [`Program::kernels`].
        kernel: usize,
        /// The graph node (see [`Program::kernel_nodes`]).
        node: usize,
        /// The kernel's label, e.g. `loop[n]`.
        label: String,
        /// What went wrong.
        source: Box<EmitError>,
    },
}

/// How to start one entry of the module.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Launch {
    /// Index of the kernel in [`Program::kernels`].
    pub kernel: usize,
    /// The entry's name in the module.
    pub entry: String,
    /// The buffers passed as the first parameters, in order.
    pub buffers: Vec<BufId>,
    /// Whether a status word's address follows the symbols: the entry stores
    /// `kernel + 1` there when an index is out of range, and stops.
    pub status: bool,
    /// Independent items.
    pub items: Dim,
    /// Threads per item: 1, a warp (32) for the reductions and rows it cooperates on, or
    /// a CTA for a tensor-core GEMM's tile.
    pub lanes: u32,
    /// Threads per block.
    pub block: u32,
    /// The items must run in order on one thread (a scatter whose indices may repeat).
    pub serial: bool,
}

impl Launch {
    /// Grid and block sizes for `bindings`; `None` when a symbol is unbound or the count
    /// is negative. Any grid of whole warps is correct (threads stride over the items);
    /// this one gives each item its own thread, warp or CTA, up to 65535 blocks.
    pub fn geometry(&self, bindings: &Bindings) -> Option<([u32; 3], [u32; 3])> {
        if self.serial {
            return Some(([1, 1, 1], [1, 1, 1]));
        }
        let items = u64::try_from(self.items.eval(bindings)?).ok()?;
        let threads = items.checked_mul(u64::from(self.lanes))?;
        let blocks = threads.div_ceil(u64::from(self.block)).clamp(1, 65_535) as u32;
        Some(([blocks, 1, 1], [self.block, 1, 1]))
    }
}

/// A PTX module and how to launch its entries, in program order.
#[derive(Clone, Debug)]
pub struct Module {
    /// The module's text.
    pub ptx: String,
    /// One launch per kernel of the program.
    pub launches: Vec<Launch>,
}

/// What a binding of the symbols must satisfy before any entry is launched: the graph's
/// own assumptions, and the reach of every affine access that is not provably inside its
/// buffer (kernels read a symbolic axis as never broadcasting). The entries check only
/// their data-dependent indices; a launcher that skips these conditions can read or write
/// outside a buffer, so it must refuse a binding that breaks one, as the CPU backend does.
pub fn launch_conditions(graph: &Graph, program: &Program) -> Vec<Assumption> {
    let mut conditions = kiln_ir::assumptions(graph);
    conditions.extend(kiln_kernel::bounds::access_assumptions(graph, program));
    conditions
}

/// `graph` as the kernel layer's program, prepared as this backend translates it:
/// scheduled with the symbols in `fixed` bound and the rest left free, then loop-fused.
pub fn program(
    graph: &Graph,
    fixed: &Bindings,
) -> Result<Program, kiln_kernel::schedule::ScheduleError> {
    let caps = kiln_kernel::schedule::Capabilities {
        half_elementwise: true,
        float_attention: true,
        half_matmul: true,
    };
    let mut program = kiln_kernel::schedule::schedule_for(graph, fixed, caps)?;
    kiln_kernel::fuse_loops::fuse_loops(&mut program);
    Ok(program)
}

/// Writes `program` as a PTX module for `target`, matrix products in the default
/// [`Precision`].
pub fn emit(program: &Program, target: Target) -> Result<Module, EmitError> {
    let precision = Precision::default();
    emit_with(program, Options { target, precision })
}

/// Writes `program` as a PTX module as `options` say.
pub fn emit_with(program: &Program, options: Options) -> Result<Module, EmitError> {
    let mut ptx = header(options.target);
    let (entries, launches) = emit_entries(program, options.precision, "kiln_")?;
    ptx.push_str(&entries);
    Ok(Module { ptx, launches })
}

/// A module's first lines, for `target`.
fn header(target: Target) -> String {
    let mut ptx = String::new();
    let _ = writeln!(ptx, "// Generated by kiln-cuda.");
    let _ = writeln!(ptx, ".version 8.0");
    let _ = writeln!(ptx, ".target {}", target.name());
    let _ = writeln!(ptx, ".address_size 64\n");
    ptx
}

/// The entries of `program`, named `{prefix}k{i}`, and their launches.
fn emit_entries(
    program: &Program,
    precision: Precision,
    prefix: &str,
) -> Result<(String, Vec<Launch>), EmitError> {
    let mut ptx = String::new();
    let mut launches = Vec::new();
    for (i, kernel) in program.kernels.iter().enumerate() {
        let name = format!("{prefix}k{i}");
        let (text, launch) =
            entry(program, i, kernel, precision, name).map_err(|e| EmitError::Kernel {
                kernel: i,
                node: program.kernel_nodes.get(i).copied().unwrap_or(usize::MAX),
                label: kernel.label(),
                source: Box::new(e),
            })?;
        ptx.push_str(&text);
        ptx.push('\n');
        launches.push(launch);
    }
    Ok((ptx, launches))
}

/// A runtime call other than the products, attention and convolution: the ones with a
/// PTX lowering (a scan, a thread per lane; top-k, a warp per lane) as their item count
/// and threads per item, or the refusal naming the call.
fn other_call(cx: &mut cx::Cx, kernel: &Kernel, c: &Call) -> Result<(Dim, u32), EmitError> {
    if let Call::Op(op) = c {
        let (x, outs) = (op.inputs.first(), &op.outputs[..]);
        match (&op.op, x, outs) {
            (
                &kiln_ir::Op::Scan {
                    kind,
                    axis,
                    exclusive,
                    reverse,
                },
                Some(x),
                [y],
            ) => return Ok((scan::scan(cx, x, y, kind, axis, exclusive, reverse)?, 1)),
            (
                &kiln_ir::Op::TopK {
                    axis, k, largest, ..
                },
                Some(x),
                [values, indices],
            ) => {
                let items = topk::topk(cx, x, (values, indices), axis, k, largest)?;
                return Ok((items, kernels::WARP));
            }
            _ => {}
        }
    }
    let what = match c {
        Call::QuantLinear(_) => "quant_linear".to_string(),
        Call::Op(op) => op.op.name().to_string(),
        _ => kernel.label(),
    };
    Err(EmitError::Unsupported(format!("runtime call {what}")))
}

/// One kernel's entry text and launch.
fn entry(
    program: &Program,
    i: usize,
    kernel: &Kernel,
    precision: Precision,
    name: String,
) -> Result<(String, Launch), EmitError> {
    let mut buffers = kernel.reads();
    buffers.extend(kernel.writes());
    let mut cx = cx::Cx::new(program, i, &buffers);
    let mut block = BLOCK;
    let (items, lanes) = match kernel {
        Kernel::Loop(l) => {
            kernels::loop_nest(&mut cx, l)?;
            (l.shape.iter().product(), 1)
        }
        Kernel::Reduce(r) => {
            kernels::reduce(&mut cx, r)?;
            (r.shape.iter().product(), kernels::reduce_team(r).lanes())
        }
        Kernel::Row(r) => {
            kernels::row(&mut cx, r)?;
            (r.shape.iter().product(), kernels::row_team(r).lanes())
        }
        Kernel::Call(Call::MatMul(m))
            if precision != Precision::F32 || matmul::half(m, program)? =>
        {
            matmul::check_gemm(m, program)?;
            gemm::gemm(&mut cx, m, precision)?;
            block = gemm::THREADS;
            (gemm::tiles(m), gemm::THREADS)
        }
        Kernel::Call(Call::MatMul(m)) => {
            let r = matmul::as_reduce(m, program)?;
            kernels::reduce(&mut cx, &r)?;
            (r.shape.iter().product(), kernels::reduce_team(&r).lanes())
        }
        Kernel::Call(Call::Attention(a)) => {
            attention::attention(&mut cx, a)?;
            let d = &a.dims;
            let rows: Dim = d.leading.iter().chain([&d.heads, &d.q_len]).product();
            (rows, kernels::WARP)
        }
        Kernel::Call(Call::Conv(c)) => {
            conv::conv(&mut cx, c)?;
            (c.y_shape.iter().product(), kernels::WARP)
        }
        Kernel::Call(c) => other_call(&mut cx, kernel, c)?,
    };
    cx.e.op("ret");
    let buffers = cx.buffers.clone();
    let (text, status) = cx.finish(&name);
    let launch = Launch {
        kernel: i,
        entry: name,
        buffers,
        status,
        items,
        lanes,
        block,
        serial: kernel.serial(),
    };
    Ok((text, launch))
}
