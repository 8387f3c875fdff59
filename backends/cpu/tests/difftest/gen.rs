//! The random graph generator: 1-12 ops over 1-3 inputs (plus constants), drawn from the
//! elementwise, reduction, matmul and data-movement ops, with random shapes that broadcast.
//!
//! Every node goes through `Graph::add_node`, so type inference rejects invalid choices and
//! the generator simply tries again. Each value carries an `exact` flag: true when both
//! backends must produce it bit for bit (inputs, moves, correctly rounded arithmetic), false
//! after ops whose last bits legitimately differ (transcendental functions, reductions that
//! may sum in another order, matmul). Ops that amplify a last-bit difference into a large
//! one (floor, comparisons, float-to-int casts, `mod`) only take exact inputs, and inputs to
//! functions with a restricted domain go through guards (`|x| + 1`, `0.9 tanh x`).
//!
//! A second flag, `moderate`, marks float values of plausibly small magnitude (|x| ≲ 10).
//! Order-dependent sums (reductions, matmul, softmax) only take moderate inputs, and ops
//! that turn an absolute error into a relative one (`sin`, `exp`, `+`, …) only take inexact
//! inputs that are moderate: otherwise f32 rounding in a different order gives differences
//! far beyond the tolerance (e.g. a matmul of casts of `i32::MAX`, or the reciprocal of a
//! matmul that cancels to nearly zero) without any bug.

use super::data::{indices, random_tensor};
use super::rng::Rng;
use kiln_ir::*;

/// Dims drawn for shapes: odd sizes, 1 for broadcasting, and vector-width edges.
const DIMS: &[usize] = &[1, 2, 3, 5, 7, 8, 16, 17, 33];
/// Dtypes of generated inputs and casts.
const DTYPES: &[DType] = &[
    DType::F32,
    DType::F32,
    DType::F32,
    DType::F64,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::I8,
    DType::Bool,
];
/// Largest element count of any value (keeps the interpreter quick).
const MAX_ELEMS: usize = 20_000;

/// A generated graph and inputs to run it on.
pub struct Case {
    /// The graph.
    pub graph: Graph,
    /// One tensor per graph input.
    pub inputs: Vec<Tensor>,
}

/// The case for `seed`.
pub fn generate(seed: u64) -> Case {
    let mut gen = Gen {
        rng: Rng::new(seed),
        g: Graph::new(format!("seed{seed}")),
        inputs: Vec::new(),
        pool: Vec::new(),
        specials: false,
    };
    gen.specials = gen.rng.chance(0.2);
    gen.add_inputs();
    let target = 1 + gen.rng.below(12);
    let mut made = Vec::new();
    for _ in 0..40 * target {
        if made.len() == target {
            break;
        }
        if let Some(v) = gen.step() {
            made.push(v.id);
            gen.pool.push(v);
        }
    }
    if made.is_empty() {
        // Every input accepts `neg` (bool does not: then `not`).
        let x = gen.pool[0].id;
        let u = match gen.g.value_type(x).dtype {
            DType::Bool => UnaryOp::Not,
            _ => UnaryOp::Neg,
        };
        made.push(gen.node(Op::Unary(u), &[x]).expect("neg or not applies"));
    }
    gen.add_outputs(&made);
    Case {
        graph: gen.g,
        inputs: gen.inputs,
    }
}

#[derive(Clone, Copy)]
struct Val {
    id: ValueId,
    exact: bool,
    moderate: bool,
}

struct Gen {
    rng: Rng,
    g: Graph,
    inputs: Vec<Tensor>,
    pool: Vec<Val>,
    specials: bool,
}

impl Gen {
    fn add_inputs(&mut self) {
        let rank = self.rng.pick(&[0, 1, 1, 2, 2, 2, 3, 3, 4]);
        let mut base: Vec<usize> = (0..rank).map(|_| self.rng.pick(DIMS)).collect();
        // Mostly small, sometimes large enough that kernels split across threads.
        let cap = if self.rng.chance(0.15) {
            MAX_ELEMS
        } else {
            4096
        };
        while base.iter().product::<usize>() > cap {
            let i = self.rng.below(rank);
            base[i] = self.rng.pick(&DIMS[..5]);
        }
        let n = 1 + self.rng.below(3);
        for i in 0..n {
            let dtype = self.rng.pick(DTYPES);
            let shape = if i == 0 {
                base.clone()
            } else {
                self.broadcastable(&base)
            };
            let v = self.input(dtype, &shape);
            self.pool.push(v);
        }
    }

