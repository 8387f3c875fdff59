//! Transcendental functions (exp, log, tanh, erf, sigmoid) emitted as inline, branch-free CLIF.
//!
//! Elementwise kernels run an `f32x4` loop and a scalar tail. Calling libm per element would
//! split every vector into four calls and keep values out of registers, so each function here is
//! a short straight-line sequence of lane-wise instructions instead. Where a result depends on
//! the input's range (special values, subnormals, the small-|x| branch of tanh), both candidates
//! are computed and one is chosen with `select` (scalars) or `bitselect` (vectors). The same
//! emitter therefore serves `F32` and `F32X4`, and the two forms give bit-identical results.
//!
//! The code leans on `fma`, so the ISA must be built with `has_fma` (as `cranelift_native`
//! does on an FMA host): without it Cranelift turns every `fma` into libcalls.
//!
//! Clamps use the `a < b ? a : b` compare-and-select form, which the x64 backend lowers to one
//! `minps`/`maxps`. Placing the input as the second operand makes a NaN input pass through
//! unchanged, so NaN propagates without the fix-up sequence CLIF's `fmin`/`fmax` need on x64.
//!
//! Accuracy against Rust's f64 functions rounded to f32, measured over dense sweeps, strided
//! sweeps of every binade and random inputs (every f32 in [0, 6] for erf); identical for both
//! forms. The tests at the bottom of this file enforce the brief's bounds (exp/log 3e-7
//! relative; tanh/sigmoid 2e-7 absolute and 1e-6 relative; erf 3e-7 absolute):
//!
//! | function | max relative error (normal results) | max absolute error | subnormal results |
//! |----------|-------------------------------------|--------------------|-------------------|
//! | exp      | 1.2e-7                              | -                  | within 1 ulp      |
//! | log      | 1.2e-7                              | -                  | (none)            |
//! | tanh     | 1.2e-7                              | 6.0e-8             | exact             |
//! | sigmoid  | 2.2e-7                              | 6.0e-8             | within 1 ulp      |
//! | erf      | 2.3e-7                              | 1.2e-7             | within 1 ulp      |

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

/// Returns `e^x` for an `F32` or `F32X4` value.
///
/// Overflows to `inf` above about 88.72, returns subnormals down to about -103.97 and 0 below,
/// and propagates NaN.
pub fn exp(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = float_type(b, x);
    // Beyond these bounds the result is already inf or 0; clamping keeps n in [-150, 128].
    let x = clamp(b, x, EXP_MIN_ARG, EXP_MAX_ARG);
    // n = round(x / ln 2). Adding 1.5·2^23 rounds to an integer held in the low mantissa bits.
    let log2e = fconst(b, ty, std::f32::consts::LOG2_E);
    let magic = fconst(b, ty, ROUND_MAGIC);
    let shifted = b.ins().fma(x, log2e, magic);
    let n = b.ins().fsub(shifted, magic);
    // r = x - n·ln 2 in [-ln2/2, ln2/2], in two steps (Cody-Waite) so that r keeps full precision.
    let minus_ln2_hi = fconst(b, ty, -LN2_HI);
    let minus_ln2_lo = fconst(b, ty, -LN2_LO);
    let r = b.ins().fma(n, minus_ln2_hi, x);
    let r = b.ins().fma(n, minus_ln2_lo, r);
    let p = exp_reduced(b, r);
    scale_by_pow2(b, p, shifted)
}

/// Returns `ln x` for an `F32` or `F32X4` value: NaN for `x < 0` or NaN, `-inf` for ±0,
/// `inf` for `inf`. Subnormal inputs are handled exactly like normal ones.
pub fn log(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = float_type(b, x);
    // Subnormals: scale by 2^23 into the normal range and take 23 off the exponent.
    let min_normal = fconst(b, ty, f32::MIN_POSITIVE);
    let is_subnormal = b.ins().fcmp(FloatCC::LessThan, x, min_normal);
    let two_pow_23 = fconst(b, ty, 8_388_608.0);
    let scaled = b.ins().fmul(x, two_pow_23);
    let x_normal = select(b, is_subnormal, scaled, x);
    let minus_23 = fconst(b, ty, -23.0);
    let zero = fconst(b, ty, 0.0);
    let exponent_bias = select(b, is_subnormal, minus_23, zero);
    let (k, m) = split_exponent(b, x_normal);
    let k = b.ins().fcvt_from_sint(ty, k);
    let e = b.ins().fadd(k, exponent_bias);
    let one = fconst(b, ty, 1.0);
    let f = b.ins().fsub(m, one);
    let y = log_reduced(b, e, f);
    log_special_values(b, x, y)
}

