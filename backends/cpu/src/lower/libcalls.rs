//! Runtime functions that generated code calls for ops without a short instruction
//! sequence: libm's transcendental functions, float `pow`/`mod`, and the integer ops with
//! many cases. Each mirrors the reference interpreter's definition.

use cranelift_codegen::ir::{types, AbiParam, Signature, Type};
use cranelift_codegen::isa::CallConv;
use kiln_ir::{BinaryOp, DType, UnaryOp};

/// A runtime function callable from generated code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Libcall {
    /// A float unary function; `true` for f64.
    Unary(UnaryOp, bool),
    /// A float binary function (pow, mod, fmod); `true` for f64.
    Binary(BinaryOp, bool),
    /// `kiln_int_binary(code, x, y)`: integer pow/mod/fmod/shifts on widened operands.
    IntBinary,
}

impl Libcall {
    /// The unary function `u`.
    pub fn unary(u: UnaryOp, f64: bool) -> Libcall {
        Libcall::Unary(u, f64)
    }

    /// The binary function `b`.
    pub fn binary(b: BinaryOp, f64: bool) -> Libcall {
        Libcall::Binary(b, f64)
    }

    /// The symbol name.
    pub fn name(self) -> String {
        match self {
            Libcall::Unary(u, f64) => {
                format!("kiln_{}_{}", u.name(), if f64 { "f64" } else { "f32" })
            }
            Libcall::Binary(b, f64) => {
                format!("kiln_{}_{}", b.name(), if f64 { "f64" } else { "f32" })
            }
            Libcall::IntBinary => "kiln_int_binary".into(),
        }
    }

    /// The signature, in the host's calling convention.
    pub fn signature(self, call_conv: CallConv) -> Signature {
        let mut sig = Signature::new(call_conv);
        let (params, ret): (Vec<Type>, Type) = match self {
            Libcall::Unary(_, f64) => (vec![float(f64)], float(f64)),
            Libcall::Binary(_, f64) => (vec![float(f64), float(f64)], float(f64)),
            Libcall::IntBinary => (vec![types::I32, types::I64, types::I64], types::I64),
        };
        sig.params.extend(params.into_iter().map(AbiParam::new));
        sig.returns.push(AbiParam::new(ret));
        sig
    }

    /// The address of the implementation, if there is one.
    pub fn address(self) -> Option<*const u8> {
        match self {
            Libcall::Unary(u, false) => unary_f32(u).map(|f| f as *const u8),
            Libcall::Unary(u, true) => unary_f64(u).map(|f| f as *const u8),
            Libcall::Binary(b, false) => binary_f32(b).map(|f| f as *const u8),
            Libcall::Binary(b, true) => binary_f64(b).map(|f| f as *const u8),
            Libcall::IntBinary => Some(kiln_int_binary as *const u8),
        }
    }
}

fn float(f64: bool) -> Type {
    if f64 {
        types::F64
    } else {
        types::F32
    }
}

macro_rules! unary_table {
    ($name:ident, $t:ty, { $($op:ident => $f:expr),* $(,)? }) => {
        fn $name(u: UnaryOp) -> Option<extern "C" fn($t) -> $t> {
            match u {
                $(UnaryOp::$op => {
                    extern "C" fn f(x: $t) -> $t {
                        let g: fn($t) -> $t = $f;
                        g(x)
                    }
                    Some(f)
                })*
                _ => None,
            }
        }
    };
}

unary_table!(unary_f32, f32, {
    Exp => f32::exp, Log => f32::ln, Tanh => f32::tanh, Sin => f32::sin, Cos => f32::cos,
    Tan => f32::tan, Asin => f32::asin, Acos => f32::acos, Atan => f32::atan, Sinh => f32::sinh,
    Cosh => f32::cosh, Asinh => f32::asinh, Acosh => f32::acosh, Atanh => f32::atanh,
    Erf => libm::erff,
});

unary_table!(unary_f64, f64, {
    Exp => f64::exp, Log => f64::ln, Tanh => f64::tanh, Sin => f64::sin, Cos => f64::cos,
    Tan => f64::tan, Asin => f64::asin, Acos => f64::acos, Atan => f64::atan, Sinh => f64::sinh,
    Cosh => f64::cosh, Asinh => f64::asinh, Acosh => f64::acosh, Atanh => f64::atanh,
    Erf => libm::erf,
});

macro_rules! binary_table {
    ($name:ident, $t:ty) => {
        fn $name(b: BinaryOp) -> Option<extern "C" fn($t, $t) -> $t> {
            extern "C" fn pow(x: $t, y: $t) -> $t {
                x.powf(y)
            }
            extern "C" fn fmod(x: $t, y: $t) -> $t {
                x % y
            }
            // Python-style modulo: the result takes the divisor's sign.
            extern "C" fn modulo(x: $t, y: $t) -> $t {
                let r = x % y;
                if r != 0.0 && ((r < 0.0) != (y < 0.0)) {
                    r + y
                } else {
                    r
                }
            }
            match b {
                BinaryOp::Pow => Some(pow),
                BinaryOp::Fmod => Some(fmod),
                BinaryOp::Mod => Some(modulo),
                _ => None,
            }
        }
    };
}

binary_table!(binary_f32, f32);
binary_table!(binary_f64, f64);

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

/// Integer pow, mod, fmod and shifts on operands widened to i64 (unsigned ones zero-extended),
/// computed in i128 like the interpreter; the caller truncates the result.
extern "C" fn kiln_int_binary(code: u32, x: i64, y: i64) -> i64 {
    let d = DType::ALL[(code % 16) as usize];
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
