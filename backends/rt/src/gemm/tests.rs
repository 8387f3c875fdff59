//! GEMM tests: every kernel family against a naive triple loop on odd shapes and layouts.

use super::kernels::{self, Kernel};
use super::*;

/// A deterministic pseudo-random fill in [-1, 1).
fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A matrix stored in a buffer, row-major or transposed (column-major), with padding.
struct Stored {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    transposed: bool,
}

impl Stored {
    const PAD: usize = 3;

    fn new(rows: usize, cols: usize, transposed: bool, seed: u64) -> Stored {
        let len = (rows.max(1) + Self::PAD) * (cols.max(1) + Self::PAD);
        Stored {
            data: fill(len, seed),
            rows,
            cols,
            transposed,
        }
    }

    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, (self.rows + Self::PAD) as isize)
        } else {
            ((self.cols + Self::PAD) as isize, 1)
        }
    }

    fn get(&self, i: usize, j: usize) -> f32 {
        let (rs, cs) = self.strides();
        self.data[(i as isize * rs + j as isize * cs) as usize]
    }

    fn view(&self) -> MatRef {
        let (row_stride, col_stride) = self.strides();
        MatRef {
            ptr: self.data.as_ptr(),
            row_stride,
            col_stride,
        }
    }

    fn view_mut(&mut self) -> MatMut {
        let (row_stride, col_stride) = self.strides();
        MatMut {
            ptr: self.data.as_mut_ptr(),
            row_stride,
            col_stride,
        }
    }
}

struct Case {
    m: usize,
    k: usize,
    n: usize,
    a_t: bool,
    b_t: bool,
    c_t: bool,
    accumulate: bool,
}

/// Runs one case with `kernel` on `pool` and checks it against f64 naive products; returns C.
fn check(kernel: &'static Kernel, pool: &ThreadPool, case: &Case) -> Vec<f32> {
    let Case {
        m,
        k,
        n,
        a_t,
        b_t,
        c_t,
        accumulate,
    } = *case;
    let a = Stored::new(m, k, a_t, 1);
    let b = Stored::new(k, n, b_t, 2);
    let mut c = Stored::new(m, n, c_t, 3);
    let before: Vec<f32> = c.data.clone();
    let problem = Problem {
        kernel,
        batch: 1,
        m,
        k,
        n,
        a: a.view(),
        a_batch_stride: 0,
        b: b.view(),
        b_batch_stride: 0,
        prepacked: None,
        c: c.view_mut(),
        c_batch_stride: 0,
        accumulate,
        epilogue: Epilogue::NONE,
    };
    // SAFETY: the buffers hold every element of the views.
    unsafe { problem.run(pool) };
    let (rs, cs) = c.strides();
    let mut touched = vec![false; c.data.len()];
    for i in 0..m {
        for j in 0..n {
            let idx = (i as isize * rs + j as isize * cs) as usize;
            touched[idx] = true;
            let mut want: f64 = if accumulate { before[idx] as f64 } else { 0.0 };
            let mut scale: f64 = want.abs();
            for p in 0..k {
                let prod = a.get(i, p) as f64 * b.get(p, j) as f64;
                want += prod;
                scale += prod.abs();
            }
            let got = c.data[idx] as f64;
            assert!(
                (got - want).abs() <= 1e-4 * scale.max(1.0),
                "{} m={m} k={k} n={n} a_t={a_t} b_t={b_t} c_t={c_t} acc={accumulate}: \
                 C[{i},{j}] = {got}, want {want}",
                kernel.name
            );
        }
    }
    let untouched_ok = c
        .data
        .iter()
        .zip(&before)
        .zip(&touched)
        .all(|((x, y), t)| *t || x == y);
    assert!(
        untouched_ok,
        "{}: wrote outside C (m={m} k={k} n={n})",
        kernel.name
    );
    c.data
}

