//! Memory planning: every temporary buffer of a [`Program`] gets an offset in one arena.
//!
//! A buffer lives from the first kernel that writes it to the last kernel that reads it
//! (graph outputs to the end). An elementwise loop nest may write its output over an input
//! that dies in that kernel when both are read and written at the same positions (in
//! place). Lifetimes and in-place pairs depend only on the program's structure, so
//! [`lifetimes`] finds them once, symbolically; [`Lifetimes::place`] then assigns offsets
//! for one binding of the symbols, in kernel order, best fit from the blocks freed by
//! buffers that died earlier: a pass over the buffers, cheap enough to run per shape.

use crate::kernel::{Access, BufferKind, Kernel, Program};
use kiln_ir::Bindings;
use serde::{Deserialize, Serialize};

/// Arena offsets are multiples of this (a cache line, and enough for any vector load).
pub const ALIGN: usize = 64;

/// Where each temporary lives in the arena.
#[derive(Clone, Debug, Default)]
pub struct MemoryPlan {
    /// Byte offset of each buffer in the arena (`None` for inputs and constants).
    pub offsets: Vec<Option<usize>>,
    /// Arena size in bytes: the peak of the plan.
    pub arena_bytes: usize,
    /// Live range of each buffer: (first kernel, last kernel), for reports.
    pub live: Vec<Option<(usize, usize)>>,
    /// Buffers that share an input's memory by running in place.
    pub in_place: usize,
}

/// What the plan knows before any size: when each buffer lives, and which outputs take
/// over an input's block. Artifacts carry it, to place their arena per shape.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Lifetimes {
    /// Live range of each buffer: (first kernel, last kernel).
    live: Vec<Option<(usize, usize)>>,
    /// The temporaries each kernel writes first, in order, with the input whose block each
    /// takes over (`None`: a block of its own).
    writes: Vec<Vec<(usize, Option<usize>)>>,
    /// The temporaries whose block is freed after each kernel.
    frees: Vec<Vec<usize>>,
    /// How many outputs run in place.
    in_place: usize,
}

/// The lifetimes and in-place pairs of `p`'s temporaries.
pub fn lifetimes(p: &Program) -> Lifetimes {
    let n = p.buffers.len();
    let live = live_ranges(p);
    let mut placed = vec![false; n];
    // Buffers whose block was taken over by an in-place output: not freed on their death.
    let mut handed_over = vec![false; n];
    let mut writes = Vec::with_capacity(p.kernels.len());
    let mut frees = Vec::with_capacity(p.kernels.len());
    let mut in_place = 0;
    for (k, kernel) in p.kernels.iter().enumerate() {
        let mut first = Vec::new();
        for b in kernel.writes() {
            if placed[b] || !is_temp(p, b) {
                continue;
            }
            let src = in_place_source(p, kernel, k, b, &live, &placed, &handed_over);
            if let Some(src) = src {
                handed_over[src] = true;
                in_place += 1;
            }
            placed[b] = true;
            first.push((b, src));
        }
        writes.push(first);
        let dead = live.iter().enumerate().filter(|(b, range)| {
            matches!(range, Some((_, last)) if *last == k) && !handed_over[*b] && placed[*b]
        });
        frees.push(dead.map(|(b, _)| b).collect());
    }
    Lifetimes {
        live,
        writes,
        frees,
        in_place,
    }
}

impl Lifetimes {
    /// Offsets for buffers of `bytes` each (by buffer; only temporaries are read).
    pub fn place(&self, bytes: &[usize]) -> MemoryPlan {
        let mut offsets: Vec<Option<usize>> = vec![None; bytes.len()];
        let mut free = FreeList::default();
        for (first, dead) in self.writes.iter().zip(&self.frees) {
            for &(b, src) in first {
                offsets[b] = match src {
                    Some(src) => offsets[src],
                    None => Some(free.take(align(bytes[b]))),
                };
            }
            for &b in dead {
                if let Some(off) = offsets[b] {
                    free.give(off, align(bytes[b]));
                }
            }
        }
        MemoryPlan {
            offsets,
            arena_bytes: free.end,
            live: self.live.clone(),
            in_place: self.in_place,
        }
    }
}

/// Plans the arena of `p` at `bindings`; `None` when a buffer's size mentions an unbound
/// symbol or overflows.
///
/// ```
/// use kiln_kernel::{plan::plan, schedule::schedule};
/// use kiln_ir::{parse, Bindings};
/// let g = parse(
///     "graph @g(%x: f32[1024]) -> f32[1024] {
///         %a = exp %x
///         %b = neg %a
///         %c = exp %b
///         return %c
///     }",
/// )
/// .unwrap();
/// let p = schedule(&g, &Bindings::new()).unwrap();
/// let m = plan(&p, &Bindings::new()).unwrap();
/// // `neg` and the second `exp` run in place: one block holds all three results.
/// assert_eq!(m.in_place, 2);
/// assert_eq!(m.arena_bytes, 4096);
/// ```
pub fn plan(p: &Program, bindings: &Bindings) -> Option<MemoryPlan> {
    Some(lifetimes(p).place(&p.buffer_bytes(bindings)?))
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN).max(1) * ALIGN
}

