//! Float operations: the IEEE ones as single PTX instructions, the transcendental ones
//! from the hardware's `ex2`/`lg2`/`sin`/`cos` approximations, following the interpreter's
//! formulas (the same branches for sigmoid, the same order of products for GELU).

use crate::cx::Cx;
use crate::expr::{comparison, select, unsupported_unary, Val};
use crate::ptx::{f32_imm, f64_imm, Class, Reg};
use crate::EmitError;
use kiln_ir::{BinaryOp, DType, UnaryOp};

mod functions;

/// Instruction emission for one float width.
struct F<'c, 'p> {
    cx: &'c mut Cx<'p>,
    ty: &'static str,
    class: Class,
}

impl F<'_, '_> {
    fn new<'c, 'p>(cx: &'c mut Cx<'p>, d: DType) -> F<'c, 'p> {
        let (ty, class) = if d == DType::F64 {
            ("f64", Class::F64)
        } else {
            ("f32", Class::F32)
        };
        F { cx, ty, class }
    }

    fn imm(&self, v: f64) -> String {
        if self.class == Class::F64 {
            f64_imm(v)
        } else {
            f32_imm(v as f32)
        }
    }

    fn c(&mut self, v: f64) -> Reg {
        let imm = self.imm(v);
        let r = self.cx.e.reg(self.class);
        self.cx.e.op(format!("mov.{} {r}, {imm}", self.ty));
        r
    }

    /// `op.TY d, a…` with the operands given.
    fn op(&mut self, op: &str, args: &[Reg]) -> Reg {
        let r = self.cx.e.reg(self.class);
        let args: Vec<String> = args.iter().map(Reg::to_string).collect();
        self.cx
            .e
            .op(format!("{op}.{} {r}, {}", self.ty, args.join(", ")));
        r
    }

    fn add(&mut self, a: Reg, b: Reg) -> Reg {
        self.op("add.rn", &[a, b])
    }
    fn sub(&mut self, a: Reg, b: Reg) -> Reg {
        self.op("sub.rn", &[a, b])
    }
    fn mul(&mut self, a: Reg, b: Reg) -> Reg {
        self.op("mul.rn", &[a, b])
    }
    fn div(&mut self, a: Reg, b: Reg) -> Reg {
        self.op("div.rn", &[a, b])
    }

    /// Rounds to an integral value in the same type (`rmi` floor, `rpi` ceil, `rni` to
    /// nearest even).
    fn round(&mut self, mode: &str, x: Reg) -> Reg {
        let r = self.cx.e.reg(self.class);
        self.cx
            .e
            .op(format!("cvt.{mode}.{0}.{0} {r}, {x}", self.ty));
        r
    }

    fn setp(&mut self, cmp: &str, a: Reg, b: Reg) -> Reg {
        let p = self.cx.e.reg(Class::Pred);
        self.cx
            .e
            .op(format!("setp.{cmp}.{} {p}, {a}, {b}", self.ty));
        p
    }

    fn f32_only(&self, u: UnaryOp) -> Result<(), EmitError> {
        if self.class == Class::F64 {
            Err(unsupported_unary(u, DType::F64))
        } else {
            Ok(())
        }
    }

    /// `eˣ`: `2^(x·log2 e)` in f32, range reduction and a series in f64.
    fn exp(&mut self, x: Reg) -> Reg {
        if self.class == Class::F64 {
            return self.exp64(x);
        }
        let k = self.c(std::f64::consts::LOG2_E);
        let t = self.mul(x, k);
        self.op("ex2.approx", &[t])
    }

    /// `1 / (1 + e⁻ˣ)` for x ≥ 0, `eˣ / (1 + eˣ)` below, as the interpreter branches.
    fn sigmoid(&mut self, x: Reg) -> Reg {
        let (one, zero) = (self.c(1.0), self.c(0.0));
        let nx = self.op("neg", &[x]);
        let en = self.exp(nx);
        let dn = self.add(one, en);
        let pos = self.div(one, dn);
        let ep = self.exp(x);
        let dp = self.add(one, ep);
        let neg = self.div(ep, dp);
        let ge = self.setp("ge", x, zero);
        select(self.cx, ge, pos, neg)
    }

