//! Decodes one instruction (opcode text plus raw operands) into an [`Op`].
//! Only the exact opcode/modifier/type combinations of the dialect are
//! accepted; everything else is "unknown instruction".

use crate::error::ParseError;
use crate::inst::{Cmp, Cvt, FloatOp, FloatUn, IntOp, IntRound, IntUn, Op, ShflMode, Src};
use crate::operand::{parse_int, RawOperand, Scope};
use crate::types::Type::{self, *};

const INT: &[Type] = &[S32, U32, S64, U64];
const FLT: &[Type] = &[F32, F64];
const LOGIC: &[Type] = &[B32, B64, Pred];
const SIGNED: &[Type] = &[S32, S64, F32, F64];
const MOV: &[Type] = &[U16, S16, B16, U32, S32, B32, U64, S64, B64, F32, F64, Pred];
const MEM: &[Type] = &[
    U8, S8, B8, U16, S16, B16, U32, S32, B32, U64, S64, B64, F32, F64,
];
const PARAM: &[Type] = &[U32, S32, B32, U64, S64, B64, F32, F64];
const SELP: &[Type] = &[S32, U32, S64, U64, B32, B64, F32, F64];
const SHR: &[Type] = &[U32, U64, S32, S64, B32, B64];
const CVT_INT: &[Type] = &[U8, S8, U16, S16, U32, S32, U64, S64];

/// Decodes `opcode operands` (without guard) at `s.line`.
pub(crate) fn decode(opcode: &str, ops: &[RawOperand], s: &Scope) -> Result<Op, ParseError> {
    let mut parts = opcode.split('.');
    let base = parts.next().unwrap_or("");
    let mods: Vec<&str> = parts.collect();
    if mods.contains(&"ftz") {
        return Err(s.err(format!(
            "'{opcode}': .ftz is not supported (subnormals are kept)"
        )));
    }
    let unknown = || s.err(format!("unknown instruction '{opcode}'"));
    let d = Decoder { ops, s, opcode };
    let op = match (base, mods.as_slice()) {
        ("mov", [t]) => d.mov(pick(t, MOV))?,
        ("cvta", ["to", "global", "u64"]) => d.mov(Some(U64))?,
        ("ld", ["param", t]) => d.ld_param(pick(t, PARAM))?,
        ("ld", ["global", t]) | ("ld", ["global", "nc", t]) => d.ld(pick(t, MEM))?,
        ("st", ["global", t]) => d.st(pick(t, MEM))?,
        ("ld", ["shared", t]) => d.ld_shared(pick(t, MEM))?,
        ("st", ["shared", t]) => d.st_shared(pick(t, MEM))?,
        ("bar", ["sync"]) | ("barrier", ["sync"]) | ("barrier", ["sync", "aligned"]) => d.bar()?,
        ("shfl", ["sync", m, "b32"]) => d.shfl(m)?,
        ("vote", ["sync", "ballot", "b32"]) => d.ballot()?,
        ("cp", ["async", c, "shared", "global"]) => d.cp_async(c)?,
        ("cp", ["async", "commit_group"]) => d.args(0).map(|_| Some(Op::CpAsyncCommit))?,
        ("cp", ["async", "wait_group"]) => d.cp_async_wait()?,
        ("cvt", ["rna", "tf32", "f32"]) => d.cvt_tf32()?,
        ("cvt", ["rn", "bf16x2", "f32"]) => d.pack_half(false)?,
        ("cvt", ["rn", "f16x2", "f32"]) => d.pack_half(true)?,
        ("cvt", m) => d.cvt(m)?,
        ("setp", [c, t]) => d.setp(c, t)?,
        _ => d.arith(base, &mods)?,
    };
    op.ok_or_else(unknown)
}

/// The type `t` if it is one of `allowed`.
fn pick(t: &str, allowed: &[Type]) -> Option<Type> {
    Type::from_suffix(t).filter(|ty| allowed.contains(ty))
}

struct Decoder<'a> {
    ops: &'a [RawOperand],
    s: &'a Scope<'a>,
    opcode: &'a str,
}

type Decoded = Result<Option<Op>, ParseError>;

