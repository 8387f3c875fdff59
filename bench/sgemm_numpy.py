"""numpy (OpenBLAS) float32 matmul throughput at kiln's GEMM benchmark sizes.

Set the thread count with OPENBLAS_NUM_THREADS before starting, e.g.
    OPENBLAS_NUM_THREADS=2 python3 bench/sgemm_numpy.py [--sizes MxKxN,...] [--runs R]
Prints a human line and a JSON line per size, like `cargo bench -p kiln-cpu --bench gemm`.
"""

import argparse
import json
import os
import time

import numpy as np


def median_and_best_seconds(m, k, n, runs):
    rng = np.random.default_rng(0)
    a = rng.random((m, k), dtype=np.float32)
    b = rng.random((k, n), dtype=np.float32)
    c = np.empty((m, n), dtype=np.float32)
    for _ in range(3):
        np.matmul(a, b, out=c)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2], times[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="128x384x384,128x384x1536,1024x1024x1024")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    threads = int(os.environ.get("OPENBLAS_NUM_THREADS", "0"))
    for size in args.sizes.split(","):
        m, k, n = (int(d) for d in size.split("x"))
        median, best = median_and_best_seconds(m, k, n, args.runs)
        gflops, best = 2 * m * k * n / median / 1e9, 2 * m * k * n / best / 1e9
        print(f"{m}x{k}x{n} threads={threads} median {gflops:.1f} GFLOP/s (best {best:.1f}) (numpy)")
        record = {"impl": "numpy", "m": m, "k": k, "n": n, "threads": threads}
        record["gflops"] = round(gflops, 2)
        record["best_gflops"] = round(best, 2)
        print(json.dumps(record))


if __name__ == "__main__":
    main()
