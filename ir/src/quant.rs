//! The attributes of a quantized linear layer ([`crate::Op::QuantLinear`]): how its weights
//! are stored and how its activations are quantized. Each choice is a typed variant, so a
//! layer the kernels cannot run (int4 in blocks of 48, a per-tensor activation scale) cannot
//! be written down.

use crate::Epilogue;
use serde::{Deserialize, Serialize};

/// A quantized linear layer: `y = act(x·dequant(w) + bias) ⊕ r`, with the product computed
/// as [`ActQuant`] says.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct QuantAttrs {
    /// How the weights are stored.
    pub weights: WeightQuant,
    /// How the activations enter the product.
    pub activations: ActQuant,
    /// The float work after the product, as for [`crate::Op::Linear`].
    pub epilogue: Epilogue,
}

impl QuantAttrs {
    /// How many inputs the op takes: `x`, `w`, the format's parameters (the scales and,
    /// when the format has them, the zero points), the activation scheme's (for
    /// [`ActQuant::Quantized`]: `x`'s zero point and scale), then the epilogue's bias and
    /// residual.
    ///
    /// ```
    /// use kiln_ir::{Block, Epilogue, QuantAttrs, WeightQuant};
    /// let int4 = WeightQuant::Int4 { block: Block::B32, zero_points: true };
    /// let q = QuantAttrs { weights: int4, epilogue: Epilogue { bias: true, ..Epilogue::default() }, ..QuantAttrs::default() };
    /// assert_eq!(q.inputs(), 5); // x, w, scale, zero_point, bias
    /// ```
    pub fn inputs(self) -> usize {
        2 + self.params() + self.epilogue.inputs() - 2
    }

    /// How many inputs sit between `w` and the epilogue's operands: the weight format's
    /// parameters, then the activation scheme's.
    pub fn params(self) -> usize {
        self.weights.params() + self.activations.params()
    }
}

/// How a quantized layer's weight `w[K, N]` is stored. The scales (f32, or f16 for int4)
/// and zero points are inputs of the op, so they are tensors like any other. The half
/// formats store the weight in 16 bits and compute in f32 (mixed precision): they have no
/// scales, and their activations stay f32 ([`ActQuant::None`]).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum WeightQuant {
    /// `w` is i8 in `-127..=127` (symmetric), with one f32 scale per output column:
    /// `scale[N]`, `dequant(w)[k, n] = w[k, n] · scale[n]`.
    #[default]
    Int8,
    /// `w` holds 4-bit values in blocks of `block` rows along K: i8 in `-8..=7` without zero
    /// points, u8 in `0..=15` with them. `scale[⌈K/block⌉, N]` (f32 or f16) and, when
    /// `zero_points`, `zero_point[⌈K/block⌉, N]` u8 in `0..=15`:
    /// `dequant(w)[k, n] = (w[k, n] - zero_point[k / block, n]) · scale[k / block, n]`.
    Int4 {
        /// Rows of K per scale.
        block: Block,
        /// Whether a zero point input follows the scales.
        zero_points: bool,
    },
    /// `w` is f16: `dequant(w)[k, n] = f32(w[k, n])`, exact.
    F16,
    /// `w` is bf16: `dequant(w)[k, n] = f32(w[k, n])`, exact.
    BF16,
}

impl WeightQuant {
    /// Whether the op takes a zero point input.
    pub fn zero_points(self) -> bool {
        matches!(
            self,
            WeightQuant::Int4 {
                zero_points: true,
                ..
            }
        )
    }

    /// How many parameter tensors follow `w`: the scales, then the zero points.
    pub fn params(self) -> usize {
        match self {
            WeightQuant::Int8 => 1,
            WeightQuant::Int4 { zero_points, .. } => 1 + usize::from(zero_points),
            WeightQuant::F16 | WeightQuant::BF16 => 0,
        }
    }

    /// Rows of K that share a scale in a blocked format (int4); `None` for int8 (one scale
    /// per column) and for the half formats (none).
    pub fn block(self) -> Option<usize> {
        match self {
            WeightQuant::Int4 { block, .. } => Some(block.rows()),
            WeightQuant::Int8 | WeightQuant::F16 | WeightQuant::BF16 => None,
        }
    }

    /// The text name: `int8`, `int4`, `f16`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            WeightQuant::Int8 => "int8",
            WeightQuant::Int4 { .. } => "int4",
            WeightQuant::F16 => "f16",
            WeightQuant::BF16 => "bf16",
        }
    }

    /// The element type of the stored weight.
    pub fn stored(self) -> crate::DType {
        use crate::DType;
        match self {
            WeightQuant::Int4 {
                zero_points: true, ..
            } => DType::U8,
            WeightQuant::Int8 | WeightQuant::Int4 { .. } => DType::I8,
            WeightQuant::F16 => DType::F16,
            WeightQuant::BF16 => DType::BF16,
        }
    }

    /// The range an integer format's stored weights must lie in; `None` for the half
    /// formats.
    pub fn range(self) -> Option<(i64, i64)> {
        match self {
            WeightQuant::Int8 => Some((-127, 127)),
            WeightQuant::Int4 {
                zero_points: false, ..
            } => Some((-8, 7)),
            WeightQuant::Int4 {
                zero_points: true, ..
            } => Some((0, 15)),
            WeightQuant::F16 | WeightQuant::BF16 => None,
        }
    }
}

