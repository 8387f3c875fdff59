//! Shared memory, `bar.sync` and warp collectives: results of correct
//! kernels, and the synchronization bugs the interpreter must catch
//! (races, uninitialized shared reads, divergent barriers and shuffles).

mod common;

use common::kernel;
use kiln_ptx_emu::{EmuError, Limits, Memory, Module, Param};

/// Declares a 256-byte shared array `smem` on line 15; the rest of `body`
/// starts on line 16.
fn with_smem(body: &str) -> String {
    kernel(&format!(".shared .align 4 .b8 smem[256];\n{body}"))
}

/// Runs `ptx`'s entry `k` on `grid` x `block` with a zeroed 1 KiB output
/// buffer; returns the buffer's first `n` words.
fn launch(ptx: &str, grid: [u32; 3], block: [u32; 3], n: usize) -> Result<Vec<u32>, EmuError> {
    let m = Module::parse(ptx).unwrap_or_else(|e| panic!("{e}"));
    let mut mem = Memory::new();
    let out = mem.alloc(1024);
    m.launch(
        &mut mem,
        "k",
        grid,
        block,
        &[Param::U64(out)],
        &Limits::default(),
    )?;
    Ok(mem.read_u32s(out, n).unwrap())
}

fn block(threads: u32, body: &str, n: usize) -> Result<Vec<u32>, EmuError> {
    launch(&with_smem(body), [1; 3], [threads, 1, 1], n)
}

/// Stores `%r7` to `out[%tid.x]` (needs `%r1 = %tid.x`).
const STORE_OUT: &str =
    "mul.wide.u32 %rd1, %r1, 4;\n add.s64 %rd1, %rd0, %rd1;\n st.global.u32 [%rd1], %r7;";

/// Each thread writes its id to `smem[tid]`, then (after `sync`) reads
/// `smem[63 - tid]` into `out[tid]`. The `st.shared` is line 20.
fn reverse(sync: &str) -> String {
    format!(
        "mov.u32 %r1, %tid.x;\n mov.u32 %r2, smem;\n shl.b32 %r3, %r1, 2;\n\
         add.u32 %r4, %r2, %r3;\n st.shared.u32 [%r4], %r1;\n {sync}\n\
         mov.u32 %r5, 63;\n sub.u32 %r5, %r5, %r1;\n shl.b32 %r6, %r5, 2;\n\
         add.u32 %r6, %r2, %r6;\n ld.shared.u32 %r7, [%r6];\n {STORE_OUT}"
    )
}

#[test]
fn shared_round_trip_through_a_barrier() {
    let got = block(64, &reverse("bar.sync 0;"), 64).unwrap();
    assert_eq!(got, (0..64).rev().collect::<Vec<u32>>());
    // `barrier.sync 0` is the same barrier.
    let got = block(64, &reverse("barrier.sync 0;"), 64).unwrap();
    assert_eq!(got[0], 63);
}

#[test]
fn a_missing_barrier_is_a_race() {
    let e = block(64, &reverse(""), 64).unwrap_err();
    // Thread 31 read smem[32] before it was written; thread 32 then
    // writes it (the first conflict in program order).
    assert_eq!(
        e,
        EmuError::SharedRace {
            entry: "k".into(),
            line: 20,
            addr: 128,
            first_thread: 31,
            second_thread: 32,
        },
        "{e}"
    );
}

/// Warp 0 writes `smem[lane]`; (after `sync`) warp 1 reads it and stores
/// it to `out[tid]`. The `ld.shared` is line 24.
fn warp_handoff(sync: &str) -> String {
    format!(
        "mov.u32 %r1, %tid.x;\n mov.u32 %r2, smem;\n and.b32 %r3, %r1, 31;\n\
         shl.b32 %r3, %r3, 2;\n add.u32 %r4, %r2, %r3;\n setp.ge.u32 %p1, %r1, 32;\n\
         @!%p1 st.shared.u32 [%r4], %r1;\n {sync}\n @%p1 ld.shared.u32 %r7, [%r4];\n\
         @!%p1 mov.u32 %r7, 0;\n {STORE_OUT}"
    )
}

