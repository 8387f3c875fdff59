//! GEMM micro-kernels: one register tile of C updated by a rank-`kc` product of an A
//! panel (packed, or read in place) and a B panel.
//!
//! Each kernel family is const-generic over the number of live rows `R`, so edge rows use
//! the same code with fewer accumulators and every C element sees the same sequence of fused
//! multiply-adds whatever the tile shape: results are bit-identical for any work split.
//! The AVX-512 and AVX2 kernels are selected at run time; the portable kernel serves other
//! CPUs.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// One micro-kernel call. Element (i, p) of A is at `a + i * a_rs + p * a_step`: packed
/// (`a_rs` 1, `a_step` mr) or a row-major A read in place (`a_rs` its row stride, `a_step`
/// 1). B has `ldb` floats per k step and at least `nr` readable floats per step (packed or
/// direct).
pub(super) struct Tile {
    pub kc: usize,
    pub a: *const f32,
    pub a_rs: usize,
    pub a_step: usize,
    pub b: *const f32,
    pub ldb: usize,
    pub c: *mut f32,
    pub rs_c: isize,
    pub cs_c: isize,
    /// Live columns of C, at most the kernel's `nr`.
    pub cols: usize,
    /// Add the product to C instead of overwriting it.
    pub load_c: bool,
}

/// A micro-kernel for a fixed number of rows.
pub(super) type KernelFn = unsafe fn(&Tile);

/// A few rows of A against an in-place B (unit column stride), for GEMV-like products: B is
/// read row by row in long contiguous runs instead of one narrow panel at a time.
pub(super) struct RowStream {
    pub kc: usize,
    /// Rows of A; element (i, p) at `a + i * a_rs + p * a_cs`.
    pub a: *const f32,
    pub a_rs: isize,
    pub a_cs: isize,
    /// `kc × cols` of B, `ldb` floats between rows, columns contiguous.
    pub b: *const f32,
    pub ldb: usize,
    /// Rows of C, `c_rs` floats apart, columns contiguous.
    pub c: *mut f32,
    pub c_rs: isize,
    pub cols: usize,
    /// Add the product to C instead of overwriting it.
    pub load_c: bool,
}

/// A micro-kernel family with its register tile and cache blocking.
pub(super) struct Kernel {
    /// A short name for benchmarks and tests.
    pub name: &'static str,
    /// Rows of the register tile.
    pub mr: usize,
    /// Columns of the register tile.
    pub nr: usize,
    /// Depth of one packed block (the A micro-panel `mr × kc` stays in L1).
    pub kc: usize,
    /// Rows of one packed A block (bounds the A packing buffer).
    pub mc: usize,
    /// Columns of one packed B block (the `kc × nc` block stays in L2).
    pub nc: usize,
    /// `by_rows[r - 1]` computes a tile with `r` live rows.
    pub by_rows: &'static [KernelFn],
    /// The same kernels reading a row-major A in place (any `a_rs`, `a_step` 1), if this
    /// family has them; they skip packing A, which cost 8% of a 1024³ product.
    /// `strided_a[r - 1]` computes `r` rows and gives results bit-identical to `by_rows`.
    pub strided_a: Option<&'static [KernelFn]>,
    /// A row-streaming routine for very few rows of A, giving bit-identical results to
    /// `by_rows` (same FMA sequence per element), if this family has one.
    /// `stream[r - 1]` handles `r` rows.
    pub stream: Option<&'static [unsafe fn(&RowStream)]>,
}

/// Stores one row of results to C: overwrite or accumulate, honouring `cols` and strides.
///
/// # Safety
/// `row` must point at row `i` of the tile in C, valid for `t.cols` columns.
#[inline(always)]
unsafe fn store_row_scalar(t: &Tile, row: *mut f32, out: &[f32]) {
    for (j, &v) in out.iter().enumerate().take(t.cols) {
        // SAFETY: j < cols, and the caller guarantees those columns are in C.
        let p = unsafe { row.offset(j as isize * t.cs_c) };
        // SAFETY: as above.
        unsafe { *p = if t.load_c { *p + v } else { v } };
    }
}

