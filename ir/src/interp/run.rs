//! Whole-graph evaluation: checks inputs against the graph's types, binds symbols from input
//! shapes, evaluates nodes in order, frees values after their last use, and checks every
//! node's outputs against the recorded types (binding fresh data-dependent symbols).

use super::{eval_op, InterpError, Result};
use crate::{check_node, Bindings, Dim, Graph, MemoryLimit, Tensor, TensorType};

/// How [`run_with`] runs.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The most bytes any one value may take; each node's outputs are checked against it
    /// before the node runs (default: [`MemoryLimit::default`], from the machine's memory).
    pub max_memory: MemoryLimit,
}

/// Evaluates `g` on `inputs` (in graph-input order) and returns its outputs in order.
///
/// ```
/// use kiln_ir::{interp::run, BinaryOp, DType, Dim, Graph, Op, Tensor, TensorType};
/// let mut g = Graph::new("double");
/// let ty = TensorType::new(DType::F32, vec![Dim::sym("n")]);
/// let x = g.add_input("x", ty.clone());
/// let y = g.push_node("".into(), Op::Binary(BinaryOp::Add), vec![x, x], vec![ty])[0];
/// g.add_output("y", y);
/// let out = run(&g, &[Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap()]).unwrap();
/// assert_eq!(out[0].to_f64_vec(), vec![2.0, 4.0]);
/// ```
pub fn run(g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    run_with(g, inputs, &RunOptions::default())
}

/// [`run`] under `opts`: before a node runs, every output whose shape is known is checked
/// against `opts.max_memory`, so an oversized value is an error naming the node.
pub fn run_with(g: &Graph, inputs: &[Tensor], opts: &RunOptions) -> Result<Vec<Tensor>> {
    if inputs.len() != g.inputs.len() {
        return Err(InterpError::InputCount {
            expected: g.inputs.len(),
            got: inputs.len(),
        });
    }
    let mut bindings = bind_inputs(g, inputs)?;
    let mut values: Vec<Option<Tensor>> = vec![None; g.values.len()];
    let mut uses = g.use_counts();
    for ((_, v), t) in g.inputs.iter().zip(inputs) {
        values[v.index()] = Some(t.clone());
    }
    for (index, node) in g.nodes.iter().enumerate() {
        let at_node = |source: InterpError| InterpError::Node {
            index,
            name: node.name.clone(),
            error: Box::new(source),
        };
        check_node(g, node, &bindings, opts.max_memory)?;
        let mut args = Vec::with_capacity(node.inputs.len());
        for v in &node.inputs {
            let t = values[v.index()].clone().ok_or_else(|| {
                at_node(InterpError::Op {
                    op: node.op.name(),
                    message: format!("input value %{} is not defined before use", v.0),
                })
            })?;
            args.push(t);
        }
        for v in &node.inputs {
            uses[v.index()] -= 1;
            if uses[v.index()] == 0 {
                values[v.index()] = None;
            }
        }
        let outs = eval_op(&node.op, &args, &bindings).map_err(at_node)?;
        drop(args);
        if outs.len() != node.outputs.len() {
            return Err(at_node(InterpError::Op {
                op: node.op.name(),
                message: format!(
                    "produced {} outputs, the node has {}",
                    outs.len(),
                    node.outputs.len()
                ),
            }));
        }
        for (output, (v, t)) in node.outputs.iter().zip(outs).enumerate() {
            let ty = g.value_type(*v);
            if !matches_and_binds(ty, &t, &mut bindings) {
                return Err(InterpError::OutputType {
                    index,
                    name: node.name.clone(),
                    op: node.op.name(),
                    output,
                    expected: ty.to_string(),
                    got: concrete(&t),
                });
            }
            if uses[v.index()] > 0 {
                values[v.index()] = Some(t);
            }
        }
    }
    g.outputs
        .iter()
        .map(|(name, v)| {
            values[v.index()].clone().ok_or_else(|| InterpError::Input {
                name: name.clone(),
                message: format!("graph output refers to undefined value %{}", v.0),
            })
        })
        .collect()
}

