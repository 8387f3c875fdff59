//! A program compiled for every shape, as data ([`Symbolic`]): what the executor needs to
//! lay it out at one binding of the symbols. The JIT and ahead-of-time artifacts both bind
//! it per shape ([`Symbolic::bind`]): buffer sizes evaluated, the arena placed by the
//! memory plan's per-shape half, the runtime calls resolved. No code is generated.

use crate::call::{size, BufId, Call, ResolveError};
use crate::exec::{RunPlan, Step, StepNode};
use kiln_ir::{Assumption, Bindings, Dim};
use kiln_kernel::call as desc;
use kiln_kernel::plan::{Lifetimes, MemoryPlan};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// One step of a [`Symbolic`] program.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SymbolicStep {
    /// Generated code over `0..extent`.
    Kernel {
        /// Iterations of the outermost loop.
        extent: Dim,
        /// Element operations, to decide whether splitting pays.
        work: Dim,
        /// The iterations must run in order on one thread (a scatter).
        serial: bool,
    },
    /// A runtime call, resolved at each binding.
    Call(desc::Call),
}

/// A program compiled with its symbols free.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Symbolic {
    /// The symbols, in the order the kernels read their values.
    pub symbols: Vec<String>,
    /// Bytes of every buffer.
    pub bytes: Vec<Dim>,
    /// Lifetimes and in-place pairs of the temporaries.
    pub lifetimes: Lifetimes,
    /// The steps, in order.
    pub steps: Vec<SymbolicStep>,
    /// Slot and byte offset of each buffer (temporaries in slots of their own).
    pub slots: Vec<(u32, usize)>,
    /// The temporaries, in slot order from `first_temp_slot`.
    pub temps: Vec<BufId>,
    /// The slot of the first temporary.
    pub first_temp_slot: u32,
    /// The graph node of each step, for errors.
    pub nodes: Vec<StepNode>,
    /// Buffer and shape of each graph output.
    pub outputs: Vec<(BufId, Vec<Dim>)>,
    /// What the graph's types assume of the symbols; a binding that breaks one is refused.
    pub assumptions: Vec<Assumption>,
    /// Where each assumption last held.
    #[serde(skip)]
    pub held: Held,
}

/// The values of each assumption's symbols at which it last held. Whether an assumption
/// holds depends on its own symbols only, so a binding that agrees on them need not check
/// it again: a decode step, where only the past length moves, checks just the assumptions
/// that mention it (90 checks took 0.28 ms of every Llama-style step).
#[derive(Default)]
pub struct Held(Mutex<Vec<Option<HeldAt>>>);

/// An assumption's symbols, and their values where it last held.
type HeldAt = (Vec<String>, Vec<Option<i64>>);

