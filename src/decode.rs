//! Token-by-token generation with a KV-cache decoder export on the JIT ([`Generator`]).
//!
//! The loop, the sampler and the decoder convention are `kiln_rt::decode`'s, which the
//! executables `kiln build --emit exe` makes share: both choose the same tokens.
//!
//! The caches are appended in place ([`kiln_kernel::cache`]): each layer's key and value
//! live in a buffer of the generation's length, the step writes only the new rows, and
//! attention reads the valid ones there, so a step costs the same at token 1000 as at
//! token 10 but for attention's reads. A cache the compiler does not recognize is passed
//! through the model as it was exported (its `present` fed back as the next past).

use crate::{Compiled, Error, Model, Options};
use kiln_ir::Tensor;
use kiln_rt::decode::{DecodeError, Signature};
use kiln_rt::kv::KvBuffer;
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
    max_seq: Option<usize>,
}

impl Generator {
    /// Compiles `model`, a decoder export with a KV cache, as `options` say, with its
    /// caches appended in place.
    pub fn new(model: &Model, options: &Options) -> Result<Generator, Error> {
        Generator::from_model(model.clone(), options)
    }

    /// [`Generator::new`], consuming the model: its weights move into the compiled model,
    /// which releases each one once it is packed, so they are held once.
    pub fn from_model(model: Model, options: &Options) -> Result<Generator, Error> {
        let options = Options {
            kv_cache: true,
            ..options.clone()
        };
        Generator::compiled_as(model, &options)
    }

    /// [`Generator::new`] passing the whole cache through the model at every step, as
    /// exported (each `present` a new tensor, fed back as the next past): the baseline
    /// the in-place caches are measured against.
    pub fn copying(model: &Model, options: &Options) -> Result<Generator, Error> {
        let options = Options {
            kv_cache: false,
            ..options.clone()
        };
        Generator::compiled_as(model.clone(), &options)
    }

    fn compiled_as(model: Model, options: &Options) -> Result<Generator, Error> {
        let mut signature = signature(model.graph())?;
        let model = model.into_compiled(options)?;
        let pasts: Vec<String> = signature.caches().map(|(p, ..)| p.to_string()).collect();
        for past in pasts {
            if let Some((heads, depth)) = rows_of(model.graph(), &past) {
                signature.fix_rows(&past, heads, depth);
            }
        }
        Ok(Generator {
            model,
            signature,
            max_seq: None,
        })
    }

    /// Sizes the caches for `tokens`, prompt included, instead of each generation's own
    /// length; a generation that could pass it is refused before it starts.
    pub fn max_seq(mut self, tokens: usize) -> Generator {
        self.max_seq = Some(tokens);
        self
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
        let capacity = kiln_rt::decode::capacity(prompt.len(), sampling, self.max_seq)?;
        let in_place = self.model.caches();
        // Without caches in place (a model run in stages, say), every cache is passed
        // through the ordinary run, as exported.
        let run = |inputs: BTreeMap<String, Tensor>, buffers: &mut [KvBuffer]| {
            let outputs = match buffers.is_empty() {
                true => self.model.run(&inputs)?,
                false => self.model.run_cached(&inputs, buffers)?,
            };
            Ok::<_, Error>(outputs.into_iter().collect())
        };
        let pasts: Vec<&str> = in_place.iter().map(|(past, _)| past.as_str()).collect();
        let step = kiln_rt::decode::in_place(&self.signature, &pasts, capacity, run)?;
        kiln_rt::decode::generate(&self.signature, prompt, sampling, step, on_token)
    }
}

/// The heads and depth of past input `past` of `g`: its declared ones, or, where those
/// are symbolic, those of the rows its concat appends.
pub(crate) fn rows_of(g: &kiln_ir::Graph, past: &str) -> Option<(i64, i64)> {
    let &(_, v) = g.inputs.iter().find(|(n, _)| n == past)?;
    let declared = &g.value_type(v).shape;
    let fixed = |s: &[kiln_ir::Dim]| Some((s.get(1)?.as_const()?, s.get(3)?.as_const()?));
    fixed(declared).or_else(|| {
        let concat = g.nodes.iter().find(|n| {
            matches!(n.op, kiln_ir::Op::Concat { axis: 2 }) && n.inputs.first() == Some(&v)
        })?;
        fixed(&g.value_type(*concat.inputs.get(1)?).shape)
    })
}

/// The symbols a decoder's past inputs leave for their heads or depth, with the value
/// the rows their concats append give them (onnxruntime-genai's `kv_cache_dim`).
pub(crate) fn row_symbols(g: &kiln_ir::Graph) -> Vec<(String, i64)> {
    let Ok(signature) = signature(g) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (past, shape, _) in signature.caches() {
        let Some((heads, depth)) = rows_of(g, past) else {
            continue;
        };
        for (d, v) in [(&shape[1], heads), (&shape[3], depth)] {
            if let Some(s) = d.as_sym() {
                if !out.iter().any(|(n, _): &(String, i64)| n == s) {
                    out.push((s.to_string(), v));
                }
            }
        }
    }
    out
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
