//! Compiles the vendored `onnx.proto` with protox (pure Rust, no `protoc`).
fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"]).expect("onnx.proto compiles");
    // `raw_data` as `Bytes`: decoded from a mapped model file, it is a slice of the map
    // rather than a copy, and a large weight is read in place from it.
    prost_build::Config::new()
        .bytes([".onnx.TensorProto.raw_data"])
        .compile_fds(fds)
        .expect("prost generates ONNX types");
}
