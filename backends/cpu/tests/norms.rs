//! Differential tests of the native layer and RMS norms (one row kernel per node) against
//! the reference interpreter, which defines them by their decomposition: odd and unit row
//! lengths, leading shapes with size-1 and symbolic dims, parameters of every broadcast
//! shape (inputs and constants, scalar included), several epsilons, and one vs two threads
//! bit for bit.

use kiln_cpu::{CompiledModel, Options};
use kiln_ir::{interp, DType, Dim, Graph, Op, Tensor, TensorType};

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    /// Values around `center`, so centering matters.
    fn tensor(&mut self, shape: &[usize], center: f32) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| center + 1.5 * self.next()).collect();
        Tensor::from_vec(v, shape).unwrap()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Layer,
    Rms,
}

/// How the scale and bias reach the node.
#[derive(Clone, Copy, Debug)]
enum Params {
    /// Graph inputs of this shape kind.
    Input(Shape),
    /// Constants of this shape kind.
    Const(Shape),
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    /// `[C]`.
    Vector,
    /// `[1, C]`.
    Row,
    /// The input's full (concrete) shape.
    Full,
    /// A rank-0 scalar.
    Scalar,
}

fn param_shape(s: Shape, x: &[usize]) -> Vec<usize> {
    let c = *x.last().unwrap();
    match s {
        Shape::Vector => vec![c],
        Shape::Row => vec![1, c],
        Shape::Full => x.to_vec(),
        Shape::Scalar => vec![],
    }
}

struct Case {
    graph: Graph,
    /// Inputs for each concrete shape the case runs at.
    runs: Vec<Vec<Tensor>>,
}

/// One norm node over `x` of shape `dims` (symbolic dims allowed), run at each of `shapes`.
fn case(kind: Kind, eps: f32, params: Params, dims: Vec<Dim>, shapes: &[Vec<usize>]) -> Case {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (shapes[0].iter().product::<usize>() as u64 + 1));
    let mut g = Graph::new("norm");
    let x = g.add_input("x", TensorType::new(DType::F32, dims));
    let n_params = if kind == Kind::Layer { 2 } else { 1 };
    let shape = match params {
        Params::Input(s) | Params::Const(s) => s,
    };
    // Parameter shapes come from the first concrete shape; `Full` only with static dims.
    let pshape = param_shape(shape, &shapes[0]);
    let mut param_vals = Vec::new();
    let mut param_tensors = Vec::new();
    for i in 0..n_params {
        let t = rng.tensor(&pshape, if i == 0 { 1.0 } else { 0.0 });
        let v = match params {
            Params::Input(_) => {
                param_tensors.push(t);
                g.add_input(format!("p{i}"), TensorType::fixed(DType::F32, &pshape))
            }
            Params::Const(_) => g.add_node(format!("c{i}"), Op::Const(t), &[]).unwrap()[0],
        };
        param_vals.push(v);
    }
    let op = match kind {
        Kind::Layer => Op::LayerNorm { epsilon: eps },
        Kind::Rms => Op::RmsNorm { epsilon: eps },
    };
    let mut inputs = vec![x];
    inputs.extend(&param_vals);
    let y = g.add_node("norm", op, &inputs).unwrap()[0];
    g.add_output("y", y);
    let runs = shapes
        .iter()
        .map(|s| {
            let mut v = vec![rng.tensor(s, 3.0)];
            v.extend(param_tensors.iter().cloned());
            v
        })
        .collect();
    Case { graph: g, runs }
}

/// Every element within `1e-5` of the largest magnitude of its row in the reference.
fn close(want: &Tensor, got: &Tensor) -> Result<(), String> {
    if want.shape() != got.shape() {
        return Err(format!("shape {:?} vs {:?}", want.shape(), got.shape()));
    }
    let (w, g) = (want.to_f64_vec(), got.to_f64_vec());
    let len = want.shape().last().copied().unwrap_or(1).max(1);
    for (r, (wr, gr)) in w.chunks(len).zip(g.chunks(len)).enumerate() {
        let scale = wr.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
        for (j, (a, b)) in wr.iter().zip(gr).enumerate() {
            if !((a - b).abs() <= 1e-5 * scale || (a.is_nan() && b.is_nan())) {
                return Err(format!("row {r}, element {j}: want {a}, got {b}"));
            }
        }
    }
    Ok(())
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_f64_vec().iter().map(|v| v.to_bits()).collect()
}

/// Runs `c` through one compiled model per thread count and compares with the interpreter.
fn check(c: &Case, what: &str) {
    let one = CompiledModel::new(
        c.graph.clone(),
        &Options {
            threads: 1,
            ..Options::default()
        },
    )
    .unwrap();
    let two = CompiledModel::new(
        c.graph.clone(),
        &Options {
            threads: 2,
            ..Options::default()
        },
    )
    .unwrap();
    for inputs in &c.runs {
        let want = interp::run(&c.graph, inputs).unwrap();
        let got1 = one.run(inputs).unwrap();
        let got2 = two.run(inputs).unwrap();
        let at = format!("{what} at {:?}", inputs[0].shape());
        close(&want[0], &got1[0]).unwrap_or_else(|e| panic!("{at}: {e}"));
        assert_eq!(bits(&got1[0]), bits(&got2[0]), "{at}: 1 vs 2 threads");
    }
}

/// A case at one static shape.
fn fixed_case(kind: Kind, eps: f32, params: Params, shape: &[usize]) -> Case {
    let dims = shape.iter().map(|&d| Dim::from(d)).collect();
    case(kind, eps, params, dims, &[shape.to_vec()])
}

const LENGTHS: [usize; 7] = [1, 3, 7, 17, 64, 384, 771];

