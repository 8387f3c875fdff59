//! Comparing a computed tensor with an expected one, as the ONNX test runner and the model
//! tests do: dtype and shape exactly; floats within `atol + rtol·|expected|` (NaN equals NaN);
//! integers and bools exactly; and the [`Agreement`] of a quantized result with f32.

use kiln_ir::Tensor;

/// Tolerances for float comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative tolerance, scaled by `|expected|`.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

impl Tolerance {
    /// The ONNX backend tests' tolerance: rtol 1e-3, atol 1e-7.
    pub const ONNX: Tolerance = Tolerance {
        rtol: 1e-3,
        atol: 1e-7,
    };
    /// The model tests' tolerance: rtol 1e-4, atol 1e-5.
    pub const MODELS: Tolerance = Tolerance {
        rtol: 1e-4,
        atol: 1e-5,
    };
}

/// Checks `actual` against `expected`; the error is a one-line reason.
pub fn compare(actual: &Tensor, expected: &Tensor, tol: Tolerance) -> Result<(), String> {
    if actual.dtype() != expected.dtype() {
        return Err(format!(
            "dtype {} but expected {}",
            actual.dtype(),
            expected.dtype()
        ));
    }
    if actual.shape() != expected.shape() {
        return Err(format!(
            "shape {:?} but expected {:?}",
            actual.shape(),
            expected.shape()
        ));
    }
    if expected.dtype().is_float() {
        compare_floats(
            &actual.to_f64_vec(),
            &expected.to_f64_vec(),
            expected.shape(),
            tol,
        )
    } else if actual == expected {
        Ok(())
    } else {
        let (a, e) = (actual.to_i64_vec(), expected.to_i64_vec());
        let n_bad = a.iter().zip(&e).filter(|(x, y)| x != y).count();
        let first = a.iter().zip(&e).position(|(x, y)| x != y).unwrap_or(0);
        Err(format!(
            "{n_bad} of {} elements differ; first at {:?}: {} but expected {}",
            e.len(),
            unravel(first, expected.shape()),
            a[first],
            e[first]
        ))
    }
}

fn close(a: f64, e: f64, tol: Tolerance) -> bool {
    (a.is_nan() && e.is_nan()) || a == e || (a - e).abs() <= tol.atol + tol.rtol * e.abs()
}

fn compare_floats(a: &[f64], e: &[f64], shape: &[usize], tol: Tolerance) -> Result<(), String> {
    let bad: Vec<usize> = (0..e.len()).filter(|&i| !close(a[i], e[i], tol)).collect();
    let Some(&first) = bad.first() else {
        return Ok(());
    };
    let worst = bad
        .iter()
        .copied()
        .max_by(|&i, &j| (a[i] - e[i]).abs().total_cmp(&(a[j] - e[j]).abs()))
        .unwrap_or(first);
    Err(format!(
        "{} of {} elements differ (rtol {:e}, atol {:e}); worst at {:?}: {} but expected {}",
        bad.len(),
        e.len(),
        tol.rtol,
        tol.atol,
        unravel(worst, shape),
        a[worst],
        e[worst]
    ))
}

fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[i] = flat % d;
            flat /= d;
        }
    }
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::DType;

    fn f32s(v: Vec<f32>) -> Tensor {
        let n = v.len();
        Tensor::from_vec(v, &[n]).unwrap()
    }

    #[test]
    fn floats_within_tolerance_and_nan_match() {
        let e = f32s(vec![1.0, f32::NAN, 0.0, f32::INFINITY]);
        let a = f32s(vec![1.0005, f32::NAN, 5e-8, f32::INFINITY]);
        assert_eq!(compare(&a, &e, Tolerance::ONNX), Ok(()));
    }

    #[test]
    fn floats_outside_tolerance_report_the_worst() {
        let e = f32s(vec![1.0, 2.0, 3.0]);
        let a = f32s(vec![1.01, 2.0, 3.5]);
        let m = compare(&a, &e, Tolerance::ONNX).unwrap_err();
        assert!(
            m.starts_with("2 of 3 elements differ")
                && m.contains("worst at [2]: 3.5 but expected 3"),
            "{m}"
        );
        let nan = f32s(vec![f32::NAN, 2.0, 3.0]);
        assert!(compare(&nan, &e, Tolerance::ONNX).is_err());
    }

    #[test]
    fn dtype_shape_and_ints_are_exact() {
        let e = Tensor::from_vec(vec![1i64, 2, 3, 4], &[2, 2]).unwrap();
        assert!(compare(&e.cast(DType::I32), &e, Tolerance::ONNX)
            .unwrap_err()
            .starts_with("dtype i32"));
        assert!(compare(&e.reshape(&[4]).unwrap(), &e, Tolerance::ONNX)
            .unwrap_err()
            .starts_with("shape [4]"));
        let off = Tensor::from_vec(vec![1i64, 2, 3, 5], &[2, 2]).unwrap();
        let m = compare(&off, &e, Tolerance::ONNX).unwrap_err();
        assert_eq!(
            m,
            "1 of 4 elements differ; first at [1, 1]: 5 but expected 4"
        );
        let b = Tensor::from_vec(vec![true, false], &[2]).unwrap();
        assert_eq!(compare(&b, &b.clone(), Tolerance::ONNX), Ok(()));
    }
}

/// How close a result is to a reference, the way quantized results are judged against f32:
/// the cosine of the two as vectors, the L2 norm of the difference relative to the
/// reference's, and the largest absolute difference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// `a·r / (|a| |r|)`; 1 when both are zero, 0 when only one is.
    pub cosine: f64,
    /// `|a - r| / |r|` (the absolute L2 distance when `r` is zero).
    pub rel_l2: f64,
    /// `max |a - r|`.
    pub max_abs: f64,
}

/// The [`Agreement`] of `actual` with `reference`, element by element in f64; an error when
/// their shapes differ or either holds a NaN.
///
/// ```
/// use kiln::compare::agreement;
/// use kiln::ir::Tensor;
/// let r = Tensor::from_vec(vec![1.0f32, 2.0, 2.0], &[3]).unwrap();
/// let a = Tensor::from_vec(vec![1.0f32, 2.0, 2.5], &[3]).unwrap();
/// let g = agreement(&a, &r).unwrap();
/// assert!((g.rel_l2 - 0.5 / 3.0).abs() < 1e-12 && g.max_abs == 0.5 && g.cosine < 1.0);
/// ```
pub fn agreement(actual: &Tensor, reference: &Tensor) -> Result<Agreement, String> {
    if actual.shape() != reference.shape() {
        return Err(format!(
            "shape {:?} but the reference is {:?}",
            actual.shape(),
            reference.shape()
        ));
    }
    let (a, r) = (actual.to_f64_vec(), reference.to_f64_vec());
    if a.iter().chain(&r).any(|v| v.is_nan()) {
        return Err("a NaN in the result or the reference".into());
    }
    let dot: f64 = a.iter().zip(&r).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (na, nr) = (norm(&a), norm(&r));
    let diff: Vec<f64> = a.iter().zip(&r).map(|(x, y)| x - y).collect();
    let cosine = match (na == 0.0, nr == 0.0) {
        (true, true) => 1.0,
        (true, false) | (false, true) => 0.0,
        _ => dot / (na * nr),
    };
    let nd = norm(&diff);
    Ok(Agreement {
        cosine,
        rel_l2: if nr == 0.0 { nd } else { nd / nr },
        max_abs: diff.iter().fold(0.0, |m, d| m.max(d.abs())),
    })
}
