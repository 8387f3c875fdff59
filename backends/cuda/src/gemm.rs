//! The tensor-core GEMM for f32 matrix products: `mma.sync.m16n8k8` on tf32 operands
//! with f32 accumulation, fed from shared memory by `ldmatrix` and from global memory by
//! `cp.async` into two stages, so the next depth block loads while this one multiplies.
//!
//! A CTA of four warps computes a 64×64 tile of `c` (each warp a 32×32 quarter: 2×4
//! `mma` tiles, 32 accumulators per thread) over depth blocks of 32. Both operands sit in
//! shared memory depth-contiguous, `[row][k]` for `a` and `[col][k]` for `b`, rows
//! padded to 36 floats so the eight 16-byte rows one `ldmatrix` reads fall in distinct
//! banks. `ldmatrix` is a b16 instruction; on f32 rows it hands lane `l` the word
//! `l & 3` of row `l >> 2`, which is exactly the tf32 fragment of `mma.m16n8k8`
//! (`a0 = A[g][t]`, `b0 = B[t][g]`; see the interpreter's `tensor` module).
//!
//! Each element is copied by its own 4-byte `cp.async`, whatever the operand's strides
//! (which may be symbolic), and the copy's source size is 0 outside the matrix, so edge
//! tiles read zeros and never touch memory past an operand. Consecutive threads copy
//! along whichever axis is contiguous in memory. The epilogue (bias, activation,
//! residual) is the same expression the reduction baseline applies (`matmul::epilogue`).
//!
//! [`Precision::Tf32`] rounds each operand to tf32 (10 mantissa bits); [`Precision::Tf32x3`]
//! splits each into its tf32 truncation and the remainder (rounded to tf32) and sums
//! `a·b ≈ aₕbₕ + aₕbₗ + aₗbₕ`, for about f32 accuracy at three times the tensor-core
//! work.
//!
//! f16 and bf16 products (all three operands of one half type) take the same tiles:
//! `cp.async` has no 2-byte copy, so each element is loaded (`ld.global.b16`, 0 outside
//! the matrix), widened exactly and stored to the f32 stage; the stage is then packed
//! back to pairs (`cvt.rn.f16x2`/`bf16x2`, exact) for `mma.m16n8k16` of that type, and
//! the f32 sum rounds once to the output's type, as the interpreter's f32 product of
//! halves does.

use crate::cx::Cx;
use crate::expr::{self, Env, Val};
use crate::kernels::{count_loop, strided, unflatten};
use crate::matmul::epilogue;
use crate::ptx::{Class, Opnd, Reg};
use crate::{EmitError, Precision};
use kiln_ir::{DType, Dim};
use kiln_kernel::kernel::{Access, BufId, MatMul};

/// Threads of one CTA: four warps.
pub(crate) const THREADS: u32 = 128;
const TILE_M: i64 = 64;
const TILE_N: i64 = 64;
const TILE_K: i64 = 32;
/// Floats per shared row: the depth block and 4 of padding (see the module docs).
const PITCH: i64 = 36;
/// Bytes of one stage of either operand (64 rows).
const STAGE: i64 = 64 * PITCH * 4;
/// Elements each thread copies per operand and stage.
const COPIES: i64 = TILE_M * TILE_K / THREADS as i64;

/// The tiles of `m`: its launch's item count.
pub(crate) fn tiles(m: &MatMul) -> Dim {
    let (tm, tn) = (m.m.div_ceil(TILE_M), m.n.div_ceil(TILE_N));
    m.batch.iter().chain([&tm, &tn]).product()
}

/// This thread's place in its CTA, in 32-bit registers.
struct Lanes {
    tid: Reg,
    /// Lane `l`'s group `l >> 2` and place in it `l & 3`, 64-bit for the epilogue.
    g: Reg,
    t: Reg,
    /// Byte offsets in a stage of the row this lane gives `ldmatrix`.
    a_lane: Reg,
    b_lane: Reg,
    /// Byte offsets in a stage of this lane's first bf16 fragment pair: row (of `a`) or
    /// column (of `b`) `warp + g`, depth `2t`.
    a_pair: Reg,
    b_pair: Reg,
    /// The warp's first row and column within the tile (0 or 32), 64-bit.
    warp_m: Reg,
    warp_n: Reg,
}

