//! Token-by-token generation with a KV-cache decoder export, shared by the JIT's
//! `kiln::decode::Generator` and the executables `kiln build --emit exe` makes.
//!
//! The exports people make (`optimum-cli export onnx --task text-generation-with-past`)
//! take `input_ids`, an optional `attention_mask` and `position_ids`, and one
//! `past_key_values.N.key` / `.value` per layer (`[batch, heads, past, head_dim]`), and
//! return `logits` and the matching `present.N.key` / `.value`, the past with the new
//! tokens appended. A generation runs the prompt with an empty past (length 0), then one
//! token per step with the last step's `present` outputs as the past, on one compiled
//! program for every length (nothing is recompiled after the first token).
//!
//! [`generate`] is the loop over any step function, so both engines decode the same way
//! and choose the same tokens.

mod sample;
pub mod session;
mod stream;

pub use sample::Sampling;
pub use stream::{encode, load_tokenizer, peak_rss_mb, summary_json, TokenStream};

use crate::kv::KvBuffer;
use kiln_ir::{DType, Dim, Tensor};
use std::collections::BTreeMap;
use std::time::Instant;

/// Why a generation could not start or go on: the input or output it concerns.
#[derive(Debug, thiserror::Error)]
#[error("`{name}`: {message}")]
pub struct DecodeError {
    /// The model input or output (or `(decoder)` for the model as a whole).
    pub name: String,
    /// What is wrong.
    pub message: String,
}

fn error(name: &str, message: impl Into<String>) -> DecodeError {
    DecodeError {
        name: name.into(),
        message: message.into(),
    }
}

/// One past input: its name and declared shape, and the output that becomes it.
#[derive(Clone, Debug)]
struct CacheSlot {
    past: String,
    shape: Vec<Dim>,
    present: String,
}

/// The names a decoder export uses for its inputs and outputs.
#[derive(Clone, Debug)]
pub struct Signature {
    mask: bool,
    positions: bool,
    cache: Vec<CacheSlot>,
}

impl Signature {
    /// Reads the decoder convention off a model's inputs (name, dtype, shape) and output
    /// names: `input_ids`, `logits`, and every `past_key_values.*` input paired with its
    /// `present.*` output.
    pub fn of(
        inputs: &[(String, DType, Vec<Dim>)],
        outputs: &[String],
    ) -> Result<Signature, DecodeError> {
        let has_output = |n: &str| outputs.iter().any(|o| o == n);
        let has_input = |n: &str| inputs.iter().any(|i| i.0 == n);
        if !has_input("input_ids") || !has_output("logits") {
            return Err(error(
                "(decoder)",
                "a decoder takes `input_ids` and returns `logits`",
            ));
        }
        let mut cache = Vec::new();
        for (name, dtype, shape) in inputs {
            let Some(rest) = name.strip_prefix("past_key_values") else {
                let known = ["input_ids", "attention_mask", "position_ids"];
                if known.contains(&name.as_str()) {
                    continue;
                }
                return Err(error(name, "not an input a decoder export takes"));
            };
            let present = format!("present{rest}");
            if !has_output(&present) {
                return Err(error(name, format!("has no `{present}` output")));
            }
            if shape.len() != 4 || *dtype != DType::F32 {
                return Err(error(name, "not f32[batch, heads, past, depth]"));
            }
            cache.push(CacheSlot {
                past: name.clone(),
                shape: shape.clone(),
                present,
            });
        }
        Ok(Signature {
            mask: has_input("attention_mask"),
            positions: has_input("position_ids"),
            cache,
        })
    }

    /// The symbols of the past inputs' sequence axes (whose value is 0 for the prompt).
    pub fn past_symbols(&self) -> Vec<String> {
        let mut names: Vec<String> = (self.cache.iter())
            .flat_map(|c| c.shape[2].symbols())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The past inputs at length 0, batch 1.
    fn empty_cache(&self) -> Result<BTreeMap<String, Tensor>, DecodeError> {
        let mut cache = BTreeMap::new();
        for slot in &self.cache {
            let dims: Vec<usize> = (slot.shape.iter().enumerate())
                .map(|(i, d)| match (i, d.as_const()) {
                    (0, _) => Ok(1),
                    (2, _) => Ok(0),
                    (_, Some(n)) if n >= 0 => Ok(n as usize),
                    _ => Err(error(&slot.past, format!("dim `{d}` must be fixed"))),
                })
                .collect::<Result<_, _>>()?;
            let t = Tensor::from_vec(Vec::<f32>::new(), &dims)
                .map_err(|e| error(&slot.past, e.to_string()))?;
            cache.insert(slot.past.clone(), t);
        }
        Ok(cache)
    }

    /// Fixes the heads and depth of past input `past` where its declared shape leaves
    /// them symbolic (onnxruntime-genai names the head size `kv_cache_dim`).
    pub fn fix_rows(&mut self, past: &str, heads: i64, depth: i64) {
        for c in self.cache.iter_mut().filter(|c| c.past == past) {
            c.shape[1] = Dim::from(heads);
            c.shape[3] = Dim::from(depth);
        }
    }

    /// The signature without the caches whose past inputs are `taken` (kept elsewhere).
    pub fn without<'n>(&self, taken: impl Iterator<Item = &'n str>) -> Signature {
        let taken: Vec<&str> = taken.collect();
        let mut rest = self.clone();
        rest.cache.retain(|c| !taken.contains(&c.past.as_str()));
        rest
    }

