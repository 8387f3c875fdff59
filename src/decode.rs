//! Token-by-token generation with a KV-cache decoder export ([`Generator`]).
//!
//! The exports people make (`optimum-cli export onnx --task text-generation-with-past`)
//! take `input_ids`, an optional `attention_mask` and `position_ids`, and one
//! `past_key_values.N.key` / `.value` per layer (`[batch, heads, past, head_dim]`), and
//! return `logits` and the matching `present.N.key` / `.value`, the past with the new
//! tokens appended. A generation runs the prompt with an empty past (length 0), then one
//! token per step with the last step's `present` outputs as the past, on one compiled
//! program for every length (nothing is recompiled after the first token).
//!
//! Each step passes the whole cache back in, so a step copies it once (the model's
//! `concat`); appending in place is the compiler's next step.

use crate::{Compiled, Error, Model, Options};
use kiln_ir::{DType, Dim, Graph, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Instant;

/// How tokens are chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// Tokens to generate after the prompt.
    pub max_new_tokens: usize,
    /// 0 for greedy (the most likely token, deterministic); otherwise the logits are
    /// divided by it before sampling.
    pub temperature: f32,
    /// Sample among the `k` most likely tokens only (0: all).
    pub top_k: usize,
    /// Sample among the most likely tokens whose probabilities sum to at least `p`
    /// (1: all).
    pub top_p: f32,
    /// The sampler's seed: the same seed and prompt give the same tokens.
    pub seed: u64,
    /// Stop after this token (it is returned), if any.
    pub eos: Option<i64>,
}

impl Default for Sampling {
    fn default() -> Sampling {
        Sampling {
            max_new_tokens: 32,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            eos: None,
        }
    }
}

/// The names a decoder export uses for its inputs and outputs.
#[derive(Clone, Debug)]
struct Signature {
    mask: bool,
    positions: bool,
    /// Each past input with its shape, and the output that becomes it.
    cache: Vec<(String, Vec<Dim>, String)>,
}

impl Signature {
    /// Reads the decoder convention off `g`: `input_ids`, `logits`, and every
    /// `past_key_values.*` input paired with its `present.*` output.
    fn of(g: &Graph) -> Result<Signature, String> {
        let inputs: BTreeMap<&str, _> = (g.inputs.iter())
            .map(|(n, v)| (n.as_str(), g.value_type(*v)))
            .collect();
        let outputs: Vec<&str> = g.outputs.iter().map(|(n, _)| n.as_str()).collect();
        if !inputs.contains_key("input_ids") || !outputs.contains(&"logits") {
            return Err("a decoder takes `input_ids` and returns `logits`".into());
        }
        let mut cache = Vec::new();
        for (name, ty) in &inputs {
            let Some(rest) = name.strip_prefix("past_key_values") else {
                continue;
            };
            let present = format!("present{rest}");
            if !outputs.contains(&present.as_str()) {
                return Err(format!("input `{name}` has no `{present}` output"));
            }
            if ty.shape.len() != 4 || ty.dtype != DType::F32 {
                return Err(format!(
                    "`{name}` is {ty}, not f32[batch, heads, past, depth]"
                ));
            }
            cache.push((name.to_string(), ty.shape.clone(), present));
        }
        let known = |n: &str| n == "input_ids" || n == "attention_mask" || n == "position_ids";
        if let Some(other) = inputs
            .keys()
            .find(|n| !known(n) && !n.starts_with("past_key_values"))
        {
            return Err(format!("input `{other}` is not one a decoder export takes"));
        }
        Ok(Signature {
            mask: inputs.contains_key("attention_mask"),
            positions: inputs.contains_key("position_ids"),
            cache,
        })
    }
}

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

/// A decoder compiled once, generating from any number of prompts (it is `Send` and
/// `Sync`; each [`Generator::generate`] keeps its own cache).
///
/// ```no_run
/// let model = kiln::Model::load("tests/models/gpt2_kv.onnx")?;
/// let generator = kiln::decode::Generator::new(&model, &kiln::Options::default())?;
/// let sampling = kiln::decode::Sampling { max_new_tokens: 8, ..Default::default() };
/// let out = generator.generate(&[1, 2, 3], &sampling, |id| print!("{id} "))?;
/// println!("\n{:.2} ms per token", out.ms_per_token());
/// # Ok::<(), kiln::Error>(())
/// ```
pub struct Generator {
    model: Compiled,
    signature: Signature,
}

impl Generator {
    /// Compiles `model`, a decoder export with a KV cache, as `options` say.
    pub fn new(model: &Model, options: &Options) -> Result<Generator, Error> {
        let signature = Signature::of(model.graph()).map_err(|message| Error::Input {
            name: "(decoder)".into(),
            message,
        })?;
        Ok(Generator {
            model: model.compile(options)?,
            signature,
        })
    }

    /// The compiled model.
    pub fn compiled(&self) -> &Compiled {
        &self.model
    }

