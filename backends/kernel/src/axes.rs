//! Iteration spaces in canonical form: the fewest, longest axes that walk every access the
//! same way. Loop fusion compares nests in this form, and code generators emit their loops
//! from it. Also the facts about sizes that passes over the description prove before they
//! rewrite it: sizes are [`Dim`]s, and a fact must hold for every binding of the symbols
//! (each symbol a size: at least 0).

use kiln_ir::Dim;

/// Whether `a <= b` for every binding of the symbols.
pub fn at_most(a: &Dim, b: &Dim) -> bool {
    a == b || (b - a).known_nonnegative()
}

/// Whether `a < b` for every binding of the symbols.
pub fn less(a: &Dim, b: &Dim) -> bool {
    at_most(&(a + &Dim::from(1i64)), b)
}

/// Drops size-1 axes and merges adjacent axes that every access walks contiguously, so the
/// loops are as few and as long as possible. Rewrites `strides` (one row per access) and
/// returns the new shape (at least one axis).
pub fn normalize(shape: &[Dim], strides: &mut [Vec<Dim>]) -> Vec<Dim> {
    let mut out_shape: Vec<Dim> = Vec::new();
    let mut out_strides: Vec<Vec<Dim>> = vec![Vec::new(); strides.len()];
    for (d, n) in shape.iter().enumerate() {
        if n.is_one() {
            continue;
        }
        let merge = !out_shape.is_empty()
            && strides
                .iter()
                .zip(&out_strides)
                .all(|(s, o)| *o.last().expect("same length") == &s[d] * n);
        if merge {
            let last = out_shape.last_mut().expect("non-empty");
            *last = &*last * n;
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                *o.last_mut().expect("non-empty") = s[d].clone();
            }
        } else {
            out_shape.push(n.clone());
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                o.push(s[d].clone());
            }
        }
    }
    if out_shape.is_empty() {
        out_shape.push(Dim::from(1i64));
        out_strides.iter_mut().for_each(|o| o.push(Dim::from(0i64)));
    }
    for (s, o) in strides.iter_mut().zip(out_strides) {
        *s = o;
    }
    out_shape
}

#[cfg(test)]
mod tests {
    use super::normalize;
    use kiln_ir::Dim;

    fn dims(v: &[i64]) -> Vec<Dim> {
        v.iter().map(|&n| Dim::from(n)).collect()
    }

    #[test]
    fn contiguous_axes_merge_and_unit_axes_drop() {
        let mut s = vec![dims(&[12, 4, 1]), dims(&[0, 4, 1])];
        assert_eq!(normalize(&dims(&[2, 3, 4]), &mut s), dims(&[2, 12]));
        assert_eq!(s, vec![dims(&[12, 1]), dims(&[0, 1])]);
        let mut t = vec![dims(&[3, 1, 1])];
        assert_eq!(normalize(&dims(&[4, 1, 3]), &mut t), dims(&[12]));
        let mut u = vec![dims(&[0])];
        assert_eq!(normalize(&dims(&[1]), &mut u), dims(&[1]));
        assert_eq!(u, vec![dims(&[0])]);
    }

    #[test]
    fn symbolic_axes_merge_when_their_strides_agree() {
        // [b, seq, 64] contiguous: strides [seq*64, 64, 1] merge into one axis.
        let (b, seq) = (Dim::sym("b"), Dim::sym("seq"));
        let shape = vec![b.clone(), seq.clone(), Dim::from(64i64)];
        let mut s = vec![vec![
            &seq * &Dim::from(64i64),
            Dim::from(64i64),
            Dim::from(1i64),
        ]];
        let merged = normalize(&shape, &mut s);
        assert_eq!(merged, vec![&(&b * &seq) * &Dim::from(64i64)]);
        assert_eq!(s, vec![dims(&[1])]);
        // A transposed read does not merge.
        let mut t = vec![vec![Dim::from(1i64), b.clone(), &b * &seq]];
        assert_eq!(normalize(&shape, &mut t).len(), 3);
    }
}
