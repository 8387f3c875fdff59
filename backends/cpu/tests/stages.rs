//! Data-dependent shapes: the ops after a `nonzero` run compiled at the size it found.

use kiln_cpu::{CompiledModel, Options};
use kiln_ir::{interp, parse, Tensor};

#[test]
fn ops_after_a_data_dependent_op_run_compiled_at_its_size() {
    let g = parse(
        "graph @g(%x: f32[6]) -> i64[1, c] {
            %z = const f32[] 0
            %m = greater %x, %z
            %i = nonzero %m {count=c}
            %j = add %i, %i
            return %j
        }",
    )
    .unwrap();
    let model = CompiledModel::new(g.clone(), &Options::default()).unwrap();
    for data in [vec![1.0f32, -1.0, 2.0, 0.0, 3.0, -4.0], vec![-1.0; 6]] {
        let x = Tensor::from_vec(data, &[6]).unwrap();
        let want = interp::run(&g, std::slice::from_ref(&x)).unwrap();
        assert_eq!(model.run(&[x]).unwrap(), want);
    }
}
