//! `com.microsoft:MatMulNBits`, the blockwise 4-bit weight format onnxruntime's
//! `MatMul4BitsQuantizer` and model builder write: `Y = A · dequant(B)ᵀ (+ bias)`, where
//! `B[N, blocks, block/2]` packs two 4-bit values per byte (low nibble first) along K,
//! `dequant(B)[n, k] = (B[n, k] - zp[n, k / block]) · scales[n, k / block]` and the zero
//! points default to 8.
//!
//! A layer in a format the integer kernels take (4 bits, blocks of 32, 64 or 128, u8 zero
//! points, f32 `A`) becomes a `quant_linear` with the weight re-laid `[K, N]`, keeping its
//! 4-bit storage. Its activations stay f32 (the op's definition), unless the file sets
//! `accuracy_level` 4, which lets onnxruntime compute in int8: then they are quantized per
//! token. Any other layer is imported as its definition says, a matmul by the weight
//! dequantized at import.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use kiln_ir::{ActQuant, Block, DType, Epilogue, Op, QuantAttrs, Tensor, WeightQuant};

/// The registry key of a `com.microsoft` op: the domain, a dot, the op type.
pub(crate) const PREFIX: &str = "com.microsoft.";

/// Registers the family (the microsoft domain has one opset version, 1).
pub(crate) fn register(reg: &mut Registry) {
    reg.add("com.microsoft.MatMulNBits", 1, matmul_nbits);
}

/// The weight as its attributes and constant operands describe it.
struct NBits {
    k: usize,
    n: usize,
    block: usize,
    blocks: usize,
    /// `[N, blocks, block / 2]` packed nibbles.
    packed: Vec<u8>,
    /// `[N · blocks]` (f32 or f16).
    scales: Tensor,
    /// `[N · blocks]` unpacked, 8 when the file has none.
    zero_points: Vec<u8>,
}

fn matmul_nbits(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let a = n.input(0)?;
    let w = read(cx, n)?;
    if n.opt(4).is_some() {
        return Err(n.ctx.unsupported("MatMulNBits with g_idx (act-order)"));
    }
    let bias = n.opt(5);
    let accuracy = n.int("accuracy_level", 0);
    let fits = Block::from_rows(w.block).filter(|_| cx.dtype(a) == DType::F32 && cx.rank(a) >= 2);
    let Some(block) = fits else {
        return dequantized(cx, n, a, &w, bias);
    };
    let (values, zero_points) = w.relaid().map_err(|e| n.ctx.err(e))?;
    let scales = relay(&w.scales, w.blocks, w.n).map_err(|e| n.ctx.err(e))?;
    let attrs = QuantAttrs {
        weights: WeightQuant::Int4 {
            block,
            zero_points: true,
        },
        activations: match accuracy {
            4 => ActQuant::DynamicInt8,
            _ => ActQuant::None,
        },
        epilogue: Epilogue {
            bias: bias.is_some(),
            ..Epilogue::default()
        },
    };
    let mut args = vec![
        a.clone(),
        Val::tensor(values),
        Val::tensor(scales),
        Val::tensor(zero_points),
    ];
    args.extend(bias.cloned());
    let refs: Vec<&Val> = args.iter().collect();
    Ok(vec![cx.emit1("", Op::QuantLinear(attrs), &refs)?])
}

/// Reads and checks the attributes and constant operands.
fn read(cx: &Cx, n: &N) -> R<NBits> {
    let bits = n.int("bits", 4);
    if bits != 4 {
        return Err(n
            .ctx
            .unsupported(format!("MatMulNBits with bits={bits} (only 4)")));
    }
    let positive = |name: &str| -> R<usize> {
        let v = n.req_int(name)?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v > 0 && v <= 1 << 24)
            .ok_or_else(|| {
                n.ctx
                    .err(format!("attribute `{name}` must be in 1..=2^24, got {v}"))
            })
    };
    let (k, cols, block) = (positive("K")?, positive("N")?, positive("block_size")?);
    if block < 16 || !block.is_power_of_two() {
        return Err(n.ctx.err(format!(
            "block_size must be a power of two of at least 16, got {block}"
        )));
    }
    let blocks = k.div_ceil(block);
    let bytes = (cols.checked_mul(blocks)).and_then(|c| c.checked_mul(block / 2));
    let b = cx.known_tensor(n.input(1)?, "B (the packed weight)")?;
    if b.dtype() != DType::U8 || Some(b.len()) != bytes {
        return Err(n.ctx.err(format!(
            "B must be u8 with N·⌈K/block⌉·block/2 = {}·{blocks}·{} bytes, got {}{:?}",
            cols,
            block / 2,
            b.dtype(),
            b.shape()
        )));
    }
    let scales = cx.known_tensor(n.input(2)?, "scales")?;
    if !matches!(scales.dtype(), DType::F32 | DType::F16) || scales.len() != cols * blocks {
        return Err(n.ctx.err(format!(
            "scales must be f32 or f16 with N·⌈K/block⌉ = {} values, got {}{:?}",
            cols * blocks,
            scales.dtype(),
            scales.shape()
        )));
    }
    let zero_points = match n.opt(3) {
        None => vec![8; cols * blocks],
        Some(z) => unpack_zero_points(n, &cx.known_tensor(z, "zero_points")?, cols, blocks)?,
    };
    Ok(NBits {
        k,
        n: cols,
        block,
        blocks,
        // As bytes: widened to i64 they took 8× the weight at once.
        packed: b.values::<u8>().expect("checked u8 above").into_owned(),
        scales,
        zero_points,
    })
}

