//! Lowering to machine code with Cranelift: every [`LoopNest`], [`Reduce`] and [`Row`] kernel of a
//! [`Program`] becomes one function of the form
//! `extern "C" fn(ptrs: *const *mut u8, dims: *const i64, start: u64, end: u64,
//! fault: *mut Fault) -> u64`, which runs the iterations `start..end` of the kernel's
//! outermost loop (so the executor can split that loop across threads) and returns 0, or
//! stops at the first data-dependent index outside its axis and reports it through `fault`
//! (see [`FnCx::checked_index`]). `ptrs` is the slot table: a buffer's address is
//! `ptrs[slot] + byte offset`, both fixed at compile time ([`Slots`]). `dims` holds the
//! values of the program's symbols, read once at entry; every symbolic size (an extent, a
//! stride, an offset) is computed from them ([`FnCx::size`]), every constant one is an
//! immediate, so code for fixed shapes is what it was before sizes became symbolic.
//! All kernels of a program go into one JIT module, finalized once; [`object`] puts the same
//! functions into a relocatable object file for ahead-of-time builds.

mod expr;
pub mod libcalls;
pub mod math;
mod nest;
pub mod object;
mod ops;
mod row;

use crate::kernel::{BufId, BufferKind, Kernel, LoopNest, Program, Reduce, Row};
use cranelift_codegen::ir::{
    types, AbiParam, Block, FuncRef, InstBuilder, MemFlagsData, Signature, Value,
};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module};
use kiln_ir::{Atom, BinaryOp, DType, Dim, UnaryOp};
use libcalls::Libcall;
use std::collections::HashMap;
use thiserror::Error;

/// Why a kernel could not be lowered.
#[derive(Debug, Error)]
pub enum LowerError {
    /// A dtype with no code generation (f16/bf16 run in the runtime).
    #[error("no code generation for dtype {0}")]
    Dtype(DType),
    /// An op at a dtype it does not support.
    #[error("cannot lower {0}")]
    Op(String),
    /// Cranelift refused the function (a bug in kiln).
    #[error("code generation failed: {0}")]
    Codegen(String),
    /// The host CPU is not supported by Cranelift.
    #[error("unsupported host: {0}")]
    Host(String),
    /// An object-file table names a symbol the object does not define as that kind (a bug
    /// in the caller that builds the artifact).
    #[error("bad table entry: {0}")]
    Symbol(String),
}

pub use crate::runtime::exec::KernelFn;

/// The native code of one program: one entry per kernel (`None` for runtime calls), with
/// the extent of the loop the entry splits.
pub struct Compiled {
    /// Owns the code; dropping it frees the functions.
    _module: JITModule,
    /// Entry points and outer-loop extents, by kernel index.
    pub kernels: Vec<Option<(KernelFn, Dim)>>,
}

// SAFETY: after `finalize_definitions` the module's code is immutable; the function
// pointers are plain code addresses, callable from any thread.
unsafe impl Send for Compiled {}
// SAFETY: as above; nothing in `Compiled` is mutated after construction.
unsafe impl Sync for Compiled {}

/// Where a buffer lives: a slot of the pointer table and a byte offset in it.
pub trait Slots {
    /// The slot and byte offset of `buf`.
    fn slot(&self, buf: BufId) -> (u32, usize);
}

/// A slot table as the executor keeps it: slot and byte offset by buffer.
impl Slots for Vec<(u32, usize)> {
    fn slot(&self, buf: BufId) -> (u32, usize) {
        self[buf]
    }
}

/// Compiles every loop, reduction and row kernel of `p`.
/// On failure, returns the index of the kernel that failed with the error.
pub fn compile(p: &Program, slots: &dyn Slots) -> Result<Compiled, (usize, LowerError)> {
    let mut module = new_module().map_err(|e| (0, e))?;
    let naming = KernelNaming {
        name: &|i| format!("kernel{i}"),
        linkage: Linkage::Local,
    };
    let ids = define_program(&mut module, p, slots, &naming)?;
    module
        .finalize_definitions()
        .map_err(|e| (0, LowerError::Codegen(e.to_string())))?;
    let kernels = ids
        .into_iter()
        .map(|e| {
            e.map(|DefinedKernel { id, extent }| {
                let ptr = module.get_finalized_function(id);
                // SAFETY: `ptr` was defined with the `KernelFn` signature (see `kernel_sig`).
                (
                    unsafe { std::mem::transmute::<*const u8, KernelFn>(ptr) },
                    extent,
                )
            })
        })
        .collect();
    Ok(Compiled {
        _module: module,
        kernels,
    })
}

