//! Prints the PTX module of a kiln text-IR graph, its symbols left free:
//! `cargo run -p kiln-cuda --example emit_ptx -- graph.kir [sm_80|sm_90]`.

use kiln_ir::{parse, Bindings};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: emit_ptx GRAPH.kir [sm_80|sm_90]")?;
    let target = match args.next().as_deref() {
        None | Some("sm_80") => kiln_cuda::Target::Sm80,
        Some("sm_90") => kiln_cuda::Target::Sm90,
        Some(other) => return Err(format!("unknown target {other}").into()),
    };
    let g = parse(&std::fs::read_to_string(&path)?)?;
    let program = kiln_cuda::program(&g, &Bindings::new())?;
    let module = kiln_cuda::emit(&program, target)?;
    print!("{}", module.ptx);
    for l in &module.launches {
        eprintln!(
            "{}: buffers {:?}, items {}, status {}",
            l.entry, l.buffers, l.items, l.status
        );
    }
    Ok(())
}
