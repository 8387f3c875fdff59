//! `Einsum`: parses the equation (spaces, `...` ellipses, implicit output) into the core
//! `einsum` spec.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use crate::registry::Registry;
use kiln_ir::{EinsumSpec, Op};

/// Registers the family.
pub(crate) fn register(reg: &mut Registry) {
    reg.add("Einsum", 12, einsum);
}

fn einsum(cx: &mut Cx, n: &N) -> R<Vec<Val>> {
    let eq = n.string("equation", "");
    let xs = n.all_inputs();
    let ranks: Vec<usize> = xs.iter().map(|x| cx.rank(x)).collect();
    let spec = parse(&eq, &ranks).map_err(|e| cx.err(format!("equation `{eq}`: {e}")))?;
    Ok(vec![cx.emit1("", Op::Einsum(spec), &xs)?])
}

/// One side of the equation split into its labels, with the position of `...` if any.
struct Term {
    labels: Vec<char>,
    ellipsis: Option<usize>,
}

fn term(s: &str) -> Result<Term, String> {
    let mut labels = Vec::new();
    let mut ellipsis = None;
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("...") {
            if ellipsis.replace(labels.len()).is_some() {
                return Err(format!("more than one `...` in `{s}`"));
            }
            rest = r;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        if !c.is_ascii_alphabetic() {
            return Err(format!("bad label `{c}`"));
        }
        labels.push(c);
        rest = &rest[1..];
    }
    Ok(Term { labels, ellipsis })
}

/// Expands a term's ellipsis into the last `count` of the ellipsis labels `ell`.
fn expand(t: &Term, ell: &[char], count: usize) -> Vec<char> {
    match t.ellipsis {
        None => t.labels.clone(),
        Some(p) => {
            let mut v = t.labels[..p].to_vec();
            v.extend(&ell[ell.len() - count..]);
            v.extend(&t.labels[p..]);
            v
        }
    }
}

/// Parses `equation` for inputs of the given ranks.
pub(crate) fn parse(equation: &str, ranks: &[usize]) -> Result<EinsumSpec, String> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms = lhs.split(',').map(term).collect::<Result<Vec<_>, _>>()?;
    if terms.len() != ranks.len() {
        return Err(format!("{} terms for {} inputs", terms.len(), ranks.len()));
    }
    let mut counts = Vec::new();
    for (t, &r) in terms.iter().zip(ranks) {
        let c = r
            .checked_sub(t.labels.len())
            .ok_or_else(|| format!("too many labels for rank {r}"))?;
        if t.ellipsis.is_none() && c != 0 {
            return Err(format!("{} labels for rank {r}", t.labels.len()));
        }
        counts.push(c);
    }
    let n_ell = counts.iter().copied().max().unwrap_or(0);
    let ell: Vec<char> = ('A'..='Z')
        .chain('a'..='z')
        .filter(|c| !eq.contains(*c))
        .take(n_ell)
        .collect();
    if ell.len() < n_ell {
        return Err("too many labels".into());
    }
    let inputs: Vec<Vec<char>> = terms
        .iter()
        .zip(&counts)
        .map(|(t, &c)| expand(t, &ell, c))
        .collect();
    let output = match rhs {
        Some(r) => expand(&term(r)?, &ell, n_ell),
        None => implicit_output(&terms, &ell),
    };
    Ok(EinsumSpec { inputs, output })
}

/// The ellipsis labels, then the labels used exactly once, in alphabetical order.
fn implicit_output(terms: &[Term], ell: &[char]) -> Vec<char> {
    let mut once: Vec<char> = terms
        .iter()
        .flat_map(|t| t.labels.iter().copied())
        .filter(|c| {
            terms
                .iter()
                .flat_map(|t| t.labels.iter())
                .filter(|d| *d == c)
                .count()
                == 1
        })
        .collect();
    once.sort_unstable();
    ell.iter().copied().chain(once).collect()
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn spec(eq: &str, ranks: &[usize]) -> (Vec<String>, String) {
        let s = parse(eq, ranks).expect("parses");
        (
            s.inputs.iter().map(|i| i.iter().collect()).collect(),
            s.output.iter().collect(),
        )
    }

    #[test]
    fn explicit_and_implicit_outputs() {
        assert_eq!(
            spec("ij, jk -> ik", &[2, 2]),
            (vec!["ij".into(), "jk".into()], "ik".into())
        );
        assert_eq!(spec("ji", &[2]), (vec!["ji".into()], "ij".into()));
        assert_eq!(
            spec("i,i", &[1, 1]),
            (vec!["i".into(), "i".into()], "".into())
        );
    }

    #[test]
    fn ellipsis_broadcasts_from_the_right() {
        assert_eq!(
            spec("...ii->...i", &[4]),
            (vec!["ABii".into()], "ABi".into())
        );
        assert_eq!(
            spec("...ij,...jk", &[4, 3]),
            (vec!["ABij".into(), "Bjk".into()], "ABik".into())
        );
    }

    #[test]
    fn bad_equations_are_errors() {
        assert!(parse("ij", &[3]).is_err());
        assert!(parse("i,j", &[1]).is_err());
        assert!(parse("i1", &[2]).is_err());
    }
}
