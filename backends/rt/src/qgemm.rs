//! Integer GEMM for quantized linear layers ([`kiln_ir::Op::QuantLinear`] with dynamic int8
//! activations), bit-identical to the interpreter's definition.
//!
//! Weights are packed once into panels of [`NR`] columns, stored as unsigned bytes with an
//! offset: `w_u8 = w + offset`, where the offset is 128 for int8, 8 for int4 without zero
//! points, and the zero point for int4 with them. Within a panel, K runs in blocks (the
//! int4 scale blocks; all of K for int8), and each block in groups of four rows: a group is
//! 64 bytes, four per column. int4 panels keep two groups per 64 bytes, one per nibble.
//!
//! Activations are quantized per token (row) into s8 with their per-block sums, so the
//! product `Σ w·x = Σ w_u8·x - offset·Σ x` is an unsigned × signed byte product, which the
//! CPU's VNNI `vpdpbusd` computes exactly into i32. Without VNNI (AVX2), int4 uses
//! `vpmaddubsw`, exact because `2·15·127` fits an i16, and int8 widens both operands to i16
//! for `vpmaddwd`: `vpmaddubsw` would saturate `2·255·127` silently (see ARCHITECTURE.md for
//! the measurements behind the choice). Integer sums wrap in i32, which gives the exact
//! result because the true one fits (the offset term is removed before the sum is read).
//!
//! The float part follows the definition's order exactly: per block `sum += f32(acc) ·
//! scale`, then `sum · row_scale`, then the epilogue. Work splits over the pool by panels,
//! and each output is computed by one thread in a fixed order, so results do not depend on
//! the thread count.

#[cfg(target_arch = "x86_64")]
mod amx;
pub mod dequant;
mod kernels;
#[cfg(test)]
mod tests;
mod widen;

use crate::aligned::Aligned;
use crate::gemm::{Epilogue, MatMut};
use crate::pool::ThreadPool;
use kernels::QKernel;
use kiln_ir::WeightQuant;

/// Columns per weight panel.
pub const NR: usize = 16;
/// Rows of K per group (the four bytes one `vpdpbusd` lane sums).
const GROUP: usize = 4;
/// Bytes of one group of one panel.
const GROUP_BYTES: usize = NR * GROUP;
/// Activation rows per micro-kernel call.
const MR: usize = 8;

/// The name of the integer kernel family this CPU uses, e.g. `avx-vnni`.
pub fn kernel_name() -> &'static str {
    kernels::best().name
}

/// The integer kernel families this CPU can run, best first (`portable` last).
pub fn kernel_names() -> Vec<&'static str> {
    kernels::available().iter().map(|k| k.name).collect()
}

/// A quantized weight `[K, N]` packed for [`qgemm`]; see the module docs for the layout.
pub struct PackedQuant {
    kernel: &'static QKernel,
    k: usize,
    n: usize,
    /// Rows of K per scale block.
    block: usize,
    /// Scale blocks along K.
    blocks: usize,
    /// Whether the bytes hold two 4-bit values each.
    nibbles: bool,
    /// Panel after panel, each block after block.
    weights: Aligned<u8>,
    /// `[panel][block][NR]`: the f32 scales (0 in padding columns).
    scales: Vec<f32>,
    /// `[panel][block][NR]`: the offset that was added to each stored weight.
    offsets: Vec<i32>,
    /// `[panel][block][NR]`: each column's sum of weights (less their zero points) over
    /// the block, for activations that come with a zero point.
    colsums: Vec<i32>,
    /// `[panel][block][NR]` zeros: the corrections of activations without a zero point.
    no_corrections: Vec<i32>,
}

