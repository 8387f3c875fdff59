//! Differential tests of the native rotary embedding (two loop nests, one per half) against
//! the interpreter's decomposition: odd leading shapes, cos/sin of every broadcast shape,
//! one vs two threads bit for bit.

use kiln_cpu::{CompiledModel, Options};
use kiln_ir::{interp, DType, Graph, Op, Tensor, TensorType};

fn tensor(seed: u64, shape: &[usize]) -> Tensor {
    let mut state = seed | 1;
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

fn check(x_shape: &[usize], table: &[usize]) {
    let mut g = Graph::new("rotary");
    let x = g.add_input("x", TensorType::fixed(DType::F32, x_shape));
    let c = g.add_input("cos", TensorType::fixed(DType::F32, table));
    let s = g.add_input("sin", TensorType::fixed(DType::F32, table));
    let y = g.add_node("rope", Op::Rotary, &[x, c, s]).unwrap()[0];
    g.add_output("y", y);
    let inputs = vec![tensor(1, x_shape), tensor(2, table), tensor(3, table)];
    let want = interp::run(&g, &inputs).unwrap().remove(0);
    let one = CompiledModel::new(
        g.clone(),
        &Options {
            threads: 1,
            ..Options::default()
        },
    )
    .unwrap();
    let two = CompiledModel::new(
        g,
        &Options {
            threads: 2,
            ..Options::default()
        },
    )
    .unwrap();
    let got = one.run(&inputs).unwrap().remove(0);
    let got2 = two.run(&inputs).unwrap().remove(0);
    let what = format!("x {x_shape:?}, tables {table:?}");
    for (i, (w, o)) in want.to_f64_vec().iter().zip(got.to_f64_vec()).enumerate() {
        assert!(
            (w - o).abs() <= 1e-6,
            "{what}: element {i}: want {w}, got {o}"
        );
    }
    assert_eq!(
        got.to_f64_vec(),
        got2.to_f64_vec(),
        "{what}: 1 vs 2 threads"
    );
}

#[test]
fn halves_and_broadcast_tables() {
    let x = [2, 3, 5, 8];
    for table in [
        vec![1, 1, 5, 8],
        vec![5, 8],
        vec![2, 3, 5, 8],
        vec![8],
        vec![1],
    ] {
        check(&x, &table);
    }
    check(&[7, 2], &[7, 2]);
    check(&[1, 64], &[1, 64]);
}
