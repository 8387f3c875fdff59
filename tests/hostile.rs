//! Hostile models: one generated model per class of attack (out-of-range indices, huge
//! shapes from each shape-producing op, overflowing shape products, negative dims, bad
//! initializer and external data, duplicate names, cycles, dtype confusion, NaN/Inf where
//! a size is computed). Each must be refused with exit code 1 and one stderr line that
//! names the node (or the tensor or input at fault) on the interpreter, on the cpu JIT and
//! through a built executable: either `kiln build` refuses it, or the executable it builds
//! refuses the run. Never an exit of 0, a panic (101), an abort (134) or a signal.

mod common;

use common::*;
use kiln::frontend::proto::{tensor_proto, StringStringEntryProto, TensorProto};
use kiln::ir::Tensor;
use std::path::Path;
use std::process::Command;

/// One hostile model with the inputs it is run on (empty: kiln generates them) and what
/// every refusal must say.
struct Case {
    name: &'static str,
    model: Onnx,
    inputs: Vec<(&'static str, Tensor)>,
    /// Extra options for `kiln run` and `kiln build` (a lower `--max-memory`).
    options: &'static [&'static str],
    needles: &'static [&'static str],
}

fn case(name: &'static str, model: Onnx, needles: &'static [&'static str]) -> Case {
    Case {
        name,
        model,
        inputs: Vec::new(),
        options: &[],
        needles,
    }
}

impl Case {
    fn inputs(mut self, inputs: Vec<(&'static str, Tensor)>) -> Case {
        self.inputs = inputs;
        self
    }

    fn options(mut self, options: &'static [&'static str]) -> Case {
        self.options = options;
        self
    }
}

fn f32s(shape: &[usize], v: f32) -> Tensor {
    Tensor::from_vec(vec![v; shape.iter().product()], shape).unwrap()
}

fn i64s(shape: &[usize], v: &[i64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

/// The case is refused on the interpreter, the JIT and an executable.
fn assert_refused_everywhere(dir: &Path, case: Case) {
    let Case {
        name,
        model,
        inputs,
        options,
        needles,
    } = case;
    let model = model.write(dir, &format!("{name}.onnx"));
    let npz = dir.join(format!("{name}.npz")).display().to_string();
    let mut feed: Vec<&str> = options.to_vec();
    if !inputs.is_empty() {
        let named: Vec<(String, Tensor)> = inputs.into_iter().map(|(n, t)| (n.into(), t)).collect();
        kiln::npz::write_npz(Path::new(&npz), &named).unwrap();
        feed.extend(["--inputs", &npz]);
    }
    for backend in ["interp", "cpu"] {
        let mut args = vec!["run", &model, "--backend", backend];
        args.extend(&feed);
        assert_refusal(&format!("{name} on {backend}"), &kiln(&args), needles);
    }
    let exe = dir.join(name);
    let mut build = vec!["build", &model, "-o", exe.to_str().unwrap()];
    build.extend(options);
    let built = outcome(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&build)
            .env("KILN_RT_LIB", runtime_library()),
    );
    let out = match built.code {
        Some(0) => run(&exe, &feed),
        _ => built,
    };
    let line = assert_refusal(&format!("{name} built"), &out, needles);
    eprintln!("{name}: {line}");
}

fn check(cases: Vec<Case>) {
    let dir = tempfile::tempdir().unwrap();
    for case in cases {
        assert_refused_everywhere(dir.path(), case);
    }
}

fn x32() -> Vec<kiln::frontend::proto::ValueInfoProto> {
    vec![f32_value("x", &[3, 2])]
}

const OUT_OF_RANGE: &str = "is out of range for a dim of size";
const LIMIT: &str = "over the limit of";

#[test]
fn out_of_range_indices_constant_and_data() {
    let gather = |i| Onnx::new(vec![node("lookup", "Gather", &["x", "i"])], i, FLOAT);
    let data = |op: &str, ins: &[&str], shapes: &[(&str, i32, &[i64])]| {
        let mut inputs = x32();
        inputs.extend(shapes.iter().map(|(n, e, s)| value_info(n, *e, Some(s))));
        Onnx::new(vec![node("pick", op, ins)], inputs, FLOAT)
    };
    check(vec![
        case(
            "gather_const",
            gather(x32()).with(vec![ints("i", &[1], &[7])]),
            &["node `lookup`", "index 7", OUT_OF_RANGE],
        ),
        case(
            "gather_elements_const",
            Onnx::new(
                vec![node("pick", "GatherElements", &["x", "i"])],
                x32(),
                FLOAT,
            )
            .with(vec![ints("i", &[1, 1], &[-4])]),
            &["node `pick`", "index -4", OUT_OF_RANGE],
        ),
        case(
            "gather_data",
            gather(vec![f32_value("x", &[3, 2]), i64_value("i", &[1])]),
            &["node `lookup`", "index 7", OUT_OF_RANGE],
        )
        .inputs(vec![("x", f32s(&[3, 2], 1.0)), ("i", i64s(&[1], &[7]))]),
        case(
            "gather_data_huge",
            gather(vec![f32_value("x", &[3, 2]), i64_value("i", &[1])]),
            &["node `lookup`", "index 1099511627776", OUT_OF_RANGE],
        )
        .inputs(vec![
            ("x", f32s(&[3, 2], 1.0)),
            ("i", i64s(&[1], &[1 << 40])),
        ]),
        case(
            "gather_elements_data",
            data("GatherElements", &["x", "i"], &[("i", INT64, &[3, 2])]),
            &["node `pick`", "index 5", OUT_OF_RANGE],
        )
        .inputs(vec![
            ("x", f32s(&[3, 2], 1.0)),
            ("i", i64s(&[3, 2], &[0, 1, 2, 5, 0, 0])),
        ]),
        case(
            "gather_nd_data",
            data("GatherND", &["x", "i"], &[("i", INT64, &[1, 2])]),
            &["node `pick`", "index 9", OUT_OF_RANGE],
        )
        .inputs(vec![
            ("x", f32s(&[3, 2], 1.0)),
            ("i", i64s(&[1, 2], &[0, 9])),
        ]),
        case(
            "scatter_elements_data",
            data(
                "ScatterElements",
                &["x", "i", "u"],
                &[("i", INT64, &[1, 2]), ("u", FLOAT, &[1, 2])],
            ),
            &["node `pick`", "index 4", OUT_OF_RANGE],
        )
        .inputs(vec![
            ("x", f32s(&[3, 2], 1.0)),
            ("i", i64s(&[1, 2], &[4, 0])),
            ("u", f32s(&[1, 2], 2.0)),
        ]),
        case(
            "scatter_nd_data",
            data(
                "ScatterND",
                &["x", "i", "u"],
                &[("i", INT64, &[1, 1]), ("u", FLOAT, &[1, 2])],
            ),
            &["node `pick`", "index -7", OUT_OF_RANGE],
        )
        .inputs(vec![
            ("x", f32s(&[3, 2], 1.0)),
            ("i", i64s(&[1, 1], &[-7])),
            ("u", f32s(&[1, 2], 2.0)),
        ]),
    ]);
}

#[test]
fn huge_shapes_from_every_shape_producing_op() {
    let one = |name: &str, op: &str, ins: &[&str], x: &[i64], inits: Vec<TensorProto>| {
        let inputs = if x.is_empty() {
            vec![]
        } else {
            vec![f32_value("x", x)]
        };
        Onnx::new(vec![node(name, op, ins)], inputs, FLOAT).with(inits)
    };
    let huge = || ints("s", &[2], &[1 << 20, 1 << 20]);
    let mut range = one("count", "Range", &["a", "b", "c"], &[], vec![]);
    range.initializers = vec![
        ints("a", &[], &[0]),
        ints("b", &[], &[1 << 43]),
        ints("c", &[], &[1]),
    ];
    range.outputs = vec![value_info("y", INT64, None)];
    let mut one_hot = Onnx::new(
        vec![node("hot", "OneHot", &["i", "d", "v"])],
        vec![i64_value("i", &[4])],
        FLOAT,
    );
    one_hot.initializers = vec![ints("d", &[], &[1 << 40]), floats("v", &[2], &[0.0, 1.0])];
    let conv_t = Onnx::new(
        vec![node_with(
            "up",
            "ConvTranspose",
            &["x", "w"],
            vec![ints_attr("strides", &[1 << 31, 1 << 31])],
        )],
        vec![f32_value("x", &[1, 1, 2, 2])],
        FLOAT,
    )
    .with(vec![floats("w", &[1, 1, 1, 1], &[1.0])]);
    // Two halves that each fit under the limit given, joined into one that does not.
    let concat = Onnx::new(
        vec![
            node_to("a", "Expand", &["x", "s"], &["a"]),
            node_to("b", "Expand", &["x", "s"], &["b"]),
            node_with("join", "Concat", &["a", "b"], vec![]),
        ],
        vec![f32_value("x", &[1])],
        FLOAT,
    );
    let mut concat = concat.with(vec![ints("s", &[1], &[6 << 20])]);
    concat.nodes[2]
        .attribute
        .push(kiln::frontend::proto::AttributeProto {
            name: Some("axis".into()),
            r#type: Some(kiln::frontend::proto::attribute_proto::AttributeType::Int as i32),
            i: Some(0),
            ..Default::default()
        });
    check(vec![
        case(
            "tile",
            one(
                "tile",
                "Tile",
                &["x", "r"],
                &[2, 2],
                vec![ints("r", &[2], &[1 << 30, 1 << 30])],
            ),
            &["node `tile", "16 EiB", LIMIT],
        ),
        case(
            "constant_of_shape",
            one("fill", "ConstantOfShape", &["s"], &[], vec![huge()]),
            &["node `fill`", "4 TiB"],
        ),
        case(
            "expand",
            one("grow", "Expand", &["x", "s"], &[1], vec![huge()]),
            &["node `grow`", "4 TiB", LIMIT],
        ),
        case("range", range, &["node `count`", "64 TiB", LIMIT]),
        case(
            "pad",
            one(
                "pad",
                "Pad",
                &["x", "p"],
                &[2, 2],
                vec![ints("p", &[4], &[0, 0, 1 << 20, 1 << 20])],
            ),
            &["node `pad`", LIMIT],
        ),
        case(
            "reshape",
            one(
                "shape",
                "Reshape",
                &["x", "s"],
                &[3, 2],
                vec![ints("s", &[2], &[1 << 40, 0])],
            ),
            &["node `shape`", "1099511627776"],
        ),
        case(
            "one_hot",
            one_hot,
            &["node `hot`", "f32[4, 1099511627776]", LIMIT],
        ),
        case("conv_transpose", conv_t, &["node `up", LIMIT]),
        case("concat", concat, &["over the limit of 40 MiB"]).options(&["--max-memory", "40M"]),
        case(
            "graph_input",
            one("same", "Identity", &["x"], &[1 << 20, 1 << 20], vec![]),
            &["input `x`", "f32[1048576, 1048576]", LIMIT],
        ),
    ]);
}

#[test]
fn shape_products_that_overflow_and_negative_dims() {
    let one = |name: &str, op: &str, ins: &[&str], x: Option<&[i64]>, init: TensorProto| {
        let inputs = x.map(|s| vec![f32_value("x", s)]).unwrap_or_default();
        Onnx::new(vec![node(name, op, ins)], inputs, FLOAT).with(vec![init])
    };
    let relu = |x: &[i64]| {
        Onnx::new(
            vec![node("r", "Relu", &["x"])],
            vec![f32_value("x", x)],
            FLOAT,
        )
    };
    check(vec![
        case(
            "tile_overflow",
            one(
                "tile",
                "Tile",
                &["x", "r"],
                Some(&[2, 2]),
                ints("r", &[2], &[1 << 62, 4]),
            ),
            &["tile", "overflow"],
        ),
        case(
            "constant_of_shape_overflow",
            one(
                "fill",
                "ConstantOfShape",
                &["s"],
                None,
                ints("s", &[2], &[1 << 62, 1 << 62]),
            ),
            &["node `fill`", "too large"],
        ),
        case(
            "reshape_overflow",
            one(
                "shape",
                "Reshape",
                &["x", "s"],
                Some(&[3, 2]),
                ints("s", &[2], &[1 << 62, 1 << 62]),
            ),
            &["node `shape`", "overflows i64"],
        ),
        // No elements, but strides past i64: found by the graph fuzzer (ndarray panicked).
        case(
            "constant_of_shape_empty_with_huge_dims",
            one(
                "fill",
                "ConstantOfShape",
                &["s"],
                None,
                ints("s", &[3], &[0, 1 << 40, 1 << 40]),
            ),
            &["node `fill`", "too large"],
        ),
        case(
            "expand_empty_with_huge_dims",
            one(
                "grow",
                "Expand",
                &["x", "s"],
                Some(&[1]),
                ints("s", &[3], &[0, 1 << 40, 1 << 40]),
            ),
            &["node `grow`", "strides overflow"],
        ),
        case(
            "input_empty_with_huge_dims",
            relu(&[0, 1 << 40, 1 << 40]),
            &["input `x`", "strides overflow"],
        ),
        case(
            "constant_of_shape_negative",
            one(
                "fill",
                "ConstantOfShape",
                &["s"],
                None,
                ints("s", &[1], &[-3]),
            ),
            &["node `fill`", "is negative"],
        ),
        case(
            "expand_negative",
            one(
                "grow",
                "Expand",
                &["x", "s"],
                Some(&[1]),
                ints("s", &[1], &[-2]),
            ),
            &["node `grow`", "is negative"],
        ),
        case(
            "input_negative",
            relu(&[-5, 2]),
            &["graph input `x`", "dim -5 is negative"],
        ),
        case(
            "range_past_i64",
            one(
                "count",
                "Range",
                &["s", "s", "s"],
                None,
                ints("s", &[], &[i64::MIN]),
            ),
            &["node `count`"],
        ),
    ]);
}

/// `y = x + w` over f32[2, 2] with `w` as given.
fn with_weight(w: TensorProto) -> Onnx {
    Onnx::new(
        vec![node("add", "Add", &["x", "w"])],
        vec![f32_value("x", &[2, 2])],
        FLOAT,
    )
    .with(vec![w])
}

fn weight(dims: &[i64]) -> TensorProto {
    TensorProto {
        name: Some("w".into()),
        dims: dims.to_vec(),
        data_type: Some(FLOAT),
        ..Default::default()
    }
}

fn external(location: &str, offset: &str, length: Option<&str>) -> TensorProto {
    let entry = |k: &str, v: &str| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    };
    let mut external_data = vec![entry("location", location), entry("offset", offset)];
    external_data.extend(length.map(|l| entry("length", l)));
    TensorProto {
        data_location: Some(tensor_proto::DataLocation::External as i32),
        external_data,
        ..weight(&[2, 2])
    }
}

#[test]
fn bad_initializer_and_external_data() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), [0u8; 8]).unwrap();
    let cases = vec![
        case(
            "initializer_short",
            with_weight(TensorProto {
                float_data: vec![1.0; 3],
                ..weight(&[2, 2])
            }),
            &["tensor `w`", "holds 4 elements but 3 were given"],
        ),
        case(
            "initializer_long",
            with_weight(TensorProto {
                float_data: vec![1.0; 5],
                ..weight(&[2, 2])
            }),
            &["tensor `w`", "holds 4 elements but 5 were given"],
        ),
        case(
            "initializer_raw_short",
            with_weight(TensorProto {
                raw_data: Some(vec![0; 5].into()),
                ..weight(&[2, 2])
            }),
            &["tensor `w`", "takes 16 bytes but 5 were given"],
        ),
        case(
            "initializer_negative_dim",
            with_weight(TensorProto {
                float_data: vec![1.0],
                ..weight(&[-1])
            }),
            &["tensor `w`", "negative dim -1"],
        ),
        case(
            "initializer_dims_overflow",
            with_weight(TensorProto {
                float_data: vec![1.0],
                ..weight(&[1 << 62, 1 << 62])
            }),
            &["tensor `w`", "too large"],
        ),
        case(
            "external_beyond_its_file",
            with_weight(external("w.bin", "0", Some("64"))),
            &["tensor `w`", "out of bounds of `w.bin` (8 bytes)"],
        ),
        case(
            "external_offset_beyond_its_file",
            with_weight(external("w.bin", "1000", None)),
            &["tensor `w`", "out of bounds of `w.bin`"],
        ),
    ];
    for case in cases {
        assert_refused_everywhere(dir.path(), case);
    }
}

