//! Object-file emission for ahead-of-time builds: the kernels of a scheduled program, data
//! and address tables land in a relocatable object for the requested machine, with the
//! symbols and relocations the runtime library will link against. The bytes are read back
//! with the `object` crate, so a missing export, a table without relocations or a wrong
//! machine fails here rather than at link time.

use kiln_cpu::lower::object::{ExportedKernel, ObjectBuilder, Target, TargetError, Visibility};
use kiln_cpu::lower::{LowerError, Slots};
use kiln_ir::{parse, Bindings};
use kiln_kernel::kernel::{BufferKind, Program};
use kiln_kernel::plan::plan;
use kiln_kernel::schedule::schedule;
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
use std::collections::BTreeMap;

/// `sin` needs the runtime function `kiln_sin_f32`; the matmul is a runtime call (no
/// kernel function, so a `None` entry); `relu` and `add` are plain loops.
const GRAPH: &str = "graph @aot(%x: f32[4, 16], %w: f32[16, 8]) -> f32[4, 8] {
    %s = sin %x
    %m = matmul %s, %w
    %r = relu %m
    %y = add %r, %m
    return %y
}";

/// Slots as the executor numbers them: the arena, then the inputs, then the constants.
struct SlotMap(Vec<(u32, usize)>);

impl Slots for SlotMap {
    fn slot(&self, buf: usize) -> (u32, usize) {
        self.0[buf]
    }
}

fn program() -> (Program, SlotMap) {
    let g = parse(GRAPH).unwrap();
    let p = schedule(&g, &Bindings::new()).unwrap();
    let offsets = plan(&p, &Bindings::new()).unwrap().offsets;
    let mut n_consts = 0;
    let slots = (p.buffers.iter().enumerate())
        .map(|(i, b)| match &b.kind {
            BufferKind::Temp | BufferKind::Iota => (0, offsets[i].unwrap_or(0)),
            BufferKind::Input(k) => (1 + *k as u32, 0),
            BufferKind::Const(_) => {
                n_consts += 1;
                ((g.inputs.len() + n_consts) as u32, 0)
            }
        })
        .collect();
    (p, SlotMap(slots))
}

/// What one emitted artifact should contain.
struct Emitted {
    bytes: Vec<u8>,
    kernels: Vec<Option<ExportedKernel>>,
}

fn emit(target: &Target) -> Emitted {
    let (p, slots) = program();
    let mut obj = ObjectBuilder::new(target, "aot_test").unwrap();
    let kernels = obj.add_program(&p, &slots, "kiln_s0").unwrap();
    let table: Vec<Option<String>> = kernels
        .iter()
        .map(|k| k.as_ref().map(|k| k.symbol.clone()))
        .collect();
    obj.add_fn_table("kiln_s0_kernels", &table).unwrap();
    obj.add_data("kiln_weights", &[1, 2, 3, 4, 5], 64, Visibility::Local)
        .unwrap();
    obj.add_data_table("kiln_consts", &[None, Some("kiln_weights".into())])
        .unwrap();
    Emitted {
        bytes: obj.finish().unwrap(),
        kernels,
    }
}

/// The symbol each relocation in `table`'s bytes points to, by offset within the table.
fn table_targets(file: &object::File<'_>, table: &str) -> BTreeMap<u64, String> {
    let sym = file
        .symbols()
        .find(|s| s.name() == Ok(table))
        .expect("table symbol");
    assert!(
        sym.is_global() && sym.is_definition(),
        "{table} must be an exported definition"
    );
    let section = file.section_by_index(sym.section_index().unwrap()).unwrap();
    let range = sym.address()..sym.address() + sym.size();
    // In `.bss` the relocations would have no bytes to fill.
    assert_ne!(
        section.kind(),
        object::SectionKind::UninitializedData,
        "{table}"
    );
    assert_eq!(
        section.name(),
        Ok(".data.rel.ro"),
        "{table}: read-only after relocation"
    );
    let mut targets = BTreeMap::new();
    for (offset, reloc) in section.relocations() {
        if !range.contains(&offset) {
            continue;
        }
        let RelocationTarget::Symbol(idx) = reloc.target() else {
            panic!("reloc to a section")
        };
        let target = file
            .symbol_by_index(idx)
            .unwrap()
            .name()
            .unwrap()
            .to_string();
        targets.insert(offset - sym.address(), target);
    }
    targets
}

