//! N-d convolution and transposed convolution with strides, dilations, zero padding and
//! groups, as im2col (or col2im) around a 2-D matrix product per batch item and group.

use super::num::{flat, num_match, same, strides, tensor, Num};
use super::{check_alloc, op_err, Result};
use crate::{ConvAttrs, ConvTransposeAttrs, Op, Tensor};
use ndarray::{indices, Array2, ArrayView2, Dimension, IxDyn};

/// Shapes shared by both convolutions, checked: `n`, channels, spatial dims of x and kernel.
struct Geometry {
    n: usize,
    c: usize,
    spatial: Vec<usize>,
    kernel: Vec<usize>,
}

fn geometry(op: &Op, x: &Tensor, w: &Tensor, n_attrs: &[usize]) -> Result<Geometry> {
    let (xs, ws) = (x.shape(), w.shape());
    let nsp = xs.len().saturating_sub(2);
    if xs.len() < 3 || ws.len() != xs.len() || n_attrs.iter().any(|&l| l != nsp) {
        return Err(op_err(
            op,
            format!("x {xs:?} and w {ws:?} need equal rank >= 3 and one attribute per spatial dim"),
        ));
    }
    Ok(Geometry {
        n: xs[0],
        c: xs[1],
        spatial: xs[2..].to_vec(),
        kernel: ws[2..].to_vec(),
    })
}

/// For every (kernel position, other position) pair, the flat offset that `map` gives, if any.
fn offset_table(
    kernel: &[usize],
    other: &[usize],
    map: impl Fn(&[usize], &[usize]) -> Option<usize>,
) -> Vec<Option<usize>> {
    let mut t = Vec::new();
    for k in indices(IxDyn(kernel)) {
        for o in indices(IxDyn(other)) {
            t.push(map(k.slice(), o.slice()));
        }
    }
    t
}

/// The flat offset of a signed coordinate in a shape, if inside.
fn inside(coord: impl Iterator<Item = i64>, shape: &[usize], st: &[usize]) -> Option<usize> {
    let mut off = 0;
    for ((c, &n), &s) in coord.zip(shape).zip(st) {
        if c < 0 || c >= n as i64 {
            return None;
        }
        off += c as usize * s;
    }
    Some(off)
}

/// `y[n, m, o] = Σ_{c, k} x[n, g·C/G + c, o·s - pb + k·d] · w[m, c, k]`.
pub(crate) fn conv(op: &Op, a: &ConvAttrs, x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let g = geometry(
        op,
        x,
        w,
        &[a.strides.len(), a.dilations.len(), a.pads.len()],
    )?;
    let (m, groups) = (w.shape()[0], a.groups);
    if groups == 0 || g.c % groups != 0 || m % groups != 0 || w.shape()[1] * groups != g.c {
        return Err(op_err(
            op,
            format!(
                "x {:?} and w {:?} do not fit {groups} groups",
                x.shape(),
                w.shape()
            ),
        ));
    }
    let mut out_sp = Vec::new();
    for i in 0..g.spatial.len() {
        let span = (g.spatial[i] + a.pads[i].0 + a.pads[i].1) as i64
            - (a.dilations[i] * (g.kernel[i].max(1) - 1) + 1) as i64;
        if span < 0 || a.strides[i] == 0 {
            return Err(op_err(
                op,
                format!(
                    "kernel {:?} does not fit padded input {:?}",
                    g.kernel, g.spatial
                ),
            ));
        }
        out_sp.push(span as usize / a.strides[i] + 1);
    }
    let mut out_shape = vec![g.n, m];
    out_shape.extend(&out_sp);
    check_alloc(op, &out_shape)?;
    let sst = strides(&g.spatial);
    let table = offset_table(&g.kernel, &out_sp, |k, o| {
        let coord = (0..k.len())
            .map(|i| (o[i] * a.strides[i] + k[i] * a.dilations[i]) as i64 - a.pads[i].0 as i64);
        inside(coord, &g.spatial, &sst)
    });
    num_match!(op, x, xa => {
        let (xd, wd) = (flat(xa), flat(&same(op, w)?));
        tensor(op, conv_typed(&xd, &wd, &g, m, groups, &out_sp, &table), &out_shape)
    })
}

