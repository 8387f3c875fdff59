//! The command line of executables `kiln build --emit exe` makes: their `main` calls
//! [`kiln_rt_main`] with the model's descriptor.
//!
//! ```text
//! ./model                          run on the inputs stored at build time, print summaries
//! ./model --inputs in.npz -o out.npz
//! ./model --bench 20               time 20 runs (after 3 warm-up runs), print JSON
//! ./model --threads 2 --weights model.weights
//! ./decoder --prompt-ids 5,6,7 --max-new-tokens 16      a KV-cache decoder generates
//! ```

use crate::artifact::{ArtifactError, ModelDesc, Session};
use crate::decode::{self, Sampling};
use crate::npz::{read_npz_with, write_npz};
use crate::summary::summarize;
use kiln_ir::MemoryLimit;
use kiln_ir::Tensor;
use std::ffi::{c_char, c_int, CStr};
use std::path::PathBuf;
use std::time::Instant;

const USAGE: &str =
    "usage: MODEL [--inputs IN.npz] [-o OUT.npz] [--bench N] [--threads N] [--weights PATH] [--max-memory BYTES]

Runs the compiled model. Without --inputs it runs on the sample inputs stored at build
time and prints a summary of each output. --inputs takes an .npz with one array per model
input, by name; -o writes the outputs as .npz. --bench N times N runs after 3 warm-up runs
and prints one JSON line (milliseconds). --weights gives the weights file of a model built
with --weights file (default: the executable's path with .weights appended). --max-memory
caps the run's memory (bytes, or 512M, 8G; default: 80% of the machine's memory).

A KV-cache decoder (input_ids and past_key_values.* in, logits and present.* out)
generates, as `kiln generate` does, with --prompt-ids 1,2,3 or --prompt TEXT (encoded
with --tokenizer tokenizer.json, or the tokenizer embedded at build time):
  [--max-new-tokens N (32)] [--temperature T (0: greedy)] [--top-k K] [--top-p P]
  [--seed S] [--eos ID] [--max-seq N] [--step-times]
Its KV caches are appended in place, in buffers of the generation's length or of
--max-seq tokens (prompt included). The new tokens stream to stdout (text with a tokenizer, else ids); the last line is
JSON: prompt_tokens, ids, prefill_ms, ms_per_token, p90_ms_per_token, tokens_per_s,
peak_rss_mb.";

/// Options of one invocation.
#[derive(Debug, Default)]
struct Args {
    inputs: Option<PathBuf>,
    output: Option<PathBuf>,
    bench: Option<usize>,
    threads: usize,
    weights: Option<PathBuf>,
    max_memory: Option<MemoryLimit>,
    /// Set when a prompt is given: the run generates.
    prompt: Option<Prompt>,
    tokenizer: Option<PathBuf>,
    sampling: Sampling,
    max_seq: Option<usize>,
    step_times: bool,
}

/// What a decoder generates after.
#[derive(Debug)]
enum Prompt {
    Ids(Vec<i64>),
    Text(String),
}

/// Runs the executable's command line; returns the process exit code.
///
/// # Safety
/// `model` must be the artifact's descriptor, `argv` `argc` C strings.
#[no_mangle]
pub unsafe extern "C" fn kiln_rt_main(
    model: *const ModelDesc,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded from the caller.
    unsafe { entry(model, argc, argv, None) }
}

/// [`kiln_rt_main`] for a decoder, which also generates (`--prompt-ids`, `--prompt`).
/// A separate entry, so that only decoders link the tokenizer (4 MB of an executable).
///
/// # Safety
/// As for [`kiln_rt_main`].
#[no_mangle]
pub unsafe extern "C" fn kiln_rt_main_decoder(
    model: *const ModelDesc,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    // SAFETY: forwarded from the caller.
    unsafe { entry(model, argc, argv, Some(generate)) }
}

/// How a decoder generates, for the entry that links it.
type Generate = fn(&mut Session, &Args) -> Result<(), String>;

/// # Safety
/// As for [`kiln_rt_main`].
unsafe fn entry(
    model: *const ModelDesc,
    argc: c_int,
    argv: *const *const c_char,
    generate: Option<Generate>,
) -> c_int {
    let args: Vec<String> = (0..argc.max(0) as usize)
        // SAFETY: the contract above.
        .map(|i| unsafe { CStr::from_ptr(*argv.add(i)) })
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let result = std::panic::catch_unwind(|| {
        // SAFETY: forwarded from the caller.
        main_with(unsafe { &*model }, &args, generate)
    });
    match result {
        Ok(Ok(())) => 0,
        Ok(Err(message)) => {
            eprintln!("error: {message}");
            1
        }
        Err(_) => 101,
    }
}

