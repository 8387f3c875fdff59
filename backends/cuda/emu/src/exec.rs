//! Per-thread interpreter state and instruction execution.
//!
//! A [`Thread`] runs until it *blocks*: it exits, reaches `bar.sync`, or
//! reaches a warp collective (`shfl.sync`, `vote.sync`). The CTA scheduler
//! in `sched` decides when blocked threads resume; a collective's results
//! are computed there, from all lanes at once, and written back with
//! [`Thread::finish_collective`].

use crate::alu;
use crate::error::EmuError;
use crate::inst::{Addr, Inst, Op, Reg, SharedAddr, Special, Src};
use crate::memory::Memory;
use crate::module::Entry;
use crate::shared::{Fault, SharedMem};
use std::collections::VecDeque;

/// Launch-wide and CTA-wide state shared by the threads of one CTA.
pub(crate) struct Ctx<'a> {
    pub entry: &'a Entry,
    pub mem: &'a mut Memory,
    pub params: &'a [u64],
    pub ntid: [u32; 3],
    pub nctaid: [u32; 3],
    pub ctaid: [u32; 3],
    pub shared: SharedMem,
    /// Instructions issued so far in this launch (guarded-off ones count).
    pub steps: u64,
    pub max_steps: u64,
}

impl Ctx<'_> {
    pub fn name(&self) -> String {
        self.entry.sig.name.clone()
    }
}

/// Why a thread stopped running; the payload is the index of the blocking
/// instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Exited,
    Barrier(usize),
    Collective(usize),
}

/// One thread: program counter, thread index and registers.
pub(crate) struct Thread {
    pc: usize,
    tid: [u32; 3],
    /// Linear thread id in the CTA (x fastest); names threads in errors.
    lin: u32,
    regs: Vec<u64>,
    /// Whether each register has been written; reading one that has not is
    /// an error rather than a silent zero.
    init: Vec<bool>,
    /// `cp.async` copies not yet committed, then the committed groups,
    /// oldest first: their bytes land in shared memory at the
    /// `cp.async.wait_group` that covers them.
    copies: Vec<AsyncCopy>,
    groups: VecDeque<Vec<AsyncCopy>>,
}

/// One `cp.async` in flight: the global bytes, read when it was issued.
struct AsyncCopy {
    dst: u64,
    data: [u8; 16],
    len: u8,
    line: u32,
}

impl Thread {
    pub fn new(nregs: usize) -> Self {
        Thread {
            pc: 0,
            tid: [0; 3],
            lin: 0,
            regs: vec![0; nregs],
            init: vec![false; nregs],
            copies: Vec::new(),
            groups: VecDeque::new(),
        }
    }

    /// Resets the thread to the entry's first instruction with index `tid`
    /// and linear id `lin`.
    pub fn reset(&mut self, tid: [u32; 3], lin: u32) {
        self.pc = 0;
        self.tid = tid;
        self.lin = lin;
        self.init.fill(false);
        self.copies.clear();
        self.groups.clear();
    }

    /// Linear thread id in the CTA.
    pub fn lin(&self) -> u32 {
        self.lin
    }

    /// Register `r`, which must have been written.
    pub fn read(&self, r: Reg, inst: &Inst, cx: &Ctx) -> Result<u64, EmuError> {
        self.get(r, inst, cx)
    }

    /// Writes register `r`.
    pub fn write(&mut self, r: Reg, v: u64, cx: &Ctx) {
        self.set(r, v, cx);
    }

