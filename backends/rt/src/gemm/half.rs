//! f16 and bf16 weights kept at two bytes for every product: the f32 GEMM widens them
//! block by block as it packs B (many rows), and `qgemm::dequant` widens them in registers
//! (few rows), so a weight-only half layer holds one copy of half the size of an f32 one.
//! Widening is exact (every f16 and bf16 is an f32), so a product over these panels equals
//! the product over the f32 weight.
//!
//! A weight `[K, N]` is stored in panels of [`COLS`] columns, each panel K rows of
//! `COLS` halves (zero past N), so a row of a panel widens with one instruction.

use super::{each_narrow_panel, pack_values, NarrowB};
use crate::aligned::Aligned;

/// Columns per panel.
pub const COLS: usize = 16;

/// A half weight `[K, N]` in panels; see the module docs.
pub struct PackedHalf {
    k: usize,
    n: usize,
    bf16: bool,
    /// Whether this CPU widens 16 halves at once (AVX-512F).
    simd: bool,
    /// Panel after panel, row after row, two bytes per half (little-endian bits).
    bytes: Aligned<u8>,
}

impl PackedHalf {
    /// Packs the `k × n` halves at `values` (row-major bits, bf16 when `bf16`, else IEEE
    /// f16; they may be unaligned). `None` when the packed size overflows.
    ///
    /// # Safety
    /// `values` must be valid for `k × n` halves.
    pub unsafe fn new(k: usize, n: usize, values: *const u16, bf16: bool) -> Option<PackedHalf> {
        let len = n.div_ceil(COLS).checked_mul(k)?.checked_mul(2 * COLS)?;
        let mut bytes = Aligned::<u8>::zeroed(len);
        for row in 0..k {
            for col in 0..n {
                let at = 2 * (((col / COLS) * k + row) * COLS + col % COLS);
                // SAFETY: (row, col) is inside the weight.
                let bits = unsafe { values.add(row * n + col).read_unaligned() };
                bytes[at..at + 2].copy_from_slice(&bits.to_le_bytes());
            }
        }
        Some(PackedHalf {
            k,
            n,
            bf16,
            simd: simd(),
            bytes,
        })
    }

    /// Whether the halves are bf16 (else IEEE f16).
    pub fn bf16(&self) -> bool {
        self.bf16
    }

    /// Size of the packed copy.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Panel `p`: K rows of [`COLS`] halves.
    pub(crate) fn panel(&self, p: usize) -> *const u16 {
        self.bytes.as_ptr().wrapping_add(2 * p * self.k * COLS) as *const u16
    }
}

impl NarrowB for PackedHalf {
    fn k(&self) -> usize {
        self.k
    }

    fn n(&self) -> usize {
        self.n
    }

    fn value(&self, r: usize, c: usize) -> f32 {
        // SAFETY: (r, c) is inside the weight, so inside its panel.
        let bits = unsafe { self.panel(c / COLS).add(r * COLS + c % COLS).read() };
        match self.bf16 {
            true => half::bf16::from_bits(bits).to_f32(),
            false => half::f16::from_bits(bits).to_f32(),
        }
    }

    unsafe fn pack_block(
        &self,
        nr: usize,
        (pc, kc): (usize, usize),
        (col, cols): (usize, usize),
        dst: *mut f32,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.simd && nr.is_multiple_of(COLS) && col.is_multiple_of(COLS) {
            let panels = self.n.div_ceil(COLS);
            // SAFETY: forwarded from the caller; `simd` says the CPU has AVX-512F.
            return unsafe {
                each_narrow_panel((nr, COLS, panels), kc, (col, cols), dst, |p, out| {
                    x86::widen_rows(self, p, (pc, kc), out, nr)
                })
            };
        }
        // SAFETY: forwarded from the caller.
        unsafe { pack_values(self, nr, (pc, kc), (col, cols), dst) }
    }
}

/// Whether this CPU widens with AVX-512F.
fn simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{PackedHalf, COLS};
    use std::arch::x86_64::*;

    /// 16 halves at `src` (bf16 when `bf16`) as f32, exactly.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `src` must hold 16 halves.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn load(src: *const u16, bf16: bool) -> __m512 {
        // SAFETY: forwarded from the caller.
        let v = unsafe { _mm256_loadu_si256(src as *const __m256i) };
        match bf16 {
            // A bf16 is the top half of its f32.
            true => _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16)),
            false => _mm512_cvtph_ps(v),
        }
    }

    /// Rows `pc..pc + kc` of half panel `p`, widened into the rows of `out` (row stride
    /// `nr`), one instruction a row.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the rows must exist, and `kc` rows of 16 floats at
    /// `out` be writable.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn widen_rows(
        w: &PackedHalf,
        p: usize,
        (pc, kc): (usize, usize),
        out: *mut f32,
        nr: usize,
    ) {
        let src = w.panel(p).wrapping_add(pc * COLS);
        for r in 0..kc {
            // SAFETY: forwarded from the caller.
            unsafe { _mm512_storeu_ps(out.add(r * nr), load(src.add(r * COLS), w.bf16)) };
        }
    }
}
