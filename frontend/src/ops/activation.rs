//! Activations and softmax-like ops, decomposed into core elementwise ops.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::ops::shape::product;
use crate::registry::Registry;
use kiln_ir::{ArgKind, BinaryOp as B, DType, Op, UnaryOp as U};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add_range("Softmax", 1, Some(12), |cx, n| {
        softmax_flat(cx, n, Kind::Soft)
    });
    reg.add("Softmax", 13, |cx, n| softmax(cx, n, Kind::Soft));
    reg.add_range("LogSoftmax", 1, Some(12), |cx, n| {
        softmax_flat(cx, n, Kind::Log)
    });
    reg.add("LogSoftmax", 13, |cx, n| softmax(cx, n, Kind::Log));
    reg.add_range("Hardmax", 1, Some(12), |cx, n| {
        softmax_flat(cx, n, Kind::Hard)
    });
    reg.add("Hardmax", 13, |cx, n| softmax(cx, n, Kind::Hard));
    reg.add("Elu", 6, |cx, n| elu(cx, n, n.float("alpha", 1.0), 1.0));
    reg.add("Selu", 6, |cx, n| {
        elu(
            cx,
            n,
            n.float("alpha", 1.673_263_2),
            n.float("gamma", 1.050_701),
        )
    });
    reg.add("LeakyRelu", 6, leaky_relu);
    reg.add("HardSigmoid", 6, |cx, n| {
        let y = hard_sigmoid(
            cx,
            n.input(0)?,
            n.float("alpha", 0.2),
            n.float("beta", 0.5),
            "",
        )?;
        Ok(vec![y])
    });
    reg.add("HardSwish", 14, |cx, n| {
        let x = n.input(0)?;
        let h = hard_sigmoid(cx, x, 1.0 / 6.0, 0.5, "hard_sigmoid")?;
        Ok(vec![cx.binary("", B::Mul, x, &h)?])
    });
    reg.add("Softplus", 1, |cx, n| {
        Ok(vec![softplus(cx, n.input(0)?, "")?])
    });
    reg.add("Softsign", 1, softsign);
    reg.add("Mish", 18, |cx, n| {
        let x = n.input(0)?;
        let sp = softplus(cx, x, "softplus")?;
        let t = cx.unary("tanh", U::Tanh, &sp)?;
        Ok(vec![cx.binary("", B::Mul, x, &t)?])
    });
    reg.add("Celu", 12, celu);
    reg.add("ThresholdedRelu", 10, thresholded_relu);
    reg.add("Shrink", 9, shrink);
    reg.add("PRelu", 7, |cx, n| {
        let x = n.input(0)?;
        let zero = cx.scalar(cx.dtype(x), 0.0);
        let neg = cx.binary("is_neg", B::Less, x, &zero)?;
        let scaled = cx.binary("scale", B::Mul, x, n.input(1)?)?;
        Ok(vec![cx.emit1("", Op::Where, &[&neg, &scaled, x])?])
    });
    reg.add("Gelu", 20, gelu);
    reg.add_range("Clip", 6, Some(10), clip);
    reg.add("Clip", 11, clip);
    reg.add("Swish", 24, |cx, n| {
        let x = n.input(0)?;
        let a = cx.scalar(cx.dtype(x), n.float("alpha", 1.0) as f64);
        let ax = cx.binary("alpha", B::Mul, x, &a)?;
        let s = cx.unary("sigmoid", U::Sigmoid, &ax)?;
        Ok(vec![cx.binary("", B::Mul, x, &s)?])
    });
}

#[derive(Clone, Copy)]
enum Kind {
    Soft,
    Log,
    Hard,
}

/// Softmax, log-softmax or hardmax along `axis`.
fn along(cx: &mut Cx, suffix: &str, x: &Val, axis: usize, kind: Kind) -> R<Val> {
    match kind {
        Kind::Soft => cx.emit1(suffix, Op::Softmax { axis, log: false }, &[x]),
        Kind::Log => cx.emit1(suffix, Op::Softmax { axis, log: true }, &[x]),
        Kind::Hard => {
            let depth = cx.ty(x).shape[axis]
                .as_const()
                .ok_or_else(|| cx.ctx.unsupported("hardmax over a symbolic axis"))?;
            let op = Op::ArgReduce {
                kind: ArgKind::Max,
                axis,
                keep_dims: false,
                select_last: false,
            };
            let idx = cx.emit1("argmax", op, &[x])?;
            let dtype = cx.dtype(x);
            let values = kiln_ir::Tensor::from_vec(vec![0.0f64, 1.0], &[2])
                .expect("2 elements")
                .cast(dtype);
            cx.emit1(
                suffix,
                Op::OneHot {
                    axis,
                    depth: depth as usize,
                },
                &[&idx, &Val::tensor(values)],
            )
        }
    }
}

