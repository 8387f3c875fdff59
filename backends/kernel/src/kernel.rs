//! The kernel description: what the scheduler produces and every code generator consumes.
//!
//! A [`Program`] is an ordered list of [`Kernel`]s over numbered [`Buffer`]s. Every size in
//! it (loop extents, strides, offsets, buffer lengths, the sizes of runtime calls) is a
//! [`Dim`]: a constant, or an expression over the model's symbols that generated code and
//! the runtime evaluate when the program runs. Nothing here knows about Cranelift: the PTX backend is meant to translate the same
//! description. A [`LoopNest`] is a loop nest over an output region whose body is an
//! expression DAG ([`Expr`]); a fused group of elementwise producers and consumers is just a
//! bigger DAG: the scheduler emits one kernel per node, and loop fusion
//! (`fuse_loops.rs`) then inlines loop nests into the one kernel that reads them.

use kiln_ir::{BinaryOp, Bindings, DType, Dim, ReduceKind, Tensor, UnaryOp};

/// Index of a buffer in [`Program::buffers`].
pub type BufId = usize;

/// A scheduled model.
#[derive(Clone, Debug)]
pub struct Program {
    /// Every buffer the kernels touch.
    pub buffers: Vec<Buffer>,
    /// Kernels in execution order.
    pub kernels: Vec<Kernel>,
    /// The graph node each kernel comes from (for errors and profiles).
    pub kernel_nodes: Vec<usize>,
    /// The buffer holding each graph output, in graph-output order.
    pub outputs: Vec<BufId>,
    /// The shape of each graph output.
    pub output_shapes: Vec<Vec<Dim>>,
    /// The symbols its sizes may mention, in the order generated code receives their
    /// values (sorted by name).
    pub symbols: Vec<String>,
    /// The KV caches appended in place: each past input's buffer is also its present
    /// output's, laid out with [`crate::cache::CAPACITY`] rows ([`crate::cache`]).
    pub caches: Vec<crate::cache::KvCache>,
}

impl Program {
    /// The values of [`Self::symbols`] at `bindings`, in order; `None` when one is unbound.
    pub fn symbol_values(&self, bindings: &Bindings) -> Option<Vec<i64>> {
        self.symbols
            .iter()
            .map(|s| bindings.get(s).copied())
            .collect()
    }

    /// The bytes of every buffer at `bindings`; `None` when a size mentions an unbound
    /// symbol, is negative or overflows.
    pub fn buffer_bytes(&self, bindings: &Bindings) -> Option<Vec<usize>> {
        self.buffers
            .iter()
            .map(|b| {
                let n = usize::try_from(b.len.eval(bindings)?).ok()?;
                n.checked_mul(b.dtype.size_bytes())
            })
            .collect()
    }
}

/// A flat, contiguous array of elements.
#[derive(Clone, Debug)]
pub struct Buffer {
    /// Element type.
    pub dtype: DType,
    /// Number of elements.
    pub len: Dim,
    /// Where its memory comes from.
    pub kind: BufferKind,
    /// The IR value (`%N`) it was made for, for reports.
    pub value: u32,
}

impl Buffer {
    /// Size in bytes.
    pub fn bytes(&self) -> Dim {
        &self.len * &Dim::from(self.dtype.size_bytes())
    }
}

/// Where a buffer's memory comes from.
#[derive(Clone, Debug)]
pub enum BufferKind {
    /// The `i`-th graph input, owned by the caller.
    Input(usize),
    /// A constant, owned by the compiled model.
    Const(Tensor),
    /// A temporary, placed in the arena by the memory plan.
    Temp,
    /// The index sequence `0, 1, 2, …` as i64, as long as the buffer: never stored, each
    /// element computed from where it is read (code generators evaluate a load of it as
    /// its element offset). Ops that need the loop index as a value (range, trilu, one-hot,
    /// arg reductions) read it, so its length may be symbolic.
    Iota,
}

