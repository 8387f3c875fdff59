//! Emitting an [`Expr`] DAG for one element (scalar) or four adjacent f32 elements (vector).

use super::ops::{clif_type, vectorizable_binary, vectorizable_unary};
use super::{FnCx, LowerError};
use crate::kernel::{Expr, ExprNode, Indirect, Scalar};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use kiln_ir::{BinaryOp, DType, Dim, UnaryOp};

/// Vector width, in f32 lanes.
pub(crate) const LANES: i64 = 4;

/// True if `e` has a four-lane form: f32 values (as f32x4), bools (as i32x4 masks of
/// all ones or zeros), small integers made by casting an f32 and only cast back to f32
/// (as i32x4: a quantize-dequantize round trip), and only ops with vector code.
pub(crate) fn vectorizable(e: &Expr) -> bool {
    use UnaryOp::*;
    let float = |i: usize| e.dtypes[i] == DType::F32;
    let lanes = |i: usize| match e.dtypes[i] {
        DType::F32 | DType::Bool => true,
        d => round_trip(e, i, d),
    };
    (0..e.nodes.len()).all(lanes)
        && e.nodes.iter().enumerate().all(|(i, n)| match n {
            ExprNode::Load(_) | ExprNode::Const(_) | ExprNode::Acc => true,
            ExprNode::Stat(_) => float(i),
            ExprNode::Unary(Not, a) => !float(*a),
            ExprNode::Unary(IsNan | IsInf | IsPosInf | IsNegInf, a) => float(*a),
            ExprNode::Unary(u, a) => float(*a) && vectorizable_unary(*u),
            ExprNode::Binary(BinaryOp::Pow, a, y) => {
                float(*a)
                    && matches!(e.nodes[*y], ExprNode::Const(Scalar::Float(c)) if c == 1.0 || c == 2.0 || c == 3.0)
            }
            ExprNode::Binary(b, a, _) if float(*a) => {
                vectorizable_binary(*b) || is_comparison(*b)
            }
            ExprNode::Binary(b, _, _) => matches!(
                b,
                BinaryOp::And | BinaryOp::Or | BinaryOp::Xor | BinaryOp::Equal
            ),
            ExprNode::Where(..) => true,
            ExprNode::Cast(a) => float(*a) != float(i),
            ExprNode::Gather { .. } | ExprNode::Bitcast(_) | ExprNode::Size(_) => false,
        })
}

/// True if node `i`, of integer type `d`, is a cast of an f32 whose every use is a cast
/// back to f32, and not the root: its value never leaves the lane, so an i32 lane holds it
/// exactly (hence only types that i32 holds and converts to f32 by `cvtdq2ps`).
fn round_trip(e: &Expr, i: usize, d: DType) -> bool {
    let small = matches!(
        d,
        DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::I32
    );
    let from_f32 = matches!(e.nodes[i], ExprNode::Cast(a) if e.dtypes[a] == DType::F32);
    let uses_cast_back = e.nodes.iter().enumerate().all(|(j, n)| {
        !n.operands().contains(&i) || matches!(n, ExprNode::Cast(_)) && e.dtypes[j] == DType::F32
    });
    small && from_f32 && uses_cast_back && i + 1 != e.nodes.len()
}

fn is_comparison(b: BinaryOp) -> bool {
    use BinaryOp::*;
    matches!(b, Equal | Less | LessOrEqual | Greater | GreaterOrEqual)
}

/// Addresses for one evaluation of an expression.
pub(crate) struct Operands<'v> {
    /// Per node: the element address of a load, or the base address of a gather.
    pub addrs: &'v [Option<Value>],
    /// Per node: its value computed outside the loop (in vector mode, a loop-invariant load
    /// splat to all lanes; in scalar mode, any loop-invariant node, see `FnCx::hoist`).
    pub splats: &'v [Option<Value>],
    /// Per gather node, scalar mode: the byte offset of its indirect terms, computed and
    /// checked outside the loop because its indices are loop-invariant.
    pub offsets: &'v [Option<Value>],
    /// Per node, in vector mode: the byte step between the lanes of a strided load.
    pub lanes: &'v [Option<i64>],
    /// Emit only the nodes marked here (the loop-invariant ones, when hoisting); the others
    /// get a placeholder that nothing reads.
    pub only: Option<&'v [bool]>,
    /// The accumulator, in a reduction's post expression.
    pub acc: Option<Value>,
    /// The current row's statistics in a row kernel, splat to all lanes in vector mode.
    pub stats: &'v [Value],
    /// Evaluate four f32 lanes at once.
    pub vector: bool,
}

