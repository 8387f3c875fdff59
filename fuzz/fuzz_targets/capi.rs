//! libFuzzer entry of the `capi` target; the logic is `kiln_fuzz::capi` (fuzz/harness).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln_fuzz::capi::run(data));
