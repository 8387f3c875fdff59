//! Elementwise math, comparison, logic and bitwise ops, casts, and the variadic
//! `Sum`/`Mean`/`Min`/`Max`.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use crate::tensor::dtype_of;
use kiln_ir::{BinaryOp as B, DType, Op, UnaryOp as U};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    for (name, since, op) in [
        ("Abs", 6, U::Abs),
        ("Neg", 6, U::Neg),
        ("Floor", 6, U::Floor),
        ("Ceil", 6, U::Ceil),
        ("Exp", 6, U::Exp),
        ("Log", 6, U::Log),
        ("Sqrt", 6, U::Sqrt),
        ("Reciprocal", 6, U::Reciprocal),
        ("Relu", 6, U::Relu),
        ("Sigmoid", 6, U::Sigmoid),
        ("Tanh", 6, U::Tanh),
        ("Sin", 7, U::Sin),
        ("Cos", 7, U::Cos),
        ("Tan", 7, U::Tan),
        ("Asin", 7, U::Asin),
        ("Acos", 7, U::Acos),
        ("Atan", 7, U::Atan),
        ("Sinh", 9, U::Sinh),
        ("Cosh", 9, U::Cosh),
        ("Asinh", 9, U::Asinh),
        ("Acosh", 9, U::Acosh),
        ("Atanh", 9, U::Atanh),
        ("Erf", 9, U::Erf),
        ("Sign", 9, U::Sign),
        ("IsNaN", 9, U::IsNan),
        ("Round", 11, U::Round),
        ("Not", 1, U::Not),
        ("BitwiseNot", 18, U::BitNot),
    ] {
        reg.unary(name, since, op);
    }
    for (name, since, op) in [
        ("Add", 7, B::Add),
        ("Sub", 7, B::Sub),
        ("Mul", 7, B::Mul),
        ("Div", 7, B::Div),
        ("Equal", 7, B::Equal),
        ("Less", 7, B::Less),
        ("Greater", 7, B::Greater),
        ("LessOrEqual", 12, B::LessOrEqual),
        ("GreaterOrEqual", 12, B::GreaterOrEqual),
        ("And", 7, B::And),
        ("Or", 7, B::Or),
        ("Xor", 7, B::Xor),
        ("BitwiseAnd", 18, B::BitAnd),
        ("BitwiseOr", 18, B::BitOr),
        ("BitwiseXor", 18, B::BitXor),
    ] {
        reg.binary(name, since, op);
    }
    reg.add("Pow", 7, pow);
    reg.add("Mod", 10, modulo);
    reg.add("BitShift", 11, bit_shift);
    reg.add("IsInf", 10, is_inf);
    reg.add("Sum", 8, |cx, n| variadic(cx, n, B::Add));
    reg.add("Min", 8, |cx, n| variadic(cx, n, B::Min));
    reg.add("Max", 8, |cx, n| variadic(cx, n, B::Max));
    reg.add("Mean", 8, mean);
    reg.add("Where", 9, |cx, n| {
        Ok(vec![cx.emit1(
            "",
            Op::Where,
            &[n.input(0)?, n.input(1)?, n.input(2)?],
        )?])
    });
    reg.add("Cast", 6, cast);
    reg.add("CastLike", 15, |cx, n| {
        let to = cx.dtype(n.input(1)?);
        Ok(vec![cx.cast("", n.input(0)?, to)?])
    });
    reg.add("Identity", 1, |_, n| Ok(vec![n.input(0)?.clone()]));
    reg.add("Dropout", 7, dropout);
}

fn pow(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let e = cx.cast("exponent", n.input(1)?, cx.dtype(x))?;
    Ok(vec![cx.binary("", B::Pow, x, &e)?])
}

fn modulo(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let op = if n.int("fmod", 0) != 0 {
        B::Fmod
    } else {
        B::Mod
    };
    Ok(vec![cx.binary("", op, n.input(0)?, n.input(1)?)?])
}

fn bit_shift(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let op = match n.string("direction", "").as_str() {
        "LEFT" => B::ShiftLeft,
        "RIGHT" => B::ShiftRight,
        d => return Err(cx.err(format!("direction `{d}` is neither LEFT nor RIGHT"))),
    };
    Ok(vec![cx.binary("", op, n.input(0)?, n.input(1)?)?])
}

fn is_inf(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let op = match (
        n.int("detect_positive", 1) != 0,
        n.int("detect_negative", 1) != 0,
    ) {
        (true, true) => U::IsInf,
        (true, false) => U::IsPosInf,
        (false, true) => U::IsNegInf,
        (false, false) => {
            let x = n.input(0)?;
            let f = cx.scalar(DType::Bool, 0.0);
            let shape = cx.ty(x).shape;
            return Ok(vec![cx.emit1("", Op::Expand { shape }, &[&f])?]);
        }
    };
    Ok(vec![cx.unary("", op, n.input(0)?)?])
}

fn variadic(cx: &mut Cx, n: &N, op: B) -> R<Vec<Val>> {
    let xs = n.all_inputs();
    let (first, rest) = xs
        .split_first()
        .ok_or_else(|| cx.err("needs at least one input"))?;
    let mut acc = (*first).clone();
    for (i, x) in rest.iter().enumerate() {
        let suffix = if i + 2 == xs.len() {
            String::new()
        } else {
            format!("{}{i}", op.name())
        };
        acc = cx.binary(&suffix, op, &acc, x)?;
    }
    Ok(vec![acc])
}

fn mean(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let sum = variadic(cx, n, B::Add)?.remove(0);
    let count = cx.scalar(cx.dtype(&sum), n.all_inputs().len() as f64);
    Ok(vec![cx.binary("mean", B::Div, &sum, &count)?])
}

fn cast(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let to = dtype_of(n.req_int("to")? as i32).map_err(|m| n.ctx.unsupported(m))?;
    Ok(vec![cx.cast("", n.input(0)?, to)?])
}

fn dropout(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let x = n.input(0)?.clone();
    if let Some(t) = n.opt(2) {
        let training = cx.known_tensor(t, "training_mode")?;
        if training.to_i64_vec().first().is_some_and(|&v| v != 0) {
            return Err(n.ctx.unsupported("training_mode = true"));
        }
    }
    if !n.wants_output(1) {
        return Ok(vec![x]);
    }
    let ones = cx.scalar(DType::Bool, 1.0);
    let shape = cx.ty(&x).shape;
    let mask = cx.emit1("mask", Op::Expand { shape }, &[&ones])?;
    Ok(vec![x, mask])
}
