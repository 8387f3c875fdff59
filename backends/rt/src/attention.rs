//! Fused attention ([`Call::Attention`](crate::call::Call::Attention)): for each block of
//! query rows of one head, the keys are visited in tiles; each tile's scores come from one
//! small GEMM, are scaled and masked, and feed an online softmax (a running row maximum and
//! sum, rescaling the accumulated output when the maximum grows) and a second GEMM into the
//! output accumulator. Scores never exist beyond one `QUERY_BLOCK × KEY_BLOCK` tile per
//! thread, whatever the sequence length.
//!
//! When every key fits one tile (up to [`KEY_BLOCK`]), each row's weights are divided by
//! their sum before the product with the values, as softmax defines its probabilities;
//! only longer rows divide the accumulated output at the end. The two orders differ by a
//! rounding, which quantized activations downstream amplify: on onnxruntime's
//! `quantize_dynamic` MiniLM (seq 128), dividing at the end put the output at cosine
//! 0.9919 from the ONNX definition's, normalizing first at 0.9957 (onnxruntime: 0.9970).
//!
//! Each task owns whole output rows and visits keys in a fixed order, so results are
//! bit-identical for any thread count.
//!
//! When a head has several query blocks, its keys and values are packed for the GEMM once,
//! before the blocks run, rather than once per block: packing the transposed keys is a
//! gather, and it was a third of ViT's attention (197 queries, so 7 blocks per head).

use std::sync::OnceLock;

use super::gemm::{sgemm_serial, sgemm_serial_prepacked, MatMut, MatRef, PackedB};
use super::math::exp;
use super::pool::ThreadPool;
use super::Memory;
use crate::call::{Attention, AttentionOperand};
use kiln_ir::MaskedRows;

/// Query rows per task.
const QUERY_BLOCK: usize = 32;
/// Keys per tile: sequences up to this long take one pass, with no rescaling.
const KEY_BLOCK: usize = 256;

/// Runs one attention call.
///
/// # Safety
/// `mem` must map every buffer of `a` to memory of the size its dims give.
pub unsafe fn attention(a: &Attention, mem: &dyn Memory, pool: &ThreadPool) {
    let d = a.dims;
    if d.batch == 0 || d.heads == 0 || d.q_len == 0 || d.v_depth == 0 {
        return;
    }
    let ptrs = Pointers {
        q: mem.addr(a.q.buf) as *const f32,
        k: mem.addr(a.k.buf) as *const f32,
        v: mem.addr(a.v.buf) as *const f32,
        out: mem.addr(a.out.buf) as *mut f32,
        mask: a.mask.as_ref().map(|m| mem.addr(m.buf) as *const u8),
    };
    let blocks = d.q_len.div_ceil(QUERY_BLOCK);
    // One query block reads each key once: packing on the way costs the same, and small
    // products can read B in place.
    let packs: Vec<OnceLock<Vec<KeyTile>>> = if blocks > 1 {
        (0..d.batch * d.kv_heads).map(|_| OnceLock::new()).collect()
    } else {
        Vec::new()
    };
    if !packs.is_empty() {
        let pack = |t: usize| {
            // SAFETY: K and V hold every (batch, kv head); each task fills its own slot.
            let tiles = unsafe { pack_head(a, &ptrs, t / d.kv_heads, t % d.kv_heads) };
            let _ = packs[t].set(tiles);
        };
        pool.parallel_for(packs.len(), &pack);
    }
    let task = |t: usize| {
        let (bh, block) = (t / blocks, t % blocks);
        let (b, h) = (bh / d.heads, bh % d.heads);
        let g = h / (d.heads / d.kv_heads);
        let tiles = packs
            .get(b * d.kv_heads + g)
            .and_then(OnceLock::get)
            .map(Vec::as_slice);
        let rows = Block {
            b,
            h,
            i0: block * QUERY_BLOCK,
            tiles,
        };
        // SAFETY: tasks write disjoint row blocks of the output; the rest is read only.
        unsafe { query_block(a, &ptrs, rows) };
    };
    pool.parallel_for(d.batch * d.heads * blocks, &task);
}

/// The keys and values of one key tile, packed as the right-hand operands of its two
/// products: the transposed keys (`depth × cols`) and the values (`cols × v_depth`).
struct KeyTile {
    keys_t: PackedB,
    values: PackedB,
}

