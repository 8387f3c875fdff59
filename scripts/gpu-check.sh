#!/usr/bin/env bash
# The GPU check: one prepared run for a machine with an NVIDIA GPU, within 10 minutes.
#
#   scripts/gpu-check.sh [FULLSIZE_DIR]
#
# Prints one JSON line per figure on stdout (progress goes to stderr):
#   {"check":"device",...}             the device, or why there is none (then exit 1)
#   {"check":"device_tests",...}       vendored models on the device vs the interpreter
#                                      and the CPU backend, the ONNX ratchet on the device
#   {"check":"cuda_executable",...}    a `kiln build --device cuda` executable on the device
#   {"check":"random_graphs",...}      random graphs through the PTX interpreter (CPU)
#   {"figure":"gemm",...}              GFLOP/s of a 4096^3 f32 product per precision
#                                      (tf32, tf32x3, and bf16 tensor cores)
#   {"figure":"model",...}             ms per run of FULLSIZE_DIR's minilm.onnx and
#                                      gpt2.onnx (bench/export_fullsize.py) at batch 32 /
#                                      seq 512 and batch 1 / seq 128
#   {"peer":"torch",...}, {"peer":"onnxruntime-gpu",...}
#                                      the same figures from PyTorch eager and
#                                      onnxruntime's CUDA provider, when importable
# Every step has its own time limit, so a hang costs that step, not the run.
set -uo pipefail
cd "$(dirname "$0")/.."
FULLSIZE=${1:-${KILN_FULLSIZE:-}}
KILN=target/release/kiln
START=$(date +%s)
log() { echo "[gpu-check $(($(date +%s) - START))s] $*" >&2; }
json_str() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

log "building (release)"
if ! timeout 300 cargo build --release --quiet 2>&2; then
    echo '{"check":"build","ok":false}'
    exit 1
fi

if ! dev=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1); then
    echo "{\"check\":\"device\",\"ok\":false,\"why\":$(json_str "$dev")}"
    exit 1
fi
echo "{\"check\":\"device\",\"ok\":true,\"device\":$(json_str "$dev")}"

log "device tests"
out=$(timeout 240 cargo test --release --quiet --test cuda_device --test onnx_ratchet \
    -- --nocapture device gpu 2>&1)
rc=$?
skipped=$(grep -c '^SKIPPED' <<<"$out")
refused=$(grep -o '[0-9]* refused for an op without PTX' <<<"$out" | head -1)
echo "{\"check\":\"device_tests\",\"ok\":$([ $rc = 0 ] && echo true || echo false),\"skipped\":$skipped,\"ratchet\":$(json_str "${refused:-}")}"
[ $rc = 0 ] || grep -E 'panicked|FAIL' <<<"$out" | head -20 >&2

log "the --device cuda executable (BERT-tiny, env -i) against the interpreter"
out=$(timeout 200 cargo test --release --quiet --test aot a_cuda_executable -- --nocapture 2>&1)
rc=$?
echo "{\"check\":\"cuda_executable\",\"ok\":$([ $rc = 0 ] && echo true || echo false),\"skipped\":$(grep -c '^SKIPPED' <<<"$out")}"
[ $rc = 0 ] || grep -E 'panicked|error' <<<"$out" | head -20 >&2

log "random graphs through the interpreter"
out=$(KILN_DIFF_SEEDS=400 timeout 120 cargo test --release --quiet -p kiln-cuda --test random_graphs 2>&1)
rc=$?
echo "{\"check\":\"random_graphs\",\"ok\":$([ $rc = 0 ] && echo true || echo false),\"seeds\":400}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/gemm.kir" <<'EOF'
graph @gemm(%a: f32[4096, 4096], %b: f32[4096, 4096]) -> f32[4096, 4096] {
    %c = matmul %a, %b
    return %c
}
EOF
for p in tf32 tf32x3 bf16; do
    log "gemm 4096^3 $p"
    if line=$(timeout 120 $KILN bench "$tmp/gemm.kir" --backend cuda --precision $p --runs 10 --warmup 2 2>/dev/null); then
        python3 - "$line" "$p" <<'EOF'