#[test]
fn warp_to_warp_handoff_needs_a_barrier() {
    let e = block(64, &warp_handoff(""), 64).unwrap_err();
    match e {
        EmuError::SharedRace {
            line,
            addr,
            first_thread,
            second_thread,
            ..
        } => {
            assert_eq!((line, addr), (24, 0));
            assert_eq!((first_thread, second_thread), (0, 32));
        }
        e => panic!("expected a race, got {e}"),
    }
    let got = block(64, &warp_handoff("bar.sync 0;"), 64).unwrap();
    let want: Vec<u32> = (0..64u32).map(|t| t.saturating_sub(32)).collect();
    assert_eq!(got, want);
}

#[test]
fn concurrent_reads_and_own_rewrites_are_not_races() {
    // Thread 0 writes smem[0]; after the barrier every thread reads it,
    // then writes and rereads its own word smem[1 + tid]: no two threads
    // conflict on a byte within one interval.
    let body = format!(
        "mov.u32 %r1, %tid.x;\n mov.u32 %r2, smem;\n setp.eq.u32 %p1, %r1, 0;\n\
         @%p1 st.shared.u32 [smem], %r1;\n bar.sync 0;\n ld.shared.u32 %r7, [%r2];\n\
         shl.b32 %r3, %r1, 2;\n add.u32 %r3, %r3, %r2;\n st.shared.u32 [%r3+4], %r1;\n\
         ld.shared.u32 %r8, [%r3+4];\n add.u32 %r7, %r7, %r8;\n {STORE_OUT}"
    );
    assert_eq!(block(32, &body, 32).unwrap(), (0..32).collect::<Vec<u32>>());
    // Without the barrier, thread 1's read of smem[0] races with thread 0's
    // write.
    let e = block(32, &body.replace("bar.sync 0;", ""), 32).unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::SharedRace {
                line: 21,
                addr: 0,
                first_thread: 0,
                second_thread: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn shared_addresses_and_layout() {
    // `a` takes bytes 0..3; `b` is aligned to 16; `c` (8-byte elements)
    // follows `b` at 32. Stores through 64-bit and named addresses.
    let ptx = kernel(
        ".shared .b8 a[3];\n.shared .align 16 .f32 b[4];\n.shared .b32 c[2];\n.shared .f64 e[1];\n\
         mov.u32 %r1, b;\n mov.u64 %rd1, c;\n mov.u32 %r2, e;\n\
         st.shared.u32 [%rd1+4], %r1;\n ld.shared.u32 %r3, [c+4];\n\
         mov.u32 %r4, 0xdeadbeef;\n st.shared.u16 [b+2], %r4;\n ld.shared.u16 %r5, [%r1+2];\n\
         st.shared.u8 [a], %r4;\n ld.shared.s8 %r6, [a];\n\
         st.global.u32 [%rd0], %r1;\n st.global.u32 [%rd0+4], %r3;\n st.global.u32 [%rd0+8], %r2;\n\
         st.global.u32 [%rd0+12], %r5;\n st.global.u32 [%rd0+16], %r6;",
    );
    let got = launch(&ptx, [1; 3], [1; 3], 5).unwrap();
    assert_eq!(got, [16, 16, 40, 0xbeef, 0xffff_ffef]);
}

#[test]
fn each_cta_has_its_own_uninitialized_shared_window() {
    // Thread 0 of CTA 0 writes smem[0] before the CTA reads it; CTA 1 only
    // reads it.
    let body = "mov.u32 %r1, %ctaid.x;\n mov.u32 %r2, %tid.x;\n add.u32 %r1, %r1, %r2;\n\
                setp.eq.u32 %p1, %r1, 0;\n\
                @%p1 st.shared.u32 [smem], %r1;\n bar.sync 0;\n ld.shared.u32 %r7, [smem];\n\
                st.global.u32 [%rd0], %r7;";
    let ptx = with_smem(body);
    assert_eq!(launch(&ptx, [1, 1, 1], [4, 1, 1], 1).unwrap(), [0]);
    let e = launch(&ptx, [2, 1, 1], [4, 1, 1], 1).unwrap_err();
    assert_eq!(
        e,
        EmuError::UninitializedShared {
            entry: "k".into(),
            line: 22,
            addr: 0
        }
    );
}

#[test]
fn uninitialized_shared_reads_are_errors() {
    // Two bytes written, a four-byte read: byte 2 was never written.
    let body = "mov.u32 %r1, 7;\n st.shared.u16 [smem], %r1;\n ld.shared.u32 %r2, [smem];";
    let e = block(1, body, 0).unwrap_err();
    assert_eq!(
        e,
        EmuError::UninitializedShared {
            entry: "k".into(),
            line: 18,
            addr: 2
        },
        "{e}"
    );
    // The garbage value then drives a global store out of bounds; the
    // uninitialized read is what gets reported.
    let body =
        "ld.shared.u32 %r1, [smem+8];\n cvt.u64.u32 %rd1, %r1;\n add.s64 %rd1, %rd1, 4096;\n\
                st.global.u32 [%rd1], %r1;";
    let e = block(1, body, 0).unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::UninitializedShared {
                line: 16,
                addr: 8,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn shared_bounds_and_alignment_are_checked() {
    let e = block(1, "mov.u32 %r2, smem;\n ld.shared.u32 %r1, [%r2+256];", 0).unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::SharedOutOfBounds {
                line: 17,
                addr: 256,
                bytes: 4,
                ..
            }
        ),
        "{e}"
    );
    let e = block(1, "mov.u32 %r1, 1;\n st.shared.u8 [smem+-1], %r1;", 0).unwrap_err();
    assert!(
        matches!(e, EmuError::SharedOutOfBounds { line: 17, .. }),
        "{e}"
    );
    let e = block(1, "mov.u32 %r1, 1;\n st.shared.u32 [smem+254], %r1;", 0).unwrap_err();
    assert!(
        matches!(e, EmuError::SharedMisaligned { addr: 254, .. }),
        "{e}"
    );
    let e = block(1, "mov.u64 %rd1, 252;\n st.shared.u64 [%rd1], %rd1;", 0).unwrap_err();
    assert!(matches!(e, EmuError::SharedMisaligned { .. }), "{e}");
    let e = block(
        1,
        "mov.u64 %rd1, 256;\n mov.u32 %r1, 0;\n st.shared.u8 [%rd1], %r1;",
        0,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::SharedOutOfBounds {
                line: 18,
                addr: 256,
                bytes: 1,
                ..
            }
        ),
        "{e}"
    );
    // A shared address used with a global access is outside every
    // allocation.
    let e = block(1, "mov.u64 %rd1, smem;\n ld.global.u32 %r1, [%rd1];", 0).unwrap_err();
    assert!(matches!(e, EmuError::OutOfBounds { addr: 0, .. }), "{e}");
}

#[test]
fn exited_threads_do_not_hold_a_barrier() {
    // Threads >= 32 exit at once; warp 0 passes two barriers without them.
    let body = format!(
        "mov.u32 %r1, %tid.x;\n setp.ge.u32 %p1, %r1, 32;\n @%p1 ret;\n\
         mov.u32 %r2, smem;\n shl.b32 %r3, %r1, 2;\n add.u32 %r3, %r3, %r2;\n\
         st.shared.u32 [%r3], %r1;\n bar.sync 0;\n xor.b32 %r4, %r3, 4;\n\
         ld.shared.u32 %r7, [%r4];\n bar.sync 0;\n st.shared.u32 [%r3], %r7;\n {STORE_OUT}"
    );
    let got = block(64, &body, 64).unwrap();
    let want: Vec<u32> = (0..64).map(|t| if t < 32 { t ^ 1 } else { 0 }).collect();
    assert_eq!(got, want);
}

#[test]
fn threads_at_different_barriers_diverge() {
    let body = "mov.u32 %r1, %tid.x;\n setp.ge.u32 %p1, %r1, 32;\n @%p1 bra $L1;\n\
                bar.sync 0;\n bra.uni $L2;\n$L1:\n bar.sync 0;\n$L2:";
    let e = block(64, body, 0).unwrap_err();
    assert_eq!(
        e,
        EmuError::DivergentBarrier {
            entry: "k".into(),
            line: 19
        },
        "{e}"
    );
    // The same split inside one warp.
    let e = block(16, &body.replace("%r1, 32", "%r1, 8"), 0).unwrap_err();
    assert!(
        matches!(e, EmuError::DivergentBarrier { line: 19, .. }),
        "{e}"
    );
}

/// `%r3 = sum over the warp of %r2` by five butterfly steps; the sum goes
/// to `out[linear id]`, with `%r1` the linear id.
fn butterfly_sum() -> String {
    let steps: String = [16, 8, 4, 2, 1]
        .iter()
        .map(|o| {
            format!(
                " shfl.sync.bfly.b32 %r4, %r3, {o}, 0x1f, 0xffffffff;\n add.u32 %r3, %r3, %r4;\n"
            )
        })
        .collect();
    format!("mov.u32 %r3, %r2;\n{steps} mov.u32 %r7, %r3;\n {STORE_OUT}")
}

#[test]
fn butterfly_reduction_over_one_warp() {
    let body = format!(
        "mov.u32 %r1, %tid.x;\n and.b32 %r2, %r1, 31;\n{}",
        butterfly_sum()
    );
    assert_eq!(block(32, &body, 32).unwrap(), vec![496; 32]);
}

#[test]
fn two_warps_reduce_independently_in_a_2d_block() {
    // Block 16 x 4: linear id = x + 16 y, so warp 0 is y = 0, 1.
    let body = format!(
        "mov.u32 %r5, %tid.x;\n mov.u32 %r6, %tid.y;\n mad.lo.u32 %r1, %r6, 16, %r5;\n\
         mov.u32 %r2, %r1;\n{}",
        butterfly_sum()
    );
    let got = launch(&with_smem(&body), [1; 3], [16, 4, 1], 64).unwrap();
    let want: Vec<u32> = (0..64).map(|t| if t < 32 { 496 } else { 1520 }).collect();
    assert_eq!(got, want);
}

/// Lane `l` holds `10 l + 1`; each shuffle's result goes to
/// `out[32 k + lane]` for the k-th shuffle in `shfls`.
fn shuffles(shfls: &[&str]) -> String {
    let mut body = String::from(
        "mov.u32 %r1, %tid.x;\n mul.lo.u32 %r2, %r1, 10;\n add.u32 %r2, %r2, 1;\n\
         mov.u32 %r9, 31;\n sub.u32 %r9, %r9, %r1;\n mul.wide.u32 %rd1, %r1, 4;\n\
         add.s64 %rd1, %rd0, %rd1;\n",
    );
    for (k, s) in shfls.iter().enumerate() {
        body += &format!(" {s}\n st.global.u32 [%rd1+{}], %r7;\n", 128 * k);
    }
    body
}

#[test]
fn shuffle_modes_and_out_of_range_lanes() {
    let body = shuffles(&[
        "shfl.sync.down.b32 %r7, %r2, 4, 0x1f, 0xffffffff;",
        "shfl.sync.up.b32 %r7, %r2, 3, 0, 0xffffffff;",
        "shfl.sync.idx.b32 %r7, %r2, 7, 0x1f, 0xffffffff;",
        "shfl.sync.idx.b32 %r7, %r2, %r9, 0x1f, 0xffffffff;",
        "shfl.sync.down.b32 %r7, %r2, 4, 0x101f, 0xffffffff;",
        "shfl.sync.up.b32 %r7, %r2, 2, 0x1800, 0xffffffff;",
        "shfl.sync.bfly.b32 %r7, %r2, 16, 0x101f, 0xffffffff;",
        "shfl.sync.idx.b32 %r7, %r2, 33, 0x1f, 0xffffffff;",
    ]);
    let got = block(32, &body, 8 * 32).unwrap();
    let v = |l: u32| 10 * l + 1;
    for l in 0..32u32 {
        let at = |k: u32| got[(32 * k + l) as usize];
        assert_eq!(
            at(0),
            v(if l + 4 <= 31 { l + 4 } else { l }),
            "down, lane {l}"
        );
        assert_eq!(at(1), v(if l >= 3 { l - 3 } else { l }), "up, lane {l}");
        assert_eq!(at(2), v(7), "idx 7, lane {l}");
        assert_eq!(at(3), v(31 - l), "idx 31-lane, lane {l}");
        // Width 16: a lane never reads past the end of its segment.
        let seg_end = (l | 15).min(31);
        assert_eq!(
            at(4),
            v(if l + 4 <= seg_end { l + 4 } else { l }),
            "down w16, lane {l}"
        );
        // Width 8 (segmask 0x18): never below the segment's first lane.
        let seg_start = l & 0x18;
        assert_eq!(
            at(5),
            v(if l >= seg_start + 2 { l - 2 } else { l }),
            "up w8, lane {l}"
        );
        // bfly w16: the upper half may read the lower one, not vice versa.
        assert_eq!(
            at(6),
            v(if l >= 16 { l - 16 } else { l }),
            "bfly w16, lane {l}"
        );
        assert_eq!(at(7), v(1), "idx uses b[4:0], lane {l}");
    }
}

#[test]
fn ballot_collects_a_predicate_per_lane() {
    let body = "mov.u32 %r1, %tid.x;\n and.b32 %r2, %r1, 1;\n setp.eq.u32 %p1, %r2, 1;\n\
                vote.sync.ballot.b32 %r7, %p1, 0xffffffff;\n";
    let got = block(32, &format!("{body} {STORE_OUT}"), 32).unwrap();
    assert_eq!(got, vec![0xaaaa_aaaa; 32]);
}

#[test]
fn partial_last_warp_uses_its_existing_lanes() {
    // 40 threads: warp 1 has lanes 0..7 and shuffles with mask 0xff.
    let steps = "shfl.sync.bfly.b32 %r4, %r3, 4, 0x1f, MASK;\n add.u32 %r3, %r3, %r4;\n\
                 shfl.sync.bfly.b32 %r4, %r3, 2, 0x1f, MASK;\n add.u32 %r3, %r3, %r4;\n\
                 shfl.sync.bfly.b32 %r4, %r3, 1, 0x1f, MASK;\n add.u32 %r3, %r3, %r4;\n";
    let body = format!(
        "mov.u32 %r1, %tid.x;\n setp.ge.u32 %p1, %r1, 32;\n mov.u32 %r3, %r1;\n @%p1 bra $PART;\n\
         {}\n bra.uni $END;\n$PART:\n {}\n$END:\n mov.u32 %r7, %r3;\n {STORE_OUT}",
        steps.replace("MASK", "0xffffffff"),
        steps.replace("MASK", "0xff")
    );
    let got = block(40, &body, 40).unwrap();
    // Lanes of each aligned group of 8 share their group's sum.
    let want: Vec<u32> = (0..40u32)
        .map(|t| (0..8).map(|i| (t & !7) + i).sum())
        .collect();
    assert_eq!(got, want);
    // The full-warp mask in the partial warp names missing lanes.
    let e = block(40, &body.replace("0xff;", "0xffffffff;"), 40).unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::MemberMask {
                mask: 0xffff_ffff,
                lanes: 0xff,
                ..
            }
        ),
        "{e}"
    );
    // A partial mask in a full warp is not supported either.
    let e = block(64, &body, 64).unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::MemberMask {
                mask: 0xff,
                lanes: 0xffff_ffff,
                ..
            }
        ),
        "{e}"
    );
    // Offset 16 from an 8-lane warp reads a lane that does not exist.
    let bad = body.replace("%r3, 4, 0x1f, 0xff;", "%r3, 16, 0x1f, 0xff;");
    let e = block(40, &bad, 40).unwrap_err();
    assert!(
        matches!(
            e,
            EmuError::ShflSourceMissing {
                lane: 0,
                from_lane: 16,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn lanes_at_different_shuffles_diverge() {
    // Lanes 0..15 shuffle at line 19, the others at line 22.
    let body = "mov.u32 %r1, %tid.x;\n setp.ge.u32 %p1, %r1, 16;\n @%p1 bra $L1;\n\
                shfl.sync.bfly.b32 %r7, %r1, 1, 0x1f, 0xffffffff;\n bra.uni $L2;\n$L1:\n\
                shfl.sync.bfly.b32 %r7, %r1, 1, 0x1f, 0xffffffff;\n$L2:";
    let e = block(32, body, 0).unwrap_err();
    assert_eq!(
        e,
        EmuError::DivergentCollective {
            entry: "k".into(),
            line: 19
        },
        "{e}"
    );
    // A lane that exited cannot take part.
    let body = "mov.u32 %r1, %tid.x;\n setp.eq.u32 %p1, %r1, 5;\n @%p1 ret;\n\
                shfl.sync.bfly.b32 %r7, %r1, 1, 0x1f, 0xffffffff;";
    let e = block(32, body, 0).unwrap_err();
    assert!(
        matches!(e, EmuError::DivergentCollective { line: 19, .. }),
        "{e}"
    );
    // Nor can one waiting at a barrier.
    let body = "mov.u32 %r1, %tid.x;\n setp.eq.u32 %p1, %r1, 5;\n @%p1 bar.sync 0;\n\
                shfl.sync.bfly.b32 %r7, %r1, 1, 0x1f, 0xffffffff;";
    let e = block(32, body, 0).unwrap_err();
    assert!(
        matches!(e, EmuError::DivergentCollective { line: 19, .. }),
        "{e}"
    );
}

#[test]
fn unsupported_sync_forms_are_parse_errors() {
    let cases = [
        ("bar.sync 0, 64;", "barrier 0"),
        ("bar.sync 1;", "barrier 0"),
        ("bar.sync %r1;", "barrier 0"),
        (
            "shfl.sync.bfly.b32 %r1|%p1, %r2, 1, 0x1f, 0xffffffff;",
            "predicate output",
        ),
        (
            "shfl.sync.bfly.b32 %r1, %r2, 1, %r3, 0xffffffff;",
            "immediate",
        ),
        ("shfl.sync.bfly.b32 %r1, %r2, 1, 0x1f, %r3;", "immediate"),
        ("shfl.sync.bfly.b32 %r1, %r2, 1, 0x1f;", "operands"),
        (
            "shfl.sync.rot.b32 %r1, %r2, 1, 0x1f, 0xffffffff;",
            "unknown instruction",
        ),
        ("shfl.bfly.b32 %r1, %r2, 1, 0x1f;", "unknown instruction"),
        (
            "shfl.sync.bfly.b32 %rd1, %r2, 1, 0x1f, 0xffffffff;",
            "does not fit",
        ),
        (
            "vote.sync.all.pred %p1, %p2, 0xffffffff;",
            "unknown instruction",
        ),
        (
            "mov.u64 %rd1, smem;\n cvta.shared.u64 %rd2, %rd1;",
            "unknown instruction",
        ),
        (
            "mov.u64 %rd1, smem;\n cvta.to.shared.u64 %rd2, %rd1;",
            "unknown instruction",
        ),
        ("mov.f32 %f1, smem;", "32- or 64-bit integer"),
        ("mov.u16 %h1, smem;", "32- or 64-bit integer"),
        ("mov.u32 %r1, nosuch;", "immediate"),
        ("ld.shared.u32 %r1, [nosuch];", "undeclared"),
        ("ld.shared.u32 %r1, [%f1];", "not a 32- or 64-bit integer"),
        ("ld.shared.u32 %r1, [%h1];", "not a 32- or 64-bit integer"),
        ("ld.shared.u32 %r1, smem;", "shared address"),
        ("st.shared.u32 [smem], 5;", "register"),
        (".shared .align 4 .b8 smem[4];", "duplicate"),
        (".shared .b8 p0[4];", "duplicate"),
        (".shared .b8 %r1[4];", "duplicate"),
        (".shared .align 3 .b8 x[4];", "alignment"),
        (".shared .f16 x[4];", "unsupported .shared type"),
        (".shared .b8 x[0];", "static sizes only"),
        (".shared .b8 x[%r1];", "static sizes only"),
        (".shared .b8 x[49152];", "48 KiB"),
        (".shared .b8 x[];", "expected a word"),
        (".extern .shared .b8 x[];", "unknown directive"),
    ];
    for (body, want) in cases {
        let e = Module::parse(&with_smem(body)).expect_err(body);
        assert!(e.message.contains(want), "{body}: {e}");
        let line = 16 + body.matches('\n').count() as u32;
        assert_eq!(e.line, line, "{body}: {e}");
    }
}
