//! Per-thread interpreter state and instruction execution.
//!
//! A [`Thread`] runs until it *blocks*; today the only blocking event is
//! exiting. The CTA scheduler in `launch` drives all threads of one CTA
//! through [`Thread::run_until_blocked`], so `bar.sync` can be added by
//! returning a new [`Status`] variant (the scheduler then resumes threads
//! once all live threads of the CTA have arrived), and shared memory or
//! warp collectives by adding per-CTA state to [`Ctx`].

use crate::alu;
use crate::error::EmuError;
use crate::inst::{Addr, Inst, Op, Reg, Special, Src};
use crate::memory::Memory;
use crate::module::Entry;

/// Launch-wide and CTA-wide state shared by the threads of one CTA.
pub(crate) struct Ctx<'a> {
    pub entry: &'a Entry,
    pub mem: &'a mut Memory,
    pub params: &'a [u64],
    pub ntid: [u32; 3],
    pub nctaid: [u32; 3],
    pub ctaid: [u32; 3],
    /// Instructions issued so far in this launch (guarded-off ones count).
    pub steps: u64,
    pub max_steps: u64,
}

impl Ctx<'_> {
    fn name(&self) -> String {
        self.entry.sig.name.clone()
    }
}

/// Why a thread stopped running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Exited,
}

/// One thread: program counter, thread index and registers.
pub(crate) struct Thread {
    pc: usize,
    tid: [u32; 3],
    regs: Vec<u64>,
    /// Whether each register has been written; reading one that has not is
    /// an error rather than a silent zero.
    init: Vec<bool>,
}

impl Thread {
    pub fn new(nregs: usize) -> Self {
        Thread {
            pc: 0,
            tid: [0; 3],
            regs: vec![0; nregs],
            init: vec![false; nregs],
        }
    }

    /// Resets the thread to the entry's first instruction with index `tid`.
    pub fn reset(&mut self, tid: [u32; 3]) {
        self.pc = 0;
        self.tid = tid;
        self.init.fill(false);
    }

    /// Runs until the thread exits (running off the end of the entry is an
    /// implicit `ret`, as in PTX) or an error occurs.
    pub fn run_until_blocked(&mut self, cx: &mut Ctx) -> Result<Status, EmuError> {
        let insts = &cx.entry.insts;
        while let Some(inst) = insts.get(self.pc) {
            if cx.steps >= cx.max_steps {
                return Err(EmuError::StepLimit {
                    entry: cx.name(),
                    limit: cx.max_steps,
                });
            }
            cx.steps += 1;
            self.pc += 1;
            if let Some((p, want)) = inst.guard {
                if (self.get(p, inst, cx)? != 0) != want {
                    continue;
                }
            }
            if let Some(status) = self.step(inst, cx)? {
                return Ok(status);
            }
        }
        Ok(Status::Exited)
    }

    fn get(&self, r: Reg, inst: &Inst, cx: &Ctx) -> Result<u64, EmuError> {
        let i = r as usize;
        if !self.init[i] {
            let reg = cx.entry.reg_names[i].clone();
            return Err(EmuError::UninitializedRegister {
                entry: cx.name(),
                line: inst.line,
                reg,
            });
        }
        Ok(self.regs[i])
    }

    fn src(&self, s: Src, inst: &Inst, cx: &Ctx) -> Result<u64, EmuError> {
        match s {
            Src::Reg(r) => self.get(r, inst, cx),
            Src::Imm(v) => Ok(v),
            Src::Special(sp) => Ok(u64::from(match sp {
                Special::Tid(d) => self.tid[d],
                Special::Ntid(d) => cx.ntid[d],
                Special::Ctaid(d) => cx.ctaid[d],
                Special::Nctaid(d) => cx.nctaid[d],
            })),
        }
    }

    fn set(&mut self, r: Reg, v: u64, cx: &Ctx) {
        let i = r as usize;
        self.regs[i] = v & cx.entry.reg_masks[i];
        self.init[i] = true;
    }

