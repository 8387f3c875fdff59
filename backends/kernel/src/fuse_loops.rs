//! Loop fusion: a loop nest that only feeds one other kernel is inlined into that kernel's
//! expression, so its result is computed where it is used and never stored.
//!
//! The scheduler emits one kernel per node, so a chain of elementwise ops, casts and data
//! movement (transpose, slice, expand: loop nests whose body is loads and elementwise
//! nodes) writes a temporary per step. This pass runs on the scheduled [`Program`], before
//! memory planning, and removes those temporaries: a producer `P` (a plain loop nest storing
//! its whole iteration space row-major into a temporary `B`) is fused into the one kernel
//! `C` reading `B` (a loop nest, a reduction's value, or a row kernel's statistics and map)
//! when every load of `B` in `C` is `P`'s expression evaluated at an affine function of
//! `C`'s index ([`compose`]). Then `P`'s loads become loads over `C`'s axes, and the load
//! of `B` is replaced by `P`'s nodes: per element the same operations run in the same order,
//! so results are bit-identical to the unfused program.
//!
//! Fusion never duplicates work: unless `P` is a single load or constant (a copy or view,
//! free to recompute), `C` must read each element of `B` at most once (one access, injective
//! over `C`'s iteration space). Calls (GEMM, attention, runtime ops) read memory, so a
//! producer read by a call stays, except a copy feeding attention: the call reads the
//! copy's source through strides instead ([`attention_reading`]); likewise attention
//! writes in place for the copy that reads its result ([`attention_writing`]). Fusion repeats in program order until nothing changes, so
//! chains collapse into their last kernel; the fused buffer stays in [`Program::buffers`],
//! unused, and the memory plan gives it no space.

use crate::axes::{at_most, less, normalize};
use crate::kernel::*;
use crate::schedule::contiguous_strides;
use kiln_ir::Dim;

/// True if `k` reads or writes through data-dependent indices.
fn indexes(k: &Kernel) -> bool {
    let gathers = |e: &Expr| e.nodes.iter().any(|n| matches!(n, ExprNode::Gather { .. }));
    match k {
        Kernel::Loop(l) => !l.scatter.is_empty() || gathers(&l.expr),
        Kernel::Reduce(r) => gathers(&r.value) || gathers(&r.post),
        Kernel::Row(r) => r.stats.iter().any(|s| gathers(&s.value)) || gathers(&r.map),
        Kernel::Call(_) => false,
    }
}

/// Fuses producer loop nests into their only consumer until none is left; returns how
/// many kernels were removed. Deterministic: the first fusible producer in program order
/// goes first.
pub fn fuse_loops(p: &mut Program) -> usize {
    let mut fused = 0;
    'search: loop {
        let uses = Uses::of(p);
        for k in 0..p.kernels.len() {
            if let Some((c, attention)) = attention_writing(p, &uses, k) {
                p.kernels[k] = Kernel::Call(Call::Attention(Box::new(attention)));
                p.kernels.remove(c);
                p.kernel_nodes.remove(c);
                fused += 1;
                continue 'search;
            }
            if let Some((c, kernel)) = fuse_into_consumer(p, &uses, k) {
                // A run stopped by an index check names the kernel's node, so a kernel
                // that takes in a gather is the gather's unless it indexes by itself.
                if indexes(&p.kernels[k]) && !indexes(&p.kernels[c]) {
                    p.kernel_nodes[c] = p.kernel_nodes[k];
                }
                p.kernels[c] = kernel;
                p.kernels.remove(k);
                p.kernel_nodes.remove(k);
                fused += 1;
                continue 'search;
            }
        }
        return fused;
    }
}

/// Which kernels read and write each buffer.
struct Uses {
    /// Kernels reading each buffer (each kernel once, in order).
    readers: Vec<Vec<usize>>,
    /// Number of kernels writing each buffer.
    writers: Vec<usize>,
}

