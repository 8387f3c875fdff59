//! `kiln generate`: run a KV-cache decoder token by token (`kiln::decode::Generator`),
//! streaming the new token ids, then one JSON line of what it took.

use super::timing::Timer;
use clap::Args;
use kiln::decode::{Generation, Generator, Sampling};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) const EXAMPLE: &str = "Examples:
  kiln generate tests/models/gpt2_kv.onnx --prompt-ids 5,6,7 --max-new-tokens 16
  kiln generate tests/models/gpt2_kv.onnx --tokenizer tests/models/gpt2_kv.tokenizer.json --prompt \"w5 w6 w7\"
  kiln generate model.onnx --prompt-ids 1,2,3 --temperature 0.8 --top-k 40 --top-p 0.95 --seed 7
  kiln generate model.onnx --prompt-ids 1,2,3 --quantize int4 --threads 2

MODEL is a decoder export with a KV cache (`optimum-cli export onnx --task
text-generation-with-past`): input_ids (attention_mask, position_ids when it has them) and
past_key_values.N.key/value in, logits and present.N.key/value out. The prompt runs with an
empty past; each new token then runs alone with the last step's present as its past, on one
compiled program. Without --temperature the choice is greedy (deterministic). Token ids go
to stdout as they are chosen (text, with --tokenizer); the last line is JSON: prompt_tokens, ids, prefill_ms,
ms_per_token (median of the steps after the prompt), p90_ms_per_token, tokens_per_s,
peak_rss_mb.";

#[derive(Args)]
pub(crate) struct GenerateArgs {
    /// The decoder: an ONNX file or kiln text IR (.kir).
    model: PathBuf,
    /// The prompt as token ids, comma-separated.
    #[arg(
        long,
        value_name = "ID,ID,...",
        value_delimiter = ',',
        required_unless_present = "prompt",
        conflicts_with = "prompt"
    )]
    prompt_ids: Vec<i64>,
    /// The prompt as text, encoded with --tokenizer.
    #[arg(long, value_name = "TEXT", requires = "tokenizer")]
    prompt: Option<String>,
    /// A Hugging Face `tokenizer.json`: encodes --prompt, and the new tokens are printed
    /// as text as they come (the ids still end the run in the JSON line).
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
    /// Tokens to generate.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 (the default) is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample among the K most likely tokens only (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample among the most likely tokens whose probabilities reach P (1: all).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// The sampler's seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after this token id.
    #[arg(long, value_name = "ID")]
    eos: Option<i64>,
    /// Worker threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Also print each step's milliseconds (`step_ms`, after the prompt's) in the JSON
    /// line, to see how a step's time grows with the past.
    #[arg(long)]
    step_times: bool,
    #[command(flatten)]
    quantize: super::pipeline::QuantizeArgs,
}

pub(crate) fn generate(args: GenerateArgs, timer: &Timer) -> anyhow::Result<ExitCode> {
    if !(args.top_p > 0.0 && args.top_p <= 1.0) || args.temperature < 0.0 {
        anyhow::bail!("--top-p must be in (0, 1] and --temperature at least 0");
    }
    if args.quantize.accuracy.is_some() {
        anyhow::bail!("--quantize-accuracy is not supported by `kiln generate` yet");
    }
    let start = std::time::Instant::now();
    let model = kiln::Model::load(&args.model)?;
    timer.report("load", start.elapsed());
    let options = kiln::Options {
        threads: args.threads.unwrap_or_else(super::default_threads).max(1),
        quantize: args.quantize.quantize,
        quantize_skip: args.quantize.skip.clone(),
        ..kiln::Options::default()
    };
    let start = std::time::Instant::now();
    let generator = Generator::new(&model, &options)?;
    timer.report("compile", start.elapsed());
    let sampling = Sampling {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        eos: args.eos,
    };
    let tokenizer = match &args.tokenizer {
        Some(path) => Some(
            tokenizers::Tokenizer::from_file(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    let prompt = match (&args.prompt, &tokenizer) {
        (Some(text), Some(t)) => {
            let encoding = t
                .encode(text.as_str(), false)
                .map_err(|e| anyhow::anyhow!("--prompt: {e}"))?;
            encoding.get_ids().iter().map(|&i| i64::from(i)).collect()
        }
        _ => args.prompt_ids.clone(),
    };
    let start = std::time::Instant::now();
    let mut stream = Stream::new(tokenizer.as_ref());
    let out = generator.generate(&prompt, &sampling, |id| stream.push(id))?;
    let total = start.elapsed().as_secs_f64();
    super::emit("\n")?;
    super::emit(&format!("{}\n", summary(&out, total, args.step_times)))?;
    Ok(ExitCode::SUCCESS)
}

/// Prints the new tokens as they come: ids separated by spaces, or with a tokenizer the
/// text they add (the whole decoded again each time, so a character spread over several
/// tokens appears once it is complete).
struct Stream<'t> {
    tokenizer: Option<&'t tokenizers::Tokenizer>,
    ids: Vec<u32>,
    printed: usize,
}

impl<'t> Stream<'t> {
    fn new(tokenizer: Option<&'t tokenizers::Tokenizer>) -> Stream<'t> {
        Stream {
            tokenizer,
            ids: Vec::new(),
            printed: 0,
        }
    }

    fn push(&mut self, id: i64) {
        let first = self.ids.is_empty();
        self.ids.push(u32::try_from(id).unwrap_or(u32::MAX));
        let text = match self.tokenizer {
            None => format!("{}{id}", if first { "" } else { " " }),
            Some(t) => {
                let all = t.decode(&self.ids, true).unwrap_or_default();
                // Only a whole, grown prefix is printed; a replacement character at the
                // end is an unfinished multi-byte character.
                if all.len() <= self.printed
                    || all.ends_with('\u{FFFD}')
                    || !all.is_char_boundary(self.printed)
                {
                    return;
                }
                let new = all[self.printed..].to_string();
                self.printed = all.len();
                new
            }
        };
        let _ = super::emit(&text);
        let _ = std::io::stdout().flush();
    }
}

/// The JSON line.
fn summary(out: &Generation, seconds: f64, steps: bool) -> String {
    let ids: Vec<String> = out.ids.iter().map(|i| i.to_string()).collect();
    let tokens_per_s = if seconds > 0.0 {
        out.ids.len() as f64 / seconds
    } else {
        0.0
    };
    let step_ms = if steps {
        let ms: Vec<String> = out.step_ms.iter().map(|m| format!("{m:.3}")).collect();
        format!(",\"step_ms\":[{}]", ms.join(","))
    } else {
        String::new()
    };
    format!(
        "{{\"prompt_tokens\":{},\"ids\":[{}],\"prefill_ms\":{:.3},\"ms_per_token\":{:.3},\"p90_ms_per_token\":{:.3},\"tokens_per_s\":{:.2},\"peak_rss_mb\":{:.1}{step_ms}}}",
        out.prompt_tokens,
        ids.join(","),
        out.prefill_ms,
        out.ms_per_token(),
        out.p90_ms_per_token(),
        tokens_per_s,
        peak_rss_mb()
    )
}

/// The process's peak resident memory (`VmHWM`), in MB; 0 where /proc is unreadable.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}
