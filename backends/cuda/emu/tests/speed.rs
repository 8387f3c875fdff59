//! A long loop of simple integer instructions (32 million of them) computes its sum, and
//! the test prints the interpreter's rate; a second loop does the same with a shared-memory
//! exchange, a `bar.sync` and a `shfl.sync` per iteration. Speed is reported, never
//! asserted: the machine is shared and its speed moves from day to day.

mod common;

use std::time::Instant;

use common::kernel;
use kiln_ptx_emu::{Limits, Memory, Module, Param};

#[test]
fn a_long_loop_sums_and_reports_its_rate() {
    let m = Module::parse(&kernel(
        "mov.u32 %r1, 0;\n mov.u32 %r2, 0;\n\
         $L0:\n add.u32 %r2, %r2, %r1;\n xor.b32 %r3, %r2, 7;\n add.u32 %r1, %r1, 1;\n\
         setp.lt.u32 %p1, %r1, 200000;\n @%p1 bra $L0;\n st.global.u32 [%rd0], %r2;",
    ))
    .unwrap();
    assert_eq!(
        timed("integer loop", &m, [8, 1, 1]),
        (0..200000u32).fold(0u32, |a, i| a.wrapping_add(i))
    );
}

/// Runs entry `k` over 4 CTAs of `block` threads with one output word, prints the rate,
/// and returns the word.
fn timed(what: &str, m: &Module, block: [u32; 3]) -> u32 {
    let mut mem = Memory::new();
    let out = mem.alloc(4);
    let t = Instant::now();
    let params = [Param::U64(out)];
    let s = (m.launch(&mut mem, "k", [4, 1, 1], block, &params, &Limits::default())).unwrap();
    let rate = s.instructions as f64 / t.elapsed().as_secs_f64();
    eprintln!(
        "{what}: {} instructions, {:.1} M/s",
        s.instructions,
        rate / 1e6
    );
    mem.read_u32s(out, 1).unwrap()[0]
}

#[test]
fn a_synchronizing_loop_reports_its_rate() {
    // 64 threads, 2000 iterations: each writes smem[tid], waits, reads its
    // neighbour's word, waits again, and adds its warp partner's value.
    let m = Module::parse(&kernel(
        ".shared .align 4 .b32 smem[64];\n mov.u32 %r1, %tid.x;\n mov.u32 %r2, smem;\n\
         shl.b32 %r3, %r1, 2;\n add.u32 %r3, %r3, %r2;\n xor.b32 %r4, %r3, 4;\n\
         mov.u32 %r5, 0;\n mov.u32 %r6, 0;\n\
         $L0:\n st.shared.u32 [%r3], %r5;\n bar.sync 0;\n ld.shared.u32 %r7, [%r4];\n\
         shfl.sync.bfly.b32 %r8, %r7, 1, 0x1f, 0xffffffff;\n add.u32 %r6, %r6, %r8;\n\
         bar.sync 0;\n add.u32 %r5, %r5, 1;\n setp.lt.u32 %p1, %r5, 2000;\n @%p1 bra $L0;\n\
         setp.eq.u32 %p2, %r1, 0;\n @%p2 st.global.u32 [%rd0], %r6;",
    ))
    .unwrap();
    // Thread 0 reads thread 1's word, whose shuffle partner (thread 1)
    // passes back thread 0's iteration count: the sum of 0..2000.
    let word = timed("synchronizing loop", &m, [64, 1, 1]);
    assert_eq!(word, (0..2000u32).sum::<u32>());
}
