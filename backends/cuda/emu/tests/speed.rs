//! A long loop of simple integer instructions (6.4 million of them) computes its sum, and
//! the test prints the interpreter's rate. Speed is reported, never asserted: the machine
//! is shared and its speed moves from day to day.

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
    let mut mem = Memory::new();
    let out = mem.alloc(4);
    let t = Instant::now();
    let s = m
        .launch(
            &mut mem,
            "k",
            [4, 1, 1],
            [8, 1, 1],
            &[Param::U64(out)],
            &Limits::default(),
        )
        .unwrap();
    let rate = s.instructions as f64 / t.elapsed().as_secs_f64();
    eprintln!("{} instructions, {:.1} M/s", s.instructions, rate / 1e6);
    assert_eq!(
        mem.read_u32s(out, 1).unwrap()[0],
        (0..200000u32).fold(0u32, |a, i| a.wrapping_add(i))
    );
}
