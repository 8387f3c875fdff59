//! The quantized linear layer ([`Op::QuantLinear`]), evaluated as its definition says:
//! dequantize the weights, or quantize the activations per token, form the integer
//! products per block in i32, and scale them back, in that order.

use super::fused::{epilogue, linear};
use super::{op_err, Result};
use crate::{ActQuant, Op, QuantAttrs, Tensor, WeightQuant};

/// `x`, `w`, the format's parameters (scale, zero points), then bias and residual.
pub(super) fn quant_linear(op: &Op, q: QuantAttrs, inputs: &[Tensor]) -> Result<Tensor> {
    let rest = &inputs[2 + q.params()..];
    if q.weights.range().is_none() {
        // A half weight: f32 arithmetic over the exact f32 value of each weight.
        let mut operands = vec![inputs[0].clone(), inputs[1].cast(crate::DType::F32)];
        operands.extend(rest.iter().cloned());
        return linear(q.epilogue, &operands);
    }
    let w = Weights::read(op, q.weights, inputs)?;
    match q.activations {
        ActQuant::None => {
            let deq = Tensor::from_vec(w.dequantized(), &[w.k, w.n])
                .map_err(|e| op_err(op, e.to_string()))?;
            let mut operands = vec![inputs[0].clone(), deq];
            operands.extend(rest.iter().cloned());
            linear(q.epilogue, &operands)
        }
        ActQuant::DynamicInt8 => {
            let x = &inputs[0];
            // `x` is f32 (inference checks it), so the f64 values are exact.
            let product = dynamic_int8(&w, &x.to_f64_vec());
            let mut shape = x.shape().to_vec();
            *shape.last_mut().expect("rank ≥ 2 was inferred") = w.n;
            let y = Tensor::from_vec(product, &shape).map_err(|e| op_err(op, e.to_string()))?;
            epilogue(q.epilogue, y, rest)
        }
        ActQuant::Quantized | ActQuant::PerTensor | ActQuant::DynamicU8 => {
            let x = &inputs[0];
            let (xq, zero_point, scale) = activations(q, inputs);
            let product = quantized(&w, &xq, zero_point, scale);
            let mut shape = x.shape().to_vec();
            *shape.last_mut().expect("rank ≥ 2 was inferred") = w.n;
            let y = Tensor::from_vec(product, &shape).map_err(|e| op_err(op, e.to_string()))?;
            epilogue(q.epilogue, y, rest)
        }
    }
}

/// The integer activations, their zero point and their scale, for the schemes with a
/// zero point: as given ([`ActQuant::Quantized`]), or quantized here from f32 as
/// `QuantizeLinear` ([`ActQuant::PerTensor`]) or `DynamicQuantizeLinear`
/// ([`ActQuant::DynamicU8`]) would.
fn activations(q: QuantAttrs, inputs: &[Tensor]) -> (Vec<i64>, i64, f32) {
    let x = &inputs[0];
    let at = 2 + q.weights.params();
    // The scalars' types were inferred (u8/i8 and f32), so the f64 values are exact.
    let given = || {
        let zp = &inputs[at];
        let range = match zp.dtype() {
            crate::DType::I8 => (-128.0, 127.0),
            _ => (0.0, 255.0),
        };
        (
            zp.to_i64_vec()[0],
            inputs[at + 1].to_f64_vec()[0] as f32,
            range,
        )
    };
    let (zero_point, scale, range) = match q.activations {
        ActQuant::Quantized => {
            let (zp, scale, _) = given();
            return (x.to_i64_vec(), zp, scale);
        }
        ActQuant::DynamicU8 => {
            // x is f32 (inferred): exact through f64.
            let xs: Vec<f32> = x.to_f64_vec().into_iter().map(|v| v as f32).collect();
            let (min, max) = crate::quant::min_max(&xs);
            let (scale, zp) = crate::quant::dynamic_u8(min, max);
            (i64::from(zp), scale, (0.0, 255.0))
        }
        _ => given(),
    };
    let xq = (x.to_f64_vec().into_iter())
        .map(|v| {
            i64::from(crate::quant::quantize_linear(
                v as f32,
                scale,
                zero_point as f32,
                range,
            ))
        })
        .collect();
    (xq, zero_point, scale)
}

