#!/usr/bin/env python3
"""Checks the fused-kernel counts of the full-size exports (bench/export_fullsize.py) with
`kiln inspect --optimized`: each attention block one Attention kernel, each norm one
LayerNorm/RmsNorm, each activation in a Linear's epilogue, Q/K/V one GEMM (4 projection
GEMMs per layer, 5 with a gated MLP), no unfused softmax or shape arithmetic, and both
exporters of a model fusing the same kernels.

    python3 bench/fusion_counts.py /work/fullsize [--kiln target/release/kiln]
"""
import argparse
import json
import pathlib
import re
import subprocess
import sys

# Per family: layers, the norm kind, the activation (as a Linear epilogue attribute),
# projection GEMMs per layer.
FAMILIES = {
    "minilm": (6, "layer_norm", "gelu", 4),
    "gpt2": (12, "layer_norm", "gelu_tanh", 4),
    "llama": (4, "rms_norm", "silu", 5),
    "vit": (12, "layer_norm", "gelu", 4),
}
# Ops that must not survive fusion (shape arithmetic included).
LEFTOVERS = ["shape_of", "shape_value", "gather_nd", "softmax", "reduce_mean", "erf", "tanh",
             "sigmoid", "pow", "sqrt", "rsqrt", "is_nan", "gelu", "gelu_tanh", "silu"]


def expected(family):
    layers, norm, act, gemms = FAMILIES[family]
    # Two norms per layer plus the final (or embedding) one; Llama-style models rotate q
    # and k in each layer.
    rotary = 2 * layers if family == "llama" else 0
    return {"attention": layers, norm: 2 * layers + 1, f"linear+{act}": layers,
            "linear|matmul": gemms * layers, "rotary": rotary}


def counts(text):
    """Op counts of a printed graph, plus `linear+ACT` per epilogue activation and
    `linear|matmul` for all projection GEMMs."""
    ops = {}
    for m in re.finditer(r"^ +%\S+ = (\w+)(.*)$", text, re.M):
        op, rest = m.group(1), m.group(2)
        ops[op] = ops.get(op, 0) + 1
        act = re.search(r"activation=(\w+)", rest)
        if op == "linear" and act and act.group(1) != "none":
            key = f"linear+{act.group(1)}"
            ops[key] = ops.get(key, 0) + 1
    ops["linear|matmul"] = ops.get("linear", 0) + ops.get("matmul", 0)
    return ops


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--kiln", default="target/release/kiln")
    args = ap.parse_args()
    index = json.loads((args.dir / "index.json").read_text())
    failures, fused = 0, {}
    for m in index["models"]:
        name = m["name"]
        family = name.removesuffix("_ts")
        out = subprocess.run(
            [args.kiln, "inspect", str(args.dir / f"{name}.onnx"), "--optimized"],
            check=True, capture_output=True, text=True,
        ).stdout
        ops = counts(out)
        want = expected(family)
        got = {k: ops.get(k, 0) for k in want}
        left = {k: ops[k] for k in LEFTOVERS if ops.get(k)}
        ok = got == want and not left
        failures += not ok
        fused.setdefault(family, {})[name] = got
        print(f"{name}: {got}{'' if not left else f', left unfused {left}'} "
              f"{'ok' if ok else f'FAIL (want {want})'}")
    for family, by_export in fused.items():
        if len(set(json.dumps(v, sort_keys=True) for v in by_export.values())) > 1:
            print(f"{family}: exporters differ: {by_export}")
            failures += 1
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
