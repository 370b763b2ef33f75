#!/usr/bin/env bash
# Set up (or reuse) the venv (.venv, or $FLOW_ESCNN_VENV; see scripts/bootstrap.sh), then run the FERNN vs G-RNN demo on Flowing MNIST: a few minutes
# on a laptop CPU. Extra arguments go to `python -m flow_escnn.experiments demo`, e.g.
#   bash scripts/demo.sh --out runs/demo --digits synthetic --no-progress
# Results: runs/demo/results.md (the table), results.json and PNGs (see README / docs). A rerun moves
# the previous demo's files to runs/demo/replaced-<time>/ (--overwrite), so nothing is lost.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
VENV="${FLOW_ESCNN_VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
cd "$ROOT"
exec "$VENV/bin/python" -m flow_escnn.experiments demo --overwrite "$@"