fn lanes(cx: &mut Cx) -> Lanes {
    let e = &mut cx.e;
    let r = |e: &mut crate::ptx::Entry| e.reg(Class::B32);
    let [tid, lane, warp, wm, wn, lo, mid, hi] = [0; 8].map(|_| r(e));
    e.op(format!("mov.u32 {tid}, %tid.x"));
    e.op(format!("and.b32 {lane}, {tid}, 31"));
    e.op(format!("shr.u32 {warp}, {tid}, 5"));
    e.op(format!("shr.u32 {wm}, {warp}, 1"));
    e.op(format!("and.b32 {wn}, {warp}, 1"));
    // ldmatrix rows: lanes 8q..8q+8 address matrix q. For `a` (x4 = rows 0-7 and
    // 8-15 at depth 0, then both at depth 4): row (l & 7) + 8((l >> 3) & 1), depth
    // 4(l >> 4). For `b` (two 8-column tiles, depth 0 and 4 each): column
    // (l & 7) + 8(l >> 4), depth 4((l >> 3) & 1).
    e.op(format!("and.b32 {lo}, {lane}, 7"));
    e.op(format!("shr.u32 {mid}, {lane}, 3"));
    e.op(format!("and.b32 {mid}, {mid}, 1"));
    e.op(format!("shr.u32 {hi}, {lane}, 4"));
    let lane_offset = |e: &mut crate::ptx::Entry, warp: Reg, eight: Reg, four: Reg| {
        let [row, k, at] = [0; 3].map(|_| e.reg(Class::B32));
        e.op(format!("mad.lo.u32 {row}, {eight}, 8, {lo}"));
        e.op(format!("mad.lo.u32 {row}, {warp}, 32, {row}"));
        e.op(format!("shl.b32 {k}, {four}, 2"));
        e.op(format!("mad.lo.u32 {at}, {row}, {PITCH}, {k}"));
        e.op(format!("shl.b32 {at}, {at}, 2"));
        at
    };
    let a_lane = lane_offset(e, wm, mid, hi);
    let b_lane = lane_offset(e, wn, hi, mid);
    let wide = |e: &mut crate::ptx::Entry, x: Reg, by: u32| {
        let w = e.reg(Class::B64);
        e.op(format!("mul.wide.u32 {w}, {x}, {by}"));
        w
    };
    let (g32, t32) = (r(e), r(e));
    e.op(format!("shr.u32 {g32}, {lane}, 2"));
    e.op(format!("and.b32 {t32}, {lane}, 3"));
    let pair = |e: &mut crate::ptx::Entry, warp: Reg| {
        let [row, at] = [0; 2].map(|_| e.reg(Class::B32));
        e.op(format!("mad.lo.u32 {row}, {warp}, 32, {g32}"));
        e.op(format!("mul.lo.u32 {at}, {row}, {PITCH}"));
        e.op(format!("mad.lo.u32 {at}, {t32}, 2, {at}"));
        e.op(format!("shl.b32 {at}, {at}, 2"));
        at
    };
    let (a_pair, b_pair) = (pair(e, wm), pair(e, wn));
    Lanes {
        a_pair,
        b_pair,
        tid,
        g: wide(e, g32, 1),
        t: wide(e, t32, 1),
        a_lane,
        b_lane,
        warp_m: wide(e, wm, 32),
        warp_n: wide(e, wn, 32),
    }
}

/// One operand as a tile source: element `base + u·u_stride + k·k_stride` for tile row
/// `u` (a row of `a`, a column of `b`) at depth `k`, valid for `u < u_len`, `k < k_len`.
struct Source {
    buf: BufId,
    base: Reg,
    u0: Reg,
    u_len: Opnd,
    u_stride: Dim,
    k_stride: Dim,
    smem: &'static str,
}

