//! Scalar math the runtime's kernels share with the JIT: the same formulas and constants as
//! `lower::math`, so a fused kernel computed here (a GEMM epilogue, attention's softmax)
//! matches the generated code's.

// The constants of the formulas, shared with the code generator (kiln-cpu's `lower::math`).

/// Inputs above this overflow to inf; keeps n = round(x/ln2) at most 128.
pub const EXP_MAX_ARG: f32 = 89.0;
/// Inputs below this underflow to 0 (e^-104 < 2^-150); keeps n at least -150.
pub const EXP_MIN_ARG: f32 = -104.0;
/// 1.5·2^23: adding it to |v| < 2^22 rounds v to an integer stored in the low mantissa bits.
pub const ROUND_MAGIC: f32 = 12_582_912.0;
/// e^r ≈ 1 + r + r²·P(r) on |r| ≤ ln2/2, P highest degree first. Coefficients from Cephes
/// `expf.c` (S. L. Moshier, Cephes Math Library 2.2), as also used by Eigen's `pexp_float`.
pub const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_6e-1,
    0.5,
];
/// ln 2 split for Cody-Waite: LOG_LN2_HI (= 0.693359375 exactly) has 10 significant bits, so
/// e·LOG_LN2_HI is exact (Cephes `logf.c`).
pub const LOG_LN2_HI: f32 = 0.693_359_4;
/// ln 2 - LOG_LN2_HI (Cephes `logf.c`).
pub const LOG_LN2_LO: f32 = -2.121_944_4e-4;
/// Below this |x| erf uses the odd polynomial, above it the erfc form.
pub const ERF_POLY_MAX: f32 = 1.0;
/// erf a ≈ a·P(a²) on [0, 1], P highest degree first. Fitted for this file by Lawson-weighted
/// least squares (minimax of the relative error) against mpmath's erf at 3000 Chebyshev nodes;
/// the fit's relative error is 4.0e-8.
///
/// The last coefficient is one ulp below `FRAC_2_SQRT_PI` rounded to f32, which the fit prefers.
#[allow(clippy::approx_constant)]
pub const ERF_POLY: [f32; 6] = [
    -5.631_466e-4,
    4.917_563_4e-3,
    -2.671_132_4e-2,
    1.128_018_05e-1,
    -3.761_232_5e-1,
    1.128_379_1,
];
/// erfc a · e^(a²) ≈ R(t) with t = 1/(1+a) on a in [1, 3.9], R highest degree first. Fitted
/// like ERF_POLY, against mpmath's erfc; the fit's relative error is 6.0e-8. Beyond 3.9 the
/// product with e^(-a²) is below 2^-25, so 1 - it rounds to 1 whatever R gives there.
pub const ERFC_SCALED_POLY: [f32; 7] = [
    -1.548_307_5e-1,
    8.694_703e-1,
    -1.459_888_1,
    7.005_749e-1,
    4.818_448_7e-1,
    5.728_442_7e-1,
    -3.803_160_5e-4,
];

/// Beyond this |x| the epilogue's erf ([`ERF_RATIONAL_P`]) is clamped: erf(4) is within 2e-8
/// of 1, below half an f32 ulp.
pub const ERF_RATIONAL_MAX: f32 = 4.0;
/// erf x ≈ x·P(x²)/Q(x²) on |x| ≤ 4 (`ERF_RATIONAL_P` / `ERF_RATIONAL_Q`, highest degree
/// first), the GEMM epilogue's erf: one division and no exp, where the JIT's two-branch form
/// ([`ERF_POLY`], [`ERFC_SCALED_POLY`]) computes both branches, an exp and two divisions per
/// element (its erf-GELU was 12% of ViT's int8 run). Fitted for this file by linearized
/// Lawson-weighted least squares against mpmath's erf at 4000 Chebyshev nodes (relative
/// error 2e-9), then each f32 coefficient nudged by an ulp or two where that lowered the
/// error of f32 evaluation: 3.1e-7 absolute, from rounding in the two Horner sums.
pub const ERF_RATIONAL_P: [f32; 7] = [
    -1.320_199_7e-8,
    4.684_729_4e-6,
    3.796_073e-4,
    3.849_616_3e-3,
    5.431_690_8e-2,
    1.852_034_8e-1,
    1.128_378_9,
];
/// The denominator of [`ERF_RATIONAL_P`]'s rational, highest degree first.
pub const ERF_RATIONAL_Q: [f32; 6] = [
    6.311_013e-5,
    1.307_568_9e-3,
    1.546_209_4e-2,
    1.139_584_7e-1,
    4.974_656_4e-1,
    1.0,
];

/// e^x as the JIT computes it (`lower::math::exp`): `x = n·ln2 + r`, a polynomial in `r`,
/// scaled by 2^n in two normal halves; branch-free, so loops over it vectorize. Without FMA
/// in the target features the reduction uses Cephes' split of ln 2, whose high part times
/// n is exact.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
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
