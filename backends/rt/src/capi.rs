//! The C ABI of artifacts: `kiln_rt_*` functions over a model descriptor. The header
//! `kiln build --emit header` writes wraps them per model (`NAME_open`, `NAME_run`, …).
//!
//! Every function returns a code (0 success, else [`ArtifactError::code`], 5 for an
//! internal error) and never unwinds into C: a panic becomes code 5 with its message.

use crate::artifact::{ArtifactError, ModelDesc, Session};
use kiln_ir::Tensor;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Code of an internal error (a bug in kiln, reported rather than aborting).
pub const INTERNAL: i32 = 5;

/// An open model for C: the session and the message of its last error.
pub struct CSession {
    session: Session,
    last_error: CString,
}

/// Opens the model `model` points at. `weights_path` may be null when the weights are
/// embedded; `threads` 0 uses every core. On failure, writes the message (truncated,
/// NUL-terminated) to `error` when it is not null.
///
/// # Safety
/// `model` must be an artifact's descriptor; `weights_path` null or a C string; `out` valid
/// for a write; `error` null or valid for `error_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn kiln_rt_open(
    model: *const ModelDesc,
    weights_path: *const c_char,
    threads: u32,
    out: *mut *mut CSession,
    error: *mut c_char,
    error_len: usize,
) -> i32 {
    if model.is_null() || out.is_null() {
        // SAFETY: forwarded from the caller.
        unsafe {
            write_message(
                "kiln_rt_open: null model or session pointer",
                error,
                error_len,
            )
        };
        return 1;
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded from the caller.
        let path = (!weights_path.is_null()).then(|| unsafe { CStr::from_ptr(weights_path) });
        let path = path.map(|p| Path::new(p.to_str().unwrap_or_default()).to_path_buf());
        // SAFETY: forwarded from the caller; descriptors are static data.
        unsafe { Session::open(&*model, path.as_deref(), threads as usize) }
    }));
    match flatten(result) {
        Ok(session) => {
            let s = Box::new(CSession {
                session,
                last_error: CString::default(),
            });
            // SAFETY: `out` is valid for a write.
            unsafe { *out = Box::into_raw(s) };
            0
        }
        Err((code, message)) => {
            // SAFETY: forwarded from the caller.
            unsafe { write_message(&message, error, error_len) };
            code
        }
    }
}

/// Runs the model. `inputs[i]` points at input `i`'s elements (row-major), `shapes[i]` at
/// its dims (as many as the input's rank); `outputs[i]` must hold output `i` (see
/// [`kiln_rt_output_shape`]).
///
/// # Safety
/// `s` from [`kiln_rt_open`]; the arrays as described, each element buffer at least as
/// large as its shape says.
#[no_mangle]
pub unsafe extern "C" fn kiln_rt_run(
    s: *mut CSession,
    inputs: *const *const c_void,
    shapes: *const *const i64,
    outputs: *const *mut c_void,
) -> i32 {
    if s.is_null() || inputs.is_null() || shapes.is_null() || outputs.is_null() {
        return 1;
    }
    // SAFETY: `s` is a live session.
    let s = unsafe { &mut *s };
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded from the caller.
        let tensors = unsafe { read_inputs(&s.session, inputs, shapes) }?;
        let results = s.session.run(&tensors)?;
        for (i, t) in results.iter().enumerate() {
            let bytes = t.to_le_bytes();
            // SAFETY: `outputs` has an entry per model output.
            let dst = unsafe { *outputs.add(i) } as *mut u8;
            if dst.is_null() && !bytes.is_empty() {
                return Err(ArtifactError::Input(format!(
                    "output {i} is a null pointer"
                )));
            }
            // SAFETY: the caller sized output `i` for this shape.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
        }
        Ok(())
    }));
    report(s, flatten(result))
}

/// Writes output `index`'s shape for the given input shapes to `out_shape` (as many
/// dims as the output's rank).
///
/// # Safety
/// As for [`kiln_rt_run`]; `out_shape` valid for the output's rank.
#[no_mangle]
pub unsafe extern "C" fn kiln_rt_output_shape(
    s: *mut CSession,
    shapes: *const *const i64,
    index: u32,
    out_shape: *mut i64,
) -> i32 {
    if s.is_null() || shapes.is_null() || out_shape.is_null() {
        return 1;
    }
    // SAFETY: `s` is a live session.
    let s = unsafe { &mut *s };
    let found = (|| {
        // SAFETY: forwarded from the caller.
        let shapes = unsafe { input_shapes(&s.session, shapes) }?;
        let shapes: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
        let bound = s.session.layout_for_shapes(&shapes)?;
        let (_, shape) = (bound.outputs.get(index as usize))
            .ok_or_else(|| ArtifactError::Input(format!("no output {index}")))?;
        for (k, d) in shape.iter().enumerate() {
            // SAFETY: the caller sized `out_shape` for the output's rank.
            unsafe { *out_shape.add(k) = *d as i64 };
        }
        Ok(())
    })();
    report(
        s,
        found.map_err(|e: ArtifactError| (e.code(), e.to_string())),
    )
}

