//! Ahead-of-time compilation (`kiln build`, and the build-step API): a model becomes an
//! object file of native kernels plus a description the runtime library (`kiln-rt`)
//! reads, then an executable, a static library or a C header around it.
//!
//! The pipeline is the JIT's: the same optimization passes, scheduling, loop fusion,
//! memory plan and code generator ([`kiln_cpu::lay_out`]), so an artifact computes the
//! same bits as `kiln run` at the same thread count. One program serves every binding of
//! the symbolic dims within their ranges (`--dim seq=1..512`): its kernels read the dims'
//! values at run time, and the runtime lays it out per shape. A dim fixed to one value
//! (`--dim batch=1`) is substituted before scheduling, so its sizes constant-fold. A dim
//! given no `--dim` ranges over `1..=`[`DEFAULT_DIM_MAX`].
//!
//! ```no_run
//! // build.rs of a crate that depends on kiln-rt (and has kiln as a build-dependency):
//! let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
//! kiln::build::Model::new("model.onnx")
//!     .dim("batch", 1, 4)
//!     .dim("seq", 1, 32)
//!     .compile_to(&out)?;
//! // main.rs: include!(concat!(env!("OUT_DIR"), "/model.rs"));
//! # Ok::<(), kiln::build::BuildError>(())
//! ```

mod header;
mod link;
mod rust;
mod write;

use kiln_cpu::lower::object::{ObjectBuilder, Target, TargetError, Visibility};
use kiln_ir::{Bindings, Dim, Graph, MemoryLimit, Tensor};
use kiln_kernel::call::Call;
use kiln_kernel::kernel::BufferKind;
use kiln_rt::artifact::{Const, DimRange, Meta, SampleTensor, TensorSpec, FORMAT};
use kiln_rt::layout::SymbolicStep;
use kiln_rt::nibbles::Nibbles;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The largest value of a symbolic dim that no `--dim` bounds.
pub const DEFAULT_DIM_MAX: i64 = 4096;

/// What `kiln build` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// A standalone executable (object + runtime, linked by `cc`).
    Exe,
    /// A relocatable object; link it with `libkiln_runtime.a`.
    Obj,
    /// A static library: the object and the runtime in one archive.
    Lib,
    /// A C header declaring the model's functions, shapes and workspace sizes.
    Header,
    /// A Rust module with a typed wrapper (link the object or library too).
    Rust,
}

/// Where the weights go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightsMode {
    /// In the artifact's read-only data.
    #[default]
    Embed,
    /// In a side file next to the artifact (`PATH.weights`), mapped at start-up.
    File,
}

/// Why a build failed.
#[derive(Debug, Error)]
pub enum BuildError {
    /// Loading, optimizing or scheduling the model failed.
    #[error(transparent)]
    Model(#[from] crate::Error),
    /// The target triple is not supported.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A symbolic dim has no declared size, or the ranges are too large.
    #[error("{0}")]
    Dims(String),
    /// The model cannot be compiled ahead of time.
    #[error("{0}")]
    Unsupported(String),
    /// Writing or linking the artifact failed.
    #[error("{0}")]
    Output(String),
    /// The tokenizer to embed could not be read.
    #[error("{0}")]
    Tokenizer(String),
}

/// A model to compile ahead of time, with its options (a builder).
#[derive(Clone, Debug)]
pub struct Model {
    path: PathBuf,
    name: Option<String>,
    dims: Vec<(String, i64, i64)>,
    target: Option<String>,
    weights: WeightsMode,
    runtime: Option<PathBuf>,
    max_memory: MemoryLimit,
    quantize: Option<kiln_passes::Quantize>,
    tokenizer: Option<PathBuf>,
}

/// A compiled artifact, before it is written.
pub struct Artifact {
    /// The C symbol prefix.
    pub name: String,
    /// The description the runtime reads.
    pub meta: Meta,
    /// The relocatable object.
    pub object: Vec<u8>,
    /// The weights (in the object too, unless they go to a side file).
    pub weights: Vec<u8>,
    /// Where they go.
    pub mode: WeightsMode,
    /// What `kiln build` reports: the bound chosen for each dim no `--dim` declared, and
    /// the KV caches appended in place.
    pub report: Vec<String>,
}

impl Model {
    /// A model file (`.onnx` or `.kir`) with default options: every dim in `1..=`
    /// [`DEFAULT_DIM_MAX`], embedded
    /// weights, the host as target, the file stem as name.
    pub fn new(path: impl AsRef<Path>) -> Model {
        Model {
            path: path.as_ref().to_path_buf(),
            name: None,
            dims: Vec::new(),
            target: None,
            weights: WeightsMode::Embed,
            runtime: None,
            max_memory: MemoryLimit::default(),
            quantize: None,
            tokenizer: None,
        }
    }

