//! The e-graph form of a graph: one e-node language over kiln's ops, a type analysis, and
//! the translation from a [`Graph`] into an e-graph.
//!
//! An e-node's operator is an interned [`Symbol`]. Ops without attributes use their text
//! name (`mul`, `rsqrt`), so rules can be written as egg patterns; ops with attributes get a
//! numbered symbol (`reduce_mean#3`) that the analysis maps back to the [`Op`]. Graph inputs
//! are `input#k`. A node with several outputs is one tuple e-node, read through `get#i`.

use egg::{Analysis, DidMerge, FromOp, Id, Language, Symbol};
use kiln_ir::{infer, BinaryOp, Graph, Op, TensorType, UnaryOp};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt;

/// The e-graph of one kiln graph.
pub type EGraph = egg::EGraph<ENode, Types>;

/// An e-node: an operator symbol applied to e-classes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ENode {
    /// The operator (see the module docs).
    pub op: Symbol,
    /// The operands.
    pub args: Vec<Id>,
}

impl Language for ENode {
    type Discriminant = Symbol;

    fn discriminant(&self) -> Symbol {
        self.op
    }

    fn matches(&self, other: &Self) -> bool {
        self.op == other.op && self.args.len() == other.args.len()
    }

    fn children(&self) -> &[Id] {
        &self.args
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.args
    }
}

impl FromOp for ENode {
    type Error = Infallible;

    fn from_op(op: &str, args: Vec<Id>) -> Result<Self, Infallible> {
        Ok(ENode {
            op: op.into(),
            args,
        })
    }
}

impl fmt::Display for ENode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.op)
    }
}

/// What an e-node stands for, once its symbol is looked up.
#[derive(Clone, Debug, PartialEq)]
pub enum Term {
    /// Graph input `k`.
    Input(usize),
    /// Output `i` of a tuple e-class.
    Get(usize),
    /// An op.
    Op(Op),
}

/// Per-class facts: the value types, and the value of one-element float constants.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// The class's output types: one for a value, several for a tuple, none if unknown.
    pub types: Vec<TensorType>,
    /// The value of a one-element float constant.
    pub scalar: Option<f64>,
}

impl Facts {
    /// The type of a single-value class.
    pub fn ty(&self) -> Option<&TensorType> {
        match self.types.as_slice() {
            [t] => Some(t),
            _ => None,
        }
    }
}

/// The analysis: symbol tables (so no state is global) and [`Facts`] per class.
#[derive(Debug)]
pub struct Types {
    terms: HashMap<Symbol, Term>,
    symbols: HashMap<String, Symbol>,
    inputs: Vec<TensorType>,
    /// The fusion rule that added each fused e-node, by the class it was added as.
    pub made_by: Vec<(Id, Symbol)>,
    /// The classes canonicalization rules rewrote, with the rule.
    pub rewritten: Vec<(Id, Symbol)>,
}

impl Default for Types {
    /// Tables for a graph without inputs (egg's `Runner::default` asks for one; the runner
    /// is then given the real e-graph).
    fn default() -> Types {
        Types::new(Vec::new())
    }
}

impl Types {
    /// Tables for a graph with these input types. Every attribute-free op is registered up
    /// front, because rule right-hand sides name them directly (`(rsqrt ?b)`).
    pub fn new(inputs: Vec<TensorType>) -> Types {
        let mut types = Types {
            terms: HashMap::new(),
            symbols: HashMap::new(),
            inputs,
            made_by: Vec::new(),
            rewritten: Vec::new(),
        };
        let plain = UnaryOp::ALL.iter().map(|u| Op::Unary(*u));
        let plain = plain.chain(BinaryOp::ALL.iter().map(|b| Op::Binary(*b)));
        for op in plain.chain([Op::Where, Op::MatMul, Op::ShapeOf]) {
            types.symbol(Term::Op(op), None);
        }
        types
    }

    /// What `op` stands for; every symbol in the e-graph was made by [`Types::symbol`].
    pub fn term(&self, op: Symbol) -> &Term {
        &self.terms[&op]
    }

    /// The symbol for `term`, interning it on first use. Constants with more than one
    /// element get a symbol of their own each (`unique`), so weights are never compared.
    pub fn symbol(&mut self, term: Term, unique: Option<usize>) -> Symbol {
        let key = match (&term, unique) {
            (_, Some(v)) => format!("const#v{v}"),
            (Term::Input(k), None) => format!("input#{k}"),
            (Term::Get(i), None) => format!("get#{i}"),
            (Term::Op(op), None) if has_attributes(op) => format!("{op:?}"),
            (Term::Op(op), None) => op.name(),
        };
        if let Some(s) = self.symbols.get(&key) {
            return *s;
        }
        let text = match &term {
            Term::Op(op) if has_attributes(op) || unique.is_some() => {
                format!("{}#{}", op.name(), self.symbols.len())
            }
            _ => key.clone(),
        };
        let symbol = Symbol::from(text);
        self.symbols.insert(key, symbol);
        self.terms.insert(symbol, term);
        symbol
    }
}

