//! Running a scheduled program: its steps in order, generated kernels split over the pool,
//! runtime calls through [`run_call`](crate::run_call). The JIT and ahead-of-time
//! artifacts both run programs through [`run`], so a model gives the same bits in both.
//!
//! A program addresses memory through a slot table: slot 0 is the arena, then the graph
//! inputs, then the constants; a buffer is a slot and a byte offset ([`RunPlan::slots`]).
//! Code compiled for every shape gives each temporary a slot of its own after those, which
//! points into the arena at the offset the memory plan chose for the run's shape
//! ([`RunPlan::arena_slots`], filled in by [`RunPlan::table`]).

use crate::call::{BufId, Call};
use crate::pool::ThreadPool;
use crate::{run_call, CallError, Memory, OpCallFn, Packed};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A compiled kernel: runs iterations `start..end` of its outermost loop, with `ptrs` the
/// slot table and `dims` the values of the program's symbols (in its order). It returns 0,
/// or [`FAULT_INDEX`] after writing the offending index to `fault` and stopping (a
/// data-dependent index outside its axis).
pub type KernelFn = unsafe extern "C" fn(
    ptrs: *const *mut u8,
    dims: *const i64,
    start: u64,
    end: u64,
    fault: *mut Fault,
) -> u64;

/// A kernel's return value when an index was out of range.
pub const FAULT_INDEX: u64 = 1;

/// What a kernel that stopped early reports: the index it read (as read, before a negative
/// one counts from the end) and the size of the axis it indexes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fault {
    /// The index value.
    pub index: i64,
    /// The size of the indexed axis.
    pub len: u64,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "index {} is out of range for a dim of size {}",
            self.index, self.len
        )
    }
}

/// What the executor needs of a scheduled program, as data (artifacts carry it serialized).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunPlan {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Slot and byte offset of each buffer.
    pub slots: Vec<(u32, usize)>,
    /// Bytes of the arena (slot 0).
    pub arena_bytes: usize,
    /// The values of the program's symbols, as its kernels read them.
    #[serde(default)]
    pub dims: Vec<i64>,
    /// Slots that point into the arena: `ptrs[slot] = arena + offset`.
    #[serde(default)]
    pub arena_slots: Vec<(u32, usize)>,
    /// The graph node each step comes from, by step (for errors).
    pub nodes: Vec<StepNode>,
}

impl RunPlan {
    /// The whole slot table, from its first slots (the arena, the inputs, the constants):
    /// the arena slots appended, each pointing at its offset in the arena.
    pub fn table(&self, first: &[*mut u8]) -> Vec<*mut u8> {
        let mut table = first.to_vec();
        let arena = first.first().copied().unwrap_or(std::ptr::null_mut());
        for &(slot, off) in &self.arena_slots {
            let slot = slot as usize;
            if table.len() <= slot {
                table.resize(slot + 1, std::ptr::null_mut());
            }
            table[slot] = arena.wrapping_add(off);
        }
        table
    }
}

/// The graph node a step was scheduled from, as errors name it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StepNode {
    /// The node's source name (the ONNX node name).
    pub name: String,
    /// Its op.
    pub op: String,
}

/// One step of a [`RunPlan`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Step {
    /// Generated code (the function of the same index in the program's table) over
    /// `0..extent`, split across the pool when `work` (element operations) is large enough
    /// and the kernel is not `serial`.
    Kernel {
        /// Iterations of the outermost loop.
        extent: u64,
        /// Element operations, to decide whether splitting pays.
        work: usize,
        /// The iterations must run in order on one thread (a scatter).
        serial: bool,
    },
    /// A runtime call.
    Call(Box<Call>),
}

/// Kernels with fewer element operations than this run on one thread.
pub const PARALLEL_WORK: usize = 1 << 15;

/// Why a run stopped: the step, the node it comes from, and what went wrong there.
#[derive(Debug, thiserror::Error)]
#[error("node `{}` ({}): {failure}", node.name, node.op)]
pub struct StepError {
    /// The step that failed.
    pub step: usize,
    /// The node it was scheduled from.
    pub node: StepNode,
    /// Its failure.
    pub failure: Failure,
}

