//! Random tensor contents: floats in a moderate range (sometimes with special values),
//! integers mostly small with occasional extremes, bools, and in-range gather indices.

use super::rng::Rng;
use kiln_ir::{DType, Tensor};

/// A random tensor of `dtype` and `shape`; `specials` mixes NaN, ±∞ and ±0 into floats.
pub fn random_tensor(rng: &mut Rng, dtype: DType, shape: &[usize], specials: bool) -> Tensor {
    let n: usize = shape.iter().product();
    let extremes = rng.chance(0.2);
    match dtype {
        DType::F32 => {
            let v = (0..n).map(|_| float(rng, specials) as f32).collect();
            Tensor::from_vec::<f32>(v, shape)
        }
        DType::F64 => {
            let v = (0..n).map(|_| float(rng, specials)).collect();
            Tensor::from_vec::<f64>(v, shape)
        }
        DType::Bool => {
            let v = (0..n).map(|_| rng.chance(0.5)).collect();
            Tensor::from_vec::<bool>(v, shape)
        }
        DType::I8 => ints(
            rng,
            n,
            shape,
            extremes,
            i8::MIN as i64,
            i8::MAX as i64,
            |x| x as i8,
        ),
        DType::U8 => ints(rng, n, shape, extremes, 0, u8::MAX as i64, |x| x as u8),
        DType::I32 => ints(
            rng,
            n,
            shape,
            extremes,
            i32::MIN as i64,
            i32::MAX as i64,
            |x| x as i32,
        ),
        DType::I64 => ints(rng, n, shape, extremes, i64::MIN, i64::MAX, |x| x),
        other => panic!("the generator does not make {other} inputs"),
    }
    .expect("element count matches the shape")
}

/// Indices into an axis of size `dim`, in `-dim..dim` (negative ones count from the end).
pub fn indices(rng: &mut Rng, dtype: DType, shape: &[usize], dim: usize) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<i64> = (0..n)
        .map(|_| rng.range(-(dim as i64), dim as i64))
        .collect();
    let t = Tensor::from_vec(v, shape).expect("element count matches the shape");
    t.cast(dtype)
}

fn float(rng: &mut Rng, specials: bool) -> f64 {
    if specials && rng.chance(0.05) {
        return rng.pick(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0]);
    }
    // Quantized to 1/64 now and then, so that ties (round, floor, equal) occur.
    let x = rng.unit() * 4.0 - 2.0;
    if rng.chance(0.2) {
        (x * 64.0).round() / 64.0
    } else {
        x
    }
}

fn ints<T: kiln_ir::Elem>(
    rng: &mut Rng,
    n: usize,
    shape: &[usize],
    extremes: bool,
    lo: i64,
    hi: i64,
    conv: fn(i64) -> T,
) -> Result<Tensor, kiln_ir::TensorError> {
    let small_lo = lo.max(-12);
    let v = (0..n)
        .map(|_| {
            let x = if extremes && rng.chance(0.2) {
                rng.pick(&[lo, hi, lo.saturating_add(1), -1i64.max(lo), 0, 1])
            } else {
                rng.range(small_lo, 13)
            };
            conv(x)
        })
        .collect();
    Tensor::from_vec(v, shape)
}
