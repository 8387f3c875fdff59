//! `libkiln_cuda_runtime.a`: the command line of the executables
//! `kiln build --emit exe --device cuda` writes. Their `main` calls [`kiln_cuda_main`]
//! with the three blobs the build embedded (the PTX module, its launch plan as JSON and
//! the constants), each a little-endian `u64` length and that many bytes. The host side
//! is kiln-cuda's `Session` over the CUDA driver, which is loaded at run time: the
//! executable needs only the NVIDIA driver where it runs, and says so in one line where
//! there is none.
//!
//! ```text
//! ./model --inputs in.npz              run, print a summary of each output
//! ./model --inputs in.npz -o out.npz   and write the outputs
//! ./model --inputs in.npz --bench 20   time 20 runs (after 3 warm-up runs), print JSON
//! ```

use kiln_cuda::runtime::driver::Driver;
use kiln_cuda::runtime::{Plan, Session};
use kiln_ir::Tensor;
use kiln_rt::exe::bench_runs;
use kiln_rt::npz::{read_npz_with, write_npz};
use kiln_rt::summary::summarize;
use std::ffi::{c_char, c_int, CStr};
use std::path::PathBuf;

const USAGE: &str = "usage: MODEL --inputs IN.npz [-o OUT.npz] [--bench N]

Runs the compiled model on an NVIDIA GPU (sm_80 or newer; only the driver is needed).
--inputs takes an .npz with one array per model input, by name; each output's summary is
printed, and -o writes them as .npz. --bench N times N runs after 3 warm-up runs and
prints one JSON line (milliseconds).";

#[derive(Default)]
struct Args {
    inputs: Option<PathBuf>,
    output: Option<PathBuf>,
    bench: Option<usize>,
}

/// Runs the executable's command line; returns the process exit code (1 on an error,
/// printed on one line).
///
/// # Safety
/// `ptx`, `plan` and `weights` must each point at a `u64` length followed by that many
/// bytes; `argv` must be `argc` C strings.
#[no_mangle]
pub unsafe extern "C" fn kiln_cuda_main(
    ptx: *const u8,
    plan: *const u8,
    weights: *const u8,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let args: Vec<String> = (0..argc.max(0) as usize)
        // SAFETY: the contract above.
        .map(|i| unsafe { CStr::from_ptr(*argv.add(i)) })
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    // SAFETY: the contract above.
    let blobs = unsafe { [blob(ptx), blob(plan), blob(weights)] };
    let result = std::panic::catch_unwind(|| main_with(blobs, &args));
    match result {
        Ok(Ok(())) => 0,
        Ok(Err(message)) => {
            eprintln!("error: {message}");
            1
        }
        Err(_) => 101,
    }
}

/// The bytes of a length-prefixed blob.
///
/// # Safety
/// `at` points at a `u64` length and that many bytes, which live for the program.
unsafe fn blob(at: *const u8) -> &'static [u8] {
    // SAFETY: the caller's contract; the length may be unaligned.
    let len = unsafe { std::ptr::read_unaligned(at as *const u64) } as usize;
    // SAFETY: as above.
    unsafe { std::slice::from_raw_parts(at.add(8), len) }
}

fn main_with([ptx, plan, weights]: [&'static [u8]; 3], argv: &[String]) -> Result<(), String> {
    let Some(args) = parse(argv)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let ptx = std::str::from_utf8(ptx).map_err(|_| "the embedded module is not text")?;
    let plan: Plan = serde_json::from_slice(plan).map_err(|e| format!("the embedded plan: {e}"))?;
    let path = args
        .inputs
        .clone()
        .ok_or(format!("--inputs is required\n\n{USAGE}"))?;
    let inputs = inputs_from(&plan, &path)?;
    let names = plan.output_names.clone();
    let driver = Driver::new().map_err(|e| e.to_string())?;
    let mut session = Session::from_plan(driver, ptx, plan, weights).map_err(|e| e.to_string())?;
    if let Some(runs) = args.bench {
        return bench(&mut session, &inputs, runs);
    }
    let outputs = session.run(&inputs).map_err(|e| e.to_string())?;
    for (name, t) in names.iter().zip(&outputs) {
        println!("{}", summarize(name, t));
    }
    if let Some(path) = &args.output {
        let named: Vec<(String, Tensor)> = names.into_iter().zip(outputs).collect();
        write_npz(path, &named).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The options, or `None` for `--help`.
fn parse(argv: &[String]) -> Result<Option<Args>, String> {
    let mut args = Args::default();
    let mut it = argv.iter().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or(format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--inputs" => args.inputs = Some(value()?.into()),
            "-o" | "--output" => args.output = Some(value()?.into()),
            "--bench" => {
                let v = value()?;
                let n = v
                    .parse()
                    .map_err(|_| format!("{flag}: `{v}` is not a count"))?;
                args.bench = Some(n);
            }
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    Ok(Some(args))
}

/// The model's inputs from an .npz, by name, in the plan's order.
fn inputs_from(plan: &Plan, path: &std::path::Path) -> Result<Vec<Tensor>, String> {
    let limit = kiln_ir::MemoryLimit::default();
    let mut arrays = read_npz_with(path, limit).map_err(|e| e.to_string())?;
    (plan.inputs.iter())
        .map(|(name, _)| {
            let at = arrays.iter().position(|(n, _)| n == name);
            let at = at.ok_or_else(|| {
                format!(
                    "{}: no array named `{name}` (a model input)",
                    path.display()
                )
            })?;
            Ok(arrays.swap_remove(at).1)
        })
        .collect()
}

/// Times `runs` runs after 3 warm-up runs; prints one JSON line (kiln-rt's `--bench`).
fn bench(session: &mut Session<Driver>, inputs: &[Tensor], runs: usize) -> Result<(), String> {
    bench_runs(runs, || {
        session.run(inputs).map(drop).map_err(|e| e.to_string())
    })
}