/// Portable kernel: 4 × 8, plain multiply-add (no FMA guarantee on unknown CPUs).
///
/// # Safety
/// `t` must describe valid A, B and C memory for `R` rows, `t.kc` steps and `t.cols` columns.
unsafe fn portable<const R: usize>(t: &Tile) {
    const NR: usize = 8;
    let mut acc = [[0f32; NR]; R];
    for p in 0..t.kc {
        // SAFETY: A has R rows at this step and B at least NR floats per step.
        let b = unsafe { std::slice::from_raw_parts(t.b.add(p * t.ldb), NR) };
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: as above.
            let ai = unsafe { *t.a.add(i * t.a_rs + p * t.a_step) };
            for (c, &bj) in row.iter_mut().zip(b) {
                *c += ai * bj;
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: row i < R is inside the tile.
        unsafe { store_row_scalar(t, t.c.offset(i as isize * t.rs_c), row) };
    }
}

/// The portable kernel family.
pub(super) static PORTABLE: Kernel = Kernel {
    name: "portable-4x8",
    mr: 4,
    nr: 8,
    kc: 256,
    mc: 64,
    nc: 2048,
    by_rows: &[portable::<1>, portable::<2>, portable::<3>, portable::<4>],
    strided_a: Some(&[portable::<1>, portable::<2>, portable::<3>, portable::<4>]),
    stream: None,
};

/// The rows of A at one depth step: packed (rows adjacent, a constant offset each) or
/// strided (a row-major A read in place, `a_rs` floats between rows).
#[derive(Clone, Copy)]
struct ARows<const PACKED: bool> {
    a: *const f32,
    rs: usize,
    step: usize,
}

impl<const PACKED: bool> ARows<PACKED> {
    #[inline(always)]
    fn new(t: &Tile) -> Self {
        debug_assert!(!PACKED || t.a_rs == 1);
        ARows {
            a: t.a,
            rs: if PACKED { 1 } else { t.a_rs },
            step: t.a_step,
        }
    }

    /// Row `i` at the current step.
    #[inline(always)]
    fn row(&self, i: usize) -> *const f32 {
        self.a.wrapping_add(i * self.rs)
    }

    #[inline(always)]
    fn step(&mut self) {
        self.a = self.a.wrapping_add(self.step);
    }
}

/// Prefetches the first and last live column of each of the tile's `rows` rows of C, so the
/// final update does not stall on misses (rows 4 KiB apart share one L1 set).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_c(t: &Tile, rows: usize) {
    let last = (t.cols.max(1) - 1) as isize * t.cs_c;
    for i in 0..rows {
        let row = t.c.wrapping_offset(i as isize * t.rs_c);
        // SAFETY: prefetches never fault, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(row as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_offset(last) as *const i8);
        }
    }
}

/// AVX2 + FMA kernel: up to 6 rows × 16 columns, 12 ymm accumulators.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `t` as for [`portable`] with 16 readable B floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<const R: usize>(t: &Tile) {
    prefetch_c(t, R);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (mut a, mut b) = (ARows::<true>::new(t), t.b);
    for _ in 0..t.kc {
        // SAFETY: B has 16 readable floats per step, A has R; pointers advance in bounds.
        unsafe {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*a.row(i));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
            a.step();
            b = b.add(t.ldb);
        }
    }
    // Spill through a constant-indexed array so the accumulators stay in registers above.
    let mut out = [[0f32; 16]; R];
    for (row, acc) in out.iter_mut().zip(&acc) {
        // SAFETY: each row of `out` holds 16 floats.
        unsafe {
            _mm256_storeu_ps(row.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[1]);
        }
    }
    // SAFETY: the CPU supports AVX2 (checked by the caller); the tile is valid.
    unsafe { avx2_store(t, out.as_flattened()) };
}

/// Writes a finished AVX2 tile (`rows × 16`, row-major in `out`) to C.
///
/// # Safety
/// As for [`avx2`]; `out` holds the live rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline(never)]
unsafe fn avx2_store(t: &Tile, out: &[f32]) {
    for (i, row) in out.chunks_exact(16).enumerate() {
        // SAFETY: row i lies in the tile; the vector path needs 16 contiguous columns.
        unsafe {
            let c = t.c.offset(i as isize * t.rs_c);
            if t.cols == 16 && t.cs_c == 1 {
                let mut v0 = _mm256_loadu_ps(row.as_ptr());
                let mut v1 = _mm256_loadu_ps(row.as_ptr().add(8));
                if t.load_c {
                    v0 = _mm256_add_ps(_mm256_loadu_ps(c), v0);
                    v1 = _mm256_add_ps(_mm256_loadu_ps(c.add(8)), v1);
                }
                _mm256_storeu_ps(c, v0);
                _mm256_storeu_ps(c.add(8), v1);
            } else {
                store_row_scalar(t, c, row);
            }
        }
    }
}