/// Emits the product `m` (f32 buffers, checked by the caller) as this module's kernel.
pub(crate) fn gemm(cx: &mut Cx, m: &MatMul, precision: Precision) -> Result<(), EmitError> {
    cx.e.shared("smem_a", 2 * STAGE as u32, 16);
    cx.e.shared("smem_b", 2 * STAGE as u32, 16);
    let lanes = lanes(cx);
    let half = cx.program.buffers[m.a.buf].dtype;
    let half = crate::half::is_half(half).then_some(half);
    let per_batch: Dim = [m.m.div_ceil(TILE_M), m.n.div_ceil(TILE_N)]
        .iter()
        .product();
    let (per_batch, tiles_n) = (cx.dim(&per_batch)?, cx.dim(&m.n.div_ceil(TILE_N))?);
    let (total, k_len) = (cx.dim(&tiles(m))?, cx.dim(&m.k)?);
    let k_tiles = cx.dim(&m.k.div_ceil(TILE_K))?;
    let (first, step) = cta_ids(cx);
    strided(cx, Opnd::Reg(first), total, Opnd::Reg(step), |cx, tile| {
        let e = &mut cx.e;
        let [b, rest, tm, tn, m0, n0] = [0; 6].map(|_| e.reg(Class::B64));
        e.op(format!("div.u64 {b}, {tile}, {per_batch}"));
        e.op(format!("rem.u64 {rest}, {tile}, {per_batch}"));
        e.op(format!("div.u64 {tm}, {rest}, {tiles_n}"));
        e.op(format!("rem.u64 {tn}, {rest}, {tiles_n}"));
        e.op(format!("mul.lo.s64 {m0}, {tm}, {TILE_M}"));
        e.op(format!("mul.lo.s64 {n0}, {tn}, {TILE_N}"));
        let batch = unflatten(cx, b, &m.batch)?;
        let base = |cx: &mut Cx, op: &kiln_kernel::kernel::MatOperand| {
            let walk = Access {
                buf: op.buf,
                offset: op.offset.clone(),
                strides: op.batch_strides.clone(),
            };
            cx.element(&walk, &batch)
        };
        let a = Source {
            buf: m.a.buf,
            base: base(cx, &m.a)?,
            u0: m0,
            u_len: cx.dim(&m.m)?,
            u_stride: m.a.row_stride.clone(),
            k_stride: m.a.col_stride.clone(),
            smem: "smem_a",
        };
        let b_src = Source {
            buf: m.b.buf,
            base: base(cx, &m.b)?,
            u0: n0,
            u_len: cx.dim(&m.n)?,
            u_stride: m.b.col_stride.clone(),
            k_stride: m.b.row_stride.clone(),
            smem: "smem_b",
        };
        let acc: Vec<Reg> = (0..32).map(|_| cx.e.reg(Class::F32)).collect();
        for r in &acc {
            cx.e.op(format!("mov.f32 {r}, 0f00000000"));
        }
        let zero = cx.e.reg(Class::B64);
        cx.e.op(format!("mov.s64 {zero}, 0"));
        for src in [&a, &b_src] {
            load_stage(cx, &lanes, src, zero, zero, k_len, half)?;
        }
        cx.e.op("cp.async.commit_group");
        count_loop(cx, k_tiles, |cx, kt| {
            let e = &mut cx.e;
            let [next, stage, k0] = [0; 3].map(|_| e.reg(Class::B64));
            let (last, skip) = (e.reg(Class::Pred), e.label());
            e.op(format!("add.s64 {next}, {kt}, 1"));
            e.op(format!("setp.ge.s64 {last}, {next}, {k_tiles}"));
            e.op(format!("@{last} bra {skip}"));
            e.op(format!("and.b64 {stage}, {next}, 1"));
            e.op(format!("mul.lo.s64 {k0}, {next}, {TILE_K}"));
            for src in [&a, &b_src] {
                load_stage(cx, &lanes, src, stage, k0, k_len, half)?;
            }
            let e = &mut cx.e;
            e.place(&skip);
            // Every thread commits a group each step (empty on the last), so waiting
            // for all but the newest always lands this step's stage.
            e.op("cp.async.commit_group");
            e.op("cp.async.wait_group 1");
            e.op("bar.sync 0");
            let stage = e.reg(Class::B64);
            e.op(format!("and.b64 {stage}, {kt}, 1"));
            multiply(cx, &lanes, stage, &acc, precision, half);
            cx.e.op("bar.sync 0");
            Ok(())
        })?;
        cx.e.op("cp.async.wait_group 0");
        store(cx, m, &lanes, &batch, [m0, n0], &acc)
    })
}

