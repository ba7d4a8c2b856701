#!/usr/bin/env bash
# The GPU check in one command (about 3-6 minutes on one GPU; ≤ 8 min budget):
#   bash benchmarks/gpu_check.sh [OUT.json]            # CUDA: times, peak memory, ONNX on the CUDA provider
#   bash benchmarks/gpu_check.sh --device cpu [OUT]    # the same code on tiny sizes, on the CPU (what CI tests)
# Needs the gpu extra on a GPU host (onnxruntime-gpu): make setup EXTRAS=gpu,serve,dev
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
if [ "${1:-}" = "--device" ]; then DEVICE=${2:?--device needs cuda or cpu}; shift 2; fi
OUT=${1:-benchmarks/gpu_check-$DEVICE.json}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
EXTRA=()
[ "$DEVICE" = cpu ] && EXTRA=(--small)
exec timeout 480 "$PY" benchmarks/gpu_check.py --device "$DEVICE" --out "$OUT" "${EXTRA[@]}"
