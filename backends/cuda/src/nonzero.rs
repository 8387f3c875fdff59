//! `NonZero`, whose output size is the data's: two entries the staged runtime launches
//! around a read of the count (`runtime::staged`). Both run on one warp:
//!
//! - `count(x, n, out)`: the lanes count their share of the elements, a butterfly sums
//!   them, and lane 0 stores the count (a `u64`) at `out`;
//! - `write(x, dims, rank, n, count, out)`: the warp walks the elements 32 at a time in
//!   row-major order; an inclusive scan of the lanes' flags (`shfl.up`) gives each
//!   non-zero element its position, and its coordinates (row-major over the `rank`
//!   dims at `dims`) go to `out[axis · count + position]`, the `i64[rank, count]`
//!   result.
//!
//! An element is non-zero when its bits are, ignoring a float's sign bit (so `-0.0` is
//! zero and NaN is not), which is the interpreter's `x != 0` for every dtype.

use crate::kernels::shuffle_xor;
use crate::ptx::{Class, Entry, Param, Reg};
use kiln_ir::DType;

/// The two entries' text, named `{prefix}count` and `{prefix}write`, for elements of `d`.
pub(crate) fn entries(prefix: &str, d: DType) -> String {
    let mut text = count(d).finish(&format!("{prefix}count"), &params(&["x", "n", "out"]));
    text.push('\n');
    let write_params = params(&["x", "dims", "rank", "n", "count", "out"]);
    text.push_str(&write(d).finish(&format!("{prefix}write"), &write_params));
    text
}

/// Pointers are `x`, `dims` and `out`; the rest are `s64`.
fn params(names: &[&str]) -> Vec<Param> {
    names
        .iter()
        .map(|&n| match n {
            "x" | "dims" | "out" => Param::Ptr(n.into()),
            _ => Param::S64(n.into()),
        })
        .collect()
}

fn pointer(e: &mut Entry, name: &str) -> Reg {
    let (raw, at) = (e.reg(Class::B64), e.reg(Class::B64));
    e.pre(format!("ld.param.u64 {raw}, [{name}]"));
    e.pre(format!("cvta.to.global.u64 {at}, {raw}"));
    at
}

fn value(e: &mut Entry, name: &str) -> Reg {
    let r = e.reg(Class::B64);
    e.pre(format!("ld.param.s64 {r}, [{name}]"));
    r
}

/// The lane's index (0..32) as a 64-bit value.
fn lane(e: &mut Entry) -> Reg {
    let (t, l) = (e.reg(Class::B32), e.reg(Class::B64));
    e.pre(format!("mov.u32 {t}, %tid.x"));
    e.pre(format!("cvt.u64.u32 {l}, {t}"));
    l
}

/// Whether element `j` of `x` is non-zero.
fn nonzero(e: &mut Entry, x: Reg, j: Reg, d: DType) -> Reg {
    let size = d.size_bytes().max(1);
    let (off, at, bits) = (e.reg(Class::B64), e.reg(Class::B64), e.reg(Class::B64));
    e.op(format!("mul.lo.s64 {off}, {j}, {size}"));
    e.op(format!("add.s64 {at}, {x}, {off}"));
    let width = size * 8;
    if size == 8 {
        e.op(format!("ld.global.u64 {bits}, [{at}]"));
    } else {
        let w = e.reg(Class::B32);
        e.op(format!("ld.global.u{width} {w}, [{at}]"));
        e.op(format!("cvt.u64.u32 {bits}, {w}"));
    }
    let magnitude = if d.is_float() {
        let m = e.reg(Class::B64);
        let mask = (1u128 << (width - 1)) - 1;
        e.op(format!("and.b64 {m}, {bits}, {mask}"));
        m
    } else {
        bits
    };
    let p = e.reg(Class::Pred);
    e.op(format!("setp.ne.u64 {p}, {magnitude}, 0"));
    p
}

/// Each lane counts elements `lane, lane + 32, …` (no shuffle inside the loop, so the
/// lanes may leave it apart), then the butterfly sums the warp.
fn count(d: DType) -> Entry {
    let mut e = Entry::default();
    let (x, n, out) = (
        pointer(&mut e, "x"),
        value(&mut e, "n"),
        pointer(&mut e, "out"),
    );
    let l = lane(&mut e);
    let (j, acc) = (e.reg(Class::B64), e.reg(Class::B64));
    e.op(format!("mov.s64 {acc}, 0"));
    e.op(format!("mov.s64 {j}, {l}"));
    let (top, done) = (e.label(), e.label());
    e.place(&top);
    let past = e.reg(Class::Pred);
    e.op(format!("setp.ge.s64 {past}, {j}, {n}"));
    e.op(format!("@{past} bra {done}"));
    let p = nonzero(&mut e, x, j, d);
    let one = e.reg(Class::B64);
    e.op(format!("selp.s64 {one}, 1, 0, {p}"));
    e.op(format!("add.s64 {acc}, {acc}, {one}"));
    e.op(format!("add.s64 {j}, {j}, 32"));
    e.op(format!("bra {top}"));
    e.place(&done);
    for offset in [16, 8, 4, 2, 1] {
        let other = shuffle_xor(&mut e, acc, offset);
        e.op(format!("add.s64 {acc}, {acc}, {other}"));
    }
    let (other, skip) = (e.reg(Class::Pred), e.label());
    e.op(format!("setp.ne.s64 {other}, {l}, 0"));
    e.op(format!("@{other} bra {skip}"));
    e.op(format!("st.global.u64 [{out}], {acc}"));
    e.place(&skip);
    e.op("ret");
    e
}

