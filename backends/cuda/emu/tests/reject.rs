//! Everything outside the dialect, and undefined behaviour at run time,
//! must be a hard error.

mod common;

use common::{kernel, try_run, HEADER};
use kiln_ptx_emu::{EmuError, Limits, Memory, Module, Param};

/// The parse error for `body`; the body's first line is line 15.
fn parse_err(body: &str) -> kiln_ptx_emu::ParseError {
    Module::parse(&kernel(body)).expect_err("must not parse")
}

#[test]
fn unknown_instruction_names_the_line() {
    let e = parse_err("mov.u32 %r1, 0;\n foo.bar %r1, %r2;");
    assert_eq!(e.line, 16);
    assert_eq!(e.to_string(), "line 16: unknown instruction 'foo.bar'");
    assert_eq!(parse_err("bar.arrive 0;").line, 15);
    assert_eq!(parse_err("add.f32 %f1, %f2, %f3;").line, 15); // needs .rn
}

#[test]
fn ftz_is_rejected() {
    let e = parse_err("add.rn.ftz.f32 %f1, %f2, %f3;");
    assert!(e.message.contains(".ftz"), "{e}");
    assert_eq!(e.line, 15);
}

#[test]
fn branch_to_missing_label() {
    let e = parse_err("$L0:\n bra $L0;\n\n bra.uni $Lmissing;");
    assert_eq!(e.line, 18);
    assert!(e.message.contains("$Lmissing"));
}

#[test]
fn operand_kinds_are_checked() {
    let cases = [
        ("add.u32 %r1, %r99, 1;", "undeclared"),
        ("add.u32 %r1, %f1, 1;", "does not fit"),
        ("add.s64 %r1, %rd1, 1;", "does not fit"),
        ("add.rn.f32 %f1, %f1, 1.0;", "immediate"),
        ("mov.u32 %r1, 4294967296;", "immediate"),
        ("add.u32 %r1, %r1;", "operands"),
        ("@%r1 bra $L;\n$L:", "pred"),
        (".local .f32 s[4];", "directive"),
        ("ld.param.u32 %r1, [p0];", "param"),
        ("ld.global.f32 %f1, [%r1];", "does not fit"),
        ("st.global.u32 [%rd0], 5;", "register"),
        ("mov.u64 %rd1, %tid.x;", "special"),
        ("ret %r1;", "unknown instruction"),
        ("cvt.rzi.s32.s64 %r1, %rd1;", "unknown instruction"),
        ("cvt.s32.f32 %r1, %f1;", "unknown instruction"),
        ("min.NaN.f64 %fd1, %fd2, %fd3;", "unknown instruction"),
        ("sin.approx.f64 %fd1, %fd2;", "unknown instruction"),
        ("setp.lt.b32 %p1, %r1, %r2;", "unknown instruction"),
        ("setp.ltu.s32 %p1, %r1, %r2;", "unknown instruction"),
    ];
    for (body, want) in cases {
        let e = parse_err(body);
        assert!(e.message.contains(want), "{body}: {e}");
        assert_eq!(e.line, 15, "{body}");
    }
}

#[test]
fn module_header_is_required() {
    let body = ".visible .entry k()\n{\n ret;\n}\n";
    assert!(Module::parse(&format!("{HEADER}{body}")).is_ok());
    assert!(Module::parse(&format!(".version 8.0\n.target sm_80\n{body}")).is_err());
    let v9 = format!(".version 9.0\n.target sm_80\n.address_size 64\n{body}");
    assert_eq!(Module::parse(&v9).unwrap_err().line, 1);
    let multi = format!(".version 7.8\n.target sm_90, sm_80 // two\n.address_size 64\n{body}");
    assert!(Module::parse(&multi).is_ok());
}

