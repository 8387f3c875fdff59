//! The integer micro-kernels. A kernel computes up to [`MR`] rows of one panel's output
//! over every block: per block, the exact i32 sums of the quantized activations against
//! the stored weight bytes, then, in registers, the definition's float steps
//! `sum += f32(acc - offset·Σx - correction) · scale` (a multiply and an add, never a fused one, so
//! the result is the interpreter's bit for bit). Each family has a kernel for byte panels
//! (int8) and one for nibble panels (int4).

use super::{GROUP, GROUP_BYTES, MR, NR};

/// One panel of a packed weight, as a kernel reads it.
pub(super) struct Panel {
    /// The panel's first block.
    pub w: *const u8,
    /// Bytes per block.
    pub block_bytes: usize,
    /// Groups per block.
    pub groups: usize,
    /// Blocks along K.
    pub blocks: usize,
    /// Rows of K per block (the activations' step from block to block).
    pub block: usize,
    /// `[blocks][NR]`: the offset added to each stored weight.
    pub offsets: *const i32,
    /// `[blocks][NR]`: an integer term taken from each column's sum (zero unless the
    /// activations have a zero point: then it is that zero point times the column's sum
    /// of weights).
    pub corrections: *const i32,
    /// `[blocks][NR]`: the scales.
    pub scales: *const f32,
}

/// The rows `r < rows` of `out`: `Σ_blocks f32(Σ_k w·x - offset·Σx - correction) · scale`,
/// where row
/// `r`'s activations start at `x + r·x_stride` and its block sums at `xsums + r·blocks`.
///
/// # Safety
/// The panel's pointers must cover its blocks, and each row `blocks · block` values and
/// `blocks` sums.
pub(super) type PanelFn = unsafe fn(
    p: &Panel,
    x: *const i8,
    x_stride: usize,
    xsums: *const i32,
    rows: usize,
    out: &mut [[f32; NR]; MR],
);

/// A kernel family.
pub(super) struct QKernel {
    /// For reports: `avx512-vnni`, `avx-vnni`, `avx2`, `portable`.
    pub name: &'static str,
    /// Byte panels.
    pub bytes: PanelFn,
    /// Nibble panels.
    pub nibbles: PanelFn,
    /// Whether byte panels run on AMX tiles ([`super::amx`]) instead of `bytes`.
    pub tiles: bool,
}

pub(super) static PORTABLE: QKernel = QKernel {
    name: "portable",
    bytes: portable::<false>,
    nibbles: portable::<true>,
    tiles: false,
};

