//! Model import: decode, declare inputs, lower nodes in order through the registry, and
//! declare outputs.

use crate::cx::{Cx, Val, R};
use crate::node::{Ctx, N};
use crate::proto::{tensor_shape_proto::dimension, type_proto, ModelProto, ValueInfoProto};
use crate::registry::{registry, Missing};
use crate::tensor::{four_bit, storage_of, tensor_from_proto, DataSource};
use crate::{quant_rules, validate};
use crate::{FrontendError, ImportOptions};
use kiln_ir::{Dim, Graph, Tensor, TensorType};
use prost::Message;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Decodes a serialized model; `file` names it in errors. From `Bytes`, each `raw_data` is a
/// slice of them, not a copy.
pub(crate) fn decode(bytes: impl prost::bytes::Buf, file: &str) -> R<ModelProto> {
    ModelProto::decode(bytes).map_err(|e| FrontendError::Model {
        file: file.to_string(),
        message: format!("not a valid ONNX model: {e}"),
    })
}

/// Imports a decoded model, reading tensor data through `source`; `file` names it in errors.
pub(crate) fn import(
    model: &ModelProto,
    source: DataSource,
    file: &str,
    opts: &ImportOptions,
) -> R<Graph> {
    let model_err = |m: String| FrontendError::Model {
        file: file.to_string(),
        message: m,
    };
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| model_err("not a valid ONNX model: no graph".into()))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| matches!(o.domain(), "" | "ai.onnx"))
        .map(|o| o.version())
        .ok_or_else(|| model_err("the model imports no default-domain opset".into()))?;
    let ctx = Ctx {
        file: file.to_string(),
        node: String::new(),
        op: String::new(),
        opset,
    };
    let mut cx = Cx::new(Graph::new(graph.name()), ctx, opts, source);
    let mut vals: HashMap<String, Val> = HashMap::new();
    for t in &graph.initializer {
        let tensor =
            tensor_from_proto(t, &mut cx.ext).map_err(|m| tensor_err(file, t.name(), m))?;
        if four_bit(t.data_type()).is_some() {
            cx.four_bit.insert(t.name().to_string());
        }
        vals.insert(t.name().to_string(), Val::tensor(tensor));
    }
    let plain = plain_dim_params(&graph.input);
    for vi in &graph.input {
        if vals.contains_key(vi.name()) {
            continue;
        }
        let v = declare_input(&mut cx, vi, &plain)?;
        vals.insert(vi.name().to_string(), v);
    }
    let label = |i: usize| node_name(&graph.node[i], i);
    let order = validate::node_order(graph, file, opset, &label)?;
    let plan = quant_rules::plan(graph, &vals);
    let mut lowered = HashSet::new();
    for idx in order {
        if plan.absorbed(idx) {
            continue;
        }
        if let Some((rule, inner)) = plan.rule(idx) {
            if lower_rule(&mut cx, &mut vals, &graph.node[idx], idx, rule)? {
                continue;
            }
            // The run-time operands did not fit: the pattern imports node by node.
            for &j in inner {
                if plan.absorbed(j) && lowered.insert(j) {
                    lower_node(&mut cx, &mut vals, &graph.node[j], j)?;
                }
            }
        }
        lower_node(&mut cx, &mut vals, &graph.node[idx], idx)?;
    }
    for vi in &graph.output {
        let v = vals
            .get(vi.name())
            .ok_or_else(|| model_err(format!("graph output `{}` is never defined", vi.name())))?
            .clone();
        cx.ctx.node = format!("output:{}", vi.name());
        let id = cx.ir(&v)?;
        validate::check_declared_output(vi, cx.g.value_type(id))
            .map_err(|m| model_err(format!("graph output `{}`: {m}", vi.name())))?;
        cx.g.add_output(vi.name(), id);
    }
    Ok(cx.g)
}

fn tensor_err(file: &str, tensor: &str, message: String) -> FrontendError {
    FrontendError::Tensor {
        file: file.to_string(),
        tensor: tensor.to_string(),
        message,
    }
}

/// The `dim_param`s of `inputs` that are plain names (not expressions).
fn plain_dim_params(inputs: &[ValueInfoProto]) -> BTreeSet<String> {
    let dims = inputs
        .iter()
        .filter_map(|vi| match vi.r#type.as_ref()?.value.as_ref()? {
            type_proto::Value::TensorType(tt) => Some(tt.shape.as_ref()?.dim.clone()),
            _ => None,
        });
    dims.flatten()
        .filter_map(|d| match d.value {
            Some(dimension::Value::DimParam(p)) if crate::dim_param::is_name(&p) => Some(p),
            _ => None,
        })
        .collect()
}

