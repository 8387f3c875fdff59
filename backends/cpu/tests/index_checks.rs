//! Data-dependent indices in generated code: in-range ones (negative counting from the end)
//! give the interpreter's bits; any other stops the run with an error naming the node and
//! the index value, on one thread and split over two; a constant one out of range is refused
//! when the model is compiled. Nothing is clamped or wrapped.

use kiln_cpu::{CompiledModel, Options};
use kiln_ir::{interp, DType, Graph, Op, ReduceKind, ScatterReduction, Tensor, TensorType};

/// `gather(x, idx)` along axis 0, `x: f32[rows, cols]`, `idx: i64[n]` (both inputs), then
/// `+ 1` so the gather is fused into its reader.
fn gather_graph(rows: usize, cols: usize, n: usize, idx_dtype: DType) -> Graph {
    let mut g = Graph::new("gather");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[rows, cols]));
    let i = g.add_input("idx", TensorType::fixed(idx_dtype, &[n]));
    let y = g
        .add_node("lookup", Op::Gather { axis: 0 }, &[x, i])
        .unwrap()[0];
    let one = g
        .add_node("one", Op::Const(Tensor::scalar(1.0f32)), &[])
        .unwrap()[0];
    let z = g
        .add_node("plus", Op::Binary(kiln_ir::BinaryOp::Add), &[y, one])
        .unwrap()[0];
    g.add_output("z", z);
    g
}

fn table(rows: usize, cols: usize) -> Tensor {
    let v: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5).collect();
    Tensor::from_vec(v, &[rows, cols]).unwrap()
}

fn run(g: &Graph, inputs: &[Tensor], threads: usize) -> Result<Vec<Tensor>, String> {
    let model = CompiledModel::new(
        g.clone(),
        &Options {
            threads,
            ..Options::default()
        },
    )
    .map_err(|e| e.to_string())?;
    model.run(inputs).map_err(|e| e.to_string())
}

fn bits(ts: &[Tensor]) -> Vec<Vec<u64>> {
    ts.iter()
        .map(|t| t.to_f64_vec().iter().map(|x| x.to_bits()).collect())
        .collect()
}

#[test]
fn in_range_and_negative_indices_match_the_interpreter() {
    for threads in [1, 2] {
        let g = gather_graph(5, 3, 6, DType::I64);
        let idx = Tensor::from_vec(vec![0i64, 4, -1, -5, 2, 3], &[6]).unwrap();
        let inputs = [table(5, 3), idx];
        let want = interp::run(&g, &inputs).unwrap();
        let got = run(&g, &inputs, threads).unwrap();
        assert_eq!(bits(&want), bits(&got), "threads {threads}");
    }
}

#[test]
fn out_of_range_data_indices_stop_the_run_and_name_node_and_index() {
    let bad: [i64; 5] = [5, -6, 1 << 40, i64::MIN, i64::MAX];
    for threads in [1, 2] {
        for &b in &bad {
            let g = gather_graph(5, 3, 4, DType::I64);
            let idx = Tensor::from_vec(vec![0i64, 1, b, 2], &[4]).unwrap();
            let err = run(&g, &[table(5, 3), idx], threads).unwrap_err();
            assert!(
                err.contains("`lookup`") && err.contains(&format!("index {b} ")),
                "index {b}: {err}"
            );
            assert!(err.contains("dim of size 5"), "{err}");
        }
    }
}

#[test]
fn thirty_two_bit_indices_are_checked_too() {
    let g = gather_graph(5, 3, 2, DType::I32);
    let idx = Tensor::from_vec(vec![1i32, 7], &[2]).unwrap();
    let err = run(&g, &[table(5, 3), idx], 1).unwrap_err();
    assert!(err.contains("index 7 is out of range"), "{err}");
    let ok = Tensor::from_vec(vec![1i32, -2], &[2]).unwrap();
    let inputs = [table(5, 3), ok];
    assert_eq!(
        bits(&interp::run(&g, &inputs).unwrap()),
        bits(&run(&g, &inputs, 1).unwrap())
    );
}

/// Large enough that the kernel is split over two threads: the error is the first chunk's,
/// whichever thread finishes first.
#[test]
fn split_kernels_report_the_first_bad_chunk() {
    let (rows, cols, n) = (64, 256, 512);
    let g = gather_graph(rows, cols, n, DType::I64);
    let mut ids: Vec<i64> = (0..n as i64).map(|i| i % rows as i64).collect();
    ids[n - 3] = 900; // in the second half
    let idx = Tensor::from_vec(ids.clone(), &[n]).unwrap();
    let err = run(&g, &[table(rows, cols), idx], 2).unwrap_err();
    assert!(err.contains("index 900 "), "{err}");
    ids[5] = -100; // now the first half has one too
    for _ in 0..20 {
        let idx = Tensor::from_vec(ids.clone(), &[n]).unwrap();
        let err = run(&g, &[table(rows, cols), idx], 2).unwrap_err();
        assert!(err.contains("index -100 "), "{err}");
    }
}

