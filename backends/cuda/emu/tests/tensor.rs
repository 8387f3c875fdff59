//! The tensor-core path: `mma.sync` against the fragment layouts of the PTX
//! ISA (lanes load their fragments straight from global memory by the
//! documented formulas, and the host computes the product), `ldmatrix`
//! against its row-address and distribution rules, and `cp.async` modelled
//! as deferred until its `cp.async.wait_group`, so a missing wait is caught.

mod common;

use common::HEADER;
use kiln_ptx_emu::{EmuError, Limits, Memory, Module, Param};

/// A module with one entry `k(pa, pb, pout)` (global addresses in `%rd1`,
/// `%rd2`, `%rd3`), `%r1 = %tid.x`, `%r2 = g = lane >> 2`, `%r3 = t = lane & 3`
/// and a 1 KiB shared array `smem`, then `body`.
fn kernel(body: &str) -> String {
    format!(
        "{HEADER}.visible .entry k(.param .u64 pa, .param .u64 pb, .param .u64 pout)\n{{\n\
         .reg .pred %p<8>;\n.reg .b32 %r<64>;\n.reg .b64 %rd<64>;\n.reg .f32 %f<64>;\n\
         .shared .align 16 .b8 smem[1024];\n\
         ld.param.u64 %rd1, [pa];\nld.param.u64 %rd2, [pb];\nld.param.u64 %rd3, [pout];\n\
         mov.u32 %r1, %tid.x;\nshr.u32 %r2, %r1, 2;\nand.b32 %r3, %r1, 3;\n{body}\nret;\n}}\n"
    )
}

/// Runs `body` on one CTA of `threads` with `a`, `b` and a 4 KiB zeroed
/// output; returns the output's first `n` words.
fn run(threads: u32, body: &str, a: &[u32], b: &[u32], n: usize) -> Result<Vec<u32>, EmuError> {
    let m = Module::parse(&kernel(body)).unwrap_or_else(|e| panic!("{e}"));
    let mut mem = Memory::new();
    let (pa, pb, out) = (
        mem.alloc(4 * a.len()),
        mem.alloc(4 * b.len()),
        mem.alloc(4096),
    );
    mem.write_u32s(pa, a)?;
    mem.write_u32s(pb, b)?;
    let params = [Param::U64(pa), Param::U64(pb), Param::U64(out)];
    m.launch(
        &mut mem,
        "k",
        [1; 3],
        [threads, 1, 1],
        &params,
        &Limits::default(),
    )?;
    mem.read_u32s(out, n)
}

/// PTX that loads word `row * width + col` of the array at `base` into `dst`
/// (`row`, `col` are `.u32` registers or immediates; uses `%r40`, `%rd40`).
fn load(dst: &str, base: &str, row: &str, col: &str, width: u32) -> String {
    format!(
        "mov.u32 %r41, {row};\nmad.lo.u32 %r40, %r41, {width}, {col};\nmul.wide.u32 %rd40, %r40, 4;\n\
         add.s64 %rd40, {base}, %rd40;\nld.global.b32 {dst}, [%rd40];\n"
    )
}

/// PTX that stores `src` to word `row * 8 + col` of the output.
fn store(src: &str, row: &str, col: &str) -> String {
    format!(
        "mov.u32 %r41, {row};\nmad.lo.u32 %r40, %r41, 8, {col};\nmul.wide.u32 %rd40, %r40, 4;\n\
         add.s64 %rd40, %rd3, %rd40;\nst.global.b32 [%rd40], {src};\n"
    )
}

/// Stores the accumulators `%f10..%f13` by the C layout, and the register
/// set-up for rows `g + 8` and columns `2t`, `2t + 1`, `t + 4`.
const SETUP: &str =
    "add.u32 %r4, %r2, 8;\nshl.b32 %r5, %r3, 1;\nadd.u32 %r6, %r5, 1;\nadd.u32 %r7, %r3, 4;\n";

fn store_d() -> String {
    [
        ("%f10", "%r2", "%r5"),
        ("%f11", "%r2", "%r6"),
        ("%f12", "%r4", "%r5"),
        ("%f13", "%r4", "%r6"),
    ]
    .iter()
    .map(|(s, r, c)| store(s, r, c))
    .collect()
}

/// Small distinct values, some needing more than tf32's or bf16's precision.
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
            (x % 2001) as f32 / 1000.0 - 1.0 + 1e-5 * (i % 7) as f32
        })
        .collect()
}