/// Returns `tanh x` for an `F32` or `F32X4` value; ±1 for large |x|, NaN for NaN.
pub fn tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = float_type(b, x);
    let a = b.ins().fabs(x);
    let small = tanh_small(b, a);
    let large = tanh_large(b, a);
    // NaN compares false and takes the large branch, which propagates it.
    let bound = fconst(b, ty, TANH_POLY_MAX);
    let is_small = b.ins().fcmp(FloatCC::LessThan, a, bound);
    let magnitude = select(b, is_small, small, large);
    copy_sign(b, magnitude, x)
}

/// Returns `erf x` for an `F32` or `F32X4` value; ±1 for large |x|, NaN for NaN.
///
/// An odd polynomial below |x| = 1, where erf has no cancellation to fear, and
/// `1 - e^(-x²)·R(1/(1+|x|))` above it: erfc(x)·e^(x²) is smooth and slowly varying, so a short
/// polynomial in 1/(1+|x|) matches it to 6e-8 relative, and the subtraction from 1 only adds
/// its own rounding. That form reaches exactly 1 by itself for large |x| (e^(-x²) underflows).
pub fn erf(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = float_type(b, x);
    let a = b.ins().fabs(x);
    let small = erf_small(b, a);
    let large = erf_large(b, a);
    // NaN compares false and takes the large branch, which propagates it.
    let bound = fconst(b, ty, ERF_POLY_MAX);
    let is_small = b.ins().fcmp(FloatCC::LessThan, a, bound);
    let magnitude = select(b, is_small, small, large);
    copy_sign(b, magnitude, x)
}

/// Returns `1 / (1 + e^-x)` for an `F32` or `F32X4` value; 0 for very negative x, NaN for NaN.
///
/// Computed from `e = e^-|x|`, which never overflows: `1/(1+e)` for x ≥ 0 and `e/(1+e)` for
/// x < 0. The second form keeps full relative accuracy down into the subnormal outputs.
pub fn sigmoid(b: &mut FunctionBuilder, x: Value) -> Value {
    let ty = float_type(b, x);
    // -|x| in one instruction: set the sign bit.
    let sign_mask = fconst(b, ty, -0.0);
    let minus_a = b.ins().bor(x, sign_mask);
    let e = exp(b, minus_a);
    let one = fconst(b, ty, 1.0);
    let denominator = b.ins().fadd(one, e);
    let zero = fconst(b, ty, 0.0);
    let is_negative = b.ins().fcmp(FloatCC::LessThan, x, zero);
    let numerator = select(b, is_negative, e, one);
    b.ins().fdiv(numerator, denominator)
}

use kiln_rt::math::{
    ERFC_SCALED_POLY, ERF_POLY, ERF_POLY_MAX, EXP_MAX_ARG, EXP_MIN_ARG, EXP_POLY, LOG_LN2_HI,
    LOG_LN2_LO, ROUND_MAGIC,
};

// ---- exp ----------------------------------------------------------------------------------

/// ln 2 rounded to f32 (0x3f317218); with `fma`, `x - n·LN2_HI` is exact for |n| ≤ 150.
const LN2_HI: f32 = std::f32::consts::LN_2;
/// ln 2 - LN2_HI.
const LN2_LO: f32 = -1.904_654_3e-9;
/// Bits of 1.0f32, i.e. the exponent bias already in place.
const ONE_BITS: i32 = 0x3f80_0000;

/// e^r for |r| ≤ ln2/2 (slightly more when rounding of x/ln2 moved n).
fn exp_reduced(b: &mut FunctionBuilder, r: Value) -> Value {
    let ty = float_type(b, r);
    let p = horner(b, r, &EXP_POLY);
    let r2 = b.ins().fmul(r, r);
    let p = b.ins().fma(p, r2, r);
    let one = fconst(b, ty, 1.0);
    b.ins().fadd(p, one)
}

