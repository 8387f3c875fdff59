//! Running ONNX backend test cases: a folder holding `model.onnx` and `test_data_set_*/`
//! with `input_K.pb` / `output_K.pb` tensors.
//!
//! Each case runs under `catch_unwind`: a panic is a kiln bug, reported as one failed case,
//! never the end of the run.

use crate::compare::{compare, Tolerance};
use crate::{Backend, Error, Model, Options};
use kiln_frontend::ImportOptions;
use kiln_ir::Tensor;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// One test case folder.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Case {
    /// The folder's name, e.g. `test_abs`.
    pub name: String,
    /// The folder.
    pub dir: PathBuf,
}

/// How a case ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Every output matched.
    Pass,
    /// A one-line reason: an import error, a run error or a mismatch.
    Fail(String),
    /// kiln panicked (a kiln bug); the panic message.
    Panic(String),
}

/// How cases run.
#[derive(Clone, Copy, Debug)]
pub struct SuiteOptions {
    /// Run the default pass pipeline before running.
    pub optimize: bool,
    /// Float tolerance.
    pub tolerance: Tolerance,
    /// Where the cases run.
    pub backend: Backend,
    /// Threads for the CPU backend.
    pub threads: usize,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        SuiteOptions {
            optimize: true,
            tolerance: Tolerance::ONNX,
            backend: Backend::Interp,
            threads: 1,
        }
    }
}

/// The cases under `dir`: `dir` itself when it holds `model.onnx`, else its subfolders that
/// do, sorted by name.
pub fn discover(dir: &Path) -> Result<Vec<Case>, Error> {
    if dir.join("model.onnx").is_file() {
        return Ok(vec![case_at(dir)]);
    }
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.join("model.onnx").is_file() {
            cases.push(case_at(&path));
        }
    }
    cases.sort();
    Ok(cases)
}

/// The cases named in a list file (one name per line, relative to `root`; `#` starts a
/// comment, and words after the name are annotations).
pub fn cases_from_list(root: &Path, list: &Path) -> Result<Vec<Case>, Error> {
    let text = std::fs::read_to_string(list).map_err(|source| Error::Io {
        path: list.to_path_buf(),
        source,
    })?;
    Ok(list_names(&text)
        .into_iter()
        .map(|name| Case {
            dir: root.join(&name),
            name,
        })
        .collect())
}

/// The case names in a list file's text.
pub fn list_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split('#').next()?.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn case_at(dir: &Path) -> Case {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    Case {
        name,
        dir: dir.to_path_buf(),
    }
}

/// How a case's model runs once its inputs are known.
pub type Runner<'a> =
    dyn FnMut(&Model, &BTreeMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, Error> + 'a;

/// Runs one case on `opts.backend`, catching panics.
pub fn run_case(case: &Case, opts: SuiteOptions) -> Outcome {
    let threads = opts.threads;
    let mut run = |model: &Model, feed: &BTreeMap<String, Tensor>| match opts.backend {
        Backend::Interp => model.run(feed),
        Backend::Cuda => crate::gpu::run(model, feed),
        Backend::Cpu => {
            let compile = Options {
                threads,
                optimize: false,
                ..Options::default()
            };
            model.compile(&compile).and_then(|c| c.run(feed))
        }
    };
    run_case_with(case, opts, &mut run)
}

/// Runs one case with `run` in place of a backend (a test's device, say), catching
/// panics; `opts.backend` is not used.
pub fn run_case_with(case: &Case, opts: SuiteOptions, run: &mut Runner) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| run_case_inner(case, opts, run))) {
        Ok(Ok(())) => Outcome::Pass,
        Ok(Err(reason)) => Outcome::Fail(one_line(&reason)),
        Err(payload) => Outcome::Panic(one_line(&panic_message(payload.as_ref()))),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

fn run_case_inner(case: &Case, opts: SuiteOptions, run: &mut Runner) -> Result<(), String> {
    let sets = data_sets(&case.dir)?;
    if sets.is_empty() {
        return Err("no test_data_set_* folders".into());
    }
    for set in sets {
        let set_name = set
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        run_data_set(case, &set, opts, run).map_err(|e| format!("{set_name}: {e}"))?;
    }
    Ok(())
}

fn run_data_set(
    case: &Case,
    set: &Path,
    opts: SuiteOptions,
    run: &mut Runner,
) -> Result<(), String> {
    let inputs = read_pbs(set, "input_")?;
    let expected = read_pbs(set, "output_")?;
    let by_name: BTreeMap<String, Tensor> = inputs.iter().cloned().collect();
    let model = Model::load_binding(
        case.dir.join("model.onnx"),
        &ImportOptions::default(),
        &by_name,
    )
    .map_err(|e| e.to_string())?;
    let model = if opts.optimize {
        model.optimize().map_err(|e| e.to_string())?
    } else {
        model
    };
    let declared: Vec<&str> = model
        .graph()
        .inputs
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    let feed: BTreeMap<String, Tensor> = named_inputs(&inputs, &declared).into_iter().collect();
    let actual = run(&model, &feed).map_err(|e| e.to_string())?;
    if actual.len() != expected.len() {
        return Err(format!(
            "{} outputs but expected {}",
            actual.len(),
            expected.len()
        ));
    }
    for (k, ((name, a), (_, e))) in actual.iter().zip(&expected).enumerate() {
        compare(a, e, opts.tolerance).map_err(|m| format!("output {k} (`{name}`): {m}"))?;
    }
    Ok(())
}

/// Inputs keyed by their TensorProto names; an unnamed one takes the declared name at its
/// position.
fn named_inputs(inputs: &[(String, Tensor)], declared: &[&str]) -> Vec<(String, Tensor)> {
    inputs
        .iter()
        .enumerate()
        .map(|(k, (name, t))| match (name.is_empty(), declared.get(k)) {
            (true, Some(d)) => (d.to_string(), t.clone()),
            _ => (name.clone(), t.clone()),
        })
        .collect()
}

fn data_sets(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    Ok(sets)
}

/// Reads `{prefix}K.pb` for K = 0, 1, … in order.
fn read_pbs(set: &Path, prefix: &str) -> Result<Vec<(String, Tensor)>, String> {
    let mut out = Vec::new();
    for k in 0.. {
        let path = set.join(format!("{prefix}{k}.pb"));
        if !path.is_file() {
            break;
        }
        out.push(kiln_frontend::read_tensor_pb(&path).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_files_allow_comments_and_annotations() {
        let text = "test_abs\n# test_bad  # broken\n\ntest_add since:7 # note\n  test_sub\n";
        assert_eq!(list_names(text), vec!["test_abs", "test_add", "test_sub"]);
    }

    #[test]
    fn discover_finds_case_folders_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["test_b", "test_a"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("model.onnx"), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("not_a_case")).unwrap();
        let names: Vec<String> = discover(dir.path())
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, vec!["test_a", "test_b"]);
        assert_eq!(discover(&dir.path().join("test_a")).unwrap().len(), 1);
    }

    #[test]
    fn a_case_without_data_fails_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let case = Case {
            name: "empty".into(),
            dir: dir.path().to_path_buf(),
        };
        assert_eq!(
            run_case(&case, SuiteOptions::default()),
            Outcome::Fail("no test_data_set_* folders".into())
        );
    }
}
