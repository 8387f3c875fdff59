//! Scheduling: a graph becomes a [`Program`] of kernels. Sizes are the graph's dims with
//! the bound symbols substituted, so a binding of every symbol schedules at concrete shapes
//! and the free ones stay symbolic.
//!
//! One node becomes one or a few kernels; fused ops come from the optimizer, and chains of
//! loop nests are fused afterwards, on the program (`fuse_loops.rs`), into the [`Expr`] of
//! the kernel that reads them. Reshapes are free: the output shares the
//! input's buffer. Ops without a native lowering go to the runtime only if
//! [`support`] lists them; any other op is a [`ScheduleError::Unsupported`].
//!
//! Pooling is native (a padded copy and a windowed [`Reduce`], `pool.rs`); `f32` layer and
//! RMS norms are one [`Row`] kernel each (`norm.rs`). `f32` matmul
//! and convolution are native calls into the runtime's GEMM (convolution through im2col
//! into a planned scratch buffer, `conv.rs`).

mod argreduce;
mod attention;
mod contraction;
mod conv;
mod conv_window;
mod elementwise;
mod iota;
mod linear;
mod movement;
mod norm;
mod pool;
mod quant;
mod reduce;
mod rotary;
mod scatter;

use crate::cache::KvCache;
use crate::kernel::*;
use kiln_ir::{interp, Bindings, DType, Dim, Graph, Node, Op, ScatterReduction, Tensor, ValueId};
use thiserror::Error;

/// Why a graph could not be scheduled.
#[derive(Debug, Error)]
pub enum ScheduleError {
    /// The backend has no lowering for this op (at this dtype).
    #[error("node {node} \"{name}\" ({op}): the cpu backend cannot compile this op: {reason}")]
    Unsupported {
        /// Node index.
        node: usize,
        /// Source node name.
        name: String,
        /// Op name.
        op: String,
        /// What is missing.
        reason: String,
    },
    /// A constant index of an indexing op is outside the axis it indexes.
    #[error("node `{name}` ({op}): constant {message}")]
    ConstantIndex {
        /// Node index.
        node: usize,
        /// Source node name.
        name: String,
        /// Op name.
        op: String,
        /// Which index, and the axis.
        message: String,
    },
    /// A kernel needs the value of a dim that is symbolic: the graph compiles per shape.
    #[error("node {node} \"{name}\" ({op}) needs the value of dim `{dim}` (of value %{value}) at compile time")]
    NeedsDim {
        /// Node index.
        node: usize,
        /// Source node name.
        name: String,
        /// Op name.
        op: String,
        /// The value whose dim it is.
        value: u32,
        /// The dim.
        dim: String,
    },
    /// A dim could not be evaluated at these input shapes (a data-dependent size).
    #[error("value %{value}: dim `{dim}` is not known from the input shapes (data-dependent sizes are not supported by the cpu backend)")]
    UnknownDim {
        /// The value.
        value: u32,
        /// The dim.
        dim: String,
    },
}

/// Where a graph value lives: a contiguous buffer and its shape.
#[derive(Clone, Debug)]
pub(crate) struct View {
    pub buf: BufId,
    pub shape: Vec<Dim>,
    pub dtype: DType,
}

/// What a code generator compiles natively beyond the set every backend shares, so the
/// scheduler can keep those nodes out of runtime calls. The default is the CPU backend's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Elementwise ops (unary, binary, where, casts, bitcasts) on f16/bf16 values, each
    /// computed in f32 and rounded to its half type, as the interpreter does.
    pub half_elementwise: bool,
    /// Fused attention of every float type (f64 and the halves, which also need
    /// `half_elementwise`), not only f32.
    pub float_attention: bool,
    /// [`Call::MatMul`] on f16/bf16 operands (products in f32, the result rounded once,
    /// as the interpreter computes them), not only f32.
    pub half_matmul: bool,
}

/// Builds a [`Program`] for `g` with the symbols in `bindings` bound (from the input
/// shapes); sizes over the other symbols stay symbolic.
pub fn schedule(g: &Graph, bindings: &Bindings) -> Result<Program, ScheduleError> {
    schedule_for(g, bindings, Capabilities::default())
}

/// [`schedule`] for a code generator with `caps`.
pub fn schedule_for(
    g: &Graph,
    bindings: &Bindings,
    caps: Capabilities,
) -> Result<Program, ScheduleError> {
    schedule_with(g, bindings, caps, &[])
}

