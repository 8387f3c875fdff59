//! Two 4-bit values per byte: how an artifact stores a constant whose bytes all fit in a
//! nibble. The IR keeps int4 weights one value per byte (i8 in `-8..=7`, or u8 in `0..=15`
//! with zero points), so that every op, the interpreter and the kernels' packers read them
//! as plain bytes; storing those bytes whole made an int4 MiniLM executable no smaller than
//! an int8 one. The writer packs such constants and the runtime unpacks them once, when the
//! artifact opens.
//!
//! Byte `i` holds value `2i` in its low nibble and value `2i + 1` in its high nibble (zero
//! past an odd length), the order onnxruntime's `MatMulNBits` uses.

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
    /// The packing that holds every byte of `bytes` read as `signed` (i8) or not (u8), if
    /// one does.
    pub fn fitting(bytes: &[u8], signed: bool) -> Option<Nibbles> {
        if signed {
            let fits = bytes.iter().all(|&b| (-8..=7).contains(&(b as i8)));
            fits.then_some(Nibbles::Signed)
        } else {
            bytes.iter().all(|&b| b <= 15).then_some(Nibbles::Unsigned)
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
        for (values, signed) in [(signed, true), (unsigned, false)] {
            let nibbles = Nibbles::fitting(&values, signed).expect("all fit");
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
        assert_eq!(
            Nibbles::fitting(&[7, 8u8.wrapping_neg()], true),
            Some(Nibbles::Signed)
        );
        assert_eq!(Nibbles::fitting(&[8], true), None);
        assert_eq!(Nibbles::fitting(&[(-9i8) as u8], true), None);
        assert_eq!(Nibbles::fitting(&[15], false), Some(Nibbles::Unsigned));
        assert_eq!(Nibbles::fitting(&[16], false), None);
    }

    #[test]
    fn the_low_nibble_holds_the_even_value() {
        assert_eq!(Nibbles::Unsigned.pack(&[1, 2, 3]), vec![0x21, 0x03]);
        assert_eq!(Nibbles::Signed.pack(&[(-1i8) as u8, 0]), vec![0x0F]);
    }
}
