//! Differential tests of the fused attention kernel (tiled, online softmax) against the
//! reference interpreter, which defines `attention` by its decomposition: query lengths
//! around the query block, key lengths beyond one key tile (so the running maximum
//! rescales), grouped key/value heads, additive and bool masks of every broadcast shape,
//! fully masked rows under each `MaskedRows` guard, and one vs two threads bit for bit.

use kiln_cpu::{CompiledModel, Options};
use kiln_ir::{
    interp, AttentionAttrs, AttentionMask, DType, Graph, MaskedRows, Op, Tensor, TensorType,
};

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn tensor(&mut self, shape: &[usize], spread: f32) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| spread * self.next()).collect();
        Tensor::from_vec(v, shape).unwrap()
    }

    /// A bool mask keeping about three in four, with every row of `fully_masked` (a row
    /// index of the last-but-one axis) masked out entirely.
    fn keep(&mut self, shape: &[usize], fully_masked: Option<usize>) -> Tensor {
        let cols = *shape.last().unwrap();
        let rows = shape.get(shape.len().wrapping_sub(2)).copied().unwrap_or(1);
        let n: usize = shape.iter().product();
        let v: Vec<bool> = (0..n)
            .map(|i| {
                let row = (i / cols) % rows.max(1);
                Some(row) != fully_masked && self.next() > -0.5
            })
            .collect();
        Tensor::from_vec(v, shape).unwrap()
    }
}

/// The mask's shape, given the scores' shape.
type MaskShape = fn(&[usize]) -> Vec<usize>;

struct Case {
    what: String,
    lead: Vec<usize>,
    heads: usize,
    kv_heads: usize,
    q_len: usize,
    kv_len: usize,
    depth: usize,
    v_depth: usize,
    mask: AttentionMask,
    /// The mask's shape, given the scores' shape.
    mask_shape: MaskShape,
    rows: MaskedRows,
    /// A query row whose keys are all masked out (keep masks only).
    masked_row: Option<usize>,
    /// Queries, keys and values arrive as `[.., S, H, D]` (as a linear layer writes heads)
    /// and are transposed in the graph, which the kernel reads in place.
    interleaved: bool,
}

impl Case {
    fn new(what: &str, q_len: usize, kv_len: usize) -> Case {
        Case {
            what: what.into(),
            lead: vec![2],
            heads: 3,
            kv_heads: 3,
            q_len,
            kv_len,
            depth: 8,
            v_depth: 8,
            mask: AttentionMask::None,
            mask_shape: |s| s.to_vec(),
            rows: MaskedRows::Nan,
            masked_row: None,
            interleaved: false,
        }
    }

    fn shape(&self, heads: usize, len: usize, depth: usize) -> Vec<usize> {
        let mut s = self.lead.clone();
        s.extend([heads, len, depth]);
        s
    }

