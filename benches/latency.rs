//! Whole-model latency: compiles each model with the CPU backend and prints the median,
//! p10 and p90 of repeated runs, one JSON line per model.
//!
//! `cargo bench --bench latency` covers the vendored tiny models (tests/models); set
//! `KILN_BENCH_MODELS=DIR` to time the models in DIR instead, each on its
//! `NAME.b1s128.inputs.npz` when present (else `NAME.inputs.npz`). `--threads N` and
//! `--runs N` override the defaults (every core, 20 runs).

use kiln::ir::Tensor;
use kiln::{Model, Options};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let threads = flag("--threads").unwrap_or_else(|| Options::default().threads);
    let runs = flag("--runs").unwrap_or(20);
    let dir = std::env::var_os("KILN_BENCH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models"));
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("model folder")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    for path in models {
        match bench(&path, threads, runs) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("{}: {e}", path.display()),
        }
    }
}

fn inputs_for(path: &Path) -> Option<PathBuf> {
    let stem = path.file_stem()?.to_str()?;
    let dir = path.parent()?;
    [".b1s128.inputs.npz", ".inputs.npz"]
        .iter()
        .map(|s| dir.join(format!("{stem}{s}")))
        .find(|p| p.is_file())
}

fn bench(path: &Path, threads: usize, runs: usize) -> Result<String, Box<dyn std::error::Error>> {
    let npz = inputs_for(path).ok_or("no inputs .npz beside the model")?;
    let inputs: BTreeMap<String, Tensor> = kiln::npz::read_npz(&npz)?.into_iter().collect();
    let start = Instant::now();
    let opts = Options {
        threads,
        optimize: true,

        ..Options::default()
    };
    let model = Model::load_binding(path, &Default::default(), &inputs)?.compile(&opts)?;
    model.prepare(&inputs)?;
    let compile_ms = start.elapsed().as_secs_f64() * 1e3;
    model.run(&inputs)?;
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            model.run(&inputs).map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()?;
    times.sort_by(f64::total_cmp);
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    Ok(format!(
        "{{\"model\":\"{}\",\"inputs\":\"{}\",\"threads\":{threads},\"compile_ms\":{compile_ms:.3},\"median_ms\":{:.3},\"p10_ms\":{:.3},\"p90_ms\":{:.3}}}",
        path.display(),
        npz.display(),
        at(0.5),
        at(0.1),
        at(0.9)
    ))
}