/// The AVX2 + FMA kernel family.
#[cfg(target_arch = "x86_64")]
pub(super) static AVX2: Kernel = Kernel {
    name: "avx2-6x16",
    mr: 6,
    nr: 16,
    kc: 256,
    mc: 144,
    nc: 384,
    by_rows: &[
        avx2::<1>, avx2::<2>, avx2::<3>, avx2::<4>, avx2::<5>, avx2::<6>,
    ],
    strided_a: None,
    stream: None,
};

/// How many depth steps ahead the AVX-512 kernel prefetches B (both cache lines of a
/// step). B's micro-panels stream from L2 (see `Block::sweep`), which the hardware
/// prefetcher alone did not keep up with. kiln/onnxruntime latency, 128×768×2048 and
/// 1024³, 1 thread, 3 rounds side by side: 1.12-1.13 without, 1.05-1.09 at 8 steps,
/// 1.01-1.08 at 16, 1.03-1.08 at 24, 1.04-1.08 at 32.
#[cfg(target_arch = "x86_64")]
const B_PREFETCH_STEPS: usize = 16;

/// AVX-512 kernel: up to 12 rows × 32 columns, 24 zmm accumulators.
///
/// # Safety
/// The CPU must support AVX-512F; `t` as for [`portable`] with 32 readable B floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<const R: usize, const PACKED: bool>(t: &Tile) {
    prefetch_c(t, R);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (mut a, mut b) = (ARows::<PACKED>::new(t), t.b);
    for _ in 0..t.kc {
        // SAFETY: B has 32 readable floats per step, A has R; pointers advance in bounds.
        unsafe {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            // A hint, which never faults: past the panel's end it fetches nothing useful.
            let ahead = b.wrapping_add(B_PREFETCH_STEPS * t.ldb);
            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16) as *const i8);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.row(i));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
            a.step();
            b = b.add(t.ldb);
        }
    }
    if t.cols == 32 && t.cs_c == 1 {
        // A full tile goes from the registers to C. Spilling it to the stack first (which
        // was not 64-byte aligned, so every store split a cache line) and reading it back
        // cost about 1% of a 1024³ product.
        for (i, acc) in acc.iter().enumerate() {
            // SAFETY: row i < R lies in the tile, with 32 contiguous columns.
            unsafe {
                let c = t.c.offset(i as isize * t.rs_c);
                let (mut v0, mut v1) = (acc[0], acc[1]);
                if t.load_c {
                    v0 = _mm512_add_ps(_mm512_loadu_ps(c), v0);
                    v1 = _mm512_add_ps(_mm512_loadu_ps(c.add(16)), v1);
                }
                _mm512_storeu_ps(c, v0);
                _mm512_storeu_ps(c.add(16), v1);
            }
        }
        return;
    }
    // Edge tiles spill through a constant-indexed array so the accumulators stay in
    // registers above.
    let mut out = [[0f32; 32]; R];
    for (row, acc) in out.iter_mut().zip(&acc) {
        // SAFETY: each row of `out` holds 32 floats.
        unsafe {
            _mm512_storeu_ps(row.as_mut_ptr(), acc[0]);
            _mm512_storeu_ps(row.as_mut_ptr().add(16), acc[1]);
        }
    }
    // SAFETY: the CPU supports AVX-512F (checked by the caller); the tile is valid.
    unsafe { avx512_edge(t, out.as_flattened()) };
}

/// Writes a finished AVX-512 edge tile (`rows × 32`, row-major in `out`; fewer than 32
/// live columns or strided ones) to C.
///
/// # Safety
/// As for [`avx512`]; `out` holds the live rows.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
unsafe fn avx512_edge(t: &Tile, out: &[f32]) {
    for (i, row) in out.chunks_exact(32).enumerate() {
        // SAFETY: row i lies in the tile.
        unsafe { store_row_scalar(t, t.c.offset(i as isize * t.rs_c), row) };
    }
}