fn softmax(cx: &mut Cx, n: &N, kind: Kind) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let axis = n.ctx.axis(n.int("axis", -1), cx.rank(x))?;
    Ok(vec![along(cx, "", x, axis, kind)?])
}

/// Opset < 13: the input is flattened to 2-D at `axis`, normalized over the second dim.
fn softmax_flat(cx: &mut Cx, n: &N, kind: Kind) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let shape = cx.ty(x).shape;
    let axis = n.ctx.axis(n.int("axis", 1), shape.len())?;
    if axis + 1 == shape.len() {
        return Ok(vec![along(cx, "", x, axis, kind)?]);
    }
    let flat = cx.reshape(
        "flatten",
        x,
        vec![product(&shape[..axis]), product(&shape[axis..])],
    )?;
    let y = along(cx, "softmax", &flat, 1, kind)?;
    Ok(vec![cx.reshape("", &y, shape)?])
}

/// `gamma · (x > 0 ? x : alpha · (eˣ - 1))`.
fn elu(cx: &mut Cx, n: &N, alpha: f32, gamma: f32) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let t = cx.dtype(x);
    let (zero, one, a) = (
        cx.scalar(t, 0.0),
        cx.scalar(t, 1.0),
        cx.scalar(t, alpha as f64),
    );
    let pos = cx.binary("is_pos", B::Greater, x, &zero)?;
    let e = cx.unary("exp", U::Exp, x)?;
    let em1 = cx.binary("expm1", B::Sub, &e, &one)?;
    let neg = cx.binary("alpha", B::Mul, &em1, &a)?;
    if gamma == 1.0 {
        return Ok(vec![cx.emit1("", Op::Where, &[&pos, x, &neg])?]);
    }
    let w = cx.emit1("where", Op::Where, &[&pos, x, &neg])?;
    let g = cx.scalar(t, gamma as f64);
    Ok(vec![cx.binary("", B::Mul, &w, &g)?])
}

fn leaky_relu(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let t = cx.dtype(x);
    let (zero, a) = (
        cx.scalar(t, 0.0),
        cx.scalar(t, n.float("alpha", 0.01) as f64),
    );
    let neg = cx.binary("is_neg", B::Less, x, &zero)?;
    let scaled = cx.binary("alpha", B::Mul, x, &a)?;
    Ok(vec![cx.emit1("", Op::Where, &[&neg, &scaled, x])?])
}

/// `max(0, min(1, alpha · x + beta))`.
fn hard_sigmoid(cx: &mut Cx, x: &Val, alpha: f32, beta: f32, suffix: &str) -> R<Val> {
    let t = cx.dtype(x);
    let (a, b) = (cx.scalar(t, alpha as f64), cx.scalar(t, beta as f64));
    let (zero, one) = (cx.scalar(t, 0.0), cx.scalar(t, 1.0));
    let ax = cx.binary("alpha", B::Mul, x, &a)?;
    let axb = cx.binary("beta", B::Add, &ax, &b)?;
    let lo = cx.binary("min", B::Min, &axb, &one)?;
    cx.binary(suffix, B::Max, &lo, &zero)
}

/// `log(eˣ + 1)`.
fn softplus(cx: &mut Cx, x: &Val, suffix: &str) -> R<Val> {
    let one = cx.scalar(cx.dtype(x), 1.0);
    let e = cx.unary("exp", U::Exp, x)?;
    let e1 = cx.binary("add1", B::Add, &e, &one)?;
    cx.unary(suffix, U::Log, &e1)
}

fn softsign(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let one = cx.scalar(cx.dtype(x), 1.0);
    let a = cx.unary("abs", U::Abs, x)?;
    let d = cx.binary("add1", B::Add, &a, &one)?;
    Ok(vec![cx.binary("", B::Div, x, &d)?])
}

