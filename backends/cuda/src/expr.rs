//! An [`Expr`] DAG for one element, as PTX: every node gets a register of its dtype's
//! class (f32, f64, a predicate for bool, and a 64-bit register for every integer type,
//! kept sign- or zero-extended from the type's width so wrapping matches the
//! interpreter's).
//!
//! IEEE operations are exact (`.rn`, which also stops ptxas from contracting a multiply
//! and an add into an FMA the interpreter does not do); transcendental functions use the
//! hardware approximations (`ex2`, `lg2`, `sin`, `cos`) with a few exact steps around them,
//! within the backend's tolerance of the reference interpreter.

use crate::cx::Cx;
use crate::half::{self, is_half, widen};
use crate::math;
use crate::ptx::{f32_imm, f64_imm, Class, Reg};
use crate::EmitError;
use kiln_ir::{BinaryOp, DType, UnaryOp};
use kiln_kernel::kernel::{int_range, Expr, ExprNode, Indirect, Scalar};

/// A computed value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Val {
    pub reg: Reg,
    pub dtype: DType,
}

/// What an expression sees besides memory: the loop index, a reduction's accumulator and
/// a row kernel's statistics.
pub(crate) struct Env<'a> {
    pub index: &'a [Reg],
    pub acc: Option<Val>,
    pub stats: &'a [Val],
}

/// The register class holding values of `d` (halves live in f32 registers, see `half`).
pub(crate) fn class(d: DType) -> Result<Class, EmitError> {
    match d {
        DType::F32 | DType::F16 | DType::BF16 => Ok(Class::F32),
        DType::F64 => Ok(Class::F64),
        DType::Bool => Ok(Class::Pred),
        _ => Ok(Class::B64),
    }
}

/// Emits `e` and returns its result.
pub(crate) fn emit(cx: &mut Cx, e: &Expr, env: &Env) -> Result<Val, EmitError> {
    emit_all(cx, e, env)?
        .pop()
        .ok_or_else(|| EmitError::Unsupported("an empty expression".into()))
}

/// Emits `e` and returns every node's value (a scatter's store reads its index nodes).
pub(crate) fn emit_all(cx: &mut Cx, e: &Expr, env: &Env) -> Result<Vec<Val>, EmitError> {
    let mut vals: Vec<Val> = Vec::with_capacity(e.nodes.len());
    for (node, &dtype) in e.nodes.iter().zip(&e.dtypes) {
        let v = node_value(cx, node, dtype, &vals, env)?;
        vals.push(v);
    }
    Ok(vals)
}

/// A constant of `dtype` in a fresh register.
pub(crate) fn constant_val(cx: &mut Cx, c: Scalar, dtype: DType) -> Result<Val, EmitError> {
    Ok(Val {
        reg: constant(cx, c, dtype)?,
        dtype,
    })
}

/// `x op y` for two values of one dtype, with the interpreter's semantics.
pub(crate) fn binary_val(cx: &mut Cx, op: BinaryOp, x: Val, y: Val) -> Result<Reg, EmitError> {
    binary(cx, op, x, y, x.dtype)
}