    /// A graph input holding `t`.
    fn input_tensor(&mut self, t: Tensor) -> Val {
        let ty = TensorType::fixed(t.dtype(), t.shape());
        let id = self.g.add_input(format!("in{}", self.inputs.len()), ty);
        self.inputs.push(t);
        Val {
            id,
            exact: true,
            moderate: true,
        }
    }

    fn input(&mut self, dtype: DType, shape: &[usize]) -> Val {
        let t = random_tensor(&mut self.rng, dtype, shape, self.specials);
        self.input_tensor(t)
    }

    /// A new operand holding `t`: a graph input while there are fewer than 3, else a constant.
    fn operand(&mut self, t: Tensor) -> Val {
        if self.inputs.len() < 3 && self.rng.chance(0.5) {
            return self.input_tensor(t);
        }
        let id = self.g.add_node("", Op::Const(t), &[]).expect("const")[0];
        Val {
            id,
            exact: true,
            moderate: true,
        }
    }

    /// A new random operand of `dtype` and `shape`.
    fn fresh(&mut self, dtype: DType, shape: &[usize]) -> Val {
        let t = random_tensor(&mut self.rng, dtype, shape, self.specials);
        self.operand(t)
    }

    /// A shape that broadcasts with `s`: a suffix of it with some dims set to 1, rarely with
    /// an extra leading dim.
    fn broadcastable(&mut self, s: &[usize]) -> Vec<usize> {
        let keep = if self.rng.chance(0.6) {
            s.len()
        } else {
            self.rng.below(s.len() + 1)
        };
        let mut out: Vec<usize> = s[s.len() - keep..]
            .iter()
            .map(|&d| if self.rng.chance(0.3) { 1 } else { d })
            .collect();
        if s.len() < 4 && keep == s.len() && self.rng.chance(0.1) {
            out.insert(0, self.rng.pick(&DIMS[..4]));
        }
        out
    }

    fn shape(&self, v: ValueId) -> Vec<usize> {
        self.g
            .value_type(v)
            .const_shape()
            .expect("generated shapes are static")
    }

    fn dtype(&self, v: ValueId) -> DType {
        self.g.value_type(v).dtype
    }

    /// Adds `op` if inference accepts it and its outputs stay small.
    fn node(&mut self, op: Op, inputs: &[ValueId]) -> Option<ValueId> {
        let types: Vec<&TensorType> = inputs.iter().map(|v| self.g.value_type(*v)).collect();
        let out = infer(&op, &types).ok()?;
        let small = out.iter().all(|t| {
            t.const_shape()
                .is_some_and(|s| s.iter().product::<usize>() <= MAX_ELEMS)
        });
        if !small {
            return None;
        }
        Some(self.g.add_node("", op, inputs).ok()?[0])
    }

    fn scalar(&mut self, dtype: DType, v: f64) -> ValueId {
        let t = Tensor::scalar(v).cast(dtype);
        self.g.add_node("", Op::Const(t), &[]).expect("const")[0]
    }

    /// `|x| + 1`: positive, for log and friends.
    fn positive(&mut self, x: ValueId) -> Option<ValueId> {
        let a = self.node(Op::Unary(UnaryOp::Abs), &[x])?;
        let one = self.scalar(self.dtype(x), 1.0);
        self.node(Op::Binary(BinaryOp::Add), &[a, one])
    }

    /// `s · tanh x`: inside `(-s, s)`.
    fn bounded(&mut self, x: ValueId, s: f64) -> Option<ValueId> {
        let t = self.node(Op::Unary(UnaryOp::Tanh), &[x])?;
        let c = self.scalar(self.dtype(x), s);
        self.node(Op::Binary(BinaryOp::Mul), &[t, c])
    }

    fn pick(&mut self, ok: impl Fn(&Gen, Val) -> bool) -> Option<Val> {
        let c: Vec<Val> = self.pool.iter().copied().filter(|v| ok(self, *v)).collect();
        (!c.is_empty()).then(|| self.rng.pick(&c))
    }