/// The CTA's index and the grid's CTA count, 64-bit: tiles are taken CTA by CTA, so
/// every thread of a CTA runs the same iterations and meets the same barriers.
fn cta_ids(cx: &mut Cx) -> (Reg, Reg) {
    let e = &mut cx.e;
    let (c32, n32) = (e.reg(Class::B32), e.reg(Class::B32));
    let (c, n) = (e.reg(Class::B64), e.reg(Class::B64));
    e.op(format!("mov.u32 {c32}, %ctaid.x"));
    e.op(format!("mov.u32 {n32}, %nctaid.x"));
    e.op(format!("cvt.u64.u32 {c}, {c32}"));
    e.op(format!("cvt.u64.u32 {n}, {n32}"));
    (c, n)
}

/// Starts the copies of one operand's depth block at `k0` into `stage` (0 or 1); for
/// `half` operands, loads and stores them widened.
fn load_stage(
    cx: &mut Cx,
    lanes: &Lanes,
    src: &Source,
    stage: Reg,
    k0: Reg,
    k_len: Opnd,
    half: Option<DType>,
) -> Result<(), EmitError> {
    // Consecutive threads walk the contiguous axis: depth unless only rows are.
    let k_fast = src.k_stride.is_one() || !src.u_stride.is_one();
    let (u_stride, k_stride) = (cx.dim(&src.u_stride)?, cx.dim(&src.k_stride)?);
    let e = &mut cx.e;
    let [tid, u, k] = [0; 3].map(|_| e.reg(Class::B64));
    e.op(format!("cvt.u64.u32 {tid}, {}", lanes.tid));
    let (per_copy, step_bytes) = if k_fast {
        e.op(format!("shr.u64 {u}, {tid}, 5"));
        e.op(format!("and.b64 {k}, {tid}, 31"));
        (4, 4 * PITCH * 4)
    } else {
        e.op(format!("and.b64 {u}, {tid}, 63"));
        e.op(format!("shr.u64 {k}, {tid}, 6"));
        (2, 2 * 4)
    };
    // Shared destination of copy 0; copy j is `j * step_bytes` further.
    let [dst64, dst, smem, gu, gk, elem, step] = [
        Class::B64,
        Class::B32,
        Class::B32,
        Class::B64,
        Class::B64,
        Class::B64,
        Class::B64,
    ]
    .map(|c| e.reg(c));
    e.op(format!("mad.lo.s64 {dst64}, {u}, {PITCH}, {k}"));
    e.op(format!(
        "mad.lo.s64 {dst64}, {stage}, {}, {dst64}",
        STAGE / 4
    ));
    e.op(format!("cvt.u32.u64 {dst}, {dst64}"));
    e.op(format!("shl.b32 {dst}, {dst}, 2"));
    e.op(format!("mov.u32 {smem}, {}", src.smem));
    e.op(format!("add.u32 {dst}, {dst}, {smem}"));
    e.op(format!("add.s64 {gu}, {}, {u}", src.u0));
    e.op(format!("add.s64 {gk}, {k0}, {k}"));
    e.op(format!("mad.lo.s64 {elem}, {gu}, {u_stride}, {}", src.base));
    e.op(format!("mad.lo.s64 {elem}, {gk}, {k_stride}, {elem}"));
    let (walk, stride) = if k_fast {
        (gu, u_stride)
    } else {
        (gk, k_stride)
    };
    e.op(format!("mul.lo.s64 {step}, {stride}, {per_copy}"));
    for j in 0..COPIES {
        let e = &mut cx.e;
        if j > 0 {
            e.op(format!("add.s64 {walk}, {walk}, {per_copy}"));
            e.op(format!("add.s64 {elem}, {elem}, {step}"));
        }
        let [in_u, in_k, ok] = [0; 3].map(|_| e.reg(Class::Pred));
        let (at, size) = (e.reg(Class::B64), e.reg(Class::B32));
        e.op(format!("setp.lt.s64 {in_u}, {gu}, {}", src.u_len));
        e.op(format!("setp.lt.s64 {in_k}, {gk}, {k_len}"));
        e.op(format!("and.pred {ok}, {in_u}, {in_k}"));
        // Outside the matrix the copy reads nothing: source size 0, and the address of
        // the buffer's first element rather than one past the operand.
        e.op(format!("selp.s64 {at}, {elem}, 0, {ok}"));
        e.op(format!("selp.u32 {size}, 4, 0, {ok}"));
        let addr = cx.address(src.buf, at);
        let off = j * step_bytes;
        if let Some(d) = half {
            let e = &mut cx.e;
            let (h, f) = (e.reg(Class::B16), e.reg(Class::F32));
            let ty = if d == DType::BF16 { "bf16" } else { "f16" };
            e.op(format!("mov.b16 {h}, 0"));
            e.op(format!("@{ok} ld.global.b16 {h}, [{addr}]"));
            e.op(format!("cvt.f32.{ty} {f}, {h}"));
            e.op(format!("st.shared.f32 [{dst}+{off}], {f}"));
            continue;
        }
        cx.e.op(format!(
            "cp.async.ca.shared.global [{dst}+{off}], [{addr}], 4, {size}"
        ));
    }
    Ok(())
}