/// One element access: `buffer[offset + Σ index[d] * strides[d]]`, in elements, where
/// `index` is the loop nest's index. Broadcasting is a zero stride, a transpose permuted
/// strides, a slice an offset and scaled strides.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// The buffer.
    pub buf: BufId,
    /// Offset of index 0, in elements.
    pub offset: Dim,
    /// One stride per loop axis, in elements.
    pub strides: Vec<Dim>,
}

/// A scalar constant in an expression, stored as the bits of its dtype's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// A float of any float dtype, widened.
    Float(f64),
    /// An integer or bool of any integer dtype, widened.
    Int(i64),
}

/// One node of an [`Expr`] DAG. Operands are indices of earlier nodes.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprNode {
    /// Loads one element.
    Load(Access),
    /// A constant.
    Const(Scalar),
    /// Gathers: `data[access + Σ index_k * stride_k]` over the [`Indirect`] terms
    /// (one for `Gather`/`GatherElements`, one per indexed axis for `GatherND`, the output's
    /// terms when a scatter reads the value it combines with).
    Gather {
        /// The data access without the indexed axes' contributions.
        access: Access,
        /// The indexed axes.
        indices: Vec<Indirect>,
    },
    /// An elementwise unary op.
    Unary(UnaryOp, usize),
    /// An elementwise binary op.
    Binary(BinaryOp, usize, usize),
    /// `cond ? a : b`.
    Where(usize, usize, usize),
    /// Converts with ONNX `Cast` semantics.
    Cast(usize),
    /// Reinterprets the bits.
    Bitcast(usize),
    /// The accumulator of a [`Reduce`] or of a [`RowStat`] (only in its `post` expression).
    Acc,
    /// Statistic `k` of the current row of a [`Row`] kernel: in the value and post
    /// expressions of later statistics, and in the map.
    Stat(usize),
    /// The value of a symbolic size, as an `i64` (a constant size is a [`Const`]).
    ///
    /// [`Const`]: ExprNode::Const
    Size(Dim),
}

impl ExprNode {
    /// The nodes this one reads: its operands, and a gather's index nodes.
    pub fn operands(&self) -> Vec<usize> {
        match self {
            ExprNode::Unary(_, a) | ExprNode::Cast(a) | ExprNode::Bitcast(a) => vec![*a],
            ExprNode::Binary(_, a, b) => vec![*a, *b],
            ExprNode::Where(c, a, b) => vec![*c, *a, *b],
            ExprNode::Gather { indices, .. } => indices.iter().map(|t| t.index).collect(),
            ExprNode::Load(_)
            | ExprNode::Const(_)
            | ExprNode::Acc
            | ExprNode::Stat(_)
            | ExprNode::Size(_) => vec![],
        }
    }
}

/// One data-dependent term of an address: `(value of node index) * stride`, where the
/// index is an integer node of the same expression. Negative indices count from the end
/// (`+ len`); an index still outside `0..len` stops the kernel, which reports it (as the
/// interpreter rejects it), so generated code never leaves the buffer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Indirect {
    /// The index node.
    pub index: usize,
    /// Stride of the indexed axis, in elements.
    pub stride: Dim,
    /// Size of the indexed axis (for negative indices and the bounds check).
    pub len: Dim,
}

/// An expression DAG: nodes in topological order, each with its dtype; the last is the result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expr {
    /// The nodes.
    pub nodes: Vec<ExprNode>,
    /// The dtype of each node's value.
    pub dtypes: Vec<DType>,
}

impl Expr {
    /// Appends a node and returns its index.
    pub fn push(&mut self, node: ExprNode, dtype: DType) -> usize {
        self.nodes.push(node);
        self.dtypes.push(dtype);
        self.nodes.len() - 1
    }

