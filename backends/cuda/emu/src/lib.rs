//! An interpreter for the subset of NVIDIA PTX that kiln-cuda emits, so the
//! GPU backend can be tested on machines without a GPU. Test tooling only.
//!
//! The emulator is small and exact for what it supports, and everything
//! else is a hard error:
//!
//! * unknown instructions, directives, modifiers (including `.ftz`), type
//!   mismatches between registers and instructions, undeclared registers
//!   and branches to missing labels are [`ParseError`]s naming the line;
//! * out-of-bounds or misaligned global accesses, reads of never-written
//!   registers, integer division by zero and exceeding [`Limits::max_steps`]
//!   are [`EmuError`]s at run time. Nothing panics.
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
//! * Threads run one after another, CTA by CTA (see `exec` for how
//!   `bar.sync` fits into that scheduler).

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
mod types;

pub use error::{EmuError, ParseError};
pub use launch::{LaunchStats, Limits, Param};
pub use memory::Memory;
pub use module::{EntrySig, Module, ParamDecl};
pub use types::Type;