#[test]
fn row_lengths_and_leading_shapes() {
    for kind in [Kind::Layer, Kind::Rms] {
        for &c in &LENGTHS {
            for lead in [vec![], vec![1], vec![5], vec![2, 1, 3], vec![1, 4, 1]] {
                let mut shape = lead.clone();
                shape.push(c);
                let p = Params::Input(Shape::Vector);
                let cs = fixed_case(kind, 1e-5, p, &shape);
                check(&cs, &format!("{kind:?} {shape:?}"));
            }
        }
    }
}

#[test]
fn parameter_shapes() {
    let shape = vec![3, 5, 19];
    for kind in [Kind::Layer, Kind::Rms] {
        for s in [Shape::Vector, Shape::Row, Shape::Full, Shape::Scalar] {
            for p in [Params::Input(s), Params::Const(s)] {
                let cs = fixed_case(kind, 1e-5, p, &shape);
                check(&cs, &format!("{kind:?} {p:?}"));
            }
        }
    }
}

/// A parameter that varies along a leading axis only (`[3, 1, 1]`): general strides.
#[test]
fn parameter_broadcast_along_leading_axes() {
    let mut g = Graph::new("norm");
    let shape = [3, 4, 9];
    let x = g.add_input("x", TensorType::fixed(DType::F32, &shape));
    let s = g.add_input("s", TensorType::fixed(DType::F32, &[3, 1, 1]));
    let b = g.add_input("b", TensorType::fixed(DType::F32, &[4, 9]));
    let y = g
        .add_node("ln", Op::LayerNorm { epsilon: 1e-3 }, &[x, s, b])
        .unwrap()[0];
    g.add_output("y", y);
    let mut rng = Rng(7);
    let inputs = vec![
        rng.tensor(&shape, 2.0),
        rng.tensor(&[3, 1, 1], 1.0),
        rng.tensor(&[4, 9], 0.0),
    ];
    check(
        &Case {
            graph: g,
            runs: vec![inputs],
        },
        "leading-axis scale",
    );
}

#[test]
fn epsilons() {
    let shape = vec![4, 33];
    for kind in [Kind::Layer, Kind::Rms] {
        for eps in [0.0f32, 1e-12, 1e-6, 1e-5, 0.1, 4.0] {
            let p = Params::Input(Shape::Vector);
            let cs = fixed_case(kind, eps, p, &shape);
            check(&cs, &format!("{kind:?} eps {eps}"));
        }
    }
}

/// A symbolic batch dim: one compiled model, two specializations; large enough at the
/// second size to be split across two threads.
#[test]
fn symbolic_batch_at_two_sizes() {
    for kind in [Kind::Layer, Kind::Rms] {
        for c in [17, 768] {
            let dims = vec![Dim::sym("batch"), Dim::from(7usize), Dim::from(c)];
            let shapes = [vec![2, 7, c], vec![40, 7, c]];
            let cs = case(kind, 1e-5, Params::Input(Shape::Vector), dims, &shapes);
            check(&cs, &format!("{kind:?} batch x 7 x {c}"));
        }
    }
}

/// Big enough (2^15 element-ops and more) to run on two threads; bit-identical results.
#[test]
fn two_threads_are_bit_identical() {
    for kind in [Kind::Layer, Kind::Rms] {
        for shape in [vec![128, 768], vec![1024, 384], vec![333, 129]] {
            let p = Params::Input(Shape::Vector);
            let cs = fixed_case(kind, 1e-5, p, &shape);
            check(&cs, &format!("{kind:?} {shape:?}"));
        }
    }
}

#[test]
fn empty_tensors() {
    for kind in [Kind::Layer, Kind::Rms] {
        for shape in [vec![0, 8], vec![4, 0], vec![2, 0, 3]] {
            let p = Params::Input(Shape::Vector);
            let cs = fixed_case(kind, 1e-5, p, &shape);
            check(&cs, &format!("{kind:?} {shape:?}"));
        }
    }
}

/// f16 norms stay a runtime call and still agree with the interpreter exactly.
#[test]
fn f16_runs_through_the_runtime() {
    let mut g = Graph::new("norm");
    let x = g.add_input("x", TensorType::fixed(DType::F16, &[3, 5]));
    let s = g.add_input("s", TensorType::fixed(DType::F16, &[5]));
    let y = g
        .add_node("rms", Op::RmsNorm { epsilon: 1e-5 }, &[x, s])
        .unwrap()[0];
    g.add_output("y", y);
    let mut rng = Rng(11);
    let inputs = vec![
        rng.tensor(&[3, 5], 1.0).cast(DType::F16),
        rng.tensor(&[5], 1.0).cast(DType::F16),
    ];
    let want = interp::run(&g, &inputs).unwrap();
    let got = CompiledModel::new(
        g,
        &Options {
            threads: 1,
            ..Options::default()
        },
    )
    .unwrap()
    .run(&inputs)
    .unwrap();
    assert_eq!(bits(&want[0]), bits(&got[0]));
}

/// Each norm node is exactly one row kernel: no runtime call, no decomposition.
#[test]
fn one_row_kernel_per_norm() {
    for kind in [Kind::Layer, Kind::Rms] {
        let shape = vec![6, 40];
        let cs = fixed_case(kind, 1e-5, Params::Input(Shape::Vector), &shape);
        let model = CompiledModel::new(
            cs.graph.clone(),
            &Options {
                threads: 1,
                ..Options::default()
            },
        )
        .unwrap();
        let labels: Vec<String> = model
            .profile(&cs.runs[0])
            .unwrap()
            .into_iter()
            .map(|t| t.kernel)
            .collect();
        assert_eq!(labels, vec!["row[6]x40".to_string()], "{kind:?}");
    }
}
