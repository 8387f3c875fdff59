//! Elementwise ops: unary, binary (numpy broadcasting) and `where`.
//!
//! Floats compute natively in f32 or f64 (halves arrive widened to f32). Integers compute in
//! i128 and wrap back into their type, which gives wrapping arithmetic for every width.

use super::num::same;
use super::{bad_dtype, check_alloc, op_err, Result};
use crate::{dispatch, ArcArrayD, BinaryOp, Elem, Op, Tensor, UnaryOp};
use ndarray::ArrayViewD;
use ndarray::{IxDyn, Zip};
use num_traits::Float;

/// Float types with the few functions `num_traits::Float` lacks.
pub(crate) trait Real: Float + Elem {
    /// Gauss error function.
    fn erf(self) -> Self;
    /// Round half to even.
    fn round_even(self) -> Self;
}

impl Real for f32 {
    fn erf(self) -> Self {
        libm::erff(self)
    }
    fn round_even(self) -> Self {
        self.round_ties_even()
    }
}

impl Real for f64 {
    fn erf(self) -> Self {
        libm::erf(self)
    }
    fn round_even(self) -> Self {
        self.round_ties_even()
    }
}

/// The numpy broadcast of several shapes, or `None` if they are incompatible.
pub(crate) fn broadcast_shapes(shapes: &[&[usize]]) -> Option<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[rank - s.len() + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return None;
            }
        }
    }
    Some(out)
}

fn out_shape(op: &Op, shapes: &[&[usize]]) -> Result<Vec<usize>> {
    let s = broadcast_shapes(shapes)
        .ok_or_else(|| op_err(op, format!("shapes {shapes:?} do not broadcast")))?;
    check_alloc(op, &s)?;
    Ok(s)
}

/// Applies `f` to `a` and `b` broadcast together.
pub(crate) fn zip2<A: Elem, B: Elem, R: Elem>(
    op: &Op,
    a: &ArrayViewD<'_, A>,
    b: &ArrayViewD<'_, B>,
    f: impl Fn(A, B) -> R,
) -> Result<ArcArrayD<R>> {
    let s = out_shape(op, &[a.shape(), b.shape()])?;
    let (av, bv) = (
        a.broadcast(IxDyn(&s)).expect("checked"),
        b.broadcast(IxDyn(&s)).expect("checked"),
    );
    Ok(Zip::from(&av)
        .and(&bv)
        .map_collect(|&x, &y| f(x, y))
        .into_shared())
}

/// `where(cond, a, b)` with all three broadcast together.
pub(crate) fn where_(op: &Op, cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let c = cond
        .as_array::<bool>()
        .ok_or_else(|| op_err(op, format!("condition must be bool, got {}", cond.dtype())))?;
    dispatch!(a, x => {
        let y = same(op, b)?;
        let s = out_shape(op, &[c.shape(), x.shape(), y.shape()])?;
        let sh = IxDyn(&s);
        let (cv, xv, yv) = (c.broadcast(sh.clone()).expect("checked"), x.broadcast(sh.clone()).expect("checked"), y.broadcast(sh).expect("checked"));
        Ok(Elem::wrap(Zip::from(&cv).and(&xv).and(&yv).map_collect(|&c, &x, &y| if c { x } else { y }).into_shared()))
    })
}

/// A unary op.
pub(crate) fn unary(op: &Op, u: UnaryOp, x: &Tensor) -> Result<Tensor> {
    let out = match x {
        Tensor::F32(a) => float_unary(u, &a.view()),
        Tensor::F64(a) => float_unary(u, &a.view()),
        Tensor::Bool(a) => match u {
            UnaryOp::Not => Some(Tensor::from_array(a.view().map(|&v| !v))),
            _ => None,
        },
        _ => dispatch!(x, a => int_unary(u, a)),
    };
    out.ok_or_else(|| bad_dtype(op, x.dtype()))
}

