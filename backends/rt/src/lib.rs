//! kiln-rt: the runtime that compiled models run on, in kiln's JIT and in ahead-of-time
//! artifacts alike: the worker pool, the GEMM micro-kernels, and the routines behind
//! [`Call`] kernels. It knows nothing of Cranelift or of graphs, so an artifact links only
//! this.

mod aligned;
pub mod artifact;
mod attention;
pub mod call;
pub mod capi;
mod conv;
pub mod decode;
pub mod exe;
pub mod exec;
pub mod gemm;
pub mod kv;
pub mod layout;
pub mod libcalls;
pub mod math;
pub mod nibbles;
pub mod npz;
pub mod pool;
pub mod qgemm;
pub mod summary;

/// Re-exported for modules `kiln build --emit rust` generates, which need only this crate.
pub use half;
/// Re-exported for generated modules (tensors).
pub use kiln_ir as ir;
/// Re-exported for generated modules (their inputs and outputs are ndarrays).
pub use ndarray;

use call::{BufId, Call, MatMul, MatOperand, OpCall, QuantLinear};
use gemm::{MatMut, MatRef, PackedB, PackedHalf};
use kiln_ir::{interp, ActQuant, Tensor, WeightQuant};
use pool::ThreadPool;
use qgemm::{PackedQuant, QuantWeight, Scales};

/// Resolves a buffer to its address for this run.
pub trait Memory: Sync {
    /// The first byte of `buf`.
    fn addr(&self, buf: BufId) -> *mut u8;
}

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
#[error("{op}: {message}")]
pub struct CallError {
    /// The op.
    pub op: String,
    /// What went wrong.
    pub message: String,
}

/// A call's constant weight, packed ahead of time by [`prepack`].
pub enum Packed {
    /// The B of an f32 matmul, or a weight-only layer's weight dequantized to f32 (on
    /// CPUs without AVX-512, where widening it at every run would cost more).
    F32(PackedB),
    /// A quantized layer's weight in the integer GEMM's panels.
    Quant(PackedQuant),
    /// A weight-only layer's integer weight, in the integer GEMM's panels: few rows (a
    /// decode step) dequantize it in registers ([`qgemm::dequant`]), many rows as the f32
    /// GEMM packs it.
    WeightOnly(PackedQuant),
    /// A weight-only layer's f16 or bf16 weight, used as [`Packed::WeightOnly`] is.
    Half(PackedHalf),
}

impl Packed {
    /// Size of the packed copy.
    pub fn bytes(&self) -> usize {
        match self {
            Packed::F32(b) => b.bytes(),
            Packed::Quant(q) | Packed::WeightOnly(q) => q.bytes(),
            Packed::Half(h) => h.bytes(),
        }
    }
}

/// How a run executes an op that has no compiled code ([`Call::Op`]): [`kiln_rt_op_call`],
/// the reference interpreter. Runs reach it through a pointer, never by name, so that an
/// executable whose ops all compiled links none of the interpreter: the descriptor of an
/// artifact with op calls points at it, and the linker drops it from the others (2.9 MB of
/// a 7.2 MB BERT-tiny executable).
pub type OpCallFn = unsafe fn(&OpCall, &dyn Memory) -> Result<(), CallError>;