/// # Safety
/// See [`PanelFn`].
unsafe fn portable<const NIBBLES: bool>(
    p: &Panel,
    x: *const i8,
    x_stride: usize,
    xsums: *const i32,
    rows: usize,
    out: &mut [[f32; NR]; MR],
) {
    for (r, out) in out.iter_mut().enumerate().take(rows) {
        *out = [0.0; NR];
        for b in 0..p.blocks {
            let w = p.w.wrapping_add(b * p.block_bytes);
            let x = x.wrapping_add(r * x_stride + b * p.block);
            for (j, out) in out.iter_mut().enumerate() {
                let mut acc = 0i32;
                for k in 0..p.groups * GROUP {
                    let (g, lane) = (k / GROUP, k % GROUP);
                    let v = match NIBBLES {
                        // SAFETY: pair g/2 of the block holds group g's nibbles.
                        true => {
                            let byte = unsafe { *w.add(g / 2 * GROUP_BYTES + j * GROUP + lane) };
                            (byte >> (4 * (g % 2))) & 0x0F
                        }
                        // SAFETY: group g of the block.
                        false => unsafe { *w.add(g * GROUP_BYTES + j * GROUP + lane) },
                    };
                    // SAFETY: the row holds the block's values.
                    let xv = unsafe { *x.add(k) };
                    acc = acc.wrapping_add(i32::from(v) * i32::from(xv));
                }
                // SAFETY: the block's offsets, corrections, scales and sums exist.
                let (off, corr, scale, xsum) = unsafe {
                    (
                        *p.offsets.add(b * NR + j),
                        *p.corrections.add(b * NR + j),
                        *p.scales.add(b * NR + j),
                        *xsums.add(r * p.blocks + b),
                    )
                };
                let exact = acc.wrapping_sub(off.wrapping_mul(xsum)).wrapping_sub(corr);
                *out += exact as f32 * scale;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::{abs_max, quantize_values, token_scale, GROUP, GROUP_BYTES, MR, NR};
    use super::{Panel, QKernel};
    use std::arch::x86_64::*;

    pub(in super::super) static AVX2: QKernel = QKernel {
        name: "avx2",
        bytes: avx2_bytes,
        nibbles: avx2_nibbles,
        tiles: false,
    };

    pub(in super::super) static AVX_VNNI: QKernel = QKernel {
        name: "avx-vnni",
        bytes: avx_vnni_bytes,
        nibbles: avx_vnni_nibbles,
        tiles: false,
    };

    pub(in super::super) static AVX512_VNNI: QKernel = QKernel {
        name: "avx512-vnni",
        bytes: avx512_vnni_bytes,
        nibbles: avx512_vnni_nibbles,
        tiles: false,
    };

    pub(in super::super) static ZMM_VNNI: QKernel = QKernel {
        name: "avx512-vnni-zmm",
        bytes: zmm_bytes,
        nibbles: zmm_nibbles,
        tiles: false,
    };

    /// AMX tiles for byte panels; nibble panels (and `bytes`, which only benchmarks
    /// call) on the 512-bit VNNI kernels.
    pub(in super::super) static AMX: QKernel = QKernel {
        name: "amx",
        bytes: zmm_bytes,
        nibbles: zmm_nibbles,
        tiles: true,
    };

    /// Pairs of nibble groups the AVX2 kernel adds in i16 before widening:
    /// 4 pairs · 2 groups · (2 · 15 · 127) = 30480 < 2^15.
    const I16_PAIRS: usize = 4;

    /// Generates a family's two kernels. `$dot_bytes` and `$dot_nibbles` are macros that
    /// add one block's integer sums into `acc: [[__m256i; 2]; R]` (columns 0..8 and 8..16);
    /// everything else (the rows dispatch, the float steps, the stores) is shared.
    macro_rules! family {
        ($bytes:ident, $nibbles:ident, $features:literal, $max_rows:literal, $dot_bytes:ident, $dot_nibbles:ident) => {
            panel_fn!($bytes, $features, $max_rows, $dot_bytes);
            panel_fn!($nibbles, $features, $max_rows, $dot_nibbles);
        };
    }

    /// One [`PanelFn`] whose blocks' integer sums come from the macro `$dot`.
    macro_rules! panel_fn {
        ($name:ident, $features:literal, $max_rows:literal, $dot:ident) => {
            unsafe fn $name(
                p: &Panel,
                x: *const i8,
                s: usize,
                xsums: *const i32,
                rows: usize,
                out: &mut [[f32; NR]; MR],
            ) {
                #[target_feature(enable = $features)]
                unsafe fn panel<const R: usize>(
                    p: &Panel,
                    x: *const i8,
                    s: usize,
                    xsums: *const i32,
                    out: &mut [[f32; NR]],
                ) {
                    let mut sums = [[_mm256_setzero_ps(); 2]; R];
                    for b in 0..p.blocks {
                        let w = p.w.wrapping_add(b * p.block_bytes);
                        let x = x.wrapping_add(b * p.block);
                        let mut acc = [[_mm256_setzero_si256(); 2]; R];
                        $dot!(w, p.groups, x, s, acc, R);
                        // SAFETY: forwarded from the caller.
                        unsafe { combine(p, b, xsums, &acc, &mut sums) };
                    }
                    // SAFETY: R rows of 16 floats.
                    unsafe { store(&sums, out) };
                }
                // SAFETY: forwarded from the caller.
                unsafe { by_rows!(panel, p, x, s, xsums, rows, out, $max_rows) }
            }
        };
    }

    /// Runs `$panel::<R>` over the rows in runs of at most `$max`, so each row count gets
    /// its own register allocation.
    macro_rules! by_rows {
        ($panel:ident, $p:expr, $x:expr, $s:expr, $xsums:expr, $rows:expr, $out:expr, $max:literal) => {{
            let mut r = 0;
            while r < $rows {
                let take = ($rows - r).min($max);
                let x = $x.wrapping_add(r * $s);
                let xsums = $xsums.wrapping_add(r * $p.blocks);
                let out = &mut $out[r..r + take];
                match take {
                    1 => $panel::<1>($p, x, $s, xsums, out),
                    2 => $panel::<2>($p, x, $s, xsums, out),
                    3 => $panel::<3>($p, x, $s, xsums, out),
                    4 => $panel::<4>($p, x, $s, xsums, out),
                    5 => $panel::<5>($p, x, $s, xsums, out),
                    6 => $panel::<6>($p, x, $s, xsums, out),
                    7 => $panel::<7>($p, x, $s, xsums, out),
                    _ => $panel::<8>($p, x, $s, xsums, out),
                }
                r += take;
            }
        }};
    }

    /// The four activation bytes of row `$r`, group `$g`, broadcast to every lane.
    macro_rules! broadcast {
        ($x:expr, $s:expr, $r:expr, $g:expr) => {
            // SAFETY: the row holds the block's groups.
            _mm256_set1_epi32(unsafe {
                ($x.add($r * $s + $g * GROUP) as *const i32).read_unaligned()
            })
        };
    }

    /// The 64 bytes at `$w` as two vectors (columns 0..8, 8..16).
    macro_rules! load_pair {
        ($w:expr) => {
            // SAFETY: the 64 bytes are inside the block.
            [0, 1].map(|q| unsafe { _mm256_loadu_si256($w.add(32 * q) as *const __m256i) })
        };
    }

    /// The low and high nibbles of two vectors, as bytes.
    macro_rules! nibbles {
        ($v:expr) => {{
            let mask = _mm256_set1_epi8(0x0F);
            (
                $v.map(|v| _mm256_and_si256(v, mask)),
                $v.map(|v| _mm256_and_si256(_mm256_srli_epi16(v, 4), mask)),
            )
        }};
    }

    /// VNNI: `vpdpbusd` adds each lane's four unsigned × signed byte products exactly.
    macro_rules! vnni_bytes {
        ($dp:ident; $w:expr, $groups:expr, $x:expr, $s:expr, $acc:expr, $r:expr) => {
            for g in 0..$groups {
                let v = load_pair!($w.add(g * GROUP_BYTES));
                for i in 0..$r {
                    let xv = broadcast!($x, $s, i, g);
                    $acc[i][0] = $dp($acc[i][0], v[0], xv);
                    $acc[i][1] = $dp($acc[i][1], v[1], xv);
                }
            }
        };
    }

    macro_rules! vnni_nibbles {
        ($dp:ident; $w:expr, $groups:expr, $x:expr, $s:expr, $acc:expr, $r:expr) => {
            for h in 0..$groups / 2 {
                let (lo, hi) = nibbles!(load_pair!($w.add(h * GROUP_BYTES)));
                for i in 0..$r {
                    let (x0, x1) = (
                        broadcast!($x, $s, i, 2 * h),
                        broadcast!($x, $s, i, 2 * h + 1),
                    );
                    for q in 0..2 {
                        $acc[i][q] = $dp($dp($acc[i][q], lo[q], x0), hi[q], x1);
                    }
                }
            }
        };
    }

    macro_rules! avx_vnni_bytes_dot {
        ($($t:tt)*) => { vnni_bytes!(_mm256_dpbusd_avx_epi32; $($t)*) };
    }
    macro_rules! avx_vnni_nibbles_dot {
        ($($t:tt)*) => { vnni_nibbles!(_mm256_dpbusd_avx_epi32; $($t)*) };
    }
    macro_rules! avx512_vnni_bytes_dot {
        ($($t:tt)*) => { vnni_bytes!(_mm256_dpbusd_epi32; $($t)*) };
    }
    macro_rules! avx512_vnni_nibbles_dot {
        ($($t:tt)*) => { vnni_nibbles!(_mm256_dpbusd_epi32; $($t)*) };
    }

    /// AVX2 bytes: both operands widened to i16 and multiplied in pairs by `vpmaddwd`, which
    /// cannot saturate (2·255·127 fits an i32). Four columns per vector leave each column's
    /// sum in two lanes, which `vphaddd` adds at the end of the block.
    macro_rules! avx2_bytes_dot {
        ($w:expr, $groups:expr, $x:expr, $s:expr, $acc:expr, $r:expr) => {{
            let mut a = [[_mm256_setzero_si256(); 4]; $r];
            for g in 0..$groups {
                let wp = $w.add(g * GROUP_BYTES);
                // SAFETY: the group's 64 bytes are inside the block.
                let wide = [0, 1, 2, 3].map(|q| unsafe {
                    _mm256_cvtepu8_epi16(_mm_loadu_si128(wp.add(16 * q) as *const __m128i))
                });
                for i in 0..$r {
                    // SAFETY: row i's group g is inside the block.
                    let four =
                        unsafe { ($x.add(i * $s + g * GROUP) as *const i32).read_unaligned() };
                    let xv = _mm256_cvtepi8_epi16(_mm_set1_epi32(four));
                    for q in 0..4 {
                        a[i][q] = _mm256_add_epi32(a[i][q], _mm256_madd_epi16(wide[q], xv));
                    }
                }
            }
            for i in 0..$r {
                for half in 0..2 {
                    let pairs = _mm256_hadd_epi32(a[i][2 * half], a[i][2 * half + 1]);
                    $acc[i][half] = _mm256_permute4x64_epi64(pairs, 0b11_01_10_00);
                }
            }
        }};
    }

    /// AVX2 nibbles: `vpmaddubsw` of unsigned nibbles and signed activations is exact
    /// (2·15·127 fits an i16); [`I16_PAIRS`] pairs of groups add in i16 before `vpmaddwd`
    /// widens them, the ggml-style inner loop.
    macro_rules! avx2_nibbles_dot {
        ($w:expr, $groups:expr, $x:expr, $s:expr, $acc:expr, $r:expr) => {{
            let ones = _mm256_set1_epi16(1);
            let pairs = $groups / 2;
            for start in (0..pairs).step_by(I16_PAIRS) {
                let mut t = [[_mm256_setzero_si256(); 2]; $r];
                for h in start..(start + I16_PAIRS).min(pairs) {
                    let (lo, hi) = nibbles!(load_pair!($w.add(h * GROUP_BYTES)));
                    for i in 0..$r {
                        let (x0, x1) = (
                            broadcast!($x, $s, i, 2 * h),
                            broadcast!($x, $s, i, 2 * h + 1),
                        );
                        for q in 0..2 {
                            let p = _mm256_add_epi16(
                                _mm256_maddubs_epi16(lo[q], x0),
                                _mm256_maddubs_epi16(hi[q], x1),
                            );
                            t[i][q] = _mm256_add_epi16(t[i][q], p);
                        }
                    }
                }
                for i in 0..$r {
                    for q in 0..2 {
                        $acc[i][q] = _mm256_add_epi32($acc[i][q], _mm256_madd_epi16(t[i][q], ones));
                    }
                }
            }
        }};
    }

    /// Block `b`'s float step for every row: `sums += f32(acc - offset·Σx) · scale`.
    ///
    /// # Safety
    /// Block `b`'s offsets and scales, and row `i`'s sum at `xsums + i·blocks + b`.
    #[inline(always)]
    unsafe fn combine<const R: usize>(
        p: &Panel,
        b: usize,
        xsums: *const i32,
        acc: &[[__m256i; 2]; R],
        sums: &mut [[__m256; 2]; R],
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            let off =
                [0, 8].map(|j| _mm256_loadu_si256(p.offsets.add(b * NR + j) as *const __m256i));
            let corr =
                [0, 8].map(|j| _mm256_loadu_si256(p.corrections.add(b * NR + j) as *const __m256i));
            let scale = [0, 8].map(|j| _mm256_loadu_ps(p.scales.add(b * NR + j)));
            for i in 0..R {
                let xsum = _mm256_set1_epi32(*xsums.add(i * p.blocks + b));
                for q in 0..2 {
                    let taken = _mm256_add_epi32(_mm256_mullo_epi32(off[q], xsum), corr[q]);
                    let exact = _mm256_sub_epi32(acc[i][q], taken);
                    let term = _mm256_mul_ps(_mm256_cvtepi32_ps(exact), scale[q]);
                    sums[i][q] = _mm256_add_ps(sums[i][q], term);
                }
            }
        }
    }

    /// Stores R rows of sums.
    ///
    /// # Safety
    /// `out` holds R rows.
    #[inline(always)]
    unsafe fn store<const R: usize>(sums: &[[__m256; 2]; R], out: &mut [[f32; NR]]) {
        for (s, o) in sums.iter().zip(out.iter_mut()) {
            // SAFETY: 16 floats per row.
            unsafe {
                _mm256_storeu_ps(o.as_mut_ptr(), s[0]);
                _mm256_storeu_ps(o.as_mut_ptr().add(8), s[1]);
            }
        }
    }

    family!(
        avx2_bytes,
        avx2_nibbles,
        "avx2",
        2,
        avx2_bytes_dot,
        avx2_nibbles_dot
    );
    family!(
        avx_vnni_bytes,
        avx_vnni_nibbles,
        "avx2,avxvnni",
        4,
        avx_vnni_bytes_dot,
        avx_vnni_nibbles_dot
    );
    family!(
        avx512_vnni_bytes,
        avx512_vnni_nibbles,
        "avx2,avx512f,avx512vl,avx512vnni",
        6,
        avx512_vnni_bytes_dot,
        avx512_vnni_nibbles_dot
    );

    /// [`super::quantize_per_tensor`] on eight lanes: `vdivps` and `vroundps` (ties to
    /// even) are the definition's division and rounding; NaN lanes become 0 as there.
    ///
    /// # Safety
    /// The CPU must have AVX2, and `out` be as long as `row`.
    #[target_feature(enable = "avx2")]
    pub(in super::super) unsafe fn quantize_per_tensor_avx2(
        row: &[f32],
        p: &super::PerTensor,
        out: &mut [i8],
    ) {
        let n = row.len() / 8 * 8;
        let (scale, zp) = (_mm256_set1_ps(p.scale), _mm256_set1_ps(p.zero_point));
        let (lo, hi) = (_mm256_set1_ps(p.range.0), _mm256_set1_ps(p.range.1));
        let shift = _mm256_set1_epi32(p.shift);
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= row.len() == out.len().
            unsafe {
                let t = _mm256_div_ps(_mm256_loadu_ps(row.as_ptr().add(i)), scale);
                let r = _mm256_add_ps(
                    _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                    zp,
                );
                let number = _mm256_cmp_ps(r, r, _CMP_ORD_Q);
                // max/min return their second operand for a NaN first one: clamp, then
                // zero the NaN lanes.
                let clamped = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
                let q = _mm256_cvtps_epi32(_mm256_and_ps(clamped, number));
                let q = _mm256_sub_epi32(q, shift);
                let w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
                _mm_storel_epi64(
                    out.as_mut_ptr().add(i) as *mut __m128i,
                    _mm_packs_epi16(w, w),
                );
            }
        }
        for (o, &v) in out[n..].iter_mut().zip(&row[n..]) {
            *o = p.one(v);
        }
    }

    /// [`super::min_max`] on sixteen lanes with four accumulators each, so neither
    /// running extreme chains its latency through the tensor (per-tensor activation
    /// scales take it over a whole `m × K` input on one thread). Both extremes are the
    /// same in any order; a NaN anywhere gives NaN.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(in super::super) unsafe fn min_max_avx512(x: &[f32]) -> (f32, f32) {
        // SAFETY: callers pass i + 16 <= x.len().
        let load = |i: usize| unsafe { _mm512_loadu_ps(x.as_ptr().add(i)) };
        let mut lo = [_mm512_set1_ps(f32::INFINITY); 4];
        let mut hi = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
        let mut nan: __mmask16 = 0;
        let mut step = |j: usize, v: __m512| {
            nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
            lo[j] = _mm512_min_ps(lo[j], v);
            hi[j] = _mm512_max_ps(hi[j], v);
        };
        let wide = x.len() / 64 * 64;
        for i in (0..wide).step_by(64) {
            for j in 0..4 {
                step(j, load(i + 16 * j));
            }
        }
        let n = x.len() / 16 * 16;
        for i in (wide..n).step_by(16) {
            step(0, load(i));
        }
        if nan != 0 {
            return (f32::NAN, f32::NAN);
        }
        let (tl, th) = kiln_ir::min_max(&x[n..]);
        if tl.is_nan() {
            return (f32::NAN, f32::NAN);
        }
        let l = _mm512_min_ps(_mm512_min_ps(lo[0], lo[1]), _mm512_min_ps(lo[2], lo[3]));
        let h = _mm512_max_ps(_mm512_max_ps(hi[0], hi[1]), _mm512_max_ps(hi[2], hi[3]));
        (
            tl.min(_mm512_reduce_min_ps(l)),
            th.max(_mm512_reduce_max_ps(h)),
        )
    }

    /// [`super::min_max`] on eight lanes.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(in super::super) unsafe fn min_max_avx2(x: &[f32]) -> (f32, f32) {
        let n = x.len() / 8 * 8;
        let (mut lo, mut hi) = (
            _mm256_set1_ps(f32::INFINITY),
            _mm256_set1_ps(f32::NEG_INFINITY),
        );
        let mut nan = _mm256_setzero_ps();
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= x.len().
            let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(i)) };
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            lo = _mm256_min_ps(lo, v);
            hi = _mm256_max_ps(hi, v);
        }
        if _mm256_movemask_ps(nan) != 0 {
            return (f32::NAN, f32::NAN);
        }
        let (mut l, mut h) = ([0f32; 8], [0f32; 8]);
        // SAFETY: eight floats each.
        unsafe {
            _mm256_storeu_ps(l.as_mut_ptr(), lo);
            _mm256_storeu_ps(h.as_mut_ptr(), hi);
        }
        let (tl, th) = kiln_ir::min_max(&x[n..]);
        if tl.is_nan() {
            return (f32::NAN, f32::NAN);
        }
        let min = l.iter().fold(tl, |m, &v| m.min(v));
        (min, h.iter().fold(th, |m, &v| m.max(v)))
    }

    /// [`super::super::quantize_row`] with AVX2: the same operations on eight lanes
    /// (`vroundps` rounds ties to even, as the definition does).
    ///
    /// # Safety
    /// The CPU must have AVX2, and `out` be as long as `row`.
    #[target_feature(enable = "avx2")]
    pub(in super::super) unsafe fn quantize_row_avx2(row: &[f32], out: &mut [i8]) -> f32 {
        let n = row.len() / 8 * 8;
        let sign = _mm256_set1_ps(-0.0);
        let inf = _mm256_set1_ps(f32::INFINITY);
        let (mut amax, mut finite) = (
            _mm256_setzero_ps(),
            _mm256_castsi256_ps(_mm256_set1_epi32(-1)),
        );
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= row.len().
            let v = _mm256_andnot_ps(sign, unsafe { _mm256_loadu_ps(row.as_ptr().add(i)) });
            finite = _mm256_and_ps(finite, _mm256_cmp_ps(v, inf, _CMP_LT_OQ));
            amax = _mm256_max_ps(amax, v);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), amax) };
        let m = lanes.iter().fold(0f32, |a, &v| a.max(v));
        let (m, finite) = abs_max(&row[n..], m, _mm256_movemask_ps(finite) == 0xFF);
        let (scale, inv) = token_scale(m, finite);
        let Some(inv) = inv else {
            return scale;
        };
        let (vinv, lo, hi) = (
            _mm256_set1_ps(inv),
            _mm256_set1_ps(-127.0),
            _mm256_set1_ps(127.0),
        );
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= row.len() == out.len().
            unsafe {
                let y = _mm256_mul_ps(_mm256_loadu_ps(row.as_ptr().add(i)), vinv);
                let y = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                let q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(y, lo), hi));
                let w = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
                _mm_storel_epi64(
                    out.as_mut_ptr().add(i) as *mut __m128i,
                    _mm_packs_epi16(w, w),
                );
            }
        }
        quantize_values(&row[n..], inv, &mut out[n..]);
        scale
    }

    /// [`super::super::quantize_row`] with AVX-512: sixteen lanes, and four running maxima
    /// so the max's latency does not chain through the row (one chain made this 40% of a
    /// 128×768×768 AMX product). The maximum of absolute values is the same in any order,
    /// and a row with a NaN or an infinity gives NaN before it is used.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, and `out` be as long as `row`.
    #[target_feature(enable = "avx512f")]
    pub(in super::super) unsafe fn quantize_row_avx512(row: &[f32], out: &mut [i8]) -> f32 {
        let len = row.len();
        let inf = _mm512_set1_ps(f32::INFINITY);
        // SAFETY (both closures): callers pass i + 16 <= len.
        let abs = |i: usize| _mm512_abs_ps(unsafe { _mm512_loadu_ps(row.as_ptr().add(i)) });
        let mut amax = [_mm512_setzero_ps(); 4];
        let mut finite: __mmask16 = !0;
        let wide = len / 64 * 64;
        for i in (0..wide).step_by(64) {
            for (j, m) in amax.iter_mut().enumerate() {
                let v = abs(i + 16 * j);
                finite &= _mm512_cmp_ps_mask(v, inf, _CMP_LT_OQ);
                *m = _mm512_max_ps(*m, v);
            }
        }
        let n = len / 16 * 16;
        for i in (wide..n).step_by(16) {
            let v = abs(i);
            finite &= _mm512_cmp_ps_mask(v, inf, _CMP_LT_OQ);
            amax[0] = _mm512_max_ps(amax[0], v);
        }
        let all = _mm512_max_ps(
            _mm512_max_ps(amax[0], amax[1]),
            _mm512_max_ps(amax[2], amax[3]),
        );
        let (m, finite) = abs_max(&row[n..], _mm512_reduce_max_ps(all), finite == !0);
        let (scale, inv) = token_scale(m, finite);
        let Some(inv) = inv else {
            return scale;
        };
        let (vinv, lo, hi) = (
            _mm512_set1_ps(inv),
            _mm512_set1_ps(-127.0),
            _mm512_set1_ps(127.0),
        );
        for i in (0..n).step_by(16) {
            // SAFETY: i + 16 <= row.len() == out.len().
            unsafe {
                let y = _mm512_mul_ps(_mm512_loadu_ps(row.as_ptr().add(i)), vinv);
                let y =
                    _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(y);
                let q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(y, lo), hi));
                _mm_storeu_si128(
                    out.as_mut_ptr().add(i) as *mut __m128i,
                    _mm512_cvtepi32_epi8(q),
                );
            }
        }
        quantize_values(&row[n..], inv, &mut out[n..]);
        scale
    }

    /// [`super::block_sums`] built for AVX2, so the widening sums vectorize.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(in super::super) unsafe fn block_sums_avx2(values: &[i8], block: usize, sums: &mut [i32]) {
        super::block_sums_portable(values, block, sums)
    }

    /// The 512-bit VNNI kernels: a whole 16-column group in one register, so each
    /// `vpdpbusd` does twice the work of the 256-bit kernels for the same broadcast.
    macro_rules! zmm_panel {
        ($name:ident, $nibbles:literal) => {
            unsafe fn $name(
                p: &Panel,
                x: *const i8,
                s: usize,
                xsums: *const i32,
                rows: usize,
                out: &mut [[f32; NR]; MR],
            ) {
                #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
                unsafe fn panel<const R: usize>(
                    p: &Panel,
                    x: *const i8,
                    s: usize,
                    xsums: *const i32,
                    out: &mut [[f32; NR]],
                ) {
                    let mut sums = [_mm512_setzero_ps(); R];
                    let mask = _mm512_set1_epi8(0x0F);
                    for b in 0..p.blocks {
                        let w = p.w.wrapping_add(b * p.block_bytes);
                        let x = x.wrapping_add(b * p.block);
                        let mut acc = [_mm512_setzero_si512(); R];
                        // SAFETY (every load): the block holds `groups` groups, and each
                        // row the block's values.
                        if $nibbles {
                            for h in 0..p.groups / 2 {
                                let v = unsafe {
                                    _mm512_loadu_si512(w.add(h * GROUP_BYTES) as *const _)
                                };
                                let lo = _mm512_and_si512(v, mask);
                                let hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), mask);
                                for (i, a) in acc.iter_mut().enumerate() {
                                    let at = |g: usize| unsafe {
                                        (x.add(i * s + g * GROUP) as *const i32).read_unaligned()
                                    };
                                    let (x0, x1) = (
                                        _mm512_set1_epi32(at(2 * h)),
                                        _mm512_set1_epi32(at(2 * h + 1)),
                                    );
                                    *a = _mm512_dpbusd_epi32(
                                        _mm512_dpbusd_epi32(*a, lo, x0),
                                        hi,
                                        x1,
                                    );
                                }
                            }
                        } else {
                            for g in 0..p.groups {
                                let v = unsafe {
                                    _mm512_loadu_si512(w.add(g * GROUP_BYTES) as *const _)
                                };
                                for (i, a) in acc.iter_mut().enumerate() {
                                    let four = unsafe {
                                        (x.add(i * s + g * GROUP) as *const i32).read_unaligned()
                                    };
                                    *a = _mm512_dpbusd_epi32(*a, v, _mm512_set1_epi32(four));
                                }
                            }
                        }
                        // The definition's float steps, as in `combine`.
                        let (off, corr, scale) = unsafe {
                            (
                                _mm512_loadu_si512(p.offsets.add(b * NR) as *const _),
                                _mm512_loadu_si512(p.corrections.add(b * NR) as *const _),
                                _mm512_loadu_ps(p.scales.add(b * NR)),
                            )
                        };
                        for (i, (sum, a)) in sums.iter_mut().zip(&acc).enumerate() {
                            let xsum = _mm512_set1_epi32(unsafe { *xsums.add(i * p.blocks + b) });
                            let taken = _mm512_add_epi32(_mm512_mullo_epi32(off, xsum), corr);
                            let exact = _mm512_sub_epi32(*a, taken);
                            *sum = _mm512_add_ps(
                                *sum,
                                _mm512_mul_ps(_mm512_cvtepi32_ps(exact), scale),
                            );
                        }
                    }
                    for (sum, o) in sums.iter().zip(out.iter_mut()) {
                        // SAFETY: 16 floats per row.
                        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *sum) };
                    }
                }
                // SAFETY: forwarded from the caller.
                unsafe { by_rows!(panel, p, x, s, xsums, rows, out, 8) }
            }
        };
    }

    zmm_panel!(zmm_bytes, false);
    zmm_panel!(zmm_nibbles, true);

    /// The families this CPU runs, best first.
    pub(in super::super) fn available() -> Vec<&'static QKernel> {
        let mut out = Vec::new();
        let zmm = is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw");
        if zmm && super::super::amx::available() {
            out.push(&AMX);
        }
        if zmm {
            out.push(&ZMM_VNNI);
        }
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
            out.push(&AVX512_VNNI);
        }
        if is_x86_feature_detected!("avxvnni") {
            out.push(&AVX_VNNI);
        }
        if is_x86_feature_detected!("avx2") {
            out.push(&AVX2);
        }
        out
    }
}

