//! Every module the backend emits for the test graphs, and for the first random graphs of
//! the CPU backend's generator, assembles with ptxas for sm_80 and sm_90. Where ptxas is
//! not installed the test says so and checks nothing else.

#[path = "../../cpu/tests/difftest/mod.rs"]
#[allow(dead_code)]
mod difftest;

mod common;

use kiln_cuda::{emit, Target};
use kiln_ir::Bindings;
use kiln_kernel::kernel::Program;
use std::path::Path;

/// Assembles `program`'s module for both targets; `name` labels failures.
fn assemble(ptxas: &Path, dir: &Path, name: &str, program: &Program) {
    for target in [Target::Sm80, Target::Sm90] {
        let module = emit(program, target).unwrap_or_else(|e| panic!("{name}: {e}"));
        let path = dir.join(format!("{name}.{}.ptx", target.name()));
        std::fs::write(&path, &module.ptx).unwrap();
        if let Err(why) = common::assemble(ptxas, &path, target.name()) {
            panic!(
                "{name} ({}): ptxas failed:\n{why}\n{}",
                target.name(),
                numbered(&module.ptx)
            );
        }
    }
}

#[test]
fn every_test_graph_assembles_for_sm80_and_sm90() {
    let ptxas = match common::ptxas() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED: ptxas not found: {why}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("kiln-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text, _) in common::GRAPHS {
        let (_, program) = common::program(text);
        assemble(&ptxas, &dir, name, &program);
    }
    let mut assembled = 0;
    for seed in 0..60 {
        let mut rng = difftest::rng::Rng::new(seed);
        let Some(case) = difftest::symbolic::symbolize(&difftest::gen::generate(seed), &mut rng)
        else {
            continue;
        };
        let Ok(program) = kiln_cuda::program(&case.graph, &Bindings::new()) else {
            continue;
        };
        if emit(&program, Target::Sm80).is_ok() {
            assemble(&ptxas, &dir, &format!("seed{seed}"), &program);
            assembled += 1;
        }
    }
    assert!(
        assembled >= 30,
        "only {assembled} random graphs had a module to assemble"
    );
    // The check can fail: ptxas rejects an instruction that does not exist.
    let bad = dir.join("bad.ptx");
    std::fs::write(&bad, ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k()\n{\n\tfrobnicate.f32;\n}\n").unwrap();
    assert!(
        common::assemble(&ptxas, &bad, "sm_80").is_err(),
        "ptxas accepted an unknown instruction"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The module with line numbers, to read ptxas's errors against.
fn numbered(ptx: &str) -> String {
    (ptx.lines().enumerate())
        .map(|(i, l)| format!("{:4} {l}\n", i + 1))
        .collect()
}
