//! Where a kernel's affine reads and writes could leave their buffer at some binding.
//!
//! Kernels read a symbolic axis as never broadcasting ([`crate::schedule::broadcast_strides`]),
//! and inference may type `min(x[n], y[64])` as `[64]` because `n` could be 64. At `n = 1`
//! the interpreter broadcasts `x`; the kernel would read 64 elements of a buffer of one. The
//! reach of every affine access that is not provably inside its buffer becomes an
//! [`Condition::InBounds`] assumption, checked at each binding before anything runs.
//! Gathers and scatters check their data-dependent terms as they run; runtime calls size
//! themselves from the types, which [`kiln_ir::assumptions`] checks.

use crate::kernel::{Access, Expr, ExprNode, Kernel, Program};
use kiln_ir::{Assumption, Condition, Dim, Graph};

/// The accesses of `p`'s loop, reduction and row kernels that may leave their buffer,
/// each named by the node of `g` the kernel comes from.
pub fn access_assumptions(g: &Graph, p: &Program) -> Vec<Assumption> {
    let mut out: Vec<Assumption> = Vec::new();
    for (k, &node) in p.kernels.iter().zip(&p.kernel_nodes) {
        for (access, space) in accesses(k) {
            let Some(cond) = reach(p, access, &space) else {
                continue;
            };
            let a = Assumption {
                node: g.nodes[node].name.clone(),
                op: g.nodes[node].op.name(),
                cond,
            };
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// Every affine access of `k`, with the loop extents its strides run over.
fn accesses(k: &Kernel) -> Vec<(&Access, Vec<Dim>)> {
    match k {
        Kernel::Loop(l) => {
            let mut v = loads(&l.expr, &l.shape);
            if l.scatter.is_empty() {
                v.push((&l.out, l.shape.clone()));
            }
            v
        }
        Kernel::Reduce(r) => {
            let all: Vec<Dim> = r.shape.iter().chain(&r.reduced).cloned().collect();
            let mut v = loads(&r.value, &all);
            v.extend(loads(&r.post, &r.shape));
            v.push((&r.out, r.shape.clone()));
            v
        }
        Kernel::Row(r) => {
            let mut all = r.shape.clone();
            all.push(r.len.clone());
            let mut v: Vec<_> = (r.stats.iter())
                .flat_map(|s| loads(&s.value, &all))
                .collect();
            v.extend(loads(&r.map, &all));
            v.push((&r.out, all));
            v
        }
        Kernel::Call(_) => Vec::new(),
    }
}

/// The plain loads of `e`, each over `space`.
fn loads<'e>(e: &'e Expr, space: &[Dim]) -> Vec<(&'e Access, Vec<Dim>)> {
    (e.nodes.iter())
        .filter_map(|n| match n {
            ExprNode::Load(a) => Some((a, space.to_vec())),
            _ => None,
        })
        .collect()
}

/// The condition that `a`, over `space`, stays inside its buffer; `None` when it provably
/// does, or when a stride's sign is unknown (then nothing can be said of its reach).
fn reach(p: &Program, a: &Access, space: &[Dim]) -> Option<Condition> {
    let one = Dim::from(1i64);
    let (mut low, mut high) = (a.offset.clone(), a.offset.clone());
    for (n, s) in space.iter().zip(&a.strides) {
        let step = &(n - &one) * s;
        if s.known_nonnegative() {
            high = high + step;
        } else if (-s.clone()).known_nonnegative() {
            low = low + step;
        } else {
            return None;
        }
    }
    let len = p.buffers[a.buf].len.clone();
    let room = len.clone() - one - high.clone();
    if low.known_nonnegative() && room.known_nonnegative() {
        return None;
    }
    Some(Condition::InBounds {
        extents: space.to_vec(),
        low,
        high,
        len,
    })
}
