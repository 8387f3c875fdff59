//! f32 GEMM for the CPU runtime: a BLIS-style packed algorithm with our own micro-kernels.
//!
//! Cranelift's x64 backend stops at 128-bit vectors, about half of this CPU's f32 peak, so
//! heavy contractions run here instead of in generated code. The loops follow BLIS: B is
//! packed per `kc × nc` block, A per `mc × kc` block, and a register-tile micro-kernel
//! (AVX-512 12×32, AVX2 6×16 or portable 4×8, chosen at run time) sweeps the packed panels.
//!
//! Operands are strided views, so transposes and batch slices need no copies. Work is split
//! over the pool by output blocks (across batch items first, then along N or M), so each C
//! element is computed by one thread with a fixed k order: results are bit-identical for any
//! thread count. When A has few rows (a decode step) B is read in place, since packing it
//! would cost as much as the product.

mod epilogue;
pub mod half;
mod kernels;
mod pack;

pub use epilogue::{activate, Epilogue};
pub use half::PackedHalf;

use super::pool::ThreadPool;
use kernels::{Kernel, KernelFn, RowStream, Tile};
use pack::{pack_a, pack_b, with_scratch};

/// A read-only strided f32 matrix view: element (i, j) is at `ptr + i*row_stride + j*col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef {
    /// The address of element (0, 0).
    pub ptr: *const f32,
    /// Distance in floats between consecutive rows.
    pub row_stride: isize,
    /// Distance in floats between consecutive columns.
    pub col_stride: isize,
}

/// A writable strided f32 matrix view: element (i, j) is at `ptr + i*row_stride + j*col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct MatMut {
    /// The address of element (0, 0).
    pub ptr: *mut f32,
    /// Distance in floats between consecutive rows.
    pub row_stride: isize,
    /// Distance in floats between consecutive columns.
    pub col_stride: isize,
}

impl MatRef {
    /// The view of the sub-matrix starting at (`row`, `col`).
    fn at(self, row: usize, col: usize) -> MatRef {
        let offset = row as isize * self.row_stride + col as isize * self.col_stride;
        MatRef {
            ptr: self.ptr.wrapping_offset(offset),
            ..self
        }
    }
}

impl MatMut {
    /// The view of the sub-matrix starting at (`row`, `col`).
    pub(crate) fn at(self, row: usize, col: usize) -> MatMut {
        let offset = row as isize * self.row_stride + col as isize * self.col_stride;
        MatMut {
            ptr: self.ptr.wrapping_offset(offset),
            ..self
        }
    }
}

/// Products with fewer flops than this run on the calling thread only.
const SERIAL_FLOPS: usize = 1 << 16;

/// Products with at least this many flops (milliseconds of work) are cut into two parts per
/// thread, so that when one vCPU runs slow (descheduled, or sharing its core) the pool's
/// claiming moves a part to the other thread. With a sibling vCPU kept busy, 1024³ on two
/// threads took 21–24 ms cut so against 25–28 ms cut once per thread; smaller products lose
/// about 1% to the extra passes over A.
const BALANCED_FLOPS: usize = 1 << 30;

/// The name of the micro-kernel family this CPU uses, e.g. `avx512-12x32`.
pub fn kernel_name() -> &'static str {
    kernels::best().name
}

/// A constant B (k×n), packed once ahead of time in the panel layout the micro-kernels
/// read: for each depth block of `kc` rows, the panels of `nr` columns across all of N.
/// Weights are multiplied at every run, so packing them at compile time takes B's packing
/// (a full pass over B, strided when B is transposed) out of every product.
///
/// ```
/// use kiln_rt::gemm::{sgemm, sgemm_prepacked, MatMut, MatRef, PackedB};
/// use kiln_rt::pool::ThreadPool;
/// let (m, k, n) = (3, 4, 5);
/// let a: Vec<f32> = (0..m * k).map(|i| i as f32).collect();
/// let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32).collect();
/// let view = |p: &Vec<f32>, cols| MatRef { ptr: p.as_ptr(), row_stride: cols, col_stride: 1 };
/// let pool = ThreadPool::new(1);
/// let (mut c1, mut c2) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
/// let out = |c: &mut Vec<f32>| MatMut { ptr: c.as_mut_ptr(), row_stride: n as isize, col_stride: 1 };
/// unsafe {
///     sgemm(&pool, m, k, n, view(&a, k as isize), view(&b, n as isize), out(&mut c1), false);
///     let packed = PackedB::new(k, n, view(&b, n as isize));
///     sgemm_prepacked(&pool, 1, m, view(&a, k as isize), 0, &packed, out(&mut c2), 0);
/// }
/// assert_eq!(c1, c2);
/// ```
pub struct PackedB {
    kernel: &'static Kernel,
    k: usize,
    n: usize,
    /// N rounded up to whole panels.
    npad: usize,
    data: pack::AlignedBuf,
}

