//! `graph`: structure-aware ONNX models. The input drives an [`arbitrary::Unstructured`]
//! that picks an opset, graph inputs (dtypes, static and symbolic dims), a few nodes whose
//! op types come from the frontend's registry ([`kiln::frontend::supported_ops`]), whose
//! operands are earlier values or small constants (shape operands included), and whose
//! attributes are the names the frontend reads with values of the kind it expects. The
//! model is serialized to ONNX bytes and run as in [`crate::onnx`], so the fuzzer spends its
//! time in op semantics rather than in the protobuf decoder.

use crate::onnx;
use arbitrary::{Result, Unstructured};
use kiln::frontend::proto::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension, tensor_shape_proto::Dimension,
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use kiln::frontend::{supported_ops, OpSupport};
use prost::Message;
use std::sync::OnceLock;

/// Runs one input: the bytes choose a model, which runs as an ONNX model.
pub fn run(data: &[u8]) {
    let Ok(model) = model(&mut Unstructured::new(data)) else {
        return;
    };
    if let Some(g) = onnx::import(&model.encode_to_vec()) {
        onnx::run_graph(g);
    }
}

/// The model `data` describes (for reproducing a finding: write it out, open it in kiln).
pub fn model_bytes(data: &[u8]) -> Option<Vec<u8>> {
    model(&mut Unstructured::new(data))
        .ok()
        .map(|m| m.encode_to_vec())
}

fn ops() -> &'static [OpSupport] {
    static OPS: OnceLock<Vec<OpSupport>> = OnceLock::new();
    OPS.get_or_init(supported_ops)
}

/// ONNX element types the generator uses: float, uint8, int8, int32, int64, bool, float16,
/// double (weighted toward float and int64 by repetition).
const ELEM_TYPES: &[i32] = &[1, 1, 1, 1, 7, 7, 6, 9, 10, 11, 2, 3];

/// Attribute names the frontend reads, by kind.
const INT_ATTRS: &[&str] = &[
    "axis",
    "keepdims",
    "perm",
    "to",
    "k",
    "largest",
    "sorted",
    "transA",
    "transB",
    "group",
    "batch_dims",
    "allowzero",
    "start",
    "end",
    "upper",
    "exclusive",
    "reverse",
    "p",
    "select_last_index",
    "noop_with_empty_axes",
    "num_outputs",
    "ceil_mode",
    "count_include_pad",
    "storage_order",
    "stash_type",
    "fmod",
    "detect_negative",
    "detect_positive",
    "interleaved",
    "is_causal",
    "num_heads",
    "kv_num_heads",
    "q_num_heads",
    "rotary_embedding_dim",
    "blocksize",
    "size",
    "num_groups",
    "spatial",
    "training_mode",
    "qk_matmul_output_mode",
    "left_window_size",
    "right_window_size",
    "output_dtype",
    "saturate",
    "value_int",
];
const INTS_ATTRS: &[&str] = &[
    "axes",
    "perm",
    "pads",
    "split",
    "kernel_shape",
    "strides",
    "dilations",
    "output_padding",
    "output_shape",
    "value_ints",
];
const FLOAT_ATTRS: &[&str] = &[
    "alpha",
    "beta",
    "epsilon",
    "bias",
    "gamma",
    "lambd",
    "momentum",
    "softcap",
    "value",
    "scale",
    "value_float",
];
const STRING_ATTRS: &[(&str, &[&str])] = &[
    (
        "mode",
        &[
            "constant", "reflect", "edge", "wrap", "DCR", "CRD", "linear", "nearest", "",
        ],
    ),
    (
        "auto_pad",
        &["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "bogus"],
    ),
    (
        "reduction",
        &["none", "add", "mul", "max", "min", "mean", "sum"],
    ),
    ("direction", &["LEFT", "RIGHT"]),
    ("approximate", &["none", "tanh"]),
    (
        "equation",
        &[
            "ij,jk->ik",
            "ii->i",
            "ij->ji",
            "i,i->",
            "bij,bjk->bik",
            "...ij->...ji",
            "ij",
        ],
    ),
];

struct Builder<'u, 'd> {
    u: &'u mut Unstructured<'d>,
    /// Names of the values defined so far (inputs, initializers, node outputs).
    values: Vec<String>,
    initializers: Vec<TensorProto>,
}

fn model(u: &mut Unstructured) -> Result<ModelProto> {
    let opset = u.int_in_range(7..=23)?;
    let mut b = Builder {
        u,
        values: Vec::new(),
        initializers: Vec::new(),
    };
    let mut inputs = Vec::new();
    for i in 0..b.u.int_in_range(1..=3)? {
        let name = format!("x{i}");
        inputs.push(b.value_info(&name)?);
        b.values.push(name);
    }
    let available: Vec<&OpSupport> = (ops().iter())
        .filter(|o| o.since <= opset && o.until.is_none_or(|u| opset <= u))
        .collect();
    if available.is_empty() {
        return Err(arbitrary::Error::NotEnoughData);
    }
    let mut nodes = Vec::new();
    let mut last = Vec::new();
    for i in 0..b.u.int_in_range(1..=4)? {
        let op = b.u.choose(&available)?;
        let mut input = Vec::new();
        for _ in 0..b.u.int_in_range(0..=4)? {
            input.push(b.operand()?);
        }
        let outputs: Vec<String> = (0..b.u.int_in_range(1..=2)?)
            .map(|k| format!("n{i}_{k}"))
            .collect();
        let mut attribute = Vec::new();
        for _ in 0..b.u.int_in_range(0..=3)? {
            attribute.push(b.attribute()?);
        }
        nodes.push(NodeProto {
            name: Some(format!("node{i}")),
            op_type: Some(op.name.clone()),
            input,
            output: outputs.clone(),
            attribute,
            ..Default::default()
        });
        b.values.extend(outputs.iter().cloned());
        last = outputs;
    }
    let mut outputs = last;
    if b.u.arbitrary::<bool>()? {
        let extra = b.u.choose(&b.values)?.clone();
        if !outputs.contains(&extra) {
            outputs.push(extra);
        }
    }
    let output = (outputs.into_iter())
        .map(|name| ValueInfoProto {
            name: Some(name),
            ..Default::default()
        })
        .collect();
    Ok(ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            name: Some("fuzz".into()),
            node: nodes,
            initializer: b.initializers,
            input: inputs,
            output,
            ..Default::default()
        }),
        ..Default::default()
    })
}