    /// Appends the value of size `d` as a `dtype`: a constant when `d` is one, else a
    /// [`ExprNode::Size`] cast to `dtype`.
    pub fn push_size(&mut self, d: &Dim, dtype: DType) -> usize {
        match d.as_const() {
            Some(n) if dtype.is_float() => {
                self.push(ExprNode::Const(Scalar::Float(n as f64)), dtype)
            }
            Some(n) => self.push(ExprNode::Const(Scalar::Int(n)), dtype),
            None => {
                let size = self.push(ExprNode::Size(d.clone()), DType::I64);
                if dtype == DType::I64 {
                    size
                } else {
                    self.push(ExprNode::Cast(size), dtype)
                }
            }
        }
    }

    /// The index of the result node.
    pub fn root(&self) -> usize {
        self.nodes.len() - 1
    }

    /// The dtype of the result.
    pub fn dtype(&self) -> DType {
        self.dtypes[self.root()]
    }

    /// Every buffer the expression reads.
    pub fn reads(&self) -> impl Iterator<Item = BufId> + '_ {
        self.nodes.iter().filter_map(|n| match n {
            ExprNode::Load(a) | ExprNode::Gather { access: a, .. } => Some(a.buf),
            _ => None,
        })
    }
}

/// `out[i] = expr(i)` for every index `i` of `shape`; with `scatter` terms the store goes
/// to `out[i] + Σ index_k * stride_k` instead (a scatter: ScatterElements, ScatterND).
#[derive(Clone, Debug, PartialEq)]
pub struct LoopNest {
    /// The iteration space.
    pub shape: Vec<Dim>,
    /// Where each result goes (strides over `shape`).
    pub out: Access,
    /// The body.
    pub expr: Expr,
    /// Indirect terms of the output address, over index nodes of `expr` (empty: a plain
    /// store).
    pub scatter: Vec<Indirect>,
    /// The iterations must run in order on one thread: a scatter whose indices may repeat
    /// (later updates overwrite or combine with earlier ones, as ONNX specifies).
    pub serial: bool,
}

impl LoopNest {
    /// A plain loop nest: direct stores, splittable across threads.
    pub fn new(shape: Vec<Dim>, out: Access, expr: Expr) -> LoopNest {
        LoopNest {
            shape,
            out,
            expr,
            scatter: Vec::new(),
            serial: false,
        }
    }
}

/// How a [`Reduce`] combines values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// Sum, from 0.
    Sum,
    /// Product, from 1.
    Prod,
    /// Maximum (NaN propagates), from -inf (or the type's minimum).
    Max,
    /// Minimum (NaN propagates), from +inf (or the type's maximum).
    Min,
}

/// `out[i] = post(combine_j value(i, j))`: the iteration space is `shape` (the output's
/// loop axes) followed by `reduced` (the reduced axes); `value` addresses both, `post` sees
/// the accumulator as [`ExprNode::Acc`] and may load at the output index (its accesses
/// have strides over `shape` only).
#[derive(Clone, Debug, PartialEq)]
pub struct Reduce {
    /// Output loop axes.
    pub shape: Vec<Dim>,
    /// Reduced axes (innermost).
    pub reduced: Vec<Dim>,
    /// Where each result goes (strides over `shape`).
    pub out: Access,
    /// The combined value, over `shape ++ reduced`.
    pub value: Expr,
    /// The combination.
    pub combine: Combine,
    /// Applied to the accumulator before the store.
    pub post: Expr,
}

/// One reduction over a row of a [`Row`] kernel: `post(combine_j value(i, j))`. `value`
/// addresses `shape ++ [len]` like the map and may use earlier statistics; `post` sees the
/// accumulator as [`ExprNode::Acc`] and earlier statistics, and reads no memory.
#[derive(Clone, Debug, PartialEq)]
pub struct RowStat {
    /// The combined value, over `shape ++ [len]`.
    pub value: Expr,
    /// The combination.
    pub combine: Combine,
    /// Applied to the accumulator; the result is the statistic.
    pub post: Expr,
}

