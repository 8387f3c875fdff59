//! Two 4-bit values per byte: how an artifact stores a constant whose bytes all fit in a
//! nibble. The IR keeps int4 weights one value per byte (i8 in `-8..=7`, or u8 in `0..=15`
//! with zero points), so that every op, the interpreter and the kernels' packers read them
//! as plain bytes; storing those bytes whole made an int4 MiniLM executable no smaller than
//! an int8 one. The writer packs such constants and the runtime unpacks them once, when the
//! artifact opens.
//!
//! Byte `i` holds value `2i` in its low nibble and value `2i + 1` in its high nibble (zero
//! past an odd length), the order onnxruntime's `MatMulNBits` uses.

use kiln_ir::DType;
use serde::{Deserialize, Serialize};

/// How the values of a packed constant read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Nibbles {
    /// i8 in `-8..=7`, stored two's complement in 4 bits.
    Signed,
    /// u8 in `0..=15`.
    Unsigned,
}

impl Nibbles {
    /// The packing that holds every element of `bytes`, a constant of `dtype`, if one does:
    /// i8 in `-8..=7` or u8 in `0..=15`; `None` for any other type.
    pub fn fitting(dtype: DType, bytes: &[u8]) -> Option<Nibbles> {
        match dtype {
            DType::I8 => bytes
                .iter()
                .all(|&b| (-8..=7).contains(&(b as i8)))
                .then_some(Nibbles::Signed),
            DType::U8 => bytes.iter().all(|&b| b <= 15).then_some(Nibbles::Unsigned),
            _ => None,
        }
    }

    /// `bytes` packed two per byte. Every byte must fit this packing ([`Nibbles::fitting`]).
    pub fn pack(self, bytes: &[u8]) -> Vec<u8> {
        bytes
            .chunks(2)
            .map(|pair| (pair[0] & 0xF) | (pair.get(1).map_or(0, |&hi| hi & 0xF) << 4))
            .collect()
    }

    /// Unpacks `packed` into `out`, one value per byte; `packed` must hold
    /// `out.len().div_ceil(2)` bytes.
    pub fn unpack(self, packed: &[u8], out: &mut [u8]) {
        debug_assert_eq!(packed.len(), out.len().div_ceil(2));
        let widen = |n: u8| match self {
            // Shifting the nibble to the top and back extends its sign.
            Nibbles::Signed => (((n << 4) as i8) >> 4) as u8,
            Nibbles::Unsigned => n,
        };
        for (pair, &b) in out.chunks_mut(2).zip(packed) {
            pair[0] = widen(b & 0xF);
            if let Some(hi) = pair.get_mut(1) {
                *hi = widen(b >> 4);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_at_odd_and_even_lengths() {
        let signed: Vec<u8> = (-8i8..=7).map(|v| v as u8).collect();
        let unsigned: Vec<u8> = (0u8..=15).collect();
        for (values, dtype) in [(signed, DType::I8), (unsigned, DType::U8)] {
            let nibbles = Nibbles::fitting(dtype, &values).expect("all fit");
            for len in [0, 1, 2, 15, 16] {
                let packed = nibbles.pack(&values[..len]);
                assert_eq!(packed.len(), len.div_ceil(2));
                let mut out = vec![0xAA; len];
                nibbles.unpack(&packed, &mut out);
                assert_eq!(out, values[..len]);
            }
        }
    }

    #[test]
    fn values_outside_a_nibble_do_not_fit() {
        let fitting = Nibbles::fitting;
        assert_eq!(
            fitting(DType::I8, &[7, (-8i8) as u8]),
            Some(Nibbles::Signed)
        );
        assert_eq!(fitting(DType::I8, &[8]), None);
        assert_eq!(fitting(DType::I8, &[(-9i8) as u8]), None);
        assert_eq!(fitting(DType::U8, &[15]), Some(Nibbles::Unsigned));
        assert_eq!(fitting(DType::U8, &[16]), None);
        assert_eq!(
            fitting(DType::Bool, &[0, 1]),
            None,
            "only the 8-bit integers pack"
        );
    }

    #[test]
    fn the_low_nibble_holds_the_even_value() {
        assert_eq!(Nibbles::Unsigned.pack(&[1, 2, 3]), vec![0x21, 0x03]);
        assert_eq!(Nibbles::Signed.pack(&[(-1i8) as u8, 0]), vec![0x0F]);
    }
}
