//! Differential tests of convolution, transposed convolution and pooling: the JIT against
//! `kiln_ir::interp::run` on seeded random inputs over a grid of shapes and attributes
//! (1-3 spatial dims, odd sizes, strides, dilations, asymmetric pads, output padding,
//! `ceil_mode`, groups, both average divisors; f32, f64 and wrapping i32).

use kiln_cpu::{CompiledModel, Options};
use kiln_ir::{
    interp, Bindings, ConvAttrs, ConvTransposeAttrs, DType, Graph, Op, PoolAttrs, PoolKind, Tensor,
    TensorType,
};
use kiln_kernel::kernel::{Call, Kernel};
use kiln_kernel::schedule::schedule;

/// SplitMix64: small, seeded, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    fn flip(&mut self) -> bool {
        self.next() & 1 == 1
    }

    /// Uniform in [-2, 2).
    fn value(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
    }

    fn tensor(&mut self, dtype: DType, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let t = match dtype {
            DType::F64 => Tensor::from_vec((0..n).map(|_| self.value()).collect(), shape),
            DType::I32 => Tensor::from_vec(
                (0..n).map(|_| (self.value() * 50.0) as i32).collect(),
                shape,
            ),
            DType::U8 => {
                Tensor::from_vec((0..n).map(|_| (self.next() % 256) as u8).collect(), shape)
            }
            _ => Tensor::from_vec((0..n).map(|_| self.value() as f32).collect(), shape),
        };
        t.expect("sized to the shape")
    }
}

/// A one-node graph over inputs of the given types.
fn graph(op: Op, inputs: &[(DType, Vec<usize>)]) -> Graph {
    let mut g = Graph::new("g");
    let vs: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, (t, s))| g.add_input(format!("x{i}"), TensorType::fixed(*t, s)))
        .collect();
    let out = g.add_node("n", op, &vs).expect("valid op")[0];
    g.add_output("y", out);
    g
}

/// Runs `g` natively (checking no node falls back to the runtime) and through the
/// interpreter, and compares within rtol 1e-4 / atol 1e-5 (NaN must match NaN).
fn check(g: &Graph, inputs: &[Tensor], threads: usize, what: &str) {
    let p = schedule(g, &Bindings::new()).expect("schedules");
    assert!(
        !p.kernels
            .iter()
            .any(|k| matches!(k, Kernel::Call(Call::Op(_)))),
        "{what}: fell back to the runtime"
    );
    let want = interp::run(g, inputs).expect("interp")[0].clone();
    let model = CompiledModel::new(
        g.clone(),
        &Options {
            threads,
            ..Options::default()
        },
    )
    .expect("compiles");
    let got = model.run(inputs).expect("runs").remove(0);
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    for (i, (a, b)) in got.to_f64_vec().iter().zip(want.to_f64_vec()).enumerate() {
        let close = (a.is_nan() && b.is_nan()) || a == &b || (a - b).abs() <= 1e-5 + 1e-4 * b.abs();
        assert!(close, "{what}: element {i}: jit {a}, interp {b}");
    }
    let again = model.run(inputs).expect("runs").remove(0);
    assert!(again == got, "{what}: not deterministic");
}

/// Random pooling attributes for `rank` spatial dims of `spatial`.
fn pool_attrs(r: &mut Rng, kind: PoolKind, spatial: &[usize]) -> PoolAttrs {
    let mut a = PoolAttrs {
        kind,
        kernel: Vec::new(),
        strides: Vec::new(),
        dilations: Vec::new(),
        pads: Vec::new(),
        ceil_mode: r.flip(),
    };
    for &n in spatial {
        let dilation = r.range(1, 2);
        let k = r.range(1, 3);
        let eff = dilation * (k - 1) + 1;
        let pads = (r.range(0, 2).min(eff - 1), r.range(0, 2).min(eff - 1));
        let (k, pads) = if eff > n + pads.0 + pads.1 {
            (1, (0, 0))
        } else {
            (k, pads)
        };
        a.kernel.push(k);
        a.strides.push(r.range(1, 3));
        a.dilations.push(dilation);
        a.pads.push(pads);
    }
    a
}

