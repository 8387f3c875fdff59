//! Comparing the backends' outputs: integers and bools exactly, floats within a tolerance
//! (NaN matches NaN, infinities match in sign).

use kiln_ir::Tensor;

/// Relative tolerance for floats.
pub const RTOL: f64 = 1e-4;
/// Absolute tolerance for floats.
pub const ATOL: f64 = 1e-5;

/// Why `got` differs from `expected`, or `Ok` when it matches within tolerance.
pub fn compare(expected: &Tensor, got: &Tensor) -> Result<(), String> {
    if expected.dtype() != got.dtype() || expected.shape() != got.shape() {
        return Err(format!(
            "type differs: expected {}{:?}, got {}{:?}",
            expected.dtype(),
            expected.shape(),
            got.dtype(),
            got.shape()
        ));
    }
    if !expected.dtype().is_float() {
        let (e, g) = (expected.to_i64_vec(), got.to_i64_vec());
        return match e.iter().zip(&g).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(format!("element {i}: expected {}, got {}", e[i], g[i])),
        };
    }
    let (e, g) = (expected.to_f64_vec(), got.to_f64_vec());
    match e.iter().zip(&g).position(|(&a, &b)| !close(a, b)) {
        None => Ok(()),
        Some(i) => Err(format!("element {i}: expected {:e}, got {:e}", e[i], g[i])),
    }
}

fn close(expected: f64, got: f64) -> bool {
    if expected.is_nan() || got.is_nan() {
        return expected.is_nan() && got.is_nan();
    }
    if expected.is_infinite() || got.is_infinite() {
        return expected == got;
    }
    (expected - got).abs() <= ATOL + RTOL * expected.abs()
}