impl Uses {
    fn of(p: &Program) -> Uses {
        let mut readers = vec![Vec::new(); p.buffers.len()];
        let mut writers = vec![0; p.buffers.len()];
        for (k, kernel) in p.kernels.iter().enumerate() {
            for b in kernel.reads() {
                let r: &mut Vec<usize> = &mut readers[b];
                if r.last() != Some(&k) {
                    r.push(k);
                }
            }
            for b in kernel.writes() {
                writers[b] += 1;
            }
        }
        Uses { readers, writers }
    }
}

/// Whether `l` is a plain loop nest (no scatter, not serial) that alone writes a whole
/// temporary, row-major: what fusion may move or remove.
fn stores_temporary(p: &Program, uses: &Uses, l: &LoopNest) -> bool {
    let b = l.out.buf;
    l.scatter.is_empty()
        && !l.serial
        && l.out.offset.is_zero()
        && l.out.strides == contiguous_strides(&l.shape)
        && l.shape.iter().product::<Dim>() == p.buffers[b].len
        && matches!(p.buffers[b].kind, BufferKind::Temp)
        && uses.writers[b] == 1
}

/// Kernel `k` fused into its only consumer: the consumer's index and its new kernel, or
/// `None` when `k` is not a fusible producer.
fn fuse_into_consumer(p: &Program, uses: &Uses, k: usize) -> Option<(usize, Kernel)> {
    let Kernel::Loop(producer) = &p.kernels[k] else {
        return None;
    };
    let b = producer.out.buf;
    if !stores_temporary(p, uses, producer)
        || p.outputs.contains(&b)
        || producer.expr.dtype() != p.buffers[b].dtype
    {
        return None;
    }
    let &[c] = uses.readers[b].as_slice() else {
        return None;
    };
    // The producer's reads move to the consumer: nothing up to it may write what they read.
    let reads: Vec<BufId> = producer.expr.reads().collect();
    if c <= k
        || p.kernels[k + 1..=c]
            .iter()
            .any(|kernel| kernel.writes().iter().any(|w| reads.contains(w)))
    {
        return None;
    }
    if let Kernel::Call(Call::Attention(a)) = &p.kernels[c] {
        let attention = attention_reading(a, b, producer, p)?;
        return Some((c, Kernel::Call(Call::Attention(Box::new(attention)))));
    }
    let producer = &merge_axes(producer);
    let fuse = Inline {
        buf: b,
        producer,
        recompute: is_copy(&producer.expr),
    };
    let kernel = match &p.kernels[c] {
        Kernel::Loop(l) => {
            let (expr, map) = fuse.inline_into(&l.expr, &l.shape)?;
            let scatter = l
                .scatter
                .iter()
                .map(|t| Indirect {
                    index: map[t.index],
                    ..t.clone()
                })
                .collect();
            Kernel::Loop(LoopNest {
                expr,
                scatter,
                ..l.clone()
            })
        }
        Kernel::Reduce(r) => {
            if r.post.reads().any(|x| x == b) {
                return None;
            }
            let space = [r.shape.as_slice(), &r.reduced].concat();
            let (value, _) = fuse.inline_into(&r.value, &space)?;
            Kernel::Reduce(Reduce { value, ..r.clone() })
        }
        Kernel::Row(r) => {
            let reading = r.stats.iter().map(|s| &s.value).chain([&r.map]);
            let n_reading = reading.filter(|e| e.reads().any(|x| x == b)).count();
            if r.stats.iter().any(|s| s.post.reads().any(|x| x == b))
                || (!fuse.recompute && n_reading > 1)
            {
                return None;
            }
            let space = [r.shape.as_slice(), std::slice::from_ref(&r.len)].concat();
            let mut row = r.clone();
            for s in &mut row.stats {
                s.value = fuse.inline_into(&s.value, &space)?.0;
            }
            row.map = fuse.inline_into(&r.map, &space)?.0;
            Kernel::Row(row)
        }
        Kernel::Call(_) => return None,
    };
    Some((c, kernel))
}