/// The activations of a quantized product, as the layer's [`kiln_ir::ActQuant`] gives them.
#[derive(Clone, Copy, Debug)]
pub enum Activations {
    /// f32 `x[M, K]` (row stride K), quantized per token here (`DynamicInt8`).
    F32(*const f32),
    /// `x[M, K]` already quantized (`Quantized`): bytes, i8 when `signed`, else u8, with
    /// their zero point and scale.
    Quantized {
        /// The values, row stride K.
        x: *const u8,
        /// Whether they are i8.
        signed: bool,
        /// Their zero point.
        zero_point: i32,
        /// Their scale.
        scale: f32,
    },
    /// f32 `x[M, K]` quantized here per tensor as `QuantizeLinear` does (`PerTensor`), to
    /// i8 when `signed`, else u8.
    PerTensor {
        /// The activations, row stride K.
        x: *const f32,
        /// Whether the zero point (and the quantized values) are i8.
        signed: bool,
        /// The zero point.
        zero_point: i32,
        /// The scale.
        scale: f32,
    },
    /// f32 `x[M, K]` quantized here as `DynamicQuantizeLinear` does (`DynamicU8`).
    DynamicU8(*const f32),
}

/// How the scales are stored.
#[derive(Clone, Copy, Debug)]
pub enum Scales {
    /// f32.
    F32(*const f32),
    /// IEEE half.
    F16(*const half::f16),
    /// None: the half weight formats have no scales.
    None,
}

impl Scales {
    /// Scale `i` as f32 (exact for both types).
    ///
    /// # Safety
    /// Element `i` must be valid.
    unsafe fn get(self, i: usize) -> f32 {
        // SAFETY: forwarded from the caller.
        unsafe {
            match self {
                Scales::F32(p) => *p.add(i),
                Scales::F16(p) => (*p.add(i)).to_f32(),
                Scales::None => 1.0,
            }
        }
    }
}

/// The stored operands of a quantized weight, as the op takes them.
#[derive(Clone, Copy, Debug)]
pub struct QuantWeight {
    /// The format.
    pub format: WeightQuant,
    /// Rows.
    pub k: usize,
    /// Columns.
    pub n: usize,
    /// `w[K, N]` row-major: i8, u8 for int4 with zero points, f16 or bf16 for the half
    /// formats.
    pub values: *const u8,
    /// `scale[N]` for int8, `scale[⌈K/block⌉, N]` for int4.
    pub scales: Scales,
    /// `zero_point[⌈K/block⌉, N]` u8, when the format has them.
    pub zero_points: Option<*const u8>,
}

impl QuantWeight {
    /// Rows of K per scale block (all of K for int8).
    fn block(&self) -> usize {
        self.format.block().unwrap_or(self.k.max(1))
    }

    /// Row `k` of the weight less its zero points, into `out` (N values), after checking
    /// both against the format.
    ///
    /// # Safety
    /// The operands must be valid for the shapes the format gives.
    unsafe fn centered_row(&self, k: usize, out: &mut [i32]) -> Result<(), String> {
        let name = self.format.name();
        let (lo, hi) =
            (self.format.range()).ok_or_else(|| format!("{name} weights are not integers"))?;
        // SAFETY: row k of the weight, and of its block's zero points, hold N bytes each.
        let (raw, zero_points) = unsafe {
            (
                std::slice::from_raw_parts(self.values.add(k * self.n), self.n),
                (self.zero_points).map(|z| {
                    std::slice::from_raw_parts(z.add((k / self.block()) * self.n), self.n)
                }),
            )
        };
        for (j, (out, &raw)) in out.iter_mut().zip(raw).enumerate() {
            let v = match zero_points {
                Some(_) => i64::from(raw),
                None => i64::from(raw as i8),
            };
            if !(lo..=hi).contains(&v) {
                return Err(format!("weight value {v} is outside {name}'s {lo}..={hi}"));
            }
            let z = zero_points.map_or(0, |z| i64::from(z[j]));
            if !(0..=15).contains(&z) {
                return Err(format!("zero point {z} is outside 0..=15"));
            }
            *out = (v - z) as i32;
        }
        Ok(())
    }

