#!/usr/bin/env python3
"""Compare two kiln configurations side by side: two binaries, or one binary with two sets
of `kiln bench` arguments, in alternating rounds.

  ab_kiln.py MODEL --inputs IN.npz --a BIN [--a-arg ARG ...] --b BIN [--b-arg ARG ...]
             [--threads N] [--runs R] [--warmup W] [--rounds K]

Each round runs `kiln bench` once per side (a fresh process each, in alternating order, so a
slow spell of this shared machine falls on both). It prints every round, then the median
over rounds of each side's median and the median of the per-round ratios b/a, and one JSON
line. Used for before/after measurements of one change (build the old commit in a git
worktree) and for option pairs such as f32 against `--quantize int8`. Needs only Python.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


def run_bench(binary, extra, a):
    """Runs `kiln bench` once and returns its median in ms."""
    cmd = [binary, "bench", a.model, "--inputs", a.inputs, "--threads", str(a.threads)]
    cmd += ["--runs", str(a.runs), "--warmup", str(a.warmup)] + extra
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"kiln failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.strip()}")
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    try:
        return float(json.loads(lines[-1])["median_ms"])
    except (IndexError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"kiln bench printed no JSON line with median_ms ({e}): {p.stdout!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--inputs", required=True, help="npz of inputs by graph-input name")
    ap.add_argument("--a", required=True, help="kiln binary of side a (the baseline)")
    ap.add_argument("--b", required=True, help="kiln binary of side b (may be the same binary)")
    ap.add_argument("--a-arg", action="append", default=[], help="extra `kiln bench` argument for side a")
    ap.add_argument("--b-arg", action="append", default=[], help="extra `kiln bench` argument for side b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    if min(a.threads, a.runs, a.rounds) < 1 or a.warmup < 0:
        ap.error("--threads, --runs and --rounds must be positive, --warmup non-negative")
    sides = {"a": (a.a, a.a_arg), "b": (a.b, a.b_arg)}
    rounds = []
    for r in range(a.rounds):
        order = ["a", "b"] if r % 2 == 0 else ["b", "a"]
        res = {who: run_bench(*sides[who], a) for who in order}
        rounds.append(res)
        print(f"round {r + 1}: a {res['a']:.3f} ms, b {res['b']:.3f} ms, b/a {res['b'] / res['a']:.4f}", flush=True)
    s = {
        "model": a.model,
        "a": " ".join([a.a] + a.a_arg),
        "b": " ".join([a.b] + a.b_arg),
        "threads": a.threads,
        "rounds_ms": rounds,
        "a_median_ms": statistics.median(x["a"] for x in rounds),
        "b_median_ms": statistics.median(x["b"] for x in rounds),
        "ratio_b_a": statistics.median(x["b"] / x["a"] for x in rounds),
        # Above the core count, the figures are unreliable.
        "loadavg_1m": os.getloadavg()[0],
    }
    print(f"a median {s['a_median_ms']:.3f} ms, b median {s['b_median_ms']:.3f} ms, b/a (median of rounds) {s['ratio_b_a']:.4f}")
    print(json.dumps(s), flush=True)


if __name__ == "__main__":
    main()
