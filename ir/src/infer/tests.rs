//! Tests for shape inference: one table of cases per op family, types written as text.

use crate::*;

/// A type from `f32[batch, 3]` text.
fn ty(s: &str) -> TensorType {
    let (dt, rest) = s.split_once('[').expect("type has `[`");
    let dims = rest.strip_suffix(']').expect("type ends in `]`");
    let shape = if dims.trim().is_empty() {
        vec![]
    } else {
        dims.split(',')
            .map(|d| d.trim().parse().expect("dim parses"))
            .collect()
    };
    TensorType::new(dt.parse().expect("dtype parses"), shape)
}

/// Runs inference; `expect` is the output types joined by `; `, or `error: …`.
fn run(op: &Op, inputs: &[&str]) -> String {
    let types: Vec<TensorType> = inputs.iter().map(|s| ty(s)).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    match infer(op, &refs) {
        Ok(out) => out
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("error: {e}"),
    }
}

fn check(cases: &[(Op, &[&str], &str)]) {
    for (op, inputs, expect) in cases {
        assert_eq!(run(op, inputs), *expect, "{} on {inputs:?}", op.name());
    }
}

fn d(s: &str) -> Dim {
    s.parse().unwrap()
}

fn dims(s: &[&str]) -> Vec<Dim> {
    s.iter().map(|x| d(x)).collect()
}

#[test]
fn elementwise() {
    use BinaryOp::*;
    check(&[
        (Op::Unary(UnaryOp::Relu), &["f32[b, 3]"], "f32[b, 3]"),
        (Op::Unary(UnaryOp::IsNan), &["f16[2]"], "bool[2]"),
        (
            Op::Unary(UnaryOp::Exp),
            &["i32[2]"],
            "error: exp: input must be a float type, got i32",
        ),
        (
            Op::Unary(UnaryOp::Not),
            &["f32[2]"],
            "error: not: input must be the bool type, got f32",
        ),
        (
            Op::Binary(Add),
            &["f32[b, 1, 4]", "f32[3, 1]"],
            "f32[b, 3, 4]",
        ),
        (Op::Binary(Add), &["f32[seq]", "f32[4]"], "f32[4]"),
        (Op::Binary(Less), &["i64[2, 3]", "i64[]"], "bool[2, 3]"),
        (
            Op::Binary(Add),
            &["f32[3]", "f32[4]"],
            "error: add: cannot broadcast 3 with 4 (shapes [3] and [4])",
        ),
        (
            Op::Binary(Mul),
            &["f32[a]", "f32[b]"],
            "error: mul: cannot broadcast a with b (shapes [a] and [b])",
        ),
        (
            Op::Binary(Add),
            &["f32[3]", "i64[3]"],
            "error: add: input dtypes differ (f32 vs i64)",
        ),
        (
            Op::Binary(ShiftLeft),
            &["i32[3]", "i32[3]"],
            "error: shift_left: input must be an unsigned integer type, got i32",
        ),
        (
            Op::Binary(Add),
            &["f32[3]"],
            "error: add: expects 2 inputs, got 1",
        ),
        (Op::Where, &["bool[2, 1]", "f32[3]", "f32[]"], "f32[2, 3]"),
        (
            Op::Where,
            &["i64[2]", "f32[2]", "f32[2]"],
            "error: where: condition must be the bool type, got i64",
        ),
        (Op::Cast { to: DType::I8 }, &["f32[n]"], "i8[n]"),
        (Op::Bitcast { to: DType::I32 }, &["f32[n]"], "i32[n]"),
        (
            Op::Bitcast { to: DType::I64 },
            &["f32[n]"],
            "error: bitcast: cannot bitcast f32 (4 bytes) to i64 (8 bytes)",
        ),
    ]);
}