/// The multiply-accumulates of one stage: four depth steps of 8, each loading the warp's
/// fragments (two 16-row blocks of `a`, four 8-column blocks of `b`) and issuing the
/// 2×4 `mma`s (three each for [`Precision::Tf32x3`]).
fn multiply(
    cx: &mut Cx,
    lanes: &Lanes,
    stage: Reg,
    acc: &[Reg],
    precision: Precision,
    half: Option<DType>,
) {
    let e = &mut cx.e;
    let [s32, a_at, b_at, smem] = [0; 4].map(|_| e.reg(Class::B32));
    e.op(format!("cvt.u32.u64 {s32}, {stage}"));
    e.op(format!("mul.lo.u32 {s32}, {s32}, {STAGE}"));
    let k16 = match half {
        Some(DType::F16) => Some("f16"),
        Some(_) => Some("bf16"),
        None if precision == Precision::Bf16 => Some("bf16"),
        None => None,
    };
    let (a_lane, b_lane) = match k16.is_some() {
        true => (lanes.a_pair, lanes.b_pair),
        false => (lanes.a_lane, lanes.b_lane),
    };
    for (at, lane, name) in [(a_at, a_lane, "smem_a"), (b_at, b_lane, "smem_b")] {
        e.op(format!("mov.u32 {smem}, {name}"));
        e.op(format!("add.u32 {at}, {smem}, {s32}"));
        e.op(format!("add.u32 {at}, {at}, {lane}"));
    }
    if let Some(ty) = k16 {
        return multiply_k16(e, a_at, b_at, acc, ty);
    }
    for ks in 0..TILE_K / 8 {
        let frags = |e: &mut crate::ptx::Entry, at: Reg, block: i64| {
            let regs = [0; 4].map(|_| e.reg(Class::B32));
            let off = (block * 16 * PITCH + ks * 8) * 4;
            e.op(format!(
                "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{{}, {}, {}, {}}}, [{at}+{off}]",
                regs[0], regs[1], regs[2], regs[3]
            ));
            regs
        };
        let a: Vec<_> = (0..2).map(|mi| frags(e, a_at, mi)).collect();
        let b: Vec<_> = (0..2).map(|p| frags(e, b_at, p)).collect();
        let a: Vec<Split> = a.iter().map(|f| split(e, f, precision)).collect();
        let b: Vec<Split> = b.iter().map(|f| split(e, f, precision)).collect();
        for (mi, a) in a.iter().enumerate() {
            for nj in 0..4 {
                let half = |f: &[Reg; 4]| [f[2 * (nj % 2)], f[2 * (nj % 2) + 1]];
                let b = &b[nj / 2];
                let d = &acc[(mi * 4 + nj) * 4..][..4];
                if let (Some((a_small, a_kept)), Some((b_small, b_kept))) = (&a.small, &b.small) {
                    mma(e, d, a_small, &half(b_kept));
                    mma(e, d, a_kept, &half(b_small));
                }
                mma(e, d, &a.big, &half(&b.big));
            }
        }
    }
}

