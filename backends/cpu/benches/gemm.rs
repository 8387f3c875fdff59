//! GEMM throughput benchmark: median GFLOP/s of kiln's sgemm over a few sizes and thread
//! counts, one human line and one JSON line per measurement.
//!
//! `cargo bench -p kiln-cpu --bench gemm -- [--threads N[,M]] [--sizes MxKxN,...] [--runs R]`
//! Compare with `bench/sgemm_numpy.py` (numpy/OpenBLAS) run side by side.

use kiln_cpu::runtime::gemm::{kernel_name, sgemm, MatMut, MatRef};
use kiln_cpu::runtime::pool::ThreadPool;
use std::time::Instant;

struct Args {
    threads: Vec<usize>,
    sizes: Vec<(usize, usize, usize)>,
    runs: usize,
}

fn parse_size(text: &str) -> Option<(usize, usize, usize)> {
    let dims: Vec<usize> = text
        .split('x')
        .map(|d| d.trim().parse().ok())
        .collect::<Option<_>>()?;
    match dims[..] {
        [m, k, n] => Some((m, k, n)),
        _ => None,
    }
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        threads: vec![1, 2],
        sizes: vec![(128, 384, 384), (128, 384, 1536), (1024, 1024, 1024)],
        runs: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--threads" => {
                let v = value()?;
                args.threads = v
                    .split(',')
                    .map(|t| t.parse().map_err(|_| format!("bad thread count `{t}`")))
                    .collect::<Result<_, _>>()?;
            }
            "--sizes" => {
                let v = value()?;
                args.sizes = v
                    .split(',')
                    .map(|s| parse_size(s).ok_or_else(|| format!("bad size `{s}` (want MxKxN)")))
                    .collect::<Result<_, _>>()?;
            }
            "--runs" => {
                let v = value()?;
                args.runs = v.parse().map_err(|_| format!("bad run count `{v}`"))?;
            }
            // cargo passes `--bench`; other harness flags do not apply here.
            _ => {}
        }
    }
    Ok(args)
}

/// Median and best seconds of one m×k×n product over `runs` timed runs after a warm-up.
fn time_gemm(pool: &ThreadPool, (m, k, n): (usize, usize, usize), runs: usize) -> (f64, f64) {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.01).collect();
    let mut c = vec![0f32; m * n];
    let a_view = MatRef {
        ptr: a.as_ptr(),
        row_stride: k as isize,
        col_stride: 1,
    };
    let b_view = MatRef {
        ptr: b.as_ptr(),
        row_stride: n as isize,
        col_stride: 1,
    };
    let c_view = MatMut {
        ptr: c.as_mut_ptr(),
        row_stride: n as isize,
        col_stride: 1,
    };
    let once = || {
        let start = Instant::now();
        // SAFETY: the buffers hold m×k, k×n and m×n row-major matrices.
        unsafe { sgemm(pool, m, k, n, a_view, b_view, c_view, false) };
        start.elapsed().as_secs_f64()
    };
    for _ in 0..3 {
        once();
    }
    let mut times: Vec<f64> = (0..runs.max(1)).map(|_| once()).collect();
    times.sort_by(f64::total_cmp);
    std::hint::black_box(&c);
    (times[times.len() / 2], times[0])
}

/// Median microseconds of a warm `parallel_for` with one empty task per thread.
fn time_dispatch(pool: &ThreadPool) -> f64 {
    let tasks = pool.threads();
    let mut times: Vec<f64> = (0..20_000)
        .map(|_| {
            let start = Instant::now();
            pool.parallel_for(tasks, &|i| {
                std::hint::black_box(i);
            });
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("gemm bench: {message}");
            std::process::exit(2);
        }
    };
    for &threads in &args.threads {
        let pool = ThreadPool::new(threads);
        let dispatch = time_dispatch(&pool);
        println!("pool dispatch threads={threads} median {dispatch:.2} us");
        println!("{{\"impl\":\"kiln-pool\",\"threads\":{threads},\"dispatch_us\":{dispatch:.3}}}");
        for &(m, k, n) in &args.sizes {
            let (median, best) = time_gemm(&pool, (m, k, n), args.runs);
            let flops = 2.0 * (m * k * n) as f64;
            let (gflops, best) = (flops / median / 1e9, flops / best / 1e9);
            let kernel = kernel_name();
            println!(
                "{m}x{k}x{n} threads={threads} median {gflops:.1} GFLOP/s (best {best:.1}) [{kernel}]"
            );
            println!(
                "{{\"impl\":\"kiln\",\"m\":{m},\"k\":{k},\"n\":{n},\"threads\":{threads},\"kernel\":\"{kernel}\",\"gflops\":{gflops:.2},\"best_gflops\":{best:.2}}}"
            );
        }
    }
}