#[test]
fn out_of_bounds_load_one_past_the_end() {
    // The buffer is 256 bytes; the load at +256 is one f32 past its end.
    let e = try_run("ld.global.f32 %f1, [%rd0+252];\n ld.global.f32 %f2, [%rd0+256];").unwrap_err();
    match e {
        EmuError::OutOfBounds {
            line,
            bytes: 4,
            addr,
            ..
        } => {
            assert_eq!(line, 16);
            assert_eq!(addr % 4096, 256);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn out_of_bounds_store_one_past_the_end_and_before_the_start() {
    let e = try_run("mov.f32 %f1, 0f00000000;\n st.global.f32 [%rd0+256], %f1;").unwrap_err();
    assert!(matches!(e, EmuError::OutOfBounds { line: 16, .. }), "{e}");
    let e = try_run("mov.u32 %r1, 0;\n st.global.u8 [%rd0+-1], %r1;").unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::OutOfBounds {
                line: 16,
                bytes: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn misaligned_access() {
    let e = try_run("ld.global.u32 %r1, [%rd0+2];").unwrap_err();
    assert!(matches!(e, EmuError::Misaligned { line: 15, .. }), "{e}");
}

#[test]
fn uninitialized_register_read() {
    let e = try_run("mov.u32 %r1, 1;\n add.u32 %r2, %r1, %r3;").unwrap_err();
    assert_eq!(
        e,
        EmuError::UninitializedRegister {
            entry: "k".into(),
            line: 16,
            reg: "%r3".into()
        }
    );
}

#[test]
fn integer_division_by_zero() {
    let e = try_run("mov.u32 %r1, 0;\n div.u32 %r2, 5, %r1;").unwrap_err();
    assert_eq!(
        e,
        EmuError::DivisionByZero {
            entry: "k".into(),
            line: 16
        }
    );
    let e = try_run("mov.s64 %rd1, 0;\n rem.s64 %rd2, -5, %rd1;").unwrap_err();
    assert!(matches!(e, EmuError::DivisionByZero { line: 16, .. }));
}

#[test]
fn step_limit_on_infinite_loop() {
    let m = Module::parse(&kernel("$L0:\n bra.uni $L0;")).unwrap();
    let mut mem = Memory::new();
    let out = mem.alloc(4);
    let limits = Limits { max_steps: 10_000 };
    let e = m
        .launch(&mut mem, "k", [1; 3], [1; 3], &[Param::U64(out)], &limits)
        .unwrap_err();
    assert_eq!(
        e,
        EmuError::StepLimit {
            entry: "k".into(),
            limit: 10_000
        }
    );
}

#[test]
fn param_type_and_count_mismatch() {
    let m = Module::parse(&kernel("")).unwrap();
    let mut mem = Memory::new();
    let l = Limits::default();
    let e = m
        .launch(&mut mem, "k", [1; 3], [1; 3], &[Param::S32(1)], &l)
        .unwrap_err();
    assert!(matches!(e, EmuError::ParamType { index: 0, .. }), "{e}");
    let e = m
        .launch(&mut mem, "k", [1; 3], [1; 3], &[], &l)
        .unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::ParamCount {
                expected: 1,
                got: 0,
                ..
            }
        ),
        "{e}"
    );
    let e = m
        .launch(&mut mem, "nope", [1; 3], [1; 3], &[], &l)
        .unwrap_err();
    assert!(matches!(e, EmuError::UnknownEntry(_)));
    let e = m
        .launch(&mut mem, "k", [1; 3], [1025, 1, 1], &[Param::U64(0)], &l)
        .unwrap_err();
    assert!(matches!(e, EmuError::InvalidLaunch(_)));
}

#[test]
fn host_accesses_are_bounds_checked() {
    let mut mem = Memory::new();
    let a = mem.alloc(8);
    assert!(mem.write(a + 4, &[0; 8]).is_err());
    assert!(mem.read_f32s(a, 3).is_err());
    assert!(mem.write_f32s(a, &[1.0, 2.0]).is_ok());
}