/// Checks each input against its declared type and binds the symbols its dims name.
fn bind_inputs(g: &Graph, inputs: &[Tensor]) -> Result<Bindings> {
    let types: Vec<TensorType> = inputs
        .iter()
        .map(|t| TensorType::fixed(t.dtype(), t.shape()))
        .collect();
    bind_input_types(g, &types)
}

/// Binds the symbols of `g`'s input shapes from the concrete types of the inputs (in
/// graph-input order): checks dtype, rank and every dim, and names the input on a mismatch.
/// Backends use it to validate inputs before running generated code.
///
/// ```
/// use kiln_ir::{interp::bind_input_types, DType, Dim, Graph, TensorType};
/// let mut g = Graph::new("g");
/// g.add_input("x", TensorType::new(DType::F32, vec![Dim::sym("n"), Dim::from(3usize)]));
/// let b = bind_input_types(&g, &[TensorType::fixed(DType::F32, &[5, 3])]).unwrap();
/// assert_eq!(b["n"], 5);
/// assert!(bind_input_types(&g, &[TensorType::fixed(DType::F32, &[5, 4])]).is_err());
/// ```
pub fn bind_input_types(g: &Graph, inputs: &[TensorType]) -> Result<Bindings> {
    if inputs.len() != g.inputs.len() {
        return Err(InterpError::InputCount {
            expected: g.inputs.len(),
            got: inputs.len(),
        });
    }
    let mut b = Bindings::new();
    for ((name, v), t) in g.inputs.iter().zip(inputs) {
        let ty = g.value_type(*v);
        let mismatch = || InterpError::Input {
            name: name.clone(),
            message: format!("expected {ty}, got {}", t),
        };
        if ty.dtype != t.dtype || ty.rank() != t.rank() {
            return Err(mismatch());
        }
        for (d, &n) in ty
            .shape
            .iter()
            .zip(t.const_shape().unwrap_or_default().iter())
        {
            if let Some(c) = d.as_const() {
                if c != n as i64 {
                    return Err(mismatch());
                }
            } else if let Some(s) = d.as_sym() {
                if let Some(&bound) = b.get(s) {
                    if bound != n as i64 {
                        return Err(InterpError::Input {
                            name: name.clone(),
                            message: format!(
                                "expected {ty}, got {}, but `{s}` is {bound} from an earlier input",
                                t
                            ),
                        });
                    }
                } else {
                    b.insert(s.to_string(), n as i64);
                }
            }
        }
    }
    for ((name, v), t) in g.inputs.iter().zip(inputs) {
        let ty = g.value_type(*v);
        for (d, &n) in ty
            .shape
            .iter()
            .zip(t.const_shape().unwrap_or_default().iter())
        {
            if d.eval(&b).is_some_and(|e| e != n as i64) {
                return Err(InterpError::Input {
                    name: name.clone(),
                    message: format!(
                        "expected {ty}, got {}: `{d}` is {} here",
                        t,
                        d.eval(&b).unwrap_or(0)
                    ),
                });
            }
        }
    }
    Ok(b)
}

/// True if `t` has the type `ty` under `b`; binds symbols that `ty` names for the first time
/// (the data-dependent dims of ops like `nonzero`). Dims that cannot be evaluated are
/// accepted.
fn matches_and_binds(ty: &TensorType, t: &Tensor, b: &mut Bindings) -> bool {
    if ty.dtype != t.dtype() || ty.rank() != t.rank() {
        return false;
    }
    ty.shape
        .iter()
        .zip(t.shape())
        .all(|(d, &n)| check_dim(d, n as i64, b))
}

fn check_dim(d: &Dim, n: i64, b: &mut Bindings) -> bool {
    match (d.eval(b), d.as_sym()) {
        (Some(v), _) => v == n,
        (None, Some(s)) => {
            b.insert(s.to_string(), n);
            true
        }
        (None, None) => true,
    }
}

