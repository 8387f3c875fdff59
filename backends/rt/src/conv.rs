//! `f32` convolution ([`Call::Conv`](crate::call::Call::Conv)) as im2col + GEMM.
//!
//! For each batch image, the im2col matrix holds one row per (input channel, kernel
//! position) and one column per output position: `cols[c·K + k][o] = x[c, o·s - pb + k·d]`
//! (0 in the padding). Group `g`'s rows are a contiguous block, so its output is one GEMM
//! `y[g] (M/G × O) = w[g] (M/G × C/G·K) · cols[g] (C/G·K × O)`. A 1×1 kernel with unit
//! strides and no padding needs no im2col: the input image is the matrix. Rows of the
//! im2col are filled in parallel (plain copies); the GEMMs use the pool themselves, or run
//! one group per task when there are at least as many groups as threads (depthwise). Every
//! output element is computed by one GEMM call, so results are deterministic for a given
//! thread count.

use super::gemm::{self, MatMut, MatRef};
use super::pool::ThreadPool;
use super::Memory;
use crate::call::Conv;

/// Below this many im2col elements per image the copy runs on one thread.
const PARALLEL_COPY: usize = 1 << 15;

/// The sizes of one convolution.
struct Geometry<'a> {
    c: &'a Conv,
    /// Input channels per group.
    cg: usize,
    /// Output channels per group.
    mg: usize,
    /// Kernel positions.
    k: usize,
    /// Input positions (one channel plane).
    s: usize,
    /// Output positions.
    o: usize,
}

/// Runs a convolution.
///
/// # Safety
/// `mem` must map `c.x`, `c.w`, `c.y` (and `c.cols`) to `f32` buffers of their shapes.
pub(super) unsafe fn conv(c: &Conv, mem: &dyn Memory, pool: &ThreadPool) {
    let groups = c.attrs.groups;
    let geo = Geometry {
        c,
        cg: c.x_shape[1] / groups,
        mg: c.w_shape[0] / groups,
        k: c.w_shape[2..].iter().product(),
        s: c.x_shape[2..].iter().product(),
        o: c.y_shape[2..].iter().product(),
    };
    let (x, w, y) = (
        mem.addr(c.x) as *const f32,
        mem.addr(c.w) as *const f32,
        mem.addr(c.y) as *mut f32,
    );
    let rows = geo.cg * geo.k;
    if geo.o == 0 || geo.mg == 0 {
        return;
    }
    if rows == 0 {
        let len = c.y_shape.iter().product();
        // SAFETY: `y` holds the whole output.
        unsafe { std::ptr::write_bytes(y, 0, len) };
        return;
    }
    let cols = c.cols.map(|b| mem.addr(b) as *mut f32);
    for n in 0..c.x_shape[0] {
        // SAFETY: image `n` of `x` lies inside the input buffer.
        let image = unsafe { x.add(n * c.x_shape[1] * geo.s) };
        let matrix = match cols {
            Some(cols) => {
                // SAFETY: `cols` holds C·K·O elements (the scheduler sized it).
                unsafe { im2col(&geo, image, cols, pool) };
                cols as *const f32
            }
            None => image,
        };
        // SAFETY: image `n` of `y` lies inside the output buffer.
        let out = unsafe { y.add(n * c.y_shape[1] * geo.o) };
        // SAFETY: the matrices are inside their buffers (shapes checked by the scheduler).
        unsafe { gemms(&geo, w, matrix, out, pool) };
    }
}

/// One GEMM per group for one image: `out[g] = w[g] · matrix[g]`.
unsafe fn gemms(
    geo: &Geometry,
    w: *const f32,
    matrix: *const f32,
    out: *mut f32,
    pool: &ThreadPool,
) {
    let rows = geo.cg * geo.k;
    let (w, matrix, out) = (w as usize, matrix as usize, out as usize);
    let group = |g: usize, pool: &ThreadPool| {
        let a = MatRef {
            ptr: (w as *const f32).wrapping_add(g * geo.mg * rows),
            row_stride: rows as isize,
            col_stride: 1,
        };
        let b = MatRef {
            ptr: (matrix as *const f32).wrapping_add(g * rows * geo.o),
            row_stride: geo.o as isize,
            col_stride: 1,
        };
        let c = MatMut {
            ptr: (out as *mut f32).wrapping_add(g * geo.mg * geo.o),
            row_stride: geo.o as isize,
            col_stride: 1,
        };
        // SAFETY: group `g`'s blocks of `w`, the matrix and `out` have these shapes.
        unsafe { gemm::sgemm(pool, geo.mg, rows, geo.o, a, b, c, false) };
    };
    let groups = geo.c.attrs.groups;
    if groups > 1 && groups >= pool.threads() {
        pool.parallel_for(groups, &|g| group(g, pool));
    } else {
        (0..groups).for_each(|g| group(g, pool));
    }
}

