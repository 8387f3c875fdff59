//! Unit tests of the e-graph round trip and the pass's guarantees (the rules themselves are
//! tested as text in tests/filetests/fuse/).

use super::*;

const RMS: &str = "graph @rms(%x: f32[b, 8], %w: f32[8]) -> f32[b, 8] {
    %sq = mul %x, %x
    %ms = reduce_mean %sq {axes=[1], keep_dims=true}
    %eps = const f32[] 0.000001
    %v = add %ms, %eps
    %r = rsqrt %v
    %n = mul %x, %r
    %y = mul %n, %w
    return %y
}";

fn fused(text: &str, fuse: &Fuse) -> Graph {
    let mut g = kiln_ir::parse(text).unwrap();
    fuse.run(&mut g).unwrap();
    kiln_ir::verify(&g).unwrap();
    g
}

#[test]
fn same_input_gives_the_same_graph() {
    let first = kiln_ir::print(&fused(RMS, &Fuse::default()));
    for _ in 0..5 {
        assert_eq!(kiln_ir::print(&fused(RMS, &Fuse::default())), first);
    }
}

#[test]
fn a_graph_without_fusions_is_left_alone() {
    // Multi-output nodes (topk) and shared values go through the e-graph and back.
    let text = "graph @g(%x: f32[b, 8]) -> (%v: f32[b, 3], %i: i64[b, 3], %s: f32[b, 8]) {
        %v, %i = topk %x {axis=1, k=3, largest=true, sorted=true}
        %e = exp %x
        %s = add %e, %e
        return %v, %i, %s
    }";
    let before = kiln_ir::parse(text).unwrap();
    let after = fused(text, &Fuse::default());
    assert_eq!(kiln_ir::print(&after), kiln_ir::print(&before));
}

#[test]
fn a_tiny_budget_still_yields_a_valid_graph() {
    let fuse = Fuse {
        budget: Budget {
            iterations: 1,
            nodes: 1,
            time: std::time::Duration::from_millis(1),
            match_limit: 1,
            extraction: 32,
        },
    };
    // Whatever the phases reached, the extracted graph verifies and means the same.
    let g = fused(RMS, &fuse);
    assert_eq!(g.outputs.len(), 1);
}

#[test]
fn extraction_without_budget_falls_back_to_the_tree_extractor_and_says_so() {
    let fuse = |extraction| Fuse {
        budget: Budget {
            extraction,
            ..Budget::default()
        },
    };
    let mut g = kiln_ir::parse(RMS).unwrap();
    let report = fuse(0).run(&mut g).unwrap();
    kiln_ir::verify(&g).unwrap();
    let ops: Vec<String> = g.nodes.iter().map(|n| n.op.name()).collect();
    assert_eq!(ops, ["rms_norm"]);
    assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
    assert!(report.notes[0].contains("tree extractor"));

    let mut g = kiln_ir::parse(RMS).unwrap();
    assert_eq!(fuse(32).run(&mut g).unwrap().notes, Vec::<String>::new());
}