#[test]
fn odd_shapes_match_naive_on_every_kernel() {
    let pools = [ThreadPool::new(1), ThreadPool::new(2)];
    let dims = [1, 2, 3, 5, 7, 12, 13, 16, 17, 31, 33, 47, 64, 70];
    for kernel in kernels::available() {
        for (idx, &m) in dims.iter().enumerate() {
            for (jdx, &k) in dims.iter().enumerate() {
                for (ldx, &n) in dims.iter().enumerate() {
                    let bits = idx + 3 * jdx + 7 * ldx;
                    let case = Case {
                        m,
                        k,
                        n,
                        a_t: bits % 2 == 1,
                        b_t: bits / 2 % 2 == 1,
                        c_t: bits / 4 % 5 == 1,
                        accumulate: bits % 3 == 0,
                    };
                    check(kernel, &pools[bits % 2], &case);
                }
            }
        }
    }
}

#[test]
fn every_dim_up_to_70_matches_naive() {
    let pool = ThreadPool::new(2);
    let kernel = kernels::best();
    for d in 1..=70 {
        for (m, k, n) in [(d, 9, 37), (11, d, 29), (23, 6, d), (d, d, d)] {
            let bits = m + k + n;
            let case = Case {
                m,
                k,
                n,
                a_t: bits % 2 == 0,
                b_t: d % 3 == 0,
                c_t: false,
                accumulate: d % 2 == 0,
            };
            check(kernel, &pool, &case);
        }
    }
}

#[test]
fn large_blocks_cross_every_cache_block() {
    let pool = ThreadPool::new(2);
    for kernel in kernels::available() {
        let (m, k, n) = (kernel.mc + 5, kernel.kc + 7, kernel.nc + kernel.nr + 3);
        for accumulate in [false, true] {
            let case = Case {
                m,
                k,
                n,
                a_t: false,
                b_t: false,
                c_t: false,
                accumulate,
            };
            check(kernel, &pool, &case);
        }
    }
}

#[test]
fn results_are_bit_identical_for_any_thread_count() {
    let kernel = kernels::best();
    // (13, 600, 5) splits rows so one part has a single row: the row stream must agree
    // with the tiled kernel bit for bit.
    for (m, k, n) in [
        (1, 300, 257),
        (130, 70, 90),
        (200, 260, 40),
        (64, 64, 64),
        (13, 600, 5),
    ] {
        let case = Case {
            m,
            k,
            n,
            a_t: false,
            b_t: false,
            c_t: false,
            accumulate: false,
        };
        let one = check(kernel, &ThreadPool::new(1), &case);
        for threads in [2, 3] {
            let many = check(kernel, &ThreadPool::new(threads), &case);
            let same = one
                .iter()
                .zip(&many)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "m={m} k={k} n={n}: {threads} threads differ from 1");
        }
    }
}

#[test]
fn zero_depth_clears_or_keeps_c() {
    let pool = ThreadPool::new(2);
    let (m, n) = (5, 7);
    let a = [0f32; 1];
    let b = [0f32; 1];
    for accumulate in [false, true] {
        let mut c = vec![2.0f32; m * n];
        let a_view = MatRef {
            ptr: a.as_ptr(),
            row_stride: 0,
            col_stride: 0,
        };
        let b_view = MatRef {
            ptr: b.as_ptr(),
            row_stride: 0,
            col_stride: 0,
        };
        let c_view = MatMut {
            ptr: c.as_mut_ptr(),
            row_stride: n as isize,
            col_stride: 1,
        };
        // SAFETY: k = 0 reads nothing from A and B; C holds m×n floats.
        unsafe { sgemm(&pool, m, 0, n, a_view, b_view, c_view, accumulate) };
        let want = if accumulate { 2.0 } else { 0.0 };
        assert!(c.iter().all(|&x| x == want));
    }
}