    /// Generates after `prompt` (token ids), calling `on_token` with each new id as it
    /// is chosen.
    pub fn generate(
        &self,
        prompt: &[i64],
        sampling: &Sampling,
        mut on_token: impl FnMut(i64),
    ) -> Result<Generation, Error> {
        if prompt.is_empty() {
            return Err(input_error("input_ids", "the prompt is empty"));
        }
        let mut rng = StdRng::seed_from_u64(sampling.seed);
        let mut cache = self.empty_cache()?;
        let (mut feed, mut past) = (prompt.to_vec(), 0usize);
        let mut out = Generation {
            prompt_tokens: prompt.len(),
            ids: Vec::new(),
            prefill_ms: 0.0,
            step_ms: Vec::new(),
        };
        while out.ids.len() < sampling.max_new_tokens {
            let start = Instant::now();
            let inputs = self.inputs(&feed, past, &mut cache)?;
            let mut outputs: BTreeMap<String, Tensor> =
                self.model.run(&inputs)?.into_iter().collect();
            let logits = outputs
                .remove("logits")
                .ok_or_else(|| input_error("logits", "missing"))?;
            let token = choose(&last_row(&logits)?, sampling, &mut rng);
            for (input, _, present) in &self.signature.cache {
                let t = outputs
                    .remove(present)
                    .ok_or_else(|| input_error(present, "missing"))?;
                cache.insert(input.clone(), t);
            }
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

    /// The past inputs at length 0, batch 1.
    fn empty_cache(&self) -> Result<BTreeMap<String, Tensor>, Error> {
        let mut cache = BTreeMap::new();
        for (name, shape, _) in &self.signature.cache {
            let dims: Vec<usize> = (shape.iter().enumerate())
                .map(|(i, d)| match (i, d.as_const()) {
                    (0, _) => Ok(1),
                    (2, _) => Ok(0),
                    (_, Some(n)) => Ok(n as usize),
                    (_, None) => Err(input_error(name, &format!("dim `{d}` must be fixed"))),
                })
                .collect::<Result<_, _>>()?;
            let t = Tensor::from_vec(Vec::<f32>::new(), &dims)
                .map_err(|e| input_error(name, &e.to_string()))?;
            cache.insert(name.clone(), t);
        }
        Ok(cache)
    }

    /// One step's inputs: the new ids after `past` cached tokens.
    fn inputs(
        &self,
        ids: &[i64],
        past: usize,
        cache: &mut BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, Error> {
        let tensor = |v: Vec<i64>, name: &str| {
            let n = v.len();
            Tensor::from_vec(v, &[1, n]).map_err(|e| input_error(name, &e.to_string()))
        };
        let mut inputs = std::mem::take(cache);
        inputs.insert("input_ids".into(), tensor(ids.to_vec(), "input_ids")?);
        let total = past + ids.len();
        if self.signature.mask {
            inputs.insert(
                "attention_mask".into(),
                tensor(vec![1; total], "attention_mask")?,
            );
        }
        if self.signature.positions {
            let positions = (past as i64..total as i64).collect();
            inputs.insert("position_ids".into(), tensor(positions, "position_ids")?);
        }
        Ok(inputs)
    }
}

fn input_error(name: &str, message: &str) -> Error {
    Error::Input {
        name: name.into(),
        message: message.into(),
    }
}

/// The logits of the last position of `logits[1, seq, vocab]`.
fn last_row(logits: &Tensor) -> Result<Vec<f32>, Error> {
    let shape = logits.shape();
    let bad = || input_error("logits", &format!("shape {shape:?}, not [1, seq, vocab]"));
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

/// The next token from `logits`: the first maximum when greedy, else a sample from the
/// tempered, top-k and top-p filtered distribution.
fn choose(logits: &[f32], s: &Sampling, rng: &mut StdRng) -> i64 {
    let best = (0..logits.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
        .unwrap_or(0);
    if s.temperature <= 0.0 {
        return best as i64;
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if s.top_k > 0 {
        order.truncate(s.top_k);
    }
    let top = logits[order[0]];
    let weights: Vec<f64> = (order.iter())
        .map(|&i| (f64::from(logits[i] - top) / f64::from(s.temperature)).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut kept = 0;
    let mut mass = 0.0;
    for w in &weights {
        kept += 1;
        mass += w / total;
        if mass >= f64::from(s.top_p) {
            break;
        }
    }
    let kept_total: f64 = weights[..kept].iter().sum();
    let mut draw = rng.random::<f64>() * kept_total;
    for (i, w) in weights[..kept].iter().enumerate() {
        if draw < *w {
            return order[i] as i64;
        }
        draw -= w;
    }
    order[kept - 1] as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum_and_sampling_stays_in_the_top_k() {
        let logits = [0.5f32, 2.0, 2.0, -1.0];
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(choose(&logits, &Sampling::default(), &mut rng), 1);
        let s = Sampling {
            temperature: 1.0,
            top_k: 2,
            ..Sampling::default()
        };
        for _ in 0..50 {
            let t = choose(&logits, &s, &mut rng);
            assert!(t == 1 || t == 2, "{t}");
        }
        let p = Sampling {
            temperature: 1.0,
            top_p: 0.01,
            ..Sampling::default()
        };
        assert_eq!(choose(&logits, &p, &mut rng), 1);
    }
}
