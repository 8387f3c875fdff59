//! Pure semantics of the arithmetic, comparison and conversion
//! instructions on raw register bits. Results are masked to the
//! instruction type's width; `None` means integer division by zero.

use crate::inst::{Cmp, Cvt, FloatOp, FloatUn, IntOp, IntRound, IntUn};
use crate::types::Type;

/// Sign-extends the low `bits` bits of `v`.
pub(crate) fn sext(v: u64, bits: u32) -> i64 {
    let sh = 64 - bits;
    ((v << sh) as i64) >> sh
}

/// Zero-extends the low `bits` bits of `v`.
pub(crate) fn zext(v: u64, bits: u32) -> u64 {
    v & crate::types::mask(bits)
}

/// The value of `v` as a wide integer, per `ty`'s signedness.
fn wide(v: u64, ty: Type) -> i128 {
    if ty.is_signed() {
        i128::from(sext(v, ty.bits()))
    } else {
        i128::from(zext(v, ty.bits()))
    }
}

pub(crate) fn int_op(op: IntOp, ty: Type, a: u64, b: u64) -> Option<u64> {
    let w = ty.bits();
    let (sa, sb) = (wide(a, ty), wide(b, ty));
    let r = match op {
        IntOp::Add => a.wrapping_add(b),
        IntOp::Sub => a.wrapping_sub(b),
        IntOp::MulLo => a.wrapping_mul(b),
        IntOp::MulHi if ty.is_signed() => ((sa * sb) >> w) as u64,
        // Unsigned 64x64 products overflow i128, so use u128.
        IntOp::MulHi => ((sa as u128 * sb as u128) >> w) as u64,
        // Computed on the extended values so MIN / -1 wraps like PTX.
        IntOp::Div if sb == 0 => return None,
        IntOp::Rem if sb == 0 => return None,
        IntOp::Div => (sa / sb) as u64,
        IntOp::Rem => (sa % sb) as u64,
        IntOp::Min => sa.min(sb) as u64,
        IntOp::Max => sa.max(sb) as u64,
        IntOp::And => a & b,
        IntOp::Or => a | b,
        IntOp::Xor => a ^ b,
        IntOp::Shl => shift(a, b, w, |a, n| a << n, 0),
        IntOp::Shr if ty.is_signed() => (sext(a, w) >> zext(b, 32).min(u64::from(w) - 1)) as u64,
        IntOp::Shr => shift(zext(a, w), b, w, |a, n| a >> n, 0),
    };
    Some(r & ty.mask())
}

/// A logical shift by the u32 amount `b`; amounts >= `w` give `full`.
fn shift(a: u64, b: u64, w: u32, f: impl Fn(u64, u64) -> u64, full: u64) -> u64 {
    let n = zext(b, 32);
    if n >= u64::from(w) {
        full
    } else {
        f(a, n)
    }
}

pub(crate) fn int_un(op: IntUn, ty: Type, a: u64) -> u64 {
    let r = match op {
        IntUn::Neg => a.wrapping_neg(),
        IntUn::Abs => sext(a, ty.bits()).wrapping_abs() as u64,
        IntUn::Not => !a,
    };
    r & ty.mask()
}

/// `mul.wide`: the full 64-bit product of two 32-bit values.
pub(crate) fn mul_wide(ty: Type, a: u64, b: u64) -> u64 {
    (wide(a, ty) * wide(b, ty)) as u64
}

pub(crate) fn mad(ty: Type, a: u64, b: u64, c: u64) -> u64 {
    a.wrapping_mul(b).wrapping_add(c) & ty.mask()
}

