//! Loop fusion: chains of elementwise ops, casts and data movement collapse into the kernel
//! that reads them, with the interpreter's results (bit for bit where the ops are exactly
//! rounded), and producers that must stay (read twice, read by a GEMM, a graph output, or
//! read with repetition) stay. Each case pins the kernel count, so it fails if fusion stops
//! happening or starts where it must not.

use kiln_cpu::{CompiledModel, Options};
use kiln_ir::{interp, parse, Tensor};

fn random(seed: u64, t: &kiln_ir::TensorType) -> Tensor {
    let shape: Vec<usize> = t.const_shape().expect("static shapes");
    let n: usize = shape.iter().product();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    match t.dtype {
        kiln_ir::DType::F32 => Tensor::from_vec((0..n).map(|_| next() * 4.0).collect(), &shape),
        kiln_ir::DType::I32 => {
            Tensor::from_vec((0..n).map(|_| (next() * 1000.0) as i32).collect(), &shape)
        }
        d => panic!("no generator for {d}"),
    }
    .unwrap()
}

/// Compiles `text`, checks its kernel count, and compares every output with the
/// interpreter's: exactly when `exact`, else within 1e-6 relative.
fn check(text: &str, kernels: usize, exact: bool) {
    let g = parse(text).unwrap();
    let inputs: Vec<Tensor> = g
        .inputs
        .iter()
        .enumerate()
        .map(|(i, (_, v))| random(i as u64 + 1, g.value_type(*v)))
        .collect();
    let want = interp::run(&g, &inputs).unwrap();
    for threads in [1, 2] {
        let model = CompiledModel::new(
            g.clone(),
            &Options {
                threads,
                ..Options::default()
            },
        )
        .unwrap();
        let got = model.run(&inputs).unwrap();
        for (o, (w, x)) in want.iter().zip(&got).enumerate() {
            assert_eq!(w.shape(), x.shape(), "{}: output {o}", g.name);
            assert_eq!(w.dtype(), x.dtype(), "{}: output {o}", g.name);
            for (i, (a, b)) in w.to_f64_vec().iter().zip(x.to_f64_vec()).enumerate() {
                let ok = if exact {
                    a.to_bits() == b.to_bits()
                } else {
                    (a - b).abs() <= 1e-6 * a.abs().max(1.0)
                };
                assert!(ok, "{}: output {o}, element {i}: want {a}, got {b}", g.name);
            }
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let spec = model.specialize(&shapes).unwrap();
        let labels: Vec<String> = spec.program.kernels.iter().map(|k| k.label()).collect();
        assert_eq!(
            spec.program.kernels.len(),
            kernels,
            "{}: {labels:?}",
            g.name
        );
    }
}

#[test]
fn an_elementwise_chain_is_one_kernel() {
    let g = "graph @add_mul_relu(%x: f32[4, 33], %y: f32[4, 33]) -> f32[4, 33] {
        %a = add %x, %y
        %b = mul %a, %x
        %c = relu %b
        %d = sub %c, %y
        return %d
    }";
    check(g, 1, true);
}

#[test]
fn slice_then_transpose_reads_the_source_once() {
    let g = "graph @slice_transpose(%x: f32[5, 8]) -> f32[3, 5] {
        %s = slice %x {axes=[1], starts=[1], ends=[7], steps=[2]}
        %t = transpose %s {perm=[1, 0]}
        %n = neg %t
        return %n
    }";
    check(g, 1, true);
}

#[test]
fn a_transpose_feeds_a_broadcasting_add() {
    let g = "graph @transpose_add(%x: f32[3, 4, 5], %b: f32[4]) -> f32[5, 3, 4] {
        %t = transpose %x {perm=[2, 0, 1]}
        %s = add %t, %b
        return %s
    }";
    check(g, 1, true);
}

#[test]
fn a_broadcast_producer_fuses_into_a_whole_read() {
    // The producer reads %b broadcast; its result is read once per element.
    let g = "graph @broadcast_producer(%x: f32[6, 7], %b: f32[7]) -> f32[6, 7] {
        %m = mul %x, %b
        %e = expand %b {shape=[6, 7]}
        %s = sub %m, %e
        return %s
    }";
    check(g, 1, true);
}

