//! House rules as a test: module docs, no orphan files, reasoned ignores, no trailing
//! whitespace, and dependency edges as ARCHITECTURE.md states them.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file of the project, skipping build outputs and vendored test data.
fn rust_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for top in [
        "src", "ir", "frontend", "passes", "backends", "tests", "benches", "examples", "fuzz",
    ] {
        walk(&root().join(top), &mut out);
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if p.is_dir() {
            if !matches!(name, "target" | "cases" | "models") {
                walk(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let bad: Vec<String> = rust_files()
        .into_iter()
        .filter(|p| {
            !fs::read_to_string(p)
                .unwrap_or_default()
                .trim_start()
                .starts_with("//!")
        })
        .map(|p| rel(&p))
        .collect();
    assert!(
        bad.is_empty(),
        "files without a leading `//!` doc: {bad:#?}"
    );
}

#[test]
fn no_trailing_whitespace() {
    let mut bad = Vec::new();
    for p in rust_files() {
        for (i, line) in fs::read_to_string(&p)
            .unwrap_or_default()
            .lines()
            .enumerate()
        {
            if line.ends_with(' ') || line.ends_with('\t') {
                bad.push(format!("{}:{}", rel(&p), i + 1));
            }
        }
    }
    assert!(bad.is_empty(), "trailing whitespace at {bad:#?}");
}

#[test]
fn every_ignore_gives_a_reason() {
    let mut bad = Vec::new();
    for p in rust_files() {
        if p.ends_with("tests/tidy.rs") {
            continue;
        }
        for (i, line) in fs::read_to_string(&p)
            .unwrap_or_default()
            .lines()
            .enumerate()
        {
            if line.trim() == "#[ignore]" {
                bad.push(format!("{}:{}", rel(&p), i + 1));
            }
        }
    }
    assert!(bad.is_empty(), "`#[ignore]` without a reason at {bad:#?}");
}

/// A file under a crate's `src/` must be declared by `mod NAME` in its parent module.
#[test]
fn no_orphan_modules() {
    let mut bad = Vec::new();
    for p in rust_files() {
        let s = rel(&p);
        let Some(idx) = s.find("src/") else { continue };
        let name = p
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if matches!(name.as_str(), "lib" | "main" | "mod") || s[idx + 4..].starts_with("bin/") {
            continue;
        }
        let dir = p.parent().expect("file has a parent");
        let parents = if dir.ends_with("src") {
            vec![dir.join("lib.rs"), dir.join("main.rs")]
        } else {
            let up = dir.parent().expect("dir has a parent");
            let dname = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            vec![dir.join("mod.rs"), up.join(format!("{dname}.rs"))]
        };
        let declared = parents.iter().any(|parent| {
            fs::read_to_string(parent)
                .unwrap_or_default()
                .lines()
                .any(|l| {
                    let l = l.trim();
                    l.ends_with(&format!("mod {name};")) || l.contains(&format!("mod {name} {{"))
                })
        });
        if !declared {
            bad.push(s);
        }
    }
    assert!(bad.is_empty(), "files no `mod` declares: {bad:#?}");
}

/// Dependencies point down DESIGN.md's table: ir imports no kiln crate; the frontend,
/// passes and the kernel layer import only kiln-ir; the runtime adds the kernel layer whose
/// calls it carries out; the CPU backend adds the runtime it runs on, and no other backend;
/// the GPU backend imports the kernel layer and no other backend (its PTX interpreter only
/// as a dev-dependency, see below), and the interpreter imports no kiln crate; the
/// runtime's static library packages the runtime and nothing else, and the GPU runtime's
/// packages the GPU backend's host side with kiln-rt's `.npz` files and summaries.
#[test]
fn dependency_edges_point_down() {
    let allowed: &[(&str, &[&str])] = &[
        ("ir", &[]),
        ("frontend", &["kiln-ir"]),
        ("passes", &["kiln-ir"]),
        ("backends/kernel", &["kiln-ir"]),
        ("backends/rt", &["kiln-ir", "kiln-kernel"]),
        ("backends/rt-static", &["kiln-rt"]),
        ("backends/cpu", &["kiln-ir", "kiln-kernel", "kiln-rt"]),
        ("backends/cuda", &["kiln-ir", "kiln-kernel", "kiln-ptx-emu"]),
        ("backends/cuda/emu", &[]),
        (
            "backends/cuda-rt-static",
            &["kiln-cuda", "kiln-ir", "kiln-rt"],
        ),
    ];
    for (dir, ok) in allowed {
        let toml =
            fs::read_to_string(root().join(dir).join("Cargo.toml")).expect("member manifest");
        let deps: Vec<&str> = toml
            .lines()
            .filter_map(|l| l.split(['=', '.', ' ']).next())
            .filter(|name| {
                name.starts_with("kiln-") && !toml.contains(&format!("name = \"{name}\""))
            })
            .collect();
        for d in deps {
            assert!(
                ok.contains(&d),
                "{dir} depends on {d}, which ARCHITECTURE.md forbids"
            );
        }
    }
}

/// The PTX interpreter is test tooling: only the GPU backend's tests may use it, so no
/// crate links it as a normal dependency and nothing it does can reach kiln or an
/// artifact.
#[test]
fn the_ptx_interpreter_is_only_a_dev_dependency() {
    for dir in [
        ".",
        "backends/cuda",
        "backends/cpu",
        "backends/rt",
        "backends/rt-static",
    ] {
        let toml =
            fs::read_to_string(root().join(dir).join("Cargo.toml")).expect("member manifest");
        let normal = toml.split("[dev-dependencies]").next().unwrap_or_default();
        let normal = normal
            .split("[build-dependencies]")
            .next()
            .unwrap_or_default();
        assert!(
            !normal.contains("kiln-ptx-emu"),
            "{dir}/Cargo.toml links kiln-ptx-emu outside [dev-dependencies]"
        );
    }
}

/// The kernel layer is the description every code generator translates, so it depends on
/// none: no Cranelift, no CUDA, no backend crate, in its manifest or its code.
#[test]
fn the_kernel_layer_imports_no_code_generator() {
    let dir = root().join("backends/kernel");
    let toml = fs::read_to_string(dir.join("Cargo.toml")).expect("kernel layer manifest");
    let forbidden = ["cranelift", "cudarc", "kiln-cpu", "kiln-cuda", "kiln-rt"];
    for f in forbidden {
        assert!(!toml.contains(f), "backends/kernel/Cargo.toml names {f}");
    }
    let mut files = Vec::new();
    walk(&dir.join("src"), &mut files);
    for file in files {
        let code = fs::read_to_string(&file).unwrap();
        for f in ["cranelift", "cudarc", "kiln_cpu", "kiln_cuda", "kiln_rt::"] {
            let used = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| l.contains(f));
            assert!(!used, "{} uses {f}", rel(&file));
        }
    }
}

/// Every `Runtime("reason")` the CPU backend's `support` returns is listed in
/// ARCHITECTURE.md (between the runtime-calls markers), and nothing else is.
#[test]
fn runtime_calls_are_documented() {
    let dir = root().join("backends/kernel/src/schedule");
    let mut files = vec![root().join("backends/kernel/src/schedule.rs")];
    files.extend(fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()));
    let code: String = files
        .iter()
        .map(|f| fs::read_to_string(f).unwrap())
        .collect();
    let mut in_code: Vec<String> = code
        .split("Runtime(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next().map(str::to_string))
        .collect();
    let doc = fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let list = doc
        .split("<!-- runtime-calls -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- /runtime-calls -->").next())
        .expect("ARCHITECTURE.md has a runtime-calls list");
    let mut in_doc: Vec<String> = list
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("- `")?
                .strip_suffix('`')
                .map(str::to_string)
        })
        .collect();
    in_code.sort();
    in_code.dedup();
    in_doc.sort();
    assert_eq!(
        in_code, in_doc,
        "schedule::support's runtime calls vs ARCHITECTURE.md"
    );
}
