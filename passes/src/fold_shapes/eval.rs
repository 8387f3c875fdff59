//! Evaluation of integer shape arithmetic over symbolic dims.
//!
//! This duplicates part of `kiln_ir::shape_eval` (written by the frontend at the same
//! time); once that lands, this module should call it instead.

use kiln_ir::{BinaryOp, DType, Dim, Op, SliceAxis, Tensor, TensorType};

/// The known content of a value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Content {
    /// A concrete tensor.
    Tensor(Tensor),
    /// An `i64` vector (or scalar) of dims.
    Dims {
        /// The elements.
        dims: Vec<Dim>,
        /// Rank 0 (then `dims` has one element).
        scalar: bool,
    },
}

/// One operand: its content if known, and its type.
pub(crate) struct Arg<'a> {
    /// The content, if known.
    pub content: Option<&'a Content>,
    /// The type.
    pub ty: &'a TensorType,
}

impl Content {
    /// Dims content, canonical: a tensor when every dim is constant.
    pub(crate) fn dims(dims: Vec<Dim>, scalar: bool) -> Content {
        match dims.iter().map(Dim::as_const).collect::<Option<Vec<i64>>>() {
            Some(v) if scalar => Content::Tensor(Tensor::scalar(v[0])),
            Some(v) => {
                let n = v.len();
                Content::Tensor(Tensor::from_vec(v, &[n]).expect("length matches"))
            }
            None => Content::Dims { dims, scalar },
        }
    }

    /// The elements as dims, for integer values of rank 0 or 1.
    fn as_dims(&self) -> Option<(Vec<Dim>, bool)> {
        match self {
            Content::Dims { dims, scalar } => Some((dims.clone(), *scalar)),
            Content::Tensor(t) if t.dtype().is_int() && t.rank() <= 1 => Some((
                t.to_i64_vec().into_iter().map(Dim::from).collect(),
                t.rank() == 0,
            )),
            Content::Tensor(_) => None,
        }
    }

    /// The node that produces this content.
    pub(crate) fn to_op(&self) -> Op {
        match self {
            Content::Tensor(t) => Op::Const(t.clone()),
            Content::Dims { dims, scalar } => Op::ShapeValue {
                dims: dims.clone(),
                scalar: *scalar,
            },
        }
    }
}

/// Evaluates `op`; `None` when it is not a shape computation over known `i64` dims with at
/// least one symbolic operand (all-constant work is left to `fold-constants`).
pub(crate) fn eval(op: &Op, args: &[Arg<'_>]) -> Option<Content> {
    if let Op::ShapeOf = op {
        return Some(Content::dims(args[0].ty.shape.clone(), false));
    }
    let symbolic = args
        .iter()
        .any(|a| matches!(a.content, Some(Content::Dims { .. })));
    if !symbolic || args.iter().any(|a| a.ty.dtype != DType::I64) {
        return None;
    }
    let xs: Vec<(Vec<Dim>, bool)> = args
        .iter()
        .map(|a| a.content?.as_dims())
        .collect::<Option<_>>()?;
    let (dims, scalar) = match op {
        Op::Cast { to: DType::I64 } => xs[0].clone(),
        Op::Reshape { shape } => reshape(&xs[0].0, shape)?,
        Op::Gather { axis: 0 } if !xs[0].1 => gather(&xs[0].0, &xs[1])?,
        Op::Concat { axis: 0 } if xs.iter().all(|x| !x.1) => {
            (xs.iter().flat_map(|x| x.0.clone()).collect(), false)
        }
        Op::Slice { axes } if axes.len() == 1 && !xs[0].1 => (slice(&xs[0].0, &axes[0])?, false),
        Op::Binary(b) => binary(*b, &xs[0], &xs[1])?,
        _ => return None,
    };
    Some(Content::dims(dims, scalar))
}

/// A rank-0 or rank-1 reshape that keeps the element count.
fn reshape(dims: &[Dim], shape: &[Dim]) -> Option<(Vec<Dim>, bool)> {
    match shape {
        [] if dims.len() == 1 => Some((dims.to_vec(), true)),
        [n] if n.as_const() == Some(dims.len() as i64) => Some((dims.to_vec(), false)),
        _ => None,
    }
}

/// Elements picked by constant indices (negative counts from the end).
fn gather(data: &[Dim], (idx, scalar): &(Vec<Dim>, bool)) -> Option<(Vec<Dim>, bool)> {
    let len = data.len() as i64;
    let pick = |i: &Dim| {
        let i = i.as_const()?;
        let i = if i < 0 { i + len } else { i };
        (0..len).contains(&i).then(|| data[i as usize].clone())
    };
    Some((idx.iter().map(pick).collect::<Option<_>>()?, *scalar))
}

/// A constant-bounds slice of a dims vector.
fn slice(dims: &[Dim], s: &SliceAxis) -> Option<Vec<Dim>> {
    let (start, end) = (s.start.as_const()?, s.end.as_const()?);
    let mut out = Vec::new();
    let mut i = start;
    while (s.step > 0 && i < end) || (s.step < 0 && i > end) {
        out.push(dims.get(usize::try_from(i).ok()?)?.clone());
        i += s.step;
    }
    Some(out)
}

/// Elementwise integer arithmetic with broadcasting between rank ≤ 1 operands.
fn binary(
    b: BinaryOp,
    (x, xs): &(Vec<Dim>, bool),
    (y, ys): &(Vec<Dim>, bool),
) -> Option<(Vec<Dim>, bool)> {
    let n = if x.len() == 1 { y.len() } else { x.len() };
    if !(x.len() == n || x.len() == 1) || !(y.len() == n || y.len() == 1) {
        return None;
    }
    let at = |v: &[Dim], i: usize| v[if v.len() == 1 { 0 } else { i }].clone();
    let out = (0..n)
        .map(|i| dim_op(b, at(x, i), at(y, i)))
        .collect::<Option<_>>()?;
    Some((out, *xs && *ys))
}

/// One integer op on dims; `None` for ops without a dim form.
fn dim_op(b: BinaryOp, x: Dim, y: Dim) -> Option<Dim> {
    match b {
        BinaryOp::Add => Some(x + y),
        BinaryOp::Sub => Some(x - y),
        BinaryOp::Mul => Some(x * y),
        BinaryOp::Min => Some(x.min_with(&y)),
        BinaryOp::Max => Some(x.max_with(&y)),
        BinaryOp::Div => div(&x, &y),
        _ => None,
    }
}

/// Integer division truncating toward zero (division by zero gives 0, as the op defines).
/// A symbolic dividend is a size, assumed non-negative, so floor division agrees.
fn div(x: &Dim, y: &Dim) -> Option<Dim> {
    match (x.as_const(), y.as_const()?) {
        (_, 0) => Some(Dim::from(0i64)),
        (Some(a), d) => Some(Dim::from(a.wrapping_div(d))),
        (None, d) if d > 0 => Some(x.div_floor(d)),
        (None, _) => None,
    }
}
