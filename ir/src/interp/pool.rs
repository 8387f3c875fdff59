//! N-d max, average and Lp pooling over the trailing spatial dims of `x[n, c, ...]`.
//!
//! Each window position falls in the data, in the explicit padding, or (with `ceil_mode`)
//! past the padded end. Max and Lp see only the data. Average divides by the data count, or
//! with `count_include_pad` by the data and padding count, never counting positions past
//! the padded end. With `ceil_mode` a window that would start past the data and the leading
//! padding is dropped (ONNX and PyTorch).

use super::num::tensor;
use super::{bad_dtype, check_alloc, op_err, Result};
use crate::{dispatch, Elem, Op, PoolAttrs, PoolKind, Tensor};
use ndarray::ArrayViewD;
use ndarray::{indices, IxDyn};

/// Where one window position lands.
#[derive(Clone, Copy)]
enum Cell {
    /// In the data, at this flat spatial offset.
    Data(usize),
    /// In the explicit padding.
    Pad,
    /// Past the padded end (only with `ceil_mode`).
    Outside,
}

/// The output size of one spatial dim.
fn out_size(op: &Op, a: &PoolAttrs, i: usize, n: usize) -> Result<usize> {
    let eff = a.dilations[i] * (a.kernel[i].max(1) - 1) + 1;
    let (pb, pe, s) = (a.pads[i].0, a.pads[i].1, a.strides[i]);
    let padded = n + pb + pe;
    if padded < eff || s == 0 {
        return Err(op_err(
            op,
            format!("window {eff} does not fit padded size {padded} (stride {s})"),
        ));
    }
    let span = padded - eff;
    let mut o = if a.ceil_mode {
        span.div_ceil(s) + 1
    } else {
        span / s + 1
    };
    if a.ceil_mode && (o - 1) * s >= n + pb {
        o -= 1;
    }
    Ok(o)
}

/// Pools `x` with the window in `a`.
pub(crate) fn pool(op: &Op, a: &PoolAttrs, x: &Tensor) -> Result<Tensor> {
    let xs = x.shape();
    let nsp = xs.len().saturating_sub(2);
    if xs.len() < 3
        || [
            a.kernel.len(),
            a.strides.len(),
            a.dilations.len(),
            a.pads.len(),
        ]
        .iter()
        .any(|&l| l != nsp)
    {
        return Err(op_err(
            op,
            format!("input {xs:?} needs rank >= 3 and one attribute per spatial dim"),
        ));
    }
    if x.dtype() == crate::DType::Bool {
        return Err(bad_dtype(op, x.dtype()));
    }
    let spatial = &xs[2..];
    let out_sp = (0..nsp)
        .map(|i| out_size(op, a, i, spatial[i]))
        .collect::<Result<Vec<usize>>>()?;
    let mut out_shape = xs[..2].to_vec();
    out_shape.extend(&out_sp);
    check_alloc(op, &out_shape)?;
    let windows = window_cells(a, spatial, &out_sp);
    dispatch!(x, xa => tensor(op, pool_typed(a.kind, xa, &windows, spatial.iter().product()), &out_shape))
}

/// For each output position, the cells of its window.
fn window_cells(a: &PoolAttrs, spatial: &[usize], out_sp: &[usize]) -> Vec<Vec<Cell>> {
    let st = super::num::strides(spatial);
    indices(IxDyn(out_sp))
        .into_iter()
        .map(|o| {
            indices(IxDyn(&a.kernel))
                .into_iter()
                .map(|k| {
                    let mut cell = Cell::Data(0);
                    let mut off = 0;
                    for i in 0..spatial.len() {
                        let c = (o[i] * a.strides[i] + k[i] * a.dilations[i]) as i64
                            - a.pads[i].0 as i64;
                        if c >= (spatial[i] + a.pads[i].1) as i64 {
                            return Cell::Outside;
                        } else if c < 0 || c >= spatial[i] as i64 {
                            cell = Cell::Pad;
                        } else {
                            off += c as usize * st[i];
                        }
                    }
                    match cell {
                        Cell::Data(_) => Cell::Data(off),
                        other => other,
                    }
                })
                .collect()
        })
        .collect()
}

