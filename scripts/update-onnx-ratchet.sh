#!/usr/bin/env bash
# Grows the ONNX ratchet: runs the CORE node tests, adds every passing case that is small
# enough to vendor to tests/onnx/passing.txt, and copies those cases to tests/onnx/cases/.
# The list only grows: cases already listed stay listed (fix a regression, do not delete it).
#
# Usage: scripts/update-onnx-ratchet.sh [ONNX_NODE_TESTS_DIR] [MAX_CASE_KIB]
set -euo pipefail
src=${1:-/work/shared/onnx-node-tests}
max_kib=${2:-256}
cd "$(dirname "$0")/.."
list=tests/onnx/passing.txt
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

# Non-zero exit just means some cases failed; the passing ones are still written.
cargo run --quiet -- test-onnx "$src" --list "$src/CORE.txt" --write-passing "$tmp" >/dev/null || true

touch "$list"
added=0
while read -r name; do
  case "$name" in ''|'#'*) continue ;; esac
  grep -qx "$name\( .*\)\?" "$list" && continue
  size=$(du -sk "$src/$name" | cut -f1)
  if [ "$size" -gt "$max_kib" ]; then
    echo "skip $name (${size} KiB > ${max_kib} KiB)" >&2
    continue
  fi
  echo "$name" >> "$list"
  added=$((added + 1))
done < <(grep -v '^#' "$tmp" | awk '{print $1}')

# Keep the header, sort the entries.
{ grep '^##' "$list" || true; grep -v '^##' "$list" | sort -u; } > "$tmp.sorted" && mv "$tmp.sorted" "$list"

mkdir -p tests/onnx/cases
while read -r name; do
  [ -d "tests/onnx/cases/$name" ] || cp -r "$src/$name" "tests/onnx/cases/$name"
done < <(grep -v '^#' "$list" | awk 'NF {print $1}')
echo "added $added cases; $(grep -vc '^#' "$list") listed, $(du -sh tests/onnx/cases | cut -f1) vendored"