macro_rules! float_impl {
    ($bin:ident, $un:ident, $fma:ident, $cmp:ident, $round:ident, $f:ty, $u:ty) => {
        fn $bin(op: FloatOp, a: $f, b: $f) -> $f {
            match op {
                FloatOp::Add => a + b,
                FloatOp::Sub => a - b,
                FloatOp::Mul => a * b,
                FloatOp::Div => a / b,
                FloatOp::Min | FloatOp::MinNaN if a.is_nan() || b.is_nan() => {
                    nan_pick(op == FloatOp::MinNaN, a, b, <$f>::NAN)
                }
                FloatOp::Max | FloatOp::MaxNaN if a.is_nan() || b.is_nan() => {
                    nan_pick(op == FloatOp::MaxNaN, a, b, <$f>::NAN)
                }
                // Signed zeros compare equal; PTX orders -0 below +0.
                FloatOp::Min | FloatOp::MinNaN if a == b => {
                    if a.is_sign_negative() {
                        a
                    } else {
                        b
                    }
                }
                FloatOp::Max | FloatOp::MaxNaN if a == b => {
                    if a.is_sign_negative() {
                        b
                    } else {
                        a
                    }
                }
                FloatOp::Min | FloatOp::MinNaN => {
                    if a < b {
                        a
                    } else {
                        b
                    }
                }
                FloatOp::Max | FloatOp::MaxNaN => {
                    if a > b {
                        a
                    } else {
                        b
                    }
                }
                FloatOp::Copysign => b.copysign(a),
            }
        }

        fn $un(op: FloatUn, a: $f) -> $f {
            const SIGN: $u = 1 << (<$u>::BITS - 1);
            match op {
                FloatUn::Neg => <$f>::from_bits(a.to_bits() ^ SIGN),
                FloatUn::Abs => <$f>::from_bits(a.to_bits() & !SIGN),
                FloatUn::Sqrt => a.sqrt(),
                FloatUn::Rcp => 1.0 / a,
                FloatUn::Rsqrt => 1.0 / a.sqrt(),
                FloatUn::Ex2 => a.exp2(),
                FloatUn::Lg2 => a.log2(),
                FloatUn::Sin => a.sin(),
                FloatUn::Cos => a.cos(),
                FloatUn::Tanh => a.tanh(),
            }
        }

        fn $fma(a: $f, b: $f, c: $f) -> $f {
            a.mul_add(b, c)
        }

        fn $cmp(cmp: Cmp, a: $f, b: $f) -> bool {
            let un = a.is_nan() || b.is_nan();
            match cmp {
                Cmp::Eq => a == b,
                Cmp::Ne => !un && a != b,
                Cmp::Lt => a < b,
                Cmp::Le => a <= b,
                Cmp::Gt => a > b,
                Cmp::Ge => a >= b,
                Cmp::Equ => un || a == b,
                Cmp::Neu => un || a != b,
                Cmp::Ltu => un || a < b,
                Cmp::Leu => un || a <= b,
                Cmp::Gtu => un || a > b,
                Cmp::Geu => un || a >= b,
                Cmp::Num => !un,
                Cmp::Nan => un,
            }
        }

        fn $round(rnd: IntRound, a: $f) -> $f {
            match rnd {
                IntRound::Zero => a.trunc(),
                IntRound::NearestEven => a.round_ties_even(),
                IntRound::Down => a.floor(),
                IntRound::Up => a.ceil(),
            }
        }
    };
}

float_impl!(bin32, un32, fma32, cmp32, round32, f32, u32);
float_impl!(bin64, un64, fma64, cmp64, round64, f64, u64);

/// The non-NaN input, or `nan` when both are NaN or `propagate` is set.
fn nan_pick<F: Copy + PartialEq>(propagate: bool, a: F, b: F, nan: F) -> F {
    #[allow(clippy::eq_op)] // x != x is the NaN test without a trait bound.
    let (a_nan, b_nan) = (a != a, b != b);
    match (propagate || (a_nan && b_nan), a_nan) {
        (true, _) => nan,
        (false, true) => b,
        (false, false) => a,
    }
}