    /// The checked device address of a `bytes`-wide access.
    fn address(&self, a: Addr, bytes: u64, inst: &Inst, cx: &Ctx) -> Result<u64, EmuError> {
        let addr = self.get(a.base, inst, cx)?.wrapping_add(a.offset as u64);
        if addr % bytes != 0 {
            return Err(EmuError::Misaligned {
                entry: cx.name(),
                line: inst.line,
                addr,
                bytes,
            });
        }
        Ok(addr)
    }

    fn oob(inst: &Inst, cx: &Ctx, addr: u64, bytes: u64) -> EmuError {
        EmuError::OutOfBounds {
            entry: cx.name(),
            line: inst.line,
            addr,
            bytes,
        }
    }

    /// Executes one (unguarded or guard-true) instruction; `Some` when the
    /// thread stops.
    fn step(&mut self, inst: &Inst, cx: &mut Ctx) -> Result<Option<Status>, EmuError> {
        match inst.op {
            Op::Bra { target } => self.pc = target,
            Op::Exit => return Ok(Some(Status::Exited)),
            Op::St { ty, addr, a } => {
                let (v, bytes) = (self.src(a, inst, cx)?, ty.bytes());
                let at = self.address(addr, bytes, inst, cx)?;
                cx.mem
                    .store(at, bytes, v)
                    .ok_or_else(|| Self::oob(inst, cx, at, bytes))?;
            }
            _ => {
                if let Some((d, v)) = self.compute(inst, cx)? {
                    self.set(d, v, cx);
                }
            }
        }
        Ok(None)
    }

    /// Instructions that only read operands (and memory) and write one
    /// register; `None` for the control and store instructions `step` runs.
    fn compute(&self, inst: &Inst, cx: &Ctx) -> Result<Option<(Reg, u64)>, EmuError> {
        let s = |x: Src| self.src(x, inst, cx);
        Ok(Some(match inst.op {
            Op::Mov { d, a } => (d, s(a)?),
            Op::LdParam { d, param } => (d, cx.params[param]),
            Op::Ld { ty, d, addr } => {
                let bytes = ty.bytes();
                let at = self.address(addr, bytes, inst, cx)?;
                let raw = cx
                    .mem
                    .load(at, bytes)
                    .ok_or_else(|| Self::oob(inst, cx, at, bytes))?;
                // Sub-word signed loads sign-extend into the wider register.
                (
                    d,
                    if ty.is_signed() {
                        alu::sext(raw, ty.bits()) as u64
                    } else {
                        raw
                    },
                )
            }
            Op::Int { op, ty, d, a, b } => {
                let r = alu::int_op(op, ty, s(a)?, s(b)?);
                let div0 = || EmuError::DivisionByZero {
                    entry: cx.name(),
                    line: inst.line,
                };
                (d, r.ok_or_else(div0)?)
            }
            Op::IntUn { op, ty, d, a } => (d, alu::int_un(op, ty, s(a)?)),
            Op::MulWide { ty, d, a, b } => (d, alu::mul_wide(ty, s(a)?, s(b)?)),
            Op::Mad { ty, d, a, b, c } => (d, alu::mad(ty, s(a)?, s(b)?, s(c)?)),
            Op::Float { op, ty, d, a, b } => (d, alu::float_op(op, ty, s(a)?, s(b)?)),
            Op::FloatUn { op, ty, d, a } => (d, alu::float_un(op, ty, s(a)?)),
            Op::Fma { ty, d, a, b, c } => (d, alu::fma(ty, s(a)?, s(b)?, s(c)?)),
            Op::Selp { d, a, b, p } => {
                let (a, b) = (s(a)?, s(b)?);
                (d, if s(p)? != 0 { a } else { b })
            }
            Op::Setp { cmp, ty, d, a, b } => (d, u64::from(alu::setp(cmp, ty, s(a)?, s(b)?))),
            Op::Cvt { cvt, d, a } => (d, alu::cvt(cvt, s(a)?)),
            Op::Bra { .. } | Op::Exit | Op::St { .. } => return Ok(None),
        }))
    }
}