/// [`multiply`] in bf16 or f16 (`ty`): two depth steps of 16, each lane packing its
/// fragment pairs from the f32 rows (`cvt.rn.bf16x2`/`f16x2`; `ldmatrix` cannot
/// convert), then the 2×4 `mma.m16n8k16`s. The m16n8k16 fragments: `a` registers hold
/// rows `g`, `g + 8` at depths `2t`, `2t + 8` (two values each), `b` registers depths
/// `2t`, `2t + 8` of column `g`.
fn multiply_k16(e: &mut crate::ptx::Entry, a_at: Reg, b_at: Reg, acc: &[Reg], ty: &str) {
    let row_bytes = PITCH * 4;
    let pack = |e: &mut crate::ptx::Entry, at: Reg, off: i64| {
        let [lo, hi] = [0; 2].map(|_| e.reg(Class::F32));
        let r = e.reg(Class::B32);
        e.op(format!("ld.shared.f32 {lo}, [{at}+{off}]"));
        e.op(format!("ld.shared.f32 {hi}, [{at}+{}]", off + 4));
        // The lower depth goes in the low half: cvt puts its first source high.
        e.op(format!("cvt.rn.{ty}x2.f32 {r}, {hi}, {lo}"));
        r
    };
    for ks in 0..TILE_K / 16 {
        let k = ks * 16 * 4;
        let a: Vec<[Reg; 4]> = (0..2)
            .map(|mi| {
                let base = mi * 16 * row_bytes + k;
                [0, 8 * row_bytes, 32, 8 * row_bytes + 32].map(|o| pack(e, a_at, base + o))
            })
            .collect();
        let b: Vec<[Reg; 2]> = (0..4)
            .map(|nj| {
                let base = nj * 8 * row_bytes + k;
                [0, 32].map(|o| pack(e, b_at, base + o))
            })
            .collect();
        for (mi, a) in a.iter().enumerate() {
            for (nj, b) in b.iter().enumerate() {
                let d = &acc[(mi * 4 + nj) * 4..][..4];
                let dl = format!("{{{}, {}, {}, {}}}", d[0], d[1], d[2], d[3]);
                e.op(format!(
                    "mma.sync.aligned.m16n8k16.row.col.f32.{ty}.{ty}.f32 {dl}, {{{}, {}, {}, {}}}, {{{}, {}}}, {dl}",
                    a[0], a[1], a[2], a[3], b[0], b[1]
                ));
            }
        }
    }
}

/// A fragment's registers as tf32: rounded, and for [`Precision::Tf32x3`] the rounding
/// remainders rounded too.
struct Split {
    big: [Reg; 4],
    /// The remainders, and the high parts again with values from 2^60 on as 0: the
    /// correction products use these, so none is `0 · ∞`.
    small: Option<([Reg; 4], [Reg; 4])>,
}

fn split(e: &mut crate::ptx::Entry, f: &[Reg; 4], precision: Precision) -> Split {
    let (mut big, mut small, mut modest_big) = (*f, *f, *f);
    for (i, &r) in f.iter().enumerate() {
        let hi = e.reg(Class::B32);
        if precision == Precision::Tf32 {
            let x = e.reg(Class::F32);
            e.op(format!("mov.b32 {x}, {r}"));
            e.op(format!("cvt.rna.tf32.f32 {hi}, {x}"));
            big[i] = hi;
            continue;
        }
        // Split by truncation: the high part cannot overflow and the remainder is
        // exact. From 2^60 on (infinities and NaN too) the value goes whole into the
        // high part: a remainder's product could otherwise overflow on its own, and an
        // infinite correction against an infinite main product is NaN where f32 gives
        // the infinity.
        let [x, hf, rest, ax, kept] = [0; 5].map(|_| e.reg(Class::F32));
        let (modest, lo, hi_kept) = (e.reg(Class::Pred), e.reg(Class::B32), e.reg(Class::B32));
        e.op(format!("and.b32 {hi}, {r}, 0xFFFFE000"));
        e.op(format!("mov.b32 {x}, {r}"));
        e.op(format!("mov.b32 {hf}, {hi}"));
        e.op(format!("sub.rn.f32 {rest}, {x}, {hf}"));
        e.op(format!("abs.f32 {ax}, {x}"));
        e.op(format!("setp.lt.f32 {modest}, {ax}, 0f5D800000"));
        e.op(format!("selp.f32 {kept}, {rest}, 0f00000000, {modest}"));
        e.op(format!("cvt.rna.tf32.f32 {lo}, {kept}"));
        e.op(format!("selp.b32 {hi_kept}, {hi}, 0, {modest}"));
        big[i] = hi;
        small[i] = lo;
        modest_big[i] = hi_kept;
    }
    Split {
        big,
        small: (precision == Precision::Tf32x3).then_some((small, modest_big)),
    }
}

