//! Randomized differential tests: random small graphs (elementwise, reduction, matmul and
//! data-movement ops over odd, size-1 and broadcast shapes) run through the JIT at one and
//! two threads must match the reference interpreter within tolerance, and the two thread
//! counts must agree bit for bit. `KILN_DIFF_SEEDS` sets the number of seeds (default 300);
//! `KILN_DIFF_SEED` runs one seed only. A failure prints the seed and the graph.

mod difftest;

use difftest::compare::compare;
use difftest::gen::{generate, Case};
use difftest::rng::Rng;
use kiln_cpu::{CompiledModel, Options};
use kiln_ir::{interp, BinaryOp, DType, Dim, Graph, Op, ReduceKind, SliceAxis, Tensor, TensorType};
use std::sync::Arc;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Runs `case` with the JIT at `threads`, describing any failure.
fn jit(case: &Case, threads: usize) -> Result<Vec<Tensor>, String> {
    let model = CompiledModel::new(
        case.graph.clone(),
        &Options {
            threads,
            ..Options::default()
        },
    )
    .map_err(|e| format!("compile (threads={threads}): {e}"))?;
    model
        .run(&case.inputs)
        .map_err(|e| format!("run (threads={threads}): {e}"))
}

/// Checks one seed; `Ok(false)` when the interpreter rejects the case (nothing to compare).
fn check(seed: u64) -> Result<bool, String> {
    let case = generate(seed);
    let Ok(expected) = interp::run(&case.graph, &case.inputs) else {
        return Ok(false);
    };
    let one = jit(&case, 1)?;
    let two = jit(&case, 2)?;
    for (i, (e, g)) in expected.iter().zip(&one).enumerate() {
        let name = &case.graph.outputs[i].0;
        compare(e, g).map_err(|m| format!("output {name}: {m}"))?;
    }
    for (i, (a, b)) in one.iter().zip(&two).enumerate() {
        if a != b {
            let name = &case.graph.outputs[i].0;
            return Err(format!(
                "output {name}: threads=1 and threads=2 differ in bits"
            ));
        }
    }
    Ok(true)
}

fn report(seed: u64, msg: &str) -> String {
    let case = generate(seed);
    let inputs: Vec<String> = case
        .inputs
        .iter()
        .map(|t| match kiln_ir::print_tensor(t) {
            s if s.len() <= 400 => format!("  {s}"),
            _ => format!("  {}{:?} (see the seed)", t.dtype(), t.shape()),
        })
        .collect();
    format!(
        "seed {seed}: {msg}\n{}\ninputs:\n{}\n(rerun with KILN_DIFF_SEED={seed})",
        kiln_ir::print(&case.graph),
        inputs.join("\n")
    )
}

#[test]
fn jit_matches_interpreter_on_random_graphs() {
    let seeds: Vec<u64> = match env_u64("KILN_DIFF_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("KILN_DIFF_SEEDS").unwrap_or(300)).collect(),
    };
    let mut failures = Vec::new();
    let mut compared = 0;
    for &seed in &seeds {
        match check(seed) {
            Ok(true) => compared += 1,
            Ok(false) => {}
            Err(m) => {
                eprintln!("seed {seed}: {m}");
                failures.push(report(seed, &m));
            }
        }
    }
    for f in failures.iter().take(3) {
        eprintln!("{f}\n");
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds differ (first ones above)",
        failures.len(),
        seeds.len()
    );
    assert!(
        compared * 10 >= seeds.len() * 9,
        "only {compared} of {} generated cases ran on the interpreter",
        seeds.len()
    );
}

/// `x[n, 7] (+) y[n, 1]`: a symbolic batch dim through elementwise, reduction, softmax,
/// matmul, transpose and slice.
fn dynamic_graph() -> Graph {
    let n = Dim::sym("n");
    let mut g = Graph::new("dynamic");
    let x = g.add_input(
        "x",
        TensorType::new(DType::F32, vec![n.clone(), Dim::from(7i64)]),
    );
    let y = g.add_input("y", TensorType::new(DType::F32, vec![n, Dim::from(1i64)]));
    let mut add = |op: Op, inputs: &[kiln_ir::ValueId]| g.add_node("", op, inputs).unwrap()[0];
    let s = add(Op::Binary(BinaryOp::Sub), &[x, y]);
    let t = add(Op::Transpose { perm: vec![1, 0] }, &[s]);
    let m = add(Op::MatMul, &[t, s]);
    let sm = add(
        Op::Softmax {
            axis: 0,
            log: false,
        },
        &[s],
    );
    let r = add(
        Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![1],
            keep_dims: true,
        },
        &[sm],
    );
    let sl = add(
        Op::Slice {
            axes: vec![SliceAxis {
                axis: 1,
                start: Dim::from(6i64),
                end: Dim::from(-1i64),
                step: -2,
            }],
        },
        &[s],
    );
    let o = add(Op::Binary(BinaryOp::Mul), &[sl, r]);
    g.add_output("m", m);
    g.add_output("o", o);
    g
}

#[test]
fn one_compiled_model_runs_every_size_and_caches_each() {
    let g = dynamic_graph();
    let model = CompiledModel::new(
        g.clone(),
        &Options {
            threads: 2,
            ..Options::default()
        },
    )
    .unwrap();
    let mut rng = Rng::new(7);
    let mut first = Vec::new();
    for n in [1usize, 5, 33, 5] {
        let inputs = vec![
            difftest::data::random_tensor(&mut rng, DType::F32, &[n, 7], false),
            difftest::data::random_tensor(&mut rng, DType::F32, &[n, 1], false),
        ];
        let expected = interp::run(&g, &inputs).unwrap();
        let got = model.run(&inputs).unwrap();
        for (e, o) in expected.iter().zip(&got) {
            compare(e, o).unwrap_or_else(|m| panic!("n = {n}: {m}"));
        }
        let spec = model.specialize(&[vec![n, 7], vec![n, 1]]).unwrap();
        match first.iter().find(|(m, _)| *m == n) {
            Some((_, s)) => assert!(Arc::ptr_eq(s, &spec), "n = {n} compiled twice"),
            None => first.push((n, spec)),
        }
    }
    assert_eq!(first.len(), 3);
}