    /// `tanh x = sign(x) · (1 - e^(-2|x|)) / (1 + e^(-2|x|))`, which neither overflows nor
    /// loses the relative precision of large arguments; below |x| = 1/8, where `1 - e^…`
    /// cancels, its Taylor series (4 terms in f32, 8 in f64: the first dropped term is
    /// under 2e-9 and 2e-18 of the result).
    fn tanh(&mut self, x: Reg) -> Reg {
        let a = self.op("abs", &[x]);
        let k = self.c(-2.0 * std::f64::consts::LOG2_E);
        let t = self.mul(a, k);
        let e = self.exp2(t);
        let one = self.c(1.0);
        let (n, d) = (self.sub(one, e), self.add(one, e));
        let q = self.div(n, d);
        // PTX's copysign takes the sign from its first operand.
        let large = self.op("copysign", &[x, q]);
        const SERIES: [f64; 8] = [
            1.0,
            -1.0 / 3.0,
            2.0 / 15.0,
            -17.0 / 315.0,
            62.0 / 2835.0,
            -1382.0 / 155_925.0,
            21_844.0 / 6_081_075.0,
            -929_569.0 / 638_512_875.0,
        ];
        let terms = if self.class == Class::F64 { 8 } else { 4 };
        let x2 = self.mul(x, x);
        let mut p = self.c(SERIES[terms - 1]);
        for &c in SERIES[..terms - 1].iter().rev() {
            let m = self.mul(p, x2);
            let c = self.c(c);
            p = self.add(m, c);
        }
        let small = self.mul(p, x);
        let eighth = self.c(0.125);
        let is_small = self.setp("lt", a, eighth);
        select(self.cx, is_small, small, large)
    }

    /// erf by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7), odd in x.
    fn erf(&mut self, x: Reg) -> Reg {
        const P: f64 = 0.327_591_1;
        const A: [f64; 5] = [
            0.254_829_592,
            -0.284_496_736,
            1.421_413_741,
            -1.453_152_027,
            1.061_405_429,
        ];
        let a = self.op("abs", &[x]);
        let (p, one) = (self.c(P), self.c(1.0));
        let pa = self.mul(p, a);
        let d = self.add(one, pa);
        let t = self.div(one, d);
        let mut poly = self.c(A[4]);
        for &coef in A[..4].iter().rev() {
            let k = self.c(coef);
            let m = self.mul(poly, t);
            poly = self.add(m, k);
        }
        poly = self.mul(poly, t);
        let a2 = self.mul(a, a);
        let na2 = self.op("neg", &[a2]);
        let e = self.exp(na2);
        let pe = self.mul(poly, e);
        let y = self.sub(one, pe);
        self.op("copysign", &[x, y])
    }
}

