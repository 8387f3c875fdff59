//! f16 and bf16 values. They live in f32 registers holding the half value exactly, and
//! every op whose result is a half type computes in f32 and rounds once to it, as the
//! interpreter does (`halves_as_f32`): the rounding after each op is what keeps a fused
//! chain of half ops equal to the unfused one. Memory holds the 16-bit encodings, which
//! pass through `.b16` registers.

use crate::cx::Cx;
use crate::expr::Val;
use crate::ptx::{f32_imm, Class, Reg};
use kiln_ir::DType;

/// True for the two half types.
pub(crate) fn is_half(d: DType) -> bool {
    matches!(d, DType::F16 | DType::BF16)
}

/// `v` as the f32 its register holds, for the f32 arithmetic on it.
pub(crate) fn widen(v: Val) -> Val {
    if is_half(v.dtype) {
        Val {
            reg: v.reg,
            dtype: DType::F32,
        }
    } else {
        v
    }
}

/// The PTX type of `d`'s encoding.
fn ty(d: DType) -> &'static str {
    if d == DType::BF16 {
        "bf16"
    } else {
        "f16"
    }
}

/// The f32 `x` rounded to half type `to` (to nearest, ties to even), still as an f32.
pub(crate) fn round(cx: &mut Cx, x: Reg, to: DType) -> Reg {
    let bits = encode(cx, x, to);
    decode(cx, bits, to)
}

/// The encoding of the f32 `x` rounded to `to`.
fn encode(cx: &mut Cx, x: Reg, to: DType) -> Reg {
    let h = cx.e.reg(Class::B16);
    cx.e.op(format!("cvt.rn.{}.f32 {h}, {x}", ty(to)));
    h
}

/// The value of encoding `h` of type `from`, as an f32 (exact).
fn decode(cx: &mut Cx, h: Reg, from: DType) -> Reg {
    let f = cx.e.reg(Class::F32);
    cx.e.op(format!("cvt.f32.{} {f}, {h}", ty(from)));
    f
}

/// Loads a half element at `addr` as its f32 value.
pub(crate) fn load(cx: &mut Cx, addr: Reg, d: DType) -> Reg {
    let h = cx.e.reg(Class::B16);
    cx.e.op(format!("ld.global.b16 {h}, [{addr}]"));
    decode(cx, h, d)
}

/// Stores the half value `x` (already rounded) at `addr`.
pub(crate) fn store(cx: &mut Cx, addr: Reg, x: Reg, d: DType) {
    let h = encode(cx, x, d);
    cx.e.op(format!("st.global.b16 [{addr}], {h}"));
}

/// The f64 `x` rounded once to half type `to`. sm_80 has no bf16-from-f64 conversion,
/// and going through a nearest f32 would round twice; rounding to f32 *to odd* first
/// (truncate, then set the last bit when inexact) keeps the second rounding correct,
/// since f32 has more than two bits beyond either half type's precision.
pub(crate) fn from_f64(cx: &mut Cx, x: Reg, to: DType) -> Reg {
    let e = &mut cx.e;
    let (t, back, inexact) = (e.reg(Class::F32), e.reg(Class::F64), e.reg(Class::Pred));
    e.op(format!("cvt.rz.f32.f64 {t}, {x}"));
    e.op(format!("cvt.f64.f32 {back}, {t}"));
    e.op(format!("setp.neu.f64 {inexact}, {back}, {x}"));
    let [w, odd, picked] = [0; 3].map(|_| e.reg(Class::B32));
    e.op(format!("mov.b32 {w}, {t}"));
    e.op(format!("or.b32 {odd}, {w}, 1"));
    e.op(format!("selp.b32 {picked}, {odd}, {w}, {inexact}"));
    let f = e.reg(Class::F32);
    e.op(format!("mov.b32 {f}, {picked}"));
    round(cx, f, to)
}

/// The constant `x` rounded to half type `d`, as the f32 immediate of its value.
pub(crate) fn constant(x: f64, d: DType) -> String {
    let v = if d == DType::BF16 {
        kiln_ir::bf16_from_f64(x).to_f32()
    } else {
        kiln_ir::f16_from_f64(x).to_f32()
    };
    f32_imm(v)
}

/// The encoding of half value `x` as a 16-bit integer of type `to`, in a 64-bit register
/// (sign- or zero-extended, as integers are kept).
pub(crate) fn to_bits(cx: &mut Cx, x: Reg, from: DType, to: DType) -> Reg {
    let h = encode(cx, x, from);
    let r = cx.e.reg(Class::B64);
    let ext = if to == DType::I16 {
        "s64.s16"
    } else {
        "u64.u16"
    };
    cx.e.op(format!("cvt.{ext} {r}, {h}"));
    r
}

/// The half value of type `to` whose encoding is the low 16 bits of integer `x`.
pub(crate) fn from_bits(cx: &mut Cx, x: Reg, to: DType) -> Reg {
    let h = cx.e.reg(Class::B16);
    cx.e.op(format!("cvt.u16.u64 {h}, {x}"));
    decode(cx, h, to)
}