fn node_value(
    cx: &mut Cx,
    node: &ExprNode,
    dtype: DType,
    vals: &[Val],
    env: &Env,
) -> Result<Val, EmitError> {
    let reg = match node {
        ExprNode::Load(a) => {
            let element = cx.element(a, env.index)?;
            return if cx.is_iota(a.buf) {
                convert(
                    cx,
                    Val {
                        reg: element,
                        dtype: DType::I64,
                    },
                    dtype,
                )
            } else {
                load(cx, a.buf, element, dtype)
            };
        }
        ExprNode::Gather { access, indices } => {
            let mut element = cx.element(access, env.index)?;
            for term in indices {
                element = indirect(cx, element, term, vals[term.index].reg)?;
            }
            return load(cx, access.buf, element, dtype);
        }
        ExprNode::Const(c) => constant(cx, *c, dtype)?,
        ExprNode::Unary(u, a) => {
            let r = unary(cx, *u, widen(vals[*a]), widen_type(dtype))?;
            rounded(cx, r, dtype)
        }
        ExprNode::Binary(b, x, y) => {
            let (x, y) = (widen(vals[*x]), widen(vals[*y]));
            let r = binary(cx, *b, x, y, widen_type(dtype))?;
            rounded(cx, r, dtype)
        }
        ExprNode::Where(c, a, b) => select(cx, vals[*c].reg, vals[*a].reg, vals[*b].reg),
        ExprNode::Cast(a) => return convert(cx, vals[*a], dtype),
        ExprNode::Bitcast(a) => bitcast(cx, vals[*a], dtype)?,
        ExprNode::Acc => return env.acc.ok_or_else(|| missing("an accumulator")),
        ExprNode::Stat(k) => {
            return env
                .stats
                .get(*k)
                .copied()
                .ok_or_else(|| missing("a row statistic"))
        }
        ExprNode::Size(d) => {
            let v = cx.dim(d)?;
            let r = cx.e.reg(Class::B64);
            cx.e.op(format!("mov.s64 {r}, {v}"));
            r
        }
    };
    Ok(Val { reg, dtype })
}

/// The type half arithmetic computes in: f32 for the halves, else `d` itself.
fn widen_type(d: DType) -> DType {
    if is_half(d) {
        DType::F32
    } else {
        d
    }
}

/// An op's f32 result `r` rounded to its half type `d`; any other result as it is.
fn rounded(cx: &mut Cx, r: Reg, d: DType) -> Reg {
    if is_half(d) {
        half::round(cx, r, d)
    } else {
        r
    }
}

fn missing(what: &str) -> EmitError {
    EmitError::Unsupported(format!("{what} outside the kernel that provides it"))
}

/// Adds one data-dependent term to an element index: negative indices count from the
/// end, and an index still outside `0..len` leaves through the bad-index exit.
pub(crate) fn indirect(
    cx: &mut Cx,
    element: Reg,
    term: &Indirect,
    index: Reg,
) -> Result<Reg, EmitError> {
    let (len, stride) = (cx.dim(&term.len)?, cx.dim(&term.stride)?);
    let e = &mut cx.e;
    let (neg, wrapped, i) = (e.reg(Class::Pred), e.reg(Class::B64), e.reg(Class::B64));
    e.op(format!("setp.lt.s64 {neg}, {index}, 0"));
    e.op(format!("add.s64 {wrapped}, {index}, {len}"));
    e.op(format!("selp.s64 {i}, {wrapped}, {index}, {neg}"));
    let (low, high, bad) = (e.reg(Class::Pred), e.reg(Class::Pred), e.reg(Class::Pred));
    e.op(format!("setp.lt.s64 {low}, {i}, 0"));
    e.op(format!("setp.ge.s64 {high}, {i}, {len}"));
    e.op(format!("or.pred {bad}, {low}, {high}"));
    cx.exit_if(bad);
    let out = cx.e.reg(Class::B64);
    cx.e.op(format!("mad.lo.s64 {out}, {i}, {stride}, {element}"));
    Ok(out)
}

/// The PTX memory type of `d` and whether it goes through a 32-bit register.
fn mem_type(d: DType) -> Result<(&'static str, bool), EmitError> {
    Ok(match d {
        DType::F32 => ("f32", false),
        DType::F64 => ("f64", false),
        DType::I64 => ("s64", false),
        DType::U64 => ("u64", false),
        DType::I32 => ("s32", true),
        DType::U32 => ("u32", true),
        DType::I16 => ("s16", true),
        DType::U16 => ("u16", true),
        DType::I8 => ("s8", true),
        DType::U8 | DType::Bool => ("u8", true),
        DType::F16 | DType::BF16 => return Err(EmitError::Unsupported(format!("{d} memory"))),
    })
}

