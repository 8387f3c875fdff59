//! Fused ops, evaluated by their decompositions into core ops: the decomposition is the
//! definition, so an optimized graph and the graph it came from compute the same thing
//! step for step (f16 rounds after every step, as the core ops do).

use super::{eval_op, op_err, Result};
use crate::{
    AttentionAttrs, AttentionMask, BinaryOp, Bindings, Dim, Epilogue, MaskedRows, Op, ReduceKind,
    Tensor, UnaryOp,
};

/// Layer normalization over the last axis (see [`Op::LayerNorm`]).
pub(super) fn layer_norm(
    op: &Op,
    x: &Tensor,
    scale: &Tensor,
    bias: &Tensor,
    epsilon: f32,
) -> Result<Tensor> {
    check_rank(op, x)?;
    let centered = binary(BinaryOp::Sub, x, &mean_last(x)?)?;
    let variance = mean_last(&binary(BinaryOp::Mul, &centered, &centered)?)?;
    let normalized = binary(BinaryOp::Mul, &centered, &inverse_root(&variance, epsilon)?)?;
    binary(
        BinaryOp::Add,
        &binary(BinaryOp::Mul, &normalized, scale)?,
        bias,
    )
}

/// RMS normalization over the last axis (see [`Op::RmsNorm`]).
pub(super) fn rms_norm(op: &Op, x: &Tensor, scale: &Tensor, epsilon: f32) -> Result<Tensor> {
    check_rank(op, x)?;
    let mean_square = mean_last(&binary(BinaryOp::Mul, x, x)?)?;
    let normalized = binary(BinaryOp::Mul, x, &inverse_root(&mean_square, epsilon)?)?;
    binary(BinaryOp::Mul, &normalized, scale)
}

/// A linear layer with its epilogue (see [`Op::Linear`]): the matmul, then bias,
/// activation and residual, each as its core op. The residual is the right operand, which
/// is exact either way, as float addition and multiplication commute.
pub(super) fn linear(e: Epilogue, inputs: &[Tensor]) -> Result<Tensor> {
    let y = apply(Op::MatMul, &inputs[..2])?;
    epilogue(e, y, &inputs[2..])
}

/// A linear layer's epilogue on its product `y`: `operands` are the bias and the residual,
/// as far as `e` has them.
pub(super) fn epilogue(e: Epilogue, mut y: Tensor, operands: &[Tensor]) -> Result<Tensor> {
    let mut rest = operands.iter();
    if e.bias {
        let bias = rest.next().expect("the arity was checked");
        y = binary(BinaryOp::Add, &y, bias)?;
    }
    if let Some(a) = e.activation {
        y = apply(Op::Unary(a.unary()), &[y])?;
    }
    if let Some(r) = e.residual {
        let residual = rest.next().expect("the arity was checked");
        y = binary(r.binary(), &y, residual)?;
    }
    Ok(y)
}