/// `a` reading in place what `producer`, a copy into `buf`, reads: a transpose (heads out of
/// a linear layer's `[B, S, H, D]` rows) or slice feeding attention becomes the operand's
/// strides instead of a pass over memory. `None` unless the producer is one load whose
/// feature axis is contiguous and whose leading axes flatten into one stride, and `buf` is
/// a contiguous query, key or value operand (not the mask). The attention reads the same
/// elements in the same order, so results are bit-identical.
fn attention_reading(
    a: &Attention,
    buf: BufId,
    producer: &LoopNest,
    p: &Program,
) -> Option<Attention> {
    let [ExprNode::Load(access)] = producer.expr.nodes.as_slice() else {
        return None;
    };
    let (shape, strides) = (&producer.shape, &access.strides);
    let r = shape.len();
    // Zero is known non-negative too (a broadcast stride).
    if r < 3 || !access.offset.known_nonnegative() || !strides.iter().all(Dim::known_nonnegative) {
        return None;
    }
    if !shape[r - 1].is_one() && !strides[r - 1].is_one() {
        return None;
    }
    let mut batch = Dim::from(0i64);
    if r > 3 {
        batch = strides[r - 4].clone();
        let mut want = batch.clone();
        for j in (0..r - 3).rev() {
            if !shape[j].is_one() && strides[j] != want {
                return None;
            }
            want = &want * &shape[j];
        }
    }
    let from = AttentionOperand {
        buf: access.buf,
        offset: access.offset.clone(),
        batch,
        head: strides[r - 3].clone(),
        row: strides[r - 2].clone(),
    };
    let d = &a.dims;
    let batch: Dim = d.leading.iter().product();
    let mut out = a.clone();
    let mut folded = false;
    for (operand, heads, len, depth) in [
        (&mut out.q, &d.heads, &d.q_len, &d.depth),
        (&mut out.k, &d.kv_heads, &d.kv_len, &d.depth),
        (&mut out.v, &d.kv_heads, &d.kv_len, &d.v_depth),
    ] {
        let dims = [batch.clone(), heads.clone(), len.clone(), depth.clone()];
        if *operand == AttentionOperand::contiguous(buf, heads, len, depth)
            && shape.iter().product::<Dim>() == dims.iter().product::<Dim>()
            && shape[r - 3..] == dims[1..]
            && at_most(&end(&from, &dims), &p.buffers[from.buf].len)
        {
            *operand = from.clone();
            folded = true;
        }
    }
    let masked_by_it = a.mask.as_ref().is_some_and(|m| m.buf == buf);
    (folded && !masked_by_it).then_some(out)
}