fn pool_typed<T: Elem>(
    kind: PoolKind,
    xa: &ArrayViewD<'_, T>,
    windows: &[Vec<Cell>],
    plane: usize,
) -> Vec<T> {
    let xd: Vec<f64> = xa.iter().map(|v| v.to_f64()).collect();
    let planes = xd.len().checked_div(plane).unwrap_or(0);
    let mut out = Vec::with_capacity(planes * windows.len());
    for p in 0..planes {
        let data = &xd[p * plane..(p + 1) * plane];
        for w in windows {
            let vals = w.iter().filter_map(|c| {
                if let Cell::Data(o) = c {
                    Some(data[*o])
                } else {
                    None
                }
            });
            let v = match kind {
                PoolKind::Max => vals.fold(f64::NEG_INFINITY, |m, v| {
                    if m.is_nan() || v.is_nan() {
                        f64::NAN
                    } else {
                        m.max(v)
                    }
                }),
                PoolKind::Avg { count_include_pad } => {
                    let counted = w.iter().filter(|c| {
                        matches!(c, Cell::Data(_)) || (count_include_pad && matches!(c, Cell::Pad))
                    });
                    vals.sum::<f64>() / counted.count() as f64
                }
                PoolKind::Lp { p } => vals
                    .map(|v| v.abs().powi(p as i32))
                    .sum::<f64>()
                    .powf(1.0 / p as f64),
            };
            out.push(T::from_f64(v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::interp::eval_op;
    use crate::{Bindings, Op, PoolAttrs, PoolKind, Tensor};

    fn pool(
        kind: PoolKind,
        x: &Tensor,
        k: usize,
        s: usize,
        pad: (usize, usize),
        ceil_mode: bool,
    ) -> Tensor {
        let nsp = x.rank() - 2;
        let a = PoolAttrs {
            kind,
            kernel: vec![k; nsp],
            strides: vec![s; nsp],
            dilations: vec![1; nsp],
            pads: vec![pad; nsp],
            ceil_mode,
        };
        eval_op(&Op::Pool(a), std::slice::from_ref(x), &Bindings::new())
            .unwrap()
            .remove(0)
    }
    fn row(v: Vec<f32>) -> Tensor {
        let n = v.len();
        Tensor::from_vec(v, &[1, 1, n]).unwrap()
    }

    #[test]
    fn max_pool_ignores_padding() {
        let x = row(vec![-1.0, -2.0, -3.0]);
        assert_eq!(
            pool(PoolKind::Max, &x, 2, 1, (1, 1), false).to_f64_vec(),
            vec![-1.0, -1.0, -2.0, -3.0]
        );
    }

    #[test]
    fn avg_pool_count_include_pad() {
        let x = row(vec![1.0, 2.0, 3.0]);
        let inc = pool(
            PoolKind::Avg {
                count_include_pad: true,
            },
            &x,
            2,
            1,
            (1, 1),
            false,
        );
        assert_eq!(inc.to_f64_vec(), vec![0.5, 1.5, 2.5, 1.5]);
        let exc = pool(
            PoolKind::Avg {
                count_include_pad: false,
            },
            &x,
            2,
            1,
            (1, 1),
            false,
        );
        assert_eq!(exc.to_f64_vec(), vec![1.0, 1.5, 2.5, 3.0]);
    }

    #[test]
    fn ceil_mode_partial_and_dropped_windows() {
        let x = row(vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(
            pool(PoolKind::Max, &x, 2, 2, (0, 0), false).to_f64_vec(),
            vec![2.0, 4.0]
        );
        assert_eq!(
            pool(PoolKind::Max, &x, 2, 2, (0, 0), true).to_f64_vec(),
            vec![2.0, 4.0, 5.0]
        );
        let avg = pool(
            PoolKind::Avg {
                count_include_pad: true,
            },
            &x,
            2,
            2,
            (0, 0),
            true,
        );
        assert_eq!(avg.to_f64_vec(), vec![1.5, 3.5, 5.0]);
        // in 4, pad (1, 1), k 2, s 3: ceil gives 3 windows but the third would start at
        // padded position 6 >= 4 + 1, so it is dropped.
        let x = row(vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            pool(PoolKind::Max, &x, 2, 3, (1, 1), true).to_f64_vec(),
            vec![1.0, 4.0]
        );
    }

    #[test]
    fn lp_and_2d() {
        let x = row(vec![3.0, 4.0]);
        assert_eq!(
            pool(PoolKind::Lp { p: 2 }, &x, 2, 1, (0, 0), false).to_f64_vec(),
            vec![5.0]
        );
        let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), &[1, 1, 4, 4]).unwrap();
        let m = pool(PoolKind::Max, &x, 2, 2, (0, 0), false);
        assert_eq!(
            (m.shape(), m.to_f64_vec()),
            (&[1, 1, 2, 2][..], vec![5.0, 7.0, 13.0, 15.0])
        );
    }
}
