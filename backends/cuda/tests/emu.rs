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
        let bindings = common::bindings(binds);
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
    let (_, text, _) = common::graph("softmax");
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
    let (_, text, _) = common::graph("gather");
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

/// Top-k orders as the interpreter's stable sort: NaN above every number, equal values
/// (0 and -0 among them) by index, over lanes longer than a warp; and a `k` of the whole
/// lane returns it sorted.
#[test]
fn topk_orders_ties_and_nans_as_the_interpreter() {
    let (g, program) = common::program(
        "graph @g(%x: f32[2, n]) -> (f32[2, 6], i64[2, 6], f32[2, 6], i64[2, 6], f32[2, 45], i64[2, 45]) {
            %a, %ai = topk %x {axis=1, k=6, largest=true, sorted=true}
            %b, %bi = topk %x {axis=1, k=6, largest=false, sorted=true}
            %c, %ci = topk %x {axis=1, k=45, largest=true, sorted=true}
            return %a, %ai, %b, %bi, %c, %ci
        }",
    );
    let module = emit(&program, Target::Sm80).unwrap();
    let n = 45;
    let bindings: Bindings = [("n".to_string(), n)].into_iter().collect();
    let pool = [f32::NAN, 1.0, -0.0, 0.0, 2.0, 1.0, -3.0, f32::NAN, 2.0];
    let x: Vec<f32> = (0..2 * n as usize)
        .map(|e| pool[(e * 5 + e / 7) % pool.len()])
        .collect();
    let xs = [Tensor::from_vec(x, &[2, n as usize]).unwrap()];
    let want = interp::run(&g, &xs).unwrap();
    let shapes: Vec<Vec<usize>> = want.iter().map(|t| t.shape().to_vec()).collect();
    let (got, status) = run(&module, &program, &bindings, &xs, &shapes).unwrap();
    assert_eq!(status, 0);
    for (k, (got, want)) in got.iter().zip(&want).enumerate() {
        close(got, want).unwrap_or_else(|e| panic!("output {k}: {e}"));
        if want.dtype() == kiln_ir::DType::F32 {
            let bits = |t: &Tensor| {
                t.to_f64_vec()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                bits(got),
                bits(want),
                "output {k}: the same values, -0 included"
            );
        }
    }
}

/// Rows the mask closes entirely follow the call's rule: NaN (`nan`), zeros when the
/// probabilities are NaN (`zero_nan`), zeros when the mask's row is all -∞ (`zero_masked`).
#[test]
fn attention_rows_closed_by_the_mask_follow_the_rule() {
    let (g, program) = common::program(
        "graph @g(%q: f32[1, 2, s, 4], %k: f32[1, 2, t, 4], %v: f32[1, 2, t, 3], %m: f32[1, 1, s, t]) -> (f32[1, 2, s, 3], f32[1, 2, s, 3], f32[1, 2, s, 3]) {
            %a = attention %q, %k, %v, %m {scale=0.5, mask=add, rows=nan}
            %b = attention %q, %k, %v, %m {scale=0.5, mask=add, rows=zero_nan}
            %c = attention %q, %k, %v, %m {scale=0.5, mask=add, rows=zero_masked}
            return %a, %b, %c
        }",
    );
    let module = emit(&program, Target::Sm80).unwrap();
    let bindings: Bindings = [("s".to_string(), 3), ("t".to_string(), 33)]
        .into_iter()
        .collect();
    let mut xs = inputs(&g, &bindings, 11);
    // Row 1 is closed; row 2 keeps one key.
    let mask: Vec<f32> = (0..3 * 33)
        .map(|e| match (e / 33, e % 33) {
            (1, _) => f32::NEG_INFINITY,
            (2, j) if j != 5 => f32::NEG_INFINITY,
            _ => 0.25,
        })
        .collect();
    xs[3] = Tensor::from_vec(mask, &[1, 1, 3, 33]).unwrap();
    let want = interp::run(&g, &xs).unwrap();
    let shapes: Vec<Vec<usize>> = want.iter().map(|t| t.shape().to_vec()).collect();
    let (got, status) = run(&module, &program, &bindings, &xs, &shapes).unwrap();
    assert_eq!(status, 0);
    assert!(
        want[0].to_f64_vec().iter().any(|x| x.is_nan()),
        "the nan rule leaves NaN rows"
    );
    for (k, (got, want)) in got.iter().zip(&want).enumerate() {
        close(got, want).unwrap_or_else(|e| panic!("output {k}: {e}"));
    }
}

