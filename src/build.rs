//! Ahead-of-time compilation (`kiln build`, and the build-step API): a model becomes an
//! object file of native kernels plus a description the runtime library (`kiln-rt`)
//! reads, then an executable, a static library or a C header around it.
//!
//! The pipeline is the JIT's: the same optimization passes, scheduling, loop fusion,
//! memory plan and code generator ([`kiln_cpu::lay_out`]), so an artifact computes the
//! same bits as `kiln run` at the same thread count. Symbolic dims are bound ahead of time:
//! every value in each declared range (`--dim seq=1..16`) gets its own compiled program,
//! and a run picks the one its input shapes match.
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
use kiln_kernel::kernel::BufferKind;
use kiln_rt::artifact::{Const, DimRange, Meta, SampleTensor, Spec, TensorSpec, FORMAT};
use kiln_rt::call::Call;
use kiln_rt::exec::Step;
use kiln_rt::nibbles::Nibbles;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The most programs one artifact may hold (the product of its dim ranges' sizes).
pub const MAX_SPECIALIZATIONS: usize = 256;

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
}

impl Model {
    /// A model file (`.onnx` or `.kir`) with default options: fixed shapes, embedded
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

    /// Declares symbolic dim `name` to range over `min..=max`.
    pub fn dim(mut self, name: &str, min: i64, max: i64) -> Model {
        self.dims.push((name.to_string(), min, max));
        self
    }

    /// Compiles for `triple` (`aarch64-unknown-linux-gnu`) instead of the host.
    pub fn target(mut self, triple: &str) -> Model {
        self.target = Some(triple.to_string());
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
        self.emit_with_progress(emit, out, &mut |_, _| {})
    }

