//! The epilogue of a fused linear layer: bias, activation and residual applied to a block
//! of C right after its last depth block, while the block is still in cache.
//!
//! The activations follow the interpreter's definitions (same operations in the same
//! order), but exp is the JIT's branch-free polynomial (`lower::math`), erf a rational with
//! one division (`math::ERF_RATIONAL_P`) and tanh `1 - 2/(e^{2y} + 1)`, because libm's `expf`, `erff` and `tanhf` are calls the compiler
//! cannot vectorize, which cost more per element than the GEMM tile they finish (with them
//! the GELU linear of MiniLM ran at twice the time of its matmul). The epilogue runs a row
//! at a time, one simple loop per step.

use super::{MatMut, MatRef};
use crate::math::exp;
use kiln_ir::{Activation, Residual};

/// What to do to every element of C after the product: `c = act(c + bias[j]) ⊕ r[i, j]`.
///
/// ```
/// use kiln_rt::gemm::{Epilogue, MatRef};
/// use kiln_ir::{Activation, Residual};
/// let bias = [1.0f32, -1.0];
/// let r = [10.0f32, 10.0];
/// let e = Epilogue {
///     bias: bias.as_ptr(),
///     activation: Some(Activation::Relu),
///     residual: Some((Residual::Add, MatRef { ptr: r.as_ptr(), row_stride: 2, col_stride: 1 })),
/// };
/// // SAFETY: the bias and residual cover element (0, 0) and (0, 1).
/// unsafe {
///     assert_eq!(e.element(0.5, 0, 0), 11.5);
///     assert_eq!(e.element(0.5, 0, 1), 10.0);
/// }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Epilogue {
    /// `n` floats added along each row, or null for no bias.
    pub bias: *const f32,
    /// Applied after the bias.
    pub activation: Option<Activation>,
    /// Combined last, with a matrix addressed like C.
    pub residual: Option<(Residual, MatRef)>,
}