/// A concrete tensor's type, written like a [`TensorType`]: `f32[2, 16]`.
fn concrete(t: &Tensor) -> String {
    TensorType::fixed(t.dtype(), t.shape()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BinaryOp, DType, Op};

    fn add_graph() -> Graph {
        let mut g = Graph::new("g");
        let (b, s) = (Dim::sym("batch"), Dim::sym("seq"));
        let x = g.add_input("x", TensorType::new(DType::F32, vec![b.clone(), s.clone()]));
        let m = g.add_input(
            "attention_mask",
            TensorType::new(DType::F32, vec![b.clone(), s.clone()]),
        );
        let y = g.push_node(
            "add".into(),
            Op::Binary(BinaryOp::Add),
            vec![x, m],
            vec![TensorType::new(DType::F32, vec![b, s])],
        );
        g.add_output("y", y[0]);
        g
    }

    #[test]
    fn runs_and_binds_symbols() {
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let out = run(&add_graph(), &[x.clone(), x]).unwrap();
        assert_eq!(out[0].to_f64_vec(), vec![2.0, 4.0, 6.0, 8.0]);
    }

    #[test]
    fn input_errors_name_the_input() {
        let x = Tensor::zeros(DType::F32, &[2, 16]).unwrap();
        let m = Tensor::zeros(DType::I64, &[2, 16]).unwrap();
        let e = run(&add_graph(), &[x.clone(), m]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "input `attention_mask`: expected f32[batch, seq], got i64[2, 16]"
        );
        let m = Tensor::zeros(DType::F32, &[2, 8]).unwrap();
        let e = run(&add_graph(), &[x.clone(), m]).unwrap_err();
        assert!(
            e.to_string().contains("`seq` is 16 from an earlier input"),
            "{e}"
        );
        let e = run(&add_graph(), &[x]).unwrap_err();
        assert_eq!(
            e,
            InterpError::InputCount {
                expected: 2,
                got: 1
            }
        );
    }

    #[test]
    fn compound_dims_are_checked_after_binding() {
        let mut g = Graph::new("g");
        let s = Dim::sym("seq");
        let a = g.add_input(
            "a",
            TensorType::new(DType::F32, vec![s.clone() + Dim::from(1i64)]),
        );
        let b = g.add_input("b", TensorType::new(DType::F32, vec![s]));
        g.add_output("a", a);
        g.add_output("b", b);
        let t = |n| Tensor::zeros(DType::F32, &[n]).unwrap();
        assert!(run(&g, &[t(4), t(3)]).is_ok());
        let e = run(&g, &[t(4), t(4)]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("input `a`: expected f32[seq+1], got f32[4]"),
            "{e}"
        );
    }

    #[test]
    fn wrong_recorded_type_is_reported() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[2]));
        let y = g.push_node(
            "neg".into(),
            Op::Binary(BinaryOp::Sub),
            vec![x, x],
            vec![TensorType::fixed(DType::F32, &[3])],
        );
        g.add_output("y", y[0]);
        let e = run(&g, &[Tensor::zeros(DType::F32, &[2]).unwrap()]).unwrap_err();
        assert!(
            e.to_string()
                .contains("output 0 is f32[2], but the graph says f32[3]"),
            "{e}"
        );
    }

    #[test]
    fn op_errors_name_the_node() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[2]));
        let y = g.push_node(
            "bad".into(),
            Op::Binary(BinaryOp::BitAnd),
            vec![x, x],
            vec![TensorType::fixed(DType::F32, &[2])],
        );
        g.add_output("y", y[0]);
        let e = run(&g, &[Tensor::zeros(DType::F32, &[2]).unwrap()]).unwrap_err();
        assert_eq!(e.to_string(), "node `bad` (bit_and): unsupported dtype f32");
    }
}
