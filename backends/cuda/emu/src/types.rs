//! PTX fundamental types (`.u32`, `.f32`, `.pred`, ...) and the operand
//! type-compatibility rules the parser enforces.

use std::fmt;

/// A PTX type as written in a declaration or an instruction suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    Pred,
    B8,
    U8,
    S8,
    B16,
    U16,
    S16,
    B32,
    U32,
    S32,
    B64,
    U64,
    S64,
    F16,
    Bf16,
    F32,
    F64,
}

/// The family a type belongs to; compatibility is decided per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Pred,
    Bits,
    Unsigned,
    Signed,
    Float,
}

const NAMES: [(&str, Type); 17] = [
    ("pred", Type::Pred),
    ("b8", Type::B8),
    ("u8", Type::U8),
    ("s8", Type::S8),
    ("b16", Type::B16),
    ("u16", Type::U16),
    ("s16", Type::S16),
    ("b32", Type::B32),
    ("u32", Type::U32),
    ("s32", Type::S32),
    ("b64", Type::B64),
    ("u64", Type::U64),
    ("s64", Type::S64),
    ("f16", Type::F16),
    ("bf16", Type::Bf16),
    ("f32", Type::F32),
    ("f64", Type::F64),
];

impl Type {
    /// Parses a suffix without its leading dot (`"u32"`).
    pub(crate) fn from_suffix(s: &str) -> Option<Type> {
        NAMES.iter().find(|(n, _)| *n == s).map(|&(_, t)| t)
    }

    /// The suffix without its leading dot.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Width in bits (1 for `.pred`).
    pub fn bits(self) -> u32 {
        use Type::*;
        match self {
            Pred => 1,
            B8 | U8 | S8 => 8,
            B16 | U16 | S16 | F16 | Bf16 => 16,
            B32 | U32 | S32 | F32 => 32,
            B64 | U64 | S64 | F64 => 64,
        }
    }

    /// Width in bytes of a memory access of this type.
    pub(crate) fn bytes(self) -> u64 {
        u64::from(self.bits().div_ceil(8))
    }

    pub(crate) fn class(self) -> Class {
        use Type::*;
        match self {
            Pred => Class::Pred,
            B8 | B16 | B32 | B64 => Class::Bits,
            U8 | U16 | U32 | U64 => Class::Unsigned,
            S8 | S16 | S32 | S64 => Class::Signed,
            F16 | Bf16 | F32 | F64 => Class::Float,
        }
    }

    pub(crate) fn is_float(self) -> bool {
        self.class() == Class::Float
    }

    pub(crate) fn is_signed(self) -> bool {
        self.class() == Class::Signed
    }

    /// Mask of the low `bits()` bits.
    pub(crate) fn mask(self) -> u64 {
        mask(self.bits())
    }
}

/// Mask of the low `bits` bits of a u64.
pub(crate) fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// PTX's rule for using a register declared `reg` with an instruction of
/// type `inst`: same size and either one is a bit type, both are integers,
/// or both are the same float type. `wider` allows a wider integer/bit
/// register, as PTX permits for `ld`, `st` and `cvt`.
pub(crate) fn compatible(reg: Type, inst: Type, wider: bool) -> bool {
    let (rc, ic) = (reg.class(), inst.class());
    if rc == Class::Pred || ic == Class::Pred {
        return rc == ic;
    }
    if reg.bits() != inst.bits() {
        let widenable = rc != Class::Float && (ic != Class::Float || inst.bits() == 16);
        return wider && reg.bits() > inst.bits() && widenable;
    }
    match (rc, ic) {
        (Class::Bits, _) | (_, Class::Bits) => true,
        (Class::Float, Class::Float) => reg == inst,
        (Class::Float, _) | (_, Class::Float) => false,
        _ => true,
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ".{}", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatibility_follows_ptx_rules() {
        assert!(compatible(Type::B32, Type::F32, false));
        assert!(compatible(Type::U32, Type::S32, false));
        assert!(!compatible(Type::F32, Type::U32, false));
        assert!(!compatible(Type::B64, Type::U32, false));
        assert!(compatible(Type::B32, Type::S8, true));
        assert!(!compatible(Type::B32, Type::S8, false));
        assert!(!compatible(Type::F32, Type::B16, true));
        assert!(!compatible(Type::Pred, Type::B32, false));
    }
}
