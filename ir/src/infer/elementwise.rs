//! Inference for elementwise ops: unary, binary, where and bitcast.

use super::{broadcast_shapes, expect_dtype, is_numeric, one, same_dtype, Res};
use crate::{BinaryOp, DType, TensorType, UnaryOp};

/// Which dtypes an elementwise op accepts.
#[derive(Clone, Copy)]
enum Domain {
    Any,
    Numeric,
    Float,
    Int,
    Unsigned,
    Bool,
}

impl Domain {
    fn check(self, t: &TensorType, what: &str) -> Res<()> {
        match self {
            Domain::Any => Ok(()),
            Domain::Numeric => expect_dtype(t, what, is_numeric, "a numeric"),
            Domain::Float => expect_dtype(t, what, DType::is_float, "a float"),
            Domain::Int => expect_dtype(t, what, DType::is_int, "an integer"),
            Domain::Unsigned => expect_dtype(t, what, is_unsigned, "an unsigned integer"),
            Domain::Bool => expect_dtype(t, what, |d| d == DType::Bool, "the bool"),
        }
    }
}

fn is_unsigned(d: DType) -> bool {
    d.is_int() && !d.is_signed_int()
}

fn unary_domain(u: UnaryOp) -> Domain {
    use UnaryOp::*;
    match u {
        Abs | Neg | Sign | Relu => Domain::Numeric,
        Floor | Ceil | Round | Exp | Log | Sqrt | Rsqrt | Reciprocal | Sin | Cos | Tan | Asin
        | Acos | Atan | Sinh | Cosh | Tanh | Asinh | Acosh | Atanh | Erf | Sigmoid | Gelu
        | GeluTanh | Silu => Domain::Float,
        IsNan | IsInf | IsPosInf | IsNegInf => Domain::Float,
        Not => Domain::Bool,
        BitNot => Domain::Int,
    }
}

fn binary_domain(b: BinaryOp) -> Domain {
    use BinaryOp::*;
    match b {
        Add | Sub | Mul | Div | Pow | Mod | Fmod | Min | Max => Domain::Numeric,
        Less | LessOrEqual | Greater | GreaterOrEqual => Domain::Numeric,
        Equal => Domain::Any,
        And | Or | Xor => Domain::Bool,
        BitAnd | BitOr | BitXor => Domain::Int,
        ShiftLeft | ShiftRight => Domain::Unsigned,
    }
}

/// Same shape; bool out for the predicates.
pub(super) fn unary(u: UnaryOp, x: &TensorType) -> Res<Vec<TensorType>> {
    unary_domain(u).check(x, "input")?;
    let dtype = if u.returns_bool() {
        DType::Bool
    } else {
        x.dtype
    };
    one(TensorType::new(dtype, x.shape.clone()))
}

/// Broadcast shape; both inputs share a dtype; bool out for comparisons and logic.
pub(super) fn binary(b: BinaryOp, x: &TensorType, y: &TensorType) -> Res<Vec<TensorType>> {
    same_dtype(x, y, "input")?;
    binary_domain(b).check(x, "input")?;
    let shape = broadcast_shapes(&x.shape, &y.shape)?;
    let dtype = if b.returns_bool() {
        DType::Bool
    } else {
        x.dtype
    };
    one(TensorType::new(dtype, shape))
}

/// `where(cond, a, b)`: bool condition, `a` and `b` share a dtype, all three broadcast.
pub(super) fn where_(c: &TensorType, a: &TensorType, b: &TensorType) -> Res<Vec<TensorType>> {
    Domain::Bool.check(c, "condition")?;
    same_dtype(a, b, "value")?;
    let shape = broadcast_shapes(&broadcast_shapes(&c.shape, &a.shape)?, &b.shape)?;
    one(TensorType::new(a.dtype, shape))
}

/// Same shape, a dtype of the same width.
pub(super) fn bitcast(to: DType, x: &TensorType) -> Res<Vec<TensorType>> {
    if to.size_bytes() != x.dtype.size_bytes() {
        return Err(format!(
            "cannot bitcast {} ({} bytes) to {to} ({} bytes)",
            x.dtype,
            x.dtype.size_bytes(),
            to.size_bytes()
        ));
    }
    one(TensorType::new(to, x.shape.clone()))
}