/// Runs one call kernel. `packed` is what [`prepack`] made of its constant weight, if any;
/// `op_call` runs [`Call::Op`].
///
/// # Safety
/// `mem` must map every buffer the call names to memory of its size, and `packed` must be
/// `prepack`'s result for this call.
pub unsafe fn run_call(
    call: &Call,
    packed: Option<&Packed>,
    op_call: Option<OpCallFn>,
    mem: &dyn Memory,
    pool: &ThreadPool,
) -> Result<(), CallError> {
    match call {
        Call::MatMul(mm) => {
            match packed {
                // SAFETY: forwarded from the caller.
                None => unsafe { matmul(mm, mem, pool) },
                // A packed weight is the only copy (the JIT releases the unpacked one),
                // so a call never falls back to reading it.
                // SAFETY: forwarded from the caller.
                Some(Packed::F32(b)) if (b.k(), b.n()) == (mm.k, mm.n) => unsafe {
                    matmul_prepacked(mm, b, mem, pool)
                },
                Some(_) => {
                    return Err(CallError {
                        op: "matmul".into(),
                        message: format!(
                            "its packed weight does not fit k = {}, n = {}",
                            mm.k, mm.n
                        ),
                    })
                }
            }
            Ok(())
        }
        // SAFETY: forwarded from the caller.
        Call::QuantLinear(q) => unsafe { quant_linear(q, packed, mem, pool) },
        Call::Attention(a) => {
            // SAFETY: forwarded from the caller.
            unsafe { attention::attention(a, mem, pool) };
            Ok(())
        }
        Call::Conv(c) => {
            // SAFETY: forwarded from the caller.
            unsafe { conv::conv(c, mem, pool) };
            Ok(())
        }
        Call::Op(c) => match op_call {
            // SAFETY: forwarded from the caller.
            Some(op_call) => unsafe { op_call(c, mem) },
            None => Err(CallError {
                op: c.op.name(),
                message: "this program was built without the interpreter its op calls need".into(),
            }),
        },
    }
}

/// A batched f32 matmul. When every operand's matrices are evenly spaced (the usual case,
/// broadcasting included) the whole batch is one `sgemm_batched` call, which spreads batch
/// items and tiles over the pool; otherwise each product is its own call.
unsafe fn matmul(mm: &MatMul, mem: &dyn Memory, pool: &ThreadPool) {
    // An empty batch has no matrices and no offsets to read (found by the graph fuzzer).
    if mm.batch == 0 {
        return;
    }
    let at =
        |o: &MatOperand, i: usize| (mem.addr(o.buf) as *mut f32).wrapping_add(o.batch_offsets[i]);
    let mat = |o: &MatOperand, i: usize| MatRef {
        ptr: at(o, i),
        row_stride: o.row_stride,
        col_stride: o.col_stride,
    };
    let out = |i: usize| MatMut {
        ptr: at(&mm.c, i),
        row_stride: mm.c.row_stride,
        col_stride: mm.c.col_stride,
    };
    if let (Some(sa), Some(sb), Some(sc)) = (
        even_stride(&mm.a.batch_offsets),
        even_stride(&mm.b.batch_offsets),
        even_stride(&mm.c.batch_offsets),
    ) {
        // SAFETY: the schedule sized each buffer for every matrix of the batch, the
        // epilogue's operands included.
        unsafe {
            gemm::sgemm_batched_epilogue(
                pool,
                mm.batch,
                [mm.m, mm.k, mm.n],
                (mat(&mm.a, 0), sa),
                (mat(&mm.b, 0), sb),
                (out(0), sc),
                false,
                epilogue(mm, mem),
            )
        };
        return;
    }
    // Only plain products have unevenly spaced batches (a linear layer is one matrix).
    debug_assert!(mm.epilogue.is_empty());
    for i in 0..mm.batch {
        // SAFETY: as above.
        unsafe {
            gemm::sgemm(
                pool,
                mm.m,
                mm.k,
                mm.n,
                mat(&mm.a, i),
                mat(&mm.b, i),
                out(i),
                false,
            )
        };
    }
}

/// Packs the constant weight of `call` ahead of time, where it has one: the B of a matmul
/// (when B is shared by the whole batch, so that [`run_call`] can use
/// [`gemm::sgemm_prepacked`] at every shape whose A and C are evenly spaced) and the weight
/// of a quantized layer.
/// `constant(buf)` is the address of a constant buffer, `None` for any other. `None` also
/// when the weight is invalid, so that the run reports why.
///
/// # Safety
/// Each address `constant` gives must point to that buffer, valid for every element the
/// call reads.
pub unsafe fn prepack(
    call: &Call,
    constant: &dyn Fn(BufId) -> Option<*const u8>,
) -> Option<Packed> {
    match call {
        // SAFETY: forwarded from the caller.
        Call::MatMul(mm) => {
            unsafe { prepack_matmul(mm, constant(mm.b.buf)? as *const f32) }.map(Packed::F32)
        }
        Call::QuantLinear(q) => {
            let zero_points = match q.zero_points {
                Some(z) => Some(constant(z)?),
                None => None,
            };
            let scale = match q.scale {
                Some(s) => Some(constant(s)?),
                None => None,
            };
            let w = quant_weight(q, constant(q.w)?, scale, zero_points);
            // SAFETY: forwarded from the caller.
            unsafe { pack_quant(q, &w) }.ok()
        }
        _ => None,
    }
}