/// Fills the im2col matrix of one image (`C·K` rows of `O`).
unsafe fn im2col(geo: &Geometry, image: *const f32, cols: *mut f32, pool: &ThreadPool) {
    let rows = geo.c.x_shape[1] * geo.k;
    let (image, cols) = (image as usize, cols as usize);
    let fill = |lo: usize, hi: usize| {
        for r in lo..hi {
            // SAFETY: row `r` and its source channel plane lie inside their buffers.
            let (plane, row) = unsafe {
                (
                    std::slice::from_raw_parts((image as *const f32).add(r / geo.k * geo.s), geo.s),
                    std::slice::from_raw_parts_mut((cols as *mut f32).add(r * geo.o), geo.o),
                )
            };
            fill_row(geo, r % geo.k, plane, row);
        }
    };
    let tasks = if rows * geo.o >= PARALLEL_COPY {
        (pool.threads() * 4).min(rows)
    } else {
        1
    };
    pool.parallel_for(tasks, &|t| fill(rows * t / tasks, rows * (t + 1) / tasks));
}

/// Fills one im2col row: kernel position `kpos` (flat) of one channel `plane`, at every
/// output position.
fn fill_row(geo: &Geometry, kpos: usize, plane: &[f32], row: &mut [f32]) {
    let a = &geo.c.attrs;
    let spatial = &geo.c.x_shape[2..];
    let out = &geo.c.y_shape[2..];
    let kernel = &geo.c.w_shape[2..];
    let nd = spatial.len();
    // The kernel position and the plane strides, per dim.
    let mut k = vec![0usize; nd];
    let mut rest = kpos;
    for d in (0..nd).rev() {
        k[d] = rest % kernel[d];
        rest /= kernel[d];
    }
    let mut plane_strides = vec![1usize; nd];
    for d in (0..nd.saturating_sub(1)).rev() {
        plane_strides[d] = plane_strides[d + 1] * spatial[d + 1];
    }
    // Input coordinate of output `o` along dim `d` (may be outside the data).
    let coord = |d: usize, o: usize| {
        (o * a.strides[d] + k[d] * a.dilations[d]) as isize - a.pads[d].0 as isize
    };
    let last = nd - 1;
    let (lo, hi) = valid_range(
        spatial[last],
        out[last],
        a.strides[last],
        k[last] * a.dilations[last],
        a.pads[last].0,
    );
    let olast = out[last];
    let mut idx = vec![0usize; last];
    for line in row.chunks_mut(olast.max(1)) {
        let mut base = Some(0usize);
        for d in 0..last {
            let c = coord(d, idx[d]);
            base = base.filter(|_| c >= 0 && (c as usize) < spatial[d]);
            base = base.map(|b| b + c as usize * plane_strides[d]);
        }
        match base {
            Some(base) if lo < hi => {
                line[..lo].fill(0.0);
                line[hi..].fill(0.0);
                let start = base + coord(last, lo) as usize;
                let s = a.strides[last];
                if s == 1 {
                    line[lo..hi].copy_from_slice(&plane[start..start + (hi - lo)]);
                } else {
                    for (j, v) in line[lo..hi].iter_mut().enumerate() {
                        *v = plane[start + j * s];
                    }
                }
            }
            _ => line.fill(0.0),
        }
        for d in (0..last).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// The outputs `lo..hi` (of `out`) whose input coordinate `o·stride + offset - pad` lies
/// in `0..n`.
fn valid_range(n: usize, out: usize, stride: usize, offset: usize, pad: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(offset).div_ceil(stride).min(out);
    let hi = if n + pad > offset {
        ((n - 1 + pad - offset) / stride + 1).min(out)
    } else {
        0
    };
    (lo, hi.max(lo))
}

#[cfg(test)]
mod tests {
    use super::valid_range;

    #[test]
    fn valid_range_clips_to_the_data() {
        // n 5, pad 2, stride 1, offset 0: coordinates o - 2 in 0..5 for o in 2..7.
        assert_eq!(valid_range(5, 9, 1, 0, 2), (2, 7));
        // offset 4 with pad 1, stride 2: 2o + 3 < 5 for o < 1.
        assert_eq!(valid_range(5, 3, 2, 4, 1), (0, 1));
        // entirely outside.
        assert_eq!(valid_range(2, 3, 1, 6, 0), (0, 0));
    }
}
