//! Packing of GEMM operands into the micro-kernels' panel layouts, and the per-thread,
//! 64-byte-aligned scratch buffers that hold them.
//!
//! A block of A (`mc × kc`) becomes panels of `mr` rows stored k-major (`a[p * mr + i]`); a
//! block of B (`kc × nc`) becomes panels of `nr` columns stored k-major (`b[p * nr + j]`),
//! zero-padded to full width. Panels are contiguous, so the kernel streams them linearly.

use std::cell::RefCell;

/// One cache line of floats; a `Vec` of these is a 64-byte-aligned float buffer.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A growable, 64-byte-aligned float buffer.
#[derive(Default)]
pub(super) struct AlignedBuf {
    lines: Vec<Line>,
}

impl AlignedBuf {
    /// A pointer to at least `len` floats (contents unspecified).
    pub fn get(&mut self, len: usize) -> *mut f32 {
        let needed = len.div_ceil(16);
        if self.lines.len() < needed {
            self.lines.resize(needed, Line([0.0; 16]));
        }
        self.lines.as_mut_ptr().cast()
    }

    /// The start of the buffer.
    pub fn ptr(&self) -> *const f32 {
        self.lines.as_ptr().cast()
    }
}

/// The packing buffers of one thread.
#[derive(Default)]
pub(super) struct Scratch {
    /// The packed A block.
    pub a: AlignedBuf,
    /// The packed B block (or B's edge panel when B is read in place).
    pub b: AlignedBuf,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers (fresh ones if they are already in use).
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// Packs `rows × kc` of A (element (i, p) at `src + i*rs + p*cs`) into panels of `mr` rows.
/// Rows past the last in a panel are left unwritten: kernels read only live rows.
///
/// # Safety
/// `src` must be valid for the described elements and `dst` for `rows.div_ceil(mr)*mr*kc`
/// floats.
pub(super) unsafe fn pack_a(
    mr: usize,
    rows: usize,
    kc: usize,
    src: *const f32,
    rs: isize,
    cs: isize,
    dst: *mut f32,
) {
    for (panel, i0) in (0..rows).step_by(mr).enumerate() {
        let live = mr.min(rows - i0);
        // SAFETY: the panel lies within dst's `panels * mr * kc` floats.
        let out = unsafe { dst.add(panel * mr * kc) };
        for i in 0..live {
            // SAFETY: row i0 + i < rows, so its elements are valid.
            let row = unsafe { src.offset((i0 + i) as isize * rs) };
            for p in 0..kc {
                // SAFETY: p < kc and i < mr keep both accesses in bounds.
                unsafe { *out.add(p * mr + i) = *row.offset(p as isize * cs) };
            }
        }
    }
}

/// Packs `kc × cols` of B (element (p, j) at `src + p*rs + j*cs`) into zero-padded panels
/// of `nr` columns.
///
/// # Safety
/// `src` must be valid for the described elements and `dst` for `cols.div_ceil(nr)*nr*kc`
/// floats.
pub(super) unsafe fn pack_b(
    nr: usize,
    kc: usize,
    cols: usize,
    src: *const f32,
    rs: isize,
    cs: isize,
    dst: *mut f32,
) {
    for (panel, j0) in (0..cols).step_by(nr).enumerate() {
        let live = nr.min(cols - j0);
        // SAFETY: the panel lies within dst's `panels * nr * kc` floats.
        let out = unsafe { dst.add(panel * nr * kc) };
        // SAFETY: column j0 < cols is valid.
        let base = unsafe { src.offset(j0 as isize * cs) };
        if cs == 1 {
            for p in 0..kc {
                // SAFETY: `live` contiguous floats of row p are valid; the panel row has nr.
                unsafe {
                    let from = base.offset(p as isize * rs);
                    let to = out.add(p * nr);
                    std::ptr::copy_nonoverlapping(from, to, live);
                    std::ptr::write_bytes(to.add(live), 0, nr - live);
                }
            }
        } else {
            for p in 0..kc {
                // SAFETY: p < kc, j < nr keep dst in bounds; j < live keeps src in bounds.
                unsafe {
                    let from = base.offset(p as isize * rs);
                    for j in 0..nr {
                        let v = if j < live {
                            *from.offset(j as isize * cs)
                        } else {
                            0.0
                        };
                        *out.add(p * nr + j) = v;
                    }
                }
            }
        }
    }
}
