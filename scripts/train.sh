#!/usr/bin/env bash
# Trains the connected-car anomaly model (models/car-anomaly.onnx by default).
#
#   scripts/train.sh [--small] [--seed N] [--out PATH] [--metrics-out PATH] [--work-dir DIR]
#                    [--device-features SPEC.json]
#   scripts/train.sh --columns SPEC.json EVENTS.jsonl [MODEL.onnx FEATURES]
#     (the per-device columns the training computes for a stream, for the parity test)
#
# Installs the pinned Python dependencies of scripts/train/requirements.txt from PyPI into
# ${EDGEINFER_CACHE:-$HOME/.cache/edgeinfer}/venv-train (once; again when the file changes), then
# runs scripts/train/train.py, which generates its data with `edgeinfer simulate`
# (EDGEINFER_CMD, default: deno run -A main.ts) and prints the held-out metrics.
# --small trains on a tiny fleet in seconds (for CI); its model is not meant to be shipped.
#
# Exit codes: 0 done, 75 the dependencies could not be installed (e.g. PyPI unreachable),
# anything else: training failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${EDGEINFER_CACHE:-$HOME/.cache/edgeinfer}"
VENV="$CACHE/venv-train"
REQ="$ROOT/scripts/train/requirements.txt"
PYTHON="${PYTHON:-python3}"

want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
  echo "train.sh: installing the training dependencies into $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  if ! "$PYTHON" -m venv "$VENV" >&2 ||
    ! "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" >&2; then
    echo "train.sh: could not install the training dependencies from PyPI (see above)" >&2
    rm -rf "$VENV"
    exit 75
  fi
  echo "$want" >"$VENV/.requirements.sha256"
fi

if [[ -z "${EDGEINFER_CMD:-}" ]]; then
  DENO="${DENO:-$(command -v deno || echo "$ROOT/.tools/node_modules/.bin/deno")}"
  EDGEINFER_CMD="$DENO run -A $ROOT/main.ts"
fi
export EDGEINFER_CMD EDGEINFER_ROOT="$ROOT"
# One BLAS thread: the same numbers on every machine, and no oversubscription on small ones.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
if [[ "${1:-}" == "--columns" ]]; then
  shift
  exec "$VENV/bin/python" "$ROOT/scripts/train/device_features.py" "$@"
fi
exec "$VENV/bin/python" "$ROOT/scripts/train/train.py" "$@"
