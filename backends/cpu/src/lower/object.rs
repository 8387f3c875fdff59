//! Ahead-of-time output: the kernels of one or more programs, read-only data (weights, a
//! serialized plan) and tables of their addresses, in one relocatable object file that
//! `kiln build` links against the runtime library.
//!
//! The kernels go through the same [`define_program`] as the JIT, so an artifact built for
//! [`Target::host`] runs the same instructions as `kiln run` and gives bit-identical results.
//! Only the symbols differ: kernels are exported as `{prefix}_k{index}` so the runtime can
//! reach them through a function table, and runtime functions are imports named
//! [`Libcall::name`](super::libcalls::Libcall::name), which the runtime library exports.

use super::{define_program, KernelNaming, LowerError, Slots};
use crate::kernel::Program;
use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_module::{DataDescription, FuncOrDataId, Linkage, Module};
use cranelift_object::{ObjectBuilder as ClifObjectBuilder, ObjectModule};
use std::fmt;
use std::str::FromStr;
use target_lexicon::{Architecture, BinaryFormat, PointerWidth, Triple};
use thiserror::Error;

/// Why no code can be generated for a target.
#[derive(Debug, Error)]
pub enum TargetError {
    /// The string is not a target triple; the user can fix it.
    #[error("invalid target triple `{triple}`: {reason}")]
    Invalid {
        /// The string given.
        triple: String,
        /// What the triple parser said.
        reason: String,
    },
    /// A valid triple that kiln does not generate code for; the user can pick another.
    #[error("unsupported target `{triple}`: {reason}")]
    Unsupported {
        /// The triple given.
        triple: String,
        /// What is missing.
        reason: String,
    },
    /// Cranelift rejected kiln's settings for the target (a bug in kiln, or a host CPU
    /// Cranelift does not know).
    #[error("cannot set up code generation for `{triple}`: {reason}")]
    Isa {
        /// The target's triple.
        triple: String,
        /// Cranelift's message.
        reason: String,
    },
}

/// Whether code must be position independent. Objects must be: they are linked into
/// position-independent executables and shared libraries, where absolute addresses in code
/// become text relocations. The JIT places code itself and need not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pic {
    Yes,
    No,
}

/// The machine an artifact is built for: a Cranelift ISA with kiln's settings.
#[derive(Clone)]
pub struct Target {
    isa: OwnedTargetIsa,
}

impl Target {
    /// The machine kiln runs on, with the CPU features detected exactly as the JIT detects
    /// them, so host artifacts contain the JIT's instructions.
    pub fn host() -> Result<Target, TargetError> {
        Ok(Target {
            isa: host_isa(Pic::Yes)?,
        })
    }

    /// A target named by its triple: `x86_64-*` assumes x86-64-v3 (AVX2 and FMA: without
    /// FMA, Cranelift turns every vector FMA into four `fmaf` calls), `aarch64-*` the
    /// baseline (NEON and FMA are part of it). Other architectures, and 32-bit pointer ABIs,
    /// are errors: kernels address the slot table in 8-byte steps.
    pub fn from_triple(triple: &str) -> Result<Target, TargetError> {
        let parsed = Triple::from_str(triple).map_err(|e| TargetError::Invalid {
            triple: triple.into(),
            reason: e.to_string(),
        })?;
        check_supported(&parsed)?;
        let isa_err = |e: String| TargetError::Isa {
            triple: triple.into(),
            reason: e,
        };
        let mut builder = isa::lookup(parsed.clone()).map_err(|e| isa_err(e.to_string()))?;
        if parsed.architecture == Architecture::X86_64 {
            builder
                .enable("x86-64-v3")
                .map_err(|e| isa_err(e.to_string()))?;
        }
        let flags = shared_flags(Pic::Yes).map_err(isa_err)?;
        let isa = builder.finish(flags).map_err(|e| isa_err(e.to_string()))?;
        Ok(Target { isa })
    }

    /// The target triple, as Cranelift normalized it.
    pub fn triple(&self) -> String {
        self.isa.triple().to_string()
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("triple", &self.triple())
            .finish()
    }
}

