"""Import guard for escnn, and escnn on numpy 2.

``import escnn`` can succeed while ``escnn.nn`` is missing: escnn swallows the
ImportError raised when its dependency ``lie_learn`` fails to import. flow_escnn needs
``escnn.gspaces``, ``escnn.group`` and ``escnn.nn``; this module imports them explicitly
and raises :class:`EscnnImportError` naming the cause and the fix when any of them is
unusable.

**numpy 2.** escnn imports exactly one thing from ``lie_learn``, at ``import escnn.group``:
``lie_learn.representations.SO3.wigner_d.wigner_D_matrix``, the Wigner D-matrices of
SO(3). ``lie_learn``'s compiled modules are built against numpy 1.x and fail to import
under numpy 2 (and every ``lie_learn`` wheel declares ``numpy<2``). When that import fails
(or ``lie_learn`` is not installed), :func:`import_escnn` registers a stand-in module for
``lie_learn.representations.SO3.wigner_d`` serving flow_escnn's own numpy implementation,
:func:`flow_escnn._wigner.wigner_D_matrix` (``lie_learn``'s conventions for every basis it
names, equal to it to about 1e-15), says so once in the log (logger ``flow_escnn``, INFO),
and imports escnn: the 2D gspaces and the SO(3) / O(3) ones (``rot3dOnR3``, ``octaOnR3``,
``icoOnR3``, ...) all work. When ``lie_learn`` imports (numpy 1.x), it is used and nothing
is changed.

**Import order.** Import ``flow_escnn`` before ``escnn``. Without flow_escnn, nothing can
stand in for ``lie_learn``, so under numpy 2 (or without lie_learn) escnn alone is broken:
``import escnn`` succeeds but comes up without ``escnn.group``, ``escnn.kernels``,
``escnn.gspaces`` and ``escnn.nn`` (its ``__init__`` swallows their ImportErrors), and
``from escnn import gspaces`` / ``import escnn.nn`` raise ImportError. Importing flow_escnn
afterwards repairs it: :func:`import_escnn` drops every ``escnn.*`` submodule and re-executes
escnn's ``__init__`` in the same module object (:func:`importlib.reload`), so a name bound
by an earlier ``import escnn`` then has a working ``escnn.nn`` and 3D gspaces. Only objects
taken from the broken import stay broken, hence the warning in the log. Lifting the order rule
would take code that runs before any import (a ``.pth`` start-up hook in site-packages) or a
``lie_learn`` package owned by flow_escnn (clashing with the real one's files); flow_escnn
installs neither (docs/install.rst, "Why the import order still matters"), and
``tests/test_docs.py`` runs every documented snippet in a fresh process.

**py3nj.** escnn warns at import time that ``py3nj`` is missing. py3nj would give escnn
the SO(3) Clebsch-Gordan coefficients in closed form; without it escnn computes them
numerically from the Wigner D-matrices (and caches them on disk), which is slower but
correct, so SO(3) bases need no py3nj. flow_escnn deliberately installs escnn without it
(it needs Fortran; docs/install.rst). That one warning, matched by its exact text, is
therefore silenced here; every other warning and error passes through.

One patch is applied to escnn at import: escnn 1.0.11 computes kernel-basis null
spaces with scikit-learn's ``randomized_svd`` whenever scikit-learn is importable
(``escnn.group._numerical.null``). That path is non-deterministic
(``random_state=None``) and raises ``TypeError: np.matrix is not supported`` on recent
scikit-learn, which breaks every dihedral (``flipRot2dOnR2``) basis not yet in escnn's
cache. :func:`_patch_escnn_null_space` replaces it by scipy's exact SVD, which is what
escnn itself runs when scikit-learn is absent: same null space, deterministic.

**Quiet irrep caches.** escnn builds the irreps of the octahedral and icosahedral groups
(``octaOnR3``, ``fullOctaOnR3``, ``icoOnR3``, ...) through joblib disk caches created with
``Memory(..., verbose=2)`` (``escnn/group/groups/octa.py`` and ``ico.py``), which print
``[Memory]0.8s, 0.0min : Loading _build_octa_irrep_picklable...`` to stdout on every build
of such a group. :func:`_quiet_escnn_irrep_caches` sets the verbosity of those two cached
builders (``joblib.memory.MemorizedFunc``, attribute ``_verbose``) and of their ``Memory``
objects to 0: the same cached values are loaded (or computed and stored), silently. escnn's
other caches are created with ``verbose=0`` already.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import logging
import re
import sys
import warnings
from types import ModuleType

__all__ = ["REQUIRED_ESCNN_VERSION", "EscnnImportError", "import_escnn", "lie_learn_stand_in"]

logger = logging.getLogger("flow_escnn")

_WIGNER = "lie_learn.representations.SO3.wigner_d"

REQUIRED_ESCNN_VERSION = "1.0.11"

_FIX = (
    "Fix: run `bash scripts/bootstrap.sh` from the flow_escnn repository, or by hand "
    f"`pip install <flow_escnn repository or wheel> && pip install --no-deps escnn=={REQUIRED_ESCNN_VERSION}` "
    "(escnn's py3nj dependency needs Fortran and serves SO(3) only; see docs/install.rst)."
)


class EscnnImportError(ImportError):
    """escnn, or one of the escnn submodules flow_escnn needs, cannot be imported."""


def import_escnn() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    """Import escnn and the submodules flow_escnn uses, failing loudly.

    Returns:
        The modules ``(escnn, escnn.group, escnn.gspaces, escnn.nn)``.

    Raises:
        EscnnImportError: when escnn is not installed or a submodule fails to import
            (typically numpy >= 2 breaking lie_learn).
    """
    repair = _ensure_wigner_importable()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`py3nj` package not found", category=UserWarning)
        try:
            escnn = importlib.import_module("escnn")
            if repair:  # re-execute in the same module object, so that an earlier `import escnn` sees the fix
                escnn = importlib.reload(escnn)
        except ImportError as exc:
            raise EscnnImportError(f"escnn is not installed or failed to import ({exc!r}). {_FIX}") from exc
        modules = [escnn]
        for name in ("escnn.group", "escnn.gspaces", "escnn.nn"):
            try:
                modules.append(importlib.import_module(name))
            except Exception as exc:
                import numpy

                raise EscnnImportError(
                    f"`import escnn` worked but `import {name}` failed with {exc!r} "
                    f"(numpy {numpy.__version__}; escnn's dependency lie_learn requires numpy<2). {_FIX}"
                ) from exc
    _patch_escnn_null_space()
    _quiet_escnn_irrep_caches()
    nn = modules[3]
    for attr in ("GeometricTensor", "FieldType", "R2Conv", "EquivariantModule"):
        if not hasattr(nn, attr):
            raise EscnnImportError(f"escnn.nn has no attribute {attr!r}: the escnn install is broken. {_FIX}")
    return modules[0], modules[1], modules[2], modules[3]


def lie_learn_stand_in() -> str | None:
    """Why the ``lie_learn`` stand-in is in use (the import error), or None when the real one is."""
    mod = sys.modules.get(_WIGNER)
    return getattr(mod, "_flow_escnn_stand_in_cause", None)


def _ensure_wigner_importable() -> bool:
    """Make ``from lie_learn.representations.SO3.wigner_d import wigner_D_matrix`` work (module docstring).

    Returns:
        True when escnn had been imported before, broken (without ``escnn.nn``): its
        submodules are then dropped from ``sys.modules`` and the caller re-executes it.
    """
    if _WIGNER in sys.modules:
        return False
    cause = _declared_numpy_conflict()
    if cause is None:  # try the real module (a compiled-module failure raises ImportError, ValueError, ...)
        try:
            importlib.import_module(_WIGNER)
            return False
        except Exception as exc:  # noqa: BLE001 - any failure gets the stand-in, with its cause logged
            cause = f"{type(exc).__name__}: {exc}"
    for name in [n for n in sys.modules if n == "lie_learn" or n.startswith("lie_learn.")]:
        del sys.modules[name]  # drop the half-imported package
    import numpy

    from flow_escnn._wigner import wigner_D_matrix, wigner_d_matrix

    parts = _WIGNER.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        module = ModuleType(name, "flow_escnn stand-in for lie_learn (see flow_escnn._compat)")
        module.__path__ = []  # a package, so that the next level imports
        sys.modules[name] = module
        if i > 1:
            setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], module)
    leaf = sys.modules[_WIGNER]
    leaf.wigner_D_matrix = wigner_D_matrix  # type: ignore[attr-defined]
    leaf.wigner_d_matrix = wigner_d_matrix  # type: ignore[attr-defined]
    leaf._flow_escnn_stand_in_cause = cause  # type: ignore[attr-defined]
    logger.info(
        "lie_learn (needed by escnn for SO(3) Wigner D-matrices only) cannot be imported under numpy %s (%s); "
        "escnn uses flow_escnn's numpy Wigner D-matrices instead (flow_escnn._wigner, lie_learn's conventions): "
        "the 2D and the SO(3)/O(3) gspaces work.",
        numpy.__version__,
        cause,
    )
    broken = sys.modules.get("escnn")
    if broken is None or hasattr(broken, "nn"):
        return False
    logger.warning(
        "escnn was imported before flow_escnn and came up without escnn.group/gspaces/nn (lie_learn failed); "
        "re-executing it in place. Objects taken from the broken import stay broken: import flow_escnn first."
    )
    for name in [n for n in sys.modules if n.startswith("escnn.")]:
        del sys.modules[name]
    return True


def _declared_numpy_conflict() -> str | None:
    """Why lie_learn's compiled modules cannot load, if its metadata says so: it pins ``numpy<2``
    and numpy 2 is installed (importing it anyway only prints numpy's long C-API traceback)."""
    import numpy

    if int(numpy.__version__.split(".")[0]) < 2:
        return None
    for dist in ("lie_learn", "lie-learn-escience"):
        try:
            requires = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for req in requires:
            spec, _, marker = req.partition(";")
            if re.match(r"numpy\s*\(?\s*<\s*2\b", spec.strip()) and "< \"3" not in marker and "<'3" not in marker:
                version = importlib.metadata.version(dist)
                return f"{dist} {version} is built for numpy<2 (its requirement {spec.strip()!r})"
    return None


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


#: escnn's joblib-cached irrep builders that print on every load: (module, function name)
_NOISY_CACHES = (("escnn.group.groups.octa", "_build_octa_irrep_picklable"),
                 ("escnn.group.groups.ico", "_build_ico_irrep_picklable"))


def _quiet_escnn_irrep_caches() -> None:
    """Silence the ``[Memory] ... Loading ...`` lines of escnn's octahedral / icosahedral irrep caches
    (module docstring). Anything missing (another escnn or joblib layout) is left alone."""
    for module_name, func_name in _NOISY_CACHES:
        try:
            module = importlib.import_module(module_name)
        except Exception:  # noqa: BLE001 - a changed escnn layout: nothing to quiet
            continue
        func = getattr(module, func_name, None)
        if func is not None and hasattr(func, "_verbose"):
            func._verbose = 0
        memory = getattr(module, "cache", None)
        if memory is not None and hasattr(memory, "_verbose"):
            memory._verbose = 0  # functions decorated later (none in escnn 1.0.11) start quiet too


escnn, group, gspaces, enn = import_escnn()
