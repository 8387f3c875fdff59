//! Graphs the backend's tests compile with their symbols free, and how to find ptxas.
//!
//! Each graph covers a family of kernels the description holds: elementwise chains with
//! transcendental functions, broadcasts, transposes and slices (strided loads), reductions,
//! row kernels (softmax, layer and RMS norm), gathers with negative indices, integer and
//! boolean arithmetic, casts, and index sequences.

#![allow(dead_code)]

use kiln_cuda::Module;
use kiln_ir::{parse, Bindings, Graph, Tensor};
use kiln_kernel::kernel::{BufferKind, Program};
use kiln_ptx_emu as emu;
use std::path::{Path, PathBuf};

/// A test graph: its name, its text, and a binding of its symbols to run it at.
pub type Case = (&'static str, &'static str, &'static [(&'static str, i64)]);

/// The test graphs.
pub const GRAPHS: &[Case] = &[
    (
        "elementwise",
        "graph @g(%x: f32[n], %y: f32[n]) -> (f32[n], f32[n], f32[n]) {
            %a = exp %x
            %b = mul %a, %y
            %c = tanh %b
            %d = sigmoid %x
            %e = add %c, %d
            %f = gelu %y
            %g = erf %x
            %h = div %f, %e
            %i = sqrt %a
            %j = max %h, %i
            %k = relu %g
            %l = neg %k
            return %j, %l, %e
        }",
        &[("n", 1000)],
    ),
    (
        "functions",
        "graph @g(%x: f32[n], %y: f32[n], %d: f64[n]) -> (f32[n], f32[n], f32[n], f64[n], f64[n], f32[n]) {
            %a = atan %x
            %h = mul %x, %x
            %u = tanh %y
            %s = asin %u
            %c = acos %u
            %t = add %s, %c
            %p = pow %h, %y
            %m = mod %x, %y
            %f = fmod %x, %y
            %q = asinh %m
            %e = exp %d
            %l = log %e
            %g = sigmoid %d
            %w = add %p, %f
            return %t, %q, %f, %l, %g, %w
        }",
        &[("n", 300)],
    ),
    (
        "matmul",
        "graph @g(%x: f32[b, s, k], %w: f32[k, n], %bias: f32[n], %r: f32[b, s, n], %y: f32[b, n, s]) -> (f32[b, s, n], f32[b, s, n], f32[b, s, s]) {
            %p = matmul %x, %w
            %l = linear %x, %w, %bias, %r {bias=true, activation=gelu, residual=add}
            %q = matmul %p, %y
            return %p, %l, %q
        }",
        &[("b", 2), ("s", 5), ("k", 40), ("n", 7)],
    ),
    (
        // Scans along a middle axis (f32 accumulating in f64, exclusive and reversed)
        // and integer products that wrap.
        "scan",
        "graph @g(%x: f32[a, n, c], %i: i32[a, n]) -> (f32[a, n, c], f32[a, n, c], i32[a, n], i64[a, n]) {
            %s = cumsum %x {axis=1, exclusive=false, reverse=false}
            %r = cumsum %x {axis=1, exclusive=true, reverse=true}
            %p = cumprod %i {axis=1, exclusive=false, reverse=false}
            %w = cast %i {to=i64}
            %q = cumprod %w {axis=0, exclusive=true, reverse=false}
            return %s, %r, %p, %q
        }",
        &[("a", 3), ("n", 40), ("c", 5)],
    ),
    (
        // Several 64×64 tiles with ragged edges, depth blocks of 32 with a partial last,
        // a transposed right operand (depth-contiguous) and a transposed left one, and
        // a batched product whose right operand broadcasts over the batch.
        "gemm_tiles",
        "graph @g(%x: f32[b, s, k], %w: f32[k, n], %v: f32[n, k], %bias: f32[n], %y: f32[b, k, s], %z: f32[1, s, k]) -> (f32[b, s, n], f32[b, s, n], f32[b, s, s], f32[b, k, k]) {
            %l = linear %x, %w, %bias {bias=true, activation=relu, residual=none}
            %t = transpose %v {perm=[1, 0]}
            %p = matmul %x, %t
            %q = matmul %x, %y
            %xt = transpose %x {perm=[0, 2, 1]}
            %r = matmul %xt, %z
            return %l, %p, %q, %r
        }",
        &[("b", 2), ("s", 70), ("k", 45), ("n", 130)],
    ),
    (
        "attention",
        "graph @g(%q: f32[b, 4, s, 8], %k: f32[b, 2, t, 8], %v: f32[b, 2, t, 6], %m: f32[b, 1, s, t], %keep: bool[b, 4, s, t]) -> (f32[b, 4, s, 6], f32[b, 4, s, 6], f32[b, 4, s, 6]) {
            %a = attention %q, %k, %v {scale=0.35, mask=none, rows=nan}
            %c = attention %q, %k, %v, %m {scale=0.35, mask=add, rows=zero_nan}
            %d = attention %q, %k, %v, %keep {scale=0.5, mask=keep, rows=zero_nan}
            return %a, %c, %d
        }",
        &[("b", 2), ("s", 5), ("t", 40)],
    ),
    (
        "half_attention",
        "graph @g(%q: f16[b, 4, s, 8], %k: f16[b, 2, t, 8], %v: f16[b, 2, t, 6], %m: f16[b, 1, s, t], %keep: bool[b, 4, s, t], %x: bf16[b, 2, s, 8]) -> (f16[b, 4, s, 6], f16[b, 4, s, 6], bf16[b, 2, s, 8]) {
            %c = attention %q, %k, %v, %m {scale=0.35, mask=add, rows=zero_masked}
            %d = attention %q, %k, %v, %keep {scale=0.5, mask=keep, rows=zero_nan}
            %e = attention %x, %x, %x {scale=0.3, mask=none, rows=nan}
            return %c, %d, %e
        }",
        &[("b", 2), ("s", 5), ("t", 40)],
    ),
    (
        "f64_attention",
        "graph @g(%q: f64[b, 4, s, 8], %k: f64[b, 2, t, 8], %v: f64[b, 2, t, 6], %m: f64[b, 1, s, t], %keep: bool[b, 4, s, t]) -> (f64[b, 4, s, 6], f64[b, 4, s, 6], f64[b, 4, s, 6]) {
            %a = attention %q, %k, %v {scale=0.35, mask=none, rows=nan}
            %c = attention %q, %k, %v, %m {scale=0.35, mask=add, rows=zero_masked}
            %d = attention %q, %k, %v, %keep {scale=0.5, mask=keep, rows=zero_nan}
            return %a, %c, %d
        }",
        &[("b", 2), ("s", 3), ("t", 37)],
    ),
    (
        "conv",
        "graph @g(%x: f32[b, 4, 9, 7], %w: f32[6, 2, 3, 2], %v: f32[5, 4, 2, 2]) -> (f32[b, 6, 5, 6], f32[b, 5, 4, 3]) {
            %y = conv %x, %w {strides=[2, 1], dilations=[1, 2], pads=[(1, 1), (1, 0)], groups=2}
            %z = conv %x, %v {strides=[2, 2], dilations=[1, 1], pads=[(0, 0), (0, 0)], groups=1}
            return %y, %z
        }",
        &[("b", 2)],
    ),
    (
        "broadcast",
        "graph @g(%x: f32[b, s], %y: f32[s], %z: f32[b, 1]) -> f32[b, s] {
            %a = add %x, %y
            %c = sub %a, %z
            %d = floor %c
            return %d
        }",
        &[("b", 3), ("s", 70)],
    ),
    (
        "transpose",
        "graph @g(%x: f32[m, n]) -> f32[n, m] {
            %t = transpose %x {perm=[1, 0]}
            %u = abs %t
            return %u
        }",
        &[("m", 17), ("n", 9)],
    ),
    (
        "reduce",
        "graph @g(%x: f32[m, n]) -> (f32[m], f32[n], f32[m, 1]) {
            %s = reduce_sum %x {axes=[1], keep_dims=false}
            %t = reduce_max %x {axes=[0], keep_dims=false}
            %u = reduce_mean %x {axes=[1], keep_dims=true}
            return %s, %t, %u
        }",
        &[("m", 5), ("n", 33)],
    ),
    (
        "softmax",
        "graph @g(%x: f32[b, s]) -> f32[b, s] {
            %y = softmax %x {axis=1}
            return %y
        }",
        &[("b", 4), ("s", 50)],
    ),
    (
        "norms",
        "graph @g(%x: f32[b, d], %s: f32[d], %h: f32[d]) -> (f32[b, d], f32[b, d]) {
            %y = layer_norm %x, %s, %h {epsilon=1e-5}
            %z = rms_norm %x, %s {epsilon=1e-6}
            return %y, %z
        }",
        &[("b", 6), ("d", 40)],
    ),
    (
        "gather",
        "graph @g(%t: f32[v, d], %i: i64[n]) -> f32[n, d] {
            %y = gather %t, %i {axis=0}
            return %y
        }",
        &[("v", 11), ("d", 7), ("n", 13)],
    ),
    (
        "integers",
        "graph @g(%a: i64[n], %b: i64[n], %x: f32[n]) -> (i64[n], i64[n], bool[n], f32[n], i32[n]) {
            %q = div %a, %b
            %r = mod %a, %b
            %c = greater %a, %b
            %f = cast %a {to=f32}
            %w = where %c, %f, %x
            %k = cast %x {to=i32}
            return %q, %r, %c, %w, %k
        }",
        &[("n", 64)],
    ),
    (
        "movement",
        "graph @g(%x: f32[b, s], %y: f32[b, 3]) -> (f32[b, s+3], f32[b, 2]) {
            %c = concat %x, %y {axis=1}
            %s = slice %y {axes=[1], starts=[1], ends=[3], steps=[1]}
            return %c, %s
        }",
        &[("b", 2), ("s", 5)],
    ),
    (
        "halves",
        "graph @g(%x: f16[n], %y: f16[n], %z: bf16[n], %w: f64[n]) -> (f16[n], f32[n], bf16[n], bf16[n], i64[n], bool[n], i16[n], f16[n]) {
            %a = mul %x, %y
            %b = add %a, %x
            %c = exp %x
            %d = cast %c {to=f32}
            %e = mul %z, %z
            %f = cast %w {to=bf16}
            %i = cast %x {to=i64}
            %p = less %x, %y
            %h = bitcast %x {to=i16}
            %m = where %p, %b, %y
            return %b, %d, %e, %f, %i, %p, %h, %m
        }",
        &[("n", 64)],
    ),
    (
        "pads",
        "graph @g(%x: f32[b, n], %i: i64[n]) -> (f32[b + 3, n + 5], f32[b, n + 4], i64[n + 9]) {
            %z = const f32[] 0.0
            %k = const i64[] 0
            %e = pad %x, %z {pads=[(1, 2), (3, 2)], mode=edge}
            %r = pad %x, %z {pads=[(0, 0), (-1, 5)], mode=reflect}
            %w = pad %i, %k {pads=[(4, 5)], mode=wrap}
            return %e, %r, %w
        }",
        &[("b", 3), ("n", 4)],
    ),
    (
        "half_rows",
        "graph @g(%x: f16[m, n], %y: bf16[m, n]) -> (f16[m], f16[n], bf16[m, 1], f16[m, n], bf16[m, n], f16[m]) {
            %s = reduce_sum %x {axes=[1], keep_dims=false}
            %t = reduce_max %x {axes=[0], keep_dims=false}
            %u = reduce_mean %y {axes=[1], keep_dims=true}
            %p = softmax %x {axis=1}
            %q = log_softmax %y {axis=0}
            %l = reduce_log_sum_exp %x {axes=[1], keep_dims=false}
            return %s, %t, %u, %p, %q, %l
        }",
        &[("m", 5), ("n", 33)],
    ),
    (
        "windows",
        "graph @g(%x: f16[b, 4, 9, 7], %w: f16[6, 2, 3, 2], %xi: i32[b, 2, 8], %wi: i32[3, 2, 3], %xt: f32[b, 4, 5, 4], %wt: f32[4, 3, 3, 2], %xh: bf16[b, 4, 5, 4], %wh: bf16[4, 3, 3, 2]) -> (f16[b, 6, 5, 6], i32[b, 3, 8], f32[b, 6, 11, 5], bf16[b, 6, 11, 5]) {
            %y = conv %x, %w {strides=[2, 1], dilations=[1, 2], pads=[(1, 1), (1, 0)], groups=2}
            %i = conv %xi, %wi {strides=[1], dilations=[1], pads=[(1, 1)], groups=1}
            %t = conv_transpose %xt, %wt {strides=[2, 1], dilations=[1, 2], pads=[(1, 0), (0, 1)], output_padding=[1, 0], groups=2}
            %h = conv_transpose %xh, %wh {strides=[2, 1], dilations=[1, 2], pads=[(1, 0), (0, 1)], output_padding=[1, 0], groups=2}
            return %y, %i, %t, %h
        }",
        &[("b", 2)],
    ),
    (
        "topk",
        "graph @g(%x: f32[b, n], %h: f16[n, b], %i: i64[b, 3, n], %u: u8[b, n], %d: f64[b, n]) -> (f32[b, 5], i64[b, 5], f16[4, b], i64[4, b], i64[b, 3, 6], i64[b, 3, 6], u8[b, 3], i64[b, 3], f64[b, 2], i64[b, 2]) {
            %a, %ai = topk %x {axis=1, k=5, largest=true, sorted=true}
            %c, %ci = topk %h {axis=0, k=4, largest=false, sorted=true}
            %e, %ei = topk %i {axis=2, k=6, largest=true, sorted=true}
            %f, %fi = topk %u {axis=1, k=3, largest=false, sorted=true}
            %j, %ji = topk %d {axis=1, k=2, largest=false, sorted=true}
            return %a, %ai, %c, %ci, %e, %ei, %f, %fi, %j, %ji
        }",
        &[("b", 3), ("n", 45)],
    ),
    (
        "half_matmul",
        "graph @g(%a: f16[b, m, k], %c: f16[k, n], %x: bf16[m, k], %y: bf16[b, k, n]) -> (f16[b, m, n], bf16[b, m, n]) {
            %p = matmul %a, %c
            %q = matmul %x, %y
            return %p, %q
        }",
        &[("b", 2), ("m", 70), ("k", 45), ("n", 9)],
    ),
    (
        "contractions",
        "graph @g(%a: i32[b, m, k], %c: i32[k, n], %x: f32[m, k], %y: f32[b, k, n], %h: f64[m, m]) -> (i32[b, m, n], f32[b, m, n], f64[m], f64[], f64[m, m]) {
            %p = matmul %a, %c
            %e = einsum %x, %y {equation=\"mk,bkn->bmn\"}
            %d = einsum %h {equation=\"ii->i\"}
            %t = einsum %h {equation=\"ij->\"}
            %r = einsum %h {equation=\"ij->ji\"}
            return %p, %e, %d, %t, %r
        }",
        &[("b", 2), ("m", 3), ("k", 5), ("n", 4)],
    ),
];

/// The test graph named `name` in [`GRAPHS`].
pub fn graph(name: &str) -> &'static Case {
    GRAPHS
        .iter()
        .find(|(n, ..)| *n == name)
        .unwrap_or_else(|| panic!("no test graph named {name}"))
}

/// A test graph's binding as [`Bindings`].
pub fn bindings(binds: &[(&str, i64)]) -> Bindings {
    binds.iter().map(|(s, v)| (s.to_string(), *v)).collect()
}

/// The vendored f32 models (`tests/models/NAME.onnx` with `NAME.inputs.npz`) the GPU
/// tests run.
pub const VENDORED_F32_MODELS: [&str; 10] = [
    "bert_tiny",
    "bert_tiny_ts",
    "gpt2_kv",
    "gpt2_tiny",
    "gpt2_tiny_ts",
    "llama_kv",
    "llama_tiny",
    "llama_tiny_ts",
    "vit_tiny",
    "vit_tiny_ts",
];

/// The graph parsed, scheduled with every symbol left free, and loop-fused, as the CPU
/// backend prepares it.
pub fn program(text: &str) -> (Graph, Program) {
    let g = parse(text).unwrap_or_else(|e| panic!("test graph does not parse: {e}"));
    let p = kiln_cuda::program(&g, &Bindings::new()).unwrap_or_else(|e| panic!("schedule: {e}"));
    (g, p)
}

/// ptxas: `KILN_PTXAS`, else the one in the `nvidia-cuda-nvcc-cu12` wheel that `python3`
/// imports; `Err` says why there is none.
pub fn ptxas() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KILN_PTXAS") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("KILN_PTXAS={} is not a file", p.display()))
        };
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import nvidia.cuda_nvcc as m; print(list(m.__path__)[0])",
        ])
        .output()
        .map_err(|e| format!("python3 not runnable ({e})"))?;
    if !out.status.success() {
        return Err("python3 cannot import nvidia.cuda_nvcc (pip install nvidia-cuda-nvcc-cu12, or set KILN_PTXAS)".into());
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let p = PathBuf::from(dir).join("bin/ptxas");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{} is missing", p.display()))
    }
}

