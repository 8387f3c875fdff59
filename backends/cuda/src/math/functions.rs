//! The longer function bodies: `exp` and `log` in f64 (range reduction and a series, since
//! the hardware approximates only f32), and the inverse trigonometric and hyperbolic
//! functions from `atan`, `log` and `sqrt`.

use super::F;
use crate::expr::select;
use crate::ptx::{Class, Reg};

/// ln 2 split so that `k · LN2_HI` is exact for |k| < 2^11 (Cody and Waite).
const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;

impl F<'_, '_> {
    /// `2^t`.
    pub(super) fn exp2(&mut self, t: Reg) -> Reg {
        if self.class == Class::F32 {
            return self.op("ex2.approx", &[t]);
        }
        let ln2 = self.c(std::f64::consts::LN_2);
        let x = self.mul(t, ln2);
        self.exp64(x)
    }

    /// `log2 x`.
    pub(super) fn log2(&mut self, x: Reg) -> Reg {
        if self.class == Class::F32 {
            return self.op("lg2.approx", &[x]);
        }
        let l = self.log64(x);
        let k = self.c(std::f64::consts::LOG2_E);
        self.mul(l, k)
    }

    /// `eˣ` in f64: `x = k·ln 2 + r` with |r| ≤ ln 2 / 2, `e^r` by its Taylor series to
    /// r¹³ (error below 1e-17), scaled by `2^k` built in two halves so that neither leaves
    /// the normal range before the product rounds to a subnormal or infinity.
    pub(super) fn exp64(&mut self, x: Reg) -> Reg {
        let log2e = self.c(std::f64::consts::LOG2_E);
        let xk = self.mul(x, log2e);
        let k = self.round("rni", xk);
        let nk = self.op("neg", &[k]);
        let (hi, lo) = (self.c(LN2_HI), self.c(LN2_LO));
        let r0 = self.op("fma.rn", &[nk, hi, x]);
        let r = self.op("fma.rn", &[nk, lo, r0]);
        let mut p = self.c(1.0);
        for n in (1..=13).rev() {
            let inv = self.c(1.0 / n as f64);
            let q = self.mul(r, inv);
            let one = self.c(1.0);
            p = self.op("fma.rn", &[p, q, one]);
        }
        let e = &mut self.cx.e;
        let [ki, k1, k2, b1, b2] = [0; 5].map(|_| e.reg(Class::B64));
        // Beyond ±1100 the result is 0 or ∞ anyway; clamping keeps the exponent fields valid.
        e.op(format!("cvt.rni.s64.f64 {ki}, {k}"));
        e.op(format!("max.s64 {ki}, {ki}, -1100"));
        e.op(format!("min.s64 {ki}, {ki}, 1100"));
        e.op(format!("shr.s64 {k1}, {ki}, 1"));
        e.op(format!("sub.s64 {k2}, {ki}, {k1}"));
        e.op(format!("add.s64 {b1}, {k1}, 1023"));
        e.op(format!("shl.b64 {b1}, {b1}, 52"));
        e.op(format!("add.s64 {b2}, {k2}, 1023"));
        e.op(format!("shl.b64 {b2}, {b2}, 52"));
        let (s1, s2) = (e.reg(Class::F64), e.reg(Class::F64));
        e.op(format!("mov.b64 {s1}, {b1}"));
        e.op(format!("mov.b64 {s2}, {b2}"));
        let half = self.mul(p, s1);
        let y = self.mul(half, s2);
        // Past the edges of the range, 0 or ∞ (NaN fails both tests and flows through).
        let (big, small) = (self.c(709.8), self.c(-745.2));
        let (over, under) = (self.setp("gt", x, big), self.setp("lt", x, small));
        let (inf, zero) = (self.c(f64::INFINITY), self.c(0.0));
        let y = select(self.cx, over, inf, y);
        select(self.cx, under, zero, y)
    }

