#!/usr/bin/env python3
"""Writes the MatMulNBits (int4) versions of two vendored tiny models with onnxruntime's
own quantizer, and onnxruntime's outputs on the vendored inputs at both sizes.

    python tests/models/make_int4.py tests/models     # needs onnx, onnxruntime, numpy

MatMulNBits is a com.microsoft op, which onnx's reference evaluator lacks, so onnxruntime
(graph optimizations off) is the reference, as the issue says.
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

DIR = sys.argv[1]
# bert_tiny with zero points (asymmetric), llama_tiny without (symmetric: zero point 8).
for name, sym in [("bert_tiny", False), ("llama_tiny", True)]:
    q = MatMulNBitsQuantizer(onnx.load(f"{DIR}/{name}.onnx"), bits=4, block_size=32, is_symmetric=sym)
    q.process()
    path = f"{DIR}/{name}_int4.onnx"
    onnx.save(q.model.model, path)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    for size in ["", ".alt"]:
        inputs = dict(np.load(f"{DIR}/{name}{size}.inputs.npz"))
        outs = s.run(None, {i.name: inputs[i.name] for i in s.get_inputs()})
        np.savez(f"{DIR}/{name}_int4{size}.inputs.npz", **inputs)
        np.savez(f"{DIR}/{name}_int4{size}.outputs.npz", **{o.name: v for o, v in zip(s.get_outputs(), outs)})
    ops = [n.op_type for n in q.model.model.graph.node]
    print(f"{name}_int4: {ops.count('MatMulNBits')} MatMulNBits, {ops.count('MatMul')} MatMul left")
