//! Every integer kernel family this CPU runs against the interpreter's definition of the
//! quantized linear, bit for bit, on odd shapes.

use super::*;
use crate::gemm::MatRef;
use kiln_ir::interp::eval_op;
use kiln_ir::{
    ActQuant, Bindings, Block, DType, Epilogue as IrEpilogue, Op, QuantAttrs, Residual, Tensor,
};

/// A small deterministic generator (no test depends on a crate for randomness).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
    fn float(&mut self) -> f32 {
        self.next() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
    }
    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
}

/// The op's operands for a layer of this format and shape.
struct Case {
    q: QuantAttrs,
    m: usize,
    k: usize,
    n: usize,
    x: Vec<f32>,
    w: Tensor,
    scale: Tensor,
    zero_points: Option<Tensor>,
    bias: Vec<f32>,
    residual: Vec<f32>,
    /// For [`ActQuant::Quantized`]: the activations as they arrive.
    quantized: Option<QuantizedX>,
}

/// Activations that arrive quantized: bytes (i8 when `signed`), zero point, scale.
struct QuantizedX {
    bytes: Vec<u8>,
    signed: bool,
    zero_point: u8,
    scale: f32,
}

/// An int8 case whose activations arrive as u8 or i8 bytes with a zero point.
fn quantized_case(signed: bool, shape: [usize; 3], seed: u64) -> Case {
    let mut c = case(WeightQuant::Int8, false, shape, seed);
    let mut rng = Lcg(seed ^ 0x5eed);
    c.q.activations = ActQuant::Quantized;
    c.quantized = Some(QuantizedX {
        bytes: (0..c.m * c.k).map(|_| rng.below(256) as u8).collect(),
        signed,
        zero_point: rng.below(256) as u8,
        scale: 0.001 + rng.float().abs() * 0.1,
    });
    c
}

fn case(weights: WeightQuant, f16_scales: bool, [m, k, n]: [usize; 3], seed: u64) -> Case {
    let mut rng = Lcg(seed);
    let epilogue = IrEpilogue {
        bias: true,
        activation: None,
        residual: Some(Residual::Add),
    };
    let q = QuantAttrs {
        weights,
        activations: ActQuant::DynamicInt8,
        epilogue,
    };
    // Outliers in some rows, as in real activations.
    let x = (0..m * k)
        .map(|i| rng.float() * if i % 37 == 0 { 20.0 } else { 1.0 })
        .collect();
    let blocks = weights.block().map_or(1, |b| k.div_ceil(b));
    let (w, zero_points) = match weights {
        WeightQuant::Int8 => {
            let v: Vec<i8> = (0..k * n)
                .map(|_| (rng.below(255) as i32 - 127) as i8)
                .collect();
            (Tensor::from_vec(v, &[k, n]).unwrap(), None)
        }
        WeightQuant::Int4 {
            zero_points: true, ..
        } => {
            let v: Vec<u8> = (0..k * n).map(|_| rng.below(16) as u8).collect();
            let z: Vec<u8> = (0..blocks * n).map(|_| rng.below(16) as u8).collect();
            let z = Tensor::from_vec(z, &[blocks, n]).unwrap();
            (Tensor::from_vec(v, &[k, n]).unwrap(), Some(z))
        }
        WeightQuant::Int4 { .. } => {
            let v: Vec<i8> = (0..k * n).map(|_| rng.below(16) as i8 - 8).collect();
            (Tensor::from_vec(v, &[k, n]).unwrap(), None)
        }
        WeightQuant::F16 | WeightQuant::BF16 => {
            let v: Vec<f32> = (0..k * n).map(|_| rng.float() * 0.05).collect();
            let w = Tensor::from_vec(v, &[k, n]).unwrap();
            (w.cast(weights.stored()), None)
        }
    };
    // The half formats take no scales: theirs are made and never read.
    let scale_shape = match weights {
        WeightQuant::Int4 { .. } => vec![blocks, n],
        WeightQuant::Int8 | WeightQuant::F16 | WeightQuant::BF16 => vec![n],
    };
    let scales: Vec<f32> = (0..blocks * n)
        .map(|_| 0.001 + rng.float().abs() * 0.02)
        .collect();
    let scale = Tensor::from_vec(scales, &scale_shape).unwrap();
    let scale = if f16_scales {
        scale.cast(DType::F16)
    } else {
        scale
    };
    Case {
        q,
        m,
        k,
        n,
        x,
        w,
        scale,
        zero_points,
        bias: (0..n).map(|_| rng.float()).collect(),
        residual: (0..m * n).map(|_| rng.float()).collect(),
        quantized: None,
    }
}