impl PackedB {
    /// Packs the k×n matrix `b`.
    ///
    /// # Safety
    /// `b` must be valid for k×n elements.
    pub unsafe fn new(k: usize, n: usize, b: MatRef) -> PackedB {
        let kernel = kernels::best();
        let npad = n.div_ceil(kernel.nr) * kernel.nr;
        let mut data = pack::AlignedBuf::default();
        let dst = data.get(k * npad);
        for pc in (0..k).step_by(kernel.kc) {
            let kc = kernel.kc.min(k - pc);
            // SAFETY: rows pc..pc+kc of B are valid; block pc's panels fill floats
            // pc*npad..(pc+kc)*npad of the buffer.
            unsafe {
                let src = b.at(pc, 0).ptr;
                pack_b(
                    kernel.nr,
                    kc,
                    n,
                    src,
                    b.row_stride,
                    b.col_stride,
                    dst.add(pc * npad),
                )
            };
        }
        PackedB {
            kernel,
            k,
            n,
            npad,
            data,
        }
    }

    /// Rows (the depth of the product).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Size of the packed copy.
    pub fn bytes(&self) -> usize {
        self.k * self.npad * std::mem::size_of::<f32>()
    }

    fn at(&self) -> Prepacked {
        Prepacked {
            ptr: self.data.ptr(),
            npad: self.npad,
        }
    }
}

/// For every `i < batch`: Cᵢ = Aᵢ·B with a packed B shared by the whole batch. Results are
/// bit-identical to [`sgemm_batched`] on the unpacked B.
///
/// # Safety
/// As for [`sgemm_batched`], with B's batch stride 0.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_prepacked(
    pool: &ThreadPool,
    batch: usize,
    m: usize,
    a: MatRef,
    a_batch_stride: isize,
    b: &PackedB,
    c: MatMut,
    c_batch_stride: isize,
) {
    // SAFETY: forwarded from the caller; no epilogue reads anything.
    unsafe {
        sgemm_prepacked_epilogue(
            pool,
            batch,
            m,
            a,
            a_batch_stride,
            b,
            c,
            c_batch_stride,
            Epilogue::NONE,
        )
    }
}

/// [`sgemm_prepacked`] with an epilogue applied to every element of C (a fused linear
/// layer): bias, activation and residual run on each block of C right after its last depth
/// block, so results are bit-identical for any thread count.
///
/// # Safety
/// As for [`sgemm_prepacked`]; the bias must hold `n` floats and the residual be valid
/// wherever C is (with C's batch stride).
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_prepacked_epilogue(
    pool: &ThreadPool,
    batch: usize,
    m: usize,
    a: MatRef,
    a_batch_stride: isize,
    b: &PackedB,
    c: MatMut,
    c_batch_stride: isize,
    epilogue: Epilogue,
) {
    let problem = Problem {
        kernel: b.kernel,
        batch,
        m,
        k: b.k,
        n: b.n,
        a,
        a_batch_stride,
        b: NO_B,
        b_batch_stride: 0,
        prepacked: Some(Packing::F32(b.at())),
        c,
        c_batch_stride,
        accumulate: false,
        epilogue,
    };
    // SAFETY: forwarded from the caller; `prepacked` replaces every read of `b`.
    unsafe { problem.run(pool) }
}