/// The runtime's host side on the interpreter: one session, constants uploaded once,
/// runs at a small, a larger and the small shape again (the arena grows once and is
/// reused), each against the reference interpreter; a bad index becomes an error naming
/// the kernel; inputs of the wrong type are refused before any launch.
#[test]
fn a_session_runs_every_test_graph_at_several_shapes() {
    use kiln_cuda::runtime::{RunError, Session};
    for (name, text, binds) in common::GRAPHS {
        let (g, program) = common::program(text);
        let module = emit(&program, Target::Sm80).unwrap();
        let mut session = Session::new(common::EmuGpu::default(), &g, program, module)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let big = common::bindings(binds);
        let small: Bindings = binds
            .iter()
            .map(|(s, v)| (s.to_string(), (*v).min(3)))
            .collect();
        for (bindings, seed) in [(&small, 5), (&big, 6), (&small, 7)] {
            let xs = inputs(&g, bindings, seed);
            let Ok(want) = interp::run(&g, &xs) else {
                continue; // a shape the graph itself rejects (e.g. a fixed slice)
            };
            let got = session.run(&xs).unwrap_or_else(|e| panic!("{name}: {e}"));
            for (k, (got, want)) in got.iter().zip(&want).enumerate() {
                close(got, want).unwrap_or_else(|e| panic!("{name}, output {k}: {e}"));
            }
        }
        let wrong = vec![Tensor::from_vec(vec![1i64], &[1]).unwrap(); g.inputs.len()];
        let e = session.run(&wrong).unwrap_err();
        assert!(matches!(e, RunError::Inputs(_)), "{name}: {e}");
    }
    let (_, text, _) = common::graph("gather");
    let (g, program) = common::program(text);
    let module = emit(&program, Target::Sm80).unwrap();
    let gather = module.launches.iter().find(|l| l.status).unwrap().kernel;
    let mut session = Session::new(common::EmuGpu::default(), &g, program, module).unwrap();
    let bindings: Bindings = [("v", 4), ("d", 3), ("n", 2)]
        .iter()
        .map(|(s, v)| (s.to_string(), *v))
        .collect();
    let mut xs = inputs(&g, &bindings, 3);
    xs[1] = Tensor::from_vec(vec![1i64, 4], &[2]).unwrap();
    match session.run(&xs) {
        Err(RunError::Index { kernel, .. }) => assert_eq!(kernel, gather),
        other => panic!("index 4 of 4: {other:?}"),
    }
}

/// The single-product tensor-core precisions on inputs they hold exactly (multiples of
/// 1/8 in [-3, 3] have at most 5 significant bits, within bf16's 8 and tf32's 11): the
/// products are then exact, so the results match the interpreter within the f32
/// tolerance, through every tile and edge of the GEMM test graph.
#[test]
fn tf32_and_bf16_products_are_exact_on_values_they_hold() {
    use kiln_cuda::{emit_with, Options, Precision};
    let (_, text, binds) = common::graph("gemm_tiles");
    let (g, program) = common::program(text);
    let bindings = common::bindings(binds);
    let xs: Vec<Tensor> = inputs(&g, &bindings, 9)
        .into_iter()
        .map(|t| {
            let v: Vec<f64> = t
                .to_f64_vec()
                .iter()
                .map(|x| (x * 8.0).round() / 8.0)
                .collect();
            Tensor::from_vec(v, t.shape()).unwrap().cast(t.dtype())
        })
        .collect();
    let want = interp::run(&g, &xs).unwrap();
    let shapes: Vec<Vec<usize>> = want.iter().map(|t| t.shape().to_vec()).collect();
    for precision in [Precision::Tf32, Precision::Bf16] {
        let target = Target::Sm80;
        let module = emit_with(&program, Options { target, precision }).unwrap();
        let (got, _) = run(&module, &program, &bindings, &xs, &shapes).unwrap();
        for (k, (got, want)) in got.iter().zip(&want).enumerate() {
            let p = precision.name();
            close(got, want).unwrap_or_else(|e| panic!("{p}, output {k}: {e}"));
        }
    }
}

/// f64 → f16/bf16 rounds once, as the interpreter does: values just past a halfway point
/// of the half type, where rounding to the nearest f32 first would land on the tie and
/// round to even, wrongly. Bit-exact against the interpreter.
#[test]
fn halves_from_f64_round_once() {
    let text = "graph @g(%w: f64[n]) -> (bf16[n], f16[n]) {
        %b = cast %w {to=bf16}
        %h = cast %w {to=f16}
        return %b, %h
    }";
    let (g, program) = common::program(text);
    let module = emit(&program, Target::Sm80).unwrap();
    let p = 2f64.powi(-30);
    let values = vec![
        1.0 + 2f64.powi(-8) + p,    // bf16: past the tie, rounds up
        -(1.0 + 2f64.powi(-8) + p), // and with a sign
        1.0 + 2f64.powi(-8),        // bf16: the tie itself, to even
        1.0 + 2f64.powi(-11) + p,   // f16: past the tie
        1.0 + 3.0 * 2f64.powi(-11), // f16: a tie, odd rounds up
        1e300,
        -1e300,
        f64::INFINITY,
        f64::NAN,
        1e-40,
        65519.999,
        0.0,
    ];
    let n = values.len();
    let xs = vec![Tensor::from_vec(values, &[n]).unwrap()];
    let bindings: Bindings = [("n".to_string(), n as i64)].into_iter().collect();
    let want = interp::run(&g, &xs).unwrap();
    let (got, status) = run(&module, &program, &bindings, &xs, &[vec![n], vec![n]]).unwrap();
    assert_eq!(status, 0);
    for (k, (got, want)) in got.iter().zip(&want).enumerate() {
        let bits = |t: &Tensor| -> Vec<u64> {
            t.to_f64_vec()
                .iter()
                .map(|v| if v.is_nan() { 1 } else { v.to_bits() })
                .collect()
        };
        assert_eq!(bits(got), bits(want), "output {k}: {got:?} vs {want:?}");
    }
}