fn conv_typed<T: Num>(
    xd: &[T],
    wd: &[T],
    g: &Geometry,
    m: usize,
    groups: usize,
    out_sp: &[usize],
    table: &[Option<usize>],
) -> Vec<T> {
    let (s, k, o): (usize, usize, usize) = (
        g.spatial.iter().product(),
        g.kernel.iter().product(),
        out_sp.iter().product(),
    );
    let (cg, mg) = (g.c / groups, m / groups);
    let mut out = vec![T::default(); g.n * m * o];
    for n in 0..g.n {
        for gi in 0..groups {
            let cols = Array2::from_shape_fn((cg * k, o), |(row, oo)| {
                let (c, kk) = (row / k, row % k);
                table[kk * o + oo].map_or(T::default(), |off| xd[(n * g.c + gi * cg + c) * s + off])
            });
            let wg =
                ArrayView2::from_shape((mg, cg * k), &wd[gi * mg * cg * k..(gi + 1) * mg * cg * k])
                    .expect("group weights");
            let y = T::matmul2(wg, cols.view());
            let start = (n * m + gi * mg) * o;
            out[start..start + mg * o]
                .iter_mut()
                .zip(y.iter())
                .for_each(|(d, &v)| *d = v);
        }
    }
    out
}

/// Transposed convolution: every `x[n, c, i]` scatters `x · w[c, m, k]` to
/// `y[n, g·M/G + m, i·s - pb + k·d]`; the output is cropped by the pads and extended by
/// `output_padding`.
pub(crate) fn conv_transpose(
    op: &Op,
    a: &ConvTransposeAttrs,
    x: &Tensor,
    w: &Tensor,
) -> Result<Tensor> {
    let g = geometry(
        op,
        x,
        w,
        &[
            a.strides.len(),
            a.dilations.len(),
            a.pads.len(),
            a.output_padding.len(),
        ],
    )?;
    let groups = a.groups;
    if groups == 0 || g.c % groups != 0 || w.shape()[0] != g.c {
        return Err(op_err(
            op,
            format!(
                "x {:?} and w {:?} do not fit {groups} groups",
                x.shape(),
                w.shape()
            ),
        ));
    }
    let m = w.shape()[1] * groups;
    let mut out_sp = Vec::new();
    for i in 0..g.spatial.len() {
        let full = (a.strides[i] * g.spatial[i].saturating_sub(1)
            + a.output_padding[i]
            + a.dilations[i] * (g.kernel[i].max(1) - 1)
            + 1) as i64;
        let size = full - (a.pads[i].0 + a.pads[i].1) as i64;
        if size < 0 {
            return Err(op_err(
                op,
                format!("pads {:?} crop more than the output", a.pads),
            ));
        }
        out_sp.push(size as usize);
    }
    let mut out_shape = vec![g.n, m];
    out_shape.extend(&out_sp);
    check_alloc(op, &out_shape)?;
    let ost = strides(&out_sp);
    let table = offset_table(&g.kernel, &g.spatial, |k, i| {
        let coord = (0..k.len())
            .map(|d| (i[d] * a.strides[d] + k[d] * a.dilations[d]) as i64 - a.pads[d].0 as i64);
        inside(coord, &out_sp, &ost)
    });
    num_match!(op, x, xa => {
        let (xd, wd) = (flat(xa), flat(&same(op, w)?));
        tensor(op, conv_transpose_typed(&xd, &wd, &g, m, groups, &out_sp, &table), &out_shape)
    })
}

