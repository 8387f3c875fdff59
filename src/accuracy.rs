//! Quantization to an accuracy target: quantize every eligible layer, and where the model's
//! outputs then drift further from f32 than the target allows, keep the layers that cost
//! the most accuracy in higher precision, as few as the target needs.
//!
//! Each layer's sensitivity is measured end to end: the model with only that layer
//! quantized, compiled and run on the calibration inputs, scored by the lowest cosine of
//! its float outputs against the f32 model's. Layers are then promoted in order of
//! sensitivity, most sensitive first, and a binary search finds the fewest promotions
//! that meet the target. int4 layers are promoted to int8 first, and to f32 only when
//! int8 everywhere still misses the target; int8 layers go to f32. Every figure in the
//! report is measured, none is estimated.

use crate::compare::agreement;
use crate::{Error, Model, Options};
use kiln_ir::Tensor;
use kiln_passes::{Quantize, Scheme};
use std::collections::BTreeMap;

/// Layers and the scheme each gets instead of the one asked for (`None`: f32).
pub type Plan = Vec<(String, Option<Scheme>)>;

/// What the search was asked for and what it found.
#[derive(Clone, Debug)]
pub struct AccuracyReport {
    /// The scheme asked for.
    pub scheme: Scheme,
    /// The lowest acceptable cosine of any float output against f32.
    pub target: f64,
    /// The lowest output cosine with every eligible layer quantized.
    pub plain_cosine: f64,
    /// The lowest output cosine of the model returned.
    pub cosine: f64,
    /// Every eligible layer with the lowest output cosine when it alone is quantized,
    /// most sensitive first.
    pub sensitivity: Vec<(String, f64)>,
    /// The layers kept in higher precision (`None`: f32), most sensitive first.
    pub kept: Plan,
    /// Models compiled and run to find this.
    pub evaluations: usize,
}

impl AccuracyReport {
    /// Whether the returned model meets the target.
    pub fn met(&self) -> bool {
        self.cosine >= self.target
    }
}

/// The state of one search: the f32 model, its outputs, and how to score a plan.
struct Search<'a> {
    model: &'a Model,
    quantize: &'a Quantize,
    inputs: &'a BTreeMap<String, Tensor>,
    reference: Vec<(String, Tensor)>,
    opts: Options,
    target: f64,
    evaluations: usize,
}

impl<'a> Search<'a> {
    /// A search over `model`, with its f32 outputs on `inputs` as the reference.
    fn new(
        model: &'a Model,
        quantize: &'a Quantize,
        inputs: &'a BTreeMap<String, Tensor>,
        threads: usize,
        target: f64,
    ) -> Result<Search<'a>, Error> {
        let opts = Options {
            threads,
            optimize: false,
            ..Options::default()
        };
        let reference = model.compile(&opts)?.run(inputs)?;
        Ok(Search {
            model,
            quantize,
            inputs,
            reference,
            opts,
            target,
            evaluations: 0,
        })
    }

    /// The eligible layers the pass does not skip.
    fn layers(&self) -> Vec<String> {
        (Quantize::eligible(self.model.graph()).into_iter())
            .filter(|l| !self.quantize.skip.iter().any(|s| l.contains(s.as_str())))
            .collect()
    }

    /// The lowest float-output cosine against f32 of the model quantized with `layers`
    /// overriding the scheme.
    fn score(&mut self, layers: BTreeMap<String, Option<Scheme>>) -> Result<f64, Error> {
        self.evaluations += 1;
        let pass = Quantize {
            scheme: self.quantize.scheme,
            skip: self.quantize.skip.clone(),
            layers,
        };
        let (quantized, _) = self.model.quantize_with(pass)?;
        let outputs = quantized.compile(&self.opts)?.run(self.inputs)?;
        let mut worst = 1f64;
        for ((_, got), (_, want)) in outputs.iter().zip(&self.reference) {
            if !want.dtype().is_float() {
                continue;
            }
            // A NaN where f32 has none is as far off as it gets.
            let cosine = agreement(got, want).map_or(-1.0, |a| a.cosine);
            worst = worst.min(cosine);
        }
        Ok(worst)
    }
}