    /// Quantizes the linear layers with `scheme` after optimizing (default: f32 as written).
    pub fn quantize(self, scheme: kiln_passes::Scheme) -> Model {
        self.quantize_with(kiln_passes::Quantize::new(scheme))
    }

    /// Quantizes with a configured pass: layers skipped, or given other schemes (the plan
    /// [`crate::Model::quantize_to_accuracy`] finds).
    pub fn quantize_with(mut self, pass: kiln_passes::Quantize) -> Model {
        self.quantize = Some(pass);
        self
    }

    /// The most bytes any value, constant or arena of a specialization may take (default:
    /// [`MemoryLimit::default`], from the machine's memory); a specialization over it fails
    /// to build, naming the node.
    pub fn max_memory(mut self, limit: MemoryLimit) -> Model {
        self.max_memory = limit;
        self
    }

    /// The runtime library (`libkiln_runtime.a`) that executables and static libraries link;
    /// by default `$KILN_RT_LIB`, else the one next to the running executable.
    pub fn runtime_library(mut self, path: impl AsRef<Path>) -> Model {
        self.runtime = Some(path.as_ref().to_path_buf());
        self
    }

    /// The C symbol prefix (`NAME_run`); sanitized to an identifier.
    pub fn name(mut self, name: &str) -> Model {
        self.name = Some(name.to_string());
        self
    }

    /// Declares symbolic dim `name` to range over `min..=max` (one value: the sizes it
    /// drives constant-fold). A dim not declared ranges over `1..=`[`DEFAULT_DIM_MAX`]
    /// (`0..=` for the past length of a decoder, whose prompt runs with an empty past).
    pub fn dim(mut self, name: &str, min: i64, max: i64) -> Model {
        self.dims.push((name.to_string(), min, max));
        self
    }

    /// Compiles for `triple` (`aarch64-unknown-linux-gnu`) instead of the host.
    pub fn target(mut self, triple: &str) -> Model {
        self.target = Some(triple.to_string());
        self
    }

    /// Embeds a Hugging Face `tokenizer.json` for a decoder: its executable then takes
    /// `--prompt TEXT` and prints text.
    pub fn tokenizer(mut self, path: impl AsRef<Path>) -> Model {
        self.tokenizer = Some(path.as_ref().to_path_buf());
        self
    }

    /// Where the weights go.
    pub fn weights(mut self, mode: WeightsMode) -> Model {
        self.weights = mode;
        self
    }

    /// Compiles and writes `emit` to `out` (atomically: a failed build leaves no partial
    /// file and keeps any file already there). Returns the files written.
    pub fn emit(&self, emit: Emit, out: &Path) -> Result<Vec<PathBuf>, BuildError> {
        self.emit_reporting(emit, out, &mut |_| {})
    }