    /// The weight dequantized to f32 `[K, N]`: `(w - zero_point) · scale`, as the
    /// interpreter computes it, for weight-only layers.
    ///
    /// # Safety
    /// As for [`PackedQuant::new`].
    pub unsafe fn dequantized(&self) -> Result<Vec<f32>, String> {
        let len = self.k * self.n;
        match self.format {
            // SAFETY: forwarded from the caller: `len` halves.
            WeightQuant::F16 => unsafe {
                let w = std::slice::from_raw_parts(self.values as *const half::f16, len);
                return Ok(w.iter().map(|v| v.to_f32()).collect());
            },
            // SAFETY: as above.
            WeightQuant::BF16 => unsafe {
                let w = std::slice::from_raw_parts(self.values as *const half::bf16, len);
                return Ok(w.iter().map(|v| v.to_f32()).collect());
            },
            WeightQuant::Int8 | WeightQuant::Int4 { .. } => {}
        }
        let block = self.block();
        let mut out = Vec::with_capacity(self.k * self.n);
        let mut row = vec![0; self.n];
        for k in 0..self.k {
            // SAFETY: forwarded from the caller.
            unsafe { self.centered_row(k, &mut row) }?;
            for (n, &c) in row.iter().enumerate() {
                // SAFETY: forwarded from the caller.
                let s = unsafe { self.scales.get((k / block) * self.n + n) };
                out.push(c as f32 * s);
            }
        }
        Ok(out)
    }
}

impl PackedQuant {
    /// Packs `w`, checking every weight and zero point against the format (the messages
    /// are the interpreter's).
    ///
    /// # Safety
    /// `w`'s pointers must be valid for the shapes its format gives.
    pub unsafe fn new(w: &QuantWeight) -> Result<PackedQuant, String> {
        if w.format.range().is_none() {
            let name = w.format.name();
            return Err(format!(
                "{name} weights have no integer product (they are weight-only)"
            ));
        }
        let nibbles = matches!(w.format, WeightQuant::Int4 { .. });
        // int8 is one block of K rounded up to whole AMX tiles (zeros, which the other
        // families sum in too), so every family reads the same panels.
        let block = match w.format.block() {
            Some(b) => b,
            None => w.k.div_ceil(TILE_K) * TILE_K,
        };
        let blocks = w.k.div_ceil(block.max(1));
        let panels = w.n.div_ceil(NR);
        let block_bytes = block / GROUP * GROUP_BYTES / if nibbles { 2 } else { 1 };
        let mut packed = PackedQuant {
            kernel: kernels::best(),
            k: w.k,
            n: w.n,
            block,
            blocks,
            nibbles,
            weights: Aligned::zeroed(panels * blocks * block_bytes),
            scales: vec![0.0; panels * blocks * NR],
            offsets: vec![0; panels * blocks * NR],
            colsums: vec![0; panels * blocks * NR],
            no_corrections: vec![0; panels * blocks * NR],
        };
        let offset = |b: usize, n: usize| -> i32 {
            match (w.format, w.zero_points) {
                (WeightQuant::Int8, _) => 128,
                // SAFETY: the zero points cover every block and column.
                (_, Some(z)) => i32::from(unsafe { *z.add(b * w.n + n) }),
                (_, None) => 8,
            }
        };
        // `[panel][block][NR]`: where column n's metadata for block b is.
        let meta = |b: usize, n: usize| (n / NR * blocks + b) * NR + n % NR;
        for b in 0..blocks {
            for n in 0..w.n {
                packed.offsets[meta(b, n)] = offset(b, n);
                // SAFETY: forwarded from the caller.
                packed.scales[meta(b, n)] = unsafe { w.scales.get(b * w.n + n) };
            }
        }
        // Row by row, as the weight is stored.
        let mut row = vec![0; w.n];
        for k in 0..w.k {
            // SAFETY: forwarded from the caller.
            unsafe { w.centered_row(k, &mut row) }?;
            let (b, r) = (k / block, k % block);
            for (n, &c) in row.iter().enumerate() {
                let at = meta(b, n);
                packed.colsums[at] += c;
                let bytes =
                    &mut packed.weights[(n / NR * blocks + b) * block_bytes..][..block_bytes];
                // The check above bounds `c + offset` to 0..=255.
                put(bytes, nibbles, r, n % NR, (c + packed.offsets[at]) as u8);
            }
        }
        Ok(packed)
    }

    /// Runs this weight's products on the kernel family `name` (one of
    /// [`kernel_names`]) instead of the best one, for benchmarks; false if there is none.
    pub fn use_kernel(&mut self, name: &str) -> bool {
        match kernels::available().into_iter().find(|k| k.name == name) {
            Some(k) => {
                self.kernel = k;
                true
            }
            None => false,
        }
    }