    /// An empty buffer of `capacity` rows, batch 1, for the cache of past input `past`.
    fn buffer(&self, past: &str, capacity: usize) -> Result<KvBuffer, DecodeError> {
        let slot = (self.cache.iter().find(|c| c.past == past))
            .ok_or_else(|| error(past, "not a past input of the decoder"))?;
        let fixed = |d: &Dim| d.as_const().and_then(|n| usize::try_from(n).ok());
        let (Some(heads), Some(depth)) = (fixed(&slot.shape[1]), fixed(&slot.shape[3])) else {
            return Err(error(past, "heads and depth must be fixed"));
        };
        KvBuffer::new(1, heads, capacity, depth).map_err(|e| error(past, e.to_string()))
    }

    /// The past inputs and present outputs, by name, with each past's declared shape.
    pub fn caches(&self) -> impl Iterator<Item = (&str, &[Dim], &str)> {
        (self.cache.iter()).map(|c| (c.past.as_str(), c.shape.as_slice(), c.present.as_str()))
    }

    /// One step's inputs other than the cache: the new ids after `past` cached tokens.
    fn inputs(&self, ids: &[i64], past: usize) -> Result<BTreeMap<String, Tensor>, DecodeError> {
        let tensor = |v: Vec<i64>, name: &str| {
            let n = v.len();
            Tensor::from_vec(v, &[1, n]).map_err(|e| error(name, e.to_string()))
        };
        let mut inputs = BTreeMap::new();
        inputs.insert("input_ids".into(), tensor(ids.to_vec(), "input_ids")?);
        let total = past + ids.len();
        if self.mask {
            let mask = tensor(vec![1; total], "attention_mask")?;
            inputs.insert("attention_mask".into(), mask);
        }
        if self.positions {
            let positions = (past as i64..total as i64).collect();
            inputs.insert("position_ids".into(), tensor(positions, "position_ids")?);
        }
        Ok(inputs)
    }
}

/// One step of a model: named inputs in, named outputs out.
pub trait Step<E>: FnMut(BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>, E> {}

impl<E, F: FnMut(BTreeMap<String, Tensor>) -> Result<BTreeMap<String, Tensor>, E>> Step<E> for F {}

/// One generation: the new tokens and where the time went.
#[derive(Clone, Debug)]
pub struct Generation {
    /// The prompt's length in tokens.
    pub prompt_tokens: usize,
    /// The new token ids, in order.
    pub ids: Vec<i64>,
    /// Milliseconds of the prompt's step (which yields the first new token).
    pub prefill_ms: f64,
    /// Milliseconds of each later step.
    pub step_ms: Vec<f64>,
}

impl Generation {
    /// The median of [`Generation::step_ms`] (0 with none).
    pub fn ms_per_token(&self) -> f64 {
        quantile(&self.step_ms, 0.5)
    }

    /// The 90th percentile of [`Generation::step_ms`].
    pub fn p90_ms_per_token(&self) -> f64 {
        quantile(&self.step_ms, 0.9)
    }
}

fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * q).round() as usize]
}

