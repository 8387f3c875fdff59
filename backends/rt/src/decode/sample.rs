//! Choosing the next token from a step's logits.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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

impl Sampling {
    /// Why these options cannot sample, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        let ok = (0.0..=1.0).contains(&self.top_p) && self.top_p > 0.0 && self.temperature >= 0.0;
        if !ok {
            return Err("top-p must be in (0, 1] and the temperature at least 0".into());
        }
        Ok(())
    }
}

/// The options with the seeded generator of one generation.
pub(super) struct Sampler<'s> {
    options: &'s Sampling,
    rng: StdRng,
}

impl<'s> Sampler<'s> {
    pub(super) fn new(options: &'s Sampling) -> Sampler<'s> {
        Sampler {
            options,
            rng: StdRng::seed_from_u64(options.seed),
        }
    }

    /// The next token from `logits`: the first maximum when greedy, else a sample from the
    /// tempered, top-k and top-p filtered distribution.
    pub(super) fn choose(&mut self, logits: &[f32]) -> i64 {
        let s = self.options;
        let best = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        if s.temperature <= 0.0 || logits.is_empty() {
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
        let mut draw = self.rng.random::<f64>() * kept_total;
        for (i, w) in weights[..kept].iter().enumerate() {
            if draw < *w {
                return order[i] as i64;
            }
            draw -= w;
        }
        order[kept - 1] as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum_and_sampling_stays_in_the_top_k() {
        let logits = [0.5f32, 2.0, 2.0, -1.0];
        let greedy = Sampling::default();
        assert_eq!(Sampler::new(&greedy).choose(&logits), 1);
        let s = Sampling {
            temperature: 1.0,
            top_k: 2,
            ..Sampling::default()
        };
        let mut sampler = Sampler::new(&s);
        for _ in 0..50 {
            let t = sampler.choose(&logits);
            assert!(t == 1 || t == 2, "{t}");
        }
        let p = Sampling {
            temperature: 1.0,
            top_p: 0.01,
            ..Sampling::default()
        };
        assert_eq!(Sampler::new(&p).choose(&logits), 1);
    }

    #[test]
    fn bad_options_are_refused() {
        let hot = |temperature, top_p| Sampling {
            temperature,
            top_p,
            ..Sampling::default()
        };
        assert!(hot(0.0, 1.0).check().is_ok());
        assert!(hot(-1.0, 1.0).check().is_err());
        assert!(hot(1.0, 0.0).check().is_err());
        assert!(hot(f32::NAN, 1.0).check().is_err());
    }
}