impl Case {
    fn reference(&self) -> Vec<f32> {
        let x = match (&self.quantized, self.q.activations) {
            (Some(q), ActQuant::Quantized) => bytes_tensor(&q.bytes, q.signed, &[self.m, self.k]),
            _ => Tensor::from_vec(self.x.clone(), &[self.m, self.k]).unwrap(),
        };
        let mut inputs = vec![x, self.w.clone()];
        if self.q.weights.params() > 0 {
            inputs.push(self.scale.clone());
        }
        inputs.extend(self.zero_points.clone());
        if let Some(q) = self
            .quantized
            .as_ref()
            .filter(|_| self.q.activations.params() > 0)
        {
            inputs.push(bytes_tensor(&[q.zero_point], q.signed, &[]));
            inputs.push(Tensor::from_vec(vec![q.scale], &[]).unwrap());
        }
        inputs.push(Tensor::from_vec(self.bias.clone(), &[self.n]).unwrap());
        inputs.push(Tensor::from_vec(self.residual.clone(), &[self.m, self.n]).unwrap());
        let out = eval_op(&Op::QuantLinear(self.q), &inputs, &Bindings::new()).unwrap();
        out[0].to_f64_vec().into_iter().map(|v| v as f32).collect()
    }

    fn weight(&self) -> QuantWeight {
        let bytes = |t: &Tensor| kiln_ir::dispatch!(t, a => a.as_ptr().cast::<u8>());
        QuantWeight {
            format: self.q.weights,
            k: self.k,
            n: self.n,
            values: bytes(&self.w),
            scales: match &self.scale {
                _ if self.q.weights.params() == 0 => Scales::None,
                Tensor::F16(a) => Scales::F16(a.view().as_ptr()),
                t => Scales::F32(bytes(t) as *const f32),
            },
            zero_points: self.zero_points.as_ref().map(bytes),
        }
    }

    fn run(&self, kernel: &'static QKernel, pool: &ThreadPool) -> Vec<f32> {
        // SAFETY: the tensors have the shapes the format gives.
        let mut packed = unsafe { PackedQuant::new(&self.weight()) }.unwrap();
        packed.kernel = kernel;
        let mut c = vec![0f32; self.m * self.n];
        let epilogue = Epilogue {
            bias: self.bias.as_ptr(),
            activation: None,
            residual: Some((
                Residual::Add,
                MatRef {
                    ptr: self.residual.as_ptr(),
                    row_stride: self.n as isize,
                    col_stride: 1,
                },
            )),
        };
        let out = MatMut {
            ptr: c.as_mut_ptr(),
            row_stride: self.n as isize,
            col_stride: 1,
        };
        let zero_point = |q: &QuantizedX| match q.signed {
            true => i32::from(q.zero_point as i8),
            false => i32::from(q.zero_point),
        };
        let x = match (&self.quantized, self.q.activations) {
            (Some(q), ActQuant::Quantized) => Activations::Quantized {
                x: q.bytes.as_ptr(),
                signed: q.signed,
                zero_point: zero_point(q),
                scale: q.scale,
            },
            (Some(q), ActQuant::PerTensor) => Activations::PerTensor {
                x: self.x.as_ptr(),
                signed: q.signed,
                zero_point: zero_point(q),
                scale: q.scale,
            },
            (_, ActQuant::DynamicU8) => Activations::DynamicU8(self.x.as_ptr()),
            _ => Activations::F32(self.x.as_ptr()),
        };
        // SAFETY: x is m×k, c m×n, the bias n and the residual m×n.
        unsafe { qgemm(pool, self.m, x, &packed, out, epilogue) };
        c
    }
}

/// Whether two outputs are the same bit for bit (NaN included).
fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// `bytes` as a u8 tensor, or reinterpreted as i8.
fn bytes_tensor(bytes: &[u8], signed: bool, shape: &[usize]) -> Tensor {
    match signed {
        true => Tensor::from_vec(bytes.iter().map(|&b| b as i8).collect::<Vec<_>>(), shape),
        false => Tensor::from_vec(bytes.to_vec(), shape),
    }
    .unwrap()
}