/// u8 zero points, two per byte along the blocks of a column (`[N, ⌈blocks/2⌉]`).
fn unpack_zero_points(n: &N, z: &Tensor, cols: usize, blocks: usize) -> R<Vec<u8>> {
    let per_col = blocks.div_ceil(2);
    if z.dtype() != DType::U8 || z.len() != cols * per_col {
        return Err(n.ctx.unsupported(format!(
            "MatMulNBits zero points other than packed u8 [N·⌈blocks/2⌉] = {} (got {}{:?})",
            cols * per_col,
            z.dtype(),
            z.shape()
        )));
    }
    let bytes = z.values::<u8>().expect("checked u8 above");
    Ok((0..cols * blocks)
        .map(|i| {
            let (col, b) = (i / blocks, i % blocks);
            let byte = bytes[col * per_col + b / 2];
            (byte >> (4 * (b % 2))) & 0x0F
        })
        .collect())
}

impl NBits {
    /// Weight (n, k) as stored, 0..=15.
    fn value(&self, n: usize, k: usize) -> u8 {
        let byte = self.packed
            [(n * self.blocks + k / self.block) * (self.block / 2) + (k % self.block) / 2];
        (byte >> (4 * (k % 2))) & 0x0F
    }

    /// The weight `[K, N]` u8 and the zero points `[blocks, N]`, as `quant_linear` takes.
    fn relaid(&self) -> Result<(Tensor, Tensor), String> {
        let values: Vec<u8> = (0..self.k * self.n)
            .map(|i| self.value(i % self.n, i / self.n))
            .collect();
        let zp: Vec<u8> = (0..self.blocks * self.n)
            .map(|i| self.zero_points[(i % self.n) * self.blocks + i / self.n])
            .collect();
        let t = |v: Vec<u8>, s: &[usize]| Tensor::from_vec(v, s).map_err(|e| e.to_string());
        Ok((
            t(values, &[self.k, self.n])?,
            t(zp, &[self.blocks, self.n])?,
        ))
    }
}

/// `[N · blocks]` scales as `[blocks, N]`, in their own type.
fn relay(scales: &Tensor, blocks: usize, n: usize) -> Result<Tensor, String> {
    let v = scales.to_f64_vec();
    let t: Vec<f64> = (0..blocks * n)
        .map(|i| v[(i % n) * blocks + i / n])
        .collect();
    let f = Tensor::from_vec(
        t.iter().map(|&x| x as f32).collect::<Vec<f32>>(),
        &[blocks, n],
    )
    .map_err(|e| e.to_string())?;
    // f16 values are exact in f32, so the cast back is exact too.
    Ok(if scales.dtype() == DType::F16 {
        f.cast(DType::F16)
    } else {
        f
    })
}

/// The definition itself: `A · dequant(B)ᵀ (+ bias)` with the weight dequantized now, in
/// `A`'s type, for formats the integer kernels do not take.
fn dequantized(cx: &mut Cx, n: &N, a: &Val, w: &NBits, bias: Option<&Val>) -> R<Vec<Val>> {
    let scales = w.scales.to_f64_vec();
    let deq: Vec<f32> = (0..w.k * w.n)
        .map(|i| {
            let (k, col) = (i / w.n, i % w.n);
            let b = col * w.blocks + k / w.block;
            let s = scales[b] as f32;
            (f32::from(w.value(col, k)) - f32::from(w.zero_points[b])) * s
        })
        .collect();
    let weight = Tensor::from_vec(deq, &[w.k, w.n])
        .map_err(|e| n.ctx.err(e.to_string()))?
        .cast(cx.dtype(a));
    let y = cx.emit1("", Op::MatMul, &[a, &Val::tensor(weight)])?;
    match bias {
        Some(b) => Ok(vec![cx.binary("bias", kiln_ir::BinaryOp::Add, &y, b)?]),
        None => Ok(vec![y]),
    }
}