#[test]
fn reductions_and_layout() {
    let reduce = |axes: Vec<usize>, keep_dims| Op::Reduce {
        kind: ReduceKind::Sum,
        axes,
        keep_dims,
    };
    check(&[
        (reduce(vec![0, 2], false), &["f32[2, 3, 4]"], "f32[3]"),
        (reduce(vec![1], true), &["f32[2, s, 4]"], "f32[2, 1, 4]"),
        (reduce(vec![], false), &["f32[2]"], "f32[2]"),
        (
            reduce(vec![2, 0], false),
            &["f32[2, 3, 4]"],
            "error: reduce_sum: axes must be sorted and unique, got [2, 0]",
        ),
        (
            reduce(vec![3], false),
            &["f32[2, 3, 4]"],
            "error: reduce_sum: axis 3 out of range for rank 3",
        ),
        (
            Op::ArgReduce {
                kind: ArgKind::Max,
                axis: 1,
                keep_dims: false,
                select_last: false,
            },
            &["f32[2, 3]"],
            "i64[2]",
        ),
        (
            Op::Softmax {
                axis: 1,
                log: false,
            },
            &["f32[2, 3]"],
            "f32[2, 3]",
        ),
        (
            Op::Softmax { axis: 1, log: true },
            &["i32[2, 3]"],
            "error: log_softmax: input must be a float type, got i32",
        ),
        (
            Op::Transpose {
                perm: vec![2, 0, 1],
            },
            &["f32[a, b, c]"],
            "f32[c, a, b]",
        ),
        (
            Op::Transpose {
                perm: vec![0, 0, 1],
            },
            &["f32[a, b, c]"],
            "error: transpose: [0, 0, 1] is not a permutation of 0..3",
        ),
        (
            Op::Reshape {
                shape: dims(&["6", "4"]),
            },
            &["f32[2, 3, 4]"],
            "f32[6, 4]",
        ),
        (
            Op::Reshape {
                shape: dims(&["b*s", "4"]),
            },
            &["f32[b, s, 4]"],
            "f32[b*s, 4]",
        ),
        (
            Op::Reshape {
                shape: dims(&["n", "4"]),
            },
            &["f32[2, 3, 4]"],
            "f32[n, 4]",
        ),
        (
            Op::Reshape {
                shape: dims(&["5", "4"]),
            },
            &["f32[2, 3, 4]"],
            "error: reshape: element count differs (24 vs 20) reshaping [2, 3, 4] to [5, 4]",
        ),
        (
            Op::Expand {
                shape: dims(&["b", "3", "4"]),
            },
            &["f32[3, 1]"],
            "f32[b, 3, 4]",
        ),
        (
            Op::Expand {
                shape: dims(&["4"]),
            },
            &["f32[3, 1]"],
            "error: expand: cannot expand rank 2 to rank 1",
        ),
        (Op::ShapeOf, &["f32[a, 3]"], "i64[2]"),
        (
            Op::ShapeValue {
                dims: dims(&["a", "2*a"]),
                scalar: false,
            },
            &[],
            "i64[2]",
        ),
        (
            Op::ShapeValue {
                dims: dims(&["a"]),
                scalar: true,
            },
            &[],
            "i64[]",
        ),
        (
            Op::Const(Tensor::from_vec(vec![1i32, 2], &[2, 1]).unwrap()),
            &[],
            "i32[2, 1]",
        ),
        (
            Op::Trilu { upper: true, k: 0 },
            &["f32[3]"],
            "error: trilu: input must have rank >= 2, got f32[3]",
        ),
        (
            Op::Scan {
                kind: ScanKind::Sum,
                axis: 0,
                exclusive: false,
                reverse: false,
            },
            &["i32[n]"],
            "i32[n]",
        ),
        (
            Op::NonZero { count: "nz".into() },
            &["f32[2, 3]"],
            "i64[2, nz]",
        ),
    ]);
}

fn sl(axis: usize, start: &str, end: &str, step: i64) -> SliceAxis {
    SliceAxis {
        axis,
        start: d(start),
        end: d(end),
        step,
    }
}

#[test]
fn slice_concat_pad() {
    check(&[
        (
            Op::Slice {
                axes: vec![sl(1, "1", "seq", 2)],
            },
            &["f32[2, seq]"],
            "f32[2, (seq)/2]",
        ),
        (
            Op::Slice {
                axes: vec![sl(0, "9", "-1", -1)],
            },
            &["f32[10]"],
            "f32[10]",
        ),
        (
            Op::Slice {
                axes: vec![sl(0, "2", "8", 3)],
            },
            &["f32[10]"],
            "f32[2]",
        ),
        (
            Op::Slice {
                axes: vec![sl(0, "2", "12", 1)],
            },
            &["f32[10]"],
            "error: slice: slice bounds out of range on axis 0 (12 > 10; start 2, end 12, step 1)",
        ),
        (
            Op::Slice {
                axes: vec![sl(0, "0", "1", 0)],
            },
            &["f32[10]"],
            "error: slice: slice step on axis 0 is zero",
        ),
        (
            Op::Concat { axis: 1 },
            &["f32[b, 2]", "f32[b, s]", "f32[1, 3]"],
            "f32[1, s+5]",
        ),
        (
            Op::Concat { axis: 0 },
            &["f32[2, 3]", "f32[2, 4]"],
            "error: concat: input 1: dims on axis 1 differ (3 vs 4)",
        ),
        (
            Op::Concat { axis: 0 },
            &["f32[2]", "f32[2, 4]"],
            "error: concat: input 1 has rank 2, input 0 has rank 1",
        ),
        (
            Op::Concat { axis: 0 },
            &[],
            "error: concat: expects at least 1 inputs, got 0",
        ),
        (
            Op::Pad {
                pads: vec![(1, 2), (0, -1)],
                mode: PadMode::Constant,
            },
            &["f32[n, 3]", "f32[]"],
            "f32[n+3, 2]",
        ),
        (
            Op::Pad {
                pads: vec![(0, -4)],
                mode: PadMode::Constant,
            },
            &["f32[3]", "f32[]"],
            "error: pad: padded axis 0 is negative (-1)",
        ),
        (Op::Range { len: d("n") }, &["i64[]", "i64[]"], "i64[n]"),
        (
            Op::Range { len: d("n") },
            &["i64[]", "i32[]"],
            "error: range: start and delta dtypes differ (i64 vs i32)",
        ),
    ]);
}

