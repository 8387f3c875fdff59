#!/usr/bin/env python3
"""Writes the QDQ (static int8) version of a vendored tiny model with onnxruntime's
`quantize_static`, and the ONNX definition's outputs (onnx's reference evaluator) on the
vendored inputs at both sizes.

    python tests/models/make_qdq.py tests/models     # needs onnx, onnxruntime, numpy

The reference runs a copy with the default opset raised to 21 (the reference implements
DequantizeLinear from 19 on, with the same per-tensor and per-axis semantics).
Calibration uses the model's own vendored inputs. Activations are u8 per tensor with zero
points, weights s8 symmetric per output channel (onnxruntime's defaults for QDQ, with
per_channel on), as onnxruntime's quantize_static writes them.
"""
import sys

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

DIR = sys.argv[1]


class Reader(CalibrationDataReader):
    def __init__(self, feeds):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


for name in ["bert_tiny_ts"]:
    feeds = [dict(np.load(f"{DIR}/{name}{size}.inputs.npz")) for size in ["", ".alt"]]
    path = f"{DIR}/{name}_qdq.onnx"
    quantize_static(
        f"{DIR}/{name}.onnx", path, Reader(feeds), quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
        op_types_to_quantize=["MatMul", "Gemm"],
    )
    model = onnx.load(path)
    # The reference implements DequantizeLinear from opset 19 on, with the same per-tensor
    # and per-axis semantics as the file's opset: evaluate a copy with the import raised.
    raised = onnx.load(path)
    for o in raised.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 21
    ref = ReferenceEvaluator(raised)
    for size, inputs in zip(["", ".alt"], feeds):
        outs = ref.run(None, inputs)
        np.savez(f"{DIR}/{name}_qdq{size}.inputs.npz", **inputs)
        names = [o.name for o in model.graph.output]
        np.savez(f"{DIR}/{name}_qdq{size}.outputs.npz", **dict(zip(names, outs)))
    ops = [n.op_type for n in model.graph.node]
    print(f"{name}_qdq: {ops.count('QuantizeLinear')} QuantizeLinear, "
          f"{ops.count('DequantizeLinear')} DequantizeLinear, {ops.count('MatMul')} MatMul")