#[test]
fn duplicate_names_cycles_and_undefined_inputs() {
    let relu_neg = Onnx::new(
        vec![node("a", "Relu", &["x"]), node("b", "Neg", &["x"])],
        x32(),
        FLOAT,
    );
    let cycle = Onnx::new(
        vec![
            node_to("a", "Add", &["x", "q"], &["p"]),
            node_to("b", "Relu", &["p"], &["q"]),
            node("c", "Relu", &["q"]),
        ],
        x32(),
        FLOAT,
    );
    let self_loop = Onnx::new(
        vec![
            node_to("s", "Add", &["x", "z"], &["z"]),
            node("t", "Relu", &["z"]),
        ],
        x32(),
        FLOAT,
    );
    let undefined = Onnx::new(vec![node("a", "Add", &["x", "nope"])], x32(), FLOAT);
    let mut shadow = Onnx::new(
        vec![
            node_to("a", "Relu", &["x"], &["x"]),
            node("b", "Relu", &["x"]),
        ],
        x32(),
        FLOAT,
    );
    shadow.initializers = vec![];
    let two_initializers = Onnx::new(
        vec![node("a", "Add", &["x", "w"])],
        vec![f32_value("x", &[2])],
        FLOAT,
    )
    .with(vec![
        floats("w", &[2], &[1.0, 2.0]),
        floats("w", &[2], &[3.0, 4.0]),
    ]);
    check(vec![
        case(
            "two_producers",
            relu_neg,
            &["node `b` (Neg", "output `y` is also produced by node `a`"],
        ),
        case("cycle", cycle, &["is on a cycle through nodes `a`, `b`"]),
        case(
            "self_loop",
            self_loop,
            &["node `s` (Add", "is on a cycle through nodes `s`"],
        ),
        case(
            "undefined_input",
            undefined,
            &["node `a` (Add", "input `nope` is never defined"],
        ),
        case(
            "output_shadows_an_input",
            shadow,
            &[
                "node `a` (Relu",
                "output `x` is also produced by a graph input",
            ],
        ),
        case(
            "two_initializers",
            two_initializers,
            &["two initializers are named `w`"],
        ),
    ]);
}