fn check_supported(t: &Triple) -> Result<(), TargetError> {
    let unsupported = |reason: &str| {
        Err(TargetError::Unsupported {
            triple: t.to_string(),
            reason: reason.into(),
        })
    };
    if !matches!(
        t.architecture,
        Architecture::X86_64 | Architecture::Aarch64(_)
    ) {
        return unsupported("kiln generates code for x86_64 and aarch64 only");
    }
    if t.pointer_width() != Ok(PointerWidth::U64) {
        return unsupported("kernels need 64-bit pointers");
    }
    if !matches!(
        t.binary_format,
        BinaryFormat::Elf | BinaryFormat::Macho | BinaryFormat::Coff
    ) {
        return unsupported("no object file format (ELF, Mach-O or COFF) for this target");
    }
    Ok(())
}

/// kiln's Cranelift settings, shared by the JIT and objects so both optimize alike.
fn shared_flags(pic: Pic) -> Result<settings::Flags, String> {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(|e| e.to_string())?;
    let is_pic = if pic == Pic::Yes { "true" } else { "false" };
    flags.set("is_pic", is_pic).map_err(|e| e.to_string())?;
    Ok(settings::Flags::new(flags))
}

/// The host ISA with natively detected CPU features (used by the JIT and [`Target::host`]).
pub(crate) fn host_isa(pic: Pic) -> Result<OwnedTargetIsa, TargetError> {
    let isa_err = |e: String| TargetError::Isa {
        triple: Triple::host().to_string(),
        reason: e,
    };
    let flags = shared_flags(pic).map_err(isa_err)?;
    cranelift_native::builder()
        .map_err(|e| isa_err(e.into()))?
        .finish(flags)
        .map_err(|e| isa_err(e.to_string()))
}

/// Which symbols another object file can reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Visible to the linker (the runtime reads it by name).
    Exported,
    /// Private to the object (reached only through a table in it).
    Local,
}

impl Visibility {
    fn linkage(self) -> Linkage {
        match self {
            Visibility::Exported => Linkage::Export,
            Visibility::Local => Linkage::Local,
        }
    }
}

/// A kernel function exported from an object file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedKernel {
    /// Its symbol, `{prefix}_k{index}`.
    pub symbol: String,
    /// The extent of its outermost loop: the runtime calls it with `start..end` inside
    /// `0..extent`, split across threads.
    pub extent: kiln_ir::Dim,
}

/// One relocatable object file under construction: kernels, read-only data and address
/// tables, written out by [`ObjectBuilder::finish`].
pub struct ObjectBuilder {
    module: ObjectModule,
}

impl ObjectBuilder {
    /// An empty object for `target`; `artifact_name` is recorded as the object's name.
    pub fn new(target: &Target, artifact_name: &str) -> Result<ObjectBuilder, TargetError> {
        let builder = ClifObjectBuilder::new(
            target.isa.clone(),
            artifact_name,
            cranelift_module::default_libcall_names(),
        )
        .map_err(|e| TargetError::Unsupported {
            triple: target.triple(),
            reason: e.to_string(),
        })?;
        Ok(ObjectBuilder {
            module: ObjectModule::new(builder),
        })
    }

    /// Adds every loop, reduction and row kernel of `program` as an exported function
    /// `{prefix}_k{index}` (one prefix per program, e.g. per shape specialization).
    /// Returns each kernel's symbol and outer-loop extent (`None` for runtime calls), or the
    /// index of the kernel that failed with the error.
    pub fn add_program(
        &mut self,
        program: &Program,
        slots: &dyn Slots,
        prefix: &str,
    ) -> Result<Vec<Option<ExportedKernel>>, (usize, LowerError)> {
        let name = |i: usize| format!("{prefix}_k{i}");
        let naming = KernelNaming {
            name: &name,
            linkage: Linkage::Export,
        };
        let ids = define_program(&mut self.module, program, slots, &naming)?;
        let symbols = ids.into_iter().enumerate();
        Ok(symbols
            .map(|(i, k)| {
                k.map(|k| ExportedKernel {
                    symbol: name(i),
                    extent: k.extent,
                })
            })
            .collect())
    }