/// A row-wise kernel: for each index `i` of `shape` (one row of `len` elements along the
/// innermost axis), compute `stats` in order (each a reduction over the row), then
/// `out[i, j] = map(i, j)` for every `j` of the row, where `map` sees the statistics as
/// [`ExprNode::Stat`]. Normalizations (layer norm, RMS norm) are one such kernel, so a row
/// is brought into cache once and every pass over it hits the cache; rows are independent,
/// so a backend may run them in parallel.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The rows' iteration space.
    pub shape: Vec<Dim>,
    /// Elements per row.
    pub len: Dim,
    /// The row's reductions, in dependency order.
    pub stats: Vec<RowStat>,
    /// Where each result goes (strides over `shape ++ [len]`).
    pub out: Access,
    /// The value stored at each element, over `shape ++ [len]`.
    pub map: Expr,
}

impl Row {
    /// Every buffer the kernel reads.
    pub fn reads(&self) -> impl Iterator<Item = BufId> + '_ {
        self.stats
            .iter()
            .flat_map(|s| s.value.reads().chain(s.post.reads()))
            .chain(self.map.reads())
    }
}

pub use crate::call::{
    Attention, AttentionDims, AttentionMaskOperand, AttentionOperand, Call, Conv, GemmEpilogue,
    MatMul, MatOperand, OpCall, Operand, QuantLinear, QuantizedInput,
};

/// One kernel.
#[derive(Clone, Debug)]
pub enum Kernel {
    /// A loop nest (elementwise, data movement, gathers).
    Loop(LoopNest),
    /// A reduction.
    Reduce(Reduce),
    /// Reductions over each row, then a map over it (normalizations).
    Row(Row),
    /// A runtime call.
    Call(Call),
}

impl Kernel {
    /// The buffers the kernel reads.
    pub fn reads(&self) -> Vec<BufId> {
        match self {
            Kernel::Loop(l) => l.expr.reads().collect(),
            Kernel::Reduce(r) => r.value.reads().chain(r.post.reads()).collect(),
            Kernel::Row(r) => r.reads().collect(),
            Kernel::Call(Call::MatMul(m)) => [m.a.buf, m.b.buf]
                .into_iter()
                .chain(m.epilogue.reads())
                .collect(),
            Kernel::Call(Call::Conv(c)) => vec![c.x, c.w],
            Kernel::Call(Call::QuantLinear(q)) => q.reads().collect(),
            Kernel::Call(Call::Attention(a)) => [a.q.buf, a.k.buf, a.v.buf]
                .into_iter()
                .chain(a.mask.as_ref().map(|m| m.buf))
                .collect(),
            Kernel::Call(Call::Op(c)) => c.inputs.iter().map(|x| x.buf).collect(),
        }
    }

    /// The buffers the kernel writes.
    pub fn writes(&self) -> Vec<BufId> {
        match self {
            Kernel::Loop(l) => vec![l.out.buf],
            Kernel::Reduce(r) => vec![r.out.buf],
            Kernel::Row(r) => vec![r.out.buf],
            Kernel::Call(Call::MatMul(m)) => vec![m.c.buf],
            Kernel::Call(Call::Conv(c)) => std::iter::once(c.y).chain(c.cols).collect(),
            Kernel::Call(Call::Attention(a)) => vec![a.out.buf],
            Kernel::Call(Call::QuantLinear(q)) => vec![q.c],
            Kernel::Call(Call::Op(c)) => c.outputs.iter().map(|y| y.buf).collect(),
        }
    }

    /// True if the kernel must run its iterations in order on one thread.
    pub fn serial(&self) -> bool {
        matches!(self, Kernel::Loop(l) if l.serial)
    }

    /// A short name for reports and profiles, with its sizes as symbolic as they are.
    pub fn label(&self) -> String {
        self.label_at(&Bindings::new())
    }

