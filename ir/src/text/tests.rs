//! Round trips of hand-written graphs, one per op family, through text and JSON; the exact
//! printed form; hand-written conveniences; and parse errors with their lines.

use super::*;
use crate::{
    ArgKind, AttentionAttrs, AttentionMask, BinaryOp, ConvAttrs, ConvTransposeAttrs, DType, Dim,
    EinsumSpec, MaskedRows, Op, PadMode, PoolAttrs, PoolKind, ReduceKind, ScanKind,
    ScatterReduction, SliceAxis, TensorType, UnaryOp, ValueId,
};

fn ty(d: DType, dims: &[&str]) -> TensorType {
    TensorType::new(d, dims.iter().map(|s| s.parse::<Dim>().unwrap()).collect())
}

fn dims(ds: &[&str]) -> Vec<Dim> {
    ds.iter().map(|s| s.parse().unwrap()).collect()
}

/// A graph with the given inputs and nodes `(op, input ids, output types)`; every value
/// that no node uses becomes an output.
fn build(
    name: &str,
    inputs: &[(&str, TensorType)],
    nodes: Vec<(Op, Vec<u32>, Vec<TensorType>)>,
) -> Graph {
    let mut g = Graph::new(name);
    for (n, t) in inputs {
        g.add_input(*n, t.clone());
    }
    for (i, (op, ins, outs)) in nodes.into_iter().enumerate() {
        let name = if i % 2 == 0 {
            format!("/node/{i}")
        } else {
            String::new()
        };
        g.push_node(name, op, ins.into_iter().map(ValueId).collect(), outs);
    }
    for (v, uses) in g.use_counts().into_iter().enumerate() {
        if uses == 0 {
            g.add_output(format!("out{v}"), ValueId(v as u32));
        }
    }
    g
}

fn round_trip(g: &Graph) {
    let text = print(g);
    let back = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(&back, g, "text round trip changed the graph:\n{text}");
    assert_eq!(print(&back), text);
    let json = serde_json::to_string(g).unwrap();
    let from_json: Graph = serde_json::from_str(&json).unwrap();
    assert_eq!(&from_json, g, "JSON round trip changed the graph");
}

#[test]
fn elementwise_family() {
    let x = ty(DType::F32, &["batch", "seq"]);
    let mut nodes = Vec::new();
    for u in UnaryOp::ALL {
        nodes.push((Op::Unary(*u), vec![0], vec![x.clone()]));
    }
    for b in BinaryOp::ALL {
        nodes.push((Op::Binary(*b), vec![0, 1], vec![x.clone()]));
    }
    nodes.push((Op::Where, vec![2, 0, 1], vec![x.clone()]));
    nodes.push((
        Op::Cast { to: DType::BF16 },
        vec![0],
        vec![ty(DType::BF16, &["batch", "seq"])],
    ));
    nodes.push((
        Op::Bitcast { to: DType::I32 },
        vec![0],
        vec![ty(DType::I32, &["batch", "seq"])],
    ));
    let inputs = [
        ("x", x.clone()),
        ("y", x.clone()),
        ("cond", ty(DType::Bool, &["batch", "1"])),
    ];
    round_trip(&build("elementwise", &inputs, nodes));
}

#[test]
fn shape_family() {
    let x = ty(DType::F16, &["batch", "2*seq+1", "min(seq, 512)"]);
    let slice = vec![
        SliceAxis {
            axis: 1,
            start: Dim::from(1i64),
            end: "2*seq".parse().unwrap(),
            step: 2,
        },
        SliceAxis {
            axis: 2,
            start: "seq-1".parse().unwrap(),
            end: Dim::from(-1i64),
            step: -1,
        },
    ];
    let mut nodes = vec![
        (
            Op::ShapeValue {
                dims: dims(&["batch", "(seq+1)/2"]),
                scalar: false,
            },
            vec![],
            vec![ty(DType::I64, &["2"])],
        ),
        (
            Op::ShapeValue {
                dims: dims(&["seq"]),
                scalar: true,
            },
            vec![],
            vec![ty(DType::I64, &[])],
        ),
        (Op::ShapeOf, vec![0], vec![ty(DType::I64, &["3"])]),
        (
            Op::Reshape {
                shape: dims(&["batch*seq", "-1"]),
            },
            vec![0],
            vec![x.clone()],
        ),
        (
            Op::Expand {
                shape: dims(&["4", "batch", "1", "max(seq, 8)"]),
            },
            vec![0],
            vec![x.clone()],
        ),
        (
            Op::Transpose {
                perm: vec![2, 0, 1],
            },
            vec![0],
            vec![x.clone()],
        ),
        (Op::Slice { axes: slice }, vec![0], vec![x.clone()]),
        (Op::Slice { axes: vec![] }, vec![0], vec![x.clone()]),
        (Op::Concat { axis: 1 }, vec![0, 0, 0], vec![x.clone()]),
        (
            Op::Range {
                len: "seq+3".parse().unwrap(),
            },
            vec![1, 1],
            vec![ty(DType::I64, &["seq+3"])],
        ),
        (
            Op::Trilu {
                upper: false,
                k: -2,
            },
            vec![0],
            vec![x.clone()],
        ),
    ];
    for mode in PadMode::ALL {
        nodes.push((
            Op::Pad {
                pads: vec![(0, 1), (-2, 3), (0, 0)],
                mode: *mode,
            },
            vec![0, 2],
            vec![x.clone()],
        ));
    }
    let inputs = [
        ("x", x.clone()),
        ("start", ty(DType::I64, &[])),
        ("fill", ty(DType::F16, &[])),
    ];
    round_trip(&build("shapes", &inputs, nodes));
}