/// Loads element `element` of `buf` as a value of `dtype` (the buffer's).
pub(crate) fn load(cx: &mut Cx, buf: usize, element: Reg, dtype: DType) -> Result<Val, EmitError> {
    let addr = cx.address(buf, element);
    if is_half(dtype) {
        let reg = half::load(cx, addr, dtype);
        return Ok(Val { reg, dtype });
    }
    let (ty, narrow) = mem_type(dtype)?;
    let e = &mut cx.e;
    let reg = if !narrow {
        let r = e.reg(class(dtype)?);
        e.op(format!("ld.global.{ty} {r}, [{addr}]"));
        r
    } else {
        let w = e.reg(Class::B32);
        e.op(format!("ld.global.{ty} {w}, [{addr}]"));
        if dtype == DType::Bool {
            let p = e.reg(Class::Pred);
            e.op(format!("setp.ne.u32 {p}, {w}, 0"));
            p
        } else {
            let r = e.reg(Class::B64);
            let ext = if is_signed(dtype) {
                "cvt.s64.s32"
            } else {
                "cvt.u64.u32"
            };
            e.op(format!("{ext} {r}, {w}"));
            r
        }
    };
    Ok(Val { reg, dtype })
}

/// Stores `v` at element `element` of `buf`.
pub(crate) fn store(cx: &mut Cx, buf: usize, element: Reg, v: Val) -> Result<(), EmitError> {
    let addr = cx.address(buf, element);
    if is_half(v.dtype) {
        half::store(cx, addr, v.reg, v.dtype);
        return Ok(());
    }
    let (ty, narrow) = mem_type(v.dtype)?;
    let e = &mut cx.e;
    if !narrow {
        e.op(format!("st.global.{ty} [{addr}], {}", v.reg));
        return Ok(());
    }
    let w = e.reg(Class::B32);
    if v.dtype == DType::Bool {
        e.op(format!("selp.u32 {w}, 1, 0, {}", v.reg));
    } else {
        e.op(format!("cvt.u32.u64 {w}, {}", v.reg));
    }
    e.op(format!("st.global.{ty} [{addr}], {w}"));
    Ok(())
}

fn is_signed(d: DType) -> bool {
    matches!(d, DType::I8 | DType::I16 | DType::I32 | DType::I64)
}

fn constant(cx: &mut Cx, c: Scalar, dtype: DType) -> Result<Reg, EmitError> {
    let e = &mut cx.e;
    let r = e.reg(class(dtype)?);
    let value = |c: Scalar| match c {
        Scalar::Float(f) => f,
        Scalar::Int(i) => i as f64,
    };
    match (class(dtype)?, c) {
        (Class::F32, c) if is_half(dtype) => {
            e.op(format!("mov.f32 {r}, {}", half::constant(value(c), dtype)))
        }
        (Class::F32, c) => e.op(format!("mov.f32 {r}, {}", f32_imm(value(c) as f32))),
        (Class::F64, c) => e.op(format!("mov.f64 {r}, {}", f64_imm(value(c)))),
        (Class::Pred, c) => {
            let w = e.reg(Class::B32);
            e.op(format!("mov.u32 {w}, {}", u32::from(value(c) != 0.0)));
            e.op(format!("setp.ne.u32 {r}, {w}, 0"));
        }
        (_, Scalar::Int(i)) => e.op(format!("mov.s64 {r}, {i}")),
        (_, Scalar::Float(f)) => e.op(format!("mov.s64 {r}, {}", f as i64)),
    }
    Ok(r)
}

/// Re-extends an integer from its type's width after a wrapping 64-bit operation.
pub(crate) fn wrap(cx: &mut Cx, r: Reg, d: DType) -> Reg {
    let bits = 8 * d.size_bytes() as u32;
    if bits >= 64 || d == DType::Bool {
        return r;
    }
    let e = &mut cx.e;
    let out = e.reg(Class::B64);
    if is_signed(d) {
        let t = e.reg(Class::B64);
        e.op(format!("shl.b64 {t}, {r}, {}", 64 - bits));
        e.op(format!("shr.s64 {out}, {t}, {}", 64 - bits));
    } else {
        e.op(format!("and.b64 {out}, {r}, {}", (1u64 << bits) - 1));
    }
    out
}

