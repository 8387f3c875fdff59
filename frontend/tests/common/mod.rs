//! Builders shared by the frontend's integration tests, which write small ONNX models with prost.

use kiln_frontend::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// A tensor value of ONNX element type `elem`; `Ok(n)` is a fixed dim, `Err(name)` a symbolic one.
pub fn value_info(name: &str, elem: i32, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Ok(v) => dimension::Value::DimValue(*v),
                Err(p) => dimension::Value::DimParam(p.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    let tt = type_proto::Tensor {
        elem_type: Some(elem),
        shape: Some(TensorShapeProto { dim }),
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tt)),
            ..Default::default()
        }),
        ..Default::default()
    }
}