fn is_temp(p: &Program, b: usize) -> bool {
    matches!(p.buffers[b].kind, BufferKind::Temp)
}

fn live_ranges(p: &Program) -> Vec<Option<(usize, usize)>> {
    let mut live: Vec<Option<(usize, usize)>> = vec![None; p.buffers.len()];
    let mut touch = |b: usize, k: usize| {
        let r = live[b].get_or_insert((k, k));
        r.1 = r.1.max(k);
    };
    for (k, kernel) in p.kernels.iter().enumerate() {
        for b in kernel.writes().into_iter().chain(kernel.reads()) {
            touch(b, k);
        }
    }
    let end = p.kernels.len();
    for &b in &p.outputs {
        live[b] = Some((live[b].map_or(0, |r| r.0), end));
    }
    live
}

/// An input of `kernel` that dies there, whose block `out` may reuse: only loop nests
/// that read it exactly where they write, with the same element size and count (element
/// `i` of the input is read before element `i` of the output is written, and by the same
/// iteration).
fn in_place_source(
    p: &Program,
    kernel: &Kernel,
    k: usize,
    out: usize,
    live: &[Option<(usize, usize)>],
    placed: &[bool],
    handed_over: &[bool],
) -> Option<usize> {
    let Kernel::Loop(nest) = kernel else {
        return None;
    };
    if !nest.out.offset.is_zero() || nest.out.buf != out {
        return None;
    }
    let mut loads = nest.expr.nodes.iter().filter_map(|n| match n {
        crate::kernel::ExprNode::Load(a) => Some(a),
        _ => None,
    });
    // Strides of unit axes never move an address, and fused loads leave them zero.
    let same_position = |a: &Access, b: &Access| {
        a.offset == b.offset
            && nest
                .shape
                .iter()
                .zip(a.strides.iter().zip(&b.strides))
                .all(|(n, (x, y))| n.is_one() || x == y)
    };
    let candidate = loads.clone().find(|a| {
        same_position(a, &nest.out)
            && is_temp(p, a.buf)
            && placed[a.buf]
            && !handed_over[a.buf]
            && live[a.buf].is_some_and(|r| r.1 == k)
            && p.buffers[a.buf].len == p.buffers[out].len
            && p.buffers[a.buf].dtype.size_bytes() == p.buffers[out].dtype.size_bytes()
    })?;
    // Every other read of that buffer in the nest must be at the same position too, and
    // gathers may read anywhere.
    let same_everywhere = loads.all(|a| a.buf != candidate.buf || same_position(a, candidate))
        && !nest.expr.nodes.iter().any(|n| {
            matches!(n, crate::kernel::ExprNode::Gather { access, .. } if access.buf == candidate.buf)
        });
    same_everywhere.then_some(candidate.buf)
}

/// Free blocks of the arena, kept sorted and coalesced; the arena grows at `end`.
#[derive(Default)]
struct FreeList {
    blocks: Vec<(usize, usize)>,
    end: usize,
}

impl FreeList {
    /// Best fit, or growth at the end (absorbing a free block that touches the end).
    fn take(&mut self, size: usize) -> usize {
        let best = self
            .blocks
            .iter()
            .enumerate()
            .filter(|(_, (_, s))| *s >= size)
            .min_by_key(|(_, (_, s))| *s)
            .map(|(i, _)| i);
        if let Some(i) = best {
            let (off, s) = self.blocks[i];
            if s == size {
                self.blocks.remove(i);
            } else {
                self.blocks[i] = (off + size, s - size);
            }
            return off;
        }
        if let Some(&(off, s)) = self.blocks.last() {
            if off + s == self.end {
                self.blocks.pop();
                self.end = off + size;
                return off;
            }
        }
        let off = self.end;
        self.end += size;
        off
    }

    fn give(&mut self, off: usize, size: usize) {
        let i = self.blocks.partition_point(|&(o, _)| o < off);
        self.blocks.insert(i, (off, size));
        if i + 1 < self.blocks.len() && self.blocks[i].0 + self.blocks[i].1 == self.blocks[i + 1].0
        {
            self.blocks[i].1 += self.blocks[i + 1].1;
            self.blocks.remove(i + 1);
        }
        if i > 0 && self.blocks[i - 1].0 + self.blocks[i - 1].1 == self.blocks[i].0 {
            self.blocks[i - 1].1 += self.blocks[i].1;
            self.blocks.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::plan;
    use crate::schedule::schedule;
    use kiln_ir::{parse, Bindings};

    #[test]
    fn unit_axes_do_not_prevent_running_in_place() {
        // The loads' stride on the unit axis is 0, the store's is 256.
        let g = parse(
            "graph @g(%x: f32[1, 256]) -> f32[1, 256] {
                %a = exp %x
                %b = neg %a
                %c = exp %b
                return %c
            }",
        )
        .unwrap();
        let m = plan(&schedule(&g, &Bindings::new()).unwrap(), &Bindings::new()).unwrap();
        assert_eq!(m.in_place, 2);
        assert_eq!(m.arena_bytes, 1024);
    }
}