#[test]
fn reduction_family() {
    let x = ty(DType::F64, &["n", "8", "4"]);
    let mut nodes = Vec::new();
    for kind in ReduceKind::ALL {
        nodes.push((
            Op::Reduce {
                kind: *kind,
                axes: vec![0, 2],
                keep_dims: true,
            },
            vec![0],
            vec![x.clone()],
        ));
    }
    nodes.push((
        Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![],
            keep_dims: false,
        },
        vec![0],
        vec![x.clone()],
    ));
    for kind in [ArgKind::Max, ArgKind::Min] {
        let op = Op::ArgReduce {
            kind,
            axis: 1,
            keep_dims: false,
            select_last: true,
        };
        nodes.push((op, vec![0], vec![ty(DType::I64, &["n", "4"])]));
    }
    for log in [false, true] {
        nodes.push((Op::Softmax { axis: 2, log }, vec![0], vec![x.clone()]));
    }
    for kind in [ScanKind::Sum, ScanKind::Prod] {
        nodes.push((
            Op::Scan {
                kind,
                axis: 0,
                exclusive: true,
                reverse: false,
            },
            vec![0],
            vec![x.clone()],
        ));
    }
    let topk = Op::TopK {
        axis: 2,
        k: 3,
        largest: false,
        sorted: true,
    };
    nodes.push((
        topk,
        vec![0],
        vec![
            ty(DType::F64, &["n", "8", "3"]),
            ty(DType::I64, &["n", "8", "3"]),
        ],
    ));
    round_trip(&build("reductions", &[("x", x)], nodes));
}

#[test]
fn nn_family() {
    let x = ty(DType::F32, &["n", "4", "h", "w"]);
    let pool = |kind| PoolAttrs {
        kind,
        kernel: vec![3, 3],
        strides: vec![2, 2],
        dilations: vec![1, 2],
        pads: vec![(1, 1), (0, 1)],
        ceil_mode: true,
    };
    let nodes = vec![
        (Op::MatMul, vec![0, 1], vec![x.clone()]),
        (
            Op::Conv(ConvAttrs {
                strides: vec![1, 2],
                dilations: vec![1, 1],
                pads: vec![(1, 1), (2, 0)],
                groups: 2,
            }),
            vec![0, 1],
            vec![x.clone()],
        ),
        (
            Op::ConvTranspose(ConvTransposeAttrs {
                strides: vec![2, 2],
                dilations: vec![1, 1],
                pads: vec![(0, 0), (1, 1)],
                output_padding: vec![1, 0],
                groups: 1,
            }),
            vec![0, 1],
            vec![x.clone()],
        ),
        (Op::Pool(pool(PoolKind::Max)), vec![0], vec![x.clone()]),
        (
            Op::Pool(pool(PoolKind::Avg {
                count_include_pad: true,
            })),
            vec![0],
            vec![x.clone()],
        ),
        (
            Op::Pool(pool(PoolKind::Lp { p: 3 })),
            vec![0],
            vec![x.clone()],
        ),
        (
            Op::Einsum(EinsumSpec {
                inputs: vec![vec!['n', 'c', 'h', 'w'], vec!['m', 'c', 'H', 'W']],
                output: vec!['n', 'm'],
            }),
            vec![0, 1],
            vec![ty(DType::F32, &["n", "4"])],
        ),
        (
            Op::Einsum(EinsumSpec {
                inputs: vec![vec![]],
                output: vec![],
            }),
            vec![2],
            vec![ty(DType::F32, &[])],
        ),
        (
            Op::LayerNorm { epsilon: 1e-5 },
            vec![0, 3, 3],
            vec![x.clone()],
        ),
        (
            Op::RmsNorm { epsilon: 1.0 / 3.0 },
            vec![0, 3],
            vec![x.clone()],
        ),
    ];
    let inputs = [
        ("x", x.clone()),
        ("w", ty(DType::F32, &["4", "4", "3", "3"])),
        ("s", ty(DType::F32, &[])),
        ("g", ty(DType::F32, &["w"])),
    ];
    round_trip(&build("nn", &inputs, nodes));
}