/// The PTX type suffix for integer arithmetic and comparisons on `d`.
fn int_ty(d: DType) -> &'static str {
    if d == DType::U64 {
        "u64"
    } else {
        "s64"
    }
}

fn unary(cx: &mut Cx, u: UnaryOp, a: Val, dtype: DType) -> Result<Reg, EmitError> {
    match class(a.dtype)? {
        Class::F32 | Class::F64 => math::float_unary(cx, u, a),
        Class::Pred if u == UnaryOp::Not => {
            let r = cx.e.reg(Class::Pred);
            cx.e.op(format!("not.pred {r}, {}", a.reg));
            Ok(r)
        }
        Class::B64 => int_unary(cx, u, a, dtype),
        _ => Err(unsupported_unary(u, a.dtype)),
    }
}

pub(crate) fn unsupported_unary(u: UnaryOp, d: DType) -> EmitError {
    EmitError::Unsupported(format!("{u:?} on {d}"))
}

fn int_unary(cx: &mut Cx, u: UnaryOp, a: Val, dtype: DType) -> Result<Reg, EmitError> {
    use UnaryOp::*;
    let (x, ty) = (a.reg, int_ty(a.dtype));
    let unsigned = !is_signed(a.dtype);
    let e = &mut cx.e;
    let r = e.reg(Class::B64);
    match u {
        Floor | Ceil | Round => return Ok(x),
        Abs | Relu if unsigned => return Ok(x),
        Abs => e.op(format!("abs.s64 {r}, {x}")),
        Neg => e.op(format!("neg.s64 {r}, {x}")),
        Relu => e.op(format!("max.s64 {r}, {x}, 0")),
        BitNot => e.op(format!("not.b64 {r}, {x}")),
        Sign => {
            let (pos, neg, t) = (e.reg(Class::Pred), e.reg(Class::Pred), e.reg(Class::B64));
            e.op(format!("setp.gt.{ty} {pos}, {x}, 0"));
            e.op(format!("setp.lt.{ty} {neg}, {x}, 0"));
            e.op(format!("selp.s64 {t}, -1, 0, {neg}"));
            e.op(format!("selp.s64 {r}, 1, {t}, {pos}"));
        }
        IsNan | IsInf | IsPosInf | IsNegInf => {
            let p = e.reg(Class::Pred);
            e.op(format!("setp.ne.s64 {p}, {x}, {x}"));
            return Ok(p);
        }
        _ => return Err(unsupported_unary(u, a.dtype)),
    }
    Ok(wrap(cx, r, dtype))
}

fn binary(cx: &mut Cx, b: BinaryOp, x: Val, y: Val, dtype: DType) -> Result<Reg, EmitError> {
    match class(x.dtype)? {
        Class::F32 | Class::F64 => math::float_binary(cx, b, x, y),
        Class::Pred => bool_binary(cx, b, x.reg, y.reg),
        _ => int_binary(cx, b, x, y, dtype),
    }
}

fn unsupported_binary(b: BinaryOp, d: DType) -> EmitError {
    EmitError::Unsupported(format!("{b:?} on {d}"))
}

fn bool_binary(cx: &mut Cx, b: BinaryOp, x: Reg, y: Reg) -> Result<Reg, EmitError> {
    use BinaryOp::*;
    let e = &mut cx.e;
    let r = e.reg(Class::Pred);
    let op = match b {
        And | BitAnd | Min => "and",
        Or | BitOr | Max => "or",
        Xor | BitXor => "xor",
        Equal => {
            let t = e.reg(Class::Pred);
            e.op(format!("xor.pred {t}, {x}, {y}"));
            e.op(format!("not.pred {r}, {t}"));
            return Ok(r);
        }
        _ => return Err(unsupported_binary(b, DType::Bool)),
    };
    e.op(format!("{op}.pred {r}, {x}, {y}"));
    Ok(r)
}

