//! The semantics of each elementwise op at each dtype, as Cranelift instructions, matching
//! the reference interpreter (kiln-ir's `interp`). Ops with no short instruction sequence
//! call a runtime function ([`super::libcalls`]). Vector forms exist for `f32x4` only, and
//! [`vectorizable`] says which ops have one.

use super::libcalls::Libcall;
use super::{math, FnCx, LowerError};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use kiln_ir::{BinaryOp, DType, UnaryOp};

/// The Cranelift type holding one element of `dtype`.
pub fn clif_type(dtype: DType) -> Result<Type, LowerError> {
    Ok(match dtype {
        DType::F32 => types::F32,
        DType::F64 => types::F64,
        DType::I8 | DType::U8 | DType::Bool => types::I8,
        // Halves only move (arithmetic on them runs in the runtime, see `schedule::support`).
        DType::I16 | DType::U16 | DType::F16 | DType::BF16 => types::I16,
        DType::I32 | DType::U32 => types::I32,
        DType::I64 | DType::U64 => types::I64,
    })
}

fn unsigned(d: DType) -> bool {
    matches!(
        d,
        DType::U8 | DType::U16 | DType::U32 | DType::U64 | DType::Bool
    )
}

/// True if `f32x4` code exists for this unary op.
pub fn vectorizable_unary(u: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(
        u,
        Abs | Neg
            | Floor
            | Ceil
            | Round
            | Sqrt
            | Rsqrt
            | Reciprocal
            | Relu
            | Exp
            | Log
            | Tanh
            | Erf
            | Sigmoid
            | Gelu
            | GeluTanh
            | Silu
    )
}

/// True if `f32x4` code exists for this binary op on f32.
pub fn vectorizable_binary(b: BinaryOp) -> bool {
    use BinaryOp::*;
    matches!(b, Add | Sub | Mul | Div | Min | Max)
}

impl FnCx<'_, '_> {
    fn fconst(&mut self, ty: Type, v: f64) -> Value {
        let scalar = ty.lane_type();
        let c = if scalar == types::F64 {
            self.b.ins().f64const(v)
        } else {
            self.b.ins().f32const(v as f32)
        };
        if ty.is_vector() {
            self.b.ins().splat(ty, c)
        } else {
            c
        }
    }