    /// Size of the packed copy.
    pub fn bytes(&self) -> usize {
        self.weights.len() + 8 * self.scales.len()
    }

    /// K rounded up to whole blocks: the length of a quantized activation row.
    fn kpad(&self) -> usize {
        self.blocks * self.block
    }

    fn block_bytes(&self) -> usize {
        self.block / GROUP * GROUP_BYTES / if self.nibbles { 2 } else { 1 }
    }
}

/// Stores byte `v` of row `r` (within its block) and column `j` (within its panel).
fn put(bytes: &mut [u8], nibbles: bool, r: usize, j: usize, v: u8) {
    let (group, lane) = (r / GROUP, r % GROUP);
    let at = |g: usize| g * GROUP_BYTES + j * GROUP + lane;
    if nibbles {
        // Groups 2h and 2h+1 share 64 bytes: the low nibble holds group 2h.
        let (pair, high) = (group / 2, group % 2);
        bytes[at(pair)] |= v << (4 * high);
    } else {
        bytes[at(group)] = v;
    }
}

/// Bytes of K in one AMX tile row, to which int8 panels round K up.
const TILE_K: usize = 64;
/// Rows of one AMX tile, to which the quantized rows are padded (with zeros).
const TILE_ROWS: usize = 16;

/// Activations quantized per token, as the definition says.
struct QuantizedRows {
    /// `[M, kpad]`, zero past K.
    values: Aligned<i8>,
    /// `[M, blocks]`: the sum of each row's values over each block.
    sums: Vec<i32>,
    /// `amax / 127` per row; NaN for a row holding a NaN or an infinity.
    scales: Vec<f32>,
}

/// The rows of an `m × K` activation quantized over the pool, each by one task: `fill(i,
/// out)` writes row i's K values and returns its scale; the block sums are taken here.
/// The values are padded to whole AMX tiles of rows and to `kpad` columns, with zeros.
fn quantized_by(
    pool: &ThreadPool,
    m: usize,
    w: &PackedQuant,
    fill: &(dyn Fn(usize, &mut [i8]) -> f32 + Sync),
) -> QuantizedRows {
    let (k, kpad, blocks) = (w.k, w.kpad(), w.blocks);
    let mut q = QuantizedRows {
        values: Aligned::zeroed(m.next_multiple_of(TILE_ROWS) * kpad),
        sums: vec![0; m * blocks],
        scales: vec![0.0; m],
    };
    // Each task owns a run of rows: raw addresses, so the closure is Sync.
    let (values, sums, scales) = (
        q.values.as_mut_ptr() as usize,
        q.sums.as_mut_ptr() as usize,
        q.scales.as_mut_ptr() as usize,
    );
    let tasks = pool.threads().min(m);
    let run = |t: usize| {
        for i in t * m / tasks..(t + 1) * m / tasks {
            // SAFETY: only this task writes row i of the outputs, which hold m rows.
            let (values, sums, scale) = unsafe {
                (
                    std::slice::from_raw_parts_mut((values as *mut i8).add(i * kpad), k),
                    std::slice::from_raw_parts_mut((sums as *mut i32).add(i * blocks), blocks),
                    &mut *(scales as *mut f32).add(i),
                )
            };
            *scale = fill(i, values);
            kernels::block_sums(values, w.block, sums);
        }
    };
    pool.parallel_for(tasks, &run);
    q
}

/// Row `i` of an `m × k` matrix at address `x`, as a slice.
///
/// # Safety
/// `x` must be valid for row i of `k` elements of `T`.
unsafe fn row<'a, T>(x: usize, i: usize, k: usize) -> &'a [T] {
    // SAFETY: forwarded from the caller.
    unsafe { std::slice::from_raw_parts((x as *const T).add(i * k), k) }
}

/// Quantizes the rows of f32 `x` (`m × K`, row stride K) per token.
///
/// # Safety
/// `x` must be valid for `m × K` floats.
unsafe fn quantize_rows(
    pool: &ThreadPool,
    x: *const f32,
    m: usize,
    w: &PackedQuant,
) -> QuantizedRows {
    let x = x as usize;
    // SAFETY: forwarded from the caller.
    quantized_by(pool, m, w, &|i, out| {
        kernels::quantize_row(unsafe { row(x, i, w.k) }, out)
    })
}

