//! Whole kernels and instruction semantics, checked through launches.

mod common;

use common::{f, run_f32s, run_u32s, HEADER};
use kiln_ptx_emu::{Limits, Memory, Module, Param, Type};

const VADD: &str = "
.visible .entry vadd(
	.param .u64 p0,
	.param .u64 p1,
	.param .u64 p2,
	.param .s64 p3
)
{
	.reg .pred %p<4>;
	.reg .b32 %r<10>;
	.reg .b64 %rd<20>;
	.reg .f32 %f<8>;

	ld.param.u64 %rd1, [p0];
	ld.param.u64 %rd10, [p1];
	ld.param.u64 %rd11, [p2];
	ld.param.s64 %rd9, [p3];
	cvta.to.global.u64 %rd2, %rd1;
	cvta.to.global.u64 %rd12, %rd10;
	cvta.to.global.u64 %rd13, %rd11;
	mov.u32 %r1, %tid.x;
	mov.u32 %r2, %ntid.x;
	mov.u32 %r3, %ctaid.x;
	mov.u32 %r4, %nctaid.x;
	mul.wide.u32 %rd3, %r3, %r2;
	cvt.u64.u32 %rd4, %r1;
	add.s64 %rd5, %rd3, %rd4;
	mul.wide.u32 %rd8, %r4, %r2;
$L0:
	setp.ge.s64 %p1, %rd5, %rd9;
	@%p1 bra $L1;
	shl.b64 %rd6, %rd5, 2;
	add.s64 %rd7, %rd2, %rd6;
	add.s64 %rd14, %rd12, %rd6;
	add.s64 %rd15, %rd13, %rd6;
	ld.global.f32 %f1, [%rd7];
	ld.global.nc.f32 %f2, [%rd14];
	add.rn.f32 %f3, %f1, %f2;
	st.global.f32 [%rd15], %f3;
	add.s64 %rd5, %rd5, %rd8;
	bra.uni $L0;
$L1:
	ret;
}
";

#[test]
fn vector_add_over_several_ctas() {
    let m = Module::parse(&format!("{HEADER}{VADD}")).unwrap();
    let sig: Vec<_> = m.entries().collect();
    assert_eq!(sig[0].name, "vadd");
    assert_eq!(sig[0].params[3].ty, Type::S64);
    let n = 1000;
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..n).map(|i| 1000.0 - i as f32).collect();
    let mut mem = Memory::new();
    let (pa, pb, pc) = (mem.alloc_f32s(&a), mem.alloc_f32s(&b), mem.alloc(4 * n));
    let params = [
        Param::U64(pa),
        Param::U64(pb),
        Param::U64(pc),
        Param::S64(n as i64),
    ];
    // 4 x 96 threads < 1000 elements, so the grid-stride loop runs.
    let stats = m
        .launch(
            &mut mem,
            "vadd",
            [4, 1, 1],
            [96, 1, 1],
            &params,
            &Limits::default(),
        )
        .unwrap();
    assert_eq!(stats.threads, 384);
    let c = mem.read_f32s(pc, n).unwrap();
    for i in 0..n {
        assert_eq!(c[i], a[i] + b[i], "element {i}");
    }
    assert!(stats.instructions > 1000 * 10);
}

#[test]
fn guards_and_backward_branch_loop() {
    // sum = 0 + 1 + ... + 9; @!%p guards the exit test.
    let out = run_u32s(
        "mov.u32 %r1, 0;\n mov.u32 %r2, 0;\n mov.u32 %r9, 7;\n\
         $Lloop:\n add.u32 %r2, %r2, %r1;\n add.u32 %r1, %r1, 1;\n\
         setp.lt.u32 %p1, %r1, 10;\n @%p1 bra $Lloop;\n\
         setp.eq.u32 %p2, %r2, 45;\n @!%p2 mov.u32 %r9, 1;\n @%p2 mov.u32 %r9, 2;\n\
         st.global.u32 [%rd0], %r2;\n st.global.u32 [%rd0+4], %r9;",
        2,
    );
    assert_eq!(out, [45, 2]);
}