/// [`schedule_for`] with `caches` (from [`crate::cache::find`]) appended in place: each
/// past input is the valid prefix of a `[B, H, kv_capacity, D]` buffer, which its concat
/// extends by the new rows only and its present output is.
pub fn schedule_with(
    g: &Graph,
    bindings: &Bindings,
    caps: Capabilities,
    caches: &[KvCache],
) -> Result<Program, ScheduleError> {
    let mut symbols = free_symbols(g, bindings);
    if !caches.is_empty() {
        symbols.push(crate::cache::CAPACITY.to_string());
        symbols.sort();
    }
    let mut s = Scheduler {
        g,
        bindings,
        caps,
        program: Program {
            buffers: Vec::new(),
            kernels: Vec::new(),
            kernel_nodes: Vec::new(),
            outputs: Vec::new(),
            output_shapes: Vec::new(),
            symbols,
            caches: caches.to_vec(),
        },
        views: vec![None; g.values.len()],
        strided: Vec::new(),
        current: 0,
    };
    for (i, (_, v)) in g.inputs.iter().enumerate() {
        let shape = s.shape_of(*v)?;
        if caches.iter().any(|c| c.input == i) {
            s.bind_cache(*v, i, shape);
        } else {
            s.bind(*v, BufferKind::Input(i), shape);
        }
    }
    for (index, node) in g.nodes.iter().enumerate() {
        s.current = index;
        match caches.iter().find(|c| c.node == index) {
            Some(_) => s.cache_append(node)?,
            None => s.node(index, node)?,
        }
    }
    s.program.outputs = g.outputs.iter().map(|(_, v)| s.view(*v).buf).collect();
    s.program.output_shapes = g
        .outputs
        .iter()
        .map(|(_, v)| s.view(*v).shape.clone())
        .collect();
    Ok(s.program)
}

pub(crate) struct Scheduler<'g> {
    g: &'g Graph,
    bindings: &'g Bindings,
    caps: Capabilities,
    program: Program,
    views: Vec<Option<View>>,
    /// The values laid out with a cache's strides instead of contiguously (only the
    /// cache's concat and attention read them).
    strided: Vec<(ValueId, Vec<Dim>)>,
    /// The node being scheduled.
    current: usize,
}