/// Generates after `prompt` (token ids): runs `step` on the prompt, then on each chosen
/// token, calling `on_token` with each new id as it is chosen. `step` gets the inputs
/// other than the cache (`input_ids`, and `attention_mask`, `position_ids` when the model
/// takes them) and returns the outputs, `logits` among them; it keeps the cache itself
/// ([`copying`] feeds each step's `present` back as the next one's past).
pub fn generate<E: From<DecodeError>>(
    signature: &Signature,
    prompt: &[i64],
    sampling: &Sampling,
    mut step: impl Step<E>,
    mut on_token: impl FnMut(i64),
) -> Result<Generation, E> {
    if prompt.is_empty() {
        return Err(error("input_ids", "the prompt is empty").into());
    }
    sampling.check().map_err(|m| error("(sampling)", m))?;
    let mut sampler = sample::Sampler::new(sampling);
    let (mut feed, mut past) = (prompt.to_vec(), 0usize);
    let mut out = Generation {
        prompt_tokens: prompt.len(),
        ids: Vec::new(),
        prefill_ms: 0.0,
        step_ms: Vec::new(),
    };
    while out.ids.len() < sampling.max_new_tokens {
        let start = Instant::now();
        let mut outputs = step(signature.inputs(&feed, past)?)?;
        let logits = outputs
            .remove("logits")
            .ok_or_else(|| error("logits", "missing"))?;
        let token = sampler.choose(&last_row(&logits)?);
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if out.ids.is_empty() {
            out.prefill_ms = ms;
        } else {
            out.step_ms.push(ms);
        }
        past += feed.len();
        out.ids.push(token);
        on_token(token);
        if sampling.eos == Some(token) {
            break;
        }
        feed = vec![token];
    }
    Ok(out)
}

/// A step for [`generate`] over `run`, a step that takes the whole cache as inputs and
/// returns it as outputs: it starts from an empty past (length 0, batch 1) and passes
/// each `present` output back as the next step's past.
pub fn copying<'s, E: From<DecodeError>>(
    signature: &Signature,
    mut run: impl Step<E> + 's,
) -> Result<impl Step<E> + 's, DecodeError> {
    let mut cache = signature.empty_cache()?;
    let slots = signature.cache.clone();
    Ok(move |mut inputs: BTreeMap<String, Tensor>| {
        inputs.append(&mut cache);
        let mut outputs = run(inputs)?;
        for slot in &slots {
            let t =
                (outputs.remove(&slot.present)).ok_or_else(|| error(&slot.present, "missing"))?;
            cache.insert(slot.past.clone(), t);
        }
        Ok(outputs)
    })
}

/// A step for [`generate`] over `run`, which appends the caches whose past inputs are
/// `pasts` in place: `run` gets the other inputs and one buffer per cache (made here,
/// empty, `capacity` rows each, batch 1), and returns the outputs but those caches'
/// presents. Any other cache is passed through, as [`copying`] does.
pub fn in_place<'s, E: From<DecodeError>>(
    signature: &Signature,
    pasts: &[&str],
    capacity: usize,
    mut run: impl FnMut(BTreeMap<String, Tensor>, &mut [KvBuffer]) -> Result<BTreeMap<String, Tensor>, E>
        + 's,
) -> Result<impl Step<E> + 's, DecodeError> {
    let mut buffers = (pasts.iter())
        .map(|past| signature.buffer(past, capacity))
        .collect::<Result<Vec<_>, _>>()?;
    let rest = signature.without(pasts.iter().copied());
    copying(&rest, move |inputs| run(inputs, &mut buffers))
}

/// The rows each cache needs to generate `sampling.max_new_tokens` after a prompt of
/// `prompt` tokens, or `max_seq` when given: a generation that could pass it is refused
/// before it starts.
pub fn capacity(
    prompt: usize,
    sampling: &Sampling,
    max_seq: Option<usize>,
) -> Result<usize, DecodeError> {
    let needed = prompt + sampling.max_new_tokens.max(1);
    let capacity = max_seq.unwrap_or(needed);
    if needed > capacity {
        return Err(error(
            "(generation)",
            format!(
                "a prompt of {prompt} tokens and {} new ones pass the cache's {capacity} \
                 (max-seq)",
                sampling.max_new_tokens
            ),
        ));
    }
    Ok(capacity)
}

/// The logits of the last position of `logits[1, seq, vocab]`.
fn last_row(logits: &Tensor) -> Result<Vec<f32>, DecodeError> {
    let shape = logits.shape();
    let bad = || error("logits", format!("shape {shape:?}, not [1, seq, vocab]"));
    let (&vocab, rows) = shape.split_last().ok_or_else(bad)?;
    if vocab == 0 || rows.iter().product::<usize>() == 0 {
        return Err(bad());
    }
    // Only the last row: the prompt's logits are every position's.
    let f32s = logits.cast(DType::F32);
    let all = f32s.as_array::<f32>().ok_or_else(bad)?;
    let skip = all.len() - vocab;
    Ok(match all.as_slice() {
        Some(flat) => flat[skip..].to_vec(),
        None => all.iter().skip(skip).copied().collect(),
    })
}

impl From<DecodeError> for String {
    fn from(e: DecodeError) -> String {
        e.to_string()
    }
}
