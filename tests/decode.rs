//! Generation with KV-cache decoder exports (`tests/models/*_kv*.onnx`, made by
//! `bench/export_decoders.py` with optimum-onnx, and with torch.onnx's TorchScript and
//! dynamo exporters over a hand-built past): kiln's greedy tokens are onnxruntime's greedy
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
    ] {
        let (prompt, want) = reference(name);
        let model = Model::load(models().join(format!("{name}.onnx"))).unwrap();
        let options = Options {
            threads: 2,
            ..Options::default()
        };
        let generator = Generator::new(&model, &options).unwrap();
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
    }
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