impl Model {
    /// Quantizes this (optimized, f32) model as `quantize` says, then keeps its most
    /// sensitive layers in higher precision until the cosine of every float output against
    /// the f32 model's, on `inputs`, is at least `target` (see the module docs).
    /// `progress(stage, done, total)` is called as models are measured.
    pub fn quantize_to_accuracy(
        &self,
        quantize: &Quantize,
        target: f64,
        inputs: &BTreeMap<String, Tensor>,
        threads: usize,
        progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<(Model, AccuracyReport), Error> {
        let mut search = Search::new(self, quantize, inputs, threads, target)?;
        let layers = search.layers();
        let plain_cosine = search.score(BTreeMap::new())?;
        let mut report = AccuracyReport {
            scheme: quantize.scheme,
            target,
            plain_cosine,
            cosine: plain_cosine,
            sensitivity: Vec::new(),
            kept: Vec::new(),
            evaluations: 0,
        };
        if plain_cosine < target {
            report.sensitivity = sensitivity(&mut search, &layers, progress)?;
            let order: Vec<&str> = report.sensitivity.iter().map(|(l, _)| l.as_str()).collect();
            let mut rungs = vec![None];
            if quantize.scheme == Scheme::Int4 {
                rungs.insert(0, Some(Scheme::Int8));
            }
            for rung in rungs {
                let (kept, cosine) = promote(&mut search, &order, rung, progress)?;
                (report.kept, report.cosine) = (kept, cosine);
                if cosine >= target {
                    break;
                }
            }
        }
        report.evaluations = search.evaluations;
        let plan = report.kept.iter().cloned().collect();
        let pass = Quantize {
            scheme: quantize.scheme,
            skip: quantize.skip.clone(),
            layers: plan,
        };
        Ok((self.quantize_with(pass)?.0, report))
    }
}

impl Model {
    /// Every eligible layer (less `quantize.skip`) with the lowest float-output cosine
    /// against this f32 model when that layer alone is quantized, most sensitive first: the
    /// sensitivity table of `kiln quantize-report`.
    pub fn layer_sensitivity(
        &self,
        quantize: &Quantize,
        inputs: &BTreeMap<String, Tensor>,
        threads: usize,
        progress: &mut dyn FnMut(&str, usize, usize),
    ) -> Result<Vec<(String, f64)>, Error> {
        // The target only steers a search; the sensitivities do not depend on it.
        let mut search = Search::new(self, quantize, inputs, threads, 1.0)?;
        let layers = search.layers();
        sensitivity(&mut search, &layers, progress)
    }
}

/// Every layer's cosine when it alone is quantized, most sensitive first.
fn sensitivity(
    search: &mut Search,
    layers: &[String],
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Vec<(String, f64)>, Error> {
    let mut out = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        progress("measuring each layer", i, layers.len());
        let others = layers
            .iter()
            .filter(|l| *l != layer)
            .map(|l| (l.clone(), None));
        out.push((layer.clone(), search.score(others.collect())?));
    }
    progress("measuring each layer", layers.len(), layers.len());
    out.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
}

/// The fewest of the most sensitive layers (`order`) to give `rung` for the target, by a
/// binary search over how many. Returns the plan and its cosine (every layer promoted
/// when even that misses the target).
fn promote(
    search: &mut Search,
    order: &[&str],
    rung: Option<Scheme>,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<(Plan, f64), Error> {
    let plan = |k: usize| -> Plan { order[..k].iter().map(|l| (l.to_string(), rung)).collect() };
    let target = search.target;
    let total = order.len();
    let all = search.score(plan(total).into_iter().collect())?;
    if all < target {
        return Ok((plan(total), all));
    }
    // Invariant: `hi` promotions meet the target (scored as `at_hi`); `lo` do not.
    let (mut lo, mut hi, mut at_hi) = (0, total, all);
    let steps = usize::BITS - total.leading_zeros();
    let mut step = 0;
    while hi - lo > 1 {
        progress(
            "searching for the fewest layers to keep",
            step as usize,
            steps as usize,
        );
        step += 1;
        let mid = (lo + hi) / 2;
        let cosine = search.score(plan(mid).into_iter().collect())?;
        if cosine >= target {
            (hi, at_hi) = (mid, cosine);
        } else {
            lo = mid;
        }
    }
    progress(
        "searching for the fewest layers to keep",
        steps as usize,
        steps as usize,
    );
    Ok((plan(hi), at_hi))
}