fn mma(e: &mut crate::ptx::Entry, d: &[Reg], a: &[Reg; 4], b: &[Reg; 2]) {
    let d = format!("{{{}, {}, {}, {}}}", d[0], d[1], d[2], d[3]);
    e.op(format!(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {d}, {{{}, {}, {}, {}}}, {{{}, {}}}, {d}",
        a[0], a[1], a[2], a[3], b[0], b[1]
    ));
}

/// The epilogue: each accumulator inside the matrix through `m`'s epilogue to `c`.
/// Accumulator `(mi, nj, e)` is row `16 mi + g + 8(e >> 1)`, column `8 nj + 2t + (e & 1)`
/// of the warp's quarter (the C fragment of `mma.m16n8k8`).
fn store(
    cx: &mut Cx,
    m: &MatMul,
    lanes: &Lanes,
    batch: &[Reg],
    [m0, n0]: [Reg; 2],
    acc: &[Reg],
) -> Result<(), EmitError> {
    let (out, mut post) = epilogue(m);
    let c = cx.program.buffers[m.c.buf].dtype;
    if c != DType::F32 {
        // A product of halves: the f32 sum rounds once to the output's type.
        let sum = post.root();
        post.push(kiln_kernel::kernel::ExprNode::Cast(sum), c);
    }
    let (m_len, n_len) = (cx.dim(&m.m)?, cx.dim(&m.n)?);
    let e = &mut cx.e;
    let [row0, col0] = [0; 2].map(|_| e.reg(Class::B64));
    e.op(format!("add.s64 {row0}, {m0}, {}", lanes.warp_m));
    e.op(format!("add.s64 {row0}, {row0}, {}", lanes.g));
    e.op(format!("add.s64 {col0}, {n0}, {}", lanes.warp_n));
    e.op(format!("mad.lo.s64 {col0}, {}, 2, {col0}", lanes.t));
    for (i, &reg) in acc.iter().enumerate() {
        let (mi, nj, el) = (i / 16, (i / 4) % 4, i % 4);
        let (dr, dc) = (16 * mi + 8 * (el >> 1), 8 * nj + (el & 1));
        let e = &mut cx.e;
        let [row, col] = [0; 2].map(|_| e.reg(Class::B64));
        let [in_r, in_c, out_side] = [0; 3].map(|_| e.reg(Class::Pred));
        let skip = e.label();
        e.op(format!("add.s64 {row}, {row0}, {dr}"));
        e.op(format!("add.s64 {col}, {col0}, {dc}"));
        e.op(format!("setp.lt.s64 {in_r}, {row}, {m_len}"));
        e.op(format!("setp.lt.s64 {in_c}, {col}, {n_len}"));
        e.op(format!("and.pred {out_side}, {in_r}, {in_c}"));
        e.op(format!("@!{out_side} bra {skip}"));
        let index: Vec<Reg> = batch.iter().copied().chain([row, col]).collect();
        let env = Env {
            index: &index,
            acc: Some(Val {
                reg,
                dtype: DType::F32,
            }),
            stats: &[],
        };
        let v = expr::emit(cx, &post, &env)?;
        let element = cx.element(&out, &index)?;
        expr::store(cx, out.buf, element, v)?;
        cx.e.place(&skip);
    }
    Ok(())
}
