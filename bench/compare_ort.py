#!/usr/bin/env python3
"""Compare kiln with onnxruntime (and numpy sgemm) side by side, alternating rounds.

Model mode:
  compare_ort.py MODEL.onnx --inputs IN.npz [--threads N] [--runs R] [--warmup W] [--rounds K]
Each round runs `kiln bench MODEL --inputs IN.npz --threads N --runs R --warmup W` (a fresh
process, which prints one JSON line) and onnxruntime on the same inputs (CPU EP,
ORT_ENABLE_ALL, intra_op_num_threads=N, inter_op_num_threads=1, one session for all rounds),
in alternating order. It prints each round, a summary (median over rounds of kiln's and ORT's
median ms, and the median of the per-round kiln/ORT ratios) and one final JSON line.

GEMM mode:
  compare_ort.py --gemm M,K,N [--threads N] ...
builds a one-MatMul ONNX model (input A[M,K] f32, initializer B[K,N] random) in a temporary
folder and compares kiln bench, onnxruntime and numpy float32 A @ B (in a subprocess with
OPENBLAS_NUM_THREADS etc. set to N), reporting GFLOP/s and the ratio kiln/numpy.

--ort-model OTHER.onnx runs onnxruntime on another file (its own quantized version of MODEL,
against `--kiln-arg=--quantize --kiln-arg=int8`). --ort-only skips kiln (baselines before kiln can run a model). Needs only numpy, onnx and
onnxruntime; see bench/README.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def percentile(xs, q):
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


def timing_summary(times_s):
    ms = [t * 1e3 for t in times_s]
    return {"median_ms": statistics.median(ms), "p10_ms": percentile(ms, 10), "p90_ms": percentile(ms, 90)}


def run_kiln(a, model, inputs):
    """Runs `kiln bench` once and returns its JSON object."""
    cmd = [a.kiln, "bench", str(model), "--inputs", str(inputs), "--threads", str(a.threads)]
    cmd += ["--runs", str(a.runs), "--warmup", str(a.warmup)] + a.kiln_arg
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"kiln failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.strip()}")
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    try:
        res = json.loads(lines[-1])
        float(res["median_ms"])
    except (IndexError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"kiln bench printed no JSON line with median_ms ({e}): {p.stdout!r}")
    return res


class OrtRunner:
    """One onnxruntime session, reused for every round."""

    def __init__(self, model, inputs, threads):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        t0 = time.perf_counter()
        self.sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        self.create_ms = (time.perf_counter() - t0) * 1e3
        data = np.load(inputs)
        names = [i.name for i in self.sess.get_inputs()]
        missing = [n for n in names if n not in data.files]
        if missing:
            sys.exit(f"{inputs} lacks model inputs {missing}")
        self.feeds = {n: data[n] for n in names}

    def measure(self, runs, warmup):
        for _ in range(warmup):
            self.sess.run(None, self.feeds)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.sess.run(None, self.feeds)
            times.append(time.perf_counter() - t0)
        return timing_summary(times)


def numpy_worker(spec, runs, warmup):
    """Child process: times float32 A @ B; BLAS threads come from the environment."""
    m, k, n = spec
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), np.float32)
    for _ in range(warmup):
        np.matmul(a, b, out=c)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    print(json.dumps(timing_summary(times)))


def run_numpy(a, spec):
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
        env[var] = str(a.threads)
    cmd = [sys.executable, __file__, "--numpy-worker", ",".join(map(str, spec))]
    cmd += ["--runs", str(a.runs), "--warmup", str(a.warmup)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"numpy worker failed: {p.stderr.strip()}")
    return json.loads(p.stdout.splitlines()[-1])


def gemm_model(spec, folder):
    """Writes a one-MatMul model and its inputs into folder; returns (model, inputs) paths."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = spec
    rng = np.random.default_rng(1)
    b = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "B")
    node = helper.make_node("MatMul", ["A", "B"], ["Y"])
    graph = helper.make_graph(
        [node],
        f"gemm_{m}x{k}x{n}",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])],
        initializer=[b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    model_path = Path(folder) / f"gemm_{m}x{k}x{n}.onnx"
    onnx.save(model, str(model_path))
    inputs_path = Path(folder) / f"gemm_{m}x{k}x{n}.inputs.npz"
    np.savez(inputs_path, A=np.random.default_rng(2).standard_normal((m, k), dtype=np.float32))
    return model_path, inputs_path


def gflops(spec, ms):
    m, k, n = spec
    return 2.0 * m * k * n / (ms * 1e-3) / 1e9


def run_rounds(a, model, inputs, spec):
    """Alternates the contenders for a.rounds rounds; returns a list of per-round dicts."""
    ort_runner = OrtRunner(a.ort_model or model, inputs, a.threads)
    contenders = [] if a.ort_only else ["kiln"]
    contenders.append("ort")
    if spec is not None:
        contenders.append("numpy")
    rounds = []
    for r in range(a.rounds):
        order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
        res = {}
        for who in order:
            if who == "kiln":
                res["kiln"] = run_kiln(a, model, inputs)
            elif who == "ort":
                res["ort"] = ort_runner.measure(a.runs, a.warmup)
            else:
                res["numpy"] = run_numpy(a, spec)
        rounds.append(res)
        print_round(r, res, spec)
    return rounds, ort_runner.create_ms


def print_round(r, res, spec):
    parts = []
    for who in ("kiln", "ort", "numpy"):
        if who in res:
            ms = float(res[who]["median_ms"])
            extra = f" ({gflops(spec, ms):.1f} GFLOP/s)" if spec else ""
            parts.append(f"{who} {ms:.3f} ms{extra}")
    if "kiln" in res:
        parts.append(f"kiln/ort {float(res['kiln']['median_ms']) / res['ort']['median_ms']:.3f}")
    if "kiln" in res and "numpy" in res:
        parts.append(f"kiln/numpy speed {res['numpy']['median_ms'] / float(res['kiln']['median_ms']):.3f}")
    print(f"round {r + 1}: " + ", ".join(parts), flush=True)


def summarize(a, rounds, ort_create_ms, model, inputs, spec):
    def med(who, key="median_ms"):
        return statistics.median(float(x[who][key]) for x in rounds)

    s = {"model": str(model), "inputs": str(inputs), "threads": a.threads, "rounds": a.rounds}
    s.update(runs=a.runs, warmup=a.warmup, ort_median_ms=med("ort"), ort_session_ms=ort_create_ms)
    for who in ("kiln", "ort", "numpy"):
        if who in rounds[0]:
            s[f"{who}_rounds_ms"] = [round(float(x[who]["median_ms"]), 3) for x in rounds]
            # Run-to-run spread within a round (p90/p10 of its timed runs), median over
            # rounds: the steadiness a contender shows on this machine, beside its speed.
            s[f"{who}_spread_p90_p10"] = statistics.median(
                float(x[who]["p90_ms"]) / float(x[who]["p10_ms"]) for x in rounds
            )
    # The 1-minute load average at the end: above the core count, the figures are unreliable.
    s["loadavg_1m"] = os.getloadavg()[0]
    if "kiln" in rounds[0]:
        s["kiln_median_ms"] = med("kiln")
        s["kiln_compile_ms"] = med("kiln", "compile_ms")
        s["kiln_backend"] = rounds[0]["kiln"].get("backend")
        s["ratio_kiln_ort"] = statistics.median(float(x["kiln"]["median_ms"]) / x["ort"]["median_ms"] for x in rounds)
    if spec is not None:
        s["gemm"] = list(spec)
        s["numpy_median_ms"] = med("numpy")
        for who in ("kiln", "ort", "numpy"):
            if f"{who}_median_ms" in s:
                s[f"{who}_gflops"] = gflops(spec, s[f"{who}_median_ms"])
        if "kiln" in rounds[0]:
            # Throughput ratio: kiln GFLOP/s over numpy GFLOP/s, median over rounds.
            s["ratio_kiln_numpy"] = statistics.median(
                x["numpy"]["median_ms"] / float(x["kiln"]["median_ms"]) for x in rounds
            )
        s["ratio_ort_numpy"] = statistics.median(x["numpy"]["median_ms"] / x["ort"]["median_ms"] for x in rounds)
    return s


def print_summary(s):
    print(f"summary over {s['rounds']} rounds, {s['threads']} thread(s), {s['runs']} runs each:")
    print(f"  load average (1 min) at the end: {s['loadavg_1m']:.2f} on {os.cpu_count()} cores")
    for who in ("kiln", "ort", "numpy"):
        if f"{who}_median_ms" in s:
            g = f", {s[f'{who}_gflops']:.1f} GFLOP/s" if "gemm" in s else ""
            sp = f", p90/p10 {s[f'{who}_spread_p90_p10']:.3f}"
            print(f"  {who:5s} median {s[f'{who}_median_ms']:.3f} ms{g}{sp}")
    if "ratio_kiln_ort" in s:
        print(f"  kiln/ort latency ratio (median of rounds): {s['ratio_kiln_ort']:.3f}")
        print(f"  kiln compile: {s['kiln_compile_ms']:.0f} ms")
    if "ratio_kiln_numpy" in s:
        print(f"  kiln/numpy throughput ratio (median of rounds): {s['ratio_kiln_numpy']:.3f}")
    if "ratio_ort_numpy" in s:
        print(f"  ort/numpy throughput ratio (median of rounds): {s['ratio_ort_numpy']:.3f}")
    print(json.dumps(s), flush=True)


def parse_spec(text):
    try:
        spec = tuple(int(x) for x in text.split(","))
    except ValueError:
        spec = ()
    if len(spec) != 3 or min(spec) < 1:
        sys.exit(f"--gemm wants M,K,N (positive integers), got {text!r}")
    return spec


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="ONNX model (model mode)")
    ap.add_argument("--inputs", help="npz of inputs by graph-input name (model mode)")
    ap.add_argument("--gemm", metavar="M,K,N", help="GEMM mode: one MatMul A[M,K] @ B[K,N]")
    ap.add_argument("--kiln", default="target/release/kiln", help="kiln binary")
    ap.add_argument("--kiln-arg", action="append", default=[], help="extra argument for kiln bench (repeatable)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20, help="timed runs per round and contender")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs before them")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ort-only", action="store_true", help="skip kiln")
    ap.add_argument("--ort-model", help="run onnxruntime on this file instead of MODEL (model mode), "
                    "e.g. its quantize_dynamic version against kiln --quantize int8 on the f32 MODEL")
    ap.add_argument("--numpy-worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.numpy_worker is None and (a.gemm is None) == (a.model is None):
        ap.error("give either MODEL --inputs IN.npz or --gemm M,K,N")
    if a.model is not None and a.inputs is None:
        ap.error("model mode needs --inputs IN.npz")
    if min(a.threads, a.runs, a.rounds) < 1 or a.warmup < 0:
        ap.error("--threads, --runs and --rounds must be positive, --warmup non-negative")
    return a


def main():
    a = parse_args()
    if a.numpy_worker is not None:
        numpy_worker(parse_spec(a.numpy_worker), a.runs, a.warmup)
        return
    if not a.ort_only and not Path(a.kiln).exists():
        sys.exit(f"kiln binary {a.kiln} not found (build with cargo build --release, or pass --kiln / --ort-only)")
    if a.gemm is None:
        rounds, create_ms = run_rounds(a, a.model, a.inputs, None)
        print_summary(summarize(a, rounds, create_ms, a.model, a.inputs, None))
        return
    spec = parse_spec(a.gemm)
    with tempfile.TemporaryDirectory(prefix="kiln_gemm_") as d:
        model, inputs = gemm_model(spec, d)
        rounds, create_ms = run_rounds(a, model, inputs, spec)
        print_summary(summarize(a, rounds, create_ms, f"gemm {a.gemm}", inputs.name, spec))


if __name__ == "__main__":
    main()