/// A weight kept narrower than f32 (halves, integers with their scales), which the GEMM
/// widens to f32 block by block as it packs B, so that a process holds only the narrow
/// copy. Widening must be the weight's exact f32 value, so that a product over it equals
/// the product over the widened weight.
pub trait NarrowB: Sync {
    /// Rows.
    fn k(&self) -> usize;
    /// Columns.
    fn n(&self) -> usize;
    /// Weight (r, c) as f32 (inside the weight).
    fn value(&self, r: usize, c: usize) -> f32;
    /// Writes the `kc × cols` block at row `pc`, column `col` as f32 panels of `nr`
    /// columns, as `pack_b` lays out an f32 block (padding columns may hold anything
    /// finite: no kernel stores them): a vector path where the weight has one, else
    /// [`pack_values`].
    ///
    /// # Safety
    /// The block must lie inside the weight, `col` be a multiple of `nr`, and `dst` be
    /// valid for `cols.div_ceil(nr) * nr * kc` floats.
    unsafe fn pack_block(
        &self,
        nr: usize,
        rows: (usize, usize),
        cols: (usize, usize),
        dst: *mut f32,
    );
}

/// [`NarrowB::pack_block`] one [`NarrowB::value`] at a time, zeros past N.
///
/// # Safety
/// As for [`NarrowB::pack_block`].
pub(crate) unsafe fn pack_values(
    b: &(impl NarrowB + ?Sized),
    nr: usize,
    (pc, kc): (usize, usize),
    (col, cols): (usize, usize),
    dst: *mut f32,
) {
    for (panel, j0) in (0..cols).step_by(nr).enumerate() {
        for p in 0..kc {
            for j in 0..nr {
                let c = col + j0 + j;
                let v = if c < b.n() { b.value(pc + p, c) } else { 0.0 };
                // SAFETY: (p, j) of panel `panel` lies within dst.
                unsafe { *dst.add((panel * kc + p) * nr + j) = v };
            }
        }
    }
}

/// The narrow panels under the f32 panels of a `kc × cols` block at column `col`, for the
/// vector paths of [`NarrowB::pack_block`]: each f32 panel `nr` wide holds `nr / width`
/// narrow panels. Calls `fill(p, out)` for narrow panel `p` of the weight, `out` its first
/// float in `dst` (row stride `nr`), and zeroes those past the weight's `panels`.
///
/// # Safety
/// As for [`NarrowB::pack_block`]; `nr` and `col` must be multiples of `width`.
pub(crate) unsafe fn each_narrow_panel(
    (nr, width, panels): (usize, usize, usize),
    kc: usize,
    (col, cols): (usize, usize),
    dst: *mut f32,
    mut fill: impl FnMut(usize, *mut f32),
) {
    for (panel, j0) in (0..cols).step_by(nr).enumerate() {
        let out = dst.wrapping_add(panel * kc * nr);
        for h in 0..nr / width {
            let (p, at) = ((col + j0) / width + h, out.wrapping_add(h * width));
            if p < panels {
                fill(p, at);
                continue;
            }
            for r in 0..kc {
                // SAFETY: row r of the f32 panel holds nr floats, `width` of them from `at`.
                unsafe { std::ptr::write_bytes(at.add(r * nr), 0, width) };
            }
        }
    }
}

/// `c = epilogue(a · b)` for `m` rows of A over a narrow weight, widened as each block of
/// it is packed: bit-identical to [`sgemm_batched_epilogue`] over the widened weight.
///
/// # Safety
/// As for [`sgemm_prepacked_epilogue`] with a batch of one.
pub unsafe fn sgemm_narrow_epilogue(
    pool: &ThreadPool,
    m: usize,
    a: MatRef,
    b: &dyn NarrowB,
    c: MatMut,
    epilogue: Epilogue,
) {
    // SAFETY: forwarded from the caller.
    unsafe { sgemm_narrow_on(kernels::best(), pool, m, a, b, c, epilogue) }
}