impl Decoder<'_> {
    /// The operands, checked to be exactly `n`.
    fn args(&self, n: usize) -> Result<&[RawOperand], ParseError> {
        if self.ops.len() != n {
            let msg = format!(
                "'{}' takes {n} operands, got {}",
                self.opcode,
                self.ops.len()
            );
            return Err(self.s.err(msg));
        }
        Ok(self.ops)
    }

    fn mov(&self, ty: Option<Type>) -> Decoded {
        let Some(ty) = ty else { return Ok(None) };
        let o = self.args(2)?;
        Ok(Some(Op::Mov {
            d: self.s.reg(&o[0], ty, false)?,
            a: self.s.mov_src(&o[1], ty)?,
        }))
    }

    fn ld_param(&self, ty: Option<Type>) -> Decoded {
        let Some(ty) = ty else { return Ok(None) };
        let o = self.args(2)?;
        Ok(Some(Op::LdParam {
            d: self.s.reg(&o[0], ty, false)?,
            param: self.s.param(&o[1], ty)?,
        }))
    }

    fn ld(&self, ty: Option<Type>) -> Decoded {
        let Some(ty) = ty else { return Ok(None) };
        let o = self.args(2)?;
        Ok(Some(Op::Ld {
            ty,
            d: self.s.reg(&o[0], ty, true)?,
            addr: self.s.addr(&o[1])?,
        }))
    }

    fn st(&self, ty: Option<Type>) -> Decoded {
        let Some(ty) = ty else { return Ok(None) };
        let o = self.args(2)?;
        // PTX stores take a register source, never an immediate.
        let a = Src::Reg(self.s.reg(&o[1], ty, true)?);
        Ok(Some(Op::St {
            ty,
            addr: self.s.addr(&o[0])?,
            a,
        }))
    }

    fn ld_shared(&self, ty: Option<Type>) -> Decoded {
        let Some(ty) = ty else { return Ok(None) };
        let o = self.args(2)?;
        Ok(Some(Op::LdShared {
            ty,
            d: self.s.reg(&o[0], ty, true)?,
            addr: self.s.shared_addr(&o[1])?,
        }))
    }

    fn st_shared(&self, ty: Option<Type>) -> Decoded {
        let Some(ty) = ty else { return Ok(None) };
        let o = self.args(2)?;
        let a = Src::Reg(self.s.reg(&o[1], ty, true)?);
        Ok(Some(Op::StShared {
            ty,
            addr: self.s.shared_addr(&o[0])?,
            a,
        }))
    }

    /// `bar.sync 0`: only barrier 0 for the whole CTA; a thread count
    /// (`bar.sync 0, N`) or another barrier id is rejected.
    fn bar(&self) -> Decoded {
        match self.ops {
            [RawOperand::Word(w)] if parse_int(w) == Some(0) => Ok(Some(Op::Bar)),
            _ => Err(self.s.err(format!(
                "'{}' is supported only as '{} 0' (barrier 0, whole CTA)",
                self.opcode, self.opcode
            ))),
        }
    }

    /// `shfl.sync.MODE.b32 d, a, b, c, membermask` (`c` and `membermask`
    /// immediate).
    fn shfl(&self, m: &str) -> Decoded {
        let mode = match m {
            "up" => ShflMode::Up,
            "down" => ShflMode::Down,
            "bfly" => ShflMode::Bfly,
            "idx" => ShflMode::Idx,
            _ => return Ok(None),
        };
        let o = self.args(5)?;
        Ok(Some(Op::Shfl {
            mode,
            d: self.s.reg(&o[0], B32, false)?,
            a: self.s.src(&o[1], B32)?,
            b: self.s.src(&o[2], B32)?,
            c: self.imm32(&o[3], "c")?,
            mask: self.imm32(&o[4], "membermask")?,
        }))
    }

    /// `vote.sync.ballot.b32 d, p, membermask`.
    /// `cp.async.{ca,cg}.shared.global [dst], [src], size[, src_size]`:
    /// `.ca` copies 4, 8 or 16 bytes, `.cg` only 16.
    fn cp_async(&self, cache: &str) -> Decoded {
        let (dst, src, size, src_size) = match self.ops {
            [d, s, n] => (d, s, n, None),
            [d, s, n, m] => (d, s, n, Some(m)),
            _ => return Err(self.s.err("cp.async takes [dst], [src], size[, src_size]")),
        };
        let size = self.imm32(size, "copy size")?;
        let ok = match cache {
            "ca" => matches!(size, 4 | 8 | 16),
            "cg" => size == 16,
            _ => return Ok(None),
        };
        if !ok {
            return Err(self
                .s
                .err(format!("cp.async.{cache} cannot copy {size} bytes")));
        }
        let src_size = match src_size {
            Some(m) => self.s.src(m, U32)?,
            None => Src::Imm(u64::from(size)),
        };
        Ok(Some(Op::CpAsync {
            dst: self.s.shared_addr(dst)?,
            src: self.s.addr(src)?,
            size: size as u8,
            src_size,
        }))
    }

    fn cp_async_wait(&self) -> Decoded {
        let o = self.args(1)?;
        let n = self.imm32(&o[0], "group count")?;
        Ok(Some(Op::CpAsyncWait { n }))
    }

    /// `cvt.rna.tf32.f32 d, a` with `d` a 32-bit bit or integer register.
    fn cvt_tf32(&self) -> Decoded {
        let o = self.args(2)?;
        Ok(Some(Op::Cvt {
            cvt: Cvt::F32ToTf32,
            d: self.s.reg(&o[0], B32, false)?,
            a: self.s.src(&o[1], F32)?,
        }))
    }

    /// `cvt.rn.bf16x2.f32 d, a, b` with `d` a 32-bit register.
    fn pack_half(&self, f16: bool) -> Decoded {
        let o = self.args(3)?;
        Ok(Some(Op::PackHalf {
            d: self.s.reg(&o[0], B32, false)?,
            a: self.s.src(&o[1], F32)?,
            b: self.s.src(&o[2], F32)?,
            f16,
        }))
    }

    fn ballot(&self) -> Decoded {
        let o = self.args(3)?;
        Ok(Some(Op::Ballot {
            d: self.s.reg(&o[0], B32, false)?,
            p: self.s.src(&o[1], Pred)?,
            mask: self.imm32(&o[2], "membermask")?,
        }))
    }

    /// A 32-bit immediate operand (`what` names it in the error).
    fn imm32(&self, op: &RawOperand, what: &str) -> Result<u32, ParseError> {
        match self.s.src(op, B32)? {
            Src::Imm(v) => Ok(v as u32),
            _ => Err(self
                .s
                .err(format!("'{}': {what} must be an immediate", self.opcode))),
        }
    }

    fn setp(&self, c: &str, t: &str) -> Decoded {
        let Some(ty) = pick(t, SELP) else {
            return Ok(None);
        };
        let Some(cmp) = cmp_for(c, ty) else {
            return Ok(None);
        };
        let o = self.args(3)?;
        let (a, b) = (self.s.src(&o[1], ty)?, self.s.src(&o[2], ty)?);
        Ok(Some(Op::Setp {
            cmp,
            ty,
            d: self.s.reg(&o[0], Pred, false)?,
            a,
            b,
        }))
    }

    /// `d, a, b` of one type.
    fn three(&self, ty: Type) -> Result<(u32, [Src; 2]), ParseError> {
        let o = self.args(3)?;
        let d = self.s.reg(&o[0], ty, false)?;
        Ok((d, [self.s.src(&o[1], ty)?, self.s.src(&o[2], ty)?]))
    }

    fn int(&self, op: IntOp, t: &str, allowed: &[Type]) -> Decoded {
        let Some(ty) = pick(t, allowed) else {
            return Ok(None);
        };
        if matches!(op, IntOp::Shl | IntOp::Shr) {
            let o = self.args(3)?;
            let (d, a) = (self.s.reg(&o[0], ty, false)?, self.s.src(&o[1], ty)?);
            return Ok(Some(Op::Int {
                op,
                ty,
                d,
                a,
                b: self.s.src(&o[2], U32)?,
            }));
        }
        let (d, [a, b]) = self.three(ty)?;
        Ok(Some(Op::Int { op, ty, d, a, b }))
    }

    fn float(&self, op: FloatOp, t: &str, allowed: &[Type]) -> Decoded {
        let Some(ty) = pick(t, allowed) else {
            return Ok(None);
        };
        let (d, [a, b]) = self.three(ty)?;
        Ok(Some(Op::Float { op, ty, d, a, b }))
    }

    fn unary(&self, t: &str, allowed: &[Type], make: impl Fn(Type, u32, Src) -> Op) -> Decoded {
        let Some(ty) = pick(t, allowed) else {
            return Ok(None);
        };
        let o = self.args(2)?;
        Ok(Some(make(
            ty,
            self.s.reg(&o[0], ty, false)?,
            self.s.src(&o[1], ty)?,
        )))
    }

    fn int_un(&self, op: IntUn, t: &str, allowed: &[Type]) -> Decoded {
        self.unary(t, allowed, |ty, d, a| Op::IntUn { op, ty, d, a })
    }

    fn float_un(&self, op: FloatUn, t: &str, allowed: &[Type]) -> Decoded {
        self.unary(t, allowed, |ty, d, a| Op::FloatUn { op, ty, d, a })
    }

    /// `neg`/`abs`, whose type picks the integer or float form.
    fn neg_abs(&self, int: IntUn, flt: FloatUn, t: &str) -> Decoded {
        match pick(t, SIGNED) {
            Some(ty) if ty.is_float() => self.float_un(flt, t, FLT),
            Some(_) => self.int_un(int, t, &[S32, S64]),
            None => Ok(None),
        }
    }

    /// `min`/`max`, integer or float.
    fn min_max(&self, int: IntOp, flt: FloatOp, t: &str) -> Decoded {
        match pick(t, FLT) {
            Some(_) => self.float(flt, t, FLT),
            None => self.int(int, t, INT),
        }
    }

    fn four(&self, ty: Type) -> Result<(u32, [Src; 3]), ParseError> {
        let o = self.args(4)?;
        let d = self.s.reg(&o[0], ty, false)?;
        Ok((
            d,
            [
                self.s.src(&o[1], ty)?,
                self.s.src(&o[2], ty)?,
                self.s.src(&o[3], ty)?,
            ],
        ))
    }

    fn mad_fma(&self, t: &str, allowed: &[Type], fma: bool) -> Decoded {
        let Some(ty) = pick(t, allowed) else {
            return Ok(None);
        };
        let (d, [a, b, c]) = self.four(ty)?;
        Ok(Some(if fma {
            Op::Fma { ty, d, a, b, c }
        } else {
            Op::Mad { ty, d, a, b, c }
        }))
    }

    fn selp(&self, t: &str) -> Decoded {
        let Some(ty) = pick(t, SELP) else {
            return Ok(None);
        };
        let o = self.args(4)?;
        let d = self.s.reg(&o[0], ty, false)?;
        let (a, b) = (self.s.src(&o[1], ty)?, self.s.src(&o[2], ty)?);
        Ok(Some(Op::Selp {
            d,
            a,
            b,
            p: self.s.src(&o[3], Pred)?,
        }))
    }

    fn mul_wide(&self, t: &str) -> Decoded {
        let Some(ty) = pick(t, &[S32, U32]) else {
            return Ok(None);
        };
        let o = self.args(3)?;
        let d = self.s.reg(&o[0], wide_type(ty), false)?;
        let (a, b) = (self.s.src(&o[1], ty)?, self.s.src(&o[2], ty)?);
        Ok(Some(Op::MulWide { ty, d, a, b }))
    }

    /// Integer, logic and float arithmetic.
    fn arith(&self, base: &str, mods: &[&str]) -> Decoded {
        use {FloatOp as F, FloatUn as U, IntOp as I};
        match (base, mods) {
            ("add", [t]) => self.int(I::Add, t, INT),
            ("sub", [t]) => self.int(I::Sub, t, INT),
            ("add", ["rn", t]) => self.float(F::Add, t, FLT),
            ("sub", ["rn", t]) => self.float(F::Sub, t, FLT),
            ("mul", ["rn", t]) => self.float(F::Mul, t, FLT),
            ("div", ["rn", t]) => self.float(F::Div, t, FLT),
            ("mul", ["lo", t]) => self.int(I::MulLo, t, INT),
            ("mul", ["hi", t]) => self.int(I::MulHi, t, INT),
            ("mul", ["wide", t]) => self.mul_wide(t),
            ("mad", ["lo", t]) => self.mad_fma(t, INT, false),
            ("fma", ["rn", t]) => self.mad_fma(t, FLT, true),
            ("div", [t]) => self.int(I::Div, t, INT),
            ("rem", [t]) => self.int(I::Rem, t, INT),
            ("min", [t]) => self.min_max(I::Min, F::Min, t),
            ("max", [t]) => self.min_max(I::Max, F::Max, t),
            ("min", ["NaN", "f32"]) => self.float(F::MinNaN, "f32", FLT),
            ("max", ["NaN", "f32"]) => self.float(F::MaxNaN, "f32", FLT),
            ("neg", [t]) => self.neg_abs(IntUn::Neg, U::Neg, t),
            ("abs", [t]) => self.neg_abs(IntUn::Abs, U::Abs, t),
            ("and", [t]) => self.int(I::And, t, LOGIC),
            ("or", [t]) => self.int(I::Or, t, LOGIC),
            ("xor", [t]) => self.int(I::Xor, t, LOGIC),
            ("not", [t]) => self.int_un(IntUn::Not, t, LOGIC),
            ("shl", [t]) => self.int(I::Shl, t, &[B32, B64]),
            ("shr", [t]) => self.int(I::Shr, t, SHR),
            ("selp", [t]) => self.selp(t),
            ("copysign", [t]) => self.float(F::Copysign, t, FLT),
            ("sqrt", ["rn", t]) => self.float_un(U::Sqrt, t, FLT),
            ("rcp", ["rn", t]) => self.float_un(U::Rcp, t, FLT),
            (_, ["approx", "f32"]) => self.approx(base),
            _ => Ok(None),
        }
    }

    fn approx(&self, base: &str) -> Decoded {
        let op = match base {
            "rsqrt" => FloatUn::Rsqrt,
            "ex2" => FloatUn::Ex2,
            "lg2" => FloatUn::Lg2,
            "sin" => FloatUn::Sin,
            "cos" => FloatUn::Cos,
            "tanh" => FloatUn::Tanh,
            _ => return Ok(None),
        };
        self.float_un(op, "f32", &[F32])
    }

    fn cvt(&self, mods: &[&str]) -> Decoded {
        let (rnd, rest) = match mods.split_first() {
            Some((r, rest)) if ROUNDINGS.contains(r) => (Some(*r), rest),
            _ => (None, mods),
        };
        let (sat, rest) = match rest.split_first() {
            Some((&"sat", rest)) => (true, rest),
            _ => (false, rest),
        };
        let [dt, st] = rest else { return Ok(None) };
        let (Some(dst), Some(src)) = (Type::from_suffix(dt), Type::from_suffix(st)) else {
            return Ok(None);
        };
        let Some(cvt) = cvt_kind(rnd, sat, dst, src) else {
            return Ok(None);
        };
        let o = self.args(2)?;
        Ok(Some(Op::Cvt {
            cvt,
            d: self.s.reg(&o[0], dst, true)?,
            a: self.s.src_wide(&o[1], src)?,
        }))
    }
}

