//! Error types: [`ParseError`] for rejected PTX text, [`EmuError`] for
//! launches that fail (bad arguments or undefined behaviour at run time).

use thiserror::Error;

/// PTX text the emulator does not accept, with the 1-based source line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: u32,
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(line: u32, message: impl Into<String>) -> Self {
        ParseError {
            line,
            message: message.into(),
        }
    }
}

/// A launch that could not start or that hit undefined behaviour.
/// `line` is always the PTX source line of the failing instruction.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EmuError {
    #[error("no entry named '{0}'")]
    UnknownEntry(String),
    #[error("{entry}: expected {expected} params, got {got}")]
    ParamCount {
        entry: String,
        expected: usize,
        got: usize,
    },
    #[error("{entry}: param {index} is declared {declared}, got {got}")]
    ParamType {
        entry: String,
        index: usize,
        declared: String,
        got: String,
    },
    #[error("invalid launch configuration: {0}")]
    InvalidLaunch(String),
    #[error("{entry} line {line}: global access of {bytes} bytes at {addr:#x} is outside every allocation")]
    OutOfBounds {
        entry: String,
        line: u32,
        addr: u64,
        bytes: u64,
    },
    #[error("{entry} line {line}: global access of {bytes} bytes at {addr:#x} is misaligned")]
    Misaligned {
        entry: String,
        line: u32,
        addr: u64,
        bytes: u64,
    },
    #[error("{entry} line {line}: read of register {reg} before any write")]
    UninitializedRegister {
        entry: String,
        line: u32,
        reg: String,
    },
    #[error("{entry} line {line}: integer division by zero")]
    DivisionByZero { entry: String, line: u32 },
    #[error("{entry}: step limit of {limit} instructions exceeded")]
    StepLimit { entry: String, limit: u64 },
    #[error("host access of {bytes} bytes at {addr:#x} is outside every allocation")]
    HostOutOfBounds { addr: u64, bytes: u64 },
    #[error("{entry} line {line}: shared access of {bytes} bytes at {addr:#x} is outside the CTA's shared window")]
    SharedOutOfBounds {
        entry: String,
        line: u32,
        addr: u64,
        bytes: u64,
    },
    #[error("{entry} line {line}: shared access of {bytes} bytes at {addr:#x} is misaligned")]
    SharedMisaligned {
        entry: String,
        line: u32,
        addr: u64,
        bytes: u64,
    },
    /// A read of a shared byte no thread of the CTA had written; `line` is
    /// the reading instruction.
    #[error(
        "{entry} line {line}: read of shared byte {addr:#x} before any thread of the CTA wrote it"
    )]
    UninitializedShared { entry: String, line: u32, addr: u64 },
    /// Two threads (linear ids within the CTA) touched a shared byte in one
    /// barrier interval and at least one wrote it; `line` is the second
    /// access.
    #[error("{entry} line {line}: data race on shared byte {addr:#x} between threads {first_thread} and {second_thread} (no bar.sync between them)")]
    SharedRace {
        entry: String,
        line: u32,
        addr: u64,
        first_thread: u32,
        second_thread: u32,
    },
    /// A shared byte was read or written while a `cp.async` into it had not
    /// landed: the copy's group was never waited for with
    /// `cp.async.wait_group` (or a second copy targets the same byte).
    #[error("{entry} line {line}: shared byte {addr:#x} is the target of a cp.async by thread {thread} that no cp.async.wait_group has completed")]
    AsyncPending {
        entry: String,
        line: u32,
        addr: u64,
        thread: u32,
    },
    /// A thread exited with copies no `cp.async.wait_group` completed;
    /// `line` is the oldest such `cp.async`.
    #[error("{entry} line {line}: thread {thread} exited with a cp.async never waited for (missing cp.async.wait_group)")]
    AsyncNotWaited {
        entry: String,
        line: u32,
        thread: u32,
    },
    /// Live threads of a CTA wait at different barrier instructions; `line`
    /// is the barrier of the lowest-numbered waiting thread.
    #[error("{entry} line {line}: threads of a CTA wait at different bar.sync instructions")]
    DivergentBarrier { entry: String, line: u32 },
    /// Lanes of a warp named in a collective's member mask did not all
    /// execute that same collective instruction (some wait elsewhere, at a
    /// barrier, or have exited).
    #[error(
        "{entry} line {line}: lanes of a warp did not all reach this warp collective together"
    )]
    DivergentCollective { entry: String, line: u32 },
    /// A collective's member mask is not exactly the warp's existing lanes
    /// (partial member masks are not supported).
    #[error(
        "{entry} line {line}: member mask {mask:#x} must name exactly the warp's lanes {lanes:#x}"
    )]
    MemberMask {
        entry: String,
        line: u32,
        mask: u32,
        lanes: u32,
    },
    /// A `shfl.sync` lane reads from a lane that does not exist (only
    /// possible in a partial last warp); the ISA leaves the value undefined.
    #[error(
        "{entry} line {line}: lane {lane} shuffles from lane {from_lane}, which does not exist"
    )]
    ShflSourceMissing {
        entry: String,
        line: u32,
        lane: u32,
        from_lane: u32,
    },
}