/// The stored weight of `q` at these addresses.
fn quant_weight(
    q: &QuantLinear,
    w: *const u8,
    scale: Option<*const u8>,
    zp: Option<*const u8>,
) -> QuantWeight {
    QuantWeight {
        format: q.attrs.weights,
        k: q.k,
        n: q.n,
        values: w,
        scales: match (scale, q.scale_f16) {
            (None, _) => Scales::None,
            (Some(s), true) => Scales::F16(s as *const half::f16),
            (Some(s), false) => Scales::F32(s as *const f32),
        },
        zero_points: zp,
    }
}

/// Packs a quantized weight for its activation scheme: integer panels for dynamic int8,
/// the dequantized f32 weight in GEMM panels for weight-only layers.
///
/// # Safety
/// `w` must be valid for the shapes its format gives.
unsafe fn pack_quant(q: &QuantLinear, w: &QuantWeight) -> Result<Packed, String> {
    match q.attrs.activations {
        // SAFETY: forwarded from the caller.
        ActQuant::DynamicInt8 | ActQuant::Quantized | ActQuant::PerTensor | ActQuant::DynamicU8 => {
            unsafe { PackedQuant::new(w) }.map(Packed::Quant)
        }
        // The narrow panels, where this CPU widens them fast.
        ActQuant::None if qgemm::dequant::available() => match w.format.range() {
            // SAFETY: forwarded from the caller.
            Some(_) => unsafe { PackedQuant::new(w) }.map(Packed::WeightOnly),
            // SAFETY: forwarded from the caller: a half format's values are K × N halves.
            None => unsafe {
                PackedHalf::new(
                    w.k,
                    w.n,
                    w.values as *const u16,
                    w.format == WeightQuant::BF16,
                )
            }
            .map(Packed::Half)
            .ok_or_else(|| "the packed weight's size overflows".to_string()),
        },
        ActQuant::None => {
            // SAFETY: forwarded from the caller.
            let f = unsafe { w.dequantized() }?;
            let b = MatRef {
                ptr: f.as_ptr(),
                row_stride: q.n as isize,
                col_stride: 1,
            };
            // SAFETY: `f` is k×n.
            Ok(Packed::F32(unsafe { PackedB::new(q.k, q.n, b) }))
        }
    }
}