/// The block sizes an int4 weight may use along K (those onnxruntime's `MatMulNBits` and
/// the kernels support).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Block {
    /// 32 rows per scale.
    B32,
    /// 64 rows per scale.
    B64,
    /// 128 rows per scale.
    B128,
}

impl Block {
    /// Every block size.
    pub const ALL: [Block; 3] = [Block::B32, Block::B64, Block::B128];

    /// Rows of K per scale.
    pub fn rows(self) -> usize {
        match self {
            Block::B32 => 32,
            Block::B64 => 64,
            Block::B128 => 128,
        }
    }

    /// The block of `rows` rows, if it is one of the supported sizes.
    pub fn from_rows(rows: usize) -> Option<Block> {
        Block::ALL.into_iter().find(|b| b.rows() == rows)
    }
}

/// The longest K of an int8 layer: `127 · 127 · K` must fit in an i32 accumulator.
pub const MAX_INT8_K: i64 = i32::MAX as i64 / (127 * 127);

/// The longest K of a layer whose activations arrive quantized ([`ActQuant::Quantized`]):
/// `255 · 127 · K` must fit in an i32 accumulator (`x` less its zero point spans 511
/// values).
pub const MAX_QUANTIZED_K: i64 = i32::MAX as i64 / (255 * 127);

/// How the activations `x` enter a quantized layer's product.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ActQuant {
    /// Weight-only: `x` stays f32, the product is `x · dequant(w)` in f32, like
    /// [`crate::Op::Linear`] over the dequantized weight.
    #[default]
    None,
    /// Dynamic int8 per token (per row of `x` flattened to `[M, K]`), symmetric:
    /// `amax[m] = max_k |x[m, k]|`, `xq[m, k] = round_half_even(x[m, k] · (127 / amax[m]))`
    /// (0 for a row of zeros), the integer product `acc = Σ_k xq · wq` in i32 per block of K
    /// (the whole of K for int8, with `wq` the weight less its zero point), and
    /// `y[m, n] = (Σ_blocks f32(acc) · scale[block, n]) · (amax[m] / 127)`, the blocks
    /// summed in order in f32. A row holding a NaN or an infinity gives NaN in every output
    /// of that row. An int8 layer's K is at most [`MAX_INT8_K`], so `acc` cannot overflow.
    DynamicInt8,
    /// The activations arrive quantized, as an imported model's `QuantizeLinear` or
    /// `DynamicQuantizeLinear` leaves them: `x` is u8 or i8, and two inputs follow the
    /// weight's scales: `x_zero_point` and `x_scale`, scalars of `x`'s type and f32 (run-time
    /// values). With int8 weights only: `acc[m, n] = Σ_k (x[m, k] - x_zero_point) · w[k, n]`
    /// in i32, `y[m, n] = f32(acc) · (x_scale · scale[n])`. This is `MatMulInteger`, `Cast`
    /// and the two scale multiplies of onnxruntime's `quantize_dynamic`, in their order. K
    /// is at most [`MAX_QUANTIZED_K`], so `acc` cannot overflow.
    Quantized,
    /// `x` is f32, quantized per tensor as `QuantizeLinear` does, by the zero point and
    /// scale that follow the weight's scales (scalars: u8 or i8, and f32):
    /// `xq = saturate(round_half_even(x / x_scale) + x_zero_point)` into the zero point's
    /// type ([`quantize_linear`]); then the product as for [`ActQuant::Quantized`]. This is
    /// a QDQ file's `QuantizeLinear → DequantizeLinear` in front of the layer.
    PerTensor,
    /// `x` is f32, quantized as `DynamicQuantizeLinear` does ([`dynamic_u8`]):
    /// `lo = min(min_k x, 0)` and `hi = max(max_k x, 0)` over the whole tensor,
    /// `x_scale = (hi - lo) / 255`, `x_zero_point = saturate(round_half_even(-lo / x_scale))`
    /// in u8, then as [`ActQuant::PerTensor`]. This is onnxruntime's `quantize_dynamic`
    /// graph in front of the layer.
    DynamicU8,
}