impl FnCx<'_, '_> {
    /// Emits `e` and returns its root's value.
    pub(crate) fn emit_expr(&mut self, e: &Expr, ops: &Operands<'_>) -> Result<Value, LowerError> {
        let vals = self.emit_values(e, ops)?;
        vals.last()
            .copied()
            .ok_or_else(|| LowerError::Op("empty expression".into()))
    }

    /// Emits `e` and returns the value of every node.
    pub(crate) fn emit_values(
        &mut self,
        e: &Expr,
        ops: &Operands<'_>,
    ) -> Result<Vec<Value>, LowerError> {
        let mut vals: Vec<Value> = Vec::with_capacity(e.nodes.len());
        let placeholder = ops.only.map(|_| self.b.ins().iconst(types::I64, 0));
        for (i, node) in e.nodes.iter().enumerate() {
            if let Some(v) = ops.splats.get(i).copied().flatten() {
                vals.push(v);
                continue;
            }
            if let (Some(only), Some(p)) = (ops.only, placeholder) {
                if !only[i] {
                    vals.push(p);
                    continue;
                }
            }
            let dtype = e.dtypes[i];
            let ty = match (ops.vector, dtype) {
                (true, DType::F32) => types::F32X4,
                (true, _) => types::I32X4,
                (false, _) => clif_type(dtype)?,
            };
            let v = match node {
                ExprNode::Load(_) if ty == types::I32X4 => self.load_mask(addr(ops, i)?),
                ExprNode::Load(_)
                    if ops.vector && ops.lanes.get(i).is_some_and(|s| s.is_some()) =>
                {
                    let step = ops.lanes[i].unwrap_or(0);
                    self.load_lanes(addr(ops, i)?, step)
                }
                ExprNode::Load(a) if self.is_iota(a.buf) => {
                    // Element `j` of an iota is `j`: its byte offset over the i64 size.
                    self.b.ins().sshr_imm_s(addr(ops, i)?, 3)
                }
                ExprNode::Load(_) => self.load(ty, addr(ops, i)?),
                ExprNode::Const(c) if ty == types::I32X4 => {
                    let on = matches!(c, Scalar::Int(v) if *v != 0)
                        || matches!(c, Scalar::Float(f) if *f != 0.0);
                    self.constant(ty, Scalar::Int(-(on as i64)))
                }
                ExprNode::Const(c) => self.constant(ty, *c),
                ExprNode::Size(d) => self.size(d),
                ExprNode::Acc => ops
                    .acc
                    .ok_or_else(|| LowerError::Op("accumulator outside a reduction".into()))?,
                ExprNode::Stat(k) => ops.stats.get(*k).copied().ok_or_else(|| {
                    LowerError::Op(format!("row statistic {k} used before it is computed"))
                })?,
                ExprNode::Gather { indices, .. } => {
                    let base = addr(ops, i)?;
                    let a = match ops.offsets.get(i).copied().flatten() {
                        Some(off) => self.b.ins().iadd(base, off),
                        None => self.indirect(base, indices, &vals, &e.dtypes, dtype),
                    };
                    self.load(ty, a)
                }
                ExprNode::Unary(UnaryOp::Not, a) if ops.vector => self.b.ins().bnot(vals[*a]),
                ExprNode::Unary(u, a) => self.unary(*u, e.dtypes[*a], vals[*a])?,
                ExprNode::Binary(op, a, b) => {
                    let y_const = match e.nodes[*b] {
                        ExprNode::Const(Scalar::Float(c)) => Some(c),
                        _ => None,
                    };
                    if e.dtypes[*a].is_float() {
                        self.float_binary(*op, vals[*a], vals[*b], y_const)?
                    } else {
                        self.int_binary(*op, e.dtypes[*a], vals[*a], vals[*b])?
                    }
                }
                ExprNode::Where(c, a, b) if ops.vector => {
                    self.mask_select(vals[*c], vals[*a], vals[*b])
                }
                ExprNode::Where(c, a, b) => self.b.ins().select(vals[*c], vals[*a], vals[*b]),
                ExprNode::Cast(a) if ops.vector => self.vector_cast(e.dtypes[*a], dtype, vals[*a]),
                ExprNode::Cast(a) => self.cast(e.dtypes[*a], dtype, vals[*a])?,
                ExprNode::Bitcast(a) => {
                    let from = self.b.func.dfg.value_type(vals[*a]);
                    if from == ty {
                        vals[*a]
                    } else {
                        self.b.ins().bitcast(ty, MemFlagsData::new(), vals[*a])
                    }
                }
            };
            vals.push(v);
        }
        Ok(vals)
    }