#[test]
fn selp_picks_by_predicate() {
    let out = run_u32s(
        "setp.gt.s32 %p1, -1, 0;\n selp.b32 %r1, 10, 20, %p1;\n selp.u32 %r2, 10, 20, 1;\n\
         st.global.u32 [%rd0], %r1;\n st.global.u32 [%rd0+4], %r2;",
        2,
    );
    assert_eq!(out, [20, 10]);
}

#[test]
fn setp_unsigned_vs_signed() {
    let out = run_u32s(
        "setp.lt.u32 %p1, -1, 1;\n setp.lt.s32 %p2, -1, 1;\n\
         selp.u32 %r1, 1, 0, %p1;\n selp.u32 %r2, 1, 0, %p2;\n\
         st.global.u32 [%rd0], %r1;\n st.global.u32 [%rd0+4], %r2;",
        2,
    );
    assert_eq!(out, [0, 1]);
}

#[test]
fn setp_nan_ordered_and_unordered() {
    let cmps = [
        "eq", "ne", "lt", "le", "gt", "ge", "equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan",
    ];
    let mut body = format!("mov.f32 %f1, 0f7FC00000;\n mov.f32 %f2, {};\n", f(1.0));
    for (i, c) in cmps.iter().enumerate() {
        body += &format!(
            "setp.{c}.f32 %p1, %f1, %f2;\n selp.u32 %r1, 1, 0, %p1;\n st.global.u32 [%rd0+{}], %r1;\n\
             setp.{c}.f32 %p1, %f2, %f2;\n selp.u32 %r1, 1, 0, %p1;\n st.global.u32 [%rd0+{}], %r1;\n",
            8 * i,
            8 * i + 4
        );
    }
    let out = run_u32s(&body, 2 * cmps.len());
    let with_nan: Vec<u32> = out.iter().step_by(2).copied().collect();
    let equal: Vec<u32> = out.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(with_nan, [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1]);
    assert_eq!(equal, [1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0]);
}

#[test]
fn min_max_nan_variants() {
    let body = format!(
        "mov.f32 %f1, 0f7FC00000;\n mov.f32 %f2, {};\n\
         min.f32 %f3, %f1, %f2;\n max.f32 %f4, %f2, %f1;\n\
         min.NaN.f32 %f5, %f1, %f2;\n max.NaN.f32 %f6, %f2, %f1;\n\
         min.f32 %f7, %f1, %f1;\n min.f32 %f8, 0f00000000, 0f80000000;\n\
         max.f32 %f9, 0f80000000, 0f00000000;\n min.NaN.f32 %f10, %f2, 0f40000000;\n\
         st.global.f32 [%rd0], %f3;\n st.global.f32 [%rd0+4], %f4;\n\
         st.global.f32 [%rd0+8], %f5;\n st.global.f32 [%rd0+12], %f6;\n\
         st.global.f32 [%rd0+16], %f7;\n st.global.f32 [%rd0+20], %f8;\n\
         st.global.f32 [%rd0+24], %f9;\n st.global.f32 [%rd0+28], %f10;",
        f(3.0)
    );
    let out = run_f32s(&body, 8);
    assert_eq!(out[0], 3.0);
    assert_eq!(out[1], 3.0);
    assert!(out[2].is_nan() && out[3].is_nan() && out[4].is_nan());
    assert_eq!(out[5].to_bits(), 0x8000_0000);
    assert_eq!(out[6].to_bits(), 0);
    assert_eq!(out[7], 2.0);
}