/// The AVX-512 kernel family.
#[cfg(target_arch = "x86_64")]
pub(super) static AVX512: Kernel = Kernel {
    name: "avx512-12x32",
    mr: 12,
    nr: 32,
    // kc 384/512 beat 256 at 1024³ (fewer passes over C). On a 2-core Xeon with 48 KiB L1d
    // and 2 MiB L2 per core, 512 against 384 at 2 threads, 8 rounds side by side: 1024³
    // 0.958× the time (two depth blocks instead of three), 128×768×3072 0.998×. A's
    // micro-panel (24 KiB) fits L1 and the packed B block (1.5 MiB) fits L2.
    kc: 512,
    mc: 192,
    nc: 768,
    by_rows: &[
        avx512::<1, true>,
        avx512::<2, true>,
        avx512::<3, true>,
        avx512::<4, true>,
        avx512::<5, true>,
        avx512::<6, true>,
        avx512::<7, true>,
        avx512::<8, true>,
        avx512::<9, true>,
        avx512::<10, true>,
        avx512::<11, true>,
        avx512::<12, true>,
    ],
    strided_a: Some(&[
        avx512::<1, false>,
        avx512::<2, false>,
        avx512::<3, false>,
        avx512::<4, false>,
        avx512::<5, false>,
        avx512::<6, false>,
        avx512::<7, false>,
        avx512::<8, false>,
        avx512::<9, false>,
        avx512::<10, false>,
        avx512::<11, false>,
        avx512::<12, false>,
    ]),
    stream: Some(&[
        avx512_stream::<1>,
        avx512_stream::<2>,
        avx512_stream::<3>,
        avx512_stream::<4>,
    ]),
};

/// AVX-512 row stream for `R` rows: chunks of `16 / R` vectors per row (16 zmm accumulators
/// in all), so B is read once; the last vector of the last chunk is masked.
///
/// # Safety
/// The CPU must support AVX-512F; `s` must describe valid memory for `R` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_stream<const R: usize>(s: &RowStream) {
    let per_row = 16 / R;
    let width = 16 * per_row;
    for j0 in (0..s.cols).step_by(width) {
        let live = width.min(s.cols - j0);
        let vectors = live.div_ceil(16);
        let mut masks = [0u16; 16];
        for (v, mask) in masks.iter_mut().enumerate().take(vectors) {
            let lanes = (live - 16 * v).min(16);
            *mask = if lanes == 16 {
                u16::MAX
            } else {
                (1u16 << lanes) - 1
            };
        }
        let mut acc = [[_mm512_setzero_ps(); 16]; R];
        for p in 0..s.kc {
            // SAFETY: row p of B holds `live` valid columns from j0; masked lanes are not read.
            unsafe {
                let row = s.b.add(p * s.ldb + j0);
                let mut bv = [_mm512_setzero_ps(); 16];
                for v in 0..vectors {
                    bv[v] = _mm512_maskz_loadu_ps(masks[v], row.add(16 * v));
                }
                for (i, acc) in acc.iter_mut().enumerate() {
                    let a = *s.a.offset(i as isize * s.a_rs + p as isize * s.a_cs);
                    let ap = _mm512_set1_ps(a);
                    for v in 0..vectors {
                        acc[v] = _mm512_fmadd_ps(ap, bv[v], acc[v]);
                    }
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for v in 0..vectors {
                // SAFETY: the masked lanes cover exactly the live columns of row i of C.
                unsafe {
                    let c = s.c.offset(i as isize * s.c_rs).add(j0 + 16 * v);
                    let mut out = acc[v];
                    if s.load_c {
                        out = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], c), out);
                    }
                    _mm512_mask_storeu_ps(c, masks[v], out);
                }
            }
        }
    }
}

/// Every kernel family this CPU can run, best first.
#[cfg(test)]
pub(super) fn available() -> Vec<&'static Kernel> {
    let mut kernels = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            kernels.push(&AVX512);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            kernels.push(&AVX2);
        }
    }
    kernels.push(&PORTABLE);
    kernels
}

/// The best kernel family for this CPU.
pub(super) fn best() -> &'static Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return &AVX512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return &AVX2;
        }
    }
    &PORTABLE
}
