//! Randomized fusion tests: graphs that plant LayerNorm, RMSNorm, GELU (both forms) and
//! SiLU in randomly chosen exporter spellings (operand orders, association, `pow` vs
//! products, `div`/`sqrt` vs `rsqrt` vs `reciprocal`, constants at different precisions),
//! at random shapes. The optimizer must fuse every planted pattern, and the fused graph must
//! compute what the unfused one does, under the interpreter and compiled for the CPU.
//! `KILN_FUSION_SEEDS` sets the number of seeds (default 60).

use kiln::ir::{interp, parse, print, Graph, Tensor};
use kiln::passes::{PassManager, RunOptions};
use std::collections::BTreeMap;

/// xorshift64*: small, deterministic, good enough to pick spellings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn flip(&mut self) -> bool {
        self.below(2) == 1
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A graph under construction as text, with fresh value names.
struct Text {
    lines: Vec<String>,
    next: usize,
}

impl Text {
    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("%v{}", self.next)
    }
    /// Emits `%new = body` and returns `%new`.
    fn emit(&mut self, body: String) -> String {
        let v = self.fresh();
        self.lines.push(format!("    {v} = {body}"));
        v
    }
    fn konst(&mut self, v: f64) -> String {
        self.emit(format!("const f32[] {v:?}"))
    }
    /// `a op b` with the operands in random order for commutative ops.
    fn comm(&mut self, rng: &mut Rng, op: &str, a: &str, b: &str) -> String {
        if rng.flip() {
            self.emit(format!("{op} {a}, {b}"))
        } else {
            self.emit(format!("{op} {b}, {a}"))
        }
    }
    /// `a · b · c` in a random association and order.
    fn product3(&mut self, rng: &mut Rng, f: [&str; 3]) -> String {
        let mut f = f.to_vec();
        for i in (1..3).rev() {
            f.swap(i, rng.below(i + 1));
        }
        let inner = self.comm(rng, "mul", f[0], f[1]);
        self.comm(rng, "mul", &inner, f[2])
    }
}

/// `x · x` as a product or a power.
fn square(t: &mut Text, rng: &mut Rng, x: &str) -> String {
    if rng.flip() {
        t.emit(format!("mul {x}, {x}"))
    } else {
        let two = t.konst(2.0);
        t.emit(format!("pow {x}, {two}"))
    }
}

/// `x · rsqrt(v + eps)` in one of four spellings.
fn normalize(t: &mut Text, rng: &mut Rng, x: &str, v: &str, eps: f64) -> String {
    let e = t.konst(eps);
    let ve = t.comm(rng, "add", v, &e);
    match rng.below(4) {
        0 => {
            let sd = t.emit(format!("sqrt {ve}"));
            t.emit(format!("div {x}, {sd}"))
        }
        1 => {
            let r = t.emit(format!("rsqrt {ve}"));
            t.comm(rng, "mul", x, &r)
        }
        2 => {
            let sd = t.emit(format!("sqrt {ve}"));
            let r = t.emit(format!("reciprocal {sd}"));
            t.comm(rng, "mul", x, &r)
        }
        _ => {
            let sd = t.emit(format!("sqrt {ve}"));
            let one = t.konst(1.0);
            let r = t.emit(format!("div {one}, {sd}"));
            t.comm(rng, "mul", x, &r)
        }
    }
}

/// The kinds of planted pattern and the op each must fuse into.
const KINDS: [&str; 5] = ["layer_norm", "rms_norm", "gelu", "gelu_tanh", "silu"];

fn plant(
    t: &mut Text,
    rng: &mut Rng,
    kind: &str,
    x: &str,
    s: &str,
    b: &str,
    last: usize,
) -> String {
    let mean = |t: &mut Text, v: &str| {
        t.emit(format!("reduce_mean {v} {{axes=[{last}], keep_dims=true}}"))
    };
    let eps = [1e-5, 1e-6, 1e-12][rng.below(3)];
    match kind {
        "layer_norm" | "rms_norm" => {
            let centered = if kind == "layer_norm" {
                let m = mean(t, x);
                t.emit(format!("sub {x}, {m}"))
            } else {
                x.to_string()
            };
            let sq = square(t, rng, &centered);
            let v = mean(t, &sq);
            let n = normalize(t, rng, &centered, &v, eps);
            let scaled = t.comm(rng, "mul", &n, s);
            if kind == "layer_norm" {
                t.comm(rng, "add", &scaled, b)
            } else {
                scaled
            }
        }
        "gelu" => {
            let arg = if rng.flip() {
                let k = t.konst(std::f32::consts::SQRT_2 as f64);
                t.emit(format!("div {x}, {k}"))
            } else {
                let k = t.konst(std::f64::consts::FRAC_1_SQRT_2);
                t.comm(rng, "mul", x, &k)
            };
            let e = t.emit(format!("erf {arg}"));
            let one = t.konst(1.0);
            let s1 = t.comm(rng, "add", &e, &one);
            let half = t.konst(0.5);
            t.product3(rng, [x, &half, &s1])
        }
        "gelu_tanh" => {
            let cube = if rng.flip() {
                let three = t.konst(3.0);
                t.emit(format!("pow {x}, {three}"))
            } else {
                t.product3(rng, [x, x, x])
            };
            let a = t.konst(0.044715);
            let ac = t.comm(rng, "mul", &cube, &a);
            let sum = t.comm(rng, "add", x, &ac);
            let k = t.konst([0.7978845608028654, 0.7978846][rng.below(2)]);
            let inner = t.comm(rng, "mul", &sum, &k);
            let th = t.emit(format!("tanh {inner}"));
            let one = t.konst(1.0);
            let s1 = t.comm(rng, "add", &th, &one);
            let half = t.konst(0.5);
            t.product3(rng, [x, &half, &s1])
        }
        _ => {
            let sg = t.emit(format!("sigmoid {x}"));
            t.comm(rng, "mul", x, &sg)
        }
    }
}