    /// `ln x` in f64: `x = 2^e · m` with m in [√½, √2), `ln m = 2 atanh(s)` for
    /// `s = (m - 1)/(m + 1)` by its series to s²¹ (|s| ≤ 0.172, error below 1e-18).
    pub(super) fn log64(&mut self, x: Reg) -> Reg {
        // Subnormals are scaled into the normal range first.
        let (tiny, scale) = (self.c(f64::MIN_POSITIVE), self.c(2f64.powi(54)));
        let is_tiny = self.setp("lt", x, tiny);
        let scaled = self.mul(x, scale);
        let xs = select(self.cx, is_tiny, scaled, x);
        let e = &mut self.cx.e;
        let [bits, ex, mb, adj] = [0; 4].map(|_| e.reg(Class::B64));
        e.op(format!("mov.b64 {bits}, {xs}"));
        e.op(format!("shr.u64 {ex}, {bits}, 52"));
        e.op(format!("and.b64 {ex}, {ex}, 2047"));
        e.op(format!("selp.s64 {adj}, 1077, 1023, {is_tiny}"));
        e.op(format!("sub.s64 {ex}, {ex}, {adj}"));
        e.op(format!("and.b64 {mb}, {bits}, 4503599627370495"));
        e.op(format!("or.b64 {mb}, {mb}, 4607182418800017408"));
        let m0 = e.reg(Class::F64);
        e.op(format!("mov.b64 {m0}, {mb}"));
        let root2 = self.c(std::f64::consts::SQRT_2);
        let high = self.setp("gt", m0, root2);
        let half = self.c(0.5);
        let mh = self.mul(m0, half);
        let m = select(self.cx, high, mh, m0);
        let e = &mut self.cx.e;
        let (ex1, ef) = (e.reg(Class::B64), e.reg(Class::F64));
        e.op(format!("selp.s64 {ex1}, 1, 0, {high}"));
        e.op(format!("add.s64 {ex1}, {ex}, {ex1}"));
        e.op(format!("cvt.rn.f64.s64 {ef}, {ex1}"));
        let one = self.c(1.0);
        let (num, den) = (self.sub(m, one), self.add(m, one));
        let s = self.div(num, den);
        let s2 = self.mul(s, s);
        let mut series = self.c(1.0 / 21.0);
        for n in (1..=9).rev() {
            let k = self.c(1.0 / (2 * n + 1) as f64);
            series = self.op("fma.rn", &[series, s2, k]);
        }
        let one = self.c(1.0);
        series = self.op("fma.rn", &[series, s2, one]);
        let two = self.c(2.0);
        let s2x = self.mul(two, s);
        let lm = self.mul(s2x, series);
        let (hi, lo) = (self.c(LN2_HI), self.c(LN2_LO));
        let t = self.op("fma.rn", &[ef, lo, lm]);
        let y = self.op("fma.rn", &[ef, hi, t]);
        self.log_specials(x, y)
    }

    /// ln's special values: NaN below 0 (and for NaN), -∞ at ±0, ∞ at ∞.
    fn log_specials(&mut self, x: Reg, y: Reg) -> Reg {
        let (zero, inf, nan, ninf) = (
            self.c(0.0),
            self.c(f64::INFINITY),
            self.c(f64::NAN),
            self.c(f64::NEG_INFINITY),
        );
        let (neg, nan_in, is_zero, is_inf) = (
            self.setp("lt", x, zero),
            self.setp("nan", x, x),
            self.setp("eq", x, zero),
            self.setp("eq", x, inf),
        );
        let y = select(self.cx, is_inf, inf, y);
        let y = select(self.cx, is_zero, ninf, y);
        let y = select(self.cx, neg, nan, y);
        select(self.cx, nan_in, x, y)
    }

    /// `ln x` for this width.
    pub(super) fn ln(&mut self, x: Reg) -> Reg {
        if self.class == Class::F64 {
            return self.log64(x);
        }
        let l = self.op("lg2.approx", &[x]);
        let k = self.c(std::f64::consts::LN_2);
        self.mul(l, k)
    }

