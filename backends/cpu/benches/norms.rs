//! Layer/RMS norm benchmark: the fused op (one row kernel per node) against the same
//! computation written with core ops (reduce_mean, sub, mul, add, rsqrt: one kernel per
//! op). Median microseconds of a whole `run` (which also copies the inputs in and the
//! output out) and of the kernels alone (the sum of `profile`'s kernel times), one human
//! line and one JSON line per measurement.
//!
//! `cargo bench -p kiln-cpu --bench norms -- [--runs R]`

use kiln_cpu::{CompiledModel, Options};
use kiln_ir::{BinaryOp, DType, Graph, Op, ReduceKind, Tensor, TensorType, UnaryOp, ValueId};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Layer,
    Rms,
}

/// `x [rows, c]`, `scale [c]`, `bias [c]` (layer norm only) as graph inputs.
fn inputs(g: &mut Graph, kind: Kind, rows: usize, c: usize) -> Vec<ValueId> {
    let mut v = vec![g.add_input("x", TensorType::fixed(DType::F32, &[rows, c]))];
    v.push(g.add_input("scale", TensorType::fixed(DType::F32, &[c])));
    if kind == Kind::Layer {
        v.push(g.add_input("bias", TensorType::fixed(DType::F32, &[c])));
    }
    v
}

fn fused(kind: Kind, rows: usize, c: usize) -> Graph {
    let mut g = Graph::new("fused");
    let ins = inputs(&mut g, kind, rows, c);
    let op = match kind {
        Kind::Layer => Op::LayerNorm { epsilon: 1e-5 },
        Kind::Rms => Op::RmsNorm { epsilon: 1e-5 },
    };
    let y = g.add_node("norm", op, &ins).expect("valid norm")[0];
    g.add_output("y", y);
    g
}

/// The interpreter's definition of the op, node by node.
fn decomposed(kind: Kind, rows: usize, c: usize) -> Graph {
    let mut g = Graph::new("decomposed");
    let ins = inputs(&mut g, kind, rows, c);
    let mean = |g: &mut Graph, v: ValueId| {
        let op = Op::Reduce {
            kind: ReduceKind::Mean,
            axes: vec![1],
            keep_dims: true,
        };
        g.add_node("mean", op, &[v]).expect("valid mean")[0]
    };
    let x = ins[0];
    let centered = match kind {
        Kind::Layer => {
            let m = mean(&mut g, x);
            node(&mut g, "sub", Op::Binary(BinaryOp::Sub), &[x, m])
        }
        Kind::Rms => x,
    };
    let sq = node(
        &mut g,
        "sq",
        Op::Binary(BinaryOp::Mul),
        &[centered, centered],
    );
    let var = mean(&mut g, sq);
    let eps = node(&mut g, "eps", Op::Const(Tensor::scalar(1e-5f32)), &[]);
    let shifted = node(&mut g, "add_eps", Op::Binary(BinaryOp::Add), &[var, eps]);
    let r = node(&mut g, "rsqrt", Op::Unary(UnaryOp::Rsqrt), &[shifted]);
    let n = node(&mut g, "norm", Op::Binary(BinaryOp::Mul), &[centered, r]);
    let mut y = node(&mut g, "scale", Op::Binary(BinaryOp::Mul), &[n, ins[1]]);
    if kind == Kind::Layer {
        y = node(&mut g, "bias", Op::Binary(BinaryOp::Add), &[y, ins[2]]);
    }
    g.add_output("y", y);
    g
}

fn node(g: &mut Graph, name: &str, op: Op, args: &[ValueId]) -> ValueId {
    g.add_node(name, op, args).expect("valid node")[0]
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median microseconds of one run, and of its kernels alone, over `runs` timed runs each
/// after a warm-up.
fn time(model: &CompiledModel, inputs: &[Tensor], runs: usize) -> (f64, f64) {
    for _ in 0..5 {
        model.run(inputs).expect("runs");
    }
    let whole = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(model.run(inputs).expect("runs"));
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let kernels = (0..runs.max(1))
        .map(|_| {
            let times = model.profile(inputs).expect("runs");
            times.iter().map(|t| t.time.as_secs_f64() * 1e6).sum()
        })
        .collect();
    (median(whole), median(kernels))
}

fn parse_runs() -> Result<usize, String> {
    let mut runs = 200;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--runs" {
            let v = it.next().ok_or("--runs needs a value")?;
            runs = v.parse().map_err(|_| format!("bad run count `{v}`"))?;
        }
        // cargo passes `--bench`; other harness flags do not apply here.
    }
    Ok(runs)
}

fn main() {
    let runs = match parse_runs() {
        Ok(r) => r,
        Err(message) => {
            eprintln!("norms bench: {message}");
            std::process::exit(2);
        }
    };
    for kind in [Kind::Layer, Kind::Rms] {
        for (rows, c) in [(128, 768), (1024, 384)] {
            let data = |n: usize, k: usize| -> Vec<f32> {
                (0..n)
                    .map(|i| ((i * 7919 + k) % 1000) as f32 * 0.002 - 0.7)
                    .collect()
            };
            let mut ins = vec![Tensor::from_vec(data(rows * c, 1), &[rows, c]).expect("shape")];
            ins.push(Tensor::from_vec(data(c, 2), &[c]).expect("shape"));
            if kind == Kind::Layer {
                ins.push(Tensor::from_vec(data(c, 3), &[c]).expect("shape"));
            }
            for threads in [1, 2] {
                let opts = Options {
                    threads,
                    ..Options::default()
                };
                let f = CompiledModel::new(fused(kind, rows, c), &opts).expect("compiles");
                let d = CompiledModel::new(decomposed(kind, rows, c), &opts).expect("compiles");
                let (rf, kf) = time(&f, &ins, runs);
                let (rd, kd) = time(&d, &ins, runs);
                println!(
                    "{kind:?} norm {rows}x{c}, {threads} thread(s): kernels fused {kf:.1} µs vs decomposed {kd:.1} µs ({:.2}x); whole run {rf:.1} vs {rd:.1} µs",
                    kd / kf
                );
                println!(
                    "{{\"bench\":\"norms\",\"kind\":\"{kind:?}\",\"rows\":{rows},\"c\":{c},\"threads\":{threads},\"fused_kernels_us\":{kf:.2},\"decomposed_kernels_us\":{kd:.2},\"fused_run_us\":{rf:.2},\"decomposed_run_us\":{rd:.2}}}"
                );
            }
        }
    }
}