/// Adds `op` applied to `args` (an op e-node; constants with more than one element are never
/// made this way) and returns its class.
pub fn add_op(eg: &mut EGraph, op: Op, args: Vec<Id>) -> Id {
    let op = eg.analysis.symbol(Term::Op(op), None);
    eg.add(ENode { op, args })
}

/// Whether an op's text name leaves something out (attributes, or a constant's value).
fn has_attributes(op: &Op) -> bool {
    !matches!(
        op,
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::MatMul | Op::ShapeOf
    )
}

impl Analysis<ENode> for Types {
    type Data = Facts;

    fn make(egraph: &mut EGraph, enode: &ENode, _id: Id) -> Facts {
        let types = &egraph.analysis;
        match types.term(enode.op) {
            Term::Input(k) => Facts {
                types: vec![types.inputs[*k].clone()],
                scalar: None,
            },
            Term::Get(i) => Facts {
                types: egraph[enode.args[0]]
                    .data
                    .types
                    .get(*i)
                    .cloned()
                    .into_iter()
                    .collect(),
                scalar: None,
            },
            Term::Op(Op::Const(t)) => Facts {
                types: vec![TensorType::fixed(t.dtype(), t.shape())],
                scalar: (t.len() == 1 && t.dtype().is_float()).then(|| t.to_f64_vec()[0]),
            },
            Term::Op(op) => {
                let args: Option<Vec<&TensorType>> =
                    enode.args.iter().map(|a| egraph[*a].data.ty()).collect();
                let types = args.and_then(|a| infer(op, &a).ok()).unwrap_or_default();
                Facts {
                    types,
                    scalar: None,
                }
            }
        }
    }

    fn merge(&mut self, a: &mut Facts, b: Facts) -> DidMerge {
        let mut changed = false;
        if a.types.is_empty() && !b.types.is_empty() {
            a.types = b.types.clone();
            changed = true;
        }
        if a.scalar.is_none() && b.scalar.is_some() {
            a.scalar = b.scalar;
            changed = true;
        }
        DidMerge(changed, *a != b)
    }
}

/// A graph as an e-graph: the class of every value and the source name of every class.
pub struct Lowered {
    /// The e-graph.
    pub egraph: EGraph,
    /// The class of each value, by [`kiln_ir::ValueId`] index.
    pub values: Vec<Id>,
    /// Source node names, by class (the first node that produced the class). Ordered, so
    /// that when classes merge the name kept is the earliest node's on every run; a
    /// `HashMap` here made two builds of one model differ.
    pub names: BTreeMap<Id, String>,
}

/// Builds the e-graph of `g`.
pub fn lower(g: &Graph) -> Lowered {
    let analysis = Types::new(
        g.inputs
            .iter()
            .map(|(_, v)| g.value_type(*v).clone())
            .collect(),
    );
    let mut egraph = EGraph::new(analysis);
    let mut values = vec![Id::from(0usize); g.values.len()];
    let mut names = BTreeMap::new();
    for (k, (_, v)) in g.inputs.iter().enumerate() {
        let op = egraph.analysis.symbol(Term::Input(k), None);
        values[v.index()] = egraph.add(ENode { op, args: vec![] });
    }
    for node in &g.nodes {
        let unique = match &node.op {
            Op::Const(t) if t.len() != 1 => Some(node.outputs[0].index()),
            _ => None,
        };
        let op = egraph.analysis.symbol(Term::Op(node.op.clone()), unique);
        let args = node.inputs.iter().map(|v| values[v.index()]).collect();
        let id = egraph.add(ENode { op, args });
        names.entry(id).or_insert_with(|| node.name.clone());
        if node.outputs.len() == 1 {
            values[node.outputs[0].index()] = id;
            continue;
        }
        for (i, out) in node.outputs.iter().enumerate() {
            let op = egraph.analysis.symbol(Term::Get(i), None);
            let get = egraph.add(ENode { op, args: vec![id] });
            names.entry(get).or_insert_with(|| node.name.clone());
            values[out.index()] = get;
        }
    }
    egraph.rebuild();
    Lowered {
        egraph,
        values,
        names,
    }
}
