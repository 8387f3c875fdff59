//! Runtime functions that generated code calls for ops without a short instruction
//! sequence: libm's transcendental functions, float `pow`/`mod`, and the integer ops with
//! many cases. Each mirrors the reference interpreter's definition.

use cranelift_codegen::ir::{types, AbiParam, Signature, Type};
use cranelift_codegen::isa::CallConv;
use kiln_ir::{BinaryOp, UnaryOp};
use kiln_rt::libcalls as rt;
pub use kiln_rt::libcalls::int_op_code;

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

    /// The symbol name (the runtime exports the function under it).
    pub fn name(self) -> String {
        let t = |f64: bool| if f64 { "f64" } else { "f32" };
        match self {
            Libcall::Unary(u, f64) => format!("kiln_{}_{}", u.name(), t(f64)),
            Libcall::Binary(b, f64) => format!("kiln_{}_{}", b.name(), t(f64)),
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

    /// The address of the implementation in the runtime, if there is one.
    pub fn address(self) -> Option<*const u8> {
        match self {
            Libcall::Unary(u, false) => find(rt::unary_f32(), u),
            Libcall::Unary(u, true) => find(rt::unary_f64(), u),
            Libcall::Binary(b, false) => find(rt::binary_f32(), b),
            Libcall::Binary(b, true) => find(rt::binary_f64(), b),
            Libcall::IntBinary => Some(rt::kiln_int_binary as *const u8),
        }
    }
}

/// The address of `op`'s function in a runtime table.
fn find<Op: PartialEq>(table: Vec<rt::Entry<Op>>, op: Op) -> Option<*const u8> {
    table.into_iter().find(|e| e.0 == op).map(|e| e.2)
}

fn float(f64: bool) -> Type {
    if f64 {
        types::F64
    } else {
        types::F32
    }
}
