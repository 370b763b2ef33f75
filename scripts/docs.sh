#!/usr/bin/env bash
# Build the Sphinx documentation with warnings as errors into docs/_build/html.
# Sets up (or reuses) .venv first. Extra arguments go to sphinx-build, e.g.
# `bash scripts/docs.sh -E` for a full rebuild. tests/test_docs.py runs the same build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
VENV="${FLOW_ESCNN_VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
cd "$ROOT"
exec "$VENV/bin/python" -m sphinx -W --keep-going -b html "$@" docs docs/_build/html
