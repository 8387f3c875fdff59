//! Weight-only products for few rows (a decode step): `y = x · dequant(w)` in f32, reading
//! the packed small weights and widening them in registers, so a step streams the 2-, 1-
//! or ½-byte weights instead of an f32 copy two to eight times their size. Integer weights
//! are dequantized exactly as the definition says (`f32(w - zero_point) · scale`) from the
//! integer GEMM's panels ([`PackedQuant`], [`dequant_gemm`]); f16 and bf16 weights widen
//! exactly from their [`PackedHalf`] panels ([`half_gemm`]). Each column sums in four
//! partial sums (rows 4g + l into the l-th) in a fixed order, so results do not depend on
//! the thread count, and agree with the f32 GEMM's to rounding.
//!
//! AVX-512 only: elsewhere the f32 GEMM over the dequantized copy is faster than scalar
//! dequantization would be.

use super::{PackedQuant, GROUP, GROUP_BYTES, NR};
use crate::gemm::half::COLS;
use crate::gemm::{Epilogue, MatMut, NarrowB, PackedHalf};
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
    // SAFETY: forwarded from the caller.
    unsafe {
        run(
            pool,
            Job {
                w: Weight::Integer(w),
                x,
                m,
            },
            c,
            epilogue,
        )
    }
}

/// [`dequant_gemm`] for an f16 or bf16 weight.
///
/// # Safety
/// As for [`dequant_gemm`].
pub unsafe fn half_gemm(
    pool: &ThreadPool,
    m: usize,
    x: *const f32,
    w: &PackedHalf,
    c: MatMut,
    epilogue: Epilogue,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        run(
            pool,
            Job {
                w: Weight::Half(w),
                x,
                m,
            },
            c,
            epilogue,
        )
    }
}

/// # Safety
/// As for [`dequant_gemm`].
unsafe fn run(pool: &ThreadPool, job: Job, c: MatMut, epilogue: Epilogue) {
    // The half panels are as wide as the integer ones, so both split by NR columns.
    const _: () = assert!(COLS == NR);
    let n = match job.w {
        Weight::Integer(w) => w.n,
        Weight::Half(w) => w.n(),
    };
    if job.m == 0 || n == 0 {
        return;
    }
    // SAFETY: `panel` writes panel p of C only; the caller checked the CPU and vouches for
    // the operands.
    unsafe {
        super::for_each_panel(pool, job.m, n, c, epilogue, &|p, c| {
            #[cfg(target_arch = "x86_64")]
            x86::panel(&job, p, c)
        })
    };
}

/// A weight of either kind.
#[derive(Clone, Copy)]
enum Weight<'a> {
    Integer(&'a PackedQuant),
    Half(&'a PackedHalf),
}

/// What every panel reads.
struct Job<'a> {
    w: Weight<'a>,
    x: *const f32,
    m: usize,
}

// SAFETY: panels only read `x` and `w`.
unsafe impl Sync for Job<'_> {}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Row i's four partial sums of each of the panel's 16 columns, one per row of K mod
    /// 4: for integer weights lane 4j + l of `acc[i][q]` is column 4q + j, row l (the
    /// panels' byte order); for halves lane j of `acc[i][l]` is column j, row l.
    type Acc<const R: usize> = [[__m512; 4]; R];

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
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        // SAFETY: forwarded from the caller.
        let (n, interleaved) = unsafe {
            match job.w {
                Weight::Integer(w) => {
                    integer(w, job.x, p, &mut acc);
                    (w.n, true)
                }
                Weight::Half(w) if w.bf16() => {
                    half::<R, true>(w, job.x, p, &mut acc);
                    (w.n(), false)
                }
                Weight::Half(w) => {
                    half::<R, false>(w, job.x, p, &mut acc);
                    (w.n(), false)
                }
            }
        };
        // Each column's four partial sums, added as (s0 + s1) + (s2 + s3).
        let mut sums = [[0f32; NR]; R];
        for (sums, acc) in sums.iter_mut().zip(&acc) {
            if interleaved {
                // Lane 4j + l of vector q is column 4q + j, row l of a group.
                let mut lanes = [0f32; 64];
                for (q, a) in acc.iter().enumerate() {
                    // SAFETY: 16 floats at 16q.
                    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr().add(16 * q), *a) };
                }
                for (sum, s) in sums.iter_mut().zip(lanes.chunks_exact(4)) {
                    *sum = (s[0] + s[1]) + (s[2] + s[3]);
                }
            } else {
                // Vector l holds rows l mod 4 of every column.
                let sum =
                    _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
                // SAFETY: NR = 16 floats.
                unsafe { _mm512_storeu_ps(sums.as_mut_ptr(), sum) };
            }
        }
        let cols = NR.min(n - p * NR);
        for (i, sums) in sums.iter().enumerate() {
            for (j, &sum) in sums.iter().enumerate().take(cols) {
                // SAFETY: (i, p·NR + j) is inside C.
                unsafe { *c.at(i, p * NR + j).ptr = sum };
            }
        }
    }

    /// Adds one group's weights `wf` (rows `row0..row0 + 4` of the panel) times each row
    /// of `x` into `acc`.
    ///
    /// # Safety
    /// `x` must hold `R × k` floats.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn accumulate<const R: usize>(
        acc: &mut Acc<R>,
        wf: &[__m512; 4],
        (x, k): (*const f32, usize),
        row0: usize,
    ) {
        let live = (k - row0).min(GROUP);
        for (i, acc) in acc.iter_mut().enumerate() {
            // The group's four activations (zeros past K), in every 4-lane slot.
            let src = x.wrapping_add(i * k + row0);
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

    /// Panel `p` of the integer weight `w`, dequantized group by group.
    ///
    /// # Safety
    /// As for [`dequant_gemm`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn integer<const R: usize>(w: &PackedQuant, x: *const f32, p: usize, acc: &mut Acc<R>) {
        let k = w.k;
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
                // SAFETY: forwarded from the caller.
                unsafe { accumulate(acc, &wf, (x, k), b * w.block + g * GROUP) };
            }
        }
    }

    /// Panel `p` of the half weight `w` (bf16 when `BF16`, else f16), widened row by row
    /// (exactly: every f16 and bf16 is an f32) into the partial sum of its row mod 4.
    ///
    /// # Safety
    /// As for [`dequant_gemm`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn half<const R: usize, const BF16: bool>(
        w: &PackedHalf,
        x: *const f32,
        p: usize,
        acc: &mut Acc<R>,
    ) {
        let (k, panel) = (w.k(), w.panel(p));
        let mut step = |row: usize, l: usize| {
            // SAFETY: the panel holds K rows of COLS halves.
            let wv = unsafe { crate::gemm::half::x86::load(panel.add(row * COLS), BF16) };
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: row i of x holds K floats.
                let xv = _mm512_set1_ps(unsafe { *x.add(i * k + row) });
                acc[l] = _mm512_add_ps(acc[l], _mm512_mul_ps(wv, xv));
            }
        };
        let whole = k / GROUP * GROUP;
        for r0 in (0..whole).step_by(GROUP) {
            for l in 0..GROUP {
                step(r0 + l, l);
            }
        }
        for row in whole..k {
            step(row, row - whole);
        }
    }
}