/// p · 2^n, where `shifted` = n + ROUND_MAGIC holds n in its low mantissa bits.
///
/// 2^n alone is not representable for n = 128 or n < -126, so scale by 2^(n/2) and 2^(n-n/2):
/// both halves are normal, the first product is exact, and only the second rounds (to inf, a
/// normal, or a correctly rounded subnormal).
fn scale_by_pow2(b: &mut FunctionBuilder, p: Value, shifted: Value) -> Value {
    let int_ty = int_type(float_type(b, p));
    let bits = to_bits(b, shifted);
    let magic_bits = iconst(b, int_ty, ROUND_MAGIC.to_bits() as i32);
    let n = b.ins().isub(bits, magic_bits);
    let n_half = b.ins().sshr_imm_s(n, 1);
    let n_rest = b.ins().isub(n, n_half);
    let scale_half = pow2(b, n_half);
    let scale_rest = pow2(b, n_rest);
    let y = b.ins().fmul(p, scale_half);
    b.ins().fmul(y, scale_rest)
}

/// 2^n for integer lanes n in [-126, 127], built directly in the exponent field.
fn pow2(b: &mut FunctionBuilder, n: Value) -> Value {
    let int_ty = b.func.dfg.value_type(n);
    let shifted = b.ins().ishl_imm_s(n, 23);
    let one_bits = iconst(b, int_ty, ONE_BITS);
    let bits = b.ins().iadd(shifted, one_bits);
    from_bits(b, bits)
}

// ---- log ----------------------------------------------------------------------------------

/// Bits of sqrt(1/2) rounded to f32: the mantissa is normalised into [sqrt(1/2), sqrt(2)).
const SQRT_HALF_BITS: i32 = 0x3f35_04f3;
/// Sign and exponent field of an f32.
const EXPONENT_FIELD: i32 = 0xff80_0000_u32 as i32;
/// ln(1+f) ≈ f - f²/2 + f³·P(f) on f in [sqrt(1/2)-1, sqrt(2)-1], P highest degree first.
/// Coefficients from Cephes `logf.c` (S. L. Moshier), as also used by Eigen's `plog_float`.
const LOG_POLY: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_84e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_7e-1,
    2.000_071_4e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];

/// Splits a positive normal x into integer lanes k and float lanes m with x = 2^k·m and
/// m in [sqrt(1/2), sqrt(2)). Subtracting the bits of sqrt(1/2) first makes the arithmetic
/// shift produce k directly, with no compare (the trick of ARM's optimized-routines `logf`).
fn split_exponent(b: &mut FunctionBuilder, x: Value) -> (Value, Value) {
    let int_ty = int_type(float_type(b, x));
    let bits = to_bits(b, x);
    let offset = iconst(b, int_ty, SQRT_HALF_BITS);
    let tmp = b.ins().isub(bits, offset);
    let k = b.ins().sshr_imm_s(tmp, 23);
    let field = iconst(b, int_ty, EXPONENT_FIELD);
    let k_field = b.ins().band(tmp, field);
    let m_bits = b.ins().isub(bits, k_field);
    (k, from_bits(b, m_bits))
}

/// e·ln 2 + ln(1+f), summed from the smallest term up so that no rounding error gets amplified.
fn log_reduced(b: &mut FunctionBuilder, e: Value, f: Value) -> Value {
    let ty = float_type(b, f);
    let f2 = b.ins().fmul(f, f);
    let f3 = b.ins().fmul(f2, f);
    let p = horner(b, f, &LOG_POLY);
    let y = b.ins().fmul(p, f3);
    let ln2_lo = fconst(b, ty, LOG_LN2_LO);
    let y = b.ins().fma(e, ln2_lo, y);
    let minus_half = fconst(b, ty, -0.5);
    let y = b.ins().fma(f2, minus_half, y);
    let y = b.ins().fadd(f, y);
    let ln2_hi = fconst(b, ty, LOG_LN2_HI);
    b.ins().fma(e, ln2_hi, y)
}

/// Overrides the polynomial result for ±0, +inf, negatives and NaN, where the exponent split
/// has no meaning.
fn log_special_values(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    let ty = float_type(b, x);
    let zero = fconst(b, ty, 0.0);
    let inf = fconst(b, ty, f32::INFINITY);
    let minus_inf = fconst(b, ty, f32::NEG_INFINITY);
    let nan = fconst(b, ty, f32::NAN);
    let is_zero = b.ins().fcmp(FloatCC::Equal, x, zero);
    let y = select(b, is_zero, minus_inf, y);
    let is_inf = b.ins().fcmp(FloatCC::Equal, x, inf);
    let y = select(b, is_inf, inf, y);
    let is_invalid = b.ins().fcmp(FloatCC::UnorderedOrLessThan, x, zero);
    select(b, is_invalid, nan, y)
}

