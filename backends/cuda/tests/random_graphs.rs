//! Randomized differential tests through the PTX interpreter: the CPU backend's generator
//! of random graphs (shared by path, so both backends face the same cases), with one or two
//! input sizes made symbols, scheduled with the symbols free, emitted once, and run at the
//! original sizes and at a second binding against the reference interpreter.
//!
//! Cases whose program holds a runtime call (a matmul, a convolution) or an operation with
//! no PTX lowering yet (f64 transcendental functions) are counted, printed and skipped:
//! `emit` refuses them by name rather than emitting something else.
//! `KILN_DIFF_SEEDS` sets the number of seeds (default 200), `KILN_DIFF_SEED` runs one.

#[path = "../../cpu/tests/difftest/mod.rs"]
#[allow(dead_code)]
mod difftest;

mod common;

use difftest::gen::generate;
use difftest::rng::Rng;
use difftest::symbolic::{holds_at, inputs_at, symbolize, SymCase};
use kiln_cuda::{emit, EmitError, Target};
use kiln_ir::{interp, Bindings};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// What one seed came to.
#[derive(Default, Debug)]
struct Tally {
    symbolic: usize,
    /// Compared at one binding or more.
    compared: usize,
    /// Compared at two bindings of the one module.
    compared_twice: usize,
    /// The program holds a runtime call.
    calls: usize,
    /// An operation with no PTX lowering yet, by message.
    unsupported: std::collections::BTreeMap<String, usize>,
    /// The scheduler needs a dim's value at compile time.
    needs_dim: usize,
    /// Bindings refused by the launch conditions (`kiln_cuda::launch_conditions`).
    refused: usize,
}

/// The original sizes, and each symbol one larger (a second size the code must handle).
fn bindings(case: &SymCase) -> Vec<Bindings> {
    let at = |grow: i64| -> Bindings {
        (case.symbols.iter())
            .map(|(s, n)| (s.clone(), *n as i64 + grow))
            .collect()
    };
    vec![at(0), at(1)]
}

fn check(seed: u64, tally: &mut Tally) -> Result<(), String> {
    let mut rng = Rng::new(seed ^ 0x9a1e_c0de);
    let Some(case) = symbolize(&generate(seed), &mut rng) else {
        return Ok(());
    };
    tally.symbolic += 1;
    let Ok(program) = kiln_cuda::program(&case.graph, &Bindings::new()) else {
        tally.needs_dim += 1;
        return Ok(());
    };
    let module = match emit(&program, Target::Sm80) {
        Ok(m) => m,
        Err(EmitError::Kernel { source, .. }) => match *source {
            EmitError::Unsupported(what) if what == "runtime calls" => {
                tally.calls += 1;
                return Ok(());
            }
            EmitError::Unsupported(what) => {
                *tally.unsupported.entry(what).or_default() += 1;
                return Ok(());
            }
            e => return Err(format!("emit: {e}")),
        },
        Err(e) => return Err(format!("emit: {e}")),
    };
    let conditions = kiln_cuda::launch_conditions(&case.graph, &program);
    let mut compared = 0;
    for b in bindings(&case) {
        if !holds_at(&case.graph, &b) {
            continue;
        }
        if conditions.iter().any(|c| c.check(&b).is_err()) {
            tally.refused += 1;
            continue;
        }
        let inputs = inputs_at(&case, &b, &mut rng);
        let Ok(expected) = interp::run(&case.graph, &inputs) else {
            continue;
        };
        let shapes: Vec<Vec<usize>> = expected.iter().map(|t| t.shape().to_vec()).collect();
        let (got, status) = common::run(&module, &program, &b, &inputs, &shapes)
            .map_err(|e| format!("at {b:?}: {e}"))?;
        if status != 0 {
            return Err(format!(
                "at {b:?}: kernel {} reported a bad index",
                status - 1
            ));
        }
        for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
            common::close(g, e).map_err(|m| format!("at {b:?}, output {i}: {m}"))?;
        }
        compared += 1;
    }
    tally.compared += (compared > 0) as usize;
    tally.compared_twice += (compared > 1) as usize;
    Ok(())
}

#[test]
fn ptx_with_free_symbols_matches_interpreter_on_random_graphs() {
    let seeds: Vec<u64> = match env_u64("KILN_DIFF_SEED") {
        Some(s) => vec![s],
        None => (0..env_u64("KILN_DIFF_SEEDS").unwrap_or(200)).collect(),
    };
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for &seed in &seeds {
        if let Err(m) = check(seed, &mut tally) {
            eprintln!("seed {seed}: {m}");
            failures.push(seed);
        }
    }
    eprintln!("{tally:?}");
    if let Some(&seed) = failures.first() {
        let mut rng = Rng::new(seed ^ 0x9a1e_c0de);
        if let Some(case) = symbolize(&generate(seed), &mut rng) {
            eprintln!(
                "seed {seed}, symbols {:?}:\n{}",
                case.symbols,
                kiln_ir::print(&case.graph)
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} seeds fail: {failures:?} (rerun one with KILN_DIFF_SEED)",
        failures.len(),
        seeds.len()
    );
    if seeds.len() >= 100 {
        // The test must exercise what it claims: a good share of the symbolic cases run
        // through the interpreter, most of them at two bindings of one module.
        assert!(tally.compared * 4 >= tally.symbolic, "{tally:?}");
        assert!(tally.compared_twice * 2 >= tally.compared, "{tally:?}");
    }
}