/// How the kernels of a program are declared in a module: the JIT keeps them local, an
/// object file exports them under names the runtime can reference.
pub(crate) struct KernelNaming<'n> {
    /// The symbol of kernel `i`.
    pub name: &'n dyn Fn(usize) -> String,
    pub linkage: Linkage,
}

/// A kernel function in a module and the extent of the loop it splits.
pub(crate) struct DefinedKernel {
    pub id: FuncId,
    pub extent: Dim,
}

/// Declares and defines every loop, reduction and row kernel of `p` in `module`: the one
/// lowering that both the JIT and object files use, so their code is identical.
/// Returns each kernel's function and outer-loop extent (`None` for runtime calls), or the
/// index of the kernel that failed with the error.
pub(crate) fn define_program<M: Module>(
    module: &mut M,
    p: &Program,
    slots: &dyn Slots,
    naming: &KernelNaming<'_>,
) -> Result<Vec<Option<DefinedKernel>>, (usize, LowerError)> {
    let mut ids = Vec::with_capacity(p.kernels.len());
    let mut state = ModuleState {
        ctx: module.make_context(),
        fctx: FunctionBuilderContext::new(),
        libcalls: HashMap::new(),
    };
    for (i, kernel) in p.kernels.iter().enumerate() {
        let body = match kernel {
            Kernel::Loop(l) => Body::Loop(l),
            Kernel::Reduce(r) => Body::Reduce(r),
            Kernel::Row(r) => Body::Row(r),
            Kernel::Call(_) => {
                ids.push(None);
                continue;
            }
        };
        let sig = kernel_sig(module);
        let id = module
            .declare_function(&(naming.name)(i), naming.linkage, &sig)
            .map_err(|e| (i, LowerError::Codegen(e.to_string())))?;
        let extent = define(module, &mut state, p, slots, &body, id, i).map_err(|e| (i, e))?;
        ids.push(Some(DefinedKernel { id, extent }));
    }
    Ok(ids)
}