/// A quantized linear layer, on its pre-packed weight or on one packed now (a weight that
/// is not a constant, or one `prepack` refused, whose error this reports).
///
/// # Safety
/// As for [`run_call`].
unsafe fn quant_linear(
    q: &QuantLinear,
    packed: Option<&Packed>,
    mem: &dyn Memory,
    pool: &ThreadPool,
) -> Result<(), CallError> {
    if q.m == 0 || q.n == 0 {
        return Ok(());
    }
    let fresh;
    let packed = match packed {
        Some(p) => p,
        None => {
            let zero_points = q.zero_points.map(|z| mem.addr(z) as *const u8);
            let scale = q.scale.map(|s| mem.addr(s) as *const u8);
            let w = quant_weight(q, mem.addr(q.w), scale, zero_points);
            // SAFETY: the schedule sized the weight's buffers for its format.
            fresh = unsafe { pack_quant(q, &w) }.map_err(|message| CallError {
                op: "quant_linear".into(),
                message,
            })?;
            &fresh
        }
    };
    let x = mem.addr(q.x) as *const f32;
    let c = MatMut {
        ptr: mem.addr(q.c) as *mut f32,
        row_stride: q.n as isize,
        col_stride: 1,
    };
    let epilogue = epilogue_at(&q.epilogue, mem, 0, [q.n as isize, 1]);
    let a = MatRef {
        ptr: x,
        row_stride: q.k as isize,
        col_stride: 1,
    };
    // SAFETY: the schedule gave the zero point one byte and the scale one f32.
    let activations = unsafe { activations(q, x, mem) };
    match packed {
        // SAFETY: the schedule sized x as m×k and c as m×n, contiguous.
        Packed::Quant(w) => unsafe { qgemm::qgemm(pool, q.m, activations, w, c, epilogue) },
        // SAFETY: the schedule sized x and c; `Packed::WeightOnly` and `Packed::Half` exist
        // only where the CPU runs `qgemm::dequant`.
        Packed::WeightOnly(w) if q.m <= qgemm::dequant::MAX_ROWS => unsafe {
            qgemm::dequant::dequant_gemm(pool, q.m, x, w, c, epilogue)
        },
        // SAFETY: as above.
        Packed::Half(w) if q.m <= qgemm::dequant::MAX_ROWS => unsafe {
            qgemm::dequant::half_gemm(pool, q.m, x, w, c, epilogue)
        },
        // SAFETY: as above.
        Packed::WeightOnly(w) => unsafe {
            gemm::sgemm_narrow_epilogue(pool, q.m, a, w, c, epilogue)
        },
        // SAFETY: as above.
        Packed::Half(w) => unsafe { gemm::sgemm_narrow_epilogue(pool, q.m, a, w, c, epilogue) },
        // SAFETY: as above.
        Packed::F32(b) => unsafe {
            gemm::sgemm_prepacked_epilogue(pool, 1, q.m, a, 0, b, c, 0, epilogue)
        },
    }
    Ok(())
}

/// How `q`'s activations at `x` enter its integer product.
///
/// # Safety
/// The zero point, when the scheme has one, must be one byte and the scale one f32.
unsafe fn activations(q: &QuantLinear, x: *const f32, mem: &dyn Memory) -> qgemm::Activations {
    let Some(input) = q.quantized else {
        return match q.attrs.activations {
            ActQuant::DynamicU8 => qgemm::Activations::DynamicU8(x),
            _ => qgemm::Activations::F32(x),
        };
    };
    // SAFETY: forwarded from the caller.
    let (zp, scale) = unsafe {
        (
            *(mem.addr(input.zero_point) as *const u8),
            *(mem.addr(input.scale) as *const f32),
        )
    };
    let zero_point = match input.signed {
        true => i32::from(zp as i8),
        false => i32::from(zp),
    };
    match q.attrs.activations {
        ActQuant::PerTensor => qgemm::Activations::PerTensor {
            x,
            signed: input.signed,
            zero_point,
            scale,
        },
        _ => qgemm::Activations::Quantized {
            x: x as *const u8,
            signed: input.signed,
            zero_point,
            scale,
        },
    }
}

/// Packs the B of `mm` ahead of time (see [`prepack`]); `base` is the address of B's buffer.
///
/// # Safety
/// `base` must point to B's buffer, valid for every element `mm` reads.
unsafe fn prepack_matmul(mm: &MatMul, base: *const f32) -> Option<PackedB> {
    let shared = even_stride(&mm.b.batch_offsets) == Some(0);
    if !shared || mm.k == 0 || mm.n == 0 {
        return None;
    }
    let b = MatRef {
        ptr: base.wrapping_add(mm.b.batch_offsets[0]),
        row_stride: mm.b.row_stride,
        col_stride: mm.b.col_stride,
    };
    // SAFETY: the schedule sized the constant for the k×n view.
    Some(unsafe { PackedB::new(mm.k, mm.n, b) })
}