fn int_binary(cx: &mut Cx, b: BinaryOp, x: Val, y: Val, dtype: DType) -> Result<Reg, EmitError> {
    use BinaryOp::*;
    let (a, c, ty) = (x.reg, y.reg, int_ty(x.dtype));
    if let Some(cmp) = comparison(b) {
        let p = cx.e.reg(Class::Pred);
        cx.e.op(format!("setp.{cmp}.{ty} {p}, {a}, {c}"));
        return Ok(p);
    }
    let e = &mut cx.e;
    let r = e.reg(Class::B64);
    match b {
        Add => e.op(format!("add.s64 {r}, {a}, {c}")),
        Sub => e.op(format!("sub.s64 {r}, {a}, {c}")),
        Mul => e.op(format!("mul.lo.s64 {r}, {a}, {c}")),
        Min => e.op(format!("min.{ty} {r}, {a}, {c}")),
        Max => e.op(format!("max.{ty} {r}, {a}, {c}")),
        BitAnd => e.op(format!("and.b64 {r}, {a}, {c}")),
        BitOr => e.op(format!("or.b64 {r}, {a}, {c}")),
        BitXor => e.op(format!("xor.b64 {r}, {a}, {c}")),
        Div | Mod | Fmod => return division(cx, b, x, y, dtype),
        ShiftLeft | ShiftRight => return shift(cx, b, a, c, dtype),
        Pow => return Ok(int_pow(cx, a, c, dtype)),
        _ => return Err(unsupported_binary(b, x.dtype)),
    }
    Ok(wrap(cx, r, dtype))
}

/// The PTX comparison of a comparison op.
pub(crate) fn comparison(b: BinaryOp) -> Option<&'static str> {
    use BinaryOp::*;
    Some(match b {
        Equal => "eq",
        Less => "lt",
        LessOrEqual => "le",
        Greater => "gt",
        GreaterOrEqual => "ge",
        _ => return None,
    })
}

/// Integer division and remainders as the interpreter defines them: a zero divisor gives
/// 0, `MIN / -1` wraps (PTX leaves both undefined, so neither reaches `div`).
fn division(cx: &mut Cx, b: BinaryOp, x: Val, y: Val, dtype: DType) -> Result<Reg, EmitError> {
    let (a, c, ty) = (x.reg, y.reg, int_ty(x.dtype));
    let e = &mut cx.e;
    let (zero, minus1, unsafe_, safe) = (
        e.reg(Class::Pred),
        e.reg(Class::Pred),
        e.reg(Class::Pred),
        e.reg(Class::B64),
    );
    e.op(format!("setp.eq.s64 {zero}, {c}, 0"));
    if ty == "s64" {
        e.op(format!("setp.eq.s64 {minus1}, {c}, -1"));
    } else {
        e.op(format!("setp.ne.s64 {minus1}, {c}, {c}"));
    }
    e.op(format!("or.pred {unsafe_}, {zero}, {minus1}"));
    e.op(format!("selp.s64 {safe}, 1, {c}, {unsafe_}"));
    let (q, rem) = (e.reg(Class::B64), e.reg(Class::B64));
    e.op(format!("div.{ty} {q}, {a}, {safe}"));
    e.op(format!("rem.{ty} {rem}, {a}, {safe}"));
    // Dividing by -1 negates (wrapping) and leaves no remainder.
    let (neg, q1, r1) = (e.reg(Class::B64), e.reg(Class::B64), e.reg(Class::B64));
    e.op(format!("neg.s64 {neg}, {a}"));
    e.op(format!("selp.s64 {q1}, {neg}, {q}, {minus1}"));
    e.op(format!("selp.s64 {r1}, 0, {rem}, {minus1}"));
    let result = match b {
        BinaryOp::Div => q1,
        BinaryOp::Fmod => r1,
        _ => {
            // Python's sign: a non-zero remainder whose sign differs from the divisor's
            // moves by one divisor.
            let (rn, cn, differ, nz, fix, moved, m) = (
                e.reg(Class::Pred),
                e.reg(Class::Pred),
                e.reg(Class::Pred),
                e.reg(Class::Pred),
                e.reg(Class::Pred),
                e.reg(Class::B64),
                e.reg(Class::B64),
            );
            e.op(format!("setp.lt.s64 {rn}, {r1}, 0"));
            e.op(format!("setp.lt.s64 {cn}, {c}, 0"));
            e.op(format!("xor.pred {differ}, {rn}, {cn}"));
            e.op(format!("setp.ne.s64 {nz}, {r1}, 0"));
            e.op(format!("and.pred {fix}, {differ}, {nz}"));
            e.op(format!("add.s64 {moved}, {r1}, {c}"));
            e.op(format!("selp.s64 {m}, {moved}, {r1}, {fix}"));
            m
        }
    };
    let out = e.reg(Class::B64);
    e.op(format!("selp.s64 {out}, 0, {result}, {zero}"));
    Ok(wrap(cx, out, dtype))
}

