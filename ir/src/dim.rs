//! Symbolic dimensions: integers or expressions over named symbols.
//!
//! A [`Dim`] is kept in a canonical form, a sum of monomials with integer coefficients, so
//! structurally equal expressions compare equal: `seq+1+seq` and `2*seq+1` are the same
//! value. Floor division by a constant that does not divide exactly, `min` and `max` stay
//! opaque atoms inside the polynomial.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A tensor dimension: a constant or a polynomial over named symbols.
///
/// ```
/// use kiln_ir::Dim;
/// let seq = Dim::sym("seq");
/// let d = seq.clone() + Dim::from(1i64) + seq.clone();
/// assert_eq!(d.to_string(), "2*seq+1");
/// assert_eq!(d, "seq*2+1".parse().unwrap());
/// let bound = [("seq".to_string(), 7)].into_iter().collect();
/// assert_eq!(d.eval(&bound), Some(15));
/// assert_eq!((seq * Dim::from(12i64)).div_floor(4).to_string(), "3*seq");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dim {
    /// Monomial (sorted list of atoms, empty for the constant term) to its coefficient.
    /// Coefficients are never zero.
    terms: BTreeMap<Vec<Atom>, i64>,
}

/// An indivisible factor of a monomial.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Atom {
    /// A named symbol such as `batch`.
    Sym(String),
    /// `floor(a / b)` where the division could not be simplified; `b > 1`.
    FloorDiv(Box<Dim>, i64),
    /// `min(a, b)`.
    Min(Box<Dim>, Box<Dim>),
    /// `max(a, b)`.
    Max(Box<Dim>, Box<Dim>),
}

/// Values bound to symbols.
pub type Bindings = BTreeMap<String, i64>;

impl Dim {
    /// A constant dim.
    pub fn constant(c: i64) -> Dim {
        let mut terms = BTreeMap::new();
        if c != 0 {
            terms.insert(Vec::new(), c);
        }
        Dim { terms }
    }

    /// True for the constant 0.
    pub fn is_zero(&self) -> bool {
        self.terms.is_empty()
    }

    /// True for the constant 1.
    pub fn is_one(&self) -> bool {
        self.as_const() == Some(1)
    }

    /// `q` with `self == q * d` exactly, when `d` is one monomial (a constant, a symbol, or a
    /// product of them with a coefficient) that divides every term; `None` otherwise, or
    /// for `d == 0`. This is how strides over symbolic shapes are compared.
    pub fn div_exact(&self, d: &Dim) -> Option<Dim> {
        let [(dm, &dc)] = d.terms.iter().collect::<Vec<_>>()[..] else {
            return None;
        };
        let mut q = Dim::constant(0);
        for (m, &c) in &self.terms {
            if c % dc != 0 {
                return None;
            }
            let mut rest = m.clone();
            for a in dm {
                let at = rest.iter().position(|x| x == a)?;
                rest.remove(at);
            }
            q.add_term(rest, c / dc);
        }
        Some(q)
    }