    /// `cond ? a : b` for a float comparison mask, scalar or vector.
    fn fselect(&mut self, cc: FloatCC, x: Value, y: Value, a: Value, b: Value) -> Value {
        let c = self.b.ins().fcmp(cc, x, y);
        if self.b.func.dfg.value_type(x).is_vector() {
            let ty = self.b.func.dfg.value_type(a);
            let mask = self.b.ins().bitcast(
                ty,
                MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little),
                c,
            );
            self.b.ins().bitselect(mask, a, b)
        } else {
            self.b.ins().select(c, a, b)
        }
    }

    /// An integer constant of type `ty` (any width; negative values wrap).
    pub(crate) fn int_const(&mut self, ty: Type, v: i64) -> Value {
        self.constant(ty, crate::kernel::Scalar::Int(v))
    }

    /// A comparison result (I8, 0 or 1) as an integer of type `ty`.
    fn bool_to(&mut self, ty: Type, c: Value) -> Value {
        if ty == types::I8 {
            c
        } else {
            self.b.ins().uextend(ty, c)
        }
    }

    /// A float unary op on an F32, F64 or F32X4 value.
    pub fn float_unary(&mut self, u: UnaryOp, x: Value) -> Result<Value, LowerError> {
        use UnaryOp::*;
        let ty = self.b.func.dfg.value_type(x);
        let f64 = ty == types::F64;
        let zero = self.fconst(ty, 0.0);
        let one = self.fconst(ty, 1.0);
        Ok(match u {
            Abs => self.b.ins().fabs(x),
            Neg => self.b.ins().fneg(x),
            Sign => {
                let neg_one = self.fconst(ty, -1.0);
                let signed_zero = self.b.ins().fmul(x, zero);
                let lo = self.fselect(FloatCC::LessThan, x, zero, neg_one, signed_zero);
                self.fselect(FloatCC::GreaterThan, x, zero, one, lo)
            }
            Floor => self.b.ins().floor(x),
            Ceil => self.b.ins().ceil(x),
            Round => self.b.ins().nearest(x),
            Sqrt => self.b.ins().sqrt(x),
            Rsqrt => {
                let s = self.b.ins().sqrt(x);
                self.b.ins().fdiv(one, s)
            }
            Reciprocal => self.b.ins().fdiv(one, x),
            Relu => self.fselect(FloatCC::LessThan, x, zero, zero, x),
            Exp if !f64 => math::exp(&mut self.b, x),
            Log if !f64 => math::log(&mut self.b, x),
            Tanh if !f64 => math::tanh(&mut self.b, x),
            Erf if !f64 => math::erf(&mut self.b, x),
            Sigmoid if !f64 => math::sigmoid(&mut self.b, x),
            Sigmoid => {
                let n = self.b.ins().fneg(x);
                let e = self.call(Libcall::unary(Exp, true), &[n])?;
                let d = self.b.ins().fadd(one, e);
                self.b.ins().fdiv(one, d)
            }
            Exp | Log | Tanh | Erf | Sin | Cos | Tan | Asin | Acos | Atan | Sinh | Cosh | Asinh
            | Acosh | Atanh => self.call(Libcall::unary(u, f64), &[x])?,
            Gelu | GeluTanh | Silu => self.activation(u, x)?,
            Not | BitNot | IsNan | IsInf | IsPosInf | IsNegInf => {
                return Err(LowerError::Op(format!("{} on a float", u.name())))
            }
        })
    }

    /// The fused activations, in the interpreter's order of operations (their erf, tanh and
    /// sigmoid are the inline ones for f32).
    fn activation(&mut self, u: UnaryOp, x: Value) -> Result<Value, LowerError> {
        let ty = self.b.func.dfg.value_type(x);
        let one = self.fconst(ty, 1.0);
        let half = self.fconst(ty, 0.5);
        Ok(match u {
            UnaryOp::Gelu => {
                let root2 = self.fconst(ty, std::f64::consts::SQRT_2);
                let t = self.b.ins().fdiv(x, root2);
                let e = self.float_unary(UnaryOp::Erf, t)?;
                let s = self.b.ins().fadd(e, one);
                let p = self.b.ins().fmul(x, s);
                self.b.ins().fmul(p, half)
            }
            UnaryOp::GeluTanh => {
                let k = self.fconst(ty, 0.7978845608028654);
                let a = self.fconst(ty, 0.044715);
                let sq = self.b.ins().fmul(x, x);
                let cube = self.b.ins().fmul(sq, x);
                let ac = self.b.ins().fmul(a, cube);
                let sum = self.b.ins().fadd(x, ac);
                let inner = self.b.ins().fmul(k, sum);
                let t = self.float_unary(UnaryOp::Tanh, inner)?;
                let s = self.b.ins().fadd(t, one);
                let xh = self.b.ins().fmul(x, half);
                self.b.ins().fmul(xh, s)
            }
            UnaryOp::Silu => {
                let s = self.float_unary(UnaryOp::Sigmoid, x)?;
                self.b.ins().fmul(x, s)
            }
            _ => return Err(LowerError::Op(format!("{} is not an activation", u.name()))),
        })
    }

    /// A float predicate (`is_nan`, `is_inf`, …) giving a bool (I8).
    pub fn float_test(&mut self, u: UnaryOp, x: Value) -> Result<Value, LowerError> {
        let ty = self.b.func.dfg.value_type(x);
        let inf = self.fconst(ty, f64::INFINITY);
        Ok(match u {
            UnaryOp::IsNan => self.b.ins().fcmp(FloatCC::Unordered, x, x),
            UnaryOp::IsInf => {
                let a = self.b.ins().fabs(x);
                self.b.ins().fcmp(FloatCC::Equal, a, inf)
            }
            UnaryOp::IsPosInf => self.b.ins().fcmp(FloatCC::Equal, x, inf),
            UnaryOp::IsNegInf => {
                let ninf = self.fconst(ty, f64::NEG_INFINITY);
                self.b.ins().fcmp(FloatCC::Equal, x, ninf)
            }
            _ => return Err(LowerError::Op(format!("{} is not a float test", u.name()))),
        })
    }

    /// An integer or bool unary op.
    pub fn int_unary(&mut self, u: UnaryOp, d: DType, x: Value) -> Result<Value, LowerError> {
        use UnaryOp::*;
        let ty = self.b.func.dfg.value_type(x);
        Ok(match u {
            Abs if unsigned(d) => x,
            Abs => self.b.ins().iabs(x),
            Neg => self.b.ins().ineg(x),
            Sign if unsigned(d) => {
                let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0);
                self.bool_to(ty, c)
            }
            Sign => {
                let pos = self.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, x, 0);
                let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, x, 0);
                let p = self.bool_to(ty, pos);
                let n = self.bool_to(ty, neg);
                self.b.ins().isub(p, n)
            }
            Floor | Ceil | Round => x,
            Relu if unsigned(d) => x,
            Relu => {
                let zero = self.int_const(ty, 0);
                self.b.ins().smax(x, zero)
            }
            Not => self.b.ins().bxor_imm_s(x, 1),
            BitNot => self.b.ins().bnot(x),
            _ => return Err(LowerError::Op(format!("{} on {d}", u.name()))),
        })
    }

    /// A binary op on floats (scalar or f32x4).
    pub fn float_binary(
        &mut self,
        op: BinaryOp,
        x: Value,
        y: Value,
        y_const: Option<f64>,
    ) -> Result<Value, LowerError> {
        use BinaryOp::*;
        let ty = self.b.func.dfg.value_type(x);
        let f64 = ty == types::F64;
        Ok(match op {
            Add => self.b.ins().fadd(x, y),
            Sub => self.b.ins().fsub(x, y),
            Mul => self.b.ins().fmul(x, y),
            Div => self.b.ins().fdiv(x, y),
            Min => self.b.ins().fmin(x, y),
            Max => self.b.ins().fmax(x, y),
            // x^2 and x^1 are exact rewrites of powf (both correctly rounded).
            Pow if y_const == Some(2.0) => self.b.ins().fmul(x, x),
            Pow if y_const == Some(1.0) => x,
            // x^3 (GELU's tanh form) as two products: within 1 ulp of powf, and inline.
            Pow if y_const == Some(3.0) => {
                let sq = self.b.ins().fmul(x, x);
                self.b.ins().fmul(sq, x)
            }
            Pow | Mod | Fmod => self.call(Libcall::binary(op, f64), &[x, y])?,
            Equal => self.b.ins().fcmp(FloatCC::Equal, x, y),
            Less => self.b.ins().fcmp(FloatCC::LessThan, x, y),
            LessOrEqual => self.b.ins().fcmp(FloatCC::LessThanOrEqual, x, y),
            Greater => self.b.ins().fcmp(FloatCC::GreaterThan, x, y),
            GreaterOrEqual => self.b.ins().fcmp(FloatCC::GreaterThanOrEqual, x, y),
            And | Or | Xor | BitAnd | BitOr | BitXor | ShiftLeft | ShiftRight => {
                return Err(LowerError::Op(format!("{} on a float", op.name())))
            }
        })
    }

    /// A binary op on integers or bools of dtype `d`.
    pub fn int_binary(
        &mut self,
        op: BinaryOp,
        d: DType,
        x: Value,
        y: Value,
    ) -> Result<Value, LowerError> {
        use BinaryOp::*;
        let u = unsigned(d);
        let cmp = |signed: IntCC, uns: IntCC| if u { uns } else { signed };
        Ok(match op {
            Add => self.b.ins().iadd(x, y),
            Sub => self.b.ins().isub(x, y),
            Mul => self.b.ins().imul(x, y),
            Div => self.int_div(d, x, y),
            Min if u => self.b.ins().umin(x, y),
            Min => self.b.ins().smin(x, y),
            Max if u => self.b.ins().umax(x, y),
            Max => self.b.ins().smax(x, y),
            And | BitAnd => self.b.ins().band(x, y),
            Or | BitOr => self.b.ins().bor(x, y),
            Xor | BitXor => self.b.ins().bxor(x, y),
            Equal => self.b.ins().icmp(IntCC::Equal, x, y),
            Less => self
                .b
                .ins()
                .icmp(cmp(IntCC::SignedLessThan, IntCC::UnsignedLessThan), x, y),
            LessOrEqual => self.b.ins().icmp(
                cmp(IntCC::SignedLessThanOrEqual, IntCC::UnsignedLessThanOrEqual),
                x,
                y,
            ),
            Greater => self.b.ins().icmp(
                cmp(IntCC::SignedGreaterThan, IntCC::UnsignedGreaterThan),
                x,
                y,
            ),
            GreaterOrEqual => self.b.ins().icmp(
                cmp(
                    IntCC::SignedGreaterThanOrEqual,
                    IntCC::UnsignedGreaterThanOrEqual,
                ),
                x,
                y,
            ),
            Pow | Mod | Fmod | ShiftLeft | ShiftRight => self.int_libcall(op, d, x, y)?,
        })
    }

    /// Division that never traps: `x / 0` is 0 and `MIN / -1` wraps, as in the interpreter.
    fn int_div(&mut self, d: DType, x: Value, y: Value) -> Value {
        let ty = self.b.func.dfg.value_type(x);
        let zero = self.int_const(ty, 0);
        let one = self.int_const(ty, 1);
        let is_zero = self.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
        if unsigned(d) {
            let safe = self.b.ins().select(is_zero, one, y);
            let q = self.b.ins().udiv(x, safe);
            return self.b.ins().select(is_zero, zero, q);
        }
        let m1 = self.int_const(ty, -1);
        let is_m1 = self.b.ins().icmp(IntCC::Equal, y, m1);
        let bad = self.b.ins().bor(is_zero, is_m1);
        let safe = self.b.ins().select(bad, one, y);
        let q = self.b.ins().sdiv(x, safe);
        let neg = self.b.ins().ineg(x);
        let q = self.b.ins().select(is_m1, neg, q);
        self.b.ins().select(is_zero, zero, q)
    }

    /// Integer ops with many cases (pow, mod, shifts) call one runtime function on i64s.
    fn int_libcall(
        &mut self,
        op: BinaryOp,
        d: DType,
        x: Value,
        y: Value,
    ) -> Result<Value, LowerError> {
        let ty = self.b.func.dfg.value_type(x);
        let wx = self.extend64(d, x);
        let wy = self.extend64(d, y);
        let code = self.int_const(types::I32, super::libcalls::int_op_code(op, d) as i64);
        let r = self.call(Libcall::IntBinary, &[code, wx, wy])?;
        Ok(if ty == types::I64 {
            r
        } else {
            self.b.ins().ireduce(ty, r)
        })
    }

    fn extend64(&mut self, d: DType, x: Value) -> Value {
        let ty = self.b.func.dfg.value_type(x);
        if ty == types::I64 {
            x
        } else if unsigned(d) {
            self.b.ins().uextend(types::I64, x)
        } else {
            self.b.ins().sextend(types::I64, x)
        }
    }

    /// ONNX `Cast` from `from` to `to` (scalar), as the interpreter does it: through f64
    /// when either side is a float, saturating float-to-int, wrapping int-to-int.
    pub fn cast(&mut self, from: DType, to: DType, x: Value) -> Result<Value, LowerError> {
        let to_ty = clif_type(to)?;
        if from == to {
            return Ok(x);
        }
        if to == DType::Bool {
            return Ok(if from.is_float() {
                let ty = self.b.func.dfg.value_type(x);
                let zero = self.fconst(ty, 0.0);
                self.b.ins().fcmp(FloatCC::NotEqual, x, zero)
            } else {
                self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
            });
        }
        match (from.is_float(), to.is_float()) {
            (true, true) => Ok(match (from, to) {
                (DType::F32, DType::F64) => self.b.ins().fpromote(types::F64, x),
                _ => self.b.ins().fdemote(types::F32, x),
            }),
            (false, false) => {
                let (fw, tw) = (clif_type(from)?.bits(), to_ty.bits());
                Ok(if fw == tw {
                    x
                } else if fw > tw {
                    self.b.ins().ireduce(to_ty, x)
                } else if unsigned(from) {
                    self.b.ins().uextend(to_ty, x)
                } else {
                    self.b.ins().sextend(to_ty, x)
                })
            }
            (false, true) => {
                let w = self.extend64(from, x);
                let f = if unsigned(from) {
                    self.b.ins().fcvt_from_uint(types::F64, w)
                } else {
                    self.b.ins().fcvt_from_sint(types::F64, w)
                };
                Ok(if to == DType::F32 {
                    self.b.ins().fdemote(types::F32, f)
                } else {
                    f
                })
            }
            (true, false) => Ok(self.float_to_int(from, to, x)),
        }
    }

    /// Saturating float-to-int (`as` in Rust: NaN is 0).
    fn float_to_int(&mut self, from: DType, to: DType, x: Value) -> Value {
        let x = if from == DType::F32 {
            self.b.ins().fpromote(types::F64, x)
        } else {
            x
        };
        let to_ty = clif_type(to).expect("integer dtype");
        if to_ty.bits() >= 32 {
            return if unsigned(to) {
                self.b.ins().fcvt_to_uint_sat(to_ty, x)
            } else {
                self.b.ins().fcvt_to_sint_sat(to_ty, x)
            };
        }
        let (lo, hi) = crate::kernel::int_range(to);
        let wide = self.b.ins().fcvt_to_sint_sat(types::I32, x);
        let lo = self.int_const(types::I32, lo);
        let hi = self.int_const(types::I32, hi);
        let c = self.b.ins().smax(wide, lo);
        let c = self.b.ins().smin(c, hi);
        self.b.ins().ireduce(to_ty, c)
    }
}