/// A random graph planting 1–4 patterns; returns its text and the planted count per kind.
fn generate(seed: u64) -> (String, BTreeMap<&'static str, usize>) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let rank = 1 + rng.below(3);
    let dims: Vec<String> = (0..rank).map(|_| (1 + rng.below(9)).to_string()).collect();
    let shape = dims.join(", ");
    let c = &dims[rank - 1];
    let mut t = Text {
        lines: Vec::new(),
        next: 0,
    };
    let mut planted = BTreeMap::new();
    let mut outputs = Vec::new();
    for i in 0..1 + rng.below(4) {
        let kind = KINDS[rng.below(KINDS.len())];
        // Each pattern reads its own value (computed from the inputs), so that cse cannot
        // merge two plantings of one kind into one.
        let source = if rng.flip() {
            "%x".to_string()
        } else {
            t.emit("add %x, %y".to_string())
        };
        let k = t.konst(1.0 + i as f64 / 8.0);
        let x = t.comm(&mut rng, "mul", &source, &k);
        let out = plant(&mut t, &mut rng, kind, &x, "%s", "%b", rank - 1);
        *planted.entry(kind).or_insert(0) += 1;
        outputs.push(out);
    }
    let types: Vec<String> = outputs.iter().map(|_| format!("f32[{shape}]")).collect();
    let text = format!(
        "graph @planted(%x: f32[{shape}], %y: f32[{shape}], %s: f32[{c}], %b: f32[{c}]) -> ({}) {{\n{}\n    return {}\n}}\n",
        types.join(", "),
        t.lines.join("\n"),
        outputs.join(", ")
    );
    (text, planted)
}

fn inputs(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng(seed ^ 0x5555_5555 | 1);
    g.inputs
        .iter()
        .map(|(_, v)| {
            let shape = g.value_type(*v).const_shape().expect("static shapes");
            let n: usize = shape.iter().product();
            let data = (0..n).map(|_| rng.unit() * 4.0 - 2.0).collect();
            Tensor::from_vec(data, &shape).expect("sized")
        })
        .collect()
}

fn close(want: &Tensor, got: &Tensor) -> Result<(), String> {
    let (w, g) = (want.to_f64_vec(), got.to_f64_vec());
    for (i, (a, b)) in w.iter().zip(&g).enumerate() {
        if (a - b).abs() > 1e-5 + 1e-4 * a.abs() {
            return Err(format!("element {i}: {b} vs {a}"));
        }
    }
    Ok(())
}

fn check(seed: u64) -> Result<(), String> {
    let (text, planted) = generate(seed);
    let original = parse(&text).map_err(|e| format!("parse: {e}\n{text}"))?;
    let mut fused = original.clone();
    let opts = RunOptions {
        stop_after: None,
        verify: true,
    };
    PassManager::default_pipeline()
        .run(&mut fused, &opts)
        .map_err(|e| e.to_string())?;
    for (kind, n) in &planted {
        let found = fused.nodes.iter().filter(|n| n.op.name() == *kind).count();
        if found != *n {
            return Err(format!(
                "{kind}: planted {n}, fused {found}\n{text}\n{}",
                print(&fused)
            ));
        }
    }
    let x = inputs(&original, seed);
    let want = interp::run(&original, &x).map_err(|e| e.to_string())?;
    let got = interp::run(&fused, &x).map_err(|e| e.to_string())?;
    let options = kiln::cpu::Options {
        threads: 2,
        ..Default::default()
    };
    let compiled = kiln::cpu::CompiledModel::new(fused.clone(), &options);
    let jit = compiled
        .map_err(|e| e.to_string())?
        .run(&x)
        .map_err(|e| e.to_string())?;
    for (i, w) in want.iter().enumerate() {
        close(w, &got[i]).map_err(|e| format!("interp, output {i}: {e}\n{text}"))?;
        close(w, &jit[i]).map_err(|e| format!("cpu, output {i}: {e}\n{text}"))?;
    }
    Ok(())
}

#[test]
fn planted_patterns_fuse_in_every_spelling_and_keep_their_values() {
    let seeds: u64 = std::env::var("KILN_FUSION_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let failures: Vec<String> = (0..seeds)
        .filter_map(|s| check(s).err().map(|e| format!("seed {s}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
