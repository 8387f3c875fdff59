//! A small builder for the text of one PTX entry: typed virtual registers (declared at
//! the top once their counts are known), labels, and instructions as lines.
//!
//! ptxas does the register allocation, so every value gets a fresh virtual register; the
//! builder only has to keep the classes apart and name them the way PTX declares them.

use std::fmt::{self, Display, Write as _};

/// A register class, one per PTX register type the backend uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// `.pred`: booleans and branch conditions.
    Pred,
    /// `.b16`: f16/bf16 bits on their way to or from memory (their values live in f32).
    B16,
    /// `.b32`: 32-bit integers on their way to or from memory and special registers.
    B32,
    /// `.b64`: every integer value and address.
    B64,
    /// `.f32`.
    F32,
    /// `.f64`.
    F64,
}

impl Class {
    const ALL: [Class; 6] = [
        Class::Pred,
        Class::B16,
        Class::B32,
        Class::B64,
        Class::F32,
        Class::F64,
    ];

    fn prefix(self) -> &'static str {
        match self {
            Class::Pred => "p",
            Class::B16 => "h",
            Class::B32 => "r",
            Class::B64 => "rd",
            Class::F32 => "f",
            Class::F64 => "fd",
        }
    }

    fn decl(self) -> &'static str {
        match self {
            Class::Pred => ".pred",
            Class::B16 => ".b16",
            Class::B32 => ".b32",
            Class::B64 => ".b64",
            Class::F32 => ".f32",
            Class::F64 => ".f64",
        }
    }
}

/// A virtual register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reg {
    pub class: Class,
    n: u32,
}

impl Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}{}", self.class.prefix(), self.n)
    }
}

/// A source operand: a register or an integer immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opnd {
    Reg(Reg),
    Imm(i64),
}

impl Display for Opnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Opnd::Reg(r) => r.fmt(f),
            Opnd::Imm(v) => v.fmt(f),
        }
    }
}

impl From<Reg> for Opnd {
    fn from(r: Reg) -> Opnd {
        Opnd::Reg(r)
    }
}

/// The f32 immediate with the bits of `v` (PTX's exact float literal).
pub(crate) fn f32_imm(v: f32) -> String {
    format!("0f{:08X}", v.to_bits())
}

/// The f64 immediate with the bits of `v`.
pub(crate) fn f64_imm(v: f64) -> String {
    format!("0d{:016X}", v.to_bits())
}

/// One kernel parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Param {
    /// A global-memory pointer.
    Ptr(String),
    /// A signed 64-bit value (a symbol).
    S64(String),
}

/// The body of one entry under construction.
#[derive(Default)]
pub(crate) struct Entry {
    counts: [u32; 6],
    labels: u32,
    /// Computed once at the top: parameters, and the sizes that depend on them only, so a
    /// size first needed inside a loop is still defined on every path.
    prologue: Vec<String>,
    lines: Vec<String>,
    /// `.shared` array declarations.
    shared: Vec<String>,
}

impl Entry {
    /// A fresh register of `class`.
    pub fn reg(&mut self, class: Class) -> Reg {
        let i = Class::ALL.iter().position(|c| *c == class).unwrap_or(0);
        self.counts[i] += 1;
        Reg {
            class,
            n: self.counts[i],
        }
    }

    /// A fresh label name.
    pub fn label(&mut self) -> String {
        self.labels += 1;
        format!("$L{}", self.labels)
    }

    /// Places `label` here.
    pub fn place(&mut self, label: &str) {
        self.lines.push(format!("{label}:"));
    }

    /// Appends one instruction (without the trailing `;`).
    pub fn op(&mut self, text: impl Into<String>) {
        self.lines.push(format!("\t{};", text.into()));
    }

    /// Declares a static shared array of `bytes` bytes aligned to `align`; its name is
    /// its shared-window address (`mov.u32 %r, name`).
    pub fn shared(&mut self, name: &str, bytes: u32, align: u32) {
        self.shared
            .push(format!("	.shared .align {align} .b8 {name}[{bytes}];"));
    }

    /// Appends one instruction to the prologue.
    pub fn pre(&mut self, text: impl Into<String>) {
        self.prologue.push(format!("\t{};", text.into()));
    }

    /// The entry's text: signature, register declarations, then the body.
    pub fn finish(self, name: &str, params: &[Param]) -> String {
        let mut s = String::new();
        let _ = writeln!(s, ".visible .entry {name}(");
        for (i, p) in params.iter().enumerate() {
            let sep = if i + 1 < params.len() { "," } else { "" };
            let _ = match p {
                Param::Ptr(n) => writeln!(s, "\t.param .u64 {n}{sep}"),
                Param::S64(n) => writeln!(s, "\t.param .s64 {n}{sep}"),
            };
        }
        s.push_str(")\n{\n");
        for (class, &n) in Class::ALL.iter().zip(&self.counts) {
            if n > 0 {
                let _ = writeln!(s, "\t.reg {} %{}<{}>;", class.decl(), class.prefix(), n + 1);
            }
        }
        for line in self.shared.iter().chain(&self.prologue).chain(&self.lines) {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str("}\n");
        s
    }
}