/// Attention kernel `k` writing in place what the one copy `c` reading its result would
/// store (the transpose back to `[B, S, H, Dv]` rows that the next linear layer reads):
/// the call's output strides become the copy's, and the copy goes. `None` unless `k` is
/// attention with a contiguous temporary output that only `c` reads, `c` is one load of
/// it through a permutation of its axes (the feature axis last) storing a whole
/// temporary row-major, and nothing between them touches that temporary. Each element is
/// computed as before and lands where the copy put it, so results are bit-identical.
fn attention_writing(p: &Program, uses: &Uses, k: usize) -> Option<(usize, Attention)> {
    let Kernel::Call(Call::Attention(a)) = &p.kernels[k] else {
        return None;
    };
    let d = &a.dims;
    let b = a.out.buf;
    if a.out != AttentionOperand::contiguous(b, &d.heads, &d.q_len, &d.v_depth)
        || !matches!(p.buffers[b].kind, BufferKind::Temp)
        || p.outputs.contains(&b)
        || uses.writers[b] != 1
    {
        return None;
    }
    let &[c] = uses.readers[b].as_slice() else {
        return None;
    };
    let Kernel::Loop(copy) = &p.kernels[c] else {
        return None;
    };
    let [ExprNode::Load(access)] = copy.expr.nodes.as_slice() else {
        return None;
    };
    let dst = copy.out.buf;
    if c <= k
        || access.buf != b
        || !access.offset.is_zero()
        || !stores_temporary(p, uses, copy)
        || p.kernels[k + 1..c]
            .iter()
            .any(|kernel| kernel.reads().contains(&dst) || kernel.writes().contains(&dst))
    {
        return None;
    }
    // The attention's axes [B, H, S, Dv] (leading dims flattened) and their contiguous
    // strides; each copy axis of more than one element must read one of them whole.
    let extents: [Dim; 4] = [
        d.leading.iter().product(),
        d.heads.clone(),
        d.q_len.clone(),
        d.v_depth.clone(),
    ];
    let strides = [
        &(&d.heads * &d.q_len) * &d.v_depth,
        &d.q_len * &d.v_depth,
        d.v_depth.clone(),
        Dim::from(1i64),
    ];
    let dst_strides = contiguous_strides(&copy.shape);
    let mut out: [Dim; 4] = std::array::from_fn(|_| Dim::from(0i64));
    let mut seen = [false; 4];
    for (j, (n, s)) in copy.shape.iter().zip(&access.strides).enumerate() {
        if n.is_one() {
            continue;
        }
        let axis = (0..4).find(|&i| !seen[i] && extents[i] == *n && strides[i] == *s)?;
        seen[axis] = true;
        out[axis] = dst_strides[j].clone();
    }
    let covered = (0..4).all(|i| seen[i] || extents[i].is_one());
    if !covered || (!d.v_depth.is_one() && !out[3].is_one()) {
        return None;
    }
    let [batch, head, row, _] = out;
    let to = AttentionOperand {
        buf: dst,
        offset: Dim::from(0i64),
        batch,
        head,
        row,
    };
    if !at_most(&end(&to, &extents), &p.buffers[dst].len) {
        return None;
    }
    Some((
        c,
        Attention {
            out: to,
            ..(**a).clone()
        },
    ))
}

/// `l` over as few axes as its accesses allow (unit axes dropped, axes that every access
/// walks contiguously merged), so that a consumer reading its result through a reshape
/// that merges or splits those axes still composes.
fn merge_axes(l: &LoopNest) -> LoopNest {
    let accesses = |e: &Expr| -> Vec<Access> {
        e.nodes
            .iter()
            .filter_map(|n| match n {
                ExprNode::Load(a) | ExprNode::Gather { access: a, .. } => Some(a.clone()),
                _ => None,
            })
            .collect()
    };
    let loads = accesses(&l.expr);
    let mut strides: Vec<Vec<Dim>> = std::iter::once(&l.out)
        .chain(&loads)
        .map(|a| a.strides.clone())
        .collect();
    let shape = normalize(&l.shape, &mut strides);
    let mut strides = strides.into_iter();
    let out = Access {
        strides: strides.next().expect("the store's strides"),
        ..l.out.clone()
    };
    let mut expr = l.expr.clone();
    for node in &mut expr.nodes {
        if let ExprNode::Load(a) | ExprNode::Gather { access: a, .. } = node {
            a.strides = strides.next().expect("one row per access");
        }
    }
    LoopNest {
        shape,
        out,
        expr,
        ..l.clone()
    }
}

/// An expression that is free to evaluate again: one load or one constant.
fn is_copy(e: &Expr) -> bool {
    matches!(e.nodes.as_slice(), [ExprNode::Load(_) | ExprNode::Const(_)])
}

/// Inlining of `producer`, which stores `buf`, into the expressions that load `buf`.
struct Inline<'a> {
    buf: BufId,
    producer: &'a LoopNest,
    /// The producer may be evaluated more than once per element of `buf`.
    recompute: bool,
}

