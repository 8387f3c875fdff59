//! Indexing and generator ops compiled by the JIT against the interpreter on random inputs:
//! scatters (every reduction, negative and repeated indices, every axis, odd shapes, both
//! index dtypes, batch dims), gathers, arg reductions, range, trilu, one-hot (integer and
//! float indices) and edge/reflect/wrap padding.

use kiln_cpu::{CompiledModel, Options};
use kiln_ir::{
    interp, ArgKind, DType, Dim, Graph, Op, PadMode, ScatterReduction, Tensor, TensorType,
};
use kiln_kernel::kernel::{Call, Kernel};

const REDUCTIONS: [ScatterReduction; 5] = [
    ScatterReduction::None,
    ScatterReduction::Add,
    ScatterReduction::Mul,
    ScatterReduction::Max,
    ScatterReduction::Min,
];

/// A small xorshift generator (tests stay dependency-free and reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Small integer-valued numbers (some NaN for float dtypes) cast to `dtype`.
    fn tensor(&mut self, dtype: DType, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|_| match self.below(16) {
                0 if dtype.is_float() => f64::NAN,
                k => k as f64 - 7.0,
            })
            .collect();
        Tensor::from_vec(v, shape).unwrap().cast(dtype)
    }

    /// Indices in `-len..len` (negative ones count from the end).
    fn indices(&mut self, dtype: DType, shape: &[usize], len: usize) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<i64> = (0..n)
            .map(|_| self.below(2 * len) as i64 - len as i64)
            .collect();
        Tensor::from_vec(v, shape).unwrap().cast(dtype)
    }
}

/// Runs `op` on `inputs` with the JIT (on `threads` threads) and the interpreter and
/// checks the results are bitwise equal.
fn check(op: Op, inputs: &[Tensor], threads: usize) {
    let mut g = Graph::new("t");
    let ids: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| g.add_input(format!("x{i}"), TensorType::fixed(t.dtype(), t.shape())))
        .collect();
    let out = g.add_node("n", op.clone(), &ids).unwrap()[0];
    g.add_output("y", out);
    let want = interp::run(&g, inputs).unwrap();
    let model = CompiledModel::new(
        g,
        &Options {
            threads,
            ..Options::default()
        },
    )
    .unwrap();
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
    let spec = model.specialize(&shapes).unwrap();
    let runtime = |k: &Kernel| matches!(k, Kernel::Call(Call::Op(_)));
    assert!(
        !spec.program.kernels.iter().any(runtime),
        "{op:?} runs natively"
    );
    let got = model.run(inputs).unwrap();
    assert_eq!(got, want, "{op:?} on {inputs:?}");
}

#[test]
fn scatter_elements_matches_the_interpreter() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let shapes: [&[usize]; 5] = [&[5], &[3, 4], &[2, 3, 5], &[4, 1, 3], &[1, 7]];
    let dtypes = [DType::F32, DType::I32, DType::I64, DType::F64, DType::U8];
    for (s, shape) in shapes.iter().enumerate() {
        for axis in 0..shape.len() {
            for (r, &reduction) in REDUCTIONS.iter().enumerate() {
                let dtype = dtypes[(s + axis + r) % dtypes.len()];
                let ity = [DType::I64, DType::I32][r % 2];
                let is: Vec<usize> = shape
                    .iter()
                    .enumerate()
                    .map(|(d, &n)| {
                        if d == axis {
                            1 + rng.below(2 * n)
                        } else {
                            1 + rng.below(n)
                        }
                    })
                    .collect();
                let inputs = [
                    rng.tensor(dtype, shape),
                    rng.indices(ity, &is, shape[axis]),
                    rng.tensor(dtype, &is),
                ];
                check(Op::ScatterElements { axis, reduction }, &inputs, 1);
            }
        }
    }
}

#[test]
fn scatter_nd_matches_the_interpreter() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let data: [&[usize]; 3] = [&[6], &[4, 3, 2], &[3, 5]];
    let leads: [&[usize]; 3] = [&[1], &[5], &[2, 3]];
    for shape in data {
        for q in 1..=shape.len() {
            for lead in leads {
                for &reduction in &REDUCTIONS {
                    let dtype = if q % 2 == 0 { DType::F32 } else { DType::I32 };
                    let mut is = lead.to_vec();
                    is.push(q);
                    let n: usize = is.iter().product();
                    let ix: Vec<i64> = (0..n)
                        .map(|k| {
                            let len = shape[k % q];
                            rng.below(2 * len) as i64 - len as i64
                        })
                        .collect();
                    let mut us = lead.to_vec();
                    us.extend(&shape[q..]);
                    let inputs = [
                        rng.tensor(dtype, shape),
                        Tensor::from_vec(ix, &is).unwrap(),
                        rng.tensor(dtype, &us),
                    ];
                    check(Op::ScatterNd { reduction }, &inputs, 1);
                }
            }
        }
    }
}

