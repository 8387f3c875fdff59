//! One-line summaries of output tensors: name, shape, dtype, min/max/mean.

use kiln_ir::Tensor;

/// `name  f32[2, 16, 64]  min -3.1 max 2.9 mean 0.0012`; NaNs are counted, not averaged.
pub fn summarize(name: &str, t: &Tensor) -> String {
    let values = t.to_f64_vec();
    let n_nan = values.iter().filter(|v| v.is_nan()).count();
    let finite: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    let stats = if finite.is_empty() {
        "no values".to_string()
    } else {
        let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mean = finite.iter().sum::<f64>() / finite.len() as f64;
        format!("min {min:.6} max {max:.6} mean {mean:.6}")
    };
    let nan = if n_nan > 0 {
        format!(" ({n_nan} NaN)")
    } else {
        String::new()
    };
    format!("{name}  {}{:?}  {stats}{nan}", t.dtype(), t.shape())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_shows_shape_dtype_and_stats() {
        let t = Tensor::from_vec(vec![1.0f32, -1.0, 3.0, f32::NAN], &[2, 2]).unwrap();
        assert_eq!(
            summarize("y", &t),
            "y  f32[2, 2]  min -1.000000 max 3.000000 mean 1.000000 (1 NaN)"
        );
    }
}
