//! Runs the model build.rs compiled: typed inputs in, typed outputs out, no compiler at run
//! time.

use kiln_rt::ndarray::ArrayD;

include!(concat!(env!("OUT_DIR"), "/bert.rs"));
include!(concat!(env!("OUT_DIR"), "/gpt2.rs"));

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = Bert::new(0, None)?;
    for (batch, seq) in [(1usize, 8usize), (2, 16)] {
        let shape = [batch, seq];
        let ids = ArrayD::from_shape_fn(&shape[..], |i| ((i[0] * 31 + i[1] * 7) % 50) as i64);
        let mask = ArrayD::from_elem(&shape[..], 1i64);
        let types = ArrayD::from_elem(&shape[..], 0i64);
        let out = model.run(ids.view(), mask.view(), types.view())?;
        let h = &out.last_hidden_state;
        let finite = h.iter().all(|x| x.is_finite());
        let mean = h.iter().map(|&x| x as f64).sum::<f64>() / h.len() as f64;
        println!(
            "batch {batch} seq {seq}: last_hidden_state {:?}, mean {mean:.6}",
            h.shape()
        );
        if h.shape() != [batch, seq, 64] || !finite {
            return Err(
                format!("unexpected output: shape {:?}, finite {finite}", h.shape()).into(),
            );
        }
    }
    // A shape outside the compiled ranges is an error, not a crash.
    let long = ArrayD::from_elem(&[1usize, 40][..], 1i64);
    match model.run(long.view(), long.view(), long.view()) {
        Err(e) => println!("seq 40 refused: {e}"),
        Ok(_) => return Err("seq 40 should be outside the compiled range".into()),
    }
    generate()
}

/// The decoder generates onnxruntime's greedy tokens (stored beside the model).
fn generate() -> Result<(), Box<dyn std::error::Error>> {
    let reference = include_str!("../../../tests/models/gpt2_kv.greedy.json");
    let ids = |key: &str| -> Vec<i64> {
        let list = reference
            .split(&format!("\"{key}\": ["))
            .nth(1)
            .unwrap_or("");
        let list = list.split(']').next().unwrap_or("");
        list.split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect()
    };
    let (prompt, want) = (ids("prompt"), ids("ids"));
    let model = Gpt2::new(2, None)?;
    let sampling = kiln_rt::decode::Sampling {
        max_new_tokens: want.len(),
        ..Default::default()
    };
    let out = model.generate(&prompt, &sampling, |_| {})?;
    println!(
        "gpt2: {} greedy tokens, {:.3} ms per token",
        out.ids.len(),
        out.ms_per_token()
    );
    if out.ids != want || want.is_empty() {
        return Err(format!("greedy tokens {:?}, onnxruntime's {want:?}", out.ids).into());
    }
    Ok(())
}
