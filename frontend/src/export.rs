//! IR → ONNX, for looking at an optimized graph in ONNX tools (Netron). Every node becomes
//! a node of the `ai.kiln` domain named by its op (`LayerNorm`, `MatMul`), with the op's
//! attributes as string attributes in kiln's text syntax; constants become initializers;
//! every value carries its type, symbolic dims as `dim_param`. The result is for reading:
//! only kiln understands the `ai.kiln` ops.

use crate::proto::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension, tensor_shape_proto::Dimension,
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use kiln_ir::{op_attributes, DType, Graph, Op, TensorType};
use prost::Message;

/// The domain of the exported ops.
pub const KILN_DOMAIN: &str = "ai.kiln";

/// The ONNX `TensorProto.DataType` code of a dtype.
fn dtype_code(d: DType) -> i32 {
    match d {
        DType::F32 => 1,
        DType::U8 => 2,
        DType::I8 => 3,
        DType::U16 => 4,
        DType::I16 => 5,
        DType::I32 => 6,
        DType::I64 => 7,
        DType::Bool => 9,
        DType::F16 => 10,
        DType::F64 => 11,
        DType::U32 => 12,
        DType::U64 => 13,
        DType::BF16 => 16,
    }
}

fn value_info(name: String, t: &TensorType) -> ValueInfoProto {
    let dim = |d: &kiln_ir::Dim| Dimension {
        value: Some(match d.as_const() {
            Some(c) => dimension::Value::DimValue(c),
            None => dimension::Value::DimParam(d.to_string()),
        }),
        ..Default::default()
    };
    let tensor = type_proto::Tensor {
        elem_type: Some(dtype_code(t.dtype)),
        shape: Some(TensorShapeProto {
            dim: t.shape.iter().map(dim).collect(),
        }),
    };
    ValueInfoProto {
        name: Some(name),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Encodes `g` as an ONNX model (see the module docs).
///
/// ```
/// let g = kiln_ir::parse("graph @g(%x: f32[n, 4]) -> f32[n, 4] {\n  %y = gelu %x\n  return %y\n}").unwrap();
/// let bytes = kiln_frontend::export_onnx(&g);
/// let model: kiln_frontend::proto::ModelProto = prost::Message::decode(bytes.as_slice()).unwrap();
/// let graph = model.graph.unwrap();
/// assert_eq!(graph.node[0].op_type.as_deref(), Some("Gelu"));
/// assert_eq!(graph.node[0].domain.as_deref(), Some("ai.kiln"));
/// ```
pub fn export_onnx(g: &Graph) -> Vec<u8> {
    // Value names: graph inputs and outputs keep theirs, the rest are `%N` as in the text.
    let mut names: Vec<String> = (0..g.values.len()).map(|v| format!("%{v}")).collect();
    for (name, v) in &g.inputs {
        names[v.index()] = name.clone();
    }
    for (name, v) in &g.outputs {
        if !g.inputs.iter().any(|(_, i)| i == v) {
            names[v.index()] = name.clone();
        }
    }
    let mut graph = GraphProto {
        name: Some(g.name.clone()),
        ..Default::default()
    };
    for (i, node) in g.nodes.iter().enumerate() {
        if let Op::Const(t) = &node.op {
            let v = node.outputs[0];
            graph.initializer.push(TensorProto {
                name: Some(names[v.index()].clone()),
                dims: t.shape().iter().map(|&d| d as i64).collect(),
                data_type: Some(dtype_code(t.dtype())),
                raw_data: Some(t.to_le_bytes().into()),
                ..Default::default()
            });
            continue;
        }
        let attribute = op_attributes(&node.op)
            .into_iter()
            .map(|(k, v)| AttributeProto {
                name: Some(k),
                r#type: Some(AttributeType::String as i32),
                s: Some(v.into_bytes()),
                ..Default::default()
            })
            .collect();
        let name = if node.name.is_empty() {
            format!("node{i}")
        } else {
            node.name.clone()
        };
        graph.node.push(NodeProto {
            name: Some(name),
            op_type: Some(node.op.kind_name()),
            domain: Some(KILN_DOMAIN.into()),
            input: node
                .inputs
                .iter()
                .map(|v| names[v.index()].clone())
                .collect(),
            output: node
                .outputs
                .iter()
                .map(|v| names[v.index()].clone())
                .collect(),
            attribute,
            ..Default::default()
        });
        for out in &node.outputs {
            let is_output = g.outputs.iter().any(|(_, o)| o == out);
            if !is_output {
                let info = value_info(names[out.index()].clone(), g.value_type(*out));
                graph.value_info.push(info);
            }
        }
    }
    graph.input = g
        .inputs
        .iter()
        .map(|(_, v)| value_info(names[v.index()].clone(), g.value_type(*v)))
        .collect();
    graph.output = g
        .outputs
        .iter()
        .map(|(_, v)| value_info(names[v.index()].clone(), g.value_type(*v)))
        .collect();
    let opset = |domain: &str, version| OperatorSetIdProto {
        domain: Some(domain.into()),
        version: Some(version),
    };
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![opset("", 18), opset(KILN_DOMAIN, 1)],
        producer_name: Some("kiln".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}