impl F<'_, '_> {
    /// C's `fmod`, exactly: binary long division of |x| by |y|, each step a subtraction
    /// that Sterbenz's lemma makes exact (`t ≤ r < 2t`), at most one step per binade
    /// between them. NaN for a zero divisor or an infinite or NaN dividend; |x| itself
    /// below |y| (an infinite divisor included). The sign is the dividend's.
    fn fmod(&mut self, x: Reg, y: Reg) -> Reg {
        let (a, b) = (self.op("abs", &[x]), self.op("abs", &[y]));
        let (r, t) = (self.cx.e.reg(self.class), self.cx.e.reg(self.class));
        let ty = self.ty;
        let e = &mut self.cx.e;
        e.op(format!("mov.{ty} {r}, {a}"));
        e.op(format!("mov.{ty} {t}, {b}"));
        let (grow, shrink, done) = (e.label(), e.label(), e.label());
        // Skip the division when |x| < |y| or either is not finite or y is 0.
        let (inf, zero) = (self.c(f64::INFINITY), self.c(0.0));
        let (lt, a_inf, b_zero) = (
            self.setp("ltu", a, b),
            self.setp("equ", a, inf),
            self.setp("eq", b, zero),
        );
        let e = &mut self.cx.e;
        let skip = e.reg(Class::Pred);
        e.op(format!("or.pred {skip}, {lt}, {a_inf}"));
        e.op(format!("or.pred {skip}, {skip}, {b_zero}"));
        e.op(format!("@{skip} bra {done}"));
        // Grow t to the largest b·2^k at most r.
        e.place(&grow);
        let half = self.c(0.5);
        let rh = self.mul(r, half);
        let more = self.setp("le", t, rh);
        let two = self.c(2.0);
        let t2 = self.mul(t, two);
        let e = &mut self.cx.e;
        e.op(format!("@!{more} bra {shrink}"));
        e.op(format!("mov.{ty} {t}, {t2}"));
        e.op(format!("bra.uni {grow}"));
        e.place(&shrink);
        let ge = self.setp("ge", r, t);
        let diff = self.sub(r, t);
        let e = &mut self.cx.e;
        e.op(format!("@{ge} mov.{ty} {r}, {diff}"));
        let at_b = self.setp("eq", t, b);
        let th = self.mul(t, half);
        let e = &mut self.cx.e;
        e.op(format!("@{at_b} bra {done}"));
        e.op(format!("mov.{ty} {t}, {th}"));
        e.op(format!("bra.uni {shrink}"));
        e.place(&done);
        // The special cases: NaN for y = 0, an infinite x, or a NaN anywhere.
        let e = &mut self.cx.e;
        let (bad, nan_in) = (e.reg(Class::Pred), self.setp("nan", x, y));
        let e = &mut self.cx.e;
        e.op(format!("or.pred {bad}, {a_inf}, {b_zero}"));
        e.op(format!("or.pred {bad}, {bad}, {nan_in}"));
        let nan = self.c(f64::NAN);
        let r = select(self.cx, bad, nan, r);
        self.op("copysign", &[x, r])
    }

    /// Python's `%` from `fmod`: a non-zero remainder whose sign differs from the divisor's
    /// moves by one divisor.
    fn python_mod(&mut self, r: Reg, y: Reg) -> Reg {
        let zero = self.c(0.0);
        let (rn, yn, nz) = (
            self.setp("lt", r, zero),
            self.setp("lt", y, zero),
            self.setp("ne", r, zero),
        );
        let e = &mut self.cx.e;
        let (differ, fix) = (e.reg(Class::Pred), e.reg(Class::Pred));
        e.op(format!("xor.pred {differ}, {rn}, {yn}"));
        e.op(format!("and.pred {fix}, {differ}, {nz}"));
        let moved = self.add(r, y);
        select(self.cx, fix, moved, r)
    }

    /// Whether the sign bit of `x` is set (negative numbers, -0 and negative NaNs).
    fn sign_bit(&mut self, x: Reg) -> Reg {
        let wide = self.class == Class::F64;
        let e = &mut self.cx.e;
        let bits = e.reg(if wide { Class::B64 } else { Class::B32 });
        let p = e.reg(Class::Pred);
        let (w, s) = if wide { ("b64", "s64") } else { ("b32", "s32") };
        e.op(format!("mov.{w} {bits}, {x}"));
        e.op(format!("setp.lt.{s} {p}, {bits}, 0"));
        p
    }