#[test]
fn contractions() {
    let spec = |ins: &[&str], out: &str| {
        Op::Einsum(EinsumSpec {
            inputs: ins.iter().map(|s| s.chars().collect()).collect(),
            output: out.chars().collect(),
        })
    };
    check(&[
        (
            Op::MatMul,
            &["f32[b, 1, m, k]", "f32[h, k, 5]"],
            "f32[b, h, m, 5]",
        ),
        (
            Op::MatMul,
            &["f32[2, 3]", "f32[4, 5]"],
            "error: matmul: contraction dims differ (3 vs 4)",
        ),
        (
            Op::MatMul,
            &["f32[3]", "f32[3, 5]"],
            "error: matmul: inputs must have rank >= 2, got f32[3] and f32[3, 5]",
        ),
        (
            spec(&["ij", "jk"], "ik"),
            &["f32[2, 3]", "f32[3, n]"],
            "f32[2, n]",
        ),
        (
            spec(&["bij", "bjk"], "bik"),
            &["f32[1, 2, 3]", "f32[7, 3, 4]"],
            "f32[7, 2, 4]",
        ),
        (spec(&["ii"], "i"), &["f32[3, 3]"], "f32[3]"),
        (
            spec(&["ij", "jk"], "ik"),
            &["f32[2, 3]", "f32[4, 5]"],
            "error: einsum: label `j` has sizes 3 and 4",
        ),
        (
            spec(&["ij"], "iz"),
            &["f32[2, 3]"],
            "error: einsum: output label `z` is in no input",
        ),
        (
            spec(&["ij"], "ij"),
            &["f32[2]"],
            "error: einsum: input 0 has rank 1 but 2 labels `ij`",
        ),
        (
            spec(&["ij", "j"], "i"),
            &["f32[2, 3]"],
            "error: einsum: expects 2 inputs, got 1",
        ),
    ]);
}

#[test]
fn windows() {
    let conv = |strides: Vec<usize>, pads: Vec<(usize, usize)>, groups| {
        Op::Conv(ConvAttrs {
            dilations: vec![1; strides.len()],
            strides,
            pads,
            groups,
        })
    };
    let pool = |kernel: Vec<usize>, strides: Vec<usize>, pads: Vec<(usize, usize)>, ceil_mode| {
        let n = kernel.len();
        Op::Pool(PoolAttrs {
            kind: PoolKind::Max,
            kernel,
            strides,
            dilations: vec![1; n],
            pads,
            ceil_mode,
        })
    };
    let convt = Op::ConvTranspose(ConvTransposeAttrs {
        strides: vec![2],
        dilations: vec![1],
        pads: vec![(1, 1)],
        output_padding: vec![1],
        groups: 1,
    });
    check(&[
        (
            conv(vec![1, 1], vec![(1, 1), (1, 1)], 1),
            &["f32[n, 3, h, 8]", "f32[16, 3, 3, 3]"],
            "f32[n, 16, h, 8]",
        ),
        (
            conv(vec![2], vec![(0, 0)], 1),
            &["f32[1, 3, l]", "f32[4, 3, 3]"],
            "f32[1, 4, (l-3)/2+1]",
        ),
        (
            conv(vec![1], vec![(0, 0)], 2),
            &["f32[1, 4, 5]", "f32[6, 2, 3]"],
            "f32[1, 6, 3]",
        ),
        (
            conv(vec![1], vec![(0, 0)], 1),
            &["f32[1, 4, 5]", "f32[6, 2, 3]"],
            "error: conv: input channels and weight channels × groups differ (4 vs 2)",
        ),
        (
            conv(vec![1], vec![(0, 0)], 1),
            &["f32[1, 2, 2]", "f32[6, 2, 3]"],
            "error: conv: spatial dim 0 has output size 0 (window larger than padded input)",
        ),
        (
            conv(vec![1, 1], vec![(0, 0)], 1),
            &["f32[1, 2, 5, 5]", "f32[6, 2, 3, 3]"],
            "error: conv: pads has 1 entries for 2 spatial dims",
        ),
        (
            convt.clone(),
            &["f32[1, 2, 5]", "f32[2, 3, 3]"],
            "f32[1, 3, 10]",
        ),
        (
            convt,
            &["f32[1, 2, 5]", "f32[4, 3, 3]"],
            "error: conv_transpose: input channels and weight dim 0 differ (2 vs 4)",
        ),
        (
            pool(vec![2, 2], vec![2, 2], vec![(0, 0); 2], false),
            &["f32[1, 3, 5, h]"],
            "f32[1, 3, 2, (h-2)/2+1]",
        ),
        (
            pool(vec![2], vec![2], vec![(0, 0)], true),
            &["f32[1, 3, 5]"],
            "f32[1, 3, 3]",
        ),
        // The last ceil-mode window would start in the end padding, so it is dropped.
        (
            pool(vec![1], vec![2], vec![(0, 1)], true),
            &["f32[1, 1, 4]"],
            "f32[1, 1, 2]",
        ),
        (
            pool(vec![3], vec![1], vec![(0, 0)], false),
            &["f32[1, 3]"],
            "error: max_pool: expects x[n, c, ...], got f32[1, 3]",
        ),
    ]);
}