impl Inline<'_> {
    /// `e` (over `space`) with every load of the buffer replaced by the producer's nodes,
    /// and the new index of each old node; `None` when a load cannot be composed or would
    /// repeat work. Identical loads share one copy of the producer's nodes.
    fn inline_into(&self, e: &Expr, space: &[Dim]) -> Option<(Expr, Vec<usize>)> {
        let mut loads: Vec<(&Access, IndexMap)> = Vec::new();
        for (node, &dtype) in e.nodes.iter().zip(&e.dtypes) {
            match node {
                ExprNode::Gather { access, .. } if access.buf == self.buf => return None,
                ExprNode::Load(a) if a.buf == self.buf && dtype != self.producer.expr.dtype() => {
                    return None
                }
                ExprNode::Load(a) if a.buf == self.buf && !loads.iter().any(|(x, _)| *x == a) => {
                    let map = compose(a, space, &self.producer.shape)?;
                    if !self.recompute && (!loads.is_empty() || !map.injective(space)) {
                        return None;
                    }
                    loads.push((a, map));
                }
                _ => {}
            }
        }
        let mut out = Expr::default();
        let mut new_index = Vec::with_capacity(e.nodes.len());
        let mut inlined: Vec<Option<usize>> = vec![None; loads.len()];
        for (node, &dtype) in e.nodes.iter().zip(&e.dtypes) {
            let index = match node {
                ExprNode::Load(a) if a.buf == self.buf => {
                    let i = loads
                        .iter()
                        .position(|(x, _)| *x == a)
                        .expect("collected above");
                    *inlined[i]
                        .get_or_insert_with(|| append(&mut out, &self.producer.expr, &loads[i].1))
                }
                node => out.push(renumber(node, &new_index), dtype),
            };
            new_index.push(index);
        }
        Some((out, new_index))
    }
}

/// Appends `e`'s nodes to `out` with every access composed with `map`; returns the index
/// of `e`'s result in `out`.
fn append(out: &mut Expr, e: &Expr, map: &IndexMap) -> usize {
    let mut new_index = Vec::with_capacity(e.nodes.len());
    for (node, &dtype) in e.nodes.iter().zip(&e.dtypes) {
        let node = match renumber(node, &new_index) {
            ExprNode::Load(a) => ExprNode::Load(map.apply(&a)),
            ExprNode::Gather { access, indices } => ExprNode::Gather {
                access: map.apply(&access),
                indices,
            },
            node => node,
        };
        new_index.push(out.push(node, dtype));
    }
    out.root()
}

/// `node` with its operands (and its gather's index nodes) renumbered by `new_index`.
fn renumber(node: &ExprNode, new_index: &[usize]) -> ExprNode {
    let n = |i: &usize| new_index[*i];
    match node {
        ExprNode::Unary(u, a) => ExprNode::Unary(*u, n(a)),
        ExprNode::Binary(op, a, b) => ExprNode::Binary(*op, n(a), n(b)),
        ExprNode::Where(c, a, b) => ExprNode::Where(n(c), n(a), n(b)),
        ExprNode::Cast(a) => ExprNode::Cast(n(a)),
        ExprNode::Bitcast(a) => ExprNode::Bitcast(n(a)),
        ExprNode::Gather { access, indices } => ExprNode::Gather {
            access: access.clone(),
            indices: indices
                .iter()
                .map(|t| Indirect {
                    index: n(&t.index),
                    ..t.clone()
                })
                .collect(),
        },
        ExprNode::Load(_)
        | ExprNode::Const(_)
        | ExprNode::Acc
        | ExprNode::Stat(_)
        | ExprNode::Size(_) => node.clone(),
    }
}

/// One past the last float an attention operand reads for `[batch, heads, len, depth]`
/// elements, when every extent is at least 1 (with an empty extent it reads nothing, and
/// nothing it claims matters).
fn end(o: &AttentionOperand, [batch, heads, len, depth]: &[Dim; 4]) -> Dim {
    let one = Dim::from(1i64);
    let steps = [(batch, &o.batch), (heads, &o.head), (len, &o.row)];
    steps
        .into_iter()
        .fold(&o.offset + depth, |acc, (n, s)| acc + &(n - &one) * s)
}