fn float_unary<F: Real>(u: UnaryOp, a: &ArrayViewD<'_, F>) -> Option<Tensor> {
    use UnaryOp::*;
    let m = |f: fn(F) -> F| Some(F::wrap(a.map(|&x| f(x)).into_shared()));
    let b = |f: fn(F) -> bool| Some(Tensor::from_array(a.map(|&x| f(x))));
    match u {
        Abs => m(F::abs),
        Neg => m(|x| -x),
        Sign => m(|x| {
            if x > F::zero() {
                F::one()
            } else if x < F::zero() {
                -F::one()
            } else {
                x * F::zero()
            }
        }),
        Floor => m(F::floor),
        Ceil => m(F::ceil),
        Round => m(F::round_even),
        Exp => m(F::exp),
        Log => m(F::ln),
        Sqrt => m(F::sqrt),
        Rsqrt => m(|x| x.sqrt().recip()),
        Reciprocal => m(F::recip),
        Sin => m(F::sin),
        Cos => m(F::cos),
        Tan => m(F::tan),
        Asin => m(F::asin),
        Acos => m(F::acos),
        Atan => m(F::atan),
        Sinh => m(F::sinh),
        Cosh => m(F::cosh),
        Tanh => m(F::tanh),
        Asinh => m(F::asinh),
        Acosh => m(F::acosh),
        Atanh => m(F::atanh),
        Erf => m(F::erf),
        Sigmoid => m(sigmoid),
        Relu => m(|x| if x < F::zero() { F::zero() } else { x }),
        Gelu => m(gelu),
        GeluTanh => m(gelu_tanh),
        Silu => m(|x| x * sigmoid(x)),
        Not | BitNot => None,
        IsNan => b(F::is_nan),
        IsInf => b(F::is_infinite),
        IsPosInf => b(|x| x == F::infinity()),
        IsNegInf => b(|x| x == F::neg_infinity()),
    }
}

/// A constant in `F`.
fn c<F: Real>(v: f64) -> F {
    F::from(v).unwrap_or_else(F::nan)
}

/// GELU, erf form, in the order of its definition (see [`UnaryOp::Gelu`]).
fn gelu<F: Real>(x: F) -> F {
    x * ((x / c::<F>(std::f64::consts::SQRT_2)).erf() + F::one()) * c::<F>(0.5)
}

/// GELU, tanh form (see [`UnaryOp::GeluTanh`]).
fn gelu_tanh<F: Real>(x: F) -> F {
    let inner = c::<F>(0.7978845608028654) * (x + c::<F>(0.044715) * (x * x * x));
    x * c::<F>(0.5) * (inner.tanh() + F::one())
}

