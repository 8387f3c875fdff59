//! Operand checking: turns the raw operands of one instruction into typed
//! [`Src`]/[`Reg`]/[`Addr`] values, enforcing declaration and PTX type
//! compatibility, and parsing immediates in the exact spellings accepted.

use std::collections::HashMap;

use crate::error::ParseError;
use crate::inst::{Addr, Reg, SharedAddr, Special, Src};
use crate::module::ParamDecl;
use crate::types::{compatible, Class, Type};

/// An operand as written: a word or a bracketed address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RawOperand {
    Word(String),
    Addr {
        base: String,
        offset: i64,
    },
    /// A vector operand `{%a, %b, ...}`.
    List(Vec<String>),
}

/// What operands can refer to while one entry is parsed.
pub(crate) struct Scope<'a> {
    pub regs: &'a HashMap<String, (Reg, Type)>,
    pub params: &'a [ParamDecl],
    /// Shared arrays declared so far, with their shared-window offsets.
    pub shared: &'a HashMap<String, u64>,
    pub line: u32,
}

impl Scope<'_> {
    pub fn err(&self, message: impl Into<String>) -> ParseError {
        ParseError::new(self.line, message)
    }

    fn word<'o>(&self, op: &'o RawOperand) -> Result<&'o str, ParseError> {
        match op {
            RawOperand::Word(w) => Ok(w),
            RawOperand::Addr { .. } => Err(self.err("an address is not allowed here")),
            RawOperand::List(_) => Err(self.err("a vector operand is not allowed here")),
        }
    }

    /// A vector operand of exactly `n` registers usable with type `ty`.
    pub fn list(&self, op: &RawOperand, ty: Type, n: usize) -> Result<Vec<Reg>, ParseError> {
        let RawOperand::List(words) = op else {
            return Err(self.err(format!("expected a vector of {n} registers")));
        };
        if words.len() != n {
            let got = words.len();
            return Err(self.err(format!("expected a vector of {n} registers, got {got}")));
        }
        let reg = |w: &String| self.reg(&RawOperand::Word(w.clone()), ty, false);
        words.iter().map(reg).collect()
    }

    /// A declared register usable with instruction type `ty`.
    pub fn reg(&self, op: &RawOperand, ty: Type, wider: bool) -> Result<Reg, ParseError> {
        let name = self.word(op)?;
        let &(idx, decl) = self
            .regs
            .get(name)
            .ok_or_else(|| self.err(format!("undeclared register '{name}'")))?;
        if !compatible(decl, ty, wider) {
            return Err(self.err(format!("register {name} ({decl}) does not fit type {ty}")));
        }
        Ok(idx)
    }

    /// A register or immediate source of type `ty`.
    pub fn src(&self, op: &RawOperand, ty: Type) -> Result<Src, ParseError> {
        self.src_with(op, ty, false)
    }

    /// A source where a wider register is allowed (`st`, `cvt`).
    pub fn src_wide(&self, op: &RawOperand, ty: Type) -> Result<Src, ParseError> {
        self.src_with(op, ty, true)
    }

    fn src_with(&self, op: &RawOperand, ty: Type, wider: bool) -> Result<Src, ParseError> {
        let w = self.word(op)?;
        if w.starts_with('%') {
            return self.reg(op, ty, wider).map(Src::Reg);
        }
        parse_imm(w, ty)
            .map(Src::Imm)
            .ok_or_else(|| self.err(format!("bad {ty} immediate '{w}'")))
    }

    /// A `mov` source, which may also be a special register or the name of
    /// a shared array (its shared-window address, as an immediate).
    pub fn mov_src(&self, op: &RawOperand, ty: Type) -> Result<Src, ParseError> {
        let w = self.word(op)?;
        if let Some(&at) = self.shared.get(w) {
            let ok = ty.bits() >= 32 && !ty.is_float() && ty != Type::Pred;
            return match ok {
                true => Ok(Src::Imm(at)),
                false => Err(self.err(format!(
                    "shared address {w} needs a 32- or 64-bit integer mov, not {ty}"
                ))),
            };
        }
        match special(w) {
            Some(s) if ty.bits() == 32 && !ty.is_float() => Ok(Src::Special(s)),
            Some(_) => Err(self.err(format!("special register {w} is .u32, not {ty}"))),
            None => self.src(op, ty),
        }
    }

    /// A global address `[%rdN+off]` with a 64-bit base register.
    pub fn addr(&self, op: &RawOperand) -> Result<Addr, ParseError> {
        match op {
            RawOperand::Addr { base, offset } => {
                let base = self.reg(&RawOperand::Word(base.clone()), Type::U64, false)?;
                Ok(Addr {
                    base,
                    offset: *offset,
                })
            }
            RawOperand::Word(w) => Err(self.err(format!("expected an address, got '{w}'"))),
            RawOperand::List(_) => Err(self.err("expected an address, got a vector")),
        }
    }

    /// A shared-window address: `[%r+off]` with a 32- or 64-bit integer
    /// base register, or `[NAME+off]` with a shared array's name.
    pub fn shared_addr(&self, op: &RawOperand) -> Result<SharedAddr, ParseError> {
        let RawOperand::Addr { base, offset } = op else {
            return Err(self.err("expected a shared address"));
        };
        if let Some(&at) = self.shared.get(base) {
            return Ok(SharedAddr {
                base: None,
                offset: at as i64 + offset,
            });
        }
        let &(idx, decl) = self
            .regs
            .get(base)
            .ok_or_else(|| self.err(format!("undeclared register or shared array '{base}'")))?;
        if !compatible(decl, Type::U32, false) && !compatible(decl, Type::U64, false) {
            return Err(self.err(format!(
                "shared address register {base} ({decl}) is not a 32- or 64-bit integer"
            )));
        }
        Ok(SharedAddr {
            base: Some(idx),
            offset: *offset,
        })
    }

    /// A `[pname]` param reference readable with type `ty`.
    pub fn param(&self, op: &RawOperand, ty: Type) -> Result<usize, ParseError> {
        let RawOperand::Addr { base, offset: 0 } = op else {
            return Err(self.err("expected [param]"));
        };
        let idx = self
            .params
            .iter()
            .position(|p| &p.name == base)
            .ok_or_else(|| self.err(format!("unknown param '{base}'")))?;
        if !compatible(self.params[idx].ty, ty, false) {
            return Err(self.err(format!("param {base} is {}, not {ty}", self.params[idx].ty)));
        }
        Ok(idx)
    }
}

