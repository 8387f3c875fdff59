#!/usr/bin/env python3
"""Writes onnxruntime's own quantized versions of a full-size model and the ONNX definition's
outputs on its batch-1 / seq-128 inputs, for checking kiln's import rules and timing them
against onnxruntime (bench/compare_ort.py). A developer script, never a test dependency;
needs onnx, onnxruntime and numpy.

    python bench/quantize_ort.py /work/fullsize/minilm.onnx OUT_DIR [--kinds qdyn,qdq,nbits]

Kinds (files OUT_DIR/NAME_KIND.onnx, NAME_KIND.SIZE.inputs.npz / .outputs.npz, SIZE b1s128, or alt for ViT):
  qdyn   quantize_dynamic: u8 activations per tensor, s8 weights per output channel
         (DynamicQuantizeLinear + MatMulInteger); reference: onnx's ReferenceEvaluator
  qdq    quantize_static in the QDQ format, u8 activations / s8 per-channel weights,
         calibrated on the model's vendored inputs; reference: the ReferenceEvaluator
  nbits  MatMulNBits, 4 bits in blocks of 32 (asymmetric); reference: onnxruntime with
         graph optimizations off (the ReferenceEvaluator has no MatMulNBits)
The ReferenceEvaluator runs a copy with the default opset raised to 21 (it implements
DequantizeLinear from 19 on, with the same per-tensor and per-axis semantics).
"""
import argparse
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator


def inputs_of(model_path, size):
    return dict(np.load(model_path[:-5] + f".{size}.inputs.npz" if size else model_path[:-5] + ".inputs.npz"))


def reference(path, feeds):
    raised = onnx.load(path)
    for o in raised.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = max(o.version, 21)
    ref = ReferenceEvaluator(raised)
    names = [o.name for o in raised.graph.output]
    return dict(zip(names, ref.run(None, feeds)))


def ort_reference(path, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--kinds", default="qdyn,qdq,nbits")
    a = ap.parse_args()
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    name = os.path.basename(a.model)[:-5]
    # Batch 1 / seq 128 for the text models; ViT's batch-1 size is `alt`.
    size = "b1s128" if os.path.exists(a.model[:-5] + ".b1s128.inputs.npz") else "alt"
    feeds = inputs_of(a.model, size)
    for kind in a.kinds.split(","):
        path = os.path.join(a.out, f"{name}_{kind}.onnx")
        if kind == "qdyn":
            quantize_dynamic(a.model, path, weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul", "Gemm"])
            outs = reference(path, feeds)
        elif kind == "qdq":
            calib = [inputs_of(a.model, s) for s in sorted({"", "alt", size})]

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self.it = iter(calib)

                def get_next(self):
                    return next(self.it, None)

            quantize_static(a.model, path, Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=True, op_types_to_quantize=["MatMul", "Gemm"])
            outs = reference(path, feeds)
        elif kind == "nbits":
            q = MatMulNBitsQuantizer(onnx.load(a.model), bits=4, block_size=32, is_symmetric=False)
            q.process()
            onnx.save(q.model.model, path)
            outs = ort_reference(path, feeds)
        else:
            raise SystemExit(f"unknown kind {kind}")
        np.savez(path[:-5] + f".{size}.inputs.npz", **feeds)
        np.savez(path[:-5] + f".{size}.outputs.npz", **outs)
        ops = [n.op_type for n in onnx.load(path, load_external_data=False).graph.node]
        print(f"{name}_{kind}: " + ", ".join(f"{ops.count(o)} {o}" for o in
              ["MatMulInteger", "DequantizeLinear", "MatMulNBits", "MatMul"] if ops.count(o)))


if __name__ == "__main__":
    main()