/// One token: `round_half_even(x · (127 / amax))` into `out`, and the scale `amax / 127`
/// (0 for a row of zeros, NaN when the row holds a NaN or an infinity).
fn quantize_row(row: &[f32], out: &mut [i8]) -> f32 {
    let (amax, finite) = abs_max(row, 0.0, true);
    let (scale, inv) = token_scale(amax, finite);
    let Some(inv) = inv else {
        return scale;
    };
    quantize_values(row, inv, out);
    scale
}

/// `amax` and `finite` carried over `row`: the largest magnitude, and whether every
/// element is finite. The vector quantizers finish their tails with it.
fn abs_max(row: &[f32], amax: f32, finite: bool) -> (f32, bool) {
    row.iter().fold((amax, finite), |(m, f), &v| {
        (m.max(v.abs()), f && v.is_finite())
    })
}

/// A token's scale `amax / 127` and the factor `127 / amax` its values are multiplied
/// by; no factor when there is nothing to quantize: a scale of 0 for a row of zeros, NaN
/// for a row with a NaN or an infinity.
fn token_scale(amax: f32, finite: bool) -> (f32, Option<f32>) {
    match (finite, amax) {
        (false, _) => (f32::NAN, None),
        (true, 0.0) => (0.0, None),
        (true, m) => (m / 127.0, Some(127.0 / m)),
    }
}

/// `round_half_even(x · inv)` within ±127 for each `x` of `row`.
fn quantize_values(row: &[f32], inv: f32, out: &mut [i8]) {
    for (o, &v) in out.iter_mut().zip(row) {
        *o = round_half_even(v * inv).clamp(-127.0, 127.0) as i8;
    }
}

/// `y` rounded to the nearest integer, ties to even, for `|y| < 2^22`: adding and taking
/// away 1.5·2^23 leaves no fraction bits, and the FPU rounds ties to even. Unlike
/// `round_ties_even` (a libm call on baseline x86-64), the loop over it vectorizes.
#[inline(always)]
fn round_half_even(y: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (y + MAGIC) - MAGIC
}

/// Activations that arrive quantized, as the kernels read them: s8 (u8 values less 128,
/// an exact flip of the top bit) with their block sums and a row scale of 1, so that the
/// zero point and the scale act per column ([`Terms`]).
///
/// # Safety
/// `x` must be valid for `m × K` bytes.
unsafe fn quantized_rows(
    pool: &ThreadPool,
    x: *const u8,
    signed: bool,
    m: usize,
    w: &PackedQuant,
) -> QuantizedRows {
    let (x, flip) = (x as usize, if signed { 0 } else { 0x80 });
    quantized_by(pool, m, w, &|i, out| {
        // SAFETY: forwarded from the caller.
        let row: &[u8] = unsafe { row(x, i, w.k) };
        for (o, &v) in out.iter_mut().zip(row) {
            *o = (v ^ flip) as i8;
        }
        1.0
    })
}

/// The [`Terms`] of activations with a zero point and a scale (the kernels see u8 values
/// less 128, so their zero point less 128 too).
fn zero_point_terms(w: &PackedQuant, signed: bool, zero_point: i32, scale: f32) -> Terms<'static> {
    let zp = if signed { zero_point } else { zero_point - 128 };
    Terms {
        scales: w.scales.iter().map(|s| scale * s).collect(),
        // |zp| ≤ 255 and |colsum| ≤ 127·K: within i32 for K ≤ MAX_QUANTIZED_K.
        corrections: w.colsums.iter().map(|c| c.wrapping_mul(zp)).collect(),
    }
}

/// f32 activations quantized per tensor as `QuantizeLinear` does
/// ([`kiln_ir::quantize_linear`]), as the kernels read them (see [`quantized_rows`]), in
/// parallel over the pool.
///
/// # Safety
/// `x` must be valid for `m × K` floats.
unsafe fn per_tensor_rows(
    pool: &ThreadPool,
    x: *const f32,
    (signed, zero_point, scale): (bool, i32, f32),
    m: usize,
    w: &PackedQuant,
) -> QuantizedRows {
    let (x, params) = (
        x as usize,
        kernels::PerTensor::new(signed, zero_point, scale),
    );
    quantized_by(pool, m, w, &|i, out| {
        // SAFETY: forwarded from the caller.
        kernels::quantize_per_tensor(unsafe { row(x, i, w.k) }, &params, out);
        1.0
    })
}