/// A graph input: a known tensor when the caller gave its value, else an IR input whose
/// symbolic dims come from `dim_param` (bound by `ImportOptions::dims` when given).
fn declare_input(cx: &mut Cx, vi: &ValueInfoProto, plain: &BTreeSet<String>) -> R<Val> {
    let name = vi.name();
    if let Some(t) = cx.opts.known_inputs.get(name) {
        return Ok(Val::tensor(t.clone()));
    }
    let file = cx.ctx.file.clone();
    let err = |m: &str| FrontendError::Model {
        file: file.clone(),
        message: format!("graph input `{name}`: {m}"),
    };
    let Some(type_proto::Value::TensorType(tt)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(err("only tensor inputs are supported"));
    };
    let dtype = storage_of(tt.elem_type()).map_err(|m| err(&m))?;
    if four_bit(tt.elem_type()).is_some() {
        cx.four_bit.insert(name.to_string());
    }
    let dims = tt.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default();
    let mut shape = Vec::with_capacity(dims.len());
    for d in &dims {
        let dim = match &d.value {
            Some(dimension::Value::DimValue(v)) if *v >= 0 => Dim::from(*v),
            Some(dimension::Value::DimValue(v)) => {
                return Err(err(&format!("dim {v} is negative")));
            }
            Some(dimension::Value::DimParam(p)) if !p.is_empty() => {
                crate::dim_param::dim(p, plain, &cx.opts.dims)
            }
            _ => Dim::sym(cx.fresh_symbol("unk")),
        };
        shape.push(dim);
    }
    Ok(Val::Ir(cx.g.add_input(name, TensorType::new(dtype, shape))))
}

fn node_name(node: &crate::proto::NodeProto, idx: usize) -> String {
    match (node.name(), node.output.first()) {
        (n, _) if !n.is_empty() => n.to_string(),
        (_, Some(o)) if !o.is_empty() => o.clone(),
        _ => format!("{}_{idx}", node.op_type()),
    }
}

/// Imports a recognized quantized layer as node `idx`'s output; false when it does not fit.
fn lower_rule(
    cx: &mut Cx,
    vals: &mut HashMap<String, Val>,
    node: &crate::proto::NodeProto,
    idx: usize,
    rule: &quant_rules::Rule,
) -> R<bool> {
    cx.ctx.node = node_name(node, idx);
    cx.ctx.op = node.op_type().to_string();
    let Some(v) = quant_rules::lower(cx, vals, rule)? else {
        return Ok(false);
    };
    if let Some(name) = node.output.first().filter(|n| !n.is_empty()) {
        vals.insert(name.clone(), v);
    }
    Ok(true)
}

fn lower_node(
    cx: &mut Cx,
    vals: &mut HashMap<String, Val>,
    node: &crate::proto::NodeProto,
    idx: usize,
) -> R<()> {
    cx.ctx.node = node_name(node, idx);
    cx.ctx.op = node.op_type().to_string();
    let domain = node.domain();
    // The com.microsoft ops kiln imports are registered under `com.microsoft.OP`; that
    // domain has one opset version.
    let (key, opset) = match domain {
        "" | "ai.onnx" => (node.op_type().to_string(), cx.ctx.opset),
        "com.microsoft" => (
            format!("{}{}", crate::ops::nbits::PREFIX, node.op_type()),
            1,
        ),
        _ => return Err(cx.ctx.unsupported(format!("op domain `{domain}`"))),
    };
    let handler = registry().find(&key, opset).map_err(|m| match m {
        Missing::Op => cx.ctx.unsupported("op"),
        Missing::Opset(r) => cx
            .ctx
            .unsupported(format!("opset version (supported: {r})")),
    })?;
    let mut inputs = Vec::with_capacity(node.input.len());
    for name in &node.input {
        if name.is_empty() {
            inputs.push(None);
        } else {
            let v = vals
                .get(name)
                .ok_or_else(|| cx.err(format!("input `{name}` is not defined before use")))?;
            inputs.push(Some(v.clone()));
        }
    }
    let n = N {
        proto: node,
        ctx: cx.ctx.clone(),
        inputs,
    };
    let outs = handler(cx, &n)?;
    for (i, name) in node.output.iter().enumerate() {
        if name.is_empty() {
            continue;
        }
        let v = outs
            .get(i)
            .ok_or_else(|| cx.ctx.unsupported(format!("output {i}")))?;
        vals.insert(name.clone(), v.clone());
    }
    Ok(())
}

/// Converts one constant attribute or tensor proto, for `Constant` nodes.
pub(crate) fn node_tensor(cx: &mut Cx, t: &crate::proto::TensorProto) -> R<Tensor> {
    let file = cx.ctx.file.clone();
    tensor_from_proto(t, &mut cx.ext).map_err(|m| tensor_err(&file, t.name(), m))
}