    /// `x^y` as `2^(y · log2|x|)`, with `powf`'s special cases: `x^0 = 1` and `1^y = 1`
    /// (NaN included), a negative base only to an integral power (its sign by the power's
    /// parity), NaN otherwise.
    fn pow(&mut self, x: Reg, y: Reg) -> Reg {
        let a = self.op("abs", &[x]);
        let l = self.log2(a);
        let t = self.mul(y, l);
        let r = self.exp2(t);
        let yi = self.round("rni", y);
        let integral = self.setp("eq", yi, y);
        let half = self.c(0.5);
        let h = self.mul(y, half);
        let hf = self.round("rmi", h);
        let odd_half = self.setp("ne", hf, h);
        let negative = self.sign_bit(x);
        let e = &mut self.cx.e;
        let (odd, flip, bad) = (e.reg(Class::Pred), e.reg(Class::Pred), e.reg(Class::Pred));
        e.op(format!("and.pred {odd}, {integral}, {odd_half}"));
        e.op(format!("and.pred {flip}, {negative}, {odd}"));
        let nr = self.op("neg", &[r]);
        let signed = select(self.cx, flip, nr, r);
        // A negative finite base needs an integral power (-∞ to any power is 0 or ∞).
        let (zero, ninf) = (self.c(0.0), self.c(f64::NEG_INFINITY));
        let (below, finite) = (self.setp("lt", x, zero), self.setp("gt", x, ninf));
        let e = &mut self.cx.e;
        let not_integral = e.reg(Class::Pred);
        e.op(format!("not.pred {not_integral}, {integral}"));
        e.op(format!("and.pred {bad}, {below}, {not_integral}"));
        e.op(format!("and.pred {bad}, {bad}, {finite}"));
        let nan = self.c(f64::NAN);
        let checked = select(self.cx, bad, nan, signed);
        let (one, inf) = (self.c(1.0), self.c(f64::INFINITY));
        let (y0, x1) = (self.setp("eq", y, zero), self.setp("eq", x, one));
        // (-1)^±∞ = 1 as well.
        let (ay, minus_one) = (self.op("abs", &[y]), self.c(-1.0));
        let (y_inf, xm1) = (self.setp("eq", ay, inf), self.setp("eq", x, minus_one));
        let e = &mut self.cx.e;
        let unit = e.reg(Class::Pred);
        e.op(format!("or.pred {unit}, {y0}, {x1}"));
        let flip_inf = e.reg(Class::Pred);
        e.op(format!("and.pred {flip_inf}, {y_inf}, {xm1}"));
        e.op(format!("or.pred {unit}, {unit}, {flip_inf}"));
        select(self.cx, unit, one, checked)
    }
}

/// A unary op on an f32 or f64 value.
pub(crate) fn float_unary(cx: &mut Cx, u: UnaryOp, a: Val) -> Result<Reg, EmitError> {
    use UnaryOp::*;
    let x = a.reg;
    let mut f = F::new(cx, a.dtype);
    Ok(match u {
        Abs => f.op("abs", &[x]),
        Neg => f.op("neg", &[x]),
        Floor => f.round("rmi", x),
        Ceil => f.round("rpi", x),
        Round => f.round("rni", x),
        Sqrt => f.op("sqrt.rn", &[x]),
        Reciprocal => f.op("rcp.rn", &[x]),
        // The interpreter takes the square root, then its reciprocal.
        Rsqrt => {
            let s = f.op("sqrt.rn", &[x]);
            f.op("rcp.rn", &[s])
        }
        Relu => {
            let zero = f.c(0.0);
            let lt = f.setp("lt", x, zero);
            select(f.cx, lt, zero, x)
        }
        Sign => {
            let (zero, one, minus) = (f.c(0.0), f.c(1.0), f.c(-1.0));
            let keep = f.mul(x, zero);
            let (gt, lt) = (f.setp("gt", x, zero), f.setp("lt", x, zero));
            let low = select(f.cx, lt, minus, keep);
            select(f.cx, gt, one, low)
        }
        IsNan => f.setp("nan", x, x),
        IsInf => {
            let (ax, inf) = (f.op("abs", &[x]), f.c(f64::INFINITY));
            f.setp("eq", ax, inf)
        }
        IsPosInf => {
            let inf = f.c(f64::INFINITY);
            f.setp("eq", x, inf)
        }
        IsNegInf => {
            let inf = f.c(f64::NEG_INFINITY);
            f.setp("eq", x, inf)
        }
        Sin | Cos | Tan => {
            f.f32_only(u)?;
            transcendental(&mut f, u, x)?
        }
        _ => transcendental(&mut f, u, x)?,
    })
}

