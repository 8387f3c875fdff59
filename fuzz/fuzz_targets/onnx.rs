//! libFuzzer entry of the `onnx` target; the logic is `kiln_fuzz::onnx` (fuzz/harness).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln_fuzz::onnx::run(data));
