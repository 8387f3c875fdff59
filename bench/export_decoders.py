#!/usr/bin/env python3
"""Export tiny KV-cache decoders with optimum-onnx or torch.onnx, and onnxruntime's
greedy tokens.

A developer script that makes test data; never a test dependency. optimum-onnx 0.1 pulls
transformers 4.57, so give it its own virtualenv:

    python3 -m venv /tmp/optenv
    /tmp/optenv/bin/pip install optimum-onnx "transformers==4.57.*" onnx onnxruntime
    /tmp/optenv/bin/python bench/export_decoders.py tests/models

For each of a GPT-2 and a Llama-style decoder with random weights (seeded, tiny sizes),
it writes into OUT:

  NAME_kv.onnx           `optimum-cli export onnx --task text-generation-with-past`:
                         input_ids, attention_mask, position_ids (Llama), and
                         past_key_values.N.key/value in; logits and present.N.key/value out
  NAME_kv.greedy.json    {"prompt": [16 ids], "ids": [64 ids]}: onnxruntime's own greedy
                         loop over that file, its present outputs fed back as the past
  NAME_kv.inputs.npz / .outputs.npz       a prefill: batch 2, 16 tokens, empty past
  NAME_kv.alt.inputs.npz / .outputs.npz   a decode step: batch 1, 1 token after 7

With --exporter torchscript,dynamo it exports the same tiny networks with torch.onnx
instead (TorchScript at opset 14, dynamo at opset 18), the past built by hand as users do
(`bench/export_fullsize.py`): a wrapper takes input_ids, attention_mask, position_ids
(Llama) and the flat past_key_values.N.key/value, fills a `DynamicCache`, and returns
logits and the flat present.N.key/value. These need transformers 5 and onnxscript (the
torch virtualenv of bench/export_fullsize.py); they write NAME_kv_ts.onnx and
NAME_kv_dynamo.onnx with their greedy and reference files.

With --exporter genai it runs onnxruntime-genai's model builder (`python -m
onnxruntime_genai.models.builder -p fp32 -e cpu`, transformers 5) over the tiny Llama
saved with a word-level tokenizer (tests/models/gpt2_kv.tokenizer.json), and writes
llama_kv_genai.onnx (weights inline; the tiny Llama at hidden size 64, since
onnxruntime's GroupQueryAttention takes head sizes in multiples of 16 only):
com.microsoft GroupQueryAttention (packed QKV,
rotary inside, its own cache inputs), SkipSimplifiedLayerNormalization and
SimplifiedLayerNormalization, with its greedy and reference files.

The greedy loop is the one `bench/compare_decode.py` times: prefill with an empty past
(length 0), then one token per step, attention mask all ones, positions counting on.

With --full it exports the full-size networks instead (GPT-2 small, 124M parameters, and
the Llama-style decoder of bench/export_fullsize.py, with a causal-LM head), random
weights at their default initialization, for benchmarks (`bench/compare_decode.py`);
their greedy files are written when no step has a near tie.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import transformers
from compare_decode import step_feed
from export_fullsize import LLAMA_CONFIG

PROMPT_LEN, NEW_TOKENS = 16, 64


def full(kind):
    torch.manual_seed(0)
    if kind == "gpt2":
        return transformers.GPT2LMHeadModel(transformers.GPT2Config())
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA_CONFIG))


def tiny(kind, hidden=32):
    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(
            vocab_size=96, n_positions=128, n_embd=32, n_layer=2, n_head=2
        )
        return transformers.GPT2LMHeadModel(config)
    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return transformers.LlamaForCausalLM(config)


def export(kind, out, size):
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "onnx"
        model = full(kind) if size == "full" else tiny(kind)
        if size == "tiny":
            # Larger weights than the default init, so the logits' top two are far
            # apart and the greedy tokens do not hinge on rounding.
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(4.0)
        model.save_pretrained(src)
        subprocess.run(
            ["optimum-cli", "export", "onnx", "--model", str(src),
             "--task", "text-generation-with-past", str(dst)],
            check=True,
        )
        path = out / f"{kind}_kv.onnx"
        path.write_bytes((dst / "model.onnx").read_bytes())
        data = dst / "model.onnx_data"
        if data.exists():
            # The external data keeps the name the model file refers to.
            (out / "model.onnx_data").write_bytes(data.read_bytes())
        return path


class PastStep(torch.nn.Module):
    """One generation step over flat tensors: the past in, logits and the present out."""

    def __init__(self, model, positions):
        super().__init__()
        self.model, self.positions = model, positions
        self.layers = model.config.num_hidden_layers

    def forward(self, input_ids, attention_mask, *rest):
        position_ids = rest[0] if self.positions else None
        past = rest[1:] if self.positions else rest
        cache = transformers.DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids, past_key_values=cache, use_cache=True)
        flat = []
        for layer in out.past_key_values.layers:
            flat += [layer.keys, layer.values]
        return (out.logits, *flat)


def export_torch(kind, out, exporter):
    """The tiny `kind` through torch.onnx (`torchscript` or `dynamo`), traced at batch 1,
    3 new tokens after 4; every length symbolic."""
    model = tiny(kind).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    cfg = model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    depth = cfg.hidden_size // cfg.num_attention_heads
    positions = kind == "llama"
    batch, new, past = 1, 3, 4
    args = [torch.randint(0, 96, (batch, new)), torch.ones(batch, past + new, dtype=torch.int64)]
    names, outs = ["input_ids", "attention_mask"], ["logits"]
    if positions:
        args.append(torch.arange(past, past + new)[None])
        names.append("position_ids")
    for i in range(cfg.num_hidden_layers):
        for kv in ("key", "value"):
            args.append(torch.randn(batch, heads, past, depth))
            names.append(f"past_key_values.{i}.{kv}")
            outs.append(f"present.{i}.{kv}")
    suffix = {"torchscript": "ts", "dynamo": "dynamo"}[exporter]
    path = out / f"{kind}_kv_{suffix}.onnx"
    step = PastStep(model, positions)
    if exporter == "torchscript":
        total = "past_sequence_length + sequence_length"
        axes = {n: {0: "batch_size", 1: "sequence_length"} for n in ["input_ids", "logits"]}
        axes["attention_mask"] = {0: "batch_size", 1: total}
        if positions:
            axes["position_ids"] = {0: "batch_size", 1: "sequence_length"}
        axes.update({n: {0: "batch_size", 2: "past_sequence_length"} for n in names if n.startswith("past")})
        axes.update({n: {0: "batch_size", 2: total} for n in outs[1:]})
        torch.onnx.export(step, tuple(args), path, input_names=names, output_names=outs,
                          dynamic_axes=axes, opset_version=14, dynamo=False)
    else:
        from torch.export import Dim

        b, s = Dim("batch_size", max=64), Dim("sequence_length", max=128)
        p, t = Dim("past_sequence_length", max=128), Dim("total_sequence_length", max=256)
        rest = ([{0: b, 1: s}] if positions else []) + [{0: b, 2: p}] * (2 * cfg.num_hidden_layers)
        torch.onnx.export(step, tuple(args), path, input_names=names, output_names=outs,
                          dynamic_shapes=({0: b, 1: s}, {0: b, 1: t}, tuple(rest)),
                          opset_version=18, dynamo=True, external_data=False)
    return path


def export_genai(out):
    """The tiny Llama through onnxruntime-genai's model builder, f32, weights inline."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        hf, built = Path(tmp) / "hf", Path(tmp) / "built"
        # onnxruntime's GroupQueryAttention takes head sizes in multiples of 16 only.
        model = tiny("llama", hidden=4 * GENAI_HEAD)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(4.0)
        model.save_pretrained(hf)
        tokenizer = Path(__file__).resolve().parent.parent / "tests/models/gpt2_kv.tokenizer.json"
        (hf / "tokenizer.json").write_bytes(tokenizer.read_bytes())
        (hf / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
        subprocess.run(
            [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf),
             "-o", str(built), "-p", "fp32", "-e", "cpu"],
            check=True,
        )
        path = out / "llama_kv_genai.onnx"
        onnx.save(onnx.load(str(built / "model.onnx")), str(path))
        return path