    fn run(&self) {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (self.q_len * 1000 + self.kv_len) as u64);
        let r = self.lead.len() + 3;
        // The graph inputs' shapes: heads and sequence swapped when interleaved.
        let given = |mut s: Vec<usize>| {
            if self.interleaved {
                s.swap(r - 3, r - 2);
            }
            s
        };
        let q_shape = given(self.shape(self.heads, self.q_len, self.depth));
        let k_shape = given(self.shape(self.kv_heads, self.kv_len, self.depth));
        let v_shape = given(self.shape(self.kv_heads, self.kv_len, self.v_depth));
        let scores = self.shape(self.heads, self.q_len, self.kv_len);
        let mut g = Graph::new("attention");
        let mut inputs = vec![
            rng.tensor(&q_shape, 2.0),
            rng.tensor(&k_shape, 2.0),
            rng.tensor(&v_shape, 1.0),
        ];
        let mut values = vec![
            g.add_input("q", TensorType::fixed(DType::F32, &q_shape)),
            g.add_input("k", TensorType::fixed(DType::F32, &k_shape)),
            g.add_input("v", TensorType::fixed(DType::F32, &v_shape)),
        ];
        if self.interleaved {
            let mut perm: Vec<usize> = (0..r).collect();
            perm.swap(r - 3, r - 2);
            for v in &mut values {
                let op = Op::Transpose { perm: perm.clone() };
                *v = g.add_node("heads", op, &[*v]).unwrap()[0];
            }
        }
        let m_shape = (self.mask_shape)(&scores);
        match self.mask {
            AttentionMask::None => {}
            AttentionMask::Add => {
                // -∞ where a keep mask would close, so rows can be closed entirely.
                let keep = rng.keep(&m_shape, self.masked_row).to_f64_vec();
                let add: Vec<f32> = keep
                    .iter()
                    .map(|&k| {
                        if k != 0.0 {
                            3.0 * rng.next()
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                    .collect();
                inputs.push(Tensor::from_vec(add, &m_shape).unwrap());
                values.push(g.add_input("m", TensorType::fixed(DType::F32, &m_shape)));
            }
            AttentionMask::Keep => {
                inputs.push(rng.keep(&m_shape, self.masked_row));
                values.push(g.add_input("m", TensorType::fixed(DType::Bool, &m_shape)));
            }
        }
        let attrs = AttentionAttrs {
            scale: 1.0 / (self.depth as f32).sqrt(),
            mask: self.mask,
            rows: self.rows,
        };
        let mut y = g.add_node("att", Op::Attention(attrs), &values).unwrap()[0];
        if self.interleaved {
            // Back to [.., S, H, Dv] rows for a product, as the next linear layer reads.
            let mut perm: Vec<usize> = (0..r).collect();
            perm.swap(r - 3, r - 2);
            let rows = g.add_node("rows", Op::Transpose { perm }, &[y]).unwrap()[0];
            inputs.push(rng.tensor(&[self.v_depth, 3], 1.0));
            let w = g.add_input("w", TensorType::fixed(DType::F32, &[self.v_depth, 3]));
            y = g.add_node("proj", Op::MatMul, &[rows, w]).unwrap()[0];
        }
        g.add_output("y", y);
        let want = interp::run(&g, &inputs).unwrap().remove(0);
        let one = CompiledModel::new(
            g.clone(),
            &Options {
                threads: 1,
                ..Options::default()
            },
        )
        .unwrap();
        let two = CompiledModel::new(
            g,
            &Options {
                threads: 2,
                ..Options::default()
            },
        )
        .unwrap();
        let got = one.run(&inputs).unwrap().remove(0);
        let got2 = two.run(&inputs).unwrap().remove(0);
        let what = &self.what;
        if self.interleaved {
            // The transposes are read in place, and written in place for one leading dim
            // (the output's leading dims are one flattened axis, which several copy axes
            // do not match): attention and the product are the only kernels, plus the
            // copy back otherwise.
            let kernels = two.profile(&inputs).unwrap();
            let labels: Vec<&String> = kernels.iter().map(|k| &k.kernel).collect();
            let copy = usize::from(self.lead.len() > 1);
            assert_eq!(kernels.len(), 2 + copy, "{what}: {labels:?}");
        }
        assert_eq!(want.shape(), got.shape(), "{what}");
        for (i, (w, o)) in want.to_f64_vec().iter().zip(got.to_f64_vec()).enumerate() {
            let ok = (w - o).abs() <= 1e-5 + 1e-4 * w.abs() || (w.is_nan() && o.is_nan());
            assert!(ok, "{what}: element {i}: want {w}, got {o}");
        }
        let bits =
            |t: &Tensor| -> Vec<u64> { t.to_f64_vec().iter().map(|v| v.to_bits()).collect() };
        assert_eq!(bits(&got), bits(&got2), "{what}: 1 vs 2 threads");
    }
}

#[test]
fn lengths_around_the_tiles() {
    for (q_len, kv_len) in [(1, 1), (5, 3), (31, 33), (32, 256), (33, 257), (70, 600)] {
        Case::new(&format!("{q_len}x{kv_len}"), q_len, kv_len).run();
    }
}

#[test]
fn heads_interleaved_along_the_sequence_are_read_in_place() {
    for (q_len, kv_len) in [(1, 1), (33, 257), (70, 40)] {
        let mut c = Case::new(&format!("interleaved {q_len}x{kv_len}"), q_len, kv_len);
        c.interleaved = true;
        c.run();
        c.heads = 6;
        c.kv_heads = 2;
        c.v_depth = 5;
        c.lead = vec![2, 3];
        c.mask = AttentionMask::Add;
        c.mask_shape = |s| vec![s[0], s[1], 1, 1, s[4]];
        c.what = format!("interleaved gqa, two leading dims, mask {q_len}x{kv_len}");
        c.run();
        c.lead = vec![2];
        c.mask_shape = |s| vec![s[0], 1, 1, s[3]];
        c.what = format!("interleaved gqa, mask {q_len}x{kv_len}");
        c.run();
    }
}

#[test]
fn grouped_heads_and_odd_depths() {
    let mut c = Case::new("gqa", 9, 300);
    c.heads = 6;
    c.kv_heads = 2;
    c.depth = 5;
    c.v_depth = 3;
    c.run();
    c.lead = vec![];
    c.kv_heads = 1;
    c.what = "mqa, no leading dims".into();
    c.run();
    c.lead = vec![2, 1, 2];
    c.what = "three leading dims".into();
    c.run();
}

#[test]
fn additive_masks_of_every_broadcast_shape() {
    let shapes: [MaskShape; 4] = [
        |s| s.to_vec(),
        |s| vec![s[0], 1, 1, s[3]],
        |s| vec![s[2], s[3]],
        |s| vec![1, s[1], 1, 1],
    ];
    for (i, shape) in shapes.into_iter().enumerate() {
        let mut c = Case::new(&format!("additive mask {i}"), 40, 270);
        c.mask = AttentionMask::Add;
        c.mask_shape = shape;
        c.run();
    }
}

#[test]
fn fully_masked_rows_under_each_guard() {
    for (mask, rows) in [
        (AttentionMask::Keep, MaskedRows::Nan),
        (AttentionMask::Keep, MaskedRows::ZeroNan),
        (AttentionMask::Add, MaskedRows::ZeroNan),
        (AttentionMask::Add, MaskedRows::ZeroMasked),
    ] {
        for kv_len in [7, 300] {
            let mut c = Case::new(&format!("{mask:?} mask, {rows:?}, {kv_len}"), 12, kv_len);
            c.mask = mask;
            c.rows = rows;
            c.masked_row = Some(4);
            c.mask_shape = |s| vec![s[0], 1, s[2], s[3]];
            c.run();
        }
    }
}