#[test]
fn gather_nd_matches_the_interpreter() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let data: [&[usize]; 3] = [&[2, 3, 4], &[3, 5], &[2, 2, 3, 2]];
    for shape in data {
        for batch_dims in 0..shape.len() {
            for q in 1..=shape.len() - batch_dims {
                for extra in [&[][..], &[3][..], &[2, 1][..]] {
                    let mut is = shape[..batch_dims].to_vec();
                    is.extend(extra);
                    is.push(q);
                    let n: usize = is.iter().product();
                    let ix: Vec<i64> = (0..n)
                        .map(|k| {
                            let len = shape[batch_dims + k % q];
                            rng.below(2 * len) as i64 - len as i64
                        })
                        .collect();
                    let ix = Tensor::from_vec(ix, &is).unwrap();
                    let ix = ix.cast([DType::I64, DType::I32][n % 2]);
                    let inputs = [rng.tensor(DType::F32, shape), ix];
                    check(Op::GatherNd { batch_dims }, &inputs, 1);
                }
            }
        }
    }
}

#[test]
fn large_scatters_with_repeated_indices_stay_in_order_on_many_threads() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for &reduction in &REDUCTIONS {
        let inputs = [
            rng.tensor(DType::F32, &[3, 7]),
            rng.indices(DType::I64, &[3, 40_000], 7),
            rng.tensor(DType::F32, &[3, 40_000]),
        ];
        check(Op::ScatterElements { axis: 1, reduction }, &inputs, 4);
    }
}

#[test]
fn arg_reduce_matches_the_interpreter_with_ties_and_nans() {
    let mut rng = Rng(0x0bad_5eed_1234_4321);
    let shapes: [&[usize]; 4] = [&[5], &[3, 4], &[2, 3, 5], &[4, 1, 3]];
    let dtypes = [DType::F32, DType::I32, DType::U8, DType::F64];
    for (s, shape) in shapes.iter().enumerate() {
        for axis in 0..shape.len() {
            for (k, kind) in [ArgKind::Max, ArgKind::Min].into_iter().enumerate() {
                for flags in 0..4 {
                    let dtype = dtypes[(s + axis + k + flags) % dtypes.len()];
                    let op = Op::ArgReduce {
                        kind,
                        axis,
                        keep_dims: flags & 1 == 1,
                        select_last: flags & 2 == 2,
                    };
                    check(op, &[rng.tensor(dtype, shape)], 1);
                }
            }
        }
    }
}

#[test]
fn range_matches_the_interpreter() {
    let cases: [(DType, f64, f64, usize); 6] = [
        (DType::F32, 0.1, 0.3, 17),
        (DType::F32, -3.0, 2.5, 4),
        (DType::F64, 1e8, -0.7, 9),
        (DType::I32, 2_000_000_000.0, 100_000_000.0, 40),
        (DType::I64, -5.0, 3.0, 11),
        (DType::U8, 250.0, 3.0, 9),
    ];
    for (dtype, start, delta, len) in cases {
        let s = Tensor::from_vec(vec![start], &[]).unwrap().cast(dtype);
        let d = Tensor::from_vec(vec![delta], &[]).unwrap().cast(dtype);
        let op = Op::Range {
            len: Dim::from(len as i64),
        };
        check(op, &[s, d], 1);
    }
}

#[test]
fn trilu_matches_the_interpreter() {
    let mut rng = Rng(0x7777_1111_3333_5555);
    let shapes: [&[usize]; 3] = [&[4, 5], &[2, 3, 3], &[1, 6, 2]];
    for shape in shapes {
        for k in [-7i64, -1, 0, 2, 9] {
            for upper in [false, true] {
                let x = rng.tensor(
                    [DType::F32, DType::I64][k.unsigned_abs() as usize % 2],
                    shape,
                );
                check(Op::Trilu { upper, k }, &[x], 1);
            }
        }
    }
}

#[test]
fn one_hot_matches_the_interpreter() {
    let shapes: [&[usize]; 3] = [&[4], &[2, 3], &[3, 1, 2]];
    for shape in shapes {
        for axis in 0..=shape.len() {
            for (depth, ity) in [
                (3, DType::I64),
                (5, DType::I32),
                (4, DType::F32),
                (3, DType::F64),
            ] {
                let n: usize = shape.iter().product();
                // Float indices truncate (3.75 is 3, -0.5 is 0), as `Cast` does.
                let ix: Vec<f64> = (0..n as i64)
                    .map(|i| (i * 3 % 13 - 7) as f64 + (i % 4) as f64 / 4.0)
                    .collect();
                let ix = Tensor::from_vec(ix, shape).unwrap().cast(ity);
                let values = Tensor::from_vec(vec![-1.5f32, 4.0], &[2]).unwrap();
                check(Op::OneHot { axis, depth }, &[ix, values], 1);
            }
        }
    }
}

#[test]
fn indexed_padding_matches_the_interpreter() {
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    // Pads wider than the axis (reflect and wrap fold more than once), crops on the other
    // side, and a length-1 axis (reflect reads its one element).
    type Case<'a> = (&'a [usize], &'a [(i64, i64)]);
    let cases: [Case; 4] = [
        (&[5], &[(2, 3)]),
        (&[3, 4], &[(0, 0), (6, 5)]),
        (&[4, 1, 3], &[(1, -1), (2, 2), (-1, 4)]),
        (&[2, 6], &[(3, 0), (-2, 7)]),
    ];
    for (shape, pads) in cases {
        for mode in [PadMode::Edge, PadMode::Reflect, PadMode::Wrap] {
            for dtype in [DType::F32, DType::I64] {
                let x = rng.tensor(dtype, shape);
                let fill = Tensor::scalar(0.0f64).cast(dtype);
                let op = Op::Pad {
                    pads: pads.to_vec(),
                    mode,
                };
                check(op, &[x, fill], 1);
            }
        }
    }
}
