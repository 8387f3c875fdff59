//! `parse`: kiln's text IR parser. Any text must parse or fail with an error; a graph that
//! parses and verifies must print, and its print must parse back to a graph that prints the
//! same (the text format's round-trip invariant, on the graph in definition order).

use kiln_ir::{parse, print, verify};

/// Runs one input (taken as UTF-8, lossily, so every byte string reaches the parser).
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(mut g) = parse(&text) else { return };
    if verify(&g).is_err() {
        return;
    }
    g.compact();
    let printed = print(&g);
    let again = parse(&printed)
        .unwrap_or_else(|e| panic!("a printed graph does not parse back: {e}\n{printed}"));
    if let Err(e) = verify(&again) {
        panic!("a printed graph parses back unverified: {e}\n{printed}");
    }
    let reprinted = print(&again);
    assert_eq!(printed, reprinted, "print(parse(print(g))) != print(g)");
}
