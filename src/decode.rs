//! Token-by-token generation with a KV-cache decoder export on the JIT ([`Generator`]).
//!
//! The loop, the sampler and the decoder convention are `kiln_rt::decode`'s, which the
//! executables `kiln build --emit exe` makes share: both choose the same tokens.
//!
//! Each step passes the whole cache back in, so a step copies it once (the model's
//! `concat`); appending in place is the compiler's next step.

use crate::{Compiled, Error, Model, Options};
use kiln_rt::decode::{DecodeError, Signature};
use std::collections::BTreeMap;

pub use kiln_rt::decode::{Generation, Sampling};

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Error {
        Error::Input {
            name: e.name,
            message: e.message,
        }
    }
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
        let signature = signature(model.graph())?;
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
        on_token: impl FnMut(i64),
    ) -> Result<Generation, Error> {
        sampling.check().map_err(|message| Error::Input {
            name: "(sampling)".into(),
            message,
        })?;
        let step = |inputs: BTreeMap<_, _>| -> Result<BTreeMap<_, _>, Error> {
            Ok(self.model.run(&inputs)?.into_iter().collect())
        };
        kiln_rt::decode::generate(&self.signature, prompt, sampling, step, on_token)
    }
}

/// The decoder convention of `g`'s inputs and outputs.
pub(crate) fn signature(g: &kiln_ir::Graph) -> Result<Signature, DecodeError> {
    let inputs: Vec<_> = (g.inputs.iter())
        .map(|(n, v)| {
            let ty = g.value_type(*v);
            (n.clone(), ty.dtype, ty.shape.clone())
        })
        .collect();
    let outputs: Vec<String> = g.outputs.iter().map(|(n, _)| n.clone()).collect();
    Signature::of(&inputs, &outputs)
}