/// [`sgemm_narrow_epilogue`] on a given kernel family.
///
/// # Safety
/// As for [`sgemm_narrow_epilogue`]; the CPU must run `kernel`.
unsafe fn sgemm_narrow_on(
    kernel: &'static Kernel,
    pool: &ThreadPool,
    m: usize,
    a: MatRef,
    b: &dyn NarrowB,
    c: MatMut,
    epilogue: Epilogue,
) {
    let problem = Problem {
        kernel,
        batch: 1,
        m,
        k: b.k(),
        n: b.n(),
        a,
        a_batch_stride: 0,
        b: NO_B,
        b_batch_stride: 0,
        prepacked: Some(Packing::Narrow(b)),
        c,
        c_batch_stride: 0,
        accumulate: false,
        epilogue,
    };
    // SAFETY: forwarded from the caller; the narrow weight replaces every read of `b`.
    unsafe { problem.run(pool) }
}

/// The strided B of a product whose B is pre-packed: never read.
const NO_B: MatRef = MatRef {
    ptr: std::ptr::null(),
    row_stride: 0,
    col_stride: 0,
};

/// A B packed ahead of time.
#[derive(Clone, Copy)]
enum Packing<'a> {
    /// In the micro-kernels' f32 panels.
    F32(Prepacked),
    /// A narrow weight, widened block by block.
    Narrow(&'a dyn NarrowB),
}

/// Where a pre-packed B lives: block `pc` starts at float `pc * npad`.
#[derive(Clone, Copy)]
struct Prepacked {
    ptr: *const f32,
    npad: usize,
}

impl Prepacked {
    /// The packed `kc × ·` block at depth `pc` starting at column `col` (a whole panel).
    fn block(self, pc: usize, col: usize, kc: usize) -> *mut f32 {
        self.ptr.wrapping_add(pc * self.npad + col * kc) as *mut f32
    }
}

/// C = A·B (or C += A·B when `accumulate`), where A is m×k, B is k×n and C is m×n.
///
/// # Safety
/// Every element of the three views must be valid (C writable and not aliasing A or B) for
/// the given sizes.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    pool: &ThreadPool,
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    b: MatRef,
    c: MatMut,
    accumulate: bool,
) {
    // SAFETY: forwarded from the caller; a batch of one never uses the batch strides.
    unsafe { sgemm_batched(pool, 1, m, k, n, a, 0, b, 0, c, 0, accumulate) }
}

/// C = A·B (or C += A·B) on the calling thread alone, for callers that already split
/// their work over the pool (fused attention runs one of these per tile).
///
/// # Safety
/// As for [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_serial(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    b: MatRef,
    c: MatMut,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm_block(
            kernels::best(),
            m,
            k,
            n,
            a,
            BMatrix::Strided(b),
            c,
            accumulate,
            Epilogue::NONE,
        )
    }
}

/// [`sgemm_serial`] with B packed beforehand: C = A·B (or C += A·B when `accumulate`) on
/// the calling thread, bit-identical to packing B on the way. For a B that several
/// products on one thread or across tasks read, such as attention's keys and values.
///
/// # Safety
/// A must be valid for `m × b.k()` elements and C writable for `m × b.n()`, not aliasing A.
pub unsafe fn sgemm_serial_prepacked(
    m: usize,
    a: MatRef,
    b: &PackedB,
    c: MatMut,
    accumulate: bool,
) {
    if m == 0 || b.n == 0 {
        return;
    }
    // SAFETY: forwarded from the caller; `b` replaces every read of the strided B.
    unsafe {
        gemm_block(
            b.kernel,
            m,
            b.k,
            b.n,
            a,
            BMatrix::Prepacked(b.at(), 0),
            c,
            accumulate,
            Epilogue::NONE,
        )
    }
}

/// For every `i < batch`: Cᵢ = Aᵢ·Bᵢ (or += when `accumulate`), where Aᵢ is `a` advanced by
/// `i * a_batch_stride` floats (likewise B and C). A stride of 0 broadcasts an operand.
///
/// # Safety
/// Every element of every batch item's views must be valid, and the C items must not
/// overlap each other or any A or B item.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_batched(
    pool: &ThreadPool,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    a_batch_stride: isize,
    b: MatRef,
    b_batch_stride: isize,
    c: MatMut,
    c_batch_stride: isize,
    accumulate: bool,
) {
    let (a, b) = ((a, a_batch_stride), (b, b_batch_stride));
    // SAFETY: forwarded from the caller; no epilogue reads anything.
    unsafe {
        sgemm_batched_epilogue(
            pool,
            batch,
            [m, k, n],
            a,
            b,
            (c, c_batch_stride),
            accumulate,
            Epilogue::NONE,
        )
    }
}