#[test]
fn dtype_confusion_between_declared_and_actual_data() {
    let relu = |elem| {
        Onnx::new(
            vec![node("r", "Relu", &["x"])],
            vec![value_info("x", elem, Some(&[3, 2]))],
            elem,
        )
    };
    let mut declared_wrong = relu(FLOAT);
    declared_wrong.outputs = vec![i64_value("y", &[3, 2])];
    let mut wrong_shape = relu(FLOAT);
    wrong_shape.outputs = vec![f32_value("y", &[3, 5])];
    check(vec![
        case(
            "initializer_typed_field_mismatch",
            with_weight(TensorProto {
                int64_data: vec![1, 2, 3, 4],
                ..weight(&[2, 2])
            }),
            &["tensor `w`", "holds 4 elements but 0 were given"],
        ),
        case(
            "input_data_of_another_dtype",
            relu(INT64),
            &["input `x`", "i64", "f32"],
        )
        .inputs(vec![("x", f32s(&[3, 2], 1.0))]),
        case(
            "output_declared_as_another_dtype",
            declared_wrong,
            &[
                "graph output `y`",
                "declared as i64[3, 2], but the graph computes f32[3, 2]",
            ],
        ),
        case(
            "output_declared_with_another_shape",
            wrong_shape,
            &[
                "graph output `y`",
                "declared as f32[3, 5], but the graph computes f32[3, 2]",
            ],
        ),
        case(
            "float_indices",
            Onnx::new(vec![node("lookup", "Gather", &["x", "i"])], x32(), FLOAT)
                .with(vec![floats("i", &[1], &[1.0])]),
            &[
                "node `lookup` (Gather",
                "indices must be an i32 or i64 type, got f32",
            ],
        ),
    ]);
}