/// What stopped a step.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A runtime call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// Generated code met an index outside its axis.
    #[error("{0}")]
    Index(Fault),
    /// The program has no code for a kernel step (a bug in whoever built the plan).
    #[error("no code for this kernel")]
    NoCode,
}

/// Resolves buffers to addresses through a slot table.
pub struct SlotMemory<'a> {
    /// The slot table.
    pub ptrs: &'a [*mut u8],
    /// Slot and byte offset of each buffer.
    pub slots: &'a [(u32, usize)],
}

// SAFETY: the pointers are only dereferenced by kernels the executor orders; sharing the
// table across the pool's threads is how kernels are split.
unsafe impl Sync for SlotMemory<'_> {}

impl Memory for SlotMemory<'_> {
    fn addr(&self, buf: BufId) -> *mut u8 {
        let (slot, off) = self.slots[buf];
        self.ptrs[slot as usize].wrapping_add(off)
    }
}

impl SlotMemory<'_> {
    /// A copy of buffer `buf` as a tensor of `dtype` and `shape` (a graph output).
    ///
    /// # Safety
    /// The buffer must hold that many initialized elements (the plan sized it so, and the
    /// program has run).
    pub unsafe fn read(
        &self,
        buf: BufId,
        dtype: kiln_ir::DType,
        shape: &[usize],
    ) -> Result<kiln_ir::Tensor, kiln_ir::TensorError> {
        let len = shape.iter().product::<usize>() * dtype.size_bytes();
        // SAFETY: the contract above.
        let bytes = unsafe { std::slice::from_raw_parts(self.addr(buf), len) };
        kiln_ir::Tensor::from_le_bytes(dtype, shape, bytes)
    }
}

/// What a plan's steps run: `kernels[i]` is step `i`'s kernel (`None` for calls),
/// `packed[i]` the pre-packed constant weight of a call step (see [`crate::prepack`]), and
/// `op_call` runs the ops that have no code ([`Call::Op`]); `None` when the plan has none.
pub struct Code<'a> {
    /// Each step's kernel.
    pub kernels: &'a [Option<KernelFn>],
    /// Each call step's packed weight.
    pub packed: &'a [Option<&'a Packed>],
    /// The reference interpreter, for op calls.
    pub op_call: Option<OpCallFn>,
}

/// Runs `plan`'s steps in order with `code`. With `profile`, each step's wall time is
/// pushed to it.
///
/// # Safety
/// `ptrs` must be the slot table the kernels were compiled against, each slot valid for
/// every buffer placed in it (the arena at least `arena_bytes`), and `code` must belong to
/// this plan.
pub unsafe fn run(
    plan: &RunPlan,
    code: &Code,
    ptrs: &[*mut u8],
    pool: &ThreadPool,
    mut profile: Option<&mut Vec<Duration>>,
) -> Result<(), StepError> {
    let mem = SlotMemory {
        ptrs,
        slots: &plan.slots,
    };
    for (i, step) in plan.steps.iter().enumerate() {
        let start = profile.is_some().then(Instant::now);
        let failed = |failure: Failure| StepError {
            step: i,
            node: plan.nodes.get(i).cloned().unwrap_or_else(|| StepNode {
                name: format!("step {i}"),
                op: "kernel".into(),
            }),
            failure,
        };
        match (step, code.kernels.get(i).copied().flatten()) {
            (
                Step::Kernel {
                    extent,
                    work,
                    serial,
                },
                Some(f),
            ) => {
                // SAFETY: forwarded from the caller.
                let grid = Grid {
                    extent: *extent,
                    work: *work,
                    serial: *serial,
                };
                unsafe { launch(f, grid, ptrs, &plan.dims, pool) }
                    .map_err(|fault| failed(Failure::Index(fault)))?;
            }
            (Step::Call(call), _) => {
                let b = code.packed.get(i).copied().flatten();
                // SAFETY: forwarded from the caller.
                unsafe { run_call(call, b, code.op_call, &mem, pool) }
                    .map_err(|e| failed(Failure::Call(e)))?;
            }
            (Step::Kernel { .. }, None) => return Err(failed(Failure::NoCode)),
        }
        if let (Some(times), Some(start)) = (profile.as_deref_mut(), start) {
            times.push(start.elapsed());
        }
    }
    Ok(())
}