#[test]
fn batched_matches_per_item_products() {
    let (batch, m, k, n) = (5, 33, 20, 45);
    let a = fill(batch * m * k, 4);
    let b = fill(batch * k * n, 5);
    // Batch item i uses A_i row-major and B_i transposed (as in Q·Kᵀ).
    let a_view = MatRef {
        ptr: a.as_ptr(),
        row_stride: k as isize,
        col_stride: 1,
    };
    let b_view = MatRef {
        ptr: b.as_ptr(),
        row_stride: 1,
        col_stride: k as isize,
    };
    for threads in [1, 2, 3] {
        let pool = ThreadPool::new(threads);
        let mut c = vec![0f32; batch * m * n];
        let c_view = MatMut {
            ptr: c.as_mut_ptr(),
            row_stride: n as isize,
            col_stride: 1,
        };
        let (sa, sb, sc) = ((m * k) as isize, (k * n) as isize, (m * n) as isize);
        // SAFETY: every batch item lies inside its buffer.
        unsafe {
            sgemm_batched(
                &pool, batch, m, k, n, a_view, sa, b_view, sb, c_view, sc, false,
            )
        };
        for item in 0..batch {
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k)
                        .map(|p| a[item * m * k + i * k + p] * b[item * k * n + j * k + p])
                        .sum();
                    let got = c[item * m * n + i * n + j];
                    assert!(
                        (got - want).abs() <= 1e-4 * k as f32,
                        "item {item} ({i},{j})"
                    );
                }
            }
        }
    }
}

#[test]
fn prepacked_b_is_bit_identical_to_packing_per_run() {
    let kernel = kernels::best();
    let (kc, nc, nr) = (kernel.kc, kernel.nc, kernel.nr);
    let shapes = [
        (1, 300, 257),
        (7, 40, 50),
        (130, 70, 90),
        (2 * kernel.mr + 1, kc + 7, nc + nr + 3),
        (kernel.mc + 5, 2 * kc + 1, 2 * nc + 1),
    ];
    for (idx, &(m, k, n)) in shapes.iter().enumerate() {
        let batch = 1 + idx % 3;
        let b = Stored::new(k, n, idx % 2 == 1, 7);
        let a = fill(batch * m * k, 8);
        let a_view = MatRef {
            ptr: a.as_ptr(),
            row_stride: k as isize,
            col_stride: 1,
        };
        let (sa, sc) = ((m * k) as isize, (m * n) as isize);
        // SAFETY: B's buffer holds the k×n view.
        let packed = unsafe { PackedB::new(k, n, b.view()) };
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            let mut want = vec![0f32; batch * m * n];
            let mut got = vec![1f32; batch * m * n];
            let view = |c: &mut Vec<f32>| MatMut {
                ptr: c.as_mut_ptr(),
                row_stride: n as isize,
                col_stride: 1,
            };
            // SAFETY: every batch item lies inside its buffer; B is shared (stride 0).
            unsafe {
                sgemm_batched(
                    &pool,
                    batch,
                    m,
                    k,
                    n,
                    a_view,
                    sa,
                    b.view(),
                    0,
                    view(&mut want),
                    sc,
                    false,
                );
                sgemm_prepacked(&pool, batch, m, a_view, sa, &packed, view(&mut got), sc);
            }
            let same = want
                .iter()
                .zip(&got)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "m={m} k={k} n={n} batch={batch} threads={threads}");
        }
    }
}