#[test]
fn cvt_float_to_int_saturates_and_rounds() {
    let cases: &[(&str, f32, i64)] = &[
        ("rzi.s32.f32", 3e9, i32::MAX as i64),
        ("rzi.s32.f32", -3e9, i32::MIN as i64),
        ("rzi.s32.f32", f32::NAN, 0),
        ("rzi.u32.f32", -1.0, 0),
        ("rni.u32.f32", 5e9, u32::MAX as i64),
        ("rni.s32.f32", 2.5, 2),
        ("rni.s32.f32", 3.5, 4),
        ("rni.s32.f32", -2.5, -2),
        ("rzi.s32.f32", -2.7, -2),
        ("rmi.s32.f32", -2.5, -3),
        ("rpi.s32.f32", 2.1, 3),
        ("rpi.s32.f32", -2.5, -2),
        ("rzi.s8.f32", 300.0, 127),
        ("rzi.u8.f32", -5.0, 0),
    ];
    let mut body = String::new();
    for (i, (m, x, _)) in cases.iter().enumerate() {
        body += &format!(
            "cvt.{m} %r1, {};\n st.global.u32 [%rd0+{}], %r1;\n",
            f(*x),
            4 * i
        );
    }
    let out = run_u32s(&body, cases.len());
    for (i, (m, x, want)) in cases.iter().enumerate() {
        // s8 results are sign-extended into the 32-bit register.
        assert_eq!(out[i], *want as u32, "cvt.{m} {x}");
    }
}

#[test]
fn cvt_integers_floats_and_rounding_to_integral() {
    let body = format!(
        "mov.s32 %r1, -5;\n cvt.s64.s32 %rd1, %r1;\n cvt.u64.u32 %rd2, %r1;\n\
         st.global.u64 [%rd0], %rd1;\n st.global.u64 [%rd0+8], %rd2;\n\
         cvt.u8.u32 %r2, %r1;\n cvt.s16.s32 %r3, %r1;\n cvt.sat.u8.s32 %r4, %r1;\n\
         st.global.u32 [%rd0+16], %r2;\n st.global.u32 [%rd0+20], %r3;\n st.global.u32 [%rd0+24], %r4;\n\
         cvt.rn.f32.s32 %f1, %r1;\n st.global.f32 [%rd0+28], %f1;\n\
         mov.u32 %r5, 16777217;\n cvt.rn.f32.u32 %f2, %r5;\n st.global.f32 [%rd0+32], %f2;\n\
         cvt.rni.f32.f32 %f3, {x};\n cvt.rzi.f32.f32 %f4, {y};\n\
         cvt.rmi.f32.f32 %f5, {y};\n cvt.rpi.f32.f32 %f6, {x};\n\
         st.global.f32 [%rd0+36], %f3;\n st.global.f32 [%rd0+40], %f4;\n\
         st.global.f32 [%rd0+44], %f5;\n st.global.f32 [%rd0+48], %f6;\n\
         cvt.f64.f32 %fd1, {x};\n cvt.rn.f32.f64 %f7, %fd1;\n st.global.f32 [%rd0+52], %f7;",
        x = f(2.5),
        y = f(-2.5)
    );
    let out = run_u32s(&body, 14);
    assert_eq!((out[0], out[1]), (0xffff_fffb, 0xffff_ffff));
    assert_eq!((out[2], out[3]), (0xffff_fffb, 0));
    assert_eq!(out[4], 0xfb);
    assert_eq!(out[5], 0xffff_fffb);
    assert_eq!(out[6], 0);
    let fl: Vec<f32> = out[7..].iter().map(|&b| f32::from_bits(b)).collect();
    assert_eq!(fl, [-5.0, 16777216.0, 2.0, -2.0, -3.0, 3.0, 2.5]);
}

#[test]
fn copysign_uses_ptx_operand_order() {
    let body = format!(
        "copysign.f32 %f1, {}, {};\n copysign.f32 %f2, {}, {};\n\
         st.global.f32 [%rd0], %f1;\n st.global.f32 [%rd0+4], %f2;",
        f(-1.0),
        f(2.0),
        f(3.0),
        f(-4.0)
    );
    assert_eq!(run_f32s(&body, 2), [-2.0, 4.0]);
}