fn f32_of(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

fn f64_of(v: u64) -> f64 {
    f64::from_bits(v)
}

fn bits32(x: f32) -> u64 {
    u64::from(x.to_bits())
}

pub(crate) fn float_op(op: FloatOp, ty: Type, a: u64, b: u64) -> u64 {
    match ty {
        Type::F32 => bits32(bin32(op, f32_of(a), f32_of(b))),
        _ => bin64(op, f64_of(a), f64_of(b)).to_bits(),
    }
}

pub(crate) fn float_un(op: FloatUn, ty: Type, a: u64) -> u64 {
    match ty {
        Type::F32 => bits32(un32(op, f32_of(a))),
        _ => un64(op, f64_of(a)).to_bits(),
    }
}

pub(crate) fn fma(ty: Type, a: u64, b: u64, c: u64) -> u64 {
    match ty {
        Type::F32 => bits32(fma32(f32_of(a), f32_of(b), f32_of(c))),
        _ => fma64(f64_of(a), f64_of(b), f64_of(c)).to_bits(),
    }
}

pub(crate) fn setp(cmp: Cmp, ty: Type, a: u64, b: u64) -> bool {
    match ty {
        Type::F32 => cmp32(cmp, f32_of(a), f32_of(b)),
        Type::F64 => cmp64(cmp, f64_of(a), f64_of(b)),
        _ => {
            let (a, b) = (wide(a, ty), wide(b, ty));
            match cmp {
                Cmp::Eq => a == b,
                Cmp::Ne => a != b,
                Cmp::Lt => a < b,
                Cmp::Le => a <= b,
                Cmp::Gt => a > b,
                Cmp::Ge => a >= b,
                // The parser only allows ordered comparisons on integers.
                _ => false,
            }
        }
    }
}

pub(crate) fn cvt(c: Cvt, a: u64) -> u64 {
    match c {
        Cvt::IntInt { dst, src, sat } => {
            let v = wide(a, src);
            let v = if sat {
                v.clamp(int_min(dst), int_max(dst))
            } else {
                v
            };
            extend(v as u64, dst)
        }
        Cvt::FloatInt { dst, src, rnd } => {
            let x = if src == Type::F32 {
                f64::from(f32_of(a))
            } else {
                f64_of(a)
            };
            float_to_int(round64(rnd, x), dst)
        }
        Cvt::IntFloat { dst, src } => {
            let v = wide(a, src);
            // `as` from i128 rounds to nearest even, as cvt.rn does.
            if dst == Type::F32 {
                bits32(v as f32)
            } else {
                (v as f64).to_bits()
            }
        }
        Cvt::F32ToF64 => f64::from(f32_of(a)).to_bits(),
        Cvt::F64ToF32 => bits32(f64_of(a) as f32),
        Cvt::F64ToF32Rz => bits32(f64_to_f32_toward_zero(f64_of(a))),
        Cvt::RoundIntegral { ty: Type::F32, rnd } => bits32(round32(rnd, f32_of(a))),
        Cvt::RoundIntegral { rnd, .. } => round64(rnd, f64_of(a)).to_bits(),
        Cvt::F32ToF16 => u64::from(f32_to_f16(f32_of(a))),
        Cvt::F16ToF32 => bits32(f16_to_f32(a as u16)),
        Cvt::F32ToBf16 => u64::from(f32_to_bf16(f32_of(a))),
        Cvt::F32ToTf32 => u64::from(f32_to_tf32(f32_of(a))),
        Cvt::Bf16ToF32 => bits32(f32::from_bits(u32::from(a as u16) << 16)),
    }
}

fn int_min(t: Type) -> i128 {
    if t.is_signed() {
        -(1i128 << (t.bits() - 1))
    } else {
        0
    }
}

fn int_max(t: Type) -> i128 {
    if t.is_signed() {
        (1i128 << (t.bits() - 1)) - 1
    } else {
        (1i128 << t.bits()) - 1
    }
}

/// Truncates to `t`'s width, then sign- or zero-extends to 64 bits so a
/// wider destination register gets PTX's extension.
fn extend(v: u64, t: Type) -> u64 {
    if t.is_signed() {
        sext(v, t.bits()) as u64
    } else {
        zext(v, t.bits())
    }
}

/// Saturating float-to-int of an already rounded value; NaN gives 0
/// (Rust's `as` has exactly PTX's saturation semantics).
fn float_to_int(x: f64, t: Type) -> u64 {
    match t {
        Type::U8 => u64::from(x as u8),
        Type::U16 => u64::from(x as u16),
        Type::U32 => u64::from(x as u32),
        Type::U64 => x as u64,
        Type::S8 => i64::from(x as i8) as u64,
        Type::S16 => i64::from(x as i16) as u64,
        Type::S32 => i64::from(x as i32) as u64,
        _ => (x as i64) as u64,
    }
}

/// Shifts `m` right by `n` with round-to-nearest-even on the dropped bits.
fn shift_rne(m: u32, n: u32) -> u32 {
    if n == 0 {
        return m;
    }
    if n > 31 {
        return 0;
    }
    let (q, rem, half) = (m >> n, m & ((1 << n) - 1), 1u32 << (n - 1));
    if rem > half || (rem == half && q & 1 == 1) {
        q + 1
    } else {
        q
    }
}

/// f32 to IEEE binary16, round to nearest even; NaN stays a quiet NaN.
/// `x` rounded toward zero to f32: the nearest f32, stepped back one ulp when it lies
/// farther from zero than `x` (an overflow to infinity steps back to the largest finite).
fn f64_to_f32_toward_zero(x: f64) -> f32 {
    let near = x as f32;
    if x.is_finite() && f64::from(near).abs() > x.abs() {
        f32::from_bits(near.to_bits() - 1)
    } else {
        near
    }
}

pub(crate) fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        let nan = if man != 0 {
            0x200 | (man >> 13) as u16
        } else {
            0
        };
        return sign | 0x7c00 | nan;
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal result: the implicit bit joins the mantissa; a carry out
        // lands on the smallest normal, which the bit layout makes correct.
        let m = if exp == 0 { man } else { man | 0x80_0000 };
        return sign | shift_rne(m, (14 - e) as u32) as u16;
    }
    // Normal: a rounding carry may ripple into the exponent (up to infinity).
    let h = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    let up = rem > 0x1000 || (rem == 0x1000 && h & 1 == 1);
    sign | (h + u32::from(up)) as u16
}

