//! f16 and bf16 weights kept at two bytes for every product: the f32 GEMM widens them
//! block by block as it packs B (many rows), and `qgemm::dequant` widens them in registers
//! (few rows), so a weight-only half layer holds one copy of half the size of an f32 one.
//! Widening is exact (every f16 and bf16 is an f32), so a product over these panels equals
//! the product over the f32 weight.
//!
//! A weight `[K, N]` is stored in panels of [`COLS`] columns, each panel K rows of
//! `COLS` halves (zero past N), so a row of a panel widens with one instruction.

use super::NarrowB;
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

    /// Widens the [`COLS`] halves at `src` into `dst`.
    ///
    /// # Safety
    /// `src` must hold `COLS` halves and `dst` room for `COLS` floats.
    unsafe fn widen(&self, src: *const u16, dst: *mut f32) {
        #[cfg(target_arch = "x86_64")]
        if self.simd {
            // SAFETY: `simd` says the CPU has AVX-512F; forwarded from the caller.
            return unsafe { x86::widen(src, self.bf16, dst) };
        }
        for i in 0..COLS {
            // SAFETY: forwarded from the caller.
            unsafe {
                let bits = src.add(i).read();
                *dst.add(i) = match self.bf16 {
                    true => half::bf16::from_bits(bits).to_f32(),
                    false => half::f16::from_bits(bits).to_f32(),
                };
            }
        }
    }
}

impl NarrowB for PackedHalf {
    fn k(&self) -> usize {
        self.k
    }

    fn n(&self) -> usize {
        self.n
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
            // SAFETY: `simd` says the CPU has AVX-512F; forwarded from the caller.
            return unsafe { x86::pack_whole(self, nr, (pc, kc), (col, cols), dst) };
        }
        let mut wide = [0f32; COLS];
        for (panel, j0) in (0..cols).step_by(nr).enumerate() {
            let live = nr.min(cols - j0);
            for p in 0..kc {
                // SAFETY: row p of the panel lies within dst.
                let out = unsafe { dst.add((panel * kc + p) * nr) };
                let mut j = 0;
                while j < live {
                    let c = col + j0 + j;
                    let (at, take) = (c % COLS, (COLS - c % COLS).min(live - j));
                    let src = self.panel(c / COLS).wrapping_add((pc + p) * COLS);
                    // SAFETY: the row of the panel holds COLS halves; `out` has `nr` floats
                    // and j + take <= live <= nr.
                    unsafe {
                        match take == COLS {
                            true => self.widen(src, out.add(j)),
                            false => {
                                self.widen(src, wide.as_mut_ptr());
                                std::ptr::copy_nonoverlapping(
                                    wide[at..].as_ptr(),
                                    out.add(j),
                                    take,
                                );
                            }
                        }
                    }
                    j += take;
                }
                // SAFETY: as above, the panel row's padding.
                unsafe { std::ptr::write_bytes(out.add(live), 0, nr - live) };
            }
        }
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

    /// [`PackedHalf::pack_block`] where the f32 panels are whole half panels wide and
    /// start on one (the AVX-512 kernel's 32 columns): each row of each half panel widens
    /// with one instruction, and the padding past N is the half panels' zeros.
    ///
    /// # Safety
    /// As for [`PackedHalf::pack_block`]; the CPU must have AVX-512F, `nr` and `col` must
    /// be multiples of [`COLS`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_whole(
        w: &PackedHalf,
        nr: usize,
        (pc, kc): (usize, usize),
        (col, cols): (usize, usize),
        dst: *mut f32,
    ) {
        let halves = cols.div_ceil(COLS);
        for (panel, j0) in (0..cols).step_by(nr).enumerate() {
            let out = dst.wrapping_add(panel * kc * nr);
            for h in 0..nr / COLS {
                let half = (col + j0) / COLS + h;
                let at = out.wrapping_add(h * COLS);
                if j0 / COLS + h >= halves {
                    for p in 0..kc {
                        // SAFETY: row p of the f32 panel holds nr floats.
                        unsafe { _mm512_storeu_ps(at.add(p * nr), _mm512_setzero_ps()) };
                    }
                    continue;
                }
                let src = w.panel(half).wrapping_add(pc * COLS);
                for p in 0..kc {
                    // SAFETY: row pc + p of the half panel exists; row p of the f32 panel
                    // holds nr floats.
                    unsafe {
                        let v = load(src.add(p * COLS), w.bf16);
                        _mm512_storeu_ps(at.add(p * nr), v);
                    }
                }
            }
        }
    }

    /// [`load`] into `dst`.
    ///
    /// # Safety
    /// As for [`load`]; `dst` must have room for 16 floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn widen(src: *const u16, bf16: bool, dst: *mut f32) {
        // SAFETY: forwarded from the caller.
        unsafe { _mm512_storeu_ps(dst, load(src, bf16)) }
    }
}