impl Builder<'_, '_> {
    /// A graph input's declared type: an element type and up to four dims, each fixed
    /// (0 to 4) or symbolic.
    fn value_info(&mut self, name: &str) -> Result<ValueInfoProto> {
        let elem = *self.u.choose(ELEM_TYPES)?;
        let mut dim = Vec::new();
        for _ in 0..self.u.int_in_range(0..=4)? {
            let value = match self.u.int_in_range(0u8..=7)? {
                0 => dimension::Value::DimParam("n".into()),
                1 => dimension::Value::DimParam("m".into()),
                k => dimension::Value::DimValue(i64::from(k) - 3),
            };
            dim.push(Dimension {
                value: Some(value),
                ..Default::default()
            });
        }
        Ok(ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(elem),
                    shape: Some(TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// A node operand: an earlier value, a new small constant, or an omitted optional one.
    fn operand(&mut self) -> Result<String> {
        match self.u.int_in_range(0..=9)? {
            0..=4 => Ok(self.u.choose(&self.values)?.clone()),
            5 => Ok(String::new()),
            _ => {
                let name = format!("c{}", self.initializers.len());
                let t = self.tensor(&name)?;
                self.initializers.push(t);
                self.values.push(name.clone());
                Ok(name)
            }
        }
    }

    /// A small constant: rank 0 to 2 (int64 vectors are the shape operands: axes, shapes,
    /// slice bounds, pads), elements mostly small integers.
    fn tensor(&mut self, name: &str) -> Result<TensorProto> {
        let elem = if self.u.arbitrary::<bool>()? {
            7
        } else {
            *self.u.choose(ELEM_TYPES)?
        };
        let dims: Vec<i64> = match self.u.int_in_range(0..=3)? {
            0 => vec![],
            1 | 2 => vec![self.u.int_in_range(0..=4)?],
            _ => vec![self.u.int_in_range(0..=3)?, self.u.int_in_range(0..=3)?],
        };
        let n: i64 = dims.iter().product();
        let mut t = TensorProto {
            name: Some(name.into()),
            dims,
            data_type: Some(elem),
            ..Default::default()
        };
        for _ in 0..n {
            let small = i64::from(self.u.int_in_range(-3i8..=8)?);
            let weird = self.u.ratio(1, 8)?;
            match elem {
                1 => t.float_data.push(if weird {
                    self.u.arbitrary()?
                } else {
                    small as f32 / 2.0
                }),
                11 => t.double_data.push(if weird {
                    self.u.arbitrary()?
                } else {
                    small as f64 / 2.0
                }),
                7 => t
                    .int64_data
                    .push(if weird { self.u.arbitrary()? } else { small }),
                9 => t.int32_data.push(i32::from(small > 2)),
                10 => t.int32_data.push(i32::from(
                    kiln::ir::half::f16::from_f32(small as f32).to_bits(),
                )),
                2 => t.int32_data.push(small.rem_euclid(256) as i32),
                _ => t.int32_data.push(if weird {
                    self.u.arbitrary::<i8>()? as i32
                } else {
                    small as i32
                }),
            }
        }
        Ok(t)
    }

    /// An attribute the frontend reads, of the kind it reads it as (or, rarely, another).
    fn attribute(&mut self) -> Result<AttributeProto> {
        let mut a = AttributeProto::default();
        match self.u.int_in_range(0..=5)? {
            0 | 1 => {
                a.name = Some(self.u.choose(INT_ATTRS)?.to_string());
                a.r#type = Some(AttributeType::Int as i32);
                a.i = Some(if self.u.ratio(1, 8)? {
                    self.u.arbitrary()?
                } else {
                    i64::from(self.u.int_in_range(-3i8..=11)?)
                });
            }
            2 => {
                a.name = Some(self.u.choose(INTS_ATTRS)?.to_string());
                a.r#type = Some(AttributeType::Ints as i32);
                for _ in 0..self.u.int_in_range(0..=4)? {
                    a.ints.push(i64::from(self.u.int_in_range(-3i8..=4)?));
                }
            }
            3 => {
                a.name = Some(self.u.choose(FLOAT_ATTRS)?.to_string());
                a.r#type = Some(AttributeType::Float as i32);
                a.f = Some(if self.u.ratio(1, 8)? {
                    self.u.arbitrary()?
                } else {
                    f32::from(self.u.int_in_range(-4i8..=4)?) / 4.0
                });
            }
            4 => {
                let (name, values) = *self.u.choose(STRING_ATTRS)?;
                a.name = Some(name.to_string());
                a.r#type = Some(AttributeType::String as i32);
                a.s = Some(self.u.choose(values)?.as_bytes().to_vec());
            }
            _ => {
                a.name = Some("value".into());
                a.r#type = Some(AttributeType::Tensor as i32);
                a.t = Some(self.tensor("value")?);
            }
        }
        Ok(a)
    }
}