/// The per-column terms the kernels apply, `[panel][block][NR]`: the packed scales and no
/// corrections for activations quantized here; for activations that arrive quantized,
/// `x_scale · scale` (the definition's order) and the zero point (as the kernels see it,
/// less 128 for u8) times each column's weight sum.
struct Terms<'a> {
    scales: std::borrow::Cow<'a, [f32]>,
    corrections: std::borrow::Cow<'a, [i32]>,
}

/// `c = epilogue(x · dequant(w))` for `x` of `m × K` (row stride K), the activations
/// quantized per token here or arriving quantized, as [`Activations`] says; `c` is `m × N`.
///
/// # Safety
/// `x` must be valid for `m × K` floats (or bytes), `c` writable for `m × N` (its strides)
/// and not overlapping `x`, and the epilogue's operands valid as for the f32 GEMM's.
pub unsafe fn qgemm(
    pool: &ThreadPool,
    m: usize,
    x: Activations,
    w: &PackedQuant,
    c: MatMut,
    epilogue: Epilogue,
) {
    use std::borrow::Cow;
    if m == 0 || w.n == 0 {
        return;
    }
    let (rows, terms) = match x {
        // SAFETY: forwarded from the caller.
        Activations::F32(x) => (
            unsafe { quantize_rows(pool, x, m, w) },
            Terms {
                scales: Cow::Borrowed(&w.scales),
                corrections: Cow::Borrowed(&w.no_corrections),
            },
        ),
        Activations::Quantized {
            x,
            signed,
            zero_point,
            scale,
        } => {
            // SAFETY: forwarded from the caller.
            let rows = unsafe { quantized_rows(pool, x, signed, m, w) };
            (rows, zero_point_terms(w, signed, zero_point, scale))
        }
        Activations::PerTensor {
            x,
            signed,
            zero_point,
            scale,
        } => {
            // SAFETY: forwarded from the caller.
            let rows = unsafe { per_tensor_rows(pool, x, (signed, zero_point, scale), m, w) };
            (rows, zero_point_terms(w, signed, zero_point, scale))
        }
        Activations::DynamicU8(x) => {
            // SAFETY: forwarded from the caller.
            let (min, max) = unsafe { kernels::min_max(std::slice::from_raw_parts(x, m * w.k)) };
            let (scale, zero_point) = kiln_ir::dynamic_u8(min, max);
            // SAFETY: forwarded from the caller.
            let rows = unsafe { per_tensor_rows(pool, x, (false, zero_point, scale), m, w) };
            (rows, zero_point_terms(w, false, zero_point, scale))
        }
    };
    let kernel = if w.nibbles {
        w.kernel.nibbles
    } else {
        w.kernel.bytes
    };
    let (rows, terms) = (&rows, &terms);
    // Tiles pay from a whole tile of rows (below, the padding is wasted work) and store
    // whole rows of C.
    #[cfg(target_arch = "x86_64")]
    if w.kernel.tiles && !w.nibbles && m >= TILE_ROWS && c.col_stride == 1 {
        // SAFETY: the family exists only where `amx::available()` held (AVX-512 too);
        // int8 panels are one block of whole tiles and the rows are padded to whole tiles.
        unsafe {
            let shape = (m, w.n, amx::PANELS);
            for_each_panel_group(pool, shape, c, epilogue, &|p, count, c| {
                amx::panels(w, (rows, terms), m, (p, count), c)
            })
        };
        return;
    }
    // SAFETY: `panel` writes panel p of C only; forwarded from the caller.
    unsafe {
        for_each_panel(pool, m, w.n, c, epilogue, &|p, c| {
            panel_rows(w, kernel, (rows, terms), m, p, c)
        })
    };
}

/// What the tasks of [`for_each_panel`] share: C and the epilogue, whose pointers the
/// caller vouches for.
struct Shared {
    c: MatMut,
    epilogue: Epilogue,
}