impl Scheduler<'_> {
    /// Whether a matrix product of `d` is a [`Call::MatMul`] (else a contraction).
    fn gemm_dtype(&self, d: DType) -> bool {
        d == DType::F32 || (self.caps.half_matmul && matches!(d, DType::F16 | DType::BF16))
    }

    fn shape_of(&self, v: ValueId) -> Result<Vec<Dim>, ScheduleError> {
        self.g
            .value_type(v)
            .shape
            .iter()
            .map(|d| {
                let d = d.substitute(self.bindings);
                match d.as_const() {
                    Some(n) if n < 0 => Err(ScheduleError::UnknownDim {
                        value: v.0,
                        dim: d.to_string(),
                    }),
                    _ => Ok(d),
                }
            })
            .collect()
    }

    /// The value of `d`, for a kernel that needs it at compile time; an error names the
    /// value `v` when `d` is symbolic.
    pub(crate) fn known(&self, d: &Dim, v: ValueId) -> Result<usize, ScheduleError> {
        let node = &self.g.nodes[self.current];
        d.as_const()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| ScheduleError::NeedsDim {
                node: self.current,
                name: node.name.clone(),
                op: node.op.name(),
                value: v.0,
                dim: d.to_string(),
            })
    }

    /// Rejects an indexing op whose indices are a constant with an index out of range, so
    /// the error comes at compile time rather than from the generated code's check.
    fn check_constant_indices(&self, index: usize, node: &Node) -> Result<(), ScheduleError> {
        let indexing = matches!(
            node.op,
            Op::Gather { .. }
                | Op::GatherElements { .. }
                | Op::GatherNd { .. }
                | Op::ScatterElements { .. }
                | Op::ScatterNd { .. }
        );
        let (Some(&data), Some(&idx)) = (node.inputs.first(), node.inputs.get(1)) else {
            return Ok(());
        };
        if !indexing {
            return Ok(());
        }
        let idx = self.view(idx);
        // A constant seen through a reshape keeps its own shape; the generated code's check
        // still covers it.
        let BufferKind::Const(t) = &self.program.buffers[idx.buf].kind else {
            return Ok(());
        };
        if concrete(&idx.shape).as_deref() != Some(t.shape()) {
            return Ok(());
        }
        let Some(data_shape) = concrete(&self.view(data).shape) else {
            return Ok(());
        };
        interp::check_indices(&node.op, &data_shape, t).map_err(|e| {
            let message = match e {
                interp::InterpError::Op { message, .. } => message,
                e => e.to_string(),
            };
            ScheduleError::ConstantIndex {
                node: index,
                name: node.name.clone(),
                op: node.op.name(),
                message,
            }
        })
    }

    pub(crate) fn view(&self, v: ValueId) -> &View {
        self.views[v.index()]
            .as_ref()
            .expect("graph values are defined before use (verified IR)")
    }

    /// Gives value `v` a fresh buffer of `kind`.
    fn bind(&mut self, v: ValueId, kind: BufferKind, shape: Vec<Dim>) -> BufId {
        let dtype = self.g.value_type(v).dtype;
        let buf = self.program.buffers.len();
        self.program.buffers.push(Buffer {
            dtype,
            len: shape.iter().product(),
            kind,
            value: v.0,
        });
        self.views[v.index()] = Some(View { buf, shape, dtype });
        buf
    }

    /// The strides of `v` when it is a cache's prefix, laid out with its capacity.
    pub(crate) fn cache_strides(&self, v: ValueId) -> Option<&[Dim]> {
        (self.strided.iter())
            .find(|(w, _)| *w == v)
            .map(|(_, s)| s.as_slice())
    }

    /// Gives cache input `v` (graph input `i`) a buffer of the cache's capacity.
    fn bind_cache(&mut self, v: ValueId, i: usize, shape: Vec<Dim>) {
        let buf = self.bind(v, BufferKind::Input(i), shape.clone());
        self.program.buffers[buf].len = crate::cache::buffer_len(&shape);
        self.strided.push((v, crate::cache::strides(&shape)));
    }

    /// A cache's concat: the new rows (the second operand) are stored after the past's in
    /// the past's buffer, which then holds the result.
    fn cache_append(&mut self, node: &Node) -> Result<(), ScheduleError> {
        let axis = crate::cache::SEQ_AXIS;
        let (past, new) = (
            self.view(node.inputs[0]).clone(),
            self.view(node.inputs[1]).clone(),
        );
        let strides = self
            .cache_strides(node.inputs[0])
            .expect("a cache's past")
            .to_vec();
        let mut shape = past.shape.clone();
        shape[axis] = &shape[axis] + &new.shape[axis];
        let out = node.outputs[0];
        self.views[out.index()] = Some(View {
            buf: past.buf,
            shape,
            dtype: past.dtype,
        });
        self.strided.push((out, strides.clone()));
        if new.shape.iter().product::<Dim>().is_zero() {
            return Ok(());
        }
        let mut expr = Expr::default();
        expr.push(
            ExprNode::Load(Access::contiguous(new.buf, &new.shape)),
            new.dtype,
        );
        self.push(Kernel::Loop(LoopNest::new(
            new.shape.clone(),
            Access {
                buf: past.buf,
                offset: &past.shape[axis] * &strides[axis],
                strides,
            },
            expr,
        )));
        Ok(())
    }

    /// A fresh temporary for output `v` of the current node.
    pub(crate) fn temp(&mut self, v: ValueId) -> Result<View, ScheduleError> {
        let shape = self.shape_of(v)?;
        self.bind(v, BufferKind::Temp, shape);
        Ok(self.view(v).clone())
    }

    /// A temporary that no graph value names (an intermediate of a multi-kernel op).
    pub(crate) fn scratch(&mut self, dtype: DType, shape: Vec<Dim>, value: ValueId) -> View {
        let buf = self.program.buffers.len();
        self.program.buffers.push(Buffer {
            dtype,
            len: shape.iter().product(),
            kind: BufferKind::Temp,
            value: value.0,
        });
        View { buf, shape, dtype }
    }

    pub(crate) fn push(&mut self, k: Kernel) {
        self.program.kernels.push(k);
        self.program.kernel_nodes.push(self.current);
    }

    fn constant(&mut self, v: ValueId, t: Tensor) {
        let shape = t.shape().iter().map(|&n| Dim::from(n)).collect();
        self.bind(v, BufferKind::Const(standard_layout(t)), shape);
    }

    fn node(&mut self, index: usize, node: &Node) -> Result<(), ScheduleError> {
        let unsupported = |reason: String| ScheduleError::Unsupported {
            node: index,
            name: node.name.clone(),
            op: node.op.name(),
            reason,
        };
        self.check_constant_indices(index, node)?;
        if let Support::Runtime(_) = support_for(self.g, node, self.caps) {
            return self.runtime_op(node);
        }
        let out = node.outputs[0];
        match &node.op {
            Op::Const(t) => self.constant(out, t.clone()),
            Op::ShapeValue { dims, scalar } => {
                let vals: Option<Vec<i64>> = dims.iter().map(|d| d.eval(self.bindings)).collect();
                match vals {
                    Some(vals) => {
                        let shape: &[usize] = if *scalar { &[] } else { &[vals.len()] };
                        let t = Tensor::from_vec(vals, shape)
                            .map_err(|e| unsupported(e.to_string()))?;
                        self.constant(out, t);
                    }
                    None => self.symbol_values(out, dims)?,
                }
            }
            Op::ShapeOf => {
                let shape: Vec<i64> = self
                    .view(node.inputs[0])
                    .shape
                    .iter()
                    .map(|d| {
                        d.as_const()
                            .ok_or_else(|| unsupported(format!("`{d}` unbound")))
                    })
                    .collect::<Result<_, _>>()?;
                let n = shape.len();
                let t = Tensor::from_vec(shape, &[n]).map_err(|e| unsupported(e.to_string()))?;
                self.constant(out, t);
            }
            Op::Reshape { .. } => {
                let src = self.view(node.inputs[0]).clone();
                let shape = self.shape_of(out)?;
                self.views[out.index()] = Some(View { shape, ..src });
            }
            Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. } | Op::Bitcast { .. } => {
                self.elementwise(node)?
            }
            Op::Reduce { kind, axes, .. } => self.reduce(node, *kind, axes)?,
            Op::Softmax { axis, log } => self.softmax(node, *axis, *log)?,
            Op::MatMul if self.gemm_dtype(self.g.value_type(out).dtype) => self.matmul(node)?,
            Op::MatMul => self.matmul_contraction(node)?,
            Op::Einsum(spec) => self.einsum(node, spec)?,
            Op::Transpose { perm } => self.transpose(node, perm)?,
            Op::Slice { axes } => self.slice(node, axes)?,
            Op::Concat { axis } => self.concat(node, *axis)?,
            Op::Expand { .. } => self.expand(node)?,
            Op::Pad {
                pads,
                mode: kiln_ir::PadMode::Constant,
            } => self.pad(node, pads)?,
            Op::Pad { pads, mode } => self.pad_indexed(node, pads, *mode)?,
            Op::Gather { axis } => self.gather(node, *axis)?,
            Op::GatherElements { axis } => self.gather_elements(node, *axis)?,
            Op::ArgReduce {
                kind,
                axis,
                select_last,
                ..
            } => self.arg_reduce(node, *kind, *axis, *select_last)?,
            Op::Range { .. } => self.range(node)?,
            Op::Trilu { upper, k } => self.trilu(node, *upper, *k)?,
            Op::OneHot { axis, depth } => self.one_hot(node, *axis, *depth)?,
            Op::GatherNd { batch_dims } => self.gather_nd(node, *batch_dims)?,
            Op::ScatterElements { axis, reduction } => {
                self.scatter_elements(node, *axis, *reduction)?
            }
            Op::ScatterNd { reduction } => self.scatter_nd(node, *reduction)?,
            Op::Conv(a) if self.g.value_type(out).dtype == DType::F32 => self.conv(node, a)?,
            Op::Conv(a) => self.conv_window(node, a)?,
            Op::ConvTranspose(a) => self.conv_transpose(node, a)?,
            Op::Pool(a) => self.pool(node, a)?,
            Op::LayerNorm { epsilon } => self.norm(node, norm::Norm::Layer, *epsilon)?,
            Op::RmsNorm { epsilon } => self.norm(node, norm::Norm::Rms, *epsilon)?,
            Op::Attention(a) => self.attention(node, a)?,
            Op::Rotary => self.rotary(node)?,
            Op::Linear(e) => self.linear(node, *e)?,
            Op::QuantLinear(q) => self.quant_linear(node, *q)?,
            op => {
                return Err(unsupported(format!(
                    "`support` calls `{}` native but the scheduler has no lowering",
                    op.name()
                )))
            }
        }
        Ok(())
    }

    /// A shape value over free symbols: one scalar kernel per element, each storing a
    /// size's value as the program runs (an `i64` tensor, as the op's type says).
    fn symbol_values(&mut self, out: ValueId, dims: &[Dim]) -> Result<(), ScheduleError> {
        let view = self.temp(out)?;
        for (i, d) in dims.iter().enumerate() {
            let mut e = Expr::default();
            e.push_size(d, DType::I64);
            let at = Access {
                buf: view.buf,
                offset: Dim::from(i),
                strides: Vec::new(),
            };
            self.push(Kernel::Loop(LoopNest::new(Vec::new(), at, e)));
        }
        Ok(())
    }

    /// Schedules `node` as a call to its runtime implementation.
    fn runtime_op(&mut self, node: &Node) -> Result<(), ScheduleError> {
        let inputs = node
            .inputs
            .iter()
            .map(|v| {
                let view = self.view(*v);
                Operand {
                    buf: view.buf,
                    dtype: view.dtype,
                    shape: view.shape.clone(),
                }
            })
            .collect();
        let mut outputs = Vec::new();
        for v in &node.outputs {
            let view = self.temp(*v)?;
            outputs.push(Operand {
                buf: view.buf,
                dtype: view.dtype,
                shape: view.shape,
            });
        }
        self.push(Kernel::Call(Call::Op(OpCall {
            op: node.op.clone(),
            inputs,
            outputs,
        })));
        Ok(())
    }
}