/// [`sgemm_batched`] with an epilogue (see [`sgemm_prepacked_epilogue`]); operands are
/// `(view, batch stride)` and the sizes `[m, k, n]`.
///
/// # Safety
/// As for [`sgemm_batched`] and [`sgemm_prepacked_epilogue`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_batched_epilogue(
    pool: &ThreadPool,
    batch: usize,
    [m, k, n]: [usize; 3],
    (a, a_batch_stride): (MatRef, isize),
    (b, b_batch_stride): (MatRef, isize),
    (c, c_batch_stride): (MatMut, isize),
    accumulate: bool,
    epilogue: Epilogue,
) {
    let problem = Problem {
        kernel: kernels::best(),
        batch,
        m,
        k,
        n,
        a,
        a_batch_stride,
        b,
        b_batch_stride,
        prepacked: None,
        c,
        c_batch_stride,
        accumulate,
        epilogue,
    };
    // SAFETY: forwarded from the caller.
    unsafe { problem.run(pool) }
}

/// One batched product with its kernel family; the unit of work splitting.
#[derive(Clone, Copy)]
struct Problem<'a> {
    kernel: &'static Kernel,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    a_batch_stride: isize,
    b: MatRef,
    b_batch_stride: isize,
    /// B packed ahead of time (then `b` is unused).
    prepacked: Option<Packing<'a>>,
    c: MatMut,
    c_batch_stride: isize,
    accumulate: bool,
    /// Applied to each block of C after its last depth block.
    epilogue: Epilogue,
}

// SAFETY: the caller of `sgemm_batched` guarantees the views are valid; tasks write disjoint
// blocks of C and only read A and B.
unsafe impl Sync for Problem<'_> {}

/// How one batch item's C is cut into parts.
#[derive(Clone, Copy)]
enum Split {
    /// Parts are column ranges (each packs its own slice of B).
    Columns { width: usize },
    /// Parts are row ranges.
    Rows { height: usize },
}

