//! Weight-only products for few rows (a decode step): `y = x · dequant(w)` in f32, reading
//! the packed integer panels and dequantizing them in registers, so a step streams the
//! 1- or ½-byte weights instead of an f32 copy four or eight times their size. Each
//! weight is dequantized exactly as the definition says (`f32(w - zero_point) · scale`);
//! the sums run in a fixed order per column, so results do not depend on the thread count,
//! and agree with the f32 GEMM's to rounding.
//!
//! AVX-512 only: elsewhere the f32 GEMM over the dequantized copy is faster than scalar
//! dequantization would be.

use super::{PackedQuant, GROUP, GROUP_BYTES, NR};
use crate::gemm::{Epilogue, MatMut};
use crate::pool::ThreadPool;

/// The most rows this path takes; more rows amortize the f32 GEMM's packing.
pub const MAX_ROWS: usize = 8;

/// Whether this CPU runs [`dequant_gemm`].
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `c = epilogue(x · dequant(w))` for `m <= MAX_ROWS` rows of f32 `x` (row stride K).
///
/// # Safety
/// The CPU must have AVX-512F ([`available`]); `x` valid for `m × K` floats, `c` writable
/// for `m × N` and not overlapping `x`, the epilogue's operands valid.
pub unsafe fn dequant_gemm(
    pool: &ThreadPool,
    m: usize,
    x: *const f32,
    w: &PackedQuant,
    c: MatMut,
    epilogue: Epilogue,
) {
    if m == 0 || w.n == 0 {
        return;
    }
    let job = Job { w, x, m };
    // SAFETY: `panel` writes panel p of C only; the caller checked the CPU and vouches for
    // the operands.
    unsafe {
        super::for_each_panel(pool, m, w.n, c, epilogue, &|p, c| {
            #[cfg(target_arch = "x86_64")]
            x86::panel(&job, p, c)
        })
    };
}

/// What every panel reads.
struct Job<'a> {
    w: &'a PackedQuant,
    x: *const f32,
    m: usize,
}

// SAFETY: panels only read `x` and `w`.
unsafe impl Sync for Job<'_> {}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Panel `p` of C for every row.
    ///
    /// # Safety
    /// As for [`dequant_gemm`].
    pub(super) unsafe fn panel(job: &Job, p: usize, c: MatMut) {
        // SAFETY: forwarded from the caller; one register allocation per row count.
        unsafe {
            match job.m {
                1 => rows::<1>(job, p, c),
                2 => rows::<2>(job, p, c),
                3 => rows::<3>(job, p, c),
                4 => rows::<4>(job, p, c),
                5 => rows::<5>(job, p, c),
                6 => rows::<6>(job, p, c),
                7 => rows::<7>(job, p, c),
                _ => rows::<8>(job, p, c),
            }
        }
    }

    /// [`panel`] for `R` rows.
    ///
    /// # Safety
    /// As for [`dequant_gemm`], with `R == job.m`.
    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const R: usize>(job: &Job, p: usize, c: MatMut) {
        let w = job.w;
        let (k, m) = (w.k, R);
        // acc[i][q]: columns 4q..4q+4 of row i, four partial sums (one per lane of a group).
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        let block_bytes = w.block_bytes();
        for b in 0..w.blocks {
            let meta = (p * w.blocks + b) * NR;
            // Each column's offset and scale, repeated for its four lanes: lane 4j + l of
            // vector q takes column 4q + j.
            // SAFETY: the block's 16 offsets and scales.
            let (offs, scales) = unsafe {
                (
                    _mm512_cvtepi32_ps(
                        _mm512_loadu_si512(w.offsets.as_ptr().add(meta) as *const _),
                    ),
                    _mm512_loadu_ps(w.scales.as_ptr().add(meta)),
                )
            };
            let spread = |q: i32| {
                let j = |d: i32| 4 * q + d;
                _mm512_setr_epi32(
                    j(0),
                    j(0),
                    j(0),
                    j(0),
                    j(1),
                    j(1),
                    j(1),
                    j(1),
                    j(2),
                    j(2),
                    j(2),
                    j(2),
                    j(3),
                    j(3),
                    j(3),
                    j(3),
                )
            };
            let idx = [0, 1, 2, 3].map(spread);
            let off = idx.map(|i| _mm512_permutexvar_ps(i, offs));
            let scale = idx.map(|i| _mm512_permutexvar_ps(i, scales));
            let base = w.weights[(p * w.blocks + b) * block_bytes..].as_ptr();
            let rows = w.block.min(k - b * w.block);
            let mask = _mm_set1_epi8(0x0F);
            for g in 0..rows.div_ceil(GROUP) {
                let at = match w.nibbles {
                    true => base.wrapping_add(g / 2 * GROUP_BYTES),
                    false => base.wrapping_add(g * GROUP_BYTES),
                };
                let mut wf = [_mm512_setzero_ps(); 4];
                for (q, wf) in wf.iter_mut().enumerate() {
                    // SAFETY: group g of the block is inside the panel.
                    let v = unsafe { _mm_loadu_si128(at.add(16 * q) as *const __m128i) };
                    let v = match (w.nibbles, g % 2) {
                        (false, _) => v,
                        (true, 0) => _mm_and_si128(v, mask),
                        (true, _) => _mm_and_si128(_mm_srli_epi16(v, 4), mask),
                    };
                    // (u - offset) is exact in f32, and so is the definition's centred value.
                    let u = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v));
                    *wf = _mm512_mul_ps(_mm512_sub_ps(u, off[q]), scale[q]);
                }
                let row0 = b * w.block + g * GROUP;
                let live = (k - row0).min(GROUP);
                for (i, acc) in acc.iter_mut().enumerate() {
                    // The group's four activations (zeros past K), in every 4-lane slot.
                    let src = job.x.wrapping_add(i * k + row0);
                    let xv = if live == GROUP {
                        // SAFETY: row i of x holds K floats.
                        _mm512_broadcast_f32x4(unsafe { _mm_loadu_ps(src) })
                    } else {
                        let mut four = [0f32; 4];
                        // SAFETY: as above, `live` of them.
                        unsafe { std::ptr::copy_nonoverlapping(src, four.as_mut_ptr(), live) };
                        // SAFETY: four floats.
                        _mm512_broadcast_f32x4(unsafe { _mm_loadu_ps(four.as_ptr()) })
                    };
                    for q in 0..4 {
                        acc[q] = _mm512_add_ps(acc[q], _mm512_mul_ps(wf[q], xv));
                    }
                }
            }
        }
        let cols = NR.min(w.n - p * NR);
        for (i, acc) in acc.iter().enumerate().take(m) {
            let mut lanes = [0f32; 64];
            for (q, a) in acc.iter().enumerate() {
                // SAFETY: 16 floats at 16q.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr().add(16 * q), *a) };
            }
            for j in 0..cols {
                let s = &lanes[4 * j..4 * j + 4];
                // SAFETY: (i, p·NR + j) is inside C.
                unsafe { *c.at(i, p * NR + j).ptr = (s[0] + s[1]) + (s[2] + s[3]) };
            }
        }
    }
}