#[test]
fn a_read_in_place_is_bit_identical_to_packed_a() {
    // Row-major A is read in place by `strided_a` kernels; the same values stored
    // column-major are packed. Both must give every element the same FMA sequence.
    let pool = ThreadPool::new(2);
    for (m, k, n) in [(1, 5, 7), (13, 300, 70), (37, 800, 65), (200, 129, 100)] {
        let a = fill(m * k, 11);
        let a_t: Vec<f32> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
        let b = fill(k * n, 12);
        let run = |view: MatRef| {
            let mut c = vec![0f32; m * n];
            let out = MatMut {
                ptr: c.as_mut_ptr(),
                row_stride: n as isize,
                col_stride: 1,
            };
            let b = MatRef {
                ptr: b.as_ptr(),
                row_stride: n as isize,
                col_stride: 1,
            };
            // SAFETY: the buffers hold every element of the views.
            unsafe { sgemm(&pool, m, k, n, view, b, out, false) };
            c
        };
        let in_place = run(MatRef {
            ptr: a.as_ptr(),
            row_stride: k as isize,
            col_stride: 1,
        });
        let packed = run(MatRef {
            ptr: a_t.as_ptr(),
            row_stride: 1,
            col_stride: m as isize,
        });
        let same = in_place
            .iter()
            .zip(&packed)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "m={m} k={k} n={n}: in-place A differs from packed A");
        assert!(
            in_place.iter().any(|&x| x != 0.0),
            "m={m} k={k} n={n}: C is all zero"
        );
    }
}

/// A half weight widened block by block gives the product over its f32 widening bit for
/// bit, on every kernel family (the portable one's 8-column panels cut the 16-column
/// half panels), odd shapes and thread counts, with an epilogue.
#[test]
fn half_weights_are_bit_identical_to_their_f32_widening() {
    let shapes = [
        (1, 5, 3),
        (9, 40, 50),
        (13, 300, 257),
        (130, 70, 90),
        (200, 600, 1100),
    ];
    for kernel in kernels::available() {
        for (idx, &(m, k, n)) in shapes.iter().enumerate() {
            for bf16 in [false, true] {
                let values = fill(k * n, 30 + idx as u64);
                let bits: Vec<u16> = values
                    .iter()
                    .map(|&v| match bf16 {
                        true => ::half::bf16::from_f32(v).to_bits(),
                        false => ::half::f16::from_f32(v).to_bits(),
                    })
                    .collect();
                let wide: Vec<f32> = bits
                    .iter()
                    .map(|&b| match bf16 {
                        true => ::half::bf16::from_bits(b).to_f32(),
                        false => ::half::f16::from_bits(b).to_f32(),
                    })
                    .collect();
                // SAFETY: k × n halves.
                let half = unsafe { PackedHalf::new(k, n, bits.as_ptr(), bf16) }.unwrap();
                let b = MatRef {
                    ptr: wide.as_ptr(),
                    row_stride: n as isize,
                    col_stride: 1,
                };
                let a = fill(m * k, 31);
                let bias = fill(n, 32);
                let a_view = MatRef {
                    ptr: a.as_ptr(),
                    row_stride: k as isize,
                    col_stride: 1,
                };
                let epilogue = Epilogue {
                    bias: bias.as_ptr(),
                    activation: None,
                    residual: None,
                };
                for threads in [1, 3] {
                    let pool = ThreadPool::new(threads);
                    let (mut want, mut got) = (vec![0f32; m * n], vec![1f32; m * n]);
                    let view = |c: &mut Vec<f32>| MatMut {
                        ptr: c.as_mut_ptr(),
                        row_stride: n as isize,
                        col_stride: 1,
                    };
                    let f32_product = Problem {
                        kernel,
                        batch: 1,
                        m,
                        k,
                        n,
                        a: a_view,
                        a_batch_stride: 0,
                        b,
                        b_batch_stride: 0,
                        prepacked: None,
                        c: view(&mut want),
                        c_batch_stride: 0,
                        accumulate: false,
                        epilogue,
                    };
                    // SAFETY: A is m × k, B k × n, C m × n, the bias n.
                    unsafe {
                        f32_product.run(&pool);
                        sgemm_narrow_on(kernel, &pool, m, a_view, &half, view(&mut got), epilogue);
                    }
                    let same = want
                        .iter()
                        .zip(&got)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(
                        same,
                        "{} m={m} k={k} n={n} bf16={bf16} threads={threads}: first difference {:?}",
                        kernel.name,
                        want.iter()
                            .zip(&got)
                            .find(|(x, y)| x.to_bits() != y.to_bits())
                    );
                }
            }
        }
    }
}
