#!/usr/bin/env bash
# The full CPU benchmark: every section against the server as it is in this tree.
# bench/RESULTS.md holds the run before and after the ingestion change of bench/PROFILE.md
# ("cpu" and "cpu_after"); that change is now part of server/, so a new run measures it as "cpu".
# Usage, from anywhere:   bash bench/run_full.sh [SOAK_S]     (default soak 600 s)
# BENCH_ARGS (for example "--quick" for a smoke run) is passed to the command.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python
SOAK_S=${1:-600}
export LSLAPICFG=$ROOT/server/rohde/server/lsl_loopback.cfg
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# One copy of the package serves both parts, even if a training run rewrites models/ meanwhile.
MODEL_ARGS=()
if [ -f "$ROOT/models/rohde-default/metadata.json" ]; then
    mkdir -p "$TMP/models"
    cp -r "$ROOT/models/rohde-default" "$TMP/models/rohde-default"
    MODEL_ARGS=(--model "$TMP/models/rohde-default")
fi

cd "$ROOT"
"$PY" -m rohde.bench bench --out "$ROOT/bench" --soak-s "$SOAK_S" "${MODEL_ARGS[@]}" ${BENCH_ARGS:-}