/// The message of the session's last error ("" if none); valid until the next call.
///
/// # Safety
/// `s` from [`kiln_rt_open`].
#[no_mangle]
pub unsafe extern "C" fn kiln_rt_last_error(s: *const CSession) -> *const c_char {
    if s.is_null() {
        return c"no session".as_ptr();
    }
    // SAFETY: `s` is a live session.
    unsafe { (*s).last_error.as_ptr() }
}

/// Closes a session.
///
/// # Safety
/// `s` from [`kiln_rt_open`], not used afterwards (null is ignored).
#[no_mangle]
pub unsafe extern "C" fn kiln_rt_close(s: *mut CSession) {
    if !s.is_null() {
        // SAFETY: `s` came from `Box::into_raw` in `kiln_rt_open`.
        drop(unsafe { Box::from_raw(s) });
    }
}

/// The input shapes the caller passed, by the ranks the model declares.
///
/// # Safety
/// `shapes[i]` valid for input `i`'s rank.
unsafe fn input_shapes(
    session: &Session,
    shapes: *const *const i64,
) -> Result<Vec<Vec<usize>>, ArtifactError> {
    let inputs = session.meta().inputs.iter();
    inputs
        .enumerate()
        .map(|(i, spec)| {
            // SAFETY: the contract above.
            let dims = unsafe { std::slice::from_raw_parts(*shapes.add(i), spec.dims.len()) };
            (dims.iter())
                .map(|&d| usize::try_from(d))
                .collect::<Result<Vec<usize>, _>>()
                .map_err(|_| {
                    ArtifactError::Input(format!("input `{}`: negative dim in {dims:?}", spec.name))
                })
        })
        .collect()
}

/// The inputs as tensors (copied: C owns its buffers). The shapes must be ones a program
/// was compiled for, checked before any buffer is read or copied, so their sizes are
/// bounded by what `kiln build` checked.
///
/// # Safety
/// As for [`kiln_rt_run`].
unsafe fn read_inputs(
    session: &Session,
    inputs: *const *const c_void,
    shapes: *const *const i64,
) -> Result<Vec<Tensor>, ArtifactError> {
    // SAFETY: forwarded from the caller.
    let shapes = unsafe { input_shapes(session, shapes) }?;
    let views: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
    session.layout_for_shapes(&views)?;
    let specs = session.meta().inputs.iter().zip(shapes).enumerate();
    specs
        .map(|(i, (spec, shape))| {
            let too_large = || {
                ArtifactError::Input(format!(
                    "input `{}`: shape {shape:?} is too large",
                    spec.name
                ))
            };
            let len = kiln_ir::tensor_bytes(spec.dtype, &shape)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n <= isize::MAX as usize)
                .ok_or_else(too_large)?;
            // SAFETY: `inputs` has an entry per model input.
            let ptr = unsafe { *inputs.add(i) } as *const u8;
            if ptr.is_null() && len > 0 {
                return Err(ArtifactError::Input(format!(
                    "input `{}` is a null pointer",
                    spec.name
                )));
            }
            // An empty input may be a null pointer, which no slice may hold.
            let bytes: &[u8] = if len == 0 {
                &[]
            } else {
                // SAFETY: the caller's buffer holds the elements its shape says.
                unsafe { std::slice::from_raw_parts(ptr, len) }
            };
            Tensor::from_le_bytes(spec.dtype, &shape, bytes)
                .map_err(|e| ArtifactError::Input(format!("input `{}`: {e}", spec.name)))
        })
        .collect()
}

/// A caught result as a code and message.
fn flatten<T>(r: std::thread::Result<Result<T, ArtifactError>>) -> Result<T, (i32, String)> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((e.code(), e.to_string())),
        Err(panic) => {
            let text = (panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err((
                INTERNAL,
                format!("internal error in the kiln runtime: {text}"),
            ))
        }
    }
}

/// Records the result's message in the session and returns its code.
fn report(s: &mut CSession, r: Result<(), (i32, String)>) -> i32 {
    match r {
        Ok(()) => {
            s.last_error = CString::default();
            0
        }
        Err((code, message)) => {
            s.last_error = CString::new(message.replace('\0', " ")).unwrap_or_default();
            code
        }
    }
}

/// Copies `message` into the caller's buffer, truncated and NUL-terminated.
///
/// # Safety
/// `buf` null or valid for `len` bytes.
unsafe fn write_message(message: &str, buf: *mut c_char, len: usize) {
    if buf.is_null() || len == 0 {
        return;
    }
    let n = message.len().min(len - 1);
    // SAFETY: `n + 1 <= len`.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr(), buf as *mut u8, n);
        *buf.add(n) = 0;
    }
}