// SAFETY: tasks write disjoint column ranges of C and only read the epilogue's operands.
unsafe impl Sync for Shared {}

/// Computes an `m × n` product over the pool, panel by panel: each task takes a run of
/// whole panels, calls `panel(p, c)` for each (which writes panel p's columns of C for
/// every row), then applies the epilogue to the columns it wrote while they are in cache.
/// Each output is computed by one task in a fixed order, whatever the thread count.
///
/// # Safety
/// `panel(p, c)` must write only panel p's columns of `c`; C and the epilogue's operands
/// must be valid for `m × n`.
pub(crate) unsafe fn for_each_panel(
    pool: &ThreadPool,
    m: usize,
    n: usize,
    c: MatMut,
    epilogue: Epilogue,
    panel: &(dyn Fn(usize, MatMut) + Sync),
) {
    // SAFETY: forwarded from the caller.
    unsafe { for_each_panel_group(pool, (m, n, 1), c, epilogue, &|p, _, c| panel(p, c)) }
}

/// [`for_each_panel`] in groups of `group` panels: `panel(first, count, c)` writes panels
/// `first..first + count` (`count` is `group` but for the last group).
///
/// # Safety
/// As for [`for_each_panel`], for each group's panels.
pub(crate) unsafe fn for_each_panel_group(
    pool: &ThreadPool,
    (m, n, group): (usize, usize, usize),
    c: MatMut,
    epilogue: Epilogue,
    panel: &(dyn Fn(usize, usize, MatMut) + Sync),
) {
    let panels = n.div_ceil(NR);
    let units = panels.div_ceil(group.max(1));
    if m == 0 || units == 0 {
        return;
    }
    // Enough tasks to balance the pool, but whole groups each.
    let tasks = (pool.threads() * 4).min(units);
    let shared = Shared { c, epilogue };
    let run = |t: usize| {
        let shared = &shared;
        let (lo, hi) = (
            t * units / tasks * group,
            ((t + 1) * units / tasks * group).min(panels),
        );
        for first in (lo..hi).step_by(group) {
            panel(first, group.min(hi - first), shared.c);
        }
        let (col, end) = (lo * NR, (hi * NR).min(n));
        if col < end {
            // SAFETY: the stripe is inside C; forwarded from the caller.
            unsafe { (shared.epilogue.at(0, col)).apply(m, end - col, shared.c.at(0, col)) };
        }
    };
    pool.parallel_for(tasks, &run);
}

/// Panel `p` of C for every row.
///
/// # Safety
/// As for [`qgemm`]; `kernel` is `w`'s.
unsafe fn panel_rows(
    w: &PackedQuant,
    kernel: kernels::PanelFn,
    (rows, terms): (&QuantizedRows, &Terms),
    m: usize,
    p: usize,
    c: MatMut,
) {
    let kpad = w.kpad();
    let cols = NR.min(w.n - p * NR);
    let meta = p * w.blocks * NR;
    let panel = kernels::Panel {
        w: w.weights[p * w.blocks * w.block_bytes()..].as_ptr(),
        block_bytes: w.block_bytes(),
        groups: w.block / GROUP,
        blocks: w.blocks,
        block: w.block,
        offsets: w.offsets[meta..].as_ptr(),
        corrections: terms.corrections[meta..].as_ptr(),
        scales: terms.scales[meta..].as_ptr(),
    };
    for r0 in (0..m).step_by(MR) {
        let live = MR.min(m - r0);
        let mut sums = [[0f32; NR]; MR];
        let x = rows.values[r0 * kpad..].as_ptr();
        let xsums = rows.sums[r0 * w.blocks..].as_ptr();
        // SAFETY: the panel holds its blocks, and rows r0..r0+live their values and
        // block sums.
        unsafe { kernel(&panel, x, kpad, xsums, live, &mut sums) };
        for (i, sum) in sums.iter().enumerate().take(live) {
            let scale = rows.scales[r0 + i];
            for (j, s) in sum.iter().enumerate().take(cols) {
                let y = if scale.is_nan() { f32::NAN } else { s * scale };
                // SAFETY: (r0 + i, p·NR + j) is inside C.
                unsafe { *c.at(r0 + i, p * NR + j).ptr = y };
            }
        }
    }
}