// ---- tanh ---------------------------------------------------------------------------------

/// Below this |x| tanh uses the odd polynomial: the exp form 1 - 2/(e^2x + 1) would cancel.
const TANH_POLY_MAX: f32 = 0.625;
/// tanh a ≈ a + a³·P(a²) on [0, 0.625], P highest degree first. Fitted for this file by
/// Lawson-weighted least squares (a minimax approximation of the relative error) against
/// mpmath's tanh at 4000 Chebyshev nodes; the fit's relative error is 4.4e-9.
const TANH_POLY: [f32; 5] = [
    -5.704_980_3e-3,
    2.063_908_2e-2,
    -5.373_971e-2,
    1.333_144_2e-1,
    -3.333_328e-1,
];

/// tanh a for 0 ≤ a < TANH_POLY_MAX.
fn tanh_small(b: &mut FunctionBuilder, a: Value) -> Value {
    let a2 = b.ins().fmul(a, a);
    let a3 = b.ins().fmul(a2, a);
    let p = horner(b, a2, &TANH_POLY);
    b.ins().fma(p, a3, a)
}

/// tanh a = (1 - e)/(1 + e) with e = e^-2a for a ≥ 0. e never overflows, and it underflows to
/// 0 exactly where tanh rounds to 1.
fn tanh_large(b: &mut FunctionBuilder, a: Value) -> Value {
    let ty = float_type(b, a);
    let minus_two = fconst(b, ty, -2.0);
    let minus_2a = b.ins().fmul(a, minus_two);
    let e = exp(b, minus_2a);
    let one = fconst(b, ty, 1.0);
    let numerator = b.ins().fsub(one, e);
    let denominator = b.ins().fadd(one, e);
    b.ins().fdiv(numerator, denominator)
}

// ---- erf ----------------------------------------------------------------------------------

/// erf a for 0 ≤ a < ERF_POLY_MAX.
fn erf_small(b: &mut FunctionBuilder, a: Value) -> Value {
    let a2 = b.ins().fmul(a, a);
    let p = horner(b, a2, &ERF_POLY);
    b.ins().fmul(a, p)
}

/// erf a = 1 - e^(-a²)·R(1/(1+a)) for a ≥ ERF_POLY_MAX, including +inf.
fn erf_large(b: &mut FunctionBuilder, a: Value) -> Value {
    let ty = float_type(b, a);
    let one = fconst(b, ty, 1.0);
    let a_plus_one = b.ins().fadd(a, one);
    let t = b.ins().fdiv(one, a_plus_one);
    let r = horner(b, t, &ERFC_SCALED_POLY);
    let a2 = b.ins().fmul(a, a);
    let minus_a2 = b.ins().fneg(a2);
    let gauss = exp(b, minus_a2);
    let erfc = b.ins().fmul(gauss, r);
    b.ins().fsub(one, erfc)
}

// ---- shared helpers -----------------------------------------------------------------------

/// The type of `x`, which must be `F32` or `F32X4`.
fn float_type(b: &FunctionBuilder, x: Value) -> Type {
    let ty = b.func.dfg.value_type(x);
    debug_assert!(
        ty == types::F32 || ty == types::F32X4,
        "math on {ty}, want f32 or f32x4"
    );
    ty
}

/// The integer type with the same lanes as the float type `ty`.
fn int_type(ty: Type) -> Type {
    if ty.is_vector() {
        types::I32X4
    } else {
        types::I32
    }
}

/// The constant `v` in every lane of `ty`. Splats of constants become `vconst`s in the
/// optimizer, and loop-invariant code motion hoists them out of loops.
fn fconst(b: &mut FunctionBuilder, ty: Type, v: f32) -> Value {
    let c = b.ins().f32const(v);
    if ty.is_vector() {
        b.ins().splat(ty, c)
    } else {
        c
    }
}

/// The integer constant `v` in every lane of `int_ty`.
fn iconst(b: &mut FunctionBuilder, int_ty: Type, v: i32) -> Value {
    let c = b.ins().iconst(types::I32, i64::from(v));
    if int_ty.is_vector() {
        b.ins().splat(int_ty, c)
    } else {
        c
    }
}