    fn any(&mut self) -> Val {
        self.rng.pick(&self.pool)
    }

    /// A second operand for `a`: a pool value of the same dtype or a fresh broadcastable one.
    fn partner(&mut self, a: Val, dtype: DType) -> Val {
        if self.rng.chance(0.5) {
            if let Some(b) = self.pick(|g, v| g.dtype(v.id) == dtype && v.id != a.id) {
                return b;
            }
        }
        let s = self.broadcastable(&self.shape(a.id));
        self.fresh(dtype, &s)
    }

    fn step(&mut self) -> Option<Val> {
        match self.rng.below(20) {
            0..=3 => self.unary(),
            4..=7 => self.binary(),
            8 => self.where_(),
            9 => self.cast(),
            10 | 11 => self.reduce(),
            12 => self.softmax(),
            13 => self.matmul(),
            14 => self.transpose(),
            15 => self.slice(),
            16 => self.concat_or_expand(),
            17 => self.pad(),
            18 => self.gather(),
            _ => self.reshape(),
        }
    }
}

/// Float unary ops whose result is not correctly rounded (so not bit-exact across backends).
fn inexact_unary(u: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(
        u,
        Exp | Log
            | Sin
            | Cos
            | Tan
            | Asin
            | Acos
            | Atan
            | Sinh
            | Cosh
            | Tanh
            | Asinh
            | Acosh
            | Atanh
            | Erf
            | Sigmoid
            | Gelu
            | GeluTanh
            | Silu
    )
}

/// Float unary ops whose relative output error is the absolute input error (or worse).
fn abs_to_rel_error(u: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(u, Sin | Cos | Tan | Exp | Sinh | Cosh)
}

/// Whether a float unary op's result is moderate, given its input's and the guard.
fn unary_moderate(u: UnaryOp, input: bool, guarded: bool) -> bool {
    use UnaryOp::*;
    match u {
        Sign | Sin | Cos | Atan | Asin | Acos | Tanh | Sigmoid | Erf => true,
        IsNan | IsInf | IsPosInf | IsNegInf | Not | BitNot => true,
        Atanh | Tan | Rsqrt | Reciprocal => guarded,
        Abs | Neg | Relu | Floor | Ceil | Round | Sqrt | Asinh | Gelu | GeluTanh | Silu => input,
        Log | Acosh => input && guarded,
        Exp | Sinh | Cosh => false,
    }
}

/// Ops that turn a last-bit difference of a float input into a large output difference.
fn discontinuous_unary(u: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(
        u,
        Floor | Ceil | Round | Sign | IsNan | IsInf | IsPosInf | IsNegInf
    )
}

impl Gen {
    fn unary(&mut self) -> Option<Val> {
        let x = self.any();
        let u = self.rng.pick(UnaryOp::ALL);
        let float = self.dtype(x.id).is_float();
        if float && discontinuous_unary(u) && !x.exact {
            return None;
        }
        if float && abs_to_rel_error(u) && !x.exact && !x.moderate {
            return None;
        }
        let guard = float && (!x.exact || self.rng.chance(0.7));
        let input = match u {
            UnaryOp::Log | UnaryOp::Acosh if guard => self.positive(x.id)?,
            UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Reciprocal if !x.exact => {
                self.positive(x.id)?
            }
            UnaryOp::Asin | UnaryOp::Acos | UnaryOp::Atanh | UnaryOp::Tan if guard => {
                self.bounded(x.id, 0.9)?
            }
            _ => x.id,
        };
        let guarded = input != x.id;
        let exact = x.exact && !guarded && !(float && inexact_unary(u));
        let moderate = !float || unary_moderate(u, x.moderate, guarded);
        let id = self.node(Op::Unary(u), &[input])?;
        Some(Val {
            id,
            exact,
            moderate,
        })
    }

