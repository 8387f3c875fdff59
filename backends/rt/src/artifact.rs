//! Running an ahead-of-time artifact: a model `kiln build` compiled into an object file.
//!
//! The object holds the kernels, a function table, the weights (or not: `--weights file`)
//! and a JSON description ([`Meta`]); one exported symbol, the [`ModelDesc`], points at
//! them. A [`Session`] opens the description, maps the weights, and runs the model on
//! input tensors through the same executor as the JIT ([`crate::exec::run`]).
//!
//! Symbolic dims are handled by specialization, as in the JIT, but ahead of time: the
//! artifact holds one compiled program per shape its declared dim ranges allow
//! ([`Spec`]), and a run picks the one its input shapes match.

use crate::aligned::Aligned;
use crate::call::BufId;
use crate::exec::{self, Arena, Code, KernelFn, RunPlan};
use crate::nibbles::Nibbles;
use crate::pool::ThreadPool;
use crate::{OpCallFn, Packed};
use kiln_ir::{DType, MemoryLimit, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// The version of the artifact layout ([`ModelDesc`] and [`Meta`]); a runtime refuses
/// other versions.
pub const FORMAT: u32 = 2;

/// Magic bytes at the start of a weights side file, followed by the artifact id (8 bytes)
/// and the weights' length (8 bytes, little endian); the weights start at byte 64.
pub const WEIGHTS_MAGIC: &[u8; 8] = b"KILNWTS1";

/// Where the weights start in a side file.
pub const WEIGHTS_HEADER: usize = 64;

/// What an artifact's object exports as `NAME_model`: four addresses, filled in by the
/// linker.
#[repr(C)]
pub struct ModelDesc {
    /// The [`Meta`] as JSON, prefixed by its length (8 bytes, little endian).
    pub meta: *const u8,
    /// The weights, 64-byte aligned; null when they live in a side file.
    pub weights: *const u8,
    /// The kernels of every specialization, in order (null entries for runtime calls).
    pub kernels: *const Option<KernelFn>,
    /// [`crate::kiln_rt_op_call`] when a specialization has op calls, else null (so that
    /// the executable does not link the interpreter).
    pub op_call: Option<OpCallFn>,
}

// SAFETY: the descriptor points at read-only data and code.
unsafe impl Sync for ModelDesc {}

/// The description of a compiled model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    /// [`FORMAT`] of the kiln that wrote it.
    pub format: u32,
    /// The kiln version that wrote it.
    pub kiln_version: String,
    /// The artifact's name (the C symbol prefix).
    pub name: String,
    /// Identifies these weights: a side file must carry the same id.
    pub id: u64,
    /// Bytes of weights.
    pub weights_len: u64,
    /// The graph inputs.
    pub inputs: Vec<TensorSpec>,
    /// The graph outputs.
    pub outputs: Vec<TensorSpec>,
    /// The symbolic dims and the range the artifact was built for.
    pub dims: Vec<DimRange>,
    /// Where each constant is in the weights, and how it is stored.
    pub consts: Vec<Const>,
    /// One compiled program per supported shape.
    pub specs: Vec<Spec>,
    /// Inputs to run when none are given (generated at build time for the first spec).
    pub sample_inputs: Vec<SampleTensor>,
}

/// A constant in the weights.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Const {
    /// Its byte offset in the weights, 64-byte aligned.
    pub offset: u64,
    /// Its bytes, unpacked.
    pub len: u64,
    /// Stored two values per byte (`len.div_ceil(2)` bytes, unpacked when the artifact
    /// opens), or whole when `None`.
    pub nibbles: Option<Nibbles>,
}

impl Const {
    /// The bytes it takes in the weights.
    pub fn stored_len(&self) -> u64 {
        match self.nibbles {
            Some(_) => self.len.div_ceil(2),
            None => self.len,
        }
    }
}

