#!/usr/bin/env bash
# GPU figures beside the CPU ones: inference (ONNX Runtime CUDA provider with IO binding against
# PyTorch on CUDA) and decision latency with the server on the CUDA provider.
#
# Needs an environment with onnxruntime-gpu (not onnxruntime: they share one import folder) and a
# CUDA build of torch, e.g. `pip install -e '.[gpu,train]'` on the GPU machine. Usage, from the
# repository root:   bash bench/gpu_bench.sh [extra rohde bench options]
# Writes the "gpu" entry of bench/results.json and regenerates bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export LSLAPICFG="$PWD/server/rohde/server/lsl_loopback.cfg"

# Fail early and clearly when CUDA is not really usable (onnxruntime-gpu lists CUDA even without a GPU).
"$PY" - <<'PY'
import sys
import numpy as np
import onnxruntime as ort
import torch
if "CUDAExecutionProvider" not in ort.get_available_providers():
    sys.exit(f"onnxruntime has no CUDA provider here: {ort.get_available_providers()} (install onnxruntime-gpu).")
if not torch.cuda.is_available():
    sys.exit("torch sees no CUDA device.")
print("GPU:", torch.cuda.get_device_name(0), "| onnxruntime", ort.__version__, "| torch", torch.__version__)
PY

"$PY" -m rohde.bench bench --gpu --label gpu --sections inference,latency \
    --latency-streams 1,8,32 --capacity-probes 0 --step-s 20 --inference-s 2 "$@"
