//! Running an ahead-of-time artifact: a model `kiln build` compiled into an object file.
//!
//! The object holds the kernels, a function table, the weights (or not: `--weights file`)
//! and a JSON description ([`Meta`]); one exported symbol, the [`ModelDesc`], points at
//! them. A [`Session`] opens the description, maps the weights, and runs the model on
//! input tensors through the same executor as the JIT ([`crate::exec::run`]).
//!
//! The artifact holds one program for every shape its declared dim ranges allow
//! ([`Meta::program`], kernels that read the symbols' values at run time), as the JIT
//! does: a run binds the symbols from its input shapes, checks them against the ranges,
//! and lays the program out for them ([`Symbolic::bind`]), keeping the last few layouts.

use crate::aligned::Aligned;
use crate::call::BufId;
use crate::exec::{self, Arena, Code, KernelFn};
use crate::kv::{KvBuffer, Placement};
use crate::layout::{Bound, Recent, Symbolic};
use crate::nibbles::Nibbles;
use crate::pool::ThreadPool;
use crate::{OpCallFn, Packed};
use kiln_ir::{Bindings, DType, Dim, MemoryLimit, Tensor};
use kiln_kernel::cache::KvCache;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// The version of the artifact layout ([`ModelDesc`] and [`Meta`]); a runtime refuses
/// other versions.
pub const FORMAT: u32 = 4;

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
    /// The kernels of the program, by step (null entries for runtime calls).
    pub kernels: *const Option<KernelFn>,
    /// [`crate::kiln_rt_op_call`] when the program has op calls, else null (so that
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
    /// The program, for every binding of the dims within their ranges.
    pub program: Symbolic,
    /// The constants of its slot table, in slot order, as indices into [`Meta::consts`].
    pub program_consts: Vec<usize>,
    /// Inputs to run when none are given (generated at build time, every dim at its
    /// smallest value).
    pub sample_inputs: Vec<SampleTensor>,
    /// A decoder's `tokenizer.json`, when one was given at build time.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// The KV caches the program appends in place ([`Session::run_cached`]).
    #[serde(default)]
    pub caches: Vec<KvCache>,
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
    /// Per step: the pre-packed constant weight of a call (filled on first use).
    packed: Option<Vec<Option<Arc<Packed>>>>,
    /// The most recent input shapes' layouts, at most [`LAYOUTS`].
    layouts: Recent<Vec<Vec<usize>>, Arc<Bound>>,
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
        let count = meta.program.steps.len();
        // SAFETY: the kernel table has an entry per step of the program.
        let kernels = unsafe { std::slice::from_raw_parts(desc.kernels, count) };
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let (places, unpacked) = unpack_consts(&meta.consts, weights.bytes())?;
        Ok(Session {
            places,
            unpacked,
            packed: None,
            layouts: Recent::new(LAYOUTS),
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

    /// Runs the model on `inputs` (graph-input order). A model with KV caches copies each
    /// past into a cache buffer first and each present out (see [`Session::run_cached`],
    /// which does not), so the C API and every other caller run it unchanged.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ArtifactError> {
        let dtypes: Vec<DType> = inputs.iter().map(Tensor::dtype).collect();
        self.check_inputs(&dtypes)?;
        if !self.meta.caches.is_empty() {
            return self.run_through_caches(inputs);
        }
        let shapes: Vec<Vec<usize>> = inputs.iter().map(|t| t.shape().to_vec()).collect();
        let bound = self.cached_layout(shapes, None)?;
        let inputs: Vec<Tensor> = inputs.iter().map(exec::contiguous).collect();
        let ptrs: Vec<*mut u8> = (inputs.iter())
            .map(|t| kiln_ir::dispatch!(t, a => a.as_ptr() as *mut u8))
            .collect();
        let outputs = self.execute(&bound, &ptrs)?;
        Ok(outputs.into_iter().flatten().collect())
    }

    /// The KV caches the program appends in place: empty unless the model is a decoder
    /// whose caches the compiler took (`kiln_kernel::cache`).
    pub fn caches(&self) -> &[KvCache] {
        &self.meta.caches
    }

    /// Runs with the KV caches in `caches`, one per [`Session::caches`] and in that
    /// order, all of one capacity: `inputs` are the other graph inputs, in graph order.
    /// Each cache's new rows are written after its valid ones, in place, and its length
    /// grows by them; the outputs are the graph outputs other than the caches' presents,
    /// in graph order. A run whose new rows would pass the capacity is refused before
    /// anything runs. Without caches it is [`Session::run`].
    pub fn run_cached(
        &mut self,
        inputs: &[Tensor],
        caches: &mut [KvBuffer],
    ) -> Result<Vec<Tensor>, ArtifactError> {
        let cached = self.meta.caches.clone();
        let place = self.placement(&cached);
        let (shapes, capacity) = place.shapes(inputs, caches).map_err(ArtifactError::Input)?;
        let mut given = inputs.iter();
        let dtypes: Vec<DType> = (0..shapes.len())
            .map(|i| match cached.iter().any(|c| c.input == i) {
                true => DType::F32,
                false => given.next().expect("counted").dtype(),
            })
            .collect();
        self.check_inputs(&dtypes)?;
        // A program without caches has no capacity to bind.
        let capacity = (!cached.is_empty()).then_some(capacity);
        let bound = self.cached_layout(shapes, capacity)?;
        let inputs: Vec<Tensor> = inputs.iter().map(exec::contiguous).collect();
        let ptrs = place.pointers(&inputs, caches);
        let outputs = self.execute(&bound, &ptrs)?;
        place.grow(caches, |i| &bound.outputs[i].1);
        Ok(place.others(outputs).into_iter().flatten().collect())
    }

    /// Where the caches sit among the graph's inputs and outputs.
    pub fn cache_placement(&self) -> Placement<'_> {
        self.placement(&self.meta.caches)
    }

    /// Where `caches` sit among the graph's inputs and outputs.
    fn placement<'c>(&self, caches: &'c [KvCache]) -> Placement<'c> {
        Placement {
            caches,
            inputs: self.meta.inputs.len(),
            outputs: self.meta.outputs.len(),
        }
    }

    /// [`Session::run`] of a model with caches: each past copied into a cache buffer just
    /// large enough, each present read back out of it.
    fn run_through_caches(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ArtifactError> {
        let shapes: Vec<&[usize]> = inputs.iter().map(Tensor::shape).collect();
        let bindings = self.bind_shapes(&shapes)?;
        let rows = |c: &KvCache| {
            let d = self.meta.outputs[c.output]
                .dims
                .get(kiln_kernel::cache::SEQ_AXIS)?;
            let n = d.parse::<Dim>().ok()?.eval(&bindings)?;
            usize::try_from(n).ok()
        };
        let capacity = self.meta.caches.iter().filter_map(rows).max().unwrap_or(0);
        let cached = self.meta.caches.clone();
        let place = self.placement(&cached);
        place.run_through(inputs, capacity, ArtifactError::Input, |others, buffers| {
            self.run_cached(others, buffers)
        })
    }

    /// Runs `bound` on the inputs at `inputs` (one pointer per graph input, of the shapes
    /// it was bound for) and reads every output back, but a cache's present, which is its
    /// buffer (`None`).
    fn execute(
        &mut self,
        bound: &Bound,
        inputs: &[*mut u8],
    ) -> Result<Vec<Option<Tensor>>, ArtifactError> {
        self.prepack();
        let arena_bytes = bound.run.arena_bytes;
        kiln_ir::check_bytes(
            || "the arena".to_string(),
            Some(arena_bytes as u128),
            self.max_memory,
        )
        .map_err(|e| ArtifactError::Run(e.to_string()))?;
        (self.arena.reserve(arena_bytes)).map_err(|e| ArtifactError::Run(e.to_string()))?;
        let mut ptrs: Vec<*mut u8> = vec![self.arena.ptr()];
        ptrs.extend_from_slice(inputs);
        let consts = self.meta.program_consts.iter();
        ptrs.extend(consts.map(|&c| self.const_ptr(c) as *mut u8));
        let ptrs = bound.run.table(&ptrs);
        let packed = self.packed.as_ref().expect("prepacked above");
        let packed: Vec<Option<&Packed>> = packed.iter().map(|p| p.as_deref()).collect();
        // SAFETY: the slot table holds the arena (reserved above), inputs of the shapes this
        // layout was bound for, and the weights the constants were placed in.
        let code = Code {
            kernels: self.kernels,
            packed: &packed,
            op_call: self.op_call,
        };
        unsafe { exec::run(&bound.run, &code, &ptrs, &self.pool, None) }
            .map_err(|e| ArtifactError::Run(e.to_string()))?;
        let mem = exec::SlotMemory {
            ptrs: &ptrs,
            slots: &bound.run.slots,
        };
        let place = self.cache_placement();
        let outputs = bound.outputs.iter().zip(&self.meta.outputs).enumerate();
        outputs
            .map(|(i, ((buf, shape), out))| match place.is_present(i) {
                true => Ok(None),
                // SAFETY: the run wrote every output buffer, sized by the plan.
                false => unsafe { mem.read(*buf, out.dtype, shape) }
                    .map(Some)
                    .map_err(|e| ArtifactError::Run(e.to_string())),
            })
            .collect()
    }

    /// The layout for `shapes` (every graph input's) and the caches' `capacity`, from
    /// the recent ones or bound now.
    fn cached_layout(
        &mut self,
        shapes: Vec<Vec<usize>>,
        capacity: Option<usize>,
    ) -> Result<Arc<Bound>, ArtifactError> {
        let mut key = shapes;
        key.extend(capacity.map(|c| vec![c]));
        if let Some(bound) = self.layouts.get(&key) {
            return Ok(bound);
        }
        let views: Vec<&[usize]> = (key.iter().take(self.meta.inputs.len()))
            .map(Vec::as_slice)
            .collect();
        let mut bindings = self.bind_shapes(&views)?;
        if let Some(c) = capacity {
            let c = i64::try_from(c)
                .map_err(|_| ArtifactError::Input("the KV cache capacity".into()))?;
            bindings.insert(kiln_kernel::cache::CAPACITY.to_string(), c);
        }
        let bound =
            (self.meta.program.bind(&bindings)).map_err(|e| ArtifactError::Input(e.to_string()))?;
        let bound = Arc::new(bound);
        self.layouts.insert(key, bound.clone());
        Ok(bound)
    }

    /// Checks the inputs' count and dtypes.
    fn check_inputs(&self, dtypes: &[DType]) -> Result<(), ArtifactError> {
        let want = &self.meta.inputs;
        if dtypes.len() != want.len() {
            return Err(ArtifactError::Input(format!(
                "expected {} inputs, got {}",
                want.len(),
                dtypes.len()
            )));
        }
        for (&t, w) in dtypes.iter().zip(want) {
            if t != w.dtype {
                return Err(ArtifactError::Input(format!(
                    "input `{}`: expected {}, got {t}",
                    w.name, w.dtype,
                )));
            }
        }
        Ok(())
    }

    /// The program laid out for these input shapes, or why it does not run them: an
    /// input whose shape does not fit its declared dims, or a dim outside its range.
    pub fn layout_for_shapes(&self, shapes: &[&[usize]]) -> Result<Bound, ArtifactError> {
        let bindings = self.bind_shapes(shapes)?;
        (self.meta.program.bind(&bindings)).map_err(|e| ArtifactError::Input(e.to_string()))
    }

    /// The dims' values that `shapes` give, checked against the declared shapes and
    /// ranges.
    fn bind_shapes(&self, shapes: &[&[usize]]) -> Result<Bindings, ArtifactError> {
        let unfit = || ArtifactError::Input(self.unsupported_shapes(shapes));
        let want = &self.meta.inputs;
        if shapes.len() != want.len() {
            return Err(unfit());
        }
        let declared: Vec<Vec<Dim>> = (want.iter())
            .map(|w| w.dims.iter().map(|d| d.parse::<Dim>()).collect())
            .collect::<Result<_, _>>()
            .map_err(|e| ArtifactError::Meta(e.to_string()))?;
        let mut b = Bindings::new();
        for (dims, shape) in declared.iter().zip(shapes) {
            if dims.len() != shape.len() {
                return Err(unfit());
            }
            for (d, &n) in dims.iter().zip(shape.iter()) {
                if let Some(s) = d.as_sym() {
                    if *b.entry(s.to_string()).or_insert(n as i64) != n as i64 {
                        return Err(unfit());
                    }
                }
            }
        }
        let fits = declared.iter().zip(shapes).all(|(dims, shape)| {
            (dims.iter().zip(shape.iter())).all(|(d, &n)| d.eval(&b) == Some(n as i64))
        });
        let in_range = (self.meta.dims.iter())
            .all(|r| b.get(&r.name).is_some_and(|&v| r.min <= v && v <= r.max));
        if !fits || !in_range {
            return Err(unfit());
        }
        Ok(b)
    }

    /// Why the artifact does not run `shapes`: the inputs' shapes beside the declared dims
    /// and their ranges.
    fn unsupported_shapes(&self, shapes: &[&[usize]]) -> String {
        let ranges: Vec<String> = (self.meta.dims.iter())
            .map(|d| format!("{} in {}..={}", d.name, d.min, d.max))
            .collect();
        let declared = (self.meta.inputs.iter().zip(shapes))
            .map(|(w, s)| format!("`{}` {:?} (declared [{}])", w.name, s, w.dims.join(", ")));
        format!(
            "the program does not run input shapes {}; this artifact was built for {}",
            declared.collect::<Vec<_>>().join(", "),
            if ranges.is_empty() {
                "fixed shapes".to_string()
            } else {
                ranges.join(", ")
            }
        )
    }

    /// The first byte of constant `c` (an index into the description's constants).
    fn const_ptr(&self, c: usize) -> *const u8 {
        match self.places[c] {
            Place::Weights(off) => self.weights.bytes()[off..].as_ptr(),
            Place::Unpacked(off) => self.unpacked[off..].as_ptr(),
        }
    }

    /// Packs the constant weight of each call whose weight has constant sizes, once per
    /// session (the packing holds at every shape; each call checks it fits). The first
    /// run does it when it has not been done; a caller that times runs does it first.
    pub fn prepack(&mut self) {
        if self.packed.is_some() {
            return;
        }
        let program = &self.meta.program;
        let inputs = self.meta.inputs.len() as u32;
        let constant = |buf: BufId| {
            let (slot, off) = *program.slots.get(buf)?;
            let c = *self
                .meta
                .program_consts
                .get(slot.checked_sub(1 + inputs)? as usize)?;
            Some(self.const_ptr(c).wrapping_add(off))
        };
        let packed = (program.steps.iter())
            .map(|step| {
                let crate::layout::SymbolicStep::Call(call) = step else {
                    return None;
                };
                let call = crate::layout::constant_weight_call(call, &program.symbols)?;
                // SAFETY: each constant holds what the schedule sized for the call.
                unsafe { crate::prepack(&call, &constant) }.map(Arc::new)
            })
            .collect();
        self.packed = Some(packed);
    }
}

/// How many input shapes' layouts a session keeps.
pub const LAYOUTS: usize = 8;

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