GENAI_HEAD = 16


def past_shape(spec, batch, past_len):
    """A past input's shape: its declared heads and depth, where the builder leaves the
    depth symbolic (`kv_cache_dim`) the head size of the model it was given."""
    depth = spec.shape[3] if isinstance(spec.shape[3], int) else GENAI_HEAD
    return [batch, spec.shape[1], past_len, depth]


def greedy(path):
    """The first prompt (by seed) whose greedy run has no near tie between the top two
    logits, so the tokens do not hinge on rounding; the prompt and the tokens."""
    for seed in range(7, 64):
        got = greedy_from(path, seed)
        if got is not None:
            return got
    raise SystemExit(f"{path}: every prompt tried has a near tie")


def vocab_of(sess):
    return sess.get_outputs()[0].shape[2]


def greedy_from(path, seed):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = [o.name for o in sess.get_outputs()]
    past = [n for n in inputs if n.startswith("past_key_values.")]
    rng = np.random.default_rng(seed)
    vocab = vocab_of(sess) if isinstance(vocab_of(sess), int) else 96
    prompt = rng.integers(0, vocab, PROMPT_LEN).tolist()
    feed_ids, done = list(prompt), []
    cache = {}
    for n in past:
        cache[n] = np.zeros(past_shape(inputs[n], 1, 0), np.float32)
    total = 0
    for _ in range(NEW_TOKENS):
        new = len(feed_ids)
        got = dict(zip(outputs, sess.run(None, step_feed(inputs, feed_ids, total, cache))))
        logits = got["logits"][0, -1]
        top = np.sort(logits)[-2:]
        if top[1] - top[0] < 1e-3:
            return None
        token = int(np.argmax(logits))
        done.append(token)
        total += new
        feed_ids = [token]
        for n in past:
            cache[n] = got[n.replace("past_key_values", "present")]
    return prompt, done