/// `x^e` by squaring with wrapping products (the low bits of a 64-bit product are the
/// narrower type's product); a negative exponent gives 0 unless |x| = 1, as the
/// interpreter's `int_pow` defines it.
fn int_pow(cx: &mut Cx, x: Reg, e: Reg, dtype: DType) -> Reg {
    let b = &mut cx.e;
    let [acc, base, n, bit] = [0; 4].map(|_| b.reg(Class::B64));
    b.op(format!("mov.s64 {acc}, 1"));
    b.op(format!("mov.s64 {base}, {x}"));
    b.op(format!("mov.s64 {n}, {e}"));
    let (top, end) = (b.label(), b.label());
    let (done, odd) = (b.reg(Class::Pred), b.reg(Class::Pred));
    b.place(&top);
    b.op(format!("setp.le.s64 {done}, {n}, 0"));
    b.op(format!("@{done} bra {end}"));
    b.op(format!("and.b64 {bit}, {n}, 1"));
    b.op(format!("setp.ne.s64 {odd}, {bit}, 0"));
    b.op(format!("@{odd} mul.lo.s64 {acc}, {acc}, {base}"));
    b.op(format!("mul.lo.s64 {base}, {base}, {base}"));
    b.op(format!("shr.s64 {n}, {n}, 1"));
    b.op(format!("bra.uni {top}"));
    b.place(&end);
    // Negative exponents: 1 for x = 1, ±1 for x = -1 by parity, else 0.
    let [neg, one, minus, even] = [0; 4].map(|_| b.reg(Class::Pred));
    let [parity, m1, small, r] = [0; 4].map(|_| b.reg(Class::B64));
    b.op(format!("setp.lt.s64 {neg}, {e}, 0"));
    b.op(format!("setp.eq.s64 {one}, {x}, 1"));
    b.op(format!("setp.eq.s64 {minus}, {x}, -1"));
    b.op(format!("and.b64 {parity}, {e}, 1"));
    b.op(format!("setp.eq.s64 {even}, {parity}, 0"));
    b.op(format!("selp.s64 {m1}, 1, -1, {even}"));
    b.op(format!("selp.s64 {small}, {m1}, 0, {minus}"));
    b.op(format!("selp.s64 {small}, 1, {small}, {one}"));
    b.op(format!("selp.s64 {r}, {small}, {acc}, {neg}"));
    wrap(cx, r, dtype)
}