fn conv_transpose_typed<T: Num>(
    xd: &[T],
    wd: &[T],
    g: &Geometry,
    m: usize,
    groups: usize,
    out_sp: &[usize],
    table: &[Option<usize>],
) -> Vec<T> {
    let (s, k, o): (usize, usize, usize) = (
        g.spatial.iter().product(),
        g.kernel.iter().product(),
        out_sp.iter().product(),
    );
    let (cg, mg) = (g.c / groups, m / groups);
    let mut out = vec![T::default(); g.n * m * o];
    for n in 0..g.n {
        for gi in 0..groups {
            let xg = ArrayView2::from_shape((cg, s), &xd[(n * g.c + gi * cg) * s..][..cg * s])
                .expect("group input");
            let wg = ArrayView2::from_shape((cg, mg * k), &wd[gi * cg * mg * k..][..cg * mg * k])
                .expect("group weights");
            let cols = T::matmul2(wg.t(), xg);
            for (row, line) in cols.outer_iter().enumerate() {
                let (mm, kk) = (row / k, row % k);
                let base = (n * m + gi * mg + mm) * o;
                for (ii, &v) in line.iter().enumerate() {
                    if let Some(off) = table[kk * s + ii] {
                        out[base + off] = out[base + off].add(v);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::interp::eval_op;
    use crate::{Bindings, ConvAttrs, ConvTransposeAttrs, Op, Tensor};

    fn f(v: Vec<f32>, s: &[usize]) -> Tensor {
        Tensor::from_vec(v, s).unwrap()
    }
    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        f((0..n).map(|v| v as f32).collect(), shape)
    }
    fn attrs(nsp: usize, stride: usize, dil: usize, pad: usize, groups: usize) -> ConvAttrs {
        ConvAttrs {
            strides: vec![stride; nsp],
            dilations: vec![dil; nsp],
            pads: vec![(pad, pad); nsp],
            groups,
        }
    }

    #[test]
    fn conv_1d_with_pad_stride_dilation() {
        let x = iota(&[1, 1, 5]);
        let w = f(vec![1.0, 10.0], &[1, 1, 2]);
        let y = eval_op(
            &Op::Conv(attrs(1, 1, 1, 0, 1)),
            &[x.clone(), w.clone()],
            &Bindings::new(),
        )
        .unwrap();
        assert_eq!(y[0].to_f64_vec(), vec![10.0, 21.0, 32.0, 43.0]);
        let y = eval_op(&Op::Conv(attrs(1, 2, 2, 1, 1)), &[x, w], &Bindings::new()).unwrap();
        // padded: [0, 0,1,2,3,4, 0]; windows at 0,2,4 taking positions p and p+2.
        assert_eq!(y[0].to_f64_vec(), vec![10.0, 31.0, 3.0]);
    }

    #[test]
    fn conv_2d_groups() {
        let x = iota(&[1, 2, 3, 3]);
        let w = f(vec![1.0, 1.0, 1.0, 1.0, 2.0, 0.0, 0.0, 0.0], &[2, 1, 2, 2]);
        let y = eval_op(&Op::Conv(attrs(2, 1, 1, 0, 2)), &[x, w], &Bindings::new())
            .unwrap()
            .remove(0);
        assert_eq!(y.shape(), &[1, 2, 2, 2]);
        assert_eq!(
            y.to_f64_vec(),
            vec![8.0, 12.0, 20.0, 24.0, 18.0, 20.0, 24.0, 26.0]
        );
    }

    #[test]
    fn conv_3d_sums_cube() {
        let x = f(vec![1.0; 27], &[1, 1, 3, 3, 3]);
        let w = f(vec![1.0; 8], &[1, 1, 2, 2, 2]);
        let y = eval_op(&Op::Conv(attrs(3, 1, 1, 0, 1)), &[x, w], &Bindings::new())
            .unwrap()
            .remove(0);
        assert_eq!(y.shape(), &[1, 1, 2, 2, 2]);
        assert!(y.to_f64_vec().iter().all(|&v| v == 8.0));
    }

    #[test]
    fn conv_transpose_1d() {
        let x = f(vec![1.0, 2.0, 3.0], &[1, 1, 3]);
        let w = f(vec![1.0, 10.0], &[1, 1, 2]);
        let a = ConvTransposeAttrs {
            strides: vec![2],
            dilations: vec![1],
            pads: vec![(0, 0)],
            output_padding: vec![1],
            groups: 1,
        };
        let y = eval_op(
            &Op::ConvTranspose(a.clone()),
            &[x.clone(), w.clone()],
            &Bindings::new(),
        )
        .unwrap()
        .remove(0);
        assert_eq!(y.to_f64_vec(), vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 0.0]);
        let cropped = ConvTransposeAttrs {
            strides: vec![1],
            pads: vec![(1, 0)],
            output_padding: vec![0],
            ..a
        };
        let y = eval_op(&Op::ConvTranspose(cropped), &[x, w], &Bindings::new())
            .unwrap()
            .remove(0);
        // full: [1, 12, 23, 30], first element cropped.
        assert_eq!(y.to_f64_vec(), vec![12.0, 23.0, 30.0]);
    }

    #[test]
    fn bad_groups_are_errors() {
        let x = iota(&[1, 3, 2, 2]);
        let w = iota(&[2, 1, 1, 1]);
        assert!(eval_op(&Op::Conv(attrs(2, 1, 1, 0, 2)), &[x, w], &Bindings::new()).is_err());
    }
}