/// IEEE binary16 to f32 (exact).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let mag = match exp {
        0x1f => 0x7f80_0000 | (man << 13),
        0 => (man as f32 * 2f32.powi(-24)).to_bits(),
        _ => ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(sign | mag)
}

/// f32 to bfloat16, round to nearest even; NaN stays a quiet NaN.
pub(crate) fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `cvt.rna.tf32.f32`: 10 mantissa bits, nearest with ties away from zero
/// (adding half of the dropped unit does that on the magnitude bits).
pub(crate) fn f32_to_tf32(x: f32) -> u32 {
    let b = x.to_bits();
    if x.is_nan() {
        return (b | 0x0040_0000) & 0xFFFF_E000;
    }
    if x.is_infinite() {
        return b;
    }
    (b + 0x1000) & 0xFFFF_E000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_rounds_to_nearest_ties_away() {
        let one = 1f32.to_bits();
        assert_eq!(f32_to_tf32(1.0), one);
        assert_eq!(f32_to_tf32(f32::from_bits(one + 0x0FFF)), one);
        assert_eq!(f32_to_tf32(f32::from_bits(one + 0x1000)), one + 0x2000);
        assert_eq!(
            f32_to_tf32(-f32::from_bits(one + 0x1000)),
            (-1f32).to_bits() + 0x2000
        );
        assert!(f32::from_bits(f32_to_tf32(f32::NAN)).is_nan());
        assert_eq!(f32_to_tf32(f32::INFINITY), f32::INFINITY.to_bits());
    }

    #[test]
    fn f16_rounding() {
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(-2.0), 0xc000);
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // tie to even overflows
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00); // tie, even stays
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02); // tie, odd rounds up
        assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0x0000); // tie to even zero
        assert_eq!(f32_to_f16(1.5 * 2f32.powi(-25)), 0x0001);
        assert_eq!(f32_to_f16(2f32.powi(-14) * (1.0 - 2f32.powi(-12))), 0x0400);
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
        for h in 0u16..=0xffff {
            let f = f16_to_f32(h);
            if !f.is_nan() {
                assert_eq!(f32_to_f16(f), h, "{h:#x}");
            }
        }
    }

    #[test]
    fn f64_to_f32_truncates() {
        let t = f64_to_f32_toward_zero;
        assert_eq!(t(1.0 + 2f64.powi(-30)), 1.0);
        assert_eq!(t(-(1.0 + 2f64.powi(-30))), -1.0);
        assert_eq!(t(1.0 - 2f64.powi(-30)), f32::from_bits(0x3f7f_ffff));
        assert_eq!(t(1e300), f32::MAX);
        assert_eq!(t(-1e300), -f32::MAX);
        assert_eq!(t(f64::INFINITY), f32::INFINITY);
        assert_eq!(t(0.5), 0.5);
        assert!(t(f64::NAN).is_nan());
    }

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie, even
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82); // tie, odd
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
    }

    #[test]
    fn integer_edge_cases() {
        let min = i32::MIN as u32 as u64;
        let m1 = 0xffff_ffff;
        assert_eq!(int_op(IntOp::Div, Type::S32, min, m1), Some(min));
        assert_eq!(int_op(IntOp::Rem, Type::S32, min, m1), Some(0));
        assert_eq!(
            int_op(IntOp::Rem, Type::S64, i64::MIN as u64, u64::MAX),
            Some(0)
        );
        assert_eq!(int_op(IntOp::Div, Type::U32, 1, 0), None);
        assert_eq!(
            int_op(IntOp::MulHi, Type::U64, u64::MAX, u64::MAX),
            Some(u64::MAX - 1)
        );
        assert_eq!(int_op(IntOp::MulHi, Type::S32, m1, 2), Some(m1));
        assert_eq!(int_op(IntOp::Shr, Type::S32, min, 40), Some(m1));
        assert_eq!(int_op(IntOp::Shl, Type::B32, 1, 32), Some(0));
        assert_eq!(int_op(IntOp::Shr, Type::U64, 1 << 63, 63), Some(1));
        assert_eq!(int_un(IntUn::Abs, Type::S32, min), min);
    }
}