    /// [`Self::label`] with the symbols in `b` substituted.
    pub fn label_at(&self, b: &Bindings) -> String {
        let dims = |s: &[Dim]| dims(s, b);
        let at = |d: &Dim| d.substitute(b);
        match self {
            Kernel::Loop(l) if !l.scatter.is_empty() => format!("scatter{}", dims(&l.shape)),
            Kernel::Loop(l) => format!("loop{}", dims(&l.shape)),
            Kernel::Reduce(r) => format!("reduce{}x{}", dims(&r.shape), dims(&r.reduced)),
            Kernel::Row(r) => format!("row{}x{}", dims(&r.shape), at(&r.len)),
            Kernel::Call(Call::MatMul(m)) if !m.epilogue.is_empty() => {
                format!("linear {}x{}x{}", at(&m.m), at(&m.k), at(&m.n))
            }
            Kernel::Call(Call::MatMul(m)) => {
                let batch: Dim = m.batch.iter().product();
                let [b, m, k, n] = [&batch, &m.m, &m.k, &m.n].map(at);
                format!("matmul {b}x{m}x{k}x{n}")
            }
            Kernel::Call(Call::QuantLinear(q)) => format!(
                "quant_linear {} {}x{}x{}",
                q.attrs.weights.name(),
                at(&q.m),
                at(&q.k),
                at(&q.n)
            ),
            Kernel::Call(Call::Conv(c)) => {
                let [x, w, y] = [&c.x_shape, &c.w_shape, &c.y_shape].map(|s| dims(s));
                format!("conv {x}*{w}->{y}")
            }
            Kernel::Call(Call::Attention(a)) => {
                let d = &a.dims;
                let batch: Dim = d.leading.iter().product();
                let [b, h, q, k, e] = [&batch, &d.heads, &d.q_len, &d.kv_len, &d.depth].map(at);
                format!("attention {b}x{h}x{q}x{k}x{e}")
            }
            Kernel::Call(Call::Op(c)) => format!("runtime {}", c.op.name()),
        }
    }
}

/// `[a, b, c]` with the symbols in `b` substituted, as shapes print in labels.
fn dims(shape: &[Dim], b: &Bindings) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.substitute(b).to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// Identity element of a combination for a dtype.
pub fn combine_identity(c: Combine, dtype: DType) -> Scalar {
    match (c, dtype.is_float()) {
        (Combine::Sum, true) => Scalar::Float(0.0),
        (Combine::Sum, false) => Scalar::Int(0),
        (Combine::Prod, true) => Scalar::Float(1.0),
        (Combine::Prod, false) => Scalar::Int(1),
        (Combine::Max, true) => Scalar::Float(f64::NEG_INFINITY),
        (Combine::Min, true) => Scalar::Float(f64::INFINITY),
        (Combine::Max, false) => Scalar::Int(int_range(dtype).0),
        (Combine::Min, false) => Scalar::Int(int_range(dtype).1),
    }
}

/// The smallest and largest value of an integer or bool dtype (as i64; u64's max saturates).
pub fn int_range(dtype: DType) -> (i64, i64) {
    match dtype {
        DType::I8 => (i8::MIN as i64, i8::MAX as i64),
        DType::U8 => (0, u8::MAX as i64),
        DType::I16 => (i16::MIN as i64, i16::MAX as i64),
        DType::U16 => (0, u16::MAX as i64),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::U32 => (0, u32::MAX as i64),
        DType::U64 => (0, -1),
        DType::Bool => (0, 1),
        _ => (i64::MIN, i64::MAX),
    }
}

/// The reduction kinds of the IR map onto a pre-map, a combination and a post-map; this
/// names the combination (the scheduler builds the maps).
pub fn combine_of(kind: ReduceKind) -> Combine {
    match kind {
        ReduceKind::Sum
        | ReduceKind::Mean
        | ReduceKind::L1
        | ReduceKind::L2
        | ReduceKind::LogSum
        | ReduceKind::LogSumExp
        | ReduceKind::SumSquare => Combine::Sum,
        ReduceKind::Max => Combine::Max,
        ReduceKind::Min => Combine::Min,
        ReduceKind::Prod => Combine::Prod,
    }
}
