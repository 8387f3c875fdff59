//! Convolution as its definition,
//! `y[n, m, o..] = Σ_{c, k..} x[n, g·C/G + c, o·s - pb + k·d ..] · w[m, c, k..]`, a warp per
//! output element: the lanes stride over the flattened `(c, k..)` terms, a padding
//! position (outside the input) contributes nothing and is never read, and the lanes
//! combine by butterfly shuffles. The correct baseline, not the fast path (an implicit
//! GEMM on tensor cores will replace it and be checked against it).

use crate::cx::Cx;
use crate::kernels::{identity, unflatten, Team};
use crate::ptx::{Class, Reg};
use crate::EmitError;
use kiln_ir::{DType, Dim};
use kiln_kernel::kernel::{Combine, Conv};

/// Emits the convolution `c`.
pub(crate) fn conv(cx: &mut Cx, c: &Conv) -> Result<(), EmitError> {
    for buf in [c.x, c.w, c.y] {
        let d = cx.program.buffers[buf].dtype;
        if d != DType::F32 {
            return Err(EmitError::Unsupported(format!("conv on {d}")));
        }
    }
    let spatial = c.x_shape.len().saturating_sub(2);
    if c.w_shape.len() != spatial + 2 || c.y_shape.len() != spatial + 2 {
        return Err(EmitError::Unsupported("conv with mismatched ranks".into()));
    }
    let items: Dim = c.y_shape.iter().product();
    let terms: Vec<Dim> = c.w_shape[1..].to_vec();
    let count: Dim = terms.iter().product();
    let warp = Team::Warp;
    warp.items(cx, &items, |cx, t, lane| {
        let out = unflatten(cx, t, &c.y_shape)?;
        let acc = identity(cx, Combine::Sum, DType::F32)?;
        let n = cx.dim(&count)?;
        warp.over(cx, lane, n, |cx, j| {
            let term = unflatten(cx, j, &terms)?;
            accumulate(cx, c, &out, &term, acc.reg)
        })?;
        warp.combine(cx, Combine::Sum, acc)?;
        warp.lead(cx, lane, |cx| {
            let at = row_major(cx, &out, &c.y_shape)?;
            let addr = cx.address(c.y, at);
            cx.e.op(format!("st.global.f32 [{addr}], {}", acc.reg));
            Ok(())
        })
    })
}

/// `acc += x[..] · w[..]` for output `out = (n, m, o..)` and term `(c, k..)`, skipping a
/// term whose input position falls in the padding.
fn accumulate(cx: &mut Cx, c: &Conv, out: &[Reg], term: &[Reg], acc: Reg) -> Result<(), EmitError> {
    let (n, m) = (out[0], out[1]);
    let skip = cx.e.label();
    // The group of output channel m: m / (M / G); its first input channel g · C/G.
    let per_group = cx.dim(&c.w_shape[0].div_floor(c.attrs.groups.max(1) as i64))?;
    let cg = cx.dim(&c.w_shape[1])?;
    let [g, channel, base] = [0; 3].map(|_| cx.e.reg(Class::B64));
    cx.e.op(format!("div.s64 {g}, {m}, {per_group}"));
    cx.e.op(format!("mad.lo.s64 {channel}, {g}, {cg}, {}", term[0]));
    let c_in = cx.dim(&c.x_shape[1])?;
    cx.e.op(format!("mad.lo.s64 {base}, {n}, {c_in}, {channel}"));
    let mut x_at = base;
    for i in 0..term.len() - 1 {
        let (s, d, pb) = (c.attrs.strides[i], c.attrs.dilations[i], c.attrs.pads[i].0);
        let size = cx.dim(&c.x_shape[i + 2])?;
        let [p0, pos, next] = [0; 3].map(|_| cx.e.reg(Class::B64));
        cx.e.op(format!("mul.lo.s64 {p0}, {}, {s}", out[i + 2]));
        cx.e.op(format!("mad.lo.s64 {pos}, {}, {d}, {p0}", term[i + 1]));
        cx.e.op(format!("sub.s64 {pos}, {pos}, {pb}"));
        let (low, high) = (cx.e.reg(Class::Pred), cx.e.reg(Class::Pred));
        cx.e.op(format!("setp.lt.s64 {low}, {pos}, 0"));
        cx.e.op(format!("setp.ge.s64 {high}, {pos}, {size}"));
        cx.e.op(format!("@{low} bra {skip}"));
        cx.e.op(format!("@{high} bra {skip}"));
        cx.e.op(format!("mad.lo.s64 {next}, {x_at}, {size}, {pos}"));
        x_at = next;
    }
    let mut w_index = vec![m];
    w_index.extend_from_slice(term);
    let w_at = row_major(cx, &w_index, &c.w_shape)?;
    let (xa, wa) = (cx.address(c.x, x_at), cx.address(c.w, w_at));
    let [xv, wv, p] = [0; 3].map(|_| cx.e.reg(Class::F32));
    cx.e.op(format!("ld.global.f32 {xv}, [{xa}]"));
    cx.e.op(format!("ld.global.f32 {wv}, [{wa}]"));
    cx.e.op(format!("mul.rn.f32 {p}, {xv}, {wv}"));
    cx.e.op(format!("add.rn.f32 {acc}, {acc}, {p}"));
    cx.e.place(&skip);
    Ok(())
}

/// The row-major element index of `index` in a contiguous tensor of `shape`.
fn row_major(cx: &mut Cx, index: &[Reg], shape: &[Dim]) -> Result<Reg, EmitError> {
    let mut at = index[0];
    for (i, d) in index[1..].iter().zip(&shape[1..]) {
        let ext = cx.dim(d)?;
        let next = cx.e.reg(Class::B64);
        cx.e.op(format!("mad.lo.s64 {next}, {at}, {ext}, {i}"));
        at = next;
    }
    Ok(at)
}