/// `1 / (1 + e⁻ˣ)`, written so neither branch overflows.
fn sigmoid<F: Real>(x: F) -> F {
    if x >= F::zero() {
        F::one() / (F::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (F::one() + e)
    }
}

fn int_unary<T: Elem>(u: UnaryOp, a: &ArrayViewD<'_, T>) -> Option<Tensor> {
    use UnaryOp::*;
    let m = |f: fn(i128) -> i128| {
        Some(T::wrap(
            a.map(|&x| T::from_i128(f(x.to_i128()))).into_shared(),
        ))
    };
    let b = || Some(Tensor::from_array(a.map(|_| false)));
    match u {
        Abs => m(i128::abs),
        Neg => m(|x| -x),
        Sign => m(i128::signum),
        Floor | Ceil | Round => m(|x| x),
        Relu => m(|x| x.max(0)),
        BitNot => m(|x| !x),
        IsNan | IsInf | IsPosInf | IsNegInf => b(),
        Exp | Log | Sqrt | Rsqrt | Reciprocal | Sin | Cos | Tan | Asin | Acos | Atan | Sinh
        | Cosh | Tanh | Asinh | Acosh | Atanh | Erf | Sigmoid | Gelu | GeluTanh | Silu | Not => {
            None
        }
    }
}

/// A binary op with broadcasting.
pub(crate) fn binary(op: &Op, bop: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if let Some(t) = dispatch!(a, x => compare(op, bop, x, b))? {
        return Ok(t);
    }
    match a {
        Tensor::F32(x) => float_binary(op, bop, &x.view(), &same(op, b)?),
        Tensor::F64(x) => float_binary(op, bop, &x.view(), &same(op, b)?),
        Tensor::Bool(x) => bool_binary(op, bop, &x.view(), &same(op, b)?),
        _ => dispatch!(a, x => int_binary(op, bop, x, &same(op, b)?)),
    }
}

/// Evaluates `bop` if it is a comparison.
fn compare<T: Elem>(
    op: &Op,
    bop: BinaryOp,
    x: &ArrayViewD<'_, T>,
    b: &Tensor,
) -> Result<Option<Tensor>> {
    let Some(f) = comparison::<T>(bop) else {
        return Ok(None);
    };
    Ok(Some(Elem::wrap(zip2(op, x, &same(op, b)?, f)?)))
}

/// The predicate of a comparison op, generic over the element type.
fn comparison<T: Elem>(bop: BinaryOp) -> Option<fn(T, T) -> bool> {
    use BinaryOp::*;
    match bop {
        Equal => Some(|x, y| x == y),
        Less => Some(|x, y| x < y),
        LessOrEqual => Some(|x, y| x <= y),
        Greater => Some(|x, y| x > y),
        GreaterOrEqual => Some(|x, y| x >= y),
        Add | Sub | Mul | Div | Pow | Mod | Fmod | Min | Max | And | Or | Xor | BitAnd | BitOr
        | BitXor | ShiftLeft | ShiftRight => None,
    }
}

fn float_binary<F: Real>(
    op: &Op,
    bop: BinaryOp,
    a: &ArrayViewD<'_, F>,
    b: &ArrayViewD<'_, F>,
) -> Result<Tensor> {
    use BinaryOp::*;
    let f: fn(F, F) -> F = match bop {
        Add => |x, y| x + y,
        Sub => |x, y| x - y,
        Mul => |x, y| x * y,
        Div => |x, y| x / y,
        Pow => F::powf,
        Mod => |x, y| {
            let r = x % y;
            if r != F::zero() && ((r < F::zero()) != (y < F::zero())) {
                r + y
            } else {
                r
            }
        },
        Fmod => |x, y| x % y,
        Min => |x, y| {
            if x.is_nan() || y.is_nan() {
                F::nan()
            } else {
                x.min(y)
            }
        },
        Max => |x, y| {
            if x.is_nan() || y.is_nan() {
                F::nan()
            } else {
                x.max(y)
            }
        },
        Equal | Less | LessOrEqual | Greater | GreaterOrEqual | And | Or | Xor | BitAnd | BitOr
        | BitXor | ShiftLeft | ShiftRight => return Err(bad_dtype(op, F::DTYPE)),
    };
    Ok(F::wrap(zip2(op, a, b, f)?))
}

fn bool_binary(
    op: &Op,
    bop: BinaryOp,
    a: &ArrayViewD<'_, bool>,
    b: &ArrayViewD<'_, bool>,
) -> Result<Tensor> {
    use BinaryOp::*;
    let f: fn(bool, bool) -> bool = match bop {
        And | BitAnd => |x, y| x & y,
        Or | BitOr => |x, y| x | y,
        Xor | BitXor => |x, y| x ^ y,
        Min => |x, y| x & y,
        Max => |x, y| x | y,
        Add | Sub | Mul | Div | Pow | Mod | Fmod | Equal | Less | LessOrEqual | Greater
        | GreaterOrEqual | ShiftLeft | ShiftRight => return Err(bad_dtype(op, crate::DType::Bool)),
    };
    Ok(Elem::wrap(zip2(op, a, b, f)?))
}

fn int_binary<T: Elem>(
    op: &Op,
    bop: BinaryOp,
    a: &ArrayViewD<'_, T>,
    b: &ArrayViewD<'_, T>,
) -> Result<Tensor> {
    use BinaryOp::*;
    let bits = T::DTYPE.size_bytes() as i128 * 8;
    let f: fn(i128, i128, i128) -> i128 = match bop {
        Add => |x, y, _| x.wrapping_add(y),
        Sub => |x, y, _| x.wrapping_sub(y),
        Mul => |x, y, _| x.wrapping_mul(y),
        Div => |x, y, _| if y == 0 { 0 } else { x / y },
        Pow => |x, y, _| int_pow(x, y),
        Mod => |x, y, _| {
            if y == 0 {
                return 0;
            }
            let r = x % y;
            if r != 0 && ((r < 0) != (y < 0)) {
                r + y
            } else {
                r
            }
        },
        Fmod => |x, y, _| if y == 0 { 0 } else { x % y },
        Min => |x, y, _| x.min(y),
        Max => |x, y, _| x.max(y),
        BitAnd => |x, y, _| x & y,
        BitOr => |x, y, _| x | y,
        BitXor => |x, y, _| x ^ y,
        ShiftLeft => |x, y, bits| if (0..bits).contains(&y) { x << y } else { 0 },
        ShiftRight => |x, y, bits| if (0..bits).contains(&y) { x >> y } else { 0 },
        Equal | Less | LessOrEqual | Greater | GreaterOrEqual | And | Or | Xor => {
            return Err(bad_dtype(op, T::DTYPE))
        }
    };
    Ok(T::wrap(zip2(op, a, b, |x: T, y: T| {
        T::from_i128(f(x.to_i128(), y.to_i128(), bits))
    })?))
}

/// Integer power by squaring, wrapping; negative exponents truncate like `1 / xⁿ`:
/// `x^e` with wrapping multiplication; negative exponents give 0 unless `|x| = 1`.
///
/// ```
/// assert_eq!(kiln_ir::interp::int_pow(3, 4), 81);
/// assert_eq!(kiln_ir::interp::int_pow(-1, -3), -1);
/// ```
pub fn int_pow(x: i128, e: i128) -> i128 {
    if e < 0 {
        return match x {
            1 => 1,
            -1 if e % 2 == 0 => 1,
            -1 => -1,
            _ => 0,
        };
    }
    let (mut base, mut e, mut acc) = (x, e, 1i128);
    while e > 0 {
        if e & 1 == 1 {
            acc = acc.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        e >>= 1;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::eval_op;
    use crate::{Bindings, DType};

    fn t<T: Elem>(v: Vec<T>, s: &[usize]) -> Tensor {
        Tensor::from_vec(v, s).unwrap()
    }
    fn un(u: UnaryOp, x: Tensor) -> Tensor {
        eval_op(&Op::Unary(u), &[x], &Bindings::new())
            .unwrap()
            .remove(0)
    }
    fn bin(b: BinaryOp, x: Tensor, y: Tensor) -> Tensor {
        eval_op(&Op::Binary(b), &[x, y], &Bindings::new())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn round_is_half_to_even() {
        let r = un(
            UnaryOp::Round,
            t(vec![0.5f32, 1.5, 2.5, -0.5, -1.5, 2.4], &[6]),
        );
        assert_eq!(r.to_f64_vec(), vec![0.0, 2.0, 2.0, -0.0, -2.0, 2.0]);
    }

    #[test]
    fn float_unary_values() {
        let x = t(vec![-1.0f64, 0.0, 4.0, f64::NAN], &[4]);
        let s = un(UnaryOp::Sign, x.clone()).to_f64_vec();
        assert_eq!(&s[..3], &[-1.0, 0.0, 1.0]);
        assert!(s[3].is_nan());
        let r = un(UnaryOp::Relu, x.clone()).to_f64_vec();
        assert_eq!(&r[..3], &[0.0, 0.0, 4.0]);
        assert!(r[3].is_nan());
        assert_eq!(un(UnaryOp::IsNan, x.clone()).to_i64_vec(), vec![0, 0, 0, 1]);
        let sg = un(UnaryOp::Sigmoid, t(vec![-1000.0f32, 0.0, 1000.0], &[3])).to_f64_vec();
        assert_eq!(sg, vec![0.0, 0.5, 1.0]);
        let e = un(UnaryOp::Erf, t(vec![1.0f32], &[1])).to_f64_vec()[0];
        assert!((e - 0.842_700_79).abs() < 1e-6);
        assert_eq!(
            un(UnaryOp::Rsqrt, t(vec![4.0f32], &[1])).to_f64_vec(),
            vec![0.5]
        );
    }

    #[test]
    fn half_types_compute_in_f32() {
        use half::f16;
        let x = t(vec![f16::from_f32(1.0), f16::from_f32(2.0)], &[2]);
        let y = bin(BinaryOp::Div, x.clone(), t(vec![f16::from_f32(3.0)], &[1]));
        assert_eq!(y.dtype(), DType::F16);
        assert_eq!(y.to_f64_vec()[0], f16::from_f32(1.0 / 3.0).to_f64());
        assert_eq!(bin(BinaryOp::Less, x.clone(), x).dtype(), DType::Bool);
    }

    #[test]
    fn integer_ops_wrap_and_truncate() {
        let a = t(vec![i8::MAX, -7, 7, i8::MIN], &[4]);
        assert_eq!(
            bin(BinaryOp::Add, a.clone(), t(vec![1i8], &[])).to_i64_vec(),
            vec![-128, -6, 8, -127]
        );
        assert_eq!(
            bin(BinaryOp::Div, a.clone(), t(vec![2i8], &[])).to_i64_vec(),
            vec![63, -3, 3, -64]
        );
        assert_eq!(
            bin(BinaryOp::Div, a.clone(), t(vec![0i8], &[])).to_i64_vec(),
            vec![0; 4]
        );
        assert_eq!(
            un(UnaryOp::Abs, a.clone()).to_i64_vec(),
            vec![127, 7, 7, -128]
        );
        let m = t(vec![-7i64, 7, -7, 7], &[4]);
        let d = t(vec![3i64, -3, -3, 3], &[4]);
        assert_eq!(
            bin(BinaryOp::Mod, m.clone(), d.clone()).to_i64_vec(),
            vec![2, -2, -1, 1]
        );
        assert_eq!(bin(BinaryOp::Fmod, m, d).to_i64_vec(), vec![-1, 1, -1, 1]);
        assert_eq!(
            bin(
                BinaryOp::Pow,
                t(vec![3i32, 2, -2], &[3]),
                t(vec![4i32, 31, 3], &[3])
            )
            .to_i64_vec(),
            vec![81, i32::MIN as i64, -8]
        );
        assert_eq!(
            un(UnaryOp::BitNot, t(vec![0u8, 255], &[2])).to_i64_vec(),
            vec![255, 0]
        );
    }

    #[test]
    fn float_mod_follows_python() {
        let m = bin(
            BinaryOp::Mod,
            t(vec![-7.0f32, 7.0], &[2]),
            t(vec![3.0f32, -3.0], &[2]),
        );
        assert_eq!(m.to_f64_vec(), vec![2.0, -2.0]);
        let f = bin(
            BinaryOp::Fmod,
            t(vec![-7.0f32, 7.0], &[2]),
            t(vec![3.0f32, -3.0], &[2]),
        );
        assert_eq!(f.to_f64_vec(), vec![-1.0, 1.0]);
    }

    #[test]
    fn shifts() {
        let x = t(vec![1u8, 2, 128], &[3]);
        assert_eq!(
            bin(BinaryOp::ShiftLeft, x.clone(), t(vec![1u8, 7, 1], &[3])).to_i64_vec(),
            vec![2, 0, 0]
        );
        assert_eq!(
            bin(BinaryOp::ShiftRight, x.clone(), t(vec![1u8, 1, 7], &[3])).to_i64_vec(),
            vec![0, 1, 1]
        );
        assert_eq!(
            bin(BinaryOp::ShiftLeft, x, t(vec![8u8], &[1])).to_i64_vec(),
            vec![0, 0, 0]
        );
    }

    #[test]
    fn min_max_propagate_nan_and_comparisons_are_ieee() {
        let a = t(vec![1.0f32, f32::NAN], &[2]);
        let b = t(vec![f32::NAN, 2.0f32], &[2]);
        assert!(bin(BinaryOp::Max, a.clone(), b.clone())
            .to_f64_vec()
            .iter()
            .all(|v| v.is_nan()));
        assert!(bin(BinaryOp::Min, a.clone(), b.clone())
            .to_f64_vec()
            .iter()
            .all(|v| v.is_nan()));
        assert_eq!(
            bin(BinaryOp::Equal, a.clone(), a.clone()).to_i64_vec(),
            vec![1, 0]
        );
        assert_eq!(bin(BinaryOp::GreaterOrEqual, a, b).to_i64_vec(), vec![0, 0]);
    }

    #[test]
    fn broadcasting_including_size_zero() {
        let a = t(vec![1i64, 2, 3], &[3, 1]);
        let b = t(vec![10i64, 20], &[1, 2]);
        let c = bin(BinaryOp::Mul, a.clone(), b);
        assert_eq!(c.shape(), &[3, 2]);
        assert_eq!(c.to_i64_vec(), vec![10, 20, 20, 40, 30, 60]);
        let e = bin(BinaryOp::Add, a.clone(), t(Vec::<i64>::new(), &[0]));
        assert_eq!(e.shape(), &[3, 0]);
        let err = eval_op(
            &Op::Binary(BinaryOp::Add),
            &[a, t(vec![1i64, 2, 3, 4], &[2, 2])],
            &Bindings::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("do not broadcast"), "{err}");
    }

    #[test]
    fn logical_and_where() {
        let p = t(vec![true, false, true], &[3]);
        let q = t(vec![true], &[1]);
        assert_eq!(bin(BinaryOp::Xor, p.clone(), q).to_i64_vec(), vec![0, 1, 0]);
        assert_eq!(un(UnaryOp::Not, p.clone()).to_i64_vec(), vec![0, 1, 0]);
        let w = eval_op(
            &Op::Where,
            &[p, t(vec![1.0f32], &[]), t(vec![5.0f32, 6.0, 7.0], &[3])],
            &Bindings::new(),
        )
        .unwrap();
        assert_eq!(w[0].to_f64_vec(), vec![1.0, 6.0, 1.0]);
    }

    #[test]
    fn wrong_dtypes_are_errors() {
        let x = t(vec![1i32], &[1]);
        assert!(eval_op(
            &Op::Unary(UnaryOp::Exp),
            std::slice::from_ref(&x),
            &Bindings::new()
        )
        .is_err());
        assert!(eval_op(
            &Op::Binary(BinaryOp::Add),
            &[x, t(vec![1i64], &[1])],
            &Bindings::new()
        )
        .is_err());
    }
}
