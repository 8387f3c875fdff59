//! The library's compiled model: `Send + Sync`, inputs checked before generated code runs,
//! one compiled model serving several shapes without recompiling, and agreement with the
//! interpreter when called from several threads at once; weights read in place from a
//! mapped file run as weights read into memory do.

mod common;

use kiln::frontend::proto::{StringStringEntryProto, TensorProto};
use kiln::ir::{Op, Tensor};
use kiln::{Compiled, Error, Model, Options};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

fn compiled(name: &str) -> (Model, Compiled) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(name);
    let model = Model::load(path).unwrap().optimize().unwrap();
    let opts = Options {
        threads: 2,
        optimize: false,

        ..Options::default()
    };
    let c = model.compile(&opts).unwrap();
    (model, c)
}

fn gpt2_inputs(batch: usize, seq: usize) -> BTreeMap<String, Tensor> {
    let ids: Vec<i64> = (0..batch * seq).map(|i| (i * 7 % 50) as i64).collect();
    let mask = vec![1i64; batch * seq];
    BTreeMap::from([
        (
            "input_ids".to_string(),
            Tensor::from_vec(ids, &[batch, seq]).unwrap(),
        ),
        (
            "attention_mask".to_string(),
            Tensor::from_vec(mask, &[batch, seq]).unwrap(),
        ),
    ])
}

#[test]
fn compiled_models_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Compiled>();
}

#[test]
fn wrong_inputs_are_errors_that_name_the_input() {
    let (_, c) = compiled("gpt2_tiny.onnx");
    let mut bad = gpt2_inputs(1, 4);
    bad.insert(
        "attention_mask".into(),
        Tensor::from_vec(vec![1i64; 5], &[1, 5]).unwrap(),
    );
    let e = c.run(&bad).unwrap_err().to_string();
    assert!(e.contains("attention_mask"), "{e}");
    let mut wrong_dtype = gpt2_inputs(1, 4);
    wrong_dtype.insert(
        "input_ids".into(),
        Tensor::from_vec(vec![0f32; 4], &[1, 4]).unwrap(),
    );
    let e = c.run(&wrong_dtype).unwrap_err();
    assert!(
        matches!(e, Error::Input { ref name, .. } if name == "input_ids"),
        "{e}"
    );
    let mut missing = gpt2_inputs(1, 4);
    missing.remove("input_ids");
    assert!(c
        .run(&missing)
        .unwrap_err()
        .to_string()
        .contains("input_ids"));
}

#[test]
fn one_compiled_model_runs_many_shapes_and_reuses_code_per_shape() {
    let (model, c) = compiled("gpt2_tiny.onnx");
    for (batch, seq) in [(1, 7), (3, 16), (2, 1), (1, 7)] {
        let inputs = gpt2_inputs(batch, seq);
        let want = model.run(&inputs).unwrap();
        let got = c.run(&inputs).unwrap();
        for ((_, w), (_, g)) in want.iter().zip(&got) {
            kiln::compare::compare(g, w, kiln::compare::Tolerance::MODELS).unwrap();
        }
    }
    let first = c.specialization(&gpt2_inputs(1, 7)).unwrap();
    let again = c.specialization(&gpt2_inputs(1, 7)).unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "the second call at one shape recompiled"
    );
    let other = c.specialization(&gpt2_inputs(3, 16)).unwrap();
    assert!(!Arc::ptr_eq(&first, &other));
}

#[test]
fn concurrent_runs_from_several_threads_agree() {
    let (_, c) = compiled("bert_tiny.onnx");
    let inputs = kiln::npz::read_npz(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models/bert_tiny.inputs.npz"),
    )
    .unwrap()
    .into_iter()
    .collect::<BTreeMap<_, _>>();
    let want = c.run(&inputs).unwrap();
    let c = Arc::new(c);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (c, inputs) = (c.clone(), inputs.clone());
            std::thread::spawn(move || (0..5).map(|_| c.run(&inputs).unwrap()).collect::<Vec<_>>())
        })
        .collect();
    for h in handles {
        for got in h.join().unwrap() {
            assert_eq!(got, want, "same inputs, same thread count: same bits");
        }
    }
}

