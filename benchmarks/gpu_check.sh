#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py says what it measures): at most 8 minutes on one
# H100/H200, no hub access. Results: benchmarks/results/gpu_check.{json,md,log}, or --out DIR.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine
#   bash benchmarks/gpu_check.sh --out "$OUT"    # results somewhere else
#   bash benchmarks/gpu_check.sh --dry-run       # CPU, tiny models, about a minute (the test suite runs it)
#
# GPU_CHECK_BUDGET (seconds, default 480; 300 for --dry-run) bounds the whole run: every phase has its
# own timeout, cut to what is left. PYTHON picks the interpreter (default: .venv/bin/python, else python3).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
# This checkout's sources first, whether or not the package is installed; never the hub.
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
budget=()
if [ -n "${GPU_CHECK_BUDGET:-}" ]; then budget=(--budget "$GPU_CHECK_BUDGET"); fi
start=$(date +%s)
status=0
"$PYTHON" "$HERE/gpu_check.py" ${budget[@]+"${budget[@]}"} "$@" || status=$?
echo "gpu_check.sh: $(( $(date +%s) - start )) s, exit status $status"
exit "$status"
