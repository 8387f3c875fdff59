//! `RotaryEmbedding` (opset 23) decomposed into core ops as the ONNX function body does it:
//! in `[batch, seq, heads, head]` layout, the first `rotary_embedding_dim` features are
//! rotated pairwise (halves, or interleaved even/odd) by the cos/sin caches.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use kiln_ir::{BinaryOp as B, Dim, Op, SliceAxis};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("RotaryEmbedding", 23, rotary);
}

/// `x[..., start..end:step]` on the last axis.
fn last_slice(cx: &mut Cx, suffix: &str, x: &Val, start: i64, end: &Dim, step: i64) -> R<Val> {
    let axis = cx.rank(x) - 1;
    let sa = SliceAxis {
        axis,
        start: Dim::from(start),
        end: end.clone(),
        step,
    };
    cx.emit1(suffix, Op::Slice { axes: vec![sa] }, &[x])
}

/// The cache rows for each position, as `[batch, seq, 1, rot/2]`.
fn cache(cx: &mut Cx, n: &N, i: usize, name: &str, half: i64) -> R<Val> {
    let c = n.input(i)?;
    let c = match n.opt(3) {
        Some(pos) => cx.emit1(&format!("{name}_gather"), Op::Gather { axis: 0 }, &[c, pos])?,
        None => c.clone(),
    };
    let c = if cx.ty(&c).shape.last().and_then(Dim::as_const) == Some(half) {
        c
    } else {
        last_slice(cx, &format!("{name}_slice"), &c, 0, &Dim::from(half), 1)?
    };
    let mut shape = cx.ty(&c).shape;
    if shape.len() != 3 {
        return Err(cx.err("cos/sin caches must give [batch, seq, rot/2] per position"));
    }
    shape.insert(2, Dim::from(1i64));
    cx.reshape(name, &c, shape)
}

fn rotary(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x0 = n.input(0)?;
    let in_shape = cx.ty(x0).shape;
    let x = match in_shape.len() {
        4 => cx.emit1(
            "x_t",
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[x0],
        )?,
        3 => {
            let h = n.req_int("num_heads")?;
            if h <= 0 {
                return Err(cx.err("3-D input needs a positive num_heads"));
            }
            let d = in_shape[2].div_floor(h);
            let shape = vec![in_shape[0].clone(), in_shape[1].clone(), Dim::from(h), d];
            cx.reshape("x_heads", x0, shape)?
        }
        r => return Err(cx.err(format!("input must be 3-D or 4-D, not rank {r}"))),
    };
    let head = cx.ty(&x).shape[3].clone();
    let head_c = head
        .as_const()
        .ok_or_else(|| cx.ctx.unsupported("a symbolic head size"))?;
    let rot = match n.int("rotary_embedding_dim", 0) {
        0 => head_c,
        r => r,
    };
    if rot <= 0 || rot > head_c || rot % 2 != 0 {
        return Err(cx.err(format!("rotary_embedding_dim {rot} for head size {head_c}")));
    }
    let half = rot / 2;
    let cos = cache(cx, n, 1, "cos", half)?;
    let sin = cache(cx, n, 2, "sin", half)?;
    let y = rotate(cx, "", &x, [&cos, &sin], rot, n.int("interleaved", 0) != 0)?;
    let y = if in_shape.len() == 4 {
        cx.emit1(
            "",
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[&y],
        )?
    } else {
        cx.reshape("", &y, in_shape)?
    };
    Ok(vec![y])
}

/// `x[b, s, h, d]` with its first `rot` features rotated pairwise (halves, or interleaved
/// even/odd) by `cos` and `sin` (`[…, s, 1, rot/2]`, broadcast over the heads); the nodes'
/// suffixes start with `prefix`.
pub(super) fn rotate(
    cx: &mut Cx,
    prefix: &str,
    x: &Val,
    [cos, sin]: [&Val; 2],
    rot: i64,
    interleaved: bool,
) -> R<Val> {
    let name = |s: &str| format!("{prefix}{s}");
    let head = cx.ty(x).shape[3].clone();
    let head_c = head
        .as_const()
        .ok_or_else(|| cx.ctx.unsupported("a symbolic head size"))?;
    let half = rot / 2;
    let rot_d = Dim::from(rot);
    let to_rotate = if rot == head_c {
        x.clone()
    } else {
        last_slice(cx, &name("x_rot"), x, 0, &rot_d, 1)?
    };
    let (x1, x2) = if interleaved {
        (
            last_slice(cx, &name("x1"), &to_rotate, 0, &rot_d, 2)?,
            last_slice(cx, &name("x2"), &to_rotate, 1, &rot_d, 2)?,
        )
    } else {
        (
            last_slice(cx, &name("x1"), &to_rotate, 0, &Dim::from(half), 1)?,
            last_slice(cx, &name("x2"), &to_rotate, half, &rot_d, 1)?,
        )
    };
    let cx1 = cx.binary(&name("cos_x1"), B::Mul, cos, &x1)?;
    let sx2 = cx.binary(&name("sin_x2"), B::Mul, sin, &x2)?;
    let real = cx.binary(&name("real"), B::Sub, &cx1, &sx2)?;
    let sx1 = cx.binary(&name("sin_x1"), B::Mul, sin, &x1)?;
    let cx2 = cx.binary(&name("cos_x2"), B::Mul, cos, &x2)?;
    let imag = cx.binary(&name("imag"), B::Add, &sx1, &cx2)?;
    let rotated = if interleaved {
        let mut s5 = cx.ty(&real).shape;
        s5.push(Dim::from(1i64));
        let r5 = cx.reshape(&name("real_pair"), &real, s5.clone())?;
        let i5 = cx.reshape(&name("imag_pair"), &imag, s5)?;
        let pairs = cx.emit1(&name("pairs"), Op::Concat { axis: 4 }, &[&r5, &i5])?;
        let shape = cx.ty(&to_rotate).shape;
        cx.reshape(&name("rotated"), &pairs, shape)?
    } else {
        cx.emit1(&name("rotated"), Op::Concat { axis: 3 }, &[&real, &imag])?
    };
    if rot == head_c {
        return Ok(rotated);
    }
    let rest = last_slice(cx, &name("x_pass"), x, rot, &head, 1)?;
    cx.emit1(&name("concat"), Op::Concat { axis: 3 }, &[&rotated, &rest])
}
