//! DAG-aware choice: one e-node per class such that the program the choices span is cheap,
//! counting every class it runs once however many users share it.
//!
//! A greedy tree extractor (egg's `Extractor`) costs each class as its e-node plus its
//! operands' costs, so a value two users share is paid twice. That makes it prefer, for
//! one user, a fused kernel that recomputes the shared value (a linear with a GELU
//! epilogue beside a plain matmul other users still need: two GEMMs) over reusing it.
//! Here a choice's cost is the sum of [`cost::own`] over the *set* of classes it needs,
//! kept as a bitset per class (the "faster greedy DAG" of extraction-gym): combining
//! operands is a union, so shared work counts once.
//!
//! The choices are updated to a fixed point with a worklist: a class is re-chosen when an
//! operand's choice changes. At the fixed point every class's set is its chosen e-node's
//! class plus its operands' sets, and no e-node whose operands' sets hold its own class is
//! chosen, so the choices are acyclic. Costs carried in a set are those of the choices at
//! the time it was built, so this is a heuristic, not an optimum, like every polynomial
//! extractor.

use super::cost;
use super::egraph::{EGraph, ENode, Term};
use egg::Id;
use std::collections::{HashMap, VecDeque};

/// The chosen e-node of every class that has one.
pub type Choices = HashMap<Id, ENode>;

/// Chooses an e-node per class for the program that computes `roots`, or `None` when the
/// worklist does not settle within `evaluations_per_enode` evaluations per e-node on
/// average (the caller then falls back to a tree extractor, which always settles).
pub fn choose(eg: &EGraph, roots: &[Id], evaluations_per_enode: usize) -> Option<Choices> {
    let mut dag = Dag::new(eg);
    let mut budget = evaluations_per_enode.saturating_mul(eg.total_size().max(1));
    while let Some(c) = dag.queue.pop_front() {
        dag.queued[c] = false;
        budget = budget.checked_sub(1)?;
        let new = dag.evaluate(c);
        if !same(&new, &dag.best[c]) {
            if let Some(choice) = &new {
                dag.own_best[c] = choice.own;
                dag.op_best[c] = choice.op;
            }
            dag.best[c] = new;
            for p in dag.parents[c].clone() {
                dag.enqueue(p);
            }
        }
    }
    let mut chosen: Vec<Option<usize>> = dag.best.iter().map(|b| Some(b.as_ref()?.node)).collect();
    let roots: Vec<usize> = roots.iter().map(|r| dag.index[&eg.find(*r)]).collect();
    dag.improve(&mut chosen, &roots, IMPROVEMENT_PASSES);
    Some(dag.choices(&chosen))
}

/// Rounds of single-class switches after the fixed point (each round tries every
/// alternative of every class the program uses; the last one usually changes nothing).
const IMPROVEMENT_PASSES: usize = 3;

/// One class's current choice.
#[derive(Clone, Debug)]
struct Choice {
    /// Index of the e-node in its class's node list.
    node: usize,
    /// The classes the choice needs, itself included, by dense index.
    set: Vec<u64>,
    /// The sum of the own costs over `set`.
    cost: u64,
    /// The op nodes in `set` (ties in cost go to fewer nodes).
    nodes: u32,
    /// The e-node's own cost.
    own: u64,
    /// Whether the e-node is an op (counted in `nodes`).
    op: bool,
}

fn same(a: &Option<Choice>, b: &Option<Choice>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.node == b.node && a.cost == b.cost && a.set == b.set,
        _ => false,
    }
}

/// An e-node in dense terms; `None` in [`Dag::enodes`] for one that uses its own class
/// directly, which can never be chosen.
#[derive(Clone, Debug)]
struct Node {
    kids: Vec<usize>,
    own: u64,
    op: bool,
}

struct Dag<'e> {
    eg: &'e EGraph,
    /// Classes by dense index, in id order (so the result is deterministic).
    ids: Vec<Id>,
    index: HashMap<Id, usize>,
    /// Parent classes of each class (users of its value), deduplicated.
    parents: Vec<Vec<usize>>,
    /// Per class, per e-node: its operand classes (dense), own cost and op-ness.
    enodes: Vec<Vec<Option<Node>>>,
    best: Vec<Option<Choice>>,
    /// The own cost and op-ness of each class's latest choice, read when a set that holds
    /// the class is merged into another.
    own_best: Vec<u64>,
    op_best: Vec<bool>,
    queue: VecDeque<usize>,
    queued: Vec<bool>,
}

