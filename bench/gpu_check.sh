#!/usr/bin/env bash
# Every GPU check and figure in one run, on a machine with an NVIDIA GPU:
#   1. the ONNX Runtime provider the shipped model's session really runs on must be CUDA (else it stops:
#      no figure is ever reported as a GPU one from a CPU run),
#   2. CPU/GPU parity of the shipped model's probabilities on 512 simulated windows (tolerance 1e-3),
#   3. latency per window and per batch of 32 windows, CUDA and CPU,
#   4. the benchmark's inference and latency sections with --gpu (label "gpu" of bench/results.json),
#   5. training with configs/tiny.json on CUDA.
# Writes bench/gpu_results.json and bench/gpu_results.md; exits 1 if any check failed.
#
# Needs an environment with onnxruntime-gpu (never beside onnxruntime: they share one import folder) and a
# CUDA build of torch. `bash bench/gpu_check.sh --setup` makes one in .venv-gpu (needs the package index):
# torch from TORCH_INDEX_URL (default PyTorch's cu130 index), onnxruntime-gpu as pinned in constraints.txt.
# Otherwise PYTHON names the interpreter (default .venv-gpu/bin/python if it exists, else .venv/bin/python).
# Further arguments go to `python -m rohde.bench gpu` (--no-bench, --no-train, --windows N, --step-s S).
set -euo pipefail
cd "$(dirname "$0")/.."
export LSLAPICFG="$PWD/server/rohde/server/lsl_loopback.cfg"

if [[ "${1:-}" == "--setup" ]]; then
    shift
    python3 -m venv .venv-gpu
    .venv-gpu/bin/pip install -q -c constraints.txt --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu130}" torch
    .venv-gpu/bin/pip install -q -c constraints.txt -e '.[train,dev,bench]'
    .venv-gpu/bin/pip uninstall -q -y onnxruntime
    .venv-gpu/bin/pip install -q -c constraints.txt onnxruntime-gpu
fi
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=.venv/bin/python
    [[ -x .venv-gpu/bin/python ]] && PYTHON=.venv-gpu/bin/python
fi

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi missing or failing); nothing is measured." >&2
    exit 1
fi
exec "$PYTHON" -m rohde.bench gpu --out bench "$@"