fn transcendental(f: &mut F, u: UnaryOp, x: Reg) -> Result<Reg, EmitError> {
    use UnaryOp::*;
    Ok(match u {
        Exp => f.exp(x),
        Log => f.ln(x),
        Atan => f.atan(x),
        Asin => f.asin(x),
        Acos => f.acos(x),
        Asinh => f.asinh(x),
        Acosh => f.acosh(x),
        Atanh => f.atanh(x),
        Sin => f.op("sin.approx", &[x]),
        Cos => f.op("cos.approx", &[x]),
        Tan => {
            let (s, c) = (f.op("sin.approx", &[x]), f.op("cos.approx", &[x]));
            f.div(s, c)
        }
        Sinh | Cosh => {
            let nx = f.op("neg", &[x]);
            let (ep, en) = (f.exp(x), f.exp(nx));
            let s = if u == Sinh {
                f.sub(ep, en)
            } else {
                f.add(ep, en)
            };
            let half = f.c(0.5);
            f.mul(s, half)
        }
        Tanh => f.tanh(x),
        Erf => f.erf(x),
        Sigmoid => f.sigmoid(x),
        Silu => {
            let s = f.sigmoid(x);
            f.mul(x, s)
        }
        Gelu => {
            let root2 = f.c(std::f64::consts::SQRT_2);
            let scaled = f.div(x, root2);
            let e = f.erf(scaled);
            let one = f.c(1.0);
            let e1 = f.add(e, one);
            let xe = f.mul(x, e1);
            let half = f.c(0.5);
            f.mul(xe, half)
        }
        GeluTanh => {
            let (k0, k1) = (f.c(0.797_884_560_802_865_4), f.c(0.044_715));
            let x2 = f.mul(x, x);
            let x3 = f.mul(x2, x);
            let t = f.mul(k1, x3);
            let s = f.add(x, t);
            let inner = f.mul(k0, s);
            let th = f.tanh(inner);
            let one = f.c(1.0);
            let t1 = f.add(th, one);
            let half = f.c(0.5);
            let xh = f.mul(x, half);
            f.mul(xh, t1)
        }
        _ => return Err(unsupported_unary(u, DType::F32)),
    })
}

/// A binary op on two f32 or two f64 values.
pub(crate) fn float_binary(cx: &mut Cx, b: BinaryOp, x: Val, y: Val) -> Result<Reg, EmitError> {
    use BinaryOp::*;
    let (a, c) = (x.reg, y.reg);
    let mut f = F::new(cx, x.dtype);
    if let Some(cmp) = comparison(b) {
        return Ok(f.setp(cmp, a, c));
    }
    Ok(match b {
        Add => f.add(a, c),
        Sub => f.sub(a, c),
        Mul => f.mul(a, c),
        Div => f.div(a, c),
        Min | Max if f.class == Class::F32 => {
            let op = if b == Min { "min.NaN" } else { "max.NaN" };
            f.op(op, &[a, c])
        }
        Min | Max => {
            let op = if b == Min { "min" } else { "max" };
            let m = f.op(op, &[a, c]);
            let nan = f.setp("nan", a, c);
            let q = f.c(f64::NAN);
            select(f.cx, nan, q, m)
        }
        Fmod | Mod => {
            let r = f.fmod(a, c);
            if b == Mod {
                f.python_mod(r, c)
            } else {
                r
            }
        }
        Pow => f.pow(a, c),
        _ => return Err(EmitError::Unsupported(format!("{b:?} on {}", x.dtype))),
    })
}
