//! Scalar math the runtime's kernels share with the JIT: the same formulas and constants as
//! `lower::math`, so a fused kernel computed here (a GEMM epilogue, attention's softmax)
//! matches the generated code's.

/// e^x as the JIT computes it (`lower::math::exp`): `x = n·ln2 + r`, a polynomial in `r`,
/// scaled by 2^n in two normal halves; branch-free, so loops over it vectorize. Without FMA
/// in the target features the reduction uses Cephes' split of ln 2, whose high part times
/// n is exact.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    use crate::lower::math::{
        EXP_MAX_ARG, EXP_MIN_ARG, EXP_POLY, LOG_LN2_HI, LOG_LN2_LO, ROUND_MAGIC,
    };
    // NaN fails both comparisons and passes through.
    let x = if x < EXP_MIN_ARG { EXP_MIN_ARG } else { x };
    let x = if EXP_MAX_ARG < x { EXP_MAX_ARG } else { x };
    let shifted = x * std::f32::consts::LOG2_E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    let r = x - n * LOG_LN2_HI - n * LOG_LN2_LO;
    let p = EXP_POLY[1..].iter().fold(EXP_POLY[0], |acc, c| acc * r + c);
    let p = p * (r * r) + r + 1.0;
    let k = shifted.to_bits() as i32 - ROUND_MAGIC.to_bits() as i32;
    let half = k >> 1;
    let pow2 = |k: i32| f32::from_bits(((k << 23) + 0x3f80_0000) as u32);
    p * pow2(half) * pow2(k - half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_where_softmax_uses_it() {
        let mut worst = 0.0f64;
        for i in 0..=20_000 {
            let x = -87.0 + i as f32 * (87.0 + 10.0) / 20_000.0;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
    }
}