/// Packs every key tile of kv head `g` of batch item `b`.
///
/// # Safety
/// As for [`attention`].
unsafe fn pack_head(a: &Attention, p: &Pointers, b: usize, g: usize) -> Vec<KeyTile> {
    let d = a.dims;
    let k = head_start(&a.k, p.k, b, g);
    let v = head_start(&a.v, p.v, b, g);
    (0..d.kv_len)
        .step_by(KEY_BLOCK)
        .map(|j0| {
            let cols = KEY_BLOCK.min(d.kv_len - j0);
            // SAFETY: keys and values j0..j0 + cols of this head are valid.
            unsafe {
                KeyTile {
                    keys_t: PackedB::new(d.depth, cols, keys_transposed(k, j0, a.k.row)),
                    values: PackedB::new(
                        cols,
                        d.v_depth,
                        matrix(v.wrapping_add(j0 * a.v.row), a.v.row),
                    ),
                }
            }
        })
        .collect()
}

/// Keys j0.. of a head (rows `row` floats apart), read transposed: `depth × ·`.
fn keys_transposed(k: *const f32, j0: usize, row: usize) -> MatRef {
    MatRef {
        ptr: k.wrapping_add(j0 * row),
        row_stride: 1,
        col_stride: row as isize,
    }
}

/// The first element of head `h` of batch item `b` of an operand whose buffer is at `base`.
fn head_start(op: &AttentionOperand, base: *const f32, b: usize, h: usize) -> *const f32 {
    base.wrapping_add(op.offset + b * op.batch + h * op.head)
}

/// The call's buffers for this run.
struct Pointers {
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
    mask: Option<*const u8>,
}

// SAFETY: tasks only read q, k, v and the mask, and write disjoint blocks of `out`.
unsafe impl Sync for Pointers {}

/// The running softmax state of a block of query rows.
struct Rows {
    /// Scores of the current tile, `rows × KEY_BLOCK`, turned into probabilities in place.
    tile: Vec<f32>,
    /// Unnormalized output rows, `rows × Dv`.
    acc: Vec<f32>,
    /// Row maxima so far.
    max: Vec<f32>,
    /// Row sums of `exp(score - max)` so far.
    sum: Vec<f32>,
    /// Whether some mask entry of the row so far is not -∞ (always, without a mask).
    open: Vec<bool>,
}

/// One task's query rows: from row `i0` of head `h` of batch item `b`, with the head's key
/// tiles packed beforehand (`tiles`) or packed on the way.
#[derive(Clone, Copy)]
struct Block<'t> {
    b: usize,
    h: usize,
    i0: usize,
    tiles: Option<&'t [KeyTile]>,
}

