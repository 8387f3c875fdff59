//! Helpers shared by the integration tests: wrapping a kernel body in a
//! module with a standard register set and running it on one thread.

#![allow(dead_code)]

use kiln_ptx_emu::{EmuError, LaunchStats, Limits, Memory, Module, Param};

pub const HEADER: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

/// A module with one entry `k(.param .u64 p0)` whose body declares
/// `%p<8> %h<8> %r<32> %rd<32> %f<32> %fd<8>`, loads p0 into `%rd0`, then
/// runs `body`. The body starts on line 15.
pub fn kernel(body: &str) -> String {
    format!(
        "{HEADER}.visible .entry k(\n\t.param .u64 p0\n)\n{{\n\
         \t.reg .pred %p<8>;\n\t.reg .b16 %h<8>;\n\t.reg .b32 %r<32>;\n\
         \t.reg .b64 %rd<32>;\n\t.reg .f32 %f<32>;\n\t.reg .f64 %fd<8>;\n\
         \tld.param.u64 %rd0, [p0];\n{body}\n\tret;\n}}\n"
    )
}

/// Runs `body` (see [`kernel`]) on one thread with a 256-byte zeroed
/// output buffer at `%rd0`; returns the buffer.
pub fn try_run(body: &str) -> Result<(Memory, u64, LaunchStats), EmuError> {
    let m = Module::parse(&kernel(body)).unwrap_or_else(|e| panic!("{e}"));
    let mut mem = Memory::new();
    let out = mem.alloc(256);
    let stats = m.launch(
        &mut mem,
        "k",
        [1; 3],
        [1; 3],
        &[Param::U64(out)],
        &Limits::default(),
    )?;
    Ok((mem, out, stats))
}

/// Runs `body` and returns the first `n` u32 words of the output buffer.
pub fn run_u32s(body: &str, n: usize) -> Vec<u32> {
    let (mem, out, _) = try_run(body).unwrap_or_else(|e| panic!("{e}"));
    mem.read_u32s(out, n).unwrap()
}

/// Runs `body` and returns the first `n` f32 words of the output buffer.
pub fn run_f32s(body: &str, n: usize) -> Vec<f32> {
    run_u32s(body, n).into_iter().map(f32::from_bits).collect()
}

/// `0fXXXXXXXX` for an f32 immediate.
pub fn f(x: f32) -> String {
    format!("0f{:08X}", x.to_bits())
}