/// A producer index as an affine function of a consumer index: producer axis `d` is
/// `offset[d] + Σ m * i_k` over the consumer axes `k` with `axes[k] == Some((d, m))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IndexMap {
    /// The producer index at consumer index 0.
    offset: Vec<Dim>,
    /// For each consumer axis, the producer axis it moves and by how much (`None`: none).
    axes: Vec<Option<(usize, Dim)>>,
}

/// The producer index that `load` (a load, over consumer axes of sizes `space`, of the
/// row-major buffer of a producer of shape `producer`) reads, as an affine map; `None` when
/// it is not one for every binding of the symbols: a stride that is not a multiple of one
/// producer axis's stride, or an index that could carry from one producer axis into the
/// next.
///
/// Element `offset + Σ_k i_k s_k` of the buffer is producer index `j` with
/// `j_d = o_d + Σ_{k→d} m_k i_k` when `s_k = m_k · cs_d` (`cs`: the row-major strides) and
/// every `j_d` stays in `0..producer[d]`. Only iterations that run matter, so every extent
/// of `space` may be taken as at least 1.
pub(crate) fn compose(load: &Access, space: &[Dim], producer: &[Dim]) -> Option<IndexMap> {
    if space.iter().any(Dim::is_zero) {
        return None;
    }
    let cs = contiguous_strides(producer);
    let offset = split_offset(&load.offset, producer, &cs)?;
    let axes = space
        .iter()
        .zip(&load.strides)
        .map(|(n, s)| {
            if n.is_one() || s.is_zero() {
                return Some(None);
            }
            // The outermost (largest) producer stride dividing `s` is the only candidate:
            // with a smaller one, `i_k = 1` alone would leave that axis's range.
            (0..producer.len())
                .filter(|&d| !producer[d].is_one())
                .find_map(|d| Some(Some((d, s.div_exact(&cs[d])?))))
        })
        .collect::<Option<Vec<_>>>()?;
    for (d, n) in producer.iter().enumerate() {
        let (mut lo, mut hi) = (offset[d].clone(), offset[d].clone());
        for (k, axis) in axes.iter().enumerate() {
            let Some((e, m)) = axis else { continue };
            if *e != d {
                continue;
            }
            let reach = m * &(&space[k] - &Dim::from(1i64));
            if m.known_nonnegative() {
                hi = hi + reach;
            } else if (-m.clone()).known_nonnegative() {
                lo = lo + reach;
            } else {
                return None;
            }
        }
        if !at_most(&Dim::from(0i64), &lo) || !less(&hi, n) {
            return None;
        }
    }
    Some(IndexMap { offset, axes })
}

/// `offset` as a producer index (`offset = Σ o_d · cs_d` with `0 <= o_d < producer[d]`):
/// by arithmetic when everything is a constant, else term by term, each term on the
/// outermost axis whose stride divides it.
fn split_offset(offset: &Dim, producer: &[Dim], cs: &[Dim]) -> Option<Vec<Dim>> {
    let constants = |v: &[Dim]| v.iter().map(Dim::as_const).collect::<Option<Vec<i64>>>();
    if let (Some(o), Some(n), Some(c)) = (offset.as_const(), constants(producer), constants(cs)) {
        let len: i64 = n.iter().product();
        if o < 0 || o >= len {
            return None;
        }
        return Some(
            n.iter()
                .zip(&c)
                .map(|(&n, &c)| Dim::from((o / c) % n))
                .collect(),
        );
    }
    let mut split = vec![Dim::from(0i64); producer.len()];
    for term in offset.terms() {
        let (d, q) = (0..producer.len()).find_map(|d| Some((d, term.div_exact(&cs[d])?)))?;
        split[d] = &split[d] + &q;
    }
    let fits = split
        .iter()
        .zip(producer)
        .all(|(o, n)| at_most(&Dim::from(0i64), o) && (o.is_zero() || less(o, n)));
    fits.then_some(split)
}

