//! libFuzzer entry of the `graph` target; the logic is `kiln_fuzz::graph` (fuzz/harness).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln_fuzz::graph::run(data));
