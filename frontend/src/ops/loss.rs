//! Losses: `NegativeLogLikelihoodLoss` and `SoftmaxCrossEntropyLoss` (log-softmax over the
//! class axis, then the same NLL), decomposed into gathers, masks and reductions.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use kiln_ir::{BinaryOp as B, DType, Dim, Op, ReduceKind, UnaryOp as U};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("NegativeLogLikelihoodLoss", 12, |cx, n| {
        Ok(vec![nll(cx, n, n.input(0)?)?])
    });
    reg.add("SoftmaxCrossEntropyLoss", 12, |cx, n| {
        let scores = n.input(0)?;
        if cx.rank(scores) < 2 {
            return Err(cx.err("scores must have rank >= 2"));
        }
        let lp = cx.emit1("log_prob", Op::Softmax { axis: 1, log: true }, &[scores])?;
        Ok(vec![nll(cx, n, &lp)?, lp])
    });
}

fn reduce(cx: &mut Cx, suffix: &str, kind: ReduceKind, x: &Val) -> R<Val> {
    let axes = (0..cx.rank(x)).collect();
    cx.emit1(
        suffix,
        Op::Reduce {
            kind,
            axes,
            keep_dims: false,
        },
        &[x],
    )
}

/// `-input[n, target[n, …], …] · weight[target]`, zero where `target == ignore_index`,
/// then reduced (`none`, `sum`, or `mean` = sum over the summed weights).
fn nll(cx: &mut Cx, n: &N, input: &Val) -> R<Val> {
    let target = cx.cast("target_i64", n.input(1)?, DType::I64)?;
    let dtype = cx.dtype(input);
    let t_shape = cx.ty(&target).shape;
    if cx.rank(input) < 2 {
        return Err(cx.err("input must have a batch and a class axis (rank 2 or more)"));
    }
    if cx.rank(input) != t_shape.len() + 1 {
        return Err(cx.err("target must have the input's shape without the class axis"));
    }
    let ignore = match n.attr("ignore_index").and_then(|a| a.i) {
        Some(ii) => {
            let iv = cx.scalar(DType::I64, ii as f64);
            Some(cx.binary("ignored", B::Equal, &target, &iv)?)
        }
        None => None,
    };
    let safe = match &ignore {
        Some(ig) => {
            let zero = cx.scalar(DType::I64, 0.0);
            cx.emit1("safe_target", Op::Where, &[ig, &zero, &target])?
        }
        None => target.clone(),
    };
    let mut idx_shape = t_shape.clone();
    idx_shape.insert(1, Dim::from(1i64));
    let idx = cx.reshape("index", &safe, idx_shape)?;
    let picked = cx.emit1("pick", Op::GatherElements { axis: 1 }, &[input, &idx])?;
    let picked = cx.reshape("picked", &picked, t_shape)?;
    let neg = cx.unary("neg", U::Neg, &picked)?;
    let weight = match n.opt(2) {
        Some(w) => Some(cx.emit1("weight", Op::Gather { axis: 0 }, &[w, &safe])?),
        None => None,
    };
    let weight = match (&ignore, weight) {
        (Some(ig), w) => {
            let zero = cx.scalar(dtype, 0.0);
            let one = cx.scalar(dtype, 1.0);
            let w = w.unwrap_or(one);
            Some(cx.emit1("weight_masked", Op::Where, &[ig, &zero, &w])?)
        }
        (None, w) => w,
    };
    let reduction = n.string("reduction", "mean");
    let loss_suffix = if reduction == "none" { "" } else { "loss" };
    let loss = match &weight {
        Some(w) => cx.binary(loss_suffix, B::Mul, &neg, w)?,
        None => neg,
    };
    match (reduction.as_str(), &weight) {
        ("none", _) => Ok(loss),
        ("sum", _) => reduce(cx, "", ReduceKind::Sum, &loss),
        ("mean", None) => reduce(cx, "", ReduceKind::Mean, &loss),
        ("mean", Some(w)) => {
            let total = reduce(cx, "sum", ReduceKind::Sum, &loss)?;
            let w_sum = reduce(cx, "weight_sum", ReduceKind::Sum, w)?;
            cx.binary("", B::Div, &total, &w_sum)
        }
        (r, _) => Err(cx.err(format!("reduction `{r}` is not none, sum or mean"))),
    }
}