    fn binary(&mut self) -> Option<Val> {
        let a = self.any();
        let dtype = self.dtype(a.id);
        let b = self.partner(a, dtype);
        let op = self.rng.pick(BinaryOp::ALL);
        let float = dtype.is_float();
        let both = a.exact && b.exact;
        let (mut x, mut y) = (a.id, b.id);
        let mut exact = both;
        let fine = |v: Val| v.exact || v.moderate;
        if float && matches!(op, BinaryOp::Add | BinaryOp::Sub) && !(fine(a) && fine(b)) {
            return None;
        }
        let moderate = !float
            || op.returns_bool()
            || (matches!(
                op,
                BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Min | BinaryOp::Max
            ) && a.moderate
                && b.moderate);
        if float {
            use BinaryOp::*;
            match op {
                Mod | Fmod | Equal | Less | LessOrEqual | Greater | GreaterOrEqual if !both => {
                    return None
                }
                Div if !b.exact => {
                    y = self.positive(y)?;
                }
                Pow => {
                    if !both || self.rng.chance(0.7) {
                        x = self.positive(x)?;
                        y = self.bounded(y, 3.0)?;
                    }
                    exact = false;
                }
                _ => {}
            }
        }
        // Guards fix the operand order; otherwise either order.
        let (x, y) = if (x, y) != (a.id, b.id) || self.rng.chance(0.5) {
            (x, y)
        } else {
            (y, x)
        };
        let id = self.node(Op::Binary(op), &[x, y])?;
        Some(Val {
            id,
            exact,
            moderate,
        })
    }

    fn where_(&mut self) -> Option<Val> {
        let a = self.any();
        let dtype = self.dtype(a.id);
        let b = self.partner(a, dtype);
        let c = match self.pick(|g, v| g.dtype(v.id) == DType::Bool) {
            Some(c) if self.rng.chance(0.5) => c,
            _ => {
                let s = self.broadcastable(&self.shape(a.id));
                self.fresh(DType::Bool, &s)
            }
        };
        let id = self.node(Op::Where, &[c.id, a.id, b.id])?;
        Some(Val {
            id,
            exact: a.exact && b.exact,
            moderate: a.moderate && b.moderate,
        })
    }

    fn cast(&mut self) -> Option<Val> {
        let x = self.any();
        let to = self.rng.pick(DTYPES);
        if self.dtype(x.id).is_float() && !to.is_float() && !x.exact {
            return None;
        }
        let from_float = self.dtype(x.id).is_float();
        let id = self.node(Op::Cast { to }, &[x.id])?;
        Some(Val {
            id,
            exact: x.exact,
            // Integers include extremes.
            moderate: !to.is_float() || (from_float && x.moderate),
        })
    }

    fn reduce(&mut self) -> Option<Val> {
        let x = self.any();
        let rank = self.shape(x.id).len();
        let kind = self.rng.pick(ReduceKind::ALL);
        let axes: Vec<usize> = (0..rank).filter(|_| self.rng.chance(0.5)).collect();
        let keep_dims = self.rng.chance(0.5);
        let float = self.dtype(x.id).is_float();
        // Known difference: the interpreter sums an i64 mean in i128, the JIT wraps in i64,
        // so means of sums beyond i64 (our inputs include extremes) differ.
        if kind == ReduceKind::Mean && self.dtype(x.id) == DType::I64 {
            return None;
        }
        // Known difference: the interpreter's max of an empty bool set is `true`
        // (`bool::from_f64(-inf)`), against its own rule "the type's minimum"; the JIT gives
        // `false`.
        let empty = axes.iter().any(|&a| self.shape(x.id)[a] == 0);
        if kind == ReduceKind::Max && self.dtype(x.id) == DType::Bool && empty {
            return None;
        }
        let order_free = matches!(kind, ReduceKind::Max | ReduceKind::Min);
        if float && !order_free && kind != ReduceKind::Prod && !x.moderate {
            return None;
        }
        let moderate = !float
            || (x.moderate
                && matches!(
                    kind,
                    ReduceKind::Max
                        | ReduceKind::Min
                        | ReduceKind::Mean
                        | ReduceKind::LogSum
                        | ReduceKind::LogSumExp
                ));
        let input = match kind {
            ReduceKind::LogSum if float => self.positive(x.id)?,
            _ => x.id,
        };
        let exact = x.exact && input == x.id && (order_free || !float);
        let op = Op::Reduce {
            kind,
            axes,
            keep_dims,
        };
        let id = self.node(op, &[input])?;
        Some(Val {
            id,
            exact,
            moderate,
        })
    }