#[test]
fn linear_round_trips_every_epilogue() {
    use crate::{Activation, Epilogue, Residual};
    let y = ty(DType::F32, &["b", "s", "3"]);
    let mut nodes = Vec::new();
    for bias in [false, true] {
        for activation in std::iter::once(None).chain(Activation::ALL.iter().copied().map(Some)) {
            for residual in [None, Some(Residual::Add), Some(Residual::Mul)] {
                let e = Epilogue {
                    bias,
                    activation,
                    residual,
                };
                let mut ins = vec![0, 1];
                ins.extend(bias.then_some(2));
                ins.extend(residual.map(|_| 3));
                nodes.push((Op::Linear(e), ins, vec![y.clone()]));
            }
        }
    }
    let inputs = [
        ("x", ty(DType::F32, &["b", "s", "4"])),
        ("w", ty(DType::F32, &["4", "3"])),
        ("bias", ty(DType::F32, &["3"])),
        ("r", y.clone()),
    ];
    round_trip(&build("linear", &inputs, nodes));
}

#[test]
fn indexing_family() {
    let data = ty(DType::I32, &["5", "k"]);
    let idx = ty(DType::I64, &["2", "k"]);
    let mut nodes = vec![
        (Op::Gather { axis: 1 }, vec![0, 1], vec![data.clone()]),
        (
            Op::GatherElements { axis: 0 },
            vec![0, 1],
            vec![data.clone()],
        ),
        (
            Op::GatherNd { batch_dims: 1 },
            vec![0, 1],
            vec![data.clone()],
        ),
        (
            Op::OneHot { axis: 2, depth: 10 },
            vec![1, 0],
            vec![ty(DType::I32, &["2", "k", "10"])],
        ),
        (
            Op::NonZero { count: "nz".into() },
            vec![0],
            vec![ty(DType::I64, &["2", "nz"])],
        ),
        (
            Op::NonZero {
                count: "odd name".into(),
            },
            vec![0],
            vec![ty(DType::I64, &["2", "x"])],
        ),
    ];
    for r in ScatterReduction::ALL {
        nodes.push((
            Op::ScatterElements {
                axis: 1,
                reduction: *r,
            },
            vec![0, 1, 0],
            vec![data.clone()],
        ));
        nodes.push((
            Op::ScatterNd { reduction: *r },
            vec![0, 1, 0],
            vec![data.clone()],
        ));
    }
    round_trip(&build("indexing", &[("data", data), ("idx", idx)], nodes));
}

#[test]
fn constants_and_names() {
    let small = Tensor::from_vec(vec![0.1f32, f32::NAN, -0.0, f32::NEG_INFINITY], &[2, 2]).unwrap();
    let big = Tensor::from_vec((0..100).map(|i| i as f32 * 0.37).collect(), &[10, 10]).unwrap();
    let mut nodes = vec![
        (Op::Const(small), vec![], vec![ty(DType::F32, &["2", "2"])]),
        (Op::Const(big), vec![], vec![ty(DType::F32, &["10", "10"])]),
        (
            Op::Const(Tensor::scalar(true)),
            vec![],
            vec![ty(DType::Bool, &[])],
        ),
        // A constant whose recorded type disagrees with its data still round-trips.
        (
            Op::Const(Tensor::scalar(7u8)),
            vec![],
            vec![ty(DType::U8, &["1"])],
        ),
    ];
    for d in DType::ALL {
        nodes.push((
            Op::Const(Tensor::full(d, &[3], 1.0).unwrap()),
            vec![],
            vec![ty(d, &["3"])],
        ));
    }
    let mut g = build(
        "weird \"name\"; ok",
        &[("0", ty(DType::F32, &[])), ("a.b", ty(DType::F32, &[]))],
        nodes,
    );
    g.nodes[1].name = "semi;colon \"quoted\"\n\\".into();
    g.outputs.push(("0".into(), ValueId(0)));
    round_trip(&g);
}

