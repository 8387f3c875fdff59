//! Compiles the vendored `onnx.proto` with protox (pure Rust, no `protoc`).
fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"]).expect("onnx.proto compiles");
    prost_build::Config::new()
        .compile_fds(fds)
        .expect("prost generates ONNX types");
}
