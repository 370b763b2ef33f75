#!/usr/bin/env bash
# Set up (or reuse) the venv (.venv, or $FLOW_ESCNN_VENV; see scripts/bootstrap.sh) and run the test suite. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m slow` for the slow tests only, `-m subprocess` for those that start Python
# processes (CLI runs, torchrun, docs, examples), `-m compile` for those that run torch.compile (CI runs
# both), or `-m ""` for all. Without arguments the default set runs in one pytest-xdist worker per core
# (-n auto; FLOW_ESCNN_TEST_WORKERS=0 runs it in this process, a number sets the workers); with
# arguments, add `-n auto` yourself to spread them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
VENV="${FLOW_ESCNN_VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
cd "$ROOT"
if [ "$#" -eq 0 ]; then set -- -n "${FLOW_ESCNN_TEST_WORKERS:-auto}" -m "not slow and not subprocess and not compile"; fi
exec "$VENV/bin/python" -m pytest -q "$@"