    /// Runs until the thread blocks (running off the end of the entry is an
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
            match self.step(inst, cx)? {
                Some(Status::Exited) => break,
                Some(status) => return Ok(status),
                None => {}
            }
        }
        self.check_copies_landed(cx)?;
        Ok(Status::Exited)
    }

    /// A thread may not exit with copies no `cp.async.wait_group` landed.
    fn check_copies_landed(&self, cx: &Ctx) -> Result<(), EmuError> {
        let mut left = self.groups.iter().flatten().chain(&self.copies);
        match left.next() {
            None => Ok(()),
            Some(c) => Err(EmuError::AsyncNotWaited {
                entry: cx.name(),
                line: c.line,
                thread: self.lin,
            }),
        }
    }

    /// The per-lane source operands of the collective this thread is
    /// blocked at: `[a, b]` for `shfl.sync`, `[p, 0]` for a ballot.
    pub fn collective_inputs(&self, inst: &Inst, cx: &Ctx) -> Result<[u64; 2], EmuError> {
        let s = |x: Src| self.src(x, inst, cx);
        match inst.op {
            Op::Shfl { a, b, .. } => Ok([s(a)?, s(b)?]),
            Op::Ballot { p, .. } => Ok([s(p)?, 0]),
            _ => Ok([0; 2]),
        }
    }

    /// Writes a collective's result `v` to its destination register.
    pub fn finish_collective(&mut self, inst: &Inst, v: u64, cx: &Ctx) {
        if let Op::Shfl { d, .. } | Op::Ballot { d, .. } = inst.op {
            self.set(d, v, cx);
        }
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

    /// The checked shared-window address of a `bytes`-wide access; a 32-bit
    /// base register is zero-extended.
    pub fn shared_address(
        &self,
        a: SharedAddr,
        bytes: u64,
        inst: &Inst,
        cx: &Ctx,
    ) -> Result<u64, EmuError> {
        let base = match a.base {
            Some(r) => self.get(r, inst, cx)?,
            None => 0,
        };
        let addr = base.wrapping_add(a.offset as u64);
        if addr % bytes != 0 {
            return Err(EmuError::SharedMisaligned {
                entry: cx.name(),
                line: inst.line,
                addr,
                bytes,
            });
        }
        Ok(addr)
    }

    pub fn shared_fault(&self, f: Fault, inst: &Inst, cx: &Ctx, addr: u64, bytes: u64) -> EmuError {
        let (entry, line) = (cx.name(), inst.line);
        match f {
            Fault::OutOfBounds => EmuError::SharedOutOfBounds {
                entry,
                line,
                addr,
                bytes,
            },
            Fault::Race {
                addr,
                first,
                second,
            } => EmuError::SharedRace {
                entry,
                line,
                addr,
                first_thread: first,
                second_thread: second,
            },
            Fault::AsyncPending { addr, thread } => EmuError::AsyncPending {
                entry,
                line,
                addr,
                thread,
            },
        }
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
            Op::Bar => return Ok(Some(Status::Barrier(self.pc - 1))),
            Op::Shfl { .. } | Op::Ballot { .. } | Op::Ldmatrix { .. } | Op::Mma { .. } => {
                return Ok(Some(Status::Collective(self.pc - 1)))
            }
            Op::LdShared { .. } | Op::StShared { .. } => self.shared_access(inst, cx)?,
            Op::CpAsync { .. } | Op::CpAsyncCommit | Op::CpAsyncWait { .. } => {
                self.async_copy(inst, cx)?
            }
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

    /// `ld.shared`/`st.shared`, out of line so the common path through
    /// `step` stays as compact as it was before shared memory existed.
    #[inline(never)]
    fn shared_access(&mut self, inst: &Inst, cx: &mut Ctx) -> Result<(), EmuError> {
        match inst.op {
            Op::LdShared { ty, d, addr } => {
                let bytes = ty.bytes();
                let at = self.shared_address(addr, bytes, inst, cx)?;
                let raw = cx
                    .shared
                    .load(at, bytes, self.lin, inst.line)
                    .map_err(|f| self.shared_fault(f, inst, cx, at, bytes))?;
                self.set(d, load_ext(ty, raw), cx);
            }
            Op::StShared { ty, addr, a } => {
                let (v, bytes) = (self.src(a, inst, cx)?, ty.bytes());
                let at = self.shared_address(addr, bytes, inst, cx)?;
                cx.shared
                    .store(at, bytes, v, self.lin)
                    .map_err(|f| self.shared_fault(f, inst, cx, at, bytes))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// `cp.async` and its group instructions, out of line like
    /// `shared_access`.
    #[inline(never)]
    fn async_copy(&mut self, inst: &Inst, cx: &mut Ctx) -> Result<(), EmuError> {
        match inst.op {
            Op::CpAsync {
                dst,
                src,
                size,
                src_size,
            } => {
                let bytes = u64::from(size);
                let at = self.shared_address(dst, bytes, inst, cx)?;
                let from = self.address(src, bytes, inst, cx)?;
                let n = self.src(src_size, inst, cx)?.min(bytes);
                let mut data = [0u8; 16];
                for (i, b) in data.iter_mut().enumerate().take(n as usize) {
                    let a = from + i as u64;
                    *b = cx.mem.load(a, 1).ok_or_else(|| Self::oob(inst, cx, a, 1))? as u8;
                }
                (cx.shared.begin_async(at, bytes, self.lin))
                    .map_err(|f| self.shared_fault(f, inst, cx, at, bytes))?;
                self.copies.push(AsyncCopy {
                    dst: at,
                    data,
                    len: size,
                    line: inst.line,
                });
            }
            Op::CpAsyncCommit => {
                let group = std::mem::take(&mut self.copies);
                self.groups.push_back(group);
            }
            Op::CpAsyncWait { n } => {
                while self.groups.len() > n as usize {
                    for c in self.groups.pop_front().unwrap_or_default() {
                        let data = &c.data[..usize::from(c.len)];
                        (cx.shared.land(c.dst, data, self.lin)).map_err(|f| {
                            self.shared_fault(f, inst, cx, c.dst, data.len() as u64)
                        })?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
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
                (d, load_ext(ty, raw))
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
            Op::PackHalf { d, a, b, f16 } => {
                let half = |x: u64| {
                    let x = f32::from_bits(x as u32);
                    u64::from(if f16 {
                        alu::f32_to_f16(x)
                    } else {
                        alu::f32_to_bf16(x)
                    })
                };
                (d, half(s(a)?) << 16 | half(s(b)?))
            }
            Op::Bra { .. }
            | Op::Exit
            | Op::St { .. }
            | Op::LdShared { .. }
            | Op::StShared { .. }
            | Op::Bar
            | Op::Shfl { .. }
            | Op::Ballot { .. }
            | Op::CpAsync { .. }
            | Op::CpAsyncCommit
            | Op::CpAsyncWait { .. }
            | Op::Ldmatrix { .. }
            | Op::Mma { .. } => return Ok(None),
        }))
    }
}

/// A loaded value as its register holds it: sub-word signed loads
/// sign-extend into the wider register.
fn load_ext(ty: crate::types::Type, raw: u64) -> u64 {
    if ty.is_signed() {
        alu::sext(raw, ty.bits()) as u64
    } else {
        raw
    }
}