fn to_bits(b: &mut FunctionBuilder, x: Value) -> Value {
    let int_ty = int_type(b.func.dfg.value_type(x));
    b.ins().bitcast(int_ty, MemFlagsData::new(), x)
}

fn from_bits(b: &mut FunctionBuilder, bits: Value) -> Value {
    let float_ty = if b.func.dfg.value_type(bits).is_vector() {
        types::F32X4
    } else {
        types::F32
    };
    b.ins().bitcast(float_ty, MemFlagsData::new(), bits)
}

/// Lane-wise `cond ? if_true : if_false`, where `cond` is the result of an `fcmp` of the same
/// shape: `select` on scalars, `bitselect` on the all-ones/all-zeros lane masks of vectors.
fn select(b: &mut FunctionBuilder, cond: Value, if_true: Value, if_false: Value) -> Value {
    let ty = b.func.dfg.value_type(if_true);
    if !ty.is_vector() {
        return b.ins().select(cond, if_true, if_false);
    }
    let mask = if b.func.dfg.value_type(cond) == ty {
        cond
    } else {
        b.ins().bitcast(ty, MemFlagsData::new(), cond)
    };
    b.ins().bitselect(mask, if_true, if_false)
}

/// Clamps x to [lo, hi], passing NaN through (see the module doc for the operand order).
fn clamp(b: &mut FunctionBuilder, x: Value, lo: f32, hi: f32) -> Value {
    let ty = float_type(b, x);
    let lo = fconst(b, ty, lo);
    let below = b.ins().fcmp(FloatCC::LessThan, x, lo);
    let x = select(b, below, lo, x);
    let hi = fconst(b, ty, hi);
    let above = b.ins().fcmp(FloatCC::LessThan, hi, x);
    select(b, above, hi, x)
}

/// |magnitude| with the sign bit of `sign` (magnitude must have a clear sign bit).
fn copy_sign(b: &mut FunctionBuilder, magnitude: Value, sign: Value) -> Value {
    let ty = float_type(b, sign);
    let sign_mask = fconst(b, ty, -0.0);
    let sign_bit = b.ins().band(sign, sign_mask);
    b.ins().bor(magnitude, sign_bit)
}

/// Evaluates the polynomial with `coeffs` (highest degree first) at x by Horner's rule, one
/// `fma` per coefficient.
fn horner(b: &mut FunctionBuilder, x: Value, coeffs: &[f32]) -> Value {
    let ty = float_type(b, x);
    let mut acc = fconst(b, ty, coeffs[0]);
    for &c in &coeffs[1..] {
        let c = fconst(b, ty, c);
        acc = b.ins().fma(acc, x, c);
    }
    acc
}

#[cfg(test)]
mod tests {
    //! Each function is JIT-compiled in both forms and swept against Rust's f64 functions
    //! rounded to f32: a dense 1/1024 grid over the useful range, random bit patterns over the
    //! whole finite range (which includes subnormal inputs and outputs), and special values.

    use super::*;
    use cranelift_codegen::ir::AbiParam;
    use cranelift_codegen::settings::{self, Configurable};
    use cranelift_frontend::FunctionBuilderContext;
    use cranelift_jit::{JITBuilder, JITModule};
    use cranelift_module::{default_libcall_names, Linkage, Module};

    type Emit = fn(&mut FunctionBuilder, Value) -> Value;

    /// A JIT-compiled `extern "C" fn(src: *const f32, dst: *mut f32)` that applies one emitter
    /// to one f32 (`F32`) or four (`F32X4`).
    struct TestJit {
        /// Owns the code `func` points into.
        _module: JITModule,
        func: unsafe extern "C" fn(*const f32, *mut f32),
        lanes: usize,
        /// The compiled code as VCode text, one machine instruction per line.
        vcode: String,
    }

