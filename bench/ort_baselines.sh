#!/bin/sh
# ORT-only baselines (before kiln runs full models): median latency of each full-size model at
# batch 1 / seq 128 (ViT: batch 1, 224x224; MiniLM also batch 8 / seq 128) on 2 and 1 threads,
# and numpy sgemm 1024^3 on 2 threads. Usage: bench/ort_baselines.sh [PYTHON] [FOLDER]
set -e
P=${1:-/tmp/torchenv/bin/python}
F=${2:-/work/fullsize}
C="$(dirname "$0")/compare_ort.py"
for t in 2 1; do
  for m in minilm_ts.b1s128 minilm.b1s128 gpt2_ts.b1s128 gpt2.b1s128 llama_ts.b1s128 llama.b1s128 \
           vit_ts.alt vit.alt minilm_ts.b8s128 minilm.b8s128; do
    echo "== ${m} threads ${t}"
    "$P" "$C" "$F/${m%.*}.onnx" --inputs "$F/$m.inputs.npz" --threads "$t" --ort-only \
      --rounds 5 --runs 10 --warmup 2
  done
done
echo "== gemm 1024,1024,1024 threads 2"
"$P" "$C" --gemm 1024,1024,1024 --threads 2 --ort-only --rounds 5 --runs 10 --warmup 2
