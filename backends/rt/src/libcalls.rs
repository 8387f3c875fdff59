//! Scalar functions that generated code calls for ops without a short instruction
//! sequence: libm's transcendental functions, float `pow`/`mod`, and the integer ops with
//! many cases. Each mirrors the reference interpreter's definition.
//!
//! They are exported unmangled (`kiln_sin_f32`, `kiln_int_binary`): the JIT binds them by
//! address, and an ahead-of-time object imports them by these names, which the static
//! library resolves. The tables below pair each op with its symbol and address, so the
//! code generator never spells a name of its own.

use kiln_ir::{BinaryOp, DType, UnaryOp};

/// One exported function: the op it computes, its symbol and its address.
pub type Entry<Op> = (Op, &'static str, *const u8);

macro_rules! unary_fns {
    ($table:ident, $t:ty, { $($op:ident => $sym:ident = $f:expr),* $(,)? }) => {
        $(
            #[doc = concat!("`", stringify!($op), "` on `", stringify!($t), "`, for generated code.")]
            #[no_mangle]
            pub extern "C" fn $sym(x: $t) -> $t {
                let g: fn($t) -> $t = $f;
                g(x)
            }
        )*
        /// The exported functions of this type, by op.
        pub fn $table() -> Vec<Entry<UnaryOp>> {
            vec![$((UnaryOp::$op, stringify!($sym), $sym as *const u8)),*]
        }
    };
}

unary_fns!(unary_f32, f32, {
    Exp => kiln_exp_f32 = f32::exp, Log => kiln_log_f32 = f32::ln,
    Tanh => kiln_tanh_f32 = f32::tanh, Sin => kiln_sin_f32 = f32::sin,
    Cos => kiln_cos_f32 = f32::cos, Tan => kiln_tan_f32 = f32::tan,
    Asin => kiln_asin_f32 = f32::asin, Acos => kiln_acos_f32 = f32::acos,
    Atan => kiln_atan_f32 = f32::atan, Sinh => kiln_sinh_f32 = f32::sinh,
    Cosh => kiln_cosh_f32 = f32::cosh, Asinh => kiln_asinh_f32 = f32::asinh,
    Acosh => kiln_acosh_f32 = f32::acosh, Atanh => kiln_atanh_f32 = f32::atanh,
    Erf => kiln_erf_f32 = libm::erff,
});

unary_fns!(unary_f64, f64, {
    Exp => kiln_exp_f64 = f64::exp, Log => kiln_log_f64 = f64::ln,
    Tanh => kiln_tanh_f64 = f64::tanh, Sin => kiln_sin_f64 = f64::sin,
    Cos => kiln_cos_f64 = f64::cos, Tan => kiln_tan_f64 = f64::tan,
    Asin => kiln_asin_f64 = f64::asin, Acos => kiln_acos_f64 = f64::acos,
    Atan => kiln_atan_f64 = f64::atan, Sinh => kiln_sinh_f64 = f64::sinh,
    Cosh => kiln_cosh_f64 = f64::cosh, Asinh => kiln_asinh_f64 = f64::asinh,
    Acosh => kiln_acosh_f64 = f64::acosh, Atanh => kiln_atanh_f64 = f64::atanh,
    Erf => kiln_erf_f64 = libm::erf,
});

macro_rules! binary_fns {
    ($table:ident, $t:ty, $pow:ident, $fmod:ident, $modulo:ident) => {
        /// `x` to the power `y`, for generated code.
        #[no_mangle]
        pub extern "C" fn $pow(x: $t, y: $t) -> $t {
            x.powf(y)
        }
        /// C's `fmod` (the dividend's sign), for generated code.
        #[no_mangle]
        pub extern "C" fn $fmod(x: $t, y: $t) -> $t {
            x % y
        }
        /// Python-style modulo (the divisor's sign), for generated code.
        #[no_mangle]
        pub extern "C" fn $modulo(x: $t, y: $t) -> $t {
            let r = x % y;
            if r != 0.0 && ((r < 0.0) != (y < 0.0)) {
                r + y
            } else {
                r
            }
        }
        /// The exported functions of this type, by op.
        pub fn $table() -> Vec<Entry<BinaryOp>> {
            vec![
                (BinaryOp::Pow, stringify!($pow), $pow as *const u8),
                (BinaryOp::Fmod, stringify!($fmod), $fmod as *const u8),
                (BinaryOp::Mod, stringify!($modulo), $modulo as *const u8),
            ]
        }
    };
}

binary_fns!(binary_f32, f32, kiln_pow_f32, kiln_fmod_f32, kiln_mod_f32);
binary_fns!(binary_f64, f64, kiln_pow_f64, kiln_fmod_f64, kiln_mod_f64);

/// Encodes an integer op and dtype for [`kiln_int_binary`].
pub fn int_op_code(op: BinaryOp, d: DType) -> u32 {
    let o = match op {
        BinaryOp::Pow => 0,
        BinaryOp::Mod => 1,
        BinaryOp::Fmod => 2,
        BinaryOp::ShiftLeft => 3,
        _ => 4,
    };
    o * 16 + DType::ALL.iter().position(|&x| x == d).unwrap_or(0) as u32
}

/// Integer pow, mod, fmod and shifts on operands widened to i64 (unsigned ones
/// zero-extended), computed in i128 like the interpreter; the caller truncates the result.
/// `code` comes from [`int_op_code`].
#[no_mangle]
pub extern "C" fn kiln_int_binary(code: u32, x: i64, y: i64) -> i64 {
    let d = DType::ALL[(code % 16) as usize % DType::ALL.len()];
    let widen = |v: i64| {
        if d == DType::U64 {
            v as u64 as i128
        } else {
            v as i128
        }
    };
    let (x, y) = (widen(x), widen(y));
    let bits = d.size_bytes() as i128 * 8;
    let r = match code / 16 {
        0 => kiln_ir::interp::int_pow(x, y),
        1 if y == 0 => 0,
        1 => {
            let r = x % y;
            if r != 0 && ((r < 0) != (y < 0)) {
                r + y
            } else {
                r
            }
        }
        2 if y == 0 => 0,
        2 => x % y,
        3 if (0..bits).contains(&y) => x << y,
        4 if (0..bits).contains(&y) => x >> y,
        _ => 0,
    };
    r as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code generator names these functions `kiln_{op}_{f32|f64}`; the symbols must agree.
    #[test]
    fn symbols_follow_the_naming_scheme() {
        for (t, table) in [("f32", unary_f32()), ("f64", unary_f64())] {
            for (op, sym, _) in table {
                assert_eq!(sym, format!("kiln_{}_{t}", op.name()));
            }
        }
        for (t, table) in [("f32", binary_f32()), ("f64", binary_f64())] {
            for (op, sym, _) in table {
                assert_eq!(sym, format!("kiln_{}_{t}", op.name()));
            }
        }
    }

    #[test]
    fn modulo_takes_the_divisor_sign() {
        assert_eq!(kiln_mod_f32(-7.0, 3.0), 2.0);
        assert_eq!(kiln_fmod_f32(-7.0, 3.0), -1.0);
        assert_eq!(
            kiln_int_binary(int_op_code(BinaryOp::Mod, DType::I32), -7, 3),
            2
        );
    }
}
