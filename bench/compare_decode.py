#!/usr/bin/env python3
"""kiln generate against onnxruntime's own greedy loop, side by side, on one decoder file.

    python3 bench/compare_decode.py MODEL.onnx [--prompt-len 128] [--new-tokens 128]
        [--threads 2] [--kiln target/release/kiln] [--quantize int4] [--genai DIR]

MODEL is a KV-cache decoder export (`optimum-cli export onnx --task
text-generation-with-past`; bench/export_decoders.py --full writes GPT-2 small and a
Llama-style one). In one run, on the same machine state:

1. the bandwidth floor: a streaming read (a small C program, THREADS threads summing a
   512 MiB f32 array with 16 independent sums each) gives GB/s; the weights' bytes over it (all but
   the tables only gathered from, of which a step reads one row) is the least a decode
   step can take, since each step reads every weight once;
2. onnxruntime (intra-op THREADS, in a child process for its peak RSS): prefill with an
   empty past, then one token per step with its `present` outputs fed back;
3. `kiln generate` with the same prompt and thread count;
4. with --genai DIR, onnxruntime-genai's greedy generator over the model builder's
   output in DIR (`python -m onnxruntime_genai.models.builder -i HF_DIR -o DIR -p int4
   -e cpu`; the builder wants transformers 5 and a tokenizer in HF_DIR), prompt ids
   drawn the same way, THREADS intra-op threads (written into DIR's genai_config.json).

Prints one JSON line per measurement and a summary line: median ms/token of each (over
the new tokens after the first), their ratio, each against the floor, whether the greedy
tokens agree, and peak resident memory. Needs numpy, onnx and onnxruntime (a benchmark
virtualenv, never a test dependency).
"""

import argparse
import json
import multiprocessing as mp
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def weight_bytes(model):
    """The bytes a decode step must read: every initializer but the tables only gathered
    from (an embedding lookup reads one row per token)."""
    import onnx
    from onnx import helper

    m = onnx.load(model, load_external_data=False)
    consumers = {}
    for node in m.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    total = 0
    for t in m.graph.initializer:
        if consumers.get(t.name, set()) == {"Gather"}:
            continue
        count = int(np.prod(t.dims)) if t.dims else 1
        total += count * np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return total