    /// [`Model::emit`], calling `report(line)` with each line a build reports (the bound
    /// chosen for every dim no `--dim` declared, the KV caches appended in place).
    pub fn emit_reporting(
        &self,
        emit: Emit,
        out: &Path,
        report: &mut dyn FnMut(&str),
    ) -> Result<Vec<PathBuf>, BuildError> {
        let artifact = self.compile()?;
        for line in &artifact.report {
            report(line);
        }
        link::emit(
            &artifact,
            emit,
            out,
            self.target.is_some(),
            self.runtime.as_deref(),
        )
    }

    /// For a Cargo build script: compiles the model into `out_dir` as a static library
    /// (`lib{NAME}_kiln.a`, linked into the crate) and a Rust module (`{NAME}.rs`, to
    /// `include!`), plus the weights file when they are not embedded, and prints the
    /// `cargo:` lines that link the library and rebuild when the model changes. The crate
    /// depends on `kiln-rt`, which the module uses and the object links against.
    pub fn compile_to(&self, out_dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
        let artifact = self.compile()?;
        let lib = out_dir.join(format!("lib{}_kiln.a", artifact.name));
        let mut written = link::emit(
            &artifact,
            Emit::Obj,
            &out_dir.join(format!("{}.o", artifact.name)),
            false,
            None,
        )?;
        link::object_archive(&written[0], &lib)?;
        let module = out_dir.join(format!("{}.rs", artifact.name));
        write::atomically(&module, rust::text(&artifact).as_bytes())?;
        written.extend([lib, module]);
        println!("cargo:rustc-link-search=native={}", out_dir.display());
        println!("cargo:rustc-link-lib=static={}_kiln", artifact.name);
        for input in self.inputs() {
            println!("cargo:rerun-if-changed={}", input.display());
        }
        Ok(written)
    }

    /// The files the build reads: the model and its external data files beside it.
    fn inputs(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        let data = self.path.with_extension("onnx.data");
        if data.is_file() {
            files.push(data);
        }
        files
    }

    /// Compiles the model into an [`Artifact`]: one program for every binding of its dims
    /// within their ranges.
    pub fn compile(&self) -> Result<Artifact, BuildError> {
        let mut model = crate::Model::load(&self.path)?.optimize()?;
        if let Some(pass) = &self.quantize {
            model = model.into_quantized_with(pass.clone())?.0;
        }
        let g = model.graph();
        if kiln_cpu::needs_stages(g) {
            return Err(BuildError::Unsupported(format!(
                "{}: ops with data-dependent output sizes (NonZero) cannot be compiled ahead \
                 of time yet; use `kiln run`",
                self.path.display()
            )));
        }
        let ranges = self.ranges(g)?;
        let target = match &self.target {
            Some(t) => Target::from_triple(t)?,
            None => Target::host()?,
        };
        let name = c_identifier(self.name.as_deref().unwrap_or_else(|| {
            (self.path.file_stem()).map_or("model", |s| s.to_str().unwrap_or("model"))
        }));
        let mut obj = ObjectBuilder::new(&target, &name)?;
        let mut weights = WeightsBlob::default();
        let Compiled {
            program,
            consts: program_consts,
            kernels,
            caches,
        } = self.compile_program(g, &ranges, &mut obj, &mut weights, &name)?;
        let smallest: Vec<i64> = ranges.iter().map(|r| r.min).collect();
        let meta = Meta {
            format: FORMAT,
            kiln_version: env!("CARGO_PKG_VERSION").to_string(),
            name: name.clone(),
            id: fnv1a(&weights.bytes),
            weights_len: weights.bytes.len() as u64,
            inputs: tensor_specs(g, g.inputs.iter()),
            outputs: tensor_specs(g, g.outputs.iter()),
            dims: ranges.clone(),
            consts: weights.index.clone(),
            sample_inputs: samples(g, &ranges, &smallest, self.max_memory)?,
            program,
            program_consts,
            tokenizer: self.embedded_tokenizer(g)?,
            caches,
        };
        let object = finish_object(obj, &name, &meta, &weights.bytes, &kernels, self.weights)?;
        let rows = crate::decode::row_symbols(g);
        let mut report: Vec<String> = (ranges.iter())
            .filter(|r| !self.dims.iter().any(|d| d.0 == r.name))
            .map(|r| {
                let why = match model_bound(g, &r.name) {
                    _ if rows.iter().any(|(n, _)| *n == r.name) => {
                        "the rows the decoder's cache appends".to_string()
                    }
                    Some((_, why)) => why,
                    None => "the default bound".to_string(),
                };
                format!(
                    "dim {} in {}..={} (no --dim given; {why})",
                    r.name, r.min, r.max
                )
            })
            .collect();
        if let (Some(first), Some(last)) = (meta.caches.first(), meta.caches.last()) {
            let past = |c: &kiln_kernel::cache::KvCache| meta.inputs[c.input].name.as_str();
            let pasts = match meta.caches.len() {
                1 => past(first).to_string(),
                2 => format!("{}, {}", past(first), past(last)),
                _ => format!("{} … {}", past(first), past(last)),
            };
            report.push(format!(
                "{} KV caches appended in place ({pasts}): a step writes only its new rows",
                meta.caches.len(),
            ));
        }
        Ok(Artifact {
            name,
            meta,
            object,
            weights: weights.bytes,
            mode: self.weights,
            report,
        })
    }