/// Shifts by amounts outside `0..bits` give 0, as the interpreter defines them.
fn shift(cx: &mut Cx, b: BinaryOp, a: Reg, c: Reg, dtype: DType) -> Result<Reg, EmitError> {
    let bits = 8 * dtype.size_bytes();
    let e = &mut cx.e;
    let (amount, shifted, low, high, out_of_range, r) = (
        e.reg(Class::B32),
        e.reg(Class::B64),
        e.reg(Class::Pred),
        e.reg(Class::Pred),
        e.reg(Class::Pred),
        e.reg(Class::B64),
    );
    e.op(format!("cvt.u32.u64 {amount}, {c}"));
    let op = if b == BinaryOp::ShiftLeft {
        "shl.b64"
    } else {
        "shr.u64"
    };
    e.op(format!("{op} {shifted}, {a}, {amount}"));
    e.op(format!("setp.lt.s64 {low}, {c}, 0"));
    e.op(format!("setp.ge.s64 {high}, {c}, {bits}"));
    e.op(format!("or.pred {out_of_range}, {low}, {high}"));
    e.op(format!("selp.s64 {r}, 0, {shifted}, {out_of_range}"));
    Ok(wrap(cx, r, dtype))
}

/// `c ? a : b` for values of one class.
pub(crate) fn select(cx: &mut Cx, c: Reg, a: Reg, b: Reg) -> Reg {
    let e = &mut cx.e;
    let r = e.reg(a.class);
    match a.class {
        Class::F32 => e.op(format!("selp.f32 {r}, {a}, {b}, {c}")),
        Class::F64 => e.op(format!("selp.f64 {r}, {a}, {b}, {c}")),
        Class::B64 => e.op(format!("selp.b64 {r}, {a}, {b}, {c}")),
        Class::B32 => e.op(format!("selp.b32 {r}, {a}, {b}, {c}")),
        Class::B16 => e.op(format!("selp.b16 {r}, {a}, {b}, {c}")),
        Class::Pred => {
            let (t, nc, f) = (e.reg(Class::Pred), e.reg(Class::Pred), e.reg(Class::Pred));
            e.op(format!("and.pred {t}, {c}, {a}"));
            e.op(format!("not.pred {nc}, {c}"));
            e.op(format!("and.pred {f}, {nc}, {b}"));
            e.op(format!("or.pred {r}, {t}, {f}"));
        }
    }
    r
}

/// Converts with ONNX `Cast` semantics: floats truncate toward zero into integers,
/// saturating, NaN to 0; integers wrap; non-zero (NaN included) is `true`.
pub(crate) fn convert(cx: &mut Cx, v: Val, to: DType) -> Result<Val, EmitError> {
    if (is_half(v.dtype) || is_half(to)) && v.dtype != to {
        return convert_half(cx, v, to);
    }
    let (from_class, to_class) = (class(v.dtype)?, class(to)?);
    let x = v.reg;
    let reg = match (from_class, to_class) {
        _ if v.dtype == to => x,
        (Class::F32, Class::F64) => one(cx, Class::F64, |r| format!("cvt.f64.f32 {r}, {x}")),
        (Class::F64, Class::F32) => one(cx, Class::F32, |r| format!("cvt.rn.f32.f64 {r}, {x}")),
        (Class::F32 | Class::F64, Class::B64) => {
            let s = if from_class == Class::F32 {
                "f32"
            } else {
                "f64"
            };
            let t = if to == DType::U64 { "u64" } else { "s64" };
            let r = one(cx, Class::B64, |r| format!("cvt.rzi.{t}.{s} {r}, {x}"));
            saturate(cx, r, to)
        }
        (Class::F32 | Class::F64, Class::Pred) => {
            let s = if from_class == Class::F32 {
                "f32"
            } else {
                "f64"
            };
            let zero = if s == "f32" {
                f32_imm(0.0)
            } else {
                f64_imm(0.0)
            };
            one(cx, Class::Pred, |r| {
                format!("setp.neu.{s} {r}, {x}, {zero}")
            })
        }
        (Class::B64, Class::F32 | Class::F64) => {
            let t = if to_class == Class::F32 { "f32" } else { "f64" };
            let s = int_ty(v.dtype);
            one(cx, to_class, |r| format!("cvt.rn.{t}.{s} {r}, {x}"))
        }
        (Class::B64, Class::B64) => wrap(cx, x, to),
        (Class::B64, Class::Pred) => one(cx, Class::Pred, |r| format!("setp.ne.s64 {r}, {x}, 0")),
        (Class::Pred, Class::B64) => one(cx, Class::B64, |r| format!("selp.s64 {r}, 1, 0, {x}")),
        (Class::Pred, Class::F32) => one(cx, Class::F32, |r| {
            format!("selp.f32 {r}, {}, {}, {x}", f32_imm(1.0), f32_imm(0.0))
        }),
        (Class::Pred, Class::F64) => one(cx, Class::F64, |r| {
            format!("selp.f64 {r}, {}, {}, {x}", f64_imm(1.0), f64_imm(0.0))
        }),
        _ => return Err(EmitError::Unsupported(format!("cast {} to {to}", v.dtype))),
    };
    Ok(Val { reg, dtype: to })
}