    /// Adds `bytes` as read-only data named `name`, aligned to `align` bytes (a power of two).
    pub fn add_data(
        &mut self,
        name: &str,
        bytes: &[u8],
        align: u64,
        visibility: Visibility,
    ) -> Result<(), LowerError> {
        let mut desc = DataDescription::new();
        desc.define(bytes.into());
        desc.set_align(align);
        self.define_data(name, visibility, &desc)
    }

    /// Adds an exported read-only array of pointers to the functions `symbols`, in order,
    /// with a null pointer for `None`: the runtime calls kernel `i` through entry `i`.
    pub fn add_fn_table(
        &mut self,
        name: &str,
        symbols: &[Option<String>],
    ) -> Result<(), LowerError> {
        let mut desc = self.pointer_array(symbols.len());
        let step = self.module.isa().pointer_bytes() as u32;
        for (i, symbol) in symbols.iter().enumerate() {
            let Some(symbol) = symbol else { continue };
            let FuncOrDataId::Func(id) = self.lookup(symbol)? else {
                return Err(LowerError::Symbol(format!(
                    "`{symbol}` is data, not a function"
                )));
            };
            let func = self.module.declare_func_in_data(id, &mut desc);
            desc.write_function_addr(i as u32 * step, func);
        }
        self.define_data(name, Visibility::Exported, &desc)
    }

    /// Declares `name` a function defined outside this object (in the runtime), so that a
    /// data table may point at it.
    pub fn import_fn(&mut self, name: &str) -> Result<(), LowerError> {
        let sig = self.module.make_signature();
        self.module
            .declare_function(name, Linkage::Import, &sig)
            .map(drop)
            .map_err(|e| LowerError::Codegen(e.to_string()))
    }

    /// Adds an exported read-only array of pointers to the symbols `symbols` (data objects,
    /// or functions: defined here or imported), in order, with a null pointer for `None`.
    pub fn add_data_table(
        &mut self,
        name: &str,
        symbols: &[Option<String>],
    ) -> Result<(), LowerError> {
        let mut desc = self.pointer_array(symbols.len());
        let step = self.module.isa().pointer_bytes() as u32;
        for (i, symbol) in symbols.iter().enumerate() {
            let Some(symbol) = symbol else { continue };
            match self.lookup(symbol)? {
                FuncOrDataId::Data(id) => {
                    let data = self.module.declare_data_in_data(id, &mut desc);
                    desc.write_data_addr(i as u32 * step, data, 0);
                }
                FuncOrDataId::Func(id) => {
                    let func = self.module.declare_func_in_data(id, &mut desc);
                    desc.write_function_addr(i as u32 * step, func);
                }
            }
        }
        self.define_data(name, Visibility::Exported, &desc)
    }

    /// The object file's bytes (ELF for Linux targets).
    pub fn finish(self) -> Result<Vec<u8>, LowerError> {
        self.module
            .finish()
            .emit()
            .map_err(|e| LowerError::Codegen(e.to_string()))
    }

    fn lookup(&self, symbol: &str) -> Result<FuncOrDataId, LowerError> {
        let missing = || LowerError::Symbol(format!("`{symbol}` is not defined in this object"));
        self.module.get_name(symbol).ok_or_else(missing)
    }

    fn pointer_array(&self, len: usize) -> DataDescription {
        let bytes = self.module.isa().pointer_bytes() as usize;
        let mut desc = DataDescription::new();
        // Explicit zeros, not `define_zeroinit`: zero-initialized data goes to `.bss`, which
        // cannot hold the relocations that fill the table.
        desc.define(vec![0; len * bytes].into());
        desc.set_align(bytes as u64);
        desc
    }

    fn define_data(
        &mut self,
        name: &str,
        visibility: Visibility,
        desc: &DataDescription,
    ) -> Result<(), LowerError> {
        let codegen = |e: cranelift_module::ModuleError| LowerError::Codegen(e.to_string());
        let id = self
            .module
            .declare_data(name, visibility.linkage(), false, false)
            .map_err(codegen)?;
        self.module.define_data(id, desc).map_err(codegen)
    }
}