    /// `atan x`: `π/2 - atan(1/|x|)` above 1, `π/4 + atan((t-1)/(t+1))` above tan(π/8),
    /// then the odd Taylor series (to u¹⁵ in f32, u³¹ in f64: error below 1e-8 / 1e-14),
    /// the sign copied back.
    pub(super) fn atan(&mut self, x: Reg) -> Reg {
        let a = self.op("abs", &[x]);
        let one = self.c(1.0);
        let inv = self.setp("gt", a, one);
        let ra = self.div(one, a);
        let t = select(self.cx, inv, ra, a);
        let tan_pi_8 = self.c(std::f64::consts::SQRT_2 - 1.0);
        let big = self.setp("gt", t, tan_pi_8);
        let (tm, tp) = (self.sub(t, one), self.add(t, one));
        let shifted = self.div(tm, tp);
        let u = select(self.cx, big, shifted, t);
        let u2 = self.mul(u, u);
        let terms = if self.class == Class::F64 { 16 } else { 8 };
        let mut p = self.c(sign_term(terms - 1));
        for n in (0..terms - 1).rev() {
            let k = self.c(sign_term(n));
            p = self.op("fma.rn", &[p, u2, k]);
        }
        let pu = self.mul(p, u);
        let quarter = self.c(std::f64::consts::FRAC_PI_4);
        let lifted = self.add(pu, quarter);
        let r = select(self.cx, big, lifted, pu);
        let half_pi = self.c(std::f64::consts::FRAC_PI_2);
        let flipped = self.sub(half_pi, r);
        let r = select(self.cx, inv, flipped, r);
        self.op("copysign", &[x, r])
    }

    /// `asin x = atan(x / √((1-x)(1+x)))`: ±π/2 at ±1, NaN beyond.
    pub(super) fn asin(&mut self, x: Reg) -> Reg {
        let one = self.c(1.0);
        let (a, b) = (self.sub(one, x), self.add(one, x));
        let ab = self.mul(a, b);
        let root = self.op("sqrt.rn", &[ab]);
        let q = self.div(x, root);
        self.atan(q)
    }

    /// `acos x = 2 atan(√((1-x)/(1+x)))`, accurate near both ends.
    pub(super) fn acos(&mut self, x: Reg) -> Reg {
        let one = self.c(1.0);
        let (a, b) = (self.sub(one, x), self.add(one, x));
        let q = self.div(a, b);
        let root = self.op("sqrt.rn", &[q]);
        let t = self.atan(root);
        let two = self.c(2.0);
        self.mul(two, t)
    }

    /// `asinh x = sign(x) · ln(|x| + √(x² + 1))`, as `ln|x| + ln 2` where x² would
    /// overflow.
    pub(super) fn asinh(&mut self, x: Reg) -> Reg {
        let a = self.op("abs", &[x]);
        let r = self.ln_plus_root(a, 1.0);
        self.op("copysign", &[x, r])
    }

    /// `acosh x = ln(x + √(x² - 1))`, NaN below 1 (tested, since at -2^31 the sum is 0).
    pub(super) fn acosh(&mut self, x: Reg) -> Reg {
        let r = self.ln_plus_root(x, -1.0);
        let (one, nan) = (self.c(1.0), self.c(f64::NAN));
        let below = self.setp("lt", x, one);
        select(self.cx, below, nan, r)
    }

    /// `ln(a + √(a² + c))`, switching to `ln a + ln 2` above 2^60.
    fn ln_plus_root(&mut self, a: Reg, c: f64) -> Reg {
        let (k, limit) = (self.c(c), self.c(2f64.powi(60)));
        let sq = self.op("fma.rn", &[a, a, k]);
        let root = self.op("sqrt.rn", &[sq]);
        let s = self.add(a, root);
        let near = self.ln(s);
        let la = self.ln(a);
        let ln2 = self.c(std::f64::consts::LN_2);
        let far = self.add(la, ln2);
        let huge = self.setp("gt", a, limit);
        select(self.cx, huge, far, near)
    }

    /// `atanh x = ½ ln((1 + x) / (1 - x))`: ±∞ at ±1, NaN beyond.
    pub(super) fn atanh(&mut self, x: Reg) -> Reg {
        let one = self.c(1.0);
        let (a, b) = (self.add(one, x), self.sub(one, x));
        let q = self.div(a, b);
        let l = self.ln(q);
        let half = self.c(0.5);
        self.mul(l, half)
    }
}

/// The coefficient of u^(2n+1) in atan's series: (-1)ⁿ / (2n + 1).
fn sign_term(n: usize) -> f64 {
    let s = if n.is_multiple_of(2) { 1.0 } else { -1.0 };
    s / (2 * n + 1) as f64
}