/// A cast from or to a half type, as the interpreter's: through the exact value (a half's
/// f32, an integer's nearest f64), rounded once.
fn convert_half(cx: &mut Cx, v: Val, to: DType) -> Result<Val, EmitError> {
    if is_half(v.dtype) && !is_half(to) {
        return convert(cx, widen(v), to);
    }
    let reg = match class(v.dtype)? {
        Class::F32 => half::round(cx, v.reg, to),
        Class::F64 => half::from_f64(cx, v.reg, to),
        Class::B64 => {
            let wide = convert(cx, v, DType::F64)?;
            half::from_f64(cx, wide.reg, to)
        }
        _ => convert(cx, v, DType::F32)?.reg,
    };
    Ok(Val { reg, dtype: to })
}

fn one(cx: &mut Cx, class: Class, text: impl FnOnce(Reg) -> String) -> Reg {
    let r = cx.e.reg(class);
    cx.e.op(text(r));
    r
}

/// Clamps a converted integer into `to`'s range (PTX saturates to 64 bits only).
fn saturate(cx: &mut Cx, r: Reg, to: DType) -> Reg {
    if matches!(to, DType::I64 | DType::U64) {
        return r;
    }
    let (lo, hi) = int_range(to);
    let e = &mut cx.e;
    let (a, b) = (e.reg(Class::B64), e.reg(Class::B64));
    e.op(format!("max.s64 {a}, {r}, {lo}"));
    e.op(format!("min.s64 {b}, {a}, {hi}"));
    b
}

fn bitcast(cx: &mut Cx, v: Val, to: DType) -> Result<Reg, EmitError> {
    let x = v.reg;
    let e = &mut cx.e;
    Ok(match (v.dtype, to) {
        (DType::F16 | DType::BF16, DType::I16 | DType::U16) => half::to_bits(cx, x, v.dtype, to),
        (DType::I16 | DType::U16, DType::F16 | DType::BF16) => half::from_bits(cx, x, to),
        (DType::F32, DType::I32 | DType::U32) => {
            let w = e.reg(Class::B32);
            e.op(format!("mov.b32 {w}, {x}"));
            let r = e.reg(Class::B64);
            let ext = if to == DType::I32 {
                "cvt.s64.s32"
            } else {
                "cvt.u64.u32"
            };
            e.op(format!("{ext} {r}, {w}"));
            r
        }
        (DType::I32 | DType::U32, DType::F32) => {
            let w = e.reg(Class::B32);
            e.op(format!("cvt.u32.u64 {w}, {x}"));
            let r = e.reg(Class::F32);
            e.op(format!("mov.b32 {r}, {w}"));
            r
        }
        (DType::F64, DType::I64 | DType::U64) => {
            one(cx, Class::B64, |r| format!("mov.b64 {r}, {x}"))
        }
        (DType::I64 | DType::U64, DType::F64) => {
            one(cx, Class::F64, |r| format!("mov.b64 {r}, {x}"))
        }
        // Same-width integers: the bits are the register's low bits, re-extended.
        (from, to)
            if class(from)? == Class::B64
                && class(to)? == Class::B64
                && from.size_bytes() == to.size_bytes() =>
        {
            wrap(cx, x, to)
        }
        (from, to) => return Err(EmitError::Unsupported(format!("bitcast {from} to {to}"))),
    })
}
