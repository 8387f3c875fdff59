//! Byte panels (int8 weights) on AMX tiles: `tdpbsud` multiplies a 16 × 64 tile of signed
//! activation bytes by a 64 × 16 tile of unsigned weight bytes into 16 × 16 i32 sums, the
//! same exact u8 × s8 products `vpdpbusd` forms, sixteen times as many per instruction. A
//! panel's groups of four K rows are already the B tile's layout (row g: four bytes per
//! column), so the packed weights load as they are; activations are padded to whole tiles
//! (16 rows, 64 bytes of K) with zeros. After the last K step each tile's sums are stored
//! and combined as the other families do (`acc - offset·Σx - correction`, then the float
//! steps in the definition's order), so the results are theirs bit for bit.
//!
//! The tiles are used through inline assembly (the intrinsics are not stable). Linux
//! grants a process the tile state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`),
//! which [`available`] makes; each panel loads the tile configuration on the thread that
//! runs it and releases the tiles when done.

use super::{PackedQuant, QuantizedRows, Terms, GROUP, GROUP_BYTES, NR, TILE_K, TILE_ROWS};
use crate::gemm::MatMut;
use std::arch::asm;

/// Whether this CPU and OS run the tile kernels: CPUID's AMX-TILE and AMX-INT8, AVX-512
/// (for the rest of the family), and the OS's grant of the tile state.
pub(super) fn available() -> bool {
    #[cfg(target_os = "linux")]
    {
        let leaf = std::arch::x86_64::__cpuid_count(7, 0);
        let (tile, int8) = ((leaf.edx >> 24) & 1 == 1, (leaf.edx >> 25) & 1 == 1);
        tile && int8 && is_x86_feature_detected!("avx512bw") && request_tiles()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: true once the process may use
/// the tiles (asking again is harmless).
#[cfg(target_os = "linux")]
fn request_tiles() -> bool {
    const ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain system call; it writes no memory and clobbers only rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// The tile configuration: palette 1, every tile used 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

impl TileConfig {
    fn new() -> TileConfig {
        let mut c = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            c.colsb[t] = TILE_K as u16;
            c.rows[t] = TILE_ROWS as u8;
        }
        c
    }
}

/// Loads `tmm$t` from `$p` (row stride `$s` bytes).
macro_rules! load {
    ($t:literal, $p:expr, $s:expr) => {
        asm!(
            concat!("tileloadd tmm", $t, ", [{p} + {s}]"),
            p = in(reg) $p,
            s = in(reg) $s,
            options(nostack),
        )
    };
}

/// `tmm$c += tmm$a · tmm$b`.
macro_rules! dot {
    ($c:literal, $a:literal, $b:literal) => {
        asm!(
            concat!("tdpbsud tmm", $c, ", tmm", $a, ", tmm", $b),
            options(nostack)
        )
    };
}

/// Stores `tmm$c` to `out` (16 rows of 16 i32).
macro_rules! store {
    ($c:literal, $out:expr) => {
        asm!(
            concat!("tilestored [{o} + {s}], tmm", $c),
            o = in(reg) $out,
            s = in(reg) NR * 4,
            options(nostack),
        )
    };
}

/// Panels one call takes: two, so that each activation tile loaded feeds two products
/// (the activations are the larger operand to stream at K of 384–768).
pub(super) const PANELS: usize = 2;

/// Panels `first..first + count` (`count` ≤ [`PANELS`]) of C for every row: the int8
/// product on tiles, two row tiles by two panels at a time (sums in tmm0–3, activations
/// in tmm4–5, weights in tmm6–7), then the combine.
///
/// # Safety
/// [`available`] must be true (the CPU has AVX-512 too); C's columns must be contiguous;
/// `w` must have byte panels of one block whose K is a whole number of tiles, `rows` hold
/// `m` rows rounded up to [`TILE_ROWS`] (zeros past `m`), and C be valid for `m` rows of
/// the panels' columns.
pub(super) unsafe fn panels(
    w: &PackedQuant,
    (rows, terms): (&QuantizedRows, &Terms),
    m: usize,
    (first, count): (usize, usize),
    c: MatMut,
) {
    let kpad = w.kpad();
    let b = |j: usize, k: usize| {
        w.weights[(first + j) * w.block_bytes() + k / GROUP * GROUP_BYTES..].as_ptr()
    };
    let config = TileConfig::new();
    let mut sums = [[[0i32; NR]; TILE_ROWS]; 4];
    // SAFETY: the configuration is valid; tiles are released below.
    unsafe { asm!("ldtilecfg [{0}]", in(reg) &config, options(nostack)) };
    for r0 in (0..m).step_by(2 * TILE_ROWS) {
        let two_rows = m - r0 > TILE_ROWS;
        let x = |t: usize, k: usize| rows.values[(r0 + t * TILE_ROWS) * kpad + k..].as_ptr();
        // SAFETY: each activation tile is 16 padded rows of kpad bytes from x(t, k), and
        // each weight tile 16 groups of a panel (kpad is a whole number of tiles); the
        // second row tile and panel are read only when they exist.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack)
            );
            for k in (0..kpad).step_by(TILE_K) {
                load!("6", b(0, k), GROUP_BYTES);
                load!("4", x(0, k), kpad);
                dot!("0", "4", "6");
                if two_rows {
                    load!("5", x(1, k), kpad);
                    dot!("2", "5", "6");
                }
                if count > 1 {
                    load!("7", b(1, k), GROUP_BYTES);
                    dot!("1", "4", "7");
                    if two_rows {
                        dot!("3", "5", "7");
                    }
                }
            }
            store!("0", sums[0].as_mut_ptr());
            store!("1", sums[1].as_mut_ptr());
            store!("2", sums[2].as_mut_ptr());
            store!("3", sums[3].as_mut_ptr());
        }
        for (i, tile) in sums.iter().enumerate() {
            let (t, j) = (i / 2, i % 2);
            let top = r0 + t * TILE_ROWS;
            if top >= m || j >= count {
                continue;
            }
            // SAFETY: forwarded from the caller.
            unsafe {
                combine(
                    w,
                    rows,
                    terms,
                    (top, TILE_ROWS.min(m - top)),
                    first + j,
                    tile,
                    c,
                )
            };
        }
    }
    // SAFETY: returns the tiles to their initial state.
    unsafe { asm!("tilerelease", options(nostack)) };
}

