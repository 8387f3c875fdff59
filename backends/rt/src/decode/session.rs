//! Generation on an ahead-of-time artifact's [`Session`].

use super::{DecodeError, Generation, Sampling, Signature};
use crate::artifact::{Meta, Session};
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

/// Generates after `prompt` on `session` (see [`super::generate`]).
pub fn generate(
    session: &mut Session,
    signature: &Signature,
    prompt: &[i64],
    sampling: &Sampling,
    on_token: impl FnMut(i64),
) -> Result<Generation, String> {
    let step = |mut inputs: BTreeMap<String, Tensor>| -> Result<BTreeMap<String, Tensor>, String> {
        let meta = session.meta();
        let ordered = (meta.inputs.iter())
            .map(|spec| {
                (inputs.remove(&spec.name)).ok_or_else(|| format!("no input `{}`", spec.name))
            })
            .collect::<Result<Vec<Tensor>, String>>()?;
        let names: Vec<String> = meta.outputs.iter().map(|o| o.name.clone()).collect();
        let outputs = session.run(&ordered).map_err(|e| e.to_string())?;
        Ok(names.into_iter().zip(outputs).collect())
    };
    let step = super::copying(signature, step).map_err(|e| e.to_string())?;
    super::generate(signature, prompt, sampling, step, on_token)
}