/// How a kernel step runs: its outer extent, its work, and whether it must run in order.
#[derive(Clone, Copy)]
struct Grid {
    extent: u64,
    work: usize,
    serial: bool,
}

/// Calls a kernel over `0..extent`, split across the pool when the work is large and the
/// kernel is not `serial` (a scatter runs its iterations in order on one thread). Chunk
/// `c` of `n` always covers the same iterations, so results do not depend on timing.
/// A kernel that meets an out-of-range index stops; the fault of the first chunk that
/// stopped is returned, so the error does not depend on timing either.
///
/// # Safety
/// As for [`run`].
unsafe fn launch(
    f: KernelFn,
    Grid {
        extent,
        work,
        serial,
    }: Grid,
    ptrs: &[*mut u8],
    dims: &[i64],
    pool: &ThreadPool,
) -> Result<(), Fault> {
    let threads = pool.threads() as u64;
    let table = ptrs.as_ptr() as usize;
    let values = dims.as_ptr() as usize;
    if serial || threads <= 1 || extent < 2 || work < PARALLEL_WORK {
        let mut fault = Fault::default();
        // SAFETY: the table maps every slot the kernel was compiled against.
        return match unsafe { f(ptrs.as_ptr(), dims.as_ptr(), 0, extent, &mut fault) } {
            0 => Ok(()),
            _ => Err(fault),
        };
    }
    let chunks = threads.min(extent);
    let first: Mutex<Option<(usize, Fault)>> = Mutex::new(None);
    pool.parallel_for(chunks as usize, &|c| {
        let (lo, hi) = (extent * c as u64 / chunks, extent * (c as u64 + 1) / chunks);
        let mut fault = Fault::default();
        // SAFETY: as above; chunks write disjoint iterations of the outer loop.
        let (table, values) = (table as *const *mut u8, values as *const i64);
        if unsafe { f(table, values, lo, hi, &mut fault) } != 0 {
            let mut first = first.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none_or(|(k, _)| c < k) {
                *first = Some((c, fault));
            }
        }
    });
    match first.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some((_, fault)) => Err(fault),
        None => Ok(()),
    }
}

/// A row-major copy of `t` unless it already is one (shares the data then): generated code
/// reads inputs as contiguous arrays.
pub fn contiguous(t: &kiln_ir::Tensor) -> kiln_ir::Tensor {
    use kiln_ir::Tensor;
    if kiln_ir::dispatch!(t, a => a.is_standard_layout()) {
        t.clone()
    } else {
        kiln_ir::dispatch!(t, a => Tensor::from_array(a.as_standard_layout().to_owned()))
    }
}

/// Alignment of the arena and of every block in it, in bytes: the memory plan's.
pub use kiln_kernel::plan::ALIGN;

/// A 64-byte aligned scratch block that only grows (zeroed when allocated; only the
/// pages a run touches are resident).
pub struct Arena {
    lines: crate::aligned::Lines,
}

impl Default for Arena {
    fn default() -> Arena {
        Arena {
            lines: crate::aligned::Lines::empty(),
        }
    }
}

/// The arena could not be allocated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot allocate the arena of {} ({bytes} bytes)", kiln_ir::human_bytes(*bytes as u128))]
pub struct ArenaError {
    /// Bytes requested.
    pub bytes: usize,
}

impl Arena {
    /// Makes room for at least `bytes`; a failed allocation is an error, never an abort.
    pub fn reserve(&mut self, bytes: usize) -> Result<(), ArenaError> {
        let want = bytes.max(1);
        if self.lines.len() < want {
            // The old contents are scratch: nothing is kept across runs.
            self.lines = crate::aligned::Lines::zeroed(want).ok_or(ArenaError { bytes })?;
        }
        Ok(())
    }

    /// The first byte.
    pub fn ptr(&mut self) -> *mut u8 {
        self.lines.as_mut_ptr()
    }
}

#[cfg(test)]
mod arena_tests {
    use super::*;

    #[test]
    fn arena_reserve_is_fallible() {
        let mut a = Arena::default();
        assert!(a.reserve(1000).is_ok());
        let e = a.reserve(usize::MAX - 100).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot allocate the arena of 16 EiB"),
            "{e}"
        );
        assert!(
            a.reserve(64).is_ok(),
            "a failed reserve leaves the arena usable"
        );
    }
}