/// Odd shapes; the last two span several AMX row tiles and passes (16 rows each, 64 per
/// pass) and K not a whole number of tiles.
const SHAPES: [[usize; 3]; 9] = [
    [1, 40, 3],
    [1, 4096 / 8, 64],
    [2, 33, 16],
    [5, 100, 17],
    [7, 64, 33],
    [4, 1, 16],
    [9, 131, 50],
    [33, 64, 16],
    [70, 200, 40],
];

fn formats() -> Vec<(WeightQuant, bool)> {
    let mut out = vec![(WeightQuant::Int8, false)];
    for (block, zero_points, f16) in [
        (Block::B32, true, false),
        (Block::B64, false, true),
        (Block::B128, true, true),
    ] {
        out.push((WeightQuant::Int4 { block, zero_points }, f16));
    }
    out
}

#[test]
fn every_kernel_matches_the_interpreter_bit_for_bit() {
    let pools = [ThreadPool::new(1), ThreadPool::new(3)];
    for kernel in kernels::available() {
        for (f, (format, f16)) in formats().into_iter().enumerate() {
            for (s, shape) in SHAPES.into_iter().enumerate() {
                let c = case(format, f16, shape, (f * 31 + s) as u64);
                let want = c.reference();
                for pool in &pools {
                    let got = c.run(kernel, pool);
                    let same = bits_equal(&got, &want);
                    assert!(
                        same,
                        "{} {format:?} {shape:?} on {} threads: {got:?} != {want:?}",
                        kernel.name,
                        pool.threads()
                    );
                }
            }
        }
    }
}

/// Activations that arrive quantized, u8 and i8 with any zero point, and the extremes
/// (every byte 0 or 255 against weights of ±127), bit for bit on every family.
#[test]
fn quantized_activations_match_the_interpreter_bit_for_bit() {
    let pools = [ThreadPool::new(1), ThreadPool::new(3)];
    for kernel in kernels::available() {
        for (s, shape) in SHAPES.into_iter().enumerate() {
            for signed in [false, true] {
                let mut cases = vec![quantized_case(signed, shape, s as u64 * 7 + 1)];
                let mut extreme = quantized_case(signed, shape, s as u64 + 100);
                let q = extreme.quantized.as_mut().unwrap();
                q.bytes
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b = if i % 5 == 0 { 0 } else { 255 });
                q.zero_point = if signed { 0x7f } else { 0 };
                let w: Vec<i8> = (0..shape[1] * shape[2])
                    .map(|i| if i % 3 == 0 { -127 } else { 127 })
                    .collect();
                extreme.w = Tensor::from_vec(w, &[shape[1], shape[2]]).unwrap();
                cases.push(extreme);
                for c in &cases {
                    let want = c.reference();
                    for pool in &pools {
                        let got = c.run(kernel, pool);
                        let same = bits_equal(&got, &want);
                        assert!(
                            same,
                            "{} signed={signed} {shape:?} on {} threads: {got:?} != {want:?}",
                            kernel.name,
                            pool.threads()
                        );
                    }
                }
            }
        }
    }
}

/// f32 activations quantized per tensor in the kernel's prologue (`QuantizeLinear` with
/// u8 or i8 zero points, `DynamicQuantizeLinear`), saturating values, ties, NaN and ±∞
/// included, bit for bit against the interpreter on every family.
#[test]
fn per_tensor_activations_match_the_interpreter_bit_for_bit() {
    let pool = ThreadPool::new(3);
    for kernel in kernels::available() {
        for (s, shape) in SHAPES.into_iter().enumerate() {
            for scheme in [ActQuant::PerTensor, ActQuant::DynamicU8] {
                for signed in [false, true] {
                    let mut c = quantized_case(signed, shape, s as u64 * 3 + 5);
                    c.q.activations = scheme;
                    // Exact halves of the scale (ties) and values past the range.
                    let scale = c.quantized.as_ref().unwrap().scale;
                    for (i, v) in c.x.iter_mut().enumerate().step_by(7) {
                        *v = (i as f32 - 20.5) * scale * if i % 3 == 0 { 40.0 } else { 1.0 };
                    }
                    let mut cases = vec![c];
                    if scheme == ActQuant::PerTensor && shape[0] * shape[1] > 3 {
                        let mut odd = quantized_case(signed, shape, s as u64 + 77);
                        odd.q.activations = scheme;
                        odd.x[0] = f32::NAN;
                        odd.x[1] = f32::INFINITY;
                        odd.x[2] = f32::NEG_INFINITY;
                        cases.push(odd);
                    }
                    for c in &cases {
                        let (got, want) = (c.run(kernel, &pool), c.reference());
                        let same = bits_equal(&got, &want);
                        assert!(
                            same,
                            "{} {scheme:?} signed={signed} {shape:?}: {got:?} != {want:?}",
                            kernel.name
                        );
                    }
                }
            }
        }
    }
}

