//! Reductions (`ReduceSum` … `ReduceLogSumExp`) and `ArgMax`/`ArgMin`.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::ops::shape::axes_operand;
use crate::registry::Registry;
use kiln_ir::{ArgKind, Op, ReduceKind as K};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    for (name, kind) in [
        ("ReduceSum", K::Sum),
        ("ReduceMean", K::Mean),
        ("ReduceMax", K::Max),
        ("ReduceMin", K::Min),
        ("ReduceProd", K::Prod),
        ("ReduceL1", K::L1),
        ("ReduceL2", K::L2),
        ("ReduceLogSum", K::LogSum),
        ("ReduceLogSumExp", K::LogSumExp),
        ("ReduceSumSquare", K::SumSquare),
    ] {
        reg.add(name, 1, move |cx, n| reduce(cx, n, kind));
    }
    reg.add("ArgMax", 1, |cx, n| arg(cx, n, ArgKind::Max));
    reg.add("ArgMin", 1, |cx, n| arg(cx, n, ArgKind::Min));
}

fn reduce(cx: &mut Cx, n: &N, kind: K) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let rank = cx.rank(x);
    let axes = axes_operand(cx, n, 1)?.unwrap_or_default();
    let mut axes: Vec<usize> = if axes.is_empty() {
        if n.int("noop_with_empty_axes", 0) != 0 {
            return Ok(vec![x.clone()]);
        }
        (0..rank).collect()
    } else {
        axes.iter()
            .map(|&a| n.ctx.axis(a, rank))
            .collect::<R<_>>()?
    };
    axes.sort_unstable();
    axes.dedup();
    let keep_dims = n.int("keepdims", 1) != 0;
    Ok(vec![cx.emit1(
        "",
        Op::Reduce {
            kind,
            axes,
            keep_dims,
        },
        &[x],
    )?])
}

fn arg(cx: &mut Cx, n: &N, kind: ArgKind) -> R<Vec<Val>> {
    let x = n.input(0)?;
    let axis = n.ctx.axis(n.int("axis", 0), cx.rank(x))?;
    let op = Op::ArgReduce {
        kind,
        axis,
        keep_dims: n.int("keepdims", 1) != 0,
        select_last: n.int("select_last_index", 0) != 0,
    };
    Ok(vec![cx.emit1("", op, &[x])?])
}