/// Scaled dot-product attention (see [`Op::Attention`]): `q·kᵀ`, scaled, masked,
/// softmax, NaN to zero when asked, times `v`, with grouped key/value heads repeated.
pub(super) fn attention(op: &Op, a: &AttentionAttrs, x: &[Tensor]) -> Result<Tensor> {
    let q = &x[0];
    let r = q.shape().len();
    if r < 3 {
        return Err(op_err(op, "the query must have rank at least 3"));
    }
    let heads = q.shape()[r - 3];
    let k = repeat_heads(op, &x[1], heads)?;
    let v = repeat_heads(op, &x[2], heads)?;
    let mut perm: Vec<usize> = (0..r).collect();
    perm.swap(r - 2, r - 1);
    let kt = apply(Op::Transpose { perm }, &[k])?;
    let product = apply(Op::MatMul, &[q.clone(), kt])?;
    let scores = binary(
        BinaryOp::Mul,
        &product,
        &Tensor::scalar(a.scale).cast(q.dtype()),
    )?;
    let masked = match a.mask {
        AttentionMask::None => scores,
        AttentionMask::Add => binary(BinaryOp::Add, &scores, &x[3])?,
        AttentionMask::Keep => {
            let minus_inf = Tensor::scalar(f32::NEG_INFINITY).cast(q.dtype());
            apply(Op::Where, &[x[3].clone(), scores, minus_inf])?
        }
    };
    let mut p = apply(
        Op::Softmax {
            axis: r - 1,
            log: false,
        },
        &[masked],
    )?;
    let zero = Tensor::scalar(0.0f32).cast(q.dtype());
    match a.rows {
        MaskedRows::Nan => {}
        MaskedRows::ZeroNan => {
            let nan = apply(Op::Unary(UnaryOp::IsNan), std::slice::from_ref(&p))?;
            p = apply(Op::Where, &[nan, zero, p])?;
        }
        MaskedRows::ZeroMasked => {
            let mask = &x[3];
            let row_max = Op::Reduce {
                kind: ReduceKind::Max,
                axes: vec![mask.shape().len().max(1) - 1],
                keep_dims: true,
            };
            let max = apply(row_max, std::slice::from_ref(mask))?;
            let minus_inf = Tensor::scalar(f32::NEG_INFINITY).cast(q.dtype());
            let closed = binary(BinaryOp::Equal, &max, &minus_inf)?;
            p = apply(Op::Where, &[closed, zero, p])?;
        }
    }
    apply(Op::MatMul, &[p, v])
}

/// `t[.., g, s, d]` with each of its `g` heads repeated `heads / g` times in a row.
fn repeat_heads(op: &Op, t: &Tensor, heads: usize) -> Result<Tensor> {
    let shape = t.shape();
    let r = shape.len();
    let g = shape[r - 3];
    if g == heads {
        return Ok(t.clone());
    }
    if g == 0 || !heads.is_multiple_of(g) {
        return Err(op_err(
            op,
            format!("{heads} query heads do not group over {g} key/value heads"),
        ));
    }
    let dims = |s: &[usize]| s.iter().map(|&d| Dim::from(d as i64)).collect::<Vec<_>>();
    let mut split = shape.to_vec();
    split.insert(r - 2, 1);
    let mut repeated = split.clone();
    repeated[r - 2] = heads / g;
    let mut merged = shape.to_vec();
    merged[r - 3] = heads;
    let t = apply(
        Op::Reshape {
            shape: dims(&split),
        },
        std::slice::from_ref(t),
    )?;
    let t = apply(
        Op::Expand {
            shape: dims(&repeated),
        },
        &[t],
    )?;
    apply(
        Op::Reshape {
            shape: dims(&merged),
        },
        &[t],
    )
}

/// The half-rotation rotary embedding (see [`Op::Rotary`]):
/// `x·cos + concat(-x[.., h..], x[.., ..h])·sin`.
pub(super) fn rotary(op: &Op, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    check_rank(op, x)?;
    let axis = x.shape().len() - 1;
    let d = x.shape()[axis];
    if !d.is_multiple_of(2) {
        return Err(op_err(op, format!("the last axis has odd size {d}")));
    }
    let half = |start: usize, end: usize| {
        let slice = Op::Slice {
            axes: vec![crate::SliceAxis {
                axis,
                start: Dim::from(start as i64),
                end: Dim::from(end as i64),
                step: 1,
            }],
        };
        apply(slice, std::slice::from_ref(x))
    };
    let (low, high) = (half(0, d / 2)?, half(d / 2, d)?);
    let neg_high = apply(Op::Unary(UnaryOp::Neg), &[high])?;
    let rotated = apply(Op::Concat { axis }, &[neg_high, low])?;
    binary(
        BinaryOp::Add,
        &binary(BinaryOp::Mul, x, cos)?,
        &binary(BinaryOp::Mul, &rotated, sin)?,
    )
}

fn check_rank(op: &Op, x: &Tensor) -> Result<()> {
    if x.shape().is_empty() {
        return Err(op_err(op, "the input must have rank at least 1"));
    }
    Ok(())
}

fn apply(op: Op, inputs: &[Tensor]) -> Result<Tensor> {
    Ok(eval_op(&op, inputs, &Bindings::new())?.remove(0))
}

