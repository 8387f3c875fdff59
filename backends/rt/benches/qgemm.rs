//! Integer GEMM against the f32 GEMM on the same shapes, side by side in one process: the
//! decode-shaped GEMV (M = 1 over a 4096×4096 weight, streamed from memory) and the
//! prefill shapes of a BERT-base layer (M = 128). Prints one JSON line per shape and
//! format with the medians and the speedup over f32.
//!
//! `cargo bench -p kiln-rt --bench qgemm [-- --threads N --runs N]`.

use kiln_ir::{Block, WeightQuant};
use kiln_rt::gemm::{sgemm_prepacked, Epilogue, MatMut, MatRef, PackedB};
use kiln_rt::pool::ThreadPool;
use kiln_rt::qgemm::{qgemm, Activations, PackedQuant, QuantWeight, Scales};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1)?.parse::<usize>().ok()
    };
    let threads = flag("--threads").unwrap_or(2);
    let runs = flag("--runs").unwrap_or(30);
    let pool = ThreadPool::new(threads);
    println!(
        "{{\"threads\":{threads},\"runs\":{runs},\"qgemm_kernel\":\"{}\",\"sgemm_kernel\":\"{}\"}}",
        kiln_rt::qgemm::kernel_name(),
        kiln_rt::gemm::kernel_name()
    );
    for [m, k, n] in SHAPES {
        shape(&pool, [m, k, n], runs);
    }
}

/// The median of `runs` timings of `f`, in microseconds, after one warm-up.
fn median_us(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn shape(pool: &ThreadPool, [m, k, n]: [usize; 3], runs: usize) {
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let wf: Vec<f32> = (0..k * n)
        .map(|i| ((i * 104729) % 997) as f32 / 998.0 - 0.5)
        .collect();
    let mut c = vec![0f32; m * n];
    let view = |p: *const f32, cols: usize| MatRef {
        ptr: p,
        row_stride: cols as isize,
        col_stride: 1,
    };
    let out = |c: &mut Vec<f32>| MatMut {
        ptr: c.as_mut_ptr(),
        row_stride: n as isize,
        col_stride: 1,
    };
    // SAFETY: every buffer has the shape it is viewed with.
    let packed = unsafe { PackedB::new(k, n, view(wf.as_ptr(), n)) };
    let f32_us = median_us(runs, || unsafe {
        sgemm_prepacked(pool, 1, m, view(x.as_ptr(), k), 0, &packed, out(&mut c), 0)
    });
    let line = |name: &str, us: f64| {
        let gops = 2.0 * (m * k * n) as f64 / us / 1e3;
        println!(
            "{{\"m\":{m},\"k\":{k},\"n\":{n},\"format\":\"{name}\",\"median_us\":{us:.1},\"gop_s\":{gops:.1},\"speedup_vs_f32\":{:.2}}}",
            f32_us / us
        );
    };
    line("f32", f32_us);
    let int8: Vec<i8> = (0..k * n)
        .map(|i| ((i * 31) % 255) as i8)
        .map(|v| v.max(-127))
        .collect();
    let nib: Vec<u8> = (0..k * n).map(|i| ((i * 13) % 16) as u8).collect();
    let blocks = k.div_ceil(32);
    let scales = vec![0.01f32; blocks * n];
    let zps = vec![8u8; blocks * n];
    let formats = [
        ("int8", WeightQuant::Int8, int8.as_ptr() as *const u8, None),
        (
            "int4",
            WeightQuant::Int4 {
                block: Block::B32,
                zero_points: true,
            },
            nib.as_ptr(),
            Some(zps.as_ptr()),
        ),
    ];
    for (name, format, values, zero_points) in formats {
        let w = QuantWeight {
            format,
            k,
            n,
            values,
            scales: Scales::F32(scales.as_ptr()),
            zero_points,
        };
        // SAFETY: the operands have the shapes the format gives.
        let mut q = unsafe { PackedQuant::new(&w) }.expect("valid weights");
        // Every family this CPU has except the scalar one, best first.
        let families = kiln_rt::qgemm::kernel_names();
        for family in &families[..families.len() - 1] {
            q.use_kernel(family);
            let us = median_us(runs, || unsafe {
                qgemm(
                    pool,
                    m,
                    Activations::F32(x.as_ptr()),
                    &q,
                    out(&mut c),
                    Epilogue::NONE,
                )
            });
            line(&format!("{name}/{family}"), us);
        }
        // The best family again with a GPT-2 MLP epilogue (bias, tanh-GELU).
        q.use_kernel(families[0]);
        let bias = vec![0.1f32; n];
        let gelu = Epilogue {
            bias: bias.as_ptr(),
            activation: std::env::var("ACT")
                .ok()
                .map(|_| kiln_ir::Activation::GeluTanh),
            residual: None,
        };
        let us = median_us(runs, || unsafe {
            qgemm(pool, m, Activations::F32(x.as_ptr()), &q, out(&mut c), gelu)
        });
        line(&format!("{name}/{}+bias+gelu_tanh", families[0]), us);
    }
}

const SHAPES: [[usize; 3]; 7] = [
    [1, 4096, 4096],
    [128, 384, 1536],
    [128, 1536, 384],
    [128, 768, 3072],
    [128, 3072, 768],
    [128, 768, 768],
    [128, 3072, 16],
];