fn check_artifact(e: &Emitted, arch: object::Architecture) {
    let file = object::File::parse(&*e.bytes).unwrap();
    assert_eq!(file.format(), object::BinaryFormat::Elf);
    assert_eq!(file.kind(), object::ObjectKind::Relocatable);
    assert_eq!(file.architecture(), arch);

    assert!(
        e.kernels.iter().any(|k| k.is_none()),
        "the matmul is a runtime call"
    );
    let defined: Vec<_> = e.kernels.iter().flatten().collect();
    assert!(
        defined.len() >= 2,
        "expected the sin and elementwise kernels: {:?}",
        e.kernels
    );
    for ExportedKernel {
        symbol: name,
        extent,
    } in &defined
    {
        let sym = file
            .symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("{name}"));
        assert!(
            sym.is_global() && sym.is_definition(),
            "{name} must be exported"
        );
        assert_eq!(sym.kind(), object::SymbolKind::Text);
        assert!(
            sym.size() > 0 && extent.as_const().is_some_and(|e| e > 0),
            "{name}: size {}, extent {extent}",
            sym.size()
        );
    }

    let sin = file
        .symbols()
        .find(|s| s.name() == Ok("kiln_sin_f32"))
        .expect("libcall import");
    assert!(
        sin.is_undefined(),
        "libcalls are resolved by the runtime library"
    );

    let want: BTreeMap<u64, String> = (e.kernels.iter().enumerate())
        .filter_map(|(i, k)| Some((i as u64 * 8, k.as_ref()?.symbol.clone())))
        .collect();
    assert_eq!(table_targets(&file, "kiln_s0_kernels"), want);
    let consts = table_targets(&file, "kiln_consts");
    assert_eq!(consts, BTreeMap::from([(8, "kiln_weights".to_string())]));

    let weights = file
        .symbols()
        .find(|s| s.name() == Ok("kiln_weights"))
        .unwrap();
    assert!(weights.is_local(), "local data stays private to the object");
    assert_eq!(weights.address() % 64, 0);
    let section = file
        .section_by_index(weights.section_index().unwrap())
        .unwrap();
    assert_eq!(section.kind(), object::SectionKind::ReadOnlyData);
    let start = (weights.address() - section.address()) as usize;
    assert_eq!(&section.data().unwrap()[start..start + 5], &[1, 2, 3, 4, 5]);
}

#[test]
#[cfg(target_arch = "x86_64")]
fn host_object_has_kernels_table_and_libcall_imports() {
    let target = Target::host().unwrap();
    check_artifact(&emit(&target), object::Architecture::X86_64);
}

#[test]
fn x86_64_object_has_kernels_table_and_libcall_imports() {
    let target = Target::from_triple("x86_64-unknown-linux-gnu").unwrap();
    check_artifact(&emit(&target), object::Architecture::X86_64);
}

#[test]
fn aarch64_object_has_kernels_table_and_libcall_imports() {
    let target = Target::from_triple("aarch64-unknown-linux-gnu").unwrap();
    assert_eq!(target.triple(), "aarch64-unknown-linux-gnu");
    check_artifact(&emit(&target), object::Architecture::Aarch64);
}

/// `file` and `readelf` agree that the bytes are a relocatable ELF for the machine (skipped
/// where the tools are missing).
#[test]
fn system_tools_read_the_objects() {
    for (triple, machine) in [
        ("x86_64-unknown-linux-gnu", "X86-64"),
        ("aarch64-unknown-linux-gnu", "AArch64"),
    ] {
        let path = std::env::temp_dir().join(format!("kiln-object-test-{triple}.o"));
        std::fs::write(&path, emit(&Target::from_triple(triple).unwrap()).bytes).unwrap();
        let Ok(out) = std::process::Command::new("readelf")
            .arg("-h")
            .arg(&path)
            .output()
        else {
            eprintln!("skipped: readelf not found");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("REL (Relocatable file)") && text.contains(machine),
            "{text}"
        );
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn the_same_prefix_twice_is_an_error() {
    let (p, slots) = program();
    let mut obj = ObjectBuilder::new(&Target::host().unwrap(), "dup").unwrap();
    obj.add_program(&p, &slots, "kiln_s0").unwrap();
    assert!(obj.add_program(&p, &slots, "kiln_s0").is_err());
    assert!(
        obj.add_program(&p, &slots, "kiln_s1").is_ok(),
        "another specialization fits"
    );
}

#[test]
fn tables_name_only_declared_symbols_of_their_kind() {
    let (p, slots) = program();
    let mut obj = ObjectBuilder::new(&Target::host().unwrap(), "tables").unwrap();
    let kernels = obj.add_program(&p, &slots, "kiln_s0").unwrap();
    let kernel = kernels.into_iter().flatten().next().unwrap().symbol;
    obj.add_data("blob", &[0; 4], 4, Visibility::Exported)
        .unwrap();
    let bad = |r: Result<(), LowerError>| matches!(r, Err(LowerError::Symbol(_)));
    assert!(bad(obj.add_fn_table("t1", &[Some("kiln_s0_k999".into())])));
    assert!(bad(obj.add_fn_table("t2", &[Some("blob".into())])));
    assert!(bad(
        obj.add_data_table("t3", &[Some("kiln_rt_op_call".into())])
    ));
    // A descriptor points at data and at functions, its own or the runtime's.
    obj.import_fn("kiln_rt_op_call").unwrap();
    let entries = [
        Some("blob".into()),
        Some(kernel),
        Some("kiln_rt_op_call".into()),
    ];
    assert!(obj.add_data_table("t4", &entries).is_ok());
}

#[test]
fn unsupported_targets_are_errors() {
    let unsupported =
        |t: &str| matches!(Target::from_triple(t), Err(TargetError::Unsupported { .. }));
    assert!(unsupported("riscv64gc-unknown-linux-gnu"));
    assert!(unsupported("i686-unknown-linux-gnu"));
    assert!(
        unsupported("x86_64-unknown-linux-gnux32"),
        "32-bit pointers"
    );
    assert!(unsupported("wasm32-unknown-unknown"));
    let invalid = Target::from_triple("not a triple");
    assert!(
        matches!(invalid, Err(TargetError::Invalid { .. })),
        "{invalid:?}"
    );
    let msg = Target::from_triple("riscv64gc-unknown-linux-gnu")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("riscv64gc-unknown-linux-gnu") && msg.contains("x86_64"),
        "{msg}"
    );
}
