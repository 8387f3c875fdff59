//! Tests for the passes and the pass manager.
//!
//! Graphs are built with the `Graph` API; they move to the text format once it lands.

use crate::*;
use kiln_ir::{verify, BinaryOp, DType, Dim, Graph, Op, Tensor, TensorType, UnaryOp, ValueId};

fn f32s(shape: &[usize]) -> TensorType {
    TensorType::fixed(DType::F32, shape)
}

fn konst(g: &mut Graph, t: Tensor) -> ValueId {
    g.add_node("", Op::Const(t), &[]).unwrap()[0]
}

fn node(g: &mut Graph, op: Op, inputs: &[ValueId]) -> ValueId {
    g.add_node("", op, inputs).unwrap()[0]
}

fn ops(g: &Graph) -> Vec<String> {
    g.nodes.iter().map(|n| n.op.name()).collect()
}

fn run(pass: &dyn Pass, g: &mut Graph) -> usize {
    let changes = pass.run(g).unwrap().changes;
    verify(g).unwrap();
    changes
}

fn add() -> Op {
    Op::Binary(BinaryOp::Add)
}

#[test]
fn dce_removes_unused_chains_and_keeps_inputs() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32s(&[2]));
    let unused = g.add_input("unused", f32s(&[2]));
    let dead = node(&mut g, Op::Unary(UnaryOp::Exp), &[x]);
    node(&mut g, Op::Unary(UnaryOp::Neg), &[dead]);
    let y = node(&mut g, Op::Unary(UnaryOp::Relu), &[x]);
    g.add_output("y", y);
    assert_eq!(run(&Dce, &mut g), 2);
    assert_eq!(ops(&g), ["relu"]);
    assert_eq!(
        (g.inputs.len(), g.values.len(), g.outputs[0].1),
        (2, 3, ValueId(2))
    );
    let _ = unused;
    assert_eq!(run(&Dce, &mut g), 0);
}

#[test]
fn cse_merges_equal_ops_on_equal_inputs() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32s(&[2]));
    let c1 = konst(&mut g, Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap());
    let c2 = konst(&mut g, Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap());
    let c3 = konst(&mut g, Tensor::from_vec(vec![1.0f32, 3.0], &[2]).unwrap());
    let a = node(&mut g, add(), &[x, c1]);
    let b = node(&mut g, add(), &[x, c2]);
    let c = node(&mut g, add(), &[x, c3]);
    let s = node(&mut g, Op::Binary(BinaryOp::Mul), &[a, b]);
    let t = node(&mut g, Op::Binary(BinaryOp::Mul), &[b, c]);
    g.add_output("s", s);
    g.add_output("t", t);
    g.add_output("b", b);
    // c2 = c1, then b = a; the muls differ (a*a vs a*c).
    assert_eq!(run(&Cse, &mut g), 2);
    assert_eq!(ops(&g), ["const", "const", "add", "add", "mul", "mul"]);
    assert_eq!(g.nodes[4].inputs, [ValueId(3), ValueId(3)]);
    assert_eq!(g.outputs[2].1, ValueId(3));
    assert_eq!(run(&Cse, &mut g), 0);
}

#[test]
fn fold_shapes_evaluates_symbolic_shape_arithmetic() {
    let mut g = Graph::new("g");
    let x = g.add_input(
        "x",
        TensorType::new(DType::F32, vec![Dim::sym("b"), Dim::from(3i64)]),
    );
    let shape = node(&mut g, Op::ShapeOf, &[x]);
    let zero = konst(&mut g, Tensor::scalar(0i64));
    let b = node(&mut g, Op::Gather { axis: 0 }, &[shape, zero]);
    let two = konst(&mut g, Tensor::scalar(2i64));
    let b2 = node(&mut g, Op::Binary(BinaryOp::Mul), &[b, two]);
    let one = konst(&mut g, Tensor::scalar(1i64));
    let three = node(&mut g, Op::Gather { axis: 0 }, &[shape, one]);
    g.add_output("b2", b2);
    g.add_output("three", three);
    assert_eq!(run(&FoldShapes, &mut g), 4);
    let b2_op = &g.nodes[4].op;
    assert_eq!(
        *b2_op,
        Op::ShapeValue {
            dims: vec!["2*b".parse().unwrap()],
            scalar: true
        }
    );
    assert_eq!(g.nodes[6].op, Op::Const(Tensor::scalar(3i64)));
    assert_eq!(run(&FoldShapes, &mut g), 0);
}

