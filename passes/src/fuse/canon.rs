//! Canonicalization of data movement and index arithmetic: chains of reshapes and
//! transposes collapse to one, moves that change nothing disappear, broadcasts that an
//! elementwise op would do anyway are dropped, and gathers whose indices enumerate the
//! gathered tensor in order (the padding-mask idiom both exporters emit) become reshapes.
//!
//! Each rule adds an equal term to the matched class (or unions it with an operand); the
//! added node must infer to exactly the class's type, so no rule can change a shape.
//! Extraction then prefers the cheaper form, and the index arithmetic left unused is dead.

use super::egraph::{add_op, EGraph, ENode, Term, Types};
use super::rules::Rule;
use egg::{Applier, Id, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};
use kiln_ir::{infer, BinaryOp, Dim, Op, TensorType};

/// The canonicalization rules of this module, by name.
pub fn rules() -> Vec<Rule> {
    [
        ("reshape-reshape", Canon::ReshapeReshape),
        ("transpose-transpose", Canon::TransposeTranspose),
        ("identity-reshape", Canon::IdentityReshape),
        ("identity-transpose", Canon::IdentityTranspose),
        ("identity-expand", Canon::IdentityExpand),
        ("single-concat", Canon::SingleConcat),
        ("expand-into-broadcast", Canon::ExpandIntoBroadcast),
        ("gather-enumeration", Canon::GatherEnumeration),
        ("gather-nd-enumeration", Canon::GatherNdEnumeration),
    ]
    .into_iter()
    .map(|(name, c)| Rewrite::new(name, c, c).expect("a valid rule"))
    .collect()
}

/// One canonicalization rule (see [`rules`] for the names).
#[derive(Clone, Copy, Debug)]
enum Canon {
    /// `reshape(reshape(x, s1), s2)` → `reshape(x, s2)`.
    ReshapeReshape,
    /// `transpose(transpose(x, p1), p2)` → `transpose(x, p1∘p2)`, or `x` when that is the
    /// identity.
    TransposeTranspose,
    /// `reshape(x, shape(x))` → `x`.
    IdentityReshape,
    /// `transpose(x, [0, 1, …])` → `x`.
    IdentityTranspose,
    /// `expand(x, s)` where `x` already has shape `s` → `x`.
    IdentityExpand,
    /// `concat(x)` → `x`.
    SingleConcat,
    /// `op(…, expand(x), …)` → `op(…, x, …)` for a broadcasting elementwise op (binary or
    /// `where`) whose result keeps its type.
    ExpandIntoBroadcast,
    /// `gather(data, idx, axis)` → `reshape(data, …)` when `idx` enumerates `0..n` in
    /// row-major order (`n` the gathered axis).
    GatherEnumeration,
    /// `gather_nd(data, concat(i0, i1, …))` → `reshape(data, …)` when each `ik` is the
    /// coordinate along its own axis of the index shape, the axes in order and sized like
    /// the data's.
    GatherNdEnumeration,
}

/// What a rule makes a class equal to.
enum Equal {
    /// Another class (an operand the op leaves unchanged).
    Class(Id),
    /// A new e-node: an op over classes.
    Node(Op, Vec<Id>),
}

impl Searcher<ENode, Types> for Canon {
    fn search_eclass_with_limit(
        &self,
        eg: &EGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, ENode>> {
        // One match per class: the applier recomputes the rewrites (cheap, local), because a
        // `Subst` cannot carry an op.
        (limit > 0 && !self.find(eg, eclass).is_empty()).then(|| SearchMatches {
            eclass,
            substs: vec![Subst::default()],
            ast: None,
        })
    }

    fn vars(&self) -> Vec<Var> {
        Vec::new()
    }
}

impl Applier<ENode, Types> for Canon {
    fn apply_one(
        &self,
        eg: &mut EGraph,
        eclass: Id,
        _subst: &Subst,
        _ast: Option<&PatternAst<ENode>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        let mut changed = Vec::new();
        for equal in self.find(eg, eclass) {
            let id = match equal {
                Equal::Class(id) => id,
                Equal::Node(op, args) => {
                    if !keeps_type(eg, eclass, &op, &args) {
                        continue;
                    }
                    add_op(eg, op, args)
                }
            };
            if eg.union(id, eclass) {
                changed.push(id);
            }
        }
        changed
    }
}

/// Whether `op` over `args` infers to exactly the type of `class` (so the rewrite changes
/// neither dtype nor shape).
fn keeps_type(eg: &EGraph, class: Id, op: &Op, args: &[Id]) -> bool {
    let types: Option<Vec<&TensorType>> = args.iter().map(|a| eg[*a].data.ty()).collect();
    let Some(types) = types else {
        return false;
    };
    infer(op, &types).is_ok_and(|t| t == eg[class].data.types)
}

/// The ops of `class`'s e-nodes with their operands.
fn ops(eg: &EGraph, class: Id) -> impl Iterator<Item = (&Op, &[Id])> + '_ {
    eg[class]
        .nodes
        .iter()
        .filter_map(move |n| match eg.analysis.term(n.op) {
            Term::Op(op) => Some((op, n.args.as_slice())),
            _ => None,
        })
}