    /// [`Model::emit`], calling `progress(done, total)` as the specializations compile.
    pub fn emit_with_progress(
        &self,
        emit: Emit,
        out: &Path,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<PathBuf>, BuildError> {
        let artifact = self.compile_with_progress(progress)?;
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

    /// Compiles the model into an [`Artifact`].
    pub fn compile(&self) -> Result<Artifact, BuildError> {
        self.compile_with_progress(&mut |_, _| {})
    }

    /// [`Model::compile`], calling `progress(done, total)` as the specializations compile.
    pub fn compile_with_progress(
        &self,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Artifact, BuildError> {
        let mut model = crate::Model::load(&self.path)?.optimize()?;
        if let Some(pass) = &self.quantize {
            model = model.quantize_with(pass.clone())?.0;
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
        let mut specs = Vec::new();
        let mut kernels: Vec<Option<String>> = Vec::new();
        let bindings = bindings_of(&ranges);
        for (i, values) in bindings.iter().enumerate() {
            progress(i, bindings.len());
            let (mut spec, symbols) =
                self.specialize(g, &ranges, values, &mut obj, &mut weights, i, &name)?;
            spec.first_kernel = kernels.len();
            kernels.extend(symbols);
            specs.push(spec);
        }
        progress(bindings.len(), bindings.len());
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
            sample_inputs: samples(g, &ranges, &specs[0].dims, self.max_memory)?,
            specs,
        };
        let object = finish_object(obj, &name, &meta, &weights.bytes, &kernels, self.weights)?;
        Ok(Artifact {
            name,
            meta,
            object,
            weights: weights.bytes,
            mode: self.weights,
        })
    }

    /// The declared range of every symbol of the graph's inputs.
    fn ranges(&self, g: &Graph) -> Result<Vec<DimRange>, BuildError> {
        let symbols = g.input_symbols();
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
                let (_, min, max) =
                    (self.dims.iter().rev().find(|d| &d.0 == s)).ok_or_else(|| {
                        BuildError::Dims(format!(
                            "symbolic dim `{s}` has no size; give one with `--dim {s}=N` or a \
                         range with `--dim {s}=MIN..MAX`"
                        ))
                    })?;
                if *min < 0 || min > max {
                    return Err(BuildError::Dims(format!(
                        "--dim {s}={min}..{max}: empty range"
                    )));
                }
                Ok(DimRange {
                    name: s.clone(),
                    min: *min,
                    max: *max,
                })
            })
            .collect::<Result<_, _>>()?;
        let count = ranges.iter().try_fold(1usize, |n, r| {
            n.checked_mul((r.max - r.min + 1) as usize)
                .filter(|&n| n <= MAX_SPECIALIZATIONS)
        });
        if count.is_none() {
            return Err(BuildError::Dims(format!(
                "the dim ranges allow more than {MAX_SPECIALIZATIONS} input shapes, and each \
                 gets its own compiled program; narrow them"
            )));
        }
        Ok(ranges)
    }

    /// Lays out and compiles the program for one binding of the dims into `obj`; returns
    /// its spec and its kernel symbols.
    #[allow(clippy::too_many_arguments)]
    fn specialize(
        &self,
        g: &Graph,
        ranges: &[DimRange],
        values: &[i64],
        obj: &mut ObjectBuilder,
        weights: &mut WeightsBlob,
        index: usize,
        name: &str,
    ) -> Result<(Spec, Vec<Option<String>>), BuildError> {
        let bindings: Bindings = (ranges.iter().zip(values))
            .map(|(r, v)| (r.name.clone(), *v))
            .collect();
        let compile = |e: kiln_cpu::CompileError| BuildError::Model(crate::Error::Compile(e));
        let layout = kiln_cpu::lay_out(g, &bindings, self.max_memory).map_err(compile)?;
        let p = &layout.program;
        let exported = obj
            .add_program(p, &layout.slots, &format!("{name}_s{index}"))
            .map_err(|(k, e)| compile(kiln_cpu::lower_error(g, p, k, e)))?;
        let extents: Vec<Option<kiln_ir::Dim>> = exported
            .iter()
            .map(|e| e.as_ref().map(|k| k.extent.clone()))
            .collect();
        let run = kiln_cpu::run_plan(
            g,
            p,
            &layout.plan,
            layout.slots.clone(),
            &extents,
            &bindings,
        )
        .map_err(|e| compile(e.into()))?;
        let consts = (p.buffers.iter())
            .filter_map(|b| match &b.kind {
                BufferKind::Const(t) => Some(weights.add(t)),
                _ => None,
            })
            .collect();
        let spec = Spec {
            dims: values.to_vec(),
            input_shapes: (g.inputs.iter())
                .map(|(_, v)| shape_at(&g.value_type(*v).shape, &bindings))
                .collect(),
            outputs: (p.outputs.iter().copied())
                .zip(p.output_shapes.iter().map(|s| shape_at(s, &bindings)))
                .collect(),
            consts,
            // Set by the caller, which knows the kernels of the specs before this one.
            first_kernel: 0,
            run,
        };
        Ok((
            spec,
            exported.into_iter().map(|e| e.map(|k| k.symbol)).collect(),
        ))
    }
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
    let mut steps = meta.specs.iter().flat_map(|s| &s.run.steps);
    steps.any(|s| matches!(s, Step::Call(c) if matches!(**c, Call::Op(_))))
}

/// The constants of every spec in one blob, each once, 64-byte aligned.
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

/// Every binding of the ranges, the first dim varying slowest.
fn bindings_of(ranges: &[DimRange]) -> Vec<Vec<i64>> {
    ranges.iter().fold(vec![Vec::new()], |acc, r| {
        acc.into_iter()
            .flat_map(|prefix| {
                (r.min..=r.max).map(move |v| {
                    let mut next = prefix.clone();
                    next.push(v);
                    next
                })
            })
            .collect()
    })
}

fn shape_at(dims: &[Dim], b: &Bindings) -> Vec<usize> {
    dims.iter()
        .map(|d| d.eval(b).unwrap_or(0).max(0) as usize)
        .collect()
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
