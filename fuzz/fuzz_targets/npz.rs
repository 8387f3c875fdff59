//! libFuzzer entry of the `npz` target; the logic is `kiln_fuzz::npz` (fuzz/harness).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln_fuzz::npz::run(data));