/// One compiled model run from 8 threads at once, 200 runs each, at four shapes in turn:
/// every output is bit-identical to the serial run of the same shape (the specializations
/// are compiled by whichever thread needs them first, and the arenas are shared).
#[test]
fn eight_threads_at_mixed_shapes_give_the_serial_bits() {
    let shapes = [(1, 5), (2, 16), (3, 7), (1, 12)];
    let bytes = |outputs: Vec<(String, Tensor)>| -> Vec<Vec<u8>> {
        outputs.into_iter().map(|(_, t)| t.to_le_bytes()).collect()
    };
    let (_, serial) = compiled("gpt2_tiny.onnx");
    let want: Vec<Vec<Vec<u8>>> = (shapes.iter())
        .map(|&(b, s)| bytes(serial.run(&gpt2_inputs(b, s)).unwrap()))
        .collect();
    let (_, c) = compiled("gpt2_tiny.onnx");
    let (c, want) = (Arc::new(c), Arc::new(want));
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (c, want) = (c.clone(), want.clone());
            std::thread::spawn(move || {
                (0..200)
                    .filter(|r| {
                        let k = (r + t) % shapes.len();
                        let (b, s) = shapes[k];
                        bytes(c.run(&gpt2_inputs(b, s)).unwrap()) != want[k]
                    })
                    .count()
            })
        })
        .collect();
    let differed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(differed, 0, "of 1600 concurrent runs, {differed} differed");
}

/// Every vendored model compiles to one program for every shape: no kernel of theirs
/// needs a dim's value at compile time.
#[test]
fn every_vendored_model_compiles_one_program_for_every_shape() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".onnx"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    let per_shape: Vec<String> = names
        .iter()
        .filter_map(|n| {
            let (_, c) = compiled(n);
            match c.per_shape() {
                Some(why) => Some(format!("{n}: {why}")),
                None => {
                    assert_eq!(c.programs_compiled(), 1, "{n}");
                    None
                }
            }
        })
        .collect();
    assert!(per_shape.is_empty(), "{per_shape:#?}");
}

/// One compiled model serves every sequence length with the code it compiled first.
#[test]
fn one_program_serves_every_sequence_length() {
    let (model, c) = compiled("gpt2_tiny.onnx");
    for (batch, seq) in [(1, 1), (1, 2), (3, 5), (1, 17), (2, 33), (1, 64)] {
        let inputs = gpt2_inputs(batch, seq);
        let want = model.run(&inputs).unwrap();
        let got = c.run(&inputs).unwrap();
        for ((_, w), (_, g)) in want.iter().zip(&got) {
            kiln::compare::compare(g, w, kiln::compare::Tolerance::MODELS).unwrap();
        }
    }
    assert_eq!(c.programs_compiled(), 1);
}

/// BERT inputs of `batch × seq`: varied ids, the last quarter of each row padded out.
fn bert_inputs(batch: usize, seq: usize) -> BTreeMap<String, Tensor> {
    let ids: Vec<i64> = (0..batch * seq).map(|i| (i * 31 % 997) as i64).collect();
    let mask: Vec<i64> = (0..batch * seq)
        .map(|i| i64::from(i % seq < seq - seq / 4))
        .collect();
    let tensor = |v: Vec<i64>| Tensor::from_vec(v, &[batch, seq]).unwrap();
    BTreeMap::from([
        ("input_ids".to_string(), tensor(ids)),
        ("attention_mask".to_string(), tensor(mask)),
        ("token_type_ids".to_string(), tensor(vec![0; batch * seq])),
    ])
}