impl Problem<'_> {
    /// Splits the work into tasks and runs them on the pool.
    ///
    /// # Safety
    /// As for [`sgemm_batched`].
    unsafe fn run(&self, pool: &ThreadPool) {
        if self.batch == 0 || self.m == 0 || self.n == 0 {
            return;
        }
        let threads = pool.threads();
        let flops = 2 * self.batch * self.m * self.k * self.n;
        let parts = if flops < SERIAL_FLOPS {
            1
        } else {
            let per_thread = if flops >= BALANCED_FLOPS { 2 } else { 1 };
            let parts = threads * per_thread;
            parts / gcd(self.batch, parts)
        };
        let split = self.split(parts);
        let per_item = match split {
            Split::Columns { width } => self.n.div_ceil(width),
            Split::Rows { height } => self.m.div_ceil(height),
        };
        let tasks = self.batch * per_item;
        let task = |t: usize| {
            // SAFETY: tasks cover disjoint blocks of C; views are valid per the contract.
            unsafe { self.run_part(t / per_item, t % per_item, split) }
        };
        if flops < SERIAL_FLOPS {
            (0..tasks).for_each(task);
        } else {
            pool.parallel_for(tasks, &task);
        }
    }

    /// Cuts C into `parts` pieces along N when it is at least as wide as tall, else along M,
    /// in whole register tiles.
    fn split(&self, parts: usize) -> Split {
        let (mr, nr) = (self.kernel.mr, self.kernel.nr);
        if self.n >= self.m {
            let width = self.n.div_ceil(parts).div_ceil(nr) * nr;
            Split::Columns { width }
        } else {
            let height = self.m.div_ceil(parts).div_ceil(mr) * mr;
            Split::Rows { height }
        }
    }

    /// Computes part `part` of batch item `item`.
    ///
    /// # Safety
    /// As for [`sgemm_batched`].
    unsafe fn run_part(&self, item: usize, part: usize, split: Split) {
        let i = item as isize;
        let a = MatRef {
            ptr: self.a.ptr.wrapping_offset(i * self.a_batch_stride),
            ..self.a
        };
        let b = MatRef {
            ptr: self.b.ptr.wrapping_offset(i * self.b_batch_stride),
            ..self.b
        };
        let c = MatMut {
            ptr: self.c.ptr.wrapping_offset(i * self.c_batch_stride),
            ..self.c
        };
        let (m, k, n) = (self.m, self.k, self.n);
        let epilogue = self.epilogue.item(item, self.c_batch_stride);
        let block = match split {
            Split::Columns { width } => {
                let j0 = part * width;
                let e = epilogue.at(0, j0);
                (
                    m,
                    n.min(j0 + width) - j0,
                    a,
                    b.at(0, j0),
                    c.at(0, j0),
                    j0,
                    e,
                )
            }
            Split::Rows { height } => {
                let i0 = part * height;
                let e = epilogue.at(i0, 0);
                (
                    m.min(i0 + height) - i0,
                    n,
                    a.at(i0, 0),
                    b,
                    c.at(i0, 0),
                    0,
                    e,
                )
            }
        };
        let (m, n, a, b, c, j0, epilogue) = block;
        let b = match self.prepacked {
            Some(Packing::F32(packed)) => BMatrix::Prepacked(packed, j0),
            Some(Packing::Narrow(b)) => BMatrix::Narrow(b, j0),
            None => BMatrix::Strided(b),
        };
        // SAFETY: the block lies inside this item's valid views.
        unsafe { gemm_block(self.kernel, m, k, n, a, b, c, self.accumulate, epilogue) }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The B of one thread's block.
#[derive(Clone, Copy)]
enum BMatrix<'a> {
    /// A strided view, packed (or read in place) block by block.
    Strided(MatRef),
    /// Packed ahead of time; the block starts at this column of the whole B.
    Prepacked(Prepacked, usize),
    /// A narrow weight, widened as it is packed; the block starts at this column of it.
    Narrow(&'a dyn NarrowB, usize),
}

/// One thread's BLIS loop nest over an m×k×n block with its own packing buffers.
///
/// # Safety
/// The views must be valid for the sizes given.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_block(
    kern: &Kernel,
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    b: BMatrix<'_>,
    c: MatMut,
    accumulate: bool,
    epilogue: Epilogue,
) {
    if k == 0 {
        if !accumulate {
            // SAFETY: C is valid for m×n.
            unsafe { zero(m, n, c) };
        }
        // SAFETY: the epilogue's operands cover C.
        unsafe { epilogue.apply(m, n, c) };
        return;
    }
    // B panels are reused once per A panel; with few A panels, packing B costs more than
    // reading it in place (possible when its columns are contiguous).
    let strided = match b {
        BMatrix::Strided(b) => Some(b),
        BMatrix::Prepacked(..) | BMatrix::Narrow(..) => None,
    };
    let direct_b =
        strided.is_some_and(|b| b.col_stride == 1 && b.row_stride > 0 && m <= 2 * kern.mr);
    let b_view = strided.unwrap_or(NO_B);
    if let Some(stream) = kern
        .stream
        .filter(|rows| direct_b && c.col_stride == 1 && m <= rows.len())
    {
        // SAFETY: the views are valid; B and C have unit column strides.
        unsafe { stream_rows(stream, kern.kc, m, k, n, a, b_view, c, accumulate) };
        // The rows are few (a decode step), so the whole block is still in cache.
        // SAFETY: the epilogue's operands cover C.
        unsafe { epilogue.apply(m, n, c) };
        return;
    }
    with_scratch(|scratch| {
        for jc in (0..n).step_by(kern.nc) {
            let nc = kern.nc.min(n - jc);
            for pc in (0..k).step_by(kern.kc) {
                let kc = kern.kc.min(k - pc);
                let b_block = b_view.at(pc, jc);
                let panels = nc.div_ceil(kern.nr) * kern.nr * kc;
                let block = Block {
                    kern,
                    kc,
                    nc,
                    load_c: accumulate || pc > 0,
                    b: match b {
                        BMatrix::Prepacked(packed, j0) => {
                            BSource::Packed(packed.block(pc, j0 + jc, kc))
                        }
                        BMatrix::Narrow(b, j0) => {
                            let packed = scratch.b.get(panels);
                            // SAFETY: the weight outlives the product and holds the block,
                            // whose column is a multiple of nr; the buffer has the size
                            // asked for.
                            unsafe { b.pack_block(kern.nr, (pc, kc), (j0 + jc, nc), packed) };
                            BSource::Packed(packed)
                        }
                        BMatrix::Strided(_) if direct_b => {
                            BSource::Direct(b_block, scratch.b.get(kern.nr * kc))
                        }
                        BMatrix::Strided(b) => {
                            let packed = scratch.b.get(panels);
                            // SAFETY: the block of B is valid; the buffer has the size asked
                            // for.
                            unsafe {
                                pack_b(
                                    kern.nr,
                                    kc,
                                    nc,
                                    b_block.ptr,
                                    b.row_stride,
                                    b.col_stride,
                                    packed,
                                )
                            };
                            BSource::Packed(packed)
                        }
                    },
                };
                for ic in (0..m).step_by(kern.mc) {
                    let mc = kern.mc.min(m - ic);
                    let a_block = a.at(ic, pc);
                    let a_src = match kern.strided_a {
                        // A row-major A is read in place: packing it would cost a pass over
                        // A per column block, and the rows of a tile are L1-resident anyway.
                        Some(kernels) if a.col_stride == 1 && a.row_stride > 0 => ASource {
                            ptr: a_block.ptr,
                            row_offset: a.row_stride as usize,
                            rs: a.row_stride as usize,
                            step: 1,
                            kernels,
                        },
                        _ => {
                            let packed = scratch.a.get(mc.div_ceil(kern.mr) * kern.mr * kc);
                            // SAFETY: the block of A is valid; the buffer has the size asked
                            // for.
                            unsafe {
                                pack_a(
                                    kern.mr,
                                    mc,
                                    kc,
                                    a_block.ptr,
                                    a.row_stride,
                                    a.col_stride,
                                    packed,
                                )
                            };
                            ASource {
                                ptr: packed,
                                row_offset: kc,
                                rs: 1,
                                step: kern.mr,
                                kernels: kern.by_rows,
                            }
                        }
                    };
                    // SAFETY: C's block at (ic, jc) is valid for mc×nc.
                    unsafe { block.sweep(mc, a_src, c.at(ic, jc)) };
                    if pc + kc == k {
                        // The block is final and was just written: finish it in cache.
                        // SAFETY: the epilogue's operands cover C.
                        unsafe { epilogue.at(ic, jc).apply(mc, nc, c.at(ic, jc)) };
                    }
                }
            }
        }
    });
}

