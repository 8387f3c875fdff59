//! Randomized round trips: seeded random graphs (every op, odd names, symbolic dims, special
//! floats, large constants) survive text and JSON unchanged.

use kiln_ir::{
    parse, print, with_dtype, ArgKind, BinaryOp, ConvAttrs, ConvTransposeAttrs, DType, Dim,
    EinsumSpec, Elem, Graph, Op, PadMode, PoolAttrs, PoolKind, ReduceKind, ScanKind,
    ScatterReduction, SliceAxis, Tensor, TensorType, UnaryOp, ValueId,
};

/// SplitMix64: small, seeded, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn flip(&mut self) -> bool {
        self.next() & 1 == 1
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }

    fn usizes(&mut self, n: usize, max: usize) -> Vec<usize> {
        (0..n).map(|_| self.below(max)).collect()
    }
}

const NAMES: &[&str] = &[
    "x",
    "input.1",
    "0",
    "a b",
    "q\"uote",
    "semi;colon",
    "",
    "ünï",
    "tab\tnl\n",
    "_",
    "/m/Add",
];
const SYMS: &[&str] = &["batch", "seq", "n", "a.b", "_k"];

fn dim(r: &mut Rng, depth: u32) -> Dim {
    if depth == 0 || r.below(3) == 0 {
        return if r.flip() {
            Dim::from(r.below(100) as i64 - 3)
        } else {
            Dim::sym(*r.pick(SYMS))
        };
    }
    let (a, b) = (dim(r, depth - 1), dim(r, depth - 1));
    match r.below(6) {
        0 => a + b,
        1 => a - b,
        2 => a * b,
        3 => a.div_floor(r.below(5) as i64 + 1),
        4 => a.min_with(&b),
        _ => a.max_with(&b),
    }
}

fn tensor_type(r: &mut Rng) -> TensorType {
    let rank = r.below(4);
    TensorType::new(*r.pick(&DType::ALL), (0..rank).map(|_| dim(r, 2)).collect())
}

fn float(r: &mut Rng) -> f64 {
    match r.below(8) {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => -0.0,
        _ => (r.next() as f64 / u64::MAX as f64 - 0.5) * 10f64.powi(r.below(20) as i32 - 10),
    }
}

fn tensor(r: &mut Rng) -> Tensor {
    let d = *r.pick(&DType::ALL);
    let rank = r.below(4);
    let shape = if r.below(5) == 0 {
        vec![r.below(100) + 65]
    } else {
        r.usizes(rank, 4)
    };
    let n: usize = shape.iter().product();
    if d.is_float() {
        return with_dtype!(d, T => Tensor::from_vec((0..n).map(|_| T::from_f64(float(r))).collect::<Vec<T>>(), &shape))
            .unwrap();
    }
    let bytes: Vec<u8> = (0..n * d.size_bytes()).map(|_| r.next() as u8).collect();
    Tensor::from_le_bytes(d, &shape, &bytes).unwrap()
}

fn pads(r: &mut Rng, n: usize) -> Vec<(usize, usize)> {
    (0..n).map(|_| (r.below(3), r.below(3))).collect()
}

fn labels(r: &mut Rng) -> Vec<char> {
    (0..r.below(4))
        .map(|_| *r.pick(&['i', 'j', 'k', 'B', 'Z']))
        .collect()
}