impl Epilogue {
    /// A plain product.
    pub const NONE: Epilogue = Epilogue {
        bias: std::ptr::null(),
        activation: None,
        residual: None,
    };

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.bias.is_null() && self.activation.is_none() && self.residual.is_none()
    }

    /// The epilogue of the sub-block of C starting at (`row`, `col`).
    pub(crate) fn at(self, row: usize, col: usize) -> Epilogue {
        Epilogue {
            bias: if self.bias.is_null() {
                self.bias
            } else {
                self.bias.wrapping_add(col)
            },
            residual: self.residual.map(|(kind, r)| (kind, r.at(row, col))),
            ..self
        }
    }

    /// The epilogue of batch item `i`, whose C is `c_batch_stride` floats further.
    pub(super) fn item(self, i: usize, c_batch_stride: isize) -> Epilogue {
        Epilogue {
            residual: self.residual.map(|(kind, r)| {
                let ptr = r.ptr.wrapping_offset(i as isize * c_batch_stride);
                (kind, MatRef { ptr, ..r })
            }),
            ..self
        }
    }

    /// Element (`i`, `j`) of the block after the epilogue, given its product `v`.
    ///
    /// # Safety
    /// The bias must be valid at column `j` and the residual at (`i`, `j`).
    pub unsafe fn element(&self, v: f32, i: usize, j: usize) -> f32 {
        let mut v = v;
        if !self.bias.is_null() {
            // SAFETY: the bias holds a float for every column of the block.
            v += unsafe { *self.bias.add(j) };
        }
        if let Some(a) = self.activation {
            v = activate(a, v);
        }
        if let Some((kind, r)) = self.residual {
            // SAFETY: the residual is valid wherever C is.
            let r = unsafe { *r.at(i, j).ptr };
            v = match kind {
                Residual::Add => v + r,
                Residual::Mul => v * r,
            };
        }
        v
    }

    /// Applies the epilogue to the `m × n` block `c`, a row at a time: each step is one
    /// loop over the row, which the compiler can vectorize.
    ///
    /// # Safety
    /// C, the bias (n floats) and the residual (m × n) must be valid.
    pub(crate) unsafe fn apply(&self, m: usize, n: usize, c: MatMut) {
        if self.is_empty() {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F; forwarded from the caller.
            return unsafe { self.apply_avx512(m, n, c) };
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2; forwarded from the caller.
            return unsafe { self.apply_avx2(m, n, c) };
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.apply_rows(m, n, c) }
    }

    /// [`Epilogue::apply`] compiled for AVX2, so its loops vectorize eight wide (the
    /// baseline target has SSE2 only). The same operations in the same order, with no FMA
    /// contraction (Rust never fuses a multiply and an add), so the results are the same.
    ///
    /// # Safety
    /// As for [`Epilogue::apply`], on a CPU with AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(&self, m: usize, n: usize, c: MatMut) {
        // SAFETY: forwarded from the caller.
        unsafe { self.apply_rows(m, n, c) }
    }

    /// [`Epilogue::apply`] compiled for AVX-512, sixteen wide: the same operations in the
    /// same order. The bias and tanh-GELU epilogue of a 128×1536 block took 116 µs
    /// against 140 µs built for AVX2 (2 threads, `cargo bench -p kiln-rt --bench qgemm`
    /// with `ACT=1`).
    ///
    /// # Safety
    /// As for [`Epilogue::apply`], on a CPU with AVX-512F.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn apply_avx512(&self, m: usize, n: usize, c: MatMut) {
        // SAFETY: forwarded from the caller.
        unsafe { self.apply_rows(m, n, c) }
    }

    /// The epilogue's loops, inlined into each caller's target features.
    ///
    /// # Safety
    /// As for [`Epilogue::apply`].
    #[inline(always)]
    unsafe fn apply_rows(&self, m: usize, n: usize, c: MatMut) {
        let mut row = vec![0.0f32; n];
        for i in 0..m {
            for (j, v) in row.iter_mut().enumerate() {
                // SAFETY: (i, j) is inside the block.
                *v = unsafe { *c.at(i, j).ptr };
            }
            if !self.bias.is_null() {
                // SAFETY: the bias holds n floats.
                let bias = unsafe { std::slice::from_raw_parts(self.bias, n) };
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
            if let Some(a) = self.activation {
                // One loop per activation, each written out: the constant argument folds
                // into the body, so each loop is straight-line code the compiler vectorizes.
                // (A closure taking the activation, called once per arm, was not inlined:
                // its loop kept the match and ran scalar, 6x slower for tanh-GELU.) Plain
                // `for` loops, not `for_each`: `for_each` was outlined as a function built
                // for the baseline target, so erf-GELU ran four wide with SSE, not sixteen
                // (19% of ViT's int8 run).
                match a {
                    Activation::Relu => {
                        for v in row.iter_mut() {
                            *v = activate(Activation::Relu, *v);
                        }
                    }
                    Activation::Gelu => {
                        for v in row.iter_mut() {
                            *v = activate(Activation::Gelu, *v);
                        }
                    }
                    Activation::GeluTanh => {
                        for v in row.iter_mut() {
                            *v = activate(Activation::GeluTanh, *v);
                        }
                    }
                    Activation::Silu => {
                        for v in row.iter_mut() {
                            *v = activate(Activation::Silu, *v);
                        }
                    }
                }
            }
            if let Some((kind, r)) = self.residual {
                for (j, v) in row.iter_mut().enumerate() {
                    // SAFETY: the residual is valid wherever C is.
                    let r = unsafe { *r.at(i, j).ptr };
                    *v = match kind {
                        Residual::Add => *v + r,
                        Residual::Mul => *v * r,
                    };
                }
            }
            for (j, v) in row.iter().enumerate() {
                // SAFETY: (i, j) is inside the block.
                unsafe { *c.at(i, j).ptr = *v };
            }
        }
    }
}

