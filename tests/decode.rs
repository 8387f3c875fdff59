//! Generation with KV-cache decoder exports (`tests/models/*_kv*.onnx`, made by
//! `bench/export_decoders.py` with optimum-onnx, with torch.onnx's TorchScript and dynamo
//! exporters over a hand-built past, and with onnxruntime-genai's model builder): kiln's greedy tokens are onnxruntime's greedy
//! loop's over the same file, 64 new tokens after a 16-token prompt, with one compiled
//! program for every past length.

use kiln::decode::{Generator, Sampling};
use kiln::{Model, Options};
use std::path::PathBuf;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

/// The prompt and onnxruntime's greedy tokens stored beside `name`.
fn reference(name: &str) -> (Vec<i64>, Vec<i64>) {
    let text = std::fs::read_to_string(models().join(format!("{name}.greedy.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |k: &str| -> Vec<i64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    (ids("prompt"), ids("ids"))
}

#[test]
fn greedy_tokens_match_onnxruntime_on_gpt2_and_llama_exports() {
    for name in [
        "gpt2_kv",
        "llama_kv",
        "gpt2_kv_ts",
        "llama_kv_ts",
        "gpt2_kv_dynamo",
        "llama_kv_dynamo",
        "llama_kv_genai",
    ] {
        let (prompt, want) = reference(name);
        let model = Model::load(models().join(format!("{name}.onnx"))).unwrap();
        let options = Options {
            threads: 2,
            ..Options::default()
        };
        let generator = Generator::new(&model, &options).unwrap();
        let pasts = (model.graph().inputs.iter())
            .filter(|(n, _)| n.starts_with("past_key_values"))
            .count();
        assert_eq!(
            generator.compiled().caches().len(),
            pasts,
            "{name}: every cache is appended in place"
        );
        let sampling = Sampling {
            max_new_tokens: want.len(),
            ..Sampling::default()
        };
        let mut streamed = Vec::new();
        let out = generator
            .generate(&prompt, &sampling, |t| streamed.push(t))
            .unwrap();
        assert_eq!(
            out.ids, want,
            "{name}: greedy tokens differ from onnxruntime's"
        );
        assert_eq!(
            streamed, out.ids,
            "{name}: every token is streamed once, in order"
        );
        assert_eq!(out.prompt_tokens, prompt.len());
        assert_eq!(out.step_ms.len(), want.len() - 1);
        assert_eq!(
            generator.compiled().programs_compiled(),
            1,
            "{name}: one program serves the prompt and every past length"
        );
        // The generator is reusable: the same prompt gives the same tokens again.
        let again = generator.generate(&prompt, &sampling, |_| {}).unwrap();
        assert_eq!(again.ids, want, "{name}: a second generation differs");
        // The export's own way, each present a new tensor fed back, gives them too.
        let copying = Generator::copying(&model, &options).unwrap();
        assert!(copying.compiled().caches().is_empty());
        let copied = copying.generate(&prompt, &sampling, |_| {}).unwrap();
        assert_eq!(copied.ids, want, "{name}: copying the cache differs");
    }
}

/// One decode step through caches appended in place gives the logits of the same step
/// with the past passed in whole, bit for bit; a step whose rows pass the capacity is
/// refused before it runs, and the cache is left as it was.
#[test]
fn a_step_appends_in_place_as_the_copy_would_and_a_full_cache_is_refused() {
    use kiln::ir::Tensor;
    use kiln_rt::kv::KvBuffer;
    use std::collections::BTreeMap;
    let model = Model::load(models().join("llama_kv.onnx")).unwrap();
    let opts = |kv_cache| Options {
        threads: 2,
        kv_cache,
        ..Options::default()
    };
    let (copying, cached) = (
        model.compile(&opts(false)).unwrap(),
        model.compile(&opts(true)).unwrap(),
    );
    let names = cached.caches();
    assert_eq!(names.len(), 4);
    let ids = |v: Vec<i64>| Tensor::from_vec(v.clone(), &[1, v.len()]).unwrap();
    let step = |past: usize, new: Vec<i64>| {
        let n = new.len();
        BTreeMap::from([
            ("input_ids".to_string(), ids(new)),
            ("attention_mask".to_string(), ids(vec![1; past + n])),
            (
                "position_ids".to_string(),
                ids((past as i64..(past + n) as i64).collect()),
            ),
        ])
    };
    let mut buffers: Vec<KvBuffer> = (0..4).map(|_| KvBuffer::new(1, 2, 8, 8).unwrap()).collect();
    // The prompt: five tokens into empty caches.
    let first = cached
        .run_cached(&step(0, vec![3, 9, 27, 81, 50]), &mut buffers)
        .unwrap();
    assert!(buffers.iter().all(|b| b.len() == 5));
    // The same prompt with the past passed in whole, for its presents.
    let mut whole = step(0, vec![3, 9, 27, 81, 50]);
    for (past, _) in &names {
        whole.insert(
            past.clone(),
            Tensor::from_vec(Vec::<f32>::new(), &[1, 2, 0, 8]).unwrap(),
        );
    }
    let out: BTreeMap<String, Tensor> = copying.run(&whole).unwrap().into_iter().collect();
    assert_eq!(first[0].1.to_le_bytes(), out["logits"].to_le_bytes());
    for ((_, present), kv) in names.iter().zip(&buffers) {
        let mine = Tensor::from_array(kv.view().to_owned().into_dyn());
        assert_eq!(mine.to_le_bytes(), out[present].to_le_bytes(), "{present}");
    }
    // One more token each way.
    let next = cached.run_cached(&step(5, vec![7]), &mut buffers).unwrap();
    let mut whole = step(5, vec![7]);
    for (past, present) in &names {
        whole.insert(past.clone(), out[present].clone());
    }
    let out: BTreeMap<String, Tensor> = copying.run(&whole).unwrap().into_iter().collect();
    assert_eq!(next[0].1.to_le_bytes(), out["logits"].to_le_bytes());
    // Three more rows do not fit in eight.
    let full = cached.run_cached(&step(6, vec![1, 2, 3]), &mut buffers);
    let message = full.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("kv_capacity"), "{message}");
    assert!(buffers.iter().all(|b| b.len() == 6));
}

#[test]
fn sampling_is_seeded_and_the_eos_token_stops_generation() {
    let model = Model::load(models().join("gpt2_kv.onnx")).unwrap();
    let generator = Generator::new(&model, &Options::default()).unwrap();
    let sampling = |seed| Sampling {
        max_new_tokens: 12,
        temperature: 0.9,
        top_k: 20,
        top_p: 0.95,
        seed,
        eos: None,
    };
    let run = |s: &Sampling| generator.generate(&[5, 6, 7], s, |_| {}).unwrap().ids;
    let (a, b, c) = (run(&sampling(3)), run(&sampling(3)), run(&sampling(4)));
    // A cache sized for more tokens gives the same; one too small is refused up front.
    let roomy = Generator::new(&model, &Options::default())
        .unwrap()
        .max_seq(64);
    assert_eq!(
        roomy
            .generate(&[5, 6, 7], &sampling(3), |_| {})
            .unwrap()
            .ids,
        a
    );
    let tight = Generator::new(&model, &Options::default())
        .unwrap()
        .max_seq(10);
    let err = tight
        .generate(&[5, 6, 7], &sampling(3), |_| {})
        .err()
        .unwrap();
    assert!(err.to_string().contains("max-seq"), "{err}");
    assert_eq!(a, b, "the same seed gives the same tokens");
    assert_ne!(a, c, "another seed gives other tokens");
    let stop = Sampling {
        eos: Some(a[4]),
        ..sampling(3)
    };
    let stopped = run(&stop);
    let first = a.iter().position(|&t| t == a[4]).unwrap();
    assert_eq!(
        stopped,
        a[..=first],
        "generation ends at the first eos token"
    );
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn a_generator_is_send_and_sync() {
    assert_send_sync::<Generator>();
}