    /// The terms of the polynomial as (atoms multiplied, coefficient), the constant term
    /// with no atoms: how code generators evaluate a dim.
    pub fn monomials(&self) -> impl Iterator<Item = (&[Atom], i64)> + '_ {
        self.terms.iter().map(|(m, &c)| (m.as_slice(), c))
    }

    /// The terms of the polynomial, each as a dim of its own (their sum is `self`).
    pub fn terms(&self) -> impl Iterator<Item = Dim> + '_ {
        self.terms.iter().map(|(m, &c)| Dim {
            terms: [(m.clone(), c)].into_iter().collect(),
        })
    }

    /// True when the dim is at least 0 for every binding of its symbols to sizes (values at
    /// least 0): every coefficient is positive and every atom is a symbol, or a floor, min
    /// or max of such dims.
    pub fn known_nonnegative(&self) -> bool {
        self.terms.iter().all(|(m, &c)| {
            c > 0
                && m.iter().all(|a| match a {
                    Atom::Sym(_) => true,
                    Atom::FloorDiv(x, _) => x.known_nonnegative(),
                    Atom::Min(x, y) | Atom::Max(x, y) => {
                        x.known_nonnegative() && y.known_nonnegative()
                    }
                })
        })
    }

    /// A named symbol.
    pub fn sym(name: impl Into<String>) -> Dim {
        Dim::atom(Atom::Sym(name.into()))
    }

    fn atom(a: Atom) -> Dim {
        Dim {
            terms: [(vec![a], 1)].into_iter().collect(),
        }
    }

    /// The value, if the dim is a constant.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// True if the dim is a constant.
    pub fn is_const(&self) -> bool {
        self.as_const().is_some()
    }

    /// The symbol name, if the dim is exactly one symbol.
    pub fn as_sym(&self) -> Option<&str> {
        match self.terms.iter().next() {
            Some((m, 1)) if self.terms.len() == 1 && m.len() == 1 => match &m[0] {
                Atom::Sym(s) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// All symbol names that occur in the dim.
    pub fn symbols(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_symbols(&mut out);
        out.sort();
        out.dedup();
        out
    }

    fn collect_symbols(&self, out: &mut Vec<String>) {
        for m in self.terms.keys() {
            for a in m {
                match a {
                    Atom::Sym(s) => out.push(s.clone()),
                    Atom::FloorDiv(d, _) => d.collect_symbols(out),
                    Atom::Min(a, b) | Atom::Max(a, b) => {
                        a.collect_symbols(out);
                        b.collect_symbols(out);
                    }
                }
            }
        }
    }

    /// Evaluates the dim; `None` if a symbol is unbound or arithmetic overflows.
    pub fn eval(&self, b: &Bindings) -> Option<i64> {
        let mut total: i64 = 0;
        for (m, c) in &self.terms {
            let mut v = *c;
            for a in m {
                v = v.checked_mul(a.eval(b)?)?;
            }
            total = total.checked_add(v)?;
        }
        Some(total)
    }

    /// Replaces bound symbols by their values and re-simplifies.
    pub fn substitute(&self, b: &Bindings) -> Dim {
        let mut out = Dim::constant(0);
        for (m, c) in &self.terms {
            let mut t = Dim::constant(*c);
            for a in m {
                t = t * a.substitute(b);
            }
            out = out + t;
        }
        out
    }

    /// `floor(self / d)`, simplified when `d` divides every coefficient.
    pub fn div_floor(&self, d: i64) -> Dim {
        assert!(d != 0, "division of a dim by zero");
        if d == 1 {
            return self.clone();
        }
        if let Some(c) = self.as_const() {
            return Dim::constant(
                c.div_euclid(d) - if d < 0 && c.rem_euclid(d) != 0 { 1 } else { 0 },
            );
        }
        if d > 0 && self.terms.values().all(|c| c % d == 0) {
            return Dim {
                terms: self.terms.iter().map(|(m, c)| (m.clone(), c / d)).collect(),
            };
        }
        Dim::atom(Atom::FloorDiv(Box::new(self.clone()), d))
    }

    /// `ceil(self / d)` for `d > 0`.
    pub fn div_ceil(&self, d: i64) -> Dim {
        if let Some(c) = self.as_const() {
            // Not `c + d - 1`, which overflows near i64::MAX.
            return Dim::constant(c.div_euclid(d) + i64::from(c.rem_euclid(d) != 0));
        }
        (self.clone() + Dim::constant(d - 1)).div_floor(d)
    }

    /// `min(self, other)`, folded when both are constant or equal.
    pub fn min_with(&self, other: &Dim) -> Dim {
        match (self.as_const(), other.as_const()) {
            (Some(a), Some(b)) => Dim::constant(a.min(b)),
            _ if self == other => self.clone(),
            _ => {
                let (a, b) = ordered(self, other);
                Dim::atom(Atom::Min(Box::new(a), Box::new(b)))
            }
        }
    }

    /// `max(self, other)`, folded when both are constant or equal.
    pub fn max_with(&self, other: &Dim) -> Dim {
        match (self.as_const(), other.as_const()) {
            (Some(a), Some(b)) => Dim::constant(a.max(b)),
            _ if self == other => self.clone(),
            _ => {
                let (a, b) = ordered(self, other);
                Dim::atom(Atom::Max(Box::new(a), Box::new(b)))
            }
        }
    }

    /// `self + rhs`, or `None` when a coefficient overflows i64 (the `+` operator wraps).
    pub fn checked_add(&self, rhs: &Dim) -> Option<Dim> {
        let mut out = self.clone();
        for (m, c) in &rhs.terms {
            let e = out.terms.entry(m.clone()).or_insert(0);
            *e = e.checked_add(*c)?;
            if *e == 0 {
                out.terms.remove(m);
            }
        }
        Some(out)
    }

    /// `self - rhs`, or `None` on overflow.
    pub fn checked_sub(&self, rhs: &Dim) -> Option<Dim> {
        let neg = rhs
            .terms
            .iter()
            .map(|(m, c)| Some((m.clone(), c.checked_neg()?)))
            .collect::<Option<BTreeMap<_, _>>>()?;
        self.checked_add(&Dim { terms: neg })
    }

    /// `self * rhs`, or `None` when a coefficient overflows i64 (the `*` operator wraps).
    /// Shape arithmetic on concrete sizes (a tile's repeats, a pad's total) goes through
    /// this, so an overflow is reported instead of wrapping into a small size.
    ///
    /// Also `None` when the expanded product would have more than [`Dim::MAX_TERMS`] terms:
    /// multiplying sums multiplies their term counts, so a product of many symbolic sums (a
    /// fuzzer found one) grows exponentially; no real shape comes near the cap.
    pub fn checked_mul(&self, rhs: &Dim) -> Option<Dim> {
        if self.terms.len().saturating_mul(rhs.terms.len()) > Dim::MAX_TERMS {
            return None;
        }
        let mut out = Dim::constant(0);
        for (ma, ca) in &self.terms {
            for (mb, cb) in &rhs.terms {
                let mut m: Vec<Atom> = ma.iter().chain(mb.iter()).cloned().collect();
                m.sort();
                let e = out.terms.entry(m).or_insert(0);
                *e = e.checked_add(ca.checked_mul(*cb)?)?;
            }
        }
        out.terms.retain(|_, c| *c != 0);
        Some(out)
    }

    /// The most terms [`Dim::checked_mul`] builds.
    pub const MAX_TERMS: usize = 1024;

    fn add_term(&mut self, m: Vec<Atom>, c: i64) {
        let e = self.terms.entry(m).or_insert(0);
        *e = e.wrapping_add(c);
        if *e == 0 {
            self.terms.retain(|_, v| *v != 0);
        }
    }
}

fn ordered(a: &Dim, b: &Dim) -> (Dim, Dim) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

impl Atom {
    fn eval(&self, b: &Bindings) -> Option<i64> {
        match self {
            Atom::Sym(s) => b.get(s).copied(),
            Atom::FloorDiv(d, c) => d.eval(b)?.checked_div_euclid(*c),
            Atom::Min(x, y) => Some(x.eval(b)?.min(y.eval(b)?)),
            Atom::Max(x, y) => Some(x.eval(b)?.max(y.eval(b)?)),
        }
    }

    fn substitute(&self, b: &Bindings) -> Dim {
        match self {
            Atom::Sym(s) => b
                .get(s)
                .map_or_else(|| Dim::sym(s.clone()), |v| Dim::constant(*v)),
            Atom::FloorDiv(d, c) => d.substitute(b).div_floor(*c),
            Atom::Min(x, y) => x.substitute(b).min_with(&y.substitute(b)),
            Atom::Max(x, y) => x.substitute(b).max_with(&y.substitute(b)),
        }
    }
}

impl From<i64> for Dim {
    fn from(c: i64) -> Dim {
        Dim::constant(c)
    }
}

impl From<usize> for Dim {
    fn from(c: usize) -> Dim {
        Dim::constant(c as i64)
    }
}

impl std::ops::Add for Dim {
    type Output = Dim;
    fn add(mut self, rhs: Dim) -> Dim {
        for (m, c) in rhs.terms {
            self.add_term(m, c);
        }
        self
    }
}

impl std::ops::Neg for Dim {
    type Output = Dim;
    fn neg(self) -> Dim {
        Dim {
            terms: self
                .terms
                .into_iter()
                .map(|(m, c)| (m, c.wrapping_neg()))
                .collect(),
        }
    }
}

impl std::ops::Sub for Dim {
    type Output = Dim;
    fn sub(self, rhs: Dim) -> Dim {
        self + (-rhs)
    }
}

impl std::ops::Mul for Dim {
    type Output = Dim;
    fn mul(self, rhs: Dim) -> Dim {
        let mut out = Dim::constant(0);
        for (ma, ca) in &self.terms {
            for (mb, cb) in &rhs.terms {
                let mut m: Vec<Atom> = ma.iter().chain(mb.iter()).cloned().collect();
                m.sort();
                out.add_term(m, ca.wrapping_mul(*cb));
            }
        }
        out
    }
}

macro_rules! by_reference {
    ($($trait:ident $method:ident),*) => {$(
        impl std::ops::$trait<&Dim> for &Dim {
            type Output = Dim;
            fn $method(self, rhs: &Dim) -> Dim {
                std::ops::$trait::$method(self.clone(), rhs.clone())
            }
        }
    )*};
}

by_reference!(Add add, Sub sub, Mul mul);

impl std::iter::Sum for Dim {
    fn sum<I: Iterator<Item = Dim>>(iter: I) -> Dim {
        iter.fold(Dim::constant(0), |a, b| a + b)
    }
}

impl std::iter::Product for Dim {
    fn product<I: Iterator<Item = Dim>>(iter: I) -> Dim {
        iter.fold(Dim::constant(1), |a, b| a * b)
    }
}

impl<'a> std::iter::Product<&'a Dim> for Dim {
    fn product<I: Iterator<Item = &'a Dim>>(iter: I) -> Dim {
        iter.fold(Dim::constant(1), |a, b| a * b.clone())
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        // Highest-degree terms first, the constant last: `2*seq+1`.
        let mut terms: Vec<_> = self.terms.iter().collect();
        terms.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
        for (i, (m, c)) in terms.into_iter().enumerate() {
            let c = *c;
            if i > 0 {
                f.write_str(if c < 0 { "-" } else { "+" })?;
            } else if c < 0 {
                f.write_str("-")?;
            }
            let a = c.unsigned_abs();
            if m.is_empty() {
                write!(f, "{a}")?;
                continue;
            }
            if a != 1 {
                write!(f, "{a}*")?;
            }
            for (j, atom) in m.iter().enumerate() {
                if j > 0 {
                    f.write_str("*")?;
                }
                // `3*(seq)/5` would read back as `(3*seq)/5`, and a leading `-(seq)/5` as
                // `(-seq)/5`: a floor division after a factor or a sign needs parentheses.
                if matches!(atom, Atom::FloorDiv(..)) && (j > 0 || a != 1 || (i == 0 && c < 0)) {
                    write!(f, "({atom})")?;
                } else {
                    write!(f, "{atom}")?;
                }
            }
        }
        Ok(())
    }
}

/// Serialized as its text (`2*seq+1`): the polynomial's map has non-string keys, which
/// JSON cannot hold, and the text is what a reader of the JSON wants anyway.
impl Serialize for Dim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dim, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dim({self})")
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Sym(s) => f.write_str(s),
            Atom::FloorDiv(d, c) => write!(f, "({d})/{c}"),
            Atom::Min(a, b) => write!(f, "min({a}, {b})"),
            Atom::Max(a, b) => write!(f, "max({a}, {b})"),
        }
    }
}

