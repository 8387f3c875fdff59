//! libFuzzer entry of the `parse` target; the logic is `kiln_fuzz::parse` (fuzz/harness).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln_fuzz::parse::run(data));