/// A NaN or an infinity gives `DynamicQuantizeLinear` a NaN or infinite scale: every
/// output is NaN, as the definition computes.
#[test]
fn dynamic_u8_with_non_finite_inputs_is_nan() {
    for bad in [f32::NAN, f32::INFINITY] {
        let mut c = quantized_case(false, [3, 20, 5], 9);
        c.q.activations = ActQuant::DynamicU8;
        c.x[7] = bad;
        let (got, want) = (c.run(kernels::best(), &ThreadPool::new(2)), c.reference());
        assert!(want.iter().all(|v| v.is_nan()), "{want:?}");
        assert!(got.iter().all(|v| v.is_nan()), "{got:?}");
    }
}

#[test]
fn rows_of_zeros_and_non_finite_rows() {
    for kernel in kernels::available() {
        let mut c = case(WeightQuant::Int8, false, [3, 20, 5], 7);
        c.x[..20].fill(0.0);
        c.x[25] = f32::INFINITY;
        let (got, want) = (c.run(kernel, &ThreadPool::new(1)), c.reference());
        assert!(got[5..10].iter().all(|v| v.is_nan()), "{got:?}");
        let same = bits_equal(&got, &want);
        assert!(same, "{}: {got:?} != {want:?}", kernel.name);
    }
}

/// The extremes of every operand: saturating instructions would give other sums.
#[test]
fn extreme_values_do_not_saturate() {
    for kernel in kernels::available() {
        let mut c = case(WeightQuant::Int8, false, [2, 64, 16], 3);
        c.x.iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = if i % 2 == 0 { 1.0 } else { -1.0 });
        let w: Vec<i8> = (0..64 * 16)
            .map(|i| if i % 3 == 0 { -127 } else { 127 })
            .collect();
        c.w = Tensor::from_vec(w, &[64, 16]).unwrap();
        let (got, want) = (c.run(kernel, &ThreadPool::new(1)), c.reference());
        assert_eq!(got, want, "{}", kernel.name);
    }
}

#[test]
fn weights_outside_the_format_are_refused() {
    let mut c = case(WeightQuant::Int8, false, [1, 8, 2], 1);
    c.w = Tensor::from_vec(vec![-128i8; 16], &[8, 2]).unwrap();
    // SAFETY: the tensors have the shapes the format gives.
    let e = unsafe { PackedQuant::new(&c.weight()) }.err().unwrap();
    assert!(e.contains("-128 is outside int8's -127..=127"), "{e}");
    // Half weights have no integer product.
    let half = [half::f16::ONE; 4];
    let w = QuantWeight {
        format: WeightQuant::F16,
        k: 2,
        n: 2,
        values: half.as_ptr().cast(),
        scales: Scales::None,
        zero_points: None,
    };
    // SAFETY: four halves.
    let e = unsafe { PackedQuant::new(&w) }.err().unwrap();
    assert!(e.contains("weight-only"), "{e}");
    // SAFETY: as above.
    assert_eq!(unsafe { w.dequantized() }.unwrap(), [1.0; 4]);
}

/// The vectorized least and greatest elements are the definition's, wherever the extremes
/// fall (every accumulator and the tail), and NaN anywhere gives NaN.
#[test]
fn vectorized_min_max_is_the_definition() {
    let mut rng = Lcg(5);
    for len in [1, 15, 16, 63, 64, 65, 200, 1001] {
        for at in [0, 20, 40, 60, len / 2, len - 1].map(|a: usize| a.min(len - 1)) {
            let mut x: Vec<f32> = (0..len).map(|_| rng.float()).collect();
            x[at] = 5.0;
            x[len - 1 - at] = -5.0;
            let (lo, hi) = kernels::min_max(&x);
            assert_eq!((lo, hi), kiln_ir::min_max(&x), "len {len}, at {at}");
            x[at] = f32::NAN;
            assert!(kernels::min_max(&x).0.is_nan() && kernels::min_max(&x).1.is_nan());
        }
    }
}