#[test]
fn printed_form_is_stable() {
    let mut g = Graph::new("small");
    let x = g.add_input("x", ty(DType::F32, &["n"]));
    let c = g.push_node(
        "/c".into(),
        Op::Const(Tensor::scalar(1.5f32)),
        vec![],
        vec![ty(DType::F32, &[])],
    )[0];
    let y = g.push_node(
        String::new(),
        Op::Binary(BinaryOp::Add),
        vec![x, c],
        vec![ty(DType::F32, &["n"])],
    )[0];
    let r = Op::Reduce {
        kind: ReduceKind::Max,
        axes: vec![0],
        keep_dims: false,
    };
    let z = g.push_node("/r".into(), r, vec![y], vec![ty(DType::F32, &[])])[0];
    g.add_output("y", y);
    g.add_output("z", z);
    let expected = "\
graph @small(%x: f32[n]) -> (%y: f32[n], %z: f32[]) {
    %1 = const f32[] 1.5  \"/c\"
    %2 = add %x, %1 : f32[n]
    %3 = reduce_max %2 {axes=[0], keep_dims=false} : f32[]  \"/r\"
    return %2, %3
}
";
    assert_eq!(print(&g), expected);
}

#[test]
fn hand_written_text_is_accepted() {
    let text = "
; a leading comment
graph @h(%x: f32[n],
         %k: i64[]) -> f32[n] {   ; trailing comment
    %c = const f32[] 1.0
    %t = const i64[2] [1, 2]  \"t; not a comment\"
    %y = add %x, %c : f32[n]

    return %y
}
; an expectation block after the graph
";
    let g = parse(text).unwrap();
    assert_eq!(g.outputs, vec![("out0".to_string(), ValueId(4))]);
    assert_eq!(g.nodes[1].name, "t; not a comment");
    assert_eq!(g.value_type(ValueId(2)), &ty(DType::F32, &[]));
    let (_, lines) = parse_with_lines(text).unwrap();
    assert_eq!(lines, vec![5, 6, 7]);
}

fn error(text: &str) -> ParseError {
    match parse(text) {
        Ok(g) => panic!("parsed:\n{}", print(&g)),
        Err(e) => e,
    }
}

#[test]
fn errors_name_the_line_and_the_problem() {
    let head = "graph @g(%x: f32[2]) -> (%y: f32[2]) {\n";
    let cases = [
        (
            "    %1 = add %x, %9 : f32[2]\n    return %1\n}",
            2,
            "undefined value %9",
        ),
        (
            "    %1 = frob %x : f32[2]\n    return %1\n}",
            2,
            "unknown op `frob`",
        ),
        (
            "    %1 = softmax %x : f32[2]\n    return %1\n}",
            2,
            "missing attribute `axis`",
        ),
        (
            "    %1 = relu %x {axis=0} : f32[2]\n    return %1\n}",
            2,
            "`relu` has no attribute `axis`",
        ),
        (
            "    %1 = softmax %x {axis=-1} : f32[2]\n    return %1\n}",
            2,
            "non-negative integer",
        ),
        (
            "    %1 = reshape %x {shape=[a/b]} : f32[2]\n    return %1\n}",
            2,
            "list of dims",
        ),
        (
            "    %1 = relu %x : f32[2, n+]\n    return %1\n}",
            2,
            "invalid dim",
        ),
        (
            "    %1 = relu %x : f32[2]\n    %1 = relu %x : f32[2]\n    return %1\n}",
            3,
            "defined twice",
        ),
        (
            "    %1 = relu %x : f32[2], f32[2]\n    return %1\n}",
            2,
            "2 output types but 1",
        ),
        (
            "    %1 = relu %x : q32[2]\n    return %1\n}",
            2,
            "unknown dtype `q32`",
        ),
        (
            "    %1 = relu %x : f32[2]  \"open\n    return %1\n}",
            2,
            "unterminated string",
        ),
        (
            "    %1 = relu %x : f32[2] junk\n    return %1\n}",
            2,
            "expected end of line",
        ),
        (
            "    %1 = relu %x : f32[3]\n    return %1\n}",
            3,
            "declared f32[2]",
        ),
        ("    return %x, %x\n}", 2, "gives 2 values"),
        (
            "    %1 = const f32[2] [1.0]\n    return %1\n}",
            2,
            "shape [1]",
        ),
        (
            "    %1 = relu %x : f32[2]\n    return %1\n",
            4,
            "missing `}`",
        ),
        ("    %1 = relu %x : f32[2]\n}", 3, "missing `return`"),
        (
            "    return %x\n}\ngraph @h() -> () {\n}",
            4,
            "after the graph",
        ),
    ];
    for (body, line, msg) in cases {
        let e = error(&format!("{head}{body}"));
        assert_eq!(e.line, line, "{body}: {e}");
        assert!(
            e.message.contains(msg),
            "{body}: expected `{msg}` in `{}`",
            e.message
        );
    }
}