/// The shape of a single-value class.
fn shape(eg: &EGraph, class: Id) -> Option<&[Dim]> {
    eg[class].data.ty().map(|t| t.shape.as_slice())
}

impl Canon {
    /// The terms `class` equals under this rule.
    fn find(self, eg: &EGraph, class: Id) -> Vec<Equal> {
        let mut out = Vec::new();
        for (op, args) in ops(eg, class) {
            match (self, op) {
                (Canon::ReshapeReshape, Op::Reshape { shape }) => {
                    for (inner, x) in ops(eg, args[0]) {
                        if let Op::Reshape { .. } = inner {
                            let op = Op::Reshape {
                                shape: shape.clone(),
                            };
                            out.push(Equal::Node(op, vec![x[0]]));
                        }
                    }
                }
                (Canon::TransposeTranspose, Op::Transpose { perm: outer }) => {
                    for (inner, x) in ops(eg, args[0]) {
                        if let Op::Transpose { perm: inner } = inner {
                            // Output axis i of the outer transpose is its input's axis
                            // outer[i], which is x's axis inner[outer[i]].
                            let perm: Vec<usize> = outer.iter().map(|&i| inner[i]).collect();
                            out.push(match is_identity(&perm) {
                                true => Equal::Class(x[0]),
                                false => Equal::Node(Op::Transpose { perm }, vec![x[0]]),
                            });
                        }
                    }
                }
                (Canon::IdentityReshape, Op::Reshape { shape: s })
                | (Canon::IdentityExpand, Op::Expand { shape: s }) => {
                    let same = eg[args[0]].data.ty() == eg[class].data.ty();
                    if same && shape(eg, args[0]) == Some(s.as_slice()) {
                        out.push(Equal::Class(args[0]));
                    }
                }
                (Canon::IdentityTranspose, Op::Transpose { perm }) if is_identity(perm) => {
                    out.push(Equal::Class(args[0]));
                }
                (Canon::SingleConcat, Op::Concat { .. }) if args.len() == 1 => {
                    out.push(Equal::Class(args[0]));
                }
                (Canon::ExpandIntoBroadcast, Op::Binary(_) | Op::Where) => {
                    for (k, &arg) in args.iter().enumerate() {
                        for (inner, x) in ops(eg, arg) {
                            if let Op::Expand { .. } = inner {
                                let mut args = args.to_vec();
                                args[k] = x[0];
                                // The applier keeps it only if the result's type is unchanged.
                                out.push(Equal::Node(op.clone(), args));
                            }
                        }
                    }
                }
                (Canon::GatherEnumeration, Op::Gather { axis }) => {
                    if let Some(shape) = gather_as_reshape(eg, *axis, args[0], args[1]) {
                        out.push(Equal::Node(Op::Reshape { shape }, vec![args[0]]));
                    }
                }
                (Canon::GatherNdEnumeration, Op::GatherNd { batch_dims: 0 }) => {
                    for (inner, parts) in ops(eg, args[1]) {
                        if let Op::Concat { axis } = inner {
                            let (data, idx) = (args[0], args[1]);
                            if let Some(shape) = gather_nd_as_reshape(eg, data, idx, *axis, parts) {
                                out.push(Equal::Node(Op::Reshape { shape }, vec![args[0]]));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }
}

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}

/// The shape `gather(data, idx, axis)` has, when it is a reshape of `data`: `idx` holds
/// `0..n` in row-major order (`n` the size of `data`'s `axis`), so every element of data is
/// read once, in order, and the gather only regroups the axis into `idx`'s shape.
fn gather_as_reshape(eg: &EGraph, axis: usize, data: Id, idx: Id) -> Option<Vec<Dim>> {
    let data_shape = shape(eg, data)?;
    let n = data_shape.get(axis)?;
    let index = affine(eg, idx, DEPTH)?;
    if index.offset != Dim::constant(0) || !is_row_major(&index.shape, &index.coeffs, n) {
        return None;
    }
    let mut out = data_shape[..axis].to_vec();
    out.extend(index.shape.iter().cloned());
    out.extend(data_shape[axis + 1..].iter().cloned());
    Some(out)
}

/// Whether `coeffs` are the row-major strides of `shape` (axes of size 1 are free) and the
/// shape holds `n` elements: then `Σ p·coeffs` enumerates `0..n` in order.
fn is_row_major(shape: &[Dim], coeffs: &[Dim], n: &Dim) -> bool {
    let mut stride = Dim::constant(1);
    for (d, c) in shape.iter().zip(coeffs).rev() {
        if *d == Dim::constant(1) {
            continue;
        }
        if *c != stride {
            return false;
        }
        stride = stride * d.clone();
    }
    stride == *n
}

/// The shape `gather_nd(data, idx)` (no batch dims) has, when it is a reshape of `data`:
/// `idx = concat(parts, last axis)`, each part one coordinate of shape `[…, 1]`, part `k`
/// the position along its own axis `a_k` of the index shape, `a_0 < a_1 < …`, that axis
/// sized like data's axis `k`, and every other axis of the index shape of size 1. Then
/// element `p` reads `data[p_{a_0}, p_{a_1}, …]`: all of data, in order.
fn gather_nd_as_reshape(
    eg: &EGraph,
    data: Id,
    idx: Id,
    axis: usize,
    parts: &[Id],
) -> Option<Vec<Dim>> {
    let data_shape = shape(eg, data)?;
    let idx_shape = shape(eg, idx)?;
    let (last, batch) = idx_shape.split_last()?;
    let rank = batch.len();
    // The concat must be over the last axis, one column per part.
    if axis != rank || *last != Dim::constant(parts.len() as i64) || parts.len() > data_shape.len()
    {
        return None;
    }
    let one = Dim::constant(1);
    let mut used = vec![false; rank];
    let mut previous: Option<usize> = None;
    for (k, &part) in parts.iter().enumerate() {
        let coordinate = affine(eg, part, DEPTH)?;
        let (part_last, part_batch) = coordinate.shape.split_last()?;
        if *part_last != one || part_batch != batch || coordinate.offset != Dim::constant(0) {
            return None;
        }
        let moving: Vec<usize> = (0..rank)
            .filter(|&a| batch[a] != one && coordinate.coeffs[a] != Dim::constant(0))
            .collect();
        match moving[..] {
            // A coordinate that never moves is 0; data's axis must have one position.
            [] if data_shape[k] == one => {}
            [a] if coordinate.coeffs[a] == one
                && batch[a] == data_shape[k]
                && previous.is_none_or(|p| p < a) =>
            {
                used[a] = true;
                previous = Some(a);
            }
            _ => return None,
        }
    }
    // An index axis no coordinate follows would repeat elements.
    if (0..rank).any(|a| batch[a] != one && !used[a]) {
        return None;
    }
    let mut out = batch.to_vec();
    out.extend(data_shape[parts.len()..].iter().cloned());
    Some(out)
}

/// How deep [`affine`] follows operands (index arithmetic is a few ops deep; the bound also
/// stops cycles that identity rewrites put into the e-graph).
const DEPTH: usize = 12;

/// An integer tensor whose element at position `p` is `offset + Σ_a p_a · coeffs[a]`.
/// Coefficients of axes of size 1 are 0.
#[derive(Clone, Debug, PartialEq)]
struct Affine {
    shape: Vec<Dim>,
    offset: Dim,
    coeffs: Vec<Dim>,
}

impl Affine {
    fn constant(shape: Vec<Dim>, offset: Dim) -> Affine {
        let coeffs = vec![Dim::constant(0); shape.len()];
        Affine {
            shape,
            offset,
            coeffs,
        }
    }

    fn is_constant(&self) -> bool {
        self.coeffs.iter().all(|c| *c == Dim::constant(0))
    }

    /// The same values broadcast to `out` (numpy rules): a stretched axis does not move.
    fn broadcast(&self, out: &[Dim]) -> Option<Affine> {
        let lead = out.len().checked_sub(self.shape.len())?;
        let one = Dim::constant(1);
        let mut coeffs = vec![Dim::constant(0); out.len()];
        for (a, d) in self.shape.iter().enumerate() {
            if *d == out[lead + a] {
                if out[lead + a] != one {
                    coeffs[lead + a] = self.coeffs[a].clone();
                }
            } else if *d != one {
                return None;
            }
        }
        Some(Affine {
            shape: out.to_vec(),
            offset: self.offset.clone(),
            coeffs,
        })
    }

    /// The same values in `out`, a shape that only adds or drops axes of size 1.
    fn reshape(&self, out: &[Dim]) -> Option<Affine> {
        let one = Dim::constant(1);
        let kept = |s: &[Dim]| -> Vec<usize> { (0..s.len()).filter(|&a| s[a] != one).collect() };
        let (from, to) = (kept(&self.shape), kept(out));
        if from.len() != to.len() || from.iter().zip(&to).any(|(&f, &t)| self.shape[f] != out[t]) {
            return None;
        }
        let mut coeffs = vec![Dim::constant(0); out.len()];
        for (&f, &t) in from.iter().zip(&to) {
            coeffs[t] = self.coeffs[f].clone();
        }
        Some(Affine {
            shape: out.to_vec(),
            offset: self.offset.clone(),
            coeffs,
        })
    }

    fn add(&self, other: &Affine, sign: i64) -> Affine {
        let s = Dim::constant(sign);
        Affine {
            shape: self.shape.clone(),
            offset: self.offset.clone() + s.clone() * other.offset.clone(),
            coeffs: (self.coeffs.iter().zip(&other.coeffs))
                .map(|(a, b)| a.clone() + s.clone() * b.clone())
                .collect(),
        }
    }

    fn scale(&self, k: &Dim) -> Affine {
        Affine {
            shape: self.shape.clone(),
            offset: self.offset.clone() * k.clone(),
            coeffs: self.coeffs.iter().map(|c| c.clone() * k.clone()).collect(),
        }
    }
}

/// `class` as an [`Affine`] integer tensor, if one of its e-nodes (followed at most `depth`
/// deep) shows it is: integer constants and shape values of one element, ranges with such
/// start and step, reshapes that add or drop unit axes, broadcasts, sums, differences and
/// products with a constant.
fn affine(eg: &EGraph, class: Id, depth: usize) -> Option<Affine> {
    let ty = eg[class].data.ty()?;
    if depth == 0 || !ty.dtype.is_int() {
        return None;
    }
    let out = &ty.shape;
    ops(eg, class).find_map(|(op, args)| {
        let arg = |k: usize| affine(eg, args[k], depth - 1);
        match op {
            Op::Const(t) if t.len() == 1 => {
                Some(Affine::constant(out.clone(), t.to_i64_vec()[0].into()))
            }
            Op::ShapeValue { dims, .. } if dims.len() == 1 => {
                Some(Affine::constant(out.clone(), dims[0].clone()))
            }
            Op::Range { len } => {
                let (start, step) = (arg(0)?, arg(1)?);
                if !start.shape.is_empty() || !step.shape.is_empty() {
                    return None;
                }
                let coeffs = vec![if *len == Dim::constant(1) {
                    Dim::constant(0)
                } else {
                    step.offset
                }];
                Some(Affine {
                    shape: out.clone(),
                    offset: start.offset,
                    coeffs,
                })
            }
            Op::Reshape { .. } => arg(0)?.reshape(out),
            Op::Expand { .. } => arg(0)?.broadcast(out),
            Op::Binary(b @ (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul)) => {
                let (x, y) = (arg(0)?.broadcast(out)?, arg(1)?.broadcast(out)?);
                match b {
                    BinaryOp::Add => Some(x.add(&y, 1)),
                    BinaryOp::Sub => Some(x.add(&y, -1)),
                    _ if y.is_constant() => Some(x.scale(&y.offset)),
                    _ if x.is_constant() => Some(y.scale(&x.offset)),
                    _ => None,
                }
            }
            _ => None,
        }
    })
}
