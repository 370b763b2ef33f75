#!/usr/bin/env bash
# Create (or reuse) the virtual environment at .venv in the repository root and
# install whatever is missing. Safe to run repeatedly: a stamp file records the
# hash of the install recipe, so a second run costs about a second.
#
# Install decisions (see docs/install.rst):
#   * torch is pinned to the CPU build 2.13.0 unless a torch is already present
#     in the venv (set FLOW_ESCNN_TORCH to override the requirement, e.g. a CUDA
#     build on a GPU machine).
#   * escnn==1.0.11 is installed with --no-deps: its metadata requires py3nj,
#     which needs a Fortran compiler and is used only for SO(3). Its remaining
#     runtime dependencies come from setup.cfg.
#   * numpy is kept < 2 (lie_learn's compiled extension breaks on numpy 2, and
#     then escnn.nn silently disappears).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
TORCH_REQ="${FLOW_ESCNN_TORCH:-torch==2.13.0}"
ESCNN_REQ="escnn==1.0.11"
EXTRAS="${FLOW_ESCNN_EXTRAS:-test,experiments,docs}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[bootstrap] creating virtual environment at $VENV" >&2
    "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.flow_escnn_stamp"
RECIPE_HASH="$(cat "$ROOT/setup.cfg" "$ROOT/scripts/bootstrap.sh" | sha256sum | cut -d' ' -f1)-$TORCH_REQ-$EXTRAS"
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
echo "[bootstrap] installing flow_escnn (editable) with extras [$EXTRAS]" >&2
pip_install -e "$ROOT[$EXTRAS]"
# Last, so that no later resolver run tries to satisfy escnn's py3nj requirement.
echo "[bootstrap] installing $ESCNN_REQ (--no-deps, see docs/install.rst)" >&2
pip_install --no-deps "$ESCNN_REQ"
"$VENV/bin/python" -c "import flow_escnn" 
echo "$RECIPE_HASH" > "$STAMP"
echo "[bootstrap] environment ready: $VENV" >&2