/// GEMV-like products: the rows of A stream together over B in place, `kc` rows of B at a time (the
/// same depth blocking as the tiled path, so results are bit-identical to it).
///
/// # Safety
/// The views must be valid for the sizes given; B and C must have unit column strides.
#[allow(clippy::too_many_arguments)]
unsafe fn stream_rows(
    stream: &[unsafe fn(&RowStream)],
    kc_max: usize,
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    b: MatRef,
    c: MatMut,
    accumulate: bool,
) {
    for pc in (0..k).step_by(kc_max) {
        let rows = RowStream {
            kc: kc_max.min(k - pc),
            a: a.at(0, pc).ptr,
            a_rs: a.row_stride,
            a_cs: a.col_stride,
            b: b.at(pc, 0).ptr,
            ldb: b.row_stride as usize,
            c: c.ptr,
            c_rs: c.row_stride,
            cols: n,
            load_c: accumulate || pc > 0,
        };
        // SAFETY: the rows and the B block are inside the caller's valid views; m >= 1.
        unsafe { stream[m - 1](&rows) };
    }
}

/// Where a `kc × nc` block of B comes from.
enum BSource {
    /// Packed panels of `nr` columns.
    Packed(*mut f32),
    /// Read in place (unit column stride); the pointer is a buffer for a ragged last panel.
    Direct(MatRef, *mut f32),
}

