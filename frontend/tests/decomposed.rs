//! Decomposed ops (Attention, RotaryEmbedding, RMSNormalization, losses) imported from small
//! prost-built models with symbolic dims, run by the interpreter and checked against naive
//! Rust references.

mod common;
use common::value_info;

use kiln_frontend::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
use kiln_frontend::{load_model_bytes, ImportOptions};
use kiln_ir::Tensor;
use prost::Message;

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        i: Some(v),
        r#type: Some(2),
        ..Default::default()
    }
}

/// A graph input: name, ONNX element type, dims (`Err` for a symbolic dim).
type Input<'a> = (&'a str, i32, Vec<Result<i64, &'a str>>);

/// A one-node model at `opset`, imported and run on `data`.
fn run_node(
    op: &str,
    opset: i64,
    attrs: Vec<AttributeProto>,
    inputs: &[Input],
    n_out: usize,
    data: &[Tensor],
) -> Vec<Tensor> {
    let outputs: Vec<String> = (0..n_out).map(|i| format!("y{i}")).collect();
    let node = NodeProto {
        name: Some("n".into()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|i| i.0.to_string()).collect(),
        output: outputs.clone(),
        attribute: attrs,
        ..Default::default()
    };
    let graph = GraphProto {
        name: Some("g".into()),
        node: vec![node],
        input: inputs.iter().map(|i| value_info(i.0, i.1, &i.2)).collect(),
        output: outputs.iter().map(|o| value_info(o, 1, &[])).collect(),
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(9),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(graph),
        ..Default::default()
    };
    let g = load_model_bytes(&model.encode_to_vec(), None, &ImportOptions::default())
        .expect("the model imports");
    kiln_ir::interp::run(&g, data).expect("the graph runs")
}

fn seq(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) * scale)
        .collect()
}

fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5 + 1e-4 * w.abs(), "[{i}]: {g} vs {w}");
    }
}

/// Causal grouped-query attention with a symbolic sequence length: 4 query heads share 2
/// kv heads, query `i` sees keys `0..=i`.
#[test]
fn attention_causal_gqa_symbolic_seq() {
    let (b, hq, hkv, s, d) = (1, 4, 2, 3, 2);
    let q = seq(b * hq * s * d, 0.3);
    let k = seq(b * hkv * s * d, 0.2);
    let v = seq(b * hkv * s * d, 0.5);
    let dims = |h: i64| vec![Ok(1), Ok(h), Err("seq"), Ok(2)];
    let out = run_node(
        "Attention",
        23,
        vec![int_attr("is_causal", 1)],
        &[("q", 1, dims(4)), ("k", 1, dims(2)), ("v", 1, dims(2))],
        1,
        &[
            Tensor::from_vec(q.clone(), &[b, hq, s, d]).unwrap(),
            Tensor::from_vec(k.clone(), &[b, hkv, s, d]).unwrap(),
            Tensor::from_vec(v.clone(), &[b, hkv, s, d]).unwrap(),
        ],
    );
    let mut want = Vec::new();
    for h in 0..hq {
        let kh = h / (hq / hkv);
        for i in 0..s {
            let score = |j: usize| -> f64 {
                (0..d)
                    .map(|c| (q[(h * s + i) * d + c] * k[(kh * s + j) * d + c]) as f64)
                    .sum::<f64>()
                    / (d as f64).sqrt()
            };
            let e: Vec<f64> = (0..=i).map(|j| score(j).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..d {
                let y: f64 = (0..=i)
                    .map(|j| e[j] / z * v[(kh * s + j) * d + c] as f64)
                    .sum();
                want.push(y);
            }
        }
    }
    assert_eq!(out[0].shape(), &[b, hq, s, d]);
    assert_close(&out[0].to_f64_vec(), &want);
}

/// RMSNormalization over the last axis with a symbolic batch.
#[test]
fn rms_norm_last_axis() {
    let x = seq(6, 0.5);
    let w = vec![1.0f32, 2.0, 0.5];
    let out = run_node(
        "RMSNormalization",
        23,
        vec![],
        &[("x", 1, vec![Err("batch"), Ok(3)]), ("w", 1, vec![Ok(3)])],
        1,
        &[
            Tensor::from_vec(x.clone(), &[2, 3]).unwrap(),
            Tensor::from_vec(w.clone(), &[3]).unwrap(),
        ],
    );
    let mut want = Vec::new();
    for r in x.chunks(3) {
        let ms: f64 = r.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 3.0;
        let inv = 1.0 / (ms + 1e-5).sqrt();
        want.extend(r.iter().zip(&w).map(|(v, w)| *v as f64 * inv * *w as f64));
    }
    assert_close(&out[0].to_f64_vec(), &want);
}

/// Mean NLL with a negative ignore_index: ignored targets count neither in the sum nor in
/// the divisor.
#[test]
fn nll_mean_negative_ignore_index() {
    let x = seq(6, 0.1);
    let t = vec![1i64, -1];
    let out = run_node(
        "NegativeLogLikelihoodLoss",
        13,
        vec![int_attr("ignore_index", -1)],
        &[("x", 1, vec![Err("n"), Ok(3)]), ("t", 7, vec![Err("n")])],
        1,
        &[
            Tensor::from_vec(x.clone(), &[2, 3]).unwrap(),
            Tensor::from_vec(t, &[2]).unwrap(),
        ],
    );
    assert_eq!(out[0].shape(), &[] as &[usize]);
    assert_close(&out[0].to_f64_vec(), &[-x[1] as f64]);
}

/// Non-interleaved RotaryEmbedding on a 4-D input without position ids.
#[test]
fn rotary_halves() {
    let x = seq(4, 1.0);
    let (cos, sin) = (vec![0.6f32, 0.8], vec![0.8f32, -0.6]);
    let out = run_node(
        "RotaryEmbedding",
        23,
        vec![],
        &[
            ("x", 1, vec![Ok(1), Ok(1), Ok(1), Ok(4)]),
            ("cos", 1, vec![Ok(1), Ok(1), Ok(2)]),
            ("sin", 1, vec![Ok(1), Ok(1), Ok(2)]),
        ],
        1,
        &[
            Tensor::from_vec(x.clone(), &[1, 1, 1, 4]).unwrap(),
            Tensor::from_vec(cos.clone(), &[1, 1, 2]).unwrap(),
            Tensor::from_vec(sin.clone(), &[1, 1, 2]).unwrap(),
        ],
    );
    let f = |v: f32| v as f64;
    let want: Vec<f64> = (0..2)
        .map(|i| f(cos[i] * x[i] - sin[i] * x[i + 2]))
        .chain((0..2).map(|i| f(sin[i] * x[i] + cos[i] * x[i + 2])))
        .collect();
    assert_close(&out[0].to_f64_vec(), &want);
}