/// How the backend handles a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Generated code (or a GEMM call).
    Native,
    /// A call into the op's runtime implementation (kiln-ir's reference kernel over whole
    /// tensors), for the reason given. ARCHITECTURE.md lists the same set.
    Runtime(&'static str),
}

/// How `node` of `g` is compiled by the CPU backend. Every op is covered: the match is
/// exhaustive, so a new op cannot slip through to a silent fallback.
pub fn support(g: &Graph, node: &Node) -> Support {
    support_for(g, node, Capabilities::default())
}

/// How `node` of `g` is compiled by a code generator with `caps`.
pub fn support_for(g: &Graph, node: &Node, caps: Capabilities) -> Support {
    let dtype = |v: ValueId| g.value_type(v).dtype;
    let half = node
        .inputs
        .iter()
        .chain(&node.outputs)
        .any(|v| matches!(dtype(*v), DType::F16 | DType::BF16));
    use Support::*;
    match &node.op {
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Where
        | Op::Cast { .. }
        | Op::Bitcast { .. }
        | Op::Reduce { .. }
        | Op::Softmax { .. }
            if half && caps.half_elementwise =>
        {
            Native
        }
        Op::Unary(_)
        | Op::Binary(_)
        | Op::Where
        | Op::Cast { .. }
        | Op::Bitcast { .. }
        | Op::Reduce { .. }
        | Op::Softmax { .. }
        | Op::Rotary
            if half =>
        {
            Runtime("f16/bf16 arithmetic (rounded after every op)")
        }
        Op::Const(_) | Op::ShapeValue { .. } | Op::ShapeOf | Op::Reshape { .. } => Native,
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. } | Op::Bitcast { .. } => Native,
        Op::Reduce { .. } | Op::Softmax { .. } | Op::Rotary => Native,
        Op::MatMul if dtype(node.outputs[0]) == DType::F32 => Native,
        Op::MatMul | Op::Einsum(_) if !half || caps.half_elementwise => Native,
        Op::MatMul => Runtime("f16/bf16 matmul (computed in f32, rounded once)"),
        Op::Linear(_) if dtype(node.outputs[0]) == DType::F32 => Native,
        Op::Linear(_) => Runtime("non-f32 linear (f16/bf16 round after every step)"),
        Op::QuantLinear(_) => Native,
        Op::Transpose { .. } | Op::Slice { .. } | Op::Concat { .. } | Op::Expand { .. } => Native,
        Op::Pad { .. } => Native,
        Op::Gather { .. } | Op::GatherElements { .. } => Native,
        Op::Conv(_) | Op::ConvTranspose(_) if dtype(node.outputs[0]) == DType::Bool => {
            Runtime("bool convolution (rejected by the reference)")
        }
        Op::Conv(_) | Op::ConvTranspose(_) if half && !caps.half_elementwise => {
            Runtime("f16/bf16 convolution (computed in f32, rounded once)")
        }
        Op::Conv(_) | Op::ConvTranspose(_) => Native,
        Op::Pool(a) => pool::support(a, dtype(node.inputs[0])),
        Op::ArgReduce { .. } if half => Runtime("f16/bf16 argmax/argmin"),
        Op::ArgReduce { .. } => Native,
        Op::GatherNd { .. } => Native,
        Op::ScatterElements { reduction, .. } | Op::ScatterNd { reduction }
            if *reduction != ScatterReduction::None
                && matches!(
                    dtype(node.outputs[0]),
                    DType::F16 | DType::BF16 | DType::Bool
                ) =>
        {
            Runtime("scatter reductions on f16/bf16/bool (arithmetic in another type)")
        }
        Op::ScatterElements { .. } | Op::ScatterNd { .. } => Native,
        Op::Range { .. } if half => Runtime("f16/bf16 range (rounded from f64)"),
        Op::Range { .. } | Op::Trilu { .. } => Native,
        Op::Scan { .. } => Runtime("cumulative sum/product"),
        Op::TopK { .. } => Runtime("top-k (a sort)"),
        Op::OneHot { .. } => match dtype(node.inputs[0]) {
            DType::F16 | DType::BF16 if !caps.half_elementwise => {
                Runtime("one-hot with f16/bf16 indices")
            }
            DType::Bool => Runtime("one-hot with bool indices (an error, as in the interpreter)"),
            _ => Native,
        },
        Op::NonZero { .. } => Runtime("nonzero (data-dependent size)"),
        Op::Einsum(_) => Runtime("f16/bf16 einsum (computed in f32, rounded once)"),
        Op::LayerNorm { .. } | Op::RmsNorm { .. } if dtype(node.outputs[0]) == DType::F32 => Native,
        Op::LayerNorm { .. } | Op::RmsNorm { .. } => {
            Runtime("non-f32 layer_norm/rms_norm (f16/bf16 round after every step)")
        }
        Op::Attention(_) if dtype(node.outputs[0]) == DType::F32 => Native,
        Op::Attention(_) if caps.float_attention && (!half || caps.half_elementwise) => Native,
        Op::Attention(_) => Runtime("non-f32 attention (f16/bf16 round after every step)"),
    }
}

