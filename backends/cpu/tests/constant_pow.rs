//! `pow` by a constant 1, 2 or 3 is lowered inline (products, four lanes at a time) rather
//! than through `powf`; it must stay within an ulp of the interpreter's `powf`, special
//! values included, on the vector body and the scalar tail alike.

use kiln_cpu::{CompiledModel, Options};
use kiln_ir::{interp, BinaryOp, DType, Graph, Op, Tensor, TensorType};

fn pow_graph(exponent: f32, n: usize) -> Graph {
    let mut g = Graph::new("pow");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[n]));
    let c = g
        .add_node("c", Op::Const(Tensor::scalar(exponent)), &[])
        .unwrap()[0];
    let y = g.add_node("p", Op::Binary(BinaryOp::Pow), &[x, c]).unwrap()[0];
    g.add_output("y", y);
    g
}

fn inputs() -> Vec<f32> {
    let mut xs = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        1e-30,
        -3.5,
        1e12,
        -1e13,
    ];
    xs.extend((0..29).map(|i| (i as f32 - 14.0) * 0.37));
    xs
}

#[test]
fn pow_by_small_constant_matches_powf() {
    let xs = inputs();
    for exponent in [1.0f32, 2.0, 3.0, 0.5] {
        let g = pow_graph(exponent, xs.len());
        let x = Tensor::from_vec(xs.clone(), &[xs.len()]).unwrap();
        let want = interp::run(&g, std::slice::from_ref(&x)).unwrap();
        let model = CompiledModel::new(
            g,
            &Options {
                threads: 1,
                ..Options::default()
            },
        )
        .unwrap();
        let got = model.run(&[x]).unwrap();
        let (want, got) = (want[0].to_f64_vec(), got[0].to_f64_vec());
        for ((w, g), x) in want.iter().zip(&got).zip(&xs) {
            let close = (w.is_nan() && g.is_nan())
                || w == g
                || (w - g).abs() <= 2.0 * f32::EPSILON as f64 * w.abs();
            assert!(close, "pow({x}, {exponent}): powf {w}, compiled {g}");
        }
    }
}