/// A deterministic generator of test inputs.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Random inputs at `bindings`: floats in [-3, 3), integers in [-5, 5].
pub fn inputs(g: &Graph, bindings: &Bindings, seed: u64) -> Vec<Tensor> {
    let mut rng = Lcg(seed);
    g.inputs
        .iter()
        .map(|(_, v)| {
            let ty = g.value_type(*v);
            let shape: Vec<usize> = (ty.shape.iter())
                .map(|d| d.eval(bindings).expect("bound") as usize)
                .collect();
            let n: usize = shape.iter().product();
            let values: Vec<f64> = (0..n)
                .map(|_| match ty.dtype {
                    d if d.is_float() => rng.next() * 6.0 - 3.0,
                    _ => (rng.next() * 11.0).floor() - 5.0,
                })
                .collect();
            Tensor::from_vec(values, &shape).unwrap().cast(ty.dtype)
        })
        .collect()
}

/// Runs every launch of `module` on `inputs` (temporaries start as NaN bytes, so a
/// kernel reading one before it is written shows up); returns the outputs and the status
/// word.
pub fn run(
    module: &Module,
    program: &Program,
    bindings: &Bindings,
    inputs: &[Tensor],
    shapes: &[Vec<usize>],
) -> Result<(Vec<Tensor>, u32), String> {
    let ptx = emu::Module::parse(&module.ptx)
        .unwrap_or_else(|e| panic!("emulator rejects the module: {e}"));
    let mut mem = emu::Memory::new();
    let bytes = program.buffer_bytes(bindings).expect("sizes");
    let addrs: Vec<u64> = (program.buffers.iter().zip(&bytes))
        .map(|(b, &n)| {
            if matches!(b.kind, BufferKind::Iota) {
                return 0;
            }
            let a = mem.alloc(n.max(1));
            let data = match &b.kind {
                BufferKind::Input(k) => inputs[*k].to_le_bytes(),
                BufferKind::Const(t) => t.to_le_bytes(),
                _ => vec![0xFF; n],
            };
            mem.write(a, &data).unwrap();
            a
        })
        .collect();
    let status = mem.alloc(4);
    let symbols = program.symbol_values(bindings).expect("every symbol bound");
    for l in &module.launches {
        let mut params: Vec<emu::Param> = l
            .buffers
            .iter()
            .map(|&b| emu::Param::U64(addrs[b]))
            .collect();
        params.extend(symbols.iter().map(|&s| emu::Param::S64(s)));
        if l.status {
            params.push(emu::Param::U64(status));
        }
        let (grid, block) = l.geometry(bindings).expect("geometry");
        ptx.launch(
            &mut mem,
            &l.entry,
            grid,
            block,
            &params,
            &emu::Limits::default(),
        )
        .map_err(|e| format!("{} ({}): {e}", l.entry, program.kernels[l.kernel].label()))?;
    }
    let outputs = (program.outputs.iter().zip(shapes))
        .map(|(&b, shape)| {
            let data = mem.read(addrs[b], bytes[b]).unwrap();
            Tensor::from_le_bytes(program.buffers[b].dtype, shape, &data).unwrap()
        })
        .collect();
    let word = mem.read_u32s(status, 1).unwrap()[0];
    Ok((outputs, word))
}

