//! Two forms of the f32x4 loop body must match the interpreter bit for bit, on the vector
//! body and the scalar tail alike: a quantize-dequantize round trip (f32 → integer → f32,
//! held in i32 lanes) and loads strided along the innermost loop (read lane by lane).

use kiln_cpu::{CompiledModel, Options};
use kiln_ir::{interp, BinaryOp, DType, Graph, Op, Tensor, TensorType, UnaryOp};

fn run_both(g: &Graph, x: Tensor) -> (Vec<u32>, Vec<u32>) {
    let want = interp::run(g, std::slice::from_ref(&x)).unwrap();
    let opts = Options {
        threads: 1,
        ..Options::default()
    };
    let got = CompiledModel::new(g.clone(), &opts)
        .unwrap()
        .run(&[x])
        .unwrap();
    let bits = |t: &Tensor| -> Vec<u32> {
        t.to_f64_vec()
            .iter()
            .map(|&v| (v as f32).to_bits())
            .collect()
    };
    (bits(&want[0]), bits(&got[0]))
}

fn scalar(g: &mut Graph, name: &str, v: f32) -> kiln_ir::ValueId {
    g.add_node(name, Op::Const(Tensor::scalar(v)), &[]).unwrap()[0]
}

/// `(f32(int(round(x / s) + zp)) - zp) * s`: QuantizeLinear then DequantizeLinear, with the
/// saturating cast doing the clamp.
fn round_trip(to: DType, n: usize) -> Graph {
    let mut g = Graph::new("qdq");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[n]));
    let (s, zp) = (scalar(&mut g, "s", 0.37), scalar(&mut g, "zp", 3.0));
    let mut node =
        |name: &str, op: Op, args: &[kiln_ir::ValueId]| g.add_node(name, op, args).unwrap()[0];
    let d = node("div", Op::Binary(BinaryOp::Div), &[x, s]);
    let r = node("round", Op::Unary(UnaryOp::Round), &[d]);
    let a = node("add", Op::Binary(BinaryOp::Add), &[r, zp]);
    let q = node("q", Op::Cast { to }, &[a]);
    let f = node("f", Op::Cast { to: DType::F32 }, &[q]);
    let c = node("sub", Op::Binary(BinaryOp::Sub), &[f, zp]);
    let y = node("dq", Op::Binary(BinaryOp::Mul), &[c, s]);
    g.add_output("y", y);
    g
}

fn special_inputs() -> Vec<f32> {
    let mut xs = vec![
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        0.185, // a tie after the division
        -0.185,
        1e10,
        -1e10,
        3e9,
        -3e9,
        12000.0,
        -12000.0,
        f32::MAX,
        f32::MIN,
    ];
    xs.extend((0..30).map(|i| (i as f32 - 15.0) * 7.3));
    xs
}

#[test]
fn quantize_round_trip_saturates_like_the_interpreter() {
    let xs = special_inputs();
    for to in [DType::U8, DType::I8, DType::U16, DType::I16, DType::I32] {
        let g = round_trip(to, xs.len());
        let x = Tensor::from_vec(xs.clone(), &[xs.len()]).unwrap();
        let (want, got) = run_both(&g, x);
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(
                w,
                g,
                "{to}: x = {}: interpreter {}, compiled {}",
                xs[i],
                f32::from_bits(*w),
                f32::from_bits(*g)
            );
        }
    }
}

#[test]
fn strided_loads_match_the_interpreter() {
    // [7, 13] transposed: the output is contiguous, the input strided by 13 along it.
    let (r, c) = (7usize, 13usize);
    let mut g = Graph::new("transpose");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[r, c]));
    let t = g
        .add_node("t", Op::Transpose { perm: vec![1, 0] }, &[x])
        .unwrap()[0];
    // Exact arithmetic (no polynomial, nothing to contract into an FMA).
    let sq = g
        .add_node("mul", Op::Binary(BinaryOp::Mul), &[t, t])
        .unwrap()[0];
    let nine = scalar(&mut g, "nine", 9.0);
    let y = g
        .add_node("min", Op::Binary(BinaryOp::Min), &[sq, nine])
        .unwrap()[0];
    g.add_output("y", y);
    let xs: Vec<f32> = (0..r * c).map(|i| (i as f32 * 0.731).sin() * 4.0).collect();
    let x = Tensor::from_vec(xs, &[r, c]).unwrap();
    let (want, got) = run_both(&g, x);
    assert_eq!(want, got);
}
