//! `capi`: an artifact's C ABI (`kiln_rt_open/run/output_shape/last_error/close`) and the
//! [`Session`] under it, called as a C program might: random input shapes (in and out of
//! the compiled ranges, negative dims included), random input bytes, null arrays and null
//! element pointers, null and tiny error buffers, and tensors of the wrong dtype or rank.
//! Codes other than 0–4 (5 is a caught panic) and writes past the output buffers that
//! `kiln_rt_output_shape` sized are bugs.
//!
//! The artifact is built once per process, in memory: `kiln::build` compiles
//! `tests/models/bert_tiny.onnx` for a range of batch and sequence sizes (its real [`Meta`]
//! and weights blob), and the kernel table holds the same kernels JIT-compiled from the
//! same layouts (`kiln_cpu::lay_out` + `kiln_cpu::lower::compile`), because linking an
//! object into the fuzz binary would need a second build step. Everything the C ABI does
//! with the descriptor is the same as for a linked object.

use arbitrary::{Result, Unstructured};
use kiln::build::Artifact;
use kiln::ir::{Bindings, DType, Tensor};
use kiln_rt::artifact::{Meta, ModelDesc, Session};
use kiln_rt::capi::{
    kiln_rt_close, kiln_rt_last_error, kiln_rt_open, kiln_rt_output_shape, kiln_rt_run, CSession,
};
use kiln_rt::exec::KernelFn;
use std::ffi::{c_char, c_void, CStr};
use std::sync::OnceLock;

/// The model the artifact is built from, and the range of each of its symbolic dims.
const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/models/bert_tiny.onnx"
);
const DIM_RANGE: (i64, i64) = (1, 3);

/// Guard bytes after each output buffer.
const GUARD: usize = 64;
const CANARY: u8 = 0xA5;

/// Runs one input: a sequence of C ABI calls it describes.
pub fn run(data: &[u8]) {
    let _ = calls(&mut Unstructured::new(data), desc());
}

/// The descriptor of the in-memory artifact (built on first use).
pub fn desc() -> &'static ModelDesc {
    static DESC: OnceLock<&'static ModelDesc> = OnceLock::new();
    DESC.get_or_init(|| build().unwrap_or_else(|e| panic!("building the capi artifact: {e}")))
}

fn build() -> std::result::Result<&'static ModelDesc, String> {
    let model = kiln::Model::load(MODEL).map_err(|e| e.to_string())?;
    let mut builder = kiln::build::Model::new(MODEL).name("fuzz");
    for s in model.graph().input_symbols() {
        builder = builder.dim(&s, DIM_RANGE.0, DIM_RANGE.1);
    }
    let Artifact { meta, weights, .. } = builder.compile().map_err(|e| e.to_string())?;
    let optimized = model.optimize().map_err(|e| e.to_string())?;
    // The one program, laid out as `kiln build` lays it out (no dim has a single value).
    let layout = kiln_cpu::lay_out(
        optimized.graph(),
        &Bindings::new(),
        kiln::ir::MemoryLimit::default(),
    )
    .map_err(|e| e.to_string())?;
    let code = kiln_cpu::lower::compile(&layout.program, &layout.slots)
        .map_err(|(k, e)| format!("kernel {k}: {e}"))?;
    assert_eq!(
        code.kernels.len(),
        meta.program.steps.len(),
        "one kernel per step"
    );
    let kernels: Vec<Option<KernelFn>> = (code.kernels.iter())
        .map(|k| k.as_ref().map(|(f, _)| *f as KernelFn))
        .collect();
    // The code lives as long as the process.
    std::mem::forget(code);
    let json = serde_json::to_vec(&meta).map_err(|e| e.to_string())?;
    let mut blob = (json.len() as u64).to_le_bytes().to_vec();
    blob.extend(json);
    // 64-byte aligned weights, as in an object.
    let blocks = Vec::leak(vec![Block([0; 64]); weights.len().div_ceil(64).max(1)]);
    for (block, chunk) in blocks.iter_mut().zip(weights.chunks(64)) {
        block.0[..chunk.len()].copy_from_slice(chunk);
    }
    let desc = ModelDesc {
        meta: Vec::leak(blob).as_ptr(),
        weights: blocks.as_ptr() as *const u8,
        kernels: Vec::leak(kernels).as_ptr(),
        op_call: Some(kiln_rt::kiln_rt_op_call),
    };
    Ok(Box::leak(Box::new(desc)))
}

/// 64 bytes at a 64-byte boundary.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block([u8; 64]);

