//! The import rules for quantized files, one small generated model per rule and per reason
//! a rule must not fire. Each model is checked against itself with the pattern broken by
//! an `Identity` (which the rules do not look through, and which imports as nothing), so
//! the reference is the file's definition lowered node by node; both run on the
//! interpreter and on the cpu backend.

mod common;

use common::*;
use kiln::frontend::proto::{attribute_proto::AttributeType, tensor_proto, AttributeProto};
use kiln::frontend::proto::{NodeProto, TensorProto};
use kiln::ir::{ActQuant, Op, Tensor, WeightQuant};
use kiln::{Model, Options};
use std::collections::BTreeMap;

const U8: i32 = tensor_proto::DataType::Uint8 as i32;
const I8: i32 = tensor_proto::DataType::Int8 as i32;

fn bytes(name: &str, elem: i32, dims: &[i64], values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(elem),
        int32_data: values.iter().map(|&v| v as i32).collect(),
        ..Default::default()
    }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    }
}

/// Deterministic weights `[k, n]` in `lo..=hi`.
fn weights(k: usize, n: usize, lo: i64, hi: i64) -> Vec<i64> {
    (0..k * n)
        .map(|i| lo + (i as i64 * 7919 + 13) % (hi - lo + 1))
        .collect()
}

/// `x[2, k]`, `y` from `nodes`; each value in `broken` passes through an Identity before
/// its users (which then read `value.id`).
fn model(nodes: &[NodeProto], inits: &[TensorProto], k: i64, broken: &[&str]) -> Vec<u8> {
    let mut nodes = nodes.to_vec();
    for &v in broken {
        let id = format!("{v}.id");
        for n in nodes.iter_mut() {
            n.input
                .iter_mut()
                .filter(|i| *i == v)
                .for_each(|i| *i = id.clone());
        }
        nodes.push(node_to(&format!("identity_{v}"), "Identity", &[v], &[&id]));
    }
    let mut m = Onnx::new(nodes, vec![f32_value("x", &[2, k])], FLOAT).with(inits.to_vec());
    m.opset = 21;
    m.bytes()
}

/// The quantized linears of the imported graph: (weights, activations).
fn layers(model: &Model) -> Vec<(WeightQuant, ActQuant)> {
    (model.graph().nodes.iter())
        .filter_map(|n| match n.op {
            Op::QuantLinear(q) => Some((q.weights, q.activations)),
            _ => None,
        })
        .collect()
}

fn inputs(k: usize) -> BTreeMap<String, Tensor> {
    let x: Vec<f32> = (0..2 * k)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.13)
        .collect();
    BTreeMap::from([("x".to_string(), Tensor::from_vec(x, &[2, k]).unwrap())])
}

/// The model `nodes` over `x[2, k]`, with the values in `kept` passed through an Identity,
/// as the rules import it and as the reference that also breaks the values in `broken`
/// (see [`compare`]).
fn check(
    name: &str,
    (nodes, inits): (&[NodeProto], &[TensorProto]),
    k: usize,
    kept: &[&str],
    broken: &[&str],
) -> (Vec<(WeightQuant, ActQuant)>, f64) {
    let fused = model(nodes, inits, k as i64, kept);
    let reference = model(nodes, inits, k as i64, &[kept, broken].concat());
    compare(name, &fused, &reference, k)
}

/// Runs the model as the rules import it and as the broken reference, on the interpreter
/// and the cpu backend; returns the layers the rules made and the largest difference
/// relative to the output's largest magnitude.
fn compare(
    name: &str,
    fused: &[u8],
    reference: &[u8],
    k: usize,
) -> (Vec<(WeightQuant, ActQuant)>, f64) {
    let dir = std::env::temp_dir().join(format!("kiln-quant-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let load = |file: &str, bytes: &[u8]| {
        let path = dir.join(file);
        std::fs::write(&path, bytes).unwrap();
        Model::load(&path).unwrap()
    };
    let (fused, reference) = (
        load(&format!("{name}.onnx"), fused),
        load(&format!("{name}.ref.onnx"), reference),
    );
    assert!(
        layers(&reference).is_empty(),
        "{name}: the broken pattern still matched"
    );
    let x = inputs(k);
    let opts = Options {
        threads: 2,
        ..Options::default()
    };
    let want = reference.run(&x).unwrap().remove(0).1.to_f64_vec();
    let got = [
        fused.run(&x).unwrap(),
        fused.compile(&opts).unwrap().run(&x).unwrap(),
    ];
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-30);
    let mut worst = 0f64;
    for out in got {
        let out = out[0].1.to_f64_vec();
        assert_eq!(out.len(), want.len(), "{name}");
        for (g, w) in out.iter().zip(&want) {
            worst = worst.max((g - w).abs() / scale);
        }
    }
    (layers(&fused), worst)
}