/// `a(x)` in the interpreter's order of operations (erf and tanh as in the module docs).
///
/// ```
/// use kiln_rt::gemm::activate;
/// use kiln_ir::Activation;
/// assert_eq!(activate(Activation::Relu, -2.0), 0.0);
/// assert!((activate(Activation::Silu, 1.0) - 0.7310586).abs() < 1e-6);
/// ```
#[inline(always)]
pub fn activate(a: Activation, x: f32) -> f32 {
    match a {
        Activation::Relu => {
            if x < 0.0 {
                0.0
            } else {
                x
            }
        }
        // A product by 1/√2 rather than the interpreter's quotient by √2: a division per
        // element costs as much as the rest of erf.
        Activation::Gelu => x * (erf(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5,
        Activation::GeluTanh => {
            let inner = 0.797_884_6_f32 * (x + 0.044715 * (x * x * x));
            x * 0.5 * (tanh(inner) + 1.0)
        }
        Activation::Silu => x * sigmoid(x),
    }
}

/// erf as `x·P(x²)/Q(x²)` on |x| ≤ 4, clamped beyond and capped at ±1 (`math::ERF_RATIONAL_P`):
/// within 3.1e-7 of erf, with one division and no exp. NaN passes through.
#[inline(always)]
fn erf(x: f32) -> f32 {
    use crate::math::{ERF_RATIONAL_MAX, ERF_RATIONAL_P, ERF_RATIONAL_Q};
    // Multiply and add rather than `mul_add`: without FMA in the build's target features,
    // `mul_add` is a libm call per step.
    let horner = |t: f32, coeffs: &[f32]| coeffs[1..].iter().fold(coeffs[0], |acc, c| acc * t + c);
    let x = x.clamp(-ERF_RATIONAL_MAX, ERF_RATIONAL_MAX);
    let t = x * x;
    let r = x * horner(t, &ERF_RATIONAL_P) / horner(t, &ERF_RATIONAL_Q);
    r.clamp(-1.0, 1.0)
}

/// `1 - 2/(e^{2y} + 1)`: ±1 at the extremes (e^{2y} overflows to ∞ or underflows to 0), and
/// within a few 1e-8 of tanh elsewhere.
#[inline(always)]
fn tanh(y: f32) -> f32 {
    // Past ±30 the result is ±1 exactly either way; clamping keeps e^{2y} from going
    // subnormal, which made a GELU epilogue over large negative inputs 4x slower. NaN
    // fails both comparisons and passes through.
    let y = if y < -30.0 { -30.0 } else { y };
    let y = if y > 30.0 { 30.0 } else { y };
    1.0 - 2.0 / (exp(2.0 * y) + 1.0)
}

/// `1 / (1 + e⁻ˣ)`, written so neither form overflows (as the interpreter's): both forms
/// from `e = e^-|x|`, then a select, so loops over it vectorize.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = exp(-x.abs());
    let positive = 1.0 / (1.0 + e);
    let negative = e / (1.0 + e);
    if x >= 0.0 {
        positive
    } else {
        negative
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{interp::eval_op, Bindings, Op, Tensor};

    /// The scalar activations agree with the interpreter's definitions.
    #[test]
    fn activations_match_the_interpreter() {
        // A dense sweep where the functions bend, and the far tails (exp's clamps).
        let mut xs: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.025).collect();
        xs.extend([-200.0, -103.0, -50.0, -20.0, 20.0, 50.0, 88.0, 200.0]);
        let x = Tensor::from_vec(xs.clone(), &[xs.len()]).unwrap();
        for &a in Activation::ALL {
            let want = eval_op(
                &Op::Unary(a.unary()),
                std::slice::from_ref(&x),
                &Bindings::new(),
            )
            .unwrap();
            let want = want[0].to_f64_vec();
            for (x, w) in xs.iter().zip(want) {
                let got = activate(a, *x) as f64;
                let tol = 1e-6 * w.abs().max(1.0);
                assert!((got - w).abs() <= tol, "{a:?}({x}) = {got}, reference {w}");
            }
        }
    }
}