/// One compiled BERT runs every sequence length from 1 to 300, at batch 1 and 3, each
/// within tolerance of the interpreter, compiling once; lengths past the model's position
/// table (bert_tiny's is 256 long) are refused by both, not read past the table.
/// `KILN_FULLSIZE_MINILM` names a full-size MiniLM to check the same way (not vendored).
#[test]
fn one_bert_program_runs_every_sequence_length_up_to_300() {
    let mut models =
        vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models/bert_tiny.onnx")];
    match std::env::var_os("KILN_FULLSIZE_MINILM") {
        Some(p) => models.push(PathBuf::from(p)),
        None => eprintln!("KILN_FULLSIZE_MINILM unset: checking bert_tiny only"),
    }
    for path in models {
        let model = Model::load(&path).unwrap().optimize().unwrap();
        let opts = Options {
            threads: 2,
            optimize: false,
            ..Options::default()
        };
        let c = model.compile(&opts).unwrap();
        for seq in 1..=300 {
            for batch in [1, 3] {
                let inputs = bert_inputs(batch, seq);
                let (want, got) = match (model.run(&inputs), c.run(&inputs)) {
                    (Ok(w), Ok(g)) => (w, g),
                    (Err(_), Err(e)) => {
                        let e = e.to_string();
                        assert!(e.contains("needs seq <="), "{path:?} seq {seq}: {e}");
                        continue;
                    }
                    (w, g) => panic!("{path:?} batch {batch} seq {seq}: {w:?} vs {g:?}"),
                };
                for ((name, w), (_, g)) in want.iter().zip(&got) {
                    kiln::compare::compare(g, w, kiln::compare::Tolerance::MODELS)
                        .unwrap_or_else(|e| panic!("{path:?} batch {batch} seq {seq} {name}: {e}"));
                }
            }
        }
        assert_eq!(c.programs_compiled(), 1, "{path:?}");
    }
}

/// An f32 initializer of `dims` whose bytes are at `offset` of external file `w.bin`.
fn external(name: &str, dims: &[i64], offset: usize) -> TensorProto {
    let kv = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    let len = dims.iter().product::<i64>() * 4;
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(common::FLOAT),
        data_location: Some(1),
        external_data: vec![
            kv("location", "w.bin".into()),
            kv("offset", offset.to_string()),
            kv("length", len.to_string()),
        ],
        ..Default::default()
    }
}

#[test]
fn weights_mapped_from_their_file_run_like_weights_in_memory() {
    // y = gather(table, ids) · w: a table behind a gather, which the program reads in
    // place, and a weight of 1 MiB, which it packs and then releases.
    let (rows, d) = (700usize, 512usize);
    let dir = tempfile::tempdir().unwrap();
    let table: Vec<f32> = (0..rows * d)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
        .collect();
    let w: Vec<f32> = (0..d * d)
        .map(|i| ((i * 53 % 97) as f32 - 48.0) / 512.0)
        .collect();
    let bytes: Vec<u8> = table
        .iter()
        .chain(&w)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("w.bin"), bytes).unwrap();
    let path = common::Onnx::new(
        vec![
            common::node_to("g", "Gather", &["table", "ids"], &["x"]),
            common::node("m", "MatMul", &["x", "w"]),
        ],
        vec![common::symbolic_value("ids", common::INT64, &["seq"])],
        common::FLOAT,
    )
    .with(vec![
        external("table", &[rows as i64, d as i64], 0),
        external("w", &[d as i64, d as i64], rows * d * 4),
    ])
    .write(dir.path(), "m.onnx");
    let model = Model::load(&path).unwrap();
    let consts: Vec<&Tensor> = (model.graph().nodes.iter())
        .filter_map(|n| match &n.op {
            Op::Const(t) if t.len() >= d * d => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(consts.len(), 2);
    assert!(
        consts.iter().all(|t| t.is_borrowed()),
        "both are read in place"
    );
    let c = model.compile(&Options::default()).unwrap();
    for seq in [1, 5, 64] {
        let ids: Vec<i64> = (0..seq).map(|i| (i * 131 % rows) as i64).collect();
        let inputs = BTreeMap::from([("ids".to_string(), Tensor::from_vec(ids, &[seq]).unwrap())]);
        let want = model.run(&inputs).unwrap();
        let got = c.run(&inputs).unwrap();
        kiln::compare::compare(&got[0].1, &want[0].1, kiln::compare::Tolerance::MODELS).unwrap();
    }
}
