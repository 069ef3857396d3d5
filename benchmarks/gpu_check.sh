#!/usr/bin/env bash
# GPU check of the selective-scan backends, VMamba-S and OpenUS pretraining speed (benchmarks/gpu_check.py).
# From the repository root, with $OUT an empty folder (gpu_check.json, gpu_check.md and gpu_check.log go there):
#   bash benchmarks/gpu_check.sh [--budget-s 170] [--backends torch triton] [--compile]
#   bash benchmarks/gpu_check.sh --dry-run      # the same code path on a CPU: tiny sizes, Triton interpreted
# Exits non-zero when no CUDA device is visible (unless --dry-run). The Python side keeps to --budget-s.
set -uo pipefail

OUT="${OUT:-$PWD/gpu_check_out}"
export OUT
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"

dry=0
for arg in "$@"; do
    if [ "$arg" = "--dry-run" ]; then dry=1; fi
done

{
    echo "== benchmarks/gpu_check.sh $* ($(date -Is), $(pwd))"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi
    else
        echo "nvidia-smi: not found"
    fi
} 2>&1 | tee "$LOG"

if [ "$dry" = 1 ]; then
    export TRITON_INTERPRET=1  # before anything imports Triton
else
    unset TRITON_INTERPRET  # the compiled kernels on the GPU
fi

python3 -u -m benchmarks.gpu_check --out "$OUT" "$@" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
    echo "gpu_check.sh: benchmarks.gpu_check exited with status $status" | tee -a "$LOG"
fi
exit "$status"