fn special(w: &str) -> Option<Special> {
    let (name, dim) = w.strip_prefix('%')?.split_once('.')?;
    let d = ["x", "y", "z"].iter().position(|&x| x == dim)?;
    match name {
        "tid" => Some(Special::Tid(d)),
        "ntid" => Some(Special::Ntid(d)),
        "ctaid" => Some(Special::Ctaid(d)),
        "nctaid" => Some(Special::Nctaid(d)),
        _ => None,
    }
}

/// Parses an immediate for type `ty`: `0fXXXXXXXX` for f32 (or b32),
/// `0dXXXXXXXXXXXXXXXX` for f64 (or b64), integers (decimal or `0x` hex,
/// optionally negative) for integer, bit and pred types. Integers must fit
/// the type's width as a signed or unsigned value.
pub(crate) fn parse_imm(w: &str, ty: Type) -> Option<u64> {
    if let Some(h) = w.strip_prefix("0f").or_else(|| w.strip_prefix("0F")) {
        let ok = matches!(ty, Type::F32 | Type::B32) && h.len() == 8;
        return if ok {
            u64::from_str_radix(h, 16).ok()
        } else {
            None
        };
    }
    if let Some(h) = w.strip_prefix("0d").or_else(|| w.strip_prefix("0D")) {
        let ok = matches!(ty, Type::F64 | Type::B64) && h.len() == 16;
        return if ok {
            u64::from_str_radix(h, 16).ok()
        } else {
            None
        };
    }
    if ty.class() == Class::Float {
        return None;
    }
    let v = parse_int(w)?;
    let bits = ty.bits();
    let (lo, hi) = (-(1i128 << (bits - 1)), (1i128 << bits) - 1);
    let lo = if ty == Type::Pred { 0 } else { lo };
    (lo..=hi).contains(&v).then_some((v as u64) & ty.mask())
}

/// A decimal or `0x` hexadecimal integer, optionally negative.
pub(crate) fn parse_int(w: &str) -> Option<i128> {
    let (neg, digits) = match w.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, w),
    };
    let mag = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(h) if !h.is_empty() && h.len() <= 16 => i128::from_str_radix(h, 16).ok()?,
        Some(_) => return None,
        None if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse::<i128>().ok()?
        }
        None => return None,
    };
    Some(if neg { -mag } else { mag })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediates() {
        assert_eq!(parse_imm("0f3F800000", Type::F32), Some(0x3F80_0000));
        assert_eq!(
            parse_imm("0d3FF0000000000000", Type::F64),
            Some(0x3FF0_0000_0000_0000)
        );
        assert_eq!(parse_imm("-1", Type::S32), Some(0xFFFF_FFFF));
        assert_eq!(parse_imm("0xFFFFFFFF", Type::U32), Some(0xFFFF_FFFF));
        assert_eq!(parse_imm("-4", Type::S64), Some(u64::MAX - 3));
        assert_eq!(parse_imm("4294967296", Type::U32), None);
        assert_eq!(parse_imm("1", Type::F32), None);
        assert_eq!(parse_imm("1.0", Type::F32), None);
        assert_eq!(parse_imm("0f3F800000", Type::F64), None);
        assert_eq!(parse_imm("1", Type::Pred), Some(1));
        assert_eq!(parse_imm("2", Type::Pred), None);
    }
}