STREAM_C = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define N (128L * 1024 * 1024)
static float *x;
static int threads;
static double sums[64];
static void *part(void *arg) {
    long t = (long)arg, lo = N / threads * t, hi = N / threads * (t + 1);
    float acc[16] = {0};
    for (long i = lo; i < hi; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += x[i + j];
    double s = 0;
    for (int j = 0; j < 16; j++) s += acc[j];
    sums[t] = s;
    return 0;
}
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
int main(int argc, char **argv) {
    threads = atoi(argv[1]);
    x = aligned_alloc(64, N * sizeof(float));
    for (long i = 0; i < N; i++) x[i] = (float)(i & 7);
    double best[20];
    for (int r = 0; r < 20; r++) {
        pthread_t th[64];
        double t0 = now();
        for (long t = 0; t < threads; t++) pthread_create(&th[t], 0, part, (void *)t);
        for (int t = 0; t < threads; t++) pthread_join(th[t], 0);
        best[r] = now() - t0;
    }
    for (int i = 0; i < 20; i++)
        for (int j = i + 1; j < 20; j++)
            if (best[j] < best[i]) { double tmp = best[i]; best[i] = best[j]; best[j] = tmp; }
    printf("%f %f\n", N * sizeof(float) / best[10] / 1e9, sums[0]);
    return 0;
}
"""


def bandwidth(threads):
    """GB/s of a streaming read of 512 MiB by THREADS threads (16 independent sums each,
    vectorized by the C compiler; the median of 20 passes)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "stream.c", Path(tmp) / "stream"
        src.write_text(STREAM_C)
        subprocess.run(["cc", "-O3", "-march=native", "-pthread", str(src), "-o", str(exe)],
                       check=True)
        out = subprocess.run([str(exe), str(threads)], check=True, capture_output=True,
                             text=True).stdout
    return float(out.split()[0])


def step_feed(inputs, feed_ids, total, cache):
    """One greedy step's feed: the new ids after `total` cached tokens, the attention
    mask and positions when the model takes them (`inputs`: its inputs by name), and the
    cache."""
    new = len(feed_ids)
    feed = {"input_ids": np.array([feed_ids], np.int64)}
    if "attention_mask" in inputs:
        feed["attention_mask"] = np.ones((1, total + new), np.int64)
    if "position_ids" in inputs:
        feed["position_ids"] = np.arange(total, total + new, dtype=np.int64)[None]
    feed.update(cache)
    return feed


def genai_head_size(model):
    """The head size of a model builder's output, whose past inputs leave it symbolic
    (`kv_cache_dim`): from the genai_config.json beside it."""
    config = json.loads((Path(model).parent / "genai_config.json").read_text())
    return config["model"]["decoder"]["head_size"]


def ort_loop(model, prompt, new_tokens, threads, result):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = [o.name for o in sess.get_outputs()]
    past_names = [n for n in inputs if n.startswith("past_key_values.")]
    cache = {}
    for n in past_names:
        shape = [d if isinstance(d, int) else 0 for d in inputs[n].shape]
        shape[0] = 1
        if not isinstance(inputs[n].shape[3], int):
            shape[3] = genai_head_size(model)
        cache[n] = np.zeros(shape, np.float32)
    feed_ids, total, ids, steps = list(prompt), 0, [], []
    for _ in range(new_tokens):
        start = time.perf_counter()
        new = len(feed_ids)
        got = dict(zip(outputs, sess.run(None, step_feed(inputs, feed_ids, total, cache))))
        token = int(np.argmax(got["logits"][0, -1]))
        for n in past_names:
            cache[n] = got[n.replace("past_key_values", "present")]
        steps.append((time.perf_counter() - start) * 1e3)
        ids.append(token)
        total += new
        feed_ids = [token]
    rss = peak_rss_mb()
    result.put({"ids": ids, "prefill_ms": steps[0], "step_ms": steps[1:], "peak_rss_mb": rss})


def genai_loop(folder, prompt, new_tokens, threads, result):
    import onnxruntime_genai as og

    path = Path(folder) / "genai_config.json"
    cfg = json.loads(path.read_text())
    opts = cfg["model"]["decoder"].setdefault("session_options", {})
    opts["intra_op_num_threads"] = threads
    opts["inter_op_num_threads"] = 1
    path.write_text(json.dumps(cfg, indent=1))
    model = og.Model(folder)
    params = og.GeneratorParams(model)
    total = len(prompt) + new_tokens
    params.set_search_options(max_length=total, min_length=total, do_sample=False)
    gen = og.Generator(model, params)
    start = time.perf_counter()
    gen.append_tokens(prompt)
    prefill = (time.perf_counter() - start) * 1e3
    steps = []
    while not gen.is_done():
        start = time.perf_counter()
        gen.generate_next_token()
        steps.append((time.perf_counter() - start) * 1e3)
    rss = peak_rss_mb()
    result.put({"prefill_ms": prefill, "step_ms": steps[1:], "peak_rss_mb": rss})


def peak_rss_mb():
    """This process's own peak resident memory (VmHWM), as `kiln generate` reports its
    own. Not getrusage's ru_maxrss: Linux carries that across exec, so a spawned child
    reports at least its parent's resident memory at the fork (this script's, after it
    opened the model to read the vocabulary size)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(target, *args):
    """Runs `target(*args, queue)` in a fresh process; what it puts on the queue."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def median(v):
    return float(np.median(v)) if v else 0.0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kiln", default="target/release/kiln")
    p.add_argument("--quantize", default=None)
    p.add_argument("--genai", default=None, metavar="DIR")
    args = p.parse_args()

    import onnxruntime as ort

    sess = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    vocab = sess.get_outputs()[0].shape[2]
    vocab = vocab if isinstance(vocab, int) else 1000
    del sess
    prompt = np.random.default_rng(1).integers(0, vocab, args.prompt_len).tolist()

    gbs = bandwidth(args.threads)
    wbytes = weight_bytes(args.model)
    floor = wbytes / (gbs * 1e9) * 1e3
    print(json.dumps({"measure": "bandwidth", "threads": args.threads, "gb_per_s": round(gbs, 2),
                      "weight_mb": round(wbytes / 1e6, 1), "floor_ms_per_token": round(floor, 3)}))

    ort_out = child(ort_loop, args.model, prompt, args.new_tokens, args.threads)
    ort_ms = median(ort_out["step_ms"])
    print(json.dumps({"measure": "onnxruntime", "version": ort.__version__,
                      "prefill_ms": round(ort_out["prefill_ms"], 3), "ms_per_token": round(ort_ms, 3),
                      "peak_rss_mb": round(ort_out["peak_rss_mb"], 1)}))

    cmd = [args.kiln, "generate", args.model, "--prompt-ids", ",".join(map(str, prompt)),
           "--max-new-tokens", str(args.new_tokens), "--threads", str(args.threads)]
    if args.quantize:
        cmd += ["--quantize", args.quantize]
    env = dict(os.environ)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    kiln_out = json.loads(out.strip().splitlines()[-1])
    print(json.dumps({"measure": "kiln", "quantize": args.quantize,
                      "prefill_ms": kiln_out["prefill_ms"], "ms_per_token": kiln_out["ms_per_token"],
                      "p90_ms_per_token": kiln_out["p90_ms_per_token"],
                      "peak_rss_mb": kiln_out["peak_rss_mb"]}))

    genai_ms = None
    if args.genai:
        g = child(genai_loop, args.genai, prompt, args.new_tokens, args.threads)
        genai_ms = median(g["step_ms"])
        print(json.dumps({"measure": "onnxruntime-genai", "prefill_ms": round(g["prefill_ms"], 3),
                          "ms_per_token": round(genai_ms, 3), "peak_rss_mb": round(g["peak_rss_mb"], 1)}))

    same = kiln_out["ids"] == ort_out["ids"]
    first_diff = next((i for i, (a, b) in enumerate(zip(kiln_out["ids"], ort_out["ids"])) if a != b), None)
    print(json.dumps({
        "summary": Path(args.model).name, "prompt": args.prompt_len, "new_tokens": args.new_tokens,
        "threads": args.threads,
        "kiln_ms": kiln_out["ms_per_token"], "ort_ms": round(ort_ms, 3),
        "kiln_over_ort": round(kiln_out["ms_per_token"] / ort_ms, 3) if ort_ms else None,
        "kiln_over_floor": round(kiln_out["ms_per_token"] / floor, 3),
        "ort_over_floor": round(ort_ms / floor, 3),
        "greedy_tokens_identical": same if not args.quantize else None,
        "first_difference": first_diff,
        "kiln_rss_mb": kiln_out["peak_rss_mb"], "ort_rss_mb": round(ort_out["peak_rss_mb"], 1),
        "genai_ms": round(genai_ms, 3) if genai_ms else None,
        "kiln_over_genai": round(kiln_out["ms_per_token"] / genai_ms, 3) if genai_ms else None,
    }))


if __name__ == "__main__":
    main()
