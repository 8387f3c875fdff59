//! Matching named input tensors to a graph's declared inputs, with errors that name the input.
//!
//! The interpreter validates too; checking here first gives the same message whichever
//! backend runs, and catches names the caller misspelled, which positional backends cannot.

use crate::Error;
use kiln_ir::{Bindings, Graph, Tensor, TensorType};
use std::collections::BTreeMap;

/// The tensors in graph-input order, after checking names, dtypes, ranks and that every
/// symbol takes one value across all inputs.
pub(crate) fn order_inputs(
    g: &Graph,
    inputs: &BTreeMap<String, Tensor>,
) -> Result<Vec<Tensor>, Error> {
    if let Some(extra) = inputs
        .keys()
        .find(|k| !g.inputs.iter().any(|(n, _)| n == *k))
    {
        let names: Vec<&str> = g.inputs.iter().map(|(n, _)| n.as_str()).collect();
        return Err(Error::Input {
            name: extra.clone(),
            message: format!(
                "the model has no such input (its inputs are: {})",
                names.join(", ")
            ),
        });
    }
    let mut bindings = Bindings::new();
    let mut ordered = Vec::with_capacity(g.inputs.len());
    for (name, v) in &g.inputs {
        let t = inputs.get(name).ok_or_else(|| Error::Input {
            name: name.clone(),
            message: "missing".into(),
        })?;
        check_input(g.value_type(*v), t, &mut bindings).map_err(|message| Error::Input {
            name: name.clone(),
            message,
        })?;
        ordered.push(t.clone());
    }
    Ok(ordered)
}

fn check_input(ty: &TensorType, t: &Tensor, bindings: &mut Bindings) -> Result<(), String> {
    let got = || format!("expected {ty}, got {}{:?}", t.dtype(), t.shape());
    if ty.dtype != t.dtype() || ty.rank() != t.rank() {
        return Err(got());
    }
    for (axis, (dim, &size)) in ty.shape.iter().zip(t.shape()).enumerate() {
        let size = size as i64;
        if let Some(sym) = dim.as_sym() {
            match bindings.get(sym) {
                Some(&bound) if bound != size => {
                    return Err(format!(
                        "{}: axis {axis} is {size} but `{sym}` is {bound} from an earlier input",
                        got()
                    ))
                }
                Some(_) => {}
                None => {
                    bindings.insert(sym.to_string(), size);
                }
            }
        } else if let Some(want) = dim.eval(bindings) {
            if want != size {
                return Err(format!("{}: axis {axis} must be {dim} = {want}", got()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{DType, Dim};

    fn graph() -> Graph {
        let mut g = Graph::new("two");
        let bs = vec![Dim::sym("batch"), Dim::sym("seq")];
        g.add_input("ids", TensorType::new(DType::I64, bs.clone()));
        g.add_input(
            "x",
            TensorType::new(DType::F32, vec![Dim::sym("batch"), Dim::from(4i64)]),
        );
        g
    }

    fn inputs(pairs: Vec<(&str, Tensor)>) -> BTreeMap<String, Tensor> {
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    fn message(r: Result<Vec<Tensor>, Error>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn accepts_consistent_inputs_in_graph_order() {
        let ids = Tensor::zeros(DType::I64, &[2, 5]).unwrap();
        let x = Tensor::zeros(DType::F32, &[2, 4]).unwrap();
        let got = order_inputs(
            &graph(),
            &inputs(vec![("x", x.clone()), ("ids", ids.clone())]),
        )
        .unwrap();
        assert_eq!(got, vec![ids, x]);
    }

    #[test]
    fn errors_name_the_input() {
        let ids = Tensor::zeros(DType::I64, &[2, 5]).unwrap();
        let missing = message(order_inputs(&graph(), &inputs(vec![("ids", ids.clone())])));
        assert_eq!(missing, "input `x`: missing");
        let wrong_dtype = Tensor::zeros(DType::I32, &[2, 4]).unwrap();
        let m = message(order_inputs(
            &graph(),
            &inputs(vec![("ids", ids.clone()), ("x", wrong_dtype)]),
        ));
        assert!(
            m.starts_with("input `x`: expected f32[batch, 4], got i32"),
            "{m}"
        );
        let wrong_batch = Tensor::zeros(DType::F32, &[3, 4]).unwrap();
        let m = message(order_inputs(
            &graph(),
            &inputs(vec![("ids", ids.clone()), ("x", wrong_batch)]),
        ));
        assert!(m.contains("`batch` is 2"), "{m}");
        let wrong_rank = Tensor::zeros(DType::F32, &[2]).unwrap();
        let m = message(order_inputs(
            &graph(),
            &inputs(vec![("ids", ids.clone()), ("x", wrong_rank)]),
        ));
        assert!(m.starts_with("input `x`: expected"), "{m}");
        let x = Tensor::zeros(DType::F32, &[2, 4]).unwrap();
        let m = message(order_inputs(
            &graph(),
            &inputs(vec![("ids", ids), ("x", x.clone()), ("y", x)]),
        ));
        assert!(
            m.starts_with("input `y`: the model has no such input"),
            "{m}"
        );
    }
}