    /// Lays out and compiles the one program into `obj`, with the dims that have a single
    /// value substituted.
    fn compile_program(
        &self,
        g: &Graph,
        ranges: &[DimRange],
        obj: &mut ObjectBuilder,
        weights: &mut WeightsBlob,
        name: &str,
    ) -> Result<Compiled, BuildError> {
        let fixed: Bindings = (ranges.iter())
            .filter(|r| r.min == r.max)
            .map(|r| (r.name.clone(), r.min))
            .collect();
        let compile = |e: kiln_cpu::CompileError| match e {
            kiln_cpu::CompileError::Schedule(
                ref s @ kiln_kernel::schedule::ScheduleError::NeedsDim { ref dim, .. },
            ) => BuildError::Unsupported(format!(
                "{s}; fix it with `--dim {dim}=N` (one value) to build this model"
            )),
            e => BuildError::Model(crate::Error::Compile(e)),
        };
        // A decoder's caches are appended in place; `Session::run` still takes and gives
        // every past and present as tensors, so the C API is unchanged.
        let caches = kiln_kernel::cache::find(g);
        let layout =
            kiln_cpu::lay_out_with(g, &fixed, self.max_memory, &caches).map_err(compile)?;
        let p = &layout.program;
        let exported = obj
            .add_program(p, &layout.slots, name)
            .map_err(|(k, e)| compile(kiln_cpu::lower_error(g, p, k, e)))?;
        let extents: Vec<Option<Dim>> = exported
            .iter()
            .map(|e| e.as_ref().map(|k| k.extent.clone()))
            .collect();
        let consts = (p.buffers.iter())
            .filter_map(|b| match &b.kind {
                BufferKind::Const(t) => Some(weights.add(t)),
                _ => None,
            })
            .collect();
        let program = kiln_cpu::symbolic(g, &layout, &extents);
        let symbols = exported.into_iter().map(|e| e.map(|k| k.symbol)).collect();
        Ok(Compiled {
            program,
            consts,
            kernels: symbols,
            caches,
        })
    }

    /// The declared range of every symbol of the graph's inputs.
    /// The tokenizer to embed, read and checked, for a decoder only.
    fn embedded_tokenizer(&self, g: &Graph) -> Result<Option<String>, BuildError> {
        let Some(path) = &self.tokenizer else {
            return Ok(None);
        };
        crate::decode::signature(g).map_err(|e| {
            BuildError::Unsupported(format!("a tokenizer is embedded in decoders only: {e}"))
        })?;
        kiln_rt::decode::load_tokenizer(path).map_err(BuildError::Tokenizer)?;
        let json = std::fs::read_to_string(path)
            .map_err(|e| BuildError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Some(json))
    }