impl IndexMap {
    /// A producer access `A[u + Σ_d j_d t_d]` as an access over the consumer's axes.
    pub(crate) fn apply(&self, a: &Access) -> Access {
        let offset = self
            .offset
            .iter()
            .zip(&a.strides)
            .map(|(o, t)| o * t)
            .sum::<Dim>();
        Access {
            buf: a.buf,
            offset: &a.offset + &offset,
            strides: self
                .axes
                .iter()
                .map(|axis| {
                    axis.as_ref()
                        .map_or(Dim::from(0i64), |(d, m)| m * &a.strides[*d])
                })
                .collect(),
        }
    }

    /// Whether distinct consumer indices in `space` map to distinct producer indices.
    /// Producer axes are independent, so per axis the consumer axes moving it must not
    /// overlap: ordered by step, each step is beyond everything the smaller ones reach.
    /// Steps whose order no binding of the symbols settles count as overlapping.
    pub(crate) fn injective(&self, space: &[Dim]) -> bool {
        let mut steps: Vec<(usize, Dim, Dim)> = Vec::new();
        for (k, axis) in self.axes.iter().enumerate() {
            match axis {
                _ if space[k].is_one() => {}
                None => return false,
                Some((d, m)) if (-m.clone()).known_nonnegative() => {
                    steps.push((*d, -m.clone(), space[k].clone()))
                }
                Some((d, m)) => steps.push((*d, m.clone(), space[k].clone())),
            }
        }
        let axes: std::collections::BTreeSet<usize> = steps.iter().map(|s| s.0).collect();
        axes.into_iter().all(|d| {
            let mut mine: Vec<(Dim, Dim)> = steps
                .iter()
                .filter(|s| s.0 == d)
                .map(|s| (s.1.clone(), s.2.clone()))
                .collect();
            if !order_by_step(&mut mine) {
                return false;
            }
            let mut reach = Dim::from(0i64);
            mine.into_iter().all(|(m, n)| {
                let beyond = less(&reach, &m);
                reach = &reach + &(&m * &(&n - &Dim::from(1i64)));
                beyond
            })
        })
    }
}

