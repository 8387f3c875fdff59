//! `test interpret`: for each `; run: @f(<literals>) == <literal>` (bitwise equal) or
//! `~= <literal>` (close, by `set rtol`/`set atol`), run the reference interpreter. Untyped
//! literals take the dtype of the graph input or output they stand for.

use super::file::{Case, Directive};
use super::Ctx;
use kiln_ir::{Graph, Tensor};

/// Runs `test interpret` on one case.
pub fn subtest(ctx: &mut Ctx<'_>, case: &Case) {
    let Some((g, _)) = ctx.parse_case(case) else {
        return;
    };
    let runs: Vec<&Directive> = case.directives.iter().filter(|d| d.name == "run").collect();
    if runs.is_empty() {
        ctx.fail(
            case.first_line,
            "`test interpret` needs at least one `; run:` line",
        );
    }
    for d in runs {
        if let Err(e) = run_line(ctx, &g, &d.text) {
            ctx.fail(d.line, e);
        }
    }
}

fn run_line(ctx: &Ctx<'_>, g: &Graph, text: &str) -> Result<(), String> {
    let call = RunLine::parse(text)?;
    if call.name != g.name {
        return Err(format!(
            "`@{}` is not this graph (`@{}`)",
            call.name, g.name
        ));
    }
    let inputs = literals(
        &call.args,
        g.inputs.iter().map(|(_, v)| g.values[v.index()].dtype),
    )?;
    let want = literals(
        &call.expected,
        g.outputs.iter().map(|(_, v)| g.values[v.index()].dtype),
    )?;
    let got = kiln_ir::interp::run(g, &inputs).map_err(|e| format!("interpreter: {e}"))?;
    if got.len() != want.len() {
        return Err(format!(
            "the graph has {} outputs, the line expects {}",
            got.len(),
            want.len()
        ));
    }
    let tol = Tolerance::from_settings(ctx)?;
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        let ok = if call.approx {
            tol.close(got, want)
        } else {
            got == want
        };
        if !ok {
            let (got, want) = (kiln_ir::print_tensor(got), kiln_ir::print_tensor(want));
            return Err(format!("output {i}: got {got}, expected {want}"));
        }
    }
    Ok(())
}

fn literals(
    texts: &[String],
    dtypes: impl Iterator<Item = kiln_ir::DType>,
) -> Result<Vec<Tensor>, String> {
    let dtypes: Vec<_> = dtypes.collect();
    if texts.len() != dtypes.len() {
        return Err(format!(
            "{} literals given for {} values",
            texts.len(),
            dtypes.len()
        ));
    }
    texts
        .iter()
        .zip(dtypes)
        .map(|(t, dt)| {
            kiln_ir::parse_tensor(t, Some(dt)).map_err(|e| format!("literal `{t}`: {e}"))
        })
        .collect()
}

/// `rtol`/`atol` from `set` lines (defaults 1e-5): `|a - b| <= atol + rtol·|b|`.
pub struct Tolerance {
    rtol: f64,
    atol: f64,
}

impl Tolerance {
    /// Reads `set rtol=…` and `set atol=…`.
    pub fn from_settings(ctx: &Ctx<'_>) -> Result<Tolerance, String> {
        Ok(Tolerance {
            rtol: ctx.file.setting("rtol", 1e-5)?,
            atol: ctx.file.setting("atol", 1e-5)?,
        })
    }

    /// Same dtype and shape, and every element close; NaN matches only NaN.
    pub fn close(&self, a: &Tensor, b: &Tensor) -> bool {
        a.dtype() == b.dtype()
            && a.shape() == b.shape()
            && a.to_f64_vec().iter().zip(b.to_f64_vec()).all(|(&x, y)| {
                (x.is_nan() && y.is_nan())
                    || x == y
                    || (x - y).abs() <= self.atol + self.rtol * y.abs()
            })
    }
}

/// `@name(arg, …) == expected` or `~= expected`; several outputs are `(a, b)`.
struct RunLine {
    name: String,
    args: Vec<String>,
    approx: bool,
    expected: Vec<String>,
}

impl RunLine {
    fn parse(text: &str) -> Result<RunLine, String> {
        let rest = text
            .trim()
            .strip_prefix('@')
            .ok_or("a run line starts with `@name(`")?;
        let open = rest
            .find('(')
            .ok_or("a run line needs `(` after the graph name")?;
        let close = open + matching_close(&rest[open..]).ok_or("unbalanced `(` in the run line")?;
        let tail = rest[close + 1..].trim();
        let (approx, rhs) = match (tail.strip_prefix("=="), tail.strip_prefix("~=")) {
            (Some(r), _) => (false, r.trim()),
            (_, Some(r)) => (true, r.trim()),
            _ => {
                return Err(format!(
                    "expected `==` or `~=` after the call, found `{tail}`"
                ))
            }
        };
        let expected = match rhs
            .strip_prefix('(')
            .filter(|_| matching_close(rhs) == Some(rhs.len() - 1))
        {
            Some(inner) => split_top(&inner[..inner.len() - 1]),
            None => vec![rhs.to_string()],
        };
        Ok(RunLine {
            name: rest[..open].trim().to_string(),
            args: split_top(&rest[open + 1..close]),
            approx,
            expected,
        })
    }
}

/// The index of the `)` closing the `(` at the start of `s`.
fn matching_close(s: &str) -> Option<usize> {
    let mut depth = 0i32;
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' | '[' if !quoted => depth += 1,
            ')' | ']' if !quoted => {
                depth -= 1;
                if depth == 0 {
                    return (c == ')').then_some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits on commas outside brackets and quotes; an empty string has no parts.
fn split_top(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' | '[' if !quoted => depth += 1,
            ')' | ']' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(s[start..i].trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = s[start..].trim();
    if !last.is_empty() || !parts.is_empty() {
        parts.push(last.to_string());
    }
    parts
}
