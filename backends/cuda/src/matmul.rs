//! A matrix product as a reduction: `c[.., i, j] = epilogue(Σ_k a[.., i, k] · b[.., k, j])`
//! written as the kernel layer's own [`Reduce`], so the warp-per-output reduction code
//! emits it, the epilogue (bias, activation, residual, in that order) as its post map.
//!
//! This is the correct baseline every shape can run, not the fast path: each output is a
//! warp's dot product over `k`. The tensor-core GEMM (`mma.sync`) will replace it for the
//! shapes that matter and be checked against it.

use crate::EmitError;
use kiln_ir::{BinaryOp, DType, Dim};
use kiln_kernel::kernel::{Access, Combine, Expr, ExprNode, MatMul, MatOperand, Program, Reduce};

/// The strides of `op` over `batch ++ [m, n] ++ [k]`, with `row` and `col` the positions
/// (0 = m, 1 = n, 2 = k) its rows and columns walk.
fn walk(op: &MatOperand, row: usize, col: usize) -> Access {
    let mut tail = [Dim::from(0i64), Dim::from(0i64), Dim::from(0i64)];
    tail[row] = op.row_stride.clone();
    tail[col] = op.col_stride.clone();
    Access {
        buf: op.buf,
        offset: op.offset.clone(),
        strides: op.batch_strides.iter().cloned().chain(tail).collect(),
    }
}

/// `m` as a reduction over its depth.
pub(crate) fn as_reduce(m: &MatMul, program: &Program) -> Result<Reduce, EmitError> {
    check_f32(m, program)?;
    let mut value = Expr::default();
    let a = value.push(ExprNode::Load(walk(&m.a, 0, 2)), DType::F32);
    let b = value.push(ExprNode::Load(walk(&m.b, 2, 1)), DType::F32);
    value.push(ExprNode::Binary(BinaryOp::Mul, a, b), DType::F32);
    let (out, post) = epilogue(m);
    let shape = (m.batch.iter().cloned()).chain([m.m.clone(), m.n.clone()]);
    Ok(Reduce {
        shape: shape.collect(),
        reduced: vec![m.k.clone()],
        out,
        value,
        combine: Combine::Sum,
        post,
    })
}

/// Whether `m` is a product of halves (f16 or bf16 throughout), which the tensor-core
/// GEMM computes whatever the precision (their products are exact in f32); an error for
/// mixed or other dtypes, and for halves with an epilogue.
pub(crate) fn half(m: &MatMul, program: &Program) -> Result<bool, EmitError> {
    let d = program.buffers[m.a.buf].dtype;
    if !matches!(d, DType::F16 | DType::BF16) {
        return Ok(false);
    }
    for buf in [m.b.buf, m.c.buf] {
        let other = program.buffers[buf].dtype;
        if other != d {
            return Err(EmitError::Unsupported(format!("matmul of {d} and {other}")));
        }
    }
    if !m.epilogue.is_empty() {
        return Err(EmitError::Unsupported(format!("matmul epilogue on {d}")));
    }
    Ok(true)
}

/// Rejects a tensor-core product on anything but f32, or halves throughout.
pub(crate) fn check_gemm(m: &MatMul, program: &Program) -> Result<(), EmitError> {
    if half(m, program)? {
        return Ok(());
    }
    check_f32(m, program)
}

/// Rejects a product on anything but f32 buffers.
pub(crate) fn check_f32(m: &MatMul, program: &Program) -> Result<(), EmitError> {
    for buf in [m.a.buf, m.b.buf, m.c.buf] {
        let d = program.buffers[buf].dtype;
        if d != DType::F32 {
            return Err(EmitError::Unsupported(format!("matmul on {d}")));
        }
    }
    Ok(())
}

/// Where each output of `m` goes and the map from its sum to the stored value (the
/// epilogue as an [`Expr`] over `batch ++ [i, j]`, the sum as [`ExprNode::Acc`]).
pub(crate) fn epilogue(m: &MatMul) -> (Access, Expr) {
    let batch = m.batch.len();
    let zero = || Dim::from(0i64);
    let out = Access {
        buf: m.c.buf,
        offset: m.c.offset.clone(),
        strides: (m.c.batch_strides.iter().cloned())
            .chain([m.c.row_stride.clone(), m.c.col_stride.clone()])
            .collect(),
    };
    let mut post = Expr::default();
    let mut y = post.push(ExprNode::Acc, DType::F32);
    if let Some(bias) = m.epilogue.bias {
        let strides = vec![zero(); batch]
            .into_iter()
            .chain([zero(), Dim::from(1i64)]);
        let access = Access {
            buf: bias,
            offset: zero(),
            strides: strides.collect(),
        };
        let v = post.push(ExprNode::Load(access), DType::F32);
        y = post.push(ExprNode::Binary(BinaryOp::Add, y, v), DType::F32);
    }
    if let Some(act) = m.epilogue.activation {
        y = post.push(ExprNode::Unary(act.unary(), y), DType::F32);
    }
    if let Some((residual, buf)) = m.epilogue.residual {
        let r = post.push(ExprNode::Load(Access { buf, ..out.clone() }), DType::F32);
        post.push(ExprNode::Binary(residual.binary(), y, r), DType::F32);
    }
    (out, post)
}
