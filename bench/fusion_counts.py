#!/usr/bin/env python3
"""Checks the fused-kernel counts of the full-size exports (bench/export_fullsize.py) with
`kiln inspect --optimized --stats`: each attention block one Attention kernel, each norm one
LayerNorm/RmsNorm, each activation fused, no unfused softmax, and both exporters of a model
fusing the same kernels.

    python3 bench/fusion_counts.py /work/fullsize [--kiln target/release/kiln]
"""
import argparse
import json
import pathlib
import subprocess
import sys

# Per family: layers, the norm kind, the activation kind.
FAMILIES = {
    "minilm": (6, "LayerNorm", "Gelu"),
    "gpt2": (12, "LayerNorm", "GeluTanh"),
    "llama": (4, "RmsNorm", "Silu"),
    "vit": (12, "LayerNorm", "Gelu"),
}
# Ops that must not survive fusion (shape arithmetic included).
LEFTOVERS = ["ShapeOf", "ShapeValue", "GatherNd", "Softmax", "ReduceMean", "Erf", "Tanh", "Sigmoid", "Pow", "Sqrt", "Rsqrt", "IsNan"]


def expected(family):
    layers, norm, act = FAMILIES[family]
    # Two norms per layer plus the final (or embedding) one.
    # Llama-style models rotate q and k in each layer.
    rotary = 2 * layers if family == "llama" else 0
    return {"Attention": layers, norm: 2 * layers + 1, act: layers, "Rotary": rotary}


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
            [args.kiln, "inspect", str(args.dir / f"{name}.onnx"), "--optimized", "--stats"],
            check=True, capture_output=True, text=True,
        ).stdout
        ops = json.loads(out)["ops"]
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