    fn emit_test_jit(emit: Emit, ty: Type) -> TestJit {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").unwrap();
        let isa = cranelift_native::builder()
            .unwrap()
            .finish(settings::Flags::new(flags))
            .unwrap();
        let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
        let mut ctx = module.make_context();
        let ptr = module.target_config().pointer_type();
        ctx.func.signature.params = vec![AbiParam::new(ptr), AbiParam::new(ptr)];
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let block = b.create_block();
        b.append_block_params_for_function_params(block);
        b.switch_to_block(block);
        b.seal_block(block);
        let (src, dst) = (b.block_params(block)[0], b.block_params(block)[1]);
        let mem = MemFlagsData::new().with_notrap();
        let x = b.ins().load(ty, mem, src, 0);
        let y = emit(&mut b, x);
        b.ins().store(mem, y, dst, 0);
        b.ins().return_(&[]);
        b.finalize(module.isa().frontend_config());
        ctx.set_disasm(true);
        let id = module
            .declare_function("f", Linkage::Local, &ctx.func.signature)
            .unwrap();
        module.define_function(id, &mut ctx).unwrap();
        let vcode = ctx
            .compiled_code()
            .and_then(|c| c.vcode.clone())
            .unwrap_or_default();
        module.clear_context(&mut ctx);
        module.finalize_definitions().unwrap();
        let code = module.get_finalized_function(id);
        // SAFETY: the function was declared with this signature (two pointers, no results).
        let func = unsafe {
            std::mem::transmute::<*const u8, unsafe extern "C" fn(*const f32, *mut f32)>(code)
        };
        TestJit {
            _module: module,
            func,
            lanes: ty.lane_count() as usize,
            vcode,
        }
    }

    impl TestJit {
        fn eval(&self, xs: &[f32]) -> Vec<f32> {
            let mut src = xs.to_vec();
            src.resize(xs.len().next_multiple_of(self.lanes), 0.0);
            let mut dst = vec![0.0f32; src.len()];
            for i in (0..src.len()).step_by(self.lanes) {
                // SAFETY: src and dst hold `lanes` floats from i on.
                unsafe { (self.func)(src.as_ptr().add(i), dst.as_mut_ptr().add(i)) };
            }
            dst.truncate(xs.len());
            dst
        }

        /// Machine instructions, not counting labels and unwind directives.
        fn insts(&self) -> impl Iterator<Item = &str> {
            self.vcode
                .lines()
                .filter(|l| l.starts_with(' '))
                .map(str::trim)
                .filter(|l| !l.starts_with("unwind"))
        }
    }

    /// The largest errors of one function against the f32-rounded f64 reference.
    #[derive(Debug, Default)]
    struct Errors {
        /// Relative error where the reference is a normal number, and the worst input.
        rel: f64,
        rel_at: f32,
        /// Absolute error where the reference is finite, and the worst input.
        abs: f64,
        abs_at: f32,
        /// Absolute error in units of 2^-149 where the reference is subnormal or zero.
        subnormal_ulps: f64,
    }

    /// Bounds an [`Errors`] must meet.
    struct Bounds {
        rel: f64,
        abs: f64,
        subnormal_ulps: f64,
    }

    /// Compares `got` with the reference; NaN and ±inf must match exactly.
    fn measure(name: &str, xs: &[f32], got: &[f32], reference: fn(f64) -> f64) -> Errors {
        let mut errors = Errors::default();
        for (&x, &y) in xs.iter().zip(got) {
            let want = reference(f64::from(x)) as f32;
            if want.is_nan() || want.is_infinite() {
                assert!(
                    y.to_bits() == want.to_bits() || y.is_nan() && want.is_nan(),
                    "{name}({x:e}) = {y:e}, want {want:e}"
                );
                continue;
            }
            assert!(y.is_finite(), "{name}({x:e}) = {y:e}, want {want:e}");
            let abs = (f64::from(y) - f64::from(want)).abs();
            if abs > errors.abs {
                (errors.abs, errors.abs_at) = (abs, x);
            }
            if want.abs() >= f32::MIN_POSITIVE {
                let rel = abs / f64::from(want.abs());
                if rel > errors.rel {
                    (errors.rel, errors.rel_at) = (rel, x);
                }
            } else {
                errors.subnormal_ulps = errors
                    .subnormal_ulps
                    .max(abs / f64::from(f32::from_bits(1)));
            }
        }
        errors
    }

    /// Every multiple of 1/1024 in [lo, hi].
    fn dense(lo: f32, hi: f32) -> Vec<f32> {
        ((lo * 1024.0) as i32..=(hi * 1024.0) as i32)
            .map(|i| i as f32 / 1024.0)
            .collect()
    }

    /// Every `step`-th f32 from lo to hi (both positive), by bit pattern.
    fn bit_range(lo: f32, hi: f32, step: usize) -> Vec<f32> {
        (lo.to_bits()..=hi.to_bits())
            .step_by(step)
            .map(f32::from_bits)
            .collect()
    }

