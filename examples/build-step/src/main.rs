//! Runs the model build.rs compiled: typed inputs in, typed outputs out, no compiler at run
//! time.

use kiln_rt::ndarray::ArrayD;

include!(concat!(env!("OUT_DIR"), "/bert.rs"));

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
    Ok(())
}