/// The product of activations that arrive quantized (`[M, K]` row-major, any leading dims
/// flattened into M) and int8 weights, as [`ActQuant::Quantized`] defines it; `[M, N]`.
fn quantized(w: &Weights, x: &[i64], zero_point: i64, x_scale: f32) -> Vec<f32> {
    let (k, n) = (w.k, w.n);
    let rows = x.len().checked_div(k).unwrap_or(0);
    let mut y = vec![0f32; rows * n];
    for (m, out) in y.chunks_mut(n.max(1)).enumerate().take(rows) {
        let row = &x[m * k..(m + 1) * k];
        for (col, out) in out.iter_mut().enumerate() {
            // |x - zp| ≤ 255 and |w| ≤ 127 over K ≤ MAX_QUANTIZED_K: the i32 sum is exact.
            let acc: i32 = (row.iter().enumerate())
                .map(|(kk, &v)| (v - zero_point) as i32 * w.centered[kk * n + col])
                .sum();
            *out = acc as f32 * (x_scale * w.scales[col]);
        }
    }
    y
}

/// A quantized weight read out: values less their zero points, and the scales as f32.
struct Weights {
    k: usize,
    n: usize,
    /// Rows of K per scale (K itself for int8).
    block: usize,
    /// `w - zero_point`, `[K, N]` row-major.
    centered: Vec<i32>,
    /// `[⌈K/block⌉, N]` row-major.
    scales: Vec<f32>,
}

impl Weights {
    fn read(op: &Op, format: WeightQuant, inputs: &[Tensor]) -> Result<Weights> {
        let (w, scale) = (&inputs[1], &inputs[2]);
        let (k, n) = (w.shape()[0], w.shape()[1]);
        let block = format.block().unwrap_or(k.max(1));
        let Some((lo, hi)) = format.range() else {
            return Err(op_err(
                op,
                format!("{} weights are not integers", format.name()),
            ));
        };
        let values = w.to_i64_vec();
        if let Some(v) = values.iter().find(|v| !(lo..=hi).contains(*v)) {
            return Err(op_err(
                op,
                format!(
                    "weight value {v} is outside {}'s {lo}..={hi}",
                    format.name()
                ),
            ));
        }
        // Empty without zero points: the format then centres at 0.
        let zero_points = match format.zero_points() {
            true => inputs[3].to_i64_vec(),
            false => Vec::new(),
        };
        if let Some(z) = zero_points.iter().find(|z| !(0..=15).contains(*z)) {
            return Err(op_err(op, format!("zero point {z} is outside 0..=15")));
        }
        let centered = (values.iter().enumerate())
            .map(|(i, &v)| {
                let (row, col) = (i / n.max(1), i % n.max(1));
                let z = zero_points.get((row / block) * n + col).copied();
                (v - z.unwrap_or(0)) as i32
            })
            .collect();
        // f16 and f32 scales are exact in f64, so the round trip loses nothing.
        let scales = scale.to_f64_vec().into_iter().map(|s| s as f32).collect();
        Ok(Weights {
            k,
            n,
            block,
            centered,
            scales,
        })
    }

    /// `(w - zero_point) · scale` as f32, `[K, N]`.
    fn dequantized(&self) -> Vec<f32> {
        let n = self.n;
        (self.centered.iter().enumerate())
            .map(|(i, &c)| c as f32 * self.scales[(i / n / self.block) * n + i % n])
            .collect()
    }
}

/// The dynamic int8 product of `x` (`[M, K]` row-major, any leading dims flattened into M)
/// and the weights, as [`ActQuant::DynamicInt8`] defines it; `[M, N]` row-major.
fn dynamic_int8(w: &Weights, x: &[f64]) -> Vec<f32> {
    let (k, n) = (w.k, w.n);
    let rows = x.len().checked_div(k).unwrap_or(0);
    let mut y = vec![0f32; rows * n];
    for (m, out) in y.chunks_mut(n.max(1)).enumerate().take(rows) {
        let row: Vec<f32> = x[m * k..(m + 1) * k].iter().map(|&v| v as f32).collect();
        let Some((xq, row_scale)) = quantize_row(&row) else {
            out.fill(f32::NAN);
            continue;
        };
        for (col, out) in out.iter_mut().enumerate() {
            let mut sum = 0f32;
            for (b, start) in (0..k).step_by(w.block).enumerate() {
                let acc: i32 = (start..(start + w.block).min(k))
                    .map(|kk| i32::from(xq[kk]) * w.centered[kk * n + col])
                    .sum();
                sum += acc as f32 * w.scales[b * n + col];
            }
            *out = sum * row_scale;
        }
    }
    y
}