#[test]
fn float_arithmetic() {
    let body = format!(
        "mov.f32 %f1, {};\n mov.f32 %f2, {};\n\
         fma.rn.f32 %f3, %f1, %f2, {};\n div.rn.f32 %f4, %f1, %f2;\n\
         sqrt.rn.f32 %f5, %f2;\n rcp.rn.f32 %f6, %f2;\n neg.f32 %f7, %f1;\n abs.f32 %f8, %f7;\n\
         ex2.approx.f32 %f9, %f2;\n sub.rn.f32 %f10, %f1, %f2;\n mul.rn.f32 %f11, %f1, %f2;\n\
         st.global.f32 [%rd0], %f3;\n st.global.f32 [%rd0+4], %f4;\n st.global.f32 [%rd0+8], %f5;\n\
         st.global.f32 [%rd0+12], %f6;\n st.global.f32 [%rd0+16], %f7;\n st.global.f32 [%rd0+20], %f8;\n\
         st.global.f32 [%rd0+24], %f9;\n st.global.f32 [%rd0+28], %f10;\n st.global.f32 [%rd0+32], %f11;",
        f(3.0),
        f(4.0),
        f(0.5)
    );
    assert_eq!(
        run_f32s(&body, 9),
        [12.5, 0.75, 2.0, 0.25, -3.0, 3.0, 16.0, -1.0, 12.0]
    );
}

#[test]
fn sub_word_loads_extend_and_stores_truncate() {
    let body = "mov.u32 %r1, 0x8081FFFE;\n st.global.u32 [%rd0], %r1;\n\
         ld.global.s8 %r2, [%rd0+3];\n ld.global.u8 %r3, [%rd0+3];\n\
         ld.global.s16 %rd4, [%rd0];\n ld.global.u16 %rd5, [%rd0];\n ld.global.b8 %r6, [%rd0+2];\n\
         ld.global.s8 %h1, [%rd0+1];\n cvt.u32.u16 %r7, %h1;\n\
         st.global.u32 [%rd0+8], %r2;\n st.global.u32 [%rd0+12], %r3;\n\
         st.global.u64 [%rd0+16], %rd4;\n st.global.u64 [%rd0+24], %rd5;\n\
         st.global.u32 [%rd0+32], %r6;\n st.global.u32 [%rd0+36], %r7;\n\
         st.global.u8 [%rd0+40], %r1;\n st.global.b16 [%rd0+44], %r1;";
    let out = run_u32s(body, 12);
    assert_eq!(out[2], 0xffff_ff80);
    assert_eq!(out[3], 0x80);
    assert_eq!((out[4], out[5]), (0xffff_fffe, 0xffff_ffff));
    assert_eq!((out[6], out[7]), (0xfffe, 0));
    assert_eq!(out[8], 0x81);
    assert_eq!(out[9], 0xffff);
    assert_eq!(out[10], 0xfe);
    assert_eq!(out[11], 0xfffe);
}

#[test]
fn integer_division_and_remainder_on_negatives() {
    let body =
        "div.s32 %r1, -7, 2;\n rem.s32 %r2, -7, 2;\n rem.s32 %r3, 7, -2;\n div.u32 %r4, -7, 2;\n\
         mov.s64 %rd1, -9223372036854775808;\n div.s64 %rd2, %rd1, -1;\n rem.s64 %rd3, %rd1, -1;\n\
         mul.hi.s32 %r5, -2, 0x40000000;\n mad.lo.s32 %r6, -3, 5, 100;\n\
         st.global.u32 [%rd0], %r1;\n st.global.u32 [%rd0+4], %r2;\n\
         st.global.u32 [%rd0+8], %r3;\n st.global.u32 [%rd0+12], %r4;\n\
         st.global.u64 [%rd0+16], %rd2;\n st.global.u64 [%rd0+24], %rd3;\n\
         st.global.u32 [%rd0+32], %r5;\n st.global.u32 [%rd0+36], %r6;";
    let out = run_u32s(body, 10);
    assert_eq!(out[0] as i32, -3);
    assert_eq!(out[1] as i32, -1);
    assert_eq!(out[2] as i32, 1);
    assert_eq!(out[3], 0xffff_fff9 / 2);
    assert_eq!((out[4], out[5]), (0, 0x8000_0000));
    assert_eq!((out[6], out[7]), (0, 0));
    assert_eq!(out[8] as i32, -1);
    assert_eq!(out[9], 85);
}