#[test]
fn pooling_matches_the_interpreter() {
    let mut r = Rng(7);
    let kinds = [
        PoolKind::Max,
        PoolKind::Avg {
            count_include_pad: true,
        },
        PoolKind::Avg {
            count_include_pad: false,
        },
        PoolKind::Lp { p: 1 },
        PoolKind::Lp { p: 2 },
        PoolKind::Lp { p: 3 },
    ];
    for case in 0..120 {
        let rank = 1 + case % 3;
        let kind = kinds[case / 3 % kinds.len()];
        let spatial: Vec<usize> = (0..rank)
            .map(|_| r.range(2, [11, 7, 5][rank - 1]))
            .collect();
        let a = pool_attrs(&mut r, kind, &spatial);
        let mut shape = vec![r.range(1, 2), r.range(1, 3)];
        shape.extend(&spatial);
        let dtype = if case % 10 == 9 {
            DType::F64
        } else {
            DType::F32
        };
        let g = graph(Op::Pool(a.clone()), &[(dtype, shape.clone())]);
        let x = r.tensor(dtype, &shape);
        check(&g, &[x], 1 + case % 3, &format!("{dtype} {shape:?} {a:?}"));
    }
}

#[test]
fn max_pooling_of_integers_and_padding_only_windows() {
    let mut r = Rng(11);
    for dtype in [DType::I32, DType::U8] {
        let a = PoolAttrs {
            kind: PoolKind::Max,
            kernel: vec![3, 2],
            strides: vec![2, 1],
            dilations: vec![1, 2],
            pads: vec![(1, 2), (0, 1)],
            ceil_mode: true,
        };
        let g = graph(Op::Pool(a.clone()), &[(dtype, vec![1, 2, 5, 4])]);
        check(
            &g,
            &[r.tensor(dtype, &[1, 2, 5, 4])],
            2,
            &format!("{dtype}"),
        );
    }
    // Windows entirely in the padding: -inf for max, NaN (0/0) for an average of data only.
    for kind in [
        PoolKind::Max,
        PoolKind::Avg {
            count_include_pad: false,
        },
    ] {
        let a = PoolAttrs {
            kind,
            kernel: vec![2],
            strides: vec![1],
            dilations: vec![1],
            pads: vec![(3, 0)],
            ceil_mode: false,
        };
        let g = graph(Op::Pool(a), &[(DType::F32, vec![1, 1, 2])]);
        check(&g, &[r.tensor(DType::F32, &[1, 1, 2])], 1, "padding only");
    }
}

/// Random convolution attributes and the weight shape for `x` of `shape`.
fn conv_case(r: &mut Rng, spatial: &[usize]) -> (ConvAttrs, Vec<usize>, Vec<usize>) {
    let c = r.range(1, 4);
    let groups = match r.range(0, 2) {
        0 => 1,
        1 if c.is_multiple_of(2) => 2,
        _ => c,
    };
    let m = groups * r.range(1, 3);
    let mut a = ConvAttrs {
        strides: Vec::new(),
        dilations: Vec::new(),
        pads: Vec::new(),
        groups,
    };
    let mut w = vec![m, c / groups];
    for &n in spatial {
        let dilation = r.range(1, 2);
        let pads = (r.range(0, 2), r.range(0, 2));
        let k = r.range(1, 3);
        let k = if dilation * (k - 1) + 1 > n + pads.0 + pads.1 {
            1
        } else {
            k
        };
        w.push(k);
        a.strides.push(r.range(1, 3));
        a.dilations.push(dilation);
        a.pads.push(pads);
    }
    let mut x = vec![r.range(1, 2), c];
    x.extend(spatial);
    (a, x, w)
}

#[test]
fn convolution_matches_the_interpreter() {
    let mut r = Rng(3);
    for case in 0..90 {
        let rank = 1 + case % 3;
        let spatial: Vec<usize> = (0..rank)
            .map(|_| r.range(1, [13, 8, 5][rank - 1]))
            .collect();
        let (a, xs, ws) = conv_case(&mut r, &spatial);
        let g = graph(
            Op::Conv(a.clone()),
            &[(DType::F32, xs.clone()), (DType::F32, ws.clone())],
        );
        let inputs = [r.tensor(DType::F32, &xs), r.tensor(DType::F32, &ws)];
        check(
            &g,
            &inputs,
            1 + case % 3,
            &format!("x {xs:?} w {ws:?} {a:?}"),
        );
    }
}

