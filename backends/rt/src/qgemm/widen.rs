//! Integer weights as the f32 GEMM's B, for weight-only layers at many rows: each block of
//! B is dequantized from the integer panels as it is packed, `f32(w_u8 - offset) · scale`,
//! which is the definition's `f32(w - zero_point) · scale` exactly. So a weight-only layer
//! keeps only its integer panels (one or half a byte per weight), where an f32 copy beside
//! them took four more.

use super::{PackedQuant, GROUP, GROUP_BYTES, NR};
use crate::gemm::{each_narrow_panel, pack_values, NarrowB};

impl NarrowB for PackedQuant {
    fn k(&self) -> usize {
        self.k
    }

    fn n(&self) -> usize {
        self.n
    }

    fn value(&self, r: usize, c: usize) -> f32 {
        let (p, j) = (c / NR, c % NR);
        let (b, rb) = (r / self.block, r % self.block);
        let (g, lane) = (rb / GROUP, rb % GROUP);
        let base = (p * self.blocks + b) * self.block_bytes();
        let u = match self.nibbles {
            true => {
                self.weights[base + g / 2 * GROUP_BYTES + j * GROUP + lane] >> (4 * (g % 2)) & 0x0F
            }
            false => self.weights[base + g * GROUP_BYTES + j * GROUP + lane],
        };
        let meta = (p * self.blocks + b) * NR + j;
        (f32::from(u) - self.offsets[meta] as f32) * self.scales[meta]
    }

    unsafe fn pack_block(
        &self,
        nr: usize,
        (pc, kc): (usize, usize),
        (col, cols): (usize, usize),
        dst: *mut f32,
    ) {
        #[cfg(target_arch = "x86_64")]
        if super::dequant::available()
            && nr.is_multiple_of(NR)
            && col.is_multiple_of(NR)
            && pc.is_multiple_of(GROUP)
        {
            let panels = self.n.div_ceil(NR);
            // SAFETY: forwarded from the caller; the CPU has AVX-512F.
            return unsafe {
                each_narrow_panel((nr, NR, panels), kc, (col, cols), dst, |p, out| {
                    x86::panel_rows(self, p, (pc, kc), out, nr)
                })
            };
        }
        // SAFETY: forwarded from the caller.
        unsafe { pack_values(self, nr, (pc, kc), (col, cols), dst) }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Rows `pc..pc + kc` (`pc` on a group) of integer panel `p`, dequantized into the
    /// rows of `out` (row stride `nr`), block by block: each group of four rows (64
    /// bytes, four per column) widens to four rows of 16 floats, the column's offset and
    /// scale applied as whole vectors.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the rows must exist, and `kc` rows of 16 floats at
    /// `out` be writable.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn panel_rows(
        w: &PackedQuant,
        p: usize,
        (pc, kc): (usize, usize),
        out: *mut f32,
        nr: usize,
    ) {
        let (mut r, end) = (pc, pc + kc);
        while r < end {
            let b = r / w.block;
            let last = end.min((b + 1) * w.block);
            // SAFETY: rows r..last of panel p lie in block b; `out` holds rows pc..end.
            unsafe { block_rows(w, (p, b), (r, last), out.wrapping_sub(pc * nr), nr) };
            r = last;
        }
    }

    /// Rows `r..last` (in block `b`, `r` on a group) of integer panel `p`, dequantized into
    /// the rows of the same index at `out` (row stride `nr`).
    ///
    /// # Safety
    /// As for [`pack_whole`]; rows `r..last` of `out` must be writable.
    #[target_feature(enable = "avx512f")]
    unsafe fn block_rows(
        w: &PackedQuant,
        (p, b): (usize, usize),
        (r, last): (usize, usize),
        out: *mut f32,
        nr: usize,
    ) {
        let meta = (p * w.blocks + b) * NR;
        // SAFETY: the block's 16 offsets and scales.
        let (off, scale) = unsafe {
            (
                _mm512_cvtepi32_ps(_mm512_loadu_si512(w.offsets.as_ptr().add(meta) as *const _)),
                _mm512_loadu_ps(w.scales.as_ptr().add(meta)),
            )
        };
        let base = w.weights[(p * w.blocks + b) * w.block_bytes()..].as_ptr();
        let (byte, nibble) = (_mm512_set1_epi32(0xFF), _mm512_set1_epi8(0x0F));
        let first = r - b * w.block;
        for g in first / GROUP..(last - b * w.block).div_ceil(GROUP) {
            let at = match w.nibbles {
                true => base.wrapping_add(g / 2 * GROUP_BYTES),
                false => base.wrapping_add(g * GROUP_BYTES),
            };
            // SAFETY: group g of the block is inside the panel.
            let v = unsafe { _mm512_loadu_si512(at as *const _) };
            let v = match (w.nibbles, g % 2) {
                (false, _) => v,
                (true, 0) => _mm512_and_si512(v, nibble),
                (true, _) => _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble),
            };
            for lane in 0..GROUP {
                let row = b * w.block + g * GROUP + lane;
                if row >= last {
                    break;
                }
                // Byte 4j + lane is column j's weight in this row.
                let u = _mm512_and_si512(
                    _mm512_srlv_epi32(v, _mm512_set1_epi32(8 * lane as i32)),
                    byte,
                );
                let f = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(u), off), scale);
                // SAFETY: row `row` of `out` is writable.
                unsafe { _mm512_storeu_ps(out.add(row * nr), f) };
            }
        }
    }
}