impl<'e> Dag<'e> {
    fn new(eg: &'e EGraph) -> Dag<'e> {
        let mut ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
        ids.sort();
        let index: HashMap<Id, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut parents = vec![Vec::new(); ids.len()];
        let mut enodes = Vec::with_capacity(ids.len());
        for (p, id) in ids.iter().enumerate() {
            let mut nodes = Vec::with_capacity(eg[*id].nodes.len());
            for enode in &eg[*id].nodes {
                let mut kids: Vec<usize> = enode.args.iter().map(|a| index[&eg.find(*a)]).collect();
                kids.sort_unstable();
                kids.dedup();
                for &k in &kids {
                    parents[k].push(p);
                }
                let own = cost::own(eg, *id, enode);
                let op = matches!(eg.analysis.term(enode.op), Term::Op(_));
                nodes.push((!kids.contains(&p)).then_some(Node { kids, own, op }));
            }
            enodes.push(nodes);
        }
        for p in &mut parents {
            p.sort_unstable();
            p.dedup();
        }
        let n = ids.len();
        Dag {
            eg,
            ids,
            index,
            parents,
            enodes,
            best: vec![None; n],
            own_best: vec![0; n],
            op_best: vec![false; n],
            queue: (0..n).collect(),
            queued: vec![true; n],
        }
    }

    fn enqueue(&mut self, c: usize) {
        if !std::mem::replace(&mut self.queued[c], true) {
            self.queue.push_back(c);
        }
    }

    /// The cheapest acyclic e-node of class `c` given its operands' current choices.
    fn evaluate(&self, c: usize) -> Option<Choice> {
        let mut best: Option<Choice> = None;
        for (k, node) in self.enodes[c].iter().enumerate() {
            let Some(choice) = node.as_ref().and_then(|n| self.candidate(c, n, k)) else {
                continue;
            };
            let better = best
                .as_ref()
                .is_none_or(|b| (choice.cost, choice.nodes) < (b.cost, b.nodes));
            if better {
                best = Some(choice);
            }
        }
        best
    }

    /// E-node `k` of class `c` with its operands' choices, unless one is missing or needs
    /// `c` itself (a cycle).
    fn candidate(&self, c: usize, node: &Node, k: usize) -> Option<Choice> {
        let mut kids: Vec<&Choice> = Vec::with_capacity(node.kids.len());
        for &a in &node.kids {
            let kid = self.best[a].as_ref()?;
            if has(&kid.set, c) {
                return None;
            }
            kids.push(kid);
        }
        // Start from the costliest operand's set and add what the others need beyond it.
        let base = (0..kids.len()).max_by_key(|&i| (kids[i].cost, std::cmp::Reverse(i)));
        let (mut set, mut cost, mut nodes) = match base {
            Some(i) => (kids[i].set.clone(), kids[i].cost, kids[i].nodes),
            None => (vec![0; self.ids.len().div_ceil(64)], 0, 0),
        };
        for kid in kids.iter().enumerate().filter(|(i, _)| Some(*i) != base) {
            for (w, (mine, theirs)) in set.iter_mut().zip(&kid.1.set).enumerate() {
                let mut new = theirs & !*mine;
                *mine |= theirs;
                while new != 0 {
                    let bit = w * 64 + new.trailing_zeros() as usize;
                    cost = cost.saturating_add(self.own_best[bit]);
                    nodes += u32::from(self.op_best[bit]);
                    new &= new - 1;
                }
            }
        }
        set[c / 64] |= 1 << (c % 64);
        Some(Choice {
            node: k,
            set,
            cost: cost.saturating_add(node.own),
            nodes: nodes + u32::from(node.op),
            own: node.own,
            op: node.op,
        })
    }

    /// Local search over the whole program: switch one class's e-node at a time and keep
    /// the switch when the program that computes `roots` gets cheaper. The fixed point
    /// chooses each class for itself, so two classes that could share work (a product
    /// that is an output and also feeds a GELU that a linear could absorb) only share it
    /// when their choices happen to meet; here the program's cost decides.
    fn improve(&self, chosen: &mut [Option<usize>], roots: &[usize], passes: usize) {
        let Some(mut current) = self.program_cost(chosen, roots) else {
            return;
        };
        for _ in 0..passes {
            let mut improved = false;
            for c in self.reachable(chosen, roots) {
                let mut keep = chosen[c];
                for (k, node) in self.enodes[c].iter().enumerate() {
                    let usable = node
                        .as_ref()
                        .is_some_and(|n| n.kids.iter().all(|&x| chosen[x].is_some()));
                    if Some(k) == keep || !usable {
                        continue;
                    }
                    chosen[c] = Some(k);
                    match self.program_cost(chosen, roots) {
                        Some(cost) if cost < current => {
                            current = cost;
                            keep = Some(k);
                            improved = true;
                        }
                        _ => chosen[c] = keep,
                    }
                }
            }
            if !improved {
                break;
            }
        }
    }

    /// The classes the program that computes `roots` runs, in dense order.
    fn reachable(&self, chosen: &[Option<usize>], roots: &[usize]) -> Vec<usize> {
        let mut seen = vec![false; self.ids.len()];
        let mut stack = roots.to_vec();
        while let Some(c) = stack.pop() {
            if std::mem::replace(&mut seen[c], true) {
                continue;
            }
            if let Some(node) = chosen[c].and_then(|k| self.enodes[c][k].as_ref()) {
                stack.extend(&node.kids);
            }
        }
        (0..seen.len()).filter(|&c| seen[c]).collect()
    }

    /// The cost and op nodes of the program that computes `roots`, each class counted
    /// once; `None` if a class it needs has no choice or the choices form a cycle.
    fn program_cost(&self, chosen: &[Option<usize>], roots: &[usize]) -> Option<(u64, u32)> {
        const NEW: u8 = 0;
        const ON_PATH: u8 = 1;
        const DONE: u8 = 2;
        let mut state = vec![NEW; self.ids.len()];
        let mut stack: Vec<(usize, bool)> = roots.iter().map(|&r| (r, false)).collect();
        let (mut cost, mut nodes) = (0u64, 0u32);
        while let Some((c, finished)) = stack.pop() {
            if finished {
                state[c] = DONE;
                continue;
            }
            match state[c] {
                DONE => continue,
                ON_PATH => return None,
                _ => {}
            }
            state[c] = ON_PATH;
            let node = self.enodes[c][chosen[c]?].as_ref()?;
            cost = cost.saturating_add(node.own);
            nodes += u32::from(node.op);
            stack.push((c, true));
            stack.extend(node.kids.iter().map(|&k| (k, false)));
        }
        Some((cost, nodes))
    }

    fn choices(&self, chosen: &[Option<usize>]) -> Choices {
        let chosen = chosen.iter().zip(&self.ids);
        chosen
            .filter_map(|(k, id)| Some((*id, self.eg[*id].nodes[(*k)?].clone())))
            .collect()
    }
}

fn has(set: &[u64], c: usize) -> bool {
    set[c / 64] & (1 << (c % 64)) != 0
}
