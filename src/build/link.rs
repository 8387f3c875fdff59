//! Writing an artifact in the form asked for: the object as it is, a static library (the
//! runtime archive plus the object, by `ar`), or an executable (a two-line `main` and the
//! object linked with the runtime by `cc`).

use super::write::{atomically, io_error, with_temp};
use super::{header, Artifact, BuildError, Emit, WeightsMode};
use kiln_rt::artifact::{WEIGHTS_HEADER, WEIGHTS_MAGIC};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `artifact` as `emit` to `out`, and its weights file when they are not embedded.
pub fn emit(
    artifact: &Artifact,
    emit: Emit,
    out: &Path,
    cross: bool,
    runtime: Option<&Path>,
) -> Result<Vec<PathBuf>, BuildError> {
    if cross && matches!(emit, Emit::Exe | Emit::Lib) {
        return Err(BuildError::Unsupported(
            "--emit exe and --emit lib link kiln's runtime, which is built for this machine \
             only; for another target, emit obj and link it with a runtime built for it"
                .into(),
        ));
    }
    match emit {
        Emit::Obj => atomically(out, &artifact.object)?,
        Emit::Header => atomically(out, header::text(artifact).as_bytes())?,
        Emit::Rust => atomically(out, super::rust::text(artifact).as_bytes())?,
        Emit::Lib => with_temp(out, |tmp| archive(artifact, tmp, runtime))?,
        Emit::Exe => with_temp(out, |tmp| executable(artifact, tmp, runtime))?,
    }
    let mut written = vec![out.to_path_buf()];
    if artifact.mode == WeightsMode::File && !matches!(emit, Emit::Header | Emit::Rust) {
        let path = weights_path(out);
        let mut bytes = WEIGHTS_MAGIC.to_vec();
        bytes.extend(artifact.meta.id.to_le_bytes());
        bytes.extend((artifact.weights.len() as u64).to_le_bytes());
        bytes.resize(WEIGHTS_HEADER, 0);
        bytes.extend(&artifact.weights);
        atomically(&path, &bytes)?;
        written.push(path);
    }
    Ok(written)
}

/// Where an artifact's side file goes: its path with `.weights` appended (where the
/// executable looks by default).
pub fn weights_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".weights");
    PathBuf::from(s)
}

/// A static library holding only the object (for Cargo, which links the runtime crate
/// itself).
pub fn object_archive(obj: &Path, out: &Path) -> Result<(), BuildError> {
    with_temp(out, |tmp| {
        run(Command::new("ar").arg("rcs").arg(tmp).arg(obj))
    })
}

/// The runtime archive with the model's object added.
fn archive(artifact: &Artifact, out: &Path, runtime: Option<&Path>) -> Result<(), BuildError> {
    let dir = scratch()?;
    let obj = dir.path().join(format!("{}.o", artifact.name));
    std::fs::write(&obj, &artifact.object).map_err(|e| io_error(&obj, e))?;
    let runtime = runtime_library(runtime)?;
    std::fs::copy(&runtime, out).map_err(|e| io_error(out, e))?;
    run(Command::new("ar").arg("rs").arg(out).arg(&obj))
}

/// The object, a `main` that hands the command line to the runtime, and the runtime,
/// linked into a position-independent executable, stripped (`-s`): the symbol tables
/// and debug info of the runtime and std were 6 MB of every executable (a fifth of an int8
/// MiniLM), and nothing reads them (the runtime reports errors as messages). The linker
/// drops the sections nothing reaches (`--gc-sections`; Rust emits a section per function):
/// 2 MB of a 9.2 MB BERT-tiny executable.
fn executable(artifact: &Artifact, out: &Path, runtime: Option<&Path>) -> Result<(), BuildError> {
    let dir = scratch()?;
    let obj = dir.path().join(format!("{}.o", artifact.name));
    std::fs::write(&obj, &artifact.object).map_err(|e| io_error(&obj, e))?;
    let main = dir.path().join("main.c");
    let name = &artifact.name;
    // Only a decoder's entry links the generation loop and the tokenizer.
    let decoder = kiln_rt::decode::session::signature(&artifact.meta).is_ok();
    let entry = if decoder {
        "kiln_rt_main_decoder"
    } else {
        "kiln_rt_main"
    };
    let source = format!(
        "struct kiln_model;\nextern const struct kiln_model {name}_model;\n\
         int {entry}(const struct kiln_model *, int, char **);\n\
         int main(int argc, char **argv) {{ return {entry}(&{name}_model, argc, argv); }}\n"
    );
    std::fs::write(&main, source).map_err(|e| io_error(&main, e))?;
    let runtime = runtime_library(runtime)?;
    run(Command::new(compiler())
        .args(["-O2", "-s", "-Wl,--gc-sections"])
        .arg(&main)
        .arg(&obj)
        .arg(&runtime)
        .args(["-lpthread", "-lm", "-ldl", "-o"])
        .arg(out))
}

