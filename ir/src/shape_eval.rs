//! Symbolic evaluation of shape computations.
//!
//! Exporters compute shapes at run time (`Shape → Gather → Concat → Reshape`). kiln folds
//! those subgraphs at import (DESIGN decision 2): a value whose content is known is a
//! [`Known`], either a concrete tensor or a list of symbolic [`Dim`]s, and [`eval`] runs a
//! core op over known operands. Integer vectors are evaluated here, element by element on
//! dims, so `seq * 2` stays symbolic; anything else (float math, rank > 1 integers) is left
//! to the caller, which may fall back to the interpreter for all-constant inputs.

use crate::{BinaryOp, DType, Dim, Op, ReduceKind, SliceAxis, Tensor, TensorType, UnaryOp};

/// The content of a value, known at compile time.
#[derive(Clone, Debug, PartialEq)]
pub enum Known {
    /// A concrete tensor.
    Tensor(Tensor),
    /// An `i64` vector (or scalar) of dims, at least one of them symbolic.
    Dims {
        /// The elements.
        dims: Vec<Dim>,
        /// True for a rank-0 value (then `dims` has one element).
        scalar: bool,
    },
}

/// One operand of [`eval`]: known content, or only a type (enough for `shape_of`).
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    /// The content is known.
    Known(&'a Known),
    /// Only the type is known.
    Type(&'a TensorType),
}

impl Known {
    /// Dims content in canonical form: a tensor when every dim is constant.
    pub fn dims(dims: Vec<Dim>, scalar: bool) -> Known {
        if dims.iter().all(Dim::is_const) {
            let v: Vec<i64> = dims.iter().map(|d| d.as_const().unwrap_or(0)).collect();
            let shape: &[usize] = if scalar { &[] } else { &[v.len()] };
            let n = v.len();
            Known::Tensor(
                Tensor::from_vec(v, shape)
                    .unwrap_or_else(|_| Tensor::from_vec(vec![0i64; n], &[n]).expect("1-d")),
            )
        } else {
            Known::Dims { dims, scalar }
        }
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Known::Tensor(t) => t.dtype(),
            Known::Dims { .. } => DType::I64,
        }
    }

    /// The type of the value.
    pub fn ty(&self) -> TensorType {
        match self {
            Known::Tensor(t) => TensorType::fixed(t.dtype(), t.shape()),
            Known::Dims { dims, scalar: true } => {
                let _ = dims;
                TensorType::new(DType::I64, vec![])
            }
            Known::Dims {
                dims,
                scalar: false,
            } => TensorType::new(DType::I64, vec![Dim::from(dims.len())]),
        }
    }

    /// The elements as dims, for integer values of rank 0 or 1.
    pub fn as_dims(&self) -> Option<(Vec<Dim>, bool)> {
        match self {
            Known::Dims { dims, scalar } => Some((dims.clone(), *scalar)),
            Known::Tensor(t) if t.dtype().is_int() && t.rank() <= 1 => Some((
                t.to_i64_vec().into_iter().map(Dim::from).collect(),
                t.rank() == 0,
            )),
            Known::Tensor(_) => None,
        }
    }

    /// The concrete tensor, if there is one.
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Known::Tensor(t) => Some(t),
            Known::Dims { .. } => None,
        }
    }

    /// The core op that produces this content in a graph: `const` or `shape_value`.
    pub fn to_op(&self) -> Op {
        match self {
            Known::Tensor(t) => Op::Const(t.clone()),
            Known::Dims { dims, scalar } => Op::ShapeValue {
                dims: dims.clone(),
                scalar: *scalar,
            },
        }
    }
}

