#!/usr/bin/env python3
"""Runs `kiln run` on each full-size export and input set, and compares the outputs with
the onnxruntime references by the acceptance tolerance (|got - want| <= atol + rtol*|want|).

    python bench/check_fullsize.py /work/fullsize [--models minilm gpt2_ts] [--backend cpu]

Prints one line per (model, input set) with the worst absolute error and the worst
ratio err / (atol + rtol*|want|) (pass when <= 1); exits non-zero if any fails.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

RTOL, ATOL = 1e-4, 1e-5


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kiln", default="target/release/kiln")
    a = ap.parse_args()
    models = a.models or sorted(f[:-5] for f in os.listdir(a.dir) if f.endswith(".onnx"))
    failed = 0
    for m in models:
        tags = sorted(f[len(m):-len(".inputs.npz")] for f in os.listdir(a.dir)
                      if f.startswith(m + ".") and f.endswith(".inputs.npz"))
        for tag in tags:
            base = os.path.join(a.dir, m + tag)
            with tempfile.TemporaryDirectory() as td:
                out = os.path.join(td, "out.npz")
                cmd = [a.kiln, "run", os.path.join(a.dir, m + ".onnx"), "--inputs", base + ".inputs.npz",
                       "--backend", a.backend, "--threads", str(a.threads), "-o", out]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    print(f"{m}{tag}: kiln failed: {r.stderr.strip()}")
                    failed += 1
                    continue
                got, want = np.load(out), np.load(base + ".outputs.npz")
                worst_abs, worst_ratio = 0.0, 0.0
                for k in want.files:
                    g, w = got[k].astype(np.float64), want[k].astype(np.float64)
                    if g.shape != w.shape:
                        worst_ratio = float("inf")
                        continue
                    err = np.abs(g - w)
                    worst_abs = max(worst_abs, float(err.max()))
                    worst_ratio = max(worst_ratio, float((err / (ATOL + RTOL * np.abs(w))).max()))
                ok = worst_ratio <= 1.0
                failed += not ok
                print(f"{m}{tag}: max abs err {worst_abs:.3g}, err/tol {worst_ratio:.3f} {'ok' if ok else 'FAIL'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