fn main_with(
    model: &'static ModelDesc,
    argv: &[String],
    generate: Option<Generate>,
) -> Result<(), String> {
    let Some(args) = parse(argv)? else {
        println!("{USAGE}");
        return Ok(());
    };
    let weights = args.weights.clone().or_else(|| {
        // The executable's own path, not argv[0], which may be a bare name found on PATH.
        let exe = std::env::current_exe().ok()?;
        Some(PathBuf::from(format!("{}.weights", exe.display())))
    });
    // SAFETY: the descriptor is the artifact's own.
    let mut session = unsafe { Session::open(model, weights.as_deref(), args.threads) }
        .map_err(|e| e.to_string())?;
    let limit = args.max_memory.unwrap_or_default();
    session.set_max_memory(limit);
    if args.prompt.is_some() {
        let generate = generate.ok_or("--prompt-ids and --prompt need a decoder (input_ids, past_key_values.* in; logits, present.* out)")?;
        return generate(&mut session, &args);
    }
    let inputs = match &args.inputs {
        Some(path) => inputs_from(&session, path, limit)?,
        None => session.sample_inputs(),
    };
    if let Some(runs) = args.bench {
        return bench(&mut session, &inputs, runs);
    }
    let outputs = session.run(&inputs).map_err(|e| e.to_string())?;
    let names: Vec<String> = (session.meta().outputs.iter())
        .map(|o| o.name.clone())
        .collect();
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
        let number = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: `{v}` is not a count"))
        };
        let real =
            |v: String| (v.parse::<f32>()).map_err(|_| format!("{flag}: `{v}` is not a number"));
        let id = |v: &str| {
            (v.trim().parse::<i64>()).map_err(|_| format!("{flag}: `{v}` is not a token id"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--inputs" => args.inputs = Some(value()?.into()),
            "-o" | "--output" => args.output = Some(value()?.into()),
            "--bench" => args.bench = Some(number(value()?)?),
            "--threads" => args.threads = number(value()?)?,
            "--weights" => args.weights = Some(value()?.into()),
            "--max-memory" => {
                args.max_memory = Some(value()?.parse().map_err(|e| format!("{flag}: {e}"))?)
            }
            "--prompt-ids" => {
                let ids = value()?.split(',').map(id).collect::<Result<_, _>>()?;
                args.prompt = Some(Prompt::Ids(ids));
            }
            "--prompt" => args.prompt = Some(Prompt::Text(value()?)),
            "--tokenizer" => args.tokenizer = Some(value()?.into()),
            "--max-new-tokens" => args.sampling.max_new_tokens = number(value()?)?,
            "--temperature" => args.sampling.temperature = real(value()?)?,
            "--top-k" => args.sampling.top_k = number(value()?)?,
            "--top-p" => args.sampling.top_p = real(value()?)?,
            "--seed" => args.sampling.seed = number(value()?)? as u64,
            "--eos" => args.sampling.eos = Some(id(&value()?)?),
            "--max-seq" => args.max_seq = Some(number(value()?)?),
            "--step-times" => args.step_times = true,
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    Ok(Some(args))
}

/// Generates with a decoder artifact, printing as `kiln generate` does.
fn generate(session: &mut Session, args: &Args) -> Result<(), String> {
    use std::io::Write;
    let signature = decode::session::signature(session.meta()).map_err(|e| e.to_string())?;
    let tokenizer = match (&args.tokenizer, &session.meta().tokenizer) {
        (Some(path), _) => Some(decode::load_tokenizer(path)?),
        (None, Some(json)) => Some(
            (json.parse::<tokenizers::Tokenizer>())
                .map_err(|e| format!("the embedded tokenizer: {e}"))?,
        ),
        (None, None) => None,
    };
    let prompt = match (&args.prompt, &tokenizer) {
        (Some(Prompt::Ids(ids)), _) => ids.clone(),
        (Some(Prompt::Text(text)), Some(t)) => decode::encode(t, text)?,
        (Some(Prompt::Text(_)), None) => {
            return Err("--prompt needs --tokenizer (none was embedded at build time)".into())
        }
        (None, _) => return Err("no prompt".into()),
    };
    let start = Instant::now();
    let mut stream = decode::TokenStream::new(tokenizer.as_ref());
    let mut stdout = std::io::stdout();
    let out = decode::session::generate(
        session,
        &signature,
        &prompt,
        &args.sampling,
        args.max_seq,
        |id| {
            // A closed pipe only stops the printing.
            let _ = write!(stdout, "{}", stream.push(id));
            let _ = stdout.flush();
        },
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let summary = decode::summary_json(&out, seconds, args.step_times);
    let _ = writeln!(stdout, "\n{summary}");
    Ok(())
}

/// The model's inputs from an .npz, by name.
fn inputs_from(
    session: &Session,
    path: &std::path::Path,
    limit: MemoryLimit,
) -> Result<Vec<Tensor>, String> {
    let mut arrays = read_npz_with(path, limit).map_err(|e| e.to_string())?;
    let specs = session.meta().inputs.iter();
    specs
        .map(|spec| {
            let at = arrays.iter().position(|(n, _)| *n == spec.name);
            let at = at.ok_or_else(|| {
                format!(
                    "{}: no array named `{}` (a model input)",
                    path.display(),
                    spec.name
                )
            })?;
            Ok(arrays.swap_remove(at).1)
        })
        .collect()
}

/// Times `runs` runs after 3 warm-up runs; prints one JSON line.
fn bench(session: &mut Session, inputs: &[Tensor], runs: usize) -> Result<(), String> {
    bench_runs(runs, || {
        session
            .run(inputs)
            .map(drop)
            .map_err(|e: ArtifactError| e.to_string())
    })
}

/// Times `runs` calls of `once` after 3 warm-up calls; prints one JSON line (runs,
/// median, p10 and p90 in milliseconds), as every executable's `--bench` does.
pub fn bench_runs(runs: usize, mut once: impl FnMut() -> Result<(), String>) -> Result<(), String> {
    for _ in 0..3 {
        once()?;
    }
    let mut ms: Vec<f64> = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        once()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{{\"runs\": {}, \"median_ms\": {:.3}, \"p10_ms\": {:.3}, \"p90_ms\": {:.3}}}",
        ms.len(),
        at(0.5),
        at(0.1),
        at(0.9)
    );
    Ok(())
}