    fn softmax(&mut self) -> Option<Val> {
        let x =
            self.pick(|g, v| g.dtype(v.id).is_float() && !g.shape(v.id).is_empty() && v.moderate)?;
        let axis = self.rng.below(self.shape(x.id).len());
        let log = self.rng.chance(0.5);
        let id = self.node(Op::Softmax { axis, log }, &[x.id])?;
        Some(Val {
            id,
            exact: false,
            moderate: true,
        })
    }

    fn matmul(&mut self) -> Option<Val> {
        let mm =
            |g: &Gen, v: Val| g.dtype(v.id) == DType::F32 && g.shape(v.id).len() >= 2 && v.moderate;
        let a = self.pick(mm)?;
        let sa = self.shape(a.id);
        let r = sa.len();
        let b = match self.rng.below(3) {
            0 => {
                let mut perm: Vec<usize> = (0..r).collect();
                perm.swap(r - 2, r - 1);
                self.node(Op::Transpose { perm }, &[a.id])?
            }
            1 => self.pick(mm)?.id,
            _ => {
                let batch = self.broadcastable(&sa[..r - 2]);
                let mut s: Vec<usize> = batch.into_iter().take(2).collect();
                s.extend([sa[r - 1], self.rng.pick(DIMS)]);
                self.fresh(DType::F32, &s).id
            }
        };
        let (x, y) = if self.rng.chance(0.8) {
            (a.id, b)
        } else {
            (b, a.id)
        };
        let id = self.node(Op::MatMul, &[x, y])?;
        Some(Val {
            id,
            exact: false,
            moderate: false,
        })
    }

    fn transpose(&mut self) -> Option<Val> {
        let x = self.any();
        let r = self.shape(x.id).len();
        let mut perm: Vec<usize> = (0..r).collect();
        for i in (1..r).rev() {
            let j = self.rng.below(i + 1);
            perm.swap(i, j);
        }
        let id = self.node(Op::Transpose { perm }, &[x.id])?;
        Some(Val { id, ..x })
    }

    fn slice(&mut self) -> Option<Val> {
        let x = self.pick(|g, v| !g.shape(v.id).is_empty())?;
        let shape = self.shape(x.id);
        let mut axes = Vec::new();
        for (axis, &d) in shape.iter().enumerate() {
            if d == 0 || !self.rng.chance(0.6) {
                continue;
            }
            let step = self.rng.pick(&[1i64, 1, 2, 3, -1, -1, -2]);
            let d = d as i64;
            let (start, end) = if step > 0 {
                let s = self.rng.range(0, d);
                (s, self.rng.range(s + 1, d + 1))
            } else {
                let s = self.rng.range(0, d);
                (s, self.rng.range(-1, s))
            };
            axes.push(SliceAxis {
                axis,
                start: Dim::from(start),
                end: Dim::from(end),
                step,
            });
        }
        let id = self.node(Op::Slice { axes }, &[x.id])?;
        Some(Val { id, ..x })
    }

    fn concat_or_expand(&mut self) -> Option<Val> {
        if self.rng.chance(0.5) {
            self.concat()
        } else {
            self.expand()
        }
    }

    fn concat(&mut self) -> Option<Val> {
        let x = self.pick(|g, v| !g.shape(v.id).is_empty())?;
        let sx = self.shape(x.id);
        let axis = self.rng.below(sx.len());
        let dtype = self.dtype(x.id);
        let mut parts = vec![x];
        for _ in 0..1 + self.rng.below(2) {
            let fits = |g: &Gen, v: Val| {
                let s = g.shape(v.id);
                g.dtype(v.id) == dtype
                    && s.len() == sx.len()
                    && (0..s.len()).all(|i| i == axis || s[i] == sx[i])
            };
            let p = match self.pick(fits) {
                Some(p) if self.rng.chance(0.6) => p,
                _ => {
                    let mut s = sx.clone();
                    s[axis] = self.rng.pick(DIMS);
                    self.fresh(dtype, &s)
                }
            };
            parts.push(p);
        }
        let ids: Vec<ValueId> = parts.iter().map(|p| p.id).collect();
        let id = self.node(Op::Concat { axis }, &ids)?;
        Some(Val {
            id,
            exact: parts.iter().all(|p| p.exact),
            moderate: parts.iter().all(|p| p.moderate),
        })
    }

