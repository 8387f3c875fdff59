//! `Scan` (ONNX CumSum, and the cumulative product): one thread per lane of the scanned
//! axis, walking it in order (or from the end), as the interpreter does: floats
//! accumulate in f64 and each stored value is rounded to the element type; integers wrap
//! in their own width at every step. Exclusive scans store the running value before
//! adding the element.

use crate::cx::Cx;
use crate::expr;
use crate::kernels::{combine_into, count_loop, identity, Team};
use crate::ptx::Class;
use crate::EmitError;
use kiln_ir::{DType, Dim, ScanKind};
use kiln_kernel::kernel::{Combine, Operand};

/// Emits the scan of `x` into `y` along `axis`; returns the launch's item count.
pub(crate) fn scan(
    cx: &mut Cx,
    x: &Operand,
    y: &Operand,
    kind: ScanKind,
    axis: usize,
    exclusive: bool,
    reverse: bool,
) -> Result<Dim, EmitError> {
    if axis >= x.shape.len() || x.dtype == DType::Bool || x.dtype != y.dtype {
        return Err(EmitError::Unsupported(format!(
            "scan of {} along axis {axis}",
            x.dtype
        )));
    }
    let outer: Dim = x.shape[..axis].iter().product();
    let inner: Dim = x.shape[axis + 1..].iter().product();
    let items: Dim = [outer, inner.clone()].iter().product();
    let (n, inner) = (cx.dim(&x.shape[axis])?, cx.dim(&inner)?);
    let acc_type = if x.dtype.is_float() {
        DType::F64
    } else {
        x.dtype
    };
    let combine = match kind {
        ScanKind::Sum => Combine::Sum,
        ScanKind::Prod => Combine::Prod,
    };
    Team::Thread.items(cx, &items, |cx, t, _| {
        let e = &mut cx.e;
        let [o, i, base, step] = [0; 4].map(|_| e.reg(Class::B64));
        e.op(format!("div.s64 {o}, {t}, {inner}"));
        e.op(format!("rem.s64 {i}, {t}, {inner}"));
        e.op(format!("mul.lo.s64 {step}, {n}, {inner}"));
        e.op(format!("mad.lo.s64 {base}, {o}, {step}, {i}"));
        let acc = identity(cx, combine, acc_type)?;
        count_loop(cx, n, |cx, k| {
            let e = &mut cx.e;
            let (at, el) = (e.reg(Class::B64), e.reg(Class::B64));
            if reverse {
                // n - 1 - k
                e.op(format!("sub.s64 {at}, {n}, {k}"));
                e.op(format!("sub.s64 {at}, {at}, 1"));
            } else {
                e.op(format!("mov.s64 {at}, {k}"));
            }
            e.op(format!("mad.lo.s64 {el}, {at}, {inner}, {base}"));
            let v = expr::load(cx, x.buf, el, x.dtype)?;
            let v = expr::convert(cx, v, acc_type)?;
            if exclusive {
                let out = expr::convert(cx, acc, y.dtype)?;
                expr::store(cx, y.buf, el, out)?;
            }
            combine_into(cx, combine, acc, v)?;
            if !exclusive {
                let out = expr::convert(cx, acc, y.dtype)?;
                expr::store(cx, y.buf, el, out)?;
            }
            Ok(())
        })
    })?;
    Ok(items)
}