/// A matmul whose B was packed by [`prepack`].
///
/// # Safety
/// As for [`run_call`].
unsafe fn matmul_prepacked(mm: &MatMul, b: &PackedB, mem: &dyn Memory, pool: &ThreadPool) {
    let at =
        |o: &MatOperand, i: usize| (mem.addr(o.buf) as *mut f32).wrapping_add(o.batch_offsets[i]);
    let strides = even_stride(&mm.a.batch_offsets).zip(even_stride(&mm.c.batch_offsets));
    // Evenly spaced matrices run as one batched GEMM, others one matrix at a time.
    let runs = match strides {
        Some(s) if mm.batch > 0 => vec![(0, mm.batch, s)],
        Some(_) => Vec::new(),
        None => (0..mm.batch).map(|i| (i, 1, (0, 0))).collect(),
    };
    for (i, batch, (a_stride, c_stride)) in runs {
        let a = MatRef {
            ptr: at(&mm.a, i),
            row_stride: mm.a.row_stride,
            col_stride: mm.a.col_stride,
        };
        let c = MatMut {
            ptr: at(&mm.c, i),
            row_stride: mm.c.row_stride,
            col_stride: mm.c.col_stride,
        };
        let epilogue = epilogue_at(
            &mm.epilogue,
            mem,
            mm.c.batch_offsets[i],
            [mm.c.row_stride, mm.c.col_stride],
        );
        // SAFETY: the schedule sized each buffer for every matrix of the batch, at these
        // offsets.
        unsafe {
            gemm::sgemm_prepacked_epilogue(pool, batch, mm.m, a, a_stride, b, c, c_stride, epilogue)
        };
    }
}

/// The GEMM epilogue of `mm` at this run's addresses; the residual is addressed like C.
fn epilogue(mm: &MatMul, mem: &dyn Memory) -> gemm::Epilogue {
    let c = &mm.c;
    epilogue_at(
        &mm.epilogue,
        mem,
        c.batch_offsets[0],
        [c.row_stride, c.col_stride],
    )
}

/// `e` at this run's addresses, with the residual addressed like a C whose first element
/// is at `offset`, with these row and column strides.
fn epilogue_at(
    e: &call::GemmEpilogue,
    mem: &dyn Memory,
    offset: usize,
    [row_stride, col_stride]: [isize; 2],
) -> gemm::Epilogue {
    gemm::Epilogue {
        bias: e
            .bias
            .map_or(std::ptr::null(), |b| mem.addr(b) as *const f32),
        activation: e.activation,
        residual: e.residual.map(|(kind, r)| {
            let ptr = (mem.addr(r) as *const f32).wrapping_add(offset);
            let view = MatRef {
                ptr,
                row_stride,
                col_stride,
            };
            (kind, view)
        }),
    }
}

/// The common difference of `offsets`, if they are evenly spaced.
fn even_stride(offsets: &[usize]) -> Option<isize> {
    let step = match offsets {
        [a, b, ..] => *b as isize - *a as isize,
        _ => 0,
    };
    offsets
        .windows(2)
        .all(|w| w[1] as isize - w[0] as isize == step)
        .then_some(step)
}

/// Runs an op by its reference implementation on copies of its inputs: the [`OpCallFn`].
/// Exported by this name for the descriptors of artifacts with op calls.
///
/// # Safety
/// `mem` must map every buffer the call names to memory of its size.
#[no_mangle]
pub unsafe fn kiln_rt_op_call(c: &OpCall, mem: &dyn Memory) -> Result<(), CallError> {
    let err = |message: String| CallError {
        op: c.op.name(),
        message,
    };
    let inputs = c
        .inputs
        .iter()
        .map(|x| {
            let len = x.shape.iter().product::<usize>() * x.dtype.size_bytes();
            // SAFETY: the buffer holds `len` initialized bytes.
            let bytes = unsafe { std::slice::from_raw_parts(mem.addr(x.buf), len) };
            Tensor::from_le_bytes(x.dtype, &x.shape, bytes).map_err(|e| err(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = interp::eval_op(&c.op, &inputs, &c.bindings).map_err(|e| err(e.to_string()))?;
    for (y, t) in c.outputs.iter().zip(outputs) {
        let (planned, shape) = (y.dtype, &y.shape);
        if t.shape() != shape.as_slice() || t.dtype() != planned {
            return Err(err(format!(
                "produced {}{:?}, planned {planned}{shape:?}",
                t.dtype(),
                t.shape()
            )));
        }
        let bytes = t.to_le_bytes();
        // SAFETY: the planned buffer has exactly this many bytes (same dtype and shape).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), mem.addr(y.buf), bytes.len()) };
    }
    Ok(())
}
