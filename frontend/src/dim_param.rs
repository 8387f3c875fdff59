//! Symbolic input dims as exporters write them. A `dim_param` is usually a name
//! (`sequence_length`), but KV-cache exports also write sums such as
//! `past_sequence_length + sequence_length` for an attention mask. Such an expression over
//! names that other inputs declare alone becomes that sum of symbols, so binding the
//! inputs checks it (a mask must be as long as the past and the new tokens together)
//! rather than taking it as one more free size.

use kiln_ir::{Bindings, Dim};
use std::collections::BTreeSet;

/// The dim `param` names: a symbol for a plain name (sanitized), the expression's value
/// for `+`, `-` and `*` over integers and names in `plain`, otherwise one symbol named
/// after the whole text. Names bound in `given` (by sanitized or original name) take
/// their values.
pub(crate) fn dim(param: &str, plain: &BTreeSet<String>, given: &Bindings) -> Dim {
    let value = |name: &str| match given.get(name).or_else(|| given.get(&sanitize(name))) {
        Some(v) => Dim::from(*v),
        None => Dim::sym(sanitize(name)),
    };
    if is_name(param) {
        return value(param);
    }
    expression(param, plain, &value).unwrap_or_else(|| value(param))
}

/// Whether `p` is one name (letters, digits, `_`, `.`, `-` inside), not an expression.
pub(crate) fn is_name(p: &str) -> bool {
    !p.is_empty() && !p.contains([' ', '+', '*', '(', ')']) && !p.starts_with('-')
}

/// `sum (('+' | '-') product)*` with `product = atom ('*' atom)*`, atoms integers or
/// names in `plain`; `None` for anything else.
fn expression(text: &str, plain: &BTreeSet<String>, value: &dyn Fn(&str) -> Dim) -> Option<Dim> {
    let spaced = text
        .replace('+', " + ")
        .replace('*', " * ")
        .replace(" - ", " _minus_ ");
    let mut total = Dim::from(0i64);
    let mut sign = 1i64;
    let mut product: Option<Dim> = None;
    let mut expect_atom = true;
    for token in spaced.split_whitespace() {
        match (token, expect_atom) {
            ("+" | "_minus_", false) => {
                total = total + (&Dim::from(sign) * &product.take()?);
                sign = if token == "+" { 1 } else { -1 };
                expect_atom = true;
            }
            ("*", false) => expect_atom = true,
            (atom, true) => {
                let v = match atom.parse::<i64>() {
                    Ok(n) => Dim::from(n),
                    Err(_) if plain.contains(atom) => value(atom),
                    Err(_) => return None,
                };
                product = Some(match product {
                    Some(p) => &p * &v,
                    None => v,
                });
                expect_atom = false;
            }
            _ => return None,
        }
    }
    if expect_atom {
        return None;
    }
    Some(total + (&Dim::from(sign) * &product?))
}

/// A dim name as an IR symbol: ASCII letters, digits and `_`, not starting with a digit.
pub(crate) fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, 'd');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sums_of_declared_names_become_sums_of_symbols() {
        let p = plain(&["past_sequence_length", "sequence_length"]);
        let none = Bindings::new();
        let d = dim("past_sequence_length + sequence_length", &p, &none);
        assert_eq!(
            d,
            Dim::sym("past_sequence_length") + Dim::sym("sequence_length")
        );
        let d = dim("2*sequence_length - 1", &p, &none);
        assert_eq!(d.to_string(), "2*sequence_length-1");
        let given: Bindings = [("past_sequence_length".to_string(), 5)]
            .into_iter()
            .collect();
        let d = dim("past_sequence_length + sequence_length", &p, &given);
        assert_eq!(d, Dim::sym("sequence_length") + Dim::from(5i64));
    }

    #[test]
    fn other_texts_stay_one_symbol() {
        let p = plain(&["a"]);
        let none = Bindings::new();
        // A name no input declares alone, a function, a dangling operator.
        for text in ["a + b", "floor(a / 2)", "a +", "+ a", "a * * a"] {
            assert_eq!(dim(text, &p, &none), Dim::sym(sanitize(text)), "{text}");
        }
        assert_eq!(dim("batch", &p, &none), Dim::sym("batch"));
    }
}