/// The warp takes 32 elements per step (all lanes in every step, so every lane reaches
/// each shuffle), scans their flags and stores the coordinates of the non-zero ones.
fn write(d: DType) -> Entry {
    let mut e = Entry::default();
    let (x, dims) = (pointer(&mut e, "x"), pointer(&mut e, "dims"));
    let (rank, n, count) = (
        value(&mut e, "rank"),
        value(&mut e, "n"),
        value(&mut e, "count"),
    );
    let out = pointer(&mut e, "out");
    let l = lane(&mut e);
    let lane32 = e.reg(Class::B32);
    e.pre(format!("cvt.u32.u64 {lane32}, {l}"));
    let (chunk, running) = (e.reg(Class::B64), e.reg(Class::B64));
    e.op(format!("mov.s64 {chunk}, 0"));
    e.op(format!("mov.s64 {running}, 0"));
    let (top, done) = (e.label(), e.label());
    e.place(&top);
    let finished = e.reg(Class::Pred);
    e.op(format!("setp.ge.s64 {finished}, {chunk}, {n}"));
    e.op(format!("@{finished} bra {done}"));
    // The lane's element and its flag (0 past the end).
    let (j, inside) = (e.reg(Class::B64), e.reg(Class::Pred));
    e.op(format!("add.s64 {j}, {chunk}, {l}"));
    e.op(format!("setp.lt.s64 {inside}, {j}, {n}"));
    let flag = e.reg(Class::B32);
    e.op(format!("mov.u32 {flag}, 0"));
    let (skip_load, loaded) = (e.label(), e.label());
    e.op(format!("@!{inside} bra {skip_load}"));
    let p = nonzero(&mut e, x, j, d);
    e.op(format!("selp.u32 {flag}, 1, 0, {p}"));
    e.place(&skip_load);
    // Inclusive scan of the flags over the lanes.
    let scan = e.reg(Class::B32);
    e.op(format!("mov.u32 {scan}, {flag}"));
    for offset in [1, 2, 4, 8, 16] {
        let (from, has) = (e.reg(Class::B32), e.reg(Class::Pred));
        e.op(format!(
            "shfl.sync.up.b32 {from}, {scan}, {offset}, 0, 0xffffffff"
        ));
        e.op(format!("setp.ge.u32 {has}, {lane32}, {offset}"));
        e.op(format!("@{has} add.u32 {scan}, {scan}, {from}"));
    }
    let total = e.reg(Class::B32);
    e.op(format!(
        "shfl.sync.idx.b32 {total}, {scan}, 31, 31, 0xffffffff"
    ));
    let none = e.reg(Class::Pred);
    e.op(format!("setp.eq.u32 {none}, {flag}, 0"));
    e.op(format!("@{none} bra {loaded}"));
    // Position `running + scan - 1`; coordinates from the last axis backwards.
    let [s64, pos, rest, axis] = [0; 4].map(|_| e.reg(Class::B64));
    e.op(format!("cvt.u64.u32 {s64}, {scan}"));
    e.op(format!("add.s64 {pos}, {running}, {s64}"));
    e.op(format!("sub.s64 {pos}, {pos}, 1"));
    e.op(format!("mov.s64 {rest}, {j}"));
    e.op(format!("mov.s64 {axis}, {rank}"));
    let (axes, axes_done) = (e.label(), e.label());
    e.place(&axes);
    let last = e.reg(Class::Pred);
    e.op(format!("setp.le.s64 {last}, {axis}, 0"));
    e.op(format!("@{last} bra {axes_done}"));
    e.op(format!("sub.s64 {axis}, {axis}, 1"));
    let [off, at, dim, coord, slot, addr] = [0; 6].map(|_| e.reg(Class::B64));
    e.op(format!("mul.lo.s64 {off}, {axis}, 8"));
    e.op(format!("add.s64 {at}, {dims}, {off}"));
    e.op(format!("ld.global.s64 {dim}, [{at}]"));
    e.op(format!("rem.s64 {coord}, {rest}, {dim}"));
    e.op(format!("div.s64 {rest}, {rest}, {dim}"));
    e.op(format!("mad.lo.s64 {slot}, {axis}, {count}, {pos}"));
    e.op(format!("mul.lo.s64 {off}, {slot}, 8"));
    e.op(format!("add.s64 {addr}, {out}, {off}"));
    e.op(format!("st.global.s64 [{addr}], {coord}"));
    e.op(format!("bra {axes}"));
    e.place(&axes_done);
    e.place(&loaded);
    let t64 = e.reg(Class::B64);
    e.op(format!("cvt.u64.u32 {t64}, {total}"));
    e.op(format!("add.s64 {running}, {running}, {t64}"));
    e.op(format!("add.s64 {chunk}, {chunk}, 32"));
    e.op(format!("bra {top}"));
    e.place(&done);
    e.op("ret");
    e
}