/// The error for text that is not a dim expression.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid dim expression `{text}`: {reason}")]
pub struct DimParseError {
    /// The text that failed to parse.
    pub text: String,
    /// What was wrong.
    pub reason: String,
}

impl std::str::FromStr for Dim {
    type Err = DimParseError;
    fn from_str(s: &str) -> Result<Dim, DimParseError> {
        let mut p = DimParser {
            s: s.as_bytes(),
            pos: 0,
        };
        let err = |reason: String| DimParseError {
            text: s.to_string(),
            reason,
        };
        let d = p.sum().map_err(err)?;
        p.skip_ws();
        if p.pos != p.s.len() {
            return Err(err(format!("unexpected `{}`", &s[p.pos..])));
        }
        Ok(d)
    }
}

/// Recursive descent over `sum := prod (('+'|'-') prod)*`, `prod := unary (('*'|'/') unary)*`.
struct DimParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl DimParser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn sum(&mut self) -> Result<Dim, String> {
        let mut acc = self.prod()?;
        loop {
            if self.eat(b'+') {
                acc = acc + self.prod()?;
            } else if self.eat(b'-') {
                acc = acc - self.prod()?;
            } else {
                return Ok(acc);
            }
        }
    }

    fn prod(&mut self) -> Result<Dim, String> {
        let mut acc = self.unary()?;
        loop {
            if self.eat(b'*') {
                acc = acc * self.unary()?;
            } else if self.eat(b'/') {
                let d = self.unary()?;
                match d.as_const() {
                    Some(c) if c > 0 => acc = acc.div_floor(c),
                    _ => return Err("division only by a positive constant".into()),
                }
            } else {
                return Ok(acc);
            }
        }
    }

    fn unary(&mut self) -> Result<Dim, String> {
        if self.eat(b'-') {
            return Ok(-self.unary()?);
        }
        if self.eat(b'(') {
            let d = self.sum()?;
            if !self.eat(b')') {
                return Err("missing `)`".into());
            }
            return Ok(d);
        }
        let start = self.pos;
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or_default();
                t.parse::<i64>()
                    .map(Dim::constant)
                    .map_err(|e| e.to_string())
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.pos;
                while self.pos < self.s.len()
                    && (self.s[self.pos].is_ascii_alphanumeric()
                        || matches!(self.s[self.pos], b'_' | b'.'))
                {
                    self.pos += 1;
                }
                let name = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
                if (name == "min" || name == "max") && self.eat(b'(') {
                    let a = self.sum()?;
                    if !self.eat(b',') {
                        return Err(format!("`{name}` takes two arguments"));
                    }
                    let b = self.sum()?;
                    if !self.eat(b')') {
                        return Err("missing `)`".into());
                    }
                    return Ok(if name == "min" {
                        a.min_with(&b)
                    } else {
                        a.max_with(&b)
                    });
                }
                Ok(Dim::sym(name))
            }
            Some(c) => Err(format!("unexpected `{}`", c as char)),
            None => Err("unexpected end".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Dim {
        s.parse().unwrap()
    }

    #[test]
    fn canonical_forms_compare_equal() {
        assert_eq!(d("seq+1+seq"), d("2*seq+1"));
        assert_eq!(d("seq*12"), d("12*seq"));
        assert_eq!(d("batch*seq - seq*batch"), Dim::constant(0));
        assert_eq!(d("(batch+1)*(batch-1)"), d("batch*batch-1"));
    }

    #[test]
    fn display_parses_back() {
        for s in [
            "batch",
            "seq+1",
            "12*seq",
            "2*batch*seq-3",
            "(seq+1)/2",
            "min(seq, 512)",
            "-seq+4",
            "0",
            "3*((seq)/5)",
            "b*((seq)/5)",
            "-((seq)/5)+b",
        ] {
            let x = d(s);
            assert_eq!(d(&x.to_string()), x, "{s} printed as {x}");
        }
    }

    #[test]
    fn division_simplifies_when_exact() {
        assert_eq!(d("12*seq").div_floor(4), d("3*seq"));
        assert_eq!(d("7").div_floor(2), d("3"));
        assert_eq!(d("-7").div_floor(2), d("-4"));
        assert!(d("seq+1").div_floor(2).as_const().is_none());
        assert_eq!(d("seq").div_ceil(1), d("seq"));
    }

    #[test]
    fn eval_and_substitute() {
        let b: Bindings = [("seq".to_string(), 7), ("batch".to_string(), 2)]
            .into_iter()
            .collect();
        assert_eq!(d("(seq+1)/2*batch").eval(&b), Some(8));
        assert_eq!(d("max(seq, 9)").eval(&b), Some(9));
        assert_eq!(d("seq+unknown").eval(&b), None);
        assert_eq!(d("seq+unknown").substitute(&b), d("unknown+7"));
    }

    #[test]
    fn checked_arithmetic_reports_overflow() {
        let big = Dim::from(1i64 << 62);
        assert_eq!(big.checked_mul(&Dim::from(4i64)), None);
        assert_eq!(
            (big.clone() * Dim::from(4i64)).as_const(),
            Some(0),
            "the operator wraps"
        );
        assert_eq!(
            big.checked_add(&big).and_then(|d| d.checked_add(&big)),
            None
        );
        assert_eq!(Dim::from(i64::MIN).checked_sub(&Dim::from(1i64)), None);
        let s = d("2*seq+1");
        assert_eq!(s.checked_mul(&Dim::from(3i64)), Some(d("6*seq+3")));
        assert_eq!(s.checked_sub(&s), Some(Dim::from(0i64)));
        assert_eq!(s.checked_add(&d("-2*seq")), Some(Dim::from(1i64)));
        let huge = d("seq") * Dim::from(i64::MAX);
        assert_eq!(huge.checked_mul(&Dim::from(2i64)), None);
    }

    #[test]
    fn bad_text_is_an_error() {
        assert!("seq +".parse::<Dim>().is_err());
        assert!("seq/batch".parse::<Dim>().is_err());
        assert!("(seq".parse::<Dim>().is_err());
    }
}