#[test]
fn einsum_labels_must_be_letters() {
    let text = "graph @g(%x: f32[2]) -> (%y: f32[]) {\n    %1 = einsum %x {equation=\"i1->\"} : f32[]\n    return %1\n}";
    assert!(error(text).message.contains("not an ASCII letter"));
}

#[test]
fn attention_round_trips_with_each_mask_kind() {
    let q = ty(DType::F32, &["b", "4", "s", "8"]);
    let kv = ty(DType::F32, &["b", "2", "t", "8"]);
    let inputs = [
        ("q", q.clone()),
        ("k", kv.clone()),
        ("v", kv),
        ("add", ty(DType::F32, &["b", "1", "1", "t"])),
        ("keep", ty(DType::Bool, &["s", "t"])),
    ];
    let att = |mask, rows| {
        Op::Attention(AttentionAttrs {
            scale: 0.125,
            mask,
            rows,
        })
    };
    let nodes = vec![
        (
            att(AttentionMask::None, MaskedRows::Nan),
            vec![0, 1, 2],
            vec![q.clone()],
        ),
        (
            att(AttentionMask::Add, MaskedRows::ZeroMasked),
            vec![0, 1, 2, 3],
            vec![q.clone()],
        ),
        (
            att(AttentionMask::Keep, MaskedRows::ZeroNan),
            vec![0, 1, 2, 4],
            vec![q],
        ),
    ];
    round_trip(&build("attention", &inputs, nodes));
}

#[test]
fn quant_linear_round_trips_every_format() {
    let text = "graph @q(%x: f32[b, 64], %w8: i8[64, 8], %s8: f32[8], %w4: i8[64, 8], \
                %s4: f16[2, 8], %u4: u8[64, 8], %z4: u8[1, 8], %s64: f32[1, 8], %bias: f32[8], \
                %r: f32[b, 8]) -> (%a: f32[b, 8], %c: f32[b, 8], %d: f32[b, 8], %e: f32[b, 8]) {
        %a = quant_linear %x, %w8, %s8 {weights=int8, activations=dynamic_int8, bias=false, activation=none, residual=none}
        %c = quant_linear %x, %w8, %s8, %bias, %r {weights=int8, activations=none, bias=true, activation=gelu, residual=add}
        %d = quant_linear %x, %w4, %s4 {weights=int4, block=32, zero_points=false, activations=dynamic_int8, bias=false, activation=none, residual=none}
        %e = quant_linear %x, %u4, %s64, %z4, %bias {weights=int4, block=64, zero_points=true, activations=none, bias=true, activation=silu, residual=none}
        return %a, %c, %d, %e
    }";
    let g = parse(text).unwrap_or_else(|e| panic!("{e}"));
    crate::verify(&g).unwrap();
    round_trip(&g);
}

#[test]
fn quant_linear_types_are_checked() {
    let bad = [
        // An int8 weight stored as u8.
        (
            "%w: u8[64, 8], %s: f32[8]",
            "{weights=int8",
            "int8 weight must be i8[K, N]",
        ),
        // One scale per block of 32: 2 rows, not 1.
        (
            "%w: i8[64, 8], %s: f32[1, 8]",
            "{weights=int4, block=32, zero_points=false",
            "int4 scale must be",
        ),
        // f16 scales are for int4 only.
        (
            "%w: i8[64, 8], %s: f16[8]",
            "{weights=int8",
            "int8 scale must be f32",
        ),
    ];
    for (inputs, attrs, needle) in bad {
        let text = format!(
            "graph @q(%x: f32[2, 64], {inputs}) -> (%y: f32[2, 8]) {{
                %y = quant_linear %x, %w, %s {attrs}, activations=none, bias=false, activation=none, residual=none}}
                return %y
            }}"
        );
        let e = parse(&text).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(needle), "`{needle}` missing from: {e}");
    }
    let block = "graph @q(%x: f32[2, 64], %w: i8[64, 8], %s: f32[2, 8]) -> (%y: f32[2, 8]) {
        %y = quant_linear %x, %w, %s {weights=int4, block=48, zero_points=false, activations=none, bias=false, activation=none, residual=none}
        return %y
    }";
    let e = parse(block).map(|_| ()).unwrap_err().to_string();
    assert!(e.contains("32, 64 or 128"), "{e}");
}
