"""Import guard for escnn.

``import escnn`` can succeed while ``escnn.nn`` is missing: escnn swallows the
ImportError raised when ``lie_learn``'s compiled extension fails under numpy 2.
flow_escnn needs ``escnn.gspaces``, ``escnn.group`` and ``escnn.nn``; this module
imports them explicitly and raises :class:`EscnnImportError` naming the cause and
the fix when any of them is unusable.

escnn warns at import time that ``py3nj`` is missing. py3nj is only used by
escnn for SO(3) Clebsch-Gordan coefficients, which flow_escnn (2D only) never
needs, and flow_escnn deliberately installs escnn without it (docs/install.rst).
That one warning, matched by its exact text, is therefore silenced here; every
other warning and error passes through.

One patch is applied to escnn at import: escnn 1.0.11 computes kernel-basis null
spaces with scikit-learn's ``randomized_svd`` whenever scikit-learn is importable
(``escnn.group._numerical.null``). That path is non-deterministic
(``random_state=None``) and raises ``TypeError: np.matrix is not supported`` on recent
scikit-learn, which breaks every dihedral (``flipRot2dOnR2``) basis not yet in escnn's
cache. :func:`_patch_escnn_null_space` replaces it by scipy's exact SVD, which is what
escnn itself runs when scikit-learn is absent: same null space, deterministic.
"""
from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Tuple

__all__ = ["EscnnImportError", "import_escnn", "REQUIRED_ESCNN_VERSION"]

REQUIRED_ESCNN_VERSION = "1.0.11"

_FIX = (
    "Fix: run `bash scripts/bootstrap.sh` from the flow_escnn repository, or by hand "
    "`pip install 'numpy<2' lie_learn joblib pymanopt autograd && "
    f"pip install --no-deps escnn=={REQUIRED_ESCNN_VERSION}` (see docs/install.rst)."
)


class EscnnImportError(ImportError):
    """escnn, or one of the escnn submodules flow_escnn needs, cannot be imported."""


def import_escnn() -> Tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """Import escnn and the submodules flow_escnn uses, failing loudly.

    Returns:
        The modules ``(escnn, escnn.group, escnn.gspaces, escnn.nn)``.

    Raises:
        EscnnImportError: when escnn is not installed or a submodule fails to import
            (typically numpy >= 2 breaking lie_learn).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`py3nj` package not found", category=UserWarning)
        try:
            escnn = importlib.import_module("escnn")
        except ImportError as exc:
            raise EscnnImportError(f"escnn is not installed or failed to import ({exc!r}). {_FIX}") from exc
        modules = [escnn]
        for name in ("escnn.group", "escnn.gspaces", "escnn.nn"):
            try:
                modules.append(importlib.import_module(name))
            except Exception as exc:  # noqa: BLE001 - re-raised with context below
                import numpy

                raise EscnnImportError(
                    f"`import escnn` worked but `import {name}` failed with {exc!r} "
                    f"(numpy {numpy.__version__}; escnn's dependency lie_learn requires numpy<2). {_FIX}"
                ) from exc
    _patch_escnn_null_space()
    nn = modules[3]
    for attr in ("GeometricTensor", "FieldType", "R2Conv", "EquivariantModule"):
        if not hasattr(nn, attr):
            raise EscnnImportError(f"escnn.nn has no attribute {attr!r}: the escnn install is broken. {_FIX}")
    return modules[0], modules[1], modules[2], modules[3]


def _patch_escnn_null_space() -> None:
    """Make escnn's null-space SVD exact and deterministic (see the module docstring)."""
    num = importlib.import_module("escnn.group._numerical")
    current = getattr(num, "randomized_svd", None)
    if current is None or getattr(current, "_flow_escnn_exact_svd", False):
        return
    import numpy as np
    from scipy import linalg

    def exact_svd(a, n_components, **_ignored):  # type: ignore[no-untyped-def]
        u, s, vh = linalg.svd(np.asarray(a), full_matrices=False)
        return u[:, :n_components], s[:n_components], vh[:n_components]

    exact_svd._flow_escnn_exact_svd = True  # type: ignore[attr-defined]
    num.randomized_svd = exact_svd


escnn, group, gspaces, enn = import_escnn()
