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
}
