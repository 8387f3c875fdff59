//! Device tests: the vendored f32 models on a real GPU through `kiln::gpu::GpuModel` (the
//! path `--backend cuda` takes), against the reference interpreter and the CPU backend,
//! within 1e-3 relative / 1e-5 absolute, at the models' own inputs and then again (the
//! loaded model reused). Without a CUDA driver or device each test prints why it skips.

#[path = "../backends/cuda/tests/common/mod.rs"]
mod common;

use common::close;
use kiln::npz::read_npz;
use kiln::Model;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(name)
}

/// The device, or `None` after printing which test skips and why.
fn device(test: &str) -> Option<kiln::cuda::device::Device> {
    match kiln::gpu::device() {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

#[test]
fn vendored_models_on_the_device_match_the_interpreter_and_the_cpu() {
    let Some(dev) = device("vendored_models_on_the_device") else {
        return;
    };
    eprintln!(
        "device: {} (sm_{}{})",
        dev.name, dev.capability.0, dev.capability.1
    );
    for name in common::VENDORED_F32_MODELS {
        let model = Model::load(path(&format!("{name}.onnx")))
            .unwrap()
            .optimize()
            .unwrap();
        let inputs: BTreeMap<_, _> = read_npz(&path(&format!("{name}.inputs.npz")))
            .unwrap()
            .into_iter()
            .collect();
        let want = model.run(&inputs).unwrap();
        let cpu = model
            .compile(&kiln::Options::default())
            .unwrap()
            .run(&inputs)
            .unwrap();
        let mut gpu = kiln::gpu::GpuModel::new(&model, kiln::cuda::Precision::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for round in 0..2 {
            let got = gpu.run(&inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
            for (((n, g), (_, w)), (_, c)) in got.iter().zip(&want).zip(&cpu) {
                close(g, w).unwrap_or_else(|e| panic!("{name} {n} (round {round}) vs interp: {e}"));
                close(g, c).unwrap_or_else(|e| panic!("{name} {n} (round {round}) vs cpu: {e}"));
            }
        }
        eprintln!("{name}: device outputs match");
    }
}

#[test]
fn quantized_models_are_refused_by_name_on_the_device() {
    if device("quantized_models_are_refused_by_name_on_the_device").is_none() {
        return;
    }
    let model = Model::load(path("bert_tiny_int4.onnx"))
        .unwrap()
        .optimize()
        .unwrap();
    let err = kiln::gpu::GpuModel::new(&model, kiln::cuda::Precision::default())
        .err()
        .expect("quant_linear has no PTX yet");
    assert!(err.to_string().contains("quant_linear"), "{err}");
}