/// An executable for NVIDIA GPUs (`--emit exe --device cuda`): an object holding the
/// PTX module, its plan (JSON) and the constants as three length-prefixed blobs, and a
/// `main` that hands them and the command line to `libkiln_cuda_runtime.a`, which loads
/// the CUDA driver when it runs.
pub fn cuda_executable(
    blobs: [&[u8]; 3],
    name: &str,
    out: &Path,
    runtime: Option<&Path>,
) -> Result<(), BuildError> {
    use kiln_cpu::lower::object::{ObjectBuilder, Target, Visibility};
    let lower = |e: kiln_cpu::lower::LowerError| BuildError::Output(e.to_string());
    let mut obj = ObjectBuilder::new(&Target::host()?, name)?;
    let parts = ["ptx", "plan", "weights"];
    for (part, bytes) in parts.iter().zip(blobs) {
        let mut blob = (bytes.len() as u64).to_le_bytes().to_vec();
        blob.extend_from_slice(bytes);
        obj.add_data(&format!("{name}_{part}"), &blob, 64, Visibility::Exported)
            .map_err(lower)?;
    }
    let object = obj.finish().map_err(lower)?;
    let runtime = library(
        runtime,
        "libkiln_cuda_runtime.a",
        "KILN_CUDA_RT_LIB",
        "kiln-cuda-rt-static",
    )?;
    with_temp(out, |tmp| {
        let dir = scratch()?;
        let obj = dir.path().join(format!("{name}.o"));
        std::fs::write(&obj, &object).map_err(|e| io_error(&obj, e))?;
        let main = dir.path().join("main.c");
        let source = format!(
            "extern const unsigned char {name}_ptx[], {name}_plan[], {name}_weights[];\n\
             int kiln_cuda_main(const unsigned char *, const unsigned char *, \
             const unsigned char *, int, char **);\n\
             int main(int argc, char **argv) {{ return kiln_cuda_main({name}_ptx, {name}_plan, \
             {name}_weights, argc, argv); }}\n"
        );
        std::fs::write(&main, source).map_err(|e| io_error(&main, e))?;
        run(Command::new(compiler())
            .args(["-O2", "-s", "-Wl,--gc-sections"])
            .arg(&main)
            .arg(&obj)
            .arg(&runtime)
            .args(["-lpthread", "-lm", "-ldl", "-o"])
            .arg(tmp))
    })
}

/// The C compiler that links executables: `$CC`, else `cc`.
fn compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// `libkiln_runtime.a`: the one given, else `$KILN_RT_LIB`, else next to the running executable
/// or in the folder above it (where Cargo puts it beside `kiln`).
pub fn runtime_library(given: Option<&Path>) -> Result<PathBuf, BuildError> {
    library(given, "libkiln_runtime.a", "KILN_RT_LIB", "kiln-rt-static")
}

/// A runtime archive `file`: the one given, else `$env`, else next to the running
/// executable or in the folder above it; the error says how to build it (`package`).
fn library(
    given: Option<&Path>,
    file: &str,
    env: &str,
    package: &str,
) -> Result<PathBuf, BuildError> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| BuildError::Output(e.to_string()))?;
    let found = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(file))
        .find(|p| p.is_file());
    found.ok_or_else(|| {
        BuildError::Output(format!(
            "the kiln runtime library ({file}) was not found next to the kiln executable; \
             build it with `cargo build --release -p {package}`, or point {env} at it"
        ))
    })
}

fn scratch() -> Result<tempfile::TempDir, BuildError> {
    tempfile::tempdir().map_err(|e| BuildError::Output(format!("temporary folder: {e}")))
}

/// Runs a tool; its failure becomes an error with its output.
fn run(cmd: &mut Command) -> Result<(), BuildError> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .output()
        .map_err(|e| BuildError::Output(format!("could not run `{tool}`: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(BuildError::Output(format!(
        "`{tool}` failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    )))
}