/// The vectorized token quantization is the scalar definition, ties and tails included.
#[test]
fn vectorized_quantization_is_the_definition() {
    let mut rng = Lcg(11);
    let lens = [1, 7, 8, 9, 16, 31, 64, 100, 129, 773];
    // The maximum in every lane group and accumulator of the vector kernels, and the tail.
    let cases = lens
        .into_iter()
        .flat_map(|len| [0, 17, 35, 50, len / 2, len - 1].map(|at| (len, at.min(len - 1))));
    for (len, at) in cases {
        for scale in [1.0f32, 1e-30, 3e30] {
            // amax 127 makes every x·(127/amax) exact, so the halves are real ties.
            let mut row: Vec<f32> = (0..len)
                .map(|i| (rng.float() * 126.0).round() + if i % 3 == 0 { 0.5 } else { 0.0 })
                .collect();
            row[at] = if at % 2 == 0 { 127.0 } else { -127.0 };
            row.iter_mut().for_each(|v| *v *= scale);
            let (mut a, mut b) = (vec![0i8; len], vec![0i8; len]);
            let (sa, sb) = (
                kernels::quantize_row(&row, &mut a),
                quantize_row(&row, &mut b),
            );
            assert_eq!((sa.to_bits(), &a), (sb.to_bits(), &b), "{row:?}");
        }
    }
    let mut a = [0i8; 9];
    let row = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, f32::NAN];
    assert!(kernels::quantize_row(&row, &mut a).is_nan());
    let row = [1.0, f32::NEG_INFINITY, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    assert!(kernels::quantize_row(&row, &mut a).is_nan());
}

/// The dequantizing kernel for few rows computes the weight-only definition, to f32
/// rounding (its sums run in another order than the interpreter's), on every format, the
/// half ones included.
#[test]
fn weight_only_few_rows_match_the_definition() {
    if !dequant::available() {
        println!("skipped: the dequantizing kernel needs AVX-512F");
        return;
    }
    let pools = [ThreadPool::new(1), ThreadPool::new(3)];
    let halves = [(WeightQuant::F16, false), (WeightQuant::BF16, false)];
    for (f, (format, f16)) in formats().into_iter().chain(halves).enumerate() {
        for (s, [_, k, n]) in SHAPES.into_iter().enumerate() {
            for m in [1, 3, dequant::MAX_ROWS] {
                let mut c = case(format, f16, [m, k, n], (f * 17 + s) as u64);
                c.q.activations = ActQuant::None;
                let want = c.reference();
                // SAFETY: the tensors have the shapes the format gives.
                let w = c.weight();
                let (integer, half) = match format.range() {
                    // SAFETY: as above.
                    Some(_) => (Some(unsafe { PackedQuant::new(&w) }.unwrap()), None),
                    // SAFETY: as above, K × N halves.
                    None => (None, unsafe {
                        crate::gemm::PackedHalf::new(
                            k,
                            n,
                            w.values as *const u16,
                            format == WeightQuant::BF16,
                        )
                    }),
                };
                let mut outs = Vec::new();
                for pool in &pools {
                    let mut got = vec![0f32; m * n];
                    let out = MatMut {
                        ptr: got.as_mut_ptr(),
                        row_stride: n as isize,
                        col_stride: 1,
                    };
                    let epilogue = Epilogue {
                        bias: c.bias.as_ptr(),
                        activation: None,
                        residual: Some((
                            Residual::Add,
                            MatRef {
                                ptr: c.residual.as_ptr(),
                                row_stride: n as isize,
                                col_stride: 1,
                            },
                        )),
                    };
                    // SAFETY: x is m×k, the output m×n, the bias n, the residual m×n.
                    unsafe {
                        match (&integer, &half) {
                            (Some(w), _) => {
                                dequant::dequant_gemm(pool, m, c.x.as_ptr(), w, out, epilogue)
                            }
                            (_, Some(w)) => {
                                dequant::half_gemm(pool, m, c.x.as_ptr(), w, out, epilogue)
                            }
                            _ => unreachable!("one of the two is packed"),
                        }
                    };
                    outs.push(got);
                }
                assert_eq!(
                    outs[0], outs[1],
                    "{format:?} {m}x{k}x{n}: depends on threads"
                );
                for (g, w) in outs[0].iter().zip(&want) {
                    let tol = 1e-5 * (1.0 + w.abs()) * (k as f32).sqrt();
                    assert!((g - w).abs() <= tol, "{format:?} {m}x{k}x{n}: {g} vs {w}");
                }
            }
        }
    }
}

