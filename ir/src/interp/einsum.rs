//! General einsum: labels repeated within one input take its diagonal, labels missing from
//! the output are summed, size-1 axes broadcast. Evaluated as one loop over every label's
//! range, accumulating in the element type (halves arrive widened to f32).

use super::num::{flat, num_match, strides, tensor, Num};
use super::{check_alloc, op_err, Result};
use crate::{EinsumSpec, Op, Tensor};
use ndarray::ArrayViewD;
use std::collections::BTreeMap;

/// Evaluates the einsum `spec` on `inputs` (all of one dtype).
pub(crate) fn einsum(op: &Op, spec: &EinsumSpec, inputs: &[Tensor]) -> Result<Tensor> {
    if spec.inputs.len() != inputs.len() || inputs.is_empty() {
        return Err(op_err(
            op,
            format!(
                "the equation has {} inputs, got {}",
                spec.inputs.len(),
                inputs.len()
            ),
        ));
    }
    let sizes = label_sizes(op, spec, inputs)?;
    num_match!(op, &inputs[0], a => {
        let mut arrays = vec![a.view()];
        for t in &inputs[1..] {
            arrays.push(super::num::same(op, t)?);
        }
        einsum_typed(op, spec, &sizes, &arrays)
    })
}

/// The size of every label, checked for consistency (size 1 broadcasts).
fn label_sizes(op: &Op, spec: &EinsumSpec, inputs: &[Tensor]) -> Result<BTreeMap<char, usize>> {
    let mut sizes = BTreeMap::new();
    for (labels, t) in spec.inputs.iter().zip(inputs) {
        if labels.len() != t.rank() {
            return Err(op_err(
                op,
                format!("labels {labels:?} for an input of rank {}", t.rank()),
            ));
        }
        for (&l, &d) in labels.iter().zip(t.shape()) {
            let s = sizes.entry(l).or_insert(d);
            if *s == 1 {
                *s = d;
            } else if d != 1 && d != *s {
                return Err(op_err(op, format!("label `{l}` has sizes {} and {d}", *s)));
            }
        }
    }
    let mut seen = Vec::new();
    for l in &spec.output {
        if !sizes.contains_key(l) || seen.contains(l) {
            return Err(op_err(
                op,
                format!("output label `{l}` is repeated or not in any input"),
            ));
        }
        seen.push(*l);
    }
    Ok(sizes)
}

fn einsum_typed<T: Num>(
    op: &Op,
    spec: &EinsumSpec,
    sizes: &BTreeMap<char, usize>,
    arrays: &[ArrayViewD<'_, T>],
) -> Result<Tensor> {
    // Output labels first, then the summed ones.
    let mut labels = spec.output.clone();
    labels.extend(sizes.keys().filter(|l| !spec.output.contains(l)));
    let dims: Vec<usize> = labels.iter().map(|l| sizes[l]).collect();
    let out_shape: Vec<usize> = dims[..spec.output.len()].to_vec();
    check_alloc(op, &out_shape)?;
    let mut out_strides = strides(&out_shape);
    out_strides.resize(labels.len(), 0);
    let data: Vec<Vec<T>> = arrays.iter().map(|a| flat(a)).collect();
    let in_strides: Vec<Vec<usize>> = arrays
        .iter()
        .zip(&spec.inputs)
        .map(|(a, ls)| label_strides(a.shape(), ls, &labels))
        .collect();
    let mut out = vec![T::default(); out_shape.iter().product()];
    if dims.contains(&0) {
        return tensor(op, out, &out_shape);
    }
    let mut counter = vec![0usize; labels.len()];
    loop {
        let mut p = T::one();
        for (d, st) in data.iter().zip(&in_strides) {
            p = p.mul(d[counter.iter().zip(st).map(|(c, s)| c * s).sum::<usize>()]);
        }
        let o: usize = counter.iter().zip(&out_strides).map(|(c, s)| c * s).sum();
        out[o] = out[o].add(p);
        if !advance(&mut counter, &dims) {
            break;
        }
    }
    tensor(op, out, &out_shape)
}

/// Per label, the element stride of an input: the sum over its axes with that label (which
/// walks the diagonal of repeated labels), zero for size-1 axes that broadcast.
fn label_strides(shape: &[usize], axis_labels: &[char], labels: &[char]) -> Vec<usize> {
    let st = strides(shape);
    labels
        .iter()
        .map(|l| {
            axis_labels
                .iter()
                .enumerate()
                .filter(|&(i, a)| a == l && shape[i] != 1)
                .map(|(i, _)| st[i])
                .sum()
        })
        .collect()
}

/// Steps a row-major odometer; false once it wraps around.
fn advance(counter: &mut [usize], dims: &[usize]) -> bool {
    for i in (0..counter.len()).rev() {
        counter[i] += 1;
        if counter[i] < dims[i] {
            return true;
        }
        counter[i] = 0;
    }
    false
}

#[cfg(test)]
mod tests {
    use crate::interp::eval_op;
    use crate::interp::test_util::iota;
    use crate::{Bindings, EinsumSpec, Op, Tensor};

    fn es(eq: &str, inputs: &[Tensor]) -> Tensor {
        let (lhs, out) = eq.split_once("->").unwrap();
        let spec = EinsumSpec {
            inputs: lhs.split(',').map(|s| s.chars().collect()).collect(),
            output: out.chars().collect(),
        };
        eval_op(&Op::Einsum(spec), inputs, &Bindings::new())
            .unwrap()
            .remove(0)
    }

    #[test]
    fn matmul_transpose_and_sum() {
        let a = iota(&[2, 3]);
        let b = iota(&[3, 2]);
        assert_eq!(
            es("ij,jk->ik", &[a.clone(), b]).to_i64_vec(),
            vec![10, 13, 28, 40]
        );
        assert_eq!(
            es("ij->ji", std::slice::from_ref(&a)).to_i64_vec(),
            vec![0, 3, 1, 4, 2, 5]
        );
        assert_eq!(es("ij->", std::slice::from_ref(&a)).to_i64_vec(), vec![15]);
        assert_eq!(es("ij,ij->i", &[a.clone(), a]).to_i64_vec(), vec![5, 50]);
    }

    #[test]
    fn diagonal_trace_and_outer() {
        let m = iota(&[3, 3]);
        assert_eq!(
            es("ii->i", std::slice::from_ref(&m)).to_i64_vec(),
            vec![0, 4, 8]
        );
        assert_eq!(es("ii->", &[m]).to_i64_vec(), vec![12]);
        let v = iota(&[2]);
        assert_eq!(
            es("i,j->ij", &[v.clone(), v]).to_i64_vec(),
            vec![0, 0, 0, 1]
        );
    }

    #[test]
    fn batched_float_and_errors() {
        let q = Tensor::from_vec(vec![1.0f32; 2 * 3 * 4], &[2, 3, 4]).unwrap();
        let k = Tensor::from_vec(vec![0.5f32; 2 * 5 * 4], &[2, 5, 4]).unwrap();
        let s = es("bqd,bkd->bqk", &[q.clone(), k.clone()]);
        assert_eq!(s.shape(), &[2, 3, 5]);
        assert!(s.to_f64_vec().iter().all(|&v| v == 2.0));
        let spec = EinsumSpec {
            inputs: vec![vec!['a', 'b'], vec!['a', 'b']],
            output: vec!['a'],
        };
        assert!(eval_op(
            &Op::Einsum(spec),
            &[iota(&[2, 3]), iota(&[3, 2])],
            &Bindings::new()
        )
        .is_err());
    }
}