/// `max(0, x) + min(0, alpha · (e^(x/alpha) - 1))`.
/// Celu, computed in f32 for half-precision inputs and rounded once, as ONNX does.
fn celu(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let t = cx.dtype(x);
    if matches!(t, DType::F16 | DType::BF16) {
        let wide = cx.cast("widen", x, DType::F32)?;
        let y = celu_in(cx, n, &wide)?;
        return Ok(vec![cx.cast("narrow", &y, t)?]);
    }
    Ok(vec![celu_in(cx, n, x)?])
}

fn celu_in(cx: &mut Cx, n: &N, x: &Val) -> R<Val> {
    let t = cx.dtype(x);
    let (zero, one, a) = (
        cx.scalar(t, 0.0),
        cx.scalar(t, 1.0),
        cx.scalar(t, n.float("alpha", 1.0) as f64),
    );
    let pos = cx.binary("relu", B::Max, x, &zero)?;
    let xa = cx.binary("div_alpha", B::Div, x, &a)?;
    let e = cx.unary("exp", U::Exp, &xa)?;
    let em1 = cx.binary("expm1", B::Sub, &e, &one)?;
    let s = cx.binary("alpha", B::Mul, &em1, &a)?;
    let neg = cx.binary("min", B::Min, &s, &zero)?;
    cx.binary("", B::Add, &pos, &neg)
}

fn thresholded_relu(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let t = cx.dtype(x);
    let (zero, a) = (
        cx.scalar(t, 0.0),
        cx.scalar(t, n.float("alpha", 1.0) as f64),
    );
    let above = cx.binary("above", B::Greater, x, &a)?;
    Ok(vec![cx.emit1("", Op::Where, &[&above, x, &zero])?])
}

fn shrink(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let t = cx.dtype(x);
    let (lambd, bias) = (n.float("lambd", 0.5) as f64, n.float("bias", 0.0) as f64);
    let (zero, l, nl, b) = (
        cx.scalar(t, 0.0),
        cx.scalar(t, lambd),
        cx.scalar(t, -lambd),
        cx.scalar(t, bias),
    );
    let below = cx.binary("below", B::Less, x, &nl)?;
    let above = cx.binary("above", B::Greater, x, &l)?;
    let plus = cx.binary("plus_bias", B::Add, x, &b)?;
    let minus = cx.binary("minus_bias", B::Sub, x, &b)?;
    let inner = cx.emit1("where_above", Op::Where, &[&above, &minus, &zero])?;
    Ok(vec![cx.emit1("", Op::Where, &[&below, &plus, &inner])?])
}

/// `0.5 · x · (1 + erf(x / √2))`, or the tanh approximation.
fn gelu(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let t = cx.dtype(x);
    let (half, one) = (cx.scalar(t, 0.5), cx.scalar(t, 1.0));
    let inner = if n.string("approximate", "none") == "tanh" {
        let (c, k) = (
            cx.scalar(t, (2.0 / std::f64::consts::PI).sqrt()),
            cx.scalar(t, 0.044715),
        );
        let x2 = cx.binary("sq", B::Mul, x, x)?;
        let x3 = cx.binary("cube", B::Mul, &x2, x)?;
        let kx3 = cx.binary("k", B::Mul, &x3, &k)?;
        let s = cx.binary("inner", B::Add, x, &kx3)?;
        let cs = cx.binary("scale", B::Mul, &s, &c)?;
        cx.unary("tanh", U::Tanh, &cs)?
    } else {
        let r = cx.scalar(t, std::f64::consts::FRAC_1_SQRT_2);
        let xs = cx.binary("scale", B::Mul, x, &r)?;
        cx.unary("erf", U::Erf, &xs)?
    };
    let p = cx.binary("add1", B::Add, &inner, &one)?;
    let hx = cx.binary("half", B::Mul, x, &half)?;
    Ok(vec![cx.binary("", B::Mul, &hx, &p)?])
}

fn clip(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let t = cx.dtype(x);
    let attr = |name: &str| {
        n.attr(name)
            .and_then(|a| a.f)
            .map(|v| cx.scalar(t, v as f64))
    };
    let lo = n.opt(1).cloned().or_else(|| attr("min"));
    let hi = n.opt(2).cloned().or_else(|| attr("max"));
    let mut y = x.clone();
    if let Some(lo) = lo {
        y = cx.binary(if hi.is_some() { "max" } else { "" }, B::Max, &y, &lo)?;
    }
    if let Some(hi) = hi {
        y = cx.binary("", B::Min, &y, &hi)?;
    }
    Ok(vec![y])
}
