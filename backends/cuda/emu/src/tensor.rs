//! The tensor-core instructions: `ldmatrix` and `mma.sync`, warp collectives
//! whose operands are spread over the lanes by the fragment layouts of the
//! PTX ISA ("Matrix Fragments for mma.m16n8k8" and "mma.m16n8k16", and
//! "Warp-level matrix load instruction: ldmatrix").
//!
//! In every layout below, lane `l` has `g = l >> 2` (its group) and
//! `t = l & 3` (its place in the group).
//!
//! * `ldmatrix ... .xN`: lanes `8q..8q+8` give the row addresses of matrix
//!   `q` (8 rows of 16 bytes, 16-byte aligned). Lane `l` receives in its
//!   register `q` the 32-bit word `t` of row `g` of matrix `q`; with
//!   `.trans`, the b16 elements `(2t, g)` (low half) and `(2t + 1, g)`.
//! * `mma.m16n8k8.tf32` (A 16×8, B 8×8): `a0 = A[g][t]`, `a1 = A[g+8][t]`,
//!   `a2 = A[g][t+4]`, `a3 = A[g+8][t+4]`; `b0 = B[t][g]`, `b1 = B[t+4][g]`.
//!   The hardware reads a tf32 as the f32 bits with the low 13 ignored.
//! * `mma.m16n8k16.bf16` and `.f16` (A 16×16, B 16×8; each register holds two values,
//!   the lower column or row in the low half): `a0 = A[g][2t..]`,
//!   `a1 = A[g+8][2t..]`, `a2 = A[g][2t+8..]`, `a3 = A[g+8][2t+8..]`;
//!   `b0 = B[2t..][g]`, `b1 = B[2t+8..][g]`.
//! * C and D (16×8 f32): `c0 = C[g][2t]`, `c1 = C[g][2t+1]`,
//!   `c2 = C[g+8][2t]`, `c3 = C[g+8][2t+1]`.
//!
//! The products of tf32, bf16 or f16 values are exact in f64, so `D = A·B + C`
//! is summed in f64 and rounded once to f32. The hardware's order and
//! rounding of the sum are not specified; results agree to f32 rounding of
//! the accumulation, so compare with tolerances.

use crate::error::{EmuError, ParseError};
use crate::exec::{Ctx, Thread};
use crate::inst::{Inst, MmaShape, Op, Reg};
use crate::operand::{RawOperand, Scope};
use crate::types::Type;

const WARP: usize = 32;

/// Decodes `ldmatrix` and `mma`, appending their registers to `lists`;
/// `None` for any other opcode.
pub(crate) fn decode(
    opcode: &str,
    ops: &[RawOperand],
    s: &Scope,
    lists: &mut Vec<Reg>,
) -> Result<Option<Op>, ParseError> {
    let mods: Vec<&str> = opcode.split('.').collect();
    let unknown = || s.err(format!("unknown instruction '{opcode}'"));
    let start = u32::try_from(lists.len()).map_err(|_| s.err("too many vector operands"))?;
    match mods.as_slice() {
        ["ldmatrix", "sync", "aligned", "m8n8", x, rest @ ..] => {
            let count: u8 = match *x {
                "x1" => 1,
                "x2" => 2,
                "x4" => 4,
                _ => return Err(unknown()),
            };
            let trans = match rest {
                ["shared", "b16"] => false,
                ["trans", "shared", "b16"] => true,
                _ => return Err(unknown()),
            };
            let [d, a] = ops else {
                return Err(s.err("ldmatrix takes a vector and an address"));
            };
            lists.extend(s.list(d, Type::B32, usize::from(count))?);
            let addr = s.shared_addr(a)?;
            let regs = start;
            Ok(Some(Op::Ldmatrix {
                count,
                trans,
                regs,
                addr,
            }))
        }
        ["mma", "sync", "aligned", shape, "row", "col", "f32", x, y, "f32"] if x == y => {
            let shape = match (*shape, *x) {
                ("m16n8k8", "tf32") => MmaShape::M16N8K8Tf32,
                ("m16n8k16", "bf16") => MmaShape::M16N8K16Bf16,
                ("m16n8k16", "f16") => MmaShape::M16N8K16F16,
                _ => return Err(unknown()),
            };
            let [d, a, b, c] = ops else {
                return Err(s.err("mma takes four vector operands: d, a, b, c"));
            };
            let [nd, na, nb, nc] = MmaShape::COUNTS;
            lists.extend(s.list(d, Type::F32, nd)?);
            lists.extend(s.list(a, Type::B32, na)?);
            lists.extend(s.list(b, Type::B32, nb)?);
            lists.extend(s.list(c, Type::F32, nc)?);
            Ok(Some(Op::Mma { shape, regs: start }))
        }
        ["ldmatrix" | "mma", ..] => Err(unknown()),
        _ => Ok(None),
    }
}

/// Whether `inst` is a warp collective of this module.
pub(crate) fn is_tensor(inst: &Inst) -> bool {
    matches!(inst.op, Op::Ldmatrix { .. } | Op::Mma { .. })
}