/// Evaluates `op` over known operands. `None` means "not evaluated here": an operand is
/// unknown, or the op is not a shape computation this module folds.
pub fn eval(op: &Op, args: &[Arg<'_>]) -> Option<Vec<Known>> {
    if let (Op::ShapeOf, [a]) = (op, args) {
        let shape = match a {
            Arg::Known(k) => k.ty().shape,
            Arg::Type(t) => t.shape.clone(),
        };
        return Some(vec![Known::dims(shape, false)]);
    }
    let known: Vec<&Known> = args
        .iter()
        .map(|a| match a {
            Arg::Known(k) => Some(*k),
            Arg::Type(_) => None,
        })
        .collect::<Option<_>>()?;
    eval_known(op, &known).map(|k| vec![k])
}

/// Integer vectors as dims, with the dtype the result takes.
/// An integer vector as dims, and whether it is rank 0.
type DimVec = (Vec<Dim>, bool);

fn int_operands(ks: &[&Known]) -> Option<(Vec<DimVec>, DType)> {
    let dtype = ks.first()?.dtype();
    if !dtype.is_int() || ks.iter().any(|k| k.dtype() != dtype) {
        return None;
    }
    Some((
        ks.iter().map(|k| k.as_dims()).collect::<Option<_>>()?,
        dtype,
    ))
}

/// Dims back into content of `dtype`.
fn finish(dims: Vec<Dim>, scalar: bool, dtype: DType) -> Option<Known> {
    match Known::dims(dims, scalar) {
        Known::Tensor(t) => Some(Known::Tensor(t.cast(dtype))),
        k if dtype == DType::I64 => Some(k),
        _ => None,
    }
}

fn eval_known(op: &Op, ks: &[&Known]) -> Option<Known> {
    match op {
        Op::Const(t) => Some(Known::Tensor(t.clone())),
        Op::ShapeValue { dims, scalar } => Some(Known::dims(dims.clone(), *scalar)),
        Op::Cast { to } => cast(ks.first()?, *to),
        Op::Unary(u) => unary(*u, ks),
        Op::Binary(b) => binary(*b, ks),
        Op::Where => where_(ks),
        Op::Concat { axis: 0 } => concat(ks),
        Op::Gather { axis: 0 } => gather(ks),
        Op::Slice { axes } => slice(axes, ks),
        Op::Reshape { shape } => reshape(shape, ks),
        Op::Expand { shape } => expand(shape, ks),
        Op::Reduce {
            kind,
            axes,
            keep_dims,
        } => reduce(*kind, axes, *keep_dims, ks),
        Op::Range { len } => range(len, ks),
        _ => None,
    }
}

fn cast(k: &Known, to: DType) -> Option<Known> {
    match k {
        Known::Tensor(t) => Some(Known::Tensor(t.cast(to))),
        Known::Dims { .. } if to == DType::I64 => Some(k.clone()),
        Known::Dims { .. } => None,
    }
}

fn unary(u: UnaryOp, ks: &[&Known]) -> Option<Known> {
    if let (UnaryOp::Not, [Known::Tensor(t)]) = (u, ks) {
        let a = t.as_array::<bool>()?;
        return Some(Known::Tensor(Tensor::from_array(a.map(|b| !b))));
    }
    let (mut ops, dtype) = int_operands(ks)?;
    let (dims, scalar) = ops.pop()?;
    let out = match u {
        UnaryOp::Neg => dims.into_iter().map(|d| -d).collect(),
        UnaryOp::Abs if dims.iter().all(Dim::is_const) => dims
            .iter()
            .map(|d| Dim::from(d.as_const().unwrap_or(0).abs()))
            .collect(),
        _ => return None,
    };
    finish(out, scalar, dtype)
}

/// Pairs up elements with numpy broadcasting between rank ≤ 1 operands.
fn broadcast2(a: &(Vec<Dim>, bool), b: &(Vec<Dim>, bool)) -> Option<(Vec<(Dim, Dim)>, bool)> {
    let n = match (a.0.len(), b.0.len()) {
        (x, y) if x == y => x,
        (1, y) => y,
        (x, 1) => x,
        _ => return None,
    };
    let pick = |v: &Vec<Dim>, i: usize| {
        if v.len() == 1 {
            v[0].clone()
        } else {
            v[i].clone()
        }
    };
    Some((
        (0..n).map(|i| (pick(&a.0, i), pick(&b.0, i))).collect(),
        a.1 && b.1,
    ))
}

fn binary(b: BinaryOp, ks: &[&Known]) -> Option<Known> {
    if let [Known::Tensor(x), Known::Tensor(y)] = ks {
        if x.dtype() == DType::Bool && y.dtype() == DType::Bool && x.rank() <= 1 && y.rank() <= 1 {
            return logical(b, x, y);
        }
    }
    let (ops, dtype) = int_operands(ks)?;
    let [x, y] = ops.as_slice() else { return None };
    let (pairs, scalar) = broadcast2(x, y)?;
    if b.returns_bool() {
        let v: Vec<bool> = pairs
            .iter()
            .map(|(p, q)| compare(b, p, q))
            .collect::<Option<_>>()?;
        let shape: &[usize] = if scalar { &[] } else { &[v.len()] };
        return Tensor::from_vec(v, shape).ok().map(Known::Tensor);
    }
    let out: Vec<Dim> = pairs
        .into_iter()
        .map(|(p, q)| arith(b, p, q))
        .collect::<Option<_>>()?;
    finish(out, scalar, dtype)
}

fn logical(b: BinaryOp, x: &Tensor, y: &Tensor) -> Option<Known> {
    let xs = x.to_i64_vec();
    let ys = y.to_i64_vec();
    let a = (xs.iter().map(|&v| Dim::from(v)).collect(), x.rank() == 0);
    let c = (ys.iter().map(|&v| Dim::from(v)).collect(), y.rank() == 0);
    let (pairs, scalar) = broadcast2(&a, &c)?;
    let f = |p: &Dim, q: &Dim| -> Option<bool> {
        let (p, q) = (p.as_const()? != 0, q.as_const()? != 0);
        match b {
            BinaryOp::And => Some(p && q),
            BinaryOp::Or => Some(p || q),
            BinaryOp::Xor => Some(p != q),
            BinaryOp::Equal => Some(p == q),
            _ => None,
        }
    };
    let v: Vec<bool> = pairs.iter().map(|(p, q)| f(p, q)).collect::<Option<_>>()?;
    let shape: &[usize] = if scalar { &[] } else { &[v.len()] };
    Tensor::from_vec(v, shape).ok().map(Known::Tensor)
}

fn compare(b: BinaryOp, p: &Dim, q: &Dim) -> Option<bool> {
    if b == BinaryOp::Equal && p == q {
        return Some(true);
    }
    // Symbolic elements are sizes, never negative: `seq == -1` is false.
    let negative = |d: &Dim| d.as_const().is_some_and(|c| c < 0);
    if b == BinaryOp::Equal && (negative(p) && !q.is_const() || negative(q) && !p.is_const()) {
        return Some(false);
    }
    let (x, y) = (p.as_const()?, q.as_const()?);
    match b {
        BinaryOp::Equal => Some(x == y),
        BinaryOp::Less => Some(x < y),
        BinaryOp::LessOrEqual => Some(x <= y),
        BinaryOp::Greater => Some(x > y),
        BinaryOp::GreaterOrEqual => Some(x >= y),
        _ => None,
    }
}

fn arith(b: BinaryOp, p: Dim, q: Dim) -> Option<Dim> {
    let consts = (p.as_const(), q.as_const());
    Some(match (b, consts) {
        (BinaryOp::Add, _) => p.checked_add(&q)?,
        (BinaryOp::Sub, _) => p.checked_sub(&q)?,
        (BinaryOp::Mul, _) => p.checked_mul(&q)?,
        (BinaryOp::Div, (Some(x), Some(y))) => Dim::from(x.checked_div(y)?),
        // Dims are sizes, never negative, so truncation and floor agree.
        (BinaryOp::Div, (None, Some(y))) if y > 0 => p.div_floor(y),
        (BinaryOp::Div, _) if p == q => Dim::from(1i64),
        (BinaryOp::Mod, (Some(x), Some(y))) if y != 0 => {
            Dim::from(x.rem_euclid(y) + if y < 0 && x.rem_euclid(y) != 0 { y } else { 0 })
        }
        (BinaryOp::Fmod, (Some(x), Some(y))) if y != 0 => Dim::from(x % y),
        (BinaryOp::Min, _) => p.min_with(&q),
        (BinaryOp::Max, _) => p.max_with(&q),
        _ => return None,
    })
}

fn where_(ks: &[&Known]) -> Option<Known> {
    let [Known::Tensor(c), a, b] = ks else {
        return None;
    };
    if c.dtype() != DType::Bool || c.rank() > 1 {
        return None;
    }
    let (ops, dtype) = int_operands(&[a, b])?;
    let cond: (Vec<Dim>, bool) = (
        c.to_i64_vec().into_iter().map(Dim::from).collect(),
        c.rank() == 0,
    );
    let (ab, scalar) = broadcast2(&ops[0], &ops[1])?;
    let ab = (ab, scalar);
    let n = match (cond.0.len(), ab.0.len()) {
        (x, y) if x == y => x,
        (1, y) => y,
        (x, 1) => x,
        _ => return None,
    };
    let pick = |i: usize, len: usize| if len == 1 { 0 } else { i };
    let out = (0..n)
        .map(|i| {
            let (x, y) = &ab.0[pick(i, ab.0.len())];
            if cond.0[pick(i, cond.0.len())] != Dim::from(0i64) {
                x.clone()
            } else {
                y.clone()
            }
        })
        .collect();
    finish(out, cond.1 && ab.1, dtype)
}

fn concat(ks: &[&Known]) -> Option<Known> {
    let (ops, dtype) = int_operands(ks)?;
    if ops.iter().any(|(_, s)| *s) {
        return None;
    }
    finish(ops.into_iter().flat_map(|(d, _)| d).collect(), false, dtype)
}

fn gather(ks: &[&Known]) -> Option<Known> {
    let [data, idx] = ks else { return None };
    let (dims, scalar) = data.as_dims()?;
    let (ix, ix_scalar) = idx.as_dims()?;
    if scalar || !idx.dtype().is_int() {
        return None;
    }
    let n = dims.len() as i64;
    let out = ix
        .iter()
        .map(|i| {
            let i = i.as_const()?;
            let i = if i < 0 { i + n } else { i };
            dims.get(usize::try_from(i).ok()?).cloned()
        })
        .collect::<Option<_>>()?;
    finish(out, ix_scalar, data.dtype())
}

fn slice(axes: &[SliceAxis], ks: &[&Known]) -> Option<Known> {
    let [data] = ks else { return None };
    let (dims, scalar) = data.as_dims()?;
    let [ax] = axes else { return None };
    if scalar || ax.axis != 0 {
        return None;
    }
    let (start, end) = (ax.start.as_const()?, ax.end.as_const()?);
    let mut out = Vec::new();
    let mut i = start;
    while (ax.step > 0 && i < end) || (ax.step < 0 && i > end) {
        out.push(dims.get(usize::try_from(i).ok()?)?.clone());
        i += ax.step;
    }
    finish(out, false, data.dtype())
}

fn reshape(shape: &[Dim], ks: &[&Known]) -> Option<Known> {
    let [data] = ks else { return None };
    match data {
        Known::Tensor(t) => {
            let s: Vec<usize> = shape
                .iter()
                .map(|d| usize::try_from(d.as_const()?).ok())
                .collect::<Option<_>>()?;
            t.reshape(&s).ok().map(Known::Tensor)
        }
        Known::Dims { dims, .. } => match shape
            .iter()
            .map(Dim::as_const)
            .collect::<Option<Vec<_>>>()?
            .as_slice()
        {
            [] if dims.len() == 1 => Some(Known::dims(dims.clone(), true)),
            [n] if *n == dims.len() as i64 => Some(Known::dims(dims.clone(), false)),
            _ => None,
        },
    }
}

fn expand(shape: &[Dim], ks: &[&Known]) -> Option<Known> {
    let [data] = ks else { return None };
    let (dims, _) = data.as_dims()?;
    let [n] = shape else { return None };
    // Like a long range, a long expanded value is data, not a shape value.
    let n = usize::try_from(n.as_const()?)
        .ok()
        .filter(|&n| n <= MAX_RANGE)?;
    let out = match dims.len() {
        1 => vec![dims[0].clone(); n],
        m if m == n => dims,
        _ => return None,
    };
    finish(out, false, data.dtype())
}

fn reduce(kind: ReduceKind, axes: &[usize], keep_dims: bool, ks: &[&Known]) -> Option<Known> {
    let [data] = ks else { return None };
    let (dims, scalar) = data.as_dims()?;
    if scalar || axes != [0] {
        return None;
    }
    let r = match kind {
        ReduceKind::Prod => (dims.iter()).try_fold(Dim::from(1i64), |a, d| a.checked_mul(d))?,
        ReduceKind::Sum => (dims.iter()).try_fold(Dim::from(0i64), |a, d| a.checked_add(d))?,
        _ => return None,
    };
    finish(vec![r], !keep_dims, data.dtype())
}

/// The longest `range` (or `expand` of a scalar) evaluated as a known value.
const MAX_RANGE: usize = 1 << 20;

fn range(len: &Dim, ks: &[&Known]) -> Option<Known> {
    let [start, delta] = ks else { return None };
    // Only short ranges are shape values; a long one is data, left to the graph (where its
    // size is checked against the memory limit before it is allocated).
    let n = usize::try_from(len.as_const()?)
        .ok()
        .filter(|&n| n <= MAX_RANGE)?;
    let (s, d) = (start.as_tensor()?, delta.as_tensor()?);
    if s.dtype().is_int() {
        let (s, d) = (
            s.to_i64_vec().first().copied()?,
            d.to_i64_vec().first().copied()?,
        );
        let v: Vec<i64> = (0..n as i64)
            .map(|i| i.checked_mul(d).and_then(|x| x.checked_add(s)))
            .collect::<Option<_>>()?;
        return Some(Known::Tensor(
            Tensor::from_vec(v, &[n]).ok()?.cast(start.dtype()),
        ));
    }
    let (s, d) = (
        s.to_f64_vec().first().copied()?,
        d.to_f64_vec().first().copied()?,
    );
    let v: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
    Some(Known::Tensor(
        Tensor::from_vec(v, &[n]).ok()?.cast(start.dtype()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(s: &[&str]) -> Known {
        Known::dims(s.iter().map(|d| d.parse().unwrap()).collect(), false)
    }

    #[test]
    fn shape_gather_mul_stays_symbolic() {
        let ty = TensorType::new(
            DType::F32,
            vec![Dim::sym("batch"), Dim::sym("seq"), Dim::from(8i64)],
        );
        let shape = eval(&Op::ShapeOf, &[Arg::Type(&ty)]).unwrap().remove(0);
        assert_eq!(shape, dims(&["batch", "seq", "8"]));
        let idx = Known::Tensor(Tensor::scalar(1i64));
        let seq = eval(
            &Op::Gather { axis: 0 },
            &[Arg::Known(&shape), Arg::Known(&idx)],
        )
        .unwrap()
        .remove(0);
        assert_eq!(
            seq,
            Known::Dims {
                dims: vec![Dim::sym("seq")],
                scalar: true
            }
        );
        let two = Known::Tensor(Tensor::scalar(2i64));
        let m = eval(
            &Op::Binary(BinaryOp::Mul),
            &[Arg::Known(&seq), Arg::Known(&two)],
        )
        .unwrap()
        .remove(0);
        assert_eq!(
            m,
            Known::Dims {
                dims: vec!["2*seq".parse().unwrap()],
                scalar: true
            }
        );
    }

    #[test]
    fn constant_dims_become_tensors() {
        let k = dims(&["2", "3"]);
        assert_eq!(
            k,
            Known::Tensor(Tensor::from_vec(vec![2i64, 3], &[2]).unwrap())
        );
        let c = eval(
            &Op::Concat { axis: 0 },
            &[Arg::Known(&k), Arg::Known(&dims(&["n"]))],
        )
        .unwrap()
        .remove(0);
        assert_eq!(c, dims(&["2", "3", "n"]));
    }

    #[test]
    fn equal_on_same_symbol_is_true_and_float_math_is_left_alone() {
        let a = dims(&["n", "4"]);
        let r = eval(
            &Op::Binary(BinaryOp::Equal),
            &[Arg::Known(&a), Arg::Known(&a)],
        )
        .unwrap()
        .remove(0);
        assert_eq!(
            r,
            Known::Tensor(Tensor::from_vec(vec![true, true], &[2]).unwrap())
        );
        let f = Known::Tensor(Tensor::scalar(1.5f32));
        assert!(eval(
            &Op::Binary(BinaryOp::Add),
            &[Arg::Known(&f), Arg::Known(&f)]
        )
        .is_none());
    }
}
