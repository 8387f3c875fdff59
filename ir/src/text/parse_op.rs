//! An op from its text name and attributes (the inverse of the printer's `attrs`).

use super::attrs::Attrs;
use crate::{
    ActQuant, Activation, ArgKind, AttentionAttrs, AttentionMask, BinaryOp, Block, ConvAttrs,
    ConvTransposeAttrs, EinsumSpec, Epilogue, MaskedRows, Op, PadMode, PoolAttrs, PoolKind,
    QuantAttrs, ReduceKind, Residual, ScanKind, ScatterReduction, SliceAxis, UnaryOp, WeightQuant,
};

/// The op called `name` (anything but `const`, whose operand is a literal), reading and
/// consuming its attributes.
pub(super) fn op_from_text(name: &str, a: &mut Attrs) -> Result<Op, String> {
    if let Some(u) = UnaryOp::from_name(name) {
        return Ok(Op::Unary(u));
    }
    if let Some(b) = BinaryOp::from_name(name) {
        return Ok(Op::Binary(b));
    }
    if let Some(kind) = name.strip_prefix("reduce_").and_then(ReduceKind::from_name) {
        return Ok(Op::Reduce {
            kind,
            axes: a.usizes("axes")?,
            keep_dims: a.bool("keep_dims")?,
        });
    }
    Ok(match name {
        "shape_value" => Op::ShapeValue {
            dims: a.dims("dims")?,
            scalar: a.bool("scalar")?,
        },
        "shape_of" => Op::ShapeOf,
        "where" => Op::Where,
        "matmul" => Op::MatMul,
        "cast" => Op::Cast { to: a.dtype("to")? },
        "bitcast" => Op::Bitcast { to: a.dtype("to")? },
        "argmax" | "argmin" => Op::ArgReduce {
            kind: if name == "argmax" {
                ArgKind::Max
            } else {
                ArgKind::Min
            },
            axis: a.usize("axis")?,
            keep_dims: a.bool("keep_dims")?,
            select_last: a.bool("select_last")?,
        },
        "layer_norm" => Op::LayerNorm {
            epsilon: a.f32("epsilon")?,
        },
        "rms_norm" => Op::RmsNorm {
            epsilon: a.f32("epsilon")?,
        },
        "rotary" => Op::Rotary,
        "attention" => Op::Attention(AttentionAttrs {
            scale: a.f32("scale")?,
            mask: a.named("mask", AttentionMask::from_name)?,
            rows: a.named("rows", MaskedRows::from_name)?,
        }),
        "linear" => Op::Linear(epilogue(a)?),
        "quant_linear" => Op::QuantLinear(quant(a)?),
        "softmax" | "log_softmax" => Op::Softmax {
            axis: a.usize("axis")?,
            log: name == "log_softmax",
        },
        "conv" => Op::Conv(ConvAttrs {
            strides: a.usizes("strides")?,
            dilations: a.usizes("dilations")?,
            pads: a.pairs("pads")?,
            groups: a.usize("groups")?,
        }),
        "conv_transpose" => Op::ConvTranspose(ConvTransposeAttrs {
            strides: a.usizes("strides")?,
            dilations: a.usizes("dilations")?,
            pads: a.pairs("pads")?,
            output_padding: a.usizes("output_padding")?,
            groups: a.usize("groups")?,
        }),
        "max_pool" | "avg_pool" | "lp_pool" => Op::Pool(pool(name, a)?),
        "reshape" => Op::Reshape {
            shape: a.dims("shape")?,
        },
        "expand" => Op::Expand {
            shape: a.dims("shape")?,
        },
        "transpose" => Op::Transpose {
            perm: a.usizes("perm")?,
        },
        "slice" => Op::Slice {
            axes: slice_axes(a)?,
        },
        "concat" => Op::Concat {
            axis: a.usize("axis")?,
        },
        "pad" => Op::Pad {
            pads: a.pairs("pads")?,
            mode: a.named("mode", PadMode::from_name)?,
        },
        "gather" => Op::Gather {
            axis: a.usize("axis")?,
        },
        "gather_elements" => Op::GatherElements {
            axis: a.usize("axis")?,
        },
        "gather_nd" => Op::GatherNd {
            batch_dims: a.usize("batch_dims")?,
        },
        "scatter_elements" => Op::ScatterElements {
            axis: a.usize("axis")?,
            reduction: a.named("reduction", ScatterReduction::from_name)?,
        },
        "scatter_nd" => Op::ScatterNd {
            reduction: a.named("reduction", ScatterReduction::from_name)?,
        },
        "range" => Op::Range { len: a.dim("len")? },
        "trilu" => Op::Trilu {
            upper: a.bool("upper")?,
            k: a.i64("k")?,
        },
        "cumsum" | "cumprod" => Op::Scan {
            kind: if name == "cumsum" {
                ScanKind::Sum
            } else {
                ScanKind::Prod
            },
            axis: a.usize("axis")?,
            exclusive: a.bool("exclusive")?,
            reverse: a.bool("reverse")?,
        },
        "topk" => Op::TopK {
            axis: a.usize("axis")?,
            k: a.usize("k")?,
            largest: a.bool("largest")?,
            sorted: a.bool("sorted")?,
        },
        "one_hot" => Op::OneHot {
            axis: a.usize("axis")?,
            depth: a.usize("depth")?,
        },
        "nonzero" => Op::NonZero {
            count: a.string("count")?,
        },
        "einsum" => Op::Einsum(einsum(&a.string("equation")?)?),
        _ => return Err(format!("unknown op `{name}`")),
    })
}