/// The largest share of the tolerance (1e-5 absolute + 1e-3 relative) any float element
/// of `got` uses against `want`: at most 1 where [`close`] holds.
pub fn tolerance_used(got: &Tensor, want: &Tensor) -> f64 {
    let pairs = got.to_f64_vec().into_iter().zip(want.to_f64_vec());
    let finite = pairs.filter(|(g, w)| g.is_finite() && w.is_finite());
    finite.fold(0.0, |worst, (g, w)| {
        worst.max((g - w).abs() / (1e-5 + 1e-3 * w.abs()))
    })
}

/// Whether `got` is within 1e-3 relative / 1e-5 absolute of `want` (exact for integers;
/// NaN matches NaN, infinities match exactly).
pub fn close(got: &Tensor, want: &Tensor) -> Result<(), String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Err(format!(
            "{:?}{:?} vs {:?}{:?}",
            got.dtype(),
            got.shape(),
            want.dtype(),
            want.shape()
        ));
    }
    let exact = !want.dtype().is_float();
    for (i, (g, w)) in got
        .to_f64_vec()
        .into_iter()
        .zip(want.to_f64_vec())
        .enumerate()
    {
        let ok = if exact || g.is_infinite() || w.is_infinite() {
            g == w
        } else {
            (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-5 + 1e-3 * w.abs()
        };
        if !ok {
            return Err(format!("element {i}: {g} vs {w}"));
        }
    }
    Ok(())
}