#[test]
fn fold_shapes_turns_constant_shapes_into_consts() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32s(&[4, 5]));
    let s = node(&mut g, Op::ShapeOf, &[x]);
    let v = node(
        &mut g,
        Op::ShapeValue {
            dims: vec![Dim::from(7i64)],
            scalar: false,
        },
        &[],
    );
    let n = node(
        &mut g,
        Op::ShapeValue {
            dims: vec![Dim::sym("n")],
            scalar: false,
        },
        &[],
    );
    let c = node(&mut g, Op::Concat { axis: 0 }, &[s, v, n]);
    g.add_output("c", c);
    assert_eq!(run(&FoldShapes, &mut g), 3);
    assert_eq!(
        g.nodes[0].op,
        Op::Const(Tensor::from_vec(vec![4i64, 5], &[2]).unwrap())
    );
    assert_eq!(
        g.nodes[1].op,
        Op::Const(Tensor::from_vec(vec![7i64], &[1]).unwrap())
    );
    let dims = vec![
        Dim::from(4i64),
        Dim::from(5i64),
        Dim::from(7i64),
        Dim::sym("n"),
    ];
    assert_eq!(
        g.nodes[3].op,
        Op::ShapeValue {
            dims,
            scalar: false
        }
    );
}

#[test]
fn fold_constants_replaces_nodes_by_their_values() {
    let mut g = Graph::new("g");
    let x = g.add_input("x", f32s(&[3]));
    let a = konst(
        &mut g,
        Tensor::from_vec(vec![3.0f32, 1.0, 2.0], &[3]).unwrap(),
    );
    let b = g.add_node("double", add(), &[a, a]).unwrap()[0];
    let y = node(&mut g, add(), &[x, b]);
    g.add_output("y", y);
    assert_eq!(run(&FoldConstants, &mut g), 1);
    assert_eq!(ops(&g), ["const", "const", "add"]);
    assert_eq!(
        g.nodes[1].op,
        Op::Const(Tensor::from_vec(vec![6.0f32, 2.0, 4.0], &[3]).unwrap())
    );
    assert_eq!(g.nodes[1].name, "double");
    assert_eq!(run(&FoldConstants, &mut g), 0);
}

#[test]
fn fold_constants_splits_multi_output_nodes() {
    let mut g = Graph::new("g");
    let a = konst(
        &mut g,
        Tensor::from_vec(vec![6.0f32, 2.0, 4.0], &[3]).unwrap(),
    );
    let top = g
        .add_node(
            "top",
            Op::TopK {
                axis: 0,
                k: 2,
                largest: true,
                sorted: true,
            },
            &[a],
        )
        .unwrap();
    g.add_output("vals", top[0]);
    g.add_output("idx", top[1]);
    assert_eq!(run(&FoldConstants, &mut g), 1);
    assert_eq!(ops(&g), ["const", "const", "const"]);
    assert_eq!(
        g.nodes[1].op,
        Op::Const(Tensor::from_vec(vec![6.0f32, 4.0], &[2]).unwrap())
    );
    assert_eq!(
        g.nodes[2].op,
        Op::Const(Tensor::from_vec(vec![0i64, 2], &[2]).unwrap())
    );
    assert_eq!(
        (g.nodes[2].name.as_str(), g.nodes[2].outputs[0]),
        ("top", ValueId(2))
    );
}

#[test]
fn fold_constants_leaves_failing_ops_for_run_time() {
    let mut g = Graph::new("g");
    let data = konst(&mut g, Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap());
    let idx = konst(&mut g, Tensor::from_vec(vec![5i64], &[1]).unwrap());
    let out = node(&mut g, Op::Gather { axis: 0 }, &[data, idx]);
    g.add_output("out", out);
    assert_eq!(run(&FoldConstants, &mut g), 0);
    assert_eq!(ops(&g), ["const", "const", "gather"]);
}