/// A random op (every variant is reachable) and how many inputs it takes.
fn op(r: &mut Rng) -> (Op, usize) {
    let n = r.below(3) + 1;
    let op = match r.below(33) {
        0 => return (Op::Const(tensor(r)), 0),
        1 => {
            let dims = (0..r.below(3)).map(|_| dim(r, 2)).collect();
            return (
                Op::ShapeValue {
                    dims,
                    scalar: r.flip(),
                },
                0,
            );
        }
        2 => Op::ShapeOf,
        3 => Op::Unary(*r.pick(UnaryOp::ALL)),
        4 => return (Op::Binary(*r.pick(BinaryOp::ALL)), 2),
        5 => return (Op::Where, 3),
        6 => Op::Cast {
            to: *r.pick(&DType::ALL),
        },
        7 => Op::Bitcast {
            to: *r.pick(&DType::ALL),
        },
        8 => Op::Reduce {
            kind: *r.pick(ReduceKind::ALL),
            axes: r.usizes(n, 4),
            keep_dims: r.flip(),
        },
        9 => Op::ArgReduce {
            kind: *r.pick(&[ArgKind::Max, ArgKind::Min]),
            axis: r.below(4),
            keep_dims: r.flip(),
            select_last: r.flip(),
        },
        10 => Op::Softmax {
            axis: r.below(4),
            log: r.flip(),
        },
        11 => return (Op::MatMul, 2),
        12 => Op::Conv(ConvAttrs {
            strides: r.usizes(n, 3),
            dilations: r.usizes(n, 3),
            pads: pads(r, n),
            groups: r.below(4),
        }),
        13 => Op::ConvTranspose(ConvTransposeAttrs {
            strides: r.usizes(n, 3),
            dilations: r.usizes(n, 3),
            pads: pads(r, n),
            output_padding: r.usizes(n, 2),
            groups: r.below(4),
        }),
        14 => {
            let kinds = [
                PoolKind::Max,
                PoolKind::Avg {
                    count_include_pad: r.flip(),
                },
                PoolKind::Lp {
                    p: r.below(4) as u32,
                },
            ];
            let kind = *r.pick(&kinds);
            let (kernel, strides, dilations) = (r.usizes(n, 4), r.usizes(n, 3), r.usizes(n, 3));
            Op::Pool(PoolAttrs {
                kind,
                kernel,
                strides,
                dilations,
                pads: pads(r, n),
                ceil_mode: r.flip(),
            })
        }
        15 => Op::Reshape {
            shape: (0..n).map(|_| dim(r, 2)).collect(),
        },
        16 => Op::Transpose {
            perm: r.usizes(n, 4),
        },
        17 => Op::Slice {
            axes: (0..r.below(3))
                .map(|_| SliceAxis {
                    axis: r.below(4),
                    start: dim(r, 1),
                    end: dim(r, 1),
                    step: r.below(7) as i64 - 3,
                })
                .collect(),
        },
        18 => return (Op::Concat { axis: r.below(3) }, n),
        19 => {
            let p = (0..n)
                .map(|_| (r.below(7) as i64 - 3, r.below(7) as i64 - 3))
                .collect();
            return (
                Op::Pad {
                    pads: p,
                    mode: *r.pick(PadMode::ALL),
                },
                2,
            );
        }
        20 => Op::Expand {
            shape: (0..n).map(|_| dim(r, 2)).collect(),
        },
        21 => return (Op::Gather { axis: r.below(3) }, 2),
        22 => return (Op::GatherElements { axis: r.below(3) }, 2),
        23 => {
            return (
                Op::GatherNd {
                    batch_dims: r.below(2),
                },
                2,
            )
        }
        24 => {
            return (
                Op::ScatterElements {
                    axis: r.below(3),
                    reduction: *r.pick(ScatterReduction::ALL),
                },
                3,
            )
        }
        25 => {
            return (
                Op::ScatterNd {
                    reduction: *r.pick(ScatterReduction::ALL),
                },
                3,
            )
        }
        26 => return (Op::Range { len: dim(r, 2) }, 2),
        27 => Op::Trilu {
            upper: r.flip(),
            k: r.below(9) as i64 - 4,
        },
        28 => Op::Scan {
            kind: *r.pick(&[ScanKind::Sum, ScanKind::Prod]),
            axis: r.below(3),
            exclusive: r.flip(),
            reverse: r.flip(),
        },
        29 => Op::TopK {
            axis: r.below(3),
            k: r.below(5),
            largest: r.flip(),
            sorted: r.flip(),
        },
        30 => {
            return (
                Op::OneHot {
                    axis: r.below(3),
                    depth: r.below(10),
                },
                2,
            )
        }
        31 => Op::NonZero {
            count: format!("{}{}", r.pick(NAMES), r.below(3)),
        },
        _ => {
            return (
                Op::Einsum(EinsumSpec {
                    inputs: (0..n).map(|_| labels(r)).collect(),
                    output: labels(r),
                }),
                n,
            )
        }
    };
    (op, 1)
}

fn graph(r: &mut Rng) -> Graph {
    let mut g = Graph::new(*r.pick(NAMES));
    for i in 0..r.below(4) {
        let t = tensor_type(r);
        g.add_input(format!("{}{i}", r.pick(NAMES)), t);
    }
    for _ in 0..r.below(12) {
        let (op, arity) = op(r);
        if arity > g.values.len() {
            continue;
        }
        let inputs = (0..arity)
            .map(|_| ValueId(r.below(g.values.len()) as u32))
            .collect();
        let outs = (0..op.num_outputs()).map(|_| tensor_type(r)).collect();
        let name = if r.flip() {
            String::new()
        } else {
            format!("{}/{}", r.pick(NAMES), r.below(9))
        };
        g.push_node(name, op, inputs, outs);
    }
    for _ in 0..r.below(3).min(g.values.len()) {
        let v = ValueId(r.below(g.values.len()) as u32);
        g.add_output(*r.pick(NAMES), v);
    }
    g
}

#[test]
fn random_graphs_round_trip_through_text_and_json() {
    for seed in 0..2000u64 {
        let g = graph(&mut Rng(seed));
        let text = print(&g);
        let back = parse(&text).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        assert_eq!(
            back, g,
            "seed {seed}: text round trip changed the graph:\n{text}"
        );
        let json = serde_json::to_string(&g).unwrap();
        let from_json: Graph =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{json}"));
        assert_eq!(
            from_json, g,
            "seed {seed}: JSON round trip changed the graph"
        );
    }
}

#[test]
fn random_dims_read_back() {
    for seed in 0..5000u64 {
        let d = dim(&mut Rng(seed), 4);
        let back: Dim = d
            .to_string()
            .parse()
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(back, d, "seed {seed}: `{d}` reads back as `{back}`");
    }
}
