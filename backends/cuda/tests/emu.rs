//! The emitted PTX, run by the PTX interpreter (`kiln-ptx-emu`), against the reference
//! interpreter: every test graph, with its symbols free in the module and bound only at
//! launch, within 1e-3 relative / 1e-5 absolute (the hardware approximations of `ex2`,
//! `lg2`, `sin` and `cos` are modelled as exact; the formulas around them are what is
//! checked). Temporaries start as NaN bytes, so a kernel that reads one before it is
//! written shows up.

mod common;

use common::{close, inputs, run};
use kiln_cuda::{emit, Target};
use kiln_ir::{interp, Bindings, Tensor};

#[test]
fn every_test_graph_matches_the_interpreter_with_symbols_free() {
    for (name, text, binds) in common::GRAPHS {
        let (g, program) = common::program(text);
        assert!(
            !program.symbols.is_empty(),
            "{name}: the module should keep its symbols"
        );
        let module = emit(&program, Target::Sm80).unwrap_or_else(|e| panic!("{name}: {e}"));
        let bindings: Bindings = binds.iter().map(|(s, v)| (s.to_string(), *v)).collect();
        for seed in [1, 2] {
            let xs = inputs(&g, &bindings, seed);
            let want = interp::run(&g, &xs).unwrap_or_else(|e| panic!("{name}: {e}"));
            let shapes: Vec<Vec<usize>> = want.iter().map(|t| t.shape().to_vec()).collect();
            let (got, status) = run(&module, &program, &bindings, &xs, &shapes).unwrap();
            assert_eq!(status, 0, "{name}: a kernel reported a bad index");
            for (k, (got, want)) in got.iter().zip(&want).enumerate() {
                if let Err(e) = close(got, want) {
                    panic!("{name}, output {k}, seed {seed}: {e}");
                }
            }
        }
    }
}

#[test]
fn one_module_serves_two_bindings() {
    let (_, text, _) = common::GRAPHS
        .iter()
        .find(|(n, ..)| *n == "softmax")
        .unwrap();
    let (g, program) = common::program(text);
    let module = emit(&program, Target::Sm80).unwrap();
    for (b, s) in [(1, 1), (3, 300)] {
        let bindings: Bindings = [("b".to_string(), b), ("s".to_string(), s)]
            .into_iter()
            .collect();
        let xs = inputs(&g, &bindings, 7);
        let want = interp::run(&g, &xs).unwrap();
        let (got, status) = run(
            &module,
            &program,
            &bindings,
            &xs,
            &[want[0].shape().to_vec()],
        )
        .unwrap();
        assert_eq!(status, 0);
        close(&got[0], &want[0]).unwrap_or_else(|e| panic!("b={b} s={s}: {e}"));
    }
}

#[test]
fn an_index_out_of_range_stops_the_gather_and_names_its_kernel() {
    let (_, text, _) = common::GRAPHS
        .iter()
        .find(|(n, ..)| *n == "gather")
        .unwrap();
    let (g, program) = common::program(text);
    let module = emit(&program, Target::Sm80).unwrap();
    let bindings: Bindings = [("v", 4), ("d", 3), ("n", 2)]
        .iter()
        .map(|(s, v)| (s.to_string(), *v))
        .collect();
    let mut xs = inputs(&g, &bindings, 3);
    xs[1] = Tensor::from_vec(vec![1i64, 4], &[2]).unwrap();
    assert!(
        interp::run(&g, &xs).is_err(),
        "the interpreter rejects index 4 of 4"
    );
    let (_, status) = run(&module, &program, &bindings, &xs, &[vec![2, 3]]).unwrap();
    let gather = module
        .launches
        .iter()
        .find(|l| l.status)
        .expect("the gather checks its indices");
    assert_eq!(status as usize, gather.kernel + 1);
    // A negative index counts from the end, as the interpreter's does.
    xs[1] = Tensor::from_vec(vec![-1i64, 0], &[2]).unwrap();
    let want = interp::run(&g, &xs).unwrap();
    let (got, status) = run(&module, &program, &bindings, &xs, &[vec![2, 3]]).unwrap();
    assert_eq!(status, 0);
    close(&got[0], &want[0]).unwrap();
}