impl Clone for Held {
    fn clone(&self) -> Held {
        Held::default()
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

/// Why a [`Symbolic`] program cannot be laid out at a binding.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BindError {
    /// The shapes break what the graph's types, or its kernels, assume (a slice past its
    /// axis, a symbol unified with a constant, a symbolic axis read as never broadcasting).
    #[error("node `{node}` ({op}) cannot run at these input shapes: it needs {needs}: {why}")]
    Assumption {
        /// The node's source name.
        node: String,
        /// Its op.
        op: String,
        /// The condition, as written.
        needs: String,
        /// How the shapes break it.
        why: String,
    },
    /// A size has no value there.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

/// A [`Symbolic`] program at one binding.
#[derive(Clone, Debug)]
pub struct Bound {
    /// What the executor runs.
    pub run: RunPlan,
    /// Where the temporaries live.
    pub plan: MemoryPlan,
    /// Buffer and shape of each graph output.
    pub outputs: Vec<(BufId, Vec<usize>)>,
}

impl Symbolic {
    /// Checks every assumption at `b` that did not hold at the same values of its symbols
    /// before.
    fn check_assumptions(&self, b: &Bindings) -> Result<(), BindError> {
        let mut held = self.held.0.lock().unwrap_or_else(|e| e.into_inner());
        held.resize(self.assumptions.len(), None);
        for (a, last) in self.assumptions.iter().zip(held.iter_mut()) {
            let symbols = match last.take() {
                Some((symbols, values)) => {
                    let now: Vec<Option<i64>> = symbols.iter().map(|s| b.get(s).copied()).collect();
                    if now == values {
                        *last = Some((symbols, values));
                        continue;
                    }
                    symbols
                }
                None => a.cond.symbols(),
            };
            a.check(b).map_err(|why| BindError::Assumption {
                node: a.node.clone(),
                op: a.op.clone(),
                needs: a.cond.to_string(),
                why,
            })?;
            let values = symbols.iter().map(|s| b.get(s).copied()).collect();
            *last = Some((symbols, values));
        }
        Ok(())
    }

    /// The program at `b`; an error names an assumption `b` breaks, or a size with no value
    /// there (unbound, negative or overflowing). The caller checks the arena against its
    /// memory limit.
    pub fn bind(&self, b: &Bindings) -> Result<Bound, BindError> {
        self.check_assumptions(b)?;
        let bytes: Vec<usize> = self
            .bytes
            .iter()
            .map(|d| size(d, b))
            .collect::<Result<_, _>>()?;
        let plan = self.lifetimes.place(&bytes);
        let steps = (self.steps.iter())
            .map(|s| {
                Ok(match s {
                    SymbolicStep::Kernel {
                        extent,
                        work,
                        serial,
                    } => Step::Kernel {
                        extent: size(extent, b)? as u64,
                        work: size(work, b)?,
                        serial: *serial,
                    },
                    SymbolicStep::Call(c) => Step::Call(Box::new(Call::resolve(c, b)?)),
                })
            })
            .collect::<Result<_, ResolveError>>()?;
        let dims = (self.symbols.iter())
            .map(|s| {
                b.get(s).copied().ok_or_else(|| ResolveError {
                    dim: s.clone(),
                    why: "unbound",
                })
            })
            .collect::<Result<_, _>>()?;
        let arena_slots = (self.temps.iter().enumerate())
            .map(|(i, &t)| {
                (
                    self.first_temp_slot + i as u32,
                    plan.offsets[t].unwrap_or(0),
                )
            })
            .collect();
        let outputs = (self.outputs.iter())
            .map(|(buf, shape)| {
                let shape = shape.iter().map(|d| size(d, b)).collect::<Result<_, _>>()?;
                Ok((*buf, shape))
            })
            .collect::<Result<_, ResolveError>>()?;
        let run = RunPlan {
            steps,
            slots: self.slots.clone(),
            arena_bytes: plan.arena_bytes,
            nodes: self.nodes.clone(),
            dims,
            arena_slots,
        };
        Ok(Bound { run, plan, outputs })
    }
}

/// `call` resolved for packing its weight, when the weight's sizes are constants (any
/// binding of `symbols` then gives the same weight operand).
pub fn constant_weight_call(
    call: &kiln_kernel::call::Call,
    symbols: &[String],
) -> Option<crate::call::Call> {
    use kiln_kernel::call::Call as Desc;
    let constant = match call {
        Desc::MatMul(mm) => {
            let b = &mm.b;
            [&mm.k, &mm.n, &b.offset, &b.row_stride, &b.col_stride]
                .into_iter()
                .chain(&b.batch_strides)
                .all(Dim::is_const)
        }
        Desc::QuantLinear(q) => q.k.is_const() && q.n.is_const(),
        _ => false,
    };
    if !constant {
        return None;
    }
    let ones: Bindings = symbols.iter().map(|s| (s.clone(), 1)).collect();
    crate::call::Call::resolve(call, &ones).ok()
}

/// The most recently used values by key, newest first, at most a fixed count: the layouts
/// kept per input shapes (the JIT's and an artifact session's).
#[derive(Debug)]
pub struct Recent<K, V> {
    entries: Vec<(K, V)>,
    capacity: usize,
}

impl<K: PartialEq, V: Clone> Recent<K, V> {
    /// An empty cache of at most `capacity` entries.
    pub fn new(capacity: usize) -> Recent<K, V> {
        Recent {
            entries: Vec::new(),
            capacity,
        }
    }

    /// The value for `key`, which becomes the newest.
    pub fn get<Q: PartialEq<K> + ?Sized>(&mut self, key: &Q) -> Option<V> {
        let i = self.entries.iter().position(|(k, _)| key == k)?;
        let hit = self.entries.remove(i);
        let value = hit.1.clone();
        self.entries.insert(0, hit);
        Some(value)
    }

    /// Adds `value` as the newest, dropping the oldest beyond the capacity.
    pub fn insert(&mut self, key: K, value: V) {
        self.entries.insert(0, (key, value));
        self.entries.truncate(self.capacity);
    }
}