/// The input symbols of `g` that `bindings` leaves free, sorted.
fn free_symbols(g: &Graph, bindings: &Bindings) -> Vec<String> {
    let mut free = g.input_symbols();
    free.retain(|s| !bindings.contains_key(s));
    free
}

/// Row-major strides, in elements.
pub fn contiguous_strides(shape: &[Dim]) -> Vec<Dim> {
    let mut strides = vec![Dim::from(0i64); shape.len()];
    let mut acc = Dim::from(1i64);
    for (s, d) in strides.iter_mut().zip(shape).rev() {
        *s = acc.clone();
        acc = &acc * d;
    }
    strides
}

/// Strides for reading a tensor of `shape` broadcast to `out` (numpy rules, aligned right):
/// broadcast axes get stride 0. A symbolic axis never broadcasts: shape inference only
/// broadcasts dims that are 1 in the graph.
pub fn broadcast_strides(shape: &[Dim], out: &[Dim]) -> Vec<Dim> {
    let own = contiguous_strides(shape);
    let lead = out.len() - shape.len();
    (0..out.len())
        .map(|d| {
            if d < lead || shape[d - lead].is_one() {
                Dim::from(0i64)
            } else {
                own[d - lead].clone()
            }
        })
        .collect()
}

/// The values of `shape` when every dim is a constant.
pub fn concrete(shape: &[Dim]) -> Option<Vec<usize>> {
    shape
        .iter()
        .map(|d| d.as_const().and_then(|n| usize::try_from(n).ok()))
        .collect()
}

/// A tensor with its elements in row-major order (constants are read by generated code);
/// shares the data when it already is.
fn standard_layout(t: Tensor) -> Tensor {
    if kiln_ir::dispatch!(&t, a => a.is_standard_layout()) {
        return t;
    }
    kiln_ir::dispatch!(&t, a => Tensor::from_array(a.as_standard_layout().to_owned()))
}