/// Runs `ldmatrix` or `mma` for a whole warp, every lane waiting at `inst`.
pub(crate) fn collective(
    cx: &mut Ctx,
    inst: &Inst,
    threads: &mut [Thread],
) -> Result<(), EmuError> {
    if threads.len() != WARP {
        // The fragment layouts need all 32 lanes; a partial warp has none
        // to give for the missing ones.
        return Err(EmuError::MemberMask {
            entry: cx.name(),
            line: inst.line,
            mask: u32::MAX,
            lanes: (1u32 << threads.len()) - 1,
        });
    }
    match inst.op {
        Op::Ldmatrix {
            count,
            trans,
            regs,
            addr,
        } => {
            let rows = load_rows(cx, inst, threads, usize::from(count), addr)?;
            let lists = &cx.entry.lists[regs as usize..];
            for (lane, th) in threads.iter_mut().enumerate() {
                let (g, t) = (lane >> 2, lane & 3);
                for (q, m) in rows.iter().enumerate().take(usize::from(count)) {
                    let (lo, hi) = match trans {
                        false => (m[g][2 * t], m[g][2 * t + 1]),
                        true => (m[2 * t][g], m[2 * t + 1][g]),
                    };
                    let v = u64::from(lo) | u64::from(hi) << 16;
                    th.write(lists[q], v, cx);
                }
            }
            Ok(())
        }
        Op::Mma { shape, regs } => mma(cx, inst, threads, shape, regs as usize),
        _ => Ok(()),
    }
}

/// The 8×8 b16 matrices an `ldmatrix` reads, each row from the address its
/// lane gives; the reads count as that lane's for race tracking.
fn load_rows(
    cx: &mut Ctx,
    inst: &Inst,
    threads: &[Thread],
    count: usize,
    addr: crate::inst::SharedAddr,
) -> Result<[[[u16; 8]; 8]; 4], EmuError> {
    let mut rows = [[[0u16; 8]; 8]; 4];
    for (q, m) in rows.iter_mut().enumerate().take(count) {
        for (r, row) in m.iter_mut().enumerate() {
            let th = &threads[q * 8 + r];
            let at = th.shared_address(addr, 16, inst, cx)?;
            for half in 0..2u64 {
                let a = at + 8 * half;
                let raw = (cx.shared.load(a, 8, th.lin(), inst.line))
                    .map_err(|f| th.shared_fault(f, inst, cx, a, 8))?;
                for e in 0..4 {
                    row[4 * half as usize + e] = (raw >> (16 * e)) as u16;
                }
            }
        }
    }
    Ok(rows)
}

/// `D = A·B + C` for the warp.
fn mma(
    cx: &Ctx,
    inst: &Inst,
    threads: &mut [Thread],
    shape: MmaShape,
    at: usize,
) -> Result<(), EmuError> {
    let k = match shape {
        MmaShape::M16N8K8Tf32 => 8,
        MmaShape::M16N8K16Bf16 | MmaShape::M16N8K16F16 => 16,
    };
    let (mut a, mut b) = ([[0f64; 16]; 16], [[0f64; 8]; 16]);
    let mut c = [[0f64; 8]; 16];
    let l = &cx.entry.lists[at..at + 14];
    let (ld, la, lb, lc) = (&l[..4], &l[4..8], &l[8..10], &l[10..14]);
    for (lane, th) in threads.iter().enumerate() {
        let (g, t) = (lane >> 2, lane & 3);
        let read = |r: Reg| th.read(r, inst, cx).map(|v| v as u32);
        let (mut ra, mut rb) = ([0u32; 4], [0u32; 2]);
        for (v, &r) in ra.iter_mut().zip(la).chain(rb.iter_mut().zip(lb)) {
            *v = read(r)?;
        }
        match shape {
            MmaShape::M16N8K8Tf32 => {
                for (i, (row, col)) in [(g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4)]
                    .into_iter()
                    .enumerate()
                {
                    a[row][col] = tf32(ra[i]);
                }
                b[t][g] = tf32(rb[0]);
                b[t + 4][g] = tf32(rb[1]);
            }
            MmaShape::M16N8K16Bf16 | MmaShape::M16N8K16F16 => {
                let half = |v: u32| match shape {
                    MmaShape::M16N8K16F16 => f64::from(crate::alu::f16_to_f32(v as u16)),
                    _ => bf16(v),
                };
                for (i, (row, col)) in [
                    (g, 2 * t),
                    (g + 8, 2 * t),
                    (g, 2 * t + 8),
                    (g + 8, 2 * t + 8),
                ]
                .into_iter()
                .enumerate()
                {
                    let v = ra[i];
                    a[row][col] = half(v);
                    a[row][col + 1] = half(v >> 16);
                }
                for (i, row) in [2 * t, 2 * t + 8].into_iter().enumerate() {
                    let v = rb[i];
                    b[row][g] = half(v);
                    b[row + 1][g] = half(v >> 16);
                }
            }
        }
        for (i, (row, col)) in c_places(g, t).into_iter().enumerate() {
            c[row][col] = f64::from(f32::from_bits(read(lc[i])?));
        }
    }
    for (lane, th) in threads.iter_mut().enumerate() {
        let (g, t) = (lane >> 2, lane & 3);
        for (i, (row, col)) in c_places(g, t).into_iter().enumerate() {
            let sum: f64 = (0..k).map(|x| a[row][x] * b[x][col]).sum();
            let v = (sum + c[row][col]) as f32;
            th.write(ld[i], u64::from(v.to_bits()), cx);
        }
    }
    Ok(())
}

/// Where lane `(g, t)`'s four accumulators sit in the 16×8 C and D.
fn c_places(g: usize, t: usize) -> [(usize, usize); 4] {
    [
        (g, 2 * t),
        (g, 2 * t + 1),
        (g + 8, 2 * t),
        (g + 8, 2 * t + 1),
    ]
}

/// A tf32 operand as the hardware reads it: the low 13 mantissa bits ignored.
fn tf32(bits: u32) -> f64 {
    f64::from(f32::from_bits(bits & 0xFFFF_E000))
}

/// The bf16 in the low 16 bits of `bits`.
fn bf16(bits: u32) -> f64 {
    f64::from(f32::from_bits((bits & 0xFFFF) << 16))
}
