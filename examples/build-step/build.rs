//! Compiles tests/models/bert_tiny.onnx ahead of time for batch 1..2 and seq 4..16, and the
//! decoder tests/models/gpt2_kv.onnx for a past of up to 128 tokens: for each a static
//! library linked into this crate and a Rust module (`bert.rs`, `gpt2.rs`) that
//! src/main.rs includes.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = manifest.join("../../tests/models/bert_tiny.onnx");
    let built = kiln::build::Model::new(&model)
        .name("bert")
        .dim("batch", 1, 2)
        .dim("seq", 4, 16)
        .compile_to(&out);
    if let Err(e) = built {
        eprintln!("error: compiling {}: {e}", model.display());
        std::process::exit(1);
    }
    let decoder = manifest.join("../../tests/models/gpt2_kv.onnx");
    let built = kiln::build::Model::new(&decoder)
        .name("gpt2")
        .dim("batch_size", 1, 1)
        .dim("past_sequence_length", 0, 128)
        .dim("sequence_length", 1, 128)
        .compile_to(&out);
    if let Err(e) = built {
        eprintln!("error: compiling {}: {e}", decoder.display());
        std::process::exit(1);
    }
}