fn tf32(x: f32) -> f64 {
    // cvt.rna: nearest, ties away, on the magnitude bits.
    f64::from(f32::from_bits((x.to_bits() + 0x1000) & 0xFFFF_E000))
}

#[test]
fn mma_tf32_follows_the_fragment_layout() {
    let (a, b) = (values(16 * 8, 1), values(8 * 8, 2));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut body = String::from(SETUP);
    // a0 = A[g][t], a1 = A[g+8][t], a2 = A[g][t+4], a3 = A[g+8][t+4]
    for (i, (r, c)) in [
        ("%r2", "%r3"),
        ("%r4", "%r3"),
        ("%r2", "%r7"),
        ("%r4", "%r7"),
    ]
    .iter()
    .enumerate()
    {
        body += &load(&format!("%f{}", 20 + i), "%rd1", r, c, 8);
        body += &format!("cvt.rna.tf32.f32 %r{}, %f{};\n", 20 + i, 20 + i);
    }
    // b0 = B[t][g], b1 = B[t+4][g]
    for (i, r) in ["%r3", "%r7"].iter().enumerate() {
        body += &load(&format!("%f{}", 30 + i), "%rd2", r, "%r2", 8);
        body += &format!("cvt.rna.tf32.f32 %r{}, %f{};\n", 30 + i, 30 + i);
    }
    body += "mov.f32 %f10, 0f3F800000;\nmov.f32 %f11, 0f3F800000;\n\
             mov.f32 %f12, 0f3F800000;\nmov.f32 %f13, 0f3F800000;\n";
    body += "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f10, %f11, %f12, %f13}, \
             {%r20, %r21, %r22, %r23}, {%r30, %r31}, {%f10, %f11, %f12, %f13};\n";
    body += &store_d();
    let got = run(32, &body, &bits(&a), &bits(&b), 128).unwrap();
    for i in 0..16 {
        for j in 0..8 {
            let want: f64 = 1.0
                + (0..8)
                    .map(|k| tf32(a[i * 8 + k]) * tf32(b[k * 8 + j]))
                    .sum::<f64>();
            let g = f32::from_bits(got[i * 8 + j]);
            assert!(
                (f64::from(g) - want).abs() < 1e-6,
                "D[{i}][{j}] = {g}, want {want}"
            );
        }
    }
    // The test can tell tf32 from f32: the exact product differs.
    let exact: f64 = (0..8)
        .map(|k| f64::from(a[k]) * f64::from(b[k * 8]))
        .sum::<f64>()
        + 1.0;
    assert!((f64::from(f32::from_bits(got[0])) - exact).abs() > 1e-6);
}

fn bf16(x: f32) -> u32 {
    let b = x.to_bits();
    (b + 0x7fff + ((b >> 16) & 1)) >> 16
}

#[test]
fn mma_bf16_follows_the_fragment_layout() {
    let (a, b) = (values(16 * 16, 3), values(16 * 8, 4));
    let v = |x: f32| f64::from(f32::from_bits(bf16(x) << 16));
    mma_k16("bf16", bf16, v, &a, &b);
}

/// The f16 encoding of `x`, which must be a normal f16 value exactly.
fn f16_exact(x: f32) -> u32 {
    if x == 0.0 {
        return 0;
    }
    let b = x.to_bits();
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    assert!(b & 0x1fff == 0 && exp > 0 && exp < 31, "{x} is not an f16");
    (b >> 16) & 0x8000 | (exp as u32) << 10 | (b >> 13) & 0x3ff
}

#[test]
fn mma_f16_follows_the_fragment_layout() {
    // Eighths of at most 1, exact in f16, with f16 bits in both halves of each word.
    let eighths = |n, seed| -> Vec<f32> {
        let v = values(n, seed);
        v.iter().map(|x| (x * 8.0).round() / 8.0).collect()
    };
    let (a, b) = (eighths(16 * 16, 5), eighths(16 * 8, 6));
    mma_k16("f16", f16_exact, f64::from, &a, &b);
}