    /// `base + Σ index_k * stride_k` in bytes, for elements of `elem`, each index checked
    /// against its axis ([`Self::checked_index`]); `vals` and `dtypes` are the values and
    /// dtypes of the expression's nodes.
    pub(crate) fn indirect(
        &mut self,
        base: Value,
        terms: &[Indirect],
        vals: &[Value],
        dtypes: &[DType],
        elem: DType,
    ) -> Value {
        terms.iter().fold(base, |at, t| {
            let idx = self.checked_index(vals[t.index], dtypes[t.index], &t.len);
            let step = &t.stride * &Dim::from(elem.size_bytes());
            let off = match step.as_const() {
                Some(step) => self.b.ins().imul_imm_s(idx, step),
                None => {
                    let step = self.size(&step);
                    self.b.ins().imul(idx, step)
                }
            };
            self.b.ins().iadd(at, off)
        })
    }

    fn unary(&mut self, u: UnaryOp, d: DType, x: Value) -> Result<Value, LowerError> {
        use UnaryOp::*;
        match (d.is_float(), u) {
            (true, IsNan | IsInf | IsPosInf | IsNegInf) => self.float_test(u, x),
            (true, _) => self.float_unary(u, x),
            (false, IsNan | IsInf | IsPosInf | IsNegInf) => Ok(self.b.ins().iconst(types::I8, 0)),
            (false, _) => self.int_unary(u, d, x),
        }
    }

    /// Four f32 at `addr`, `addr + step`, … as one f32x4.
    fn load_lanes(&mut self, addr: Value, step: i64) -> Value {
        let first = self.load(types::F32, addr);
        let mut v = self.b.ins().scalar_to_vector(types::F32X4, first);
        for lane in 1..LANES {
            let at = self.b.ins().iadd_imm_s(addr, step * lane);
            let x = self.load(types::F32, at);
            v = self.b.ins().insertlane(v, x, lane as u8);
        }
        v
    }

    /// Four bools (bytes) at `addr` as an i32x4 mask.
    pub(crate) fn load_mask(&mut self, addr: Value) -> Value {
        let word = self.load(types::I32, addr);
        let v = self.b.ins().scalar_to_vector(types::I32X4, word);
        let bytes = self.b.ins().bitcast(types::I8X16, little(), v);
        let halves = self.b.ins().swiden_low(bytes);
        let words = self.b.ins().swiden_low(halves);
        let zero = self.constant(types::I32X4, Scalar::Int(0));
        self.b.ins().icmp(IntCC::NotEqual, words, zero)
    }

    /// Stores an i32x4 mask as four bools (bytes of 0 or 1).
    pub(crate) fn store_mask(&mut self, mask: Value, addr: Value) {
        let one = self.constant(types::I32X4, Scalar::Int(1));
        let bits = self.b.ins().band(mask, one);
        let halves = self.b.ins().snarrow(bits, bits);
        let bytes = self.b.ins().snarrow(halves, halves);
        let words = self.b.ins().bitcast(types::I32X4, little(), bytes);
        let word = self.b.ins().extractlane(words, 0);
        self.b.ins().store(MemFlagsData::trusted(), word, addr, 0);
    }

    /// A loop-invariant bool as an i32x4 mask.
    pub(crate) fn splat_mask(&mut self, addr: Value) -> Value {
        let byte = self.load(types::I8, addr);
        let word = self.b.ins().uextend(types::I32, byte);
        let ones = self.b.ins().ineg(word);
        self.b.ins().splat(types::I32X4, ones)
    }