/// Where an `mc × kc` block of A is read from, and the kernels that read it so.
#[derive(Clone, Copy)]
struct ASource {
    ptr: *const f32,
    /// The tile of rows from `ir` (a multiple of `mr`) starts at `ptr + ir * row_offset`:
    /// `kc` for packed panels, the row stride in place.
    row_offset: usize,
    /// Floats between two rows at one step.
    rs: usize,
    /// Floats between two steps of one row.
    step: usize,
    kernels: &'static [KernelFn],
}

/// One (pc, jc) block: a depth slice of A and B against a column block of C.
struct Block<'k> {
    kern: &'k Kernel,
    kc: usize,
    nc: usize,
    load_c: bool,
    b: BSource,
}

impl Block<'_> {
    /// Runs the micro-kernel over every register tile of an `mc × nc` block of C.
    ///
    /// # Safety
    /// `a` holds `mc` rows of depth `kc`; C is valid for `mc × nc`.
    unsafe fn sweep(&self, mc: usize, a: ASource, c: MatMut) {
        let (mr, nr, kc) = (self.kern.mr, self.kern.nr, self.kc);
        let tile = |ir: usize, jr: usize, b_ptr: *const f32, ldb: usize| {
            let rows = mr.min(mc - ir);
            let tile = Tile {
                kc,
                // SAFETY: row ir of the block (its panel, when packed) is inside A.
                a: unsafe { a.ptr.add(ir * a.row_offset) },
                a_rs: a.rs,
                a_step: a.step,
                b: b_ptr,
                ldb,
                c: c.at(ir, jr).ptr,
                rs_c: c.row_stride,
                cs_c: c.col_stride,
                cols: nr.min(self.nc - jr),
                load_c: self.load_c,
            };
            // SAFETY: the tile describes valid memory, and the kernel family was chosen
            // for this CPU.
            unsafe { (a.kernels[rows - 1])(&tile) };
        };
        // Packed B: the A micro-panel stays in L1 while B's micro-panels stream from L2
        // (a B micro-panel of the wide kernels would not fit in L1 beside an A panel).
        if let BSource::Packed(packed) = self.b {
            for ir in (0..mc).step_by(mr) {
                for (panel, jr) in (0..self.nc).step_by(nr).enumerate() {
                    // SAFETY: packed panels are contiguous, nr*kc floats each.
                    tile(ir, jr, unsafe { packed.add(panel * nr * kc) }, nr);
                }
            }
            return;
        }
        // B in place (few rows of A): each B panel is read once from memory, then from L1.
        for (panel, jr) in (0..self.nc).step_by(nr).enumerate() {
            let cols = nr.min(self.nc - jr);
            // SAFETY: panel `panel` of B exists (packed, in place, or copied to the edge buffer).
            let (b_ptr, ldb) = unsafe { self.b_panel(panel, jr, cols) };
            for ir in (0..mc).step_by(mr) {
                tile(ir, jr, b_ptr, ldb);
            }
        }
    }

    /// The B panel for columns `jr..jr + cols` and its per-step stride.
    ///
    /// # Safety
    /// The panel must exist in the block.
    unsafe fn b_panel(&self, panel: usize, jr: usize, cols: usize) -> (*const f32, usize) {
        let (nr, kc) = (self.kern.nr, self.kc);
        match self.b {
            // SAFETY: packed panels are contiguous, nr*kc floats each.
            BSource::Packed(packed) => (unsafe { packed.add(panel * nr * kc) }, nr),
            BSource::Direct(b, _) if cols == nr => {
                (b.at(0, jr).ptr, usize::try_from(b.row_stride).unwrap_or(0))
            }
            BSource::Direct(b, edge) => {
                let b = b.at(0, jr);
                // SAFETY: the edge buffer holds nr*kc floats; B is valid for kc×cols.
                unsafe { pack_b(nr, kc, cols, b.ptr, b.row_stride, b.col_stride, edge) };
                (edge, nr)
            }
        }
    }
}

/// Writes zeros to an m×n view.
///
/// # Safety
/// C must be valid for m×n.
unsafe fn zero(m: usize, n: usize, c: MatMut) {
    for i in 0..m {
        for j in 0..n {
            // SAFETY: (i, j) is inside the view.
            unsafe { *c.at(i, j).ptr = 0.0 };
        }
    }
}

#[cfg(test)]
mod tests;