/// A graph with data-dependent sizes runs as stages on one device: `NonZero` counts on
/// the device, the host reads the count, and the stages after it take the new size as a
/// symbol. Against the interpreter: floats (-0 is zero, NaN is not), bool, i64 and f16
/// inputs, lanes longer than a warp, no non-zero element at all, and a scalar.
#[test]
fn nonzero_runs_as_stages_against_the_interpreter() {
    use kiln_cuda::runtime::staged::StagedSession;
    use kiln_cuda::staged::staged_module;
    let g = kiln_ir::parse(
        "graph @g(%x: f32[a, b], %m: bool[n], %w: i64[n], %h: f16[n], %s: i64[]) -> (i64[2, k], f32[k], i64[1, j], i64[1, q], i64[1, r], i64[0, z]) {
            %i = nonzero %x {count=\"k\"}
            %t = transpose %i {perm=[1, 0]}
            %v = gather_nd %x, %t {batch_dims=0}
            %j = nonzero %m {count=\"j\"}
            %q = nonzero %w {count=\"q\"}
            %r = nonzero %h {count=\"r\"}
            %z = nonzero %s {count=\"z\"}
            return %i, %v, %j, %q, %r, %z
        }",
    )
    .unwrap();
    let options = kiln_cuda::Options {
        target: Target::Sm80,
        precision: kiln_cuda::Precision::default(),
    };
    let module = staged_module(&g, options).expect("has stages").unwrap();
    let mut session = StagedSession::new(common::EmuGpu::default(), &g, module).unwrap();
    let pool = [0.0f32, 1.5, -0.0, f32::NAN, 0.0, -2.0, 0.0];
    for (a, b, n, zeros) in [(5, 13, 70, false), (2, 3, 40, true), (1, 1, 1, false)] {
        let x: Vec<f32> = (0..a * b)
            .map(|e| {
                if zeros {
                    0.0
                } else {
                    pool[(e * 3 + e / 5) % pool.len()]
                }
            })
            .collect();
        let flags: Vec<bool> = (0..n).map(|e| !zeros && e % 3 != 1).collect();
        let ints: Vec<i64> = (0..n as i64)
            .map(|e| if e % 4 == 0 { 0 } else { e - 30 })
            .collect();
        let halves = Tensor::from_vec(ints.iter().map(|&v| (v % 3) as f32 * 0.5).collect(), &[n])
            .unwrap()
            .cast(kiln_ir::DType::F16);
        let xs = [
            Tensor::from_vec(x, &[a, b]).unwrap(),
            Tensor::from_vec(flags, &[n]).unwrap(),
            Tensor::from_vec(ints, &[n]).unwrap(),
            halves,
            Tensor::scalar(if zeros { 0i64 } else { 7 }),
        ];
        let want = interp::run(&g, &xs).unwrap();
        let got = session.run(&xs).unwrap();
        for (k, (got, want)) in got.iter().zip(&want).enumerate() {
            close(got, want).unwrap_or_else(|e| panic!("{a}x{b}, n={n}, output {k}: {e}"));
        }
    }
}

/// Products of halves take the tensor-core GEMM in their own type (the operands'
/// products are exact in f32, so the `--precision` of f32 products does not apply), and
/// match the interpreter's f32 product rounded once (`half_matmul` in the test graphs).
#[test]
fn half_products_run_on_half_tensor_cores() {
    let (_, text, binds) = common::graph("half_matmul");
    let (g, program) = common::program(text);
    let options = kiln_cuda::Options {
        target: Target::Sm80,
        precision: kiln_cuda::Precision::F32,
    };
    let module = kiln_cuda::emit_with(&program, options).unwrap();
    for ty in ["f16", "bf16"] {
        let mma = format!("mma.sync.aligned.m16n8k16.row.col.f32.{ty}.{ty}.f32");
        assert!(module.ptx.contains(&mma), "no {ty} mma");
    }
    let bindings = common::bindings(binds);
    let xs = inputs(&g, &bindings, 9);
    let want = interp::run(&g, &xs).unwrap();
    let shapes: Vec<Vec<usize>> = want.iter().map(|t| t.shape().to_vec()).collect();
    let (got, status) = run(&module, &program, &bindings, &xs, &shapes).unwrap();
    assert_eq!(status, 0);
    for (k, (got, want)) in got.iter().zip(&want).enumerate() {
        close(got, want).unwrap_or_else(|e| panic!("output {k}: {e}"));
    }
}