#[test]
fn f16_and_bf16_round_trips() {
    // 1 + 2^-11 is a tie between 1.0 and the next f16; even wins (1.0).
    // 1 + 3*2^-11 ties between odd and even mantissas; it rounds up.
    let vals = [
        1.0,
        -2.5,
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        65504.0,
    ];
    let mut body = String::new();
    for (i, v) in vals.iter().enumerate() {
        body += &format!(
            "cvt.rn.f16.f32 %h1, {x};\n cvt.f32.f16 %f1, %h1;\n st.global.f32 [%rd0+{a}], %f1;\n\
             cvt.rn.bf16.f32 %h2, {x};\n cvt.f32.bf16 %f2, %h2;\n st.global.f32 [%rd0+{b}], %f2;\n\
             st.global.b16 [%rd0+{c}], %h1;\n",
            x = f(*v),
            a = 8 * i,
            b = 8 * i + 4,
            c = 100 + 4 * i,
        );
    }
    let out = run_u32s(&body, 30);
    let fl: Vec<f32> = out[..10].iter().map(|&b| f32::from_bits(b)).collect();
    assert_eq!(fl[0..2], [1.0, 1.0]);
    assert_eq!(fl[2..4], [-2.5, -2.5]);
    assert_eq!(fl[4], 1.0);
    assert_eq!(fl[6], 1.0 + 4.0 * 2f32.powi(-11));
    assert_eq!(fl[8], 65504.0);
    assert_eq!(fl[9], 65536.0); // bf16 rounds 65504 up to 2^16
    assert_eq!(out[25] & 0xffff, 0x3c00);
    assert_eq!(out[27] & 0xffff, 0x3c00);
    assert_eq!(out[28] & 0xffff, 0x3c02);
}

#[test]
fn bit_logic_shifts_and_special_registers() {
    let m = Module::parse(&common::kernel(
        "mov.u32 %r1, %tid.y;\n mov.u32 %r2, %ctaid.z;\n mov.u32 %r3, %ntid.x;\n\
         shl.b32 %r4, 1, %r1;\n shr.s32 %r5, -16, 2;\n shr.u32 %r6, -16, 28;\n\
         and.b32 %r7, %r4, 6;\n not.b32 %r8, %r7;\n xor.b32 %r9, %r8, -1;\n\
         setp.ne.u32 %p1, %r1, 0;\n not.pred %p2, %p1;\n selp.u32 %r10, 5, 6, %p2;\n\
         neg.s32 %r11, %r3;\n abs.s32 %r12, %r11;\n max.s32 %r13, %r11, -100;\n min.u32 %r14, %r11, 7;\n\
         mad.lo.u32 %r15, %r1, 10, %r2;\n mul.wide.u32 %rd1, %r15, 4;\n add.s64 %rd2, %rd0, %rd1;\n\
         st.global.u32 [%rd2], %r4;\n st.global.u32 [%rd2+-64], %r5;",
    ))
    .unwrap();
    let mut mem = Memory::new();
    let out = mem.alloc(256);
    let base = Param::U64(out + 64);
    m.launch(
        &mut mem,
        "k",
        [1, 1, 2],
        [2, 3, 1],
        &[base],
        &Limits::default(),
    )
    .unwrap();
    let v = mem.read_u32s(out, 64).unwrap();
    // Threads with tid.y = 1 (any tid.x) in CTA z = 1 write 1 << 1 at word 16 + 11.
    assert_eq!(v[16 + 11], 2);
    assert_eq!(v[16 + 21], 4);
    assert_eq!(v[16 + 20], 4);
    assert_eq!(v[16], 1);
    assert_eq!(v[0], (-4i32) as u32);
}