#[test]
fn nan_and_inf_where_a_size_is_computed() {
    let range = |s: f32, l: f32, d: f32| {
        Onnx::new(
            vec![node("count", "Range", &["s", "l", "d"])],
            vec![],
            FLOAT,
        )
        .with(vec![
            floats("s", &[], &[s]),
            floats("l", &[], &[l]),
            floats("d", &[], &[d]),
        ])
    };
    check(vec![
        case(
            "range_to_inf",
            range(0.0, f32::INFINITY, 1.0),
            &["node `count` (Range", "limit is inf"],
        ),
        case(
            "range_nan_step",
            range(0.0, 5.0, f32::NAN),
            &["node `count` (Range", "delta is NaN"],
        ),
        case(
            "range_from_nan",
            range(f32::NAN, 5.0, 1.0),
            &["node `count` (Range", "start is NaN"],
        ),
        case(
            "constant_of_shape_from_floats",
            Onnx::new(vec![node("fill", "ConstantOfShape", &["s"])], vec![], FLOAT)
                .with(vec![floats("s", &[1], &[f32::NAN])]),
            &[
                "node `fill` (ConstantOfShape",
                "shape must be a constant integer vector",
            ],
        ),
    ]);
}

/// `com.microsoft:MatMulNBits` whose sizes do not match its packed weight: attributes
/// whose product overflows, and a weight shorter than they say.
#[test]
fn matmul_nbits_sizes_that_lie() {
    use kiln::frontend::proto::{attribute_proto::AttributeType, AttributeProto};
    let int = |name: &str, i: i64| AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(i),
        ..Default::default()
    };
    let nbits = |k: i64, n: i64, block: i64| {
        let mut node = node_with(
            "proj",
            "MatMulNBits",
            &["x", "b", "s"],
            vec![
                int("K", k),
                int("N", n),
                int("block_size", block),
                int("bits", 4),
            ],
        );
        node.domain = Some("com.microsoft".into());
        let b = TensorProto {
            name: Some("b".into()),
            dims: vec![2, 1, 16],
            data_type: Some(tensor_proto::DataType::Uint8 as i32),
            raw_data: Some(vec![0x21; 32].into()),
            ..Default::default()
        };
        let inputs = vec![f32_value("x", &[1, k.min(64)])];
        Onnx::new(vec![node], inputs, FLOAT).with(vec![b, floats("s", &[2], &[0.5, 0.25])])
    };
    check(vec![
        case(
            "nbits_overflow",
            nbits(1 << 24, 1 << 24, 1 << 24),
            &["node `proj`", "B must be u8"],
        ),
        case(
            "nbits_short",
            nbits(64, 2, 32),
            &["node `proj`", "B must be u8"],
        ),
    ]);
}