/// onnxruntime's `quantize_dynamic` pattern, with per-column weights and zero points.
fn dynamic(w_zp: i64) -> (Vec<NodeProto>, Vec<TensorProto>) {
    let (k, n) = (40, 5);
    let nodes = vec![
        node_to("dql", "DynamicQuantizeLinear", &["x"], &["xq", "xs", "xz"]),
        node_to("mmi", "MatMulInteger", &["xq", "w", "xz", "wz"], &["acc"]),
        NodeProto {
            attribute: vec![int("to", FLOAT as i64)],
            ..node_to("cast", "Cast", &["acc"], &["accf"])
        },
        node_to("scales", "Mul", &["xs", "ws"], &["s"]),
        node_to("out", "Mul", &["accf", "s"], &["y"]),
    ];
    let inits = vec![
        bytes(
            "w",
            I8,
            &[k, n],
            &weights(k as usize, n as usize, -100, 100),
        ),
        bytes("wz", I8, &[n], &[w_zp, 0, -3, 5, w_zp]),
        floats("ws", &[n], &[0.01, 0.02, 0.005, 0.03, 0.015]),
    ];
    (nodes, inits)
}

#[test]
fn quantize_dynamic_layers_are_exact_integer_products() {
    let (nodes, inits) = dynamic(2);
    let (made, worst) = check("dynamic", (&nodes, &inits), 40, &[], &["accf"]);
    // The layer quantizes x itself, as DynamicQuantizeLinear would.
    assert_eq!(made, [(WeightQuant::Int8, ActQuant::DynamicU8)]);
    assert_eq!(worst, 0.0, "the rule must be exact");
    // With the quantized values passed on (not straight from the DynamicQuantizeLinear),
    // the layer takes the integers.
    let (made, worst) = check("dynamic_integers", (&nodes, &inits), 40, &["xq"], &["accf"]);
    assert_eq!(made, [(WeightQuant::Int8, ActQuant::Quantized)]);
    assert_eq!(worst, 0.0, "the rule must be exact");
}

#[test]
fn weights_that_leave_int8_with_their_zero_point_import_as_written() {
    // 100 - (-100) = 200: outside int8, so the layer stays the i32 matmul it is.
    let (nodes, inits) = dynamic(-100);
    let (made, worst) = check("dynamic_wide", (&nodes, &inits), 40, &[], &["accf"]);
    assert!(made.is_empty(), "{made:?}");
    assert_eq!(worst, 0.0);
}

/// QDQ: activations quantized to u8 per tensor, weights i8 per column (`axis`, or per
/// tensor with a scalar scale).
fn qdq(weight_scale: TensorProto, axis: i64) -> (Vec<NodeProto>, Vec<TensorProto>) {
    let (k, n) = (33, 3);
    let nodes = vec![
        node_to("q", "QuantizeLinear", &["x", "xs", "xz"], &["xq"]),
        node_to("dq", "DequantizeLinear", &["xq", "xs", "xz"], &["xd"]),
        NodeProto {
            attribute: vec![int("axis", axis)],
            ..node_to("wdq", "DequantizeLinear", &["w", "ws", "wz"], &["wd"])
        },
        node_to("mm", "MatMul", &["xd", "wd"], &["y"]),
    ];
    let wz: Vec<i64> = vec![0; weight_scale.dims.iter().product::<i64>().max(1) as usize];
    let wz_dims = weight_scale.dims.clone();
    let inits = vec![
        floats("xs", &[], &[0.011]),
        bytes("xz", U8, &[], &[131]),
        bytes(
            "w",
            I8,
            &[k, n],
            &weights(k as usize, n as usize, -127, 127),
        ),
        weight_scale,
        bytes("wz", I8, &wz_dims, &wz),
    ];
    (nodes, inits)
}

