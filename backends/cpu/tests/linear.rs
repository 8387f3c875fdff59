//! The fused linear layer (`Op::Linear`) on the CPU backend against the interpreter: every
//! epilogue, odd shapes (K and N not multiples of the register tiles, batch dims), weights
//! as constants (the prepacked GEMM) and as inputs, and bit-identical results across
//! thread counts.

use kiln_cpu::{CompiledModel, Options};
use kiln_ir::{interp, Activation, DType, Epilogue, Graph, Op, Residual, Tensor, TensorType};

/// A deterministic generator of values in `[-scale, scale)`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.next() * scale).collect();
        Tensor::from_vec(v, shape).unwrap()
    }
}

/// Every epilogue.
fn epilogues() -> Vec<Epilogue> {
    let activations = std::iter::once(None).chain(Activation::ALL.iter().copied().map(Some));
    let mut out = Vec::new();
    for activation in activations {
        for bias in [false, true] {
            for residual in [None, Some(Residual::Add), Some(Residual::Mul)] {
                out.push(Epilogue {
                    bias,
                    activation,
                    residual,
                });
            }
        }
    }
    out
}

/// `linear(x, w, [bias], [r])` over `x[lead.., k]`, the weight a constant or an input; the
/// inputs to run it on.
fn case(
    e: Epilogue,
    lead: &[usize],
    k: usize,
    n: usize,
    const_w: bool,
    seed: u64,
) -> (Graph, Vec<Tensor>) {
    let mut rng = Rng(seed);
    let mut g = Graph::new("linear");
    let x_shape: Vec<usize> = lead.iter().copied().chain([k]).collect();
    let y_shape: Vec<usize> = lead.iter().copied().chain([n]).collect();
    let mut inputs = Vec::new();
    let x = g.add_input("x", TensorType::fixed(DType::F32, &x_shape));
    inputs.push(rng.tensor(&x_shape, 1.0));
    let w_value = rng.tensor(&[k, n], 1.0 / (k as f32).sqrt());
    let w = if const_w {
        g.add_node("w", Op::Const(w_value), &[]).unwrap()[0]
    } else {
        inputs.push(w_value);
        g.add_input("w", TensorType::fixed(DType::F32, &[k, n]))
    };
    let mut args = vec![x, w];
    if e.bias {
        args.push(g.add_input("b", TensorType::fixed(DType::F32, &[n])));
        inputs.push(rng.tensor(&[n], 1.0));
    }
    if e.residual.is_some() {
        args.push(g.add_input("r", TensorType::fixed(DType::F32, &y_shape)));
        inputs.push(rng.tensor(&y_shape, 2.0));
    }
    let y = g.add_node("linear", Op::Linear(e), &args).unwrap()[0];
    g.add_output("y", y);
    (g, inputs)
}

fn run(g: &Graph, inputs: &[Tensor], threads: usize) -> Vec<f64> {
    let model = CompiledModel::new(
        g.clone(),
        &Options {
            threads,
            ..Options::default()
        },
    )
    .unwrap();
    model.run(inputs).unwrap()[0].to_f64_vec()
}

#[test]
fn every_epilogue_matches_the_interpreter_on_odd_shapes() {
    let shapes: [(&[usize], usize, usize); 4] = [
        (&[1, 1], 1, 1),
        (&[2, 3], 37, 17),
        (&[7, 5], 300, 45),
        (&[13], 19, 33),
    ];
    for (i, e) in epilogues().into_iter().enumerate() {
        for (lead, k, n) in shapes {
            for const_w in [true, false] {
                let (g, inputs) = case(e, lead, k, n, const_w, i as u64 + 1);
                let want = interp::run(&g, &inputs).unwrap()[0].to_f64_vec();
                let got = run(&g, &inputs, 1);
                for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                    // The GEMM sums in another order than the interpreter's matmul.
                    assert!(
                        (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
                        "{e:?} {lead:?}x{k}x{n} const_w={const_w}: [{j}] {a} vs {b}"
                    );
                }
            }
        }
    }
}

/// Large enough to split across threads, in both directions (wide and tall C).
#[test]
fn bit_identical_across_thread_counts() {
    let e = Epilogue {
        bias: true,
        activation: Some(Activation::Gelu),
        residual: Some(Residual::Add),
    };
    for (lead, k, n) in [(&[2usize, 65][..], 300, 203), (&[301][..], 129, 70)] {
        for const_w in [true, false] {
            let (g, inputs) = case(e, lead, k, n, const_w, 99);
            let one = run(&g, &inputs, 1);
            let two = run(&g, &inputs, 2);
            assert_eq!(one, two, "{lead:?}x{k}x{n} const_w={const_w}");
            let want = interp::run(&g, &inputs).unwrap()[0].to_f64_vec();
            let close = one
                .iter()
                .zip(&want)
                .all(|(a, b)| (a - b).abs() <= 1e-5 + 1e-4 * b.abs());
            assert!(close, "{lead:?}x{k}x{n} const_w={const_w}");
        }
    }
}
