#!/usr/bin/env bash
# Runs one fuzz target for a while under libFuzzer (cargo fuzz):
#
#   scripts/fuzz.sh TARGET SECONDS [libFuzzer options...]
#
# TARGET is one of onnx, graph, parse, npz, capi (fuzz/fuzz_targets/). It builds the target
# as needed (cargo-fuzz on stable Rust: `--sanitizer none`, release with debug assertions),
# starts from the seeds (fuzz/corpus/TARGET) and every saved crash (fuzz/regressions/TARGET),
# writes new corpus entries to fuzz/out/TARGET and crashes to fuzz/artifacts/TARGET (both
# git-ignored), and prints executions and coverage at the end.
#
# KILN_FUZZ_KEEP_GOING=1 keeps fuzzing after a crash, timeout or out-of-memory (libFuzzer's
# fork mode with one job), so one run collects several findings. KILN_FUZZ_TIMEOUT (seconds
# per input, default 10) and KILN_FUZZ_RSS_MB (default 4096) set libFuzzer's limits.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer options...]" >&2
    exit 2
fi
target=$1
seconds=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
if [ ! -f "fuzz_targets/$target.rs" ]; then
    echo "scripts/fuzz.sh: no target '$target' (have: $(cd fuzz_targets && ls | sed 's/\.rs$//' | tr '\n' ' '))" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fuzz build --sanitizer none -O "$target"
bin="target/$(rustc -vV | sed -n 's/^host: //p')/release/$target"

out="out/$target"
artifacts="artifacts/$target"
mkdir -p "$out" "$artifacts" "regressions/$target"
log="$out.log"
options=(
    -max_total_time="$seconds"
    -timeout="${KILN_FUZZ_TIMEOUT:-10}"
    -rss_limit_mb="${KILN_FUZZ_RSS_MB:-4096}"
    -artifact_prefix="$artifacts/"
    -print_final_stats=1
)
if [ "${KILN_FUZZ_KEEP_GOING:-0}" = 1 ]; then
    options+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
fi
status=0
# The first folder receives new entries; the others are only read.
"$bin" "${options[@]}" "$@" "$out" "corpus/$target" "regressions/$target" 2>&1 | tee "$log" ||
    status=$?

echo
echo "== $target, $seconds s =="
grep -E '^#[0-9]+.*(DONE|cov:)' "$log" | tail -1 || true
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
echo "corpus: $(ls "$out" | wc -l) new entries in fuzz/$out"
found=$(ls "$artifacts" | wc -l)
echo "findings: $found in fuzz/$artifacts"
exit "$status"