    fn expand(&mut self) -> Option<Val> {
        let x = self.any();
        let sx = self.shape(x.id);
        let extra = self.rng.below(3.min(5 - sx.len().min(4)));
        let mut shape: Vec<Dim> = (0..extra)
            .map(|_| Dim::from(self.rng.pick(&DIMS[..5])))
            .collect();
        for &d in &sx {
            let t = if d == 1 && self.rng.chance(0.7) {
                self.rng.pick(DIMS)
            } else if self.rng.chance(0.15) {
                1
            } else {
                d
            };
            shape.push(Dim::from(t));
        }
        let id = self.node(Op::Expand { shape }, &[x.id])?;
        Some(Val { id, ..x })
    }

    fn pad(&mut self) -> Option<Val> {
        let x = self.any();
        let shape = self.shape(x.id);
        let pads = shape
            .iter()
            .map(|&d| {
                let b = self.rng.range(-1, 3);
                let e = self.rng.range(-1, 3);
                if d as i64 + b + e < 0 {
                    (0, 0)
                } else {
                    (b, e)
                }
            })
            .collect();
        let dtype = self.dtype(x.id);
        let fill = random_tensor(&mut self.rng, dtype, &[], false);
        let fill = self.g.add_node("", Op::Const(fill), &[]).expect("const")[0];
        let op = Op::Pad {
            pads,
            mode: PadMode::Constant,
        };
        let id = self.node(op, &[x.id, fill])?;
        Some(Val { id, ..x })
    }

    fn gather(&mut self) -> Option<Val> {
        let x = self.pick(|g, v| g.shape(v.id).iter().any(|&d| d > 0))?;
        let sx = self.shape(x.id);
        let axis = self.rng.below(sx.len());
        if sx.contains(&0) {
            return None;
        }
        let dtype = self.rng.pick(&[DType::I64, DType::I32]);
        let (op, ishape) = if self.rng.chance(0.5) {
            let r = self.rng.below(3);
            let s: Vec<usize> = (0..r).map(|_| self.rng.pick(&DIMS[..5])).collect();
            (Op::Gather { axis }, s)
        } else {
            let s: Vec<usize> = sx
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if i == axis {
                        self.rng.pick(&DIMS[..5])
                    } else {
                        1 + self.rng.below(d)
                    }
                })
                .collect();
            (Op::GatherElements { axis }, s)
        };
        let t = indices(&mut self.rng, dtype, &ishape, sx[axis]);
        let idx = self.operand(t);
        let id = self.node(op, &[x.id, idx.id])?;
        Some(Val { id, ..x })
    }

    fn reshape(&mut self) -> Option<Val> {
        let x = self.any();
        let n: usize = self.shape(x.id).iter().product();
        if n == 0 {
            return None;
        }
        let rank = if n == 1 {
            self.rng.below(3)
        } else {
            1 + self.rng.below(4)
        };
        let mut shape = vec![1usize; rank];
        let (mut m, mut p) = (n, 2);
        while m > 1 {
            while m % p == 0 {
                let i = self.rng.below(rank);
                shape[i] *= p;
                m /= p;
            }
            p += 1;
        }
        let shape = shape.into_iter().map(Dim::from).collect();
        let id = self.node(Op::Reshape { shape }, &[x.id])?;
        Some(Val { id, ..x })
    }

    /// The last value, every value nothing else uses, and a few more.
    fn add_outputs(&mut self, made: &[ValueId]) {
        let uses = self.g.use_counts();
        let last = *made.last().expect("at least one node");
        for (i, &v) in made.iter().enumerate() {
            if v == last || uses[v.index()] == 0 || self.rng.chance(0.2) {
                self.g.add_output(format!("out{i}"), v);
            }
        }
        // Rarely: a value returned twice, and an input returned as it is.
        if self.rng.chance(0.05) {
            self.g.add_output("again", last);
        }
        if self.rng.chance(0.05) {
            let x = self.g.inputs[0].1;
            self.g.add_output("input", x);
        }
    }
}
