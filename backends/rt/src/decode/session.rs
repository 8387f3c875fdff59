//! Generation on an ahead-of-time artifact's [`Session`].

use super::{DecodeError, Generation, Sampling, Signature};
use crate::artifact::{Meta, Session};
use crate::kv::KvBuffer;
use kiln_ir::{Dim, Tensor};
use std::collections::BTreeMap;

/// The decoder convention of the artifact `meta` describes (a dim built for one value,
/// `--dim NAME=N` or a head size the build read off the model, is that value).
pub fn signature(meta: &Meta) -> Result<Signature, DecodeError> {
    let fixed: kiln_ir::Bindings = (meta.dims.iter())
        .filter(|r| r.min == r.max)
        .map(|r| (r.name.clone(), r.min))
        .collect();
    let inputs = (meta.inputs.iter())
        .map(|spec| {
            let dims = (spec.dims.iter())
                .map(|d| d.parse::<Dim>().map(|d| d.substitute(&fixed)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| super::error(&spec.name, e.to_string()))?;
            Ok((spec.name.clone(), spec.dtype, dims))
        })
        .collect::<Result<Vec<_>, DecodeError>>()?;
    let outputs: Vec<String> = meta.outputs.iter().map(|o| o.name.clone()).collect();
    Signature::of(&inputs, &outputs)
}

/// Generates after `prompt` on `session` (see [`super::generate`]), appending the caches
/// the program takes in place to buffers of `max_seq` rows (or the generation's length).
pub fn generate(
    session: &mut Session,
    signature: &Signature,
    prompt: &[i64],
    sampling: &Sampling,
    max_seq: Option<usize>,
    on_token: impl FnMut(i64),
) -> Result<Generation, String> {
    let capacity = super::capacity(prompt.len(), sampling, max_seq)?;
    // Packed now, so that the prompt's time is the prompt's, as the JIT's is.
    session.prepack();
    let meta = session.meta();
    let place = session.cache_placement();
    let pasts: Vec<String> = (place.caches.iter())
        .map(|c| meta.inputs[c.input].name.clone())
        .collect();
    let given = place.given(meta.inputs.iter().map(|i| i.name.clone()).collect());
    let kept = place.others(meta.outputs.iter().map(|o| o.name.clone()).collect());
    let run = |mut inputs: BTreeMap<String, Tensor>, buffers: &mut [KvBuffer]| {
        let ordered = (given.iter())
            .map(|name| (inputs.remove(name)).ok_or_else(|| format!("no input `{name}`")))
            .collect::<Result<Vec<Tensor>, String>>()?;
        let outputs = (session.run_cached(&ordered, buffers)).map_err(|e| e.to_string())?;
        Ok::<_, String>(kept.iter().cloned().zip(outputs).collect())
    };
    let pasts: Vec<&str> = pasts.iter().map(String::as_str).collect();
    let step = super::in_place(signature, &pasts, capacity, run).map_err(|e| e.to_string())?;
    super::generate(signature, prompt, sampling, step, on_token)
}