/// A graph input or output: name, dtype and shape (dims as text: `seq`, `2*seq`, `768`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Its name.
    pub name: String,
    /// Its element type.
    pub dtype: DType,
    /// Its shape.
    pub dims: Vec<String>,
}

/// A symbolic dim and its declared range.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DimRange {
    /// The symbol.
    pub name: String,
    /// The smallest value.
    pub min: i64,
    /// The largest value.
    pub max: i64,
}

/// A program compiled for one binding of the dims.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    /// The value of each dim of [`Meta::dims`].
    pub dims: Vec<i64>,
    /// The input shapes it runs.
    pub input_shapes: Vec<Vec<usize>>,
    /// Buffer and shape of each output.
    pub outputs: Vec<(usize, Vec<usize>)>,
    /// The constants of its slot table, in slot order, as indices into [`Meta::consts`].
    pub consts: Vec<usize>,
    /// Index of its first kernel in the model's kernel table.
    pub first_kernel: usize,
    /// Its steps and memory.
    pub run: RunPlan,
}

/// A tensor stored in the description, for runs without inputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleTensor {
    /// Its element type.
    pub dtype: DType,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, widened.
    pub values: Vec<f64>,
}

/// Why an artifact could not open or run. The C API turns these into return codes.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The description is unreadable or from another layout version.
    #[error("the model description is invalid: {0}")]
    Meta(String),
    /// The weights side file is missing, truncated, or belongs to another artifact.
    #[error("weights file {path}: {message}")]
    Weights {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The inputs do not fit the model or the shapes it was built for.
    #[error("{0}")]
    Input(String),
    /// A runtime call failed.
    #[error("{0}")]
    Run(String),
}

impl ArtifactError {
    /// The C API's return code: 1 input, 2 weights, 3 description, 4 run.
    pub fn code(&self) -> i32 {
        match self {
            ArtifactError::Input(_) => 1,
            ArtifactError::Weights { .. } => 2,
            ArtifactError::Meta(_) => 3,
            ArtifactError::Run(_) => 4,
        }
    }
}

/// The weights: in the object, or a mapped side file.
enum Weights {
    Embedded(&'static [u8]),
    Mapped(memmap2::Mmap),
}

impl Weights {
    fn bytes(&self) -> &[u8] {
        match self {
            Weights::Embedded(b) => b,
            Weights::Mapped(m) => &m[WEIGHTS_HEADER..],
        }
    }
}

/// An opened model: its description, weights, thread pool, pre-packed weight matrices
/// and a reusable arena. One run at a time (`&mut self`); open several for parallel runs.
pub struct Session {
    meta: Meta,
    weights: Weights,
    kernels: &'static [Option<KernelFn>],
    op_call: Option<OpCallFn>,
    pool: ThreadPool,
    /// Where each constant of [`Meta::consts`] is read from.
    places: Vec<Place>,
    /// The constants stored as nibbles, one value per byte.
    unpacked: Aligned<u8>,
    /// Per spec, per step: the pre-packed constant weight of a call (filled on first use).
    packed: Vec<Option<Vec<Option<Arc<Packed>>>>>,
    arena: Arena,
    max_memory: MemoryLimit,
}

impl Session {
    /// Opens the model `desc` points at, with the weights from the object or, when they are
    /// not embedded, from `weights_path`, and `threads` workers (0: every core).
    ///
    /// # Safety
    /// `desc` must be a descriptor `kiln build` wrote, linked with its object.
    pub unsafe fn open(
        desc: &'static ModelDesc,
        weights_path: Option<&Path>,
        threads: usize,
    ) -> Result<Session, ArtifactError> {
        // SAFETY: the descriptor's meta is a length-prefixed blob (the contract above).
        let meta = unsafe { read_meta(desc.meta) }?;
        let weights = if desc.weights.is_null() {
            map_weights(&meta, weights_path)?
        } else {
            // SAFETY: embedded weights are `weights_len` bytes.
            Weights::Embedded(unsafe {
                std::slice::from_raw_parts(desc.weights, meta.weights_len as usize)
            })
        };
        let count = meta.specs.iter().map(|s| s.run.steps.len()).sum::<usize>();
        // SAFETY: the kernel table has an entry per step of every spec.
        let kernels = unsafe { std::slice::from_raw_parts(desc.kernels, count) };
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let (places, unpacked) = unpack_consts(&meta.consts, weights.bytes())?;
        Ok(Session {
            places,
            unpacked,
            packed: vec![None; meta.specs.len()],
            meta,
            weights,
            kernels,
            op_call: desc.op_call,
            pool: ThreadPool::new(threads),
            arena: Arena::default(),
            max_memory: MemoryLimit::default(),
        })
    }

