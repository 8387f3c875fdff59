//! `kiln generate`: run a KV-cache decoder token by token (`kiln::decode::Generator`),
//! streaming the new token ids, then one JSON line of what it took.

use super::timing::Timer;
use clap::Args;
use kiln::decode::{Generator, Sampling};
use kiln_rt::decode;
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
compiled program; each layer's keys and values are appended in place to a buffer of the
generation's length (--copy-cache: passed through the model as exported). Without
--temperature the choice is greedy (deterministic). Token ids go
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
    /// Pass the whole cache through the model at every step, as exported (each present a
    /// new tensor fed back as the next past), instead of appending in place: the
    /// baseline to compare with.
    #[arg(long)]
    copy_cache: bool,
    /// The KV cache's capacity in tokens, prompt included (default: the prompt plus
    /// --max-new-tokens). It is reserved at the start (memory becomes resident only as
    /// tokens are written); a generation that could pass it is refused.
    #[arg(long, value_name = "TOKENS")]
    max_seq: Option<usize>,
    #[command(flatten)]
    quantize: super::pipeline::QuantizeArgs,
}

pub(crate) fn generate(args: GenerateArgs, timer: &Timer) -> anyhow::Result<ExitCode> {
    if args.quantize.accuracy.is_some() {
        anyhow::bail!("--quantize-accuracy is not supported by `kiln generate` yet");
    }
    let sampling = Sampling {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed,
        eos: args.eos,
    };
    sampling.check().map_err(anyhow::Error::msg)?;
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
    // The model moves into the generator, which then holds each weight once.
    let mut generator = match args.copy_cache {
        true => Generator::copying(&model, &options)?,
        false => Generator::from_model(model, &options)?,
    };
    if let Some(n) = args.max_seq {
        generator = generator.max_seq(n);
    }
    timer.report("compile", start.elapsed());
    let tokenizer = match &args.tokenizer {
        Some(path) => Some(decode::load_tokenizer(path).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let prompt = match (&args.prompt, &tokenizer) {
        (Some(text), Some(t)) => decode::encode(t, text).map_err(anyhow::Error::msg)?,
        _ => args.prompt_ids.clone(),
    };
    let start = std::time::Instant::now();
    let mut stream = decode::TokenStream::new(tokenizer.as_ref());
    let out = generator.generate(&prompt, &sampling, |id| {
        let _ = super::emit(&stream.push(id));
        let _ = std::io::stdout().flush();
    })?;
    let total = start.elapsed().as_secs_f64();
    let summary = decode::summary_json(&out, total, args.step_times);
    super::emit(&format!("\n{summary}\n"))?;
    Ok(ExitCode::SUCCESS)
}