    /// `n` finite f32s with uniformly random bit patterns (xorshift, fixed seed): every binade,
    /// subnormals included, is about equally likely.
    fn random_finite(n: usize) -> Vec<f32> {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = f32::from_bits((state >> 32) as u32);
            if x.is_finite() {
                out.push(x);
            }
        }
        out
    }

    fn specials() -> Vec<f32> {
        let tiny = f32::from_bits(1);
        let mut v = vec![
            0.0,
            f32::INFINITY,
            f32::NAN,
            f32::MAX,
            f32::MIN_POSITIVE,
            tiny,
            1.0,
            0.5,
        ];
        v.extend([
            88.722_83, 88.722_84, 89.0, 100.0, 87.336_54, 103.972_08, 103.972_09, 104.0, 200.0,
        ]);
        v.extend(v.clone().iter().map(|x| -x));
        v
    }

    /// Sweeps one function in both forms, checks the bounds, and checks that the vector and
    /// scalar forms agree bit for bit.
    fn check(name: &str, emit: Emit, reference: fn(f64) -> f64, xs: &[f32], bounds: Bounds) {
        let mut results = Vec::new();
        for ty in [types::F32X4, types::F32] {
            let got = emit_test_jit(emit, ty).eval(xs);
            let e = measure(name, xs, &got, reference);
            eprintln!("{name} {ty}: {e:?}");
            assert!(
                e.rel <= bounds.rel,
                "{name} {ty}: relative error {:e} at {:e}",
                e.rel,
                e.rel_at
            );
            assert!(
                e.abs <= bounds.abs,
                "{name} {ty}: absolute error {:e} at {:e}",
                e.abs,
                e.abs_at
            );
            assert!(
                e.subnormal_ulps <= bounds.subnormal_ulps,
                "{name} {ty}: {e:?}"
            );
            results.push(got);
        }
        for ((x, v), s) in xs.iter().zip(&results[0]).zip(&results[1]) {
            assert!(
                v.to_bits() == s.to_bits() || v.is_nan() && s.is_nan(),
                "{name}({x:e}): f32x4 {v:e}, f32 {s:e}"
            );
        }
    }

    /// The dense grid on [lo, hi], every 4099th f32 of both signs up to max(|lo|, |hi|) (all
    /// binades, each about equally), random finite values, and special values.
    fn inputs(lo: f32, hi: f32) -> Vec<f32> {
        let positive = bit_range(0.0, hi.max(-lo), 4099);
        let negative = positive.iter().map(|x| -x).collect();
        [
            dense(lo, hi),
            positive,
            negative,
            random_finite(100_000),
            specials(),
        ]
        .concat()
    }

    #[test]
    fn math_exp() {
        let bounds = Bounds {
            rel: 3e-7,
            abs: f64::INFINITY,
            subnormal_ulps: 1.0,
        };
        check("exp", exp, f64::exp, &inputs(-104.0, 89.0), bounds);
    }

    #[test]
    fn math_log() {
        let near_one = bit_range(0.9, 1.1, 37);
        let xs = [inputs(0.0, 100.0), near_one, bit_range(0.0, f32::MAX, 4099)].concat();
        check(
            "log",
            log,
            f64::ln,
            &xs,
            Bounds {
                rel: 3e-7,
                abs: f64::INFINITY,
                subnormal_ulps: 0.0,
            },
        );
    }

    #[test]
    fn math_tanh() {
        let bounds = Bounds {
            rel: 1e-6,
            abs: 2e-7,
            subnormal_ulps: 1.0,
        };
        check("tanh", tanh, f64::tanh, &inputs(-10.0, 10.0), bounds);
    }

    #[test]
    fn math_sigmoid() {
        let bounds = Bounds {
            rel: 1e-6,
            abs: 2e-7,
            subnormal_ulps: 1.0,
        };
        check(
            "sigmoid",
            sigmoid,
            |x| 1.0 / (1.0 + (-x).exp()),
            &inputs(-110.0, 110.0),
            bounds,
        );
    }

    #[test]
    fn math_erf() {
        let bounds = Bounds {
            rel: f64::INFINITY,
            abs: 3e-7,
            subnormal_ulps: 1.0,
        };
        check(
            "erf",
            erf,
            erf_f64,
            &[inputs(-6.0, 6.0), bit_range(0.5, 4.0, 5)].concat(),
            bounds,
        );
    }

    /// Special values, compared bit for bit (any NaN matches NaN).
    #[test]
    fn math_special_values_are_exact() {
        let (inf, nan) = (f32::INFINITY, f32::NAN);
        /// A function and its (input, exact output) pairs.
        type Case = (&'static str, Emit, Vec<(f32, f32)>);
        let cases: [Case; 5] = [
            (
                "exp",
                exp,
                vec![
                    (inf, inf),
                    (-inf, 0.0),
                    (100.0, inf),
                    (-200.0, 0.0),
                    (0.0, 1.0),
                    (-0.0, 1.0),
                ],
            ),
            (
                "log",
                log,
                vec![
                    (0.0, -inf),
                    (-0.0, -inf),
                    (inf, inf),
                    (1.0, 0.0),
                    (-1.0, nan),
                    (-inf, nan),
                ],
            ),
            (
                "tanh",
                tanh,
                vec![
                    (inf, 1.0),
                    (-inf, -1.0),
                    (20.0, 1.0),
                    (-20.0, -1.0),
                    (0.0, 0.0),
                    (-0.0, -0.0),
                ],
            ),
            (
                "erf",
                erf,
                vec![
                    (inf, 1.0),
                    (-inf, -1.0),
                    (10.0, 1.0),
                    (-10.0, -1.0),
                    (0.0, 0.0),
                    (-0.0, -0.0),
                ],
            ),
            (
                "sigmoid",
                sigmoid,
                vec![
                    (inf, 1.0),
                    (-inf, 0.0),
                    (200.0, 1.0),
                    (-200.0, 0.0),
                    (0.0, 0.5),
                    (-0.0, 0.5),
                ],
            ),
        ];
        for (name, emit, mut pairs) in cases {
            pairs.push((nan, nan));
            let (xs, want): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            for ty in [types::F32X4, types::F32] {
                let got = emit_test_jit(emit, ty).eval(&xs);
                for ((x, g), w) in xs.iter().zip(&got).zip(&want) {
                    let same = g.to_bits() == w.to_bits() || g.is_nan() && w.is_nan();
                    assert!(same, "{name} {ty}: f({x:e}) = {g:e}, want {w:e}");
                }
            }
        }
    }

    /// erf in f64 by the series erf x = 2/√π · e^-x² · Σ 2^n x^(2n+1) / (2n+1)!!
    /// (Abramowitz & Stegun 7.1.6): its terms all have one sign, so nothing cancels.
    fn erf_f64(x: f64) -> f64 {
        if x.is_nan() || x.abs() > 6.0 {
            // 1 - erf(6) < 1e-16.
            return x.signum();
        }
        let x2 = x * x;
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > sum.abs() * 1e-17 {
            n += 1.0;
            term *= 2.0 * x2 / (2.0 * n + 1.0);
            sum += term;
        }
        std::f64::consts::FRAC_2_SQRT_PI * (-x2).exp() * sum
    }

    #[test]
    fn math_erf_reference_matches_tables() {
        for (x, want) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.0, 0.999_977_909_503_001_4),
        ] {
            assert!(
                (erf_f64(x) - want).abs() < 1e-15,
                "erf({x}) = {}, want {want}",
                erf_f64(x)
            );
            assert!((erf_f64(-x) + want).abs() < 1e-15);
        }
    }

    /// The vector forms stay straight-line (no libcalls, e.g. `fmaf` from an ISA without FMA)
    /// and short; the bounds are the measured counts plus some slack.
    #[test]
    fn math_vector_code_is_short_and_call_free() {
        let cases: [(&str, Emit, usize); 5] = [
            ("exp", exp, 55),
            ("log", log, 72),
            ("tanh", tanh, 85),
            ("erf", erf, 100),
            ("sigmoid", sigmoid, 70),
        ];
        for (name, emit, max_insts) in cases {
            let jit = emit_test_jit(emit, types::F32X4);
            let n_insts = jit.insts().count();
            eprintln!("{name} f32x4: {n_insts} instructions\n{}", jit.vcode);
            assert!(
                !jit.insts().any(|i| i.starts_with("call")),
                "{name} calls out:\n{}",
                jit.vcode
            );
            assert!(
                n_insts <= max_insts,
                "{name}: {n_insts} instructions:\n{}",
                jit.vcode
            );
        }
    }
}