fn meta_of(desc: &'static ModelDesc) -> &'static Meta {
    static META: OnceLock<Meta> = OnceLock::new();
    META.get_or_init(|| {
        // SAFETY: the descriptor was built above.
        let s = unsafe { Session::open(desc, None, 1) }.expect("the artifact opens");
        s.meta().clone()
    })
}

/// A return code: 0 to 4 are results, anything else (5: a caught panic) is a bug.
fn check(code: i32, what: &str, s: *const CSession) {
    if !(0..=4).contains(&code) {
        // SAFETY: `s` is null or live.
        let msg = unsafe { CStr::from_ptr(kiln_rt_last_error(s)) };
        panic!("{what} returned {code}: {}", msg.to_string_lossy());
    }
}

fn calls(u: &mut Unstructured, desc: &'static ModelDesc) -> Result<()> {
    let meta = meta_of(desc);
    if u.ratio(1, 4)? {
        return session_calls(u, desc, meta);
    }
    // Opening: null pointers, error buffers of any size.
    let mut err = vec![0 as c_char; u.int_in_range(0..=8)?];
    let err_ptr = if err.is_empty() && u.arbitrary()? {
        std::ptr::null_mut()
    } else {
        err.as_mut_ptr()
    };
    let mut s: *mut CSession = std::ptr::null_mut();
    if u.ratio(1, 16)? {
        // SAFETY: null model and session pointers are refused.
        let code = unsafe {
            kiln_rt_open(
                std::ptr::null(),
                std::ptr::null(),
                1,
                &mut s,
                err_ptr,
                err.len(),
            )
        };
        assert_eq!(code, 1, "kiln_rt_open(null) must refuse");
        // SAFETY: as above.
        let code = unsafe {
            kiln_rt_open(
                desc,
                std::ptr::null(),
                1,
                std::ptr::null_mut(),
                err_ptr,
                err.len(),
            )
        };
        assert_eq!(code, 1, "kiln_rt_open(out = null) must refuse");
    }
    let weights_path = if u.arbitrary()? {
        c"/nonexistent.weights".as_ptr()
    } else {
        std::ptr::null()
    };
    let threads = u.int_in_range(1..=2)?;
    // SAFETY: a descriptor, a C string or null, a valid out pointer and error buffer.
    let code = unsafe { kiln_rt_open(desc, weights_path, threads, &mut s, err_ptr, err.len()) };
    check(code, "kiln_rt_open", std::ptr::null());
    if code != 0 {
        panic!("the embedded-weights artifact does not open (code {code})");
    }
    let result = session_ops(u, meta, s);
    // SAFETY: `s` is live; closing null is a no-op.
    unsafe {
        kiln_rt_close(s);
        kiln_rt_close(std::ptr::null_mut());
    }
    result
}

/// Input shapes the artifact runs: every dim at a value in its range.
fn valid_shapes(u: &mut Unstructured, meta: &Meta) -> Result<Vec<Vec<usize>>> {
    let mut b = Bindings::new();
    for d in &meta.dims {
        b.insert(d.name.clone(), u.int_in_range(d.min..=d.max)?);
    }
    let shape = |dims: &[String]| -> Vec<usize> {
        (dims.iter())
            .map(|d| {
                let d: kiln::ir::Dim = d.parse().expect("the description's dims parse");
                d.eval(&b).unwrap_or(0).max(0) as usize
            })
            .collect()
    };
    Ok(meta.inputs.iter().map(|t| shape(&t.dims)).collect())
}

/// Input shapes: ones the artifact runs, or those with some dims changed (negative ones
/// too).
fn shapes(u: &mut Unstructured, meta: &Meta) -> Result<Vec<Vec<i64>>> {
    let mut shapes: Vec<Vec<i64>> = (valid_shapes(u, meta)?.iter())
        .map(|s| s.iter().map(|&d| d as i64).collect())
        .collect();
    if u.ratio(1, 3)? {
        for shape in &mut shapes {
            for d in shape.iter_mut() {
                if u.ratio(1, 3)? {
                    *d = u.int_in_range(-2..=6)?;
                }
            }
        }
    }
    Ok(shapes)
}

fn elements(shape: &[i64]) -> usize {
    shape.iter().map(|&d| d.max(0) as usize).product()
}

fn session_ops(u: &mut Unstructured, meta: &Meta, s: *mut CSession) -> Result<()> {
    for _ in 0..u.int_in_range(1..=3)? {
        let shapes = shapes(u, meta)?;
        let shape_ptrs: Vec<*const i64> = shapes.iter().map(|s| s.as_ptr()).collect();
        // Output shapes, as a C caller sizes its buffers.
        let mut out_shapes = Vec::new();
        for (i, out) in meta.outputs.iter().enumerate() {
            let mut shape = vec![0i64; out.dims.len()];
            // SAFETY: one shape per input, each as long as the input's rank; `shape` as
            // long as the output's rank.
            let code = unsafe {
                kiln_rt_output_shape(s, shape_ptrs.as_ptr(), i as u32, shape.as_mut_ptr())
            };
            check(code, "kiln_rt_output_shape", s);
            out_shapes.push((code == 0).then_some(shape));
        }
        // SAFETY: as above; an index past the outputs is refused.
        let code = unsafe {
            kiln_rt_output_shape(
                s,
                shape_ptrs.as_ptr(),
                meta.outputs.len() as u32,
                [0i64; 8].as_mut_ptr(),
            )
        };
        check(code, "kiln_rt_output_shape (past the outputs)", s);
        assert_ne!(code, 0, "an output index past the outputs must be refused");
        // Inputs: random bytes (ids out of range, NaNs), or a null element pointer.
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for (spec, shape) in meta.inputs.iter().zip(&shapes) {
            let len = elements(shape) * spec.dtype.size_bytes();
            let mut buf = vec![0u8; len];
            for b in buf.iter_mut() {
                *b = u.arbitrary().unwrap_or(0);
            }
            inputs.push(buf);
        }
        let mut input_ptrs: Vec<*const c_void> =
            inputs.iter().map(|b| b.as_ptr() as *const c_void).collect();
        if u.ratio(1, 8)? {
            let i = u.choose_index(input_ptrs.len())?;
            input_ptrs[i] = std::ptr::null();
        }
        // Outputs: sized by `kiln_rt_output_shape`, plus guard bytes; null when unsized.
        let mut outputs: Vec<Vec<u8>> = (meta.outputs.iter().zip(&out_shapes))
            .map(|(o, shape)| match shape {
                Some(shape) => vec![CANARY; elements(shape) * o.dtype.size_bytes() + GUARD],
                None => Vec::new(),
            })
            .collect();
        let mut output_ptrs: Vec<*mut c_void> = (outputs.iter_mut())
            .map(|b| {
                if b.is_empty() {
                    std::ptr::null_mut()
                } else {
                    b.as_mut_ptr() as *mut c_void
                }
            })
            .collect();
        if u.ratio(1, 8)? {
            let i = u.choose_index(output_ptrs.len())?;
            output_ptrs[i] = std::ptr::null_mut();
        }
        let null_array = u.int_in_range(0..=15)?;
        // SAFETY: every array has an entry per input/output and every buffer the size its
        // shape says (or is null); a null array is refused.
        let code = unsafe {
            kiln_rt_run(
                s,
                if null_array == 1 {
                    std::ptr::null()
                } else {
                    input_ptrs.as_ptr()
                },
                if null_array == 2 {
                    std::ptr::null()
                } else {
                    shape_ptrs.as_ptr()
                },
                if null_array == 3 {
                    std::ptr::null()
                } else {
                    output_ptrs.as_ptr()
                },
            )
        };
        check(code, "kiln_rt_run", s);
        if (1..=3).contains(&null_array) {
            assert_eq!(code, 1, "kiln_rt_run with a null array must refuse");
        }
        if code == 0 {
            assert!(
                out_shapes.iter().all(Option::is_some),
                "kiln_rt_run ran shapes kiln_rt_output_shape refused"
            );
        }
        for (i, b) in outputs.iter().enumerate() {
            if let Some(tail) = b.len().checked_sub(GUARD) {
                assert!(
                    b[tail..].iter().all(|&x| x == CANARY),
                    "kiln_rt_run wrote past output {i}'s buffer"
                );
            }
        }
        // SAFETY: `s` is live; the message is a C string.
        let msg = unsafe { CStr::from_ptr(kiln_rt_last_error(s)) };
        assert_eq!(
            code == 0,
            msg.is_empty(),
            "last_error after code {code}: {msg:?}"
        );
    }
    // SAFETY: null is answered.
    let _ = unsafe { CStr::from_ptr(kiln_rt_last_error(std::ptr::null())) };
    Ok(())
}

/// The Rust API under the C one: tensors of any dtype and shape.
fn session_calls(u: &mut Unstructured, desc: &'static ModelDesc, meta: &Meta) -> Result<()> {
    // SAFETY: the descriptor was built above.
    let mut session = unsafe { Session::open(desc, None, 1) }.expect("the artifact opens");
    let valid = valid_shapes(u, meta)?;
    let mut inputs = Vec::new();
    let count = match u.int_in_range(0..=7)? {
        0 => meta.inputs.len().saturating_sub(1),
        1 => meta.inputs.len() + 1,
        _ => meta.inputs.len(),
    };
    for i in 0..count {
        let mut dtype = meta.inputs.get(i).map_or(DType::F32, |t| t.dtype);
        if u.ratio(1, 4)? {
            dtype = *u.choose(&DType::ALL)?;
        }
        let mut shape = valid.get(i).cloned().unwrap_or_default();
        if u.ratio(1, 4)? {
            shape = (0..u.int_in_range(0..=3)?)
                .map(|_| u.int_in_range(0..=4))
                .collect::<Result<_>>()?;
        }
        let n: usize = shape.iter().product();
        let values: Vec<f64> = (0..n)
            .map(|_| u.int_in_range(-3i32..=600).map(f64::from))
            .collect::<Result<_>>()?;
        let t = Tensor::from_vec(values, &shape).expect("sized").cast(dtype);
        inputs.push(t);
    }
    if let Ok(outputs) = session.run(&inputs) {
        assert_eq!(outputs.len(), meta.outputs.len(), "one tensor per output");
    }
    Ok(())
}