/// A graph with a symbolic shape chain and dead, duplicated work.
fn messy() -> Graph {
    let mut g = Graph::new("g");
    let x = g.add_input(
        "x",
        TensorType::new(DType::F32, vec![Dim::sym("b"), Dim::from(4i64)]),
    );
    let s = node(&mut g, Op::ShapeOf, &[x]);
    let k = konst(&mut g, Tensor::scalar(1i64));
    let four = node(&mut g, Op::Gather { axis: 0 }, &[s, k]);
    let f = node(&mut g, Op::Cast { to: DType::F32 }, &[four]);
    let e1 = node(&mut g, Op::Unary(UnaryOp::Exp), &[x]);
    let e2 = node(&mut g, Op::Unary(UnaryOp::Exp), &[x]);
    let sum = node(&mut g, add(), &[e1, e2]);
    let y = node(&mut g, Op::Binary(BinaryOp::Mul), &[sum, f]);
    g.add_output("y", y);
    g
}

#[test]
fn default_pipeline_reaches_a_fixpoint() {
    let mut g = messy();
    let opts = RunOptions {
        stop_after: None,
        verify: true,
    };
    let report = PassManager::default_pipeline()
        .run_limited(&mut g, &opts, None)
        .unwrap();
    assert_eq!(ops(&g), ["const", "exp", "add", "mul"]);
    assert_eq!(g.nodes[0].op, Op::Const(Tensor::scalar(4.0f32)));
    let names: Vec<&str> = report.passes.iter().map(|r| r.name).collect();
    assert_eq!(
        &names[..6],
        [
            "fold-shapes",
            "fold-constants",
            "cse",
            "fuse",
            "merge-linears",
            "dce"
        ]
    );
    assert_eq!(report.passes.last().unwrap().report.changes, 0);
    assert!(report.to_string().starts_with("fold-shapes      round 1"));
}

#[test]
fn stop_after_and_bisect_cut_the_pipeline() {
    let pm = PassManager::default_pipeline();
    let mut g = messy();
    let opts = RunOptions {
        stop_after: Some("fold-constants".into()),
        verify: true,
    };
    let report = pm.run_limited(&mut g, &opts, None).unwrap();
    assert_eq!(report.passes.len(), 2);
    assert!(
        ops(&g).contains(&"exp".to_string()) && ops(&g).iter().filter(|o| *o == "exp").count() == 2
    );

    let mut g = messy();
    let report = pm
        .run_limited(&mut g, &RunOptions::default(), Some(1))
        .unwrap();
    assert_eq!((report.passes.len(), report.bisect_limit), (1, Some(1)));
    assert!(report
        .to_string()
        .ends_with("stopped by KILN_PASS_BISECT=1\n"));

    let opts = RunOptions {
        stop_after: Some("dce".into()),
        verify: false,
    };
    let err = PassManager::from_names(&["cse"])
        .unwrap()
        .run_limited(&mut g, &opts, None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot stop after `dce`: the pipeline runs cse"
    );
}

#[test]
fn unknown_pass_names_list_the_valid_ones() {
    let err = PassManager::from_names(&["dce", "nope"]).err().unwrap();
    assert_eq!(
        err.to_string(),
        "unknown pass `nope`; valid passes: fold-constants, fold-shapes, cse, dce, fuse, merge-linears"
    );
    assert_eq!(
        PassManager::from_names(&["dce", "cse"]).unwrap().names(),
        ["dce", "cse"]
    );
}

/// Breaks the graph on purpose: retypes the first node's output.
struct Breaker;

impl Pass for Breaker {
    fn name(&self) -> &'static str {
        "breaker"
    }
    fn run(&self, g: &mut Graph) -> Result<PassReport, PassError> {
        let o = g.nodes[0].outputs[0];
        g.values[o.index()] = f32s(&[9]);
        Ok(PassReport::changes(1))
    }
}

#[test]
fn verification_names_the_pass_that_broke_the_graph() {
    let pm = PassManager {
        passes: vec![Box::new(Cse), Box::new(Breaker)],
        max_rounds: 1,
    };
    let mut g = messy();
    let opts = RunOptions {
        stop_after: None,
        verify: true,
    };
    let err = pm.run_limited(&mut g, &opts, None).unwrap_err();
    assert_eq!(err.to_string(), "after pass breaker: node %1 (shape_of): output %1 is declared f32[9] but inference gives i64[2]");
    let mut g = messy();
    g.values[1] = f32s(&[9]);
    let err = PassManager::default_pipeline()
        .run_limited(&mut g, &opts, None)
        .unwrap_err();
    assert!(err
        .to_string()
        .starts_with("before passes: node %1 (shape_of)"));
}