/// Runs one `mma.m16n8k16` of type `ty` on `a` (16×16) and `b` (16×8) encoded by
/// `encode`, against the sum of the products of `value`s.
fn mma_k16(ty: &str, encode: fn(f32) -> u32, value: impl Fn(f32) -> f64, a: &[f32], b: &[f32]) {
    // A as words of column pairs: word [r][j] = (A[r][2j], A[r][2j+1]);
    // B as words of row pairs: word [j][n] = (B[2j][n], B[2j+1][n]).
    let aw: Vec<u32> = (0..16 * 8)
        .map(|w| encode(a[2 * w]) | encode(a[2 * w + 1]) << 16)
        .collect();
    let bw: Vec<u32> = (0..8 * 8)
        .map(|w| {
            let (j, n) = (w / 8, w % 8);
            encode(b[2 * j * 8 + n]) | encode(b[(2 * j + 1) * 8 + n]) << 16
        })
        .collect();
    let mut body = String::from(SETUP);
    // a0 = A[g][2t..], a1 = A[g+8][2t..], a2 = A[g][2t+8..], a3 = A[g+8][2t+8..]
    for (i, (r, c)) in [
        ("%r2", "%r3"),
        ("%r4", "%r3"),
        ("%r2", "%r7"),
        ("%r4", "%r7"),
    ]
    .iter()
    .enumerate()
    {
        body += &load(&format!("%r{}", 20 + i), "%rd1", r, c, 8);
    }
    // b0 = B[2t..][g], b1 = B[2t+8..][g]
    body += &load("%r30", "%rd2", "%r3", "%r2", 8);
    body += &load("%r31", "%rd2", "%r7", "%r2", 8);
    body += "mov.f32 %f10, 0f00000000;\nmov.f32 %f11, 0f00000000;\n\
             mov.f32 %f12, 0f00000000;\nmov.f32 %f13, 0f00000000;\n";
    body += &format!(
        "mma.sync.aligned.m16n8k16.row.col.f32.{ty}.{ty}.f32 {{%f10, %f11, %f12, %f13}}, \
         {{%r20, %r21, %r22, %r23}}, {{%r30, %r31}}, {{%f10, %f11, %f12, %f13}};\n"
    );
    body += &store_d();
    let got = run(32, &body, &aw, &bw, 128).unwrap();
    for i in 0..16 {
        for j in 0..8 {
            let want: f64 = (0..16)
                .map(|k| value(a[i * 16 + k]) * value(b[k * 8 + j]))
                .sum();
            let g = f32::from_bits(got[i * 8 + j]);
            assert!(
                (f64::from(g) - want).abs() < 1e-6,
                "{ty}: D[{i}][{j}] = {g}, want {want}"
            );
        }
    }
}

/// Fills `smem` with b16 element `e` = `e` (512 elements), then each lane
/// gives matrix `lane >> 3` the address of its physical row `7 - (lane & 7)`
/// and runs `ldmatrix` into `%r10..`, storing register `q` to `out[4 lane + q]`.
fn ldmatrix_body(op: &str) -> String {
    let mut body = String::new();
    for w in 0..2 {
        // word tid + 128 w holds elements 2 (tid + 128 w) and the next.
        body += &format!(
            "add.u32 %r8, %r1, {};\nshl.b32 %r9, %r8, 1;\nadd.u32 %r11, %r9, 1;\nshl.b32 %r11, %r11, 16;\n\
             or.b32 %r9, %r9, %r11;\nshl.b32 %r12, %r8, 2;\nst.shared.b32 [smem+0], %r9;\n",
            128 * w
        )
        .replace("[smem+0]", "[%r12]");
    }
    body += "bar.sync 0;\nshr.u32 %r13, %r1, 3;\nand.b32 %r14, %r1, 7;\nmov.u32 %r15, 7;\n\
             sub.u32 %r14, %r15, %r14;\nshl.b32 %r13, %r13, 7;\nshl.b32 %r14, %r14, 4;\n\
             add.u32 %r16, %r13, %r14;\n";
    body += &format!("{op} {{%r20, %r21, %r22, %r23}}, [%r16];\n");
    for q in 0..4 {
        body += &format!(
            "shl.b32 %r40, %r1, 2;\nadd.u32 %r40, %r40, {q};\nmul.wide.u32 %rd40, %r40, 4;\n\
             add.s64 %rd40, %rd3, %rd40;\nst.global.b32 [%rd40], %r{};\n",
            20 + q
        );
    }
    body
}

/// [`ldmatrix_body`] with every thread filling shared memory, but only threads below
/// `lanes` running the `ldmatrix` and the stores after it.
fn ldmatrix_below(op: &str, lanes: u32) -> String {
    let b = ldmatrix_body(op);
    let (fill, rest) = b.split_once("bar.sync 0;\n").unwrap();
    format!("{fill}bar.sync 0;\nsetp.ge.u32 %p1, %r1, {lanes};\n@%p1 bra $DONE;\n{rest}$DONE:\n")
}