    /// Sets the most bytes the arena may take (default: [`MemoryLimit::default`], from the
    /// machine's memory); a run whose arena would exceed it fails before allocating.
    pub fn set_max_memory(&mut self, limit: MemoryLimit) {
        self.max_memory = limit;
    }

    /// The model's description.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The sample inputs stored in the artifact.
    pub fn sample_inputs(&self) -> Vec<Tensor> {
        let sample = self.meta.sample_inputs.iter();
        sample
            .map(|s| {
                let t = Tensor::from_vec(s.values.clone(), &s.shape);
                t.expect("stored samples match their shape").cast(s.dtype)
            })
            .collect()
    }

    /// Runs the model on `inputs` (graph-input order).
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ArtifactError> {
        let s = self.spec_for(inputs)?;
        let inputs: Vec<Tensor> = inputs.iter().map(exec::contiguous).collect();
        self.prepack(s);
        let spec = &self.meta.specs[s];
        let arena_bytes = spec.run.arena_bytes;
        kiln_ir::check_bytes(
            || "the arena".to_string(),
            Some(arena_bytes as u128),
            self.max_memory,
        )
        .map_err(|e| ArtifactError::Run(e.to_string()))?;
        (self.arena.reserve(arena_bytes)).map_err(|e| ArtifactError::Run(e.to_string()))?;
        let mut ptrs: Vec<*mut u8> = vec![self.arena.ptr()];
        ptrs.extend(
            inputs
                .iter()
                .map(|t| kiln_ir::dispatch!(t, a => a.as_ptr() as *mut u8)),
        );
        ptrs.extend(spec.consts.iter().map(|&c| self.const_ptr(c) as *mut u8));
        let ptrs = spec.run.table(&ptrs);
        let kernels = &self.kernels[spec.first_kernel..spec.first_kernel + spec.run.steps.len()];
        let packed = self.packed[s].as_ref().expect("prepacked above");
        let packed: Vec<Option<&Packed>> = packed.iter().map(|p| p.as_deref()).collect();
        // SAFETY: the slot table holds the arena (reserved above), inputs of the shapes this
        // spec was compiled for, and the weights the constants were placed in.
        let code = Code {
            kernels,
            packed: &packed,
            op_call: self.op_call,
        };
        unsafe { exec::run(&spec.run, &code, &ptrs, &self.pool, None) }
            .map_err(|e| ArtifactError::Run(e.to_string()))?;
        let mem = exec::SlotMemory {
            ptrs: &ptrs,
            slots: &spec.run.slots,
        };
        let outputs = spec.outputs.iter().zip(&self.meta.outputs);
        outputs
            .map(|((buf, shape), out)| {
                // SAFETY: the run wrote every output buffer, sized by the plan.
                unsafe { mem.read(*buf, out.dtype, shape) }
                    .map_err(|e| ArtifactError::Run(e.to_string()))
            })
            .collect()
    }

    /// The spec whose input shapes `inputs` have, after checking count and dtypes.
    fn spec_for(&self, inputs: &[Tensor]) -> Result<usize, ArtifactError> {
        let want = &self.meta.inputs;
        if inputs.len() != want.len() {
            return Err(ArtifactError::Input(format!(
                "expected {} inputs, got {}",
                want.len(),
                inputs.len()
            )));
        }
        for (t, w) in inputs.iter().zip(want) {
            if t.dtype() != w.dtype {
                return Err(ArtifactError::Input(format!(
                    "input `{}`: expected {}, got {}",
                    w.name,
                    w.dtype,
                    t.dtype()
                )));
            }
        }
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        self.spec_for_shapes(&shapes)
    }