/// The gather feeds a reduction and a layer norm, so loop fusion puts it inside their
/// loops, where its index is checked once per row.
#[test]
fn fused_gathers_in_reductions_and_rows_are_checked() {
    let mut g = Graph::new("fused");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[5, 8]));
    let i = g.add_input("idx", TensorType::fixed(DType::I64, &[3]));
    let y = g.add_node("emb", Op::Gather { axis: 0 }, &[x, i]).unwrap()[0];
    let s = g
        .add_node(
            "sum",
            Op::Reduce {
                kind: ReduceKind::Sum,
                axes: vec![1],
                keep_dims: false,
            },
            &[y],
        )
        .unwrap()[0];
    let scale = Tensor::from_vec(vec![1.5f32; 8], &[8]).unwrap();
    let bias = Tensor::from_vec(vec![0.25f32; 8], &[8]).unwrap();
    let one = g.add_node("scale", Op::Const(scale), &[]).unwrap()[0];
    let zero = g.add_node("bias", Op::Const(bias), &[]).unwrap()[0];
    let n = g
        .add_node("norm", Op::LayerNorm { epsilon: 1e-5 }, &[y, one, zero])
        .unwrap()[0];
    g.add_output("s", s);
    g.add_output("n", n);
    let ok = Tensor::from_vec(vec![4i64, -1, 0], &[3]).unwrap();
    let inputs = [table(5, 8), ok];
    let want = interp::run(&g, &inputs).unwrap();
    assert_eq!(bits(&want), bits(&run(&g, &inputs, 1).unwrap()));
    let bad = Tensor::from_vec(vec![4i64, 5, 0], &[3]).unwrap();
    let err = run(&g, &[table(5, 8), bad], 1).unwrap_err();
    assert!(err.contains("`emb`") && err.contains("index 5 "), "{err}");
}

#[test]
fn other_indexing_ops_are_checked() {
    let data = || table(3, 4);
    let cases: Vec<(Op, Tensor, Option<Tensor>)> = vec![
        (
            Op::GatherElements { axis: 1 },
            Tensor::from_vec(vec![0i64, 1, 4, 3, 0, 0], &[3, 2]).unwrap(),
            None,
        ),
        (
            Op::GatherNd { batch_dims: 0 },
            Tensor::from_vec(vec![0i64, 1, 3, 0], &[2, 2]).unwrap(),
            None,
        ),
        (
            Op::ScatterElements {
                axis: 0,
                reduction: ScatterReduction::None,
            },
            Tensor::from_vec(vec![0i64, 1, -4, 2], &[1, 4]).unwrap(),
            Some(Tensor::from_vec(vec![9.0f32; 4], &[1, 4]).unwrap()),
        ),
        (
            Op::ScatterNd {
                reduction: ScatterReduction::Add,
            },
            Tensor::from_vec(vec![1i64, 3], &[2, 1]).unwrap(),
            Some(Tensor::from_vec(vec![1.0f32; 8], &[2, 4]).unwrap()),
        ),
    ];
    for (op, idx, updates) in cases {
        let name = op.name();
        let mut g = Graph::new("indexing");
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[3, 4]));
        let i = g.add_input("idx", TensorType::fixed(DType::I64, idx.shape()));
        let mut args = vec![x, i];
        let mut inputs = vec![data(), idx];
        if let Some(u) = updates {
            args.push(g.add_input("u", TensorType::fixed(DType::F32, u.shape())));
            inputs.push(u);
        }
        let y = g.add_node("site", op, &args).unwrap()[0];
        g.add_output("y", y);
        assert!(
            interp::run(&g, &inputs).is_err(),
            "{name}: interpreter accepted"
        );
        let err = run(&g, &inputs, 1).unwrap_err();
        assert!(
            err.contains("`site`") && err.contains("is out of range"),
            "{name}: {err}"
        );
    }
}

#[test]
fn constant_indices_out_of_range_are_refused_at_compile_time() {
    let mut g = Graph::new("const");
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[3, 2]));
    let idx = Tensor::from_vec(vec![7i64], &[1]).unwrap();
    let i = g.add_node("ids", Op::Const(idx), &[]).unwrap()[0];
    let y = g.add_node("y", Op::Gather { axis: 0 }, &[x, i]).unwrap()[0];
    g.add_output("y", y);
    let err = CompiledModel::new(
        g,
        &Options {
            threads: 1,
            ..Options::default()
        },
    )
    .err()
    .expect("compiling must fail")
    .to_string();
    assert!(
        err.contains("node `y` (gather): constant index 7 is out of range"),
        "{err}"
    );
}