/// Computes up to [`QUERY_BLOCK`] output rows. The whole block, softmax loops and `exp`
/// included, is built for the widest vectors the CPU has (one dispatch per block): the
/// same operations in the same order, sixteen or eight lanes wide instead of the
/// baseline's four.
///
/// # Safety
/// As for [`attention`]; `rows.tiles`, if given, are the head's, from [`pack_head`].
unsafe fn query_block(a: &Attention, p: &Pointers, rows: Block) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was just detected; forwarded from the caller.
            return unsafe { query_block_avx512(a, p, rows) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were just detected; forwarded from the caller.
            return unsafe { query_block_avx2(a, p, rows) };
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { query_block_body(a, p, rows) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn query_block_avx512(a: &Attention, p: &Pointers, rows: Block) {
    // SAFETY: forwarded from the caller.
    unsafe { query_block_body(a, p, rows) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn query_block_avx2(a: &Attention, p: &Pointers, rows: Block) {
    // SAFETY: forwarded from the caller.
    unsafe { query_block_body(a, p, rows) }
}

/// The body of [`query_block`], inlined into each variant with its loops.
///
/// # Safety
/// As for [`query_block`].
#[inline(always)]
unsafe fn query_block_body(a: &Attention, p: &Pointers, Block { b, h, i0, tiles }: Block) {
    let d = a.dims;
    let rows = QUERY_BLOCK.min(d.q_len - i0);
    let g = h / (d.heads / d.kv_heads);
    let q = head_start(&a.q, p.q, b, h).wrapping_add(i0 * a.q.row);
    let k = head_start(&a.k, p.k, b, g);
    let v = head_start(&a.v, p.v, b, g);
    // One tile holds every key: its weights are normalized before the product.
    let normalized = d.kv_len <= KEY_BLOCK;
    let mut st = Rows {
        tile: vec![0.0; rows * KEY_BLOCK],
        acc: vec![0.0; rows * d.v_depth],
        max: vec![f32::NEG_INFINITY; rows],
        sum: vec![0.0; rows],
        open: vec![false; rows],
    };
    for j0 in (0..d.kv_len).step_by(KEY_BLOCK) {
        let cols = KEY_BLOCK.min(d.kv_len - j0);
        let tile = MatMut {
            ptr: st.tile.as_mut_ptr(),
            row_stride: KEY_BLOCK as isize,
            col_stride: 1,
        };
        let packed = tiles.map(|t| &t[j0 / KEY_BLOCK]);
        // SAFETY: q holds `rows` rows of `depth`; keys j0.. hold `cols` rows, read
        // transposed; the tile holds rows × KEY_BLOCK.
        unsafe {
            let queries = matrix(q, a.q.row);
            match packed {
                Some(t) => sgemm_serial_prepacked(rows, queries, &t.keys_t, tile, false),
                None if rows == 1 => {
                    let keys = k.wrapping_add(j0 * a.k.row);
                    one_query_scores(q, keys, a.k.row, d.depth, &mut st.tile[..cols])
                }
                None => {
                    let keys_t = keys_transposed(k, j0, a.k.row);
                    sgemm_serial(rows, d.depth, cols, queries, keys_t, tile, false)
                }
            }
        }
        for r in 0..rows {
            let scores = &mut st.tile[r * KEY_BLOCK..r * KEY_BLOCK + cols];
            // SAFETY: the mask covers every score of the call.
            st.open[r] |= unsafe { scale_and_mask(a, p, scores, [b, h, i0 + r, j0]) };
            let acc = &mut st.acc[r * d.v_depth..(r + 1) * d.v_depth];
            online_softmax(scores, &mut st.max[r], &mut st.sum[r], acc);
            if normalized {
                scale_row(scores, 1.0 / st.sum[r]);
            }
        }
        // SAFETY: the tile's probabilities times values j0.. accumulate into acc.
        unsafe {
            let probs = MatRef {
                ptr: st.tile.as_ptr(),
                row_stride: KEY_BLOCK as isize,
                col_stride: 1,
            };
            let acc = MatMut {
                ptr: st.acc.as_mut_ptr(),
                row_stride: d.v_depth as isize,
                col_stride: 1,
            };
            match packed {
                Some(t) => sgemm_serial_prepacked(rows, probs, &t.values, acc, true),
                None if rows == 1 => {
                    let values = v.wrapping_add(j0 * a.v.row);
                    one_query_values(&st.tile[..cols], values, a.v.row, &mut st.acc)
                }
                None => {
                    let values = matrix(v.wrapping_add(j0 * a.v.row), a.v.row);
                    sgemm_serial(rows, cols, d.v_depth, probs, values, acc, true)
                }
            }
        }
    }
    let out = head_start(&a.out, p.out, b, h) as *mut f32;
    for r in 0..rows {
        let acc = &st.acc[r * d.v_depth..(r + 1) * d.v_depth];
        // SAFETY: row i0 + r of this head's output, which no other row overlaps.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(out.add((i0 + r) * a.out.row), d.v_depth) };
        let zero = match a.rows {
            MaskedRows::Nan => false,
            MaskedRows::ZeroNan => st.sum[r].is_nan() || st.sum[r] == 0.0,
            MaskedRows::ZeroMasked => !st.open[r],
        };
        let inv = if normalized { 1.0 } else { 1.0 / st.sum[r] };
        finish_row(acc, inv, zero, dst);
    }
}

/// The scores of one query (a decode step's) against `scores.len()` keys `row` floats
/// apart: one dot product per key, reading each key row in place where a GEMM would
/// first pack the keys transposed, a gather as large as the cache at every token.
///
/// # Safety
/// `q` holds `depth` floats, and each key `depth` floats.
#[inline(always)]
unsafe fn one_query_scores(
    q: *const f32,
    keys: *const f32,
    row: usize,
    depth: usize,
    scores: &mut [f32],
) {
    // SAFETY: the caller's contract.
    let q = unsafe { std::slice::from_raw_parts(q, depth) };
    for (j, s) in scores.iter_mut().enumerate() {
        // SAFETY: key j is `depth` floats at `j · row`.
        let key = unsafe { std::slice::from_raw_parts(keys.wrapping_add(j * row), depth) };
        *s = dot(q, key);
    }
}

/// `acc += Σ_j probs[j] · value_j` over value rows `row` floats apart, each read in place.
///
/// # Safety
/// Each value row holds `acc.len()` floats.
#[inline(always)]
unsafe fn one_query_values(probs: &[f32], values: *const f32, row: usize, acc: &mut [f32]) {
    for (j, &w) in probs.iter().enumerate() {
        // SAFETY: value j is `acc.len()` floats at `j · row`.
        let value = unsafe { std::slice::from_raw_parts(values.wrapping_add(j * row), acc.len()) };
        for (a, &x) in acc.iter_mut().zip(value) {
            *a = w.mul_add(x, *a);
        }
    }
}

/// `Σ a[i]·b[i]` in sixteen lanes, then the lanes in order: the same for any thread count.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [0.0f32; LANES];
    let whole = a.len() - a.len() % LANES;
    for (ca, cb) in a[..whole]
        .chunks_exact(LANES)
        .zip(b[..whole].chunks_exact(LANES))
    {
        for l in 0..LANES {
            lanes[l] = ca[l].mul_add(cb[l], lanes[l]);
        }
    }
    let mut sum = 0.0;
    for (x, y) in a[whole..].iter().zip(&b[whole..]) {
        sum = x.mul_add(*y, sum);
    }
    lanes.iter().fold(sum, |s, l| s + l)
}

/// A row-major matrix whose rows are `stride` floats apart.
fn matrix(ptr: *const f32, stride: usize) -> MatRef {
    MatRef {
        ptr,
        row_stride: stride as isize,
        col_stride: 1,
    }
}

/// Scales one row of a tile of scores, whose first element is score `[b, h, i, j]`, and
/// applies the mask. Returns whether some entry of an additive mask is not -∞ here (true
/// for other masks and none).
///
/// # Safety
/// The mask buffer, if any, must cover the whole score tensor.
#[inline(always)]
unsafe fn scale_and_mask(
    a: &Attention,
    p: &Pointers,
    scores: &mut [f32],
    [b, h, i, j]: [usize; 4],
) -> bool {
    for s in scores.iter_mut() {
        *s *= a.scale;
    }
    let (Some(m), Some(base)) = (&a.mask, p.mask) else {
        return true;
    };
    let start = m.batch_offsets[b] as isize
        + h as isize * m.strides[0]
        + i as isize * m.strides[1]
        + j as isize * m.strides[2];
    let step = m.strides[2];
    if m.keep {
        let keep = base as *const bool;
        for (c, s) in scores.iter_mut().enumerate() {
            // SAFETY: in bounds per the contract.
            if !unsafe { *keep.offset(start + c as isize * step) } {
                *s = f32::NEG_INFINITY;
            }
        }
        return true;
    }
    let add = base as *const f32;
    let mut open = false;
    for (c, s) in scores.iter_mut().enumerate() {
        // SAFETY: in bounds per the contract.
        let m = unsafe { *add.offset(start + c as isize * step) };
        open |= m != f32::NEG_INFINITY;
        *s += m;
    }
    open
}

/// Folds one row of a tile into the running maximum `max`, sum `sum` and output `acc`:
/// the scores become `exp(score - max)` and `acc` is rescaled to the new maximum (the tile's
/// product with the values is added afterwards). NaN scores poison the sum, as they
/// poison a softmax; rows masked so far keep zero weight.
#[inline(always)]
fn online_softmax(scores: &mut [f32], max: &mut f32, sum: &mut f32, acc: &mut [f32]) {
    let tile_max = row_max(scores);
    let new_max = max.max(tile_max);
    if new_max == f32::NEG_INFINITY {
        // Everything so far is masked out: exp(-∞ - -∞) would be NaN, but these scores
        // have zero weight (NaN scores still poison the row).
        for s in scores.iter_mut() {
            *s = if s.is_nan() { f32::NAN } else { 0.0 };
        }
        *sum += scores.iter().sum::<f32>();
        return;
    }
    let rescale = (*max - new_max).exp();
    if rescale != 1.0 {
        scale_row(acc, rescale);
    }
    *sum = *sum * rescale + exp_shifted(scores, new_max);
    *max = new_max;
}

/// Multiplies each of `xs` by `by`.
#[inline(always)]
fn scale_row(xs: &mut [f32], by: f32) {
    for x in xs.iter_mut() {
        *x *= by;
    }
}

/// Writes `acc · inv` (`inv` the reciprocal of the row's sum, or 1 where its weights were
/// normalized already) to `dst`, or zeros when the row's guard (see `MaskedRows`) closed
/// it: for `where(isnan(p), 0, p)`, rows whose sum is NaN (a NaN or +∞ score) or 0 (all
/// scores -∞); for the ONNX guard, rows whose mask is -∞ throughout.
#[inline(always)]
fn finish_row(acc: &[f32], inv: f32, zero: bool, dst: &mut [f32]) {
    if zero {
        dst.fill(0.0);
        return;
    }
    for (o, x) in dst.iter_mut().zip(acc) {
        *o = x * inv;
    }
}

/// The greatest element, NaN ignored (as `f32::max` does), -∞ for an empty row. Kept in
/// sixteen lanes: one running maximum chained its latency through every score, 800
/// cycles a ViT row. `f32::max` ignores NaN, so the result is the same in any order.
#[inline(always)]
fn row_max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = xs.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(x);
        }
    }
    let tail = chunks.remainder().iter().copied();
    lanes
        .into_iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Below this, `exp` is taken as 0: e^-87 is still a normal f32, and any smaller weight
/// vanishes next to the row maximum's weight of 1. Without the cut a masked (-∞) score
/// made a subnormal, and each subnormal product costs a microcode assist: a causal mask
/// made this loop 14% of GPT-2's int8 run.
const EXP_FLUSH: f32 = -87.0;

/// `exp(x)`, or 0 below [`EXP_FLUSH`]; NaN passes through.
#[inline(always)]
fn softmax_weight(x: f32) -> f32 {
    let low = x < EXP_FLUSH;
    let e = exp(if low { EXP_FLUSH } else { x });
    // A mask rather than a branch, which keeps the loop vectorized.
    f32::from_bits(e.to_bits() & (!low as u32).wrapping_neg())
}

/// Replaces each `x` by `exp(x - shift)` and returns their sum: the weights in one pass (a
/// plain map, as wide as the caller's vectors), then their sum in eight lanes, so the
/// order is fixed whatever the width.
#[inline(always)]
fn exp_shifted(xs: &mut [f32], shift: f32) -> f32 {
    for x in xs.iter_mut() {
        *x = softmax_weight(*x - shift);
    }
    let mut lanes = [0.0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    let mut total: f32 = lanes.iter().sum();
    for &x in chunks.remainder() {
        total += x;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_weights_flush_below_normal_range_and_keep_nan() {
        assert_eq!(softmax_weight(f32::NEG_INFINITY).to_bits(), 0);
        assert_eq!(softmax_weight(-87.5).to_bits(), 0);
        assert!(softmax_weight(f32::NAN).is_nan());
        for x in [-87.0f32, -50.0, -1.0, 0.0, 3.5] {
            assert_eq!(softmax_weight(x), exp(x));
            assert!(softmax_weight(x).is_normal(), "{x}");
        }
        let mut xs = [
            0.0f32,
            -200.0,
            f32::NEG_INFINITY,
            -1.0,
            -88.0,
            2.0,
            -3.0,
            -4.0,
            -9.0,
        ];
        let total = exp_shifted(&mut xs, 2.0);
        assert!(xs.iter().all(|&w| w == 0.0 || w.is_normal()));
        assert_eq!(xs[1], 0.0);
        assert_eq!(xs[5], 1.0);
        assert!((total - xs.iter().sum::<f32>()).abs() < 1e-6);
    }

    #[test]
    fn online_softmax_keeps_masked_rows_weightless_and_nan_poisons() {
        let (mut max, mut sum, mut acc) = (f32::NEG_INFINITY, 0.0, vec![0.0f32; 2]);
        let mut masked = [f32::NEG_INFINITY; 3];
        online_softmax(&mut masked, &mut max, &mut sum, &mut acc);
        assert_eq!((max, sum, masked), (f32::NEG_INFINITY, 0.0, [0.0; 3]));
        let mut scores = [0.0, f32::NEG_INFINITY];
        online_softmax(&mut scores, &mut max, &mut sum, &mut acc);
        assert_eq!((max, sum), (0.0, 1.0));
        let mut poisoned = [1.0, f32::NAN];
        online_softmax(&mut poisoned, &mut max, &mut sum, &mut acc);
        assert!(sum.is_nan());
        let mut out = [7.0f32; 2];
        finish_row(&acc, sum, true, &mut out);
        assert_eq!(out, [0.0, 0.0]);
        // The reciprocal of a zero sum: 0 · ∞ is NaN.
        finish_row(&acc, f32::INFINITY, false, &mut out);
        assert!(out.iter().all(|x| x.is_nan()));
    }
}