    /// The spec compiled for these input shapes, or why there is none.
    pub fn spec_for_shapes(&self, shapes: &[&[usize]]) -> Result<usize, ArtifactError> {
        let mut specs = self.meta.specs.iter();
        specs
            .position(|s| {
                s.input_shapes
                    .iter()
                    .map(Vec::as_slice)
                    .eq(shapes.iter().copied())
            })
            .ok_or_else(|| ArtifactError::Input(self.unsupported_shapes(shapes)))
    }

    /// Why no spec runs `shapes`: the first input whose shape does not fit its declared
    /// dims and their ranges.
    fn unsupported_shapes(&self, shapes: &[&[usize]]) -> String {
        let ranges: Vec<String> = (self.meta.dims.iter())
            .map(|d| format!("{} in {}..={}", d.name, d.min, d.max))
            .collect();
        let declared = (self.meta.inputs.iter().zip(shapes))
            .map(|(w, s)| format!("`{}` {:?} (declared [{}])", w.name, s, w.dims.join(", ")));
        format!(
            "no compiled program for input shapes {}; this artifact was built for {}",
            declared.collect::<Vec<_>>().join(", "),
            if ranges.is_empty() {
                "fixed shapes".to_string()
            } else {
                ranges.join(", ")
            }
        )
    }

    /// The first byte of constant `c` (an index the description's specs hold).
    fn const_ptr(&self, c: usize) -> *const u8 {
        match self.places[c] {
            Place::Weights(off) => self.weights.bytes()[off..].as_ptr(),
            Place::Unpacked(off) => self.unpacked[off..].as_ptr(),
        }
    }