fn binary(b: BinaryOp, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    apply(Op::Binary(b), &[x.clone(), y.clone()])
}

/// The mean over the last axis, kept as size 1.
fn mean_last(x: &Tensor) -> Result<Tensor> {
    let reduce = Op::Reduce {
        kind: ReduceKind::Mean,
        axes: vec![x.shape().len() - 1],
        keep_dims: true,
    };
    apply(reduce, std::slice::from_ref(x))
}

/// `rsqrt(v + epsilon)`, with epsilon in `v`'s dtype.
fn inverse_root(v: &Tensor, epsilon: f32) -> Result<Tensor> {
    let eps = Tensor::scalar(epsilon).cast(v.dtype());
    apply(
        Op::Unary(UnaryOp::Rsqrt),
        &[binary(BinaryOp::Add, v, &eps)?],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_matches_its_formula() {
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, -1.0, 1.0], &[2, 3]).unwrap();
        let scale = Tensor::from_vec(vec![1.0f32, 2.0, 0.5], &[3]).unwrap();
        let bias = Tensor::from_vec(vec![0.0f32, 1.0, -1.0], &[3]).unwrap();
        let op = Op::LayerNorm { epsilon: 1e-5 };
        let y = eval_op(&op, &[x, scale, bias], &Bindings::new()).unwrap();
        // Row 0: mean 2, variance 2/3; row 1: mean 4/3, variance 38/9.
        let r0 = 1.0 / (2.0f64 / 3.0 + 1e-5).sqrt();
        let r1 = 1.0 / (38.0f64 / 9.0 + 1e-5).sqrt();
        let want = [
            -r0,
            1.0,
            0.5 * r0 - 1.0,
            (4.0 - 4.0 / 3.0) * r1,
            2.0 * (-1.0 - 4.0 / 3.0) * r1 + 1.0,
            0.5 * (1.0 - 4.0 / 3.0) * r1 - 1.0,
        ];
        for (g, w) in y[0].to_f64_vec().iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }

    #[test]
    fn rms_norm_matches_its_formula() {
        let x = Tensor::from_vec(vec![3.0f32, 4.0], &[1, 2]).unwrap();
        let scale = Tensor::from_vec(vec![2.0f32, 1.0], &[2]).unwrap();
        let y = eval_op(&Op::RmsNorm { epsilon: 0.0 }, &[x, scale], &Bindings::new()).unwrap();
        let r = 1.0 / 12.5f64.sqrt();
        let want = [6.0 * r, 4.0 * r];
        for (g, w) in y[0].to_f64_vec().iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    #[test]
    fn scalar_input_is_an_error() {
        let x = Tensor::scalar(1.0f32);
        let err = eval_op(
            &Op::RmsNorm { epsilon: 0.0 },
            &[x.clone(), x],
            &Bindings::new(),
        );
        assert!(err.unwrap_err().to_string().contains("rank at least 1"));
    }

    #[test]
    fn linear_applies_bias_activation_and_residual_in_order() {
        use crate::{Activation, Residual};
        let x = Tensor::from_vec(vec![1.0f32, 2.0, -3.0, 0.5], &[1, 2, 2]).unwrap();
        let w = Tensor::from_vec(vec![1.0f32, 0.0, -1.0, 2.0, 1.0, 1.0], &[2, 3]).unwrap();
        let bias = Tensor::from_vec(vec![0.5f32, -10.0, 0.0], &[3]).unwrap();
        let r = Tensor::from_vec(vec![2.0f32; 6], &[1, 2, 3]).unwrap();
        let e = Epilogue {
            bias: true,
            activation: Some(Activation::Relu),
            residual: Some(Residual::Mul),
        };
        let y = eval_op(&Op::Linear(e), &[x, w, bias, r], &Bindings::new()).unwrap();
        assert_eq!(y[0].shape(), &[1, 2, 3]);
        // x·w = [[5, 2, 1], [-2, 0.5, 3.5]]; + bias, relu, · 2.
        assert_eq!(y[0].to_f64_vec(), [11.0, 0.0, 2.0, 0.0, 0.0, 7.0]);
    }
}