import json, sys
b = json.loads(sys.argv[1])
print(json.dumps({"figure": "gemm", "shape": "4096^3", "precision": sys.argv[2],
                  "median_ms": b["median_ms"], "gflops": round(2 * 4096**3 / b["median_ms"] / 1e6, 1)}))
EOF
    else
        echo "{\"figure\":\"gemm\",\"precision\":\"$p\",\"ok\":false}"
    fi
done

shapes=("32 512" "1 128")
if [ -n "$FULLSIZE" ]; then
    for m in minilm gpt2; do
        [ -f "$FULLSIZE/$m.onnx" ] || continue
        for s in "${shapes[@]}"; do
            set -- $s
            log "$m batch $1 seq $2"
            if line=$(timeout 150 $KILN bench "$FULLSIZE/$m.onnx" --backend cuda --dim batch=$1 --dim seq=$2 --runs 10 --warmup 2 2>/dev/null); then
                python3 -c 'import json,sys; b=json.loads(sys.argv[1]); print(json.dumps({"figure":"model","model":sys.argv[2],"batch":int(sys.argv[3]),"seq":int(sys.argv[4]),"median_ms":b["median_ms"],"compile_ms":b["compile_ms"]}))' "$line" $m $1 $2
            else
                echo "{\"figure\":\"model\",\"model\":\"$m\",\"batch\":$1,\"seq\":$2,\"ok\":false}"
            fi
        done
    done
else
    echo '{"figure":"model","ok":false,"why":"no FULLSIZE_DIR given (bench/export_fullsize.py writes one)"}'
fi

log "peers"
timeout 180 python3 - "$FULLSIZE" <<'EOF' || echo '{"peer":"python","ok":false}'
import json, os, sys, time
full = sys.argv[1]
def median_ms(f, runs=10):
    ts = []
    for _ in range(runs):
        t = time.perf_counter(); f(); ts.append((time.perf_counter() - t) * 1e3)
    return sorted(ts)[len(ts) // 2]
try:
    import torch
    if torch.cuda.is_available():
        a = torch.randn(4096, 4096, device="cuda"); b = torch.randn(4096, 4096, device="cuda")
        for prec, tf32 in [("tf32", True), ("f32", False)]:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            run = lambda: (a @ b, torch.cuda.synchronize())
            run(); ms = median_ms(run)
            print(json.dumps({"peer": "torch", "figure": "gemm", "precision": prec, "median_ms": round(ms, 3), "gflops": round(2 * 4096**3 / ms / 1e6, 1)}))
        a16, b16 = a.bfloat16(), b.bfloat16()
        run = lambda: (a16 @ b16, torch.cuda.synchronize())
        run(); ms = median_ms(run)
        print(json.dumps({"peer": "torch", "figure": "gemm", "precision": "bf16", "median_ms": round(ms, 3), "gflops": round(2 * 4096**3 / ms / 1e6, 1)}))
    else:
        print(json.dumps({"peer": "torch", "ok": False, "why": "no CUDA in torch"}))
except ImportError:
    print(json.dumps({"peer": "torch", "ok": False, "why": "torch not installed"}))
try:
    import numpy as np, onnxruntime as ort
    if full and "CUDAExecutionProvider" in ort.get_available_providers():
        for m in ["minilm", "gpt2"]:
            path = os.path.join(full, m + ".onnx")
            if not os.path.exists(path):
                continue
            s = ort.InferenceSession(path, providers=["CUDAExecutionProvider"])
            for batch, seq in [(32, 512), (1, 128)]:
                feed = {}
                for i in s.get_inputs():
                    feed[i.name] = (np.ones if "mask" in i.name else np.zeros)((batch, seq), dtype=np.int64)
                run = lambda: s.run(None, feed)
                run(); ms = median_ms(run)
                print(json.dumps({"peer": "onnxruntime-gpu", "figure": "model", "model": m, "batch": batch, "seq": seq, "median_ms": round(ms, 3)}))
    else:
        print(json.dumps({"peer": "onnxruntime-gpu", "ok": False, "why": "no CUDA provider or no FULLSIZE_DIR"}))
except ImportError:
    print(json.dumps({"peer": "onnxruntime-gpu", "ok": False, "why": "onnxruntime not installed"}))
EOF
log "done"