/// Every kernel family this CPU can run, best first (the portable one last).
pub(super) fn available() -> Vec<&'static QKernel> {
    #[cfg(target_arch = "x86_64")]
    let mut out = x86::available();
    #[cfg(not(target_arch = "x86_64"))]
    let mut out = Vec::new();
    out.push(&PORTABLE);
    out
}

/// One token's quantization (see [`super::quantize_row`]), vectorized where the CPU can.
pub(super) fn quantize_row(row: &[f32], out: &mut [i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, and the caller passes `out` as long as `row`.
        return unsafe { x86::quantize_row_avx512(row, &mut out[..row.len()]) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, and the caller passes `out` as long as `row`.
        return unsafe { x86::quantize_row_avx2(row, &mut out[..row.len()]) };
    }
    super::quantize_row(row, out)
}

/// The sum of each `block` values of `values` (the last block may be short) into `sums`,
/// which has one entry per block: the activations' Σx the kernels' offsets need.
pub(super) fn block_sums(values: &[i8], block: usize, sums: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { x86::block_sums_avx2(values, block, sums) };
    }
    block_sums_portable(values, block, sums)
}

#[inline(always)]
fn block_sums_portable(values: &[i8], block: usize, sums: &mut [i32]) {
    for (sum, part) in sums.iter_mut().zip(values.chunks(block)) {
        *sum = part.iter().map(|&v| i32::from(v)).sum();
    }
}