/// The PTX interpreter as a device for the runtime (`kiln_cuda::runtime::Session`), so
/// the host side of a GPU run is tested without a GPU. New allocations hold NaN bytes,
/// so a kernel reading memory no launch wrote shows up.
#[derive(Default)]
pub struct EmuGpu {
    module: Option<emu::Module>,
    mem: emu::Memory,
    live: std::collections::HashSet<u64>,
    /// Launches so far.
    pub launches: usize,
    /// When set, every module loaded is first assembled with this ptxas for sm_80 and
    /// sm_90, and a module ptxas rejects fails the load.
    pub ptxas: Option<PathBuf>,
}

impl EmuGpu {
    /// A device that also assembles what it loads with `ptxas`.
    pub fn assembling(ptxas: Option<PathBuf>) -> EmuGpu {
        EmuGpu {
            ptxas,
            ..EmuGpu::default()
        }
    }
}

/// Assembles the module text at `src` with `ptxas` for `arch` (`sm_80`), writing the
/// cubin beside it; `Err` holds ptxas's complaint.
pub fn assemble(ptxas: &Path, src: &Path, arch: &str) -> Result<(), String> {
    let out = std::process::Command::new(ptxas)
        .arg(format!("-arch={arch}"))
        .arg("-o")
        .arg(src.with_extension("cubin"))
        .arg(src)
        .output()
        .map_err(|e| format!("ptxas not runnable: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Assembles `ptx` (written for sm_80) for sm_80 and sm_90: the backend's targets differ
/// only in the `.target` line.
fn assemble_both(ptxas: &Path, ptx: &str) -> Result<(), String> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("kiln-ptxas-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = ["sm_80", "sm_90"].iter().try_for_each(|arch| {
        let src = dir.join(format!("{arch}.ptx"));
        let text = ptx.replacen(".target sm_80", &format!(".target {arch}"), 1);
        std::fs::write(&src, text).map_err(|e| e.to_string())?;
        assemble(ptxas, &src, arch).map_err(|e| format!("ptxas rejects the module for {arch}: {e}"))
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

impl kiln_cuda::runtime::Gpu for EmuGpu {
    type Error = String;

    fn load(&mut self, ptx: &str) -> Result<(), String> {
        if let Some(p) = &self.ptxas {
            assemble_both(p, ptx)?;
        }
        self.module = Some(emu::Module::parse(ptx).map_err(|e| e.to_string())?);
        Ok(())
    }

    fn alloc(&mut self, bytes: usize) -> Result<u64, String> {
        if bytes > 1 << 32 {
            return Err(format!("{bytes} bytes is more than the interpreter holds"));
        }
        let at = self.mem.alloc(bytes);
        self.mem
            .write(at, &vec![0xFF; bytes])
            .map_err(|e| e.to_string())?;
        self.live.insert(at);
        Ok(at)
    }

    fn free(&mut self, at: u64) -> Result<(), String> {
        // The interpreter's memory only grows; a freed block must not be freed twice.
        match self.live.remove(&at) {
            true => Ok(()),
            false => Err(format!("{at:#x} is not a live allocation")),
        }
    }

    fn write(&mut self, at: u64, data: &[u8]) -> Result<(), String> {
        self.mem.write(at, data).map_err(|e| e.to_string())
    }

    fn read(&mut self, at: u64, len: usize) -> Result<Vec<u8>, String> {
        self.mem.read(at, len).map_err(|e| e.to_string())
    }

    fn launch(
        &mut self,
        entry: &str,
        grid: [u32; 3],
        block: [u32; 3],
        args: &[kiln_cuda::runtime::Arg],
    ) -> Result<(), String> {
        use kiln_cuda::runtime::Arg;
        let m = self.module.as_ref().ok_or("no module loaded")?;
        let params: Vec<emu::Param> = (args.iter())
            .map(|a| match *a {
                Arg::U64(v) => emu::Param::U64(v),
                Arg::S64(v) => emu::Param::S64(v),
            })
            .collect();
        self.launches += 1;
        (m.launch(
            &mut self.mem,
            entry,
            grid,
            block,
            &params,
            &emu::Limits::default(),
        ))
        .map(drop)
        .map_err(|e| e.to_string())
    }
}
