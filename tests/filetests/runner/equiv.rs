//! `test equiv`: run the `pipeline`, then the interpreter on the graph before and after it,
//! on seeded random inputs for each `; bind: batch=2, seq=7` line (one run with no symbols
//! bound when there is none); outputs must agree within `set rtol`/`set atol`.

use super::file::Case;
use super::interpret::Tolerance;
use super::optimize::run_pipeline;
use super::Ctx;
use kiln_ir::{Bindings, DType, Graph, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Runs `test equiv` on one case.
pub fn subtest(ctx: &mut Ctx<'_>, case: &Case) {
    let Some((before, _)) = ctx.parse_case(case) else {
        return;
    };
    let mut after = before.clone();
    if run_pipeline(ctx, case, &mut after).is_none() {
        return;
    }
    let binds: Vec<(usize, &str)> = case
        .directives
        .iter()
        .filter(|d| d.name == "bind")
        .map(|d| (d.line, d.text.as_str()))
        .collect();
    let binds = if binds.is_empty() {
        vec![(case.first_line, "")]
    } else {
        binds
    };
    let tol = match Tolerance::from_settings(ctx) {
        Ok(t) => t,
        Err(e) => return ctx.fail(1, e),
    };
    for (seed, (line, text)) in binds.into_iter().enumerate() {
        if let Err(e) = compare(&before, &after, text, seed as u64, &tol) {
            ctx.fail(line, e);
        }
    }
}

fn compare(
    before: &Graph,
    after: &Graph,
    bind: &str,
    seed: u64,
    tol: &Tolerance,
) -> Result<(), String> {
    let bindings = parse_bindings(bind)?;
    let inputs = random_inputs(before, &bindings, seed)?;
    let want =
        kiln_ir::interp::run(before, &inputs).map_err(|e| format!("before the pipeline: {e}"))?;
    let got =
        kiln_ir::interp::run(after, &inputs).map_err(|e| format!("after the pipeline: {e}"))?;
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        if !tol.close(g, w) {
            let (g, w) = (kiln_ir::print_tensor(g), kiln_ir::print_tensor(w));
            return Err(format!("output {i} changed: before {w}, after {g}"));
        }
    }
    Ok(())
}

/// `batch=2, seq=7` as bindings.
fn parse_bindings(text: &str) -> Result<Bindings, String> {
    let mut b = Bindings::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or(format!("bind `{part}` is not NAME=VALUE"))?;
        let v = v
            .trim()
            .parse()
            .map_err(|_| format!("bind `{part}`: not an integer"))?;
        b.insert(k.trim().to_string(), v);
    }
    Ok(b)
}

/// One random tensor per graph input, of its dtype and its shape under `bindings`: floats in
/// [-2, 2), integers in [-4, 4] (unsigned in [0, 4]), booleans either way.
fn random_inputs(g: &Graph, bindings: &Bindings, seed: u64) -> Result<Vec<Tensor>, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    g.inputs
        .iter()
        .map(|(name, v)| {
            let ty = &g.values[v.index()];
            let shape = ty
                .shape
                .iter()
                .map(|d| d.eval(bindings).and_then(|n| usize::try_from(n).ok()))
                .collect::<Option<Vec<usize>>>()
                .ok_or(format!(
                    "input %{name}: shape {ty:?} is not concrete under the bind line"
                ))?;
            let n = shape.iter().product();
            let data: Vec<f64> = (0..n).map(|_| random_elem(&mut rng, ty.dtype)).collect();
            let t = Tensor::from_vec(data, &shape).map_err(|e| format!("input %{name}: {e}"))?;
            Ok(t.cast(ty.dtype))
        })
        .collect()
}

fn random_elem(rng: &mut StdRng, dtype: DType) -> f64 {
    if dtype.is_float() {
        rng.random_range(-2.0..2.0)
    } else if dtype == DType::Bool {
        f64::from(u8::from(rng.random_bool(0.5)))
    } else if dtype.is_signed_int() {
        rng.random_range(-4..=4) as f64
    } else {
        rng.random_range(0..=4) as f64
    }
}
