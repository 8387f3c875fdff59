#!/usr/bin/env python3
"""Judges kiln's runs of onnxruntime-quantized files (from bench/quantize_ort.py) against the
ONNX definition of each file, beside onnxruntime's own run of it, as issue 12's import
acceptance asks. A developer script, never a test dependency; needs numpy and onnxruntime.

    python bench/check_imports.py /work/fullsize [--kiln target/release/kiln] [--only minilm_qdyn]

For each FULLSIZE/q/NAME_KIND.onnx with its .SIZE.inputs.npz / .outputs.npz (the definition's
outputs, written by quantize_ort.py), and the f32 model's FULLSIZE/NAME.SIZE.outputs.npz, it
prints per output the cosine of kiln's and of onnxruntime's (optimized) result against the
definition and against the f32 model. kiln runs the file as written (`kiln run`, default
pipeline, no --quantize).

Dynamic and static activation quantization turn rounding differences into whole quantization
steps, so two exact implementations disagree on full-size models: read kiln's figure beside
onnxruntime's, not alone.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort


def cosine(a, b):
    a = a.ravel().astype(np.float64)
    b = b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def kiln_outputs(kiln, model, inputs):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.npz")
        r = subprocess.run([kiln, "run", model, "--inputs", inputs, "-o", out],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"kiln run {model} failed:\n{r.stderr}")
        return dict(np.load(out))


def ort_outputs(model, feeds):
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="the full-size directory, holding q/ from quantize_ort.py")
    ap.add_argument("--kiln", default="target/release/kiln")
    ap.add_argument("--only", nargs="*", help="file names (NAME_KIND) to check")
    a = ap.parse_args()
    print(f"{'file':<14} {'output':<20} {'kiln~def':>10} {'ort~def':>10} {'kiln~f32':>10} {'ort~f32':>10}")
    for model in sorted(glob.glob(os.path.join(a.dir, "q", "*.onnx"))):
        name = os.path.basename(model)[:-5]
        if a.only and name not in a.only:
            continue
        base = name.rsplit("_", 1)[0]
        sizes = [p.split(".")[-3] for p in glob.glob(model[:-5] + ".*.outputs.npz")]
        if not sizes:
            print(f"{name}: no definition outputs (run quantize_ort.py)", file=sys.stderr)
            continue
        for size in sorted(sizes):
            inputs = model[:-5] + f".{size}.inputs.npz"
            definition = dict(np.load(model[:-5] + f".{size}.outputs.npz"))
            f32 = dict(np.load(os.path.join(a.dir, f"{base}.{size}.outputs.npz")))
            feeds = dict(np.load(inputs))
            got = kiln_outputs(a.kiln, model, inputs)
            theirs = ort_outputs(model, feeds)
            for out, want in definition.items():
                row = [cosine(got[out], want), cosine(theirs[out], want)]
                if out in f32:
                    row += [cosine(got[out], f32[out]), cosine(theirs[out], f32[out])]
                figures = " ".join(f"{x:>10.6f}" for x in row)
                print(f"{name + '.' + size:<14} {out[:20]:<20} {figures}")


if __name__ == "__main__":
    main()