/// Many rows of a weight-only layer run the f32 GEMM over the integer panels, dequantized
/// block by block as they are packed: bit for bit the product over the f32 weight the
/// definition gives, on every format and odd shapes.
#[test]
fn weight_only_many_rows_are_the_gemm_over_the_dequantized_weight() {
    use crate::gemm::{sgemm_narrow_epilogue, sgemm_prepacked_epilogue, PackedB};
    let pools = [ThreadPool::new(1), ThreadPool::new(3)];
    for (f, (format, f16)) in formats().into_iter().enumerate() {
        for (s, [m, k, n]) in SHAPES.into_iter().enumerate() {
            let c = case(format, f16, [m + 9, k, n], (f * 13 + s) as u64);
            let w = c.weight();
            // SAFETY: the tensors have the shapes the format gives.
            let (packed, wide) =
                unsafe { (PackedQuant::new(&w).unwrap(), w.dequantized().unwrap()) };
            let b = MatRef {
                ptr: wide.as_ptr(),
                row_stride: n as isize,
                col_stride: 1,
            };
            // SAFETY: `wide` is k × n.
            let prepacked = unsafe { PackedB::new(k, n, b) };
            let a = MatRef {
                ptr: c.x.as_ptr(),
                row_stride: k as isize,
                col_stride: 1,
            };
            let epilogue = Epilogue {
                bias: c.bias.as_ptr(),
                activation: None,
                residual: None,
            };
            for pool in &pools {
                let (mut want, mut got) = (vec![0f32; c.m * n], vec![1f32; c.m * n]);
                let out = |v: &mut Vec<f32>| MatMut {
                    ptr: v.as_mut_ptr(),
                    row_stride: n as isize,
                    col_stride: 1,
                };
                // SAFETY: x is m×k, the outputs m×n, the bias n.
                unsafe {
                    sgemm_prepacked_epilogue(
                        pool,
                        1,
                        c.m,
                        a,
                        0,
                        &prepacked,
                        out(&mut want),
                        0,
                        epilogue,
                    );
                    sgemm_narrow_epilogue(pool, c.m, a, &packed, out(&mut got), epilogue);
                }
                assert!(bits_equal(&want, &got), "{format:?} {}x{k}x{n}", c.m);
            }
        }
    }
}

/// Packing a block of B from the integer panels writes the dequantized weight in the f32
/// GEMM's panel layout, on the vector path (whole panels, a block that starts on a group)
/// and on the scalar one (8-column panels, a block that does not).
#[test]
fn integer_panels_widen_to_the_dequantized_weight() {
    use crate::gemm::NarrowB;
    for (f, (format, f16)) in formats().into_iter().enumerate() {
        let [k, n] = [200, 50];
        let c = case(format, f16, [1, k, n], 70 + f as u64);
        let w = c.weight();
        // SAFETY: the tensors have the shapes the format gives.
        let (packed, wide) = unsafe { (PackedQuant::new(&w).unwrap(), w.dequantized().unwrap()) };
        for (nr, pc, col) in [(32, 4, 0), (32, 64, 32), (8, 3, 8), (16, 1, 16)] {
            let (kc, cols) = (k - pc - 1, n - col);
            let mut dst = vec![f32::NAN; cols.div_ceil(nr) * nr * kc];
            // SAFETY: the block is inside the weight; dst has the size asked for.
            unsafe { packed.pack_block(nr, (pc, kc), (col, cols), dst.as_mut_ptr()) };
            for (panel, j0) in (0..cols).step_by(nr).enumerate() {
                for p in 0..kc {
                    for j in 0..nr.min(cols - j0) {
                        let got = dst[(panel * kc + p) * nr + j];
                        let want = wide[(pc + p) * n + col + j0 + j];
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{format:?} nr {nr} ({p}, {j})"
                        );
                    }
                }
            }
        }
    }
}