def step_inputs(sess, batch, new, past_len, rng):
    """Random ids and a random past of `past_len`, as one step of generation feeds them."""
    inputs = {i.name: i for i in sess.get_inputs()}
    total = past_len + new
    feed = {"input_ids": rng.integers(0, 96, (batch, new)).astype(np.int64)}
    if "attention_mask" in inputs:
        feed["attention_mask"] = np.ones((batch, total), np.int64)
    if "position_ids" in inputs:
        feed["position_ids"] = np.tile(np.arange(past_len, total, dtype=np.int64), (batch, 1))
    for n, i in inputs.items():
        if n.startswith("past_key_values."):
            feed[n] = rng.standard_normal(past_shape(i, batch, past_len)).astype(np.float32)
    return feed


def references(path, out):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(3)
    stem = path.name[: -len(".onnx")]
    for size, (batch, new, past_len) in {"": (2, 16, 0), ".alt": (1, 1, 7)}.items():
        feed = step_inputs(sess, batch, new, past_len, rng)
        got = dict(zip(names, sess.run(None, feed)))
        np.savez(out / f"{stem}{size}.inputs.npz", **feed)
        np.savez(out / f"{stem}{size}.outputs.npz", **got)


def main():
    argv = sys.argv[1:]
    exporters = ["optimum"]
    if "--exporter" in argv:
        at = argv.index("--exporter")
        exporters = argv[at + 1].split(",")
        del argv[at : at + 2]
    args = [a for a in argv if a != "--full"]
    size = "full" if "--full" in sys.argv else "tiny"
    out = Path(args[0] if args else "tests/models")
    out.mkdir(parents=True, exist_ok=True)
    for exporter in (e for e in exporters if e != "optimum"):
        for kind in ["gpt2", "llama"]:
            if exporter == "genai" and kind == "gpt2":
                continue
            path = export_genai(out) if exporter == "genai" else export_torch(kind, out, exporter)
            references(path, out)
            prompt, ids = greedy(path)
            stem = path.name[: -len(".onnx")]
            (out / f"{stem}.greedy.json").write_text(json.dumps({"prompt": prompt, "ids": ids}) + "\n")
            print(f"{path}: {path.stat().st_size} bytes, greedy {ids[:8]}...")
    if "optimum" not in exporters:
        return
    for kind in ["gpt2", "llama"]:
        path = export(kind, out, size)
        if size == "full":
            # One data file per folder name: keep each model in its own folder.
            (out / kind).mkdir(exist_ok=True)
            path = path.rename(out / kind / path.name)
            data = out / "model.onnx_data"
            if data.exists():
                data.rename(out / kind / "model.onnx_data")
            print(f"{path}: written")
            continue
        references(path, out)
        prompt, ids = greedy(path)
        (out / f"{kind}_kv.greedy.json").write_text(json.dumps({"prompt": prompt, "ids": ids}) + "\n")
        print(f"{path}: {path.stat().st_size} bytes, greedy {ids[:8]}...")


if __name__ == "__main__":
    main()