#[test]
fn pointwise_depthwise_and_wide_convolutions() {
    let mut r = Rng(5);
    let cases: [(Vec<usize>, Vec<usize>, ConvAttrs); 3] = [
        // 1×1, unit strides, no padding: a plain GEMM on the input.
        (
            vec![2, 6, 5, 7],
            vec![4, 3, 1, 1],
            ConvAttrs {
                strides: vec![1, 1],
                dilations: vec![2, 1],
                pads: vec![(0, 0), (0, 0)],
                groups: 2,
            },
        ),
        // Depthwise with a channel multiplier, more groups than threads.
        (
            vec![1, 8, 9, 9],
            vec![16, 1, 3, 3],
            ConvAttrs {
                strides: vec![2, 1],
                dilations: vec![1, 2],
                pads: vec![(1, 0), (2, 1)],
                groups: 8,
            },
        ),
        // Large enough for a parallel im2col.
        (
            vec![1, 16, 40, 40],
            vec![8, 16, 3, 3],
            ConvAttrs {
                strides: vec![1, 1],
                dilations: vec![1, 1],
                pads: vec![(1, 1), (1, 1)],
                groups: 1,
            },
        ),
    ];
    for (xs, ws, a) in cases {
        let g = graph(
            Op::Conv(a.clone()),
            &[(DType::F32, xs.clone()), (DType::F32, ws.clone())],
        );
        let inputs = [r.tensor(DType::F32, &xs), r.tensor(DType::F32, &ws)];
        for threads in [1, 3] {
            check(&g, &inputs, threads, &format!("x {xs:?} w {ws:?} {a:?}"));
        }
    }
}

#[test]
fn integer_and_f64_convolutions_match_the_interpreter() {
    let mut r = Rng(13);
    for case in 0..60 {
        let rank = 1 + case % 3;
        let spatial: Vec<usize> = (0..rank)
            .map(|_| r.range(1, [13, 8, 5][rank - 1]))
            .collect();
        let (a, xs, ws) = conv_case(&mut r, &spatial);
        let t = [DType::I32, DType::F64][case % 2];
        let g = graph(Op::Conv(a.clone()), &[(t, xs.clone()), (t, ws.clone())]);
        let inputs = [r.tensor(t, &xs), r.tensor(t, &ws)];
        check(
            &g,
            &inputs,
            1 + case % 2,
            &format!("{t} x {xs:?} w {ws:?} {a:?}"),
        );
    }
}

/// Random transposed-convolution attributes, the input shape and the weight shape
/// (`[C, M/G, K..]`) for `spatial`: pads may crop all but one output position, output
/// padding is below the stride or the dilation, as ONNX requires.
fn conv_transpose_case(
    r: &mut Rng,
    spatial: &[usize],
) -> (ConvTransposeAttrs, Vec<usize>, Vec<usize>) {
    let c = 2 * r.range(1, 2);
    let groups = [1, 2, c][r.range(0, 2)];
    let mut a = ConvTransposeAttrs {
        strides: Vec::new(),
        dilations: Vec::new(),
        pads: Vec::new(),
        output_padding: Vec::new(),
        groups,
    };
    let mut w = vec![c, r.range(1, 3)];
    for &n in spatial {
        let (s, d, k) = (r.range(1, 3), r.range(1, 2), r.range(1, 3));
        let p = r.range(0, s.max(d) - 1);
        let full = s * (n - 1) + p + d * (k - 1) + 1;
        let begin = r.range(0, 2.min(full - 1));
        let end = r.range(0, 3.min(full - 1 - begin));
        w.push(k);
        a.strides.push(s);
        a.dilations.push(d);
        a.pads.push((begin, end));
        a.output_padding.push(p);
    }
    let mut x = vec![r.range(1, 2), c];
    x.extend(spatial);
    (a, x, w)
}

#[test]
fn transposed_convolution_matches_the_interpreter() {
    let mut r = Rng(17);
    for case in 0..90 {
        let rank = 1 + case % 3;
        let spatial: Vec<usize> = (0..rank).map(|_| r.range(1, [9, 6, 4][rank - 1])).collect();
        let (a, xs, ws) = conv_transpose_case(&mut r, &spatial);
        let t = [DType::F32, DType::I32, DType::F64][case % 3];
        let g = graph(
            Op::ConvTranspose(a.clone()),
            &[(t, xs.clone()), (t, ws.clone())],
        );
        let inputs = [r.tensor(t, &xs), r.tensor(t, &ws)];
        check(
            &g,
            &inputs,
            1 + case % 2,
            &format!("{t} x {xs:?} w {ws:?} {a:?}"),
        );
    }
}
