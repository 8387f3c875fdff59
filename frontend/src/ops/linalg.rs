//! Matrix products: `MatMul` (rank-1 operands promoted and squeezed back) and `Gemm`
//! (transposes + matmul + scale + bias).

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use kiln_ir::{BinaryOp, Dim, Op};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("MatMul", 1, |cx, n| {
        Ok(vec![matmul(cx, "", n.input(0)?, n.input(1)?)?])
    });
    reg.add("Gemm", 7, gemm);
}

/// `a @ b` with numpy semantics for rank-1 operands.
pub(crate) fn matmul(cx: &mut Cx, suffix: &str, a: &Val, b: &Val) -> R<Val> {
    let (ra, rb) = (cx.rank(a), cx.rank(b));
    if ra == 0 || rb == 0 {
        return Err(cx.err("matmul operands must have rank >= 1"));
    }
    let one = Dim::from(1i64);
    let a2 = if ra == 1 {
        cx.reshape("lhs", a, vec![one.clone(), cx.ty(a).shape[0].clone()])?
    } else {
        a.clone()
    };
    let b2 = if rb == 1 {
        cx.reshape("rhs", b, vec![cx.ty(b).shape[0].clone(), one])?
    } else {
        b.clone()
    };
    if ra > 1 && rb > 1 {
        return cx.emit1(suffix, Op::MatMul, &[&a2, &b2]);
    }
    let m = cx.emit1("matmul", Op::MatMul, &[&a2, &b2])?;
    let mut shape = cx.ty(&m).shape;
    let r = shape.len();
    if rb == 1 {
        shape.remove(r - 1);
    }
    if ra == 1 {
        shape.remove(r - 2);
    }
    cx.reshape(suffix, &m, shape)
}

fn transpose_last2(cx: &mut Cx, suffix: &str, x: &Val) -> R<Val> {
    if cx.rank(x) != 2 {
        return Err(cx.err("Gemm operands must have rank 2"));
    }
    cx.emit1(suffix, Op::Transpose { perm: vec![1, 0] }, &[x])
}

fn gemm(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let mut a = n.input(0)?.clone();
    let mut b = n.input(1)?.clone();
    if n.int("transA", 0) != 0 {
        a = transpose_last2(cx, "transpose_a", &a)?;
    }
    if n.int("transB", 0) != 0 {
        b = transpose_last2(cx, "transpose_b", &b)?;
    }
    let (alpha, beta) = (n.float("alpha", 1.0) as f64, n.float("beta", 1.0) as f64);
    let dtype = cx.dtype(&a);
    let bias = n.opt(2).filter(|_| beta != 0.0);
    let last = |has_more: bool| if has_more { "matmul" } else { "" };
    let mut y = cx.emit1(last(alpha != 1.0 || bias.is_some()), Op::MatMul, &[&a, &b])?;
    if alpha != 1.0 {
        let s = cx.scalar(dtype, alpha);
        y = cx.binary(
            if bias.is_some() { "alpha" } else { "" },
            BinaryOp::Mul,
            &y,
            &s,
        )?;
    }
    if let Some(c) = bias {
        let c = if beta != 1.0 {
            let s = cx.scalar(dtype, beta);
            cx.binary("beta", BinaryOp::Mul, c, &s)?
        } else {
            c.clone()
        };
        y = cx.binary("", BinaryOp::Add, &y, &c)?;
    }
    Ok(vec![y])
}