const ROUNDINGS: &[&str] = &["rn", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi"];

/// The 64-bit result type of `mul.wide` for a 32-bit source type.
fn wide_type(ty: Type) -> Type {
    if ty.is_signed() {
        S64
    } else {
        U64
    }
}

fn int_round(r: Option<&str>) -> Option<IntRound> {
    match r? {
        "rzi" => Some(IntRound::Zero),
        "rni" => Some(IntRound::NearestEven),
        "rmi" => Some(IntRound::Down),
        "rpi" => Some(IntRound::Up),
        _ => None,
    }
}

/// The conversion `cvt[.rnd][.sat].dst.src` performs, if it is supported.
fn cvt_kind(rnd: Option<&str>, sat: bool, dst: Type, src: Type) -> Option<Cvt> {
    let int = |t: Type| CVT_INT.contains(&t);
    let flt = |t: Type| FLT.contains(&t);
    let rn = rnd == Some("rn") && !sat;
    let plain = rnd.is_none() && !sat;
    match (dst, src) {
        (d, s) if int(d) && int(s) && rnd.is_none() => Some(Cvt::IntInt {
            dst: d,
            src: s,
            sat,
        }),
        (d, s) if int(d) && flt(s) => int_round(rnd).map(|rnd| Cvt::FloatInt {
            dst: d,
            src: s,
            rnd,
        }),
        (d, s) if flt(d) && int(s) && rn => Some(Cvt::IntFloat { dst: d, src: s }),
        (F64, F32) if plain => Some(Cvt::F32ToF64),
        (F32, F64) if rn => Some(Cvt::F64ToF32),
        (F32, F64) if rnd == Some("rz") && !sat => Some(Cvt::F64ToF32Rz),
        (d, s) if flt(d) && d == s && !sat => {
            int_round(rnd).map(|rnd| Cvt::RoundIntegral { ty: d, rnd })
        }
        (F16, F32) if rn => Some(Cvt::F32ToF16),
        (F32, F16) if plain => Some(Cvt::F16ToF32),
        (Bf16, F32) if rn => Some(Cvt::F32ToBf16),
        (F32, Bf16) if plain => Some(Cvt::Bf16ToF32),
        _ => None,
    }
}

/// The comparison `c` if it is valid for type `ty`.
fn cmp_for(c: &str, ty: Type) -> Option<Cmp> {
    use Cmp::*;
    let ordered = match c {
        "eq" => Some(Eq),
        "ne" => Some(Ne),
        "lt" => Some(Lt),
        "le" => Some(Le),
        "gt" => Some(Gt),
        "ge" => Some(Ge),
        _ => None,
    };
    match ty.class() {
        crate::types::Class::Bits => ordered.filter(|c| matches!(c, Eq | Ne)),
        crate::types::Class::Float => ordered.or(match c {
            "equ" => Some(Equ),
            "neu" => Some(Neu),
            "ltu" => Some(Ltu),
            "leu" => Some(Leu),
            "gtu" => Some(Gtu),
            "geu" => Some(Geu),
            "num" => Some(Num),
            "nan" => Some(Nan),
            _ => None,
        }),
        _ => ordered,
    }
}