#[test]
fn qdq_layers_take_the_quantized_activations() {
    for (name, scale, axis) in [
        ("qdq_axis", floats("ws", &[3], &[0.01, 0.002, 0.04]), 1),
        ("qdq_tensor", floats("ws", &[], &[0.003]), 1),
    ] {
        let (nodes, inits) = qdq(scale, axis);
        let (made, worst) = check(name, (&nodes, &inits), 33, &[], &["xd", "wd"]);
        // The layer quantizes x itself, as the QuantizeLinear would.
        assert_eq!(made, [(WeightQuant::Int8, ActQuant::PerTensor)], "{name}");
        // The integer product is exact; the definition rounds each dequantized operand
        // and product in f32.
        println!("{name}: largest difference {worst:.2e} of the output's magnitude");
        assert!(worst < 1e-6, "{name}: {worst}");
        // Integers that come from elsewhere than a QuantizeLinear by the same constants
        // are taken as they are.
        let (nodes, inits) = qdq(floats("ws", &[], &[0.003]), 1);
        let (made, worst) = check(
            &format!("{name}_integers"),
            (&nodes, &inits),
            33,
            &["xq"],
            &["xd", "wd"],
        );
        assert_eq!(made, [(WeightQuant::Int8, ActQuant::Quantized)], "{name}");
        assert!(worst < 1e-6, "{name}: {worst}");
    }
}

#[test]
fn qdq_weights_by_f32_activations_are_weight_only() {
    let (k, n) = (70, 3);
    let nodes = vec![
        NodeProto {
            attribute: vec![int("axis", 1)],
            ..node_to("wdq", "DequantizeLinear", &["w", "ws", "wz"], &["wd"])
        },
        node_to("mm", "MatMul", &["x", "wd"], &["y"]),
    ];
    let inits = vec![
        bytes("w", U8, &[k, n], &weights(k as usize, n as usize, 2, 254)),
        floats("ws", &[n], &[0.01, 0.02, 0.03]),
        bytes("wz", U8, &[n], &[128, 129, 127]),
    ];
    let (made, worst) = check("weight_only", (&nodes, &inits), k as usize, &[], &["wd"]);
    assert_eq!(made, [(WeightQuant::Int8, ActQuant::None)]);
    assert!(worst < 1e-6, "{worst}");
}

#[test]
fn blocked_4_bit_weights_become_int4_layers() {
    let (k, n) = (70, 3);
    let blocked = |block: i64| {
        let nodes = vec![
            NodeProto {
                attribute: vec![int("axis", 0), int("block_size", block)],
                ..node_to("wdq", "DequantizeLinear", &["w", "ws"], &["wd"])
            },
            node_to("mm", "MatMul", &["x", "wd"], &["y"]),
        ];
        let blocks = (k + block - 1) / block;
        let scales: Vec<f32> = (0..blocks * n).map(|i| 0.01 + i as f32 * 0.003).collect();
        let inits = vec![
            bytes("w", I8, &[k, n], &weights(k as usize, n as usize, -8, 7)),
            floats("ws", &[blocks, n], &scales),
        ];
        (nodes, inits)
    };
    let (nodes, inits) = blocked(32);
    let (made, worst) = check("blocked", (&nodes, &inits), k as usize, &[], &["wd"]);
    assert!(
        matches!(
            made[..],
            [(
                WeightQuant::Int4 {
                    zero_points: false,
                    ..
                },
                ActQuant::None
            )]
        ),
        "{made:?}"
    );
    assert!(worst < 1e-6, "{worst}");
    // Blocks of 48 have no kernel: the layer imports as its definition.
    let (nodes, inits) = blocked(48);
    let (made, worst) = check("blocked_48", (&nodes, &inits), k as usize, &[], &["wd"]);
    assert!(made.is_empty(), "{made:?}");
    assert_eq!(worst, 0.0);
}