enum Body<'k> {
    Loop(&'k LoopNest),
    Reduce(&'k Reduce),
    Row(&'k Row),
}

struct ModuleState {
    ctx: Context,
    fctx: FunctionBuilderContext,
    libcalls: HashMap<Libcall, FuncId>,
}

/// Defines the declared function `id` as kernel `index` of `p`; returns its outer-loop extent.
fn define<M: Module>(
    module: &mut M,
    st: &mut ModuleState,
    p: &Program,
    slots: &dyn Slots,
    body: &Body<'_>,
    id: FuncId,
    index: usize,
) -> Result<Dim, LowerError> {
    st.ctx.func.signature = kernel_sig(module);
    let extent;
    {
        let b = FunctionBuilder::new(&mut st.ctx.func, &mut st.fctx);
        let mut cx = FnCx::new(b, module, &mut st.libcalls, p, slots);
        extent = match body {
            Body::Loop(l) => cx.loop_nest(l)?,
            Body::Reduce(r) => cx.reduce(r)?,
            Body::Row(r) => cx.row(r)?,
        };
        if let Some(e) = cx.error.take() {
            return Err(e);
        }
        let ok = cx.b.ins().iconst(types::I64, 0);
        cx.b.ins().return_(&[ok]);
        cx.emit_fault_exit();
        cx.b.seal_all_blocks();
        let config = cx.module.isa().frontend_config();
        cx.b.finalize(config);
    }
    module
        .define_function(id, &mut st.ctx)
        .map_err(|e| LowerError::Codegen(format!("kernel {index}: {e:?}")))?;
    module.clear_context(&mut st.ctx);
    Ok(extent)
}

/// `extern "C" fn(slots: *const *mut u8, dims: *const i64, start: u64, end: u64,
/// fault: *mut Fault) -> u64` in `module`'s calling convention (the one `KernelFn` and the
/// runtime's function table assume).
fn kernel_sig<M: Module + ?Sized>(module: &M) -> Signature {
    let mut sig = module.make_signature();
    for _ in 0..5 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig.returns.push(AbiParam::new(types::I64));
    sig
}

/// A JIT module for the host CPU, at `opt_level=speed`, with every libcall registered.
fn new_module() -> Result<JITModule, LowerError> {
    let isa = object::host_isa(object::Pic::No).map_err(|e| LowerError::Host(e.to_string()))?;
    let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    for lc in all_libcalls() {
        if let Some(addr) = lc.address() {
            jb.symbol(lc.name(), addr);
        }
    }
    Ok(JITModule::new(jb))
}

fn all_libcalls() -> impl Iterator<Item = Libcall> {
    let unary = UnaryOp::ALL
        .iter()
        .flat_map(|&u| [Libcall::Unary(u, false), Libcall::Unary(u, true)]);
    let binary = [BinaryOp::Pow, BinaryOp::Mod, BinaryOp::Fmod]
        .into_iter()
        .flat_map(|b| [Libcall::Binary(b, false), Libcall::Binary(b, true)]);
    unary.chain(binary).chain([Libcall::IntBinary])
}

/// The state of lowering one kernel function.
pub(crate) struct FnCx<'a, 'f> {
    pub b: FunctionBuilder<'f>,
    /// A trait object, not a type parameter, so the lowering code (most of this crate's
    /// code) is compiled once rather than once per module kind; the module is only called
    /// to declare libcalls.
    module: &'a mut dyn Module,
    libcalls: &'a mut HashMap<Libcall, FuncId>,
    func_refs: HashMap<Libcall, FuncRef>,
    program: &'a Program,
    slots: &'a dyn Slots,
    /// The function's parameters: the slot table, the symbols' values, start, end, the
    /// fault record.
    params: [Value; 5],
    /// The value of each of the program's symbols, loaded in the entry block.
    symbols: Vec<Value>,
    /// Base address of each buffer, computed in the entry block.
    bases: HashMap<BufId, Value>,
    /// The first failure of a lowering step that returns no `Result` (a size naming a
    /// symbol the program does not have); reported once the function is built.
    error: Option<LowerError>,
    /// The block that reports an out-of-range index and returns, once some index needs it.
    fault_exit: Option<Block>,
}

impl<'a, 'f> FnCx<'a, 'f> {
    fn new(
        mut b: FunctionBuilder<'f>,
        module: &'a mut dyn Module,
        libcalls: &'a mut HashMap<Libcall, FuncId>,
        program: &'a Program,
        slots: &'a dyn Slots,
    ) -> Self {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry);
        let params = [p[0], p[1], p[2], p[3], p[4]];
        let flags = MemFlagsData::trusted().with_readonly();
        let symbols = (0..program.symbols.len())
            .map(|i| b.ins().load(types::I64, flags, params[1], (i * 8) as i32))
            .collect();
        FnCx {
            b,
            module,
            libcalls,
            func_refs: HashMap::new(),
            program,
            slots,
            params,
            symbols,
            bases: HashMap::new(),
            error: None,
            fault_exit: None,
        }
    }

    /// The first iteration of the outer loop this call runs.
    fn start(&self) -> Value {
        self.params[2]
    }

    /// One past the last iteration of the outer loop this call runs.
    fn end(&self) -> Value {
        self.params[3]
    }

    /// The value of size `d`, as i64: an immediate when it is a constant, else computed
    /// here from the symbols' values (sizes are non-negative, so floor division is `sdiv`).
    pub(crate) fn size(&mut self, d: &Dim) -> Value {
        let mut total: Option<Value> = None;
        for (atoms, c) in d.monomials() {
            let mut term: Option<Value> = None;
            for a in atoms {
                let v = self.atom(a);
                term = Some(match term {
                    None => v,
                    Some(t) => self.b.ins().imul(t, v),
                });
            }
            let v = match term {
                None => self.b.ins().iconst(types::I64, c),
                Some(t) if c == 1 => t,
                Some(t) => self.b.ins().imul_imm_s(t, c),
            };
            total = Some(match total {
                None => v,
                Some(t) => self.b.ins().iadd(t, v),
            });
        }
        total.unwrap_or_else(|| self.b.ins().iconst(types::I64, 0))
    }

    fn atom(&mut self, a: &Atom) -> Value {
        match a {
            Atom::Sym(name) => match self.program.symbols.iter().position(|s| s == name) {
                Some(i) => self.symbols[i],
                None => {
                    let e = LowerError::Op(format!(
                        "size mentions `{name}`, not a symbol of the program"
                    ));
                    self.error.get_or_insert(e);
                    self.b.ins().iconst(types::I64, 0)
                }
            },
            Atom::FloorDiv(x, q) => {
                let x = self.size(x);
                self.b.ins().sdiv_imm_s(x, *q)
            }
            Atom::Min(x, y) => {
                let (x, y) = (self.size(x), self.size(y));
                self.b.ins().smin(x, y)
            }
            Atom::Max(x, y) => {
                let (x, y) = (self.size(x), self.size(y));
                self.b.ins().smax(x, y)
            }
        }
    }

    /// The block an out-of-range index jumps to, with the index and the axis size as its
    /// parameters (created on first use).
    fn fault_block(&mut self) -> Block {
        *self.fault_exit.get_or_insert_with(|| {
            let block = self.b.create_block();
            self.b.append_block_param(block, types::I64);
            self.b.append_block_param(block, types::I64);
            self.b.set_cold_block(block);
            block
        })
    }

    /// Fills in the fault block, if any index jumps there: writes the index and the axis
    /// size to the fault record and returns [`FAULT_INDEX`](crate::runtime::exec::FAULT_INDEX).
    fn emit_fault_exit(&mut self) {
        let Some(block) = self.fault_exit else {
            return;
        };
        self.b.switch_to_block(block);
        let (index, len) = (self.b.block_params(block)[0], self.b.block_params(block)[1]);
        let flags = MemFlagsData::trusted();
        self.b.ins().store(flags, index, self.params[4], 0);
        self.b.ins().store(flags, len, self.params[4], 8);
        let code = crate::runtime::exec::FAULT_INDEX as i64;
        let code = self.b.ins().iconst(types::I64, code);
        self.b.ins().return_(&[code]);
    }

    /// Computes the base addresses of `bufs` (call in the entry block, before any loop).
    fn load_bases(&mut self, bufs: impl IntoIterator<Item = BufId>) {
        for buf in bufs {
            if self.bases.contains_key(&buf) {
                continue;
            }
            if matches!(self.program.buffers[buf].kind, BufferKind::Iota) {
                // An iota is never stored: its "address" is its byte offset (see `load`).
                let zero = self.b.ins().iconst(types::I64, 0);
                self.bases.insert(buf, zero);
                continue;
            }
            let (slot, off) = self.slots.slot(buf);
            let flags = MemFlagsData::trusted().with_readonly();
            let base = self
                .b
                .ins()
                .load(types::I64, flags, self.params[0], (slot * 8) as i32);
            let addr = self.b.ins().iadd_imm_s(base, off as i64);
            self.bases.insert(buf, addr);
        }
    }

    fn base(&self, buf: BufId) -> Value {
        self.bases[&buf]
    }

    /// Whether `buf` is an iota, whose loads are computed rather than read.
    fn is_iota(&self, buf: BufId) -> bool {
        matches!(self.program.buffers[buf].kind, BufferKind::Iota)
    }

    fn dtype_of(&self, buf: BufId) -> DType {
        self.program.buffers[buf].dtype
    }

    /// Calls a runtime function.
    fn call(&mut self, lc: Libcall, args: &[Value]) -> Result<Value, LowerError> {
        let fref = match self.func_refs.get(&lc) {
            Some(f) => *f,
            None => {
                if lc.address().is_none() {
                    return Err(LowerError::Op(format!("no runtime function {}", lc.name())));
                }
                let id = match self.libcalls.get(&lc) {
                    Some(id) => *id,
                    None => {
                        let sig = lc.signature(self.module.isa().default_call_conv());
                        let id = self
                            .module
                            .declare_function(&lc.name(), Linkage::Import, &sig)
                            .map_err(|e| LowerError::Codegen(e.to_string()))?;
                        self.libcalls.insert(lc, id);
                        id
                    }
                };
                let fref = self.module.declare_func_in_func(id, self.b.func);
                self.func_refs.insert(lc, fref);
                fref
            }
        };
        let inst = self.b.ins().call(fref, args);
        Ok(self.b.inst_results(inst)[0])
    }
}