#[test]
fn ldmatrix_distributes_rows_by_lane() {
    // 128 threads fill the shared rows; warp 0 alone runs ldmatrix.
    let for_warp0 = |op: &str| ldmatrix_below(op, 32);
    let plain = run(
        128,
        &for_warp0("ldmatrix.sync.aligned.m8n8.x4.shared.b16"),
        &[0],
        &[0],
        128,
    )
    .unwrap();
    let trans = run(
        128,
        &for_warp0("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"),
        &[0],
        &[0],
        128,
    )
    .unwrap();
    let el = |q: usize, row: usize, col: usize| (q * 64 + (7 - row) * 8 + col) as u32;
    for lane in 0..32 {
        let (g, t) = (lane >> 2, lane & 3);
        for q in 0..4 {
            let want = el(q, g, 2 * t) | el(q, g, 2 * t + 1) << 16;
            assert_eq!(plain[4 * lane + q], want, "lane {lane} matrix {q}");
            let want = el(q, 2 * t, g) | el(q, 2 * t + 1, g) << 16;
            assert_eq!(trans[4 * lane + q], want, "lane {lane} matrix {q} (trans)");
        }
    }
}

#[test]
fn ldmatrix_needs_the_whole_warp() {
    // Lanes 16..32 skip it: a divergent collective.
    let body = ldmatrix_below("ldmatrix.sync.aligned.m8n8.x4.shared.b16", 16);
    let e = run(128, &body, &[0], &[0], 1).unwrap_err();
    assert!(matches!(e, EmuError::DivergentCollective { .. }), "{e}");
}

/// Each of 64 threads copies `in[tid]` into `smem[tid]` with `cp.async`,
/// then `between` runs, then after `bar.sync` each reads `smem[63 - tid]`
/// into `out[tid]`.
fn copy_reverse(between: &str) -> String {
    format!(
        "shl.b32 %r8, %r1, 2;\nmul.wide.u32 %rd8, %r8, 1;\nadd.s64 %rd8, %rd1, %rd8;\n\
         cp.async.ca.shared.global [%r8], [%rd8], 4;\ncp.async.commit_group;\n{between}\n\
         bar.sync 0;\nmov.u32 %r9, 63;\nsub.u32 %r9, %r9, %r1;\nshl.b32 %r9, %r9, 2;\n\
         ld.shared.b32 %r10, [%r9];\nmul.wide.u32 %rd9, %r8, 1;\nadd.s64 %rd9, %rd3, %rd9;\n\
         st.global.b32 [%rd9], %r10;\n"
    )
}

#[test]
fn cp_async_lands_at_its_wait() {
    let input: Vec<u32> = (100..164).collect();
    let got = run(
        64,
        &copy_reverse("cp.async.wait_group 0;"),
        &input,
        &[0],
        64,
    )
    .unwrap();
    assert_eq!(got, (100..164).rev().collect::<Vec<u32>>());
}

#[test]
fn a_missing_wait_group_is_caught() {
    let input: Vec<u32> = (0..64).collect();
    // Read after the barrier, but the copy never landed.
    let e = run(64, &copy_reverse(""), &input, &[0], 64).unwrap_err();
    assert!(matches!(e, EmuError::AsyncPending { .. }), "{e}");
    assert!(e.to_string().contains("cp.async.wait_group"), "{e}");
    // No read at all: the thread exits with the copy in flight.
    let body = "shl.b32 %r8, %r1, 2;\nmul.wide.u32 %rd8, %r8, 1;\nadd.s64 %rd8, %rd1, %rd8;\n\
                cp.async.ca.shared.global [%r8], [%rd8], 4;\ncp.async.commit_group;\n";
    let e = run(64, body, &input, &[0], 1).unwrap_err();
    assert!(
        matches!(e, EmuError::AsyncNotWaited { line: 20, .. }),
        "{e}"
    );
    // Waiting for all but the newest group leaves the newest in flight.
    let two = "cp.async.commit_group;\ncp.async.wait_group 1;";
    run(64, &copy_reverse(two), &input, &[0], 64).unwrap();
    let newest = "add.u32 %r11, %r8, 512;\ncp.async.ca.shared.global [%r11], [%rd8], 4;\n\
                  cp.async.commit_group;\ncp.async.wait_group 1;\nbar.sync 0;\n\
                  ld.shared.b32 %r12, [%r11];";
    let e = run(64, &copy_reverse(newest), &input, &[0], 64).unwrap_err();
    assert!(matches!(e, EmuError::AsyncPending { .. }), "{e}");
    // A wait without a barrier leaves the read racing the copy's landing.
    let e = run(
        64,
        &copy_reverse("cp.async.wait_group 0;").replace("bar.sync 0;", ""),
        &input,
        &[0],
        64,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::SharedRace { .. } | EmuError::UninitializedShared { .. }
        ),
        "{e}"
    );
}