    fn ranges(&self, g: &Graph) -> Result<Vec<DimRange>, BuildError> {
        let symbols = g.input_symbols();
        // A decoder's prompt runs with an empty past, so its past length starts at 0; a
        // head size its past leaves symbolic is the one its rows have.
        let past = crate::decode::signature(g).map_or(Vec::new(), |s| s.past_symbols());
        let rows = crate::decode::row_symbols(g);
        for (name, ..) in &self.dims {
            if !symbols.contains(name) {
                return Err(BuildError::Dims(format!(
                    "--dim {name}: the model has no symbolic dim `{name}` (it has: {})",
                    list_or_none(&symbols)
                )));
            }
        }
        let ranges: Vec<DimRange> = symbols
            .iter()
            .map(|s| {
                let fixed = rows.iter().find(|(n, _)| n == s).map(|&(_, v)| v);
                let (min, max) = match (self.dims.iter().rev().find(|d| &d.0 == s), fixed) {
                    (Some(&(_, min, max)), _) => (min, max),
                    (None, Some(v)) => (v, v),
                    (None, None) => (
                        if past.contains(s) { 0 } else { 1 },
                        model_bound(g, s).map_or(DEFAULT_DIM_MAX, |(n, _)| n),
                    ),
                };
                if min < 0 || min > max {
                    return Err(BuildError::Dims(format!(
                        "--dim {s}={min}..{max}: empty range"
                    )));
                }
                Ok(DimRange {
                    name: s.clone(),
                    min,
                    max,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ranges)
    }
}

/// The compiled program.
struct Compiled {
    /// Its description.
    program: kiln_rt::layout::Symbolic,
    /// Its constants, as indices into the weights.
    consts: Vec<usize>,
    /// Its kernel symbols (`None` for calls).
    kernels: Vec<Option<String>>,
    /// The KV caches it appends in place.
    caches: Vec<kiln_kernel::cache::KvCache>,
}

/// The largest value of `symbol` the model itself allows, below [`DEFAULT_DIM_MAX`], and
/// what sets it (a slice of a position table), from the graph's assumptions.
fn model_bound(g: &Graph, symbol: &str) -> Option<(i64, String)> {
    let a = kiln_ir::assumptions(g);
    let tightest = a
        .iter()
        .filter_map(|a| Some((a.bounds(symbol)?, a)))
        .min_by_key(|(n, _)| *n)?;
    let (n, a) = tightest;
    (n < DEFAULT_DIM_MAX).then(|| (n, a.to_string()))
}

/// Writes the description, weights, kernel table and descriptor into the object.
fn finish_object(
    mut obj: ObjectBuilder,
    name: &str,
    meta: &Meta,
    weights: &[u8],
    kernels: &[Option<String>],
    mode: WeightsMode,
) -> Result<Vec<u8>, BuildError> {
    let json = serde_json::to_vec(meta).map_err(|e| BuildError::Output(e.to_string()))?;
    let mut blob = (json.len() as u64).to_le_bytes().to_vec();
    blob.extend(json);
    let lower = |e: kiln_cpu::lower::LowerError| BuildError::Output(e.to_string());
    let (meta_sym, weights_sym, table) = (
        format!("{name}_meta"),
        format!("{name}_weights"),
        format!("{name}_kernels"),
    );
    obj.add_data(&meta_sym, &blob, 8, Visibility::Local)
        .map_err(lower)?;
    let embedded = mode == WeightsMode::Embed;
    if embedded {
        obj.add_data(&weights_sym, weights, 64, Visibility::Local)
            .map_err(lower)?;
    }
    obj.add_fn_table(&table, kernels).map_err(lower)?;
    let op_call = has_op_calls(meta).then(|| "kiln_rt_op_call".to_string());
    if let Some(f) = &op_call {
        obj.import_fn(f).map_err(lower)?;
    }
    let desc = [
        Some(meta_sym),
        embedded.then_some(weights_sym),
        Some(table),
        op_call,
    ];
    obj.add_data_table(&format!("{name}_model"), &desc)
        .map_err(lower)?;
    obj.finish().map_err(lower)
}

/// Whether a program runs an op through the interpreter, which the executable must then
/// link ([`kiln_rt::OpCallFn`]).
fn has_op_calls(meta: &Meta) -> bool {
    let mut steps = meta.program.steps.iter();
    steps.any(|s| matches!(s, SymbolicStep::Call(Call::Op(_))))
}

/// The constants of the program in one blob, each once, 64-byte aligned.
#[derive(Default)]
struct WeightsBlob {
    bytes: Vec<u8>,
    /// Where each constant is, and how it is stored.
    index: Vec<Const>,
    /// Constant index by data address and length (tensors share data across specs).
    seen: HashMap<(usize, usize), usize>,
    /// Every constant added, kept alive so that no later tensor reuses an address in
    /// `seen` (the scheduler makes some constants per spec, and frees them with it).
    keep: Vec<Tensor>,
}

impl WeightsBlob {
    fn add(&mut self, t: &Tensor) -> usize {
        let key = (kiln_ir::dispatch!(t, a => a.as_ptr() as usize), t.len());
        if let Some(&i) = self.seen.get(&key) {
            return i;
        }
        let bytes = t.to_le_bytes();
        self.bytes.resize(self.bytes.len().next_multiple_of(64), 0);
        let nibbles = Nibbles::fitting(t.dtype(), &bytes);
        self.index.push(Const {
            offset: self.bytes.len() as u64,
            len: bytes.len() as u64,
            nibbles,
        });
        match nibbles {
            Some(n) => self.bytes.extend(n.pack(&bytes)),
            None => self.bytes.extend(bytes),
        }
        self.seen.insert(key, self.index.len() - 1);
        self.keep.push(t.clone());
        self.index.len() - 1
    }
}

fn tensor_specs<'a>(
    g: &Graph,
    values: impl Iterator<Item = &'a (String, kiln_ir::ValueId)>,
) -> Vec<TensorSpec> {
    values
        .map(|(name, v)| {
            let t = g.value_type(*v);
            TensorSpec {
                name: name.clone(),
                dtype: t.dtype,
                dims: t.shape.iter().map(|d| d.to_string()).collect(),
            }
        })
        .collect()
}

/// Inputs for runs without any, generated as `kiln run` does, at the first spec's dims.
fn samples(
    g: &Graph,
    ranges: &[DimRange],
    values: &[i64],
    max_memory: MemoryLimit,
) -> Result<Vec<SampleTensor>, BuildError> {
    let dims: Bindings = (ranges.iter().zip(values))
        .map(|(r, v)| (r.name.clone(), *v))
        .collect();
    let generated =
        crate::generate::generate_inputs(g, &dims, 0, max_memory).map_err(BuildError::Dims)?;
    Ok(generated
        .inputs
        .into_iter()
        .map(|(_, t)| SampleTensor {
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            values: t.to_f64_vec(),
        })
        .collect())
}

/// Writes an executable for NVIDIA GPUs from a PTX artifact's three parts (module,
/// plan JSON, constants) to `out`, atomically: it links `libkiln_cuda_runtime.a` (the
/// one given, else `$KILN_CUDA_RT_LIB`, else next to the kiln executable) and needs only
/// the NVIDIA driver where it runs.
pub fn cuda_executable(
    blobs: [&[u8]; 3],
    name: &str,
    out: &Path,
    runtime: Option<&Path>,
) -> Result<(), BuildError> {
    link::cuda_executable(blobs, name, out, runtime)
}

/// `name` as a C identifier: other characters become `_`, a leading digit gets a `m`.
pub fn c_identifier(name: &str) -> String {
    let mut s: String = (name.chars())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, 'm');
    }
    s
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// FNV-1a over `bytes`: ties a weights file to its artifact.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