/// How f32 activations quantize per tensor: `QuantizeLinear`'s scale, zero point and
/// range, and the shift that makes the kernels' s8 (128 for u8, 0 for i8).
pub(super) struct PerTensor {
    scale: f32,
    zero_point: f32,
    range: (f32, f32),
    shift: i32,
}

impl PerTensor {
    pub(super) fn new(signed: bool, zero_point: i32, scale: f32) -> PerTensor {
        let (range, shift) = match signed {
            true => ((-128.0, 127.0), 0),
            false => ((0.0, 255.0), 128),
        };
        PerTensor {
            scale,
            zero_point: zero_point as f32,
            range,
            shift,
        }
    }

    /// One value, as the definition says, less the shift.
    fn one(&self, x: f32) -> i8 {
        (kiln_ir::quantize_linear(x, self.scale, self.zero_point, self.range) - self.shift) as i8
    }
}

/// `row` quantized per tensor into `out` (as long as `row`), vectorized where the CPU can.
pub(super) fn quantize_per_tensor(row: &[f32], p: &PerTensor, out: &mut [i8]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2; `out` is as long as `row`.
        return unsafe { x86::quantize_per_tensor_avx2(row, p, &mut out[..row.len()]) };
    }
    for (o, &v) in out.iter_mut().zip(row) {
        *o = p.one(v);
    }
}

/// The least and greatest element of `x`, NaN when it holds a NaN.
pub(super) fn min_max(x: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { x86::min_max_avx512(x) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { x86::min_max_avx2(x) };
    }
    kiln_ir::min_max(x)
}

/// The best kernel family for this CPU.
pub(super) fn best() -> &'static QKernel {
    available()[0]
}