    /// `mask ? a : b` lane by lane, for f32x4 or mask operands.
    fn mask_select(&mut self, mask: Value, a: Value, b: Value) -> Value {
        let ty = self.b.func.dfg.value_type(a);
        let m = if ty == types::I32X4 {
            mask
        } else {
            self.b.ins().bitcast(ty, little(), mask)
        };
        self.b.ins().bitselect(m, a, b)
    }

    /// Vector casts between f32 and bool, and between f32 and the small integers of a
    /// round trip (see [`vectorizable`]), held in i32 lanes.
    fn vector_cast(&mut self, from: DType, to: DType, x: Value) -> Value {
        match (from, to) {
            (DType::F32, DType::Bool) => {
                let zero = self.constant(types::F32X4, Scalar::Float(0.0));
                self.b.ins().fcmp(FloatCC::NotEqual, x, zero)
            }
            (DType::Bool, _) => {
                let one = self.constant(types::F32X4, Scalar::Float(1.0));
                let zero = self.constant(types::F32X4, Scalar::Float(0.0));
                self.mask_select(x, one, zero)
            }
            // Saturating, NaN to 0, as the scalar `float_to_int`: through i32, then
            // clamped to the type's range.
            (DType::F32, _) => {
                let wide = self.b.ins().fcvt_to_sint_sat(types::I32X4, x);
                let (lo, hi) = crate::kernel::int_range(to);
                let lo = self.constant(types::I32X4, Scalar::Int(lo));
                let hi = self.constant(types::I32X4, Scalar::Int(hi));
                let c = self.b.ins().smax(wide, lo);
                self.b.ins().smin(c, hi)
            }
            _ => self.b.ins().fcvt_from_sint(types::F32X4, x),
        }
    }

    pub(crate) fn load(&mut self, ty: Type, addr: Value) -> Value {
        self.b.ins().load(ty, MemFlagsData::trusted(), addr, 0)
    }

    pub(crate) fn constant(&mut self, ty: Type, c: Scalar) -> Value {
        let lane = ty.lane_type();
        let v = match c {
            Scalar::Float(f) if lane == types::F64 => self.b.ins().f64const(f),
            Scalar::Float(f) if lane == types::F32 => self.b.ins().f32const(f as f32),
            Scalar::Float(f) => self.b.ins().iconst(lane, f as i64),
            Scalar::Int(i) if lane == types::F64 => self.b.ins().f64const(i as f64),
            Scalar::Int(i) if lane == types::F32 => self.b.ins().f32const(i as f32),
            Scalar::Int(i) => self.b.ins().iconst(lane, mask(i, lane)),
        };
        if ty.is_vector() {
            self.b.ins().splat(ty, v)
        } else {
            v
        }
    }

    /// `idx` as a position along an axis of `len`, as i64: a negative index counts from the
    /// end, and anything still outside `0..len` leaves the kernel through the fault exit,
    /// reporting the index as read. One unsigned compare covers both ends.
    fn checked_index(&mut self, idx: Value, d: DType, len: &Dim) -> Value {
        let ty = self.b.func.dfg.value_type(idx);
        let wide = if ty == types::I64 {
            idx
        } else if matches!(d, DType::U8 | DType::U16 | DType::U32 | DType::Bool) {
            self.b.ins().uextend(types::I64, idx)
        } else {
            self.b.ins().sextend(types::I64, idx)
        };
        let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, wide, 0);
        let len = self.size(len);
        let wrapped = self.b.ins().iadd(wide, len);
        let i = self.b.ins().select(neg, wrapped, wide);
        let outside = self.b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, i, len);
        let fault = self.fault_block();
        let within = self.b.create_block();
        self.b
            .ins()
            .brif(outside, fault, &[wide.into(), len.into()], within, &[]);
        self.b.switch_to_block(within);
        i
    }
}

fn addr(ops: &Operands<'_>, i: usize) -> Result<Value, LowerError> {
    ops.addrs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| LowerError::Op(format!("expression node {i} has no address")))
}

/// Flags for bitcasts between vector types of different lane counts.
fn little() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

/// `i` truncated to the width of `ty`, as iconst wants it.
fn mask(i: i64, ty: Type) -> i64 {
    match ty.bits() {
        64 => i,
        bits => i & ((1i64 << bits) - 1),
    }
}