/// Rows `first..first + live` of panel `p` from their i32 sums: the definition's steps as
/// in the other families (one block: `0 + f32(exact) · scale`, then the row scale), one
/// 16-column row per 512-bit register, stored masked to the panel's columns.
///
/// # Safety
/// The CPU must have AVX-512F; C must be valid for those rows of panel `p`'s columns.
#[target_feature(enable = "avx512f")]
unsafe fn combine(
    w: &PackedQuant,
    rows: &QuantizedRows,
    terms: &Terms,
    (first, live): (usize, usize),
    p: usize,
    tile: &[[i32; NR]; TILE_ROWS],
    c: MatMut,
) {
    use std::arch::x86_64::*;
    let meta = p * w.blocks * NR;
    let cols = NR.min(w.n - p * NR);
    let mask: __mmask16 = if cols == NR { !0 } else { (1 << cols) - 1 };
    // SAFETY: the panel's terms hold NR values each; C's row r holds the masked columns.
    unsafe {
        let off = _mm512_loadu_si512(w.offsets[meta..].as_ptr() as *const _);
        let corr = _mm512_loadu_si512(terms.corrections[meta..].as_ptr() as *const _);
        let scale = _mm512_loadu_ps(terms.scales[meta..].as_ptr());
        for (i, acc) in tile.iter().enumerate().take(live) {
            let r = first + i;
            let xsum = _mm512_set1_epi32(rows.sums[r * w.blocks]);
            let acc = _mm512_loadu_si512(acc.as_ptr() as *const _);
            let taken = _mm512_add_epi32(_mm512_mullo_epi32(off, xsum), corr);
            let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, taken));
            let sum = _mm512_add_ps(_mm512_setzero_ps(), _mm512_mul_ps(exact, scale));
            // A NaN row scale makes every product NaN, as the other families give.
            let y = _mm512_mul_ps(sum, _mm512_set1_ps(rows.scales[r]));
            _mm512_mask_storeu_ps(c.at(r, p * NR).ptr, mask, y);
        }
    }
}
