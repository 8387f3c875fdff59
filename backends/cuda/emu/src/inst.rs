//! The typed instruction form the parser produces and the interpreter runs:
//! opcodes, types and operands are enums and indices, never strings, so
//! execution does no text handling.

use crate::types::Type;

/// Index of a register in its entry's register table.
pub(crate) type Reg = u32;

/// The special registers the dialect reads (all `.u32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    Tid(usize),
    Ntid(usize),
    Ctaid(usize),
    Nctaid(usize),
}

/// A source operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Src {
    Reg(Reg),
    /// Raw bits, already truncated to the instruction type's width.
    Imm(u64),
    Special(Special),
}

/// A global address `[%rdN+offset]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Addr {
    pub base: Reg,
    pub offset: i64,
}

/// A shared-window address `[%r+offset]` (32- or 64-bit base register) or
/// `[NAME+offset]` (no base: the array's offset is folded into `offset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SharedAddr {
    pub base: Option<Reg>,
    pub offset: i64,
}

/// The lane-selection mode of `shfl.sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

/// The shape and input type of an `mma.sync` (all `.row.col`, f32
/// accumulators).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MmaShape {
    /// `m16n8k8.tf32`: four A registers, two B, one tf32 value each.
    M16N8K8Tf32,
    /// `m16n8k16.bf16`: four A registers, two B, two bf16 values each.
    M16N8K16Bf16,
    /// `m16n8k16.f16`: the same layout with f16 values.
    M16N8K16F16,
}

impl MmaShape {
    /// Registers of each operand: d, a, b, c.
    pub const COUNTS: [usize; 4] = [4, 4, 2, 4];
}

/// Two-operand integer and bitwise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntOp {
    Add,
    Sub,
    MulLo,
    MulHi,
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

/// One-operand integer and bitwise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntUn {
    Neg,
    Abs,
    Not,
}

/// Two-operand float operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FloatOp {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    MinNaN,
    MaxNaN,
    /// PTX order: `copysign d, a, b` has b's magnitude and a's sign.
    Copysign,
}

/// One-operand float operations; the `.approx` ones are modelled exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FloatUn {
    Neg,
    Abs,
    Sqrt,
    Rcp,
    Rsqrt,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
}

/// `setp` comparison operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

/// Integer rounding modes of `cvt` (`.rzi`, `.rni`, `.rmi`, `.rpi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntRound {
    Zero,
    NearestEven,
    Down,
    Up,
}

/// The conversion a `cvt` performs, decided at parse time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cvt {
    IntInt {
        dst: Type,
        src: Type,
        sat: bool,
    },
    FloatInt {
        dst: Type,
        src: Type,
        rnd: IntRound,
    },
    IntFloat {
        dst: Type,
        src: Type,
    },
    F32ToF64,
    F64ToF32,
    /// `cvt.rz.f32.f64`: toward zero.
    F64ToF32Rz,
    RoundIntegral {
        ty: Type,
        rnd: IntRound,
    },
    F32ToF16,
    F16ToF32,
    F32ToBf16,
    Bf16ToF32,
    /// `cvt.rna.tf32.f32`: the f32 bits rounded to 10 mantissa bits, ties
    /// away from zero, the low 13 bits cleared.
    F32ToTf32,
}

/// The operation of one instruction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Op {
    Mov {
        d: Reg,
        a: Src,
    },
    LdParam {
        d: Reg,
        param: usize,
    },
    Ld {
        ty: Type,
        d: Reg,
        addr: Addr,
    },
    St {
        ty: Type,
        addr: Addr,
        a: Src,
    },
    Int {
        op: IntOp,
        ty: Type,
        d: Reg,
        a: Src,
        b: Src,
    },
    IntUn {
        op: IntUn,
        ty: Type,
        d: Reg,
        a: Src,
    },
    MulWide {
        ty: Type,
        d: Reg,
        a: Src,
        b: Src,
    },
    Mad {
        ty: Type,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Float {
        op: FloatOp,
        ty: Type,
        d: Reg,
        a: Src,
        b: Src,
    },
    FloatUn {
        op: FloatUn,
        ty: Type,
        d: Reg,
        a: Src,
    },
    Fma {
        ty: Type,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Selp {
        d: Reg,
        a: Src,
        b: Src,
        p: Src,
    },
    Setp {
        cmp: Cmp,
        ty: Type,
        d: Reg,
        a: Src,
        b: Src,
    },
    Cvt {
        cvt: Cvt,
        d: Reg,
        a: Src,
    },
    /// `cvt.rn.bf16x2.f32 d, a, b` (or `f16x2` with `f16`): `a` rounded to the half
    /// type in the upper half of `d`, `b` in the lower.
    PackHalf {
        d: Reg,
        a: Src,
        b: Src,
        f16: bool,
    },
    LdShared {
        ty: Type,
        d: Reg,
        addr: SharedAddr,
    },
    StShared {
        ty: Type,
        addr: SharedAddr,
        a: Src,
    },
    /// `bar.sync 0`: blocks the thread until the CTA's live threads arrive.
    Bar,
    /// `shfl.sync.MODE.b32 d, a, b, c, mask`: a warp collective. `c` and
    /// `mask` are immediates only, which keeps `Op` (and so every
    /// instruction) as small as before.
    Shfl {
        mode: ShflMode,
        d: Reg,
        a: Src,
        b: Src,
        c: u32,
        mask: u32,
    },
    /// `vote.sync.ballot.b32 d, p, mask`: a warp collective.
    Ballot {
        d: Reg,
        p: Src,
        mask: u32,
    },
    /// `cp.async.{ca,cg}.shared.global [dst], [src], size, src_size`: the
    /// global bytes are read now and land in shared memory only when a
    /// `cp.async.wait_group` covers their group (bytes past `src_size` are
    /// zeros).
    CpAsync {
        dst: SharedAddr,
        src: Addr,
        size: u8,
        src_size: Src,
    },
    /// `cp.async.commit_group`: the thread's uncommitted copies become a group.
    CpAsyncCommit,
    /// `cp.async.wait_group n`: all but the newest `n` groups land.
    CpAsyncWait {
        n: u32,
    },
    /// `ldmatrix.sync.aligned.m8n8.xN[.trans].shared.b16`: a warp collective;
    /// the destination registers are `lists[regs..regs + count]`.
    Ldmatrix {
        count: u8,
        trans: bool,
        regs: u32,
        addr: SharedAddr,
    },
    /// `mma.sync.aligned.SHAPE.row.col.f32.T.T.f32 {d}, {a}, {b}, {c}`: a warp
    /// collective; the operands are `lists[regs..]` in that order.
    Mma {
        shape: MmaShape,
        regs: u32,
    },
    Bra {
        target: usize,
    },
    Exit,
}

/// One instruction with its guard and source line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Inst {
    /// `@%p` (true) or `@!%p` (false).
    pub guard: Option<(Reg, bool)>,
    pub op: Op,
    pub line: u32,
}

#[cfg(test)]
mod tests {
    /// Instructions are copied into the hot loop; a variant that grows `Op`
    /// costs every kernel (collective operands are kept small for this).
    #[test]
    fn instructions_stay_small() {
        assert!(std::mem::size_of::<super::Inst>() <= 72);
    }
}
