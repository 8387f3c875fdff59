//! Iteration spaces in canonical form: the fewest, longest axes that walk every access the
//! same way. Loop fusion compares nests in this form, and code generators emit their loops
//! from it.

/// Drops size-1 axes and merges adjacent axes that every access walks contiguously, so the
/// loops are as few and as long as possible. Rewrites `strides` (one row per access) and
/// returns the new shape (at least one axis).
pub fn normalize(shape: &[usize], strides: &mut [Vec<isize>]) -> Vec<usize> {
    let mut out_shape: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<isize>> = vec![Vec::new(); strides.len()];
    for (d, &n) in shape.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let merge = !out_shape.is_empty()
            && strides
                .iter()
                .zip(&out_strides)
                .all(|(s, o)| *o.last().expect("same length") == s[d] * n as isize);
        if merge {
            *out_shape.last_mut().expect("non-empty") *= n;
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                *o.last_mut().expect("non-empty") = s[d];
            }
        } else {
            out_shape.push(n);
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                o.push(s[d]);
            }
        }
    }
    if out_shape.is_empty() {
        out_shape.push(1);
        out_strides.iter_mut().for_each(|o| o.push(0));
    }
    for (s, o) in strides.iter_mut().zip(out_strides) {
        *s = o;
    }
    out_shape
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn contiguous_axes_merge_and_unit_axes_drop() {
        let mut s = vec![vec![12, 4, 1], vec![0, 4, 1]];
        assert_eq!(normalize(&[2, 3, 4], &mut s), vec![2, 12]);
        assert_eq!(s, vec![vec![12, 1], vec![0, 1]]);
        let mut t = vec![vec![3, 1, 1]];
        assert_eq!(normalize(&[4, 1, 3], &mut t), vec![12]);
        let mut u = vec![vec![0]];
        assert_eq!(normalize(&[1], &mut u), vec![1]);
        assert_eq!(u, vec![vec![0]]);
    }
}