#[test]
fn cast_chains_are_one_kernel() {
    let g = "graph @casts(%x: i32[7, 9]) -> f32[7, 9] {
        %f = cast %x {to=f32}
        %h = mul %f, %f
        %i = cast %h {to=i64}
        %g = cast %i {to=f32}
        %n = neg %g
        return %n
    }";
    check(g, 1, true);
}

#[test]
fn a_chain_feeds_a_reduction() {
    let g = "graph @chain_reduce(%x: f32[6, 37], %y: f32[6, 37]) -> f32[6] {
        %a = mul %x, %x
        %b = sub %a, %y
        %t = transpose %b {perm=[1, 0]}
        %r = reduce_sum %t {axes=[0], keep_dims=false}
        return %r
    }";
    check(g, 1, false);
}

#[test]
fn a_reshape_between_producer_and_consumer_still_fuses() {
    // The add's axes merge into one, which the transposed read of the reshape splits again.
    let g = "graph @reshape_between(%x: f32[2, 3, 4]) -> f32[4, 6] {
        %a = add %x, %x
        %r = reshape %a {shape=[6, 4]}
        %t = transpose %r {perm=[1, 0]}
        %n = neg %t
        return %n
    }";
    check(g, 1, true);
}

#[test]
fn a_copy_fuses_into_a_norm_that_reads_it_three_times() {
    // Layer norm reads its input in two statistics and the map: a transpose (a copy) is
    // free to read again.
    let g = "graph @transpose_norm(%x: f32[8, 3], %s: f32[8], %b: f32[8]) -> f32[3, 8] {
        %t = transpose %x {perm=[1, 0]}
        %n = layer_norm %t, %s, %b {epsilon=1e-5}
        return %n
    }";
    check(g, 1, false);
}

#[test]
fn arithmetic_read_three_times_by_a_norm_stays() {
    // The near miss: the add would run three times per element.
    let g = "graph @add_norm(%x: f32[3, 8], %s: f32[8], %b: f32[8]) -> f32[3, 8] {
        %a = add %x, %x
        %n = layer_norm %a, %s, %b {epsilon=1e-5}
        return %n
    }";
    check(g, 2, false);
}

#[test]
fn arithmetic_read_once_by_a_norm_fuses() {
    // The scale (one per element here) is read by the norm's map only, once per element.
    let g = "graph @scale_norm(%x: f32[3, 8], %s: f32[3, 8]) -> f32[3, 8] {
        %t = mul %s, %s
        %n = rms_norm %x, %t {epsilon=1e-5}
        return %n
    }";
    check(g, 1, false);
}

#[test]
fn a_producer_read_twice_stays() {
    let g = "graph @two_readers(%x: f32[4, 33], %y: f32[4, 33]) -> (f32[4, 33], f32[4, 33]) {
        %a = add %x, %y
        %b = mul %a, %x
        %c = neg %a
        return %b, %c
    }";
    check(g, 3, true);
}

#[test]
fn a_producer_read_by_a_gemm_stays() {
    let g = "graph @gemm_reader(%x: f32[4, 16], %w: f32[16, 8]) -> f32[4, 8] {
        %a = relu %x
        %m = matmul %a, %w
        return %m
    }";
    check(g, 2, false);
}

#[test]
fn a_graph_output_is_stored() {
    let g = "graph @output(%x: f32[4, 33]) -> (f32[4, 33], f32[4, 33]) {
        %a = neg %x
        %b = relu %a
        return %a, %b
    }";
    check(g, 2, true);
}

#[test]
fn a_producer_read_with_repetition_stays() {
    // Fusing would compute each exp four times.
    let g = "graph @broadcast_read(%x: f32[8], %z: f32[4, 8]) -> f32[4, 8] {
        %a = exp %x
        %b = add %a, %z
        return %b
    }";
    check(g, 2, false);
}
