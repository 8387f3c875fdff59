//! `onnx`: ONNX bytes → import → the default passes → the reference interpreter and the
//! CPU JIT, on generated inputs. Errors (a model kiln refuses, an input an op rejects) are
//! fine; a panic, an abort, a hang, a pass that leaves an invalid graph, or two runs that
//! disagree on the outputs' dtypes or shapes are bugs.
//!
//! Sizes are capped so that each input stays fast: every symbolic input dim is bound to
//! [`SYMBOL_SIZE`], and a graph any of whose values (at those sizes) would exceed
//! [`MAX_ELEMENTS`], or all of them together [`MAX_TOTAL_ELEMENTS`], is skipped before it
//! runs. (Until `Options::max_memory` exists, this guard is the harness's own; it cannot
//! see data-dependent sizes, nor what the frontend folds while importing.)

use kiln::frontend::{load_model_bytes, ImportOptions};
use kiln::ir::{Bindings, Graph, Tensor};
use kiln::passes::PassError;
use kiln::{Error, Model, Options};
use std::collections::BTreeMap;

/// The size every symbolic input dim takes.
pub const SYMBOL_SIZE: i64 = 2;
/// The most elements one value may have.
pub const MAX_ELEMENTS: u64 = 1 << 16;
/// The most elements all values together may have.
pub const MAX_TOTAL_ELEMENTS: u64 = 1 << 20;

/// Runs one input: the bytes as an ONNX model.
pub fn run(data: &[u8]) {
    if let Some(g) = import(data) {
        run_graph(g);
    }
}

/// Imports a model, or `None` when kiln refuses it (which is fine).
pub fn import(bytes: &[u8]) -> Option<Graph> {
    load_model_bytes(bytes, None, &ImportOptions::default()).ok()
}

/// The bindings the harness runs at: every input symbol at [`SYMBOL_SIZE`].
pub fn bindings(g: &Graph) -> Bindings {
    (g.input_symbols().into_iter())
        .map(|s| (s, SYMBOL_SIZE))
        .collect()
}

/// Whether every value of `g` whose size is known at `b` fits the budget.
pub fn fits(g: &Graph, b: &Bindings) -> bool {
    let mut total = 0u64;
    for ty in &g.values {
        let mut n = 1u64;
        for d in &ty.shape {
            match d.eval(b) {
                Some(v) if v >= 0 => n = n.saturating_mul(v as u64),
                // Unknown (data-dependent) or negative: the ops will say.
                _ => {}
            }
        }
        if n > MAX_ELEMENTS {
            return false;
        }
        total = total.saturating_add(n);
    }
    total <= MAX_TOTAL_ELEMENTS
}

/// Optimizes and runs an imported graph on both backends.
pub fn run_graph(g: Graph) {
    let b = bindings(&g);
    if !fits(&g, &b) {
        return;
    }
    let model = Model::from_graph(g, "<fuzz>");
    let Ok(generated) =
        kiln::generate::generate_inputs(model.graph(), &b, 0, kiln::ir::MemoryLimit::default())
    else {
        return;
    };
    let inputs: BTreeMap<String, Tensor> = generated.inputs.into_iter().collect();
    let imported = model.run(&inputs);
    let optimized = match model.optimize() {
        Ok(m) => m,
        Err(e) => return check_pass_error(&e),
    };
    if !fits(optimized.graph(), &b) {
        return;
    }
    let interp = optimized.run(&inputs);
    same_types(
        "imported (interpreter)",
        &imported,
        "optimized (interpreter)",
        &interp,
    );
    let opts = Options {
        threads: 1,
        optimize: false,
        ..Options::default()
    };
    let cpu = optimized.compile(&opts).and_then(|c| c.run(&inputs));
    same_types("optimized (interpreter)", &interp, "optimized (cpu)", &cpu);
}

/// A pass error is a kiln bug when a pass broke the graph or the frontend made an invalid
/// one; other pass failures (a budget, a refused rewrite) are reported errors.
fn check_pass_error(e: &Error) {
    match e {
        Error::Pass(PassError::Verify { .. }) => panic!("a pass left an invalid graph: {e}"),
        Error::Pass(PassError::InvalidInput(_)) => {
            panic!("the frontend imported an invalid graph: {e}")
        }
        _ => {}
    }
}

/// When both runs succeeded, their outputs must have the same names, dtypes and shapes.
fn same_types(
    a_name: &str,
    a: &Result<Vec<(String, Tensor)>, Error>,
    b_name: &str,
    b: &Result<Vec<(String, Tensor)>, Error>,
) {
    let (Ok(a), Ok(b)) = (a, b) else { return };
    let sig = |outs: &[(String, Tensor)]| -> Vec<String> {
        (outs.iter())
            .map(|(n, t)| format!("{n}: {}{:?}", t.dtype(), t.shape()))
            .collect()
    };
    assert_eq!(
        sig(a),
        sig(b),
        "{a_name} and {b_name} disagree on the outputs' types"
    );
}