#[test]
fn cp_async_zero_fills_past_the_source_size() {
    // One thread copies 16 bytes of which the source gives 6, then 0.
    let body = "cp.async.cg.shared.global [smem+0], [%rd1], 16, 6;\n\
                mov.u32 %r8, 0;\ncp.async.ca.shared.global [smem+16], [%rd1+4], 4, %r8;\n\
                cp.async.commit_group;\ncp.async.wait_group 0;\n\
                ld.shared.b32 %r9, [smem+0];\nld.shared.b32 %r10, [smem+4];\n\
                ld.shared.b32 %r11, [smem+8];\nld.shared.b32 %r12, [smem+16];\n\
                st.global.b32 [%rd3], %r9;\nst.global.b32 [%rd3+4], %r10;\n\
                st.global.b32 [%rd3+8], %r11;\nst.global.b32 [%rd3+12], %r12;\n";
    let got = run(1, body, &[0x1122_3344, 0x5566_7788, 0x99aa_bbcc], &[0], 4).unwrap();
    assert_eq!(got, [0x1122_3344, 0x0000_7788, 0, 0]);
    // The copy's global side is bounds-checked: 12 bytes of input, 16 read.
    let body = "cp.async.cg.shared.global [smem+0], [%rd1], 16;\ncp.async.commit_group;\n\
                cp.async.wait_group 0;\n";
    let e = run(1, body, &[1, 2, 3], &[0], 1).unwrap_err();
    assert!(matches!(e, EmuError::OutOfBounds { .. }), "{e}");
}

#[test]
fn tensor_instructions_outside_the_dialect_are_rejected() {
    for bad in [
        "mma.sync.aligned.m16n8k16.row.col.f32.tf32.tf32.f32 {%f1, %f2, %f3, %f4}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};",
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f1, %f2, %f3}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};",
        "ldmatrix.sync.aligned.m8n8.x3.shared.b16 {%r1, %r2, %r3}, [%r4];",
        "cp.async.cg.shared.global [smem+0], [%rd1], 4;",
    ] {
        let e = Module::parse(&kernel(bad)).unwrap_err();
        assert_eq!(e.line, 17, "{bad}: {e}");
    }
}

#[test]
fn cvt_packs_two_f16_first_source_high() {
    // 1.0 is 0x3C00 and -2.0 is 0xC000 in f16; 1 + 2^-12 rounds to even (1.0).
    let body = "mov.f32 %f1, 0f3F800000;\nmov.f32 %f2, 0fC0000000;\n\
                cvt.rn.f16x2.f32 %r10, %f1, %f2;\nst.global.b32 [%rd3], %r10;\n\
                mov.f32 %f3, 0f3F800800;\ncvt.rn.f16x2.f32 %r11, %f2, %f3;\n\
                st.global.b32 [%rd3+4], %r11;\n";
    let got = run(1, body, &[0], &[0], 2).unwrap();
    assert_eq!(got, [0x3C00_C000, 0xC000_3C00]);
}

#[test]
fn cvt_packs_two_bf16_first_source_high() {
    // 1.0 is 0x3F80 and -2.0 is 0xC000 in bf16; 1 + 2^-9 rounds to even (1.0).
    let body = "mov.f32 %f1, 0f3F800000;\nmov.f32 %f2, 0fC0000000;\n\
                cvt.rn.bf16x2.f32 %r10, %f1, %f2;\nst.global.b32 [%rd3], %r10;\n\
                mov.f32 %f3, 0f3F804000;\ncvt.rn.bf16x2.f32 %r11, %f2, %f3;\n\
                st.global.b32 [%rd3+4], %r11;\n";
    let got = run(1, body, &[0], &[0], 2).unwrap();
    assert_eq!(got, [0x3F80_C000, 0xC000_3F80]);
}
