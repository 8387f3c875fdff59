//! Compiles tests/models/bert_tiny.onnx ahead of time for batch 1..2 and seq 4..16, and the
//! decoder tests/models/gpt2_kv.onnx for a past of up to 128 tokens: for each a static
//! library linked into this crate and a Rust module (`bert.rs`, `gpt2.rs`) that
//! src/main.rs includes.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/models");
    let bert = kiln::build::Model::new(models.join("bert_tiny.onnx"))
        .name("bert")
        .dim("batch", 1, 2)
        .dim("seq", 4, 16);
    let gpt2 = kiln::build::Model::new(models.join("gpt2_kv.onnx"))
        .name("gpt2")
        .dim("batch_size", 1, 1)
        .dim("past_sequence_length", 0, 128)
        .dim("sequence_length", 1, 128);
    for (file, model) in [("bert_tiny.onnx", bert), ("gpt2_kv.onnx", gpt2)] {
        if let Err(e) = model.compile_to(&out) {
            eprintln!("error: compiling {file}: {e}");
            std::process::exit(1);
        }
    }
}