#[test]
fn indexing() {
    let topk = |axis, k| Op::TopK {
        axis,
        k,
        largest: true,
        sorted: true,
    };
    let scatter_nd = Op::ScatterNd {
        reduction: ScatterReduction::None,
    };
    check(&[
        (
            Op::Gather { axis: 1 },
            &["f32[a, b, c]", "i64[2, 3]"],
            "f32[a, 2, 3, c]",
        ),
        (
            Op::Gather { axis: 0 },
            &["f32[a]", "f32[2]"],
            "error: gather: indices must be an i32 or i64 type, got f32",
        ),
        (
            Op::GatherElements { axis: 1 },
            &["f32[2, 3]", "i64[2, 5]"],
            "f32[2, 5]",
        ),
        (
            Op::GatherElements { axis: 1 },
            &["f32[2, 3]", "i64[5]"],
            "error: gather_elements: indices have rank 1, data has rank 2",
        ),
        (
            Op::GatherNd { batch_dims: 0 },
            &["f32[4, 5, 6]", "i64[2, 3, 2]"],
            "f32[2, 3, 6]",
        ),
        (
            Op::GatherNd { batch_dims: 1 },
            &["f32[4, 5, 6]", "i64[4, 2]"],
            "f32[4]",
        ),
        (
            Op::GatherNd { batch_dims: 0 },
            &["f32[4, 5]", "i64[2, k]"],
            "error: gather_nd: the last dim of indices must be a constant, got k",
        ),
        (
            Op::ScatterElements {
                axis: 0,
                reduction: ScatterReduction::Add,
            },
            &["f32[4, 5]", "i64[2, 5]", "f32[2, 5]"],
            "f32[4, 5]",
        ),
        (
            Op::ScatterElements {
                axis: 0,
                reduction: ScatterReduction::Add,
            },
            &["f32[4, 5]", "i64[2, 5]", "f32[2, 4]"],
            "error: scatter_elements: updates dims on axis 1 differ (4 vs 5)",
        ),
        (
            scatter_nd.clone(),
            &["f32[4, 5, 6]", "i64[3, 1]", "f32[3, 5, 6]"],
            "f32[4, 5, 6]",
        ),
        (
            scatter_nd,
            &["f32[4, 5, 6]", "i64[3, 2]", "f32[3, 5, 6]"],
            "error: scatter_nd: updates have shape [3, 5, 6], expected [3, 6]",
        ),
        (topk(1, 2), &["f32[b, 5]"], "f32[b, 2]; i64[b, 2]"),
        (
            topk(1, 7),
            &["f32[b, 5]"],
            "error: topk: k = 7 exceeds the axis size 5",
        ),
        (
            Op::OneHot { axis: 1, depth: 10 },
            &["i64[b, s]", "f32[2]"],
            "f32[b, 10, s]",
        ),
        (
            Op::OneHot { axis: 1, depth: 10 },
            &["i64[b]", "f32[3]"],
            "error: one_hot: values must be [off, on], got f32[3]",
        ),
    ]);
}

#[test]
fn every_op_reports_its_arity() {
    assert_eq!(input_arity(&Op::Where), Arity::Exactly(3));
    assert_eq!(input_arity(&Op::Concat { axis: 0 }), Arity::AtLeast(1));
    assert!(!Arity::Exactly(2).accepts(3));
    assert_eq!(Arity::AtLeast(1).to_string(), "at least 1");
}