/// Sorts `(step, extent)` pairs by step, ascending; false when two steps have no order
/// that holds for every binding of the symbols.
fn order_by_step(steps: &mut [(Dim, Dim)]) -> bool {
    for i in 1..steps.len() {
        let mut j = i;
        while j > 0 && !at_most(&steps[j - 1].0, &steps[j].0) {
            if !at_most(&steps[j].0, &steps[j - 1].0) {
                return false;
            }
            steps.swap(j - 1, j);
            j -= 1;
        }
    }
    steps.windows(2).all(|w| at_most(&w[0].0, &w[1].0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(buf: BufId, offset: i64, strides: &[i64]) -> Access {
        Access {
            buf,
            offset: Dim::from(offset),
            strides: dims(strides),
        }
    }

    fn dims(v: &[i64]) -> Vec<Dim> {
        v.iter().map(|&n| Dim::from(n)).collect()
    }

    /// The consumer's `load` of a producer of shape `producer`, composed with the producer's
    /// access `inner`.
    fn through(load: &Access, space: &[i64], producer: &[i64], inner: &Access) -> Access {
        compose(load, &dims(space), &dims(producer))
            .expect("composes")
            .apply(inner)
    }

    #[test]
    fn transpose_of_a_transpose_reads_the_source_in_order() {
        // B = transpose(X[3, 2]) : [2, 3]; the consumer reads B transposed again: [3, 2].
        let load = access(9, 0, &[1, 3]);
        let map = compose(&load, &dims(&[3, 2]), &dims(&[2, 3])).unwrap();
        assert!(map.injective(&dims(&[3, 2])));
        assert_eq!(map.apply(&access(1, 0, &[1, 2])), access(1, 0, &[2, 1]));
    }

    #[test]
    fn slice_with_offset_and_step_moves_the_inner_offset() {
        // B : [4, 6]; the consumer reads B[1..3, 2..6 step 2] : [2, 2].
        let load = access(9, 8, &[6, 2]);
        let inner = access(1, 5, &[10, 1]);
        assert_eq!(
            through(&load, &[2, 2], &[4, 6], &inner),
            access(1, 5 + 10 + 2, &[10, 2])
        );
        // Reversed along the last axis: B[3, 5..0 step -2].
        let load = access(9, 3 * 6 + 5, &[-2]);
        assert_eq!(
            through(&load, &[3], &[4, 6], &inner),
            access(1, 5 + 30 + 5, &[-2])
        );
    }

    #[test]
    fn broadcasts_compose_but_a_broadcast_read_is_not_injective() {
        // The producer broadcasts X[8] to [4, 8]; the consumer reads B whole.
        let map = compose(&access(9, 0, &[8, 1]), &dims(&[4, 8]), &dims(&[4, 8])).unwrap();
        assert!(map.injective(&dims(&[4, 8])));
        assert_eq!(map.apply(&access(1, 0, &[0, 1])), access(1, 0, &[0, 1]));
        // The consumer broadcasts B[8] to [4, 8]: every element is read four times.
        let map = compose(&access(9, 0, &[0, 1]), &dims(&[4, 8]), &dims(&[8])).unwrap();
        assert!(!map.injective(&dims(&[4, 8])));
        assert_eq!(map.apply(&access(1, 3, &[2])), access(1, 3, &[0, 2]));
        // A unit axis may have any stride.
        let map = compose(&access(9, 0, &[0, 1]), &dims(&[1, 8]), &dims(&[8])).unwrap();
        assert!(map.injective(&dims(&[1, 8])));
    }

    #[test]
    fn a_reshape_that_merges_axes_composes_only_against_merged_axes() {
        // B : [2, 3, 4] read as [6, 4] needs a carry from axis 2 into axis 1...
        assert_eq!(
            compose(&access(9, 0, &[4, 1]), &dims(&[6, 4]), &dims(&[2, 3, 4])),
            None
        );
        // ...but against B : [24] (the producer's merged axes) it is two steps of one axis.
        let map = compose(&access(9, 0, &[4, 1]), &dims(&[6, 4]), &dims(&[24])).unwrap();
        assert!(map.injective(&dims(&[6, 4])));
        assert_eq!(map.apply(&access(1, 0, &[1])), access(1, 0, &[4, 1]));
        // Overlapping steps of one axis compose, and are caught as not injective.
        let map = compose(&access(9, 0, &[2, 1]), &dims(&[2, 4]), &dims(&[8])).unwrap();
        assert!(!map.injective(&dims(&[2, 4])));
    }

    #[test]
    fn carries_and_foreign_strides_are_rejected() {
        // A window of 5 starting at column 3 of a 6-wide row runs into the next row.
        assert_eq!(
            compose(&access(9, 3, &[1]), &dims(&[5]), &dims(&[4, 6])),
            None
        );
        // A stride of 4 over rows of 6 leaves the row at the second step.
        assert_eq!(
            compose(&access(9, 0, &[4]), &dims(&[2]), &dims(&[4, 6])),
            Some(IndexMap {
                offset: dims(&[0, 0]),
                axes: vec![Some((1, Dim::from(4i64)))],
            })
        );
        assert_eq!(
            compose(&access(9, 0, &[4]), &dims(&[3]), &dims(&[4, 6])),
            None
        );
        // Offsets outside the buffer, empty spaces.
        assert_eq!(
            compose(&access(9, 24, &[1]), &dims(&[1]), &dims(&[4, 6])),
            None
        );
        assert_eq!(
            compose(&access(9, 0, &[1]), &dims(&[0]), &dims(&[4, 6])),
            None
        );
    }
}