    /// Packs the constant weight of each call of spec `s`, once per session.
    fn prepack(&mut self, s: usize) {
        if self.packed[s].is_some() {
            return;
        }
        let spec = &self.meta.specs[s];
        let inputs = self.meta.inputs.len() as u32;
        let constant = |buf: BufId| {
            let (slot, off) = *spec.run.slots.get(buf)?;
            let c = *spec.consts.get(slot.checked_sub(1 + inputs)? as usize)?;
            Some(self.const_ptr(c).wrapping_add(off))
        };
        let packed = spec
            .run
            .steps
            .iter()
            .map(|step| {
                let exec::Step::Call(call) = step else {
                    return None;
                };
                // SAFETY: each constant holds what the schedule sized for the call.
                unsafe { crate::prepack(call, &constant) }.map(Arc::new)
            })
            .collect();
        self.packed[s] = Some(packed);
    }
}

/// Where a constant is read from: a byte offset into the weights, or into the buffer of
/// unpacked constants.
#[derive(Clone, Copy, Debug)]
enum Place {
    Weights(usize),
    Unpacked(usize),
}

/// Checks that every constant lies within the weights, and unpacks those stored as nibbles
/// into one buffer, each from a cache line.
fn unpack_consts(
    consts: &[Const],
    weights: &[u8],
) -> Result<(Vec<Place>, Aligned<u8>), ArtifactError> {
    let stored = |c: &Const| {
        let start = usize::try_from(c.offset).ok()?;
        let end = start.checked_add(usize::try_from(c.stored_len()).ok()?)?;
        weights.get(start..end)
    };
    let mut places = Vec::with_capacity(consts.len());
    let mut unpacked_len = 0usize;
    for (i, c) in consts.iter().enumerate() {
        let bytes = stored(c)
            .ok_or_else(|| ArtifactError::Meta(format!("constant {i} lies outside the weights")))?;
        places.push(match c.nibbles {
            None => Place::Weights(c.offset as usize),
            Some(_) => {
                let at = unpacked_len;
                unpacked_len = (at + 2 * bytes.len()).next_multiple_of(64);
                Place::Unpacked(at)
            }
        });
    }
    let mut unpacked = Aligned::zeroed(unpacked_len);
    for (c, place) in consts.iter().zip(&places) {
        if let (Some(nibbles), Place::Unpacked(at)) = (c.nibbles, *place) {
            let bytes = stored(c).expect("checked above");
            nibbles.unpack(bytes, &mut unpacked[at..at + c.len as usize]);
        }
    }
    Ok((places, unpacked))
}

/// Parses the length-prefixed JSON description at `ptr`.
///
/// # Safety
/// `ptr` must point at 8 bytes of length followed by that many bytes.
unsafe fn read_meta(ptr: *const u8) -> Result<Meta, ArtifactError> {
    let bad = |m: String| ArtifactError::Meta(m);
    // SAFETY: the contract above.
    let len = u64::from_le_bytes(unsafe { *(ptr as *const [u8; 8]) }) as usize;
    // SAFETY: as above.
    let json = unsafe { std::slice::from_raw_parts(ptr.add(8), len) };
    let meta: Meta = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    if meta.format != FORMAT {
        return Err(bad(format!(
            "layout version {} (this runtime reads {FORMAT})",
            meta.format
        )));
    }
    Ok(meta)
}

/// Maps the weights side file and checks that it is whole and belongs to this artifact.
fn map_weights(meta: &Meta, path: Option<&Path>) -> Result<Weights, ArtifactError> {
    let path = path.ok_or_else(|| ArtifactError::Weights {
        path: String::new(),
        message: "this artifact keeps its weights in a side file; give its path".into(),
    })?;
    let err = |message: String| ArtifactError::Weights {
        path: path.display().to_string(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    // SAFETY: the file is opened read-only; the map is only read, and its length checked.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| err(e.to_string()))?;
    let want = WEIGHTS_HEADER as u64 + meta.weights_len;
    if (map.len() as u64) < want {
        return Err(err(format!(
            "truncated: {} bytes, expected {want}",
            map.len()
        )));
    }
    let id = u64::from_le_bytes(map[8..16].try_into().expect("8 bytes"));
    if &map[..8] != WEIGHTS_MAGIC || id != meta.id {
        return Err(err("not the weights of this artifact".into()));
    }
    Ok(Weights::Mapped(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constant(offset: u64, len: u64, nibbles: Option<Nibbles>) -> Const {
        Const {
            offset,
            len,
            nibbles,
        }
    }

    #[test]
    fn packed_constants_unpack_beside_whole_ones() {
        // A whole constant of two bytes, then three signed nibbles at 64.
        let mut weights = vec![9u8, 8];
        weights.resize(64, 0);
        weights.extend(Nibbles::Signed.pack(&[(-8i8) as u8, 7, 1]));
        let consts = [constant(0, 2, None), constant(64, 3, Some(Nibbles::Signed))];
        let (places, unpacked) = unpack_consts(&consts, &weights).unwrap();
        assert!(matches!(
            places[..],
            [Place::Weights(0), Place::Unpacked(0)]
        ));
        assert_eq!(unpacked.as_ptr() as usize % 64, 0);
        assert_eq!(unpacked[..3], [(-8i8) as u8, 7, 1]);
    }

    #[test]
    fn a_constant_past_the_weights_is_an_error() {
        let weights = [0u8; 64];
        for c in [
            constant(60, 5, None),
            constant(60, 9, Some(Nibbles::Unsigned)),
            constant(u64::MAX, 1, None),
        ] {
            let err = unpack_consts(&[c], &weights).map(drop).unwrap_err();
            assert!(err.to_string().contains("outside the weights"), "{err}");
        }
        assert!(unpack_consts(&[constant(60, 8, Some(Nibbles::Unsigned))], &weights).is_ok());
    }
}
