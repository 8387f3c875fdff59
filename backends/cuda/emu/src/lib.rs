//! An interpreter for the subset of NVIDIA PTX that kiln-cuda emits, so the
//! GPU backend can be tested on machines without a GPU. Test tooling only.
//!
//! The emulator is small and exact for what it supports, and everything
//! else is a hard error:
//!
//! * unknown instructions, directives, modifiers (including `.ftz`), type
//!   mismatches between registers and instructions, undeclared registers
//!   and branches to missing labels are [`ParseError`]s naming the line;
//! * out-of-bounds or misaligned global and shared accesses, reads of
//!   never-written registers or shared bytes, shared-memory data races,
//!   divergent barriers and warp collectives, integer division by zero and
//!   exceeding [`Limits::max_steps`] are [`EmuError`]s at run time. Nothing
//!   panics.
//!
//! ```
//! use kiln_ptx_emu::{Limits, Memory, Module, Param};
//! let ptx = "
//! .version 8.0
//! .target sm_80
//! .address_size 64
//! .visible .entry k(.param .u64 p0)
//! {
//!     .reg .b32 %r<2>;
//!     .reg .b64 %rd<4>;
//!     ld.param.u64 %rd1, [p0];
//!     cvta.to.global.u64 %rd2, %rd1;
//!     mov.u32 %r1, %tid.x;
//!     mul.wide.u32 %rd3, %r1, 4;
//!     add.s64 %rd3, %rd2, %rd3;
//!     st.global.u32 [%rd3], %r1;
//!     ret;
//! }";
//! let module = Module::parse(ptx).unwrap();
//! let mut mem = Memory::new();
//! let buf = mem.alloc(16);
//! module.launch(&mut mem, "k", [1, 1, 1], [4, 1, 1], &[Param::U64(buf)], &Limits::default()).unwrap();
//! assert_eq!(mem.read_u32s(buf, 4).unwrap(), [0, 1, 2, 3]);
//! ```
//!
//! Semantics worth knowing:
//!
//! * Registers hold raw bits of their declared width; instruction types say
//!   how to read them. Registers start unwritten.
//! * Immediates: integers in decimal or `0x` hex (optionally negative, must
//!   fit the type), f32 only as `0fXXXXXXXX`, f64 only as `0dXXXX...` (16
//!   hex digits). Decimal float literals are rejected.
//! * Float `add`/`sub`/`mul`/`div`/`sqrt`/`rcp` need `.rn` (ptxas may fuse
//!   unrounded ones, which the emulator could not reproduce).
//! * The `.approx` instructions (`rsqrt`, `ex2`, `lg2`, `sin`, `cos`,
//!   `tanh`) are modelled by the exact Rust f32 functions; hardware results
//!   differ by a few ulp, so compare with tolerances.
//! * NaN results carry whatever payload Rust produces, not the GPU's
//!   canonical NaN; compare NaNs with `is_nan`.
//! * Global memory is zeroed on allocation; every access must lie inside one
//!   allocation and be naturally aligned.
//! * Threads run one after another, CTA by CTA, warp by warp, each until it
//!   exits or blocks at `bar.sync` or a warp collective (see `sched`).
//!   Warps are 32 consecutive linear thread ids (x fastest, then y, z).
//!
//! Shared memory and synchronization:
//!
//! * `.shared [.align N] .TYPE NAME[COUNT];` in an entry body declares a
//!   static shared array (types `.b8 .u8 .b16 .u16 .b32 .u32 .s32 .f32
//!   .b64 .u64 .f64`; at most 48 KiB in all). Arrays are laid out in
//!   declaration order in a per-CTA *shared window* whose addresses start
//!   at 0. `mov.u32 %r, NAME;` (or `.u64`/`.b32`/...) gives an array's
//!   window address; `ld.shared.T`/`st.shared.T` (the global types) take
//!   `[%r+imm]` with a 32- or 64-bit register, or `[NAME+imm]`. There is no
//!   generic addressing of shared memory: `cvta.shared`/`cvta.to.shared`
//!   are rejected, and a window address used by a global access is out of
//!   bounds.
//! * Shared memory is not zeroed: reading a byte no thread of the CTA has
//!   written is [`EmuError::UninitializedShared`] (reported at the end of
//!   the barrier interval, so a race with a later writer is reported as
//!   the race).
//! * `bar.sync 0;` (also `barrier.sync 0;`, `barrier.sync.aligned 0;`)
//!   waits for every non-exited thread of the CTA; exited threads do not
//!   count. Live threads waiting at different barrier instructions are
//!   [`EmuError::DivergentBarrier`]. Thread counts and other barrier ids
//!   are rejected.
//! * Between two barrier releases, a shared byte written by one thread and
//!   read or written by another is [`EmuError::SharedRace`], even within
//!   one warp: warp-synchronous shared-memory code is not modelled, so
//!   kiln must separate such accesses with `bar.sync`, or exchange values
//!   within a warp with `shfl.sync`.
//! * `shfl.sync.{up,down,bfly,idx}.b32 d, a, b, c, membermask;` and
//!   `vote.sync.ballot.b32 d, p, membermask;` are warp collectives: every
//!   lane of the warp must be waiting at that same instruction
//!   ([`EmuError::DivergentCollective`] otherwise). `c` and `membermask`
//!   are immediates; the mask must name exactly the warp's lanes (all 32,
//!   or the existing lanes of a partial last warp). Lane selection follows
//!   the PTX ISA formula (see `warp`); an out-of-range source keeps the
//!   lane's own `a`. The `d|p` predicate output form is rejected.
//!
//! Tensor cores and asynchronous copies:
//!
//! * `ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16` and
//!   `mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32` /
//!   `.m16n8k16.row.col.f32.{bf16.bf16,f16.f16}.f32` are warp collectives over
//!   all 32 lanes, with the fragment layouts of the PTX ISA (see `tensor`). `mma`
//!   reads a tf32 operand as its f32 bits with the low 13 ignored, sums the
//!   exact products in f64 and rounds once to f32. `cvt.rna.tf32.f32`
//!   rounds to tf32 (ties away from zero); `cvt.rn.{bf16x2,f16x2}.f32 d, a, b`
//!   packs two roundings, `a` in the upper half.
//! * `cp.async.{ca,cg}.shared.global [dst], [src], size[, src_size];`
//!   reads its global bytes when issued (bytes past `src_size` are zeros),
//!   but they land in shared memory only when a `cp.async.wait_group n`
//!   covers their group (`cp.async.commit_group` closes one): the landing
//!   is the issuing thread's store at that moment, so another thread still
//!   needs a `bar.sync` to read it. Until then any access to those bytes is
//!   [`EmuError::AsyncPending`], and a thread that exits with copies in
//!   flight is [`EmuError::AsyncNotWaited`]: a missing wait is caught.

mod alu;
mod error;
mod exec;
mod inst;
mod launch;
mod lex;
mod memory;
mod module;
mod opcode;
mod operand;
mod parse;
mod sched;
mod shared;
mod tensor;
mod types;
mod warp;

pub use error::{EmuError, ParseError};
pub use launch::{LaunchStats, Limits, Param};
pub use memory::Memory;
pub use module::{EntrySig, Module, ParamDecl};
pub use types::Type;