fn pool(name: &str, a: &mut Attrs) -> Result<PoolAttrs, String> {
    let kernel = a.usizes("kernel")?;
    let strides = a.usizes("strides")?;
    let dilations = a.usizes("dilations")?;
    let pads = a.pairs("pads")?;
    let ceil_mode = a.bool("ceil_mode")?;
    let kind = match name {
        "avg_pool" => PoolKind::Avg {
            count_include_pad: a.bool("count_include_pad")?,
        },
        "lp_pool" => PoolKind::Lp { p: a.u32("p")? },
        _ => PoolKind::Max,
    };
    Ok(PoolAttrs {
        kind,
        kernel,
        strides,
        dilations,
        pads,
        ceil_mode,
    })
}

fn slice_axes(a: &mut Attrs) -> Result<Vec<SliceAxis>, String> {
    let axes = a.usizes("axes")?;
    let starts = a.dims("starts")?;
    let ends = a.dims("ends")?;
    let steps = a.i64s("steps")?;
    if starts.len() != axes.len() || ends.len() != axes.len() || steps.len() != axes.len() {
        return Err("slice `axes`, `starts`, `ends` and `steps` must have the same length".into());
    }
    Ok(axes
        .into_iter()
        .zip(starts)
        .zip(ends)
        .zip(steps)
        .map(|(((axis, start), end), step)| SliceAxis {
            axis,
            start,
            end,
            step,
        })
        .collect())
}

/// `"ij,jk->ik"`: labels are ASCII letters; an empty input part is one rank-0 input.
fn einsum(eq: &str) -> Result<EinsumSpec, String> {
    let Some((ins, out)) = eq.split_once("->") else {
        return Err(format!(
            "einsum equation `{eq}` needs an explicit `->` output"
        ));
    };
    let labels = |s: &str| -> Result<Vec<char>, String> {
        match s.chars().find(|c| !c.is_ascii_alphabetic()) {
            Some(c) => Err(format!(
                "einsum label `{c}` in `{eq}` is not an ASCII letter"
            )),
            None => Ok(s.chars().collect()),
        }
    };
    Ok(EinsumSpec {
        inputs: ins.split(',').map(labels).collect::<Result<_, _>>()?,
        output: labels(out)?,
    })
}

/// `none` as `None`, anything else by `from_name` (an unknown name fails).
fn epilogue(a: &mut Attrs) -> Result<Epilogue, String> {
    Ok(Epilogue {
        bias: a.bool("bias")?,
        activation: a.named("activation", |s| optional(s, Activation::from_name))?,
        residual: a.named("residual", |s| optional(s, Residual::from_name))?,
    })
}

/// `weights=int8|int4` (int4 with `block` and `zero_points`), `activations`, the epilogue.
fn quant(a: &mut Attrs) -> Result<QuantAttrs, String> {
    let weights = match a.string("weights")?.as_str() {
        "int8" => WeightQuant::Int8,
        "int4" => {
            let rows = a.usize("block")?;
            WeightQuant::Int4 {
                block: Block::from_rows(rows)
                    .ok_or_else(|| format!("int4 block must be 32, 64 or 128, got {rows}"))?,
                zero_points: a.bool("zero_points")?,
            }
        }
        "f16" => WeightQuant::F16,
        "bf16" => WeightQuant::BF16,
        other => return Err(format!("attribute `weights` has unknown value `{other}`")),
    };
    Ok(QuantAttrs {
        weights,
        activations: a.named("activations", ActQuant::from_name)?,
        epilogue: epilogue(a)?,
    })
}

fn optional<T>(s: &str, from_name: fn(&str) -> Option<T>) -> Option<Option<T>> {
    if s == "none" {
        Some(None)
    } else {
        from_name(s).map(Some)
    }
}
