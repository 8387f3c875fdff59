//! The context of one entry: its parameters (buffer pointers, then the symbols' values),
//! sizes evaluated from the symbols, element addresses, and the out-of-range exit that
//! gathers and scatters branch to.

use crate::ptx::{Class, Entry, Opnd, Param, Reg};
use crate::EmitError;
use kiln_ir::{Atom, Dim};
use kiln_kernel::kernel::{Access, BufId, BufferKind, Program};
use std::collections::HashMap;

/// Threads per block of every launch.
pub const BLOCK: u32 = 256;

/// One entry being emitted.
pub(crate) struct Cx<'p> {
    pub e: Entry,
    pub program: &'p Program,
    /// Index of the kernel in the program (stored in the status word on a bad index).
    pub kernel: usize,
    params: Vec<Param>,
    /// Global base address of each buffer passed in.
    bases: HashMap<BufId, Reg>,
    /// Buffers in parameter order.
    pub buffers: Vec<BufId>,
    syms: Vec<Reg>,
    dims: HashMap<Dim, Opnd>,
    /// The status word's address and the label that reports a bad index, once needed.
    status: Option<(Reg, String)>,
}

impl<'p> Cx<'p> {
    /// The context of kernel `kernel`, touching `buffers` (Iota buffers need no pointer).
    pub fn new(program: &'p Program, kernel: usize, buffers: &[BufId]) -> Cx<'p> {
        let mut cx = Cx {
            e: Entry::default(),
            program,
            kernel,
            params: Vec::new(),
            bases: HashMap::new(),
            buffers: Vec::new(),
            syms: Vec::new(),
            dims: HashMap::new(),
            status: None,
        };
        let mut seen: Vec<BufId> = buffers
            .iter()
            .copied()
            .filter(|&b| !matches!(program.buffers[b].kind, BufferKind::Iota))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        for b in seen {
            let name = format!("b{b}");
            let base = cx.pointer_param(name);
            cx.bases.insert(b, base);
            cx.buffers.push(b);
        }
        for i in 0..program.symbols.len() {
            let name = format!("s{i}");
            let r = cx.e.reg(Class::B64);
            cx.e.pre(format!("ld.param.s64 {r}, [{name}]"));
            cx.params.push(Param::S64(name));
            cx.syms.push(r);
        }
        cx
    }

    fn pointer_param(&mut self, name: String) -> Reg {
        let (raw, base) = (self.e.reg(Class::B64), self.e.reg(Class::B64));
        self.e.pre(format!("ld.param.u64 {raw}, [{name}]"));
        self.e.pre(format!("cvta.to.global.u64 {base}, {raw}"));
        self.params.push(Param::Ptr(name));
        base
    }

    /// The entry's text, and whether its last parameter is the status word.
    pub fn finish(mut self, name: &str) -> (String, bool) {
        let status = self.status.take();
        let has_status = status.is_some();
        if let Some((word, label)) = status {
            // The tail: a bad index stores the kernel's number + 1 and stops the thread.
            self.e.place(&label);
            let code = self.e.reg(Class::B32);
            self.e.op(format!("mov.u32 {code}, {}", self.kernel + 1));
            self.e.op(format!("st.global.u32 [{word}], {code}"));
            self.e.op("ret");
        }
        (self.e.finish(name, &self.params), has_status)
    }

    /// Whether `buf` is an index sequence (its loads are their offsets).
    pub fn is_iota(&self, buf: BufId) -> bool {
        matches!(self.program.buffers[buf].kind, BufferKind::Iota)
    }

    /// The value of `d` as an operand, computed in the prologue.
    pub fn dim(&mut self, d: &Dim) -> Result<Opnd, EmitError> {
        if let Some(c) = d.as_const() {
            return Ok(Opnd::Imm(c));
        }
        if let Some(&o) = self.dims.get(d) {
            return Ok(o);
        }
        let mut sum: Option<Opnd> = None;
        for (atoms, coeff) in d.monomials() {
            let mut term: Option<Opnd> = None;
            for atom in atoms {
                let a = self.atom(atom)?;
                term = Some(match term {
                    None => a,
                    Some(t) => Opnd::Reg(self.pre_binary("mul.lo.s64", t, a)),
                });
            }
            let term = match term {
                None => Opnd::Imm(coeff),
                Some(t) if coeff == 1 => t,
                Some(t) => Opnd::Reg(self.pre_binary("mul.lo.s64", t, Opnd::Imm(coeff))),
            };
            sum = Some(match sum {
                None => term,
                Some(s) => Opnd::Reg(self.pre_binary("add.s64", s, term)),
            });
        }
        // A lone symbol is its parameter's register; anything else was computed above.
        let r = match sum {
            Some(Opnd::Imm(v)) => Opnd::Reg(self.pre_const(v)),
            Some(o) => o,
            None => Opnd::Reg(self.pre_const(0)),
        };
        self.dims.insert(d.clone(), r);
        Ok(r)
    }

    fn atom(&mut self, atom: &Atom) -> Result<Opnd, EmitError> {
        Ok(match atom {
            Atom::Sym(name) => {
                let i = (self.program.symbols.iter().position(|s| s == name))
                    .ok_or_else(|| EmitError::UnknownSymbol(name.clone()))?;
                Opnd::Reg(self.syms[i])
            }
            Atom::FloorDiv(x, by) => {
                let x = self.dim(x)?;
                Opnd::Reg(self.pre_floor_div(x, *by))
            }
            Atom::Min(x, y) => {
                let (x, y) = (self.dim(x)?, self.dim(y)?);
                Opnd::Reg(self.pre_binary("min.s64", x, y))
            }
            Atom::Max(x, y) => {
                let (x, y) = (self.dim(x)?, self.dim(y)?);
                Opnd::Reg(self.pre_binary("max.s64", x, y))
            }
        })
    }

    /// `floor(x / by)` for `by > 1`: PTX divides toward zero, so a negative remainder steps
    /// the quotient down.
    fn pre_floor_div(&mut self, x: Opnd, by: i64) -> Reg {
        let q = self.pre_binary("div.s64", x, Opnd::Imm(by));
        let r = self.pre_binary("rem.s64", x, Opnd::Imm(by));
        let (neg, down, out) = (
            self.e.reg(Class::Pred),
            self.e.reg(Class::B64),
            self.e.reg(Class::B64),
        );
        self.e.pre(format!("setp.lt.s64 {neg}, {r}, 0"));
        self.e.pre(format!("sub.s64 {down}, {q}, 1"));
        self.e.pre(format!("selp.s64 {out}, {down}, {q}, {neg}"));
        out
    }

    fn pre_binary(&mut self, op: &str, a: Opnd, b: Opnd) -> Reg {
        let d = self.e.reg(Class::B64);
        match a {
            // PTX wants a register as the first source of most instructions.
            Opnd::Imm(_) => {
                let t = self.pre_const_opnd(a);
                self.e.pre(format!("{op} {d}, {t}, {b}"));
            }
            Opnd::Reg(_) => self.e.pre(format!("{op} {d}, {a}, {b}")),
        }
        d
    }

    fn pre_const_opnd(&mut self, a: Opnd) -> Reg {
        match a {
            Opnd::Reg(r) => r,
            Opnd::Imm(v) => self.pre_const(v),
        }
    }

    fn pre_const(&mut self, v: i64) -> Reg {
        let r = self.e.reg(Class::B64);
        self.e.pre(format!("mov.s64 {r}, {v}"));
        r
    }

    /// The element index `offset + Σ index[d] * strides[d]` of `a` (in the loop body).
    pub fn element(&mut self, a: &Access, index: &[Reg]) -> Result<Reg, EmitError> {
        let offset = self.dim(&a.offset)?;
        let mut at = self.e.reg(Class::B64);
        self.e.op(format!("mov.s64 {at}, {offset}"));
        for (stride, &i) in a.strides.iter().zip(index) {
            if stride.is_zero() {
                continue;
            }
            let s = self.dim(stride)?;
            let next = self.e.reg(Class::B64);
            self.e.op(format!("mad.lo.s64 {next}, {i}, {s}, {at}"));
            at = next;
        }
        Ok(at)
    }

    /// The byte address of element `element` of `buf`.
    pub fn address(&mut self, buf: BufId, element: Reg) -> Reg {
        let size = self.program.buffers[buf].dtype.size_bytes();
        let base = self.bases[&buf];
        let addr = self.e.reg(Class::B64);
        self.e
            .op(format!("mad.lo.s64 {addr}, {element}, {size}, {base}"));
        addr
    }

    /// Branches to the bad-index exit when `bad` holds.
    pub fn exit_if(&mut self, bad: Reg) {
        let label = match &self.status {
            Some((_, label)) => label.clone(),
            None => {
                let word = self.pointer_param("status".into());
                let label = self.e.label();
                self.status = Some((word, label.clone()));
                label
            }
        };
        self.e.op(format!("@{bad} bra {label}"));
    }
}