/// One token's symmetric int8 quantization: `round_half_even(x · (127 / amax))` and the
/// scale `amax / 127` that undoes it (zeros and scale 0 for a row of zeros); `None` when
/// the row holds a NaN or an infinity, whose outputs are all NaN.
fn quantize_row(x: &[f32]) -> Option<(Vec<i8>, f32)> {
    if x.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
    if amax == 0.0 {
        return Some((vec![0; x.len()], 0.0));
    }
    let inv = 127.0 / amax;
    let q = (x.iter())
        .map(|&v| (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8)
        .collect();
    Some((q, amax / 127.0))
}

#[cfg(test)]
mod tests {
    use crate::interp::eval_op;
    use crate::{ActQuant, Bindings, Block, Epilogue, Op, QuantAttrs, Tensor, WeightQuant};

    fn f32s(v: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape).unwrap()
    }

    fn run(q: QuantAttrs, inputs: Vec<Tensor>) -> crate::interp::Result<Vec<f64>> {
        let out = eval_op(&Op::QuantLinear(q), &inputs, &Bindings::new())?;
        Ok(out[0].to_f64_vec())
    }

    #[test]
    fn dynamic_int8_is_the_integer_product_rescaled() {
        let x = f32s(&[1.0, -2.0, 0.5, 4.0], &[1, 4]);
        let w = Tensor::from_vec(vec![1i8, 2, 3, -4, -5, 6, 7, 8], &[4, 2]).unwrap();
        let s = f32s(&[0.5, 0.25], &[2]);
        let q = QuantAttrs {
            activations: ActQuant::DynamicInt8,
            ..QuantAttrs::default()
        };
        let y = run(q, vec![x, w, s]).unwrap();
        // amax 4: x · 127/4 = [31.75, -63.5, 15.875, 127] rounds (half to even) to
        // [32, -64, 16, 127]; the i32 products are 649 and 1432.
        let row = 4f32 / 127.0;
        assert_eq!(
            y,
            [(649f32 * 0.5 * row) as f64, (1432f32 * 0.25 * row) as f64]
        );
        // Against the f32 product x · (w · scale) = [10.25, 11.25]: within a quantum.
        assert!(
            (y[0] - 10.25).abs() < 0.05 && (y[1] - 11.25).abs() < 0.05,
            "{y:?}"
        );
    }

    #[test]
    fn weight_only_int4_is_a_linear_over_the_dequantized_weight() {
        let k = 40; // a partial second block of 32
        let x: Vec<f32> = (0..2 * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<u8> = (0..k * 3).map(|i| (i * 7 % 16) as u8).collect();
        let z = Tensor::from_vec(vec![8u8, 3, 15, 0, 9, 1], &[2, 3]).unwrap();
        let s = f32s(&[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], &[2, 3]);
        let deq: Vec<f32> = (0..k * 3)
            .map(|i| {
                let (row, col) = (i / 3, i % 3);
                let b = row / 32;
                (w[i] as f32 - [8.0, 3.0, 15.0, 0.0, 9.0, 1.0][b * 3 + col])
                    * [0.1, 0.2, 0.3, 0.4, 0.5, 0.6][b * 3 + col]
            })
            .collect();
        let bias = f32s(&[1.0, -1.0, 0.5], &[3]);
        let epilogue = Epilogue {
            bias: true,
            ..Epilogue::default()
        };
        let q = QuantAttrs {
            weights: WeightQuant::Int4 {
                block: Block::B32,
                zero_points: true,
            },
            activations: ActQuant::None,
            epilogue,
        };
        let x = f32s(&x, &[2, k]);
        let wq = Tensor::from_vec(w, &[k, 3]).unwrap();
        let y = run(q, vec![x.clone(), wq, s, z, bias.clone()]).unwrap();
        let linear = eval_op(
            &Op::Linear(epilogue),
            &[x, f32s(&deq, &[k, 3]), bias],
            &Bindings::new(),
        )
        .unwrap();
        assert_eq!(y, linear[0].to_f64_vec());
    }

    #[test]
    fn weights_outside_the_format_and_non_finite_rows() {
        let x = f32s(&[1.0, f32::NAN, 2.0, 3.0], &[2, 2]);
        let w = Tensor::from_vec(vec![1i8, -128], &[2, 1]).unwrap();
        let s = f32s(&[1.0], &[1]);
        let q = QuantAttrs {
            activations: ActQuant::DynamicInt8,
            ..QuantAttrs::default()
        };
        let e = run(q, vec![x.clone(), w, s.clone()]).unwrap_err();
        assert!(
            e.to_string().contains("-128 is outside int8's -127..=127"),
            "{e}"
        );
        let w = Tensor::from_vec(vec![1i8, 2], &[2, 1]).unwrap();
        let y = run(q, vec![x, w, s]).unwrap();
        assert!(y[0].is_nan(), "a row with a NaN gives NaN: {y:?}");
        // amax 3: [2, 3] · 127/3 = [84.67, 127] → [85, 127]; 85 + 254 = 339.
        assert_eq!(y[1], (339f32 * 1.0 * (3f32 / 127.0)) as f64);
    }
}