/// `x.round_ties_even()`, bit for bit on every non-NaN input (NaN stays NaN), without the
/// libm call baseline x86-64 makes of it (it has no SSE4.1 `roundss`): quantizing GPT-2's
/// weights to int4 spent 31% of a 4.5 s compile in `rintf`. Adding and removing 2^23
/// rounds any magnitude below 2^23 to an integer, ties to even (IEEE's default rounding,
/// which Rust's float arithmetic assumes); larger magnitudes are integers already.
#[inline]
pub fn round_half_even(x: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let a = x.abs();
    if a < TWO_23 {
        ((a + TWO_23) - TWO_23).copysign(x)
    } else {
        x
    }
}

/// `saturate(round_half_even(x / scale) + zero_point)` into `lo..=hi`, as ONNX's
/// `QuantizeLinear` computes it in f32; NaN quantizes to 0 (the cast of a NaN).
pub fn quantize_linear(x: f32, scale: f32, zero_point: f32, (lo, hi): (f32, f32)) -> i32 {
    let r = round_half_even(x / scale) + zero_point;
    if r.is_nan() {
        0
    } else {
        r.clamp(lo, hi) as i32
    }
}

/// The least and greatest element of `x` (±∞ when empty), both NaN when it holds a NaN,
/// as `DynamicQuantizeLinear`'s reductions propagate it.
pub fn min_max(x: &[f32]) -> (f32, f32) {
    if x.iter().any(|v| v.is_nan()) {
        return (f32::NAN, f32::NAN);
    }
    let min = x.iter().fold(f32::INFINITY, |m, &v| m.min(v));
    (min, x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)))
}

/// `DynamicQuantizeLinear`'s scale and zero point for a tensor whose least and greatest
/// elements are `min` and `max` (NaN when it holds a NaN): see [`ActQuant::DynamicU8`].
pub fn dynamic_u8(min: f32, max: f32) -> (f32, i32) {
    let nan_min = |a: f32, b: f32| if a.is_nan() { a } else { a.min(b) };
    let nan_max = |a: f32, b: f32| if a.is_nan() { a } else { a.max(b) };
    let (lo, hi) = (nan_min(min, 0.0), nan_max(max, 0.0));
    let scale = (hi - lo) / 255.0;
    (scale, quantize_linear(-lo, scale, 0.0, (0.0, 255.0)))
}

impl ActQuant {
    /// Every scheme.
    pub const ALL: [ActQuant; 5] = [
        ActQuant::None,
        ActQuant::DynamicInt8,
        ActQuant::Quantized,
        ActQuant::PerTensor,
        ActQuant::DynamicU8,
    ];

    /// The text name: `none`, `dynamic_int8`, `quantized`, `per_tensor`, `dynamic_u8`.
    pub fn name(self) -> &'static str {
        match self {
            ActQuant::None => "none",
            ActQuant::DynamicInt8 => "dynamic_int8",
            ActQuant::Quantized => "quantized",
            ActQuant::PerTensor => "per_tensor",
            ActQuant::DynamicU8 => "dynamic_u8",
        }
    }

    /// Whether the product is formed from integer activations with a zero point (the
    /// schemes an imported file's quantizer writes), whose K is bounded by
    /// [`MAX_QUANTIZED_K`] and whose weights must be int8.
    pub fn with_zero_point(self) -> bool {
        matches!(
            self,
            ActQuant::Quantized | ActQuant::PerTensor | ActQuant::DynamicU8
        )
    }

    /// The scheme with this text name.
    pub fn from_name(s: &str) -> Option<ActQuant> {
        ActQuant::ALL.into_iter().find(|a| a.name() == s)
    }

    /// How many inputs the scheme adds after the weight's parameters: the zero point and
    /// scale of quantized (or per-tensor) activations.
    pub fn params(self) -> usize {
        match self {
            ActQuant::Quantized | ActQuant::PerTensor => 2,
            ActQuant::None | ActQuant::DynamicInt8 | ActQuant::DynamicU8 => 0,
        }
    }
}

#[cfg(test)]
mod round_tests {
    use super::round_half_even;

    /// The fast rounding is `round_ties_even` on ties, signs, zeros, the 2^23 edge,
    /// subnormals, infinities and a sweep of ordinary values.
    #[test]
    fn rounding_is_round_ties_even() {
        let mut xs = vec![
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999997,
            8388607.5,
            -8388607.5,
            8388608.0,
            8388609.0,
            16777215.0,
            1e30,
            -1e30,
            1e-40,
            -1e-40,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
        ];
        let mut bits = 0x1234_5678u32;
        for _ in 0..200_000 {
            bits = bits.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            xs.push(f32::from_bits(bits));
            xs.push((bits % 4000) as f32 / 8.0 - 250.0);
        }
        for x in xs {
            let (got, want) = (round_half_even(x), x.round_ties_even());
            match want.is_nan() {
                true => assert!(got.is_nan(), "{x:e}"),
                false => assert_eq!(got.to_bits(), want.to_bits(), "{x:e}"),
            }
        }
    }
}
